"""The arm_interface node with operator interventions (in process, private rclpy Context):
the operator's command replaces policy actions only where a policy action would be executed,
through the same gate, filter and limits, and is published on /arm/intervention."""
import numpy as np
import pytest
from geometry_msgs.msg import TwistStamped
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from test_arm_interface_node import Harness, _tcp_delta

from awopt_ros.core import spec
from awopt_ros.core.kinematics import default_kinematics
from awopt_ros.core.robot import HOME_Q
from awopt_ros.ros import convert, qos

POLICY = [-0.02, 0.01, 0.0, 0.0, 1.0, 0.0, 0.0]     # the policy moves -x, +y and opens


class Operator:
    """Operator topics on the harness's peer node, and what the arm interface executed."""

    def __init__(self, h):
        self.h = h
        self.twist_pub = h.peer.create_publisher(TwistStamped, '/operator/twist', qos.COMMAND)
        self.gripper_pub = h.peer.create_publisher(Bool, '/operator/gripper', qos.COMMAND)
        self.executed = []
        h.peer.create_subscription(JointState, '/arm/intervention', self.executed.append,
                                   qos.COMMAND)
        assert h.spin_until(lambda: self.twist_pub.get_subscription_count() > 0
                            and self.gripper_pub.get_subscription_count() > 0, 10.0)

    def twist(self, vx=0.0, vy=0.0, vz=0.0, yaw=0.0, frame='base_link'):
        msg = TwistStamped()
        msg.header.stamp = self.h.peer.get_clock().now().to_msg()
        msg.header.frame_id = frame
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = vx, vy, vz
        msg.twist.angular.z = yaw
        self.twist_pub.publish(msg)
        self.h.spin_for(0.05)     # received before the next policy action

    def gripper(self, closed):
        self.gripper_pub.publish(Bool(data=closed))
        self.h.spin_for(0.05)


@pytest.fixture
def rig(ros_context):
    made = []

    def make(overrides=()):
        h = Harness(ros_context, [Parameter('intervention_timeout_s', value=0.5),
                                  *overrides])
        made.append(h)
        return h, Operator(h)
    yield make
    for h in made:
        h.close()


def test_the_operator_replaces_policy_actions_while_active(rig):
    h, op = rig()
    h.enable(True)
    op.twist(vx=0.1, yaw=-0.5)
    op.gripper(True)
    h.send(POLICY)
    assert h.spin_until(lambda: h.got['traj'] and op.executed and h.got['gripper'], 3.0)
    dpos, dyaw = _tcp_delta(np.array(h.got['traj'][-1].points[0].positions))
    np.testing.assert_allclose(dpos, [0.01, 0.0, 0.0], atol=2e-4)     # 0.1 m/s x 0.1 s
    assert dyaw == pytest.approx(-0.05, abs=2e-3)
    assert list(h.got['gripper'][-1].data) == [0.04]                   # closed, not opened
    msg = op.executed[-1]
    assert tuple(msg.name) == spec.ACTION_NAMES
    np.testing.assert_allclose(msg.position, [0.01, 0, 0, -0.05, 0, 1, 0], atol=1e-7)
    assert h.arm.counts()['intervention_steps'] == 1
    # too fast for one step: clipped to the action bounds (3 cm) like a policy action
    op.twist(vx=1.0)
    h.send(POLICY)
    assert h.spin_until(lambda: len(op.executed) == 2 and len(h.got['traj']) == 2, 3.0)
    np.testing.assert_allclose(op.executed[-1].position[:4], [0.03, 0, 0, 0], atol=1e-7)
    h.q = np.array(h.got['traj'][-2].points[0].positions)    # the arm reached the first step
    # the operator lets go: after intervention_timeout_s the policy acts again
    h.spin_for(0.6)
    h.send(POLICY)
    assert h.spin_until(lambda: h.arm.counts()['commands_sent'] == 3
                        and len(h.got['gripper']) == 3, 3.0)
    assert len(op.executed) == 2
    assert list(h.got['gripper'][-1].data) == [0.0]                    # the policy's open


