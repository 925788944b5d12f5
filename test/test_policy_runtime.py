"""Tests of the ROS-free policy runtime (core.policy_runtime): modes, fallback, hot swap."""
import os

import numpy as np
import pytest

from conftest import export_tiny_actor, rewrite_contract

from awopt_ros.core import spec
from awopt_ros.core.cem import CEMConfig
from awopt_ros.core.onnx_critic import OnnxCritic
from awopt_ros.core.onnx_policy import OnnxActor, expected_contract
from awopt_ros.core.policy_runtime import (ModelPaths, ModelWatcher, NoPolicyError,
                                           PolicyRuntime, check_action, file_signature)

SIZE = 16
CROP = [80, 0, 480, 480]
EXPECTED = expected_contract(SIZE, CROP)
SMALL_CEM = CEMConfig(2, 16, 4)


def export_tiny_critic(encoder_path, head_path, seed=0):
    """Export a tiny random critic pair (SIZE px, 4 channels)."""
    import torch

    from awopt_ros.learning.critic import Critic, CriticConfig, export_critic, make_critic_contract
    torch.manual_seed(seed)
    critic = Critic(CriticConfig(image_size=SIZE, channels=4, num_conv=2, num_strided=2,
                                 head_conv=1, hidden=8)).eval()
    return export_critic(critic, encoder_path, head_path,
                         make_critic_contract(SIZE, CROP, 'test/x-v0'), check_parity=False)


