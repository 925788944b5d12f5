"""Integration: the fake-hardware bringup through real node processes.

``config/awopt_ros_kuka_fake_hardware.yaml`` runs the simulator under the lbr-stack's names and
interfaces: joints ``lbr_A1..lbr_A7`` on ``/lbr/joint_states``, the camera under realsense-ros
4.x names (``/camera/camera/color/...``), the arm through the FollowJointTrajectory action
``/lbr/joint_trajectory_controller/follow_joint_trajectory`` and the gripper through the
GripperCommand action ``/gripper_controller/gripper_cmd``. Two scripted episodes in lockstep;
then checks that the arm and the gripper moved through the actions (goals accepted by the
simulator's action servers, none rejected), that nothing used the simulator's own topic names,
and that the bag and dataset hold the episodes under the driver's names.
"""
import os
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.action import get_action_names_and_types
from rclpy.context import Context
from sensor_msgs.msg import JointState

from awopt_ros.core.dataset import load_episodes
from awopt_ros.launcher import Stack, ros_environment
from awopt_ros.ros import qos
from awopt_ros.ros.episode_client import EpisodeClient
from awopt_ros.ros.runner import stack_overrides

CONFIG = 'config/awopt_ros_kuka_fake_hardware.yaml'
LBR = [f'lbr_A{i}' for i in range(1, 8)]
MAX_STEPS = 25


def _number(text):
    """A diagnostics value as an int where it is one (the values travel as text)."""
    try:
        return int(text)
    except (TypeError, ValueError):
        return text


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('fake_hardware')
    overrides = stack_overrides(out, seed=4300, lockstep=True,
                                extra={'episode_manager': {'max_steps': MAX_STEPS}})
    stack = Stack(config=CONFIG, policy='scripted', log_dir=out / 'logs', overrides=overrides,
                  env=ros_environment(domain_id=os.environ['ROS_DOMAIN_ID']))
    ctx = Context()
    rclpy.init(context=ctx)
    client = EpisodeClient(camera_ns='/camera/camera', context=ctx)
    joint_names = set()
    client.create_subscription(JointState, '/lbr/joint_states',
                               lambda m: joint_names.add(tuple(m.name)), qos.SENSOR)
    stack.start()
    try:
        alive = lambda: not stack.dead()  # noqa: E731
        assert client.wait_ready(120.0, alive=alive), [n.log_tail() for n in stack.dead()]
        ends = []
        for _ in range(2):
            k = client.start_episode(timeout_s=60.0, alive=alive)
            ends.append(client.wait_end(k, 90.0, alive=alive))
            assert ends[-1] is not None and ends[-1]['event'] == 'end', \
                [n.log_tail() for n in stack.nodes]
            assert client.wait_saved(k, 30.0) is not None
        # the 1 Hz diagnostics (node clocks: simulated time, which crawls between episodes
        # in lockstep) catch up with every step of both episodes
        steps = sum(end['steps'] for end in ends)

        def counted():
            arm = client.counters.get('arm_interface', {})
            sim = client.counters.get('sim_robot', {})
            return (_number(arm.get('goals_accepted', 0)) >= steps
                    and _number(sim.get('arm_goals_goals', 0)) >= steps)
        client.spin_until(counted, 20.0)
        actions = dict(get_action_names_and_types(client))
        # Endpoints of the stack's nodes only: a node of an earlier in-process test that the
        # garbage collector has not yet destroyed may still be in the graph under these names.
        ours = {n.name for n in stack.nodes}

        def endpoints(infos):
            return sorted(f'{i.node_namespace.rstrip("/")}/{i.node_name}' for i in infos
                          if i.node_name in ours)
        topics = {name: [endpoints(client.get_publishers_info_by_topic(name)),
                         endpoints(client.get_subscriptions_info_by_topic(name))]
                  for name in ('/arm_controller/joint_trajectory', '/joint_states',
                               '/camera/color/image_raw', '/camera/color/camera_info')}
        others = {name: [client.count_publishers(name), client.count_subscribers(name)]
                  for name in topics}
        driver_topic = endpoints(client.get_publishers_info_by_topic('/lbr/joint_states'))
        counters = {name: {k: _number(v) for k, v in values.items()}
                    for name, values in client.counters.items()}
    finally:
        codes = stack.stop()
    result = dict(ends=ends, codes=codes, out=out, actions=actions, topics=topics, others=others,
                  driver_topic=driver_topic,
                  counters=counters, joint_names=joint_names, saved=dict(client.saved))
    client.destroy_node()
    rclpy.try_shutdown(context=ctx)
    return result


def test_episodes_run_and_nodes_exit_cleanly(run):
    assert all(code == 0 for code in run['codes'].values()), run['codes']
    for end in run['ends']:
        assert end['outcome'] in ('success', 'terminate', 'timeout')
        assert 1 <= end['steps'] <= MAX_STEPS


def test_arm_and_gripper_move_through_the_control_msgs_actions(run):
    actions = run['actions']
    assert actions['/lbr/joint_trajectory_controller/follow_joint_trajectory'] == [
        'control_msgs/action/FollowJointTrajectory']
    assert actions['/gripper_controller/gripper_cmd'] == ['control_msgs/action/GripperCommand']
    sim = run['counters']['sim_robot']
    steps = sum(end['steps'] for end in run['ends'])
    # one goal per action at least (holds add more); the simulator rejected none
    assert sim['arm_goals_goals'] >= steps, sim
    assert sim['arm_goals_rejected'] == 0 and sim['gripper_goals_rejected'] == 0, sim
    assert sim['gripper_goals_goals'] >= 2, sim     # the scripted grasp closes, reset opens
    arm = run['counters']['arm_interface']
    assert arm['goals_accepted'] >= steps and arm['goals_rejected'] == 0, arm
    assert arm['goals_failed'] == 0 and arm['controller_faults'] == 0, arm
    assert arm['gripper_goals_sent'] >= 1, arm


def test_nothing_speaks_the_simulators_own_names(run):
    # (the simulator keeps serving the topic interface of the controllers under their names)
    assert all(ends == [[], []] for ends in run['topics'].values()), (run['topics'],
                                                                   run['others'])
    assert run['driver_topic'] == ['/sim_robot']   # the check sees the stack's endpoints


def test_bag_and_dataset_hold_the_episodes_under_the_drivers_names(run):
    from rosbags.highlevel import AnyReader
    saved = run['saved'][run['ends'][0]['episode']]
    with AnyReader([Path(saved['bag'])]) as reader:
        topics = {c.topic for c in reader.connections}
        assert {'/lbr/joint_states', '/camera/camera/color/image_raw',
                '/camera/camera/color/camera_info'} <= topics
        assert not {'/joint_states', '/camera/color/image_raw'} & topics
        names = {tuple(reader.deserialize(raw, c.msgtype).name) for c, _, raw in
                 reader.messages(connections=[c for c in reader.connections
                                              if c.topic == '/lbr/joint_states'])}
    assert names == {tuple(LBR) + ('gripper_finger_joint',)}
    episodes = load_episodes(saved['dataset_root'], saved['dataset_id'])
    assert len(episodes) == 2
    for ep in episodes:      # proprio read from the lbr-named joints: the tool moved
        xyz = ep['proprio'][:, :3]
        assert np.all(np.isfinite(xyz)) and np.ptp(xyz[:, 2]) > 0.01
