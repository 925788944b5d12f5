"""In-process tests of the arm_interface node's hardware safety additions (topic interface):
/arm/stop latching, per-joint velocity limits, joint position margins, the continuity of the
first command, and the operator heartbeat. Each test drives the fault the safety addition is
there for."""
import json

import numpy as np
import pytest
from rclpy.parameter import Parameter

from awopt_ros.core.kinematics import default_kinematics, joint_limits
from awopt_ros.core.robot import HOME_Q
from awopt_ros.nodes.arm_interface import ArmInterfaceNode
from awopt_ros.ros.diagnostics import OK, WARN

from test_arm_interface_node import Harness  # noqa: E402


@pytest.fixture
def harness_factory(ros_context):
    made = []

    def make(**params):
        params.setdefault('policy_timeout_s', 5.0)
        h = Harness(ros_context, [Parameter(k, value=v) for k, v in params.items()])
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def _positions(h, i=-1):
    return np.array(h.got['traj'][i].points[0].positions)


def test_stop_holds_at_once_and_latches_until_enable(harness_factory):
    h = harness_factory()
    h.enable(True)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == 1, 3.0)
    assert h.stop() == {'state': 'stopped'}
    assert h.spin_until(lambda: len(h.got['traj']) == 2, 2.0)      # the hold
    np.testing.assert_allclose(_positions(h), HOME_Q, atol=1e-12)
    for _ in range(3):
        h.send([0.02, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    h.spin_for(0.3)
    assert len(h.got['traj']) == 2 and h.got['gripper'] == []
    assert h.arm.counts()['ignored'] >= 3 and h.arm.counts()['stops'] == 1
    assert h.spin_until(lambda: h.got['diag'] and h.diagnostics()[2]['stopped'] == 'True',
                        3.0)
    level, message, _ = h.diagnostics()
    assert level == WARN and message == 'stopped: /arm/stop'
    assert h.stop() == {'state': 'already stopped'}
    h.enable(False)                                    # a disable does not clear the stop
    assert h.arm._gate.stopped
    h.enable(True)                                     # an enable does
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    n = len(h.got['traj'])
    assert h.spin_until(lambda: len(h.got['traj']) == n + 1, 3.0)
    assert np.abs(_positions(h) - HOME_Q).max() > 1e-3        # a move, not a hold
    assert h.spin_until(lambda: h.diagnostics()[0] == OK, 3.0)


def test_clear_stop_acknowledges_without_arming_the_policy(harness_factory):
    """/arm/clear_stop clears the latch and leaves the arm disabled: actions still do not
    move it until the next enable (an episode start), and /arm/home is no longer refused."""
    from std_srvs.srv import Trigger
    h = harness_factory()
    client = h.peer.create_client(Trigger, '/arm/clear_stop')

    def clear():
        future = client.call_async(Trigger.Request())
        assert h.spin_until(future.done, 5.0)
        return json.loads(future.result().message)
    assert h.spin_until(client.service_is_ready, 5.0)
    assert clear() == {'state': 'not stopped'}
    h.enable(True)
    assert h.stop() == {'state': 'stopped'}
    n = len(h.got['traj'])
    assert clear() == {'state': 'cleared'}
    assert not h.arm._gate.stopped and not h.arm._gate.enabled
    ignored = h.arm.counts()['ignored']
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: h.arm.counts()['ignored'] > ignored, 3.0)   # it came
    h.spin_for(0.1)
    assert all(np.allclose(t.points[0].positions, HOME_Q, atol=1e-12)
               for t in h.got['traj'][n:])                # holds only, no move
    h.enable(True)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: np.abs(_positions(h) - HOME_Q).max() > 1e-3, 3.0)


