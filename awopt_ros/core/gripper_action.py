"""What a ros2_control gripper action controller does with a gripper goal, ROS-free.

The simulator serves ``<gripper_controller>/gripper_cmd`` (control_msgs GripperCommand or
ParallelGripperCommand) as ros2_controllers' gripper action controllers do: the goal's
position becomes the finger target at once; the goal succeeds with ``reached_goal`` when the
finger is within ``tolerance_m`` of it; when the finger stops short of it (slower than
:data:`STALL_VELOCITY_M_S` for ``stall_timeout_s``: the fingers closed on an object) it ends
with ``stalled``, succeeded when stalling is allowed (``allow_stalling``) and aborted when
not. A new goal preempts the active one, which ends as canceled (empty result); a cancel
request holds the finger where it is.
"""
import math
from dataclasses import dataclass, field
from typing import NamedTuple

#: Finger speed (m/s) under which the finger counts as not moving (controller default).
STALL_VELOCITY_M_S = 0.001


def check_command(positions):
    """Return None when a goal's position list is acceptable, else why not (str).

    ParallelGripperCommand carries a list: the controller takes exactly one position (m).
    A non-finite position is refused too (the simulator's servo needs a number).
    """
    values = list(positions)
    if len(values) != 1:
        return f'expected 1 position value, got {len(values)}'
    if not math.isfinite(values[0]):
        return f'position must be finite, got {values[0]}'
    return None


class GripperOutcome(NamedTuple):
    """How a gripper goal ended: ``succeeded`` (else aborted), ``reached_goal``, ``stalled``."""

    succeeded: bool
    reached_goal: bool
    stalled: bool


@dataclass
class GripperGoal:
    """One active gripper goal, updated with the measured finger.

    Attributes:
        target_m: the goal's finger position (m, 0 open).
        start_s: time the goal was accepted (s).
        tolerance_m: |target - finger| below this is the goal reached (m, > 0).
        stall_timeout_s: how long the finger may stand still short of the target (s, >= 0).
        allow_stalling: a stall ends the goal as succeeded (else aborted).

    Raises:
        ValueError: a non-finite target or time, ``tolerance_m`` <= 0 or a negative timeout.
    """

    target_m: float
    start_s: float
    tolerance_m: float
    stall_timeout_s: float
    allow_stalling: bool = True
    last_motion_s: float = field(init=False)

    def __post_init__(self):
        if not (math.isfinite(self.target_m) and math.isfinite(self.start_s)):
            raise ValueError(f'target and start must be finite, got {self.target_m}, '
                             f'{self.start_s}')
        if not self.tolerance_m > 0.0 or not self.stall_timeout_s >= 0.0:
            raise ValueError(f'tolerance_m must be > 0 and stall_timeout_s >= 0, got '
                             f'{self.tolerance_m}, {self.stall_timeout_s}')
        self.last_motion_s = float(self.start_s)

    def update(self, now_s, position_m, velocity_m_s):
        """Return None while the goal runs, else its :class:`GripperOutcome`."""
        if abs(self.target_m - position_m) < self.tolerance_m:
            return GripperOutcome(True, True, False)
        if abs(velocity_m_s) > STALL_VELOCITY_M_S:
            self.last_motion_s = now_s
            return None
        if now_s - self.last_motion_s > self.stall_timeout_s:
            return GripperOutcome(self.allow_stalling, False, True)
        return None
