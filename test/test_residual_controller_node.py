"""In-process tests of the residual controller node (awopt_ros.nodes.residual_controller)."""
import json
import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from test_onnx_state_actor import _Mlp, _contract, _export

from awopt_ros.core import residual, sawyer, spec
from awopt_ros.core.kinematics import Kinematics
from awopt_ros.core.onnx_policy import OnnxStateActor
from awopt_ros.nodes.residual_controller import ResidualControllerNode
from awopt_ros.ros import convert, qos
from awopt_ros.ros.run import StartupError

WRENCH = '/force_torque_sensor_broadcaster/wrench'
Q = np.asarray(sawyer.HOME_Q, dtype=np.float64)
DQ = np.array([0.02, -0.01, 0.03, 0.0, 0.01, -0.02, 0.05])


@pytest.fixture(scope='module')
def kin():
    return Kinematics(sawyer.URDF_PATH, joint_names=sawyer.ARM_JOINTS, tcp_frame='tcp')


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    _, path = _export(tmp_path_factory.mktemp('residual') / 'res.onnx', _Mlp(seed=3))
    return path


def _params(**extra):
    values = {'residual': 'off', 'urdf_path': sawyer.URDF_PATH,
              'joint_names': list(sawyer.ARM_JOINTS), 'gripper_joint': 'right_gripper_peg',
              'rate_hz': 0.0, 'force_window_s': 0.0}   # each wrench sample alone
    values.update(extra)
    return [Parameter(k, value=v) for k, v in values.items()]


