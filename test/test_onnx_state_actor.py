"""core.onnx_policy.OnnxStateActor: the state-actor contract (insertion's residual)."""
import io
import json
import warnings

import numpy as np
import onnx
import pytest
import torch

from conftest import export_tiny_actor

from awopt_ros.core.onnx_policy import (CONTRACT_KEY, ModelContractError, ModelFileError,
                                        OnnxStateActor, expected_state_contract)
from awopt_ros.core.task import INSERTION
from awopt_ros.learning.export import save_with_metadata

D, A = INSERTION.state_dim, INSERTION.action_dim


class _Mlp(torch.nn.Module):
    """Normalise inside, two layers, ``out_scale * tanh`` (or a plain linear) output."""

    def __init__(self, d=D, a=A, out_scale=1.0, squash=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.register_buffer('scale', torch.ones(d) if d != D else
                             torch.tensor(INSERTION.state_scale, dtype=torch.float32))
        self.net = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, a))
        self.out_scale, self.squash = out_scale, squash

    def forward(self, observation):
        y = self.net(observation / self.scale)
        return self.out_scale * torch.tanh(y) if self.squash else self.out_scale * y


def _contract(**changes):
    c = dict(expected_state_contract('insertion'), algorithm='awac', dataset='test/ins-v0',
             version=1, residual_alpha_m=0.002, kp=[1.0, 1.0, 0.3])
    c.update(changes)
    return c


def _export(path, module=None, contract=None, d=D, dynamic=True, input_names=('observation',),
            output_names=('action',)):
    module = (module or _Mlp(d=d)).eval()
    buf = io.BytesIO()
    args = tuple(torch.zeros(2, d) for _ in input_names)
    axes = {n: {0: 'N'} for n in input_names + output_names} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, args, buf, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=axes, opset_version=17,
                          dynamo=False)
    save_with_metadata(buf.getvalue(), path, contract if contract is not None else _contract(),
                       model_card='tiny state actor')
    return module, path


def _drop_keys(src, dst, *keys):
    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == CONTRACT_KEY:
            c = json.loads(prop.value)
            for k in keys:
                c.pop(k)
            prop.value = json.dumps(c)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return _export(tmp_path_factory.mktemp('state') / 'tiny.onnx')


@pytest.mark.parametrize('batch', [1, 64])
def test_parity_with_torch_at_deployed_batch_sizes(tiny, batch):
    module, path = tiny
    actor = OnnxStateActor(path, expected_task='insertion')
    assert (actor.task_name, actor.observation_dim, actor.action_dim) == ('insertion', D, A)
    assert actor.observation_names == INSERTION.state_names
    assert actor.action_names == INSERTION.action_names
    obs = np.random.default_rng(batch).normal(0, 1, (batch, D)).astype(np.float32) \
        * np.asarray(INSERTION.state_scale, np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(obs)).numpy()
    got = actor.act(obs)
    assert got.shape == (batch, A) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)
    one = actor.act(obs[0])
    assert one.shape == (A,)
    np.testing.assert_allclose(one, ref[0], atol=1e-5)


def test_expected_task_accepts_a_task_object_and_none(tiny):
    _, path = tiny
    assert OnnxStateActor(path, expected_task=INSERTION).task_name == 'insertion'
    assert OnnxStateActor(path).contract['residual_alpha_m'] == 0.002


def test_outputs_are_clipped_to_the_contract_bounds(tmp_path):
    _, path = _export(tmp_path / 'wide.onnx', _Mlp(out_scale=100.0, squash=False))
    out = OnnxStateActor(path, 'insertion').act(
        np.random.default_rng(0).normal(0, 1, (32, D)).astype(np.float32))
    assert np.all(out >= -1.0) and np.all(out <= 1.0)
    assert np.any(np.abs(out) == 1.0)


def test_wrong_task_is_refused_naming_the_fields(tiny, tmp_path):
    _, path = tiny
    with pytest.raises(ModelContractError) as err:
        OnnxStateActor(path, expected_task='grasp')
    text = str(err.value)
    assert 'task: model has insertion, expected grasp' in text
    assert 'observation_names' in text and 'action_names' in text
    with pytest.raises(ValueError, match='unknown task'):
        OnnxStateActor(path, expected_task='screwing')


