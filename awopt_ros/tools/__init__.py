"""Developer tools run by `make setup` (no ROS imports at module level)."""
