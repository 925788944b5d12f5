"""Residual control for insertion: a P-controller toward the goal plus a bounded learned residual.

Residual reinforcement learning (Johannink et al. 2019; Schoettler et al. 2019): the command
is a hand-designed controller plus a learned correction,

    u = clip(pi_H(s) + alpha * clip(r, -1, 1), -max_step, max_step),
    pi_H(s) = -kp * (x - x_goal),   kp = (1, 1, 0.3),

with ``x`` the tool tip (peg tip) position and ``x_goal`` the OBSERVED (noisy) goal, both in
``base_link`` (m), ``r`` (3,) the residual policy's action in [-1, 1] (a fraction of the
bound ``alpha`` (m)), and ``u`` (3,) m the tool-tip displacement for one 0.1 s control step.
``u`` reaches the arm as the 7-D arm action of ``core.spec`` (:func:`arm_action`), through the
same safety filter and IK as every other action (``core.arm.arm_command``).

The residual policy observes the 15-D state of :func:`insertion_state` (order
:data:`STATE_NAMES`, the same as ``core.task.INSERTION.state_names``). No ROS in here: the
``residual_controller`` node and the in-process environment both call these functions.
"""
from dataclasses import dataclass, field

import numpy as np

from awopt_ros.core import spec
from awopt_ros.core.task import INSERTION_ACTION_NAMES, INSERTION_STATE_NAMES

#: P-controller gains per axis (x, y, z), 1/step: Johannink 2019, Schoettler 2019.
KP = (1.0, 1.0, 0.3)

#: Insertion state (15-D float32), in this order (``core.task.INSERTION_STATE_NAMES``):
#: rel = tool tip - observed goal (m, base_link); vel = tool tip linear velocity (m/s,
#: base_link); force (N) and torque (N m) of the wrist wrench (tool frame, zeroed at reset);
#: base = the P-controller's step this tick before clipping (m, base_link).
STATE_NAMES = INSERTION_STATE_NAMES
STATE_DIM = len(STATE_NAMES)
#: Residual action names (``core.task.INSERTION.action_names``), each in [-1, 1].
RESIDUAL_NAMES = INSERTION_ACTION_NAMES


def _vec(value, n, name):
    """Return ``value`` as a finite float64 (n,) array; raise ValueError otherwise."""
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    if a.shape != (n,):
        raise ValueError(f'{name} must have {n} entries, got shape {np.shape(value)}')
    if not np.all(np.isfinite(a)):
        raise ValueError(f'{name} has non-finite entries: {a.tolist()}')
    return a


@dataclass(frozen=True)
class ResidualConfig:
    """Settings of the residual controller.

    Attributes:
        kp: (3,) P gains per axis (x, y, z), 1/step, each > 0.
        alpha_m: residual bound per step (m): the residual adds at most alpha per axis; >= 0.
        max_step_m: per-axis clip of the command u (m per step), > 0.
        force_limit_n: force magnitude (N) above which the controller backs off and ends
            the episode as failed, > 0.
        back_off_m: upward (+z, base_link) step (m) sent when the force limit is exceeded, > 0.
        residual_enabled: False ignores the residual (u = clipped P-controller alone).

    Raises:
        ValueError: a bound violated or a non-finite entry.
    """

    kp: tuple = field(default=KP)
    alpha_m: float = 0.002
    max_step_m: float = 0.01
    force_limit_n: float = 40.0
    back_off_m: float = 0.005
    residual_enabled: bool = True

    def __post_init__(self):
        kp = _vec(self.kp, 3, 'kp')
        if np.any(kp <= 0):
            raise ValueError(f'kp must be > 0 per axis, got {kp.tolist()}')
        object.__setattr__(self, 'kp', tuple(float(k) for k in kp))
        for name, low_ok in (('alpha_m', 0.0), ('max_step_m', None), ('force_limit_n', None),
                             ('back_off_m', None)):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value < 0 or (low_ok is None and value == 0):
                bound = '>= 0' if low_ok is not None else '> 0'
                raise ValueError(f'{name} must be finite and {bound}, got {value}')
            object.__setattr__(self, name, value)
        object.__setattr__(self, 'residual_enabled', bool(self.residual_enabled))


def p_controller(x_m, goal_m, kp=KP):
    """Return the P-controller step ``-kp * (x - goal)`` float64 (3,) m.

    Args:
        x_m: (3,) tool tip position (m, base_link).
        goal_m: (3,) goal position (m, base_link), as observed.
        kp: (3,) gains per axis (1/step).

    Raises:
        ValueError: wrong shapes or non-finite entries.
    """
    return -_vec(kp, 3, 'kp') * (_vec(x_m, 3, 'x_m') - _vec(goal_m, 3, 'goal_m'))