@pytest.mark.parametrize('field, value', [
    ('observation_names', list(reversed(INSERTION.state_names))),
    ('action_names', ['a', 'b', 'c']),
    ('action_low', [-0.5, -1.0, -1.0]),
    ('action_units', ['m', 'm', 'm'])])
def test_contract_field_mismatch_is_named(tmp_path, field, value):
    _, path = _export(tmp_path / 'm.onnx', contract=_contract(**{field: value}))
    with pytest.raises(ModelContractError, match=field):
        OnnxStateActor(path, expected_task='insertion')


@pytest.mark.parametrize('keys', [('task',), ('observation_names',), ('residual_alpha_m',),
                                  ('kp', 'version')])
def test_missing_contract_keys_are_named(tiny, tmp_path, keys):
    _, path = tiny
    bad = _drop_keys(path, tmp_path / 'k.onnx', *keys)
    with pytest.raises(ModelContractError, match='contract keys missing') as err:
        OnnxStateActor(bad)
    assert all(repr(k) in str(err.value) for k in keys)


def test_an_image_actor_is_refused_with_a_hint(tmp_path):
    path = tmp_path / 'image.onnx'
    export_tiny_actor(path)
    with pytest.raises(ModelContractError, match="image actor's contract .*OnnxActor"):
        OnnxStateActor(path, expected_task='insertion')
    old = _drop_keys(path, tmp_path / 'old_image.onnx', 'task')    # files from before tasks
    with pytest.raises(ModelContractError, match="task 'grasp'.*OnnxActor"):
        OnnxStateActor(old)


def test_missing_metadata_and_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        OnnxStateActor(tmp_path / 'nope.onnx')
    (tmp_path / 'junk.onnx').write_bytes(b'not onnx at all')
    with pytest.raises(ModelFileError, match='junk.onnx'):
        OnnxStateActor(tmp_path / 'junk.onnx')


def test_inconsistent_contract_lengths(tmp_path):
    _, path = _export(tmp_path / 'i.onnx', contract=_contract(action_low=[-1.0, -1.0]))
    with pytest.raises(ModelContractError, match='inconsistent'):
        OnnxStateActor(path)


@pytest.mark.parametrize('kwargs, words', [
    (dict(d=14), 'dimension 1 is 14, contract needs 15'),
    (dict(module=_Mlp(a=2)), "'action'"),
    (dict(dynamic=False), 'batch dimension fixed'),
    (dict(input_names=('obs',)), 'graph io'),
    (dict(output_names=('residual',)), 'graph io')])
def test_graph_differing_from_the_contract_is_refused(tmp_path, kwargs, words):
    _, path = _export(tmp_path / 'g.onnx', **kwargs)
    with pytest.raises(ModelContractError, match='contract|graph') as err:
        OnnxStateActor(path, expected_task='insertion')
    assert words in str(err.value)


def test_act_refuses_bad_observations(tiny):
    actor = OnnxStateActor(tiny[1], 'insertion')
    with pytest.raises(ValueError, match=r'\(15,\)'):
        actor.act(np.zeros(14, np.float32))
    with pytest.raises(ValueError, match=r'\(15,\)'):
        actor.act(np.zeros((2, 3, 15), np.float32))
    bad = np.zeros(D, np.float32)
    bad[3] = np.nan
    with pytest.raises(ValueError, match='non-finite'):
        actor.act(bad)
    with pytest.raises(ValueError, match='threads'):
        OnnxStateActor(tiny[1], threads=0)


class _NanOnLargeInput(torch.nn.Module):
    def forward(self, observation):
        return torch.sqrt(0.5 - observation[:, :A])    # NaN where an entry exceeds 0.5


def test_non_finite_output_raises(tmp_path):
    _, path = _export(tmp_path / 'nan.onnx', _NanOnLargeInput())
    actor = OnnxStateActor(path, 'insertion')
    assert np.all(np.isfinite(actor.act(np.zeros(D, np.float32))))
    with pytest.raises(ValueError, match='non-finite actions'):
        actor.act(np.ones(D, np.float32))