def _spin_until(executor, cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not cond():
        executor.spin_once(timeout_sec=0.02)
    return cond()


class Rig:
    """The node and a test node on one executor; the tester publishes the inputs and keeps
    what the node publishes."""

    def __init__(self, ctx, params):
        self.node = ResidualControllerNode(context=ctx, parameter_overrides=params)
        self.tester = rclpy.create_node('residual_tester', context=ctx)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self.actions, self.decisions, self.faults, self.infos = [], [], [], []
        t = self.tester
        t.create_subscription(JointState, '/policy/action', self.actions.append, qos.COMMAND)
        t.create_subscription(String, '/policy/decision',
                              lambda m: self.decisions.append(json.loads(m.data)), qos.COMMAND)
        t.create_subscription(String, '/residual/fault',
                              lambda m: self.faults.append(json.loads(m.data)), qos.COMMAND)
        t.create_subscription(String, '/policy/model_info',
                              lambda m: self.infos.append(json.loads(m.data)), qos.LATCHED)
        self.js_pub = t.create_publisher(JointState, '/joint_states', qos.SENSOR)
        self.wrench_pub = t.create_publisher(WrenchStamped, WRENCH, qos.SENSOR)
        self.goal_pub = t.create_publisher(PoseStamped, '/insertion/goal', qos.LATCHED)
        self.event_pub = t.create_publisher(String, '/episode/event', qos.LATCHED)
        assert _spin_until(self.executor, lambda: self.js_pub.get_subscription_count() > 0
                           and self.wrench_pub.get_subscription_count() > 0
                           and self.goal_pub.get_subscription_count() > 0), 'not matched'

    def now_s(self):
        return self.node.get_clock().now().nanoseconds * 1e-9

    def spin(self, cond, timeout_s=5.0):
        return _spin_until(self.executor, cond, timeout_s)

    def send_goal(self, goal, frame='base_link'):
        self.goal_pub.publish(convert.position_to_pose_msg(goal, convert.s_to_stamp(
            self.now_s()), frame))
        assert self.spin(lambda: self.node.goal_m is not None
                         and np.allclose(self.node.goal_m, goal)) or frame != 'base_link'

    def send_joints(self, q=Q, dq=DQ, age_s=0.0):
        msg = JointState()
        msg.header.stamp = convert.s_to_stamp(self.now_s() - age_s)
        msg.name = list(sawyer.ARM_JOINTS)
        msg.position = [float(v) for v in q]
        msg.velocity = [] if dq is None else [float(v) for v in dq]
        before = self.node._joint
        self.js_pub.publish(msg)
        assert self.spin(lambda: self.node._joint is not before), 'joint state not received'

    def send_wrench(self, wrench6=(0.0,) * 6, age_s=0.0, frame='tcp'):
        """Publish a wrench; return its stamp."""
        stamp = convert.s_to_stamp(self.now_s() - age_s)
        self.wrench_pub.publish(convert.wrench_to_msg(wrench6, stamp, frame))
        return stamp

    def step(self, wrench6=(0.0,) * 6):
        """Fresh joint state, then a wrench; return (action (7,), its decision, stamp)."""
        self.send_joints()
        n = len(self.actions)
        stamp = self.send_wrench(wrench6)
        assert self.spin(lambda: len(self.actions) > n and len(self.decisions) > n), \
            'no action published'
        msg = self.actions[n]
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (stamp.sec, stamp.nanosec)
        assert list(msg.name) == list(spec.ACTION_NAMES)
        return np.array(msg.position), self.decisions[n], stamp

    def close(self):
        self.executor.shutdown()
        self.tester.destroy_node()
        self.node.destroy_node()


@pytest.fixture
def make_rig(ros_context):
    rigs = []

    def make(**params):
        rigs.append(Rig(ros_context, _params(**params)))
        return rigs[-1]
    yield make
    for rig in rigs:
        rig.close()


def _goal(kin, offset=(0.001, -0.002, -0.04)):
    return kin.fk(Q)[0] + np.asarray(offset)


def test_residual_off_publishes_the_clipped_p_controller(make_rig, kin):
    rig = make_rig()
    assert rig.spin(lambda: rig.infos)
    assert rig.infos[-1]['kind'] == 'p_controller' and rig.infos[-1]['contract'] is None
    assert rig.infos[-1]['model_version'] == 0     # the field episode clients read
    goal = _goal(kin)
    rig.send_goal(goal)
    wrench = (1.0, -2.0, -5.0, 0.1, 0.2, -0.3)
    action, decision, _ = rig.step(wrench)
    tool = kin.fk(Q)[0]
    base = residual.p_controller(tool, goal)
    np.testing.assert_allclose(base, [0.001, -0.002, -0.012], atol=1e-9)
    np.testing.assert_allclose(action, [0.001, -0.002, -0.01, 0, 0, 0, 0], atol=1e-7)
    assert decision['source'] == 'p_controller' and decision['phase'] == 'control'
    assert decision['residual'] == [0.0, 0.0, 0.0]
    expected_obs = residual.insertion_state(tool, goal, kin.tcp_velocity(Q, DQ), wrench, base)
    np.testing.assert_allclose(decision['observation'], expected_obs, atol=1e-6)


def test_model_adds_alpha_times_the_residual(make_rig, kin, model_path):
    rig = make_rig(residual='model', model_path=str(model_path), alpha_m=0.002)
    assert rig.spin(lambda: rig.infos)
    assert rig.infos[-1]['kind'] == 'residual' and rig.infos[-1]['contract']['task'] == \
        'insertion'
    goal = _goal(kin, (0.0005, 0.001, -0.005))
    rig.send_goal(goal)
    wrench = (3.0, 1.0, -12.0, 0.05, -0.1, 0.0)
    action, decision, _ = rig.step(wrench)
    tool = kin.fk(Q)[0]
    base = residual.p_controller(tool, goal)
    obs = residual.insertion_state(tool, goal, kin.tcp_velocity(Q, DQ), wrench, base)
    r = OnnxStateActor(model_path).act(obs)
    assert np.max(np.abs(r)) > 0.05          # the model's residual is not zero here
    expected = base + 0.002 * r
    np.testing.assert_allclose(action[:3], expected, atol=1e-6)
    np.testing.assert_allclose(action[3:], 0.0)
    assert decision['source'] == 'residual'
    np.testing.assert_allclose(decision['residual'], r, atol=1e-6)
    # the P-controller alone would have sent something else
    assert np.max(np.abs(action[:3] - base)) > 1e-4


def test_force_limit_backs_off_then_terminates_then_holds(make_rig, kin):
    rig = make_rig(force_limit_n=40.0, back_off_m=0.004)
    rig.send_goal(_goal(kin))
    action, _, _ = rig.step((0.0, 0.0, -10.0, 0, 0, 0))
    assert action[2] < 0                      # moving down, under the limit
    action, decision, _ = rig.step((30.0, 0.0, -30.0, 0, 0, 0))    # |f| = 42.4 N
    np.testing.assert_allclose(action, [0, 0, 0.004, 0, 0, 0, 0], atol=1e-7)
    assert decision['phase'] == 'back_off'
    assert rig.spin(lambda: rig.faults)
    fault = rig.faults[0]
    assert fault['reason'] == 'force_limit' and fault['limit_n'] == 40.0
    assert fault['force_n'] == pytest.approx(np.hypot(30.0, 30.0))
    action, decision, _ = rig.step((0.0, 0.0, -5.0, 0, 0, 0))      # force gone: still ends
    np.testing.assert_array_equal(action, [0, 0, 0, 0, 0, 0, 1])
    assert decision['phase'] == 'terminate'
    action, decision, _ = rig.step()
    np.testing.assert_array_equal(action, np.zeros(7))
    assert decision['phase'] == 'hold'
    assert (rig.node.counts['back_offs'], rig.node.counts['terminates']) == (1, 1)
    # the next episode's start clears the fault: control again
    rig.event_pub.publish(String(data=json.dumps({'event': 'start', 'episode': 7,
                                                  'stamp_s': rig.now_s()})))
    assert rig.spin(lambda: rig.node.fault == 'none')
    action, decision, _ = rig.step()
    assert decision['phase'] == 'control' and decision['episode'] == 7
    np.testing.assert_allclose(action[:3], [0.001, -0.002, -0.01], atol=1e-7)
    assert len(rig.faults) == 1


def test_force_limit_averages_over_force_window_s(make_rig, kin):
    """With the default window (0.05 s) one 65 N impact sample among 5 N ones at 100 Hz does
    not trip the 40 N limit; a 50 N push held for the window does."""
    rig = make_rig(rate_hz=10.0, force_limit_n=40.0, force_window_s=0.05)
    rig.send_goal(_goal(kin))
    _, decision, stamp = rig.step((0.0, 0.0, -5.0, 0, 0, 0))
    assert decision['phase'] == 'control'
    t0 = convert.stamp_to_s(stamp)
    for k, fz in enumerate([-5.0, -5.0, -65.0, -5.0, -5.0]):
        rig.wrench_pub.publish(convert.wrench_to_msg((0.0, 0.0, fz, 0, 0, 0),
                                                     convert.s_to_stamp(t0 + 0.01 * (k + 1)),
                                                     'tcp'))
    assert rig.spin(lambda: rig.node.counts['wrenches'] >= 6)
    assert not rig.faults and rig.node.fault == 'none'
    for k in range(6):
        rig.wrench_pub.publish(convert.wrench_to_msg((0.0, 0.0, -50.0, 0, 0, 0),
                                                     convert.s_to_stamp(t0 + 0.06 + 0.01 * k),
                                                     'tcp'))
    assert rig.spin(lambda: rig.faults), 'a held push must trip the limit'
    assert rig.faults[0]['force_n'] > 40.0


def test_force_limit_is_checked_on_every_wrench_not_only_on_due_steps(make_rig, kin):
    """An over-limit wrench between two control ticks (rate 10 Hz) faults and backs off at
    once, stamped with that wrench; the next tick terminates."""
    rig = make_rig(rate_hz=10.0, force_limit_n=40.0, back_off_m=0.004)
    rig.send_goal(_goal(kin))
    _, decision, stamp = rig.step((0.0, 0.0, -10.0, 0, 0, 0))
    assert decision['phase'] == 'control'
    t0 = convert.stamp_to_s(stamp)
    rig.wrench_pub.publish(convert.wrench_to_msg((0.0, 0.0, -100.0, 0, 0, 0),
                                                 convert.s_to_stamp(t0 + 0.02), 'tcp'))
    assert rig.spin(lambda: rig.faults and len(rig.actions) > 1), 'no fault, no back-off'
    assert rig.faults[0]['force_n'] == pytest.approx(100.0)
    assert rig.decisions[1]['phase'] == 'back_off'
    np.testing.assert_allclose(np.array(rig.actions[1].position), [0, 0, 0.004, 0, 0, 0, 0],
                               atol=1e-7)
    assert convert.stamp_to_s(rig.actions[1].header.stamp) == pytest.approx(t0 + 0.02)
    # the back-off took the tick at t0 + 0.1: wrenches before t0 + 0.2 publish nothing more
    rig.send_joints()
    for dt in (0.06, 0.12, 0.2):
        rig.wrench_pub.publish(convert.wrench_to_msg(np.zeros(6), convert.s_to_stamp(t0 + dt),
                                                     'tcp'))
    assert rig.spin(lambda: len(rig.actions) > 2)
    rig.spin(lambda: False, 0.2)
    assert len(rig.actions) == 3 and rig.decisions[2]['phase'] == 'terminate'
    assert convert.stamp_to_s(rig.actions[2].header.stamp) == pytest.approx(t0 + 0.2)
    np.testing.assert_array_equal(np.array(rig.actions[2].position), [0, 0, 0, 0, 0, 0, 1])
    assert len(rig.faults) == 1


def test_force_limit_without_goal_or_fresh_joint_state_still_faults(make_rig, kin):
    """No goal: the fault and the back-off still go out (null observation); a stale joint
    state: the fault and a terminate (no motion) instead of the back-off."""
    rig = make_rig(rate_hz=10.0, max_joint_state_age_s=0.2)
    rig.send_joints()
    rig.send_wrench((0.0, 0.0, -60.0, 0, 0, 0))
    assert rig.spin(lambda: rig.faults and rig.actions), 'no fault without a goal'
    assert rig.decisions[0]['phase'] == 'back_off' and rig.decisions[0]['observation'] is None
    rig2 = make_rig(rate_hz=10.0, max_joint_state_age_s=0.2)
    rig2.send_goal(_goal(kin))
    rig2.send_joints(age_s=0.5)
    rig2.send_wrench((0.0, 0.0, -60.0, 0, 0, 0))
    assert rig2.spin(lambda: rig2.faults and rig2.actions), 'no fault with a stale joint state'
    assert rig2.decisions[0]['phase'] == 'terminate'
    np.testing.assert_array_equal(np.array(rig2.actions[0].position), [0, 0, 0, 0, 0, 0, 1])


def test_a_new_goal_does_not_clear_a_force_fault(make_rig, kin):
    rig = make_rig(force_limit_n=40.0)
    rig.send_goal(_goal(kin))
    rig.step((0.0, 0.0, -10.0, 0, 0, 0))
    _, decision, _ = rig.step((0.0, 0.0, -50.0, 0, 0, 0))
    assert decision['phase'] == 'back_off'
    rig.send_goal(_goal(kin, (0.002, 0.0, -0.03)))      # republished mid-episode
    _, decision, _ = rig.step()
    assert decision['phase'] == 'terminate'
    rig.send_goal(_goal(kin))
    action, decision, _ = rig.step()
    assert decision['phase'] == 'hold'
    np.testing.assert_array_equal(action, np.zeros(7))
    assert rig.node.fault == 'terminated'


def test_diagnostics_report_stale_inputs_and_the_fault(make_rig, kin):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    rig = make_rig()
    diags = []
    rig.tester.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda m: diags.extend(s for s in m.status if s.name == 'residual_controller'), 10)
    rig.node._publish_diagnostics()
    assert rig.spin(lambda: diags)
    assert diags[-1].level == DiagnosticStatus.WARN
    assert 'goal' in diags[-1].message and 'wrench' in diags[-1].message
    rig.send_goal(_goal(kin))
    rig.step((0.0, 0.0, -45.0, 0, 0, 0))
    n = len(diags)
    rig.node._publish_diagnostics()
    assert rig.spin(lambda: len(diags) > n)
    assert diags[-1].level == DiagnosticStatus.ERROR
    assert 'force 45.0 N (mean over force_window_s) > force_limit_n 40.0 N' in diags[-1].message


