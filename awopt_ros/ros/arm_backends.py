"""How the arm interface sends joint and gripper targets: ros2_control topics or actions.

Arm (``command_interface``):
- ``joint_trajectory``: trajectory_msgs/JointTrajectory on ``<arm_controller>/joint_trajectory``
  (one point, ``time_from_start`` = the control period);
- ``forward_position``: std_msgs/Float64MultiArray on ``<forward_controller>/commands`` (7
  values in ``joint_names`` order);
- ``follow_joint_trajectory``: a control_msgs/action/FollowJointTrajectory goal on
  ``<arm_controller>/follow_joint_trajectory`` per command (one point, ``time_from_start`` =
  the control period, header stamp 0 = start now), each replacing the previous one
  (joint_trajectory_controller preempts its active goal). Goal responses and results arrive
  in the executor's callbacks; a rejected goal or a failed result (``core.control_actions``)
  is reported to ``on_fault``.

A move of several points (``/arm/home``): :meth:`send_trajectory` sends them as one
trajectory (one message or one goal) on the two trajectory interfaces; the forward position
controller has no trajectory (``trajectories`` False): the caller streams the targets.

Gripper (``gripper_interface``): ``forward`` (Float64MultiArray [finger m] on
``<gripper_controller>/commands``, every command), ``gripper_command`` /
``parallel_gripper_command`` (control_msgs GripperCommand / ParallelGripperCommand goal on
``<gripper_controller>/gripper_cmd``, sent when the target changes), ``none``.

control_msgs is imported only when an action interface is chosen, so the topic interfaces
work without it. Joint names in every message are the driver's (``core.robot_names``).
"""
from builtin_interfaces.msg import Duration
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from awopt_ros.core import control_actions
from awopt_ros.ros import qos

ARM_INTERFACES = ('joint_trajectory', 'forward_position', 'follow_joint_trajectory')
GRIPPER_INTERFACES = ('forward', 'gripper_command', 'parallel_gripper_command', 'none')