def command(base_m, residual, config=None):
    """Return the command ``u`` float64 (3,) m for one control step.

    ``u = clip(base + alpha * clip(r, -1, 1), -max_step, max_step)`` per axis; with
    ``config.residual_enabled`` False (or ``residual`` None) ``u = clip(base, ...)``.

    Args:
        base_m: (3,) P-controller step (m), :func:`p_controller`.
        residual: (3,) residual action in [-1, 1] (values outside are clipped), or None.
        config: :class:`ResidualConfig` (default one when None).

    Raises:
        ValueError: wrong shapes or non-finite entries (a NaN residual is an error, not zero).
    """
    config = config or ResidualConfig()
    u = _vec(base_m, 3, 'base_m')
    if config.residual_enabled and residual is not None:
        u = u + config.alpha_m * np.clip(_vec(residual, 3, 'residual'), -1.0, 1.0)
    return np.clip(u, -config.max_step_m, config.max_step_m)


def insertion_state(tool_pos_m, goal_m, tool_vel_m_s, wrench6, base_m):
    """Return the residual policy's observation float32 (15,) in :data:`STATE_NAMES` order.

    Args:
        tool_pos_m: (3,) tool tip position (m, base_link).
        goal_m: (3,) observed (noisy) goal (m, base_link).
        tool_vel_m_s: (3,) tool tip linear velocity (m/s, base_link).
        wrench6: (6,) force (N) then torque (N m), tool frame, zeroed at reset.
        base_m: (3,) the P-controller step this tick, before clipping (m).

    Raises:
        ValueError: wrong shapes or non-finite entries.
    """
    rel = _vec(tool_pos_m, 3, 'tool_pos_m') - _vec(goal_m, 3, 'goal_m')
    return np.concatenate([rel, _vec(tool_vel_m_s, 3, 'tool_vel_m_s'),
                           _vec(wrench6, 6, 'wrench6'), _vec(base_m, 3, 'base_m')]
                          ).astype(np.float32)


def force_exceeded(wrench6, limit_n):
    """Return True when the force magnitude ``|(fx, fy, fz)|`` (N) exceeds ``limit_n``.

    Raises:
        ValueError: ``wrench6`` not 6 finite entries (force N, torque N m), or limit <= 0.
    """
    limit = float(limit_n)
    if not np.isfinite(limit) or limit <= 0:
        raise ValueError(f'limit_n must be finite and > 0, got {limit_n}')
    return bool(np.linalg.norm(_vec(wrench6, 6, 'wrench6')[:3]) > limit)


class ForceWindow:
    """Force magnitude averaged over the wrench samples of the last ``window_s`` seconds.

    A force limit on single samples of a 100 Hz (or faster) wrench stream trips on contact
    impacts lasting a few ms (the simulated peg landing on the socket shows 43-65 N for one
    sample at real time); a sustained push raises the mean. With one sample per control period
    (lockstep, the in-process environment) or ``window_s`` 0 the mean is the newest sample's
    magnitude.

    Args:
        window_s: averaging window (s), >= 0.

    Raises:
        ValueError: a negative or non-finite window.
    """

    def __init__(self, window_s):
        window = float(window_s)
        if not np.isfinite(window) or window < 0:
            raise ValueError(f'window_s must be finite and >= 0, got {window_s}')
        self.window_s = window
        self._samples = []          # (stamp_s, force magnitude N), oldest first

    def reset(self):
        """Forget every sample (a new episode)."""
        self._samples.clear()

    def add(self, stamp_s, wrench6):
        """Add the wrench ``wrench6`` (6,: N, N m) stamped ``stamp_s`` (s) and return the mean
        force magnitude (N) of the samples stamped after ``stamp_s - window_s`` (the newest
        always included; older stamps than the newest are kept in arrival order).

        Raises:
            ValueError: ``wrench6`` not 6 finite entries.
        """
        force = float(np.linalg.norm(_vec(wrench6, 6, 'wrench6')[:3]))
        stamp = float(stamp_s)
        self._samples.append((stamp, force))
        self._samples = [(t, f) for t, f in self._samples if t > stamp - self.window_s
                         or t == stamp]
        return float(np.mean([f for _, f in self._samples]))


def arm_action(u_m, terminate=False):
    """Return the 7-D arm action float32 (``core.spec`` layout) for the step ``u_m``.

    ``[u_x, u_y, u_z, 0 (dyaw), 0 (open), 0 (close), terminate]``: no rotation and no
    gripper bits (the peg is held rigidly; neither bit leaves the gripper as it is).

    Raises:
        ValueError: ``u_m`` not 3 finite entries.
    """
    a = np.zeros(spec.ACTION_DIM, dtype=np.float32)
    a[:3] = _vec(u_m, 3, 'u_m')
    a[spec.IDX_TERMINATE] = 1.0 if terminate else 0.0
    return a


def back_off_action(config=None):
    """Return the arm action that moves the tool ``config.back_off_m`` up (+z, base_link)."""
    config = config or ResidualConfig()
    return arm_action((0.0, 0.0, config.back_off_m))


def terminate_action():
    """Return the arm action that ends the episode without moving (terminate bit set)."""
    return arm_action((0.0, 0.0, 0.0), terminate=True)
