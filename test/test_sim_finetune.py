"""In-process online finetuning (``learning.sim_finetune``, ``awopt finetune --in-process``):
rounds of simulated episodes with the current export, training, exports and evaluations."""
import json

import numpy as np
import pytest
import torch

from awopt_ros import cli
from awopt_ros.core.cem import CEMConfig
from awopt_ros.core.onnx_policy import read_contract
from awopt_ros.learning.awopt import Learner, make_config
from awopt_ros.learning.critic import CriticConfig
from awopt_ros.learning.finetune import Finetuner, FinetuneConfig
from awopt_ros.learning.networks import ActorConfig
from awopt_ros.learning.sim_finetune import (ActorRuntimeFactory, EpisodeList,
                                             SimFinetuneConfig, run_sim_finetune)

torch.set_num_threads(1)
SIZE = 64   # the stack's policy image (config/awopt_ros_kuka_grasp.yaml), as the rollouts give


def tiny_learner():
    return Learner(make_config(
        'awopt', actor=ActorConfig(image_size=SIZE, channels=4, num_conv=2, hidden=16),
        critic=CriticConfig(image_size=SIZE, channels=4, num_conv=2, num_strided=2,
                            head_conv=1, hidden=8),
        batch_size=8, num_threads=1, seed=0, target_cem=CEMConfig(2, 8, 2)))


def short_episodes(monkeypatch, max_steps=4):
    """Episodes of ``max_steps`` actions (the stack's 40 would make the test slow)."""
    from awopt_ros.sim import rollout
    original = rollout.RolloutConfig.from_yaml.__func__

    def from_yaml(cls, *args, **kw):
        kw.setdefault('max_steps', max_steps)
        return original(cls, *args, **kw)
    monkeypatch.setattr(rollout.RolloutConfig, 'from_yaml', classmethod(from_yaml))
    return rollout.RolloutConfig.from_yaml()


