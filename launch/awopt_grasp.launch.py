"""Bring up the awopt_ros grasping stack on a ROS 2 install (``ros2 launch awopt_ros ...``).

Same nodes, same params YAML, same DDS settings and the same start-up checks (no unknown
node or parameter in the params file; nodes that share a parameter, e.g. the policy image
size, must agree) as ``awopt bringup`` in a plain venv (awopt_ros/launcher.py). Arguments:
  config:=PATH        params YAML (default: the package's config/awopt_ros_kuka_grasp.yaml)
  policy:=actor|scripted
  use_sim_time:=true|false   (true when the simulator publishes /clock)
Lockstep simulation (the simulator waits for the arm's command after each frame): set
sim_robot ``lockstep: true`` and ``publish_clock: true`` in the config, and use_sim_time:=true.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import LaunchConfigurationEquals
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# The same nodes and the same parameter checks as `awopt bringup`.
from awopt_ros.core.param_schema import check_params_file
from awopt_ros.launcher import (ALL_NODE_MODULES, POLICY_NODES, STACK_NODES, check_domain_free,
                                check_shared_params)


def check_stack_params(config, policy):
    """Check the params YAML ``config`` for a stack with ``policy`` ('actor' or 'scripted').

    Raises:
        ValueError: a node or parameter no node of the stack has (a typo; the message names
            the file, the node, the key and the closest known names), or nodes that
            disagree on a shared parameter.
    """
    check_params_file(config, ALL_NODE_MODULES)
    nodes = [name for name, _ in STACK_NODES] + [POLICY_NODES[policy][0]]
    check_shared_params(config, nodes)


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


def generate_launch_description():
    share = get_package_share_directory('awopt_ros')
    config = LaunchConfiguration('config')
    use_sim_time = LaunchConfiguration('use_sim_time')
    params = [config, {'use_sim_time': use_sim_time}]

    def node(name, **kwargs):
        return Node(package='awopt_ros', executable=f'awopt_{name}', name=name,
                    parameters=params, output='screen', emulate_tty=True, **kwargs)

    return LaunchDescription([
        DeclareLaunchArgument('config', default_value=os.path.join(
            share, 'config', 'awopt_ros_kuka_grasp.yaml')),
        DeclareLaunchArgument('policy', default_value='actor',
                              choices=['actor', 'scripted']),
        DeclareLaunchArgument('use_sim_time', default_value='false'),
        # Network rule: discovery stays on this machine; camera frames over shared memory.
        SetEnvironmentVariable('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST'),
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', os.path.join(
            share, 'config', 'fastdds_localhost_shm.xml')),
        OpaqueFunction(function=check_params),
        OpaqueFunction(function=check_domain),
        *[node(name) for name, _ in STACK_NODES],
        *[node(name, condition=LaunchConfigurationEquals('policy', kind))
          for kind, (name, _) in POLICY_NODES.items()],
    ])
