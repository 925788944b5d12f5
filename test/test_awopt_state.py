"""The AW-Opt learner on a task without an image (insertion's 15-D state, 3-D residual).

A toy one-step task stands in for insertion: the reward is 1 when the residual's x entry
corrects the lateral error, ``-a_x * sign(rel_x) > 0.3``, so the rewarded region depends on
the state. Small MLPs, one torch thread; a few hundred gradient steps take seconds.
"""
import io

import numpy as np
import pytest
import torch

from awopt_ros.core.task import INSERTION
from awopt_ros.learning.awopt import (PRESETS, Learner, LearnerConfig, ReplayBuffer,
                                      make_config)
from awopt_ros.learning.critic import StateCritic
from awopt_ros.learning.networks import StateActor, StateActorConfig

torch.set_num_threads(1)
D, A = INSERTION.state_dim, INSERTION.action_dim
SCALE = np.asarray(INSERTION.state_scale, np.float32)


def small(preset='awac', **kw):
    """Config of ``preset`` for insertion with small MLPs."""
    base = dict(task='insertion', batch_size=64, num_threads=1,
                state_actor=dict(hidden=64, layers=2, zero_init_output=True),
                state_critic=dict(hidden=64, layers=2))
    base.update(kw)
    return make_config(preset, **base)


def states(rng, n):
    """Random raw insertion states (n, 15): about one scale per entry, float32."""
    return (rng.normal(0.0, 1.0, (n, D)) * SCALE).astype(np.float32)


def rewarded(s, a):
    """Toy reward: the x residual pushes against the lateral error by > 0.3."""
    return (-a[..., 0] * np.sign(s[..., 0]) > 0.3).astype(np.float32)


def toy_buffer(rng, episodes=600):
    """One-step episodes with uniform random residuals (about 35 % rewarded)."""
    buf = ReplayBuffer(capacity=episodes, max_episodes=episodes, task='insertion')
    for _ in range(episodes):
        s = states(rng, 2)
        a = rng.uniform(-1.0, 1.0, (1, A)).astype(np.float32)
        buf.add_episode(None, s, a, rewarded(s[:1], a), terminated=True)
    return buf


@pytest.fixture(scope='module')
def buffer():
    return toy_buffer(np.random.default_rng(0))


def test_zero_init_gives_exactly_zero_residuals_before_training():
    learner = Learner(small('awac'))
    s = states(np.random.default_rng(1), 32)
    np.testing.assert_array_equal(learner.act_batch(None, s, 'actor'), np.zeros((32, A)))
    assert learner.act(None, s[0]).dtype == np.float32
    assert np.array_equal(learner.act(None, s[0]), np.zeros(A, np.float32))
    # Without the option the first actions are not all zero.
    plain = Learner(small('awac', state_actor=dict(hidden=64, layers=2)))
    assert np.any(plain.act_batch(None, s, 'actor') != 0.0)


@pytest.mark.parametrize('preset', ['awac', 'awopt'])
def test_actor_moves_toward_the_rewarded_region(buffer, preset):
    learner = Learner(small(preset, seed=3, actor_lr=1e-3, critic_lr=1e-3))
    test = states(np.random.default_rng(2), 256)
    before = learner.act_batch(None, test, 'actor')
    assert float(np.mean(rewarded(test, before))) == 0.0      # the zero residual
    learner.train(buffer, 400)
    after = learner.act_batch(None, test, 'actor')
    assert np.all(np.abs(after) <= 1.0)
    correction = -after[:, 0] * np.sign(test[:, 0])
    # AWAC regresses onto exp(Adv / 0.3)-weighted data (measured 0.30 / 0.55 here), AW-Opt
    # onto the successes only (0.58 / 0.79); the data's rate is about 0.35.
    assert float(np.mean(correction)) > 0.2, preset
    assert float(np.mean(rewarded(test, after))) > 0.45, preset
    # The critic learned where the reward is: CEM over it picks rewarded residuals.
    cem = learner.act_batch(None, test[:64], 'cem')
    assert float(np.mean(rewarded(test[:64], cem))) > 0.8, preset


def test_every_preset_trains_and_acts_on_states(buffer):
    s = states(np.random.default_rng(4), 5)
    for preset in PRESETS:
        learner = Learner(small(preset, batch_size=16))
        stats = learner.train(buffer, 2)
        assert stats['step'][-1] == 2.0
        for mode in ('actor', 'actor_explore', 'cem'):
            net = learner.critic if mode == 'cem' else learner.actor
            if net is None:
                continue
            out = learner.act_batch(None, s, mode)
            assert out.shape == (5, A) and out.dtype == np.float32
            assert np.all(out >= -1.0) and np.all(out <= 1.0)


def test_networks_are_mlps_on_the_state():
    learner = Learner(small('awopt'))
    assert isinstance(learner.actor, StateActor) and isinstance(learner.critic, StateCritic)
    assert learner.log_std.shape == (A,)
    assert learner.config.weights == (1.0, 1.0, 1.0)
    assert learner.config.image_size == 0
    linear = [m for m in learner.actor.mlp if isinstance(m, torch.nn.Linear)]
    assert [m.in_features for m in linear] == [D, 64, 64]
    assert linear[-1].out_features == A
    with pytest.raises(ValueError, match='StateActorConfig.layers'):
        StateActorConfig(layers=0)


