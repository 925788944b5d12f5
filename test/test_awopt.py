"""Tests of the AW-Opt learner (learning.awopt): presets, replay buffer, targets, filtering.

Tiny networks (16 px images, 4 channels), one torch thread, a few gradient steps each.
"""
import io
import math

import numpy as np
import pytest
import torch

from awopt_ros.core import spec
from awopt_ros.core.cem import CEMConfig
from awopt_ros.learning.awopt import (PRESETS, Learner, LearnerConfig, ReplayBuffer,
                                      make_config)
from awopt_ros.learning.bc import bc_loss
from awopt_ros.learning.critic import CriticConfig
from awopt_ros.learning.networks import GRASP_POSE_DIM, ActorConfig

torch.set_num_threads(1)
SIZE = 16


def tiny(preset='awopt', **kw):
    """Config of ``preset`` with tiny networks and small CEMs."""
    base = dict(actor=ActorConfig(image_size=SIZE, channels=4, num_conv=2, hidden=16),
                critic=CriticConfig(image_size=SIZE, channels=4, num_conv=2, num_strided=2,
                                    head_conv=1, hidden=8),
                batch_size=8, num_threads=1, target_cem=CEMConfig(2, 8, 2),
                deploy_cem=CEMConfig(2, 16, 4))
    base.update(kw)
    return make_config(preset, **base)


def random_actions(rng, t):
    a = rng.uniform(spec.ACTION_LOW, spec.ACTION_HIGH, (t, spec.ACTION_DIM))
    a[:, spec.DISCRETE] = np.round(a[:, spec.DISCRETE])
    return a.astype(np.float32)


def make_episode(rng, t, success, marker=None):
    """Random episode of t steps; reward 1 on the last step when ``success``.

    ``marker`` (default +1 success / -1 failure) is written into proprio[:, 0] of every
    observation so that a network input tells which episode kind it came from.
    """
    images = rng.integers(0, 256, (t + 1, SIZE, SIZE, 3), dtype=np.uint8)
    proprios = rng.normal(0.0, 0.3, (t + 1, spec.PROPRIO_DIM)).astype(np.float32)
    proprios[:, 0] = (1.0 if success else -1.0) if marker is None else marker
    rewards = np.zeros(t, np.float32)
    if success:
        rewards[-1] = 1.0
    return images, proprios, random_actions(rng, t), rewards


@pytest.fixture(scope='module')
def buffer():
    """12 episodes of 4 steps, every third successful; half terminated, half truncated."""
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(capacity=200, max_episodes=50)
    for e in range(12):
        buf.add_episode(*make_episode(rng, 4, success=e % 3 == 0), terminated=e % 2 == 0)
    return buf


# --------------------------------------------------------------------------- configuration

@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_every_preset_trains(preset, buffer):
    learner = Learner(tiny(preset))
    c = learner.config
    assert c.name == preset
    history = learner.train(buffer, 3)
    lengths = {len(v) for v in history.values()}
    assert lengths == {3}
    assert history['step'] == [1.0, 2.0, 3.0]
    for key, values in history.items():
        assert all(math.isfinite(v) for v in values), (preset, key, values)
    assert ('critic_loss' in history) == c.use_critic
    assert ('actor_loss' in history) == c.use_actor
    if c.use_actor and not c.advantage_weighting:
        assert history['weight_max'] == [1.0] * 3


