"""Success classifier runtime: contract refusals, debouncer, episode decision and metrics."""
import json
import math
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from awopt_ros.core.onnx_policy import CONTRACT_KEY
from awopt_ros.core.success_classifier import (ModelContractError, ModelFileError,
                                               SuccessClassifier, SuccessDebouncer,
                                               average_precision, episode_decision,
                                               episode_metrics, expected_calibration_error,
                                               expected_contract, frame_metrics,
                                               make_contract)
from awopt_ros.learning.export import save_with_metadata


def _graph_bytes(size=64, batch='N', outputs=('probability', 'logit')):
    """A brightness classifier: logit = 10 * (mean pixel / 255 - 0.5), probability = sigmoid."""
    img = helper.make_tensor_value_info('image', TensorProto.UINT8, [batch, size, size, 3])
    nodes = [helper.make_node('Cast', ['image'], ['f'], to=TensorProto.FLOAT),
             helper.make_node('ReduceMean', ['f'], ['m'], axes=[1, 2, 3], keepdims=0),
             helper.make_node('Mul', ['m', 'scale'], ['ms']),
             helper.make_node('Sub', ['ms', 'bias'], [outputs[1]]),
             helper.make_node('Sigmoid', [outputs[1]], [outputs[0]])]
    inits = [helper.make_tensor('scale', TensorProto.FLOAT, [], [10.0 / 255.0]),
             helper.make_tensor('bias', TensorProto.FLOAT, [], [5.0])]
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch])
            for name in outputs]
    graph = helper.make_graph(nodes, 'bright', [img], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _write(tmp_path, name='clf.onnx', size=64, contract=None, **kw):
    contract = make_contract('grasp', 0.8, 0.6, 2, 0.01) if contract is None else contract
    return str(save_with_metadata(_graph_bytes(size, **kw), tmp_path / name, contract, 'card'))


def test_loads_and_scores(tmp_path):
    clf = SuccessClassifier(_write(tmp_path), expected=expected_contract('grasp'))
    assert (clf.on_threshold, clf.off_threshold, clf.debounce_frames) == (0.8, 0.6, 2)
    assert clf.image_size == 64 and clf.task == 'grasp'
    imgs = np.stack([np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)])
    p = clf.probability(imgs)
    assert p.dtype == np.float32 and p.shape == (2,)
    assert p[0] < 0.01 and p[1] > 0.99
    assert clf.probability(imgs[1]).shape == (1,)
    assert clf.score(imgs[1]) == pytest.approx(float(p[1]))
    with pytest.raises(ValueError, match='64, 64, 3'):
        clf.probability(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match='uint8'):
        clf.probability(imgs.astype(np.float32))
    deb = clf.debouncer()
    assert (deb.on_threshold, deb.debounce_frames) == (0.8, 2)


def test_refuses_wrong_image_size(tmp_path):
    # the graph takes 32x32 but the contract says 64: the graph check names the dimension
    path = _write(tmp_path, size=32)
    with pytest.raises(ModelContractError, match='dimension 1 is 32, contract needs 64'):
        SuccessClassifier(path)
    # a consistent 32 px model refused by a caller feeding 64 px frames
    contract = make_contract('grasp', 0.8, 0.6, 2, 0.01, image_size=32)
    path = _write(tmp_path, 'small.onnx', size=32, contract=contract)
    assert SuccessClassifier(path).image_size == 32
    with pytest.raises(ModelContractError, match='image_size: model has 32, expected 64'):
        SuccessClassifier(path, expected=expected_contract())
    with pytest.raises(ModelContractError, match='task: model has grasp, expected insertion'):
        SuccessClassifier(path, expected=expected_contract('insertion', image_size=32))


def test_a_missing_file_names_the_command_that_makes_one(tmp_path):
    with pytest.raises(FileNotFoundError, match='awopt train-classifier'):
        SuccessClassifier(tmp_path / 'none.onnx')


def test_refuses_missing_or_foreign_metadata(tmp_path):
    raw = onnx.load_from_string(_graph_bytes())
    path = tmp_path / 'bare.onnx'
    onnx.save(raw, str(path))
    with pytest.raises(ModelContractError, match=f"{CONTRACT_KEY}' missing"):
        SuccessClassifier(path)
    policy_like = {'image_size': [64, 64], 'crop_xywh': [80, 0, 480, 480]}
    with pytest.raises(ModelContractError, match='policy model'):
        SuccessClassifier(_write(tmp_path, 'p.onnx', contract=policy_like))
    partial = make_contract('grasp', 0.8, 0.6, 2, 0.01)
    del partial['debounce_frames']
    with pytest.raises(ModelContractError, match='debounce_frames'):
        SuccessClassifier(_write(tmp_path, 'q.onnx', contract=partial))
    bad = dict(make_contract('grasp', 0.8, 0.6, 2, 0.01), off_threshold=0.9)
    with pytest.raises(ModelContractError, match='off_threshold'):
        SuccessClassifier(_write(tmp_path, 'r.onnx', contract=bad))


