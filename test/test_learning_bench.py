"""Tests of the learning bench (awopt_ros.learning.bench) in quick mode: keys, values, ratios.

The figures of a quick run are not meaningful (tiny networks, a few repetitions); the
performance targets themselves are checked by ``make bench``, not here.
"""
import math

import pytest

from awopt_ros.learning import bench

LATENCY_KEYS = ('actor_ms_p50', 'cem_ms_p50', 'torch_actor_ms_p50', 'actor_beside_torch_ms_p50',
                'critic_encoder_ms_p50', 'critic_head_ms_p50', 'actor_ms_p50_472',
                'cem_ms_p50_472', 'torch_actor_ms_p50_472', 'actor_beside_torch_ms_p50_472',
                'critic_encoder_ms_p50_472', 'critic_head_ms_p50_472')
RATIO_KEYS = {'cem_over_actor': ('cem_ms_p50', 'actor_ms_p50'),
              'cem_over_actor_472': ('cem_ms_p50_472', 'actor_ms_p50_472'),
              'ort_over_torch': ('actor_beside_torch_ms_p50', 'torch_actor_ms_p50'),
              'ort_over_torch_472': ('actor_beside_torch_ms_p50_472',
                                     'torch_actor_ms_p50_472')}
OUR_RATE_KEYS = ('awac_steps_per_s', 'awopt_steps_per_s', 'insertion_steps_per_s')
D3RLPY_KEYS = ('d3rlpy_awac_steps_per_s', 'd3rlpy_awac_1critic_steps_per_s')
BOOL_KEYS = ('cem_over_actor_at_most_2', 'cem_over_actor_472_at_most_2',
             'ort_over_torch_at_most_half')


def _positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope='module')
def quick_result():
    return bench.run_learning_bench(quick=True, progress=False)


def test_quick_run_has_all_keys_with_finite_positive_numbers(quick_result):
    r = quick_result
    for key in LATENCY_KEYS + tuple(RATIO_KEYS) + OUR_RATE_KEYS:
        assert _positive(r[key]), (key, r[key])
    reason = r['d3rlpy_unavailable_reason']
    for key in D3RLPY_KEYS + ('awac_over_d3rlpy',):
        if reason is None:
            assert _positive(r[key]), (key, r[key])
        else:
            assert r[key] is None and isinstance(reason, str) and reason, (key, reason)
    for key in BOOL_KEYS:
        assert isinstance(r[key], bool), key
    assert r['awac_at_least_d3rlpy'] in ((None,) if reason else (True, False))
    setup = r['learning_bench_setup']
    assert setup['quick'] is True and setup['large_image_size'] == 472
    assert setup['torch_threads'] == bench.TORCH_THREADS
    assert setup['ort_intra_op_threads'] == bench.ORT_THREADS


def test_ratios_are_quotients_of_reported_figures(quick_result):
    r = quick_result
    for key, (num, den) in RATIO_KEYS.items():
        assert r[key] == pytest.approx(r[num] / r[den], rel=1e-5), key
    if r['d3rlpy_awac_steps_per_s'] is not None:
        assert r['awac_over_d3rlpy'] == pytest.approx(
            r['awac_steps_per_s'] / r['d3rlpy_awac_steps_per_s'], rel=1e-5)
        assert r['awac_at_least_d3rlpy'] == (r['awac_steps_per_s']
                                             >= r['d3rlpy_awac_steps_per_s'])
    assert r['cem_over_actor_at_most_2'] == (r['cem_over_actor'] <= 2.0)
    assert r['cem_over_actor_472_at_most_2'] == (r['cem_over_actor_472'] <= 2.0)
    assert r['ort_over_torch_at_most_half'] == (r['ort_over_torch'] <= 0.5)


def test_cem_part_timings_are_consistent(quick_result):
    r = quick_result
    # The CEM fallback runs the encoder once and the head twice, so neither part alone can
    # plausibly exceed the whole by much (generous factor: quick timings are noisy).
    for suffix in ('', '_472'):
        assert r[f'critic_encoder_ms_p50{suffix}'] < 3 * r[f'cem_ms_p50{suffix}']
        assert r[f'critic_head_ms_p50{suffix}'] < 3 * r[f'cem_ms_p50{suffix}']


def test_training_without_d3rlpy_reports_none_with_reason():
    out = bench.measure_training(bench.QUICK, with_d3rlpy=False)
    assert _positive(out['awac']) and _positive(out['awopt'])
    assert out['d3rlpy_awac'] is None and out['d3rlpy_awac_1critic'] is None
    assert 'skipped' in out['d3rlpy_reason']


def test_missing_d3rlpy_is_reported_with_the_install_command(monkeypatch):
    def fail():
        raise ImportError('No module named d3rlpy')
    monkeypatch.setattr(bench, '_import_d3rlpy', fail)
    out = bench.measure_training(bench.QUICK)
    assert out['d3rlpy_awac'] is None
    assert 'not importable' in out['d3rlpy_reason']
    assert 'pip install --no-deps d3rlpy' in out['d3rlpy_reason']


def test_interleaved_times_counts_and_order():
    calls = []
    times = bench.interleaved_times({'a': lambda: calls.append('a'),
                                     'b': lambda: calls.append('b')},
                                    rounds=2, warmup=1, calls_per_round=2)
    assert calls == ['a', 'b'] + ['a', 'a', 'b', 'b'] * 2
    assert [len(times['a']), len(times['b'])] == [4, 4]
    assert all(t >= 0 for t in times['a'] + times['b'])
    assert bench.interleaved_times({'a': lambda: None}, rounds=0, warmup=0) == {'a': []}


def test_synthetic_episodes_shapes_and_bounds():
    import numpy as np

    from awopt_ros.core import spec
    eps = bench.synthetic_episodes(3, 4, 16, seed=1)
    assert len(eps) == 3
    for i, ep in enumerate(eps):
        assert ep['images'].shape == (5, 16, 16, 3) and ep['images'].dtype == np.uint8
        assert ep['proprios'].shape == (5, spec.PROPRIO_DIM)
        assert ep['actions'].shape == (4, spec.ACTION_DIM)
        assert np.all(ep['actions'] >= spec.ACTION_LOW) and np.all(
            ep['actions'] <= spec.ACTION_HIGH)
        assert set(np.unique(ep['actions'][:, spec.DISCRETE])) <= {0.0, 1.0}
        assert ep['rewards'][-1] == float(i % 2 == 0) and not np.any(ep['rewards'][:-1])