def replace_atomically(write, dst, suffix='.tmp'):
    """Write with ``write(tmp)`` next to ``dst``, then ``os.replace`` it (the writer contract)."""
    tmp = f'{dst}{suffix}'
    write(tmp)
    os.replace(tmp, dst)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Reference exports: two actors (seeds 1, 2), a mismatching actor, two critic pairs."""
    d = tmp_path_factory.mktemp('runtime_models')
    out = {'actor1': d / 'actor1.onnx', 'actor2': d / 'actor2.onnx',
           'bad_actor': d / 'bad_actor.onnx'}
    export_tiny_actor(out['actor1'], seed=1, image_size=SIZE, crop_xywh=CROP)
    export_tiny_actor(out['actor2'], seed=2, image_size=SIZE, crop_xywh=CROP)
    rewrite_contract(out['actor1'], out['bad_actor'], crop_xywh=[0, 0, 480, 480])
    for k in (1, 2):
        out[f'enc{k}'], out[f'head{k}'] = d / f'enc{k}.onnx', d / f'head{k}.onnx'
        export_tiny_critic(out[f'enc{k}'], out[f'head{k}'], seed=k)
    return out


@pytest.fixture(scope='module')
def critic(files):
    return OnnxCritic(files['enc1'], files['head1'], expected=EXPECTED)


@pytest.fixture
def obs():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    proprio = np.float32([0.6, 0.0, 0.3, 0.0, 1.0, 0.0])
    return image, proprio


class FixedActor:
    """Stand-in actor returning a fixed output (or raising ``error``)."""

    def __init__(self, action=None, error=None):
        self.action, self.error, self.calls = action, error, 0

    def act(self, image, proprio):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return np.asarray(self.action, dtype=np.float32)


GOOD = np.float32([0.01, -0.02, 0.0, 0.1, 0.0, 1.0, 0.0])


def in_bounds(action):
    a = np.asarray(action)
    return (a.shape == (7,) and a.dtype == np.float32 and np.all(np.isfinite(a))
            and np.all(a >= spec.ACTION_LOW) and np.all(a <= spec.ACTION_HIGH)
            and set(a[spec.DISCRETE].tolist()) <= {0.0, 1.0})


# --- modes and the episode switch ---------------------------------------------------------------

def test_switch_draws_cem_for_80_percent_of_episodes():
    rt = PolicyRuntime('switch', FixedActor(GOOD), None, seed=7)
    draws = [rt.begin_episode() for _ in range(4000)]
    share = draws.count('cem') / len(draws)
    assert abs(share - 0.8) < 0.025, share           # 4 sigma of Binomial(4000, 0.8)
    assert set(draws) == {'actor', 'cem'} and rt.episodes == 4000
    # the same seed gives the same episode sequence; another seed a different one
    again = PolicyRuntime('switch', FixedActor(GOOD), None, seed=7)
    assert [again.begin_episode() for _ in range(200)] == draws[:200]
    other = PolicyRuntime('switch', FixedActor(GOOD), None, seed=8)
    assert [other.begin_episode() for _ in range(200)] != draws[:200]


def test_a_prepared_draw_is_the_next_episodes_and_the_sequence_is_the_seeds():
    plain = PolicyRuntime('switch', FixedActor(GOOD), None, cem_episode_prob=0.5, seed=3)
    draws = [plain.begin_episode() for _ in range(40)]
    rt = PolicyRuntime('switch', FixedActor(GOOD), None, cem_episode_prob=0.5, seed=3)
    got = []
    for k in range(40):
        if k % 3 != 2:   # every third episode starts with no end before it: begin draws
            nxt = rt.prepare_next_episode()
            assert rt.episode_policy == nxt == rt.prepare_next_episode()   # no second draw
        got.append(rt.begin_episode())
        assert rt.episode_policy == got[-1] and rt.episodes == k + 1
    assert got == draws


@pytest.mark.parametrize('mode, prob, expected', [
    ('actor', 0.8, {'actor'}), ('cem', 0.8, {'cem'}),
    ('switch', 0.0, {'actor'}), ('switch', 1.0, {'cem'})])
def test_episode_policy_per_mode(mode, prob, expected):
    rt = PolicyRuntime(mode, FixedActor(GOOD), None, cem_episode_prob=prob, seed=0)
    assert {rt.begin_episode() for _ in range(50)} == expected


@pytest.mark.parametrize('kwargs, field', [
    (dict(mode='greedy'), 'mode'), (dict(cem_episode_prob=1.5), 'cem_episode_prob'),
    (dict(actor_noise_std=-0.1), 'actor_noise_std'), (dict(actor_noise_std=2.0),
                                                       'actor_noise_std')])
def test_bad_arguments_are_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PolicyRuntime(**kwargs)


def test_actor_acts_in_actor_episodes(critic, obs):
    actor = FixedActor(GOOD)
    rt = PolicyRuntime('actor', actor, critic, cem_config=SMALL_CEM, seed=0)
    action, source, info = rt.act(*obs)
    assert source == 'actor' and np.array_equal(action, GOOD) and action.dtype == np.float32
    assert info['fallback'] is None and info['model_version'] == 1 and 'q' not in info
    runs = critic.stats['head_runs']
    rt.act(*obs)
    assert critic.stats['head_runs'] == runs          # the critic was not run


def test_actor_exploration_noise_on_continuous_sub_actions_only(critic, obs):
    """actor_noise_std perturbs dx, dy, dz, dyaw with the given std (in half ranges),
    clipped to the bounds; the discrete sub-actions and the CEM candidate stay the actor's."""
    edge = np.float32([0.03, -0.03, 0.0, 0.0, 0.0, 1.0, 0.0])     # dx, dy at their bounds
    rt = PolicyRuntime('actor', FixedActor(edge), critic, cem_config=SMALL_CEM, seed=3,
                       actor_noise_std=0.2)
    acts = []
    for _ in range(2000):
        action, source, info = rt.act(*obs)
        assert source == 'actor' and info['actor_noise_std'] == 0.2 and in_bounds(action)
        acts.append(action)
    acts = np.array(acts)
    half = spec.ACTION_HIGH[:4]
    np.testing.assert_array_equal(acts[:, 4:], np.tile(edge[4:], (2000, 1)))
    z = (acts[:, 2:4] - edge[2:4]) / half[2:4]                 # unclipped dims: N(0, 0.2)
    assert np.all(np.abs(z.mean(axis=0)) < 0.02) and np.all(np.abs(z.std(axis=0) - 0.2) < 0.01)
    assert np.all(acts[:, 0] <= 0.03) and np.mean(acts[:, 0] == np.float32(0.03)) > 0.4
    assert np.all(acts[:, 1] >= -0.03) and np.mean(acts[:, 1] < -0.0299) < 0.6
    again = PolicyRuntime('actor', FixedActor(edge), critic, seed=3, actor_noise_std=0.2)
    np.testing.assert_array_equal(again.act(*obs)[0], acts[0])  # seeded
    quiet = PolicyRuntime('actor', FixedActor(edge), critic, seed=3)
    action, _, info = quiet.act(*obs)
    assert np.array_equal(action, edge) and info['actor_noise_std'] == 0.0
    np.testing.assert_array_equal(info['noise_free_action'], edge)
    noisy, _, info = again.act(*obs)                           # the label without the noise
    np.testing.assert_array_equal(info['noise_free_action'], edge)
    assert not np.array_equal(noisy, edge)
    cem_rt = PolicyRuntime('cem', FixedActor(edge), critic, cem_config=SMALL_CEM, seed=0,
                           actor_noise_std=0.5)
    _, source, info = cem_rt.act(*obs)                         # CEM acts: no noise reported
    assert source == 'cem' and info['actor_noise_std'] == 0.0 and info['actor_candidate']
    assert info['noise_free_action'] is None


