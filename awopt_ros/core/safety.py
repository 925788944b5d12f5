"""Action safety filter and input watchdog for the arm interface (numpy only, no ROS).

The filter bounds each commanded Cartesian step (per axis, m, and yaw, rad) and keeps the
commanded ``tcp`` target inside an axis-aligned workspace box in ``base_link``; non-finite
actions are rejected (the caller holds position). The watchdog reports inputs whose last
message is older than their timeout (or that never arrived).
"""
from dataclasses import dataclass

import numpy as np

from awopt_ros.core.spec import ACTION_DIM


@dataclass(frozen=True)
class SafetyLimits:
    """Limits of one commanded step; validates itself on construction.

    Attributes:
        max_step_m: largest |dx|, |dy|, |dz| per step (m), > 0.
        max_yaw_step_rad: largest |dyaw| per step (rad), > 0.
        workspace_min_m: (3,) lower corner of the tcp workspace box in base_link (m).
        workspace_max_m: (3,) upper corner (m); every entry > the matching minimum.

    Raises:
        ValueError: non-positive or non-finite steps, corners not 3 finite values, or
            min >= max on any axis.
    """

    max_step_m: float
    max_yaw_step_rad: float
    workspace_min_m: tuple
    workspace_max_m: tuple

    def __post_init__(self):
        for name in ('max_step_m', 'max_yaw_step_rad'):
            v = float(getattr(self, name))
            if not (np.isfinite(v) and v > 0.0):
                raise ValueError(f'{name} must be a finite value > 0, got {v}')
            object.__setattr__(self, name, v)
        lo = np.asarray(self.workspace_min_m, dtype=np.float64).reshape(-1)
        hi = np.asarray(self.workspace_max_m, dtype=np.float64).reshape(-1)
        if lo.shape != (3,) or hi.shape != (3,):
            raise ValueError(f'workspace_min_m and workspace_max_m need 3 values (x, y, z), '
                             f'got {lo.shape} and {hi.shape}')
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError('workspace corners must be finite')
        if np.any(lo >= hi):
            raise ValueError(f'workspace_min_m {lo.tolist()} must be < workspace_max_m '
                             f'{hi.tolist()} on every axis')
        object.__setattr__(self, 'workspace_min_m', tuple(lo.tolist()))
        object.__setattr__(self, 'workspace_max_m', tuple(hi.tolist()))


@dataclass
class FilterFlags:
    """What ``filter_action`` did: ``rejected`` (non-finite, hold), ``clipped`` (a step or
    yaw limited), ``clamped`` (target moved back inside the workspace)."""

    rejected: bool = False
    clipped: bool = False
    clamped: bool = False


def filter_action(action, tcp_pos, limits):
    """Return a safe copy of a 7-D action and what was changed.

    Steps: reject if any entry (or ``tcp_pos``) is non-finite; clip dx, dy, dz to
    +-``max_step_m`` and dyaw to +-``max_yaw_step_rad``; then shorten the translation so
    ``tcp_pos`` + (dx, dy, dz) lies inside the workspace box (per axis). If the tcp is already
    outside the box, the step moves it onto the box. Discrete entries pass unchanged.

    Args:
        action: (7,) action per ``spec.ACTION_NAMES``.
        tcp_pos: (3,) measured tcp position in base_link (m).
        limits: ``SafetyLimits``.

    Returns:
        (safe_action float32 (7,), ``FilterFlags``). When rejected, safe_action is all zeros
        and the caller must hold position.

    Raises:
        ValueError: ``action`` is not 7 values or ``tcp_pos`` not 3 values.
    """
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f'action must have {ACTION_DIM} entries, got shape {np.shape(action)}')
    p = np.asarray(tcp_pos, dtype=np.float64).reshape(-1)
    if p.shape != (3,):
        raise ValueError(f'tcp_pos must have 3 entries (m), got shape {np.shape(tcp_pos)}')
    flags = FilterFlags()
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(p))):
        flags.rejected = True
        return np.zeros(ACTION_DIM, dtype=np.float32), flags
    out = a.copy()
    step = np.clip(a[:3], -limits.max_step_m, limits.max_step_m)
    yaw = float(np.clip(a[3], -limits.max_yaw_step_rad, limits.max_yaw_step_rad))
    flags.clipped = bool(np.any(step != a[:3]) or yaw != a[3])
    target = np.clip(p + step, limits.workspace_min_m, limits.workspace_max_m)
    clamped_step = target - p
    flags.clamped = bool(np.any(np.abs(clamped_step - step) > 1e-12))
    out[:3] = clamped_step
    out[3] = yaw
    return out.astype(np.float32), flags


def _check_timeout(name, timeout_s):
    t = float(timeout_s)
    if not (np.isfinite(t) and t > 0.0):
        raise ValueError(f'timeout for {name!r} must be a finite value > 0 s, got {timeout_s}')
    return t


class Watchdog:
    """Staleness of named inputs: an input is stale when never fed or older than its timeout.

    Args:
        timeouts_s: dict input name -> timeout (s, > 0).

    Raises:
        ValueError: empty dict or a timeout that is not a finite value > 0.
    """

    def __init__(self, timeouts_s):
        if not timeouts_s:
            raise ValueError('Watchdog needs at least one input timeout')
        self._timeouts = {}
        for name, t in timeouts_s.items():
            self._timeouts[name] = _check_timeout(name, t)
        self._last = {name: None for name in self._timeouts}

    def set_timeout(self, name, timeout_s):
        """Change the timeout (s, > 0) of input ``name``, keeping its last feed time.

        Raises:
            KeyError: unknown input name.
            ValueError: timeout not a finite value > 0.
        """
        if name not in self._timeouts:
            raise KeyError(f'unknown watchdog input {name!r}; known: {list(self._timeouts)}')
        self._timeouts[name] = _check_timeout(name, timeout_s)

    @property
    def names(self):
        """The watched input names (tuple)."""
        return tuple(self._timeouts)

    def feed(self, name, now_s):
        """Record that input ``name`` arrived at time ``now_s`` (s).

        Raises:
            KeyError: unknown input name.
        """
        if name not in self._timeouts:
            raise KeyError(f'unknown watchdog input {name!r}; known: {list(self._timeouts)}')
        self._last[name] = float(now_s)

    def reset(self, name):
        """Forget input ``name`` (it is stale until fed again). Raises KeyError if unknown."""
        if name not in self._timeouts:
            raise KeyError(f'unknown watchdog input {name!r}; known: {list(self._timeouts)}')
        self._last[name] = None

    def age_s(self, name, now_s):
        """Return the age (s) of input ``name`` at ``now_s``, or ``inf`` if never fed."""
        last = self._last[name]
        return float('inf') if last is None else float(now_s) - last

    def stale(self, now_s):
        """Return the names (list, in declaration order) that are stale at ``now_s`` (s)."""
        return [n for n, t in self._timeouts.items() if self.age_s(n, now_s) > t]
