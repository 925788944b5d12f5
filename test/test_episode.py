"""Episode outcomes (core.episode) and run-report summaries (core.report)."""
import numpy as np
import pytest

from awopt_ros.core.episode import Episode, EpisodeConfig
from awopt_ros.core.report import latency_summary, percentile_ms, summarize_episodes

MOVE = np.array([0.01, 0, 0, 0, 0, 0, 0], np.float32)
TERMINATE = np.array([0, 0, 0, 0, 0, 0, 1], np.float32)


def make(**kw):
    return Episode(1, start_s=10.0, config=EpisodeConfig(**kw))


def test_terminate_action_ends_terminated():
    ep = make()
    assert ep.on_action(MOVE, 10.1) is None
    result = ep.on_action(TERMINATE, 10.2)
    assert result.outcome == 'terminate' and result.terminated and not result.truncated
    assert result.steps == 2 and not result.success
    assert ep.on_action(MOVE, 10.3) is None  # ended: further input ignored
    assert ep.steps == 2


def test_success_needs_debounced_samples():
    ep = make(success_debounce=2)
    assert ep.on_success_probability(0.9, 10.1) is None
    assert ep.on_success_probability(0.2, 10.2) is None   # run broken
    assert ep.on_success_probability(0.9, 10.3) is None
    result = ep.on_success_probability(0.95, 10.4)
    assert result.success and result.terminated
    event = result.as_event(10.4)
    assert event['outcome'] == 'success' and event['terminated'] and not event['truncated']


def test_ground_truth_source_reports_ground_truth_in_the_end_event():
    ep = make(success_debounce=2)
    ep.on_success_probability(0.9, 10.1)
    event = ep.on_success_probability(0.9, 10.2).as_event(10.2)
    assert event['success_source'] == 'ground_truth' and event['ground_truth_success'] is True
    event = make().on_action(TERMINATE, 10.1).as_event(10.1)   # no ground-truth sample came
    assert event['success_source'] == 'ground_truth' and event['ground_truth_success'] is None


def test_classifier_source_ends_on_a_true_decision_and_ignores_ground_truth():
    ep = make(success_source='classifier', success_debounce=2)
    assert ep.on_classifier_success(False, 10.1) is None
    for t in (10.2, 10.3, 10.4):   # ground truth reaches success: followed, does not end
        assert ep.on_success_probability(1.0, t) is None
    assert ep.ground_truth_success is True
    result = ep.on_classifier_success(True, 10.5)
    assert result.success and result.terminated and result.detail == 'classifier'
    event = result.as_event(10.5)
    assert event['success_source'] == 'classifier' and event['ground_truth_success'] is True


def test_classifier_source_ground_truth_that_never_reached_success_is_false():
    ep = make(success_source='classifier', success_debounce=2)
    ep.on_success_probability(0.9, 10.1)
    ep.on_success_probability(0.1, 10.2)     # run broken: never 2 in a row
    ep.on_success_probability(0.9, 10.3)
    ep.on_success_probability(0.2, 10.35)    # and down again when the classifier fires
    result = ep.on_classifier_success(True, 10.4)
    assert result.success and result.ground_truth_success is False
    timeout = make(success_source='classifier', max_steps=1).on_action(MOVE, 10.1)
    assert timeout.outcome == 'timeout' and timeout.ground_truth_success is None


def test_classifier_success_on_the_first_lifted_sample_counts_as_ground_truth_success():
    # The classifier confirms on the frame the simulator first reports the lift: the end cuts
    # the ground truth's debounce short, but the object is up, so the two agree.
    ep = make(success_source='classifier', success_debounce=2)
    ep.on_success_probability(0.0, 10.1)
    ep.on_success_probability(1.0, 10.2)
    assert ep.ground_truth_success is False
    result = ep.on_classifier_success(True, 10.2)
    assert result.success and result.ground_truth_success is True
    assert result.ground_truth_cut_short is True             # and the end event says so
    assert result.as_event(10.2)['ground_truth_cut_short'] is True
    early = make(success_source='classifier', success_debounce=2)
    early.on_success_probability(0.0, 10.1)  # the classifier fires before any lift: false
    result = early.on_classifier_success(True, 10.2)
    assert result.ground_truth_success is False and result.ground_truth_cut_short is False


