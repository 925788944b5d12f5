"""Success classifier training: learns a synthetic cue, exports with parity, thresholds, CLI."""
import json

import numpy as np
import pytest

from awopt_ros.cli import main
from awopt_ros.core.success_classifier import SuccessClassifier
from awopt_ros.learning import success_train as st
from awopt_ros.learning.success_data import FrameSet, split_by_episode


def synthetic_frames(episodes=24, steps=8, size=64, seed=0, group='box'):
    """Dark noise; in every other episode a bright square appears from frame 4 on (label 1)."""
    rng = np.random.default_rng(seed)
    n = episodes * steps
    images = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    labels = np.zeros(n, np.uint8)
    episode = np.repeat(np.arange(episodes), steps)
    step = np.tile(np.arange(steps), episodes)
    for i in range(n):
        if episode[i] % 2 == 0 and step[i] >= steps // 2:
            r, c = rng.integers(8, size - 24, 2)
            images[i, r:r + 16, c:c + 16] = 230
            labels[i] = 1
    return FrameSet(images, labels, episode, step, np.full(n, group), np.full(n, 'normal'),
                    'grasp', {'synthetic': True})


def small_config(**kw):
    base = dict(epochs=3, steps_per_epoch=15, batch_size=32, lr=3e-3, channels=(8, 16, 16, 16),
                hidden=16, threads=1, val_fraction=0.25)
    base.update(kw)
    return st.ClassifierConfig(**base)


def test_choose_threshold_meets_target_fpr():
    rng = np.random.default_rng(0)
    neg = rng.normal(-3.0, 1.0, 1000)
    pos = rng.normal(3.0, 1.0, 500)
    z = np.r_[neg, pos]
    y = np.r_[np.zeros(1000), np.ones(500)]
    for target in (0.0, 0.01, 0.05, 0.2):
        t = st.choose_threshold(z, y, target)
        fpr = np.mean(st._sigmoid(neg) >= t)
        assert fpr <= target
        # the next-lower negative would break the target: the threshold is not needlessly high
        k = int(np.floor(target * 1000))
        assert st._sigmoid(np.sort(neg)[::-1][k]) < t
    # separable classes: the midpoint of the gap in logit space (here 0 -> probability 0.5)
    assert st.choose_threshold([-4, -2, 2, 4], [0, 0, 1, 1], 0.01) == pytest.approx(0.5)
    assert st.choose_threshold([-4, -2, 1, 4], [0, 0, 1, 1], 0.01) == pytest.approx(
        st._sigmoid(-0.5))
    with pytest.raises(ValueError):
        st.choose_threshold([1.0], [1], 0.01)


def test_augment_keeps_shape_and_range():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    out = st.augment(img, rng)
    assert tuple(out.shape) == (5, 64, 64, 3)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0
    # no augmentation at all reproduces the images
    same = st.augment(img, rng, pad=0, brightness=0, contrast=0, channel_gain=0)
    assert np.allclose(same.numpy(), img)
    # a pure shift: every crop is a window of the replicate-padded image
    shifted = st.augment(img[:1], rng, pad=4, brightness=0, contrast=0, channel_gain=0).numpy()
    padded = np.pad(img[0], ((4, 4), (4, 4), (0, 0)), mode='edge')
    assert any(np.array_equal(shifted[0], padded[r:r + 64, c:c + 64])
               for r in range(9) for c in range(9))


def test_tiny_training_learns_and_exports_with_parity(tmp_path):
    frames = synthetic_frames()
    held = synthetic_frames(episodes=8, seed=1, group='capsule')
    train, val = split_by_episode(frames, 0.25, 0)
    cfg = small_config()
    net, res = st.train_classifier(train, val, cfg, held, progress=False, log=lambda s: None)
    m = res['metrics']
    assert m['validation_frame_accuracy'] >= 0.95
    assert m['heldout_frame_accuracy'] >= 0.95 and m['heldout_pr_auc'] >= 0.98
    assert m['validation_fp_rate'] <= cfg.target_fpr
    assert 0 < res['off_threshold'] <= res['on_threshold'] < 1
    assert m['stack_agreement_rate'] is None and m['stack_episodes'] is None
    for key in ('heldout_episode_false_success_rate', 'heldout_episode_missed_success_rate',
                'heldout_ece', 'heldout_fn_rate', 'heldout_detection_delay_frames_mean',
                'heldout_episode_missed_success_rate_gt_debounced'):
        assert key in m
    assert len(res['history']['val_loss']) == cfg.epochs
    assert 1 <= res['best_epoch'] <= cfg.epochs
    # export: contract, parity <= 1e-5, and the runtime loads it
    from awopt_ros.core.success_classifier import make_contract
    contract = make_contract('grasp', res['on_threshold'], res['off_threshold'], 2, 0.01)
    path = tmp_path / 'c.onnx'
    parity = st.export_classifier(net, path, contract, 'card', val.images)
    assert parity['probability_max_abs_diff'] <= 1e-5
    clf = SuccessClassifier(path)
    p = clf.probability(held.images)
    ref = st._sigmoid(st.predict_logits(net, held.images))
    assert np.max(np.abs(p - ref)) <= 1e-5
    assert clf.on_threshold == pytest.approx(res['on_threshold'])


def test_parity_check_catches_a_different_graph(tmp_path):
    a = st.build_net(64, (8, 8, 8, 8), 8).eval()
    b = st.build_net(64, (8, 8, 8, 8), 8).eval()
    path = tmp_path / 'a.onnx'
    from awopt_ros.learning.export import save_with_metadata
    save_with_metadata(st.export_bytes(a), path, {}, '')
    assert st.parity_check(a, path)['probability_max_abs_diff'] <= 1e-5
    with pytest.raises(ValueError, match='parity failed'):
        st.parity_check(b, path)