def test_refuses_corrupt_files_and_bad_graphs(tmp_path):
    good = _write(tmp_path)
    data = open(good, 'rb').read()
    for name, blob in (('trunc.onnx', data[:len(data) // 2]), ('rand.onnx',
                                                              bytes(range(256)) * 8)):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ModelFileError, match='not a readable ONNX model'):
            SuccessClassifier(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        SuccessClassifier(tmp_path / 'none.onnx')
    with pytest.raises(ModelContractError, match='dynamic batch'):
        SuccessClassifier(_write(tmp_path, 'fixed.onnx', batch=1))
    with pytest.raises(ModelContractError, match="outputs \\['probability', 'logit'\\]"):
        SuccessClassifier(_write(tmp_path, 'names.onnx', outputs=('prob', 'logit')))
    meta = json.loads(onnx.load(good).metadata_props[0].value)
    assert meta['kind'] == 'success_classifier' and meta['version'] == 1


def test_debouncer_on_off_and_k():
    deb = SuccessDebouncer(0.8, 0.5, 3)
    assert [deb.update(p) for p in (0.9, 0.9)] == [False, False]
    assert deb.run == 2
    # before the decision, a frame between off and on starts the run again (no holding)
    assert deb.update(0.6) is False and deb.run == 0
    assert [deb.update(p) for p in (0.9, 0.9)] == [False, False]
    assert deb.update(0.85) is True and deb.run == 3        # K-th frame at/above on
    assert deb.update(0.6) is True                          # once true: stays true above off
    assert deb.update(0.5) is True                          # the off-threshold itself: true
    assert deb.update(0.9) is True
    assert deb.update(0.49) is False and deb.run == 0       # below off: reset
    assert deb.update(0.8) is False and deb.run == 1        # on-threshold itself counts
    assert deb.update(float('nan')) is False and deb.run == 0
    deb.update(0.9)
    deb.reset()
    assert deb.run == 0 and deb.decision is False
    one = SuccessDebouncer(0.7, 0.7, 1)
    assert one.update(0.7) is True and one.update(0.69) is False
    for args in ((0.0, 0.0, 1), (0.8, 0.9, 1), (0.8, -0.1, 1), (0.8, 0.5, 0), (0.8, 0.5, 1.5),
                 (1.2, 0.5, 1)):
        with pytest.raises(ValueError):
            SuccessDebouncer(*args)


def test_episode_decision():
    assert episode_decision([0.1, 0.9, 0.95, 0.2], 0.8, 0.5, 2) == 2
    # frames between the thresholds break a run before the decision (classic hysteresis)
    assert episode_decision([0.9, 0.3, 0.9, 0.6, 0.9], 0.8, 0.5, 2) is None
    assert episode_decision([0.9, 0.6, 0.9], 0.8, 0.5, 2) is None
    assert episode_decision([0.9, 0.6, 0.9, 0.9, 0.6], 0.8, 0.5, 2) == 3
    assert episode_decision([0.9, 0.1] * 5, 0.8, 0.5, 2) is None
    assert episode_decision([], 0.8, 0.5, 2) is None


def test_frame_metrics_hand_computed():
    probs = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2]
    labels = [1, 0, 1, 0, 1, 0]
    m = frame_metrics(probs, labels, 0.65)
    # predicted positive: 0.9 (tp), 0.8 (fp), 0.7 (tp); negatives 0.6 (tn), 0.3 (fn), 0.2 (tn)
    assert m['accuracy'] == pytest.approx(4 / 6)
    assert m['fp_rate'] == pytest.approx(1 / 3) and m['fn_rate'] == pytest.approx(1 / 3)
    assert m['precision'] == pytest.approx(2 / 3)
    # AP: recall steps at ranks 1, 3, 5 with precisions 1, 2/3, 3/5
    assert m['pr_auc'] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # ECE with 10 bins: every frame alone in its bin -> mean |y - p|
    assert m['ece'] == pytest.approx(np.mean([0.1, 0.8, 0.3, 0.6, 0.7, 0.2]))
    assert (m['frames'], m['positives'], m['negatives']) == (6, 3, 3)
    # ties: one threshold for equal scores
    assert average_precision([0.5, 0.5, 0.1], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # two frames in one bin: |mean(y) - mean(p)| weighted by 2/3
    assert expected_calibration_error([0.12, 0.18, 0.95], [1, 0, 1]) == pytest.approx(
        2 / 3 * abs(0.5 - 0.15) + 1 / 3 * 0.05)
    assert math.isnan(frame_metrics([0.2], [0], 0.5)['fn_rate'])
    assert math.isnan(average_precision([0.2, 0.3], [0, 0]))
    with pytest.raises(ValueError):
        frame_metrics([0.1, 0.2], [1], 0.5)
    with pytest.raises(ValueError):
        frame_metrics([0.1], [2], 0.5)


def test_episode_metrics_hand_computed():
    # episode 0: success from frame 2, detected at 3 (delay 1)
    # episode 1: success from frame 2, fires at frame 1 (early: false success)
    # episode 2: no positive frame, fires (false success)
    # episode 3: no positive, never fires; episode 4: success from frame 1, never fires (missed)
    eps = [(0, [0, 0, 1, 1, 1], [0.1, 0.2, 0.9, 0.9, 0.9]),
           (1, [0, 0, 1], [0.9, 0.9, 0.9]),
           (2, [0, 0, 0], [0.1, 0.95, 0.95]),
           (3, [0, 0], [0.1, 0.1]),
           (4, [0, 1, 1], [0.1, 0.6, 0.3])]
    episode, labels, probs, step = [], [], [], []
    for e, lab, p in eps:
        episode += [e] * len(lab)
        labels += lab
        probs += p
        step += list(range(len(lab)))
    # shuffle the frame order: the metrics sort by (episode, step)
    perm = np.random.default_rng(0).permutation(len(labels))
    frames = SimpleNamespace(episode=np.array(episode)[perm], labels=np.array(labels)[perm],
                             step=np.array(step)[perm])
    m = episode_metrics(frames, np.array(probs)[perm], 0.8, 0.5, 2)
    assert (m['episodes'], m['success_episodes'], m['failed_episodes']) == (5, 3, 2)
    assert m['false_successes'] == 2 and m['false_success_rate'] == pytest.approx(2 / 5)
    assert m['false_success_rate_failed'] == pytest.approx(1 / 2)
    assert m['missed_successes'] == 1 and m['missed_success_rate'] == pytest.approx(1 / 3)
    assert m['detection_delay_frames_mean'] == pytest.approx(1.0)
    assert m['detection_delay_frames_p95'] == pytest.approx(1.0)


def test_make_contract_refuses_bad_values():
    with pytest.raises(ValueError, match='task'):
        make_contract('stack', 0.8, 0.6, 2, 0.01)
    with pytest.raises(ValueError, match='off_threshold'):
        make_contract('grasp', 0.5, 0.6, 2, 0.01)
    with pytest.raises(ValueError, match='replace'):
        make_contract('grasp', 0.8, 0.6, 2, 0.01, extra={'task': 'x'})
    c = make_contract('grasp', 0.8, 0.6, 2, 0.01, extra={'dataset': 'd'})
    assert c['crop_xywh'] == [80, 0, 480, 480] and c['source_size'] == [640, 480]
    assert c['image_size'] == 64 and c['dataset'] == 'd'


def test_bench_measures_classifier_latency(tmp_path):
    from awopt_ros.learning import bench
    out = bench.measure_success_classifier(_write(tmp_path), frames=30, warmup=2)
    assert out['frames'] == 30 and 0 < out['p50_ms'] <= out['p99_ms'] < 1000
    missing = bench.measure_success_classifier(tmp_path / 'none.onnx', frames=5)
    assert 'not found' in missing['reason'] and 'p99_ms' not in missing


def test_episode_metrics_with_debounced_truth():
    # one-frame success blip (then dropped): no true success when the truth needs 2 frames
    frames = SimpleNamespace(episode=np.array([0] * 5 + [1] * 5),
                             labels=np.array([0, 1, 0, 0, 0, 0, 0, 1, 1, 1]))
    probs = np.array([0.1, 0.9, 0.9, 0.2, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    any_frame = episode_metrics(frames, probs, 0.8, 0.5, 2)
    assert any_frame['success_episodes'] == 2 and any_frame['false_successes'] == 0
    debounced = episode_metrics(frames, probs, 0.8, 0.5, 2, truth_debounce_frames=2)
    assert debounced['success_episodes'] == 1 and debounced['false_successes'] == 1
    assert debounced['false_success_rate_failed'] == 1.0
    assert debounced['detection_delay_frames_mean'] == 1.0    # fires at 8, success from 7


def test_episode_metrics_count_no_run_held_between_thresholds():
    # a failed episode whose scores hover between the thresholds with single frames above
    # on: not a false success (the run does not survive the frames in between)
    frames = SimpleNamespace(episode=np.array([0] * 5 + [1] * 4),
                             labels=np.array([0] * 5 + [0, 0, 1, 1]))
    probs = np.array([0.9, 0.7, 0.9, 0.7, 0.9, 0.1, 0.9, 0.7, 0.9])
    m = episode_metrics(frames, probs, 0.8, 0.5, 2)
    assert m['false_successes'] == 0 and m['false_success_rate'] == 0.0
    # the success episode: frames 2 and 3 are positive; 0.9 at 3 follows 0.7: no fire
    assert m['missed_successes'] == 1


def test_contract_frame_period_and_source_size(tmp_path):
    c = make_contract('grasp', 0.8, 0.6, 2, 0.01)
    assert c['frame_period_s'] == 0.1
    assert make_contract('grasp', 0.8, 0.6, 2, 0.01, frame_period_s=0.05)['frame_period_s'] == 0.05
    for bad in (0.0, -0.1, float('nan'), 'x'):
        with pytest.raises(ValueError, match='frame_period_s'):
            make_contract('grasp', 0.8, 0.6, 2, 0.01, frame_period_s=bad)
    clf = SuccessClassifier(_write(tmp_path, contract=make_contract(
        'grasp', 0.8, 0.6, 2, 0.01, frame_period_s=0.2)))
    assert clf.frame_period_s == 0.2
    # a contract written before frame_period_s existed: one frame per 0.1 s control step
    old = {k: v for k, v in c.items() if k != 'frame_period_s'}
    assert SuccessClassifier(_write(tmp_path, 'old.onnx', contract=old)).frame_period_s == 0.1
    bad = dict(c, frame_period_s=0.0)
    with pytest.raises(ModelContractError, match='frame_period_s'):
        SuccessClassifier(_write(tmp_path, 'bad.onnx', contract=bad))
    # the camera frame size is checked when the caller names one
    path = _write(tmp_path, 'src.onnx')
    SuccessClassifier(path, expected=expected_contract('grasp', source_size=(640, 480)))
    with pytest.raises(ModelContractError, match='source_size'):
        SuccessClassifier(path, expected=expected_contract('grasp', source_size=(320, 240)))


def _odd_graph_bytes(kind):
    """A brightness model whose outputs break the contract: 'not_sigmoid' (probability =
    mean / 255, logit = probability - 0.5) or 'above_one' (probability = 2 * mean / 255 and
    logit its inverse sigmoid where defined: fine on dark frames, > 1 on bright ones)."""
    img = helper.make_tensor_value_info('image', TensorProto.UINT8, ['N', 64, 64, 3])
    nodes = [helper.make_node('Cast', ['image'], ['f'], to=TensorProto.FLOAT),
             helper.make_node('ReduceMean', ['f'], ['m'], axes=[1, 2, 3], keepdims=0),
             helper.make_node('Div', ['m', 'full'], ['q'])]
    if kind == 'not_sigmoid':
        nodes += [helper.make_node('Identity', ['q'], ['probability']),
                  helper.make_node('Sub', ['q', 'half'], ['logit'])]
    else:
        nodes += [helper.make_node('Mul', ['q', 'two'], ['probability']),
                  helper.make_node('Sub', ['one', 'probability'], ['r']),
                  helper.make_node('Div', ['probability', 'r'], ['odds']),
                  helper.make_node('Log', ['odds'], ['logit'])]
    inits = [helper.make_tensor('full', TensorProto.FLOAT, [], [255.0]),
             helper.make_tensor('half', TensorProto.FLOAT, [], [0.5]),
             helper.make_tensor('two', TensorProto.FLOAT, [], [2.0]),
             helper.make_tensor('one', TensorProto.FLOAT, [], [1.0])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ['N'])
            for n in ('probability', 'logit')]
    model = helper.make_model(helper.make_graph(nodes, 'odd', [img], outs, inits),
                              opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_refuses_probability_that_is_not_sigmoid_of_logit_or_out_of_range(tmp_path):
    contract = make_contract('grasp', 0.8, 0.6, 2, 0.01)
    path = save_with_metadata(_odd_graph_bytes('not_sigmoid'), tmp_path / 'ns.onnx', contract,
                              'card')
    with pytest.raises(ModelContractError, match='sigmoid'):
        SuccessClassifier(path)
    # probability 2 * mean / 255 reaches above 1 on the (varied, about half-bright) warm-up
    # frames: refused at load
    path = save_with_metadata(_odd_graph_bytes('above_one'), tmp_path / 'a1.onnx', contract,
                              'card')
    with pytest.raises(ModelContractError, match=r'not in \[0, 1\]'):
        SuccessClassifier(path)


def test_run_refuses_probabilities_outside_0_1(tmp_path, monkeypatch):
    clf = SuccessClassifier(_write(tmp_path))
    real = clf._session

    class Session:
        def run(self, names, feed):
            prob, logit = real.run(names, feed)
            return prob + np.float32(1.5), logit

    monkeypatch.setattr(clf, '_session', Session())
    with pytest.raises(ValueError, match=r'outside \[0, 1\]'):
        clf.probability(np.zeros((1, 64, 64, 3), np.uint8))
