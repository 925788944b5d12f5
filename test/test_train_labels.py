"""Training on a recorded run after the operator's verdicts: discarded episodes are left out
and labels give the rewards, in every loader that feeds a learner (awopt train: behaviour
cloning and the learner presets; awopt finetune's incremental reader; the success
classifier's frames). On a copy of the recorded demo run (two actor episodes that timed out:
no reward): episode 1 discarded, episode 2 labelled success."""
import json
import shutil

import numpy as np
import pytest

from awopt_ros.cli import main as awopt

DATASET_ID = 'awopt/kuka-grasp-v0'


@pytest.fixture
def run(recorded_demo_run, tmp_path):
    root = tmp_path / 'run'
    shutil.copytree(recorded_demo_run, root)
    return root


def _annotate(root):
    assert awopt(['discard', str(root), '--episode', '1', '--reason', 'camera covered']) == 0
    assert awopt(['label', str(root), '--episode', '2', 'success']) == 0


def _steps(root):
    from awopt_ros.core.dataset import load_episodes
    return {e['episode']: len(e['actions']) for e in load_episodes(root, DATASET_ID)}


def _train(root, out, *extra):
    return awopt(['train', '--dataset-root', str(root), '--dataset-id', DATASET_ID,
                  '--out', str(out), '--steps', '2', '--batch-size', '4', '--eval-every', '1',
                  '--no-progress', '--threads', '1', *extra])


def test_behaviour_cloning_trains_on_the_labelled_episode_only(run, tmp_path, capsys):
    steps = _steps(run)
    # recorded: both episodes timed out, so behaviour cloning (successful episodes) has none
    assert _train(run, tmp_path / 'before.onnx') == 2
    assert '0 successful' in capsys.readouterr().err
    _annotate(run)
    capsys.readouterr()
    assert _train(run, tmp_path / 'bc.onnx') == 0
    out = capsys.readouterr().out
    assert 'operator annotations: 1 of 2 episodes discarded, 1 labelled' in out
    data = json.loads((tmp_path / 'bc_summary.json').read_text())['data']
    assert data == dict(data, episodes=1, successful=1, used_episodes=1, transitions=steps[2])
    # --all-episodes: still without the discarded one
    assert _train(run, tmp_path / 'all.onnx', '--all-episodes') == 0
    data = json.loads((tmp_path / 'all_summary.json').read_text())['data']
    assert data['episodes'] == 1 and data['transitions'] == steps[2]


def test_learner_preset_sees_the_label_as_its_reward(run, tmp_path):
    _annotate(run)
    assert _train(run, tmp_path / 'awopt.onnx', '--preset', 'awopt', '--channels', '4',
                  '--hidden', '16', '--num-conv', '2', '--checkpoint-every', '0') == 0
    data = json.loads((tmp_path / 'awopt_summary.json').read_text())['data']
    assert (data['episodes'], data['successful'], data['transitions']) == (
        1, 1, _steps(run)[2])


def test_training_loader_and_display_loader(run, capsys):
    from awopt_ros.learning.data import load_episodes
    shown = load_episodes(run, DATASET_ID, training=False)
    assert [e['discarded'] for e in shown] == [False, False]
    _annotate(run)
    shown = load_episodes(run, DATASET_ID, training=False)       # tools: kept, flagged
    assert [(e['episode'], e['discarded'], e['label']) for e in shown] == [
        (1, True, None), (2, False, 'success')]
    assert not any(e['rewards'].any() for e in shown)             # as recorded
    capsys.readouterr()
    trained = load_episodes(run, DATASET_ID)
    assert 'training on 1' in capsys.readouterr().out
    assert [e['episode'] for e in trained] == [2]
    ep = trained[0]
    assert ep['rewards'][-1] == 1.0 and ep['rewards'][:-1].sum() == 0
    assert ep['terminations'][-1] and not ep['truncations'][-1]


