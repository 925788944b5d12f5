"""sim_robot as fake hardware: lbr-stack names, and the ros2_control actions served like
joint_trajectory_controller and the gripper action controller (in process, ActionClient)."""
import time

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from builtin_interfaces.msg import Duration
from control_msgs.action import FollowJointTrajectory, GripperCommand, ParallelGripperCommand
from control_msgs.msg import JointTolerance
from rclpy.action import ActionClient
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from awopt_ros.core import jtc, robot, spec
from awopt_ros.nodes.sim_robot import SimRobotNode
from awopt_ros.ros import convert, qos


LBR = [f'lbr_A{i}' for i in range(1, 8)]
ARM = '/lbr/joint_trajectory_controller'
FAKE_HARDWARE = dict(joint_names=LBR, joint_states_topic='/lbr/joint_states',
                     camera_ns='/camera/camera', arm_controller=ARM,
                     gripper_controller='/gripper_controller',
                     gripper_action_type='gripper_command', gripper_stall_timeout_s=0.2)


class Peer:
    """Action clients and subscriptions on the simulator's names (``params``)."""

    def __init__(self, ctx, params):
        self.node = rclpy.create_node('fake_hw_peer', context=ctx)
        self.joints, self.images, self.feedback = [], [], []
        self.node.create_subscription(JointState, params['joint_states_topic'],
                                      self.joints.append, qos.SENSOR)
        self.node.create_subscription(Image, params['camera_ns'] + '/color/image_raw',
                                      self.images.append, qos.SENSOR)
        arm, gripper = params['arm_controller'], params['gripper_controller']
        self.arm = ActionClient(self.node, FollowJointTrajectory,
                                f'{arm}/follow_joint_trajectory')
        self.gripper = ActionClient(
            self.node, ParallelGripperCommand if params['gripper_action_type'] ==
            'parallel_gripper_command' else GripperCommand, f'{gripper}/gripper_cmd')
        self.topic = self.node.create_publisher(JointTrajectory, f'{arm}/joint_trajectory',
                                                qos.COMMAND)
        self.reset = self.node.create_client(Trigger, '/sim/reset')


#: The names of a second simulator, which must not meet the module's fake hardware
#: (/sim/reset aside, which no test calls while both run).
OTHER = dict(joint_states_topic='/t2/joint_states', camera_ns='/t2/camera',
             arm_controller='/t2/arm', gripper_controller='/t2/gripper')


def make(ctx, **params):
    params = {**FAKE_HARDWARE, **params}
    sim = SimRobotNode(context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    peer = Peer(ctx, params)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(sim)
    ex.add_node(peer.node)
    return sim, peer, ex


@pytest.fixture(scope='module')
def fake_hw():
    """One fake-hardware simulator for the module (a scene build costs about a second)."""
    ctx = Context()
    rclpy.init(context=ctx)
    sim, peer, ex = make(ctx)
    assert spin(ex, lambda: peer.arm.server_is_ready() and peer.gripper.server_is_ready()
                and len(peer.joints) > 0)
    yield sim, peer, ex
    sim.close()
    sim.destroy_node()
    peer.node.destroy_node()
    rclpy.try_shutdown(context=ctx)


def spin(ex, cond, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.01)
    return cond()


def arm_goal(q, names=LBR, tfs_s=0.3, stamp_s=0.0, velocities=()):
    """A one-point FollowJointTrajectory goal to ``q`` (values in ``names`` order)."""
    goal = FollowJointTrajectory.Goal()
    goal.trajectory.joint_names = list(names)
    if stamp_s:
        goal.trajectory.header.stamp = convert.s_to_stamp(stamp_s)
    ns = int(round(tfs_s * 1e9))
    goal.trajectory.points = [JointTrajectoryPoint(
        positions=[float(v) for v in q], velocities=[float(v) for v in velocities],
        time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9))]
    return goal


def send(ex, client, goal, feedback=None):
    """Send ``goal``; return its goal handle (``accepted`` False when rejected)."""
    future = client.send_goal_async(goal, feedback_callback=feedback)
    assert spin(ex, future.done)
    return future.result()


