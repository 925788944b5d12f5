"""Tests for awopt_ros.core.kinematics (pinocchio FK and damped-least-squares IK)."""
import time

import numpy as np
import pytest

from awopt_ros.core import kinematics
from awopt_ros.core.robot import HOME_Q, HOME_TCP_M, URDF_PATH


@pytest.fixture(scope='module')
def kin():
    return kinematics.Kinematics(URDF_PATH)


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def test_fk_home(kin):
    pos, rot = kin.fk(HOME_Q)
    np.testing.assert_allclose(pos, HOME_TCP_M, atol=1e-3)
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-3)   # gripper down
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)


def test_proprio(kin):
    out = kinematics.proprio_from_joints(HOME_Q, 0.02)
    assert out.dtype == np.float32 and out.shape == (6,)
    pos, rot = kin.fk(HOME_Q)
    yaw = np.arctan2(rot[1, 0], rot[0, 0])
    np.testing.assert_allclose(out, [*pos, np.sin(yaw), np.cos(yaw), 0.5], atol=1e-6)
    assert kin.proprio(HOME_Q, 0.1)[5] == 1.0
    assert kin.proprio(HOME_Q, -0.01)[5] == 0.0
    with pytest.raises(ValueError):
        kin.proprio(HOME_Q, float('nan'))


def test_ik_reaches_offset(kin):
    target = HOME_TCP_M + np.array([0.05, 0.0, 0.0])
    q = HOME_Q.copy()
    for _ in range(10):
        pos, _ = kin.fk(q)
        q = kin.ik_step(q, np.clip(target - pos, -0.03, 0.03), 0.0, 0.1)
    pos, rot = kin.fk(q)
    assert np.linalg.norm(pos - target) < 1e-3
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-3)


def test_single_step_moves_by_delta(kin):
    pos0, _ = kin.fk(HOME_Q)
    for delta in ([0.03, 0.0, 0.0], [0.0, -0.03, 0.02], [-0.02, 0.01, -0.03]):
        q = kin.ik_step(HOME_Q, delta, 0.0, 0.1)
        pos, _ = kin.fk(q)
        np.testing.assert_allclose(pos - pos0, delta, atol=1e-4)


def test_yaw_step_rotates(kin):
    _, rot0 = kin.fk(HOME_Q)
    q = kin.ik_step(HOME_Q, np.zeros(3), 0.15, 0.1)
    pos, rot = kin.fk(q)
    dyaw = _wrap(np.arctan2(rot[1, 0], rot[0, 0]) - np.arctan2(rot0[1, 0], rot0[0, 0]))
    assert dyaw == pytest.approx(0.15, abs=1e-3)
    np.testing.assert_allclose(pos, kin.fk(HOME_Q)[0], atol=1e-4)
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-3)


def test_tilt_is_corrected(kin):
    q_tilted = HOME_Q + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.15, 0.0])
    q = q_tilted
    for _ in range(5):
        q = kin.ik_step(q, np.zeros(3), 0.0, 0.1)
    _, rot = kin.fk(q)
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-3)


def test_velocity_and_position_limits(kin):
    lim = kin.joint_limits()
    assert lim.lower_rad.shape == (7,) and np.all(lim.lower_rad < lim.upper_rad)
    assert np.all(lim.velocity_rad_s > 0)
    dt = 0.01
    q = kin.ik_step(HOME_Q, [0.03, 0.03, -0.03], 0.2, dt)
    assert np.all(np.abs(q - HOME_Q) <= lim.velocity_rad_s * dt + 1e-9)
    # Near a position limit the target never goes past it.
    q_edge = HOME_Q.copy()
    q_edge[3] = lim.lower_rad[3] + 0.01
    q = q_edge
    for _ in range(20):
        q = kin.ik_step(q, [0.03, 0.0, 0.03], 0.0, 0.1)
        assert np.all(q >= lim.lower_rad) and np.all(q <= lim.upper_rad)
    np.testing.assert_array_equal(kinematics.joint_limits().upper_rad, lim.upper_rad)


def test_bad_inputs(kin):
    with pytest.raises(ValueError, match='q7'):
        kin.fk(np.zeros(6))
    with pytest.raises(ValueError, match='q7'):
        kin.ik_step(np.full(7, np.nan), np.zeros(3), 0.0, 0.1)
    with pytest.raises(ValueError, match='dpos_m'):
        kin.ik_step(HOME_Q, np.zeros(2), 0.0, 0.1)
    with pytest.raises(ValueError, match='dyaw'):
        kin.ik_step(HOME_Q, np.zeros(3), float('nan'), 0.1)
    with pytest.raises(ValueError, match='dt_s'):
        kin.ik_step(HOME_Q, np.zeros(3), 0.0, 0.0)
    with pytest.raises(FileNotFoundError):
        kinematics.Kinematics('/nonexistent/robot.urdf')


def test_ik_step_cost(kin):
    kin.ik_step(HOME_Q, [0.03, 0.0, 0.0], 0.2, 0.1)
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        kin.ik_step(HOME_Q, [0.03, 0.0, 0.0], 0.2, 0.1)
    per_step_ms = (time.perf_counter() - t0) / n * 1e3
    assert per_step_ms < 0.5, per_step_ms
