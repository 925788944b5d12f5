"""Episode outcomes (core.episode) and run-report summaries (core.report)."""
import numpy as np
import pytest

from awopt_ros.core.episode import Episode, EpisodeConfig
from awopt_ros.core.report import latency_summary, percentile_ms, summarize_episodes

MOVE = np.array([0.01, 0, 0, 0, 0, 0, 0], np.float32)
TERMINATE = np.array([0, 0, 0, 0, 0, 0, 1], np.float32)


def make(**kw):
    return Episode(1, start_s=10.0, config=EpisodeConfig(**kw), watched=('camera', 'policy'),
                   start_wall_s=100.0)


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


def test_step_budget_and_time_limit_truncate():
    ep = make(max_steps=3)
    for t in (10.1, 10.2):
        assert ep.on_action(MOVE, t) is None
    assert ep.on_action(MOVE, 10.3).outcome == 'timeout'
    ep = make(timeout_s=1.0)
    assert ep.check(10.5) is None
    result = ep.check(11.0)
    assert result.outcome == 'timeout' and result.truncated


def test_silent_input_is_node_lost_on_wall_clock():
    ep = make(node_timeout_s=2.0)
    ep.seen('camera', 101.5)
    ep.seen('policy', 101.5)
    assert ep.check_inputs(10.0, 103.0) is None
    ep.seen('camera', 103.4)
    result = ep.check_inputs(10.0, 103.6)   # policy silent since 101.5
    assert result.outcome == 'node_lost' and 'policy' in result.detail and result.truncated


def test_never_received_input_is_lost():
    ep = make(node_timeout_s=1.0)
    assert ep.stale_inputs(100.5) == []
    assert ep.stale_inputs(101.5) == ['camera', 'policy']


def test_non_finite_action_counts_but_does_not_end():
    ep = make(max_steps=5)
    assert ep.on_action(np.full(7, np.nan, np.float32), 10.1) is None
    assert ep.steps == 1


def test_operator_stop():
    result = make().stop(12.0)
    assert result.outcome == 'operator' and result.truncated and result.duration_s == 2.0


@pytest.mark.parametrize('kw', [dict(max_steps=0), dict(timeout_s=0.0),
                                dict(success_threshold=1.5), dict(success_debounce=0),
                                dict(node_timeout_s=-1.0)])
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
