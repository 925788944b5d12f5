"""Conversions between ROS messages and numpy arrays (images, actions, joint states, stamps).

Images are ``sensor_msgs/Image`` with encoding ``rgb8`` and arrays of shape (H, W, 3) uint8.
Actions travel as ``sensor_msgs/JointState`` with ``name`` = ``core.spec.ACTION_NAMES`` and
``position`` = the 7 action values (see docs/INTERFACES.md). A grasp goal (the scripted
demonstrator's aim, x, y, z and yaw) travels as ``geometry_msgs/PoseStamped``, as does the
insertion goal (a position); a wrist wrench as ``geometry_msgs/WrenchStamped``.
"""
import array
import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, WrenchStamped
from sensor_msgs.msg import Image, JointState

from awopt_ros.core.spec import (ACTION_DIM, ACTION_NAMES, PROPRIO_DIM, PROPRIO_NAMES, RGB8,
                                 STAMP_TOLERANCE_S)
from awopt_ros.ros import qos
from awopt_ros.ros.params import declare
from awopt_ros.sim.scripted import object_yaw

ACTION_FRAME = 'base_link'


def image_view(msg):
    """Return the pixels of an rgb8 ``sensor_msgs/Image`` as a read-only (H, W, 3) uint8 view.

    No copy: the array shares ``msg.data``'s memory (row padding, ``step`` > 3 * width, is
    skipped through the row stride, so the view is C-contiguous only without padding). It
    stays valid as long as it is referenced (it keeps ``msg.data`` alive); it is read-only so
    that no caller changes the message through it. ``cv2`` functions take such views.

    Raises:
        ValueError: encoding is not rgb8, ``step`` < 3 * width, or ``data`` shorter than
            ``step * height``.
    """
    if msg.encoding != RGB8:
        raise ValueError(f'expected image encoding {RGB8!r}, got {msg.encoding!r}')
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = 3 * w
    if step < row_bytes:
        raise ValueError(f'image step {step} is smaller than 3 * width = {row_bytes}')
    try:
        buf = np.frombuffer(msg.data, dtype=np.uint8)  # array.array / bytes: no copy
    except TypeError:
        buf = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if buf.size < step * h:
        raise ValueError(f'image data has {buf.size} bytes, expected step * height = '
                         f'{step} * {h} = {step * h}')
    view = buf[:step * h].reshape(h, step)[:, :row_bytes].reshape(h, w, 3)
    view.flags.writeable = False
    return view


def frame_layout_ok(node, layout, msg):
    """Return whether camera frame ``msg`` (sensor_msgs/Image) has the layout that ``layout``
    (:class:`awopt_ros.core.image_ops.FrameLayoutCheck`) expects; a frame that has not is
    counted there and named in a warning of ``node`` (throttled, 5 s)."""
    why = layout.check(msg.encoding, msg.width, msg.height, msg.step, len(msg.data))
    if why is None:
        return True
    node.get_logger().warning(f'camera frame dropped: {why} ({layout.dropped} dropped so far)',
                              throttle_duration_sec=5.0)
    return False


def image_to_numpy(msg):
    """Return the pixels of an rgb8 ``sensor_msgs/Image`` as a (H, W, 3) uint8 array.

    Row padding (``step`` > 3 * width) is dropped. The result is a C-contiguous copy owned by
    the caller (:func:`image_view` gives the pixels without a copy).

    Raises:
        ValueError: encoding is not rgb8, ``step`` < 3 * width, or ``data`` shorter than
            ``step * height``.
    """
    return np.array(image_view(msg), order='C')


def numpy_to_image(arr, stamp, frame_id):
    """Return a ``sensor_msgs/Image`` (rgb8, no padding) holding ``arr`` (H, W, 3) uint8.

    The pixels are copied once, straight into the message's ``array.array`` (``data``).

    Args:
        arr: (H, W, 3) uint8 RGB pixels.
        stamp: ``builtin_interfaces/Time`` for ``header.stamp``.
        frame_id: ``header.frame_id`` (e.g. 'camera_color_optical_frame').

    Raises:
        ValueError: wrong shape or dtype.
    """
    a = np.asarray(arr)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f'image array must have shape (H, W, 3), got {a.shape}')
    if a.dtype != np.uint8:
        raise ValueError(f'image array must be uint8, got {a.dtype}')
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = RGB8
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(a))
    msg.data = data
    return msg