def test_stale_or_missing_inputs_publish_nothing(make_rig, kin):
    rig = make_rig(max_wrench_age_s=0.2, max_joint_state_age_s=0.2)
    rig.send_joints()
    for _ in range(3):                        # no goal yet
        rig.send_wrench()
    assert rig.spin(lambda: rig.node.counts['skipped_no_goal'] >= 3)
    rig.send_goal(_goal(kin))
    for _ in range(3):                        # a stale wrench
        rig.send_joints()
        rig.send_wrench(age_s=0.5)
    assert rig.spin(lambda: rig.node.counts['skipped_stale_wrench'] >= 3)
    rig.send_joints(age_s=0.5)                # a stale joint state
    rig.send_wrench()
    assert rig.spin(lambda: rig.node.counts['skipped_stale_joint_state'] >= 1)
    rig.send_joints()
    rig.send_wrench(frame='right_hand')       # a wrench in another frame
    assert rig.spin(lambda: rig.node.counts['wrench_frame_mismatch'] >= 1)
    rig.spin(lambda: False, 0.3)
    assert rig.actions == [] and rig.decisions == []
    # 0.3 s since the last joint state and the last wrench in the tool frame
    assert rig.node.stale_inputs() == ['joint_states', 'wrench']
    rig.send_joints()
    assert rig.node.stale_inputs(rig.now_s()) == []
    assert rig.node.stale_inputs(rig.now_s() - 1.0) == ['wrench']
    rig.step()                                # fresh inputs: it acts (the rig works)


