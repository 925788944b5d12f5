"""core.robot_tf and core.viz: link transforms as robot_state_publisher publishes them, the
URDF with the driver's joint names, and the marker geometry (plain pytest, no ROS)."""
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from awopt_ros.core import robot, robot_names, robot_tf, spec, viz
from awopt_ros.core.kinematics import Kinematics
from awopt_ros.core.paths import resolve

LBR = robot_names.JointNames(tuple(f'lbr_A{i}' for i in range(1, 8)), 'lbr_gripper')


@pytest.fixture(scope='module')
def rtf():
    return robot_tf.RobotTF(robot.URDF_PATH)


def _positions(q7, finger_m=0.0):
    out = dict(zip(spec.ARM_JOINTS, q7))
    out[spec.GRIPPER_JOINT] = finger_m
    return out


def test_parse_joints_of_the_shipped_urdf():
    joints = robot_tf.parse_joints(resolve(robot.URDF_PATH).read_text())
    names = [j.name for j in joints]
    assert names[:7] == list(spec.ARM_JOINTS)
    by = {j.name: j for j in joints}
    assert (by['iiwa_joint_1'].parent, by['iiwa_joint_1'].child) == ('base_link', 'iiwa_link_1')
    assert by['tcp_joint'].type == 'fixed' and by['tcp_joint'].child == 'tcp'
    assert by['gripper_right_finger_joint'].mimic == (spec.GRIPPER_JOINT, 1.0, 0.0)


@pytest.mark.parametrize('text', ['not xml <', '<model/>',
                                  '<robot><joint name="a" type="fixed"/></robot>'])
def test_parse_joints_refuses_what_is_not_urdf(text):
    with pytest.raises(ValueError):
        robot_tf.parse_joints(text)


def test_rename_joints_gives_the_driver_names(rtf):
    text = robot_tf.rename_joints(rtf.urdf_text, LBR.to_driver)
    joints = {j.name: j for j in robot_tf.parse_joints(text)}
    assert [j for j in joints if j.startswith('lbr_A')] == list(LBR.arm)
    assert not any(n in joints for n in spec.ARM_JOINTS + (spec.GRIPPER_JOINT,))
    assert joints['lbr_A1'].parent == 'base_link'                  # links are kept
    assert joints['lbr_gripper'].child == 'gripper_left_finger'
    assert joints['gripper_right_finger_joint'].mimic[0] == 'lbr_gripper'
    # everything but the names is unchanged: same links, same joint origins
    old, new = ET.fromstring(rtf.urdf_text), ET.fromstring(text)
    links = [[ln.get('name') for ln in doc.iter('link')] for doc in (old, new)]
    assert links[0] == links[1]
    assert [o.attrib for o in old.iter('origin')] == [o.attrib for o in new.iter('origin')]
    # pinocchio reads it with the new names
    import pinocchio as pin
    model = pin.buildModelFromXML(text)
    assert list(model.names[1:8]) == list(LBR.arm)


def test_rename_joints_identity_and_errors(rtf):
    assert robot_tf.rename_joints(rtf.urdf_text, robot_names.DEFAULT_JOINT_NAMES.to_driver) \
        == rtf.urdf_text
    with pytest.raises(ValueError, match='not in the URDF'):
        robot_tf.rename_joints(rtf.urdf_text, {'no_such_joint': 'x'})
    with pytest.raises(ValueError, match='two joints'):
        robot_tf.rename_joints(rtf.urdf_text, {'iiwa_joint_1': 'iiwa_joint_2'})
    with pytest.raises(ValueError, match='two joints'):
        robot_tf.rename_joints(rtf.urdf_text, {'iiwa_joint_1': 'tcp_joint'})


def test_transforms_compose_to_the_kinematics_tcp(rtf):
    """base_link -> ... -> tcp through the per-joint transforms (as tf2 chains them) equals
    core.kinematics' tcp FK (pinocchio's reduced arm model) at random joint positions."""
    kin = Kinematics(robot.URDF_PATH)
    rng = np.random.default_rng(3)
    lim = kin.joint_limits()
    static = rtf.static_transforms()
    for _ in range(5):
        q = rng.uniform(lim.lower_rad, lim.upper_rad)
        tfs = rtf.transforms(_positions(q, 0.02)) + static
        pose = robot_tf.compose(tfs, 'base_link', 'tcp')
        pos, rot = kin.fk(q)
        np.testing.assert_allclose(pose[:3, 3], pos, atol=1e-9)
        np.testing.assert_allclose(pose[:3, :3], rot, atol=1e-9)
        pos2, rot2 = rtf.link_pose(_positions(q, 0.02), 'tcp')
        np.testing.assert_allclose(pos2, pos, atol=1e-9)


def test_one_transform_per_joint_parent_to_child(rtf):
    tfs = rtf.transforms(_positions(np.zeros(7), 0.01))
    assert [(t.parent, t.child) for t in tfs] == [
        (rtf.joints[n].parent, rtf.joints[n].child) for n in rtf.moving]
    assert len(tfs) == 9                                        # 7 arm + 2 fingers
    for t in tfs:
        assert np.linalg.norm(t.rotation_xyzw) == pytest.approx(1.0)
    static = {(t.parent, t.child): t for t in rtf.static_transforms()}
    assert set(static) == {('iiwa_link_7', 'gripper_base'), ('gripper_base', 'tcp')}
    np.testing.assert_allclose(static[('gripper_base', 'tcp')].translation, [0, 0, 0.11])
    np.testing.assert_allclose(static[('iiwa_link_7', 'gripper_base')].rotation_xyzw,
                               [0, 0, 0, 1])


