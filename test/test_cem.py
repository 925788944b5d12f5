"""Tests for awopt_ros.core.cem (batched CEM maximiser, QT-Opt / AW-Opt actor candidate)."""
import numpy as np
import pytest

from awopt_ros.core import spec
from awopt_ros.core.cem import CEM, CEMConfig, CEMResult

D = spec.ACTION_DIM
CONT = spec.CONTINUOUS
DISC = spec.DISCRETE
HALF = (spec.ACTION_HIGH[CONT] - spec.ACTION_LOW[CONT]) / 2.0


def quadratic(target):
    """Concave score -||z - z_target||^2 over the normalised continuous dims; target (B, 4)."""
    target = np.asarray(target, dtype=np.float64)

    def score(c):
        diff = (c[..., CONT] - target[:, None, :]) / HALF
        return -np.sum(diff ** 2, axis=-1)
    return score


class Recorder:
    """Wraps a score function, keeping a copy of every candidate array it receives."""

    def __init__(self, fn):
        self.fn, self.seen = fn, []

    def __call__(self, c):
        self.seen.append(np.array(c))
        return self.fn(c)


def test_finds_maximum_of_concave_function():
    """3 iterations x 64 samples land near the maximum (tolerances hold over 500 seeds)."""
    target = np.array([[0.012, -0.02, 0.005, 0.15]])
    cfg = CEMConfig(iterations=3, samples=64, elites=6)
    res = CEM(cfg, seed=0).maximise(quadratic(target), 1)
    assert isinstance(res, CEMResult) and res.calls == 3
    assert res.actions.dtype == np.float32 and res.actions.shape == (1, D)
    assert res.scores.dtype == np.float32 and res.scores.shape == (1,)
    assert np.all(np.abs(res.actions[0, CONT] - target[0]) < 0.6 * HALF)
    assert res.scores[0] > -0.3  # centre of the box scores -||target||^2 = -0.88
    np.testing.assert_allclose(res.scores[0], quadratic(target)(res.actions[:, None])[0, 0],
                               rtol=1e-5)
    # Typical accuracy: median error over seeds is ~0.08 of the half range.
    errs = [np.max(np.abs(CEM(cfg, seed=s).maximise(quadratic(target), 1).actions[0, CONT]
                          - target[0]) / HALF) for s in range(1, 21)]
    assert np.median(errs) < 0.2


def test_picks_rewarded_discrete_values():
    want = np.array([0.0, 1.0, 0.0])  # close, don't open, don't terminate

    def score(c):
        return -np.sum((c[..., DISC] - want) ** 2, axis=-1) - 0.01 * np.sum(c[..., CONT] ** 2, -1)
    res = CEM(CEMConfig(iterations=3, samples=64, elites=6), seed=1).maximise(score, 4)
    np.testing.assert_array_equal(res.actions[:, DISC], np.tile(want, (4, 1)))


def test_best_over_all_iterations_not_last():
    """A score that rewards only the first call's candidates: the result must come from it."""
    calls = []

    def score(c):
        calls.append(np.array(c))
        s = -np.sum(c[..., CONT] ** 2, axis=-1)
        return s if len(calls) == 1 else s - 100.0
    res = CEM(CEMConfig(iterations=3, samples=16, elites=4), seed=2).maximise(score, 3)
    first = calls[0]
    for r in range(3):
        k = np.argmax(-np.sum(first[r, :, CONT] ** 2, axis=-1))
        np.testing.assert_array_equal(res.actions[r], first[r, k])
    assert np.all(res.scores > -1.0)


def test_optimal_extra_candidate_returned_exactly():
    extra = np.array([[[0.0123, -0.0045, 0.0291, -0.1337, 1.0, 0.0, 1.0]],
                      [[-0.03, 0.03, 0.0, 0.2, 0.0, 1.0, 0.0]]], dtype=np.float32)

    def score(c):
        return -np.sum((c - extra) ** 2, axis=-1)  # exactly 0 at the extra candidate only
    rec = Recorder(score)
    res = CEM(CEMConfig(iterations=2, samples=32, elites=4), seed=3).maximise(
        rec, 2, extra_candidates=extra)
    np.testing.assert_array_equal(res.actions, extra[:, 0])
    np.testing.assert_array_equal(res.scores, [0.0, 0.0])
    for c in rec.seen:  # scored in every iteration, after the samples
        np.testing.assert_array_equal(c[:, -1], extra[:, 0])


