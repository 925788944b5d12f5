"""Bring up awopt_ros next to a real Kuka iiwa (``ros2 launch awopt_ros <this file>``).

No simulator: the user's ros2_control driver (lbr-stack by default, ICube iiwa_ros2 with
config:=.../awopt_ros_kuka_icube.yaml) and camera (our realsense_camera when the params file
has a section for it, else realsense-ros started by the user) are the cell.
robot_state_publisher publishes /tf from the driver's /joint_states (fed the URDF renamed to
the driver's joint names) and rviz2 shows config/awopt_hardware.rviz (camera topics under
/camera/camera). The arguments and checks are those of awopt_grasp.launch.py, with these
defaults: config:=config/awopt_ros_kuka_lbr.yaml, robot_state_publisher:=true, rviz:=true,
rviz_config:=config/awopt_hardware.rviz. Start the driver first; episodes start with
/episode/start (the arm moves only while one runs and the operator heartbeat is held).
No simulator tells the stack whether a grasp succeeded: the hardware params files run the
``success_detector`` node (camera success classifier, models/grasp_success.onnx) and the
episode manager's ``success_source: classifier`` ends episodes on its decision.
"""
import importlib.util
import os

from ament_index_python.packages import get_package_share_directory


def _grasp_launch():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'awopt_grasp.launch.py')
    spec = importlib.util.spec_from_file_location('awopt_grasp_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate_launch_description():
    share = get_package_share_directory('awopt_ros')
    return _grasp_launch().make_launch_description(
        os.path.join(share, 'config', 'awopt_ros_kuka_lbr.yaml'),
        robot_state_publisher='true', rviz='true',
        rviz_config=os.path.join(share, 'config', 'awopt_hardware.rviz'))
