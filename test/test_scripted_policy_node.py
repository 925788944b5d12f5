"""scripted_policy node in process: one action and one grasp goal per policy image."""
import json
import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from awopt_ros.core import robot, spec
from awopt_ros.nodes.scripted_policy import GRASP_GOAL, ScriptedPolicyNode
from awopt_ros.ros import convert, qos
from awopt_ros.ros.run import StartupError


def _spin_until(ex, cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.02)
    return cond()


#: lbr-stack driver names (the fake-hardware bringup's)
LBR = {'joint_names': [f'lbr_A{i}' for i in range(1, 8)], 'gripper_joint': 'lbr_gripper',
       'joint_states_topic': '/lbr/joint_states'}


@pytest.mark.parametrize('names', [{}, LBR], ids=['simulator', 'lbr'])
def test_each_policy_image_gets_a_grasp_goal_and_an_action_with_its_stamp(ros_context, names):
    """Under the simulator's driver names and under lbr-stack's (joint states on
    /lbr/joint_states, listed in another order than the model's)."""
    node = ScriptedPolicyNode(context=ros_context, parameter_overrides=[
        Parameter('noise_std_m', value=0.0), Parameter('slip_probability', value=0.0),
        Parameter('publish_proprio', value=True),
        *(Parameter(k, value=v) for k, v in names.items())])
    joint_names = (list(names.get('joint_names', spec.ARM_JOINTS))
                   + [names.get('gripper_joint', spec.GRIPPER_JOINT)])
    peer = rclpy.create_node('scripted_peer', context=ros_context)
    got = []
    peer.create_subscription(PoseStamped, GRASP_GOAL, lambda m: got.append(('goal', m)),
                             qos.COMMAND)
    peer.create_subscription(JointState, '/policy/action', lambda m: got.append(('action', m)),
                             qos.COMMAND)
    peer.create_subscription(JointState, '/policy/proprio',
                             lambda m: got.append(('proprio', m)), qos.SENSOR)
    info = []
    peer.create_subscription(String, '/policy/model_info', info.append, qos.LATCHED)
    pubs = {'image': peer.create_publisher(Image, '/policy/image', qos.SENSOR),
            'joints': peer.create_publisher(
                JointState, names.get('joint_states_topic', '/joint_states'), qos.SENSOR),
            'objects': peer.create_publisher(MarkerArray, '/sim/objects', qos.COMMAND)}
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    ex.add_node(peer)
    try:
        assert _spin_until(ex, lambda: info and all(
            p.get_subscription_count() > 0 for p in pubs.values()))
        assert json.loads(info[0].data)['grasp_goal_topic'] == GRASP_GOAL
        assert json.loads(info[0].data)['lift_rule'] == 'closed'
        marker = Marker()
        marker.pose.position.x, marker.pose.position.y, marker.pose.position.z = 0.62, 0.02, 0.03
        marker.pose.orientation.w = 1.0
        marker.scale.x = marker.scale.y = marker.scale.z = 0.04
        pubs['objects'].publish(MarkerArray(markers=[marker]))
        pubs['joints'].publish(JointState(name=joint_names[::-1],
                                          position=(list(robot.HOME_Q) + [0.0])[::-1]))
        assert _spin_until(ex, lambda: node.joints is not None and node.poses is not None)
        stamp = convert.s_to_stamp(12.3)
        pubs['image'].publish(convert.numpy_to_image(np.zeros((64, 64, 3), np.uint8), stamp,
                                                     'cam'))
        assert _spin_until(ex, lambda: len(got) == 3)
        msgs = dict(got)
        assert set(msgs) == {'goal', 'action', 'proprio'}
        assert json.loads(info[0].data)['proprio_topic'] == '/policy/proprio'
        np.testing.assert_allclose(convert.msg_to_proprio(msgs['proprio'])[:3],
                                   [0.55, 0.0, 0.35], atol=2e-3)   # home tool position
        assert all(m.header.stamp == stamp for m in msgs.values())
        np.testing.assert_allclose(convert.msg_to_grasp_goal(msgs['goal'])[:3],
                                   [0.62, 0.02, 0.035], atol=1e-6)
        assert convert.msg_to_action(msgs['action'])[spec.IDX_OPEN] == 1.0   # approaching
    finally:
        ex.shutdown()
        node.destroy_node()
        peer.destroy_node()


def test_acts_at_the_control_rate_on_a_faster_camera(ros_context):
    """Images at 30 Hz: an action on every third one (action_rate_hz 10), as the policy."""
    node = ScriptedPolicyNode(context=ros_context, parameter_overrides=[
        Parameter('noise_std_m', value=0.0), Parameter('slip_probability', value=0.0)])
    peer = rclpy.create_node('scripted_rate_peer', context=ros_context)
    actions = []
    peer.create_subscription(JointState, '/policy/action', actions.append, qos.COMMAND)
    image = peer.create_publisher(Image, '/policy/image', qos.SENSOR)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    ex.add_node(peer)
    try:
        assert _spin_until(ex, lambda: image.get_subscription_count() > 0)
        node.joints = np.append(robot.HOME_Q, 0.0)
        node.poses = np.array([[0.62, 0.02, 0.03, 1.0, 0.0, 0.0, 0.0]])
        node.extents = np.array([[0.02, 0.02, 0.02]])
        for k in range(12):       # 0.4 s of 30 Hz images
            image.publish(convert.numpy_to_image(np.zeros((64, 64, 3), np.uint8),
                                                 convert.s_to_stamp(20.0 + k / 30.0), 'cam'))
            _spin_until(ex, lambda: False, 0.02)
        assert _spin_until(ex, lambda: len(actions) >= 4, 2.0)
        _spin_until(ex, lambda: False, 0.2)
        stamps = [convert.stamp_to_s(m.header.stamp) for m in actions]
        assert len(stamps) == 4 and np.allclose(np.diff(stamps), 0.1, atol=1e-6), stamps
    finally:
        ex.shutdown()
        peer.destroy_node()
        node.destroy_node()


def test_unknown_lift_rule_stops_the_node(ros_context):
    with pytest.raises(StartupError, match='lift_rule'):
        ScriptedPolicyNode(context=ros_context,
                           parameter_overrides=[Parameter('lift_rule', value='later')])


class _Errors:
    """Stands in for the node's logger: keeps (text, keyword arguments) of each error."""

    def __init__(self):
        self.errors = []

    def error(self, text, **kw):
        self.errors.append((text, kw))


def test_joint_states_without_the_configured_joints_say_which_are_missing(ros_context,
                                                                          monkeypatch):
    node = ScriptedPolicyNode(context=ros_context, parameter_overrides=[
        Parameter(k, value=v) for k, v in LBR.items()])
    log = _Errors()
    monkeypatch.setattr(node, 'get_logger', lambda: log)
    msg = JointState(name=list(spec.ARM_JOINTS) + ['lbr_gripper'], position=[0.0] * 8)
    try:
        node._on_joints(msg)
        assert node.joints is None
        ((text, kw),) = log.errors
        assert text.startswith("/lbr/joint_states: joint state lacks joints ['lbr_A1', ")
        assert "'lbr_A7'] (parameters joint_names, gripper_joint); it names ['iiwa_joint_1'," \
            in text
        assert kw == {'throttle_duration_sec': 5.0}
    finally:
        node.destroy_node()


def test_bad_joint_names_stop_the_node(ros_context):
    with pytest.raises(StartupError, match='joint_names needs 7 names'):
        ScriptedPolicyNode(context=ros_context,
                           parameter_overrides=[Parameter('joint_names', value=['a', 'b'])])
