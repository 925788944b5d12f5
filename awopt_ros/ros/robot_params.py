"""Declaration of the driver-naming parameters that several nodes share (a bringup's params
file gives them once, in its ``/**`` section; ``launcher.SHARED_PARAMS`` checks that the nodes
agree). Names and their meaning: :mod:`awopt_ros.core.robot_names`."""
from awopt_ros.core import robot_names, spec
from awopt_ros.ros.params import declare


def declare_joint_names(node):
    """Declare ``joint_names``, ``gripper_joint`` and ``joint_states_topic`` on ``node``.

    Returns:
        (:class:`core.robot_names.JointNames`, joint state topic str).

    Raises:
        ValueError: bad names (``JointNames``) or a topic that is not an absolute ROS name.
    """
    arm = declare(node, 'joint_names', list(spec.ARM_JOINTS),
                  "The driver's names of the arm joints A1..A7, in that order (lbr-stack: "
                  'lbr_A1..lbr_A7; ICube iiwa_ros2: joint_a1..joint_a7)', read_only=True)
    gripper = declare(node, 'gripper_joint', spec.GRIPPER_JOINT,
                      "The driver's name of the gripper finger joint (m, 0 open)",
                      read_only=True)
    topic = declare(node, 'joint_states_topic', robot_names.DEFAULT_JOINT_STATES_TOPIC,
                    'sensor_msgs/JointState topic of the arm (and gripper) driver '
                    '(lbr-stack: /lbr/joint_states)', read_only=True)
    names = robot_names.JointNames(tuple(arm), gripper)
    return names, robot_names.check_topic_ns(topic, 'joint_states_topic')


def declare_camera_ns(node):
    """Declare ``camera_ns`` on ``node``; return (image topic, camera_info topic).

    Raises:
        ValueError: ``camera_ns`` is not an absolute ROS name.
    """
    ns = declare(node, 'camera_ns', robot_names.DEFAULT_CAMERA_NS,
                 'Namespace of the colour camera topics <camera_ns>/color/image_raw and '
                 '<camera_ns>/color/camera_info (realsense-ros 4.x: /camera/camera)',
                 read_only=True)
    return robot_names.camera_topics(ns)