def test_config_validates_and_gives_disjoint_round_seeds():
    c = SimFinetuneConfig(rounds=3, episodes_per_round=4, first_seed=10, eval_episodes=2,
                          eval_first_seed=100)
    assert c.round_seeds(1) == [10, 11, 12, 13] and c.round_seeds(3) == [18, 19, 20, 21]
    assert c.eval_seeds() == [100, 101]
    assert SimFinetuneConfig(episodes_per_round=0).round_seeds(2) == []
    for bad in ({'rounds': 0}, {'episodes_per_round': -1}, {'eval_every': 0},
                {'processes': 0}, {'actor_noise_std': 1.5}, {'actor_noise_std': float('nan')},
                {'rounds': 2.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SimFinetuneConfig(**bad)
    episodes = EpisodeList([{'a': 1}, {'a': 2}])
    assert episodes(1) == [{'a': 2}] and episodes() == episodes


def test_runtime_policy_noise_depends_on_the_scene_seed_only(tmp_path):
    from awopt_ros.learning.train_cli import export_learner
    learner = tiny_learner()
    path = tmp_path / 'a.onnx'
    export_learner(learner, path, None)
    obs = {'image': np.full((SIZE, SIZE, 3), 90, np.uint8),
           'proprio': np.array([0.6, 0.0, 0.3, 0.0, 1.0, 0.0], np.float32)}
    first, second = ActorRuntimeFactory(str(path), 0.3, seed=1)(0), \
        ActorRuntimeFactory(str(path), 0.3, seed=1)(1)

    def actions(policy, scene):
        policy.begin_episode(scene)
        policy.reset()
        return np.stack([policy.act(obs)[0] for _ in range(3)])
    a7 = actions(first, 7)
    actions(second, 8)                                     # another episode ran first
    np.testing.assert_array_equal(actions(second, 7), a7)  # same scene, same noise
    assert not np.array_equal(actions(first, 8), a7)
    action, info = first.act(obs)
    clean = info.pop('noise_free_action')      # the label: the action without the noise
    assert info == {'policy': 'actor', 'actor_noise_std': 0.3, 'discrete_sampled': False}
    assert clean.shape == (7,) and not np.array_equal(clean[:4], action[:4])
    quiet = ActorRuntimeFactory(str(path), 0.0)(0)
    quiet.begin_episode(7)
    assert np.array_equal(quiet.act(obs)[0], quiet.act(obs)[0])   # no noise: deterministic


def test_rounds_collect_train_export_and_evaluate(tmp_path, monkeypatch):
    rollout_config = short_episodes(monkeypatch)
    learner = tiny_learner()
    ft = Finetuner(learner, EpisodeList(), FinetuneConfig(export_every=10 ** 6,
                                                          steps_per_episode=2, log_every=2,
                                                          check_parity=False),
                   actor_path=tmp_path / 'ft.onnx', critic_prefix=str(tmp_path / 'ft_critic'),
                   checkpoint_path=tmp_path / 'ft.pt', history_path=tmp_path / 'ft.json',
                   plot_path=tmp_path / 'ft.png', log=lambda line: None)
    config = SimFinetuneConfig(rounds=3, episodes_per_round=2, first_seed=50,
                               actor_noise_std=0.2, actor_sample_discrete=True,
                               eval_episodes=2, eval_every=2, eval_first_seed=900,
                               processes=1)
    summary = run_sim_finetune(ft, config, rollout_config)
    assert summary['stop_reason'] == 'rounds'
    assert len(ft.source) == 6 and summary['episodes_seen'] == 6
    assert [ep['seed'] for ep in ft.source] == [50, 51, 52, 53, 54, 55]
    assert all(np.all(ep['infos']['actor_noise_std'] == 0.2) for ep in ft.source)
    assert all(np.all(ep['infos']['discrete_sampled']) for ep in ft.source)   # the exports
    assert all(ep['infos']['noise_free_action'].shape == (len(ep['actions']) + 1, 7)
               and np.isfinite(ep['infos']['noise_free_action']).all() for ep in ft.source)
    # carry the actor's probabilities, and the exploration draws its discrete sub-actions
    assert summary['steps'] == 12 and learner.step == 12           # 2 steps per episode
    assert [e['step'] for e in summary['exports']] == [0, 4, 8, 12]   # start + every round
    assert [e['round'] for e in summary['evaluations']] == [0, 2, 3]  # every 2nd and last
    assert [e['episodes_seen'] for e in summary['evaluations']] == [0, 4, 6]
    for e in summary['evaluations']:
        assert e['episodes'] == 2 and 0 <= e['successes'] <= 2
        assert sum(e['outcomes'].values()) == 2
    history = json.loads((tmp_path / 'ft.json').read_text())
    assert history['evaluations'] == summary['evaluations']
    assert (tmp_path / 'ft.png').stat().st_size > 0 and (tmp_path / 'ft.pt').is_file()
    assert read_contract(tmp_path / 'ft.onnx')['algorithm'] == 'awopt'


def test_switch_mode_runs_cem_episodes_over_the_exported_critic(tmp_path, monkeypatch):
    rollout_config = short_episodes(monkeypatch, max_steps=3)
    ft = Finetuner(tiny_learner(), EpisodeList(),
                   FinetuneConfig(steps_per_episode=1, export_every=10 ** 6,
                                  check_parity=False),
                   actor_path=tmp_path / 's.onnx', critic_prefix=str(tmp_path / 's_critic'),
                   log=lambda line: None)
    config = SimFinetuneConfig(rounds=1, episodes_per_round=8, policy_mode='switch',
                               cem_episode_prob=0.5, eval_episodes=0, processes=1)
    run_sim_finetune(ft, config, rollout_config)
    kinds = [ep['policy_name'] for ep in ft.source]
    assert set(kinds) == {'actor', 'cem'}, kinds          # 8 draws at 50 %: both kinds
    for ep in ft.source:                                  # every step by the episode's policy
        assert set(ep['infos']['policy_name'].tolist()) == {ep['policy_name']}
    again = EpisodeList()
    ft2 = Finetuner(tiny_learner(), again, FinetuneConfig(steps_per_episode=0,
                                                          check_parity=False),
                    actor_path=tmp_path / 's.onnx', critic_prefix=str(tmp_path / 's_critic'),
                    log=lambda line: None)
    run_sim_finetune(ft2, config, rollout_config)          # same scenes: same draws
    assert [ep['policy_name'] for ep in again] == kinds
    with pytest.raises(ValueError, match='critic'):
        run_sim_finetune(Finetuner(tiny_learner(), EpisodeList(), actor_path=tmp_path / 'x.onnx'),
                         config, rollout_config)
    with pytest.raises(ValueError, match='policy_mode'):
        SimFinetuneConfig(policy_mode='cem')


def test_control_rounds_train_without_new_episodes(tmp_path, monkeypatch):
    rollout_config = short_episodes(monkeypatch)
    from test_finetune import make_episode
    rng = np.random.default_rng(0)
    ft = Finetuner(tiny_learner(), EpisodeList(),
                   FinetuneConfig(steps_per_poll=3, export_every=10 ** 6, check_parity=False),
                   actor_path=tmp_path / 'c.onnx', log=lambda line: None)
    ft.add_offline([make_episode(rng, 3, True, size=SIZE), make_episode(rng, 4, False, SIZE)])
    summary = run_sim_finetune(ft, SimFinetuneConfig(rounds=2, episodes_per_round=0,
                                                     eval_episodes=0, processes=1),
                               rollout_config)
    assert summary['steps'] == 6 and summary['episodes_seen'] == 0
    assert summary['evaluations'] == []


def test_needs_an_episode_list_and_an_actor_export(tmp_path):
    config = SimFinetuneConfig(rounds=1, processes=1)
    with pytest.raises(ValueError, match='EpisodeList'):
        run_sim_finetune(Finetuner(tiny_learner(), lambda start: [],
                                   actor_path=tmp_path / 'a.onnx'), config)
    with pytest.raises(ValueError, match='actor'):
        run_sim_finetune(Finetuner(tiny_learner(), EpisodeList()), config)


def test_cli_finetune_in_process(tmp_path, monkeypatch, capsys):
    from awopt_ros.learning.train_cli import save_checkpoint
    short_episodes(monkeypatch)
    save_checkpoint(tmp_path / 'start.pt', tiny_learner(), {'crop_xywh': [80, 0, 480, 480]})
    out = tmp_path / 'ft' / 'live.onnx'
    assert cli.main(['finetune', '--in-process', '--init-checkpoint', str(tmp_path / 'start.pt'),
                     '--out', str(out), '--rounds', '1', '--episodes-per-round', '2',
                     '--eval-episodes', '1', '--processes', '1',
                     '--offline-scripted-episodes', '2', '--steps-per-episode', '1',
                     '--threads', '1']) == 0
    printed = capsys.readouterr().out
    assert '2 offline scripted episodes' in printed and 'round 1/1: 2 episodes' in printed
    assert 'evaluation after round 1: ' in printed and 'stopped (rounds)' in printed
    history = json.loads((tmp_path / 'ft' / 'live_finetune_history.json').read_text())
    assert history['offline_episodes'] == 2 and history['episodes_seen'] == 2
    assert history['steps'] == 2 and len(history['evaluations']) == 2
    assert read_contract(out)['dataset'] == 'sim/in-process'
    assert (tmp_path / 'ft' / 'live_critic_encoder.onnx').is_file()


def test_cli_finetune_fresh_weights_trains_the_checkpoints_model_from_scratch(
        tmp_path, monkeypatch, capsys):
    """--fresh-weights keeps the checkpoint's networks and hyper-parameters (plus --set,
    --seed) but starts from new weights at step 0: the weak-start recipe of the README."""
    import torch
    from awopt_ros.learning.train_cli import load_checkpoint, save_checkpoint
    short_episodes(monkeypatch)
    start = tiny_learner()
    start.step = 500
    with torch.no_grad():
        for p in start.actor.parameters():
            p.fill_(0.25)
    save_checkpoint(tmp_path / 'start.pt', start, {'crop_xywh': [80, 0, 480, 480]})
    args = ['finetune', '--in-process', '--init-checkpoint', str(tmp_path / 'start.pt'),
            '--out', str(tmp_path / 'weak.onnx'), '--rounds', '1', '--episodes-per-round', '0',
            '--steps-per-poll', '2', '--eval-episodes', '0', '--processes', '1',
            '--offline-scripted-episodes', '2', '--threads', '1']
    assert cli.main(args + ['--fresh-weights', '--seed', '3',
                            '--set', 'actor_ema_decay=0.5', '--set', 'critic.hidden=6']) == 0
    state = load_checkpoint(tmp_path / 'weak_checkpoint.pt')
    assert state['step'] == 2                       # not 500 + 2: trained from scratch
    cfg, stored = state['config'], start.config.to_dict()
    assert cfg['seed'] == 3 and cfg['actor_ema_decay'] == 0.5 and cfg['critic']['hidden'] == 6
    assert cfg['actor'] == stored['actor'] and cfg['batch_size'] == stored['batch_size']
    assert not any(torch.all(v == 0.25) for v in state['actor'].values()
                   if v.dtype.is_floating_point and v.numel() > 1)
    # Without --fresh-weights the same command continues the stored weights and step.
    assert cli.main(args) == 0
    assert load_checkpoint(tmp_path / 'weak_checkpoint.pt')['step'] == 502
    assert cli.main(args + ['--fresh-weights', '--set', 'bogus=1']) == 2     # bad input
    assert 'bogus' in capsys.readouterr().err
    no_start = [a for a in args if a not in ('--init-checkpoint', str(tmp_path / 'start.pt'))]
    assert cli.main(no_start + ['--fresh-weights']) == 2
    assert 'argument --fresh-weights: needs --init-checkpoint' in capsys.readouterr().err


def test_cli_finetune_beside_the_stack_with_in_process_demonstrations(tmp_path, monkeypatch,
                                                                      capsys):
    """Without --in-process, --offline-scripted-episodes still puts simulated demonstrations
    in the buffer before the finetuner follows the stack's dataset."""
    from awopt_ros.core import spec
    from awopt_ros.core.dataset import EpisodeRecorder
    from awopt_ros.learning.train_cli import save_checkpoint
    short_episodes(monkeypatch)
    rng = np.random.default_rng(2)
    rec = EpisodeRecorder(tmp_path / 'run', 'awopt/kuka-grasp-v0', image_size=SIZE)
    for k in range(2):                                    # the robot's own episodes
        rec.begin(k, 10 + k)
        for t in range(3):
            action = np.zeros(spec.ACTION_DIM, np.float32)
            action[spec.IDX_CLOSE] = float(t == 2)
            rec.add_step(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                         [0.6, 0.0, 0.3 - 0.05 * t, 0.0, 1.0, 0.0], action, 0.5, 1, 0.1 * t,
                         noise_free_action=action)
        rec.end(k == 0, k == 0, k != 0, np.zeros((SIZE, SIZE, 3), np.uint8),
                np.zeros(6, np.float32))
    save_checkpoint(tmp_path / 'start.pt', tiny_learner(), {'crop_xywh': [80, 0, 480, 480]})
    assert cli.main(['finetune', '--dataset-root', str(tmp_path / 'run'), '--dataset-id',
                     'awopt/kuka-grasp-v0', '--init-checkpoint', str(tmp_path / 'start.pt'),
                     '--out', str(tmp_path / 'live.onnx'), '--offline-scripted-episodes', '2',
                     '--processes', '1', '--steps-per-episode', '1', '--max-steps', '2',
                     '--poll-s', '0.01', '--threads', '1', '--miss-label', 'reopen']) == 0
    printed = capsys.readouterr().out
    assert '2 offline scripted episodes' in printed and 'stopped (max_steps)' in printed
    history = json.loads((tmp_path / 'live_finetune_history.json').read_text())
    assert history['offline_episodes'] == 2 and history['episodes_seen'] == 2
    assert history['labels'] is None          # this tiny actor has no grasp-target labels
    assert read_contract(tmp_path / 'live.onnx')['dataset'] == 'awopt/kuka-grasp-v0'


def test_cli_finetune_needs_a_dataset_unless_in_process(tmp_path, capsys):
    assert cli.main(['finetune', '--out', str(tmp_path / 'x.onnx')]) == 2
    assert '--dataset-root and --dataset-id are required' in capsys.readouterr().err
