"""In-process tests of the arm_interface node's /arm/home service (the reset of a cell with no
simulator): a peer node feeds joint states that follow the trajectory the node sends (as a
controller would), or stay put; the arm moves through the JTC topic, the forward position
controller, or a fake FollowJointTrajectory server under lbr-stack names."""
import json
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from awopt_ros.core.homing import MIN_JERK_PEAK
from awopt_ros.core.kinematics import joint_limits
from awopt_ros.core.robot import HOME_Q
from awopt_ros.core.safety import IIWA14_MAX_VELOCITY_RAD_S
from awopt_ros.core.spec import ARM_JOINTS
from awopt_ros.nodes.arm_interface import HOME_SERVICE, ArmInterfaceNode

from test_arm_interface_node import Harness  # noqa: E402

VMAX = np.array(IIWA14_MAX_VELOCITY_RAD_S)
#: Where the last episode left the arm: A1 is the slowest joint to bring home (0.15 rad).
OFFSET = np.array([0.15, -0.1, 0.0, 0.1, 0.0, 0.05, 0.2])


def _seconds(duration):
    return duration.sec + duration.nanosec * 1e-9


class Follower:
    """Moves the harness's measured joints along the newest trajectory that ``latest()``
    returns (linear between its points from where the joints were when it arrived, as
    joint_trajectory_controller does with positions only); ``frozen``: the arm does not move."""

    def __init__(self, h, latest):
        self.h, self.latest = h, latest
        self.frozen = False
        self._traj = None

    def __call__(self):
        traj = self.latest()
        if traj is not None and traj is not self._traj:
            self._traj, self._t0, self._q0 = traj, time.monotonic(), self.h.q.copy()
        if self._traj is not None and not self.frozen:
            times = [0.0] + [_seconds(p.time_from_start) for p in self._traj.points]
            points = np.vstack([self._q0] + [list(p.positions) for p in self._traj.points])
            t = time.monotonic() - self._t0
            self.h.q = np.array([np.interp(t, times, points[:, j]) for j in range(7)])
        return False


def _topic_traj(h):
    return h.got['traj'][-1] if h.got['traj'] else None


class HomeClient:
    def __init__(self, h):
        self.h = h
        self.client = h.peer.create_client(Trigger, HOME_SERVICE)
        assert h.spin_until(self.client.service_is_ready, 10.0)

    def call(self):
        return self.client.call_async(Trigger.Request())

    def wait(self, future, timeout_s, follow=None):
        """Spin (moving the arm with ``follow``) until ``future`` is done; return
        (success, message dict)."""
        follow = follow or (lambda: False)
        assert self.h.spin_until(lambda: follow() or future.done(), timeout_s)
        return future.result().success, json.loads(future.result().message)


@pytest.fixture
def home_factory(ros_context):
    made = []

    def make(overrides=None, **params):
        params.setdefault('policy_timeout_s', 5.0)
        params.setdefault('joint_state_timeout_s', 1.0)   # a loaded test machine
        overrides = overrides or [Parameter(k, value=v) for k, v in params.items()]
        h = Harness(ros_context, overrides)
        made.append(h)
        h.q = HOME_Q + OFFSET
        assert h.spin_until(lambda: h.arm._q_meas is not None
                            and np.allclose(h.arm._q_meas, h.q), 2.0)
        return h, HomeClient(h)
    yield make
    for h in made:
        h.close()