def test_cem_episode_uses_actor_as_extra_candidate(critic, obs):
    actor = FixedActor(GOOD)
    rt = PolicyRuntime('cem', actor, critic, cem_config=SMALL_CEM, seed=0)
    rows = critic.stats['head_rows']
    action, source, info = rt.act(*obs)
    assert source == 'cem' and in_bounds(action) and info['actor_candidate']
    assert 0.0 <= info['q'] <= 1.0 and info['fallback'] is None
    assert actor.calls == 1
    assert critic.stats['head_rows'] - rows == 2 * (16 + 1)   # 2 rounds x (16 samples + actor)


@pytest.mark.parametrize('bad', [
    np.float32([np.nan, 0, 0, 0, 0, 1, 0]),            # non-finite
    np.float32([0.5, 0, 0, 0, 0, 1, 0]),               # dx out of bounds (m)
    np.float32([0, 0, 0, 0, 0.5, 0, 0]),               # discrete not 0/1
    np.float32([0, 0, 0]),                             # wrong shape
])
def test_invalid_actor_output_falls_back_to_cem(critic, obs, bad):
    assert check_action(bad) is not None
    rt = PolicyRuntime('actor', FixedActor(bad), critic, cem_config=SMALL_CEM, seed=0)
    action, source, info = rt.act(*obs)
    assert source == 'cem' and in_bounds(action)
    assert info['fallback'].startswith('actor: ') and not info['actor_candidate']


def test_actor_error_falls_back_to_cem(critic, obs):
    # OnnxActor raises ValueError on non-finite model output
    actor = FixedActor(error=ValueError('model m.onnx produced non-finite actions'))
    rt = PolicyRuntime('actor', actor, critic, cem_config=SMALL_CEM, seed=0)
    _, source, info = rt.act(*obs)
    assert source == 'cem' and 'non-finite' in info['fallback']


def test_missing_actor_falls_back_to_cem(critic, obs):
    for mode in ('actor', 'cem', 'switch'):
        rt = PolicyRuntime(mode, None, critic, cem_config=SMALL_CEM, seed=0)
        action, source, info = rt.act(*obs)
        assert source == 'cem' and in_bounds(action) and not info['actor_candidate']
    assert 'no actor loaded' in PolicyRuntime('actor', None, critic).act(*obs)[2]['fallback']


def test_cem_episode_without_critic_uses_the_actor(obs):
    _, source, info = PolicyRuntime('cem', FixedActor(GOOD), None).act(*obs)
    assert source == 'actor' and 'no critic loaded' in info['fallback']


def test_neither_can_act_raises(obs):
    with pytest.raises(NoPolicyError, match='no actor loaded.*no critic loaded'):
        PolicyRuntime('actor', None, None).act(*obs)
    with pytest.raises(NoPolicyError, match='non-finite.*no critic loaded'):
        PolicyRuntime('switch', FixedActor(np.full(7, np.nan, np.float32)), None).act(*obs)


def test_bad_inputs_raise_value_error(critic):
    rt = PolicyRuntime('cem', None, critic)
    with pytest.raises(ValueError, match='image must be uint8'):
        rt.act(np.zeros((SIZE, SIZE, 3), np.float32), np.zeros(6, np.float32))
    with pytest.raises(ValueError, match='proprio'):
        rt.act(np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros(5, np.float32))


class ProbActor(FixedActor):
    """Stand-in actor with the ``discrete_prob`` output (``OnnxActor.act_with_prob``)."""

    has_discrete_prob = True

    def __init__(self, action, prob):
        super().__init__(action)
        self.prob = np.float32(prob)

    def act_with_prob(self, image, proprio):
        return self.act(image, proprio), self.prob


