"""The gymnasium insertion environment (sim.insertion_env): API, P-controller parity, episode
semantics and seeding."""
import numpy as np
import pytest

from awopt_ros.core import residual as res
from awopt_ros.sim.insertion import InsertionConfig
from awopt_ros.sim.insertion_env import (DENSE_ALPHA, DENSE_BETA, DENSE_EPS, DENSE_PHI,
                                         MAX_STEPS, InsertionResidualEnv, dense_reward)

SCENES = range(1_000_000, 1_000_030)


@pytest.fixture(scope='module')
def env():
    e = InsertionResidualEnv()
    yield e
    e.close()


def run(env, seed, actions=None, residual_fn=None):
    """Run one episode; returns (observations, rewards, terminated, truncated, infos)."""
    obs, info = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], [info]
    term = trunc = False
    t = 0
    while not (term or trunc):
        a = (np.zeros(3, np.float32) if actions is None else actions[t % len(actions)])
        obs, r, term, trunc, info = env.step(a)
        observations.append(obs)
        rewards.append(r)
        infos.append(info)
        t += 1
    return np.array(observations), np.array(rewards), term, trunc, infos


@pytest.fixture(scope='module')
def p_outcomes(env):
    """Scene seed -> P-controller success for the first scenes (to pick both kinds)."""
    out = {}
    for s in SCENES:
        _, _, _, _, infos = run(env, s)
        out[s] = infos[-1]['success']
        if any(out.values()) and not all(out.values()):
            break
    return out


def test_gymnasium_env_checker_passes():
    from gymnasium.utils.env_checker import check_env
    e = InsertionResidualEnv(max_steps=5)
    try:
        check_env(e, skip_render_check=True)
    finally:
        e.close()


def test_spaces(env):
    assert env.observation_space.shape == (15,)
    assert env.observation_space.dtype == np.float32
    assert env.action_space.shape == (3,)
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)


def test_observation_is_the_insertion_state(env):
    obs, _ = env.reset(seed=5)
    tool, _ = env.sim.tool_pose()
    goal = env.sim.goal_observed()
    want = res.insertion_state(tool, goal, env.sim.tool_velocity(), env.sim.wrench(),
                               res.p_controller(tool, goal))
    np.testing.assert_array_equal(obs, want)
    # relative to the OBSERVED (noisy) goal, not the true one
    np.testing.assert_allclose(obs[:3], tool - goal, atol=1e-6)


def test_zero_residual_reproduces_the_p_controller_exactly(env):
    """Residual on with r = 0 and residual off (any action ignored) give the same episode."""
    p_env = InsertionResidualEnv(residual=False)
    try:
        rng = np.random.default_rng(0)
        junk = rng.uniform(-1, 1, (MAX_STEPS, 3)).astype(np.float32)
        for seed in (SCENES[0], SCENES[1]):
            obs_a, rew_a, term_a, trunc_a, infos_a = run(env, seed)
            obs_b, rew_b, term_b, trunc_b, infos_b = run(p_env, seed, actions=junk)
            np.testing.assert_array_equal(obs_a, obs_b)
            np.testing.assert_array_equal(rew_a, rew_b)
            assert (term_a, trunc_a) == (term_b, trunc_b)
            # and the command of every step is the clipped P-controller step of its state
            for o, info in zip(obs_a[:-1], infos_a[1:]):
                base = o[12:15].astype(np.float64)
                np.testing.assert_allclose(info['u_m'], res.command(base, None), atol=1e-6)
    finally:
        p_env.close()


def test_residual_changes_the_command_by_alpha(env):
    obs, _ = env.reset(seed=SCENES[0])
    base = res.p_controller(env.sim.tool_pose()[0], env.sim.goal_observed())
    _, _, _, _, info = env.step(np.array([1.0, -1.0, 0.5], np.float32))
    want = np.clip(base + 0.002 * np.array([1.0, -1.0, 0.5]), -0.01, 0.01)
    np.testing.assert_allclose(info['u_m'], want, atol=1e-9)


def test_success_terminates_with_reward_one(env, p_outcomes):
    seed = next(s for s, ok in p_outcomes.items() if ok)
    _, rewards, term, trunc, infos = run(env, seed)
    assert term and not trunc
    assert rewards[-1] == 1.0 and np.all(rewards[:-1] == 0.0)
    assert infos[-1]['success'] and env.sim.success()
    assert len(rewards) < MAX_STEPS


def test_failure_truncates_at_fifty_steps_with_reward_zero(env, p_outcomes):
    seed = next(s for s, ok in p_outcomes.items() if not ok)
    _, rewards, term, trunc, infos = run(env, seed)
    assert trunc and not term
    assert len(rewards) == MAX_STEPS
    assert np.all(rewards == 0.0) and not infos[-1]['success']


