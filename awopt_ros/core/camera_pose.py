"""The camera's pose in ``base_link`` (hand-eye calibration result) and its checks (ROS-free).

A pose is 6 floats ``x, y, z, roll, pitch, yaw`` (m, rad): the transform ``base_link ->
camera_link``, rotation ``R = Rz(yaw) Ry(pitch) Rx(roll)`` (fixed axes x, y, z: URDF and tf2
convention), as parameter ``camera_pose_xyz_rpy`` of the ``robot_state`` and ``policy`` nodes.

Frames follow realsense-ros: ``camera_link`` has x forward (along the view), y left and z up;
``camera_color_optical_frame`` (REP 103 optical frame: x right, y down, z forward) sits at
the same point, rotated by :data:`LINK_TO_OPTICAL_RPY`. The simulator's camera has its
optical centre at ``camera_link`` (a RealSense's colour imager sits a few mm to cm from
``camera_link``: the driver publishes that offset itself).

A model's contract (``awopt_contract``) records the pose of the cell its data came from;
:func:`pose_mismatch` tells the policy node whether the deployed camera sits elsewhere.
"""
import math

import numpy as np

#: ``camera_link -> camera_color_optical_frame`` rotation as roll, pitch, yaw (rad): optical
#: x = -y_link, optical y = -z_link, optical z = x_link.
LINK_TO_OPTICAL_RPY = (-math.pi / 2.0, 0.0, -math.pi / 2.0)
#: The same rotation as a matrix: columns = the optical frame's axes in ``camera_link``.
LINK_TO_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
#: Pose of the simulated cell's shoulder camera (``awopt_ros.sim.scene``: optical centre at
#: CAMERA_POS_M (0, 0.6, 1.2) m, looking at CAMERA_LOOKAT_M (0.6, 0, 0.03) m, no roll):
#: ``camera_link`` at the optical centre, pitched 0.943 rad down, yawed -45 deg. Kept as numbers
#: here so that the ROS nodes need not import the simulator; test_camera_pose checks them
#: against the scene's constants and the MuJoCo camera.
SIM_CAMERA_POSE_XYZ_RPY = (0.0, 0.6, 1.2, 0.0, 0.9433323311996737, -0.7853981633974483)
#: Default tolerances of the deployed-vs-trained camera pose check (policy node).
DEFAULT_TOLERANCE_M = 0.02
DEFAULT_TOLERANCE_RAD = 0.035


def as_pose(values, what='camera_pose_xyz_rpy'):
    """Return ``values`` as a float64 (6,) array ``x, y, z, roll, pitch, yaw`` (m, rad).

    Raises:
        ValueError: not 6 numbers, or any not finite; the message names ``what``.
    """
    try:
        pose = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{what} must be 6 numbers x y z (m) roll pitch yaw (rad), got '
                         f'{values!r}') from exc
    if pose.shape != (6,):
        raise ValueError(f'{what} must be 6 numbers x y z (m) roll pitch yaw (rad), got '
                         f'{len(pose)}: {pose.tolist()}')
    if not np.all(np.isfinite(pose)):
        raise ValueError(f'{what} has non-finite entries: {pose.tolist()}')
    return pose