def test_preset_table():
    expect = {  # actor, critic, adv weighting, positive filter, share, exploration, target
        'bc': (True, False, False, True, 0.0, 'actor'),
        'awac': (True, True, True, False, 0.0, 'actor', 'actor'),
        'awac_p': (True, True, True, True, 0.5, 'actor', 'actor'),
        'awac_p_elrs': (True, True, True, True, 0.5, 'switch', 'actor'),
        'awac_p_elrs_maxq': (True, True, True, True, 0.5, 'switch', 'cem'),
        'awopt': (True, True, True, True, 0.5, 'switch', 'cem+actor'),
        'qtopt': (False, True, False, False, 0.0, 'cem', 'cem'),
        'awopt_no_pf': (True, True, True, False, 0.0, 'switch', 'cem+actor'),
        'awopt_no_elrs': (True, True, True, True, 0.5, 'actor', 'cem+actor'),
        'awopt_no_maxq': (True, True, True, True, 0.5, 'switch', 'actor'),
        'awopt_no_actor_candidate': (True, True, True, True, 0.5, 'switch', 'cem'),
    }
    assert set(expect) <= set(PRESETS)
    for name, row in expect.items():
        c = make_config(name)
        got = (c.use_actor, c.use_critic, c.advantage_weighting, c.positive_filter,
               c.success_share, c.exploration, c.target)
        assert got[:len(row)] == row, name
    assert make_config('awopt').cem_episode_prob == 0.8
    assert make_config('awopt', gamma=0.5).gamma == 0.5


