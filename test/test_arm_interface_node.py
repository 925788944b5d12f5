"""In-process tests of the arm_interface node (private rclpy Context, spin_once loops)."""
import json
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from awopt_ros.core.kinematics import default_kinematics, yaw_of
from awopt_ros.core.robot import HOME_Q
from awopt_ros.core.spec import ARM_JOINTS, GRIPPER_JOINT
from awopt_ros.nodes.arm_interface import ArmInterfaceNode
from awopt_ros.ros import qos
from awopt_ros.ros import convert
from awopt_ros.ros.convert import action_to_msg


class Harness:
    """A peer node that feeds the arm interface and records what it publishes."""

    def __init__(self, ctx, overrides=(), wait_ready=True):
        self.arm = ArmInterfaceNode(context=ctx, parameter_overrides=list(overrides))
        self.peer = rclpy.create_node('arm_interface_test_peer', context=ctx)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.arm)
        self.executor.add_node(self.peer)

        def param(name):
            return self.arm.get_parameter(name).value
        self.joint_names = list(param('joint_names'))
        self.gripper_joint = param('gripper_joint')
        self.js_pub = self.peer.create_publisher(JointState, param('joint_states_topic'),
                                                 qos.SENSOR)
        self.info_pub = self.peer.create_publisher(
            CameraInfo, param('camera_ns') + '/color/camera_info', qos.SENSOR)
        self.action_pub = self.peer.create_publisher(JointState, '/policy/action', qos.COMMAND)
        self.heartbeat_pub = self.peer.create_publisher(Bool, '/arm/heartbeat', qos.COMMAND)
        self.got = {'traj': [], 'fwd': [], 'gripper': [], 'latency': [], 'diag': [],
                    'pose': []}
        self.peer.create_subscription(DiagnosticArray, '/diagnostics', self.got['diag'].append,
                                      10)
        self.peer.create_subscription(PoseStamped, '/arm/ee_pose', self.got['pose'].append, 10)
        for key, typ, topic in (
                ('traj', JointTrajectory, param('arm_controller') + '/joint_trajectory'),
                ('fwd', Float64MultiArray, param('forward_controller') + '/commands'),
                ('gripper', Float64MultiArray, param('gripper_controller') + '/commands'),
                ('latency', Float64, '/arm/frame_to_command_ms')):
            self.peer.create_subscription(typ, topic, self.got[key].append, qos.COMMAND)
        self.enable_client = self.peer.create_client(SetBool, '/arm/enable')
        self.stop_client = self.peer.create_client(Trigger, '/arm/stop')
        self.q = HOME_Q.copy()
        self.feed_joints = True
        self.feed_camera = True
        self.heartbeat = None          # None: not sent; True / False: sent with every feed
        self.finger_m = 0.0
        self._last_feed = 0.0
        if wait_ready:
            self.wait_ready()

    def wait_ready(self):
        assert self.spin_until(lambda: (self.js_pub.get_subscription_count() > 0
                                        and self.action_pub.get_subscription_count() > 0
                                        and self.info_pub.get_subscription_count() > 0
                                        and self.enable_client.service_is_ready()
                                        and self.stop_client.service_is_ready()), 10.0)

    def close(self):
        self.executor.shutdown()
        self.arm.destroy_node()
        self.peer.destroy_node()

    def _feed(self):
        now = time.monotonic()
        if now - self._last_feed < 0.02:
            return
        self._last_feed = now
        stamp = self.peer.get_clock().now().to_msg()
        if self.feed_joints:
            msg = JointState(name=[*self.joint_names, self.gripper_joint],
                             position=[*self.q.tolist(), self.finger_m])
            msg.header.stamp = stamp
            self.js_pub.publish(msg)
        if self.feed_camera:
            info = CameraInfo()
            info.header.stamp = stamp
            self.info_pub.publish(info)
        if self.heartbeat is not None:
            self.heartbeat_pub.publish(Bool(data=self.heartbeat))

    def spin_until(self, cond, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._feed()
            self.executor.spin_once(timeout_sec=0.01)
            if cond():
                return True
        return False

    def spin_for(self, duration_s):
        self.spin_until(lambda: False, duration_s)

    def enable(self, on, wait_joints=True):
        future = self.enable_client.call_async(SetBool.Request(data=on))
        assert self.spin_until(future.done, 5.0)
        assert future.result().success
        if on and wait_joints and self.feed_joints:   # the arm acts on joints measured after
            assert self.spin_until(lambda: self.arm._q_meas is not None, 2.0)
        return future.result()

    def stop(self):
        future = self.stop_client.call_async(Trigger.Request())
        assert self.spin_until(future.done, 5.0)
        assert future.result().success
        return json.loads(future.result().message)

    def diagnostics(self):
        """Return (level, message, values) of the newest arm_interface diagnostics."""
        status = [s for s in self.got['diag'][-1].status if s.name == 'arm_interface'][0]
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    def send(self, action):
        self.action_pub.publish(action_to_msg(np.asarray(action, dtype=np.float64),
                                              self.peer.get_clock().now().to_msg()))


@pytest.fixture
def harness_factory(ros_context):
    made = []

    def make(overrides=(), **kwargs):
        h = Harness(ros_context, overrides, **kwargs)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def _tcp_delta(q_target):
    kin = default_kinematics()
    p0, r0 = kin.fk(HOME_Q)
    p1, r1 = kin.fk(q_target)
    dyaw = (yaw_of(r1) - yaw_of(r0) + np.pi) % (2 * np.pi) - np.pi
    return p1 - p0, dyaw


def test_disabled_ignores_then_enabled_commands(harness_factory):
    h = harness_factory()
    h.spin_for(0.1)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    h.spin_for(0.3)
    assert h.got['traj'] == [] and h.got['gripper'] == []

    h.enable(True)
    delta = np.array([0.02, -0.01, 0.015])
    h.send([*delta, 0.1, 0.0, 1.0, 0.0])
    assert h.spin_until(lambda: h.got['traj'] and h.got['latency'] and h.got['gripper'], 3.0)
    traj = h.got['traj'][-1]
    assert list(traj.joint_names) == list(ARM_JOINTS)
    assert len(traj.points) == 1
    point = traj.points[0]
    assert point.time_from_start.sec == 0 and point.time_from_start.nanosec == 100_000_000
    dpos, dyaw = _tcp_delta(np.array(point.positions))
    np.testing.assert_allclose(dpos, delta, atol=2e-4)
    assert dyaw == pytest.approx(0.1, abs=2e-3)
    assert list(h.got['gripper'][-1].data) == [0.04]
    assert 0.0 <= h.got['latency'][-1].data < 1000.0
    assert h.arm.counts()['commands_sent'] == 1

    # Open, with a step beyond the limits: clipped to 3 cm per axis.
    h.send([0.1, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) >= 2 and len(h.got['gripper']) >= 2, 3.0)
    dpos, _ = _tcp_delta(np.array(h.got['traj'][-1].points[0].positions))
    np.testing.assert_allclose(dpos, [0.03, 0.0, 0.0], atol=2e-4)
    assert list(h.got['gripper'][-1].data) == [0.0]
    assert h.arm.counts()['clipped'] == 1

    # Disable: one hold at the measured joints, then actions are ignored.
    h.enable(False)
    assert h.spin_until(lambda: len(h.got['traj']) >= 3, 2.0)
    np.testing.assert_allclose(h.got['traj'][-1].points[0].positions, HOME_Q, atol=1e-12)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    h.spin_for(0.3)
    assert len(h.got['traj']) == 3


def test_nan_action_holds(harness_factory):
    h = harness_factory()
    h.enable(True)
    h.send([float('nan'), 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert h.spin_until(lambda: h.arm.counts()['rejected'] == 1 and h.got['traj'], 3.0)
    h.spin_for(0.2)
    for traj in h.got['traj']:    # only holds at the measured joints, no motion
        np.testing.assert_allclose(traj.points[0].positions, HOME_Q, atol=1e-12)
    assert h.got['gripper'] == [] and h.got['latency'] == []
    assert h.arm.counts()['commands_sent'] == 0
    assert h.spin_until(lambda: h.got['diag'], 2.0)
    values = {kv.key: kv.value for kv in h.got['diag'][-1].status[0].values}
    assert values['rejected'] == '1' and values['commands_sent'] == '0'
    assert h.got['pose'] and h.got['pose'][-1].header.frame_id == 'base_link'
    pos = h.got['pose'][-1].pose.position
    np.testing.assert_allclose([pos.x, pos.y, pos.z], default_kinematics().fk(HOME_Q)[0],
                               atol=1e-9)


def test_stale_joint_states_hold_then_resume(harness_factory):
    h = harness_factory([Parameter('policy_timeout_s', value=5.0)])
    h.enable(True)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == 1, 3.0)
    h.feed_joints = False
    assert h.spin_until(lambda: len(h.got['traj']) == 2, 2.0)
    np.testing.assert_allclose(h.got['traj'][1].points[0].positions, HOME_Q, atol=1e-12)
    assert h.arm.counts()['holds'] == 1
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    h.spin_for(0.3)
    assert len(h.got['traj']) == 2               # ignored while stale, hold sent only once
    assert h.arm.counts()['commands_sent'] == 1
    h.feed_joints = True
    h.spin_for(0.1)
    h.send([0.0, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == 3, 3.0)
    dpos, _ = _tcp_delta(np.array(h.got['traj'][2].points[0].positions))
    np.testing.assert_allclose(dpos, [0.0, 0.02, 0.0], atol=2e-4)


def test_stale_policy_holds_only_after_first_action(harness_factory):
    h = harness_factory([Parameter('policy_timeout_s', value=0.2)])
    h.enable(True)
    h.spin_for(0.4)                               # no action yet: not stale
    assert h.got['traj'] == [] and h.arm.counts()['holds'] == 0
    h.send([0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == 2, 2.0)   # command, then a hold
    np.testing.assert_allclose(h.got['traj'][1].points[0].positions, HOME_Q, atol=1e-12)


def test_forward_position_interface(harness_factory):
    h = harness_factory([Parameter('command_interface', value='forward_position')])
    h.enable(True)
    delta = np.array([-0.01, 0.02, -0.02])
    h.send([*delta, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: h.got['fwd'], 3.0)
    assert h.got['traj'] == []
    q = np.array(h.got['fwd'][-1].data)
    assert q.shape == (7,)
    dpos, _ = _tcp_delta(q)
    np.testing.assert_allclose(dpos, delta, atol=2e-4)


def test_bad_parameters_rejected(harness_factory):
    h = harness_factory()
    result = h.arm.set_parameters([Parameter('workspace_min_m', value=[0.9, -0.3, 0.02])])
    assert not result[0].successful
    result = h.arm.set_parameters([Parameter('max_step_m', value=0.01)])
    assert result[0].successful
    h.enable(True)
    h.send([0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: h.got['traj'], 3.0)
    dpos, _ = _tcp_delta(np.array(h.got['traj'][-1].points[0].positions))
    np.testing.assert_allclose(dpos, [0.01, 0.0, 0.0], atol=2e-4)


def test_bad_command_interface(ros_context):
    with pytest.raises(ValueError, match='command_interface'):
        ArmInterfaceNode(context=ros_context,
                         parameter_overrides=[Parameter('command_interface', value='torque')])


def test_actions_wait_for_joints_measured_after_the_enable(harness_factory):
    """After a reset the arm is enabled again: joints measured before must not be the base of
    a command (it would drag the arm back to where the last episode ended)."""
    h = harness_factory()
    h.enable(True)
    h.feed_joints = False
    h.enable(False)
    h.enable(True)
    assert h.arm._q_meas is None
    sent = len(h.got['traj'])
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    h.spin_for(0.3)
    assert len(h.got['traj']) == sent and h.arm.counts()['ignored'] >= 1
    h.feed_joints = True
    assert h.spin_until(lambda: h.arm._q_meas is not None, 2.0)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == sent + 1, 3.0)


def test_actions_on_frames_from_before_the_enable_are_ignored(harness_factory):
    """An action stamped at or before the enable was computed on an older frame (the last
    scene, or the reset's frame under a held simulated clock, which the episode manager
    does not count as a step): it must not move the arm; a newer one does."""
    h = harness_factory()
    before = h.peer.get_clock().now().to_msg()
    h.spin_for(0.05)
    reply = h.enable(True)
    assert json.loads(reply.message) == {'state': 'enabled', 'stamp_s': h.arm._enabled_at_s,
                                         'stale': []}
    sent, ignored = len(h.got['traj']), h.arm.counts()['ignored']
    h.action_pub.publish(action_to_msg(np.array([0.02, 0, 0, 0, 0, 0, 0.0]), before))
    at_enable = action_to_msg(np.array([0.02, 0, 0, 0, 0, 0, 0.0]), before)
    at_enable.header.stamp = convert.s_to_stamp(h.arm._enabled_at_s)
    h.action_pub.publish(at_enable)
    assert h.spin_until(lambda: h.arm.counts()['ignored'] == ignored + 2, 2.0)
    assert len(h.got['traj']) == sent
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(h.got['traj']) == sent + 1, 3.0)


@pytest.mark.parametrize('reopen', [True, False])
def test_conflicting_gripper_bits_reopen_only_an_empty_gripper(harness_factory, reopen):
    """Open and close set together: a gripper that /joint_states shows closed on nothing (a
    missed grasp) reopens, one holding an object (fingers stopped short) stays closed, an
    open one stays open; with reopen_empty_gripper false, close always wins (the rule before
    2026-12-03)."""
    h = harness_factory([Parameter('reopen_empty_gripper', value=reopen)])
    h.enable(True)
    torn = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    for finger_m, expected in ((0.04, 0.0 if reopen else 0.04), (0.015, 0.04),
                               (0.0, 0.0 if reopen else 0.04)):
        h.finger_m = finger_m
        assert h.spin_until(lambda: h.arm._closedness == finger_m / 0.04, 2.0)
        sent = len(h.got['gripper'])
        h.send(torn)
        assert h.spin_until(lambda: len(h.got['gripper']) == sent + 1, 3.0)
        assert h.got['gripper'][-1].data.tolist() == [expected]
    h.send([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])               # close alone: closes
    assert h.spin_until(lambda: h.got['gripper'][-1].data.tolist() == [0.04], 3.0)


def test_gripper_state_may_come_in_its_own_joint_state(harness_factory):
    """A separate gripper driver publishes the finger joint alone on /joint_states: the arm
    interface takes its closedness and logs no error for the missing arm joints."""
    h = harness_factory()
    h.enable(True)
    msg = JointState(name=[GRIPPER_JOINT], position=[0.02])
    msg.header.stamp = h.peer.get_clock().now().to_msg()
    h.feed_joints = False
    h.js_pub.publish(msg)
    assert h.spin_until(lambda: h.arm._closedness == 0.5, 2.0)
    assert h.arm._q_meas is not None            # the arm's last state is kept
    msg = JointState(name=[GRIPPER_JOINT], position=[float('nan')])
    h.js_pub.publish(msg)
    assert h.spin_until(lambda: h.arm._closedness is None, 2.0)


LBR = [Parameter('joint_names', value=[f'lbr_A{i}' for i in range(1, 8)]),
       Parameter('gripper_joint', value='lbr_gripper'),
       Parameter('joint_states_topic', value='/lbr/joint_states'),
       Parameter('camera_ns', value='/camera/camera'),
       Parameter('arm_controller', value='/lbr/joint_trajectory_controller'),
       Parameter('gripper_controller', value='/lbr_gripper_controller')]


def test_driver_names_on_topics(harness_factory):
    """Under lbr-stack names the node reads /lbr/joint_states and the realsense-ros
    camera_info topic, and commands carry lbr_A1..lbr_A7 on the driver's controller topic."""
    h = harness_factory(LBR)
    h.enable(True)
    assert json.loads(h.enable(True).message)['stale'] == []   # both inputs on their topics
    h.finger_m = 0.04 * 0.6                   # holding an object: the torn bits keep closed
    assert h.spin_until(lambda: h.arm._closedness == pytest.approx(0.6), 2.0)
    h.send([0.02, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    assert h.spin_until(lambda: h.got['traj'] and h.got['gripper'], 3.0)
    traj = h.got['traj'][-1]
    assert list(traj.joint_names) == [f'lbr_A{i}' for i in range(1, 8)]
    dpos, _ = _tcp_delta(np.array(traj.points[0].positions))
    np.testing.assert_allclose(dpos, [0.02, 0.0, 0.0], atol=2e-4)
    assert h.got['gripper'][-1].data.tolist() == [0.04]


def test_bad_gripper_interface(ros_context):
    with pytest.raises(ValueError, match='gripper_interface'):
        ArmInterfaceNode(context=ros_context,
                         parameter_overrides=[Parameter('gripper_interface', value='suction')])


def test_topic_interfaces_need_no_control_msgs(ros_context, monkeypatch):
    """control_msgs is imported only for an action interface: without it the topic
    interfaces work, and an action interface refuses to start with a clear message."""
    import sys
    from awopt_ros.ros.run import StartupError
    monkeypatch.setitem(sys.modules, 'control_msgs', None)     # import control_msgs fails
    node = ArmInterfaceNode(context=ros_context)
    node.destroy_node()
    for params in ([Parameter('command_interface', value='follow_joint_trajectory')],
                   [Parameter('gripper_interface', value='parallel_gripper_command')]):
        with pytest.raises(StartupError, match='control_msgs'):
            ArmInterfaceNode(context=ros_context, parameter_overrides=params)


def test_a_malformed_controller_namespace_is_refused_at_start(ros_context):
    from awopt_ros.nodes.arm_interface import ArmInterfaceNode
    with pytest.raises(ValueError, match='arm_controller'):
        ArmInterfaceNode(context=ros_context, parameter_overrides=[
            Parameter('arm_controller', value='/arm_controller/')])