def action_to_msg(action, stamp):
    """Return the 7-D ``action`` as a ``sensor_msgs/JointState`` for ``/policy/action``.

    ``name`` = ``ACTION_NAMES``, ``position`` = the values (float), ``header.stamp`` = ``stamp``
    (the source camera frame's stamp), ``header.frame_id`` = 'base_link'.

    Raises:
        ValueError: ``action`` does not have 7 entries. Non-finite values are passed through
            (the arm interface rejects them).
    """
    return _named_vector_msg(action, ACTION_NAMES, stamp, 'action')


def _named_vector_msg(values, names, stamp, what):
    """A ``JointState`` in ``base_link`` carrying ``values`` under ``names`` (ValueError on a
    wrong length)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != (len(names),):
        raise ValueError(f'{what} must have {len(names)} entries {names}, got {v.shape}')
    msg = JointState()
    msg.header.stamp = stamp
    msg.header.frame_id = ACTION_FRAME
    msg.name = list(names)
    msg.position = v.tolist()
    return msg


#: Topic of the proprioception a policy node acted on (``proprio_publisher``).
PROPRIO_TOPIC = '/policy/proprio'


def proprio_publisher(node):
    """Declare a policy node's read-only bool parameter ``publish_proprio`` (default False)
    and return its ``/policy/proprio`` publisher (sensor-data QoS), or None when it is off.

    With it on, the node publishes the proprio of each action (:func:`proprio_to_msg`, after
    the action), and the logger records it instead of the joint state at the image's stamp.
    Off by default: stack runs of the scripted policy with it on did worse (models/grasp_bc.md,
    docs/experiments.md), whether because of it is open.
    """
    on = declare(node, 'publish_proprio', False,
                 'Publish the proprio each action was computed from on /policy/proprio (after '
                 'the action); the logger then records it instead of the joint state at the '
                 'image stamp.', read_only=True)
    return node.create_publisher(JointState, PROPRIO_TOPIC, qos.SENSOR) if on else None


def proprio_to_msg(proprio, stamp):
    """Return the (6,) proprioception a policy acted on as a ``sensor_msgs/JointState`` for
    ``/policy/proprio``: ``name`` = ``PROPRIO_NAMES``, ``position`` = the values (m, sin/cos,
    closedness), ``header.stamp`` = ``stamp`` (the action's), ``header.frame_id`` = 'base_link'.

    Raises:
        ValueError: ``proprio`` does not have 6 entries.
    """
    return _named_vector_msg(proprio, PROPRIO_NAMES, stamp, 'proprio')


def msg_to_proprio(msg):
    """Return the proprioception carried by a ``/policy/proprio`` JointState as float32 (6,).

    Raises:
        ValueError: ``name`` differs from ``PROPRIO_NAMES`` (order included), the number of
            positions is not 6, or a value is not finite.
    """
    names = tuple(msg.name)
    if names != PROPRIO_NAMES:
        raise ValueError(f'proprio names must be {PROPRIO_NAMES}, got {names}')
    p = np.asarray(msg.position, dtype=np.float32).reshape(-1)
    if p.shape != (PROPRIO_DIM,) or not np.all(np.isfinite(p)):
        raise ValueError(f'proprio must be {PROPRIO_DIM} finite positions, got {p.tolist()}')
    return p


def msg_to_action(msg):
    """Return the action carried by a ``/policy/action`` JointState as float32 (7,).

    Values are not checked for finiteness (the safety filter does that).

    Raises:
        ValueError: ``name`` differs from ``ACTION_NAMES`` (order included) or the number of
            positions is not 7.
    """
    names = tuple(msg.name)
    if names != ACTION_NAMES:
        raise ValueError(f'action names must be {ACTION_NAMES}, got {names}')
    a = np.asarray(msg.position, dtype=np.float32).reshape(-1)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f'action must have {ACTION_DIM} positions, got {a.shape[0]}')
    return a


def grasp_goal_to_msg(goal, stamp, frame_id='base_link'):
    """Return a grasp goal (x, y, z m, yaw rad) as a ``geometry_msgs/PoseStamped``.

    The orientation is the rotation by ``yaw`` about the frame's z axis.

    Raises:
        ValueError: ``goal`` does not have 4 entries.
    """
    g = np.asarray(goal, dtype=np.float64).reshape(-1)
    if g.shape != (4,):
        raise ValueError(f'grasp goal must be (x, y, z, yaw), got shape {g.shape}')
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = g[:3].tolist()
    msg.pose.orientation.z = math.sin(g[3] / 2.0)
    msg.pose.orientation.w = math.cos(g[3] / 2.0)
    return msg


def msg_to_grasp_goal(msg):
    """Return float32 (4,) x, y, z (m) and yaw (rad, about z) of a ``PoseStamped`` grasp goal.

    Raises:
        ValueError: a non-finite position or a zero orientation quaternion.
    """
    p, q = msg.pose.position, msg.pose.orientation
    if (q.w, q.x, q.y, q.z) == (0.0, 0.0, 0.0, 0.0):
        raise ValueError('grasp goal orientation is the zero quaternion')
    goal = np.array([p.x, p.y, p.z, object_yaw((q.w, q.x, q.y, q.z))], dtype=np.float32)
    if not np.all(np.isfinite(goal)):
        raise ValueError(f'grasp goal is not finite: {goal.tolist()}')
    return goal


def wrench_to_msg(wrench6, stamp, frame_id):
    """Return ``wrench6`` (force fx, fy, fz N, then torque tx, ty, tz N m, in ``frame_id``)
    as a ``geometry_msgs/WrenchStamped``.

    Raises:
        ValueError: ``wrench6`` does not have 6 entries.
    """
    w = np.asarray(wrench6, dtype=np.float64).reshape(-1)
    if w.shape != (6,):
        raise ValueError(f'wrench must have 6 entries (force N, torque N m), got {w.shape}')
    msg = WrenchStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = str(frame_id)
    f, t = msg.wrench.force, msg.wrench.torque
    f.x, f.y, f.z, t.x, t.y, t.z = w.tolist()
    return msg


def msg_to_wrench(msg):
    """Return the wrench of a ``WrenchStamped`` as float64 (6,): force (N), then torque (N m),
    in the message's ``header.frame_id``.

    Raises:
        ValueError: a non-finite entry.
    """
    f, t = msg.wrench.force, msg.wrench.torque
    w = np.array([f.x, f.y, f.z, t.x, t.y, t.z], dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(f'wrench is not finite: {w.tolist()}')
    return w


def position_to_pose_msg(position_m, stamp, frame_id='base_link', quat_xyzw=(0.0, 0.0, 0.0, 1.0)):
    """Return a position (3,) m (and orientation ``quat_xyzw``) as a ``PoseStamped``, e.g. the
    insertion goal on ``/insertion/goal``.

    Raises:
        ValueError: ``position_m`` not 3 entries or ``quat_xyzw`` not 4.
    """
    p = np.asarray(position_m, dtype=np.float64).reshape(-1)
    q = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or q.shape != (4,):
        raise ValueError(f'need a position (3,) and a quaternion (4,), got {p.shape}, {q.shape}')
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = str(frame_id)
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = p.tolist()
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = q.tolist()
    return msg


def pose_msg_position(msg):
    """Return the position of a ``PoseStamped`` as float64 (3,) m (in ``header.frame_id``).

    Raises:
        ValueError: a non-finite entry.
    """
    p = msg.pose.position
    pos = np.array([p.x, p.y, p.z], dtype=np.float64)
    if not np.all(np.isfinite(pos)):
        raise ValueError(f'pose position is not finite: {pos.tolist()}')
    return pos

def joint_positions(msg, names):
    """Return the positions of joints ``names`` (in that order) from a JointState, float64.

    Raises:
        KeyError: some of ``names`` are missing from ``msg.name`` (the message names them).
        ValueError: ``msg.position`` is shorter than ``msg.name``.
    """
    if len(msg.position) < len(msg.name):
        raise ValueError(f'joint state has {len(msg.name)} names but only '
                         f'{len(msg.position)} positions')
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise KeyError(f'joint state lacks joints {missing}')
    pos = msg.position
    return np.array([pos[index[n]] for n in names], dtype=np.float64)


def stamp_to_s(stamp):
    """Return a ``builtin_interfaces/Time`` (or rclpy ``Time``) as float seconds."""
    if hasattr(stamp, 'nanoseconds'):
        return stamp.nanoseconds * 1e-9
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def stamp_to_ns(stamp):
    """Return a ``builtin_interfaces/Time`` as int nanoseconds (exact, unlike seconds)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def not_after(stamp, t_s):
    """Return whether ``stamp`` (``builtin_interfaces/Time``) is at or before ``t_s`` (float
    s, same clock), equality within :data:`STAMP_TOLERANCE_S`."""
    return stamp_to_s(stamp) <= t_s + STAMP_TOLERANCE_S


def s_to_stamp(t_s):
    """Return float seconds ``t_s`` (>= 0) as a ``builtin_interfaces/Time``."""
    ns = int(round(float(t_s) * 1e9))
    if ns < 0:
        raise ValueError(f'stamp must be >= 0 s, got {t_s}')
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
