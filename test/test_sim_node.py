"""sim_robot node in process: hardware-like topics, reset service, command interfaces."""
import json
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float32, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import MarkerArray

from awopt_ros.core import robot, spec
from awopt_ros.nodes.sim_robot import SimRobotNode
from awopt_ros.ros import convert, qos


class Peer:
    def __init__(self, ctx):
        self.node = rclpy.create_node('sim_peer', context=ctx)
        self.images, self.infos, self.joints, self.success = [], [], [], []
        self.objects = []
        self.node.create_subscription(MarkerArray, '/sim/objects', self.objects.append,
                                      qos.COMMAND)
        self.node.create_subscription(Image, '/camera/color/image_raw', self.images.append,
                                      qos.SENSOR)
        self.node.create_subscription(CameraInfo, '/camera/color/camera_info',
                                      self.infos.append, qos.SENSOR)
        self.node.create_subscription(JointState, '/joint_states', self.joints.append,
                                      qos.SENSOR)
        self.node.create_subscription(Float32, '/success/probability', self.success.append,
                                      qos.COMMAND)
        self.forward = self.node.create_publisher(
            Float64MultiArray, '/forward_position_controller/commands', qos.COMMAND)
        self.trajectory = self.node.create_publisher(
            JointTrajectory, '/arm_controller/joint_trajectory', qos.COMMAND)
        self.reset = self.node.create_client(Trigger, '/sim/reset')


