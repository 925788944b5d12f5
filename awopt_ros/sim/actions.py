"""The simulator's ros2_control action servers: ``follow_joint_trajectory`` and ``gripper_cmd``.

:class:`ArmTrajectoryServer` serves control_msgs/action/FollowJointTrajectory as
joint_trajectory_controller does (rules in :mod:`awopt_ros.core.jtc`): a goal it would refuse
gets the goal response "rejected" (no result, the code goes to the log and the counters); an
accepted goal sends the simulated arm's servo to the last point's positions at once (the
same command the ``joint_trajectory`` topic gives, so lockstep and the in-process rollout see
the same motion), preempts the active goal (aborted, INVALID_GOAL, "Current goal preempted by
new incoming action."), sends feedback at :data:`FEEDBACK_PERIOD_S` and ends, once the last
point's time has passed, as SUCCESSFUL within the goal tolerances or aborted with
GOAL_TOLERANCE_VIOLATED after ``goal_time_tolerance`` (the arm then holds where it is). A
cancel request holds the arm and ends the goal canceled.

:class:`GripperServer` serves control_msgs/action/GripperCommand or ParallelGripperCommand as
ros2_controllers' gripper action controllers do (:mod:`awopt_ros.core.gripper_action`). A
preempted gripper goal ends aborted with an empty result: the controller means to cancel it,
but the executing -> canceled transition it asks for is one rcl_action refuses.

Both are driven by the node: :meth:`update` with the measured joints at each joint state
event of the simulation (goals progress with simulated time and stand still while it does).
A scene reset leaves a goal running: like a controller whose robot was moved, it goes on
comparing the measured joints with the goal's target (with the default tolerances it ends
succeeded once the arm is still), while the servo holds the new scene's start pose. This
module imports control_msgs: import it only when the action servers are wanted.
"""
from control_msgs.action import FollowJointTrajectory, GripperCommand, ParallelGripperCommand
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.task import Future
from sensor_msgs.msg import JointState

from awopt_ros.core import gripper_action, jtc
from awopt_ros.ros.convert import s_to_stamp
from awopt_ros.sim.messages import duration_s, trajectory_points

#: Feedback period of an executing goal (s, the node's time; the controllers' action monitor
#: rate is 20 Hz).
FEEDBACK_PERIOD_S = 0.05
#: How long a finished goal's result stays available to clients (s): goals come once per
#: control step, so rcl_action's 15 minutes would keep thousands.
RESULT_TIMEOUT_S = 30
GRIPPER_ACTION_TYPES = {'gripper_command': GripperCommand,
                        'parallel_gripper_command': ParallelGripperCommand}


class _Goal:
    """One accepted goal: its handle, the future its execute coroutine waits on, and what
    the monitor needs."""

    def __init__(self, handle, **fields):
        self.handle = handle
        self.future = Future()
        self.next_feedback_s = 0.0
        self.__dict__.update(fields)

    async def wait(self, _handle):
        return await self.future

    def finish(self, status, result):
        """End the goal: ``status`` 'succeeded', 'aborted' or 'canceled', with ``result``."""
        if self.handle.is_active:
            {'succeeded': self.handle.succeed, 'aborted': self.handle.abort,
             'canceled': self.handle.canceled}[status]()
        if not self.future.done():
            self.future.set_result(result)