def test_an_operator_command_from_before_an_enable_does_not_carry_into_the_episode(rig):
    """A twist held to the end of one episode is still younger than intervention_timeout_s
    when the next starts: after the enable the policy acts until a new operator message."""
    h, op = rig()
    h.enable(True)
    op.twist(vx=0.1)
    op.gripper(True)
    h.send(POLICY)
    assert h.spin_until(lambda: op.executed and h.got['traj'], 3.0)
    h.enable(False)                     # the episode ends, the next one starts at once
    h.enable(True)                      # well within the 0.5 s timeout of the twist
    n, n_gripper = len(h.got['traj']), len(h.got['gripper'])
    h.send(POLICY)
    assert h.spin_until(lambda: len(h.got['traj']) > n
                        and len(h.got['gripper']) > n_gripper, 3.0)
    dpos, _ = _tcp_delta(np.array(h.got['traj'][-1].points[0].positions))
    np.testing.assert_allclose(dpos, POLICY[:3], atol=2e-4)           # the policy's action
    assert list(h.got['gripper'][-1].data) == [0.0]                    # the policy's open
    assert len(op.executed) == 1 and h.arm.counts()['intervention_steps'] == 1
    op.twist(vy=0.1)                    # a message after the enable starts an intervention
    h.send(POLICY)
    assert h.spin_until(lambda: len(op.executed) == 2, 3.0)
    np.testing.assert_allclose(op.executed[-1].position, [0, 0.01, 0, 0, 0, 0, 0], atol=1e-7)


def test_the_stamp_is_the_replaced_actions(rig):
    h, op = rig()
    h.enable(True)
    op.twist(vy=0.1)
    stamp = h.peer.get_clock().now().to_msg()
    h.action_pub.publish(convert.action_to_msg(np.asarray(POLICY, float), stamp))
    assert h.spin_until(lambda: op.executed, 3.0)
    assert convert.stamp_to_ns(op.executed[-1].header.stamp) == convert.stamp_to_ns(stamp)


def test_no_motion_while_disabled_stopped_or_without_a_policy_action(rig):
    h, op = rig()
    for _ in range(5):                  # disabled: the operator cannot move the arm
        op.twist(vx=0.1)
        h.send(POLICY)
    h.spin_for(0.2)
    assert h.got['traj'] == [] and op.executed == []
    h.enable(True)
    for _ in range(5):                  # enabled, but no policy action: nothing moves
        op.twist(vx=0.1)
    assert h.got['traj'] == [] and op.executed == []
    h.stop()
    n = len(h.got['traj'])              # the stop's hold
    for _ in range(5):                  # stopped (latched): neither moves the arm
        op.twist(vx=0.1)
        h.send(POLICY)
    h.spin_for(0.2)
    assert len(h.got['traj']) == n and op.executed == []
    assert h.arm.counts()['intervention_steps'] == 0


def test_a_released_deadman_holds_the_operator_too(rig):
    h, op = rig([Parameter('heartbeat_timeout_s', value=0.3)])
    h.heartbeat = True
    h.enable(True)
    op.twist(vx=0.1)
    h.send(POLICY)
    assert h.spin_until(lambda: op.executed, 3.0)
    h.heartbeat = False
    h.spin_for(0.2)
    n = len(h.got['traj'])
    op.twist(vx=0.1)
    h.send(POLICY)
    h.spin_for(0.3)
    assert len(op.executed) == 1
    for traj in h.got['traj'][n:]:       # only holds
        np.testing.assert_allclose(traj.points[0].positions, h.q, atol=1e-12)