def test_buffer_rejects_wrong_shapes_with_clear_messages():
    buf = ReplayBuffer(100, task='insertion')
    rng = np.random.default_rng(5)
    s, a, r = states(rng, 4), np.zeros((3, A), np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r'insertion states must be \(T\+1=4, 15\)'):
        buf.add_episode(None, s[:, :14], a, r, terminated=False)
    with pytest.raises(ValueError, match=r'actions must be \(T, 3\)'):
        buf.add_episode(None, s, np.zeros((3, 7), np.float32), r, terminated=False)
    with pytest.raises(ValueError, match='has no image'):
        buf.add_episode(np.zeros((4, 8, 8, 3), np.uint8), s, a, r, terminated=False)
    with pytest.raises(ValueError, match='non-finite'):
        bad = s.copy()
        bad[1, 3] = np.nan
        buf.add_episode(None, bad, a, r, terminated=False)
    buf.add_episode(None, s, a, r, terminated=False)
    batch = buf.sample(8, rng=rng)
    assert 'image' not in batch and 'next_image' not in batch
    assert batch['proprio'].shape == (8, D) and batch['action'].shape == (8, A)
    with pytest.raises(ValueError, match='needs images'):
        ReplayBuffer(10).add_episode(None, np.zeros((2, 6)), np.zeros((1, 7)), [0.0], True)


def test_buffer_from_dataset_episodes_takes_states():
    rng = np.random.default_rng(6)
    eps = []
    for t, success in ((3, True), (0, False), (5, False)):
        s, a = states(rng, t + 1), rng.uniform(-1, 1, (t, A)).astype(np.float32)
        r = np.zeros(t, np.float32)
        if success:
            r[-1] = 1.0
        eps.append({'observations': {'state': s}, 'actions': a, 'rewards': r,
                    'terminations': r > 0, 'truncations': np.zeros(t, bool)})
    buf = ReplayBuffer.from_episodes(eps, task='insertion')
    assert buf.stats() == {'episodes': 2, 'transitions': 8, 'successful_episodes': 1,
                           'successful_transitions': 3, 'episodes_added': 2}
    batch = buf.sample(16, rng=rng, successful_only=True)
    assert np.all(batch['success']) and batch['next_proprio'].shape == (16, D)
    np.testing.assert_array_equal(buf.proprio[:4], eps[0]['observations']['state'])
    assert buf.done[2] == 1.0 and buf.done[7] == 0.0      # terminated vs truncated

def test_act_rejects_images_and_wrong_states():
    learner = Learner(small('awac'))
    with pytest.raises(ValueError, match=r'states must be \(N, 15\)'):
        learner.act_batch(None, np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match='no image'):
        learner.act_batch(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, D), np.float32))
    with pytest.raises(ValueError, match='non-finite'):
        learner.act(None, np.full(D, np.inf, np.float32))


def test_learner_refuses_a_buffer_of_another_task(buffer):
    grasp_buf = ReplayBuffer(10)
    grasp_buf.add_episode(np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 6)),
                          np.zeros((1, 7)), [1.0], True)
    with pytest.raises(ValueError, match="holds task 'grasp'"):
        Learner(small('awac')).train(grasp_buf, 1)


def test_checkpoint_round_trip_continues_identically(buffer):
    learner = Learner(small('awopt', seed=7))
    learner.train(buffer, 5)
    blob = io.BytesIO()
    torch.save(learner.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob, weights_only=False)
    assert state['config']['task'] == 'insertion'
    copy = Learner.from_state_dict(state)
    assert copy.config.task == 'insertion' and copy.config.state_actor.zero_init_output
    a = learner.train(buffer, 3)
    b = copy.train(buffer, 3)
    assert a == b
    s = states(np.random.default_rng(8), 4)
    np.testing.assert_array_equal(learner.act_batch(None, s, 'actor'),
                                  copy.act_batch(None, s, 'actor'))
    # A grasp learner refuses it.
    with pytest.raises(ValueError, match="task 'insertion'"):
        Learner(LearnerConfig(num_threads=1)).load_state_dict(state)


def test_grasp_checkpoints_without_task_load_as_grasp():
    from test_awopt import tiny
    learner = Learner(tiny('awac'))
    state = learner.state_dict()
    assert state['config']['task'] == 'grasp'
    for key in ('task', 'state_actor', 'state_critic'):
        del state['config'][key]            # as written before tasks existed
    copy = Learner.from_state_dict(state)
    assert copy.config.task == 'grasp' and copy.task.has_image
    with pytest.raises(ValueError, match="checkpoint is for task 'grasp'"):
        Learner(small('awac')).load_state_dict(state)


