"""Bring up the awopt_ros peg insertion stack on a ROS 2 install (``ros2 launch awopt_ros ...``).

The Sawyer insertion twin of awopt_grasp.launch.py, with its nodes, parameter checks (no
unknown node or parameter, nodes agree on shared parameters, one stack per ROS domain) and
DDS settings, and the residual controller as the node that publishes ``/policy/action``.
Which device nodes start follows the params file: ``sim_robot`` (the insertion scene) with
the default config/awopt_ros_sawyer_insertion.yaml; ``realsense_camera`` and no simulator
with config/awopt_ros_sawyer_bridge.yaml (a real Sawyer through ros1_bridge: start the
bridge, the F/T sensor driver and the goal publisher first). Arguments:
  config:=PATH        params YAML (default: the package's config/awopt_ros_sawyer_insertion.yaml)
  policy:=residual    (the only choice: the residual controller; its ``residual`` parameter,
                      'model' or 'off', picks the P-controller alone)
  use_sim_time:=true|false   (true when the simulator publishes /clock)
  robot_state_publisher:=true|false   robot_state_publisher publishes /tf from the joint
                      states (the Sawyer URDF's joint names are the driver's)
  rviz:=true|false    start rviz2
  rviz_config:=PATH   its config (default config/awopt.rviz)
Lockstep simulation: set sim_robot ``lockstep: true`` and ``publish_clock: true`` in the
config, and use_sim_time:=true.
"""
import importlib.util
import os

from ament_index_python.packages import get_package_share_directory


def _grasp_launch():
    """The grasp launch file's module: its arguments, checks and node list serve this stack."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'awopt_grasp.launch.py')
    spec = importlib.util.spec_from_file_location('awopt_grasp_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate_launch_description():
    share = get_package_share_directory('awopt_ros')
    return _grasp_launch().make_launch_description(
        os.path.join(share, 'config', 'awopt_ros_sawyer_insertion.yaml'),
        policies=('residual',))