def test_force_limit_terminates_as_failed():
    e = InsertionResidualEnv(residual_config=res.ResidualConfig(force_limit_n=1.0))
    try:
        _, rewards, term, trunc, infos = run(e, SCENES[0])
        assert term and not trunc
        assert infos[-1]['fault'] == 'force_limit' and not infos[-1]['success']
        assert np.all(rewards == 0.0)
        assert np.linalg.norm(e.sim.wrench()[:3]) > 1.0
    finally:
        e.close()


def test_same_seed_same_scene_and_episode(env):
    rng = np.random.default_rng(1)
    acts = rng.uniform(-1, 1, (MAX_STEPS, 3)).astype(np.float32)
    a = run(env, 123, actions=acts)
    goal_a = env.sim.goal_observed()
    b = run(env, 123, actions=acts)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(goal_a, env.sim.goal_observed())
    c = run(env, 124, actions=acts)
    assert not np.array_equal(a[0][0], c[0][0])


def test_unseeded_resets_follow_the_first_seed():
    e1, e2 = InsertionResidualEnv(), InsertionResidualEnv()
    try:
        e1.reset(seed=7)
        e2.reset(seed=7)
        scenes1 = [e1.reset()[1]['scene_seed'] for _ in range(3)]
        scenes2 = [e2.reset()[1]['scene_seed'] for _ in range(3)]
        assert scenes1 == scenes2
        assert len(set(scenes1)) == 3
        o1, _ = e1.reset()
        o2, _ = e2.reset()
        np.testing.assert_array_equal(o1, o2)
    finally:
        e1.close()
        e2.close()


def test_dense_reward_option():
    e = InsertionResidualEnv(reward='dense')
    try:
        e.reset(seed=SCENES[0])
        _, r, _, _, _ = e.step(np.zeros(3, np.float32))
        tool, _ = e.sim.tool_pose()
        assert r == pytest.approx(dense_reward(tool, e.sim.goal_true(), e.sim.wrench()[2],
                                               e.sim.success()))
        assert r < 0
    finally:
        e.close()
    # closer to the goal is better
    far = dense_reward([0.0, 0.0, 0.05], [0.0, 0.0, 0.0], 0.0, False)
    near = dense_reward([0.0, 0.0, 0.01], [0.0, 0.0, 0.0], 0.0, False)
    assert near > far


def test_dense_reward_force_term_penalises_pressing_before_insertion_only():
    """The wrench is the force ON the peg: pressing it down reads fz < 0. Pressing costs
    phi per newton before insertion and earns phi per newton once inserted."""
    x, g = [0.001, 0.0, 0.02], [0.0, 0.0, 0.0]
    free = dense_reward(x, g, 0.0, False)
    assert dense_reward(x, g, -10.0, False) == pytest.approx(free - DENSE_PHI * 10.0)
    assert dense_reward(x, g, -10.0, True) == pytest.approx(free + DENSE_PHI * 10.0)
    # the distance terms as documented
    assert free == pytest.approx(-DENSE_ALPHA * 0.021
                                 - DENSE_BETA / (np.hypot(0.001, 0.02) + DENSE_EPS))


def test_dense_reward_of_a_peg_pressing_on_the_top_face_is_lower_than_without_force():
    """In the simulator: the P-controller alone jams the peg on the socket's top face for
    some scenes; while it presses there (above the top face, fz well below 0) the env's
    dense reward is below the same pose's reward without force."""
    e = InsertionResidualEnv(reward='dense')
    pressed = 0
    try:
        for seed in SCENES:
            e.reset(seed=seed)
            term = trunc = False
            while not (term or trunc):
                _, r, term, trunc, info = e.step(np.zeros(3, np.float32))
                fz = e.sim.wrench()[2]
                if info['insertion_depth_m'] < 0.0 and fz < -2.0 and not info['success']:
                    tool, _ = e.sim.tool_pose()
                    no_force = dense_reward(tool, e.sim.goal_true(), 0.0, False)
                    assert r < no_force
                    assert r == pytest.approx(no_force + DENSE_PHI * fz)
                    pressed += 1
            if pressed >= 5:
                break
    finally:
        e.close()
    assert pressed >= 5


def test_errors():
    e = InsertionResidualEnv(sim=None, max_steps=2)
    try:
        with pytest.raises(RuntimeError, match='reset'):
            e.step(np.zeros(3))
        e.reset(seed=0)
        with pytest.raises(ValueError, match='3 finite'):
            e.step(np.array([np.nan, 0.0, 0.0]))
        with pytest.raises(ValueError, match='3 finite'):
            e.step(np.zeros(2))
    finally:
        e.close()
    with pytest.raises(ValueError, match='reward'):
        InsertionResidualEnv(reward='shaped', sim=object())
    with pytest.raises(ValueError, match='max_steps'):
        InsertionResidualEnv(max_steps=0, sim=object())


def test_goal_noise_config_reaches_the_scene():
    e = InsertionResidualEnv(InsertionConfig(goal_noise_m=0.0, render=False))
    try:
        e.reset(seed=3)
        np.testing.assert_array_equal(e.sim.goal_observed(), e.sim.goal_true())
    finally:
        e.close()
