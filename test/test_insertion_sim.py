"""Tests for awopt_ros.sim.insertion (MuJoCo Sawyer peg-in-hole cell, no ROS)."""
import numpy as np
import pytest

from awopt_ros.core import sawyer
from awopt_ros.sim.insertion import InsertionConfig, InsertionSim, socket_boxes


@pytest.fixture(scope='module')
def sim():
    s = InsertionSim(InsertionConfig(render=False))
    yield s
    s.close()


@pytest.fixture(scope='module')
def hard():
    s = InsertionSim(InsertionConfig(variant='hard', render=False))
    yield s
    s.close()


def _ik_to(sim, q, tip):
    kin = sim.kinematics
    for _ in range(4):
        pos, _ = kin.fk(q)
        q = kin.ik_step(q, tip - pos, 0.0, 10.0)
    return q


def push(sim, dx, dy, seed=0, bottom_m=0.035, speed_m_s=0.02, hold_s=2.0):
    """Put the tip 3 mm above the socket at lateral offset (dx, dy), let it settle, lower the
    target at ``speed_m_s`` to ``bottom_m`` below the socket top (15 mm under the bore's
    bottom: ~30 N into the bottom, ~70 N into the top face) and hold. Returns (success,
    depth m, deepest contact penetration m)."""
    sim.reset(seed)
    sock = sim.socket_pose()
    q = _ik_to(sim, sim.arm_target(), sock + [dx, dy, 0.003])
    sim.set_arm_target(q)
    sim.step(1000)
    z, pen = 0.003, 0.0
    while z > -bottom_m:
        z = max(z - speed_m_s * 0.01, -bottom_m)
        q = _ik_to(sim, q, sock + [dx, dy, z])
        sim.set_arm_target(q)
        sim.step(10)
        pen = max(pen, sim.contact_penetration_m())
    for _ in range(int(hold_s * 100)):
        sim.step(10)
        pen = max(pen, sim.contact_penetration_m())
    return sim.success(), sim.insertion_depth_m(), pen


def test_config_variants_and_validation():
    assert (InsertionConfig().clearance_m, InsertionConfig().chamfer_m) == (0.0004, 0.0005)
    hard = InsertionConfig(variant='hard')
    assert (hard.clearance_m, hard.chamfer_m) == (0.0001, 0.0)
    assert InsertionConfig(variant='hard', clearance_m=0.0003).clearance_m == 0.0003
    with pytest.raises(ValueError, match='variant'):
        InsertionConfig(variant='easy')
    with pytest.raises(ValueError, match='clearance_m'):
        InsertionConfig(clearance_m=-0.001)
    with pytest.raises(ValueError, match='start_height_m'):
        InsertionConfig(start_height_m=(0.05, 0.03))


def test_reset_start_pose_and_zero_wrench(sim):
    for seed in range(3):
        sim.reset(seed)
        pos, quat = sim.tool_pose()
        height = pos[2] - sim.socket_pose()[2]
        assert 0.03 - 1e-4 <= height <= 0.05 + 1e-4
        assert np.all(np.abs(pos[:2] - sim.socket_pose()[:2]) <= 0.002 + 1e-4)
        rot = sim.tool_rotation()
        np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-3)   # peg down
        assert quat.shape == (4,) and abs(np.linalg.norm(quat) - 1.0) < 1e-9
        np.testing.assert_allclose(sim.wrench(), 0.0, atol=1e-6)
        assert sim.time_s == 0.0
        assert not sim.success()
        sim.step(sim.steps_per_control)   # the arm holds still at its start target
        np.testing.assert_allclose(sim.tool_pose()[0], pos, atol=1e-5)
        np.testing.assert_allclose(sim.wrench(), 0.0, atol=1e-3)
        assert sim.time_s == pytest.approx(0.1)


def test_exact_goal_straight_push_succeeds(sim):
    ok, depth, _ = push(sim, 0.0, 0.0)
    assert ok and depth == pytest.approx(sim.config.hole_depth_m, abs=2e-4)


def test_socket_boxes_chamfer_geometry():
    boxes = {name: (np.array(c), np.array(h), q) for name, c, h, q in
             socket_boxes(0.01, 0.0004, 0.0005, 0.02)}
    assert set(boxes) >= {'wall_px', 'upper_px', 'chamfer_px', 'floor'}
    a = 0.0052
    c, h, _ = boxes['wall_px']
    assert c[0] - h[0] == pytest.approx(a)           # bore face
    c, h, _ = boxes['upper_px']
    assert c[0] - h[0] == pytest.approx(a + 0.0005)  # set back by the chamfer
    assert c[2] + h[2] == pytest.approx(0.0)         # top face
    assert len(socket_boxes(0.01, 0.0001, 0.0, 0.02)) == 5   # sharp edge: walls + floor