def rpy_to_matrix(rpy):
    """Return the (3, 3) rotation ``Rz(yaw) Ry(pitch) Rx(roll)`` of ``rpy`` (3,) rad."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = (math.cos(r), math.sin(r), math.cos(p), math.sin(p),
                              math.cos(y), math.sin(y))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def matrix_to_rpy(rot):
    """Return roll, pitch, yaw (3,) rad of the rotation matrix ``rot`` (3, 3), pitch in
    [-pi/2, pi/2] (at pitch +-pi/2 the roll is set to 0 and the yaw carries the rest)."""
    m = np.asarray(rot, dtype=np.float64).reshape(3, 3)
    pitch = math.atan2(-m[2, 0], math.hypot(m[0, 0], m[1, 0]))
    if math.hypot(m[0, 0], m[1, 0]) < 1e-12:     # gimbal lock
        return np.array([0.0, pitch, math.atan2(-m[0, 1], m[1, 1])])
    return np.array([math.atan2(m[2, 1], m[2, 2]), pitch, math.atan2(m[1, 0], m[0, 0])])


def quat_xyzw(rot):
    """Return the unit quaternion (x, y, z, w) float64 (4,) of rotation matrix ``rot``, w >= 0."""
    m = np.asarray(rot, dtype=np.float64).reshape(3, 3)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0.0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0.0 else q


def pose_to_matrix(pose):
    """Return the (4, 4) homogeneous transform of a 6-float pose (:func:`as_pose`).

    Raises:
        ValueError: see :func:`as_pose`.
    """
    p = as_pose(pose)
    out = np.eye(4)
    out[:3, :3] = rpy_to_matrix(p[3:])
    out[:3, 3] = p[:3]
    return out


def optical_frame(pose):
    """Return ``(position (3,) m, rotation (3, 3))`` of ``camera_color_optical_frame`` in
    ``base_link`` for a ``camera_link`` pose: rotation columns = optical x (right), y (down),
    z (forward), as :class:`awopt_ros.core.camera.PinholeCamera` takes them.

    Raises:
        ValueError: see :func:`as_pose`.
    """
    t = pose_to_matrix(pose)
    return t[:3, 3].copy(), t[:3, :3] @ LINK_TO_OPTICAL


def pose_from_optical(position_m, optical_rotation, link_to_optical=None):
    """Return the ``camera_link`` pose (6,) whose optical frame is at ``position_m`` (3,)
    with axes ``optical_rotation`` (3, 3; columns x right, y down, z forward in base_link):
    for a hand-eye result given for ``camera_color_optical_frame``.

    Args:
        link_to_optical: the (4, 4) transform ``camera_link -> camera_color_optical_frame``
            the camera driver publishes (a RealSense's colour imager sits a few mm to cm from
            ``camera_link``: ``ros2 run tf2_ros tf2_echo camera_link
            camera_color_optical_frame``); default: the same origin, rotated by
            :data:`LINK_TO_OPTICAL` (the inverse of :func:`optical_frame`).

    Raises:
        ValueError: a rotation that is not one, or bad shapes.
    """
    pos = np.asarray(position_m, dtype=np.float64).reshape(-1)
    rot = np.asarray(optical_rotation, dtype=np.float64)
    if pos.shape != (3,) or rot.shape != (3, 3):
        raise ValueError(f'need a (3,) position and a (3, 3) rotation, got {pos.shape}, '
                         f'{rot.shape}')
    link_opt = np.eye(4)
    link_opt[:3, :3] = LINK_TO_OPTICAL
    if link_to_optical is not None:
        link_opt = np.asarray(link_to_optical, dtype=np.float64)
        if link_opt.shape != (4, 4):
            raise ValueError(f'link_to_optical must be a (4, 4) transform, got {link_opt.shape}')
    for what, r in (('optical_rotation', rot), ('link_to_optical', link_opt[:3, :3])):
        if not np.allclose(r.T @ r, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0.0:
            raise ValueError(f'{what} is not a rotation matrix')
    base_opt = np.eye(4)
    base_opt[:3, :3], base_opt[:3, 3] = rot, pos
    base_link = base_opt @ np.linalg.inv(link_opt)
    return as_pose(np.concatenate([base_link[:3, 3], matrix_to_rpy(base_link[:3, :3])]))


def pose_difference(a, b):
    """Return ``(distance m, angle rad)`` between two poses: the distance of their origins and
    the angle of the rotation that takes ``a``'s axes to ``b``'s, in [0, pi].

    Raises:
        ValueError: see :func:`as_pose`.
    """
    pa, pb = as_pose(a, 'first pose'), as_pose(b, 'second pose')
    rel = rpy_to_matrix(pa[3:]).T @ rpy_to_matrix(pb[3:])
    cos = np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.linalg.norm(pb[:3] - pa[:3])), float(math.acos(cos))


def pose_mismatch(deployed, recorded, tolerance_m, tolerance_rad):
    """Compare the deployed camera pose with the one a model was trained with.

    Args:
        deployed: the cell's ``camera_pose_xyz_rpy`` (6 floats).
        recorded: the model contract's ``camera_pose_xyz_rpy`` (6 floats), or None for a
            model that records none (exported before the field existed).
        tolerance_m, tolerance_rad: largest accepted distance (m) and angle (rad), >= 0.

    Returns:
        None when the poses agree within both tolerances or the model records no pose (the
        caller says so in an info line); otherwise one line naming both differences and
        both poses.

    Raises:
        ValueError: ``deployed`` is not a valid pose, a negative tolerance, or a ``recorded``
            value that is not a valid pose (a corrupt contract).
    """
    if tolerance_m < 0.0 or tolerance_rad < 0.0:
        raise ValueError(f'tolerances must be >= 0, got {tolerance_m} m, {tolerance_rad} rad')
    dep = as_pose(deployed, 'deployed camera_pose_xyz_rpy')
    if recorded is None:
        return None
    rec = as_pose(recorded, "the model's camera_pose_xyz_rpy")
    dist_m, angle_rad = pose_difference(rec, dep)
    if dist_m <= tolerance_m and angle_rad <= tolerance_rad:
        return None
    fmt = ', '.join
    return (f'the camera sits {dist_m:.3f} m and {math.degrees(angle_rad):.1f} deg from where '
            f'the model was trained (tolerance {tolerance_m:.3f} m, '
            f'{math.degrees(tolerance_rad):.1f} deg): deployed camera_pose_xyz_rpy '
            f'[{fmt(f"{v:.4f}" for v in dep)}], model [{fmt(f"{v:.4f}" for v in rec)}]; '
            'the policy sees the scene from another viewpoint than in training')


#: Outcomes of :func:`check_models`.
POSE_OK, POSE_MISMATCH, POSE_NOT_RECORDED = 'ok', 'mismatch', 'not_recorded'
#: Contract key of the recorded pose.
CONTRACT_FIELD = 'camera_pose_xyz_rpy'


def check_models(deployed, contracts, tolerance_m, tolerance_rad):
    """Compare the deployed camera pose with the pose each model's contract records.

    Args:
        deployed: the cell's ``camera_pose_xyz_rpy`` (6 floats).
        contracts: {model group (e.g. 'actor', 'critic'): its ``awopt_contract`` dict or None}.
        tolerance_m, tolerance_rad: see :func:`pose_mismatch`.

    Returns:
        ``(status, lines)``: status :data:`POSE_MISMATCH` when any model records a pose
        farther than the tolerance or an unreadable one (a warning each, in ``lines``), else
        :data:`POSE_NOT_RECORDED` when some model records none (an info line each), else
        :data:`POSE_OK` (one info line per model).

    Raises:
        ValueError: ``deployed`` is not a valid pose or a tolerance is negative.
    """
    dep = as_pose(deployed, 'deployed camera_pose_xyz_rpy')
    if tolerance_m < 0.0 or tolerance_rad < 0.0:
        raise ValueError(f'tolerances must be >= 0, got {tolerance_m} m, {tolerance_rad} rad')
    warnings, infos = [], []
    unrecorded = False
    for group, contract in sorted(contracts.items()):
        recorded = (contract or {}).get(CONTRACT_FIELD)
        if recorded is None:
            unrecorded = True
            infos.append(f'{group} model records no camera pose (exported before '
                         f'{CONTRACT_FIELD} existed): camera pose not checked')
            continue
        try:
            why = pose_mismatch(dep, recorded, tolerance_m, tolerance_rad)
        except ValueError as exc:      # the tolerances and deployed pose are valid
            warnings.append(f'{group} model: unreadable {CONTRACT_FIELD} in its contract: {exc}')
            continue
        if why:
            warnings.append(f'{group} model: {why}')
        else:
            infos.append(f'{group} model was trained with this camera pose (within '
                         f'{tolerance_m:.3f} m, {math.degrees(tolerance_rad):.1f} deg)')
    if warnings:
        return POSE_MISMATCH, warnings
    if unrecorded:
        return POSE_NOT_RECORDED, infos
    return POSE_OK, infos
