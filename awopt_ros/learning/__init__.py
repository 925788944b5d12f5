"""awopt_ros.learning."""
