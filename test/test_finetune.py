"""Tests of the online finetuner (learning.finetune) with fake episode sources, no ROS.

Tiny networks (16 px, 4 channels), one torch thread, a handful of gradient steps.
"""
import json
import os
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from awopt_ros import cli
from awopt_ros.core import spec
from awopt_ros.core.cem import CEMConfig
from awopt_ros.core.onnx_critic import OnnxCritic
from awopt_ros.core.onnx_policy import OnnxActor, read_contract
from awopt_ros.learning import train_cli
from awopt_ros.learning.awopt import Learner, make_config
from awopt_ros.learning.critic import CriticConfig
from awopt_ros.learning.finetune import (DatasetSource, FinetuneConfig, FinetuneError,
                                         Finetuner)
from awopt_ros.learning.networks import ActorConfig

torch.set_num_threads(1)
SIZE = 16


def tiny_learner(preset='awopt'):
    return Learner(make_config(
        preset, actor=ActorConfig(image_size=SIZE, channels=4, num_conv=2, hidden=16),
        critic=CriticConfig(image_size=SIZE, channels=4, num_conv=2, num_strided=2,
                            head_conv=1, hidden=8),
        batch_size=8, num_threads=1, target_cem=CEMConfig(2, 8, 2)))


def make_episode(rng, steps, success, size=SIZE):
    """Episode dict in the dataset layout (core.dataset.load_episodes / sim.rollout)."""
    actions = rng.uniform(spec.ACTION_LOW, spec.ACTION_HIGH, (steps, 7)).astype(np.float32)
    actions[:, spec.DISCRETE] = np.round(actions[:, spec.DISCRETE])
    rewards = np.zeros(steps)
    rewards[-1] = float(success)
    last = np.arange(steps) == steps - 1
    return {'image': rng.integers(0, 256, (steps + 1, size, size, 3), dtype=np.uint8),
            'proprio': rng.normal(0.0, 0.3, (steps + 1, 6)).astype(np.float32),
            'actions': actions, 'rewards': rewards, 'terminations': last & success,
            'truncations': last & (not success)}


class GrowingSource:
    """Fake logger dataset: reveals ``per_call`` more episodes each call; call number
    ``fail_on`` raises once; on call ``partial_on`` the next episode comes back half-written
    (its image array one frame short, as if read mid-append)."""

    def __init__(self, episodes, per_call=3, fail_on=None, partial_on=None,
                 interrupt_on=None):
        self.episodes, self.per_call = episodes, per_call
        self.fail_on, self.partial_on, self.interrupt_on = fail_on, partial_on, interrupt_on
        self.calls = self.revealed = 0
        self.starts = []

    def __call__(self, start):
        self.calls += 1
        self.starts.append(start)
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        if self.calls == self.fail_on:
            raise OSError('unable to open file (file is being written)')
        self.revealed = min(len(self.episodes), self.revealed + self.per_call)
        out = [dict(ep) for ep in self.episodes[start:self.revealed]]
        if self.calls == self.partial_on and out:
            out[0]['image'] = out[0]['image'][:-1]
        return out


