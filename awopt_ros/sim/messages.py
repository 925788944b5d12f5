"""trajectory_msgs -> the plain data of :mod:`awopt_ros.core.jtc` (no control_msgs needed)."""
from awopt_ros.core import jtc
from awopt_ros.ros.convert import stamp_to_s


def duration_s(duration):
    """Return a ``builtin_interfaces/Duration`` as float seconds."""
    return float(duration.sec) + float(duration.nanosec) * 1e-9


def trajectory_points(trajectory):
    """Return ``(joint names, [jtc.Point], header stamp s)`` of a trajectory_msgs
    JointTrajectory."""
    points = [jtc.Point(tuple(p.positions), tuple(p.velocities), tuple(p.accelerations),
                        tuple(p.effort), duration_s(p.time_from_start))
              for p in trajectory.points]
    return list(trajectory.joint_names), points, stamp_to_s(trajectory.header.stamp)


#: Default topic of the wrist force/torque sensor (ros2_controllers'
#: force_torque_sensor_broadcaster): geometry_msgs/WrenchStamped, sensor-data QoS.
WRENCH_TOPIC = '/force_torque_sensor_broadcaster/wrench'
#: Default topic of the insertion goal (the observed socket pose): geometry_msgs/PoseStamped,
#: reliable + transient local, depth 1 (:func:`goal_qos`), re-published at every reset.
GOAL_TOPIC = '/insertion/goal'


def goal_qos():
    """Return the QoS of the insertion goal: reliable, transient local, depth 1 (a late
    subscriber gets the current episode's goal, never an older one)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      history=HistoryPolicy.KEEP_LAST,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def wrench_msg(wrench6, stamp, frame_id='tcp'):
    """Return a geometry_msgs WrenchStamped of ``wrench6`` (6,): force (N) then torque (N m).

    Raises:
        ValueError: not 6 finite values.
    """
    import math

    from geometry_msgs.msg import WrenchStamped
    values = [float(v) for v in wrench6]
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        raise ValueError(f'a wrench needs 6 finite values (N, N m), got {list(wrench6)}')
    msg = WrenchStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    f, t = msg.wrench.force, msg.wrench.torque
    f.x, f.y, f.z, t.x, t.y, t.z = values
    return msg


def goal_msg(position_m, stamp, quat_xyzw=(0.0, 0.0, 0.0, 1.0), frame_id='base_link'):
    """Return a geometry_msgs PoseStamped at ``position_m`` (3,) m with orientation
    ``quat_xyzw`` in ``frame_id``.

    Raises:
        ValueError: not 3 finite position values or not 4 finite quaternion values.
    """
    import math

    from geometry_msgs.msg import PoseStamped
    p = [float(v) for v in position_m]
    q = [float(v) for v in quat_xyzw]
    if len(p) != 3 or len(q) != 4 or not all(math.isfinite(v) for v in p + q):
        raise ValueError(f'a goal needs 3 finite position and 4 quaternion values, got '
                         f'{list(position_m)}, {list(quat_xyzw)}')
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = p
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = q
    return msg
