"""Tests of the QT-Opt-style critic (learning.critic) and its ONNX runtime (core.onnx_critic)."""
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from awopt_ros.core import spec
from awopt_ros.core.cem import CEM, CEMConfig
from awopt_ros.core.onnx_critic import OnnxCritic
from awopt_ros.core.onnx_policy import (ModelContractError, expected_contract,
                                        read_contract, read_metadata)
from awopt_ros.learning.critic import (Critic, CriticConfig, critic_loss,
                                       critic_parity_check, export_critic,
                                       make_critic_contract)
from conftest import rewrite_contract

torch.set_num_threads(1)
SIZE = 32
CROP = [80, 0, 480, 480]


def tiny_config(**kw):
    """32 px, 8 channels: trunk 32 -> 16 -> 8 -> 4, feature map (8, 4, 4)."""
    base = dict(image_size=SIZE, channels=8, num_conv=3, num_strided=3, feature_channels=8,
                head_conv=1, hidden=16)
    base.update(kw)
    return CriticConfig(**base)


def random_batch(rng, n, size=SIZE):
    img = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    pro = rng.normal(0.0, 0.3, (n, spec.PROPRIO_DIM)).astype(np.float32)
    return img, pro


def random_actions(rng, shape):
    a = rng.uniform(spec.ACTION_LOW, spec.ACTION_HIGH, shape + (spec.ACTION_DIM,))
    a[..., spec.DISCRETE] = np.round(a[..., spec.DISCRETE])
    return a.astype(np.float32)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Export a tiny random critic; return (critic, encoder path, head path, result)."""
    d = tmp_path_factory.mktemp('critic')
    torch.manual_seed(0)
    critic = Critic(tiny_config()).eval()
    enc, head = d / 'enc.onnx', d / 'head.onnx'
    result = export_critic(critic, enc, head, make_critic_contract(SIZE, CROP, 'test/v0'),
                           model_card='tiny critic')
    return critic, enc, head, result


class Counting:
    """Proxy around an onnxruntime session recording the batch rows of every run."""

    def __init__(self, session, key):
        self.session, self.key, self.rows = session, key, []

    def run(self, outputs, feeds):
        self.rows.append(int(feeds[self.key].shape[0]))
        return self.session.run(outputs, feeds)

    def io_binding(self):
        return CountingBinding(self.session.io_binding(), self.key)

    def run_with_iobinding(self, binding, *args):
        self.rows.append(binding.rows)
        return self.session.run_with_iobinding(binding.binding, *args)

    def __getattr__(self, name):
        return getattr(self.session, name)


class CountingBinding:
    """Proxy around an IOBinding remembering the batch rows bound to input ``key``."""

    def __init__(self, binding, key):
        self.binding, self.key, self.rows = binding, key, None

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        if name == self.key:         # the input whose rows are counted
            self.rows = int(shape[0])
        return self.binding.bind_input(name, device_type, device_id, element_type, shape,
                                       buffer_ptr)

    def __getattr__(self, name):
        return getattr(self.binding, name)


# --- config and shapes -----------------------------------------------------------------------

@pytest.mark.parametrize('field,value', [('image_size', 4), ('channels', 0), ('num_conv', 0),
                                         ('head_conv', 0), ('hidden', 0),
                                         ('feature_size', 0), ('head_pooling', 'avg'),
                                         ('feature_channels', 0), ('head_kernel', 2),
                                         ('coord_conv', 'yes'), ('channels', 2.5)])
def test_config_validation_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        CriticConfig(**{field: value})


def test_config_strided_layers_checked():
    with pytest.raises(ValueError, match='num_strided'):
        CriticConfig(num_conv=2, num_strided=3)


def test_feature_map_sizes():
    assert CriticConfig().feature_shape() == (16, 4, 4)               # 64 px: 4 stride-2 convs
    assert CriticConfig().pool_kernel() == 1
    assert CriticConfig(image_size=472).feature_hw() == (4, 4)         # 30 -> maxpool 7
    assert CriticConfig(image_size=472).pool_kernel() == 7
    assert CriticConfig(num_strided=3).feature_hw() == (4, 4)          # 8 -> maxpool 2
    assert CriticConfig(num_strided=3, feature_size=8).feature_hw() == (8, 8)
    assert tiny_config().feature_shape() == (8, 4, 4)
    assert CriticConfig().to_dict()['image_size'] == 64


@pytest.mark.parametrize('pooling', ['max', 'max_mean', 'flatten'])
def test_shapes_32px(pooling):
    rng = np.random.default_rng(0)
    critic = Critic(tiny_config(head_pooling=pooling))
    img, pro = random_batch(rng, 3)
    act = random_actions(rng, (3,))
    img_t, pro_t, act_t = map(torch.from_numpy, (img, pro, act))
    feats = critic.encode(img_t)
    assert feats.shape == (3, 8, 4, 4) and feats.dtype == torch.float32
    logit = critic(img_t, pro_t, act_t)
    assert logit.shape == (3,) and logit.dtype == torch.float32
    q = critic.q(img_t, pro_t, act_t)
    assert torch.all((q > 0) & (q < 1))
    with pytest.raises(ValueError, match='expects 32x32'):
        critic.encode(torch.zeros((1, 16, 16, 3), dtype=torch.uint8))


def test_encoder_accepts_472px():
    critic = Critic(CriticConfig(image_size=472, channels=4, feature_channels=4, hidden=8))
    with torch.no_grad():
        feats = critic.encode(torch.zeros((1, 472, 472, 3), dtype=torch.uint8))
        logit = critic.head(feats, torch.zeros((1, 6)), torch.zeros((1, 7)))
    assert feats.shape == (1, 4, 4, 4) and logit.shape == (1,)


@pytest.mark.parametrize('kw', [{}, {'coord_conv': False}, {'head_kernel': 3, 'head_conv': 2}])
def test_split_first_conv_and_folded_normalisation_match_reference(kw):
    """The encoder's split first conv (image weights / 255 + constant CoordConv term) and the
    head's folded input normalisation equal the plain formulas (concatenate, then conv)."""
    torch.manual_seed(2)
    rng = np.random.default_rng(2)
    critic = Critic(tiny_config(**kw)).eval()
    img, pro = map(torch.from_numpy, random_batch(rng, 3))
    act = torch.from_numpy(random_actions(rng, (3,)))
    enc, head = critic.encoder, critic.head
    with torch.no_grad():
        x = img.permute(0, 3, 1, 2).float() / 255.0
        if critic.config.coord_conv:
            x = torch.cat([x, enc.coords.expand(3, -1, -1, -1)], dim=1)
        want_f = enc.project(enc.trunk(x))
        a = act / torch.from_numpy(spec.ACTION_HIGH).float()
        p = (pro - torch.tensor(spec.PROPRIO_OFFSET)) / torch.tensor(spec.PROPRIO_SCALE)
        v = head.merge(torch.cat([a, p], dim=1))
        want = head._rest(want_f + v[:, :, None, None])
        torch.testing.assert_close(critic.encode(img), want_f, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(critic(img, pro, act), want, atol=1e-5, rtol=1e-5)


def test_score_candidates_matches_per_candidate_forward():
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    critic = Critic(tiny_config()).eval()
    b, k = 2, 5
    img, pro = map(torch.from_numpy, random_batch(rng, b))
    cand = torch.from_numpy(random_actions(rng, (b, k)))
    with torch.no_grad():
        feats = critic.encode(img)
        got = critic.score_candidates(feats, pro, cand)
        want = torch.stack([torch.stack([critic(img[i:i + 1], pro[i:i + 1], cand[i, j:j + 1])[0]
                                         for j in range(k)]) for i in range(b)])
        np_scores = critic.make_score_fn(feats, pro)(cand.numpy())
    assert got.shape == (b, k)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np_scores, torch.sigmoid(want).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match='candidates'):
        critic.score_candidates(feats, pro, cand[..., :6])


