"""Forward and differential inverse kinematics of a 7-joint arm (pinocchio, no ROS).

Defaults are the iiwa 14 + gripper: frames ``base_link`` (world, z up) and ``tcp`` (between
the finger pads, z out of the gripper); joint vectors ``q7`` are the 7 arm joints
``iiwa_joint_1..7`` in rad; the gripper finger joint is locked (it does not move ``tcp``).
Other arms pass their joint names, tool frame and home pose (the Sawyer: ``core.sawyer``).

The IK step is damped least squares (Wampler 1986; Nakamura & Hanafusa 1986; see also
Buss, "Introduction to Inverse Kinematics with Jacobian Transpose, Pseudoinverse and Damped
Least Squares methods", 2004) on the 6-D ``tcp`` pose error expressed in ``base_link``
(pinocchio ``LOCAL_WORLD_ALIGNED`` Jacobian), with a secondary task projected into the
Jacobian nullspace (Liegeois 1977) that pulls the arm toward ``core.robot.HOME_Q``.
"""
import functools
from collections import namedtuple

import numpy as np
import pinocchio as pin

from awopt_ros.core import paths, robot
from awopt_ros.core.spec import ARM_JOINTS, PROPRIO_DIM, gripper_closedness

JointLimits = namedtuple('JointLimits', ['lower_rad', 'upper_rad', 'velocity_rad_s'])
JointLimits.__doc__ = 'Arm joint limits from the URDF: three float64 (7,) arrays.'


def _as_q7(q7):
    q = np.asarray(q7, dtype=np.float64).reshape(-1)
    if q.shape != (7,):
        raise ValueError(f'q7 must have 7 joint angles (rad), got shape {np.shape(q7)}')
    if not np.all(np.isfinite(q)):
        raise ValueError(f'q7 has non-finite entries: {q.tolist()}')
    return q


def yaw_of(rot):
    """Return the yaw (rad) of rotation matrix ``rot`` (3, 3): atan2(R[1,0], R[0,0])."""
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


def quat_xyzw(rot):
    """Return the unit quaternion (x, y, z, w) float64 (4,) of rotation matrix ``rot``."""
    return np.asarray(pin.Quaternion(np.asarray(rot, dtype=np.float64)).coeffs()).copy()


