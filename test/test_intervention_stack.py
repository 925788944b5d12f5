"""Integration: an operator intervenes in a lockstep episode through real node processes.

The stack (shipped actor, simulator in lockstep) runs one episode while this test plays the
operator: first a few twists in a wrong frame (rejected: no intervention), then, from the
policy's third action on, ``+x`` twists (0.1 m/s, i.e. 1 cm per 0.1 s step) on
``/operator/twist`` at 20 Hz until the arm interface has executed 4 of them, then nothing.
Checks: the steps whose stamps came on ``/arm/intervention`` are exactly the dataset's
intervention steps, with the operator's action, policy id 'operator' and the policy's own
action kept; the tool moved +x during them (dataset proprio); the policy acts again
afterwards (its own actions, as published, are the recorded steps).
"""
import os
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState

from awopt_ros.core.dataset import POLICY_IDS, load_episodes
from awopt_ros.launcher import Stack, ros_environment
from awopt_ros.ros import convert, qos
from awopt_ros.ros.episode_client import EpisodeClient
from awopt_ros.ros.runner import stack_overrides

MAX_STEPS = 16
SPEED_M_S = 0.1
INTERVENTIONS = 4
DATASET_ID = 'awopt/kuka-grasp-v0'


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('intervention')
    overrides = stack_overrides(out, seed=4310, lockstep=True, extra={
        'episode_manager': {'max_steps': MAX_STEPS},
        'arm_interface': {'intervention_timeout_s': 0.2},
        # the dataset's proprio is then the one each action was computed from (without it
        # the logger takes the newest joint state it has when the step's image comes, which
        # in lockstep may be several ms of simulated motion older)
        'policy': {'publish_proprio': True},
        # a command later than this (a loaded 2-core host) would be a lost step
        'sim_robot': {'lockstep_timeout_s': 1.0}})
    stack = Stack(policy='actor', log_dir=out / 'logs', overrides=overrides,
                  env=ros_environment(domain_id=os.environ['ROS_DOMAIN_ID']))
    ctx = Context()
    rclpy.init(context=ctx)
    client = EpisodeClient(context=ctx)
    actions, executed = [], []
    client.create_subscription(JointState, '/policy/action', actions.append, qos.COMMAND)
    client.create_subscription(JointState, '/arm/intervention', executed.append, qos.COMMAND)
    twist_pub = client.create_publisher(TwistStamped, '/operator/twist', qos.COMMAND)
    state = {'frame': None}       # None: not publishing

    def publish():
        if state['frame'] is None:
            return
        msg = TwistStamped()
        msg.header.stamp = client.get_clock().now().to_msg()
        msg.header.frame_id = state['frame']
        msg.twist.linear.x = SPEED_M_S
        twist_pub.publish(msg)
    client.create_timer(0.05, publish)
    stack.start()
    try:
        alive = lambda: not stack.dead()  # noqa: E731
        assert client.wait_ready(120.0, alive=alive), [n.log_tail() for n in stack.dead()]
        k = client.start_episode(timeout_s=60.0, alive=alive)
        assert client.spin_until(lambda: any(e.get('episode') == k for e in client.events),
                                 30.0)
        t_start = next(e['stamp_s'] for e in client.events if e.get('episode') == k)
        mine = lambda: [m for m in actions  # noqa: E731
                        if convert.stamp_to_s(m.header.stamp) > t_start]
        state['frame'] = 'tool0'            # a wrong frame: rejected, the policy acts
        assert client.spin_until(lambda: len(mine()) >= 2, 30.0, alive)
        state['frame'] = 'base_link'
        assert client.spin_until(lambda: len(executed) >= INTERVENTIONS, 30.0, alive), \
            [n.log_tail() for n in stack.nodes]
        state['frame'] = None               # the operator lets go
        end = client.wait_end(k, 60.0, alive=alive)
        assert end is not None and end['event'] == 'end', [n.log_tail() for n in stack.nodes]
        assert client.wait_saved(k, 30.0) is not None, stack.nodes[-1].log_tail()
        client.spin_until(lambda: False, 1.2)     # one more diagnostics round
    finally:
        codes = stack.stop()
    result = dict(end=end, actions=mine(), executed=list(executed), codes=codes,
                  counters=dict(client.counters.get('arm_interface', {})),
                  episodes=load_episodes(out, DATASET_ID))
    client.destroy_node()
    rclpy.try_shutdown(context=ctx)
    return result


def test_nodes_exit_cleanly(run):
    assert all(code == 0 for code in run['codes'].values()), run['codes']