def setup(ctx, **params):
    sim = SimRobotNode(context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    peer = Peer(ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(sim)
    ex.add_node(peer.node)
    return sim, peer, ex


def spin(ex, cond, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.01)
    return cond()


def test_publishes_camera_and_joint_states_like_hardware(ros_context):
    sim, peer, ex = setup(ros_context, seed=5)
    assert spin(ex, lambda: len(peer.images) >= 2 and len(peer.joints) >= 10)
    img = peer.images[-1]
    assert (img.width, img.height, img.encoding) == (640, 480, 'rgb8')
    assert img.header.frame_id == 'camera_color_optical_frame'
    assert convert.image_to_numpy(img).std() > 10
    info = peer.infos[-1]
    assert info.width == 640 and info.k[2] == 320.0 and info.header.stamp == img.header.stamp
    js = peer.joints[-1]
    assert list(js.name) == list(spec.ARM_JOINTS) + [spec.GRIPPER_JOINT]
    np.testing.assert_allclose(js.position[:7], robot.HOME_Q, atol=5e-3)
    assert peer.success and peer.success[-1].data == 0.0
    assert spin(ex, lambda: peer.objects)
    markers = peer.objects[-1].markers
    assert len(markers) == 5 and all(m.header.frame_id == 'base_link' for m in markers)
    np.testing.assert_allclose([[m.pose.position.x, m.pose.position.y] for m in markers],
                               sim.sim.object_poses()[:, :2], atol=1e-3)
    assert all(0.02 <= min(m.scale.x, m.scale.y) <= 0.07 for m in markers)
    sim.destroy_node()


def test_the_camera_streams_at_30_hz_by_default_like_a_d435(ros_context):
    sim, peer, ex = setup(ros_context, seed=5, publish_clock=True)
    sent, publish = [], sim.image_pub.publish
    sim.image_pub.publish = lambda msg: (sent.append(msg.header.stamp), publish(msg))
    assert spin(ex, lambda: len(sent) >= 6 and peer.images)
    periods = np.diff([convert.stamp_to_s(stamp) for stamp in sent])
    # Frames fall on physics steps (2 ms): 32 or 34 ms apart, 33.3 ms on average.
    assert np.all(np.abs(periods - 1 / 30) < 0.0025), periods
    assert sim.frame_period_s == 1 / 30
    sim.destroy_node()


def test_reset_pays_the_new_scenes_first_render_before_the_clock_restarts(ros_context):
    """The first render of a new scene is slow; done inside the reset, before the simulated
    clock is re-anchored to the wall clock, it cannot put the episode's first frames behind
    (the simulator would then catch up and send them in a burst)."""
    sim, peer, ex = setup(ros_context, seed=3)
    assert spin(ex, peer.reset.service_is_ready)
    render, reset, was_reset, done = sim.sim.render, sim.sim.reset, [], []

    def marked_reset(seed):
        was_reset.append(seed)
        return reset(seed)

    def slow_first_render():       # the first render after the reset, wherever it happens
        if was_reset and not done:
            time.sleep(0.3)
            done.append(time.monotonic())
        return render()
    sim.sim.reset, sim.sim.render = marked_reset, slow_first_render
    future = peer.reset.call_async(Trigger.Request())
    assert spin(ex, future.done) and future.result().success
    assert done and sim.wall_start >= done[0]
    sim.destroy_node()


def test_reset_returns_next_seed_and_commands_move_the_arm(ros_context):
    sim, peer, ex = setup(ros_context, seed=100)
    assert spin(ex, peer.reset.service_is_ready)
    future = peer.reset.call_async(Trigger.Request())
    assert spin(ex, future.done)
    assert future.result().success and json.loads(future.result().message) == {'seed': 101}
    target = robot.HOME_Q + 0.1
    peer.forward.publish(Float64MultiArray(data=target.tolist()))
    assert spin(ex, lambda: peer.joints and np.allclose(
        peer.joints[-1].position[:7], target, atol=5e-3))
    # A joint_trajectory_controller-style command, joints in another order.
    names = list(reversed(spec.ARM_JOINTS))
    goal = robot.HOME_Q - 0.05
    msg = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint(
        positions=[float(goal[spec.ARM_JOINTS.index(n)]) for n in names])])
    peer.trajectory.publish(msg)
    assert spin(ex, lambda: np.allclose(peer.joints[-1].position[:7], goal, atol=5e-3))
    # Bad commands are rejected, the arm stays.
    peer.forward.publish(Float64MultiArray(data=[0.0] * 3))
    peer.trajectory.publish(JointTrajectory(joint_names=['nope'], points=[
        JointTrajectoryPoint(positions=[0.0])]))
    assert spin(ex, lambda: sim.commands['rejected'] == 2)
    assert np.allclose(peer.joints[-1].position[:7], goal, atol=5e-3)
    # A trajectory issued before a reset (delivered after it) is dropped; a later one is not.
    before = convert.s_to_stamp(max(sim.reset_stamp_s - 0.05, 1e-3))
    future = peer.reset.call_async(Trigger.Request())
    assert spin(ex, future.done)
    assert sim.reset_stamp_s > 0.0
    moves = sim.commands['arm']
    late = JointTrajectory(joint_names=list(spec.ARM_JOINTS), points=[JointTrajectoryPoint(
        positions=(robot.HOME_Q + 0.1).tolist(), time_from_start=Duration(sec=5))])
    late.header.stamp = before
    peer.trajectory.publish(late)
    assert spin(ex, lambda: sim.commands['before_reset'] == 1)
    assert sim.commands['arm'] == moves
    late.header.stamp = convert.s_to_stamp(sim.reset_stamp_s + 0.01)
    peer.trajectory.publish(late)
    assert spin(ex, lambda: sim.commands['arm'] == moves + 1)
    sim.destroy_node()


def test_a_trajectory_is_judged_on_arrival_not_when_the_busy_simulator_takes_it(ros_context):
    """A stamped trajectory that arrived in time is accepted even when the simulator's
    executor (busy with physics and rendering on a loaded host) takes it after its end time;
    one that was already over when it arrived is refused (OLD_HEADER_TIMESTAMP)."""
    sim, peer, ex = setup(ros_context)
    assert spin(ex, lambda: peer.trajectory.get_subscription_count() > 0 and peer.joints)
    moves, rejected = sim.commands['arm'], sim.commands['rejected']
    msg = JointTrajectory(joint_names=list(spec.ARM_JOINTS), points=[JointTrajectoryPoint(
        positions=(robot.HOME_Q + 0.05).tolist(), time_from_start=Duration(nanosec=100_000_000))])
    msg.header.stamp = sim.get_clock().now().to_msg()
    peer.trajectory.publish(msg)
    time.sleep(0.3)                   # the simulator's executor is busy: 0.3 s > 0.1 s
    assert spin(ex, lambda: sim.commands['arm'] == moves + 1, 5.0), sim.commands
    assert sim.commands['rejected'] == rejected
    msg.header.stamp = convert.s_to_stamp(sim.get_clock().now().nanoseconds * 1e-9 - 1.0)
    peer.trajectory.publish(msg)      # ended 0.9 s before it was sent
    assert spin(ex, lambda: sim.commands['rejected'] == rejected + 1, 5.0)
    sim.destroy_node()


