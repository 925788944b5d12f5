"""In-process rollouts (sim.rollout): episode layout, reproducibility, safety, worker pool."""
import numpy as np
import pytest
import yaml

from awopt_ros.core import spec
from awopt_ros.core.paths import resolve
from awopt_ros.core.safety import SafetyLimits
from awopt_ros.sim.rollout import (CallableAdapter, RolloutConfig, RolloutEnv, RolloutError,
                                   ScriptedAdapter, ScriptedFactory, collect, success_rate,
                                   summarise)
from awopt_ros.sim.scripted import ScriptedGraspPolicy

SIZE = 64


@pytest.fixture(scope='module')
def env():
    with RolloutEnv(RolloutConfig(num_objects=2, max_steps=25)) as e:
        yield e


@pytest.fixture(scope='module')
def scripted_episode(env):
    policy = ScriptedAdapter(ScriptedGraspPolicy(seed=0, noise_std_m=0.0, slip_probability=0.0))
    return env.run_episode(3, policy)


def _const_policy(action, name='actor', terminate_at=None):
    step = {'n': 0}

    def fn(image, proprio):
        assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
        assert proprio.dtype == np.float32 and proprio.shape == (spec.PROPRIO_DIM,)
        step['n'] += 1
        a = np.array(action, dtype=np.float32)
        if terminate_at is not None and step['n'] >= terminate_at:
            a[spec.IDX_TERMINATE] = 1.0
        return a, {'value': np.float32(step['n']), 'success_probability': 0.25}

    return CallableAdapter(fn, name=name, reset_fn=lambda: step.update(n=0))


def _bad_policy_factory(worker_index):
    """Module level, so spawned workers can unpickle it: a policy with a wrong action shape."""
    return CallableAdapter(lambda image, proprio: np.zeros(3, dtype=np.float32), name='broken')


