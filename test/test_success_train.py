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
    held = synthetic_frames(episodes=6, seed=2, group='capsule')
    held.meta.update(crop_xywh=[40, 0, 240, 240], camera_size=[320, 240])
    held_path = held.save(tmp_path / 'h.npz')
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
                                  'stack_episodes': 50, 'success_source': 'classifier'}))
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


# -- CLI checks of the review (crop, several FrameSets, evaluation and stack-report refusals) --

CROP = {'crop_xywh': [40, 0, 240, 240], 'camera_size': [320, 240]}
TINY = ['--epochs', '1', '--steps-per-epoch', '2', '--batch-size', '8', '--threads', '1',
        '--no-progress', '--channels', '4,4,4,4', '--hidden', '4']


def _train(tmp_path, capsys, *extra, frames=None, name='m'):
    """Run a tiny ``awopt train-classifier`` (grasp); return (exit code, stderr, out path)."""
    out = tmp_path / name / 'grasp_success.onnx'
    if frames is None:
        fs = synthetic_frames(episodes=8, steps=6)
        fs.meta.update(CROP)
        frames = [fs.save(tmp_path / f'{name}_train.npz')]
    argv = ['train-classifier', '--task', 'grasp', *TINY, '--out', str(out)]
    for f in frames:
        argv += ['--frames', str(f)]
    rc = main(argv + [str(a) for a in extra])
    return rc, capsys.readouterr().err, out


def test_train_frames_without_a_crop_need_the_crop_options(tmp_path, capsys):
    fs = synthetic_frames(episodes=8, steps=6)      # meta without crop_xywh / camera_size
    fs.meta.update(source='frames_from_runs', runs=['runs/cell'], label=['operator'], last_k=3)
    path = fs.save(tmp_path / 'run.npz')
    rc, err, out = _train(tmp_path, capsys, frames=[path])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and not out.exists()
    assert '--crop-xywh' in err and '--source-size' in err and 'run.npz' in err
    rc, err, _ = _train(tmp_path, capsys, '--crop-xywh', '80,0,480,480', frames=[path])
    assert rc == 2 and '--source-size' in err                       # both are needed
    rc, err, _ = _train(tmp_path, capsys, '--crop-xywh', '80,0,480,480', '--source-size',
                        '320,240', frames=[path])
    assert rc == 2 and 'argument --crop-xywh' in err                # outside the frame
    rc, err, out = _train(tmp_path, capsys, '--crop-xywh', '80,0,480,480', '--source-size',
                          '640,480', frames=[path])
    assert rc == 0, err
    c = SuccessClassifier(out).contract
    assert c['crop_xywh'] == [80, 0, 480, 480] and c['source_size'] == [640, 480]
    card = out.with_suffix('.md').read_text()
    # operator labels: the card does not claim simulator ground truth; no held-out set: "none"
    assert 'simulator ground truth' not in card and "operator's episode verdicts" in card
    assert 'Held out: none.' in card and '`None`' not in card
    assert 'simulated frames only' not in card and 'labelled by an operator' in card
    assert '--from-run runs/cell --label operator --last-k 3' in card


def test_train_crop_options_that_differ_from_the_frames_crop_are_refused(tmp_path, capsys):
    rc, err, out = _train(tmp_path, capsys, '--crop-xywh', '80,0,480,480', '--source-size',
                          '640,480')
    assert rc == 2 and len(err.strip().splitlines()) == 1 and not out.exists()
    assert 'argument --crop-xywh' in err and '[40, 0, 240, 240]' in err
    # the same crop as recorded is fine
    rc, err, _ = _train(tmp_path, capsys, '--crop-xywh', '40,0,240,240', '--source-size',
                        '320,240')
    assert rc == 0, err


def test_train_negative_steps_per_epoch_and_stem_are_refused(tmp_path, capsys):
    for option in ('--steps-per-epoch', '--stem'):
        rc, err, out = _train(tmp_path, capsys, option, '-1')
        assert rc == 2 and f'argument {option}' in err and '>= 0' in err and not out.exists()