def test_a_twist_in_another_frame_is_rejected(rig):
    h, op = rig()
    h.enable(True)
    op.twist(vx=0.1, frame='tool0')
    op.twist(vx=float('nan'))
    h.send(POLICY)
    assert h.spin_until(lambda: h.got['traj'], 3.0)
    dpos, _ = _tcp_delta(np.array(h.got['traj'][-1].points[0].positions))
    np.testing.assert_allclose(dpos, POLICY[:3], atol=2e-4)           # the policy's action
    assert op.executed == []
    assert h.arm.counts()['operator_twists_rejected'] == 2
    assert h.spin_until(lambda: h.got['diag'] and 'intervening' in h.diagnostics()[2], 2.0)
    values = h.diagnostics()[2]
    assert values['intervening'] in ('False', 'false')
    assert values['operator_twists_rejected'] == '2'


def test_the_workspace_box_bounds_the_operator(rig):
    """With the tool at the top of the box an upward twist moves nothing up."""
    top = float(default_kinematics().fk(HOME_Q)[0][2])
    h, op = rig([Parameter('workspace_max_m', value=[0.85, 0.3, top])])
    h.enable(True)
    op.twist(vz=0.1)
    h.send(POLICY)
    assert h.spin_until(lambda: h.got['traj'] and op.executed, 3.0)
    dpos, _ = _tcp_delta(np.array(h.got['traj'][-1].points[0].positions))
    assert dpos[2] < 1e-4
    assert h.arm.counts()['clamped'] == 1


def test_with_interventions_disabled_an_operator_changes_nothing(ros_context):
    """interventions_enabled false (the Sawyer insertion files): no operator subscription,
    the policy's action is executed while an operator twists and closes, nothing is published
    on /arm/intervention; the parameter is read-only and the diagnostics say so."""
    h = Harness(ros_context, [Parameter('intervention_timeout_s', value=0.5),
                              Parameter('interventions_enabled', value=False)])
    try:
        twist_pub = h.peer.create_publisher(TwistStamped, '/operator/twist', qos.SENSOR)
        gripper_pub = h.peer.create_publisher(Bool, '/operator/gripper', qos.SENSOR)
        executed = []
        h.peer.create_subscription(JointState, '/arm/intervention', executed.append,
                                   qos.COMMAND)
        h.spin_for(0.3)
        assert twist_pub.get_subscription_count() == 0
        assert gripper_pub.get_subscription_count() == 0
        h.enable(True)
        for _ in range(2):
            msg = TwistStamped()
            msg.header.stamp = h.peer.get_clock().now().to_msg()
            msg.header.frame_id = 'base_link'
            msg.twist.linear.x = 0.1
            twist_pub.publish(msg)
            gripper_pub.publish(Bool(data=True))
            h.spin_for(0.05)
            h.send(POLICY)
            assert h.spin_until(lambda: h.got['traj'] and h.got['gripper'], 3.0)
        dpos, _ = _tcp_delta(np.array(h.got['traj'][-1].points[0].positions))
        np.testing.assert_allclose(dpos, POLICY[:3], atol=2e-4)         # the policy's action
        assert list(h.got['gripper'][-1].data) == [0.0]                  # the policy's open
        h.spin_for(0.2)
        assert executed == [] and h.arm.counts()['intervention_steps'] == 0
        result = h.arm.set_parameters([Parameter('interventions_enabled', value=True)])[0]
        assert not result.successful                                     # read-only
        assert h.spin_until(lambda: h.got['diag']
                            and 'interventions_enabled' in h.diagnostics()[2], 2.0)
        values = h.diagnostics()[2]
        assert values['interventions_enabled'] in ('False', 'false')
        assert values['intervening'] in ('False', 'false')
    finally:
        h.close()


def test_interventions_are_off_in_the_sawyer_insertion_files_only():
    import yaml

    from awopt_ros.core.paths import share_dir
    paths = sorted((share_dir() / 'config').glob('awopt_ros_*.yaml'))
    assert len(paths) >= 6
    for path in paths:
        arm = yaml.safe_load(path.read_text()).get('arm_interface', {})
        enabled = arm.get('ros__parameters', {}).get('interventions_enabled', True)
        assert enabled is ('sawyer' not in path.name), path.name
