"""robot_state node in process: /robot_description with the driver's joint names for a late
subscriber, /tf from joint states equal to pinocchio FK, /tf_static with the camera, markers."""
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32, String
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from awopt_ros.core import camera_pose, robot, robot_tf, spec
from awopt_ros.core.kinematics import Kinematics
from awopt_ros.nodes.robot_state import LATCHED_ONE, TF_QOS, RobotStateNode
from awopt_ros.ros import convert, qos
from awopt_ros.ros.run import StartupError

LBR_ARM = [f'lbr_A{i}' for i in range(1, 8)]
LBR = dict(joint_names=LBR_ARM, gripper_joint='lbr_gripper',
           joint_states_topic='/lbr/joint_states')
Q7 = np.array([0.3, 0.5, -0.2, -1.4, 0.1, 0.9, -0.6])


def make(ctx, **params):
    node = RobotStateNode(context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    peer = rclpy.create_node('robot_state_peer', context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(peer)
    return node, peer, ex


def spin_until(ex, cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.02)
    return cond()


def joint_state(peer, q7, finger_m, names=None, stamp_s=None):
    msg = JointState(name=list(names or LBR_ARM + ['lbr_gripper']))
    msg.position = [float(v) for v in q7] + [float(finger_m)]
    msg.header.stamp = (peer.get_clock().now().to_msg() if stamp_s is None
                        else convert.s_to_stamp(stamp_s))
    return msg


def transforms(msgs):
    """TFMessages -> [core.robot_tf.Transform]."""
    out = []
    for msg in msgs:
        for t in msg.transforms:
            tr, r = t.transform.translation, t.transform.rotation
            out.append(robot_tf.Transform(t.header.frame_id, t.child_frame_id,
                                          np.array([tr.x, tr.y, tr.z]),
                                          np.array([r.x, r.y, r.z, r.w])))
    return out


def test_late_subscriber_gets_description_with_driver_names_and_static_tf(ros_context):
    pose = [0.1, 0.7, 1.1, 0.05, 0.8, -0.9]
    node, peer, ex = make(ros_context, camera_pose_xyz_rpy=pose, **LBR)
    for _ in range(20):                   # the node has published; subscribe only now
        ex.spin_once(timeout_sec=0.01)
    descriptions, statics = [], []
    peer.create_subscription(String, '/robot_description', descriptions.append, LATCHED_ONE)
    peer.create_subscription(TFMessage, '/tf_static', statics.append, LATCHED_ONE)
    assert spin_until(ex, lambda: descriptions and statics)
    joints = {j.name: j for j in robot_tf.parse_joints(descriptions[0].data)}
    assert [n for n in joints if n.startswith('lbr_')] == LBR_ARM + ['lbr_gripper']
    assert 'iiwa_joint_1' not in joints
    assert joints['gripper_right_finger_joint'].mimic[0] == 'lbr_gripper'
    assert ET.fromstring(descriptions[0].data).get('name') == 'iiwa14_gripper'
    static = {(t.parent, t.child): t for t in transforms(statics)}
    assert set(static) == {('iiwa_link_7', 'gripper_base'), ('gripper_base', 'tcp'),
                           ('base_link', 'camera_link'),
                           ('camera_link', 'camera_color_optical_frame')}
    cam = robot_tf.compose(static.values(), 'base_link', 'camera_link')
    np.testing.assert_allclose(cam, camera_pose.pose_to_matrix(pose), atol=1e-9)


def test_without_optical_frame_and_with_sim_default(ros_context):
    node, peer, ex = make(ros_context, publish_camera_optical_frame=False)
    statics = []
    peer.create_subscription(TFMessage, '/tf_static', statics.append, LATCHED_ONE)
    assert spin_until(ex, lambda: statics)
    static = {(t.parent, t.child): t for t in transforms(statics)}
    assert ('camera_link', 'camera_color_optical_frame') not in static
    np.testing.assert_allclose(robot_tf.compose(static.values(), 'base_link', 'camera_link'),
                               camera_pose.pose_to_matrix(camera_pose.SIM_CAMERA_POSE_XYZ_RPY),
                               atol=1e-9)


def test_tf_from_joint_state_matches_pinocchio_fk(ros_context):
    node, peer, ex = make(ros_context, publish_frequency_hz=0.0, **LBR)
    tfs, statics = [], []
    peer.create_subscription(TFMessage, '/tf', tfs.append, TF_QOS)
    peer.create_subscription(TFMessage, '/tf_static', statics.append, LATCHED_ONE)
    pub = peer.create_publisher(JointState, '/lbr/joint_states', qos.SENSOR)
    assert spin_until(ex, lambda: pub.get_subscription_count() > 0 and statics)
    msg = joint_state(peer, Q7, 0.015, stamp_s=1234.5)
    pub.publish(msg)
    assert spin_until(ex, lambda: tfs)
    assert len(tfs) == 1
    stamps = {(t.header.stamp.sec, t.header.stamp.nanosec) for t in tfs[0].transforms}
    assert stamps == {(1234, 500_000_000)}        # the joint state's stamp
    got = transforms(tfs)
    assert [(t.parent, t.child) for t in got] == [
        ('base_link', 'iiwa_link_1'), ('iiwa_link_1', 'iiwa_link_2'),
        ('iiwa_link_2', 'iiwa_link_3'), ('iiwa_link_3', 'iiwa_link_4'),
        ('iiwa_link_4', 'iiwa_link_5'), ('iiwa_link_5', 'iiwa_link_6'),
        ('iiwa_link_6', 'iiwa_link_7'), ('gripper_base', 'gripper_left_finger'),
        ('gripper_base', 'gripper_right_finger')]
    chain = got + transforms(statics)
    tcp = robot_tf.compose(chain, 'base_link', 'tcp')
    pos, rot = Kinematics(robot.URDF_PATH).fk(Q7)
    np.testing.assert_allclose(tcp[:3, 3], pos, atol=1e-6)
    np.testing.assert_allclose(tcp[:3, :3], rot, atol=1e-6)
    fingers = {t.child: t.translation for t in got}
    np.testing.assert_allclose(fingers['gripper_left_finger'], [0, 0.05 - 0.015, 0], atol=1e-9)
    np.testing.assert_allclose(fingers['gripper_right_finger'], [0, -0.05 + 0.015, 0],
                               atol=1e-9)
    assert node.counts['unknown_joints'] == 0


def test_tf_rate_follows_joint_state_stamps(ros_context):
    node, peer, ex = make(ros_context, publish_frequency_hz=20.0)
    tfs = []
    peer.create_subscription(TFMessage, '/tf', tfs.append, TF_QOS)
    pub = peer.create_publisher(JointState, '/joint_states', qos.SENSOR)
    assert spin_until(ex, lambda: pub.get_subscription_count() > 0)
    names = list(spec.ARM_JOINTS) + [spec.GRIPPER_JOINT]
    # 20 Hz of stamps: 100.0 and 100.05 go out; 50.0 (the clock went back: a restart) too
    for i, t_s in enumerate((100.0, 100.01, 100.03, 100.05, 50.0)):
        pub.publish(joint_state(peer, Q7, 0.0, names=names, stamp_s=t_s))
        assert spin_until(ex, lambda: node.counts['joint_states'] == i + 1)
    spin_until(ex, lambda: len(tfs) >= 4, 0.3)
    got = [convert.stamp_to_s(m.transforms[0].header.stamp) for m in tfs]
    assert got == pytest.approx([100.0, 100.05, 50.0])


def test_unknown_joint_names_are_counted(ros_context):
    node, peer, ex = make(ros_context)         # default names: an lbr joint state is unknown
    pub = peer.create_publisher(JointState, '/joint_states', qos.SENSOR)
    assert spin_until(ex, lambda: pub.get_subscription_count() > 0)
    pub.publish(joint_state(peer, Q7, 0.0))
    assert spin_until(ex, lambda: node.counts['unknown_joints'] == 8)


def test_markers_show_box_action_and_success(ros_context):
    node, peer, ex = make(ros_context, workspace_min_m=[0.4, -0.2, 0.05],
                          workspace_max_m=[0.8, 0.2, 0.45], action_arrow_scale=4.0)
    arrays = []
    peer.create_subscription(MarkerArray, '/awopt/markers', arrays.append, qos.COMMAND)
    pubs = dict(action=peer.create_publisher(JointState, '/policy/action', qos.COMMAND),
                ee=peer.create_publisher(PoseStamped, '/arm/ee_pose', 10),
                success=peer.create_publisher(Float32, '/success/probability', qos.COMMAND))
    assert spin_until(ex, lambda: arrays and all(p.get_subscription_count() for p in
                                                 pubs.values()))
    first = {m.ns: m for m in arrays[-1].markers}
    assert first['action'].action == Marker.DELETE          # no action yet
    assert first['success'].text == 'P(success) ?'
    box = np.array([[p.x, p.y, p.z] for p in first['workspace'].points])
    assert box.shape == (24, 3) and first['workspace'].type == Marker.LINE_LIST
    np.testing.assert_allclose(box.min(axis=0), [0.4, -0.2, 0.05])
    np.testing.assert_allclose(box.max(axis=0), [0.8, 0.2, 0.45])
    ee = PoseStamped()
    ee.pose.position.x, ee.pose.position.y, ee.pose.position.z = 0.6, 0.1, 0.3
    pubs['ee'].publish(ee)
    pubs['success'].publish(Float32(data=0.87))
    pubs['action'].publish(convert.action_to_msg([0.01, 0.0, -0.02, 0.0, 0, 1, 0],
                                                 peer.get_clock().now().to_msg()))

    def shown():
        m = {m.ns: m for m in arrays[-1].markers}
        return m['action'].action == Marker.ADD and m['success'].text == 'P(success) 0.87'
    assert spin_until(ex, shown)
    last = {m.ns: m for m in arrays[-1].markers}
    ends = [[p.x, p.y, p.z] for p in last['action'].points]
    np.testing.assert_allclose(ends, [[0.6, 0.1, 0.3], [0.64, 0.1, 0.22]], atol=1e-6)
    assert last['action_bits'].text == 'close'
    assert all(m.header.frame_id == 'base_link' for m in last.values())


@pytest.mark.parametrize('params,match', [
    (dict(urdf_path='/no/such.urdf'), 'URDF not found'),
    (dict(workspace_min_m=[0.9, 0.0, 0.0]), 'below'),
])
def test_bad_parameters_refuse_to_start(ros_context, params, match):
    with pytest.raises(StartupError, match=match):
        RobotStateNode(context=ros_context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])


def test_bad_camera_pose_refuses_to_start(ros_context):
    with pytest.raises(StartupError, match='camera_pose_xyz_rpy'):
        RobotStateNode(context=ros_context, parameter_overrides=[
            Parameter('camera_pose_xyz_rpy', value=[0.0, 1.0, 2.0])])


def test_beside_a_robot_state_publisher_only_camera_frames_and_markers(ros_context):
    node, peer, ex = make(ros_context, publish_robot_tf=False)
    statics, tfs, descriptions, arrays = [], [], [], []
    peer.create_subscription(TFMessage, '/tf_static', statics.append, LATCHED_ONE)
    peer.create_subscription(TFMessage, '/tf', tfs.append, TF_QOS)
    peer.create_subscription(String, '/robot_description', descriptions.append, LATCHED_ONE)
    peer.create_subscription(MarkerArray, '/awopt/markers', arrays.append, qos.COMMAND)
    pub = peer.create_publisher(JointState, '/joint_states', qos.SENSOR)
    assert spin_until(ex, lambda: statics and arrays and pub.get_subscription_count() > 0)
    assert {(t.parent, t.child) for t in transforms(statics)} == {
        ('base_link', 'camera_link'), ('camera_link', 'camera_color_optical_frame')}
    names = list(spec.ARM_JOINTS) + [spec.GRIPPER_JOINT]
    pub.publish(joint_state(peer, Q7, 0.0, names=names))
    assert spin_until(ex, lambda: node.counts['joint_states'] == 1)
    spin_until(ex, lambda: False, 0.3)
    assert not tfs and not descriptions
    assert peer.count_publishers('/robot_description') == 0