def test_cli_trains_refuses_overwrite_and_evaluates(tmp_path, monkeypatch, capsys):
    frames = synthetic_frames()
    frames.meta.update(crop_xywh=[40, 0, 240, 240], camera_size=[320, 240])
    frames_path = frames.save(tmp_path / 'train.npz')
    held_path = synthetic_frames(episodes=6, seed=2, group='capsule').save(tmp_path / 'h.npz')
    shipped = tmp_path / 'models'
    shipped.mkdir()
    (shipped / 'grasp_success.onnx').write_bytes(b'shipped')
    monkeypatch.setattr('awopt_ros.core.paths.models_dir', lambda: shipped)
    base = ['train-classifier', '--task', 'grasp', '--frames', str(frames_path), '--heldout',
            str(held_path), '--epochs', '2', '--steps-per-epoch', '10', '--batch-size', '32',
            '--threads', '1', '--no-progress', '--channels', '8,16,16,16', '--hidden', '16']
    # refuses the shipped file without --force (before training), nothing changed
    assert main(base + ['--out', str(shipped / 'grasp_success.onnx')]) == 2
    err = capsys.readouterr().err
    assert 'shipped model file' in err and '--force' in err and len(err.splitlines()) == 1
    assert (shipped / 'grasp_success.onnx').read_bytes() == b'shipped'
    # a wrong task and a missing file: one-line errors, exit 2
    assert main(base[:2] + ['insertion'] + base[3:] + ['--out', str(tmp_path / 'x.onnx')]) == 2
    assert 'task' in capsys.readouterr().err
    assert main(base + ['--channels', '8,8', '--out', str(tmp_path / 'z.onnx')]) == 2
    assert '--channels' in capsys.readouterr().err
    assert main(['train-classifier', '--frames', str(tmp_path / 'no.npz'),
                 '--out', str(tmp_path / 'y.onnx')]) == 2
    assert 'no FrameSet file' in capsys.readouterr().err
    out = tmp_path / 'run' / 'grasp_success.onnx'
    assert main(base + ['--out', str(out)]) == 0
    for name in ('grasp_success.md', 'grasp_success_metrics.json',
                 'grasp_success_reliability.png', 'grasp_success_pr.png',
                 'grasp_success_training.png'):
        assert (out.parent / name).stat().st_size > 0
    metrics = json.loads((out.parent / 'grasp_success_metrics.json').read_text())
    assert metrics['heldout_frames'] == 48 and metrics['parameters'] > 0
    assert metrics['parity']['probability_max_abs_diff'] <= 1e-5
    assert metrics['heldout_groups'] == ['capsule']
    assert SuccessClassifier(out).contract['heldout_groups'] == ['capsule']
    # the crop and camera size of the frames go into the contract and the card
    assert SuccessClassifier(out).contract['crop_xywh'] == [40, 0, 240, 240]
    assert SuccessClassifier(out).contract['source_size'] == [320, 240]
    # frames one 0.1 s control step apart: the rate the node counts frames at
    assert SuccessClassifier(out).contract['frame_period_s'] == 0.1
    assert metrics['frame_period_s'] == 0.1
    card = (out.parent / 'grasp_success.md').read_text()
    assert '`frame_period_s` 0.1' in card and 'per failed episode' in card
    assert 'crop 40,0,240,240 of the 320x240' in (out.parent / 'grasp_success.md').read_text()
    # a second run onto the same files is refused; --force replaces the shipped one
    assert main(base + ['--out', str(out)]) == 2
    capsys.readouterr()
    assert main(base + ['--out', str(shipped / 'grasp_success.onnx'), '--force']) == 0
    assert SuccessClassifier(shipped / 'grasp_success.onnx').task == 'grasp'
    # evaluate-classifier: metrics, then the stack report's numbers into the same JSON
    report = tmp_path / 'report.json'
    report.write_text(json.dumps({'episodes': 3, 'stack_agreement_rate': 0.96,
                                  'stack_episodes': 50}))
    mout = tmp_path / 'eval.json'
    assert main(['evaluate-classifier', str(out), '--frames', str(frames_path), '--heldout',
                 str(held_path), '--metrics-out', str(mout)]) == 0
    ev = json.loads(mout.read_text())
    assert ev['heldout_frame_accuracy'] == pytest.approx(metrics['heldout_frame_accuracy'])
    assert ev['frames_frames'] == 192
    assert main(['evaluate-classifier', str(out), '--stack-report', str(report),
                 '--metrics-out', str(mout)]) == 2        # exists: needs --force
    capsys.readouterr()
    assert main(['evaluate-classifier', str(out), '--stack-report', str(report),
                 '--metrics-out', str(mout), '--force']) == 0
    ev = json.loads(mout.read_text())
    assert ev['stack_agreement_rate'] == 0.96 and ev['stack_episodes'] == 50
    assert ev['heldout_frames'] == 48                     # earlier keys kept
    report.write_text('{}')
    assert main(['evaluate-classifier', str(out), '--stack-report', str(report),
                 '--metrics-out', str(tmp_path / 'e2.json')]) == 2
    assert 'stack_agreement_rate' in capsys.readouterr().err


def test_frame_period_of_the_frames():
    from types import SimpleNamespace

    from awopt_ros.learning.success_train import frame_period_of
    assert frame_period_of(synthetic_frames()) == 0.1
    assert frame_period_of(SimpleNamespace(meta={'control_period_s': 0.05})) == 0.05
    assert frame_period_of(SimpleNamespace(meta={'frame_period_s': 0.2,
                                                 'control_period_s': 0.05})) == 0.2
    with pytest.raises(ValueError, match='frame_period_s'):
        frame_period_of(SimpleNamespace(meta={'control_period_s': -1}))