def test_joint_transform_is_origin_times_motion(rtf):
    tfs = {t.child: t for t in rtf.transforms(_positions([0.3, 0, 0, 0, 0, 0, 0]))}
    t = tfs['iiwa_link_1']          # origin z 0.1575, revolute about z by 0.3 rad
    np.testing.assert_allclose(t.translation, [0, 0, 0.1575], atol=1e-12)
    np.testing.assert_allclose(t.rotation_xyzw, [0, 0, math.sin(0.15), math.cos(0.15)],
                               atol=1e-12)


def test_fingers_and_mimic(rtf):
    """The left finger moves along its axis -y by the finger position; the right finger (a
    mimic joint) follows, along +y, without its own entry in the joint state."""
    tfs = {t.child: t for t in rtf.transforms(_positions(np.zeros(7), 0.03))}
    np.testing.assert_allclose(tfs['gripper_left_finger'].translation, [0, 0.05 - 0.03, 0],
                               atol=1e-12)
    np.testing.assert_allclose(tfs['gripper_right_finger'].translation, [0, -0.05 + 0.03, 0],
                               atol=1e-12)
    # a position given for the mimic joint itself is ignored (it follows its master)
    pos = _positions(np.zeros(7), 0.03)
    pos['gripper_right_finger_joint'] = 0.0
    tfs = {t.child: t for t in rtf.transforms(pos)}
    np.testing.assert_allclose(tfs['gripper_right_finger'].translation, [0, -0.02, 0],
                               atol=1e-12)


def test_only_named_joints_are_published(rtf):
    tfs = rtf.transforms({'iiwa_joint_2': 0.1, 'some_other_joint': 5.0})
    assert [t.child for t in tfs] == ['iiwa_link_2']
    assert rtf.transforms({}) == []
    with pytest.raises(ValueError, match='not finite'):
        rtf.transforms({'iiwa_joint_2': float('nan')})


def test_robot_tf_refuses_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        robot_tf.RobotTF(tmp_path / 'none.urdf')
    bad = tmp_path / 'bad.urdf'
    bad.write_text('<robot name="x"><link name="a"/><link name="b"/>'
                   '<joint name="j" type="floating"><parent link="a"/><child link="b"/>'
                   '</joint></robot>')
    with pytest.raises(ValueError, match='type'):
        robot_tf.RobotTF(bad)


def test_compose_refuses_an_unconnected_frame(rtf):
    with pytest.raises(KeyError):
        robot_tf.compose(rtf.static_transforms(), 'base_link', 'tcp')


def test_camera_transforms():
    pose = (0.1, 0.2, 0.3, 0.0, 0.5, -0.5)
    tfs = robot_tf.camera_transforms(pose)
    assert [(t.parent, t.child) for t in tfs] == [
        ('base_link', 'camera_link'), ('camera_link', 'camera_color_optical_frame')]
    assert len(robot_tf.camera_transforms(pose, with_optical=False)) == 1
    with pytest.raises(ValueError):
        robot_tf.camera_transforms(pose, camera_frame='base_link')
    with pytest.raises(ValueError):
        robot_tf.camera_transforms([0, 0])


def test_box_edges():
    pts = viz.box_edges([0.35, -0.3, 0.02], [0.85, 0.3, 0.5])
    assert pts.shape == (24, 3)
    edges = pts.reshape(12, 2, 3)
    # each edge is parallel to one axis, and each axis has 4 edges of the box's size
    lengths = np.abs(edges[:, 1] - edges[:, 0])
    assert np.all(np.sum(lengths > 0, axis=1) == 1)
    np.testing.assert_allclose(np.sort(lengths.max(axis=1)),
                               [0.48] * 4 + [0.5] * 4 + [0.6] * 4)
    with pytest.raises(ValueError, match='below'):
        viz.box_edges([0, 0, 1], [1, 1, 0.5])
    with pytest.raises(ValueError):
        viz.box_edges([0, 0], [1, 1, 1])


def test_action_arrow_and_texts():
    start, end = viz.action_arrow([0.6, 0.0, 0.3], [0.01, -0.02, 0.03, 0.1, 0, 1, 0], 5.0)
    np.testing.assert_allclose(start, [0.6, 0.0, 0.3])
    np.testing.assert_allclose(end, [0.65, -0.1, 0.45])
    with pytest.raises(ValueError):
        viz.action_arrow([0.6, 0.0, 0.3], [0.0] * 6)
    with pytest.raises(ValueError):
        viz.action_arrow([0.6, 0.0, 0.3], [0.0] * 7, scale=0.0)
    assert viz.action_text([0, 0, 0, 0, 0, 1, 1]) == 'close terminate'
    assert viz.action_text([0] * 7) == ''
    assert viz.success_text(0.873) == 'P(success) 0.87'
    assert viz.success_text(None) == 'P(success) ?'
    assert viz.success_text(float('nan')) == 'P(success) ?'
    assert viz.success_colour(1.0)[:2] == (0.0, 1.0)
    assert viz.success_colour(0.0)[:2] == (1.0, 0.0)
