"""Tests of the ONNX export contract and awopt_ros.core.onnx_policy."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from conftest import export_tiny_actor, rewrite_contract

from awopt_ros.core import spec
from awopt_ros.core.onnx_policy import (CONTRACT_KEY, ModelContractError, OnnxActor,
                                        expected_contract, read_contract, read_metadata)
from awopt_ros.learning.networks import ActorPolicy

SIZE = 16
CROP = [80, 0, 480, 480]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """Export a small random actor to ONNX; yield (actor, path, export result)."""
    path = tmp_path_factory.mktemp('onnx') / 'tiny.onnx'
    actor, result = export_tiny_actor(path, seed=0, image_size=SIZE, crop_xywh=CROP,
                                      dataset='test/set-v0', model_card='tiny test')
    return actor, path, result


def test_contract_metadata_written(tiny):
    _, path, result = tiny
    c = read_contract(path)
    assert c == result['contract']
    assert c['image_size'] == [SIZE, SIZE] and c['crop_xywh'] == CROP
    assert c['source_size'] == [640, 480]
    assert c['proprio_names'] == list(spec.PROPRIO_NAMES)
    assert c['action_names'] == list(spec.ACTION_NAMES)
    assert c['action_units'] == list(spec.ACTION_UNITS)
    np.testing.assert_allclose(c['action_low'], spec.ACTION_LOW)
    np.testing.assert_allclose(c['action_high'], spec.ACTION_HIGH)
    assert (c['algorithm'], c['dataset'], c['version']) == ('bc', 'test/set-v0', 1)
    assert read_metadata(path)['model_card'] == 'tiny test'


def test_graph_io_names_types_and_dynamic_batch(tiny):
    _, path, _ = tiny
    g = onnx.load(str(path)).graph
    ins = {i.name: i.type.tensor_type for i in g.input}
    assert ins['image'].elem_type == TensorProto.UINT8
    assert ins['proprio'].elem_type == TensorProto.FLOAT
    assert g.output[0].name == 'action'
    assert g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert ins['image'].shape.dim[0].dim_param == 'N'
    assert [d.dim_value for d in ins['image'].shape.dim[1:]] == [SIZE, SIZE, 3]


@pytest.mark.parametrize('batch', [1, 64])
def test_parity_torch_vs_onnxruntime(tiny, batch):
    actor, path, result = tiny
    assert set(result['parity']) == {1, 64}
    assert all(d <= 1e-4 for d, _ in result['parity'].values())
    rng = np.random.default_rng(batch)
    img = rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    pro = rng.normal(0, 0.3, (batch, 6)).astype(np.float32)
    with torch.no_grad():
        ref = ActorPolicy(actor)(torch.from_numpy(img), torch.from_numpy(pro)).numpy()
    got = OnnxActor(path, expected_contract(SIZE, CROP)).act(img, pro)
    assert got.shape == (batch, 7) and got.dtype == np.float32
    assert np.max(np.abs(got[:, :4] - ref[:, :4])) <= 1e-4
    assert np.all(got[:, :4] >= spec.ACTION_LOW[:4]) and np.all(got[:, :4] <= spec.ACTION_HIGH[:4])
    assert set(np.unique(got[:, 4:])) <= {0.0, 1.0}
    single = OnnxActor(path).act(img[0], pro[0])
    assert single.shape == (7,)
    np.testing.assert_allclose(single, got[0], atol=1e-5)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        OnnxActor(tmp_path / 'nope.onnx', expected_contract(64, CROP))


@pytest.mark.parametrize('field, value', [
    ('image_size', [32, 32]),
    ('crop_xywh', [0, 0, 640, 480]),
    ('proprio_names', ['x', 'y', 'z', 'sin_yaw', 'cos_yaw', 'gripper_closed']),
    ('action_names', ['dx', 'dy', 'dz', 'dyaw', 'open', 'close', 'stop']),
    ('action_low', [-0.05, -0.03, -0.03, -0.2, 0, 0, 0]),
    ('action_high', [0.03, 0.03, 0.03, 0.5, 1, 1, 1]),
])
def test_contract_mismatch_names_field(tiny, tmp_path, field, value):
    _, path, _ = tiny
    bad = rewrite_contract(path, tmp_path / 'bad.onnx', **{field: value})
    with pytest.raises(ModelContractError, match=field) as info:
        OnnxActor(bad, expected_contract(SIZE, CROP))
    assert len(info.value.mismatches) == 1
    assert isinstance(info.value, ValueError)


def test_contract_mismatch_lists_every_field(tiny):
    _, path, _ = tiny
    with pytest.raises(ModelContractError) as info:
        OnnxActor(path, expected_contract(64, [0, 0, 480, 480]))
    msg = str(info.value)
    assert 'image_size' in msg and 'crop_xywh' in msg and len(info.value.mismatches) == 2


def test_missing_contract_metadata(tiny, tmp_path):
    _, path, _ = tiny
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / 'nometa.onnx'))
    with pytest.raises(ModelContractError, match='awopt_contract'):
        OnnxActor(tmp_path / 'nometa.onnx', expected_contract(SIZE, CROP))


def _handmade_model(path, contract, scale):
    """Write a graph computing action = (proprio @ ones(6, 7)) * scale (can give inf/nan)."""
    img = helper.make_tensor_value_info('image', TensorProto.UINT8, ['N', SIZE, SIZE, 3])
    pro = helper.make_tensor_value_info('proprio', TensorProto.FLOAT, ['N', 6])
    out = helper.make_tensor_value_info('action', TensorProto.FLOAT, ['N', 7])
    w = helper.make_tensor('w', TensorProto.FLOAT, [6, 7], [1.0] * 42)
    s = helper.make_tensor('s', TensorProto.FLOAT, [], [scale])
    nodes = [helper.make_node('MatMul', ['proprio', 'w'], ['m']),
             helper.make_node('Mul', ['m', 's'], ['action'])]
    graph = helper.make_graph(nodes, 'g', [img, pro], [out], initializer=[w, s])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    helper.set_model_props(model, {CONTRACT_KEY: json.dumps(contract)})
    onnx.save(model, str(path))
    return path


def test_non_finite_output_raises(tiny, tmp_path):
    contract = read_contract(tiny[1])
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    finite = OnnxActor(_handmade_model(tmp_path / 'ok.onnx', contract, 0.01),
                       expected_contract(SIZE, CROP))
    np.testing.assert_allclose(finite.act(img, np.ones(6, np.float32)), np.full(7, 0.06),
                               rtol=1e-6)
    actor = OnnxActor(_handmade_model(tmp_path / 'inf.onnx', contract, float('inf')),
                      expected_contract(SIZE, CROP))
    with pytest.raises(ValueError, match='non-finite'):
        actor.act(img, np.ones(6, np.float32))          # inf
    with pytest.raises(ValueError, match='non-finite'):
        actor.act(img, np.zeros(6, np.float32))         # 0 * inf = nan


def test_act_bad_inputs(tiny):
    actor = OnnxActor(tiny[1])
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    with pytest.raises(ValueError, match='uint8'):
        actor.act(img.astype(np.float32), np.zeros(6, np.float32))
    with pytest.raises(ValueError, match='model expects'):
        actor.act(np.zeros((8, 8, 3), np.uint8), np.zeros(6, np.float32))
    with pytest.raises(ValueError, match='proprio'):
        actor.act(img, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match='proprio'):
        actor.act(np.zeros((2, SIZE, SIZE, 3), np.uint8), np.zeros((3, 6), np.float32))


# --- model faults: refused with one line naming the file, never a traceback ----------------

def _one_line_naming(exc, path):
    msg = str(exc)
    assert str(path) in msg and '\n' not in msg and 'Traceback' not in msg, msg
    return msg


def test_truncated_file_is_refused_naming_the_file(tiny, tmp_path):
    data = tiny[1].read_bytes()
    for cut in (len(data) // 2, 100, len(data) - 7):
        bad = tmp_path / f'truncated_{cut}.onnx'
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelContractError) as info:     # a ValueError, like a mismatch
            OnnxActor(bad, expected_contract(SIZE, CROP))
        msg = _one_line_naming(info.value, bad)
        assert 'is not a readable ONNX model (truncated or corrupt)' in msg
        with pytest.raises(ModelContractError, match='not a readable ONNX model'):
            read_contract(bad)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_random_bytes_are_refused_naming_the_file(tmp_path, seed):
    bad = tmp_path / 'random.onnx'
    bad.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(ModelContractError) as info:
        OnnxActor(bad, expected_contract(SIZE, CROP))
    assert 'not a readable ONNX model' in _one_line_naming(info.value, bad)


def test_empty_and_text_files_are_refused(tmp_path):
    for name, data in (('empty.onnx', b''), ('text.onnx', b'not an onnx model\n')):
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(ModelContractError, match='not a readable ONNX model'):
            OnnxActor(bad, expected_contract(SIZE, CROP))


def test_graph_larger_than_its_contract_is_refused_at_load(tmp_path):
    """A 32 px actor whose (valid-looking) contract says 16 px: refused at load."""
    src, bad = tmp_path / 'actor32.onnx', tmp_path / 'actor32_says16.onnx'
    export_tiny_actor(src, seed=0, image_size=32, crop_xywh=CROP)
    rewrite_contract(src, bad, image_size=[SIZE, SIZE])
    assert read_contract(bad)['image_size'] == [SIZE, SIZE]
    with pytest.raises(ModelContractError) as info:
        OnnxActor(bad, expected_contract(SIZE, CROP))
    msg = _one_line_naming(info.value, bad)
    assert "graph input 'image'" in msg and '[N, 32, 32, 3]' in msg and '[N, 16, 16, 3]' in msg


def _io_model(path, contract, image=('N', SIZE, SIZE, 3), image_type=TensorProto.UINT8,
              proprio=('N', 6), action=('N', 7), reshape_image=None):
    """Write an actor-like graph with the given io declarations: action = (proprio @ W) * 0,
    plus, with ``reshape_image`` = k, a term that reshapes the image to (-1, k) (fails at run
    time unless H * W * 3 is a multiple of k)."""
    img = helper.make_tensor_value_info('image', image_type, list(image))
    pro = helper.make_tensor_value_info('proprio', TensorProto.FLOAT, list(proprio))
    out = helper.make_tensor_value_info('action', TensorProto.FLOAT, list(action))
    width = action[1] if isinstance(action[1], int) else 7
    inits = [helper.make_tensor('w', TensorProto.FLOAT, [proprio[1], width],
                                [0.0] * (proprio[1] * width))]
    nodes = [helper.make_node('MatMul', ['proprio', 'w'], ['action' if not reshape_image
                                                           else 'm'])]
    if reshape_image:
        inits.append(helper.make_tensor('shape', TensorProto.INT64, [2], [-1, reshape_image]))
        inits.append(helper.make_tensor('axes', TensorProto.INT64, [1], [1]))
        nodes += [helper.make_node('Cast', ['image'], ['imgf'], to=TensorProto.FLOAT),
                  helper.make_node('Reshape', ['imgf', 'shape'], ['flat']),
                  helper.make_node('ReduceSum', ['flat', 'axes'], ['s'], keepdims=1),
                  helper.make_node('Mul', ['s', 'zero'], ['z']),
                  helper.make_node('Add', ['m', 'z'], ['action'])]
        inits.append(helper.make_tensor('zero', TensorProto.FLOAT, [], [0.0]))
    graph = helper.make_graph(nodes, 'g', [img, pro], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    helper.set_model_props(model, {CONTRACT_KEY: json.dumps(contract)})
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize('kwargs, words', [
    ({}, None),                                                      # a correct graph loads
    ({'image': ('N', 32, 32, 3)}, ["'image'", '[N, 32, 32, 3]']),
    ({'image': ('N', SIZE, SIZE)}, ["'image'", 'rank 3']),
    ({'image': (1, SIZE, SIZE, 3)}, ["'image'", 'batch dimension fixed at 1']),
    ({'image_type': TensorProto.FLOAT}, ["'image'", 'tensor(float)']),
    ({'proprio': ('N', 5)}, ["'proprio'", '[N, 5]']),
    ({'action': ('N', 6)}, ["'action'", '[N, 6]']),
    ({'image': ('N', 'H', 'W', 3), 'reshape_image': 3072}, ['does not run', '[1, 16, 16, 3]']),
])
def test_graph_io_differing_from_the_contract_is_refused(tiny, tmp_path, kwargs, words):
    path = _io_model(tmp_path / 'io.onnx', read_contract(tiny[1]), **kwargs)
    if words is None:
        actor = OnnxActor(path, expected_contract(SIZE, CROP))
        assert actor.act(np.zeros((SIZE, SIZE, 3), np.uint8), np.ones(6, np.float32)).shape \
            == (7,)
        return
    with pytest.raises(ModelContractError) as info:
        OnnxActor(path, expected_contract(SIZE, CROP))
    msg = _one_line_naming(info.value, path)
    for word in words:
        assert word in msg, msg


def test_onnxruntime_error_at_act_is_a_runtime_error_naming_the_model(tiny, monkeypatch):
    import onnxruntime
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail
    actor = OnnxActor(tiny[1], expected_contract(SIZE, CROP))

    def broken(self, *args, **kwargs):
        raise Fail('[ONNXRuntimeError] : 1 : FAIL : kernel exploded\nsecond line')
    monkeypatch.setattr(onnxruntime.InferenceSession, 'run', broken)
    with pytest.raises(RuntimeError) as info:
        actor.act(np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros(6, np.float32))
    msg = _one_line_naming(info.value, tiny[1])
    assert 'kernel exploded' in msg and 'second line' not in msg


def test_failing_run_raises_without_printing_to_stderr(tmp_path, capfd):
    """Sessions log fatal messages only: a model failing at every step is reported once by
    its caller (throttled), not by onnxruntime on stderr at every call."""
    from onnx import TensorProto, helper

    from awopt_ros.core import ort_session
    graph = helper.make_graph(
        [helper.make_node('Reshape', ['x', 'shape'], ['y'])], 'bad',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['N', 4])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)],
        [helper.make_tensor('shape', TensorProto.INT64, [1], [3])])     # 8 values into 3
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    path = tmp_path / 'bad.onnx'
    path.write_bytes(model.SerializeToString())
    session = ort_session.session(path)
    capfd.readouterr()
    with pytest.raises(Exception, match='Reshape'):
        session.run(['y'], {'x': np.zeros((2, 4), np.float32)})
    assert capfd.readouterr().err == ''
