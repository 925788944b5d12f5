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


# ---------------------------------------------------------------- joint-space safety

#: KUKA LBR iiwa 14 R820 maximum joint speeds of A1..A7 (datasheet: 85, 85, 100, 75, 130, 135,
#: 135 deg/s), in rad/s: the default per-joint velocity limits of every arm command.
IIWA14_MAX_VELOCITY_RAD_S = tuple(float(np.deg2rad(v)) for v in (85, 85, 100, 75, 130, 135, 135))
#: Slack (rad/s) allowed above a reference velocity limit (the URDF rounds to 6 decimals).
_VELOCITY_SLACK_RAD_S = 1e-5


def _vector7(values, name):
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != (7,):
        raise ValueError(f'{name} needs 7 values (A1..A7), got {np.size(values)}: '
                         f'{np.asarray(values).tolist()}')
    if not np.all(np.isfinite(v)):
        raise ValueError(f'{name} must be finite, got {v.tolist()}')
    return v


@dataclass(frozen=True)
class JointSafety:
    """Joint-space limits applied to every arm command; validates itself on construction.

    Attributes:
        lower_rad: (7,) joint position lower limits (the URDF's), rad.
        upper_rad: (7,) upper limits, rad.
        margin_rad: distance kept from those limits (rad, >= 0): targets are clipped to
            [lower + margin, upper - margin].
        max_velocity_rad_s: (7,) per-joint velocity limits (rad/s, > 0): a command's step
            from the measured joints, over one control period, stays under them.
        max_start_jump_rad: largest |target - measured| of any joint (rad, > 0) accepted for
            the first command after an enable or a hold (continuity check).
        velocity_cap_rad_s: (7,) or None: limits that ``max_velocity_rad_s`` may not exceed
            (the URDF's velocity limits), else ValueError.

    Raises:
        ValueError: not 7 finite values, lower >= upper, a margin that leaves no room, a
            non-positive velocity or jump, or a velocity above ``velocity_cap_rad_s``.
    """

    lower_rad: tuple
    upper_rad: tuple
    margin_rad: float = 0.05
    max_velocity_rad_s: tuple = IIWA14_MAX_VELOCITY_RAD_S
    max_start_jump_rad: float = 0.25
    velocity_cap_rad_s: tuple = None

    def __post_init__(self):
        lo = _vector7(self.lower_rad, 'lower_rad')
        hi = _vector7(self.upper_rad, 'upper_rad')
        if np.any(lo >= hi):
            raise ValueError(f'joint lower limits {lo.tolist()} must be < upper limits '
                             f'{hi.tolist()}')
        margin = float(self.margin_rad)
        if not (np.isfinite(margin) and margin >= 0.0):
            raise ValueError(f'joint_limit_margin_rad must be a finite value >= 0, got {margin}')
        if np.any(lo + margin >= hi - margin):
            raise ValueError(f'joint_limit_margin_rad {margin} leaves no room between the '
                             f'joint limits {lo.tolist()} .. {hi.tolist()}')
        vel = _vector7(self.max_velocity_rad_s, 'max_joint_velocity_rad_s')
        if np.any(vel <= 0.0):
            raise ValueError(f'max_joint_velocity_rad_s must be > 0, got {vel.tolist()}')
        cap = self.velocity_cap_rad_s
        if cap is not None:
            cap = _vector7(cap, 'velocity_cap_rad_s')
            over = np.flatnonzero(vel > cap + _VELOCITY_SLACK_RAD_S)
            if over.size:
                raise ValueError(
                    'max_joint_velocity_rad_s exceeds the robot velocity limits on joints '
                    f'{[f"A{i + 1}" for i in over]}: {vel[over].tolist()} > '
                    f'{cap[over].tolist()} rad/s')
            cap = tuple(cap.tolist())
        jump = float(self.max_start_jump_rad)
        if not (np.isfinite(jump) and jump > 0.0):
            raise ValueError(f'max_start_jump_rad must be a finite value > 0, got {jump}')
        for name, value in (('lower_rad', tuple(lo.tolist())), ('upper_rad', tuple(hi.tolist())),
                            ('margin_rad', margin), ('max_velocity_rad_s', tuple(vel.tolist())),
                            ('max_start_jump_rad', jump), ('velocity_cap_rad_s', cap)):
            object.__setattr__(self, name, value)

    @property
    def lo(self):
        """(7,) lowest commanded position, lower + margin (rad)."""
        return np.asarray(self.lower_rad) + self.margin_rad

    @property
    def hi(self):
        """(7,) highest commanded position, upper - margin (rad)."""
        return np.asarray(self.upper_rad) - self.margin_rad


