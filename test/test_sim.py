"""Simulated cell (sim.scene) and the scripted policy with the in-process loop (sim.scripted)."""
import numpy as np
import pytest

from awopt_ros.core import robot, spec
from awopt_ros.core.kinematics import Kinematics
from awopt_ros.core.safety import SafetyLimits
from awopt_ros.sim.scene import BIN_INNER_M, GraspSim
from awopt_ros.sim.rollout import RolloutEnv, ScriptedAdapter
from awopt_ros.sim.scripted import ScriptedGraspPolicy, wrap_half_pi

URDF = 'urdf/iiwa14_gripper.urdf'
LIMITS = SafetyLimits(0.03, 0.2, (0.35, -0.3, 0.02), (0.85, 0.3, 0.5))


@pytest.fixture(scope='module')
def sim():
    from awopt_ros.core.paths import resolve
    s = GraspSim(resolve(URDF), num_objects=5)
    yield s
    s.close()


@pytest.fixture(scope='module')
def kin():
    return Kinematics(URDF)


def test_same_seed_same_scene_and_objects_in_bin(sim):
    sim.reset(7)
    a = sim.object_poses().copy()
    sim.reset(8)
    b = sim.object_poses().copy()
    sim.reset(7)
    np.testing.assert_allclose(sim.object_poses(), a, atol=1e-9)
    assert not np.allclose(a[:, :2], b[:, :2])
    cx, cy, _ = robot.BIN_CENTER_M
    assert np.all(np.abs(a[:, 0] - cx) < BIN_INNER_M[0] / 2)
    assert np.all(np.abs(a[:, 1] - cy) < BIN_INNER_M[1] / 2)
    assert np.all(a[:, 2] < 0.07) and not sim.object_lifted()   # resting on the bin floor


def test_reset_puts_arm_home_and_image_is_rgb(sim, kin):
    sim.reset(1)
    q = sim.joint_positions()
    assert q.shape == (8,)
    np.testing.assert_allclose(q[:7], robot.HOME_Q, atol=2e-3)
    assert q[7] == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(kin.fk(q[:7])[0], robot.HOME_TCP_M, atol=3e-3)
    img = sim.render()
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8 and img.std() > 10
    k = sim.camera_matrix()
    assert k[0, 2] == 320 and k[1, 2] == 240 and k[0, 0] > 0


def test_random_start_pose_is_seeded_within_jitter_and_points_down(kin):
    from awopt_ros.core.paths import resolve
    jitter = np.array([0.08, 0.1, 0.05])
    s = GraspSim(resolve(URDF), num_objects=1, start_jitter_m=jitter, start_jitter_rad=0.4)
    try:
        starts = []
        for seed in (3, 4, 3):
            s.reset(seed)
            q = s.joint_positions()[:7]
            pos, rot = kin.fk(q)
            assert np.all(np.abs(pos - robot.HOME_TCP_M) <= jitter + 3e-3)
            assert rot[2, 2] == pytest.approx(-1.0, abs=1e-2)     # tool z axis points down
            starts.append(pos)
        np.testing.assert_allclose(starts[0], starts[2], atol=1e-6)   # same seed, same start
        assert np.linalg.norm(starts[0] - starts[1]) > 1e-3
    finally:
        s.close()
    with pytest.raises(ValueError, match='start jitter'):
        GraspSim(resolve(URDF), num_objects=1, start_jitter_m=(0.5, 0.0, 0.0))


def test_arm_tracks_targets_and_gripper_closes(sim):
    sim.reset(2)
    target = robot.HOME_Q + np.array([0.2, -0.1, 0.1, 0.1, 0.0, -0.1, 0.3])
    sim.set_arm_target(target)
    sim.set_gripper_target(spec.GRIPPER_CLOSED_M)
    sim.step(500)   # 1 s
    q = sim.joint_positions()
    np.testing.assert_allclose(q[:7], target, atol=5e-3)
    assert q[7] == pytest.approx(spec.GRIPPER_CLOSED_M, abs=2e-3)
    with pytest.raises(ValueError):
        sim.set_arm_target([0.0] * 6)
    with pytest.raises(ValueError):
        sim.set_arm_target([np.nan] * 7)


def test_scripted_policy_grasps_most_scenes():
    with RolloutEnv() as env:
        policy = ScriptedAdapter(ScriptedGraspPolicy(seed=3, noise_std_m=0.004,
                                                     slip_probability=0.0))
        results = [env.run_episode(s, policy, record=False) for s in range(6)]
        assert sum(r['success'] for r in results) >= 5
        for r in results:
            assert r['steps'] <= 40
        # Noise makes it fail sometimes: with every episode slipping, most fail.
        slipping = ScriptedAdapter(ScriptedGraspPolicy(seed=3, noise_std_m=0.004,
                                                       slip_probability=1.0))
        failures = [not env.run_episode(s, slipping, record=False)['success']
                    for s in range(10)]
    assert sum(failures) >= 2