def test_actor_discrete_sub_actions_drawn_from_its_probabilities(critic, obs):
    """actor_sample_discrete draws open, close, terminate from the actor's probabilities; the
    continuous part, the CEM candidate and an actor without probabilities are unchanged."""
    unsure = np.float32([0.01, 0.0, -0.01, 0.0, 1.0, 1.0, 0.0])   # open and close both set
    prob = [0.7, 0.6, 0.0]
    rt = PolicyRuntime('actor', ProbActor(unsure, prob), critic, seed=5,
                       actor_sample_discrete=True)
    acts = []
    for _ in range(2000):
        action, source, info = rt.act(*obs)
        assert source == 'actor' and info['discrete_sampled'] and in_bounds(action)
        acts.append(action)
    acts = np.array(acts)
    np.testing.assert_array_equal(acts[:, :4], np.tile(unsure[:4], (2000, 1)))
    assert np.all(np.abs(acts[:, 4:].mean(axis=0) - prob) < 0.03)
    assert not acts[:, spec.IDX_TERMINATE].any()
    reopened = (acts[:, spec.IDX_OPEN] == 1) & (acts[:, spec.IDX_CLOSE] == 0)
    assert abs(reopened.mean() - 0.7 * 0.4) < 0.03             # open without close: reopens
    again = PolicyRuntime('actor', ProbActor(unsure, prob), critic, seed=5,
                          actor_sample_discrete=True)
    assert all(np.array_equal(again.act(*obs)[0], a) for a in acts[:20])   # seeded
    off = PolicyRuntime('actor', ProbActor(unsure, prob), critic, seed=5)
    action, _, info = off.act(*obs)
    assert np.array_equal(action, unsure) and not info['discrete_sampled']
    plain = PolicyRuntime('actor', FixedActor(unsure), critic, seed=5, actor_sample_discrete=True)
    action, _, info = plain.act(*obs)                          # no probabilities: thresholded
    assert np.array_equal(action, unsure) and not info['discrete_sampled']
    cem_rt = PolicyRuntime('cem', ProbActor(unsure, prob), critic, cem_config=SMALL_CEM, seed=0,
                           actor_sample_discrete=True)
    _, source, info = cem_rt.act(*obs)
    assert source == 'cem' and not info['discrete_sampled'] and info['actor_candidate']


def test_exported_actor_outputs_its_discrete_probabilities(files, obs, tmp_path):
    import torch
    actor, _ = export_tiny_actor(tmp_path / 'p.onnx', seed=4, image_size=SIZE, crop_xywh=CROP)
    onnx_actor = OnnxActor(tmp_path / 'p.onnx', EXPECTED)
    assert onnx_actor.has_discrete_prob
    images = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    proprios = np.tile(obs[1], (5, 1))
    action, prob = onnx_actor.act_with_prob(images, proprios)
    with torch.no_grad():
        _, logits = actor(torch.from_numpy(images), torch.from_numpy(proprios))
    np.testing.assert_allclose(prob, torch.sigmoid(logits).numpy(), atol=1e-5)
    np.testing.assert_array_equal(action[:, 4:], (prob > 0.5).astype(np.float32))
    np.testing.assert_array_equal(onnx_actor.act(images, proprios), action)
    one_action, one_prob = onnx_actor.act_with_prob(images[0], proprios[0])
    assert one_action.shape == (7,) and one_prob.shape == (3,)
    rt = PolicyRuntime('actor', onnx_actor, None, seed=1, actor_sample_discrete=True)
    assert rt.act(images[0], proprios[0])[2]['discrete_sampled']


def test_actor_exported_without_probabilities_still_loads_and_acts(obs, tmp_path):
    """Exports from before 2026-12-02 have the ``action`` output only: they load, act, and give
    no probabilities (sampling then keeps their thresholded bits)."""
    import io

    import torch

    from awopt_ros.learning.export import make_contract, save_with_metadata
    from awopt_ros.learning.networks import Actor, ActorConfig, ActorPolicy
    torch.manual_seed(0)
    policy = ActorPolicy(Actor(ActorConfig(image_size=SIZE, channels=4, num_conv=2,
                                           hidden=16))).eval()
    buf = io.BytesIO()
    torch.onnx.export(policy, (torch.zeros((1, SIZE, SIZE, 3), dtype=torch.uint8),
                               torch.zeros((1, 6))), buf, dynamo=False,
                      input_names=['image', 'proprio'], output_names=['action'],
                      dynamic_axes={'image': {0: 'N'}, 'proprio': {0: 'N'}, 'action': {0: 'N'}})
    save_with_metadata(buf.getvalue(), tmp_path / 'old.onnx', make_contract(SIZE, CROP))
    old = OnnxActor(tmp_path / 'old.onnx', EXPECTED)
    assert not old.has_discrete_prob
    action, prob = old.act_with_prob(*obs)
    assert prob is None and np.array_equal(action, old.act(*obs))
    rt = PolicyRuntime('actor', old, None, seed=1, actor_sample_discrete=True)
    action, _, info = rt.act(*obs)
    assert np.array_equal(action, old.act(*obs)) and not info['discrete_sampled']


