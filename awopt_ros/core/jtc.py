"""What a ros2_control joint_trajectory_controller (JTC) does with a trajectory, ROS-free.

The simulator serves ``follow_joint_trajectory`` and ``joint_trajectory`` the way the JTC of
ros2_controllers (Kilted) does, so that the stack's tests exercise what a real driver accepts.
This module holds that logic on plain Python data: joint names (str), trajectory points
(:class:`Point`), times in seconds on one clock. The rules follow the controller with its
defaults (``allow_partial_joints_goal`` false, ``allow_nonzero_velocity_at_trajectory_end``
false, ``allow_integration_in_goal_trajectories`` false, a position command interface):

* :func:`check_trajectory` rejects what ``validate_trajectory_msg`` rejects: not exactly the
  controller's joints (missing, unknown, or a repeated name; the controller's own check of a
  repeated name is missing, this one adds it), no points, a nonzero velocity at the last
  point, a nonzero header stamp whose trajectory ends before now (stamp 0 = start now;
  times within ``core.spec.STAMP_TOLERANCE_S`` count as equal: float seconds),
  ``time_from_start`` not strictly increasing, positions not one per joint, velocities or
  accelerations neither empty nor one per joint, any effort. Added for the simulator: a
  position that is not finite. The controller answers a rejected goal with a goal response
  "rejected" (no result, so no error code reaches the client); the code returned here says
  which control_msgs code the rule belongs to, for logs and counters.
* :func:`goal_tolerances` resolves a goal's ``goal_tolerance`` / ``goal_time_tolerance``
  against the controller's defaults (> 0 replaces the default, -1 erases it to 0 = not
  checked, 0 keeps it; an unknown joint or another negative value drops back to all defaults).
* :func:`goal_outcome` is the check made after the last point's time: inside the goal
  tolerances -> SUCCESSFUL; outside them for longer than ``goal_time_tolerance`` (0 = wait
  without limit) -> GOAL_TOLERANCE_VIOLATED (the controller then holds the current position).
* A new goal preempts the active one: the controller aborts it with INVALID_GOAL and
  :data:`PREEMPTED_MESSAGE`; a cancel request ends it as canceled with an empty result
  (SUCCESSFUL, ''), the arm holding where it is.

Path tolerances (PATH_TOLERANCE_VIOLATED) are not checked: the simulator's servo goes to the
last point's positions directly instead of sampling the trajectory, so there is no desired
path to compare with.
"""
import math
from dataclasses import dataclass
from typing import NamedTuple

from awopt_ros.core.spec import STAMP_TOLERANCE_S

SUCCESSFUL = 0
INVALID_GOAL = -1
INVALID_JOINTS = -2
OLD_HEADER_TIMESTAMP = -3
PATH_TOLERANCE_VIOLATED = -4
GOAL_TOLERANCE_VIOLATED = -5
#: The error string of a goal the controller aborts because a newer goal arrived.
PREEMPTED_MESSAGE = 'Current goal preempted by new incoming action.'
SUCCESS_MESSAGE = 'Goal successfully reached!'
#: A final velocity larger than this (float32 epsilon) counts as nonzero, as in the JTC.
VELOCITY_EPS = 1.1920929e-07
#: The tolerance value that erases a default (control_msgs/JointTolerance: -1 = no check).
ERASE_TOLERANCE = -1.0


@dataclass(frozen=True)
class Point:
    """One trajectory point (trajectory_msgs/JointTrajectoryPoint), values in the message's
    joint order.

    Attributes:
        positions: rad, one per joint name.
        velocities: rad/s, empty or one per joint name.
        accelerations: rad/s^2, empty or one per joint name.
        effort: must be empty (position command interface).
        time_from_start_s: s after the trajectory's start.
    """

    positions: tuple = ()
    velocities: tuple = ()
    accelerations: tuple = ()
    effort: tuple = ()
    time_from_start_s: float = 0.0


class Rejection(NamedTuple):
    """Why a trajectory is refused: the control_msgs error code and a message."""

    error_code: int
    message: str