def test_goal_in_another_frame_is_refused(make_rig, kin):
    rig = make_rig()
    rig.send_goal(_goal(kin), frame='world')
    assert rig.spin(lambda: rig.node.counts['goal_frame_mismatch'] == 1)
    assert rig.node.goal_m is None


def test_velocity_by_finite_differences_without_joint_velocities(make_rig, kin):
    rig = make_rig()
    rig.send_goal(_goal(kin))
    q2 = Q + np.array([0.0, 0.001, 0.0, -0.001, 0.0, 0.0, 0.0])
    t0 = rig.now_s() - 0.05
    for q, t in ((Q, t0), (q2, t0 + 0.01)):
        msg = JointState()
        msg.header.stamp = convert.s_to_stamp(t)
        msg.name = list(sawyer.ARM_JOINTS)
        msg.position = [float(v) for v in q]
        before = rig.node._joint
        rig.js_pub.publish(msg)
        assert rig.spin(lambda: rig.node._joint is not before)
    n = len(rig.actions)
    rig.send_wrench(age_s=rig.now_s() - (t0 + 0.01))     # as old as the second joint state
    assert rig.spin(lambda: len(rig.decisions) > n)
    vel = np.array(rig.decisions[n]['observation'][3:6])
    expected = (kin.fk(q2)[0] - kin.fk(Q)[0]) / 0.01
    assert np.linalg.norm(expected) > 0.01
    np.testing.assert_allclose(vel, expected, atol=1e-5)


