"""awopt_ros.sim."""