def check_trajectory(controller_joints, joint_names, points, start_s, now_s):
    """Return None when the controller accepts the trajectory, else a :class:`Rejection`.

    Args:
        controller_joints: the controller's joint names (sequence of str).
        joint_names: the trajectory's joint names, in the order of its values.
        points: sequence of :class:`Point`.
        start_s: the header stamp (s); 0.0 = start when received.
        now_s: the controller's current time (s, the stamp's clock).
    """
    names = list(joint_names)
    n = len(names)
    if n != len(controller_joints):
        return Rejection(INVALID_JOINTS, f"{n} joint names for the controller's "
                         f'{len(controller_joints)} joints {list(controller_joints)} (partial '
                         f'goals are not allowed): {names}')
    if not points:
        return Rejection(INVALID_GOAL, 'empty trajectory (no points)')
    known = set(controller_joints)
    unknown = [j for j in names if j not in known]
    if unknown:
        return Rejection(INVALID_JOINTS, f"joints {unknown} are not the controller's joints "
                         f'{list(controller_joints)}')
    if len(set(names)) != n:
        missing = [j for j in controller_joints if j not in names]
        return Rejection(INVALID_JOINTS, f'repeated joint names {names}: {missing} missing')
    last = points[-1]
    for name, v in zip(names, last.velocities):
        if abs(v) > VELOCITY_EPS:
            return Rejection(INVALID_GOAL, f'velocity {v} of joint {name} at the last point '
                             'is not zero')
    if start_s != 0.0 and start_s + last.time_from_start_s < now_s - STAMP_TOLERANCE_S:
        return Rejection(OLD_HEADER_TIMESTAMP, f'trajectory stamped {start_s:.6f} s ends at '
                         f'{start_s + last.time_from_start_s:.6f} s, before now '
                         f'({now_s:.6f} s)')
    previous = 0.0
    for i, p in enumerate(points):
        if i > 0 and p.time_from_start_s <= previous:
            return Rejection(INVALID_GOAL, f'time_from_start not strictly increasing: point '
                             f'{i - 1} at {previous} s, point {i} at {p.time_from_start_s} s')
        previous = p.time_from_start_s
        if len(p.positions) != n:
            return Rejection(INVALID_GOAL, f'point {i}: {len(p.positions)} positions for {n} '
                             'joints')
        for field in ('velocities', 'accelerations'):
            values = getattr(p, field)
            if values and len(values) != n:
                return Rejection(INVALID_GOAL, f'point {i}: {len(values)} {field} for {n} '
                                 'joints')
        if p.effort:
            return Rejection(INVALID_GOAL, f'point {i}: effort given to a position controller')
        if not all(math.isfinite(v) for v in p.positions):
            return Rejection(INVALID_GOAL, f'point {i}: positions not finite: '
                             f'{list(p.positions)}')
    return None


def in_controller_order(controller_joints, joint_names, values):
    """Return ``values`` (one per name of ``joint_names``) reordered to ``controller_joints``,
    a tuple of float. Call it on a trajectory :func:`check_trajectory` accepted.

    Raises:
        ValueError: a controller joint missing from ``joint_names``, or lengths differ.
    """
    if len(values) != len(joint_names):
        raise ValueError(f'{len(values)} values for {len(joint_names)} joint names')
    index = {name: i for i, name in enumerate(joint_names)}
    missing = [j for j in controller_joints if j not in index]
    if missing:
        raise ValueError(f'joints {missing} missing from {list(joint_names)}')
    return tuple(float(values[index[j]]) for j in controller_joints)


def end_time_s(start_s, points, received_s):
    """Return ``(start, end)`` times (s) of an accepted trajectory: the start is the header
    stamp, or ``received_s`` when the stamp is 0; the end adds the last point's
    ``time_from_start_s``."""
    start = received_s if start_s == 0.0 else start_s
    return start, start + points[-1].time_from_start_s


def point_index(times_from_start_s, start_s, now_s):
    """Return the feedback ``index``: how many points' times (start + time_from_start) are at
    or before ``now_s`` (the index of the point being approached; len(points) once past
    the last)."""
    return sum(1 for t in times_from_start_s if start_s + t <= now_s)


