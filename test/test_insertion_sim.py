"""Tests for awopt_ros.sim.insertion (MuJoCo Sawyer peg-in-hole cell, no ROS)."""
import numpy as np
import pytest

from awopt_ros.core import sawyer
from awopt_ros.sim.insertion import InsertionConfig, InsertionSim, socket_boxes, socket_camera


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
    changed = InsertionConfig(goal_noise_m=0.0).replace(variant='hard')
    assert (changed.clearance_m, changed.chamfer_m, changed.goal_noise_m) == (0.0001, 0.0, 0.0)
    assert InsertionConfig().replace(render=False).clearance_m == 0.0004
    assert InsertionConfig().replace(variant='hard', chamfer_m=0.0002).chamfer_m == 0.0002


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


def test_chamfer_guides_a_tip_inside_its_width(sim):
    # clearance/2 = 0.2 mm < error < clearance/2 + chamfer = 0.7 mm: the chamfer guides it in.
    for dx, dy in ((0.0006, 0.0), (0.0, -0.0006), (-0.0005, 0.0005)):
        ok, depth, _ = push(sim, dx, dy)
        assert ok, (dx, dy, depth)


@pytest.mark.parametrize('direction', [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1)])
def test_no_tunnelling_beyond_clearance_and_chamfer(sim, direction):
    # MuJoCo's default contact settings let a peg push into walls it geometrically cannot
    # enter; with the scene's settings a hard push (~70 N) beside the bore never succeeds and
    # the peg sinks < 0.1 mm into the top face.
    limit = 0.5 * sim.config.clearance_m + sim.config.chamfer_m
    for error in (limit + 0.0001, limit + 0.0005, 0.002, 0.004):
        dx, dy = np.asarray(direction, dtype=float) * error
        ok, depth, pen = push(sim, dx, dy)
        assert not ok, (dx, dy)
        assert depth < 1e-4 and pen < 1e-4, (dx, dy, depth, pen)
        assert sim.wrench()[2] < -50.0       # it really pushed hard


def test_no_tunnelling_hard_variant(hard):
    limit = 0.5 * hard.config.clearance_m
    for dx, dy in ((limit + 0.0002, 0.0), (0.0, -(limit + 0.0002)), (0.001, 0.001)):
        ok, depth, pen = push(hard, dx, dy)
        assert not ok and depth < 1e-4 and pen < 1e-4, (dx, dy, depth, pen)


def test_hard_variant_is_stricter(sim, hard):
    ok_default, _, _ = push(sim, 0.0003, 0.0)
    ok_hard, _, _ = push(hard, 0.0003, 0.0)
    assert ok_default and not ok_hard


def test_wrench_reads_push_in_tool_frame(sim):
    push(sim, 0.0, 0.0, bottom_m=0.035)
    # Held 15 mm below the bore's bottom: the socket pushes up K * 0.015 = 30 N; tool z
    # points down, so fz is negative; sideways forces and torques stay small.
    w = sim.wrench()
    assert w[2] == pytest.approx(-sim.config.stiffness_n_m * 0.015, rel=0.1)
    assert np.all(np.abs(w[:2]) < 3.0) and np.all(np.abs(w[3:]) < 0.5)


def test_cartesian_stiffness_at_the_tip(sim):
    # 10 N on the peg along each base axis moves the tip 10 / 2000 m = 5 mm along it.
    peg = sim.model.body('peg').id
    for axis in range(3):
        sim.reset(1)
        p0, _ = sim.tool_pose()
        sim.data.xfrc_applied[peg, axis] = 10.0
        sim.step(1500)
        sim.data.xfrc_applied[peg] = 0.0
        disp = sim.tool_pose()[0] - p0
        assert 10.0 / disp[axis] == pytest.approx(sim.config.stiffness_n_m, rel=0.05)
        assert np.all(np.abs(np.delete(disp, axis)) < 2e-4)


