"""trajectory_msgs -> the plain data of :mod:`awopt_ros.core.jtc` (no control_msgs needed); the
insertion scene's topic names and goal QoS."""
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