@dataclass(frozen=True)
class GoalTolerances:
    """Goal tolerances per controller joint (JTC ``constraints``).

    Attributes:
        position: rad per joint; 0 = not checked.
        velocity: rad/s per joint (``stopped_velocity_tolerance``); 0 = not checked.
        goal_time_s: how long after the last point's time the goal may take to come inside
            the tolerances (s); 0 = without limit.

    Raises:
        ValueError: lengths differ, or a value is negative or not finite.
    """

    position: tuple
    velocity: tuple
    goal_time_s: float = 0.0

    def __post_init__(self):
        position = tuple(float(v) for v in self.position)
        velocity = tuple(float(v) for v in self.velocity)
        if len(position) != len(velocity):
            raise ValueError(f'{len(position)} position and {len(velocity)} velocity '
                             'tolerances')
        for v in position + velocity + (float(self.goal_time_s),):
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f'tolerances must be finite and >= 0, got {v}')
        object.__setattr__(self, 'position', position)
        object.__setattr__(self, 'velocity', velocity)
        object.__setattr__(self, 'goal_time_s', float(self.goal_time_s))

    @classmethod
    def uniform(cls, n, position, velocity, goal_time_s):
        """The same position (rad) and velocity (rad/s) tolerance for ``n`` joints."""
        return cls((position,) * n, (velocity,) * n, goal_time_s)


def resolve_tolerance(default, goal_value):
    """Return the tolerance in force: ``goal_value`` when > 0, 0 (not checked) when it is -1,
    ``default`` when it is 0.

    Raises:
        ValueError: any other negative (or a non-finite) ``goal_value``.
    """
    v = float(goal_value)
    if not math.isfinite(v):
        raise ValueError(f'illegal tolerance {goal_value}')
    if v > 0.0:
        return v
    if abs(v - ERASE_TOLERANCE) < VELOCITY_EPS:
        return 0.0
    if v < 0.0:
        raise ValueError(f'illegal tolerance {goal_value}')
    return float(default)


def goal_tolerances(controller_joints, defaults, entries, goal_time_tolerance_s):
    """Return the :class:`GoalTolerances` of one goal.

    Args:
        controller_joints: the controller's joint names (order of the tolerances).
        defaults: the controller's :class:`GoalTolerances`.
        entries: the goal's ``goal_tolerance``: (joint name, position, velocity) tuples.
        goal_time_tolerance_s: the goal's ``goal_time_tolerance`` (s).

    An illegal value or an entry naming another joint gives ``defaults`` unchanged, as the
    controller does.
    """
    try:
        goal_time = resolve_tolerance(defaults.goal_time_s, goal_time_tolerance_s)
        position, velocity = list(defaults.position), list(defaults.velocity)
        for name, pos, vel in entries:
            if name not in controller_joints:
                return defaults
            i = list(controller_joints).index(name)
            position[i] = resolve_tolerance(defaults.position[i], pos)
            velocity[i] = resolve_tolerance(defaults.velocity[i], vel)
    except ValueError:
        return defaults
    return GoalTolerances(tuple(position), tuple(velocity), goal_time)


class Outcome(NamedTuple):
    """The state of an executing goal: ``status`` 'executing', 'succeeded' or 'aborted',
    with the result's ``error_code`` and ``message`` (unused while executing)."""

    status: str
    error_code: int = SUCCESSFUL
    message: str = ''


EXECUTING = Outcome('executing')


def goal_outcome(now_s, end_s, position_error, velocities, tolerances):
    """Return the :class:`Outcome` of a goal at ``now_s``.

    Args:
        now_s: current time (s).
        end_s: the trajectory's end time (s), :func:`end_time_s`.
        position_error: per controller joint, target - measured position (rad).
        velocities: per controller joint, measured velocity (rad/s; the target's is 0).
        tolerances: :class:`GoalTolerances`.
    """
    if now_s < end_s:
        return EXECUTING
    outside = [i for i, (e, v) in enumerate(zip(position_error, velocities))
               if (tolerances.position[i] > 0.0 and abs(e) > tolerances.position[i])
               or (tolerances.velocity[i] > 0.0 and abs(v) > tolerances.velocity[i])]
    if not outside:
        return Outcome('succeeded', SUCCESSFUL, SUCCESS_MESSAGE)
    late_s = now_s - end_s
    if tolerances.goal_time_s > 0.0 and late_s > tolerances.goal_time_s:
        return Outcome('aborted', GOAL_TOLERANCE_VIOLATED,
                       f'Aborted due to goal_time_tolerance exceeding by {late_s:.6f} seconds '
                       f'(joint indices {outside} outside the goal tolerance)')
    return EXECUTING