class _Server:
    """What the two servers share: the active goal, preemption, cancel, counters."""

    action_type = None
    kind = ''     # 'arm' or 'gripper': the prefix of its diagnostics counters

    def __init__(self, node, name):
        self.node = node
        self.name = name
        self.active = None
        self.counts = {'goals': 0, 'rejected': 0, 'succeeded': 0, 'aborted': 0,
                       'preempted': 0, 'canceled': 0}
        self._server = ActionServer(
            node, self.action_type, name, execute_callback=self._unused_execute,
            goal_callback=self._on_goal, handle_accepted_callback=self._on_accepted,
            cancel_callback=self._on_cancel, result_timeout=RESULT_TIMEOUT_S)

    @staticmethod
    def _unused_execute(_handle):    # every goal is executed with its own _Goal.wait
        raise RuntimeError('goal executed without its record')

    def _reject(self, message):
        self.counts['rejected'] += 1
        self.node.get_logger().warning(f'{self.name}: goal rejected: {message}',
                                       throttle_duration_sec=2.0)
        return GoalResponse.REJECT

    def _end(self, status, result, count):
        goal, self.active = self.active, None
        self.counts[count] += 1
        goal.finish(status, result)

    def _start(self, goal):
        if self.active is not None:
            self._end('aborted', self._preempted_result(), 'preempted')
        self.active = goal
        self.counts['goals'] += 1
        goal.handle.execute(goal.wait)

    def _on_cancel(self, handle):
        goal = self.active
        if goal is None or goal.handle != handle:
            return CancelResponse.REJECT
        self.active = None
        self.counts['canceled'] += 1
        self._hold()
        # The handle becomes "canceling" after this callback returns; end it after that.
        self.node.executor.create_task(goal.finish, 'canceled', self.action_type.Result())
        return CancelResponse.ACCEPT

    def destroy(self):
        self._server.destroy()


class ArmTrajectoryServer(_Server):
    """``<arm_controller>/follow_joint_trajectory`` like a joint_trajectory_controller.

    Args:
        node: the rclpy node serving it.
        name: the action name.
        joints: the controller's 7 joint names (driver names, A1..A7 order).
        tolerances: the controller's default :class:`awopt_ros.core.jtc.GoalTolerances`.
        now_s: callable returning the current time (s) on the clock of the goals' stamps.
        command: callable(q7 rad in ``joints`` order) -> bool: set the arm's servo target
            (False: the simulator refused it).
        hold: callable(): hold the arm where it is.
        stale: callable(stamp s) -> bool: the goal was issued before the last scene reset
            (refused, counted as ``before_reset``; a simulator-only rule).
    """

    action_type = FollowJointTrajectory
    kind = 'arm'

    def __init__(self, node, name, joints, tolerances, now_s, command, hold, stale):
        self.joints = tuple(joints)
        self.tolerances = tolerances
        self._now_s, self._command, self._hold, self._stale = now_s, command, hold, stale
        super().__init__(node, name)
        self.counts['before_reset'] = 0
        self.rejections = {}     # error code -> count

    def _on_goal(self, goal):
        names, points, stamp_s = trajectory_points(goal.trajectory)
        if stamp_s > 0.0 and self._stale(stamp_s):
            self.counts['before_reset'] += 1
            return self._reject(f'stamped {stamp_s:.3f} s, before the last scene reset')
        rejection = jtc.check_trajectory(self.joints, names, points, stamp_s, self._now_s())
        if rejection is not None:
            self.rejections[rejection.error_code] = \
                self.rejections.get(rejection.error_code, 0) + 1
            return self._reject(f'{rejection.message} (error code {rejection.error_code})')
        return GoalResponse.ACCEPT

    def _on_accepted(self, handle):
        goal = handle.request
        names, points, stamp_s = trajectory_points(goal.trajectory)
        start_s, end_s = jtc.end_time_s(stamp_s, points, self._now_s())
        tolerances = jtc.goal_tolerances(
            self.joints, self.tolerances,
            [(t.name, t.position, t.velocity) for t in goal.goal_tolerance],
            duration_s(goal.goal_time_tolerance))
        target = jtc.in_controller_order(self.joints, names, points[-1].positions)
        record = _Goal(handle, start_s=start_s, end_s=end_s, target=target,
                       times=tuple(p.time_from_start_s for p in points),
                       tolerances=tolerances)
        self._start(record)
        if not self._command(target):
            self._end('aborted', self._aborted_result('the simulated arm refused the target'),
                      'aborted')

    def update(self, now_s, positions, velocities):
        """Advance the active goal with the measured arm: positions, velocities (>= 7 values,
        model joint order A1..A7 first; rad, rad/s) at ``now_s``."""
        goal = self.active
        q, v = positions[:7], velocities[:7]
        error = [t - m for t, m in zip(goal.target, q)]
        if now_s >= goal.next_feedback_s:
            goal.next_feedback_s = now_s + FEEDBACK_PERIOD_S
            goal.handle.publish_feedback(self._feedback(goal, now_s, q, v, error))
        outcome = jtc.goal_outcome(now_s, goal.end_s, error, v, goal.tolerances)
        if outcome.status == 'succeeded':
            self._end('succeeded', self._result(outcome.error_code, outcome.message),
                      'succeeded')
        elif outcome.status == 'aborted':
            self._hold()
            self._end('aborted', self._result(outcome.error_code, outcome.message), 'aborted')

    def _feedback(self, goal, now_s, q, v, error):
        fb = FollowJointTrajectory.Feedback(joint_names=list(self.joints))
        fb.header.stamp = s_to_stamp(now_s)
        fb.actual.positions, fb.actual.velocities = q, v
        fb.desired.positions, fb.desired.velocities = list(goal.target), [0.0] * len(q)
        fb.error.positions, fb.error.velocities = error, [-x for x in v]
        fb.index = jtc.point_index(goal.times, goal.start_s, now_s)
        return fb

    @staticmethod
    def _result(code, message):
        return FollowJointTrajectory.Result(error_code=code, error_string=message)

    def _preempted_result(self):
        return self._result(jtc.INVALID_GOAL, jtc.PREEMPTED_MESSAGE)

    def _aborted_result(self, message):
        return self._result(jtc.INVALID_GOAL, message)