def test_velocity_limits_bound_every_step(harness_factory):
    """A large action whose IK step would move joints faster than configured hardware
    limits is shortened so that no joint exceeds them over the control period."""
    limits = [0.2] * 7
    h = harness_factory(max_joint_velocity_rad_s=limits)
    h.enable(True)
    h.send([0.03, 0.03, -0.03, 0.2, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: h.got['traj'], 3.0)
    step = np.abs(_positions(h) - HOME_Q)
    assert np.all(step <= np.array(limits) * 0.1 + 1e-12)
    assert step.max() == pytest.approx(0.02)           # the fastest joint at its limit
    assert h.arm.counts()['velocity_limited'] == 1
    # Default limits (iiwa 14 datasheet) at a 30 Hz period.
    result = h.arm.set_parameters([Parameter('max_joint_velocity_rad_s',
                                             value=list(np.deg2rad([85, 85, 100, 75, 130,
                                                                    135, 135]))),
                                   Parameter('control_period_s', value=1 / 30)])
    assert all(r.successful for r in result)
    h.q = _positions(h)
    assert h.spin_until(lambda: np.allclose(h.arm._q_meas, h.q), 2.0)
    h.send([0.03, -0.03, 0.03, -0.2, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == 2, 3.0)
    speed = np.abs(_positions(h) - h.q) * 30
    assert np.all(speed <= np.deg2rad([85, 85, 100, 75, 130, 135, 135]) + 1e-9)


def test_velocity_limits_above_the_robot_are_refused(harness_factory, ros_context):
    h = harness_factory()
    result = h.arm.set_parameters([Parameter('max_joint_velocity_rad_s', value=[3.0] * 7)])
    assert not result[0].successful and 'exceeds the robot velocity limits' in \
        result[0].reason
    with pytest.raises(ValueError, match='7 values'):
        ArmInterfaceNode(context=ros_context, parameter_overrides=[
            Parameter('max_joint_velocity_rad_s', value=[1.0] * 6)])


def test_joint_margin_keeps_targets_off_the_limits(harness_factory):
    """A7 measured 0.06 rad below its limit, an action that turns it further: the target
    stops at the limit less joint_limit_margin_rad (the IK alone would go to 1 mrad off)."""
    upper = joint_limits().upper_rad[6]
    h = harness_factory(joint_limit_margin_rad=0.05)
    h.q = HOME_Q.copy()
    h.q[6] = upper - 0.06
    kin = default_kinematics()
    yaw = 0.2 if kin.ik_step(h.q, np.zeros(3), 0.2, 0.1)[6] > h.q[6] else -0.2
    assert kin.ik_step(h.q, np.zeros(3), yaw, 0.1)[6] > upper - 0.05   # IK alone: too far
    h.enable(True)
    h.send([0.0, 0.0, 0.0, yaw, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: h.got['traj'], 3.0)
    assert _positions(h)[6] == pytest.approx(upper - 0.05, abs=1e-12)
    assert h.arm.counts()['clamped_joints'] == 1
    assert h.spin_until(lambda: h.got['diag'] and h.diagnostics()[2]['clamped_joints'] == '1',
                        3.0)


def test_first_command_far_from_the_measured_joints_is_refused(harness_factory):
    h = harness_factory(max_start_jump_rad=0.01)
    h.enable(True)
    h.send([0.03, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])         # joint steps of several 0.01 rad
    assert h.spin_until(lambda: h.arm.counts()['continuity_refusals'] == 1, 3.0)
    assert h.spin_until(lambda: h.got['traj'], 1.0)      # only a hold at the measured joints
    np.testing.assert_allclose(_positions(h), HOME_Q, atol=1e-12)
    assert h.got['gripper'] == [] and h.arm.counts()['commands_sent'] == 0
    h.send([0.001, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])        # continuous: goes out
    assert h.spin_until(lambda: h.arm.counts()['commands_sent'] == 1, 3.0)
    h.send([0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])         # later commands are not refused
    assert h.spin_until(lambda: h.arm.counts()['commands_sent'] == 2, 3.0)
    assert h.arm.counts()['continuity_refusals'] == 1
    # A hold (stale joint states) makes the next command a first one again.
    h.feed_joints = False
    assert h.spin_until(lambda: h.arm.counts()['holds'] == 2, 2.0)
    h.feed_joints = True
    h.spin_for(0.1)
    h.send([0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: h.arm.counts()['continuity_refusals'] == 2, 3.0)


def test_first_command_starts_at_the_joints_measured_after_enable(harness_factory):
    """The arm was moved while disabled (joint states jump): the first command is computed
    from, and continuous with, the joints measured after the enable, not the old ones."""
    h = harness_factory()
    h.enable(True)
    h.enable(False)
    moved = HOME_Q.copy()
    for _ in range(5):        # 10 cm along y, gripper still pointing down
        moved = default_kinematics().ik_step(moved, [0.0, 0.02, 0.0], 0.0, 10.0)
    assert np.abs(moved - HOME_Q).max() > 0.1
    h.feed_joints = False
    h.enable(True, wait_joints=False)
    h.q = moved
    h.feed_joints = True
    assert h.spin_until(lambda: h.arm._q_meas is not None, 2.0)
    n = len(h.got['traj'])
    h.send([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == n + 1, 3.0)
    assert np.abs(_positions(h) - moved).max() < 0.05
    assert h.arm.counts()['continuity_refusals'] == 0


def test_heartbeat_missing_or_released_holds(harness_factory):
    h = harness_factory(heartbeat_timeout_s=1.0)
    reply = json.loads(h.enable(True).message)
    assert 'heartbeat' in reply['stale']                 # never pressed yet
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    h.spin_for(0.3)
    assert h.arm.counts()['commands_sent'] == 0 and h.arm.counts()['ignored'] == 1
    h.heartbeat = True                                   # pressed: commands go out
    h.spin_for(0.1)
    n = len(h.got['traj'])
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == n + 1, 3.0)
    assert h.arm.counts()['commands_sent'] == 1
    h.heartbeat = None                                   # the operator lets go: silence
    assert h.spin_until(lambda: len(h.got['traj']) == n + 2, 1.0 + 1.0)   # a hold
    np.testing.assert_allclose(_positions(h), HOME_Q, atol=1e-12)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    h.spin_for(0.3)
    assert h.arm.counts()['commands_sent'] == 1          # nothing until it returns
    assert len(h.got['traj']) == n + 2
    assert h.spin_until(lambda: h.got['diag'] and 'heartbeat' in h.diagnostics()[1], 3.0)
    h.heartbeat = True
    h.spin_for(0.1)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == n + 3, 3.0)
    assert h.arm.counts()['commands_sent'] == 2
    h.heartbeat = False                       # released explicitly: before the timeout
    assert h.spin_until(lambda: len(h.got['traj']) == n + 4, 0.6)
    np.testing.assert_allclose(_positions(h), HOME_Q, atol=1e-12)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])       # released, within the timeout
    h.spin_for(0.2)
    assert h.arm.counts()['commands_sent'] == 2 and len(h.got['traj']) == n + 4
