"""awopt_ros.nodes."""
