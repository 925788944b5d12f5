"""The learner weights the operator's intervention steps (``intervention_weight``): AW-Opt /
AWAC learner (learning.awopt), classic behaviour cloning (learning.bc) and ``awopt train``.

Tiny networks (16 px images), one torch thread: gradients of one batch are compared with the
weighted sum of the gradients of its samples alone.
"""
import numpy as np
import pytest
import torch

from awopt_ros.core import spec
from awopt_ros.core.cem import CEMConfig
from awopt_ros.core.dataset import EpisodeRecorder
from awopt_ros.learning import data
from awopt_ros.learning.awopt import Learner, LearnerConfig, ReplayBuffer, make_config
from awopt_ros.learning.bc import BCConfig, bc_loss
from awopt_ros.learning.critic import CriticConfig
from awopt_ros.learning.networks import Actor, ActorConfig

torch.set_num_threads(1)
SIZE = 16
ACTOR = dict(image_size=SIZE, channels=4, num_conv=2, hidden=16)


def _config(preset, **kw):
    base = dict(actor=ActorConfig(**ACTOR),
                critic=CriticConfig(image_size=SIZE, channels=4, num_conv=2, num_strided=2,
                                    head_conv=1, hidden=8),
                batch_size=2, num_threads=1, shift_px=0, target_cem=CEMConfig(2, 8, 2),
                deploy_cem=CEMConfig(2, 16, 4))
    base.update(kw)
    return make_config(preset, **base)


def _batch(rows, flags):
    rng = np.random.default_rng(0)
    n = 2
    batch = {'image': rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
             'proprio': rng.normal(0, 0.3, (n, spec.PROPRIO_DIM)).astype(np.float32),
             'action': np.float32([[0.02, -0.01, 0.0, 0.1, 0, 1, 0],
                                   [-0.03, 0.02, 0.01, -0.2, 1, 0, 0]]),
             'reward': np.float32([0, 1]), 'done': np.float32([0, 1]),
             'next_image': rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
             'next_proprio': rng.normal(0, 0.3, (n, spec.PROPRIO_DIM)).astype(np.float32),
             'success': np.array([True, True]), 'intervention': np.asarray(flags, bool)}
    return {k: v[rows] for k, v in batch.items()}


def _actor_grads(preset, weight, rows, flags):
    """Actor parameter gradients and the loss of one update of a fresh learner."""
    learner = Learner(_config(preset, intervention_weight=weight))
    stats = learner.update(_batch(rows, flags))
    grads = torch.cat([p.grad.reshape(-1) for p in learner.actor.parameters()
                       if p.grad is not None])
    return grads, stats['actor_loss']