def test_a_wrench_newer_than_the_joint_state_waits_for_the_next_one(make_rig, kin):
    rig = make_rig(joint_state_sync_s=0.02)
    goal = _goal(kin)
    rig.send_goal(goal)
    rig.send_joints(age_s=0.1)                # a joint state one control period old
    stamp = rig.send_wrench()
    assert rig.spin(lambda: rig.node.counts['deferred_for_joint_state'] == 1)
    assert rig.actions == []
    q2 = Q + np.array([0.0, 0.002, 0.0, -0.002, 0.0, 0.0, 0.0])
    rig.send_joints(q=q2)                     # as new as the wrench: the step runs now
    assert rig.spin(lambda: rig.actions)
    msg = rig.actions[0]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (stamp.sec, stamp.nanosec)
    expected = residual.command(residual.p_controller(kin.fk(q2)[0], goal), None,
                                residual.ResidualConfig(residual_enabled=False))
    np.testing.assert_allclose(np.array(msg.position)[:3], expected, atol=1e-7)
    assert not np.allclose(expected, residual.command(
        residual.p_controller(kin.fk(Q)[0], goal), None), atol=1e-5)


def test_rate_limits_steps_on_the_wrench_stamps(make_rig, kin):
    rig = make_rig(rate_hz=10.0)
    rig.send_goal(_goal(kin))
    t0 = rig.now_s() - 0.05
    for k in range(6):                        # 6 wrenches 50 ms apart: steps at 0, 100, 200 ms
        rig.send_joints(age_s=rig.now_s() - (t0 + 0.05 * k))    # stamped as the wrench
        rig.wrench_pub.publish(convert.wrench_to_msg(np.zeros(6), convert.s_to_stamp(
            t0 + 0.05 * k), 'tcp'))
        rig.spin(lambda: rig.node.counts['wrenches'] > k, 1.0)
    rig.spin(lambda: len(rig.actions) >= 3, 1.0)
    assert rig.node.counts['wrenches'] == 6
    stamps = [convert.stamp_to_s(m.header.stamp) - t0 for m in rig.actions]
    np.testing.assert_allclose(stamps, [0.0, 0.1, 0.2], atol=1e-6)