def test_real_models_seeded_and_in_bounds(files, obs):
    paths = ModelPaths(str(files['actor1']), str(files['enc1']), str(files['head1']))
    a = PolicyRuntime.from_files('switch', paths, EXPECTED, cem_config=SMALL_CEM, seed=3)
    b = PolicyRuntime.from_files('switch', paths, EXPECTED, cem_config=SMALL_CEM, seed=3)
    for _ in range(6):
        assert a.begin_episode() == b.begin_episode()
        ra, rb = a.act(*obs), b.act(*obs)
        assert ra[1] == rb[1] and np.array_equal(ra[0], rb[0]) and in_bounds(ra[0])
        assert ra[2]['model_mtime_ns'] is not None
    info = a.model_info()
    assert info['mode'] == 'switch' and info['model_version'] == 1
    assert set(info['models']) == {'actor', 'critic'}
    assert info['models']['critic']['contract']['role'] == 'critic_encoder'


@pytest.mark.parametrize('mode, paths, missing', [
    ('actor', ModelPaths(), 'actor'), ('cem', ModelPaths(actor='a.onnx'), 'critic'),
    ('switch', ModelPaths(actor='a.onnx'), 'critic')])
def test_from_files_requires_the_models_of_the_mode(mode, paths, missing):
    with pytest.raises(ValueError, match=f'needs {missing}'):
        PolicyRuntime.from_files(mode, paths, EXPECTED)