def test_goal_noise_uniform_within_bounds_and_fixed_per_seed():
    s = InsertionSim(InsertionConfig(goal_noise_m=0.001, render=False))
    errs = []
    for seed in range(200):
        s.reset(seed)
        err = s.goal_observed() - s.goal_true()
        errs.append(err)
    errs = np.array(errs)
    assert np.all(errs[:, 2] == 0.0)
    assert np.all(np.abs(errs[:, :2]) <= 0.001)
    assert np.abs(errs[:, :2]).max() > 0.00095          # spans the range
    assert np.all(np.abs(errs[:, :2].mean(axis=0)) < 0.00015)
    # uniform: about a quarter of the draws in each quarter of the range
    counts = np.histogram(errs[:, :2].ravel(), bins=4, range=(-0.001, 0.001))[0]
    assert np.all(np.abs(counts - 100) < 35), counts
    s.reset(17)
    first = s.goal_observed()
    s.reset(3)
    s.reset(17)
    np.testing.assert_array_equal(s.goal_observed(), first)
    np.testing.assert_allclose(s.goal_true(), sawyer.SOCKET_M - [0.0, 0.0, 0.02])
    s.config.goal_noise_m = 0.0
    s.reset(17)
    np.testing.assert_array_equal(s.goal_observed(), s.goal_true())
    s.close()


def _p_episode(s, seed, steps=20):
    s.reset(seed)
    goal = s.goal_observed()
    out = []
    for _ in range(steps):
        x, _ = s.tool_pose()
        u = np.clip(-np.array([1.0, 1.0, 0.3]) * (x - goal), -0.01, 0.01)
        s.set_arm_target(s.kinematics.ik_step(s.joint_positions(), u, 0.0, 0.1))
        s.step(s.steps_per_control)
        out.append(np.concatenate([s.joint_positions(), s.wrench()]))
    return np.array(out)


def test_determinism_same_seed_same_trajectory(sim):
    a = _p_episode(sim, 5)
    other = InsertionSim(InsertionConfig(render=False))
    _p_episode(other, 9)
    b = _p_episode(other, 5)
    other.close()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _p_episode(sim, 6))


def test_step_chunks_and_queries_do_not_change_the_motion(sim):
    sim.reset(2)
    q = sim.kinematics.ik_step(sim.joint_positions(), [0.003, -0.002, -0.01], 0.0, 0.1)
    sim.set_arm_target(q)
    sim.step(100)
    one = (sim.joint_positions(), sim.wrench())
    sim.reset(2)
    sim.set_arm_target(q)
    for _ in range(100):
        sim.step(1)
        sim.tool_pose(), sim.tool_velocity(), sim.wrench()
    np.testing.assert_array_equal(sim.joint_positions(), one[0])
    np.testing.assert_array_equal(sim.wrench(), one[1])


def test_tool_velocity_and_state_shapes(sim):
    sim.reset(4)
    q = sim.kinematics.ik_step(sim.joint_positions(), [0.0, 0.0, -0.01], 0.0, 0.1)
    sim.set_arm_target(q)
    sim.step(30)
    vel = sim.tool_velocity()
    assert vel.shape == (3,) and vel[2] < -0.01 and abs(vel[0]) < abs(vel[2])
    dq = sim.joint_velocities()
    np.testing.assert_allclose(sim.kinematics.tcp_velocity(sim.joint_positions(), dq), vel,
                               atol=1e-3)
    assert sim.joint_positions().shape == (7,) and dq.shape == (7,)
    assert sim.joint_names == sawyer.ARM_JOINTS
    np.testing.assert_allclose(sim.arm_target(), q)
    with pytest.raises(ValueError):
        sim.set_arm_target([0.0] * 6)
    with pytest.raises(ValueError):
        sim.set_arm_target([float('nan')] * 7)


def test_render_is_lazy_and_sees_the_socket():
    s = InsertionSim(InsertionConfig(image_size=(160, 120)))
    assert s._renderer is None                       # nothing made until asked
    s.reset(0)
    img = s.render()
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    cam = socket_camera(s.socket_pose(), 160, 120)
    np.testing.assert_allclose(cam.K, s.camera_matrix())
    u, v = cam.project(s.socket_pose()[None])[0]
    assert abs(u - 80) < 2 and abs(v - 60) < 2      # the socket is in the image centre
    assert img.std() > 5.0
    s.close()
    off = InsertionSim(InsertionConfig(render=False))
    with pytest.raises(RuntimeError, match='render'):
        off.render()