@pytest.mark.parametrize('params, words', [
    (dict(residual='learned'), 'parameter residual'),
    (dict(residual='model', model_path='/nonexistent/res.onnx'), 'model_path'),
    (dict(joint_names=[f'iiwa_joint_{i}' for i in range(1, 8)]), 'kinematics'),
    (dict(kp=[1.0, 1.0]), 'kp'),
])
def test_startup_errors(ros_context, params, words):
    with pytest.raises(StartupError, match=words):
        ResidualControllerNode(context=ros_context, parameter_overrides=_params(**params))


def test_model_trained_with_another_alpha_is_refused(ros_context, tmp_path):
    _, path = _export(tmp_path / 'a.onnx', contract=_contract(residual_alpha_m=0.004))
    with pytest.raises(StartupError, match='residual_alpha_m 0.004'):
        ResidualControllerNode(context=ros_context, parameter_overrides=_params(
            residual='model', model_path=str(path), alpha_m=0.002))
    _, grasp = _export(tmp_path / 'g.onnx', contract=_contract(task='grasp'))
    with pytest.raises(StartupError, match='task: model has grasp'):
        ResidualControllerNode(context=ros_context, parameter_overrides=_params(
            residual='model', model_path=str(grasp)))


def test_model_trained_with_another_kp_is_refused(ros_context, tmp_path):
    _, path = _export(tmp_path / 'k.onnx', contract=_contract(kp=[1.0, 1.0, 0.5]))
    with pytest.raises(StartupError, match=r'kp \[1.0, 1.0, 0.5\].*kp is \[1.0, 1.0, 0.3\]'):
        ResidualControllerNode(context=ros_context, parameter_overrides=_params(
            residual='model', model_path=str(path)))
    _, near = _export(tmp_path / 'n.onnx', contract=_contract(kp=[1.0, 1.0, 0.3 * (1 + 1e-6)]))
    with pytest.raises(StartupError, match='kp'):
        ResidualControllerNode(context=ros_context, parameter_overrides=_params(
            residual='model', model_path=str(near)))
    _, same = _export(tmp_path / 's.onnx', contract=_contract(kp=[1.0, 1.0, 0.5]))
    node = ResidualControllerNode(context=ros_context, parameter_overrides=_params(
        residual='model', model_path=str(same), kp=[1.0, 1.0, 0.5]))
    node.destroy_node()


def test_wrench_and_goal_conversions_round_trip():
    stamp = convert.s_to_stamp(12.5)
    w = convert.wrench_to_msg((1, 2, 3, 4, 5, 6), stamp, 'tcp')
    assert w.header.frame_id == 'tcp' and w.header.stamp == stamp
    np.testing.assert_array_equal(convert.msg_to_wrench(w), [1, 2, 3, 4, 5, 6])
    w.wrench.force.y = float('nan')
    with pytest.raises(ValueError, match='wrench'):
        convert.msg_to_wrench(w)
    with pytest.raises(ValueError, match='6 entries'):
        convert.wrench_to_msg((1, 2, 3), stamp, 'tcp')
    p = convert.position_to_pose_msg((0.6, -0.01, 0.02), stamp)
    assert p.header.frame_id == 'base_link' and p.pose.orientation.w == 1.0
    np.testing.assert_array_equal(convert.pose_msg_position(p), [0.6, -0.01, 0.02])
    p.pose.position.z = float('inf')
    with pytest.raises(ValueError, match='not finite'):
        convert.pose_msg_position(p)
    with pytest.raises(ValueError):
        convert.position_to_pose_msg((0.6, 0.0), stamp)


