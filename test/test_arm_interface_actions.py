"""In-process tests of the arm_interface node's ros2_control action interfaces.

Fake action servers in a peer node (private rclpy Context, one executor): a
FollowJointTrajectory server that, like joint_trajectory_controller, ends the active goal when
a newer one arrives (INVALID_GOAL, "preempted by new incoming action"), or succeeds, aborts
with an error code, or rejects every goal; GripperCommand and ParallelGripperCommand servers.
The arm interface runs under lbr-stack driver names.
"""
import json
import time

import numpy as np
import pytest
from rclpy.action import ActionServer, GoalResponse
from rclpy.parameter import Parameter
from rclpy.task import Future

from awopt_ros.core.robot import HOME_Q
from awopt_ros.ros.diagnostics import ERROR, OK

control_msgs_action = pytest.importorskip('control_msgs.action')
FollowJointTrajectory = control_msgs_action.FollowJointTrajectory
GripperCommand = control_msgs_action.GripperCommand
ParallelGripperCommand = control_msgs_action.ParallelGripperCommand

from test_arm_interface_node import Harness, _tcp_delta  # noqa: E402

LBR_JOINTS = [f'lbr_A{i}' for i in range(1, 8)]
ARM_ACTION = '/lbr/joint_trajectory_controller/follow_joint_trajectory'
GRIPPER_ACTION = '/gripper_controller/gripper_cmd'
PREEMPTED = 'Current goal preempted by new incoming action.'


def lbr_params(gripper='gripper_command', **extra):
    params = dict(joint_names=LBR_JOINTS, gripper_joint='lbr_gripper',
                  joint_states_topic='/lbr/joint_states', camera_ns='/camera/camera',
                  command_interface='follow_joint_trajectory',
                  arm_controller='/lbr/joint_trajectory_controller',
                  gripper_interface=gripper, gripper_controller='/gripper_controller',
                  gripper_max_effort_n=40.0)
    params.update(extra)
    return [Parameter(k, value=v) for k, v in params.items()]


class FakeTrajectoryController:
    """A FollowJointTrajectory server; ``mode``: 'preempt' (a goal runs until the next one
    arrives, then ends ABORTED with INVALID_GOAL), 'succeed', 'abort' (ABORTED with
    ``error_code``), 'reject'."""

    def __init__(self, node, mode='preempt', error_code=-5, error_string='goal tolerance'):
        self.mode, self.error_code, self.error_string = mode, error_code, error_string
        self.goals = []          # every goal request received (accepted or not)
        self._waiting = []       # futures of running goals, done when a newer goal arrives
        self.server = ActionServer(node, FollowJointTrajectory, ARM_ACTION,
                                   execute_callback=self._execute,
                                   goal_callback=self._on_goal,
                                   handle_accepted_callback=self._on_accepted)

    def _on_goal(self, goal):
        self.goals.append(goal)
        return GoalResponse.REJECT if self.mode == 'reject' else GoalResponse.ACCEPT

    def _on_accepted(self, handle):
        for fut in self._waiting:
            fut.set_result(True)
        self._waiting = []
        handle.execute()

    async def _execute(self, handle):
        result = FollowJointTrajectory.Result()
        if self.mode == 'succeed':
            handle.succeed()
            return result
        if self.mode == 'abort':
            result.error_code, result.error_string = self.error_code, self.error_string
            handle.abort()
            return result
        fut = Future()
        self._waiting.append(fut)
        await fut
        result.error_code, result.error_string = -1, PREEMPTED
        handle.abort()
        return result

    def close(self):
        for fut in self._waiting:
            fut.set_result(True)
        self.server.destroy()


class FakeGripper:
    """A GripperCommand or ParallelGripperCommand server that records goals and succeeds."""

    def __init__(self, node, action_type):
        self.goals = []
        self.action_type = action_type
        self.server = ActionServer(node, action_type, GRIPPER_ACTION,
                                   execute_callback=self._execute,
                                   goal_callback=self._on_goal)

    def _on_goal(self, goal):
        self.goals.append(goal)
        return GoalResponse.ACCEPT

    def _execute(self, handle):
        handle.succeed()
        return self.action_type.Result()

    def close(self):
        self.server.destroy()