def test_config_refuses_unknown_task_and_wrong_weights():
    with pytest.raises(ValueError, match="LearnerConfig.task: unknown task 'peg'"):
        make_config('awac', task='peg')
    with pytest.raises(ValueError, match='weights needs 3'):
        small('awac', weights=(1.0,) * 7)
    assert small('awac', weights=(2.0, 2.0, 1.0)).weights == (2.0, 2.0, 1.0)


def test_critic_only_warm_up_leaves_the_actor_alone(buffer):
    learner = Learner(small('awopt', target_update_period=4))
    actor = {k: v.clone() for k, v in learner.actor.state_dict().items()}
    critic = {k: v.clone() for k, v in learner.critic.state_dict().items()}
    log_std = learner.log_std.detach().clone()
    stats = learner.train(buffer, 4, critic_only=True)
    assert learner.step == 4 and 'critic_loss' in stats and 'actor_loss' not in stats
    assert all(torch.equal(v, learner.actor.state_dict()[k]) for k, v in actor.items())
    assert torch.equal(log_std, learner.log_std.detach())
    assert not all(torch.equal(v, learner.critic.state_dict()[k]) for k, v in critic.items())
    # Targets were refreshed at step 4: target1 is the online critic.
    assert all(torch.equal(v, learner.target1.state_dict()[k])
               for k, v in learner.critic.state_dict().items())
    assert 'actor_loss' in learner.train(buffer, 1)
    with pytest.raises(ValueError, match='critic_only needs a critic'):
        Learner(small('bc')).train(buffer, 1, critic_only=True)

# -- export (contract 23 section 4) -----------------------------------------------------------

EXTRA = {'residual_alpha_m': 0.002, 'kp': [1.0, 1.0, 0.3]}


@pytest.fixture(scope='module')
def trained(buffer):
    learner = Learner(small('awac', seed=11))
    learner.train(buffer, 30)
    return learner


def test_export_parity_contract_and_runtime_loader(trained, tmp_path):
    from awopt_ros.core.onnx_policy import OnnxStateActor, read_contract
    from awopt_ros.core.ort_session import session
    from awopt_ros.learning.export import STATE_PARITY_ATOL, export_state_actor
    path = tmp_path / 'res.onnx'
    result = export_state_actor(trained.deployed_actor, path, 'awac', dataset='toy',
                                extra=EXTRA, model_card='toy residual')
    assert set(result['parity']) == {1, 64}
    assert all(d <= STATE_PARITY_ATOL for d in result['parity'].values())
    contract = read_contract(str(path))
    assert contract == result['contract']
    assert contract['task'] == 'insertion' and contract['algorithm'] == 'awac'
    assert contract['observation_names'] == list(INSERTION.state_names)
    assert contract['action_names'] == ['res_x', 'res_y', 'res_z']
    assert contract['action_low'] == [-1.0] * 3 and contract['action_high'] == [1.0] * 3
    assert contract['action_units'] == ['1'] * 3 and contract['dataset'] == 'toy'
    assert contract['residual_alpha_m'] == 0.002 and contract['kp'] == [1.0, 1.0, 0.3]
    sess = session(str(path))
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == ('observation', 'tensor(float)', D)
    assert (out.name, out.type, out.shape[1]) == ('action', 'tensor(float)', A)
    assert not isinstance(inp.shape[0], int)                     # dynamic batch
    # The runtime loader (core.onnx_policy) gives the learner's deterministic actions.
    runtime = OnnxStateActor(path, expected_task='insertion')
    s = states(np.random.default_rng(12), 64)
    s[:4] *= 1000.0                                  # far outside the scales: clipped
    want = trained.act_batch(None, s, 'actor')
    got = runtime.act(s)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.all(np.abs(got) <= 1.0)
    np.testing.assert_allclose(runtime.act(s[0]), want[0], atol=1e-5, rtol=0)
    assert trained.actor.training                    # export left the learner's mode alone


def test_zero_init_export_outputs_zero(tmp_path):
    from awopt_ros.core.onnx_policy import OnnxStateActor
    from awopt_ros.learning.export import export_state_actor
    learner = Learner(small('awopt'))
    export_state_actor(learner.deployed_actor, tmp_path / 'zero.onnx', 'awopt', extra=EXTRA)
    s = states(np.random.default_rng(13), 8)
    assert np.array_equal(OnnxStateActor(tmp_path / 'zero.onnx').act(s), np.zeros((8, A)))


def test_export_refuses_bad_input(trained, tmp_path):
    from test_awopt import tiny

    from awopt_ros.learning.export import (export_state_actor, make_contract,
                                           make_state_contract)
    with pytest.raises(ValueError, match='may not replace'):
        export_state_actor(trained.actor, tmp_path / 'a.onnx', 'awac', extra={'task': 'x'})
    with pytest.raises(ValueError, match='JSON'):
        make_state_contract('insertion', 'awac', extra={'kp': np.zeros(3)})
    with pytest.raises(ValueError, match='takes an image'):
        make_state_contract('grasp', 'awac')
    with pytest.raises(ValueError, match='needs a StateActor'):
        export_state_actor(Learner(tiny('bc')).actor, tmp_path / 'b.onnx', 'bc')
    assert make_contract(64, (80, 0, 480, 480))['task'] == 'grasp'