@pytest.mark.parametrize('kwargs, match', [
    (dict(exploration='random'), 'exploration'),
    (dict(target='max'), 'target'),
    (dict(success_share=1.5), 'success_share'),
    (dict(awac_lambda=0.0), 'awac_lambda'),
    (dict(batch_size=0), 'batch_size'),
    (dict(weights=(1.0, 2.0)), 'weights'),
    (dict(use_actor=False), 'needs an actor'),
    (dict(use_actor=False, use_critic=False), 'use_actor or use_critic'),
    (dict(critic=CriticConfig(image_size=32)), 'image_size'),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_config('awopt', **kwargs)


def test_bad_preset_combinations():
    with pytest.raises(ValueError, match='known presets'):
        make_config('sac')
    with pytest.raises(ValueError, match='unknown LearnerConfig fields'):
        make_config('awopt', learning_rate=1.0)
    with pytest.raises(ValueError, match="exploration='actor' needs an actor"):
        make_config('qtopt', exploration='actor')
    with pytest.raises(ValueError, match='needs a critic'):
        make_config('bc', exploration='cem')
    with pytest.raises(ValueError, match='advantage_weighting'):
        make_config('bc', advantage_weighting=True)
    with pytest.raises(ValueError, match="target='cem\\+actor' needs an actor"):
        make_config('qtopt', target='cem+actor')
    cfg = make_config('awopt', actor=dict(image_size=SIZE), critic=dict(image_size=SIZE))
    assert isinstance(cfg.actor, ActorConfig) and cfg.image_size == SIZE
    assert LearnerConfig(**cfg.to_dict()) == cfg


# --------------------------------------------------------------------------- replay buffer

def test_buffer_success_share_sampling():
    rng = np.random.default_rng(1)
    buf = ReplayBuffer(capacity=500)
    for e in range(20):                       # 4 of 20 episodes successful: base rate 0.2
        buf.add_episode(*make_episode(rng, 5, success=e % 5 == 0), terminated=True)
    assert (buf.num_episodes, buf.num_transitions, buf.num_successful) == (20, 100, 4)
    for share in (0.5, 0.25, 1.0):
        got = np.mean([buf.sample(64, share, rng)['success'].mean() for _ in range(20)])
        assert abs(got - share) < 0.02, (share, got)
    uniform = np.mean([buf.sample(64, 0.0, rng)['success'].mean() for _ in range(100)])
    assert abs(uniform - 0.2) < 0.04
    only = buf.sample(256, 0.0, rng, successful_only=True)
    assert only['success'].all() and np.all(only['proprio'][:, 0] == 1.0)
    batch = buf.sample(16, 0.5, rng)
    assert batch['image'].dtype == np.uint8 and batch['image'].shape == (16, SIZE, SIZE, 3)
    assert batch['next_image'].shape == (16, SIZE, SIZE, 3)
    assert batch['action'].shape == (16, 7) and batch['action'].dtype == np.float32
    assert batch['reward'].shape == batch['done'].shape == (16,)


def test_buffer_fifo_eviction_and_errors():
    rng = np.random.default_rng(2)
    buf = ReplayBuffer(capacity=20, max_episodes=10)
    for e in range(7):                        # 5 steps each, marker = episode number
        buf.add_episode(*make_episode(rng, 5, success=e == 6, marker=float(e)),
                        terminated=True)
    assert (buf.num_episodes, buf.num_transitions, buf.num_successful) == (4, 20, 1)
    seen = np.unique(buf.sample(500, 0.0, rng)['proprio'][:, 0])
    assert seen.tolist() == [3.0, 4.0, 5.0, 6.0]
    few = ReplayBuffer(capacity=100, max_episodes=2)
    for e in range(3):
        few.add_episode(*make_episode(rng, 2, success=False, marker=float(e)), terminated=True)
    assert few.num_episodes == 2
    assert np.unique(few.sample(100, 0.0, rng)['proprio'][:, 0]).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match='empty'):
        ReplayBuffer(10).sample(4)
    with pytest.raises(ValueError, match='no successful'):
        few.sample(4, successful_only=True)
    images, proprios, actions, rewards = make_episode(rng, 3, True)
    with pytest.raises(ValueError, match='images'):
        few.add_episode(images[:3], proprios, actions, rewards, True)
    with pytest.raises(ValueError, match='capacity'):
        ReplayBuffer(2).add_episode(images, proprios, actions, rewards, True)


def test_truncation_vs_termination_bootstrapping():
    rng = np.random.default_rng(3)
    buf = ReplayBuffer(capacity=50)
    term = make_episode(rng, 3, success=False, marker=1.0)
    trunc = make_episode(rng, 3, success=False, marker=2.0)
    buf.add_episode(*term, terminated=True)
    buf.add_episode(*trunc, terminated=False)
    batch = buf.sample(200, 0.0, rng)
    last = batch['index'] == 2                                # slots 0-2 terminated, 3-5 not
    last_tr = batch['index'] == 5
    assert last.any() and last_tr.any()
    assert np.all(batch['done'][last] == 1.0)                 # terminal: no bootstrap
    assert np.all(batch['done'][last_tr] == 0.0)              # truncated: bootstrap
    assert np.all(batch['done'][~last] == 0.0)
    assert np.array_equal(batch['next_image'][last_tr][0], trunc[0][3])   # final obs

    learner = Learner(tiny('awopt', shift_px=0))
    out = learner.compute_targets(batch)
    assert out['target'].shape == (200,) and out['action'].shape == (200, 7)
    assert np.all(out['target'][last] == 0.0)                 # r = 0, done = 1 -> y = 0
    expected = learner.config.gamma * np.minimum(out['q1'], out['q2'])
    np.testing.assert_allclose(out['target'][~last], expected[~last], rtol=1e-6)
    assert np.all(out['target'][last_tr] > 0.0)


def test_from_episodes_dataset_layout():
    rng = np.random.default_rng(4)
    episodes = []
    for e in range(3):
        images, proprios, actions, rewards = make_episode(rng, 4, success=e == 0)
        episodes.append({'id': e, 'observations': {'image': images, 'proprio': proprios},
                         'actions': actions, 'rewards': rewards,
                         'terminations': np.array([0, 0, 0, e != 2], bool),
                         'truncations': np.array([0, 0, 0, e == 2], bool)})
    buf = ReplayBuffer.from_episodes(episodes)
    assert buf.stats()['episodes'] == 3 and buf.num_transitions == 12
    assert buf.num_successful == 1
    assert buf.done.sum() == 2                                 # the truncated one bootstraps


# --------------------------------------------------------------------------- learner

def test_positive_filter_actor_never_sees_failures(buffer):
    def record(learner):
        seen = []
        original = learner.actor.normalised

        def spy(image, proprio):
            if torch.is_grad_enabled():                        # only the actor's training pass
                seen.append(proprio[:, 0].detach().clone())
            return original(image, proprio)
        learner.actor.normalised = spy
        return seen

    learner = Learner(tiny('awopt'))
    seen = record(learner)
    history = learner.train(buffer, 4)
    mixed = buffer.sample(32, 0.5, np.random.default_rng(0))
    stats = learner.update(mixed)                              # mixed batch, filtered inside
    markers = torch.cat(seen)
    assert len(seen) == 5 and torch.all(markers == 1.0)
    assert stats['actor_samples'] == float(mixed['success'].sum())
    assert history['actor_failed_samples'] == [0.0] * 4 and stats['actor_failed_samples'] == 0

    no_pf = Learner(tiny('awopt_no_pf'))
    seen = record(no_pf)
    no_pf.train(buffer, 4)
    assert torch.any(torch.cat(seen) == -1.0)                  # control: failures are seen


def test_cem_actor_candidate_in_targets(buffer):
    batch = buffer.sample(8, 0.5, np.random.default_rng(5))
    for preset, expect_candidate in (('awopt', True), ('awopt_no_actor_candidate', False)):
        learner = Learner(tiny(preset, shift_px=0))
        calls = []
        original = learner._target_cem.maximise

        def spy(score_fn, batch_size, extra_candidates=None, init_mean=None):
            def scored(candidates):
                calls.append(np.array(candidates))
                return score_fn(candidates)
            return original(scored, batch_size, extra_candidates=extra_candidates,
                            init_mean=init_mean)
        learner._target_cem.maximise = spy
        with torch.no_grad():                                  # actor action before the step
            mean, logits = learner.actor(torch.from_numpy(batch['next_image']),
                                         torch.from_numpy(batch['next_proprio']))
        pi = np.concatenate([mean.numpy(), (logits.numpy() > 0).astype(np.float32)], axis=1)
        learner.update(batch)
        assert len(calls) == learner.config.target_cem.iterations
        k = learner.config.target_cem.samples
        for cand in calls:
            assert cand.shape == (8, k + int(expect_candidate), 7)
            if expect_candidate:
                np.testing.assert_allclose(cand[:, -1], pi, atol=1e-6)
        assert learner.update(batch)['step'] == 2.0


def test_target_networks_lag(buffer):
    learner = Learner(tiny('qtopt', target_update_period=2, critic_lr=1e-2))

    def flat(net):
        return torch.cat([p.detach().flatten().clone() for p in net.parameters()])

    snapshots = [flat(learner.critic)]
    assert torch.equal(flat(learner.target1), snapshots[0])
    assert torch.equal(flat(learner.target2), snapshots[0])
    for step in range(1, 5):
        learner.train(buffer, 1)
        snapshots.append(flat(learner.critic))
        if step == 1:
            assert not torch.equal(snapshots[1], snapshots[0])
            assert torch.equal(flat(learner.target1), snapshots[0])
        if step == 2:
            assert torch.equal(flat(learner.target1), snapshots[2])
            assert torch.equal(flat(learner.target2), snapshots[0])
        if step == 3:
            assert torch.equal(flat(learner.target1), snapshots[2])
        if step == 4:
            assert torch.equal(flat(learner.target1), snapshots[4])
            assert torch.equal(flat(learner.target2), snapshots[2])


def test_critic_learns_sign_of_dx():
    """One-step episodes, reward 1 iff dx > 0: Q(s, dx=+) > Q(s, dx=-) after training."""
    rng = np.random.default_rng(6)
    buf = ReplayBuffer(capacity=400, max_episodes=400)
    for _ in range(300):
        images, proprios, actions, _ = make_episode(rng, 1, success=False, marker=0.0)
        reward = np.array([float(actions[0, 0] > 0)], np.float32)
        buf.add_episode(images, proprios, actions, reward, terminated=True)
    learner = Learner(tiny('qtopt', batch_size=32, critic_lr=3e-3, shift_px=0))
    learner.train(buf, 120)
    batch = buf.sample(64, 0.0, rng)
    good, bad = batch['action'].copy(), batch['action'].copy()
    good[:, 0], bad[:, 0] = 0.025, -0.025
    with torch.no_grad():
        img, pro = torch.from_numpy(batch['image']), torch.from_numpy(batch['proprio'])
        q_good = learner.critic.q(img, pro, torch.from_numpy(good))
        q_bad = learner.critic.q(img, pro, torch.from_numpy(bad))
    assert float((q_good - q_bad).mean()) > 0.3
    cem = learner.act_batch(batch['image'][:16], batch['proprio'][:16], 'cem')
    assert np.mean(cem[:, 0] > 0) >= 0.9                      # the CEM policy picks dx > 0


def test_bc_weights_one_matches_bc_loss(buffer):
    learner = Learner(tiny('bc', shift_px=0))
    batch = buffer.sample(16, 0.0, np.random.default_rng(7), successful_only=True)
    t = {k: torch.from_numpy(batch[k]) for k in ('image', 'proprio', 'action')}
    with torch.no_grad():
        ref, _ = bc_loss(learner.actor, t['image'], t['proprio'], t['action'],
                         learner.config.weights)
    stats = learner.update(batch)
    assert stats['weight_mean'] == 1.0 and stats['actor_samples'] == 16
    assert stats['actor_loss'] == pytest.approx(float(ref), rel=1e-5)


def test_advantage_weights_clipped(buffer):
    learner = Learner(tiny('awac', max_weight=1.05, awac_lambda=0.01, critic_lr=1e-2))
    history = learner.train(buffer, 6)
    assert max(history['weight_max']) <= 1.05 + 1e-6
    assert all(w > 0 for w in history['weight_mean'])
    samples = Learner(tiny('awopt', advantage_samples=3)).train(buffer, 2)
    assert all(math.isfinite(v) for v in samples['adv_mean'])


def test_act_bounds_and_modes(buffer):
    learner = Learner(tiny('awopt', init_std=1.0, max_std=1.0))
    rng = np.random.default_rng(8)
    image, proprio = buffer.image[0], buffer.proprio[0]
    for mode in ('actor', 'actor_explore', 'cem'):
        for _ in range(5):
            a = learner.act(image, proprio, mode, rng)
            assert a.dtype == np.float32 and a.shape == (7,)
            assert np.all(a >= spec.ACTION_LOW) and np.all(a <= spec.ACTION_HIGH)
            assert set(np.unique(a[spec.DISCRETE]).tolist()) <= {0.0, 1.0}
    many = learner.act_batch(np.repeat(image[None], 64, 0), np.repeat(proprio[None], 64, 0),
                             'actor_explore', rng)
    assert many[:, :4].std(0).min() > 0                        # exploration noise
    det = learner.act(image, proprio, 'actor')
    np.testing.assert_array_equal(det, learner.act(image, proprio, 'actor'))
    with pytest.raises(ValueError, match='mode'):
        learner.act(image, proprio, 'random')
    with pytest.raises(ValueError, match='needs an actor'):
        Learner(tiny('qtopt')).act(image, proprio, 'actor')
    with pytest.raises(ValueError, match='needs a critic'):
        Learner(tiny('bc')).act(image, proprio, 'cem')
    with pytest.raises(ValueError, match='images'):
        learner.act(np.zeros((8, 8, 3), np.uint8), proprio)


def test_episode_mode():
    rng = np.random.default_rng(9)
    learner = Learner(tiny('awopt'))
    modes = [learner.episode_mode(rng) for _ in range(2000)]
    assert set(modes) == {'actor', 'cem'}
    assert abs(modes.count('cem') / 2000 - 0.8) < 0.04
    assert {Learner(tiny('qtopt')).episode_mode(rng) for _ in range(20)} == {'cem'}
    assert {Learner(tiny('awac')).episode_mode(rng) for _ in range(20)} == {'actor'}


def test_state_dict_round_trip(buffer):
    learner = Learner(tiny('awopt'))
    learner.train(buffer, 3)
    raw = io.BytesIO()
    torch.save(learner.state_dict(), raw)
    raw.seek(0)
    state = torch.load(raw)                                    # weights_only default works
    copy = Learner.from_state_dict(state)
    assert copy.step == 3 and copy.config == learner.config
    image, proprio = buffer.image[1], buffer.proprio[1]
    np.testing.assert_array_equal(copy.act(image, proprio, 'actor'),
                                  learner.act(image, proprio, 'actor'))
    batch = buffer.sample(8, 0.0, np.random.default_rng(10))
    a = learner.compute_targets(batch)
    b = copy.compute_targets(batch)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # RNG states travel too: the next training steps are identical.
    h1, h2 = learner.train(buffer, 2), copy.train(buffer, 2)
    assert h1 == h2
    with pytest.raises(ValueError, match='lacks an actor|has an actor'):
        Learner(tiny('qtopt')).load_state_dict(state)


def _reference_shift(images, shift_px, generator):
    """Per-pixel definition of the random shift: out[i, r, c] = images[i, clamp(r + dy),
    clamp(c + dx)] with (dy, dx) = one randint(-s, s) draw of shape (N, 2)."""
    n, h, w = images.shape[:3]
    d = torch.randint(-shift_px, shift_px + 1, (n, 2), generator=generator)
    out = torch.empty_like(images)
    for i in range(n):
        for r in range(h):
            for c in range(w):
                out[i, r, c] = images[i, min(max(r + int(d[i, 0]), 0), h - 1),
                                      min(max(c + int(d[i, 1]), 0), w - 1)]
    return out


@pytest.mark.parametrize('shape,shift,dtype', [((5, 16, 16, 3), 4, torch.uint8),
                                               ((3, 12, 9, 3), 2, torch.float32)])
def test_random_shift_matches_per_pixel_definition(shape, shift, dtype):
    """The strided-window random shift (bc.random_shift, used by the learner) equals the
    per-pixel edge-replicating shift with the same draws, and consumes the same draws."""
    from awopt_ros.learning.bc import random_shift
    images = torch.randint(0, 256, shape).to(dtype)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):
        got = random_shift(images, shift, g1)
        assert torch.equal(got, _reference_shift(images, shift, g2))
        assert got.shape == images.shape and got.dtype == images.dtype
    assert torch.equal(torch.randint(0, 9, (4,), generator=g1),
                       torch.randint(0, 9, (4,), generator=g2))     # same draws consumed
    same = torch.randint(0, 256, (2, 8, 8, 1), dtype=torch.uint8)
    assert random_shift(same, 0, g1) is same


