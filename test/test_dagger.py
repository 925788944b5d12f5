"""DAgger (learning.dagger): who acts, what the labels are, aggregation and resume."""
import json

import numpy as np
import pytest

from awopt_ros.core import spec
from awopt_ros.learning.dagger import (EXPERT_KEY, DaggerConfig, DaggerPolicy,
                                       labelled_transitions, run_dagger)
from awopt_ros.sim.scripted import ScriptedGraspPolicy
from conftest import export_tiny_actor

POSES = np.array([[0.62, 0.05, 0.025, 1, 0, 0, 0], [0.50, -0.10, 0.025, 1, 0, 0, 0]])
EXTENTS = np.array([[0.02, 0.02, 0.02], [0.03, 0.015, 0.02]])


def _obs(size=16):
    rng = np.random.default_rng(0)
    return {'image': rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
            'proprio': np.array([0.55, 0.0, 0.35, 0.0, 1.0, 0.0], dtype=np.float32),
            'object_poses': POSES, 'object_extents': EXTENTS}


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match='betas'):
        DaggerConfig(betas=(0.5, 1.5))
    with pytest.raises(ValueError, match='betas'):
        DaggerConfig(betas=())
    with pytest.raises(ValueError, match='episodes_per_iteration'):
        DaggerConfig(episodes_per_iteration=0)
    with pytest.raises(ValueError, match='target_rule'):
        DaggerConfig(target_rule='random')
    c = DaggerConfig(episodes_per_iteration=3, first_seed=10)
    assert c.iteration_seeds(1) == [10, 11, 12] and c.iteration_seeds(2) == [13, 14, 15]


def test_label_is_the_noise_free_expert_and_beta_picks_who_acts(tmp_path):
    path = tmp_path / 'actor.onnx'
    actor, _ = export_tiny_actor(path)
    obs = _obs()
    expert = ScriptedGraspPolicy(noise_std_m=0.0, slip_probability=0.0,
                                 target_rule='nearest_tool')
    want_label = expert.act(obs['proprio'], obs['object_poses'], obs['object_extents'])
    from awopt_ros.core.onnx_policy import OnnxActor
    want_actor = OnnxActor(path).act(obs['image'], obs['proprio'])
    assert not np.allclose(want_label, want_actor)

    for beta, who in ((0.0, 'actor'), (1.0, 'scripted')):
        policy = DaggerPolicy(str(path), beta=beta)
        policy.begin_episode(7)
        policy.reset()
        action, info = policy.act(obs)
        np.testing.assert_allclose(info[EXPERT_KEY], want_label)
        assert info['policy'] == who
        np.testing.assert_allclose(action, want_actor if who == 'actor' else want_label)
    # without an actor the expert always acts
    policy = DaggerPolicy(None, beta=0.0)
    policy.begin_episode(1)
    policy.reset()
    action, info = policy.act(obs)
    assert info['policy'] == 'scripted'
    np.testing.assert_allclose(action, want_label)


def test_mixture_share_follows_beta(tmp_path):
    path = tmp_path / 'actor.onnx'
    export_tiny_actor(path)
    policy = DaggerPolicy(str(path), beta=0.3, seed_offset=2)
    obs = _obs()
    who = []
    for seed in range(20):
        policy.begin_episode(seed)
        policy.reset()
        who += [policy.act(obs)[1]['policy'] for _ in range(10)]
    share = who.count('scripted') / len(who)
    assert 0.2 < share < 0.4
    # the coin depends on (seed, offset) only
    policy.begin_episode(3)
    first = [policy.act(obs)[1]['policy'] for _ in range(10)]
    policy.begin_episode(3)
    assert [policy.act(obs)[1]['policy'] for _ in range(10)] == first


def test_labelled_transitions_pairs_states_with_labels():
    t = 3
    ep = {'seed': 1, 'actions': np.zeros((t, spec.ACTION_DIM), np.float32),
          'observations': {'image': np.arange(t + 1, dtype=np.uint8)[:, None, None, None]
                           * np.ones((1, 4, 4, 3), np.uint8),
                           'proprio': np.zeros((t + 1, spec.PROPRIO_DIM), np.float32)},
          'infos': {EXPERT_KEY: np.arange((t + 1) * 7, dtype=np.float32).reshape(t + 1, 7)}}
    imgs, pros, labels = labelled_transitions([ep, ep])
    assert imgs.shape == (2 * t, 4, 4, 3) and pros.shape == (2 * t, 6)
    assert labels.shape == (2 * t, 7)
    np.testing.assert_array_equal(imgs[:t, 0, 0, 0], [0, 1, 2])   # final observation dropped
    np.testing.assert_array_equal(labels[:t], ep['infos'][EXPERT_KEY][:t])
    bad = dict(ep, infos={})
    with pytest.raises(ValueError, match='no expert labels'):
        labelled_transitions([bad])