def test_dataset_marks_exactly_the_executed_operator_steps(run):
    (ep,) = run['episodes']
    steps = len(ep['actions'])
    flags = ep['intervention'][:steps]
    executed = {round(convert.stamp_to_s(m.header.stamp), 6): np.asarray(m.position)
                for m in run['executed']}
    recorded = {round(s, 6) for s in ep['stamp_s'][:steps][flags]}
    assert recorded == set(executed), (sorted(recorded), sorted(executed))
    assert flags.sum() >= INTERVENTIONS
    idx = np.flatnonzero(flags)
    assert np.all(np.diff(idx) == 1), idx                 # one window
    assert idx[0] >= 2, idx                               # not the wrong-frame twists
    operator = np.float32([SPEED_M_S * 0.1, 0, 0, 0, 0, 0, 0])
    for t in idx:
        np.testing.assert_allclose(ep['actions'][t], operator, atol=1e-6)
        np.testing.assert_allclose(executed[round(ep['stamp_s'][t], 6)], operator, atol=1e-6)
        assert ep['policy'][t] == POLICY_IDS['operator']
    # the policy's own actions on those steps are kept; elsewhere the actions are the policy's
    published = {round(convert.stamp_to_s(m.header.stamp), 6): np.asarray(m.position)
                 for m in run['actions']}
    for t in range(steps):
        own = published[round(ep['stamp_s'][t], 6)]
        if flags[t]:
            np.testing.assert_allclose(ep['policy_action'][t], own, atol=1e-6)
        else:
            np.testing.assert_allclose(ep['actions'][t], np.clip(own, *_bounds()), atol=1e-6)
            assert np.isnan(ep['policy_action'][t]).all()
    assert int(run['counters']['operator_twists_rejected']) >= 1
    assert int(run['counters']['intervention_steps']) == len(idx)


def _bounds():
    from awopt_ros.core import spec
    return spec.ACTION_LOW, spec.ACTION_HIGH


def test_the_arm_moved_as_the_operator_commanded(run):
    (ep,) = run['episodes']
    idx = np.flatnonzero(ep['intervention'][:len(ep['actions'])])
    xyz = ep['proprio'][:, :3]
    moves = xyz[idx + 1] - xyz[idx]
    # 1 cm per step along +x, of which the arm's servo covers about 86 % within the control
    # period; the first step may still carry a little of the policy's motion before it
    assert np.all((moves[1:, 0] > 0.007) & (moves[1:, 0] < 0.011)), np.round(moves * 1e3, 2)
    assert np.all(np.abs(moves[1:, 1:]) < 0.002), np.round(moves * 1e3, 2)
    assert moves[0, 0] > 0.004, np.round(moves * 1e3, 2)


def test_the_policy_resumes_after_the_intervention(run):
    (ep,) = run['episodes']
    steps = len(ep['actions'])
    idx = np.flatnonzero(ep['intervention'][:steps])
    after = np.arange(idx[-1] + 1, steps)
    assert len(after) >= 1, (idx, steps, run['end'])
    assert np.all(ep['policy'][after] == POLICY_IDS['actor'])
    assert not ep['intervention'][after].any()



def test_teleop_publishes_while_a_key_is_held_and_refuses_without_a_tty(tmp_path):
    """``awopt teleop`` on a pseudo-terminal: held ``w`` -> +x twists in base_link, ``c`` ->
    gripper close, released -> one zero twist and silence, arrow / function / uppercase keys
    send nothing, Ctrl-D quits (exit 0); without a terminal it refuses with one line."""
    import pty
    import subprocess
    import sys
    import time

    from std_msgs.msg import Bool
    awopt = str(Path(sys.prefix) / 'bin' / 'awopt')
    env = ros_environment(domain_id=os.environ['ROS_DOMAIN_ID'])
    refused = subprocess.run([awopt, 'teleop'], stdin=subprocess.DEVNULL, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and 'not a tty' in refused.stderr, refused.stderr
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node('teleop_listener', context=ctx)
    twists, grippers = [], []
    node.create_subscription(TwistStamped, '/operator/twist', twists.append, qos.SENSOR)
    node.create_subscription(Bool, '/operator/gripper', grippers.append, qos.SENSOR)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    master, slave = pty.openpty()
    proc = subprocess.Popen([awopt, 'teleop', '--hold-s', '0.3'], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    os.close(slave)

    def spin(seconds, keys=b''):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if keys:
                os.write(master, keys)
            executor.spin_once(timeout_sec=0.05)
    try:
        spin(4.0)          # start-up and discovery
        assert not twists
        spin(1.5, b'w')    # held: the key repeats
        moving = [m for m in twists if m.twist.linear.x > 0]
        assert len(moving) >= 10, len(twists)
        assert all(m.header.frame_id == 'base_link' and m.twist.linear.x == pytest.approx(0.1)
                   for m in moving)
        assert not grippers
        spin(0.3, b'c')
        spin(1.0)          # released
        assert grippers and grippers[-1].data is True
        last = twists[-1]
        assert last.twist.linear.x == 0.0 and last.twist.angular.z == 0.0
        count = len(twists)
        spin(0.8)
        assert len(twists) == count          # quiet: the policy takes over
        gripped = len(grippers)
        # arrow, function and uppercase keys: escape sequences and letters are no commands
        spin(0.8, b'\x1b[A\x1b[C\x1bOP\x1b[15~WC')
        spin(0.5)
        assert len(twists) == count and len(grippers) == gripped
        os.write(master, b'\x04')
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