# --------------------------------------------------------------------------- grasp-target actor

def target_actor(**kw):
    return ActorConfig(image_size=SIZE, channels=4, num_conv=2, hidden=16, pooling='target',
                       **kw)


def labelled_buffer(pose=True, episodes=6, t=4):
    """Episodes (every other one successful) with grasp-target labels; actor_action =
    action with x, y zeroed, so a label row can be matched to its transition."""
    rng = np.random.default_rng(3)
    buf = ReplayBuffer(capacity=200, max_episodes=50)
    for e in range(episodes):
        images, proprios, actions, rewards = make_episode(rng, t, success=e % 2 == 0)
        labels = {'actor_action': actions.copy(),
                  'target_xy': rng.uniform(-0.8, 0.8, (t, 2)).astype(np.float32),
                  'target_mask': np.arange(t) < t - 1}
        labels['actor_action'][:, :2] = 0.0
        if pose:
            labels['target_pose'] = rng.normal(0, 0.5, (t, GRASP_POSE_DIM)).astype(np.float32)
        buf.add_episode(images, proprios, actions, rewards, terminated=True, labels=labels)
    return buf


def test_buffer_labels_travel_with_their_transitions_and_are_checked():
    buf = labelled_buffer()
    assert buf.label_keys == ('actor_action', 'target_xy', 'target_mask', 'target_pose')
    batch = buf.sample(32, 0.5, np.random.default_rng(0))
    np.testing.assert_array_equal(batch['actor_action'][:, 2:], batch['action'][:, 2:])
    assert not batch['actor_action'][:, :2].any() and batch['target_mask'].dtype == bool
    np.testing.assert_array_equal(batch['target_xy'], buf.labels['target_xy'][batch['index']])
    rng = np.random.default_rng(1)
    episode = make_episode(rng, 4, True)
    with pytest.raises(ValueError, match='differ from the buffer'):
        buf.add_episode(*episode, terminated=True)                       # labels missing
    with pytest.raises(ValueError, match="'target_xy' must have shape"):
        labelled_buffer(episodes=0).add_episode(
            *episode, terminated=True, labels={'target_xy': np.zeros((3, 2))})
    with pytest.raises(ValueError, match='unknown label keys'):
        ReplayBuffer(10).add_episode(*episode, terminated=True, labels={'xy': np.zeros(4)})
    with pytest.raises(ValueError, match='non-finite'):
        ReplayBuffer(10).add_episode(*episode, terminated=True,
                                     labels={'target_xy': np.full((4, 2), np.nan)})
    plain = ReplayBuffer(10)
    plain.add_episode(*episode, terminated=True)
    assert plain.label_keys == () and 'target_xy' not in plain.sample(2)
    with pytest.raises(ValueError, match="pooling 'target' needs the replay buffer labels"):
        Learner(tiny('bc', actor=target_actor())).train(plain, 1)