def test_home_replies_after_the_joints_arrive(home_factory):
    h, home = home_factory()
    follow = Follower(h, lambda: _topic_traj(h))
    h.spin_for(0.1)
    t0 = time.monotonic()
    future = home.call()
    assert h.spin_until(lambda: h.got['traj'] and h.got['gripper'], 2.0)
    traj = h.got['traj'][-1]
    assert list(traj.joint_names) == list(ARM_JOINTS)
    # One trajectory, timed so that A1 (the slowest relative to its limit) peaks at
    # 0.2 x its limit; it ends at home.
    duration_s = _seconds(traj.points[-1].time_from_start)
    assert duration_s == pytest.approx(MIN_JERK_PEAK * 0.15 / (0.2 * VMAX[0]), abs=1e-6)
    np.testing.assert_array_equal(traj.points[-1].positions, HOME_Q)
    assert len(traj.points) > 1
    assert list(h.got['gripper'][-1].data) == [0.0]          # the gripper opens
    # The arm does not move yet: no reply, however long.
    follow.frozen = True
    h.spin_for(duration_s + 0.3)
    assert not future.done() and h.arm._homing is not None
    follow.frozen = False
    ok, reply = home.wait(future, duration_s + 3.0, follow)
    assert ok, reply
    assert reply['state'] == 'home' and reply['error_rad'] <= 0.02
    assert duration_s < reply['duration_s'] < time.monotonic() - t0
    assert np.abs(h.arm._q_meas - HOME_Q).max() <= 0.02
    assert len(h.got['traj']) == 1                          # no hold after a success
    assert h.arm.counts()['homings'] == 1 and h.arm.counts()['homings_failed'] == 0
    # Enabled afterwards, the policy's first command starts from home.
    h.enable(True)
    h.send([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == 2, 3.0)
    assert h.arm.counts()['continuity_refusals'] == 0 and h.arm.counts()['commands_sent'] == 1


def test_trajectory_respects_the_velocity_scale(home_factory):
    """Linear motion between the points (as the controller does) keeps every joint under
    home_velocity_scale x max_joint_velocity_rad_s, with hardware-like limits."""
    limits = [0.74, 0.74, 0.87, 0.65, 1.13, 1.18, 1.18]
    h, home = home_factory(max_joint_velocity_rad_s=limits, home_velocity_scale=0.3)
    q0 = h.q.copy()
    home.call()
    assert h.spin_until(lambda: h.got['traj'], 2.0)
    traj = h.got['traj'][-1]
    times = np.array([0.0] + [_seconds(p.time_from_start) for p in traj.points])
    points = np.vstack([q0] + [list(p.positions) for p in traj.points])
    speed = np.abs(np.diff(points, axis=0)) / np.diff(times)[:, None]
    assert np.all(speed <= 0.3 * np.array(limits) + 1e-6)
    assert speed[:, 0].max() > 0.9 * 0.3 * limits[0]        # not needlessly slow


def test_timeout_fails_and_holds(home_factory):
    h, home = home_factory(home_timeout_s=1.5)
    future = home.call()                          # the arm never moves
    ok, reply = home.wait(future, 4.0)
    assert not ok and reply['state'] == 'failed'
    assert 'not home after home_timeout_s 1.5 s' in reply['reason']
    assert h.spin_until(lambda: len(h.got['traj']) == 2, 1.0)          # the hold
    np.testing.assert_allclose(h.got['traj'][-1].points[0].positions, HOME_Q + OFFSET,
                               atol=1e-12)
    assert h.arm.counts()['homings_failed'] == 1 and h.arm._homing is None


def test_move_longer_than_the_timeout_is_refused(home_factory):
    h, home = home_factory(home_timeout_s=0.5)
    ok, reply = home.wait(home.call(), 3.0)
    assert not ok and 'more than home_timeout_s 0.5' in reply['reason']
    h.spin_for(0.1)
    assert h.got['traj'] == []                    # nothing moved


def test_stop_during_homing_fails_and_holds_and_then_refuses(home_factory):
    h, home = home_factory()
    follow = Follower(h, lambda: _topic_traj(h))
    future = home.call()
    assert h.spin_until(lambda: follow() or len(h.got['traj']) == 1, 2.0)
    h.spin_until(follow, 0.3)                     # half-way
    assert h.stop() == {'state': 'stopped'}       # the executor serves it meanwhile
    ok, reply = home.wait(future, 2.0)
    assert not ok and reply == {'state': 'failed', 'reason': 'stopped: /arm/stop'}
    assert len(h.got['traj']) == 2                # the hold, where the arm was
    np.testing.assert_allclose(h.got['traj'][-1].points[0].positions, h.arm._q_meas,
                               atol=0.05)
    assert len(h.got['traj'][-1].points) == 1
    # Latched: refused with a clear reason, nothing sent.
    ok, reply = home.wait(home.call(), 2.0)
    assert not ok and reply['state'] == 'failed'
    assert reply['reason'] == ('arm stopped (/arm/stop): latched until /arm/clear_stop (or '
                               '/arm/enable true)')
    h.spin_for(0.1)
    assert len(h.got['traj']) == 2


def test_refused_while_enabled(home_factory):
    h, home = home_factory()
    h.enable(True)
    ok, reply = home.wait(home.call(), 2.0)
    assert not ok and reply['reason'].startswith('arm enabled: call /arm/enable false first')
    h.enable(False)
    n = len(h.got['traj'])                        # the disable's hold
    future = home.call()
    assert h.spin_until(lambda: len(h.got['traj']) == n + 1, 2.0)
    assert h.arm._homing is not None and not future.done()


def test_heartbeat_missing_refuses_and_released_fails(home_factory):
    h, home = home_factory(heartbeat_timeout_s=0.5)
    ok, reply = home.wait(home.call(), 2.0)
    assert not ok and reply['reason'] == 'operator heartbeat missing on /arm/heartbeat'
    assert h.got['traj'] == [] and h.got['gripper'] == []
    h.heartbeat = True
    h.spin_for(0.1)
    follow = Follower(h, lambda: _topic_traj(h))
    future = home.call()
    assert h.spin_until(lambda: follow() or h.got['traj'], 2.0)
    h.spin_until(follow, 0.2)
    h.heartbeat = None                           # silence: fails at the timeout
    ok, reply = home.wait(future, 2.0, follow)
    assert not ok and reply['reason'] == 'operator heartbeat missing on /arm/heartbeat'
    assert h.arm.counts()['holds'] == 1
    h.heartbeat = True
    h.spin_for(0.1)
    future = home.call()
    n = len(h.got['traj'])
    assert h.spin_until(lambda: len(h.got['traj']) == n + 1, 2.0)
    h.heartbeat = False                          # released: fails at once
    ok, reply = home.wait(future, 0.5)
    assert not ok and reply['reason'] == 'operator heartbeat released'


def test_stale_joint_states_fail(home_factory):
    h, home = home_factory()
    future = home.call()
    assert h.spin_until(lambda: h.got['traj'], 2.0)
    h.feed_joints = False
    ok, reply = home.wait(future, 3.0)
    assert not ok and reply['reason'].startswith('joint states stale')
    ok, reply = home.wait(home.call(), 2.0)
    assert not ok and reply['reason'].startswith('joint states stale')


def test_a_repeated_request_waits_for_the_same_motion(home_factory):
    """The episode manager resends its reset request when no reply came within
    reset_retry_s: the second request joins the homing in progress, both are answered, and
    one trajectory moved the arm."""
    h, home = home_factory()
    follow = Follower(h, lambda: _topic_traj(h))
    first = home.call()
    assert h.spin_until(lambda: follow() or h.got['traj'], 2.0)
    h.spin_until(follow, 0.3)
    second = home.call()
    ok2, reply2 = home.wait(second, 4.0, follow)
    ok1, reply1 = home.wait(first, 1.0, follow)
    assert ok1 and ok2 and reply1 == reply2 and reply1['state'] == 'home'
    assert len(h.got['traj']) == 1 and h.arm.counts()['homings'] == 1
    # At home already: a new request answers after the shortest move (one control period).
    ok, reply = home.wait(home.call(), 2.0, follow)
    assert ok and reply['duration_s'] < 0.5
    assert h.arm.counts()['homings'] == 2


def test_enable_interrupts_homing(home_factory):
    h, home = home_factory()
    future = home.call()
    assert h.spin_until(lambda: h.got['traj'], 2.0)
    h.enable(True)
    ok, reply = home.wait(future, 1.0)
    assert not ok and reply['reason'] == 'interrupted by /arm/enable True'
    assert len(h.got['traj']) == 2                       # held before the policy acts


def test_forward_position_streams_the_plan(home_factory):
    h, home = home_factory(command_interface='forward_position', home_velocity_scale=0.5)
    q0 = h.q.copy()
    stamps = []

    def follow():              # a forward controller: the arm is where it was commanded
        if h.got['fwd'] and len(stamps) < len(h.got['fwd']):
            stamps.append(time.monotonic())
            h.q = np.array(h.got['fwd'][-1].data)
        return False
    ok, reply = home.wait(home.call(), 5.0, follow)
    assert ok, reply
    targets = np.vstack([q0] + [list(m.data) for m in h.got['fwd']])
    np.testing.assert_allclose(targets[-1], HOME_Q, atol=0.02)
    assert len(targets) > 5
    # each step is at most what the scaled limits allow over a watchdog tick (0.05 s)
    assert np.all(np.abs(np.diff(targets, axis=0)) <= 0.5 * VMAX * 0.05 + 1e-9)


def test_a_late_tick_delays_the_streamed_motion_instead_of_a_larger_step(home_factory):
    """Forward position streaming: the plan advances one tick per target sent, so ticks that
    come late (a busy host) never make a step larger than the limits allow over one tick."""
    h, home = home_factory(command_interface='forward_position', home_velocity_scale=0.5)
    future = home.call()
    assert h.spin_until(lambda: h.arm._homing is not None and h.got['fwd'], 3.0)
    arm = h.arm
    n = len(h.got['fwd'])
    for late_s in (0.5, 1.0, 2.0):            # three ticks, each far later than 50 ms
        arm._stream_home(arm._now_s() + late_s)
    assert h.spin_until(lambda: len(h.got['fwd']) >= n + 3, 3.0)
    targets = np.array([list(m.data) for m in h.got['fwd']])
    assert np.all(np.abs(np.diff(targets, axis=0)) <= 0.5 * VMAX * 0.05 + 1e-9)

    def follow():              # a forward controller: the arm is where it was commanded
        h.q = np.array(h.got['fwd'][-1].data)
        return False
    ok, _ = home.wait(future, 10.0, follow)
    assert ok


def test_home_pose_outside_the_margin_is_refused_at_start(ros_context):
    q = HOME_Q.copy()
    q[1] = joint_limits().upper_rad[1] - 0.01
    with pytest.raises(ValueError, match='A2'):
        ArmInterfaceNode(context=ros_context, parameter_overrides=[
            Parameter('home_joint_positions_rad', value=q.tolist())])
    with pytest.raises(ValueError, match='7 values'):
        ArmInterfaceNode(context=ros_context, parameter_overrides=[
            Parameter('home_joint_positions_rad', value=HOME_Q[:6].tolist())])


def test_margin_change_that_puts_home_outside_is_refused(home_factory):
    q = HOME_Q.copy()
    q[1] = joint_limits().upper_rad[1] - 0.1
    h, _ = home_factory(home_joint_positions_rad=q.tolist())
    result = h.arm.set_parameters([Parameter('joint_limit_margin_rad', value=0.2)])
    assert not result[0].successful and 'home_joint_positions_rad' in result[0].reason


def test_episode_manager_resets_through_home(home_factory):
    """The episode manager with reset_service /arm/home and a retry period shorter than the
    move: its resent requests join the homing in progress (one trajectory), and the episode
    starts (the arm enabled) only after the arm is home."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from awopt_ros.nodes.episode_manager import EpisodeManagerNode
    from awopt_ros.ros import convert, diagnostics, qos
    h, _ = home_factory()
    manager = EpisodeManagerNode(context=h.peer.context, parameter_overrides=[
        Parameter('reset_service', value=HOME_SERVICE), Parameter('reset_retry_s', value=0.3),
        Parameter('wait_for_logger', value=False)])
    h.executor.add_node(manager)
    try:
        events = []
        h.peer.create_subscription(String, '/episode/event',
                                   lambda m: events.append(json.loads(m.data)), qos.LATCHED)
        diag = h.peer.create_publisher(DiagnosticArray, '/diagnostics', 10)
        follow = Follower(h, lambda: _topic_traj(h))

        def live():         # the camera pipeline's status and the policy, on older frames
            follow()
            diag.publish(diagnostics.diagnostic_array(h.peer, 'camera_pipeline', {'ok': 1}))
            old = convert.s_to_stamp(h.peer.get_clock().now().nanoseconds * 1e-9 - 10.0)
            h.action_pub.publish(convert.action_to_msg([0.0] * 7, old))
            return False
        start = h.peer.create_client(Trigger, '/episode/start')
        assert h.spin_until(lambda: live() or (
            start.service_is_ready() and manager.reset_client.service_is_ready()
            and not manager.monitor.silent(time.monotonic())), 10.0)
        future = start.call_async(Trigger.Request())
        assert h.spin_until(lambda: live() or future.done(), 3.0)
        assert future.result().success, future.result().message
        assert h.spin_until(lambda: live() or any(e['event'] == 'start' for e in events), 6.0)
        assert np.abs(h.q - HOME_Q).max() <= 0.02              # home before the start
        assert h.arm.counts()['homings_failed'] == 0
        assert manager.reset_requests >= 2                     # resent while moving
        # One move from where the arm was; a request resent just as the reply was on its way
        # may start one more homing, from home: the shortest (one control period).
        moves = [_seconds(t.points[-1].time_from_start) for t in h.got['traj']]
        assert moves[0] > 0.9 and all(m == pytest.approx(0.1) for m in moves[1:])
        assert h.arm.counts()['homings'] == len(moves) < manager.reset_requests
        assert h.arm._gate.active                              # enabled after the reply
        assert not any(e['event'] == 'start_failed' for e in events)
    finally:
        h.executor.remove_node(manager)
        manager.destroy_node()
