"""Batched cross-entropy-method (CEM) action maximiser (numpy only, no ROS, no torch).

One maximiser serves three callers: the critic's Bellman targets during training (the score
function wraps a torch critic head), exploration, and the deployed fallback policy (the score
function wraps onnxruntime). It approximates ``argmax_a Q(s, a)`` over the 7-D action of
``awopt_ros.core.spec`` for a batch of ``B`` states at once.

Algorithm (QT-Opt, Kalashnikov et al. 2018, Sec. 4.2 / Appendix; tf_agents ``QtOpt``):

* continuous dims (``dx, dy, dz`` in m, ``dyaw`` in rad) are sampled in normalised units
  ``z = (a - centre) / half_range`` from a per-row diagonal Gaussian, clipped to ``[-1, 1]``
  (the action bounds) and mapped back to physical units;
* discrete dims (``open, close, terminate``) are sampled from per-row Bernoulli(p) and are
  exactly 0.0 or 1.0;
* every iteration scores all candidates of all rows in ONE ``score_fn`` call (the critic
  encodes the image once and scores the ``(B, K + E)`` candidates in one batched head call),
  then refits the Gaussian mean/std (std floored at ``sqrt(variance_floor)``) and the
  Bernoulli probabilities (clipped to ``[discrete_floor, 1 - discrete_floor]``) to the
  ``elites`` best candidates of each row.

QT-Opt uses 2 iterations, 64 samples and 6 elites (the defaults here); tf_agents' QtOpt
defaults are 3 iterations, 32 samples, 4 elites, variance floor 1e-4, samples clipped to the
action bounds. AW-Opt (Lu et al. 2021, "ActorCandidate") adds the actor's action as one more
candidate in each CEM round: pass it as ``extra_candidates``; it is scored in every iteration
and competes for the elites and for the returned best action.

The returned action is the best candidate seen over all iterations (not only the last one).
"""
import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from awopt_ros.core import spec

_DEFAULT_DISCRETE = (spec.IDX_OPEN, spec.IDX_CLOSE, spec.IDX_TERMINATE)


def _is_int(value):
    return type(value) is int or (isinstance(value, Integral) and not isinstance(value, bool))


def _as_slice(index):
    """Return ``slice(a, b)`` for a sorted contiguous int array ``a..b-1``, else the array."""
    index = np.asarray(index, dtype=np.int64)
    if index.size and np.array_equal(index, np.arange(index[0], index[0] + index.size)):
        return slice(int(index[0]), int(index[0]) + index.size)
    return index


def _is_real(value):
    return isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(float(value))


@dataclass(frozen=True)
class CEMConfig:
    """CEM hyper-parameters (defaults: QT-Opt, Kalashnikov et al. 2018); validates itself.

    Attributes:
        iterations: CEM rounds, one ``score_fn`` call each; int >= 1.
        samples: Gaussian/Bernoulli samples ``K`` per batch row and round; int >= 2.
        elites: best candidates per row the distribution is refitted to; int in
            ``[1, samples]`` (extra candidates compete for them too).
        init_std: initial std of the continuous dims in normalised units (fraction of the
            half range), finite > 0.
        variance_floor: lower bound of the refitted variance in normalised units (the std is
            floored at its square root); finite, in ``[0, 1)`` (tf_agents QtOpt: 1e-4).
        discrete_floor: the refitted Bernoulli probabilities are kept in
            ``[discrete_floor, 1 - discrete_floor]`` so a discrete value is never ruled out;
            finite, in ``[0, 0.5)``.

    Raises:
        ValueError: a field of the wrong type or out of range; the message names the field.
    """

    iterations: int = 2
    samples: int = 64
    elites: int = 6
    init_std: float = 0.5
    variance_floor: float = 1e-4
    discrete_floor: float = 0.05

    def __post_init__(self):
        for name, minimum in (('iterations', 1), ('samples', 2)):
            v = getattr(self, name)
            if not _is_int(v) or v < minimum:
                raise ValueError(f'CEMConfig.{name} must be an int >= {minimum}, got {v!r}')
            object.__setattr__(self, name, int(v))
        if not _is_int(self.elites) or not 1 <= self.elites <= self.samples:
            raise ValueError(f'CEMConfig.elites must be an int in [1, samples={self.samples}], '
                             f'got {self.elites!r}')
        object.__setattr__(self, 'elites', int(self.elites))
        if not _is_real(self.init_std) or self.init_std <= 0.0:
            raise ValueError(f'CEMConfig.init_std must be a finite value > 0, '
                             f'got {self.init_std!r}')
        if not _is_real(self.variance_floor) or not 0.0 <= self.variance_floor < 1.0:
            raise ValueError(f'CEMConfig.variance_floor must be a finite value in [0, 1), '
                             f'got {self.variance_floor!r}')
        if not _is_real(self.discrete_floor) or not 0.0 <= self.discrete_floor < 0.5:
            raise ValueError(f'CEMConfig.discrete_floor must be a finite value in [0, 0.5), '
                             f'got {self.discrete_floor!r}')
        for name in ('init_std', 'variance_floor', 'discrete_floor'):
            object.__setattr__(self, name, float(getattr(self, name)))


