"""From a policy action to arm and gripper targets: safety filter, then differential IK.

This is the arm interface's per-step logic with no ROS in it, shared by the arm_interface node
and by the in-process episode loop (``awopt_ros.sim.rollout.RolloutEnv``), so that both
move the arm the same way.
"""
from dataclasses import dataclass

import numpy as np

from awopt_ros.core import spec
from awopt_ros.core.safety import FilterFlags, JointFlags, filter_action, limit_joint_target


@dataclass
class ArmCommand:
    """Targets for one control step.

    Attributes:
        q_target: (7,) arm joint targets (rad), or None when the action was rejected (hold).
        gripper_m: finger target (m; 0 open, 0.04 closed), or None to leave the gripper as is.
        flags: what the safety filter did.
        joint_flags: what the joint-space limits did (``core.safety.limit_joint_target``;
            all clear when none were given).
    """

    q_target: np.ndarray
    gripper_m: float
    flags: FilterFlags
    joint_flags: JointFlags = None


def gripper_target(action, closedness=None):
    """Return the finger target (m) that ``action`` asks for, or None to leave it as is.

    A close bit alone closes (0.04 m), an open bit alone opens (0 m). With both bits set the
    measured ``closedness`` (proprio ``gripper_closed``, 0 open .. 1 fully closed) decides:
    fingers stopped on an object (``spec.GRIPPER_ENGAGED_CLOSEDNESS`` <= closedness <
    ``spec.GRIPPER_EMPTY_CLOSEDNESS``) stay closed, so a grasped object is never dropped;
    fingers closed on nothing (a missed grasp) or open get open, so the policy can try
    again, where keeping them closed stalled the episode until its timeout (most failures
    of the shipped actors, docs/experiments.md) and closing them again after the reopening
    would flap the gripper. ``closedness`` None (not measured): close wins.

    Args:
        action: (7,) policy action (``spec.ACTION_NAMES``).
        closedness: measured gripper closedness in [0, 1], or None.
    """
    close = spec.is_set(action[spec.IDX_CLOSE])
    open_ = spec.is_set(action[spec.IDX_OPEN])
    if close and open_ and closedness is not None:
        holding = spec.GRIPPER_ENGAGED_CLOSEDNESS <= float(closedness) \
            < spec.GRIPPER_EMPTY_CLOSEDNESS
        return spec.GRIPPER_CLOSED_M if holding else 0.0
    if close:
        return spec.GRIPPER_CLOSED_M
    if open_:
        return 0.0
    return None


def arm_command(kin, q_meas, action, limits, dt_s, gripper_closedness=None, joint_safety=None):
    """Compute the arm and gripper targets for ``action`` from measured joints ``q_meas``.

    Args:
        kin: :class:`awopt_ros.core.kinematics.Kinematics`.
        q_meas: (7,) measured arm joint positions (rad).
        action: (7,) policy action (core.spec); may contain NaN (then rejected).
        limits: :class:`awopt_ros.core.safety.SafetyLimits`.
        dt_s: control period (s): joint motion is limited to velocity limits x dt_s.
        gripper_closedness: measured gripper closedness in [0, 1] or None, for
            :func:`gripper_target` (conflicting bits reopen a gripper that holds nothing).
        joint_safety: :class:`awopt_ros.core.safety.JointSafety` or None: when given, the IK
            target is clipped to the joint limits less its margin and the step from
            ``q_meas`` scaled to its velocity limits over ``dt_s`` (the arm_interface node
            passes its own; None leaves the IK target as it is).

    Returns:
        :class:`ArmCommand`; ``q_target`` is None when the action was rejected.
    """
    tcp_pos, _ = kin.fk(q_meas)
    safe, flags = filter_action(action, tcp_pos, limits)
    if flags.rejected:
        return ArmCommand(None, None, flags)
    q_target = kin.ik_step(q_meas, safe[:3], float(safe[3]), dt_s)
    joint_flags = JointFlags()
    if joint_safety is not None:
        q_target, joint_flags = limit_joint_target(q_meas, q_target, joint_safety, dt_s)
    return ArmCommand(q_target, gripper_target(safe, gripper_closedness), flags, joint_flags)