def test_ground_truth_cut_short_only_when_the_rule_decided():
    """A ground truth that reached success on its own (debounced) before the classifier
    fired is not cut short; nor is an end by the ground truth itself."""
    ep = make(success_source='classifier', success_debounce=2)
    for t in (10.1, 10.2, 10.3):
        ep.on_success_probability(1.0, t)
    event = ep.on_classifier_success(True, 10.3).as_event(10.3)
    assert event['ground_truth_success'] is True and event['ground_truth_cut_short'] is False
    gt = make(success_debounce=2)
    gt.on_success_probability(1.0, 10.1)
    event = gt.on_success_probability(1.0, 10.2).as_event(10.2)
    assert event['ground_truth_success'] is True and event['ground_truth_cut_short'] is False
    assert make().stop(10.1).as_event(10.1)['ground_truth_cut_short'] is False


def test_ground_truth_source_ignores_classifier_decisions():
    ep = make()
    assert ep.on_classifier_success(True, 10.1) is None and not ep.done


def test_step_budget_and_time_limit_truncate():
    ep = make(max_steps=3)
    for t in (10.1, 10.2):
        assert ep.on_action(MOVE, t) is None
    assert ep.on_action(MOVE, 10.3).outcome == 'timeout'
    ep = make(timeout_s=1.0)
    assert ep.check(10.5) is None
    result = ep.check(11.0)
    assert result.outcome == 'timeout' and result.truncated


def test_abort_and_fail_truncate_once():
    ep = make()
    ep.on_action(MOVE, 10.1)
    result = ep.abort(11.0, 'no data from: logger (no diagnostics for 3.2 s)')
    assert result.outcome == 'node_lost' and result.truncated and not result.success
    assert result.steps == 1 and 'logger' in result.as_event(11.0)['detail']
    assert ep.fail(11.5, 'later') is None and ep.on_action(TERMINATE, 11.6) is None
    result = make().fail(10.5, 'logger: write error: disk full')
    assert result.outcome == 'failed' and result.truncated and not result.terminated
    event = result.as_event(10.5)
    assert event['outcome'] == 'failed' and event['detail'] == 'logger: write error: disk full'


def test_non_finite_action_counts_but_does_not_end():
    ep = make(max_steps=5)
    assert ep.on_action(np.full(7, np.nan, np.float32), 10.1) is None
    assert ep.steps == 1


def test_operator_stop():
    result = make().stop(12.0)
    assert result.outcome == 'operator' and result.truncated and result.duration_s == 2.0


@pytest.mark.parametrize('kw', [dict(max_steps=0), dict(timeout_s=0.0),
                                dict(success_threshold=1.5), dict(success_debounce=0),
                                dict(node_timeout_s=-1.0), dict(success_source='vision')])
def test_bad_config_raises(kw):
    with pytest.raises(ValueError):
        EpisodeConfig(**kw)


def test_report_summaries():
    ends = [{'success': True, 'outcome': 'success'}, {'success': False, 'outcome': 'timeout'},
            {'success': False, 'outcome': 'timeout'}, {'success': True, 'outcome': 'success'}]
    s = summarize_episodes(ends)
    assert s == {'episodes': 4, 'successes': 2, 'success_rate': 0.5,
                 'outcomes': {'success': 2, 'timeout': 2}}
    lat = latency_summary(list(range(1, 101)))
    assert lat['frame_to_command_ms_p50'] == pytest.approx(50.5)
    assert lat['frame_to_command_ms_p99'] == pytest.approx(99.01)
    assert lat['latency_samples'] == 100
    assert percentile_ms([], 50) is None
    assert summarize_episodes([])['success_rate'] == 0.0