def duration(t_s):
    """Return a builtin_interfaces/Duration of ``t_s`` seconds (rounded to ns)."""
    ns = int(round(t_s * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _control_msgs_action(name):
    """Import control_msgs.action.<name>, or raise RuntimeError saying how to get it."""
    try:
        from control_msgs import action
    except ImportError as exc:
        raise RuntimeError(
            f'the {name} action needs the control_msgs Python package (make setup generates '
            'it into the venv; on a ROS install: apt install ros-$ROS_DISTRO-control-msgs)'
        ) from exc
    return getattr(action, name)


def trajectory_point(q7, period_s):
    """Return one JointTrajectoryPoint: positions ``q7`` (rad), reached after ``period_s``."""
    point = JointTrajectoryPoint()
    point.positions = [float(v) for v in q7]
    point.time_from_start = duration(period_s)
    return point


def trajectory_points(times_s, positions):
    """Return JointTrajectoryPoints: ``positions[k]`` ((N, 7) rad) at ``times_s[k]`` ((N,) s
    from the start, strictly increasing).

    Raises:
        ValueError: no points, N times for a different number of positions, or times not
            strictly increasing after 0 (the controller would reject them).
    """
    times = [float(t) for t in times_s]
    if not times or len(times) != len(positions):
        raise ValueError(f'need one time per point, got {len(times)} times for '
                         f'{len(positions)} points')
    if times[0] <= 0.0 or any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError(f'point times must be > 0 and strictly increasing, got {times}')
    return [trajectory_point(q, t) for t, q in zip(times, positions)]


class TopicArm:
    """Arm targets on a topic: ``joint_trajectory`` or ``forward_position`` (module doc).

    Args:
        node: the rclpy node that publishes.
        interface: 'joint_trajectory' or 'forward_position'.
        controller: the controller namespace (``arm_controller`` or ``forward_controller``).
        joint_names: the 7 driver names of A1..A7.
    """

    def __init__(self, node, interface, controller, joint_names):
        self._node = node
        self._trajectory = interface == 'joint_trajectory'
        self._names = list(joint_names)
        if self._trajectory:
            self.target = f'{controller}/joint_trajectory'
            self._pub = node.create_publisher(JointTrajectory, self.target, qos.COMMAND)
        else:
            self.target = f'{controller}/commands'
            self._pub = node.create_publisher(Float64MultiArray, self.target, qos.COMMAND)
        self.trajectories = self._trajectory
        self.counts = {}

    def missing(self):
        """Return None (a topic needs no server)."""
        return None

    def send(self, q7, period_s, epoch=0):
        """Publish joint targets ``q7`` (7,) rad, to be reached in ``period_s`` (s)."""
        if self._trajectory:
            msg = JointTrajectory()
            msg.header.stamp = self._node.get_clock().now().to_msg()
            msg.joint_names = self._names
            msg.points = [trajectory_point(q7, period_s)]
        else:
            msg = Float64MultiArray(data=[float(v) for v in q7])
        self._pub.publish(msg)

    def send_trajectory(self, times_s, positions, epoch=0):
        """Publish one JointTrajectory: ``positions`` ((N, 7) rad) at ``times_s`` ((N,) s
        from now). Raises RuntimeError on the forward position controller (no trajectory)
        and ValueError on bad times (:func:`trajectory_points`)."""
        if not self._trajectory:
            raise RuntimeError(f'{self.target} takes no trajectory: stream the targets')
        msg = JointTrajectory()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.joint_names = self._names
        msg.points = trajectory_points(times_s, positions)
        self._pub.publish(msg)

    def destroy(self):
        """Nothing to release beyond the node's own publishers."""


class TrajectoryActionArm:
    """Arm targets as FollowJointTrajectory goals, one per command, each preempting the last.

    Args:
        node: the rclpy node (its executor runs the response and result callbacks).
        controller: the joint_trajectory_controller namespace (``arm_controller``).
        joint_names: the 7 driver names of A1..A7.
        on_fault: callable(message str, epoch) called from the executor when a goal is
            rejected, its request fails, or its result is a failure (not a preemption);
            ``epoch`` is the one given to :meth:`send` for that goal.

    Raises:
        RuntimeError: control_msgs is not installed.
    """

    def __init__(self, node, controller, joint_names, on_fault):
        from rclpy.action import ActionClient
        self._action = _control_msgs_action('FollowJointTrajectory')
        self.target = f'{controller}/follow_joint_trajectory'
        self._client = ActionClient(node, self._action, self.target)
        self._names = list(joint_names)
        self.trajectories = True
        self._on_fault = on_fault
        self._seq = 0               # number of the newest goal sent
        self.counts = dict(goals_sent=0, goals_accepted=0, goals_rejected=0,
                           goals_succeeded=0, goals_preempted=0, goals_failed=0)
        self.last_error = ''

    def missing(self):
        """Return the action name when its server is not available, else None."""
        return None if self._client.server_is_ready() else self.target

    def send(self, q7, period_s, epoch=0):
        """Send a goal to reach ``q7`` (7,) rad in ``period_s`` s from now (stamp 0)."""
        self._send_points([trajectory_point(q7, period_s)], epoch)

    def send_trajectory(self, times_s, positions, epoch=0):
        """Send one goal: ``positions`` ((N, 7) rad) at ``times_s`` ((N,) s from now, stamp
        0). Raises ValueError on bad times (:func:`trajectory_points`)."""
        self._send_points(trajectory_points(times_s, positions), epoch)

    def _send_points(self, points, epoch):
        goal = self._action.Goal()
        goal.trajectory.joint_names = self._names
        goal.trajectory.points = points
        self._seq += 1
        seq = self._seq
        self.counts['goals_sent'] += 1
        future = self._client.send_goal_async(goal)
        future.add_done_callback(lambda f: self._on_goal_response(f, seq, epoch))

    def _fault(self, message, epoch):
        self.last_error = message
        self._on_fault(message, epoch)

    def _on_goal_response(self, future, seq, epoch):
        try:
            handle = future.result()
        except Exception as exc:   # noqa: BLE001 - a failed request is reported, not raised
            self._fault(f'{self.target}: goal request failed: {exc}', epoch)
            return
        if handle is None or not handle.accepted:
            self.counts['goals_rejected'] += 1
            self._fault(f'{self.target} rejected the goal', epoch)
            return
        self.counts['goals_accepted'] += 1
        handle.get_result_async().add_done_callback(
            lambda f: self._on_result(f, seq, epoch))

    def _on_result(self, future, seq, epoch):
        try:
            response = future.result()
        except Exception as exc:   # noqa: BLE001
            self._fault(f'{self.target}: result request failed: {exc}', epoch)
            return
        if response is None:
            return
        code = int(response.result.error_code)
        verdict = control_actions.classify_result(response.status, code, seq < self._seq)
        if verdict == control_actions.SUCCEEDED:
            self.counts['goals_succeeded'] += 1
        elif verdict == control_actions.PREEMPTED:
            self.counts['goals_preempted'] += 1
        else:
            self.counts['goals_failed'] += 1
            self._fault(f'{self.target}: ' + control_actions.describe_failure(
                response.status, code, response.result.error_string), epoch)

    def destroy(self):
        """Destroy the action client (rclpy's destroy_node does not)."""
        self._client.destroy()


class TopicGripper:
    """Finger targets (m) as Float64MultiArray [finger m] on ``<controller>/commands``."""

    def __init__(self, node, controller):
        self.target = f'{controller}/commands'
        self._pub = node.create_publisher(Float64MultiArray, self.target, qos.COMMAND)
        self.counts = {}

    def missing(self):
        """Return None (a topic needs no server)."""
        return None

    def send(self, finger_m):
        """Publish the finger target ``finger_m`` (m, 0 open)."""
        self._pub.publish(Float64MultiArray(data=[float(finger_m)]))

    def reset(self):
        """Nothing remembered."""

    def destroy(self):
        """Nothing to release beyond the node's own publishers."""


class NoGripper(TopicGripper):
    """No gripper: targets are dropped."""

    def __init__(self):   # noqa: D107 - nothing to create
        self.target = None
        self.counts = {}

    def send(self, finger_m):
        """Drop the target."""


class GripperAction:
    """Finger targets as a GripperCommand or ParallelGripperCommand goal on
    ``<controller>/gripper_cmd``, sent when the target differs from the last one sent (a
    gripper that stops on an object ends its goal aborted or stalled: that is a grasp, so a
    result is counted, never a fault; a rejected goal is a warning, ``on_warning(message)``).

    Args:
        node: the rclpy node.
        kind: 'gripper_command' (command.position = finger m, command.max_effort =
            ``max_effort_n``) or 'parallel_gripper_command' (command = JointState{name =
            [gripper_joint], position = [finger m]}, effort [max_effort_n] when > 0).
        controller: the gripper controller namespace.
        gripper_joint: the driver's name of the finger joint.
        max_effort_n: grip force limit (N; 0: GripperCommand max_effort 0, no
            ParallelGripperCommand effort).
        on_warning: callable(message str).

    Raises:
        RuntimeError: control_msgs is not installed.
    """

    def __init__(self, node, kind, controller, gripper_joint, max_effort_n, on_warning):
        from rclpy.action import ActionClient
        self._parallel = kind == 'parallel_gripper_command'
        self._action = _control_msgs_action('ParallelGripperCommand' if self._parallel
                                            else 'GripperCommand')
        self.target = f'{controller}/gripper_cmd'
        self._client = ActionClient(node, self._action, self.target)
        self._joint = gripper_joint
        self._effort = float(max_effort_n)
        self._on_warning = on_warning
        self._last = None
        self.counts = dict(gripper_goals_sent=0, gripper_goals_rejected=0,
                           gripper_goals_done=0)
        self.last_error = ''

    def missing(self):
        """Return the action name when its server is not available, else None."""
        return None if self._client.server_is_ready() else self.target

    def reset(self):
        """Forget the last target: the next one is sent whatever it is."""
        self._last = None

    def send(self, finger_m):
        """Send a goal for the finger target ``finger_m`` (m) unless it was the last one."""
        finger = float(finger_m)
        if self._last == finger:
            return
        self._last = finger
        goal = self._action.Goal()
        if self._parallel:
            goal.command.name = [self._joint]
            goal.command.position = [finger]
            if self._effort > 0.0:
                goal.command.effort = [self._effort]
        else:
            goal.command.position = finger
            goal.command.max_effort = self._effort
        self.counts['gripper_goals_sent'] += 1
        self._client.send_goal_async(goal).add_done_callback(self._on_goal_response)

    def _on_goal_response(self, future):
        try:
            handle = future.result()
        except Exception as exc:   # noqa: BLE001
            handle, reason = None, f'goal request failed: {exc}'
        else:
            reason = 'rejected the goal'
        if handle is None or not handle.accepted:
            self.counts['gripper_goals_rejected'] += 1
            self._last = None        # the next command tries again
            self.last_error = f'{self.target} {reason}'
            self._on_warning(self.last_error)
            return
        handle.get_result_async().add_done_callback(self._on_result)

    def _on_result(self, _future):
        self.counts['gripper_goals_done'] += 1

    def destroy(self):
        """Destroy the action client (rclpy's destroy_node does not)."""
        self._client.destroy()