@dataclass
class JointFlags:
    """What ``limit_joint_target`` did: ``clamped_joints`` (how many joint targets were
    moved inside the position limits less the margin) and ``velocity_scale`` (the factor, in
    (0, 1], the step from the measured joints was shortened by; 1.0 = unchanged)."""

    clamped_joints: int = 0
    velocity_scale: float = 1.0

    @property
    def velocity_limited(self):
        """True when the step was shortened to respect the velocity limits."""
        return self.velocity_scale < 1.0


def limit_joint_target(q_meas, q_target, safety, dt_s):
    """Return a joint target that respects the position margins and the velocity limits.

    Steps: clip each target to [lower + margin, upper - margin]; then shorten the step from
    ``q_meas`` uniformly (every joint by the same factor, so the motion keeps its direction)
    until no joint moves faster than its velocity limit over ``dt_s``. A measured joint that
    is already outside the margin band is thus moved back toward it, no faster than allowed;
    one inside stays inside (the band is convex).

    Args:
        q_meas: (7,) measured joint positions (rad).
        q_target: (7,) desired joint positions (rad).
        safety: :class:`JointSafety`.
        dt_s: time to reach the target (s, > 0): the control period.

    Returns:
        (q float64 (7,), :class:`JointFlags`).

    Raises:
        ValueError: not 7 finite values, or ``dt_s`` not a finite value > 0.
    """
    q0 = _vector7(q_meas, 'q_meas')
    q1 = _vector7(q_target, 'q_target')
    dt = float(dt_s)
    if not (np.isfinite(dt) and dt > 0.0):
        raise ValueError(f'dt_s must be a finite value > 0, got {dt_s}')
    clipped = np.clip(q1, safety.lo, safety.hi)
    flags = JointFlags(clamped_joints=int(np.count_nonzero(clipped != q1)))
    step = clipped - q0
    ratio = float(np.max(np.abs(step) / (np.asarray(safety.max_velocity_rad_s) * dt)))
    if ratio > 1.0:
        flags.velocity_scale = 1.0 / ratio
        step = step / ratio
    return q0 + step, flags


def start_jump_rad(q_meas, q_target):
    """Return max_j |q_target[j] - q_meas[j]| (rad) of two (7,) joint vectors.

    Raises:
        ValueError: not 7 finite values each.
    """
    return float(np.max(np.abs(_vector7(q_target, 'q_target') - _vector7(q_meas, 'q_meas'))))


class CommandGate:
    """Whether the arm may be commanded, and the continuity of its first command.

    States: disabled (the start), enabled, stopped (latched by :meth:`stop` or a controller
    fault, cleared by :meth:`enable` or by :meth:`clear_stop`, which leaves the arm
    disabled). The first command after an enable, a stop or a
    hold must start from the measured joints: :meth:`check_start` refuses a target more than
    ``max_start_jump_rad`` from them, until a command passes and :meth:`commanded` is called.
    """

    def __init__(self):
        self.enabled = False
        self.stopped = False
        self.stop_reason = ''
        self.resuming = True

    @property
    def active(self):
        """True when actions may move the arm (enabled and not stopped)."""
        return self.enabled and not self.stopped

    def enable(self):
        """Enable; clear a stop; the next command is checked for continuity."""
        self.enabled = True
        self.stopped = False
        self.stop_reason = ''
        self.resuming = True

    def disable(self):
        """Disable (a stop stays latched)."""
        self.enabled = False
        self.resuming = True

    def stop(self, reason):
        """Latch a stop (``reason``, str) until the next :meth:`enable`."""
        self.stopped = True
        self.stop_reason = str(reason)
        self.resuming = True

    def clear_stop(self):
        """Clear a latched stop and disable: nothing moves the arm until the next
        :meth:`enable` (the operator's acknowledgement of a stop, without arming the policy).
        Returns True when a stop was latched."""
        was = self.stopped
        self.stopped = False
        self.stop_reason = ''
        self.enabled = False
        self.resuming = True
        return was

    def hold(self):
        """A hold was sent: the next command is checked for continuity."""
        self.resuming = True

    def check_start(self, q_meas, q_target, max_start_jump_rad):
        """Return None when the command to ``q_target`` may go out, else why not (str).

        Only the first command after an enable, a stop or a hold is checked: its largest
        joint step from ``q_meas`` must be at most ``max_start_jump_rad``.
        """
        if not self.resuming:
            return None
        jump = start_jump_rad(q_meas, q_target)
        if jump > max_start_jump_rad:
            return (f'first command after enable/hold would jump {jump:.3f} rad from the '
                    f'measured joints (max_start_jump_rad {max_start_jump_rad:.3f})')
        return None

    def commanded(self):
        """A command went out: the following ones are not continuity-checked."""
        self.resuming = False