def test_extra_candidates_clipped_to_bounds():
    extra = np.array([[[0.5, -0.5, 0.01, 3.0, 2.0, -1.0, 0.0]]], dtype=np.float32)
    rec = Recorder(lambda c: -np.sum(c ** 2, axis=-1))
    CEM(CEMConfig(iterations=1, samples=4, elites=2), seed=0).maximise(rec, 1, extra)
    np.testing.assert_allclose(rec.seen[0][0, -1], [0.03, -0.03, 0.01, 0.2, 1.0, 0.0, 0.0])


def test_samples_within_bounds_and_discrete_binary():
    rec = Recorder(lambda c: np.sum(c[..., CONT], axis=-1))  # pushes towards the upper bounds
    cem = CEM(CEMConfig(iterations=3, samples=64, elites=6, init_std=3.0), seed=4)
    res = cem.maximise(rec, 5)
    for c in rec.seen + [res.actions[:, None]]:
        assert c.dtype == np.float32
        assert np.all(c >= spec.ACTION_LOW) and np.all(c <= spec.ACTION_HIGH)
        assert np.all(np.isin(c[..., DISC], (0.0, 1.0)))
    # With std 3 (normalised) many samples hit the bounds exactly, and both discrete values occur.
    c = np.concatenate(rec.seen, axis=1)
    assert np.any(c[..., CONT] == spec.ACTION_HIGH[CONT])
    assert np.any(c[..., DISC] == 0.0) and np.any(c[..., DISC] == 1.0)


@pytest.mark.parametrize('iterations,samples,extra', [(1, 8, 0), (2, 64, 1), (3, 16, 2)])
def test_one_score_call_per_iteration_with_all_candidates(iterations, samples, extra):
    B = 3
    rec = Recorder(lambda c: -np.sum(c ** 2, axis=-1))
    ex = np.zeros((B, extra, D), dtype=np.float32) if extra else None
    res = CEM(CEMConfig(iterations=iterations, samples=samples, elites=2), seed=5).maximise(
        rec, B, extra_candidates=ex)
    assert res.calls == iterations == len(rec.seen)
    assert all(c.shape == (B, samples + extra, D) and c.dtype == np.float32 for c in rec.seen)


def test_batch_rows_independent():
    """Six rows with targets in different orthants: each row converges to its own target."""
    signs = np.array([[1, 1, 1, 1], [-1, -1, -1, -1], [1, -1, 1, -1],
                      [-1, 1, -1, 1], [1, 1, -1, -1], [-1, -1, 1, 1]])
    targets = 0.6 * signs * HALF
    res = CEM(CEMConfig(iterations=3, samples=64, elites=6), seed=7).maximise(
        quadratic(targets), 6)
    assert np.all(np.abs(res.actions[:, CONT] - targets) < 0.6 * HALF)
    np.testing.assert_array_equal(np.sign(res.actions[:, CONT]), signs)
    # The same row alone (batch of 1) reaches a comparable optimum: rows do not mix.
    alone = CEM(CEMConfig(iterations=3, samples=64, elites=6), seed=7).maximise(
        quadratic(targets[1:2]), 1)
    assert np.all(np.abs(alone.actions[0, CONT] - targets[1]) < 0.6 * HALF)


def test_init_mean_starts_distribution():
    target = np.array([[0.025, 0.025, -0.025, -0.18]])
    init = np.concatenate([target, [[1.0, 0.0, 0.0]]], axis=1)
    cfg = CEMConfig(iterations=1, samples=64, elites=6, init_std=0.05)
    rec = Recorder(quadratic(target))
    CEM(cfg, seed=8).maximise(rec, 1, init_mean=init)
    c = rec.seen[0][0]
    np.testing.assert_allclose(c[:, CONT].mean(axis=0) / HALF, target[0] / HALF, atol=0.05)
    np.testing.assert_array_equal(c[:, DISC], np.tile([1.0, 0.0, 0.0], (64, 1)))


def test_seeded_runs_reproducible():
    target = np.array([[0.01, 0.0, -0.01, 0.1], [0.0, 0.02, 0.0, -0.1]])
    runs = [CEM(seed=11).maximise(quadratic(target), 2) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].actions, runs[1].actions)
    np.testing.assert_array_equal(runs[0].scores, runs[1].scores)
    other = CEM(seed=12).maximise(quadratic(target), 2)
    assert not np.array_equal(runs[0].actions, other.actions)