def test_grasp_target_actor_without_weights_is_behaviour_cloning():
    """With advantage weights 1 the learner's actor loss is bc.bc_loss on the same batch:
    relabelled actions, teacher-forced window, score-map and pose terms."""
    buf = labelled_buffer()
    learner = Learner(tiny('bc', actor=target_actor(grasp_pose=True), pose_weight=10.0,
                           shift_px=4))
    batch = buf.sample(16, 0.0, np.random.default_rng(5), successful_only=True)

    def reference(rows):
        t = {k: torch.from_numpy(batch[k][rows]) for k in (
            'image', 'proprio', 'actor_action', 'target_xy', 'target_mask', 'target_pose')}
        with torch.no_grad():
            return bc_loss(learner.actor, t['image'], t['proprio'], t['actor_action'],
                           learner.config.weights,
                           (t['target_xy'], t['target_mask'], t['target_pose']),
                           pose_weight=10.0)

    ref, parts = reference(slice(None))
    stats = learner.update(batch)
    assert stats['actor_loss'] == pytest.approx(float(ref), rel=1e-5)
    assert stats['target_loss'] == pytest.approx(parts['target'], rel=1e-5)
    assert stats['pose_loss'] == pytest.approx(parts['pose'], rel=1e-5)
    # Rows whose actor_mask is False (a miss in an episode that grasped again) are left out.
    keep = np.arange(16) % 4 != 0
    ref, _ = reference(keep)
    stats = learner.update(dict(batch, actor_mask=keep))
    assert stats['actor_samples'] == 12
    assert stats['actor_loss'] == pytest.approx(float(ref), rel=1e-5)


