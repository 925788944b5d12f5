"""Moving the arm to its home joint positions: the plan and its checks (numpy only, no ROS).

The arm interface's ``/arm/home`` service (the reset of a cell without a simulator) moves the
arm from its measured joints to the home joints along one straight line in joint space, timed
by a minimum-jerk profile ``s(u) = 10 u^3 - 15 u^4 + 6 u^5`` (u = t / T in [0, 1]): every
joint starts and ends at rest, and its speed peaks at ``MIN_JERK_PEAK`` x its mean speed at
mid-way. The duration T is the shortest for which no joint's peak speed exceeds
``velocity_scale`` x its velocity limit. The plan is sent as trajectory points sampled from
the profile; a controller that interpolates linearly between them (joint_trajectory_controller
with positions only) moves each joint, over each segment, at the segment's mean speed, which
is at most the profile's peak, so the bound holds for the executed motion too.

:class:`Homing` decides, from the measured joints and the time, when a homing in progress has
arrived (inside ``tolerance_rad`` of home on every joint, after the plan's end) or timed out.
"""
import math
from dataclasses import dataclass

import numpy as np

from awopt_ros.core.safety import _vector7

#: Peak speed of the minimum-jerk profile over its mean speed (ds/du at u = 1/2).
MIN_JERK_PEAK = 1.875
#: Spacing of the trajectory points sampled from a plan (s); the last lies at the plan's end.
WAYPOINT_PERIOD_S = 0.1
#: Most trajectory points of one plan (a longer plan gets a wider spacing).
MAX_WAYPOINTS = 300

HOME, MOVING, TIMED_OUT = 'home', 'moving', 'timed_out'


def min_jerk(u):
    """Return the minimum-jerk position fraction s(u) in [0, 1] for u (clipped to [0, 1])."""
    u = float(np.clip(u, 0.0, 1.0))
    return u * u * u * (10.0 + u * (-15.0 + 6.0 * u))


def check_home_pose(q_home, lower_rad, upper_rad):
    """Return the home joints as a float64 (7,) array when they lie inside
    [lower_rad, upper_rad] (the joint limits less the safety margin), else raise.

    Raises:
        ValueError: not 7 finite values, or a joint outside its band (names A1..A7, the
            value and the band).
    """
    q = _vector7(q_home, 'home_joint_positions_rad')
    lo = _vector7(lower_rad, 'lower_rad')
    hi = _vector7(upper_rad, 'upper_rad')
    outside = np.flatnonzero((q < lo) | (q > hi))
    if outside.size:
        bad = ', '.join(f'A{i + 1} {q[i]:.4f} not in [{lo[i]:.4f}, {hi[i]:.4f}]'
                        for i in outside)
        raise ValueError('home_joint_positions_rad outside the joint limits less '
                         f'joint_limit_margin_rad (rad): {bad}')
    return q


def home_duration_s(q_start, q_home, max_velocity_rad_s, velocity_scale, min_duration_s=0.0):
    """Return the duration (s) of the minimum-jerk move ``q_start`` -> ``q_home`` in which no
    joint's peak speed exceeds ``velocity_scale`` x ``max_velocity_rad_s``.

    T = MIN_JERK_PEAK x max_j |q_home[j] - q_start[j]| / (velocity_scale x v_max[j]), and at
    least ``min_duration_s``.

    Args:
        q_start: (7,) measured joints (rad).
        q_home: (7,) home joints (rad).
        max_velocity_rad_s: (7,) velocity limits (rad/s, > 0).
        velocity_scale: fraction of the limits to use, in (0, 1].
        min_duration_s: lower bound of the result (s, >= 0).

    Raises:
        ValueError: not 7 finite values, a limit <= 0, a scale outside (0, 1] or a negative
            ``min_duration_s``.
    """
    q0 = _vector7(q_start, 'q_start')
    q1 = _vector7(q_home, 'q_home')
    vel = _vector7(max_velocity_rad_s, 'max_velocity_rad_s')
    scale = float(velocity_scale)
    if np.any(vel <= 0.0):
        raise ValueError(f'max_velocity_rad_s must be > 0, got {vel.tolist()}')
    if not (np.isfinite(scale) and 0.0 < scale <= 1.0):
        raise ValueError(f'velocity_scale must be in (0, 1], got {velocity_scale}')
    floor = float(min_duration_s)
    if not (np.isfinite(floor) and floor >= 0.0):
        raise ValueError(f'min_duration_s must be a finite value >= 0, got {min_duration_s}')
    return max(MIN_JERK_PEAK * float(np.max(np.abs(q1 - q0) / (scale * vel))), floor)


