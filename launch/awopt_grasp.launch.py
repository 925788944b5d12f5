"""Bring up the awopt_ros grasping stack on a ROS 2 install (``ros2 launch awopt_ros ...``).

Same nodes, same params YAML, same DDS settings and the same start-up checks (no unknown
node or parameter in the params file; nodes that share a parameter, e.g. the policy image
size or the driver's joint names, must agree; one stack per ROS domain) as ``awopt bringup``
in a plain venv (awopt_ros/launcher.py). Which device nodes start follows the params file, as
there: ``sim_robot`` when it has a ``sim_robot`` section (simulation, fake hardware),
``realsense_camera`` when it has one of those; a hardware file without either expects the
user's ros2_control driver and camera driver to be running. Optional nodes follow it too:
``success_detector`` (the camera success classifier, executable awopt_success_detector) starts
when the file has a ``success_detector`` section (every grasp bringup). The ``operator`` node
(the label / discard / note services) starts in every bringup, with the logger's
``output_dir`` and ``dataset_name``. Arguments:
  config:=PATH        params YAML (default: the package's config/awopt_ros_kuka_grasp.yaml)
  policy:=actor|scripted
  use_sim_time:=true|false   (true when the simulator publishes /clock)
  robot_state_publisher:=true|false   true: robot_state_publisher publishes /tf from the
                      joint states (fed the URDF renamed to the driver's joint names) and
                      awopt's robot_state only the camera pose and markers
  rviz:=true|false    start rviz2
  rviz_config:=PATH   its config (default config/awopt.rviz)
Lockstep simulation (the simulator waits for the arm's command after each frame): set
sim_robot ``lockstep: true`` and ``publish_clock: true`` in the config, and use_sim_time:=true.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# The same nodes and the same parameter checks as `awopt bringup`.
from awopt_ros.core.param_schema import check_params_file
from awopt_ros.launcher import (ALL_NODE_MODULES, check_domain_free, check_shared_params,
                                effective_params, stack_node_specs, with_operator_overrides)


def check_stack_params(config, policy):
    """Check the params YAML ``config`` for a stack with ``policy`` ('actor' or 'scripted').

    Raises:
        ValueError: a node or parameter no node of the stack has (a typo; the message names
            the file, the node, the key and the closest known names), or nodes that
            disagree on a shared parameter.
    """
    check_params_file(config, ALL_NODE_MODULES)
    check_shared_params(config, [name for name, _ in stack_node_specs(config, policy)])


def check_params(context):
    """Refuse to start any node when :func:`check_stack_params` fails (ValueError)."""
    check_stack_params(LaunchConfiguration('config').perform(context),
                       LaunchConfiguration('policy').perform(context))
    return []


def check_domain(context):
    """Refuse to start any node when an awopt stack (``awopt demo``/``bringup``, or another
    launch) is live on this ROS_DOMAIN_ID (DomainBusyError naming the domain)."""
    check_domain_free()
    return []


def _flag(context, name):
    return LaunchConfiguration(name).perform(context).strip().lower() in ('true', '1', 'yes')


def stack_nodes(context):
    """Return the launch actions that start the stack's nodes for the chosen config, policy,
    robot_state_publisher and rviz arguments (:func:`awopt_ros.launcher.stack_node_specs`)."""
    share = get_package_share_directory('awopt_ros')
    config = LaunchConfiguration('config').perform(context)
    policy = LaunchConfiguration('policy').perform(context)
    params = [config, {'use_sim_time': _flag(context, 'use_sim_time')}]
    use_rsp = _flag(context, 'robot_state_publisher')
    follow = with_operator_overrides(config)   # the operator writes beside the logger's dataset
    actions = []
    for name, _module in stack_node_specs(config, policy):
        node_params = list(params)
        if name in follow:
            node_params.append(follow[name])
        if name == 'robot_state' and use_rsp:
            node_params.append({'publish_robot_tf': False})
        actions.append(Node(package='awopt_ros', executable=f'awopt_{name}', name=name,
                            parameters=node_params, output='screen', emulate_tty=True))
    if use_rsp:
        from awopt_ros.core.paths import resolve
        from awopt_ros.core.robot_names import JointNames
        from awopt_ros.core.robot_tf import rename_joints
        from awopt_ros.core import spec
        rs = effective_params(config, 'robot_state')
        names = JointNames(tuple(rs.get('joint_names', spec.ARM_JOINTS)),
                           rs.get('gripper_joint', spec.GRIPPER_JOINT))
        urdf = resolve(rs.get('urdf_path', 'urdf/iiwa14_gripper.urdf')).read_text()
        actions.append(Node(
            package='robot_state_publisher', executable='robot_state_publisher',
            parameters=[{'robot_description': rename_joints(urdf, names.to_driver),
                         'use_sim_time': _flag(context, 'use_sim_time')}],
            remappings=[('joint_states', rs.get('joint_states_topic', '/joint_states'))],
            output='screen'))
    if _flag(context, 'rviz'):
        actions.append(Node(package='rviz2', executable='rviz2', output='screen',
                            arguments=['-d', LaunchConfiguration('rviz_config').perform(
                                context) or os.path.join(share, 'config', 'awopt.rviz')]))
    return actions


def make_launch_description(config, robot_state_publisher='false', rviz='false',
                            rviz_config='', policies=('actor', 'scripted')):
    """Return the LaunchDescription with these argument defaults (the hardware and insertion
    launch files call this with their own); ``policies``: the ``policy:=`` choices, the first
    the default."""
    return LaunchDescription([
        DeclareLaunchArgument('config', default_value=config),
        DeclareLaunchArgument('policy', default_value=policies[0], choices=list(policies)),
        DeclareLaunchArgument('use_sim_time', default_value='false'),
        DeclareLaunchArgument('robot_state_publisher', default_value=robot_state_publisher),
        DeclareLaunchArgument('rviz', default_value=rviz),
        DeclareLaunchArgument('rviz_config', default_value=rviz_config),
        # Network rule: discovery stays on this machine; camera frames over shared memory.
        SetEnvironmentVariable('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST'),
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', os.path.join(
            get_package_share_directory('awopt_ros'), 'config', 'fastdds_localhost_shm.xml')),
        OpaqueFunction(function=check_params),
        OpaqueFunction(function=check_domain),
        OpaqueFunction(function=stack_nodes),
    ])


def generate_launch_description():
    share = get_package_share_directory('awopt_ros')
    return make_launch_description(os.path.join(share, 'config', 'awopt_ros_kuka_grasp.yaml'))
