"""Tests for the Sawyer URDF (awopt_ros.sim.sawyer_urdf), its constants (core.sawyer) and the
generalised Kinematics on it."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from awopt_ros.core import kinematics, paths, robot, sawyer
from awopt_ros.sim import sawyer_urdf

# Published Sawyer limits (FACTS, Hardware interfaces): lower, upper (rad), velocity (rad/s).
FACTS_LIMITS = {
    'right_j0': (-3.0503, 3.0503, 1.74),
    'right_j1': (-3.8095, 2.2736, 1.328),
    'right_j2': (-3.0426, 3.0426, 1.957),
    'right_j3': (-3.0439, 3.0439, 1.957),
    'right_j4': (-2.9761, 2.9761, 3.485),
    'right_j5': (-2.9761, 2.9761, 3.485),
    'right_j6': (-4.7124, 4.7124, 4.545),
}
FACTS_ORIGINS = {
    'right_j0': ((0, 0, 0.08), (0, 0, 0)),
    'right_j1': ((0.081, 0.05, 0.237), (-np.pi / 2, np.pi / 2, 0)),
    'right_j2': ((0, -0.14, 0.1425), (np.pi / 2, 0, 0)),
    'right_j3': ((0, -0.042, 0.26), (-np.pi / 2, 0, 0)),
    'right_j4': ((0, -0.125, -0.1265), (np.pi / 2, 0, 0)),
    'right_j5': ((0, 0.031, 0.275), (-np.pi / 2, 0, 0)),
    'right_j6': ((0, -0.11, 0.1053), (-np.pi / 2, -0.17453, np.pi)),
}


@pytest.fixture(scope='module')
def kin():
    return sawyer.kinematics()


def _floats(text):
    return [float(v) for v in text.split()]


def test_urdf_file_is_generated_text():
    path = paths.resolve(sawyer.URDF_PATH)
    assert path.read_text(encoding='utf-8') == sawyer_urdf.urdf_text()


def test_urdf_joints_limits_and_origins_match_published_values():
    root = ET.fromstring(sawyer_urdf.urdf_text())
    joints = {j.get('name'): j for j in root.iter('joint')}
    revolute = [n for n, j in joints.items() if j.get('type') == 'revolute']
    assert tuple(revolute) == sawyer.ARM_JOINTS
    for name, (lo, hi, vel) in FACTS_LIMITS.items():
        lim = joints[name].find('limit')
        assert float(lim.get('lower')) == pytest.approx(lo, abs=1e-6)
        assert float(lim.get('upper')) == pytest.approx(hi, abs=1e-6)
        assert float(lim.get('velocity')) == pytest.approx(vel, abs=1e-6)
        assert _floats(joints[name].find('axis').get('xyz')) == [0.0, 0.0, 1.0]
        xyz, rpy = FACTS_ORIGINS[name]
        origin = joints[name].find('origin')
        np.testing.assert_allclose(_floats(origin.get('xyz')), xyz, atol=1e-6)
        np.testing.assert_allclose(_floats(origin.get('rpy')), rpy, atol=1e-5)
    links = {link.get('name') for link in root.iter('link')}
    assert {'base_link', 'right_hand', 'peg', 'tcp'} <= links


def test_kinematics_limits_match_urdf(kin):
    limits = kin.joint_limits()
    np.testing.assert_allclose(limits.lower_rad, [v[0] for v in FACTS_LIMITS.values()])
    np.testing.assert_allclose(limits.upper_rad, [v[1] for v in FACTS_LIMITS.values()])
    np.testing.assert_allclose(limits.velocity_rad_s, [v[2] for v in FACTS_LIMITS.values()])
    assert kin.joint_names == sawyer.ARM_JOINTS and kin.tcp_frame == 'tcp'


def test_neutral_pose_hand_where_published(kin):
    # The Sawyer's published neutral pose has the hand pointing down at about
    # (0.45, 0.16, 0.21) m; the tcp is the peg tip TCP_FROM_HAND_M further down.
    pos, rot = kin.fk(sawyer.NEUTRAL_Q)
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=2e-3)
    hand = pos + sawyer_urdf.TCP_FROM_HAND_M * rot[:, 2] * -1.0
    np.testing.assert_allclose(hand, [0.45, 0.16, 0.216], atol=0.01)


def test_home_pose_points_peg_down_above_socket(kin):
    pos, rot = kin.fk(sawyer.HOME_Q)
    np.testing.assert_allclose(pos, sawyer.HOME_TCP_M, atol=1e-4)
    np.testing.assert_allclose(rot, sawyer.HOME_TCP_ROT, atol=1e-4)
    assert pos[2] - sawyer.SOCKET_M[2] == pytest.approx(0.04, abs=1e-4)
    np.testing.assert_allclose(pos[:2], sawyer.SOCKET_M[:2], atol=1e-4)
    lim = kin.joint_limits()
    assert np.all(sawyer.HOME_Q > lim.lower_rad + 0.3)
    assert np.all(sawyer.HOME_Q < lim.upper_rad - 0.3)


@pytest.mark.parametrize('offset', [(0.0, 0.0, -0.03), (0.02, -0.015, 0.01), (-0.01, 0.02, 0.0)])
def test_fk_ik_round_trip(kin, offset):
    target = sawyer.HOME_TCP_M + np.asarray(offset)
    q = sawyer.HOME_Q.copy()
    for _ in range(10):
        pos, _ = kin.fk(q)
        q = kin.ik_step(q, np.clip(target - pos, -0.02, 0.02), 0.0, 0.1)
    pos, rot = kin.fk(q)
    assert np.linalg.norm(pos - target) < 1e-4
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-4)
    # and back: FK of the solution is the pose the IK was asked for, from another start
    q2 = kin.ik_step(q, np.zeros(3), 0.0, 10.0)
    np.testing.assert_allclose(kin.fk(q2)[0], pos, atol=1e-6)


def test_tcp_velocity_matches_finite_difference(kin):
    rng = np.random.default_rng(3)
    dq = rng.normal(0.0, 0.2, 7)
    h = 1e-6
    fd = (kin.fk(sawyer.HOME_Q + h * dq)[0] - kin.fk(sawyer.HOME_Q - h * dq)[0]) / (2 * h)
    np.testing.assert_allclose(kin.tcp_velocity(sawyer.HOME_Q, dq), fd, atol=1e-6)
    with pytest.raises(ValueError):
        kin.tcp_velocity(sawyer.HOME_Q, [0.0] * 6)


def test_kinematics_rejects_bad_joint_names_and_frame():
    with pytest.raises(ValueError, match='7 distinct'):
        kinematics.Kinematics(sawyer.URDF_PATH, joint_names=sawyer.ARM_JOINTS[:6])
    with pytest.raises(ValueError, match='lacks arm joints'):
        kinematics.Kinematics(sawyer.URDF_PATH)          # iiwa joint names by default
    with pytest.raises(ValueError, match='no frame'):
        kinematics.Kinematics(sawyer.URDF_PATH, joint_names=sawyer.ARM_JOINTS,
                              tcp_frame='nope')


def test_iiwa_defaults_unchanged():
    kin = kinematics.Kinematics(robot.URDF_PATH)
    assert kin.tcp_frame == robot.TCP_FRAME and kin.joint_names[0] == 'iiwa_joint_1'
    pos, _ = kin.fk(robot.HOME_Q)
    np.testing.assert_allclose(pos, robot.HOME_TCP_M, atol=1e-3)