def _insertion_arm(kin):
    """The arm interface's per-step logic for the Sawyer insertion cell (limits of the
    insertion config): (limits, joint safety)."""
    from awopt_ros.core.safety import JointSafety, SafetyLimits
    s = np.asarray(sawyer.SOCKET_M, dtype=np.float64)
    limits = SafetyLimits(max_step_m=0.01, max_yaw_step_rad=0.2,
                          workspace_min_m=tuple((s + (-0.1, -0.1, -0.05)).tolist()),
                          workspace_max_m=tuple((s + (0.1, 0.1, 0.2)).tolist()))
    jl = kin.joint_limits()
    safety = JointSafety(jl.lower_rad, jl.upper_rad, 0.05, tuple(jl.velocity_rad_s), 0.25,
                         velocity_cap_rad_s=jl.velocity_rad_s)
    return limits, safety


def _apply(sim, kin, action, limits, safety):
    from awopt_ros.core.arm import arm_command
    cmd = arm_command(kin, sim.joint_positions(), action, limits, 0.1, joint_safety=safety)
    assert cmd.q_target is not None
    sim.set_arm_target(cmd.q_target)
    sim.step(100)                              # one 0.1 s control period at 1 ms


def test_closed_loop_on_the_insertion_sim_matches_the_in_process_loop(make_rig):
    """The node drives InsertionSim through ROS messages (joint states, wrench, goal ->
    /policy/action -> the arm interface's arm_command); its commands equal the in-process
    P-controller's on the same scene, step by step, and it inserts the peg."""
    from awopt_ros.sim.insertion import InsertionConfig, InsertionSim
    kin = sawyer.kinematics()
    limits, safety = _insertion_arm(kin)
    sim = InsertionSim(InsertionConfig(render=False, goal_noise_m=0.0))
    try:
        seed = 3
        sim.reset(seed)                        # in process: core.residual on the sim's state
        reference = []
        for _ in range(50):
            base = residual.p_controller(sim.tool_pose()[0], sim.goal_observed())
            u = residual.command(base, None)
            reference.append(u)
            _apply(sim, kin, residual.arm_action(u), limits, safety)
            if sim.success():
                break
        assert sim.success(), 'the P-controller without goal noise should insert the peg'

        rig = make_rig()
        sim.reset(seed)                        # through the node
        rig.send_goal(sim.goal_observed())
        sent = []
        for _ in range(len(reference)):
            js = JointState()
            js.header.stamp = convert.s_to_stamp(rig.now_s())
            js.name = list(sawyer.ARM_JOINTS)
            js.position = [float(v) for v in sim.joint_positions()]
            js.velocity = [float(v) for v in sim.joint_velocities()]
            before, n = rig.node._joint, len(rig.actions)
            rig.js_pub.publish(js)
            assert rig.spin(lambda: rig.node._joint is not before)
            rig.wrench_pub.publish(convert.wrench_to_msg(sim.wrench(), js.header.stamp, 'tcp'))
            assert rig.spin(lambda: len(rig.actions) > n), 'no action'
            action = np.array(rig.actions[n].position, dtype=np.float32)
            sent.append(action[:3])
            _apply(sim, kin, action, limits, safety)
        assert sim.success()
        np.testing.assert_allclose(np.array(sent), np.array(reference), atol=2e-6)
    finally:
        sim.close()


def test_episode_start_parser_shared_by_the_policy_and_residual_nodes():
    from awopt_ros.ros.episode_events import new_start
    start = json.dumps({'event': 'start', 'episode': 4, 'stamp_s': 12.5})
    assert new_start(start, 3) == (4, 12.5)
    assert new_start(start, 4) is None            # the running episode's start heard again
    assert new_start(json.dumps({'event': 'end', 'episode': 4}), 3) is None
    assert new_start(json.dumps({'event': 'start', 'episode': 5}), 4) == (5, None)
    for bad in ('not json', '[1, 2]', '{"episode": 1}'):
        with pytest.raises(ValueError):
            new_start(bad, None)