def result(ex, handle, timeout_s=10.0):
    """Wait for an accepted goal's end; return ``(status, result)``."""
    future = handle.get_result_async()
    assert spin(ex, future.done, timeout_s), 'no result'
    return future.result().status, future.result().result


def measured(peer):
    return np.asarray(peer.joints[-1].position[:7])


def test_the_gripper_stalls_on_an_object_and_a_new_goal_preempts(ros_context):
    """Fingers closing on something stop short of the target: the goal ends stalled."""
    sim, peer, ex = make(ros_context, gripper_action_type='parallel_gripper_command',
                         gripper_allow_stalling=False, **OTHER)
    assert spin(ex, lambda: peer.gripper.server_is_ready() and peer.joints)
    # The finger stops near 10 mm (a soft joint limit), as on an object 2 x 30 mm wide.
    sim.sim.model.jnt_range[sim.sim.model.joint(spec.GRIPPER_JOINT).id] = [0.0, 0.01]
    goal = ParallelGripperCommand.Goal()
    goal.command.name, goal.command.position = [spec.GRIPPER_JOINT], [spec.GRIPPER_CLOSED_M]
    status, res = result(ex, send(ex, peer.gripper, goal))
    assert status == GoalStatus.STATUS_ABORTED and res.stalled and not res.reached_goal
    assert list(res.state.name) == [spec.GRIPPER_JOINT] and res.state.position[0] < 0.02
    first = send(ex, peer.gripper, goal)
    goal.command.position = [0.0]
    second = send(ex, peer.gripper, goal)
    assert result(ex, first)[0] == GoalStatus.STATUS_ABORTED     # preempted
    status, res = result(ex, second)
    assert status == GoalStatus.STATUS_SUCCEEDED and res.reached_goal
    goal.command.position = [0.01, 0.02]
    assert not send(ex, peer.gripper, goal).accepted
    sim.close()
    sim.destroy_node()


def test_in_lockstep_an_accepted_goal_is_the_frames_command(ros_context):
    sim, peer, ex = make(ros_context, publish_clock=True, lockstep=True, lockstep_timeout_s=5.0,
                         **OTHER)
    assert spin(ex, lambda: peer.arm.server_is_ready() and peer.images)
    assert not spin(ex, lambda: len(peer.images) > 1, timeout_s=0.3)     # held
    first = convert.stamp_to_s(peer.images[0].header.stamp)
    t = time.monotonic()
    handle = send(ex, peer.arm, arm_goal(robot.HOME_Q + 0.05, tfs_s=0.1))
    assert handle.accepted
    assert spin(ex, lambda: len(peer.images) == 2, timeout_s=2.0)
    assert time.monotonic() - t < 2.0 and sim.holds['commanded'] == 1
    # Frames once per lockstep_period_s (the control period), whatever camera_rate_hz says.
    second = convert.stamp_to_s(peer.images[1].header.stamp)
    assert sim.camera_rate_hz == 30.0 and abs(second - first - 0.1) < 0.0025
    # Cancel during a hold (simulated time stands still): the arm holds where it is, one
    # period into a long move.
    far = np.array(robot.HOME_Q)
    far[0] -= 2.0
    handle = send(ex, peer.arm, arm_goal(far, tfs_s=5.0))
    assert spin(ex, lambda: len(peer.images) == 3)   # its period ran, the next hold began
    cancel = handle.cancel_goal_async()
    assert spin(ex, cancel.done) and result(ex, handle)[0] == GoalStatus.STATUS_CANCELED
    np.testing.assert_allclose(sim.sim.arm_target(), sim.sim.joint_positions()[:7], atol=1e-9)
    assert far[0] + 0.3 < sim.sim.arm_target()[0] < robot.HOME_Q[0] - 0.3   # on its way
    # A goal running across a reset goes on (the servo holds the new scene's start pose)
    # and ends by the controller's rules: succeeded once the arm is still.
    pending = send(ex, peer.arm, arm_goal(robot.HOME_Q + 0.2, tfs_s=0.05))
    assert spin(ex, lambda: len(peer.images) == 4)   # its period ran: the arm still moves
    assert sim.action_servers[0].active is not None
    future = peer.reset.call_async(Trigger.Request())
    assert spin(ex, future.done)
    status, res = result(ex, pending)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert spin(ex, lambda: np.allclose(measured(peer), robot.HOME_Q, atol=5e-3))
    # A goal stamped at or before the last reset was issued for the previous episode.
    stale = send(ex, peer.arm, arm_goal(robot.HOME_Q, stamp_s=sim.reset_stamp_s, tfs_s=1.0))
    assert not stale.accepted and sim.action_servers[0].counts['before_reset'] == 1
    sim.close()
    sim.destroy_node()