@pytest.mark.parametrize('preset', ['bc', 'awac'])
def test_intervention_weight_scales_the_actor_loss_of_intervention_steps(preset):
    """Row 0 is the operator's: with weight 5 the batch gradient is (5 g0 + g1) / 2, with
    weight 1 (default) it is (g0 + g1) / 2, i.e. the flag changes nothing."""
    g0, l0 = _actor_grads(preset, 5.0, [0], [True, False])
    g1, l1 = _actor_grads(preset, 5.0, [1], [True, False])
    g, loss = _actor_grads(preset, 5.0, [0, 1], [True, False])
    # g0 alone already carries the factor 5 (a batch of one intervention row)
    torch.testing.assert_close(g, (g0 + g1) / 2, rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx((l0 + l1) / 2, rel=1e-5)
    plain0, p0 = _actor_grads(preset, 1.0, [0], [True, False])
    torch.testing.assert_close(g0, 5 * plain0, rtol=1e-4, atol=1e-6)
    assert l0 == pytest.approx(5 * p0, rel=1e-5)
    same, _ = _actor_grads(preset, 1.0, [0, 1], [True, False])
    unflagged, _ = _actor_grads(preset, 1.0, [0, 1], [False, False])
    torch.testing.assert_close(same, unflagged)
    assert not torch.allclose(g, same)


def test_replay_buffer_carries_the_intervention_flags():
    rng = np.random.default_rng(1)
    buf = ReplayBuffer(capacity=20)
    t = 3
    images = rng.integers(0, 256, (t + 1, SIZE, SIZE, 3), dtype=np.uint8)
    proprios = np.zeros((t + 1, spec.PROPRIO_DIM), np.float32)
    actions = np.zeros((t, spec.ACTION_DIM), np.float32)
    buf.add_episode(images, proprios, actions, np.float32([0, 0, 1]), True,
                    intervention=[False, True, False, False])      # (T+1,) as in the dataset
    buf.add_episode(images, proprios, actions, np.float32([0, 0, 0]), False)
    batch = buf.sample(64, rng=0)
    expect = np.isin(batch['index'], [1])
    np.testing.assert_array_equal(batch['intervention'], expect)
    assert expect.any()
    with pytest.raises(ValueError, match='intervention'):
        buf.add_episode(images, proprios, actions, np.float32([0, 0, 0]), False,
                        intervention=[True])
    episodes = [{'image': images, 'proprio': proprios, 'actions': actions,
                 'rewards': np.float32([0, 0, 1]), 'terminations': np.array([0, 0, 1], bool),
                 'intervention': np.array([1, 0, 0, 0], bool)}]
    built = ReplayBuffer.from_episodes(episodes)
    np.testing.assert_array_equal(built.intervention[:3], [True, False, False])


def test_config_validates_the_weight():
    assert LearnerConfig().intervention_weight == 1.0
    assert BCConfig().intervention_weight == 1.0
    for bad in (-1.0, float('nan')):
        with pytest.raises(ValueError, match='intervention_weight'):
            _config('bc', intervention_weight=bad)
        with pytest.raises(ValueError, match='intervention_weight'):
            BCConfig(intervention_weight=bad)


def test_bc_loss_sample_weights():
    torch.manual_seed(0)
    actor = Actor(ActorConfig(**ACTOR))
    b = _batch([0, 1], [True, False])
    args = (torch.from_numpy(b['image']), torch.from_numpy(b['proprio']),
            torch.from_numpy(b['action']), BCConfig().weights)
    l0, _ = bc_loss(actor, *(a[:1] for a in args[:3]), args[3])
    l1, _ = bc_loss(actor, *(a[1:] for a in args[:3]), args[3])
    both, _ = bc_loss(actor, *args, sample_weight=torch.tensor([5.0, 1.0]))
    torch.testing.assert_close(both, (5 * l0 + l1) / 2)
    plain, _ = bc_loss(actor, *args)
    torch.testing.assert_close(plain, (l0 + l1) / 2)


def _dataset(root):
    """Two successful episodes of 3 steps; steps 1, 2 of the second are the operator's."""
    rng = np.random.default_rng(2)
    rec = EpisodeRecorder(root, 'awopt/kuka-grasp-v0', image_size=SIZE)
    for k in range(2):
        rec.begin(k, k)
        for t in range(3):
            rec.add_step(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                         rng.normal(0, 0.1, 6).astype(np.float32),
                         np.float32([0.01, 0, 0, 0, 0, t == 2, 0]), 0.0, 1, 10.0 * k + t)
        rec.end(True, True, False, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                np.zeros(6, np.float32),
                interventions=([11.0, 12.0], np.zeros((2, 7), np.float32)) if k else None)


def test_train_paths_pass_the_flags(tmp_path, monkeypatch):
    """``awopt train`` (classic BC) hands the dataset's flags and ``--set
    intervention_weight`` to train_bc, in the order of bc_arrays' transitions."""
    _dataset(tmp_path)
    episodes = data.load_episodes(tmp_path, 'awopt/kuka-grasp-v0')
    np.testing.assert_array_equal(data.bc_intervention(episodes),
                                  [False] * 3 + [False, True, True])
    from awopt_ros.learning import bc, train_cli
    seen = {}
    real = bc.train_bc

    def spy(*args, **kw):
        seen['weight'] = args[3].intervention_weight
        seen['intervention'] = kw.get('intervention')
        return real(*args, **kw)
    monkeypatch.setattr(bc, 'train_bc', spy)
    code = train_cli.main(['--dataset-root', str(tmp_path), '--dataset-id',
                           'awopt/kuka-grasp-v0', '--steps', '2', '--batch-size', '2',
                           '--channels', '4', '--hidden', '16', '--no-progress',
                           '--set', 'intervention_weight=5', '--out',
                           str(tmp_path / 'out' / 'a.onnx')])
    assert code == 0
    assert seen['weight'] == 5.0
    np.testing.assert_array_equal(seen['intervention'], [False] * 4 + [True, True])


def test_learner_preset_takes_the_weight_from_set(tmp_path):
    """``awopt train --preset bc-learner --set intervention_weight=5``: the learner's config
    (summary JSON) carries it, and its buffer the dataset's flags."""
    import json

    from awopt_ros.learning import train_cli
    _dataset(tmp_path)
    out = tmp_path / 'out' / 'a.onnx'
    code = train_cli.main(['--preset', 'bc-learner', '--dataset-root', str(tmp_path),
                           '--dataset-id', 'awopt/kuka-grasp-v0', '--steps', '1',
                           '--batch-size', '2', '--channels', '4', '--hidden', '16',
                           '--no-progress', '--set', 'intervention_weight=5', '--out', str(out)])
    assert code == 0
    summary = json.loads(out.with_name('a_summary.json').read_text())
    assert summary['config']['intervention_weight'] == 5.0
    episodes = data.load_episodes(tmp_path, 'awopt/kuka-grasp-v0')
    buf = ReplayBuffer.from_episodes(episodes)
    np.testing.assert_array_equal(buf.intervention[:6], [False] * 4 + [True, True])
    assert train_cli.main(['--dataset-root', str(tmp_path), '--dataset-id',
                           'awopt/kuka-grasp-v0', '--steps', '1', '--no-progress',
                           '--set', 'intervention_weight=-1', '--out',
                           str(tmp_path / 'bad.onnx')]) == 2
    assert train_cli.main(['--dataset-root', str(tmp_path), '--dataset-id',
                           'awopt/kuka-grasp-v0', '--steps', '1', '--no-progress',
                           '--set', 'intervention_weight=x', '--out',
                           str(tmp_path / 'bad.onnx')]) == 2


def test_finetuner_buffers_the_intervention_flags():
    """``awopt finetune`` beside a running stack: the episodes the logger appends bring their
    intervention steps into the learner's buffer (offline and online alike)."""
    from awopt_ros.learning.finetune import FinetuneConfig, Finetuner
    rng = np.random.default_rng(3)

    def episode(flags):
        t = len(flags)
        return {'image': rng.integers(0, 256, (t + 1, SIZE, SIZE, 3), dtype=np.uint8),
                'proprio': np.zeros((t + 1, 6), np.float32),
                'actions': np.zeros((t, 7), np.float32), 'rewards': np.eye(t)[-1],
                'terminations': np.eye(t, dtype=bool)[-1], 'truncations': np.zeros(t, bool),
                'intervention': np.array(list(flags) + [flags[-1]], bool)}
    online = [episode([False, True, True])]
    ft = Finetuner(Learner(_config('bc')), lambda start: online[start:],
                   FinetuneConfig(steps_per_episode=1))
    ft.add_offline([episode([True, False])])
    assert ft.poll() == 1
    np.testing.assert_array_equal(ft.buffer.intervention[:5], [True, False, False, True, True])


def _labelled_episode(steps=8, close_at=5):
    """An episode with noisy logged actions, a recorded noise-free action and demonstrator
    goal on every step, a grasp close at ``close_at``, and the operator driving steps 1..3."""
    proprio = np.zeros((steps + 1, spec.PROPRIO_DIM), np.float32)
    proprio[:, 0] = 0.6 + 0.01 * np.arange(steps + 1)
    proprio[:, 2] = 0.05
    actions = np.tile(np.float32([0.004, -0.005, -0.02, 0.1, 0, 0, 0]), (steps, 1))
    actions[close_at:, spec.IDX_CLOSE] = 1.0
    clean = np.tile(np.float32([0.01, 0.01, -0.03, 0.05, 0, 0, 0]), (steps + 1, 1))
    flags = np.zeros(steps + 1, bool)
    flags[1:4] = True
    actions[flags[:steps]] = [0.03, 0.0, 0.02, -0.1, 0, 0, 0]   # the operator's correction
    rewards = np.zeros(steps)
    rewards[-1] = 1.0
    return {'observations': {'image': np.zeros((steps + 1, SIZE, SIZE, 3), np.uint8),
                             'proprio': proprio},
            'actions': actions, 'rewards': rewards, 'noise_free_action': clean,
            'intervention': flags,
            'grasp_goal': np.tile(np.float32([0.65, 0.02, 0.05, 0.0]), (steps + 1, 1))}


@pytest.mark.parametrize('action_label', ['hindsight', 'expert'])
@pytest.mark.parametrize('miss_label', ['mask', 'reopen'])
def test_relabelled_actor_actions_keep_the_operators_correction(action_label, miss_label):
    """finetune's labels (expert / hindsight) leave intervention steps as logged: neither the
    actor's noise-free z, yaw nor the hindsight x, y steer replace the operator's action, which
    intervention_weight then up-weights; the policy's own steps are relabelled as before."""
    from awopt_ros.learning.finetune import grasp_target_labeller
    from awopt_ros.learning.targets import episode_labels, expert_actions, intervention_steps
    ep = _labelled_episode()
    labels = grasp_target_labeller((80, 0, 480, 480), False, action_label=action_label,
                                   miss_label=miss_label)(ep)
    np.testing.assert_array_equal(labels['actor_action'][1:4], ep['actions'][1:4])
    assert labels['actor_mask'][1:4].all()
    if action_label == 'hindsight':       # the other steps: noise-free z, yaw and the steer
        np.testing.assert_allclose(labels['actor_action'][[0, 4], 2:4], [[-0.03, 0.05]] * 2)
        assert labels['actor_action'][0, 1] != ep['actions'][0, 1]
    plain = dict(ep)
    del plain['intervention']             # no key: no interventions, every step relabelled
    acts, count = expert_actions(plain, hindsight_goal=True, noise_free=True)
    assert count == 8 and not np.array_equal(acts[1:4], ep['actions'][1:4])
    assert expert_actions(ep, hindsight_goal=True, noise_free=True)[1] == 5
    assert not intervention_steps(plain, 8).any()
    inproc = dict(plain, infos={'intervention': ep['intervention'].tolist()})
    assert intervention_steps(inproc, 8).tolist() == ep['intervention'][:8].tolist()
    got = episode_labels(inproc, None, None, grasp_label=None, action_label=action_label)
    np.testing.assert_array_equal(got['actor_action'][1:4], ep['actions'][1:4])
