"""From a policy action to arm and gripper targets: safety filter, then differential IK.

This is the arm interface's per-step logic with no ROS in it, shared by the arm_interface node
and by the in-process episode loop (``awopt_ros.sim.rollout.RolloutEnv``), so that both
move the arm the same way.
"""
from dataclasses import dataclass

import numpy as np

from awopt_ros.core import spec
from awopt_ros.core.safety import FilterFlags, filter_action


@dataclass
class ArmCommand:
    """Targets for one control step.

    Attributes:
        q_target: (7,) arm joint targets (rad), or None when the action was rejected (hold).
        gripper_m: finger target (m; 0 open, 0.04 closed), or None to leave the gripper as is.
        flags: what the safety filter did.
    """

    q_target: np.ndarray
    gripper_m: float
    flags: FilterFlags


def gripper_target(action):
    """Return the finger target (m) that ``action`` asks for, or None (close wins over open)."""
    if spec.is_set(action[spec.IDX_CLOSE]):
        return spec.GRIPPER_CLOSED_M
    if spec.is_set(action[spec.IDX_OPEN]):
        return 0.0
    return None


def arm_command(kin, q_meas, action, limits, dt_s):
    """Compute the arm and gripper targets for ``action`` from measured joints ``q_meas``.

    Args:
        kin: :class:`awopt_ros.core.kinematics.Kinematics`.
        q_meas: (7,) measured arm joint positions (rad).
        action: (7,) policy action (core.spec); may contain NaN (then rejected).
        limits: :class:`awopt_ros.core.safety.SafetyLimits`.
        dt_s: control period (s): joint motion is limited to velocity limits x dt_s.

    Returns:
        :class:`ArmCommand`; ``q_target`` is None when the action was rejected.
    """
    tcp_pos, _ = kin.fk(q_meas)
    safe, flags = filter_action(action, tcp_pos, limits)
    if flags.rejected:
        return ArmCommand(None, None, flags)
    q_target = kin.ik_step(q_meas, safe[:3], float(safe[3]), dt_s)
    return ArmCommand(q_target, gripper_target(safe), flags)