def test_awopt_with_grasp_target_actor_trains_weights_and_averages():
    buf = labelled_buffer(pose=False, episodes=8)
    learner = Learner(tiny('awopt', actor=target_actor(), actor_ema_decay=0.9))
    history = learner.train(buf, 4)
    assert all(math.isfinite(v) for v in history['target_loss'] + history['critic_loss'])
    assert 'pose_loss' not in history
    assert all(n > 0 and f == 0 for n, f in zip(history['actor_samples'],
                                                history['actor_failed_samples']))
    # The deployed actor is the exponential average of the iterates.
    before = [p.detach().clone() for p in learner.deployed_actor.parameters()]
    learner.train(buf, 1)
    for avg, old, new in zip(learner.deployed_actor.parameters(), before,
                             learner.actor.parameters()):
        torch.testing.assert_close(avg, 0.9 * old + 0.1 * new.detach())
    state = learner.state_dict()
    copy = Learner.from_state_dict(state)
    for a, b in zip(copy.deployed_actor.parameters(), learner.deployed_actor.parameters()):
        torch.testing.assert_close(a, b)
    state.pop('actor_ema')                       # a checkpoint trained without averaging
    fresh = Learner.from_state_dict(state)
    for a, b in zip(fresh.deployed_actor.parameters(), learner.actor.parameters()):
        torch.testing.assert_close(a, b)
    assert Learner(tiny('awopt')).deployed_actor is not None
    with pytest.raises(ValueError, match='actor_ema_decay'):
        tiny('awopt', actor_ema_decay=1.0)