# --- loss ------------------------------------------------------------------------------------

def test_critic_loss_is_bce_and_validates():
    logits = torch.tensor([0.0, 2.0, -1.0])
    target = torch.tensor([1.0, 0.25, 0.0])
    want = -(target * torch.log(torch.sigmoid(logits))
             + (1 - target) * torch.log(1 - torch.sigmoid(logits))).mean()
    torch.testing.assert_close(critic_loss(logits, target), want)
    with pytest.raises(ValueError, match='same shape'):
        critic_loss(logits, target[:2])
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        critic_loss(logits, torch.tensor([1.5, 0.0, 0.0]))


def test_loss_decreases_on_toy_target():
    """Target Q = 1 when dx > 0 (and the image is bright), else 0: fit with 40 Adam steps."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    critic = Critic(tiny_config())
    img, pro = map(torch.from_numpy, random_batch(rng, 32))
    act = torch.from_numpy(random_actions(rng, (32,)))
    target = (act[:, 0] > 0).float() * (img.float().mean(dim=(1, 2, 3)) > 100).float()
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = critic_loss(critic(img, pro, act), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


# --- export ----------------------------------------------------------------------------------

def test_export_parity_batch_1_and_64(exported):
    critic, enc, head, result = exported
    assert set(result['parity']) == {1, 64}
    assert all(v['q'] <= 1e-4 for v in result['parity'].values())
    again = critic_parity_check(critic, enc, head, SIZE, batch_sizes=(1, 64), seed=3)
    assert all(v['q'] <= 1e-4 and v['features'] <= 1e-4 for v in again.values())


def test_parity_check_detects_changed_weights(exported):
    critic, enc, head, _ = exported
    changed = Critic(critic.config).eval()
    changed.load_state_dict(critic.state_dict())
    with torch.no_grad():
        changed.head.mlp[-1].bias += 1.0
    with pytest.raises(ValueError, match='parity failed'):
        critic_parity_check(changed, enc, head, SIZE, batch_sizes=(1,))


def test_export_metadata_and_graph_io(exported):
    _, enc, head, result = exported
    ce, ch = read_contract(enc), read_contract(head)
    assert (ce['role'], ch['role']) == ('critic_encoder', 'critic_head')
    assert ce['feature_shape'] == ch['feature_shape'] == [8, 4, 4]
    assert ce['pair_id'] == ch['pair_id']
    assert ce['algorithm'] == 'awopt-critic' and ce['image_size'] == [SIZE, SIZE]
    assert ce['crop_xywh'] == CROP and ce['dataset'] == 'test/v0'
    assert result['encoder_contract'] == ce and result['head_contract'] == ch
    assert read_metadata(head)['model_card'] == 'tiny critic'
    ge, gh = onnx.load(str(enc)).graph, onnx.load(str(head)).graph
    assert onnx.load(str(enc)).opset_import[0].version == 17
    types = {i.name: i.type.tensor_type for i in list(ge.input) + list(gh.input)}
    assert types['image'].elem_type == TensorProto.UINT8
    for name in ('features', 'proprio', 'action'):
        assert types[name].elem_type == TensorProto.FLOAT
    outs = [o.type.tensor_type for o in list(ge.output) + list(gh.output)]
    for t in list(types.values()) + outs:
        assert t.shape.dim[0].dim_param == 'N'
    assert [o.name for o in ge.output] == ['features'] and [o.name for o in gh.output] == ['q']
    assert len(gh.output[0].type.tensor_type.shape.dim) == 1


def test_export_rejects_contract_of_other_size(tmp_path):
    critic = Critic(tiny_config())
    with pytest.raises(ValueError, match='image_size'):
        export_critic(critic, tmp_path / 'e.onnx', tmp_path / 'h.onnx',
                      make_critic_contract(64, CROP))


# --- OnnxCritic ------------------------------------------------------------------------------

def test_onnx_critic_matches_torch(exported):
    critic, enc, head, _ = exported
    oc = OnnxCritic(enc, head, expected=expected_contract(SIZE, CROP))
    rng = np.random.default_rng(5)
    img, pro = random_batch(rng, 3)
    cand = random_actions(rng, (3, 4))
    feats = oc.encode(img)
    assert feats.shape == (3, 8, 4, 4) and feats.dtype == np.float32
    scores = oc.score(feats, pro, cand)
    with torch.no_grad():
        want = torch.sigmoid(critic.score_candidates(
            torch.from_numpy(feats), torch.from_numpy(pro), torch.from_numpy(cand))).numpy()
    assert scores.shape == (3, 4) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, want, atol=1e-5)
    np.testing.assert_allclose(oc.q(feats, pro, cand[:, 2]), scores[:, 2], atol=1e-6)


def test_onnx_critic_input_errors(exported):
    _, enc, head, _ = exported
    oc = OnnxCritic(enc, head)
    rng = np.random.default_rng(0)
    img, pro = random_batch(rng, 2)
    feats = oc.encode(img)
    with pytest.raises(ValueError, match='uint8'):
        oc.encode(img.astype(np.float32))
    with pytest.raises(ValueError, match=r'\(N, H, W, 3\)'):
        oc.encode(img[0])
    with pytest.raises(ValueError, match='expects 32x32'):
        oc.encode(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match='features must be float32'):
        oc.q(feats.astype(np.float64), pro, random_actions(rng, (2,)))
    with pytest.raises(ValueError, match='features must be'):
        oc.q(feats[:, :4], pro, random_actions(rng, (2,)))
    with pytest.raises(ValueError, match='proprio'):
        oc.q(feats, pro[:, :5], random_actions(rng, (2,)))
    with pytest.raises(ValueError, match='actions'):
        oc.q(feats, pro, random_actions(rng, (3,)))
    with pytest.raises(ValueError, match='candidates'):
        oc.score(feats, pro, random_actions(rng, (2,)))
    with pytest.raises(ValueError, match='proprio'):
        oc.cem_action(img[0], pro, CEM(seed=0))


def test_onnx_critic_contract_mismatches(exported, tmp_path):
    critic, enc, head, _ = exported
    with pytest.raises(ModelContractError, match='crop_xywh') as info:
        OnnxCritic(enc, head, expected=expected_contract(SIZE, [0, 0, 640, 480]))
    assert any(line.startswith('encoder crop_xywh') for line in info.value.mismatches)
    assert any(line.startswith('head crop_xywh') for line in info.value.mismatches)
    with pytest.raises(ModelContractError, match='image_size'):
        OnnxCritic(enc, head, expected=expected_contract(64, CROP))
    with pytest.raises(ModelContractError, match='role'):       # swapped files
        OnnxCritic(head, enc)
    bad_shape = rewrite_contract(head, tmp_path / 'h_shape.onnx', feature_shape=[8, 2, 2])
    with pytest.raises(ModelContractError, match='feature_shape'):
        OnnxCritic(enc, bad_shape)
    other = rewrite_contract(head, tmp_path / 'h_other.onnx', pair_id='0123456789abcdef')
    with pytest.raises(ModelContractError, match='pair_id'):
        OnnxCritic(enc, other)


def test_cem_action_in_bounds_and_not_worse_than_random(exported):
    _, enc, head, _ = exported
    oc = OnnxCritic(enc, head)
    rng = np.random.default_rng(7)
    img, pro = random_batch(rng, 1)
    rand = random_actions(rng, (16,))
    action, q = oc.cem_action(img[0], pro[0], CEM(CEMConfig(iterations=2, samples=32),
                                                 seed=0), extra_candidates=rand)
    assert action.shape == (7,) and action.dtype == np.float32
    assert np.all(action >= spec.ACTION_LOW) and np.all(action <= spec.ACTION_HIGH)
    assert set(np.unique(action[spec.DISCRETE])) <= {0.0, 1.0}
    feats = oc.encode(img)
    q_rand = oc.q(np.repeat(feats, 16, axis=0), np.repeat(pro, 16, axis=0), rand)
    assert q >= float(q_rand.max()) - 1e-7
    assert abs(q - float(oc.q(feats, pro, action[None])[0])) < 1e-6
    fresh = random_actions(np.random.default_rng(8), (64,))
    q_fresh = oc.q(np.repeat(feats, 64, axis=0), np.repeat(pro, 64, axis=0), fresh)
    assert q >= float(np.median(q_fresh))


def test_cem_action_encodes_once_and_runs_head_once_per_iteration(exported):
    _, enc, head, _ = exported
    oc = OnnxCritic(enc, head)
    oc.encoder_session = Counting(oc.encoder_session, 'image')
    oc.head_session = Counting(oc.head_session, 'features')
    img, pro = random_batch(np.random.default_rng(2), 1)
    cfg = CEMConfig(iterations=3, samples=16, elites=4)
    oc.cem_action(img[0], pro[0], CEM(cfg, seed=1), extra_candidates=np.zeros(7, np.float32))
    assert oc.encoder_session.rows == [1]
    assert oc.head_session.rows == [16 + 1] * 3
    assert oc.stats == {'encoder_runs': 1, 'encoder_rows': 1, 'head_runs': 3,
                        'head_rows': 51}


def test_onnx_critic_module_imports_no_torch():
    code = ('import sys, awopt_ros.core.onnx_critic; '
            "assert 'torch' not in sys.modules and 'rclpy' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True)
