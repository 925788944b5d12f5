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
