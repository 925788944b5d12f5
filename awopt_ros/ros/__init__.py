"""awopt_ros.ros."""