def test_finetuner_trains_exports_atomically_and_survives_bad_reads(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    episodes = [make_episode(rng, 3 + k % 2, success=k % 2 == 0) for k in range(8)]
    source = GrowingSource(episodes, per_call=3, fail_on=2, partial_on=3)
    actor_path = tmp_path / 'models' / 'policy.onnx'
    prefix = tmp_path / 'models' / 'policy_critic'
    enc, head = Path(f'{prefix}_encoder.onnx'), Path(f'{prefix}_head.onnx')

    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        src, dst = Path(src), Path(dst)
        assert src.parent == dst.parent and not src.name.endswith('.onnx')
        if dst.suffix == '.onnx':
            onnx.checker.check_model(onnx.load(str(src)))   # complete before the swap
        replaced.append(dst)
        real_replace(src, dst)
    monkeypatch.setattr(os, 'replace', spy_replace)

    # A concurrent reader (the policy node's hot swap) must always load a whole model.
    reads, errors, stop = [0], [], threading.Event()

    def reader():
        while not stop.is_set():
            if actor_path.exists():
                try:
                    onnx.load(str(actor_path))
                    reads[0] += 1
                except Exception as exc:  # noqa: BLE001
                    errors.append(repr(exc))
            stop.wait(0.002)
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()

    lines = []
    learner = tiny_learner('awopt')
    config = FinetuneConfig(export_every=3, steps_per_episode=2, max_steps=7, poll_s=0.0,
                            max_idle_s=60, log_every=2)
    ft = Finetuner(learner, source, config, actor_path=actor_path, critic_prefix=str(prefix),
                   dataset_id='awopt/online-v0', checkpoint_path=tmp_path / 'ft.pt',
                   history_path=tmp_path / 'hist.json', plot_path=tmp_path / 'ft.png',
                   log=lines.append, sleep=lambda s: None)
    try:
        summary = ft.run()
    finally:
        stop.set()
        thread.join(5)

    assert summary['stop_reason'] == 'max_steps'
    assert summary['steps'] == 7 and learner.step == 7
    assert [e['step'] for e in summary['exports']] == [3, 6, 7]       # every 3 + final
    assert summary['episodes_seen'] == 8 and ft.buffer.num_episodes == 8
    assert len(summary['source_errors']) == 1 and 'being written' in \
        summary['source_errors'][0]['error']
    assert summary['skipped_episodes'] == []                 # the half-written one came back
    assert any('not readable yet' in line for line in lines)
    assert any('recent success' in line and 'critic_loss' in line for line in lines)
    assert [e['success'] for e in summary['episodes']] == [k % 2 == 0 for k in range(8)]
    assert summary['recent_success_rate'] == 0.5

    # Every model file was swapped in by os.replace, three times each, nothing left over.
    assert [p for p in replaced if p.suffix == '.onnx'] == [actor_path, enc, head] * 3
    assert sorted(p.name for p in actor_path.parent.iterdir()) == sorted(
        [actor_path.name, enc.name, head.name])
    assert errors == [] and reads[0] > 0
    assert read_contract(actor_path)['algorithm'] == 'awopt'
    assert read_contract(actor_path)['dataset'] == 'awopt/online-v0'
    OnnxActor(actor_path)
    assert OnnxCritic(enc, head).head_contract['algorithm'] == 'awopt'

    history = json.loads((tmp_path / 'hist.json').read_text())
    assert history['steps'] == 7 and len(history['exports']) == 3
    assert history['losses']['step'][-1] == 7
    assert (tmp_path / 'ft.png').stat().st_size > 0
    assert train_cli.load_checkpoint(tmp_path / 'ft.pt')['step'] == 7


def test_ctrl_c_writes_history_plot_and_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    episodes = [make_episode(rng, 3, success=k != 1) for k in range(4)]
    source = GrowingSource(episodes, per_call=2, interrupt_on=4)
    ft = Finetuner(tiny_learner('bc'), source,
                   FinetuneConfig(export_every=100, steps_per_episode=1, poll_s=0.0),
                   actor_path=tmp_path / 'a.onnx', checkpoint_path=tmp_path / 'c.pt',
                   history_path=tmp_path / 'h.json', plot_path=tmp_path / 'p.png',
                   log=lambda s: None, sleep=lambda s: None)
    summary = ft.run()                       # KeyboardInterrupt is handled inside
    assert summary['stop_reason'] == 'interrupted'
    assert summary['episodes_seen'] == 4 and summary['steps'] > 0
    assert summary['exports'] == [] and not (tmp_path / 'a.onnx').exists()
    assert json.loads((tmp_path / 'h.json').read_text())['stop_reason'] == 'interrupted'
    assert (tmp_path / 'p.png').stat().st_size > 0
    assert train_cli.load_checkpoint(tmp_path / 'c.pt')['step'] == summary['steps']


def test_bad_episode_skipped_waiting_and_idle_stop(tmp_path):
    rng = np.random.default_rng(2)
    bad = make_episode(rng, 3, success=True)
    bad['proprio'] = bad['proprio'][:2]                       # never becomes consistent
    episodes = [make_episode(rng, 3, success=False), bad, make_episode(rng, 3, success=False)]
    now = [0.0]

    def sleep(s):
        now[0] += s
    lines = []
    ft = Finetuner(tiny_learner('bc'), lambda start: episodes[start:],
                   FinetuneConfig(steps_per_episode=5, poll_s=1.0, max_idle_s=10,
                                  max_bad_polls=2),
                   log=lines.append, sleep=sleep, clock=lambda: now[0])
    summary = ft.run()
    assert summary['stop_reason'] == 'idle'
    assert [s['index'] for s in summary['skipped_episodes']] == [1]
    assert summary['episodes_seen'] == 2 and summary['steps'] == 0   # bc: no success yet
    assert any('waiting for data' in line for line in lines)

    grown = []                           # a source without arguments returning ALL episodes

    def sleep_and_log_one(s):
        sleep(s)
        if len(grown) < 3:
            grown.append(make_episode(rng, 2, success=len(grown) % 2 == 0))
    ft = Finetuner(tiny_learner('awopt'), lambda: list(grown),
                   FinetuneConfig(steps_per_episode=1, poll_s=1.0, max_idle_s=3),
                   log=lambda s: None, sleep=sleep_and_log_one, clock=lambda: now[0])
    summary = ft.run()
    assert summary['episodes_seen'] == 3 and summary['steps'] == 3
    assert [e['index'] for e in summary['episodes']] == [0, 1, 2]

    wrong = Finetuner(tiny_learner('awopt'),
                      lambda start: [make_episode(rng, 2, True, size=32)][start:],
                      FinetuneConfig(max_steps=1, poll_s=0.0), log=lambda s: None,
                      sleep=lambda s: None)
    with pytest.raises(FinetuneError, match='32x32 images, the learner takes 16x16'):
        wrong.run()


def test_training_time_is_not_idleness(tmp_path):
    """Rounds (awopt demo --new-model-every): the robot waits while the learner catches up
    on a round's grant, which may take longer than max_idle_s; the next round's episodes
    come only after the export, so idleness counts from the end of that training."""
    rng = np.random.default_rng(3)
    now, rounds = [0.0], [[make_episode(rng, 3, success=k % 2 == 0) for k in range(2)]]
    learner = tiny_learner('awopt')
    update = learner.update

    def slow_update(*args, **kwargs):    # each gradient step takes 4 s of the fake clock
        now[0] += 4.0
        return update(*args, **kwargs)
    learner.update = slow_update

    def sleep(s):                        # the next round arrives 3 s after the training
        now[0] += s
        if len(rounds) == 1 and ft.steps == 8:
            rounds.append([make_episode(rng, 3, success=True) for _ in range(2)])
    ft = Finetuner(learner, lambda start: sum(rounds, [])[start:],
                   FinetuneConfig(steps_per_episode=4, poll_s=1.0, max_idle_s=10),
                   log=lambda s: None, sleep=sleep, clock=lambda: now[0])
    summary = ft.run()
    assert summary['stop_reason'] == 'idle'
    assert summary['episodes_seen'] == 4 and summary['steps'] == 16   # both rounds trained


def test_dataset_source_reads_only_new_episodes(tmp_path):
    from test_train_cli import DATASET_ID, write_dataset
    source = DatasetSource(tmp_path, DATASET_ID)
    assert source(0) == []                               # no dataset yet
    write_dataset(tmp_path, episodes=2, seed=3)
    first = source(0)
    assert [e['id'] for e in first] == [0, 1]
    assert first[0]['image'].shape == (4, SIZE, SIZE, 3) and first[0]['rewards'][-1] == 1.0
    write_dataset(tmp_path, episodes=1, seed=4)          # the logger appends one more
    assert [e['id'] for e in source(2)] == [2] and source(3) == []


def test_cli_pretrain_then_finetune(tmp_path, capsys):
    from test_train_cli import DATASET_ID, TINY, TINY_NET, write_dataset
    write_dataset(tmp_path / 'offline', episodes=4, seed=5)
    write_dataset(tmp_path / 'online', episodes=3, seed=6)
    out = tmp_path / 'models' / 'pre.onnx'
    assert cli.main(['train', '--preset', 'awac-p', '--dataset-root',
                     str(tmp_path / 'offline'), '--dataset-id', DATASET_ID, '--out', str(out),
                     '--steps', '2', '--max-episodes', '3', *TINY]) == 0
    summary = json.loads((tmp_path / 'models' / 'pre_summary.json').read_text())
    assert summary['data']['episodes'] == 3                  # --max-episodes
    live = tmp_path / 'models' / 'live.onnx'
    assert cli.main(['finetune', '--dataset-root', str(tmp_path / 'online'), '--dataset-id',
                     DATASET_ID, '--preset', 'awopt', '--init-checkpoint',
                     str(tmp_path / 'models' / 'pre_checkpoint.pt'), '--out', str(live),
                     '--offline-dataset-root', str(tmp_path / 'offline'),
                     '--offline-dataset-id', DATASET_ID, '--offline-max-episodes', '2',
                     '--export-every', '2',
                     '--steps-per-episode', '1', '--max-steps', '3', '--poll-s', '0.01',
                     '--log-every', '1', *TINY_NET]) == 0
    printed = capsys.readouterr().out
    assert '2 offline episodes' in printed and 'stopped (max_steps)' in printed
    contract = read_contract(live)
    assert contract['algorithm'] == 'awopt' and contract['dataset'] == DATASET_ID
    assert (tmp_path / 'models' / 'live_critic_head.onnx').is_file()
    history = json.loads((tmp_path / 'models' / 'live_finetune_history.json').read_text())
    assert history['learner_step_start'] == 2 and history['learner_step'] == 5
    assert [e['step'] for e in history['exports']] == [2, 3]
    assert (tmp_path / 'models' / 'live_finetune.png').is_file()


def test_grasp_target_learner_labels_its_episodes_hindsight_or_recorded_goal(tmp_path):
    """A learner whose actor has 'target' pooling finetunes on labelled episodes: the
    demonstrator's recorded goal where the episode has one, else the close point."""
    rng = np.random.default_rng(4)
    learner = Learner(make_config(
        'awopt', actor=ActorConfig(image_size=SIZE, channels=4, num_conv=2, hidden=16,
                                   pooling='target', grasp_pose=True),
        critic=CriticConfig(image_size=SIZE, channels=4, num_conv=2, num_strided=2,
                            head_conv=1, hidden=8),
        batch_size=8, num_threads=1, target_cem=CEMConfig(2, 8, 2)))
    episodes = []
    for k in range(4):
        ep = make_episode(rng, 5, success=k % 2 == 0)
        ep['proprio'][:, :3] = [0.6, 0.0, 0.05]
        ep['actions'][:, spec.IDX_CLOSE] = np.arange(5) >= 3
        if k == 0:                               # a scripted episode with its recorded goal
            ep['grasp_goal'] = np.tile(np.float32([0.62, 0.01, 0.03, 0.0]), (6, 1))
        episodes.append(ep)
    finetuner = Finetuner(learner, GrowingSource(episodes, per_call=4),
                          FinetuneConfig(steps_per_episode=1, max_steps=4, min_episodes=1,
                                         max_idle_s=0.0, poll_s=0.0),
                          actor_path=tmp_path / 'a.onnx', log=lambda line: None)
    assert finetuner.poll() == 4
    buf = finetuner.buffer
    assert buf.label_keys == ('actor_action', 'target_xy', 'target_mask', 'target_pose',
                              'actor_mask')
    first, second = buf.labels['target_xy'][0], buf.labels['target_xy'][5]
    assert not np.allclose(first, second)        # goal (0.62, 0.01) vs close point (0.6, 0)
    assert buf.labels['target_mask'][:5].tolist() == [True] * 4 + [False]
    assert np.allclose(buf.labels['actor_action'][5:10], episodes[1]['actions'])
    summary = finetuner.run()
    assert summary['steps'] == 4 and (tmp_path / 'a.onnx').exists()
    # action_label='hindsight': the own episodes' x, y labels steer to their close point.
    for ep in episodes[1:]:
        ep['proprio'][:, 0] = 0.6 + 0.01 * np.arange(6)          # the tool moves in x
    hindsight = Finetuner(learner, GrowingSource(episodes, per_call=4),
                          FinetuneConfig(max_idle_s=0.0, poll_s=0.0), action_label='hindsight',
                          log=lambda line: None)
    assert hindsight.poll() == 4
    got = hindsight.buffer.labels['actor_action'][5:10]          # episode 1: closes at step 3
    np.testing.assert_allclose(got[:3, 0], 0.63 - (0.6 + 0.01 * np.arange(3)), atol=1e-6)
    assert not got[3:, :2].any()
    np.testing.assert_array_equal(hindsight.buffer.labels['actor_action'][:5],
                                  buf.labels['actor_action'][:5])   # the recorded goal wins
    assert hindsight.summary()['labels'] == {'action_label': 'hindsight', 'miss_label': 'mask'}
    # miss_label='reopen': a miss before the grasp close is trained on as a reopening.
    episodes[1]['actions'][1, spec.IDX_CLOSE] = 1.0               # closes on nothing at 1
    episodes[1]['actions'][2, spec.IDX_OPEN] = 1.0                # reopens at 2
    reopen = Finetuner(learner, GrowingSource(episodes[:2], per_call=2),
                       FinetuneConfig(max_idle_s=0.0, poll_s=0.0), action_label='hindsight',
                       miss_label='reopen', log=lambda line: None)
    assert reopen.poll() == 2
    got = reopen.buffer.labels['actor_action'][5:10]
    assert got[1, spec.IDX_CLOSE] == 0.0 and reopen.buffer.labels['actor_mask'][5:10].all()
    assert reopen.summary()['labels']['miss_label'] == 'reopen'
    assert Finetuner(learner, GrowingSource(episodes, per_call=4), labeller=lambda ep: {},
                     log=lambda line: None).summary()['labels'] is None   # the caller's