@dataclass(frozen=True)
class CEMResult:
    """Outcome of ``CEM.maximise``.

    Attributes:
        actions: float32 (B, D) best candidate per batch row over all iterations, physical
            units (m, rad, discrete 0/1), inside the bounds.
        scores: float32 (B,) its score (``score_fn`` output).
        calls: int, number of ``score_fn`` calls made (= ``config.iterations``).
    """

    actions: np.ndarray
    scores: np.ndarray
    calls: int


class CEM:
    """Batched CEM maximiser of a score over the action box (QT-Opt; AW-Opt actor candidate).

    Args:
        config: ``CEMConfig`` (default: QT-Opt's 2 iterations x 64 samples, 6 elites).
        low: (D,) lower action bounds in physical units (default ``spec.ACTION_LOW``).
        high: (D,) upper action bounds (default ``spec.ACTION_HIGH``); > ``low`` on every
            continuous dim; discrete dims must have bounds exactly [0, 1].
        discrete: indices of the discrete (Bernoulli, 0/1) dims; the others are continuous
            (default ``(spec.IDX_OPEN, spec.IDX_CLOSE, spec.IDX_TERMINATE)``).
        seed: seed (or ``np.random.SeedSequence``/``Generator``) of the numpy Generator used
            for all sampling; the same seed and calls give the same results.

    Raises:
        ValueError: bounds not matching 1-D finite arrays, ``low >= high`` on a continuous dim,
            discrete bounds other than [0, 1], or discrete indices out of range / repeated.
    """

    def __init__(self, config=None, low=spec.ACTION_LOW, high=spec.ACTION_HIGH,
                 discrete=_DEFAULT_DISCRETE, seed=None):
        self.config = CEMConfig() if config is None else config
        if not isinstance(self.config, CEMConfig):
            raise ValueError(f'config must be a CEMConfig, got {type(self.config).__name__}')
        lo = np.asarray(low, dtype=np.float32)
        hi = np.asarray(high, dtype=np.float32)
        if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0:
            raise ValueError(f'low and high must be non-empty 1-D arrays of one shape, '
                             f'got {lo.shape} and {hi.shape}')
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError('low and high must be finite')
        dim = lo.shape[0]
        disc = np.asarray(tuple(discrete), dtype=np.int64).reshape(-1)
        if np.any(disc < 0) or np.any(disc >= dim) or len(np.unique(disc)) != len(disc):
            raise ValueError(f'discrete indices must be unique and in [0, {dim}), '
                             f'got {disc.tolist()}')
        cont = np.setdiff1d(np.arange(dim), disc)
        if np.any(lo[cont] >= hi[cont]):
            raise ValueError(f'low {lo.tolist()} must be < high {hi.tolist()} on every '
                             f'continuous dim {cont.tolist()}')
        if np.any(lo[disc] != 0.0) or np.any(hi[disc] != 1.0):
            raise ValueError(f'discrete dims {disc.tolist()} must have bounds [0, 1], got low '
                             f'{lo[disc].tolist()} high {hi[disc].tolist()}')
        self.low, self.high, self.dim = lo, hi, dim
        self.discrete = tuple(int(i) for i in disc)
        self.continuous = tuple(int(i) for i in cont)
        self._disc, self._cont = disc, cont
        # Basic slices where the index sets are contiguous (the default 0:4 and 4:7): views
        # instead of fancy-index copies in the per-iteration numpy work.
        self._ci, self._di = _as_slice(cont), _as_slice(disc)
        lo64, hi64 = lo[cont].astype(np.float64), hi[cont].astype(np.float64)
        self._centre = (lo64 + hi64) / 2.0  # (C,) physical units
        self._half = (hi64 - lo64) / 2.0    # (C,) physical units, > 0
        self._low_c, self._high_c = lo64, hi64
        # Initial distribution (B = 1 rows, broadcast over the batch; never written to).
        floor = np.sqrt(self.config.variance_floor)
        self._std_floor = self._half * floor                                  # (C,)
        # Shapes (rows, 1, dims) broadcast over the K samples of a row without new views.
        self._mean0 = self._centre[None, None, :]                                # (1, 1, C)
        self._std0 = (self._half * max(self.config.init_std, floor))[None, None, :]
        self._prob0 = np.full((1, 1, len(disc)), 0.5)                            # (1, 1, S)
        self.rng = np.random.default_rng(seed)

    def maximise(self, score_fn, batch_size, extra_candidates=None, init_mean=None):
        """Approximate ``argmax_a score_fn(a)`` independently for each of ``batch_size`` rows.

        Args:
            score_fn: callable taking float32 candidates (B, K + E, D) in physical units
                (m, rad, discrete 0.0/1.0) and returning array-like scores (B, K + E), higher is
                better (e.g. critic Q-values). Called exactly ``config.iterations`` times, once
                per iteration with all rows and candidates stacked.
            batch_size: B, int >= 1.
            extra_candidates: optional float32 (B, E, D) fixed candidates (AW-Opt's actor
                action, E = 1 typically), clipped to the bounds, then scored in EVERY iteration
                after the K samples; they take part in elite selection and may be returned.
                Their discrete entries are not rounded (pass 0/1 if binary output is needed).
            init_mean: optional (B, D) initial distribution: continuous entries are the initial
                Gaussian mean in physical units (clipped to the bounds), discrete entries the
                initial probability of 1 (clipped to [0, 1]). Default: bound centres and 0.5.

        Returns:
            CEMResult: ``actions`` float32 (B, D), ``scores`` float32 (B,) of the best
            candidate seen per row over all iterations, and ``calls`` (int).

        Raises:
            ValueError: bad ``batch_size``, ``extra_candidates`` not (B, E, D) or non-finite,
                ``init_mean`` not (B, D) or non-finite, or ``score_fn`` output not of shape
                (B, K + E) or containing non-finite values.
        """
        cfg = self.config
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f'batch_size must be an int >= 1, got {batch_size!r}')
        B, K, D = int(batch_size), cfg.samples, self.dim
        n_c, n_d = len(self._cont), len(self._disc)
        ci, di, M = self._ci, self._di, cfg.elites

        extra = None
        if extra_candidates is not None:
            extra = np.asarray(extra_candidates, dtype=np.float32)
            if extra.ndim != 3 or extra.shape[0] != B or extra.shape[2] != D:
                raise ValueError(f'extra_candidates must have shape (B={B}, E, D={D}), '
                                 f'got {extra.shape}')
            if not math.isfinite(np.add.reduce(extra, axis=None, dtype=np.float64)):
                raise ValueError(f'extra_candidates has {int(np.sum(~np.isfinite(extra)))} '
                                 f'non-finite entries')
            extra = np.minimum(np.maximum(extra, self.low), self.high)
        E = 0 if extra is None else extra.shape[1]
        N = K + E

        # The Gaussian is kept in physical units: mean_p = centre + half * mean_z and
        # std_p = half * std_z (z = (a - centre) / half is affine per dim), so sampling is
        # clip(mean_p + std_p * eps, low, high) = centre + half * clip(mean_z + std_z * eps,
        # -1, 1) and the elites' mean and std refit it directly.
        if init_mean is None:
            mean, std, prob = self._mean0, self._std0, self._prob0   # (1, 1, C), (..C), (..S)
        else:
            m = np.asarray(init_mean, dtype=np.float64)
            if m.shape != (B, D):
                raise ValueError(f'init_mean must have shape (B={B}, D={D}), got {m.shape}')
            if not np.isfinite(m).all():
                raise ValueError(f'init_mean has {int(np.sum(~np.isfinite(m)))} '
                                 f'non-finite entries')
            mean = np.minimum(np.maximum(m[:, None, ci], self._low_c), self._high_c)  # (B, 1, C)
            std = self._std0
            prob = np.clip(m[:, None, di], 0.0, 1.0)                                  # (B, 1, S)

        n_it, rows = cfg.iterations, np.arange(B)
        # One buffer holds every candidate of the call, iteration-major (n_it, B, K + E, D), so
        # each iteration's (B, K + E, D) slice is contiguous (what score_fn gets) and the
        # samples are written into it directly; the extra candidates are copied in once.
        candidates = np.empty((n_it, B, N, D), dtype=np.float32)
        if E:
            candidates[:, :, K:] = extra
        seen = np.empty((B, n_it, N), dtype=np.float64)        # scores of every candidate
        # All random numbers of the call in two draws (standard normal, uniform).
        eps_all = self.rng.standard_normal((n_it, B, K, n_c))
        u_all = self.rng.random((n_it, B, K, n_d))
        for it in range(n_it):
            # Samples (B, K, C) in physical units, clipped to the bounds (a float64 value in
            # [low, high] rounds to a float32 in the float32 bounds) and stored as float32 by
            # the last clip; Bernoulli 0/1 (B, K, S) stored by the comparison itself.
            a, cand = eps_all[it], candidates[it]
            a *= std
            a += mean
            np.minimum(a, self._high_c, out=a)      # clip (np.clip's Python wrapper costs
            np.maximum(a, self._low_c, out=cand[:, :K, ci])  # more than the work here)
            np.less(u_all[it], prob, out=cand[:, :K, di])

            out = np.asarray(score_fn(cand))
            if out.shape != (B, N):
                raise ValueError(f'score_fn must return scores of shape (B={B}, K+E={N}), '
                                 f'got {out.shape}')
            scores = seen[:, it]
            scores[...] = out                       # also casts integer scores
            if not math.isfinite(np.add.reduce(scores, axis=None)):  # NaN/inf propagate
                raise ValueError(f'score_fn returned {int(np.sum(~np.isfinite(scores)))} '
                                 f'non-finite scores of {scores.size}')
            if it == n_it - 1:
                break                           # the refit would not be used

            # Refit to the elites of each row (samples and extra candidates alike).
            elite = scores.argsort(axis=1)[:, N - M:]                            # (B, M)
            e = cand[rows[:, None], elite]                                       # (B, M, D)
            e_mean = np.add.reduce(e, axis=1, dtype=np.float64, keepdims=True) / M  # (B,1,D)
            dev = e - e_mean
            e_std = np.sqrt(np.add.reduce(dev * dev, axis=1, keepdims=True) / M)
            mean = e_mean[:, :, ci]
            std = np.maximum(e_std[:, :, ci], self._std_floor)
            prob = np.minimum(np.maximum(e_mean[:, :, di], cfg.discrete_floor),
                              1.0 - cfg.discrete_floor)

        # Best candidate over all iterations (the first one in (iteration, candidate) order on
        # ties, like a running maximum).
        top = seen.reshape(B, n_it * N).argmax(axis=1)                             # (B,)
        it_top = top // N
        return CEMResult(actions=candidates[it_top, rows, top % N],
                         scores=seen.reshape(B, n_it * N)[rows, top].astype(np.float32),
                         calls=cfg.iterations)