def test_train_several_frames_files_and_the_reproduce_section(tmp_path, capsys):
    paths = []
    for k in range(2):
        fs = synthetic_frames(episodes=6, steps=6, seed=k)
        fs.meta.update(CROP, source='collect_grasp_frames', seeds=list(range(6 * k, 6 * k + 6)),
                       shapes=['box', 'cylinder', 'sphere'], hard_negatives=True,
                       image_size=64, label='ground_truth: GraspSim.object_lifted()',
                       generator=st_generator())
        paths.append(fs.save(tmp_path / f'part{k}.npz'))
    rc, err, out = _train(tmp_path, capsys, frames=paths)
    assert rc == 0, err
    metrics = json.loads((out.parent / 'grasp_success_metrics.json').read_text())
    assert metrics['frames_files'] == [str(p) for p in paths]
    assert metrics['train_episodes'] + metrics['validation_episodes'] == 12
    card = out.with_suffix('.md').read_text()
    assert str(paths[0]) in card and str(paths[1]) in card and '## Reproduce' in card
    for k in range(2):
        assert (f'awopt collect-success-frames --task grasp --episodes 6 --seed {6 * k} '
                f'--shapes box,cylinder,sphere --crop-xywh 40,0,240,240 --out {paths[k]}'
                in card)
    assert (f'awopt train-classifier --task grasp --frames {paths[0]} --frames {paths[1]} '
            in card) and '--steps-per-epoch 2' in card and f'--out {out}' in card
    assert 'labels from the simulator ground truth' in card
    assert 'simulated frames only' in card


def st_generator():
    from awopt_ros.learning.success_data import GENERATOR_VERSION
    return GENERATOR_VERSION


def test_insertion_card_limits_are_about_the_peg_not_the_gripper():
    cfg = small_config(task='insertion')
    metrics = {'parameters': 10, 'epochs': 1, 'steps_per_epoch': 1, 'best_epoch': 1,
               'train_seconds': 1.0, 'train_frames': 4, 'train_positives': 2,
               'train_episodes': 2, 'on_threshold': 0.7, 'off_threshold': 0.2,
               'debounce_frames': 2, 'heldout_frames': 4, 'heldout_episodes': 2,
               'heldout_positives': 2, 'heldout_success_episodes': 1,
               'heldout_frame_accuracy': 1.0, 'heldout_episode_false_success_rate': 0.0,
               'heldout_episode_missed_success_rate': 0.0}
    card = st.model_card(cfg, metrics, 'data', 'insertion_success.onnx', 'default',
                         train_groups=['default'])
    assert 'gripper, or lifted' not in card and 'object kind' not in card
    assert 'peg hidden or occluded' in card and '2 mm' in card
    assert 'other scene seeds of the same socket' in card
    card = st.model_card(cfg, metrics, 'data', 'insertion_success.onnx', 'hard',
                         train_groups=['default'])
    assert 'socket variant not trained on' in card
    grasp = st.model_card(small_config(), dict(metrics), 'data', 'g.onnx', 'capsule')
    assert 'lifted outside the crop' in grasp


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    """A tiny grasp classifier (crop 40,0,240,240 of 320x240) trained in about a second."""
    tmp = tmp_path_factory.mktemp('tiny')
    fs = synthetic_frames(episodes=8, steps=6)
    fs.meta.update(CROP)
    path = fs.save(tmp / 'train.npz')
    out = tmp / 'grasp_success.onnx'
    assert main(['train-classifier', '--task', 'grasp', *TINY, '--frames', str(path),
                 '--out', str(out)]) == 0
    return out, path


def _evaluate(model, capsys, *argv):
    rc = main(['evaluate-classifier', str(model), *[str(a) for a in argv]])
    return rc, capsys.readouterr()


def test_evaluate_refuses_frames_of_another_task_size_or_crop(tmp_path, tiny_model, capsys):
    model, _ = tiny_model
    bad = {'task': synthetic_frames(episodes=4), 'size': synthetic_frames(episodes=4, size=48),
           'crop': synthetic_frames(episodes=4)}
    bad['task'].task = 'insertion'
    bad['task'].meta.update(CROP)
    bad['size'].meta.update(CROP)
    bad['crop'].meta.update(crop_xywh=[80, 0, 480, 480], camera_size=[640, 480])
    for what, fs in bad.items():
        path = fs.save(tmp_path / f'{what}.npz')
        for option in ('--frames', '--heldout'):
            rc, cap = _evaluate(model, capsys, option, path, '--metrics-out',
                                tmp_path / f'{what}.json')
            assert rc == 2 and len(cap.err.strip().splitlines()) == 1, (what, cap.err)
            assert f'argument {option}' in cap.err and 'Traceback' not in cap.err
            assert {'task': "task 'insertion'", 'size': '(48, 48, 3)',
                    'crop': 'crop_xywh'}[what] in cap.err
            assert not (tmp_path / f'{what}.json').exists()


