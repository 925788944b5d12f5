"""awopt_ros: learned manipulation policies (AW-Opt) on ROS 2 arms."""
__version__ = '0.1.0'