def test_a_simulator_behind_real_time_renders_one_frame_per_tick(ros_context):
    """Behind the wall clock (a loaded host), the physics loop catches up one camera frame
    per timer callback, so the executor serves the arm's commands between frames: catching
    up over several frames in one callback left them waiting (0 of 5 real-time episodes at
    30 Hz succeeded, most commands came late or were overwritten)."""
    sim, peer, ex = setup(ros_context)
    assert spin(ex, lambda: len(peer.images) >= 2)
    sim.wall_start -= 0.2                   # the wall is 0.2 s (6 frames at 30 Hz) ahead
    before = sim.frames_published
    sim._tick()
    assert sim.frames_published == before + 1
    sim.destroy_node()


def test_lockstep_holds_each_frame_until_the_arm_command(ros_context):
    """In lockstep the simulated clock stands still after a frame until an arm command comes
    (then one camera period is simulated with it applied from the start, as in the in-process
    rollout), or until lockstep_timeout_s of wall time has passed."""
    sim, peer, ex = setup(ros_context, seed=7, publish_clock=True, lockstep=True,
                          lockstep_timeout_s=0.6)
    assert spin(ex, lambda: peer.images)
    first = convert.stamp_to_s(peer.images[0].header.stamp)
    assert not spin(ex, lambda: len(peer.images) > 1, timeout_s=0.3)     # held
    held_joints, held_time = len(peer.joints), sim._sim_now()
    assert held_time == first and sim.held_since is not None
    target = np.asarray(peer.joints[-1].position[:7]) + 0.05
    msg = JointTrajectory(joint_names=list(spec.ARM_JOINTS), points=[
        JointTrajectoryPoint(positions=target.tolist())])
    msg.header.stamp = convert.s_to_stamp(first)
    t = time.monotonic()
    peer.trajectory.publish(msg)
    assert spin(ex, lambda: len(peer.images) == 2, timeout_s=0.5)
    assert time.monotonic() - t < 0.5 and sim.holds == {'commanded': 1, 'timed_out': 0,
                                                        'missed': 0}
    second = convert.stamp_to_s(peer.images[1].header.stamp)
    assert abs(second - first - 0.1) < 0.0025        # a camera period (the first frame
                                                     # came one physics step in)
    # The period's joint states (100 Hz) come in one burst: a sensor-QoS reader keeps the
    # newest five, stamped up to the frame's time.
    assert spin(ex, lambda: convert.stamp_to_s(peer.joints[-1].header.stamp) == second,
                timeout_s=0.5)
    assert len(peer.joints) - held_joints >= 5
    moved = np.asarray(peer.joints[-1].position[:7]) - (target - 0.05)
    assert np.all(moved > 0.03)                      # most of the step done in that period
    t = time.monotonic()                             # no command: the hold times out
    assert spin(ex, lambda: len(peer.images) == 3, timeout_s=2.0)
    assert time.monotonic() - t > 0.5 and sim.holds['timed_out'] == 1
    assert abs(convert.stamp_to_s(peer.images[2].header.stamp) - second - 0.1) < 1e-6
    # A command after that timed-out hold: a frame in a stream of commands went without
    # one (a policy slower than lockstep_timeout_s), counted and warned about.
    msg.header.stamp = peer.images[2].header.stamp
    peer.trajectory.publish(msg)
    assert spin(ex, lambda: len(peer.images) == 4, timeout_s=0.5)
    assert sim.holds == {'commanded': 2, 'timed_out': 1, 'missed': 1}
    future = peer.reset.call_async(Trigger.Request())  # a reset starts a new stream
    assert spin(ex, future.done) and sim.hold_outcomes == []
    sim.destroy_node()


def test_lockstep_needs_the_simulated_clock(ros_context):
    import pytest
    with pytest.raises(ValueError, match='publish_clock'):
        SimRobotNode(context=ros_context, parameter_overrides=[Parameter('lockstep', value=True)])