@pytest.fixture
def cell(ros_context):
    """make(overrides, arm_mode, gripper_type) -> (harness, fake arm server, fake gripper);
    arm_mode None starts no arm server."""
    made = []

    def make(overrides=None, arm_mode='preempt', gripper_type=GripperCommand, **arm_kw):
        h = Harness(ros_context, lbr_params() if overrides is None else overrides)
        jtc = FakeTrajectoryController(h.peer, arm_mode, **arm_kw) if arm_mode else None
        grip = FakeGripper(h.peer, gripper_type) if gripper_type else None
        made.append((h, jtc, grip))
        if arm_mode:
            assert h.spin_until(lambda: not h.arm._missing_servers(), 10.0)
        return h, jtc, grip
    yield make
    for h, jtc, grip in made:
        h.spin_for(0.1)          # let goals already accepted run before the servers go
        for server in (jtc, grip):
            if server is not None:
                server.close()
        h.close()


def _diag_after(h, cond, timeout_s=3.0):
    """Spin until the newest diagnostics satisfy ``cond(level, message, values)``."""
    return h.spin_until(lambda: h.got['diag'] and cond(*h.diagnostics()), timeout_s)


def test_goals_carry_driver_names_and_time_from_start(cell):
    h, jtc, grip = cell()
    h.enable(True)
    delta = np.array([0.02, -0.01, 0.015])
    h.send([*delta, 0.0, 0.0, 1.0, 0.0])
    assert h.spin_until(lambda: jtc.goals and grip.goals and h.got['latency'], 3.0)
    traj = jtc.goals[-1].trajectory
    assert list(traj.joint_names) == LBR_JOINTS
    assert traj.header.stamp.sec == 0 and traj.header.stamp.nanosec == 0   # start now
    assert len(traj.points) == 1
    point = traj.points[0]
    assert (point.time_from_start.sec, point.time_from_start.nanosec) == (0, 100_000_000)
    dpos, _ = _tcp_delta(np.array(point.positions))
    np.testing.assert_allclose(dpos, delta, atol=2e-4)
    assert grip.goals[-1].command.position == 0.04
    assert grip.goals[-1].command.max_effort == 40.0
    assert h.got['traj'] == [] and h.got['gripper'] == []     # no topic commands
    # The same gripper target again: no new gripper goal; a new one: a goal.
    h.send([0.0, 0.01, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert h.spin_until(lambda: len(jtc.goals) == 2, 3.0)
    h.spin_for(0.1)
    assert len(grip.goals) == 1
    h.send([0.0, 0.01, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(grip.goals) == 2, 3.0)
    assert grip.goals[-1].command.position == 0.0


def test_preemption_is_not_a_fault(cell):
    """Each step's goal replaces the last: the replaced goals end aborted with INVALID_GOAL
    (the controller's preemption), which is counted as such and never holds the arm."""
    h, jtc, _ = cell(lbr_params(policy_timeout_s=5.0))
    h.enable(True)
    for i in range(4):
        h.send([0.005, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        assert h.spin_until(lambda: len(jtc.goals) == i + 1, 3.0)
    assert h.spin_until(lambda: h.arm.counts()['goals_preempted'] == 3, 3.0)
    counts = h.arm.counts()
    assert counts['controller_faults'] == 0 and counts['goals_failed'] == 0
    assert counts['commands_sent'] == 4 and counts['holds'] == 0
    assert h.arm._gate.active
    assert _diag_after(h, lambda level, message, values: values['goals_preempted'] == '3')
    level, message, _ = h.diagnostics()
    assert level == OK, message


def test_rejected_goal_holds_and_reports(cell):
    h, jtc, _ = cell(lbr_params(policy_timeout_s=5.0), arm_mode='reject')
    h.enable(True)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: h.arm.counts()['controller_faults'] >= 1, 3.0)
    # A hold goal at the measured joints went out at once, and the stop is latched.
    assert h.spin_until(lambda: len(jtc.goals) >= 2, 3.0)
    np.testing.assert_allclose(jtc.goals[1].trajectory.points[0].positions, HOME_Q,
                               atol=1e-12)
    assert h.arm.counts()['goals_rejected'] >= 1 and h.arm.counts()['holds'] == 1
    assert _diag_after(h, lambda level, message, values: level == ERROR)
    level, message, values = h.diagnostics()
    assert f'{ARM_ACTION} rejected the goal' in message
    assert values['stopped'] == 'True' and int(values['goals_rejected']) >= 1
    # Latched: further actions are ignored until the next enable.
    jtc.mode = 'preempt'
    sent = len(jtc.goals)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    h.spin_for(0.3)
    assert len(jtc.goals) == sent and h.arm.counts()['ignored'] >= 1
    h.enable(True)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(jtc.goals) == sent + 1, 3.0)
    assert _diag_after(h, lambda level, message, values: level == OK)


def test_aborted_result_with_goal_tolerance_violated_holds(cell):
    h, jtc, _ = cell(arm_mode='abort', error_code=-5,
                     error_string='lbr_A4 off its goal by 0.2 rad')
    h.enable(True)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: h.arm.counts()['controller_faults'] >= 1, 3.0)
    assert h.spin_until(lambda: len(jtc.goals) >= 2, 3.0)       # the hold goal
    np.testing.assert_allclose(jtc.goals[1].trajectory.points[0].positions, HOME_Q,
                               atol=1e-12)
    assert h.arm.counts()['goals_failed'] >= 1
    assert _diag_after(h, lambda level, message, values: level == ERROR)
    _, message, values = h.diagnostics()
    assert 'ABORTED GOAL_TOLERANCE_VIOLATED: lbr_A4 off its goal by 0.2 rad' in message
    assert 'GOAL_TOLERANCE_VIOLATED' in values['last_controller_error']
    assert not h.arm._gate.active
    # The hold goal aborts too, and so does a disable's: counted, but a later enable is not
    # stopped by faults of goals sent before it.
    assert h.spin_until(lambda: h.arm.counts()['goals_failed'] >= 2, 3.0)
    h.enable(False)
    h.enable(True)
    assert h.spin_until(lambda: h.arm.counts()['goals_failed'] >= 3, 3.0)
    h.spin_for(0.1)
    assert h.arm._gate.active


def test_missing_action_server_at_enable(cell):
    h, _, _ = cell(arm_mode=None)
    reply = json.loads(h.enable(True).message)
    assert ARM_ACTION in reply['stale']
    assert _diag_after(h, lambda level, message, values: level == ERROR)
    assert ARM_ACTION in h.diagnostics()[1]
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    h.spin_for(0.3)
    assert h.arm.counts()['commands_sent'] == 0 and h.arm.counts()['ignored'] >= 1
    # The server comes up: the next action moves the arm.
    jtc = FakeTrajectoryController(h.peer, 'succeed')
    try:
        assert h.spin_until(lambda: not h.arm._missing_servers(), 10.0)
        h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        assert h.spin_until(lambda: h.arm.counts()['commands_sent'] == 1, 3.0)
        assert h.spin_until(lambda: h.arm.counts()['goals_succeeded'] >= 1, 3.0)
        assert jtc.goals and h.arm.counts()['controller_faults'] == 0
    finally:
        jtc.close()


def test_parallel_gripper_command_goal(cell):
    h, jtc, grip = cell(lbr_params('parallel_gripper_command'),
                        gripper_type=ParallelGripperCommand)
    h.enable(True)
    h.send([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert h.spin_until(lambda: grip.goals and jtc.goals, 3.0)
    command = grip.goals[-1].command
    assert list(command.name) == ['lbr_gripper']
    assert list(command.position) == [0.04] and list(command.effort) == [40.0]


def test_stop_holds_with_a_goal_and_latches(cell):
    h, jtc, grip = cell()
    h.enable(True)
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: len(jtc.goals) == 1, 3.0)
    assert h.stop() == {'state': 'stopped'}
    assert h.spin_until(lambda: len(jtc.goals) == 2, 3.0)
    np.testing.assert_allclose(jtc.goals[1].trajectory.points[0].positions, HOME_Q,
                               atol=1e-12)
    ignored = h.arm.counts()['ignored']
    h.send([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert h.spin_until(lambda: h.arm.counts()['ignored'] > ignored, 3.0)   # it came
    h.spin_for(0.1)
    assert len(jtc.goals) == 2
    assert h.arm.counts()['controller_faults'] == 0    # the preempted goal is no fault


# ---------------------------------------------------------------- /arm/home through actions

def test_home_is_one_goal_with_driver_names(cell):
    from test_arm_interface_home import OFFSET, Follower, HomeClient
    h, jtc, grip = cell(lbr_params(home_velocity_scale=0.5))
    h.q = HOME_Q + OFFSET
    assert h.spin_until(lambda: np.allclose(h.arm._q_meas, h.q), 2.0)
    home = HomeClient(h)
    follow = Follower(h, lambda: jtc.goals[-1].trajectory if jtc.goals else None)
    future = home.call()
    assert h.spin_until(lambda: follow() or (jtc.goals and grip.goals), 3.0)
    traj = jtc.goals[0].trajectory
    assert list(traj.joint_names) == LBR_JOINTS
    assert traj.header.stamp.sec == 0 and traj.header.stamp.nanosec == 0
    assert len(traj.points) > 1
    np.testing.assert_array_equal(traj.points[-1].positions, HOME_Q)
    end = traj.points[-1].time_from_start
    assert end.sec + end.nanosec * 1e-9 == pytest.approx(
        1.875 * 0.15 / (0.5 * np.deg2rad(85)), abs=1e-6)
    assert grip.goals[-1].command.position == 0.0                   # opened
    ok, reply = home.wait(future, 5.0, follow)
    assert ok and reply['state'] == 'home', reply
    assert len(jtc.goals) == 1 and h.arm.counts()['controller_faults'] == 0


def test_home_goal_rejected_fails_without_latching(cell):
    from test_arm_interface_home import OFFSET, HomeClient
    h, jtc, _ = cell(arm_mode='reject')
    h.q = HOME_Q + OFFSET
    assert h.spin_until(lambda: np.allclose(h.arm._q_meas, h.q), 2.0)
    home = HomeClient(h)
    ok, reply = home.wait(home.call(), 3.0)
    assert not ok and reply['state'] == 'failed'
    assert reply['reason'] == f'controller fault: {ARM_ACTION} rejected the goal'
    assert h.spin_until(lambda: len(jtc.goals) == 2, 2.0)            # the hold goal
    np.testing.assert_allclose(jtc.goals[1].trajectory.points[0].positions, h.q, atol=1e-12)
    assert not h.arm._gate.stopped                  # the next /arm/home may try again


def test_home_refused_without_the_action_server(cell):
    from test_arm_interface_home import HomeClient
    h, _, _ = cell(arm_mode=None)
    home = HomeClient(h)
    ok, reply = home.wait(home.call(), 3.0)
    assert not ok and reply['reason'] == f"action server not available: ['{ARM_ACTION}']"



def test_home_through_the_fake_hardware_simulator(ros_context):
    """/arm/home against sim_robot's FollowJointTrajectory server (the controller rules of
    core.jtc): the many-point goal is accepted and the simulated arm arrives home."""
    from types import SimpleNamespace

    from test_arm_interface_home import HomeClient
    from test_sim_actions import FAKE_HARDWARE, arm_goal, make, send

    from awopt_ros.nodes.arm_interface import ArmInterfaceNode
    sim, peer, ex = make(ros_context)
    names = {k: FAKE_HARDWARE[k] for k in ('joint_names', 'joint_states_topic', 'camera_ns')}
    # One executor with the simulator's scene and camera: joint states come late at times.
    arm = ArmInterfaceNode(context=ros_context, parameter_overrides=lbr_params(
        gripper_joint=sim.get_parameter('gripper_joint').value, joint_state_timeout_s=1.0,
        **names))
    ex.add_node(arm)

    def spin_until(cond, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.01)
            if cond():
                return True
        return False
    try:
        assert spin_until(lambda: arm._q_meas is not None and not arm._missing_servers(), 20.0)
        away = HOME_Q + np.array([0.3, -0.2, 0.1, 0.2, 0.0, 0.1, 0.4])
        assert send(ex, peer.arm, arm_goal(away, tfs_s=0.5)).accepted
        assert spin_until(lambda: np.abs(arm._q_meas - away).max() < 0.01, 10.0)
        home = HomeClient(SimpleNamespace(peer=peer.node, spin_until=spin_until))
        ok, reply = home.wait(home.call(), 20.0)
        assert ok and reply['state'] == 'home', reply
        assert np.abs(arm._q_meas - HOME_Q).max() <= 0.02
        counts = arm.counts()
        assert counts['goals_accepted'] == 1 and counts['goals_rejected'] == 0
        assert counts['gripper_goals_sent'] == 1 and counts['controller_faults'] == 0
    finally:
        ex.remove_node(arm)
        arm.destroy_node()
        sim.close()
        sim.destroy_node()
        peer.node.destroy_node()
