"""core.dataset: the success classifier's score per step and the reward source per episode
(issue 24), and datasets written before they existed."""
import dataclasses

import numpy as np
import pytest

from awopt_ros.core.dataset import (EpisodeRecorder, StateEpisodeRecorder, latest_at_or_before,
                                    load_episodes)
from awopt_ros.learning import data

DATASET_ID = 'awopt/kuka-grasp-v0'


def test_latest_at_or_before_takes_the_newest_score_not_after_each_stamp():
    got = latest_at_or_before([0.9, 1.0, 1.05, 1.1, 2.5], [1.1, 1.0, 2.0], [0.3, 0.1, 0.9])
    np.testing.assert_array_equal(got, np.float32([np.nan, 0.1, 0.1, 0.3, 0.9]))
    assert got.dtype == np.float32
    assert np.isnan(latest_at_or_before([1.0, 2.0], [], [])).all()
    with pytest.raises(ValueError, match='differ in length'):
        latest_at_or_before([1.0], [1.0, 2.0], [0.5])


def test_latest_at_or_before_counts_only_values_after_a_start_and_not_too_old():
    """The previous episode's score (stamped at or before the start) and a score more than
    max_age_s older than the step do not stand for the step: NaN."""
    query = [10.05, 10.1, 10.2, 10.3, 10.5, 10.6]
    stamps, values = [9.9, 10.0, 10.1, 10.6], [0.9, 0.8, 0.3, 0.7]
    got = latest_at_or_before(query, stamps, values, after_s=10.0, max_age_s=0.25)
    np.testing.assert_array_equal(got, np.float32([np.nan, 0.3, 0.3, 0.3, np.nan, 0.7]))
    np.testing.assert_array_equal(latest_at_or_before(query, stamps, values),
                                  np.float32([0.8, 0.3, 0.3, 0.3, 0.3, 0.7]))
    assert np.isnan(latest_at_or_before([10.5], [9.9], [0.9], after_s=10.0)).all()


def test_finish_takes_no_score_from_before_the_episode_start(tmp_path):
    rng = np.random.default_rng(5)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    _steps(rec, 1, 4, rng)     # steps stamped 10.0 .. 10.3; final 10.4
    scores = ([9.95, 10.1], [0.9, 0.2])    # 9.95: the previous episode's last frame
    buffer, _ = rec.finish(False, False, True, *_final(rng), final_stamp_s=10.4,
                           classifier_scores=scores, scores_after_s=9.98)
    np.testing.assert_array_equal(buffer.infos['success_classifier_probability'],
                                  np.float32([np.nan, 0.2, 0.2, 0.2, np.nan]))


def _steps(rec, k, steps, rng):
    rec.begin(k, 100 + k)
    for t in range(steps):
        rec.add_step(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                     rng.normal(size=6).astype(np.float32), np.zeros(7, np.float32),
                     0.1 * t, 1, 10.0 + 0.1 * t)


def _final(rng):
    return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), np.zeros(6, np.float32)


def test_scores_per_step_and_reward_source_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    _steps(rec, 1, 3, rng)     # steps stamped 10.0, 10.1, 10.2; final 10.3
    scores = ([9.9, 10.0, 10.25, 10.3], [0.05, 0.2, 0.7, 0.95])   # 10.1 and 10.2 unscored
    rec.end(True, True, False, *_final(rng), final_stamp_s=10.3, classifier_scores=scores,
            reward_source='classifier', ground_truth_success=False)
    _steps(rec, 2, 2, rng)     # no detector: NaN; ground truth unknown (hardware)
    rec.end(False, False, True, *_final(rng), reward_source='ground_truth')
    first, second = load_episodes(tmp_path, DATASET_ID)
    np.testing.assert_array_equal(first['success_classifier_probability'],
                                  np.float32([0.2, 0.2, 0.2, 0.95]))
    assert first['reward_source'] == 'classifier' and first['ground_truth_success'] is False
    assert first['episode'] == 1
    assert np.isnan(second['success_classifier_probability']).all()
    assert second['success_classifier_probability'].shape == (3,)
    assert second['reward_source'] == 'ground_truth' and second['ground_truth_success'] is None


def test_truncate_drops_the_scores_of_the_dropped_steps(tmp_path):
    rng = np.random.default_rng(1)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    rec.begin(0)
    for t in range(3):
        rec.add_step(np.zeros((64, 64, 3), np.uint8), np.zeros(6, np.float32),
                     np.zeros(7, np.float32), 0.0, 1, float(t),
                     success_classifier_probability=0.1 * (t + 1))
    rec.truncate(2)
    buffer, _ = rec.finish(False, False, True, *_final(rng))
    np.testing.assert_allclose(buffer.infos['success_classifier_probability'],
                               [0.1, 0.2, 0.2])


def test_unknown_reward_source_is_refused(tmp_path):
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    _steps(rec, 0, 1, np.random.default_rng(2))
    with pytest.raises(ValueError, match='success_source must be one of'):
        rec.finish(True, True, False, *_final(np.random.default_rng(2)),
                   reward_source='operator')


def test_datasets_written_before_the_fields_existed_still_load(tmp_path):
    """An episode without the score info and with the old options ({'episode'} only), then a
    new one appended to the same dataset: both load, through learning.data too."""
    rng = np.random.default_rng(3)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    _steps(rec, 0, 2, rng)
    buffer, summary = rec.finish(True, True, False, *_final(rng))
    infos = {k: v for k, v in buffer.infos.items() if k != 'success_classifier_probability'}
    old = dataclasses.replace(buffer, infos=infos, options={'episode': 0})
    rec.append(old, summary)
    _steps(rec, 1, 2, rng)
    rec.end(True, True, False, *_final(rng), reward_source='classifier',
            ground_truth_success=True)
    old_ep, new_ep = data.load_episodes(tmp_path, DATASET_ID)
    assert old_ep['reward_source'] == 'ground_truth' and old_ep['ground_truth_success'] is None
    assert old_ep['success_classifier_probability'].shape == (3,)
    assert np.isnan(old_ep['success_classifier_probability']).all()
    assert new_ep['reward_source'] == 'classifier' and new_ep['ground_truth_success'] is True
    images, _, actions, stats = data.bc_arrays([old_ep, new_ep])
    assert stats['used_episodes'] == 2 and actions.shape == (4, 7)


def test_state_dataset_records_the_reward_source(tmp_path):
    rec = StateEpisodeRecorder(tmp_path, 'awopt/sawyer-insertion-v0')
    rec.begin(4)
    rec.add_step(np.zeros(15, np.float32), np.zeros(3, np.float32), 0.0, 4, 1.0)
    rec.end(True, True, False, reward_source='classifier', ground_truth_success=True)
    (ep,) = load_episodes(tmp_path, 'awopt/sawyer-insertion-v0')
    assert ep['reward_source'] == 'classifier' and ep['ground_truth_success'] is True