def test_variance_floor_and_discrete_floor_keep_exploring():
    """After collapse onto one elite, std >= sqrt(floor) and p in [floor, 1-floor] remain."""
    cfg = CEMConfig(iterations=6, samples=64, elites=1, variance_floor=0.01, discrete_floor=0.2)
    rec = Recorder(lambda c: -np.sum(c[..., CONT] ** 2, -1) - np.sum(c[..., DISC], -1))
    CEM(cfg, seed=9).maximise(rec, 2)
    last = rec.seen[-1]
    z = last[..., CONT] / HALF
    assert np.all(z.std(axis=1) > 0.05)            # floored std 0.1 in normalised units
    assert np.all(last[..., DISC].max(axis=1) == 1.0)  # p >= 0.2 still samples ones


@pytest.mark.parametrize('kwargs,field', [
    ({'iterations': 0}, 'iterations'),
    ({'iterations': 1.5}, 'iterations'),
    ({'samples': 1}, 'samples'),
    ({'elites': 0}, 'elites'),
    ({'samples': 8, 'elites': 9}, 'elites'),
    ({'init_std': 0.0}, 'init_std'),
    ({'init_std': float('nan')}, 'init_std'),
    ({'variance_floor': -1e-3}, 'variance_floor'),
    ({'variance_floor': 1.0}, 'variance_floor'),
    ({'discrete_floor': 0.5}, 'discrete_floor'),
    ({'discrete_floor': -0.1}, 'discrete_floor'),
])
def test_invalid_config_raises(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CEMConfig(**kwargs)


def test_invalid_bounds_raise():
    with pytest.raises(ValueError, match='low'):
        CEM(low=np.zeros(3), high=np.ones(4))
    with pytest.raises(ValueError, match='< high'):
        CEM(low=np.array([0.0, 1.0]), high=np.array([1.0, 1.0]), discrete=())
    with pytest.raises(ValueError, match='discrete indices'):
        CEM(discrete=(4, 4, 6))
    with pytest.raises(ValueError, match=r'bounds \[0, 1\]'):
        CEM(low=np.zeros(2), high=np.full(2, 2.0), discrete=(1,))


def test_invalid_inputs_raise():
    cem = CEM(CEMConfig(iterations=2, samples=8, elites=2), seed=0)
    ok = lambda c: -np.sum(c ** 2, axis=-1)  # noqa: E731
    with pytest.raises(ValueError, match='batch_size'):
        cem.maximise(ok, 0)
    with pytest.raises(ValueError, match=r'\(2, 8\)'):  # wrong score shape named
        cem.maximise(lambda c: np.zeros((2, 8)), 2, extra_candidates=np.zeros((2, 1, D)))
    with pytest.raises(ValueError, match=r'got \(2, 9, 1\)'):
        cem.maximise(lambda c: np.zeros((2, 9, 1)), 2, extra_candidates=np.zeros((2, 1, D)))

    def nan_scores(c):
        s = np.zeros(c.shape[:2])
        s[0, :3] = np.nan
        return s
    with pytest.raises(ValueError, match='3 non-finite'):
        cem.maximise(nan_scores, 2)
    with pytest.raises(ValueError, match='extra_candidates'):
        cem.maximise(ok, 2, extra_candidates=np.zeros((2, D)))
    with pytest.raises(ValueError, match='extra_candidates'):
        cem.maximise(ok, 2, extra_candidates=np.zeros((3, 1, D)))
    with pytest.raises(ValueError, match='extra_candidates'):
        cem.maximise(ok, 2, extra_candidates=np.full((2, 1, D), np.nan))
    with pytest.raises(ValueError, match='init_mean'):
        cem.maximise(ok, 2, init_mean=np.zeros((2, D - 1)))


def test_generic_bounds_without_discrete_dims():
    cem = CEM(CEMConfig(iterations=3, samples=64, elites=6), low=[-2.0, 10.0], high=[2.0, 20.0],
              discrete=(), seed=10)
    res = cem.maximise(lambda c: -(c[..., 0] - 1.0) ** 2 - ((c[..., 1] - 12.0) / 5) ** 2, 1)
    np.testing.assert_allclose(res.actions[0], [1.0, 12.0], atol=0.4)