def test_action_servers_can_be_switched_off(ros_context):
    sim = SimRobotNode(context=ros_context, parameter_overrides=[
        Parameter('action_servers', value='never')])
    assert sim.action_servers == []
    sim.close()
    sim.destroy_node()
    with pytest.raises(ValueError, match='gripper_action_type'):
        SimRobotNode(context=ros_context, parameter_overrides=[
            Parameter('gripper_action_type', value='robotiq')])

def test_fake_hardware_publishes_under_the_driver_names(fake_hw):
    sim, peer, ex = fake_hw
    assert spin(ex, lambda: peer.images and peer.joints)
    assert list(peer.joints[-1].name) == LBR + [spec.GRIPPER_JOINT]
    np.testing.assert_allclose(measured(peer), robot.HOME_Q, atol=5e-3)
    assert peer.images[-1].width == 640
    # The JTC topic takes the driver's names, and refuses the model's.
    target = robot.HOME_Q + 0.03
    peer.topic.publish(JointTrajectory(joint_names=LBR, points=[JointTrajectoryPoint(
        positions=target.tolist(), time_from_start=Duration(nanosec=100_000_000))]))
    assert spin(ex, lambda: np.allclose(measured(peer), target, atol=5e-3))
    rejected = sim.commands['rejected']
    peer.topic.publish(JointTrajectory(joint_names=list(spec.ARM_JOINTS), points=[
        JointTrajectoryPoint(positions=robot.HOME_Q.tolist())]))
    assert spin(ex, lambda: sim.commands['rejected'] == rejected + 1)


def test_a_goal_moves_the_arm_and_succeeds_with_feedback(fake_hw):
    sim, peer, ex = fake_hw
    target = robot.HOME_Q - 0.05
    names = list(reversed(LBR))                      # any joint order
    feedback = []
    handle = send(ex, peer.arm, arm_goal(target[::-1], names, tfs_s=0.3),
                  lambda msg: feedback.append(msg.feedback))
    assert handle.accepted
    status, res = result(ex, handle)
    assert status == GoalStatus.STATUS_SUCCEEDED and res.error_code == jtc.SUCCESSFUL
    assert spin(ex, lambda: np.allclose(measured(peer), target, atol=5e-3))
    assert feedback and list(feedback[-1].joint_names) == LBR
    np.testing.assert_allclose(feedback[-1].desired.positions, target)
    assert feedback[0].index == 0 and {f.index for f in feedback} <= {0, 1}


@pytest.mark.parametrize('what', ['missing joint', 'unknown joint', 'model names',
                                  'no points', 'times not increasing', 'final velocity',
                                  'positions length', 'old stamp', 'nan'])