def test_finetune_skips_discarded_and_counts_them_as_seen(run):
    from awopt_ros.core.dataset import EpisodeRecorder
    from awopt_ros.learning.awopt import CEMConfig, CriticConfig, Learner, make_config
    from awopt_ros.learning.finetune import DatasetSource, Finetuner, FinetuneConfig
    from awopt_ros.learning.networks import ActorConfig
    _annotate(run)
    learner = Learner(make_config(
        'awopt', actor=ActorConfig(image_size=64, channels=4, num_conv=2, hidden=16),
        critic=CriticConfig(image_size=64, channels=4, num_conv=2, num_strided=2, head_conv=1,
                            hidden=8),
        batch_size=8, num_threads=1, target_cem=CEMConfig(2, 8, 2)))
    lines = []
    ft = Finetuner(learner, DatasetSource(run, DATASET_ID), FinetuneConfig(poll_s=0.0),
                   dataset_id=DATASET_ID, log=lines.append)
    assert ft.poll() == 1
    assert ft.seen == 2 and ft.discarded == [0]
    assert ft.buffer.num_episodes == 1 and ft.buffer.num_successful == 1
    assert ft.episodes[0]['index'] == 1 and ft.episodes[0]['success']
    assert ft.episodes[0]['reward_source'] == 'operator'
    assert any('discarded by the operator' in line for line in lines)
    assert any('episode 1 labelled success by the operator' in line for line in lines)
    # the logger appends a third episode: read from index 2 on, nothing skipped twice
    rec = EpisodeRecorder(run, DATASET_ID)
    rng = np.random.default_rng(0)
    rec.begin(3, 0)
    for t in range(2):
        rec.add_step(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                     np.zeros(6, np.float32), np.zeros(7, np.float32), 0.0, 1, 1.0 + t)
    assert rec.end(False, False, True, np.zeros((64, 64, 3), np.uint8),
                   np.zeros(6, np.float32))['index'] == 2
    assert ft.poll() == 1 and ft.seen == 3 and ft.discarded == [0]
    assert ft.summary()['discarded_episodes'] == [0]


def test_success_classifier_frames_skip_discarded_and_use_labels(run):
    from awopt_ros.learning.success_data import frames_from_dataset
    _annotate(run)
    frames = frames_from_dataset(run / 'datasets' / DATASET_ID, label='operator', last_k=3)
    assert frames.meta['discarded_episodes'] == 1
    assert frames.meta['sources'] == [[1, 2, 'annotation']]
    assert len(frames.labels) == 3 and frames.labels.tolist() == [1, 1, 1]
    truth = frames_from_dataset(run / 'datasets' / DATASET_ID)
    assert set(np.asarray(truth.episode).tolist()) == {1}


def test_finetune_reader_resolves_pending_records_against_the_whole_dataset(tmp_path):
    """finetune reads only the new episodes; a record the operator node made before the
    logger's report (after_index) for an earlier episode must not go to a new episode with
    the same number (a second recording into the run dir numbers from 1 again)."""
    from awopt_ros.core import annotations as ann
    from awopt_ros.core.dataset import EpisodeRecorder
    from awopt_ros.learning.finetune import DatasetSource
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    rng = np.random.default_rng(0)
    for seed, number in enumerate([1, 2, 3, 4, 5, 1, 2, 3]):
        rec.begin(number, seed)
        rec.add_step(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), np.zeros(6, np.float32),
                     np.zeros(7, np.float32), 0.0, 1, 1.0)
        rec.end(False, False, True, np.zeros((64, 64, 3), np.uint8), np.zeros(6, np.float32))
    ann.append_record(ann.journal_path(tmp_path, DATASET_ID), ann.make_record(
        3, after_index=2, discarded=True, reason='camera covered', source='operator'))
    source = DatasetSource(tmp_path, DATASET_ID)
    assert [ep['discarded'] for ep in source(5)] == [False, False, False]
    assert [ep['id'] for ep in source(0) if ep['discarded']] == [2]


def test_success_classifier_frames_from_bags_skip_discarded_and_use_labels(run):
    """collect-success-frames --from-run reads bags for insertion runs (and runs without an
    image dataset): the run's journal applies there too."""
    from awopt_ros.learning.success_data import frames_from_bags
    _annotate(run)
    frames = frames_from_bags(run, label='operator', last_k=3, operator_labels={},
                              unlabelled='recorded')
    assert frames.meta['sources'] == [[2, 2, 'annotation']]
    assert frames.meta['discarded_episodes'] == 1
    assert frames.labels.tolist() == [1, 1, 1]
    # a verdict of the --labels file still comes first; ground truth skips the discarded too
    mine = frames_from_bags(run / 'bags', label='operator', last_k=3, operator_labels={2: False})
    assert mine.meta['sources'] == [[2, 2, 'operator']] and mine.labels.tolist() == [0, 0, 0]
    truth = frames_from_bags(run)
    assert set(np.asarray(truth.episode).tolist()) == {2}