def test_from_files_names_the_failing_group(files, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        PolicyRuntime.from_files('cem', ModelPaths('', str(tmp_path / 'e.onnx'),
                                                   str(tmp_path / 'h.onnx')), EXPECTED)
    assert err.value.model_group == 'critic'
    with pytest.raises(ValueError, match='crop_xywh') as err:
        PolicyRuntime.from_files('actor', ModelPaths(str(files['bad_actor'])), EXPECTED)
    assert err.value.model_group == 'actor'
    with pytest.raises(ValueError, match='both files'):
        ModelPaths(critic_encoder='e.onnx')


# --- hot swap -----------------------------------------------------------------------------------

def test_reload_swaps_on_replace_and_keeps_old_on_mismatch(files, tmp_path, obs):
    live = tmp_path / 'actor.onnx'
    _copy(files['actor1'], live)
    rt = PolicyRuntime.from_files('actor', ModelPaths(str(live)), EXPECTED, seed=0)
    first = rt.models
    want1 = OnnxActor(files['actor1']).act(*obs)
    want2 = OnnxActor(files['actor2']).act(*obs)
    assert not np.allclose(want1, want2)

    result = rt.reload_if_changed()                 # unchanged: nothing happens
    assert not result and result.version == 1 and rt.models is first

    replace_atomically(lambda t: _copy(files['actor2'], t), live)
    result = rt.reload_if_changed()
    assert result.swapped == ('actor',) and not result.rejected and result.version == 2
    action, source, info = rt.act(*obs)
    assert source == 'actor' and info['model_version'] == 2
    np.testing.assert_allclose(action, want2, atol=1e-6)
    assert info['model_mtime_ns'] == os.stat(live).st_mtime_ns
    assert rt.model_info()['models']['actor']['mtime_ns'] == os.stat(live).st_mtime_ns

    replace_atomically(lambda t: _copy(files['bad_actor'], t), live)   # wrong crop
    result = rt.reload_if_changed()
    assert not result.swapped and result.version == 2
    assert 'crop_xywh' in result.rejected['actor'] and 'keeping model version 2' in \
        result.rejected['actor']
    np.testing.assert_allclose(rt.act(*obs)[0], want2, atol=1e-6)  # the old model runs on
    assert not rt.reload_if_changed()               # a rejected file is not retried

    live.write_bytes(b'not an onnx model')            # corrupt file: rejected as well
    result = rt.reload_if_changed()
    assert 'actor' in result.rejected and rt.version == 2

    replace_atomically(lambda t: _copy(files['actor1'], t), live)
    assert rt.reload_if_changed().swapped == ('actor',) and rt.version == 3
    np.testing.assert_allclose(rt.act(*obs)[0], want1, atol=1e-6)


def test_reload_keeps_model_when_file_removed(files, tmp_path, obs):
    live = tmp_path / 'actor.onnx'
    _copy(files['actor1'], live)
    rt = PolicyRuntime.from_files('actor', ModelPaths(str(live)), EXPECTED)
    live.unlink()
    result = rt.reload_if_changed()
    assert 'not found' in result.rejected['actor'] and rt.version == 1
    assert rt.act(*obs)[1] == 'actor'


def test_critic_pair_swap_waits_for_the_head(files, tmp_path, obs):
    enc, head = tmp_path / 'enc.onnx', tmp_path / 'head.onnx'
    _copy(files['enc1'], enc)
    _copy(files['head1'], head)
    rt = PolicyRuntime.from_files('cem', ModelPaths('', str(enc), str(head)), EXPECTED,
                                  cem_config=SMALL_CEM, seed=0)
    old_critic = rt.models.critic
    replace_atomically(lambda t: _copy(files['enc2'], t), enc)     # encoder first ...
    result = rt.reload_if_changed()
    assert 'pair_id' in result.rejected['critic'] and rt.models.critic is old_critic
    replace_atomically(lambda t: _copy(files['head2'], t), head)   # ... then the head
    result = rt.reload_if_changed()
    assert result.swapped == ('critic',) and rt.version == 2
    assert rt.models.critic.encoder_contract['pair_id'] != old_critic.encoder_contract['pair_id']
    action, source, info = rt.act(*obs)
    assert source == 'cem' and in_bounds(action) and info['model_version'] == 2


def test_watcher_waits_for_the_file_to_settle(tmp_path):
    path = tmp_path / 'm.onnx'
    path.write_bytes(b'a')
    now = [100.0]
    watcher = ModelWatcher({'actor': (str(path),)}, settle_s=0.5, clock=lambda: now[0])
    watcher.mark('actor', watcher.signature('actor'))
    assert watcher.poll() == ({}, ())
    path.write_bytes(b'ab')                       # a writer still writing in place
    assert watcher.poll() == ({}, ('actor',))
    now[0] += 0.3
    path.write_bytes(b'abc')                      # changed again: the settle time restarts
    assert watcher.poll() == ({}, ('actor',))
    now[0] += 0.3
    assert watcher.poll() == ({}, ('actor',))
    now[0] += 0.3
    ready, pending = watcher.poll()
    assert ready == {'actor': (file_signature(path),)} and pending == ()
    watcher.mark('actor', ready['actor'])
    assert watcher.poll() == ({}, ())
    with pytest.raises(ValueError, match='settle_s'):
        ModelWatcher({}, settle_s=-1.0)


def _copy(src, dst):
    with open(src, 'rb') as f_in, open(dst, 'wb') as f_out:
        f_out.write(f_in.read())


# --- model faults: onnxruntime errors fall back, bad files and graphs are refused --------------

def _ort_fail(*args, **kwargs):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail
    raise Fail('[ONNXRuntimeError] : 1 : FAIL : injected failure')


def test_onnxruntime_error_in_the_actor_falls_back_to_cem_or_raises_no_policy(files, critic,
                                                                              obs, monkeypatch):
    import onnxruntime
    actor = OnnxActor(files['actor1'], EXPECTED)
    monkeypatch.setattr(onnxruntime.InferenceSession, 'run', _ort_fail)   # CEM uses IOBinding
    action, source, info = PolicyRuntime('actor', actor, critic, cem_config=SMALL_CEM,
                                         seed=0).act(*obs)
    assert source == 'cem' and in_bounds(action)
    assert 'failed in onnxruntime' in info['fallback'] and 'injected' in info['fallback']
    with pytest.raises(NoPolicyError, match='injected failure.*no critic loaded'):
        PolicyRuntime('actor', actor, None).act(*obs)


def test_onnxruntime_error_in_cem_falls_back_to_the_actor(files, critic, obs, monkeypatch):
    import onnxruntime
    monkeypatch.setattr(onnxruntime.InferenceSession, 'run_with_iobinding', _ort_fail)
    rt = PolicyRuntime('cem', OnnxActor(files['actor1'], EXPECTED), critic,
                       cem_config=SMALL_CEM, seed=0)
    action, source, info = rt.act(*obs)
    assert source == 'actor' and in_bounds(action) and 'injected' in info['fallback']


def test_any_exception_from_a_model_counts_as_unable_to_act(critic, obs):
    class OddError(Exception):
        pass
    rt = PolicyRuntime('actor', FixedActor(error=OddError('odd')), critic,
                       cem_config=SMALL_CEM, seed=0)
    assert rt.act(*obs)[1] == 'cem'
    with pytest.raises(NoPolicyError, match='OddError: odd'):
        PolicyRuntime('actor', FixedActor(error=OddError('odd')), None).act(*obs)


@pytest.fixture(scope='module')
def shape_liar(files, tmp_path_factory):
    """A 32 px actor whose contract says SIZE px (valid contract, graph differs)."""
    d = tmp_path_factory.mktemp('shape_liar')
    export_tiny_actor(d / 'a32.onnx', seed=3, image_size=32, crop_xywh=CROP)
    return rewrite_contract(d / 'a32.onnx', d / 'a32_says16.onnx', image_size=[SIZE, SIZE])


def test_from_files_refuses_unreadable_and_shape_mismatching_models(files, shape_liar,
                                                                    tmp_path):
    with pytest.raises(ValueError, match=r"graph input 'image'.*\[N, 32, 32, 3\]") as err:
        PolicyRuntime.from_files('actor', ModelPaths(str(shape_liar)), EXPECTED)
    assert err.value.model_group == 'actor'
    head = tmp_path / 'head.onnx'
    head.write_bytes(files['head1'].read_bytes()[:300])
    with pytest.raises(ValueError, match='not a readable ONNX model') as err:
        PolicyRuntime.from_files('cem', ModelPaths('', str(files['enc1']), str(head)),
                                 EXPECTED)
    assert err.value.model_group == 'critic' and str(head) in str(err.value)


def test_reload_refuses_truncated_and_shape_mismatching_models(files, shape_liar, tmp_path,
                                                              obs):
    live = tmp_path / 'actor.onnx'
    _copy(files['actor1'], live)
    rt = PolicyRuntime.from_files('actor', ModelPaths(str(live)), EXPECTED, seed=0)
    want = OnnxActor(files['actor1']).act(*obs)

    replace_atomically(lambda t: _copy(shape_liar, t), live)
    result = rt.reload_if_changed()
    assert not result.swapped and rt.version == 1
    assert "graph input 'image'" in result.rejected['actor']
    assert 'keeping model version 1' in result.rejected['actor']
    np.testing.assert_allclose(rt.act(*obs)[0], want, atol=1e-6)   # the old model runs on

    data = files['actor2'].read_bytes()
    replace_atomically(lambda t: open(t, 'wb').write(data[:len(data) // 2]), live)
    result = rt.reload_if_changed()
    assert not result.swapped and rt.version == 1
    assert 'is not a readable ONNX model (truncated or corrupt)' in result.rejected['actor']
    assert str(live) in result.rejected['actor']
    action, source, _ = rt.act(*obs)
    assert source == 'actor'
    np.testing.assert_allclose(action, want, atol=1e-6)


def test_critic_pair_whose_graphs_differ_from_their_contract_is_refused(tmp_path):
    """A 32 px critic pair whose two (consistent) contracts say SIZE px."""
    import torch

    from awopt_ros.learning.critic import (Critic, CriticConfig, export_critic,
                                           make_critic_contract)
    torch.manual_seed(0)
    critic = Critic(CriticConfig(image_size=32, channels=4, num_conv=2, num_strided=2,
                                 head_conv=1, hidden=8)).eval()
    enc, head = tmp_path / 'enc32.onnx', tmp_path / 'head32.onnx'
    export_critic(critic, enc, head, make_critic_contract(32, CROP, 'test/x-v0'),
                  check_parity=False)
    for path in (enc, head):
        rewrite_contract(path, path, image_size=[SIZE, SIZE])
    with pytest.raises(ValueError) as err:
        PolicyRuntime.from_files('cem', ModelPaths('', str(enc), str(head)), EXPECTED)
    msg = str(err.value)
    assert err.value.model_group == 'critic' and str(enc) in msg
    assert "graph input 'image'" in msg and '[N, 32, 32, 3]' in msg, msg