def test_what_joint_trajectory_controller_rejects_is_rejected(fake_hw, what):
    sim, peer, ex = fake_hw
    q = robot.HOME_Q
    server = sim.action_servers[0]
    goal = {
        'missing joint': lambda: arm_goal(q[:6], LBR[:6]),
        'unknown joint': lambda: arm_goal(q, LBR[:6] + ['lbr_A8']),
        'model names': lambda: arm_goal(q, spec.ARM_JOINTS),
        'no points': lambda: arm_goal(q, tfs_s=0.1),
        'times not increasing': lambda: arm_goal(q, tfs_s=0.2),
        'final velocity': lambda: arm_goal(q, velocities=[0.0] * 6 + [0.1]),
        'positions length': lambda: arm_goal(list(q) + [0.0]),
        'old stamp': lambda: arm_goal(q, stamp_s=sim._now_s() - 5.0, tfs_s=1.0),
        'nan': lambda: arm_goal(list(q[:6]) + [float('nan')]),
    }[what]()
    if what == 'no points':
        goal.trajectory.points = []
    if what == 'times not increasing':
        goal.trajectory.points = [goal.trajectory.points[0]] * 2
    code = {'missing joint': jtc.INVALID_JOINTS, 'unknown joint': jtc.INVALID_JOINTS,
            'model names': jtc.INVALID_JOINTS,
            'old stamp': jtc.OLD_HEADER_TIMESTAMP}.get(what, jtc.INVALID_GOAL)
    before, goals = dict(server.rejections), server.counts['goals']
    assert not send(ex, peer.arm, goal).accepted
    assert server.rejections.get(code, 0) == before.get(code, 0) + 1
    assert server.counts['goals'] == goals


def test_a_new_goal_preempts_the_active_one_and_cancel_holds(fake_hw):
    sim, peer, ex = fake_hw
    first = send(ex, peer.arm, arm_goal(robot.HOME_Q + 0.04, tfs_s=5.0))
    second = send(ex, peer.arm, arm_goal(robot.HOME_Q + 0.02, tfs_s=0.2))
    assert first.accepted and second.accepted
    status, res = result(ex, first)
    assert status == GoalStatus.STATUS_ABORTED and res.error_code == jtc.INVALID_GOAL
    assert res.error_string == jtc.PREEMPTED_MESSAGE
    status, res = result(ex, second)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert spin(ex, lambda: np.allclose(measured(peer), robot.HOME_Q + 0.02, atol=5e-3))
    # Cancel: the goal ends canceled (where the arm holds: the lockstep test).
    handle = send(ex, peer.arm, arm_goal(robot.HOME_Q, tfs_s=5.0))
    cancel = handle.cancel_goal_async()
    assert spin(ex, cancel.done) and len(cancel.result().goals_canceling) == 1
    status, _ = result(ex, handle)
    assert status == GoalStatus.STATUS_CANCELED
    assert sim.action_servers[0].active is None
    assert sim.action_servers[0].counts['canceled'] == 1


def test_an_unreachable_goal_is_aborted_after_the_goal_time_tolerance(fake_hw):
    sim, peer, ex = fake_hw
    q = np.array(robot.HOME_Q)
    q[0] = 3.1                   # beyond A1's limit (170 deg): the servo target is clipped
    goal = arm_goal(q, tfs_s=0.2)
    goal.goal_tolerance = [JointTolerance(name='lbr_A1', position=0.001)]
    goal.goal_time_tolerance = Duration(nanosec=200_000_000)
    handle = send(ex, peer.arm, goal)
    status, res = result(ex, handle)
    assert status == GoalStatus.STATUS_ABORTED
    assert res.error_code == jtc.GOAL_TOLERANCE_VIOLATED
    # Back home for the other tests.
    assert result(ex, send(ex, peer.arm, arm_goal(robot.HOME_Q, tfs_s=0.5)))[0] == \
        GoalStatus.STATUS_SUCCEEDED



def test_gripper_goals_close_and_open_the_gripper(fake_hw):
    sim, peer, ex = fake_hw
    goal = GripperCommand.Goal()
    goal.command.position, goal.command.max_effort = spec.GRIPPER_CLOSED_M, 20.0
    handle = send(ex, peer.gripper, goal)
    assert handle.accepted
    status, res = result(ex, handle)
    assert status == GoalStatus.STATUS_SUCCEEDED and (res.reached_goal or res.stalled)
    assert res.position > 0.03 and peer.joints[-1].position[7] > 0.03
    goal.command.position = 0.0
    status, res = result(ex, send(ex, peer.gripper, goal))
    assert status == GoalStatus.STATUS_SUCCEEDED and res.reached_goal and not res.stalled
    assert abs(res.position) < 0.002
    goal.command.position = float('nan')
    assert not send(ex, peer.gripper, goal).accepted