def test_defaults_equal_stack_config():
    with open(resolve('config/awopt_ros_kuka_grasp.yaml'), encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    p = {node: v['ros__parameters'] for node, v in doc.items() if node != '/**'}
    c = RolloutConfig()
    assert c.urdf_path == p['sim_robot']['urdf_path'] == p['arm_interface']['urdf_path']
    assert c.num_objects == p['sim_robot']['num_objects']
    assert c.physics_dt_s == p['sim_robot']['physics_dt_s']
    assert c.success_height_m == p['sim_robot']['success_height_m']
    assert c.camera_size == (p['sim_robot']['image_width'], p['sim_robot']['image_height'])
    for node in ('camera_pipeline', 'policy'):
        assert c.image_size == p[node]['image_size']
        assert list(c.crop_xywh) == p[node]['crop_xywh']
    arm = p['arm_interface']
    assert c.control_period_s == arm['control_period_s']
    assert c.reopen_empty_gripper is arm['reopen_empty_gripper'] is True
    assert c.limits == SafetyLimits(arm['max_step_m'], arm['max_yaw_step_rad'],
                                    tuple(arm['workspace_min_m']),
                                    tuple(arm['workspace_max_m']))
    assert c.max_steps == p['episode_manager']['max_steps']
    assert c.success_debounce_steps == p['episode_manager']['success_debounce_steps']
    assert RolloutConfig.from_yaml() == c
    assert c.physics_steps == 50
    with pytest.raises(ValueError):
        RolloutConfig(crop_xywh=(200, 0, 480, 480))
    with pytest.raises(ValueError):
        RolloutConfig(max_steps=0)


def test_scripted_episode_has_the_dataset_layout(scripted_episode):
    ep = scripted_episode
    t = ep['steps']
    assert 1 <= t <= 25 and ep['seed'] == 3
    obs = ep['observations']
    assert obs['image'].dtype == np.uint8 and obs['image'].shape == (t + 1, SIZE, SIZE, 3)
    assert obs['proprio'].dtype == np.float32 and obs['proprio'].shape == (t + 1, 6)
    assert ep['actions'].dtype == np.float32 and ep['actions'].shape == (t, 7)
    assert np.all(ep['actions'] >= spec.ACTION_LOW) and np.all(ep['actions'] <= spec.ACTION_HIGH)
    assert ep['rewards'].shape == (t,) and ep['rewards'].dtype == np.float64
    for key in ('terminations', 'truncations'):
        assert ep[key].dtype == bool and ep[key].shape == (t,) and not ep[key][:-1].any()
    assert ep['outcome'] in ('success', 'terminate', 'timeout')
    assert ep['success'] == (ep['outcome'] == 'success')
    assert ep['terminations'][-1] == (ep['outcome'] in ('success', 'terminate'))
    assert ep['truncations'][-1] == (ep['outcome'] == 'timeout')
    assert not (ep['terminations'][-1] and ep['truncations'][-1])
    assert ep['rewards'][-1] == float(ep['success']) and not ep['rewards'][:-1].any()
    infos = ep['infos']
    for key, dtype in (('success_probability', np.float32), ('policy', np.int64),
                       ('stamp_s', np.float64), ('action_rejected', bool)):
        assert infos[key].dtype == dtype and infos[key].shape == (t + 1,)
    assert list(infos['policy_name']) == ['scripted'] * (t + 1) and not infos['policy'].any()
    np.testing.assert_allclose(np.diff(infos['stamp_s']), 0.1, atol=1e-9)
    assert ep['rejected_actions'] == 0 and ep['wall_s'] > 0
    # A noise-free scripted grasp of a 2-object scene succeeds: the detector saw the lift.
    assert ep['outcome'] == 'success' and infos['success_probability'][-1] == 1.0


def test_episode_feeds_learning_code_and_matches_the_recorder(scripted_episode, tmp_path):
    from awopt_ros.core.dataset import EpisodeRecorder, load_episodes
    from awopt_ros.learning.data import bc_arrays
    ep = scripted_episode
    images, proprios, actions, stats = bc_arrays([ep])
    assert images.shape == (ep['steps'], SIZE, SIZE, 3) and stats['transitions'] == ep['steps']
    # Write the same steps through the logger's recorder: the loaded episode must agree.
    rec = EpisodeRecorder(tmp_path, 'awopt/rollout-test-v0', image_size=SIZE)
    rec.begin(0, seed=ep['seed'])
    obs, infos = ep['observations'], ep['infos']
    for i in range(ep['steps']):
        rec.add_step(obs['image'][i], obs['proprio'][i], ep['actions'][i],
                     infos['success_probability'][i], infos['policy'][i], infos['stamp_s'][i])
    rec.end(ep['success'], ep['terminations'][-1], ep['truncations'][-1], obs['image'][-1],
            obs['proprio'][-1], final_success_probability=infos['success_probability'][-1],
            final_stamp_s=infos['stamp_s'][-1])
    (logged,) = load_episodes(tmp_path, 'awopt/rollout-test-v0')
    pairs = [('image', obs['image']), ('proprio', obs['proprio'])]
    pairs += [(k, ep[k]) for k in ('actions', 'rewards', 'terminations', 'truncations')]
    pairs += [(k, infos[k]) for k in ('success_probability', 'policy', 'stamp_s')]
    for key, ours in pairs:
        assert logged[key].dtype == ours.dtype, key
        np.testing.assert_array_equal(logged[key], ours, err_msg=key)
    assert logged['seed'] == ep['seed']


def test_same_seed_reproduces_the_episode(env, scripted_episode):
    policy = ScriptedAdapter(ScriptedGraspPolicy(seed=5, noise_std_m=0.0, slip_probability=0.0))
    again = env.run_episode(3, policy)
    np.testing.assert_array_equal(again['observations']['image'][0],
                                  scripted_episode['observations']['image'][0])
    assert again['outcome'] == scripted_episode['outcome']
    assert again['steps'] == scripted_episode['steps']
    np.testing.assert_allclose(again['actions'], scripted_episode['actions'], atol=1e-6)
    other = env.run_episode(4, policy, record=False)
    assert 'observations' not in other and other['seed'] == 4


def test_nan_actions_hold_the_arm_and_time_out(env):
    policy = _const_policy(np.full(7, np.nan), name='actor')
    ep = env.run_episode(1, policy)
    t = ep['steps']
    assert ep['outcome'] == 'timeout' and t == env.config.max_steps
    assert ep['rejected_actions'] == t and ep['infos']['action_rejected'].all()
    assert not ep['actions'].any() and np.isfinite(ep['actions']).all()
    assert ep['truncations'][-1] and not ep['terminations'].any() and not ep['rewards'].any()
    tool = ep['observations']['proprio'][:, :3]
    assert np.max(np.abs(tool - tool[0])) < 2e-3
    assert ep['infos']['policy'][0] == 1
    # Policy info is kept per step; a reserved key moves to policy_<key>.
    np.testing.assert_array_equal(ep['infos']['value'][:t], np.arange(1, t + 1))
    assert ep['infos']['policy_success_probability'].shape == (t + 1,)


def test_terminate_and_out_of_range_actions(env):
    policy = _const_policy([1.0, 0.0, 0.0, -3.0, 0.0, 0.0, 0.0], name='cem', terminate_at=3)
    ep = env.run_episode(2, policy)
    assert ep['outcome'] == 'terminate' and ep['steps'] == 3
    assert ep['terminations'][-1] and not ep['truncations'].any() and not ep['rewards'].any()
    np.testing.assert_allclose(ep['actions'][:, 0], spec.ACTION_HIGH[0])
    np.testing.assert_allclose(ep['actions'][:, 3], spec.ACTION_LOW[3])
    assert ep['clipped_actions'] == 3 and ep['rejected_actions'] == 0
    assert list(ep['infos']['policy']) == [2] * 4
    with pytest.raises(ValueError, match='shape'):
        env.run_episode(2, CallableAdapter(lambda im, p: np.zeros(3)))


def test_collect_keeps_seed_order_and_matches_one_process():
    config = RolloutConfig(num_objects=2, max_steps=6)
    seeds = [7, 2, 5]
    factory = ScriptedFactory()   # noisy, but seeded per episode
    pooled = collect(seeds, factory, config, processes=2, progress=False)
    single = collect(seeds, factory, config, processes=1, progress=False)
    assert [ep['seed'] for ep in pooled] == seeds == [ep['seed'] for ep in single]
    for a, b in zip(pooled, single):
        assert a['outcome'] == b['outcome'] and a['steps'] == b['steps']
        np.testing.assert_array_equal(a['observations']['image'], b['observations']['image'])
        np.testing.assert_array_equal(a['actions'], b['actions'])
    with pytest.raises(RolloutError, match='could not build'):
        collect([9], factory, RolloutConfig(urdf_path='/nonexistent/robot.urdf'),
                processes=1, progress=False)
    with pytest.raises(RolloutError, match=r'seed 9 failed: ValueError: .*shape'):
        collect([9], _bad_policy_factory, config, processes=1, progress=False)


def test_collect_reports_worker_errors():
    config = RolloutConfig(urdf_path='/nonexistent/robot.urdf', max_steps=2)
    with pytest.raises(RolloutError, match=r'worker \d could not build its env/policy '
                                           r'\(for seed 1[12]\).*ParseXML'):
        collect([11, 12], ScriptedFactory(), config, processes=2, progress=False)
    with pytest.raises(ValueError, match='picklable'):
        collect([1, 2], lambda i: None, config, processes=2, progress=False)
    with pytest.raises(RolloutError, match=r'seed 1[34] failed in rollout worker \d: '
                                           r'ValueError: .*shape'):
        collect([13, 14], _bad_policy_factory, RolloutConfig(num_objects=1, max_steps=2),
                processes=2, progress=False)


def test_summarise():
    eps = [{'success': True, 'outcome': 'success', 'steps': 10, 'wall_s': 0.5},
           {'success': False, 'outcome': 'timeout', 'steps': 40, 'wall_s': 1.0},
           {'success': False, 'outcome': 'terminate', 'steps': 20, 'wall_s': 0.5,
            'rejected_actions': 2}]
    s = summarise(eps)
    assert s['episodes'] == 3 and s['successes'] == 1 and s['success_rate'] == pytest.approx(1 / 3)
    assert s['outcomes'] == {'success': 1, 'timeout': 1, 'terminate': 1}
    assert s['mean_steps'] == pytest.approx(70 / 3) and s['rejected_actions'] == 2
    assert success_rate(eps[:1]) == 1.0 and np.isnan(success_rate([]))


def _torn_policy():
    """Close on nothing for 5 steps (the home pose is above the bin), then set both bits."""
    step = {'n': 0}

    def fn(image, proprio):
        step['n'] += 1
        a = np.zeros(spec.ACTION_DIM, dtype=np.float32)
        a[spec.IDX_CLOSE] = 1.0
        a[spec.IDX_OPEN] = float(step['n'] > 5)
        return a

    return CallableAdapter(fn, reset_fn=lambda: step.update(n=0))


@pytest.mark.parametrize('reopen', [True, False])
def test_conflicting_bits_reopen_a_gripper_closed_on_nothing(env, reopen):
    """As the arm interface: with ``reopen_empty_gripper`` both bits on an empty closed
    gripper open it (a missed grasp can be retried) and keep it open; without it close wins."""
    if reopen:
        assert env.config.reopen_empty_gripper
        ep = env.run_episode(4, _torn_policy())
    else:
        with RolloutEnv(RolloutConfig(num_objects=2, max_steps=25,
                                      reopen_empty_gripper=False)) as off:
            ep = off.run_episode(4, _torn_policy())
    closedness = ep['observations']['proprio'][:, 5]
    assert closedness[5] >= spec.GRIPPER_EMPTY_CLOSEDNESS      # closed on nothing
    if reopen:   # it reopens and stays open while the bits conflict
        assert (closedness[7:] < spec.GRIPPER_ENGAGED_CLOSEDNESS).all()
    else:
        assert closedness[-1] >= spec.GRIPPER_EMPTY_CLOSEDNESS