def max_error_rad(q_meas, q_home):
    """Return max_j |q_meas[j] - q_home[j]| (rad). Raises ValueError: not 7 finite values."""
    return float(np.max(np.abs(_vector7(q_meas, 'q_meas') - _vector7(q_home, 'q_home'))))


def at_home(q_meas, q_home, tolerance_rad):
    """True when every joint of ``q_meas`` is within ``tolerance_rad`` of ``q_home``."""
    return max_error_rad(q_meas, q_home) <= float(tolerance_rad)


@dataclass(frozen=True)
class HomingPlan:
    """A minimum-jerk joint-space move (module docstring).

    Attributes:
        q_start: (7,) joints at the start (rad).
        q_home: (7,) joints at the end (rad).
        duration_s: T (s, > 0).
    """

    q_start: tuple
    q_home: tuple
    duration_s: float

    @classmethod
    def make(cls, q_start, q_home, max_velocity_rad_s, velocity_scale, min_duration_s):
        """Return the plan from ``q_start`` to ``q_home`` with :func:`home_duration_s`.

        Raises:
            ValueError: as :func:`home_duration_s`, or ``min_duration_s`` not > 0.
        """
        if not float(min_duration_s) > 0.0:
            raise ValueError(f'min_duration_s must be > 0, got {min_duration_s}')
        duration = home_duration_s(q_start, q_home, max_velocity_rad_s, velocity_scale,
                                   min_duration_s)
        return cls(tuple(_vector7(q_start, 'q_start').tolist()),
                   tuple(_vector7(q_home, 'q_home').tolist()), duration)

    def position_at(self, t_s):
        """Return the (7,) joints (rad) of the plan ``t_s`` s after its start (clipped to the
        start before 0 and to home after the end)."""
        q0, q1 = np.asarray(self.q_start), np.asarray(self.q_home)
        return q0 + (q1 - q0) * min_jerk(float(t_s) / self.duration_s)

    def waypoints(self, period_s=WAYPOINT_PERIOD_S, max_points=MAX_WAYPOINTS):
        """Return (times_s (N,), positions (N, 7)): points every ``period_s`` or so (at most
        ``max_points``), evenly spaced, the first after 0, the last at ``duration_s`` at
        exactly home. A controller starts from where the arm is at t = 0."""
        n = int(min(max(math.ceil(self.duration_s / float(period_s) - 1e-9), 1), max_points))
        times = self.duration_s * np.arange(1, n + 1) / n
        positions = np.array([self.position_at(t) for t in times])
        positions[-1] = self.q_home
        return times, positions

    def peak_speed_rad_s(self):
        """Return the (7,) peak joint speeds of the plan (rad/s)."""
        return MIN_JERK_PEAK * np.abs(np.asarray(self.q_home) - np.asarray(self.q_start)) \
            / self.duration_s


class Homing:
    """One homing in progress: when it has arrived or timed out.

    Args:
        plan: :class:`HomingPlan`.
        start_s: when it started (s, any clock, the one of later calls).
        timeout_s: time allowed from ``start_s`` (s, > 0).
        tolerance_rad: largest joint error at home (rad, > 0).

    Raises:
        ValueError: a timeout or tolerance that is not a finite value > 0.
    """

    def __init__(self, plan, start_s, timeout_s, tolerance_rad):
        for name, v in (('timeout_s', timeout_s), ('tolerance_rad', tolerance_rad)):
            if not (np.isfinite(float(v)) and float(v) > 0.0):
                raise ValueError(f'{name} must be a finite value > 0, got {v}')
        self.plan = plan
        self.start_s = float(start_s)
        self.timeout_s = float(timeout_s)
        self.tolerance_rad = float(tolerance_rad)

    def elapsed_s(self, now_s):
        """Return the time since the start (s)."""
        return float(now_s) - self.start_s

    def status(self, now_s, q_meas):
        """Return HOME (the plan's time is over and ``q_meas`` is within the tolerance of
        home), TIMED_OUT (``timeout_s`` passed without that) or MOVING.

        ``q_meas``: (7,) measured joints (rad), or None when none is known (not home).
        """
        elapsed = self.elapsed_s(now_s)
        if (q_meas is not None and elapsed >= self.plan.duration_s
                and at_home(q_meas, self.plan.q_home, self.tolerance_rad)):
            return HOME
        if elapsed >= self.timeout_s:
            return TIMED_OUT
        return MOVING