def _report(path, **keys):
    base = {'episodes': 50, 'stack_episodes': 50, 'stack_agreement_rate': 0.9,
            'success_source': 'classifier',
            'stack_agreement_by_source': {'classifier': {'episodes': 40,
                                                         'agreement_rate': 0.975}}}
    base.update(keys)
    path.write_text(json.dumps(base))
    return path


def test_stack_report_must_come_from_the_classifier_of_this_model(tmp_path, tiny_model,
                                                                  capsys):
    model, _ = tiny_model
    run = tmp_path / 'run'
    (run / 'logs').mkdir(parents=True)
    report = _report(run / 'report.json', success_source='ground_truth',
                     stack_agreement_by_source={'ground_truth': {'episodes': 50,
                                                                 'agreement_rate': 1.0}})
    rc, cap = _evaluate(model, capsys, '--stack-report', report, '--metrics-out',
                        tmp_path / 'a.json')
    assert rc == 2 and "'ground_truth', not the classifier" in cap.err
    assert len(cap.err.strip().splitlines()) == 1 and not (tmp_path / 'a.json').exists()
    # a report that names another task
    _report(report, task='insertion')
    rc, cap = _evaluate(model, capsys, '--stack-report', report, '--metrics-out',
                        tmp_path / 'a.json')
    assert rc == 2 and "run of task 'insertion'" in cap.err
    # the run's success_detector log names another model file
    _report(report)
    log = run / 'logs' / 'success_detector.log'
    log.write_text("[INFO] [1.0] [success_detector]: success classifier /x/other.onnx (task "
                   "'grasp', 64 px) on /policy/image: on 0.7, off 0.1, 2 frames 0.1 s apart\n")
    rc, cap = _evaluate(model, capsys, '--stack-report', report, '--metrics-out',
                        tmp_path / 'a.json')
    assert rc == 2 and '/x/other.onnx' in cap.err and len(cap.err.strip().splitlines()) == 1
    # this model: the classifier's own numbers (not the top-level mix) go into the metrics
    log.write_text(log.read_text().replace('/x/other.onnx', str(model)))
    rc, cap = _evaluate(model, capsys, '--stack-report', report, '--metrics-out',
                        tmp_path / 'a.json')
    assert rc == 0, cap.err
    ev = json.loads((tmp_path / 'a.json').read_text())
    assert ev['stack_agreement_rate'] == 0.975 and ev['stack_episodes'] == 40
    assert str(report) in cap.out and str(model) in cap.out
    # no log and no model key: accepted, and it says the model was not checked
    log.unlink()
    rc, cap = _evaluate(model, capsys, '--stack-report', report, '--metrics-out',
                        tmp_path / 'b.json')
    assert rc == 0 and 'not recorded' in cap.out and str(report) in cap.out


def test_missing_model_file_hint_names_the_command_that_makes_it(tmp_path):
    from awopt_ros.core.onnx_policy import _check_file
    with pytest.raises(FileNotFoundError, match='`awopt train` or'):
        _check_file(tmp_path / 'no.onnx')
    with pytest.raises(FileNotFoundError, match='`awopt train-classifier`'):
        _check_file(tmp_path / 'no.onnx', 'awopt train-classifier')


def test_evaluate_frames_help_reads_cleanly(capsys):
    with pytest.raises(SystemExit):
        main(['evaluate-classifier', '--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert 'or "validation_" is not used' not in text
    assert 'not "validation_"' in text


def test_collect_command_of_a_concatenated_frameset_lists_its_parts():
    part = {'source': 'collect_grasp_frames', 'seeds': [5, 6, 7], 'shapes': ['capsule'],
            'hard_negatives': False, 'image_size': 64, 'crop_xywh': [80, 0, 480, 480]}
    meta = {'parts': [part, dict(part, seeds=[10, 11])], 'renumbered': True}
    text = st.collect_command(meta, 'runs/x.npz')
    assert ('--episodes 3 --seed 5 --shapes capsule --no-hard-negatives '
            '--out runs/x_part0.npz') in text
    assert '--episodes 2 --seed 10' in text and 'FrameSet.concat' in text
    assert st.collect_command(dict(part, seeds=[1, 3]), 'y.npz') is None   # not a seed range
    assert st.collect_command({'source': 'frames_from_dataset'}, 'y.npz') is None