def test_scripted_actions_stay_in_bounds_and_bad_input_raises():
    policy = ScriptedGraspPolicy(seed=0)
    proprio = np.array([0.55, 0.0, 0.35, 0.0, -1.0, 0.0])
    poses = np.array([[0.7, 0.1, 0.02, 1, 0, 0, 0], [0.5, -0.2, 0.02, 1, 0, 0, 0]])
    a = policy.act(proprio, poses)
    assert a.shape == (7,) and a.dtype == np.float32
    assert np.all(a >= spec.ACTION_LOW) and np.all(a <= spec.ACTION_HIGH)
    assert a[spec.IDX_OPEN] == 1.0 and a[spec.IDX_CLOSE] == 0.0
    with pytest.raises(ValueError):
        policy.act(proprio[:5], poses)
    with pytest.raises(ValueError):
        policy.act(proprio, np.zeros((0, 7)))
    with pytest.raises(ValueError):
        ScriptedGraspPolicy(noise_std_m=-1.0)
    assert wrap_half_pi(np.pi) == pytest.approx(0.0, abs=1e-12)
    assert wrap_half_pi(0.75 * np.pi) == pytest.approx(-0.25 * np.pi)


def test_scripted_target_rule_picks_bin_centre_or_nearest_tool_object():
    # object 0 sits at the bin centre; object 1 right below a tool far off the centre
    poses = np.array([[0.60, 0.00, 0.02, 1, 0, 0, 0], [0.45, -0.20, 0.02, 1, 0, 0, 0]])
    proprio = np.array([0.46, -0.19, 0.30, 0.0, 1.0, 0.0])
    centre = ScriptedGraspPolicy(noise_std_m=0.0, slip_probability=0.0)
    near = ScriptedGraspPolicy(noise_std_m=0.0, slip_probability=0.0, target_rule='nearest_tool')
    a_centre, a_near = centre.act(proprio, poses), near.act(proprio, poses)
    assert centre.target == 0 and near.target == 1
    assert a_centre[0] > 0.02 and a_centre[1] > 0.02        # towards the bin centre
    assert abs(a_near[0]) < 0.02 and abs(a_near[1]) < 0.02   # the object below the tool
    with pytest.raises(ValueError, match='target_rule'):
        ScriptedGraspPolicy(target_rule='largest')


def _close_and_lift(rule, closedness):
    """Run a noise-free scripted policy with the tool at its grasp point; return, per act, the
    (close bit, z command) for the given closedness readings."""
    poses = np.array([[0.60, 0.00, 0.02, 1, 0, 0, 0]])
    extents = np.array([[0.02, 0.02, 0.02]])     # round footprint: no yaw alignment
    policy = ScriptedGraspPolicy(noise_std_m=0.0, slip_probability=0.0, lift_rule=rule)
    out = []
    for c in closedness:
        proprio = np.array([0.60, 0.00, 0.03, 0.0, 1.0, c])
        a = policy.act(proprio, poses, extents)
        out.append((float(a[spec.IDX_CLOSE]), float(a[2])))
    return policy, out


def test_scripted_lift_starts_when_the_fingers_are_seen_closed():
    # 'closed': close, wait while the fingers have not moved, lift at the first reading >= 0.05
    policy, steps = _close_and_lift('closed', [0.0, 0.0, 0.3, 0.3])
    assert [s[0] for s in steps] == [1.0] * 4            # the close bit stays set while lifting
    assert [s[1] > 0.01 for s in steps] == [False, False, True, True]
    assert policy.phase == 'lift'
    # 'count' (older datasets): four close steps whatever the fingers show, then the lift
    _, steps = _close_and_lift('count', [0.0, 0.3, 0.3, 0.3, 0.3])
    assert [s[1] > 0.01 for s in steps] == [False] * 4 + [True]
    # fingers that never move: 'closed' still lifts after CLOSE_STEPS close steps
    _, steps = _close_and_lift('closed', [0.0] * 5)
    assert [s[1] > 0.01 for s in steps] == [False] * 4 + [True]
    with pytest.raises(ValueError, match='lift_rule'):
        ScriptedGraspPolicy(lift_rule='never')


def test_scripted_grasp_goal_is_the_noise_free_object_pose():
    quat = [np.cos(0.25), 0.0, 0.0, np.sin(0.25)]   # object yaw 0.5 rad
    poses = np.array([[0.62, -0.03, 0.02] + quat])
    policy = ScriptedGraspPolicy(seed=1, noise_std_m=0.004, slip_probability=1.0)
    assert policy.grasp_goal is None
    proprio = np.array([0.55, 0.05, 0.35, 0.0, 1.0, 0.0])
    policy.act(proprio, poses, np.array([[0.05, 0.015, 0.02]]))   # elongated: aligns to it
    np.testing.assert_allclose(policy.grasp_goal, [0.62, -0.03, 0.025, 0.5], atol=1e-9)
    assert np.linalg.norm(policy.grasp_error_m) >= 0.02    # the noisy aim differs; the goal not
    policy.act(proprio, poses, np.array([[0.02, 0.02, 0.02]]))    # round: the tool's own yaw
    assert policy.grasp_goal[3] == pytest.approx(0.0)
    policy.reset()
    assert policy.grasp_goal is None