def test_run_dagger_aggregates_labels_and_resumes(tmp_path):
    from awopt_ros.learning.bc import BCConfig
    from awopt_ros.learning.export import export_actor
    from awopt_ros.learning.networks import ActorConfig
    from awopt_ros.sim.rollout import RolloutConfig
    rollout = RolloutConfig(image_size=16, max_steps=5)
    config = DaggerConfig(betas=(1.0, 0.0), episodes_per_iteration=2, first_train_steps=4,
                          train_steps=2, first_seed=11, eval_episodes=1, processes=1)
    bc = BCConfig(eval_every=2, holdout_fraction=0.2,
                  actor=ActorConfig(image_size=16, channels=4, num_conv=2, hidden=16))
    base = (np.zeros((0, 16, 16, 3), np.uint8), np.zeros((0, 6), np.float32),
            np.zeros((0, 7), np.float32))
    exported = []

    def export(actor, path):
        exported.append(str(path))
        export_actor(actor, path, rollout.crop_xywh)
    lines = []
    _, summary = run_dagger(base, config, bc, tmp_path, export=export, log=lines.append,
                            progress=False, rollout_config=rollout)
    its = summary['iterations']
    assert [s['beta'] for s in its] == [1.0, 0.0]
    assert its[0]['expert_step_share'] == 1.0        # iteration 1: the expert alone
    assert its[1]['expert_step_share'] == 0.0        # iteration 2: actor_1 alone
    assert its[1]['actor'] == exported[0]
    # every visited state is labelled and aggregated
    assert its[0]['dataset_transitions'] == its[0]['steps']
    assert its[1]['dataset_transitions'] == its[0]['steps'] + its[1]['steps']
    assert summary['evaluation']['episodes'] == 1
    with np.load(tmp_path / 'iter_2.npz') as z:
        assert z['labels'].shape == (its[1]['steps'], 7)
        assert json.loads(str(z['stats']))['episodes'] == 2
    saved = json.loads((tmp_path / 'summary.json').read_text())
    assert len(saved['iterations']) == 2

    # a rerun reuses the labelled iterations instead of running episodes again
    lines.clear()
    _, again = run_dagger(base, DaggerConfig(**{**config.to_dict(), 'eval_episodes': 0}), bc,
                          tmp_path, export=export, log=lines.append, progress=False,
                          rollout_config=rollout)
    assert sum('reusing' in line for line in lines) == 2
    assert [s['steps'] for s in again['iterations']] == [s['steps'] for s in its]


def test_cli_reports_a_missing_dataset(tmp_path, capsys):
    from awopt_ros.cli import main
    rc = main(['dagger', '--dataset-root', str(tmp_path), '--dataset-id', 'awopt/none-v0',
               '--work-dir', str(tmp_path / 'work'), '--betas', '1.0', '0.0'])
    assert rc == 2
    assert 'awopt dagger:' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['dagger', '--dataset-root', str(tmp_path), '--dataset-id', 'x/y-v0',
              '--target-rule', 'biggest'])


def test_expert_target_label_is_the_chosen_object_until_the_close():
    from awopt_ros.learning.dagger import TARGET_KEY
    from awopt_ros.sim.scripted import grasp_height
    policy = DaggerPolicy(None, target_rule='bin_centre')
    policy.reset()
    _, info = policy.act(_obs())
    target = info[TARGET_KEY]
    chosen = POSES[policy.expert.target]
    np.testing.assert_allclose(target, [chosen[0], chosen[1], grasp_height(chosen[2]), 1.0],
                               atol=1e-6)
    policy.expert.phase, policy.expert.close_steps = 'lift', 4
    assert policy._target(POSES)[3] == 0.0


def test_run_dagger_with_target_pooling_trains_on_expert_and_hindsight_targets(tmp_path):
    from awopt_ros.learning.bc import BCConfig
    from awopt_ros.learning.dagger import labelled_targets
    from awopt_ros.learning.export import export_actor
    from awopt_ros.learning.networks import ActorConfig
    from awopt_ros.sim.rollout import RolloutConfig
    rollout = RolloutConfig(image_size=16, max_steps=5)
    config = DaggerConfig(betas=(1.0,), episodes_per_iteration=2, first_train_steps=3,
                          first_seed=21, eval_episodes=0, processes=1)
    bc = BCConfig(eval_every=3, holdout_fraction=0.2, shift_px=0,
                  actor=ActorConfig(image_size=16, channels=4, num_conv=3, hidden=16,
                                    pooling='target'))
    base = (np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 6), np.float32),
            np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match='base_targets'):
        run_dagger(base, config, bc, tmp_path, export=lambda a, p: None, progress=False,
                   rollout_config=rollout)
    _, summary = run_dagger(base, config, bc, tmp_path,
                            export=lambda a, p: export_actor(a, p, rollout.crop_xywh),
                            progress=False, rollout_config=rollout, log=lambda s: None,
                            base_targets=(np.zeros((2, 2), np.float32), np.ones(2, bool)))
    steps = summary['iterations'][0]['steps']
    assert summary['iterations'][0]['dataset_transitions'] == steps + 2
    with np.load(tmp_path / 'iter_1.npz') as z:
        assert z['target_xyz'].shape == (steps, 3) and z['target_mask'].all()  # 5 steps: no close
        assert np.all((z['target_xyz'][:, 0] > 0.3) & (z['target_xyz'][:, 0] < 0.9))
    with pytest.raises(ValueError, match='no target labels'):
        labelled_targets([{'actions': np.zeros((1, 7)), 'infos': {}, 'seed': 1}])