def down_rotation(yaw_rad):
    """Return the (3, 3) ``tcp`` orientation that points the gripper straight down (tcp z =
    -base z) with yaw ``yaw_rad`` (tcp x axis at angle yaw in the base xy plane)."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


class Kinematics:
    """Kinematics of a 7-joint arm from a URDF with a tool frame.

    Args:
        urdf_path: URDF file; a relative path is resolved against the package share directory
            (``core.paths.resolve``).
        damping: DLS damping lambda (m / rad); the solve uses J^T (J J^T + lambda^2 I)^-1.
        nullspace_gain: fraction of (HOME_Q - q) pursued per step in the Jacobian nullspace.
        iterations: maximum DLS iterations per ``ik_step`` toward the same absolute target.
        limit_margin_rad: distance kept from the URDF joint position limits.
        home_q: nullspace attractor (7,), rad; default ``core.robot.HOME_Q``.
        joint_names: the 7 arm joint names in chain order (base to tool); default the iiwa's
            ``core.spec.ARM_JOINTS``. Every other joint of the URDF is locked at neutral.
        tcp_frame: name of the tool frame; default ``core.robot.TCP_FRAME`` (``tcp``).

    Raises:
        FileNotFoundError: the URDF does not exist.
        ValueError: the URDF lacks the arm joints or the tool frame, or bad arguments.
    """

    def __init__(self, urdf_path=robot.URDF_PATH, *, damping=1e-3, nullspace_gain=0.05,
                 iterations=4, limit_margin_rad=1e-3, home_q=None, joint_names=None,
                 tcp_frame=None):
        path = paths.resolve(urdf_path)
        if not path.is_file():
            raise FileNotFoundError(f'URDF not found: {path}')
        if damping <= 0 or not 0.0 <= nullspace_gain <= 1.0 or int(iterations) < 1:
            raise ValueError('need damping > 0, 0 <= nullspace_gain <= 1, iterations >= 1')
        arm = ARM_JOINTS if joint_names is None else tuple(str(j) for j in joint_names)
        if len(arm) != 7 or len(set(arm)) != 7:
            raise ValueError(f'joint_names must be 7 distinct names, got {joint_names!r}')
        tcp = robot.TCP_FRAME if tcp_frame is None else str(tcp_frame)
        full = pin.buildModelFromUrdf(str(path))
        names = list(full.names)
        missing = [j for j in arm if j not in names]
        if missing:
            raise ValueError(f'URDF {path} lacks arm joints {missing}')
        # Lock every joint that is not an arm joint (gripper fingers) at its neutral position.
        lock = [i for i in range(1, full.njoints) if names[i] not in arm]
        self.model = (pin.buildReducedModel(full, lock, pin.neutral(full)) if lock else full)
        if tuple(self.model.names[1:]) != arm or self.model.nq != 7:
            raise ValueError(f'unexpected joint layout {list(self.model.names)}')
        if not self.model.existFrame(tcp):
            raise ValueError(f'URDF {path} has no frame {tcp!r}')
        self.joint_names = arm
        self.tcp_frame = tcp
        self.data = self.model.createData()
        self.tcp_id = self.model.getFrameId(tcp)
        self._lower = self.model.lowerPositionLimit.copy()
        self._upper = self.model.upperPositionLimit.copy()
        self._vel = self.model.velocityLimit.copy()
        self._lo = self._lower + limit_margin_rad
        self._hi = self._upper - limit_margin_rad
        self._lambda2 = float(damping) ** 2
        self._k_null = float(nullspace_gain)
        self._iterations = int(iterations)
        self._home = _as_q7(robot.HOME_Q if home_q is None else home_q)
        self._eye6 = np.eye(6)
        self._eye7 = np.eye(7)

    def joint_limits(self):
        """Return the URDF arm joint limits as ``JointLimits`` (lower, upper rad; rad/s)."""
        return JointLimits(self._lower.copy(), self._upper.copy(), self._vel.copy())

    def _fk(self, q):
        pin.forwardKinematics(self.model, self.data, q)
        oMf = pin.updateFramePlacement(self.model, self.data, self.tcp_id)
        return oMf.translation.copy(), oMf.rotation.copy()

    def fk(self, q7):
        """Return the ``tcp`` pose in ``base_link`` at joints ``q7`` (7,) rad.

        Returns:
            (pos (3,) float64 m, R (3, 3) float64 rotation matrix, columns = tcp axes).

        Raises:
            ValueError: ``q7`` is not 7 finite values.
        """
        return self._fk(_as_q7(q7))

    def tcp_velocity(self, q7, dq7):
        """Return the tool frame's linear velocity (3,) float64, m/s in ``base_link``.

        Args:
            q7: (7,) joint positions (rad).
            dq7: (7,) joint velocities (rad/s).

        Raises:
            ValueError: either is not 7 finite values.
        """
        q, dq = _as_q7(q7), _as_q7(dq7)
        jac = pin.computeFrameJacobian(self.model, self.data, q, self.tcp_id,
                                       pin.LOCAL_WORLD_ALIGNED)
        return jac[:3] @ dq

    def proprio(self, q7, finger_m):
        """Return proprioception float32 (6,) per ``spec.PROPRIO_NAMES``.

        ``ee_x, ee_y, ee_z`` = tcp position (m, base_link); ``sin_yaw, cos_yaw`` of the tcp yaw
        atan2(R[1,0], R[0,0]); ``gripper_closed`` = finger_m / 0.04 clipped to [0, 1].

        Raises:
            ValueError: bad ``q7`` or non-finite ``finger_m``.
        """
        finger = float(finger_m)
        if not np.isfinite(finger):
            raise ValueError(f'finger_m must be finite, got {finger_m}')
        pos, rot = self.fk(q7)
        yaw = yaw_of(rot)
        out = np.empty(PROPRIO_DIM, dtype=np.float32)
        out[:3] = pos
        out[3] = np.sin(yaw)
        out[4] = np.cos(yaw)
        out[5] = gripper_closedness(finger)
        return out

    def ik_step(self, q7, dpos_m, dyaw_rad, dt_s):
        """Return joint targets (7,) rad that move the tcp by one Cartesian step.

        Target pose: position = tcp + ``dpos_m`` (3,) in base_link; orientation = gripper
        pointing straight down with yaw = current tcp yaw + ``dyaw_rad`` (rotation about base
        z; any tilt is corrected). Up to ``iterations`` damped-least-squares steps toward that
        pose from ``q7``; the first adds a nullspace pull toward HOME_Q. The total joint
        motion is scaled down uniformly so no joint exceeds velocity_limit * ``dt_s``, then
        the result is clipped to the joint position limits (less a margin).

        Raises:
            ValueError: bad shapes, non-finite inputs, or ``dt_s`` <= 0.
        """
        q0 = _as_q7(q7)
        dpos = np.asarray(dpos_m, dtype=np.float64).reshape(-1)
        if dpos.shape != (3,) or not np.all(np.isfinite(dpos)):
            raise ValueError(f'dpos_m must be 3 finite values (m), got {dpos_m!r}')
        dyaw = float(dyaw_rad)
        dt = float(dt_s)
        if not np.isfinite(dyaw):
            raise ValueError(f'dyaw_rad must be finite, got {dyaw_rad}')
        if not (np.isfinite(dt) and dt > 0.0):
            raise ValueError(f'dt_s must be > 0, got {dt_s}')
        model, data = self.model, self.data
        pos, rot = self._fk(q0)
        p_des = pos + dpos
        r_des = down_rotation(yaw_of(rot) + dyaw)
        q = q0.copy()
        for it in range(self._iterations):
            if it > 0:
                pos, rot = self._fk(q)
            err = np.empty(6)
            err[:3] = p_des - pos
            err[3:] = pin.log3(r_des @ rot.T)   # rotation vector in base_link
            if it > 0 and err[:3] @ err[:3] < 1e-12 and err[3:] @ err[3:] < 1e-10:
                break
            jac = pin.computeFrameJacobian(model, data, q, self.tcp_id,
                                           pin.LOCAL_WORLD_ALIGNED)
            jjt = jac @ jac.T + self._lambda2 * self._eye6
            dq = jac.T @ np.linalg.solve(jjt, err)
            if it == 0 and self._k_null > 0.0:
                # Projector onto the (damped) nullspace: I - J^T (J J^T + l^2 I)^-1 J.
                proj = self._eye7 - jac.T @ np.linalg.solve(jjt, jac)
                dq += proj @ (self._k_null * (self._home - q))
            q = np.clip(q + dq, self._lo, self._hi)
        step = q - q0
        vmax = self._vel * dt
        ratio = np.max(np.abs(step) / vmax)
        if ratio > 1.0:
            step /= ratio
        return np.clip(q0 + step, self._lo, self._hi)


@functools.lru_cache(maxsize=1)
def default_kinematics():
    """Return a cached ``Kinematics(core.robot.URDF_PATH)``."""
    return Kinematics(robot.URDF_PATH)


def proprio_from_joints(q7, finger_m):
    """Return proprioception float32 (6,) from arm joints ``q7`` (rad) and finger (m).

    Uses the cached default model; see ``Kinematics.proprio``.
    """
    return default_kinematics().proprio(q7, finger_m)


def joint_limits():
    """Return the default URDF's arm ``JointLimits`` (lower/upper rad, velocity rad/s)."""
    return default_kinematics().joint_limits()