class GripperServer(_Server):
    """``<gripper_controller>/gripper_cmd`` like ros2_controllers' gripper action controller.

    Args:
        node: the rclpy node serving it.
        name: the action name.
        type_name: 'gripper_command' or 'parallel_gripper_command'.
        joint: the gripper joint's (driver) name, for ParallelGripperCommand states.
        now_s: callable returning the current time (s).
        command: callable(finger m): set the finger target.
        hold: callable(): hold the finger where it is.
        tolerance_m, stall_timeout_s, allow_stalling: :class:`core.gripper_action.GripperGoal`.
    """

    kind = 'gripper'

    def __init__(self, node, name, type_name, joint, now_s, command, hold, tolerance_m,
                 stall_timeout_s, allow_stalling):
        if type_name not in GRIPPER_ACTION_TYPES:
            raise ValueError(f'gripper action type must be one of {sorted(GRIPPER_ACTION_TYPES)}'
                             f', got {type_name!r}')
        self.action_type = GRIPPER_ACTION_TYPES[type_name]
        self.parallel = type_name == 'parallel_gripper_command'
        self.joint = joint
        self._now_s, self._command, self._hold = now_s, command, hold
        self._goal_args = dict(tolerance_m=tolerance_m, stall_timeout_s=stall_timeout_s,
                               allow_stalling=allow_stalling)
        super().__init__(node, name)

    def _position(self, goal):
        return list(goal.command.position) if self.parallel else [goal.command.position]

    def _on_goal(self, goal):
        problem = gripper_action.check_command(self._position(goal))
        return GoalResponse.ACCEPT if problem is None else self._reject(problem)

    def _on_accepted(self, handle):
        target = self._position(handle.request)[0]
        self._start(_Goal(handle, monitor=gripper_action.GripperGoal(
            target, self._now_s(), **self._goal_args)))
        self._command(target)

    def update(self, now_s, positions, velocities):
        """Advance the active goal with the measured finger: positions[7] (m) and
        velocities[7] (m/s) at ``now_s``."""
        goal = self.active
        finger, speed = float(positions[7]), float(velocities[7])
        if now_s >= goal.next_feedback_s:
            goal.next_feedback_s = now_s + FEEDBACK_PERIOD_S
            goal.handle.publish_feedback(self._state(self.action_type.Feedback(), finger,
                                                     speed))
        outcome = goal.monitor.update(now_s, finger, speed)
        if outcome is not None:
            result = self._state(self.action_type.Result(), finger, speed)
            result.reached_goal, result.stalled = outcome.reached_goal, outcome.stalled
            status = 'succeeded' if outcome.succeeded else 'aborted'
            self._end(status, result, status)

    def _state(self, msg, finger, speed):
        """Fill a Feedback or Result with the finger's position (effort is not simulated)."""
        if self.parallel:
            msg.state = JointState(name=[self.joint], position=[finger], velocity=[speed],
                                   effort=[0.0])
        else:
            msg.position, msg.effort = finger, 0.0
        return msg

    def _preempted_result(self):
        return self.action_type.Result()
