"""sim_robot: the MuJoCo stand-in for a Kuka iiwa 14 cell, speaking the hardware's interfaces.

Publishes what real drivers publish, under the driver's names (``joint_names``,
``gripper_joint``, ``joint_states_topic``, ``camera_ns``: :mod:`awopt_ros.ros.robot_params`):
realsense-ros's ``<camera_ns>/color/image_raw`` and ``camera_info`` (``camera_rate_hz``, 30 Hz
like a D435), joint_state_broadcaster's joint states. It takes what ros2_control controllers
take: ``<arm_controller>/joint_trajectory`` (refused where a joint_trajectory_controller
refuses it, :mod:`awopt_ros.core.jtc`), ``<forward_controller>/commands`` (7 positions in
``joint_names`` order) and ``<gripper_controller>/commands`` ([finger m]); and serves their
actions (``action_servers``, :mod:`awopt_ros.sim.actions`):
``<arm_controller>/follow_joint_trajectory`` (control_msgs FollowJointTrajectory) and
``<gripper_controller>/gripper_cmd`` (GripperCommand or ParallelGripperCommand,
``gripper_action_type``). An accepted trajectory, on the topic or as a goal, sends the arm's
servo to its last point's positions at once (intermediate points are not interpolated).
Simulation-only extras: ``/sim/reset`` (active goals go on, :mod:`awopt_ros.sim.actions`),
``/sim/objects`` (markers with pose and size: privileged, for the scripted policy
and rviz) and ``/success/probability``
(ground truth: an object lifted). A joint trajectory stamped before the last reset is dropped
(counted as ``before_reset``): it was issued for the previous episode. With ``publish_clock``
it publishes ``/clock`` and can run faster than real time (``real_time_factor``). With
``lockstep`` (needs ``publish_clock``) the simulation holds after each camera frame, simulated
time standing still, until an arm command (a trajectory, a forward command or an accepted
goal) arrives (or ``lockstep_timeout_s`` of wall time passes): the policy's latency and the
machine's load then cost no simulated time, and the arm moves as in the in-process rollout
(:mod:`awopt_ros.sim.rollout`) whatever else the CPUs run. The policy acts on every frame, so
in lockstep the frames come once per ``lockstep_period_s`` (the control period, 0.1 s), not at
``camera_rate_hz``: one frame, one action, one control period, as in the rollout.
The physics and rendering are :class:`awopt_ros.sim.scene.GraspSim`.

``scene: insertion`` simulates the Sawyer peg insertion cell instead
(:class:`awopt_ros.sim.insertion.InsertionSim`: ``right_j0..6``, a peg held rigidly, a socket
from boxes; no gripper: the joint states name the 7 arm joints only, there is no gripper
action server and gripper commands are refused). It adds what the insertion stack reads: the
wrist force/torque sensor as ``geometry_msgs/WrenchStamped`` on ``wrench_topic``
(``/force_torque_sensor_broadcaster/wrench``, frame ``tcp``, force N and torque N m in the tool
frame, zeroed at reset, sensor-data QoS) with every joint state (in lockstep: with every
camera frame, i.e. once per control period, stamped as the frame), and the observed (noisy) goal
as ``geometry_msgs/PoseStamped`` on ``goal_topic`` (``/insertion/goal``, ``base_link``, the
peg-tip position when fully inserted plus the episode's noise, reliable + transient local,
depth 1), published at every reset. ``/success/probability`` is 1 while the peg is inserted
(``InsertionSim.success``), with every camera frame as in the grasp scene.
"""
import json
import math
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float32, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker, MarkerArray

from awopt_ros.core import jtc
from awopt_ros.core.paths import resolve
from awopt_ros.core.robot_names import check_topic_ns
from awopt_ros.ros import convert, qos
from awopt_ros.ros.diagnostics import diagnostic_array
from awopt_ros.ros.params import declare
from awopt_ros.ros.robot_params import declare_camera_ns, declare_joint_names
from awopt_ros.ros.run import spin_node
from awopt_ros.sim.messages import GOAL_TOPIC, WRENCH_TOPIC, goal_qos, trajectory_points

CAMERA_FRAME = 'camera_color_optical_frame'
ACTION_SERVERS = ('auto', 'always', 'never')
GRIPPER_ACTION_TYPES = ('gripper_command', 'parallel_gripper_command', 'none')
SCENES = ('grasp', 'insertion')
INSERTION_VARIANTS = ('default', 'hard')
TICK_S = 0.005            # wall period of the physics loop
MAX_LAG_S = 0.25          # sim time more than this behind the wall is dropped, not caught up
#: In lockstep, the hold ends this long (wall s) after the frame's first arm command, so that
#: the gripper command the arm interface sends just before it lands in the same step even
#: when it comes a little later.
LOCKSTEP_SETTLE_S = 0.003


class SimRobotNode(Node):
    """Steps the simulation on a wall-clock loop and publishes sensors at their rates."""

    def __init__(self, **kwargs):
        super().__init__('sim_robot', **kwargs)
        self.scene = declare(self, 'scene', 'grasp',
                             'grasp (iiwa 14 bin-grasping cell, GraspSim) or insertion (Sawyer '
                             'peg insertion, InsertionSim: wrench and goal topics, no gripper)',
                             read_only=True)
        urdf = declare(self, 'urdf_path', 'urdf/iiwa14_gripper.urdf',
                       'Robot URDF (relative to the package share dir; grasp scene: the '
                       'insertion scene builds its own Sawyer).', read_only=True)
        self.base_seed = declare(self, 'seed', 1000, 'Scene seed of the first reset; reset k '
                                 'uses seed + k.', low=0, high=2**31 - 1)
        num_objects = declare(self, 'num_objects', 5, 'Objects in the bin.', low=1, high=20,
                              read_only=True)
        self.camera_rate_hz = declare(self, 'camera_rate_hz', 30.0,
                                      'Camera frame rate (Hz, simulated time; a D435 streams '
                                      'at 30). Unused in lockstep (lockstep_period_s).',
                                      low=1.0, high=60.0, read_only=True)
        self.joint_rate_hz = declare(self, 'joint_state_rate_hz', 100.0,
                                     '/joint_states rate (Hz, simulated time).', low=1.0,
                                     high=1000.0, read_only=True)
        physics_dt_s = declare(self, 'physics_dt_s', 0.002, 'MuJoCo time step (s).',
                               low=0.0001, high=0.01, read_only=True)
        self.rtf = declare(self, 'real_time_factor', 1.0, 'Simulated seconds per wall second; '
                           '0 = as fast as possible (needs publish_clock).', low=0.0,
                           high=100.0, read_only=True)
        self.publish_clock = declare(self, 'publish_clock', False,
                                     'Publish /clock and stamp with simulated time.',
                                     read_only=True)
        self.lockstep = declare(
            self, 'lockstep', False,
            'Hold the simulation after each camera frame (simulated time and /clock stand '
            'still) until an arm command arrives or lockstep_timeout_s passes: policy latency '
            'and CPU load then cost no simulated time, as in the in-process rollout. Needs '
            'publish_clock (and use_sim_time on every node); real_time_factor is then unused.',
            read_only=True)
        self.lockstep_timeout_s = declare(
            self, 'lockstep_timeout_s', 0.3,
            'Longest hold on one frame in lockstep (s, wall): with no arm command (between '
            'episodes, arm disabled) the simulation goes on one camera period per hold.',
            low=0.01, high=60.0, read_only=True)
        self.lockstep_period_s = declare(
            self, 'lockstep_period_s', 0.1,
            'In lockstep, simulated time between camera frames (s): the control period '
            '(arm_interface control_period_s), as the policy acts on every frame and each hold '
            'waits for one action.', low=0.005, high=10.0, read_only=True)
        success_height_m = declare(self, 'success_height_m', 0.12, 'An object this far above '
                                   'the bin floor counts as lifted (m).', low=0.01, high=1.0,
                                   read_only=True)
        width = declare(self, 'image_width', 640, 'Camera width (px).', low=16, high=4096,
                        read_only=True)
        height = declare(self, 'image_height', 480, 'Camera height (px).', low=16, high=4096,
                         read_only=True)
        self.names, joint_states_topic = declare_joint_names(self)
        image_topic, info_topic = declare_camera_ns(self)
        arm_controller = check_topic_ns(declare(
            self, 'arm_controller', '/arm_controller',
            'Namespace of the arm controller: <arm_controller>/joint_trajectory (topic) and '
            '<arm_controller>/follow_joint_trajectory (action), as a '
            'joint_trajectory_controller (lbr-stack: /lbr/joint_trajectory_controller)',
            read_only=True), 'arm_controller')
        forward_controller = check_topic_ns(declare(
            self, 'forward_controller', '/forward_position_controller',
            'Namespace of the forward position controller: <forward_controller>/commands',
            read_only=True), 'forward_controller')
        gripper_controller = check_topic_ns(declare(
            self, 'gripper_controller', '/gripper_controller',
            'Namespace of the gripper controller: <gripper_controller>/commands (topic) and '
            '<gripper_controller>/gripper_cmd (action)', read_only=True), 'gripper_controller')
        action_servers = declare(
            self, 'action_servers', 'auto',
            "Serve the controllers' actions: auto (when control_msgs is installed), always "
            '(fail without control_msgs) or never', read_only=True)
        gripper_action_type = declare(
            self, 'gripper_action_type', 'gripper_command',
            'Type of <gripper_controller>/gripper_cmd: gripper_command '
            '(control_msgs/GripperCommand), parallel_gripper_command (ParallelGripperCommand) '
            'or none', read_only=True)
        goal_tolerances = jtc.GoalTolerances.uniform(
            len(self.names.arm),
            declare(self, 'goal_tolerance_rad', 0.0,
                    'follow_joint_trajectory: |target - joint| allowed at the end (rad); 0 = '
                    'not checked (joint_trajectory_controller constraints.<joint>.goal)',
                    low=0.0, high=1.0, read_only=True),
            declare(self, 'stopped_velocity_tolerance_rad_s', 0.01,
                    'follow_joint_trajectory: joint speed allowed at the end (rad/s); 0 = not '
                    'checked (constraints.stopped_velocity_tolerance)',
                    low=0.0, high=10.0, read_only=True),
            declare(self, 'goal_time_tolerance_s', 0.0,
                    'follow_joint_trajectory: time after the end to come within the goal '
                    'tolerances before the goal is aborted (s); 0 = no limit '
                    '(constraints.goal_time)', low=0.0, high=60.0, read_only=True))
        gripper_goal = dict(
            tolerance_m=declare(self, 'gripper_goal_tolerance_m', 0.002,
                                'gripper_cmd: |target - finger| at which the goal is reached '
                                '(m)', low=1e-5, high=0.04, read_only=True),
            stall_timeout_s=declare(self, 'gripper_stall_timeout_s', 1.0,
                                    'gripper_cmd: how long the finger may stand still short '
                                    'of the target (closed on an object) before the goal ends '
                                    'stalled (s)', low=0.0, high=60.0, read_only=True),
            allow_stalling=declare(self, 'gripper_allow_stalling', True,
                                   'gripper_cmd: a stalled goal (fingers on an object) ends '
                                   'succeeded (true) or aborted (false)', read_only=True))
        insertion = dict(
            variant=declare(self, 'insertion_variant', 'default',
                            "insertion scene: 'default' (0.4 mm clearance, 0.5 mm chamfer) or "
                            "'hard' (0.1 mm, no chamfer)", read_only=True),
            goal_noise_m=declare(self, 'goal_noise_m', 0.001,
                                 'insertion scene: the observed goal is off the true one by '
                                 'up to this much in x and y (m, uniform, fixed per episode)',
                                 low=0.0, high=0.05, read_only=True),
            stiffness_n_m=declare(self, 'stiffness_n_m', 2000.0,
                                  'insertion scene: Cartesian stiffness of the compliance '
                                  'below the joint targets (N/m)', low=10.0, high=1e6,
                                  read_only=True))
        wrench_topic = check_topic_ns(declare(
            self, 'wrench_topic', WRENCH_TOPIC,
            'insertion scene: geometry_msgs/WrenchStamped of the wrist force/torque sensor '
            '(force_torque_sensor_broadcaster)', read_only=True), 'wrench_topic')
        self.wrench_frame = declare(self, 'wrench_frame', 'tcp',
                                    'insertion scene: frame_id of the wrench (the tool frame)',
                                    read_only=True)
        goal_topic = check_topic_ns(declare(
            self, 'goal_topic', GOAL_TOPIC,
            'insertion scene: geometry_msgs/PoseStamped of the observed (noisy) goal, '
            'transient local, published at every reset', read_only=True), 'goal_topic')
        if self.scene not in SCENES:
            raise ValueError(f'scene must be one of {SCENES}, got {self.scene!r}')
        if insertion['variant'] not in INSERTION_VARIANTS:
            raise ValueError(f'insertion_variant must be one of {INSERTION_VARIANTS}, got '
                             f'{insertion["variant"]!r}')
        self.insertion = self.scene == 'insertion'
        if self.insertion:
            gripper_action_type = 'none'     # the peg is held rigidly
        if action_servers not in ACTION_SERVERS:
            raise ValueError(f'action_servers must be one of {ACTION_SERVERS}, got '
                             f'{action_servers!r}')
        if gripper_action_type not in GRIPPER_ACTION_TYPES:
            raise ValueError(f'gripper_action_type must be one of {GRIPPER_ACTION_TYPES}, got '
                             f'{gripper_action_type!r}')
        if self.lockstep and not self.publish_clock:
            raise ValueError('lockstep needs publish_clock: true (and use_sim_time: true on '
                             'every node): a held simulation must hold their clocks too')
        if self.rtf != 1.0 and not self.publish_clock:
            self.get_logger().warning('real_time_factor != 1 without publish_clock: stamps '
                                      'are wall time while physics is not; set publish_clock')

        #: simulated time between camera frames (s)
        self.frame_period_s = (self.lockstep_period_s if self.lockstep
                               else 1.0 / self.camera_rate_hz)
        self.physics_dt_s = physics_dt_s
        if self.insertion:
            self.sim = _insertion_sim(physics_dt_s, (width, height), **insertion)
            self.joint_state_names = self.names.arm
        else:
            from awopt_ros.sim.scene import GraspSim
            self.sim = GraspSim(resolve(urdf), num_objects=num_objects,
                                physics_dt_s=physics_dt_s, image_size=(width, height),
                                success_height_m=success_height_m)
            self.joint_state_names = self.names.all
        self.resets = 0
        self.frames_published = 0
        self.time_offset_s = 0.0     # simulated time before the current scene (monotonic clock)
        self.next_frame_s = 0.0
        self.next_joint_s = 0.0
        self.commands = {'arm': 0, 'gripper': 0, 'rejected': 0, 'before_reset': 0}
        self.reset_stamp_s = 0.0   # stamp time (s) of the last reset, see _on_trajectory
        self.held_since = None     # lockstep: wall time (monotonic s) the current hold began
        self.command_wall = None   # lockstep: wall time of the first arm command in the hold
        self.holds = {'commanded': 0, 'timed_out': 0, 'missed': 0}   # lockstep holds
        self.hold_outcomes = []    # lockstep: how the holds since the last reset ended
        self.camera_info = self._camera_info(width, height)
        self.sim.reset(self.base_seed)
        self.current_seed = self.base_seed

        self.image_pub = self.create_publisher(Image, image_topic, qos.SENSOR)
        self.info_pub = self.create_publisher(CameraInfo, info_topic, qos.SENSOR)
        self.joint_pub = self.create_publisher(JointState, joint_states_topic, qos.SENSOR)
        self.success_pub = self.create_publisher(Float32, '/success/probability', qos.COMMAND)
        self.objects_pub = self.create_publisher(MarkerArray, '/sim/objects', qos.COMMAND)
        self.wrench_pub = self.goal_pub = None
        if self.insertion:
            self.wrench_pub = self.create_publisher(WrenchStamped, wrench_topic, qos.SENSOR)
            self.goal_pub = self.create_publisher(PoseStamped, goal_topic, goal_qos())
            self._publish_goal()
        self.clock_pub = (self.create_publisher(ClockMsg, '/clock', 10)
                          if self.publish_clock else None)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(JointTrajectory, f'{arm_controller}/joint_trajectory',
                                 self._on_trajectory, qos.COMMAND)
        self.create_subscription(Float64MultiArray, f'{forward_controller}/commands',
                                 self._on_forward, qos.COMMAND)
        self.create_subscription(Float64MultiArray, f'{gripper_controller}/commands',
                                 self._on_gripper, qos.COMMAND)
        self.create_service(Trigger, '/sim/reset', self._on_reset)
        self.action_servers = self._action_servers(
            action_servers, arm_controller, gripper_controller, gripper_action_type,
            goal_tolerances, gripper_goal)
        # The loop runs on the steady clock: with use_sim_time the node clock is our own /clock.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.wall_start = time.monotonic()
        self.sim_start = self._sim_now()
        self.create_timer(TICK_S, self._tick, clock=steady)
        self.create_timer(1.0, self._publish_diagnostics, clock=steady)
        self._rtf_window = (time.monotonic(), self._sim_now())
        self.measured_rtf = 0.0
        what = (f'peg insertion ({insertion["variant"]}, goal noise '
                f'{insertion["goal_noise_m"]} m)' if self.insertion
                else f'{num_objects} objects')
        self.get_logger().info(f'simulating {what}, camera {width}x{height} at '
                               f'{1.0 / self.frame_period_s:.0f} Hz, real-time factor {self.rtf}'
                               f', action servers: {[s.name for s in self.action_servers]}')

    def _action_servers(self, mode, arm_controller, gripper_controller, gripper_type,
                        goal_tolerances, gripper_goal):
        """Return the action servers (a list of :mod:`awopt_ros.sim.actions` servers).

        Raises:
            ImportError: ``mode`` 'always' without control_msgs.
        """
        if mode == 'never':
            return []
        try:
            from awopt_ros.sim import actions
        except ImportError as exc:
            if mode == 'always':
                raise ImportError(f'action_servers: always, but control_msgs cannot be '
                                  f'imported ({exc}); run make setup') from exc
            self.get_logger().info(f'no action servers: control_msgs is not installed ({exc})')
            return []
        servers = [actions.ArmTrajectoryServer(
            self, f'{arm_controller}/follow_joint_trajectory', self.names.arm, goal_tolerances,
            self._now_s, lambda q: self._set_arm(q, 'follow_joint_trajectory goal'),
            self._hold_arm, self._before_reset)]
        if gripper_type != 'none':
            servers.append(actions.GripperServer(
                self, f'{gripper_controller}/gripper_cmd', gripper_type, self.names.gripper,
                self._now_s, self._set_gripper, self._hold_gripper, **gripper_goal))
        return servers

    # -- time ------------------------------------------------------------------------------
    def _sim_now(self):
        return self.time_offset_s + self.sim.time_s

    def _stamp(self):
        if self.publish_clock:
            return convert.s_to_stamp(self._sim_now())
        return self.get_clock().now().to_msg()

    def _now_s(self):
        """The time (s) on the clock the stamps use (simulated with publish_clock)."""
        if self.publish_clock:
            return self._sim_now()
        return self.get_clock().now().nanoseconds * 1e-9

    def _arrival_s(self, info):
        """When a message came (s, the stamps' clock): on the wall clock its reception by the
        middleware (rclpy ``MessageInfo``), not the moment this node's executor, busy with
        the physics loop, gets to it: a controller judges a trajectory's age on arrival, and
        the simulator's own delay must not make it refuse one (OLD_HEADER_TIMESTAMP)."""
        received_ns = (info or {}).get('received_timestamp') or 0
        if self.publish_clock or received_ns <= 0:
            return self._now_s()
        return min(received_ns * 1e-9, self._now_s())

    # -- physics loop ----------------------------------------------------------------------
    def _tick(self):
        if self.lockstep:
            self._tick_lockstep()
            return
        dt = self.physics_dt_s
        if self.rtf > 0.0:
            target = self.sim_start + self.rtf * (time.monotonic() - self.wall_start)
            if target - self._sim_now() > MAX_LAG_S:     # fell behind: do not try to catch up
                self.sim_start += target - self._sim_now() - MAX_LAG_S
                target = self._sim_now() + MAX_LAG_S
        else:
            target = self._sim_now() + self.frame_period_s
        while self._sim_now() + 0.5 * dt < target:
            if self._step_to_event(target):
                # A camera frame went out (its render is the costly part): back to the
                # executor, which serves the commands that came meanwhile before the next
                # frame. Catching up over several frames in one callback starved them: at
                # 30 Hz on a loaded host the arm's commands came late or were overwritten.
                break

    def _tick_lockstep(self):
        now = time.monotonic()
        if self.held_since is not None:
            if self.command_wall is not None:
                if now - self.command_wall < LOCKSTEP_SETTLE_S:
                    return
                outcome = 'commanded'
            elif now - self.held_since < self.lockstep_timeout_s:
                return
            else:
                outcome = 'timed_out'
            self._count_hold(outcome)
            self.held_since = self.command_wall = None
        while not self._step_to_event(self.next_frame_s):
            pass
        self.held_since = time.monotonic()

    def _count_hold(self, outcome):
        self.holds[outcome] += 1
        self.hold_outcomes = (self.hold_outcomes + [outcome])[-3:]
        if self.hold_outcomes == ['commanded', 'timed_out', 'commanded']:
            # A frame in the middle of a stream of commands went without one: the policy
            # answered later than lockstep_timeout_s, and that step ran without its action.
            self.holds['missed'] += 1
            self.get_logger().warning(
                f'lockstep: no arm command within lockstep_timeout_s '
                f'({self.lockstep_timeout_s} s) of a frame while commands were coming; the '
                'step ran without it (is the policy slower? raise lockstep_timeout_s)',
                throttle_duration_sec=5.0)

    def _step_to_event(self, target):
        """Step up to the next sensor event (or ``target``, s), publish what is due; return
        whether a camera frame went out."""
        dt = self.physics_dt_s
        next_event = min(self.next_frame_s, self.next_joint_s, target)
        n = max(1, int(round((next_event - self._sim_now()) / dt)))
        self.sim.step(n)
        now = self._sim_now()
        if self.clock_pub is not None:
            self.clock_pub.publish(ClockMsg(clock=convert.s_to_stamp(now)))
        if now + 0.5 * dt >= self.next_joint_s:
            self._publish_joints()
            self.next_joint_s += 1.0 / self.joint_rate_hz
        if now + 0.5 * dt >= self.next_frame_s:
            self._publish_frame()
            self.next_frame_s += self.frame_period_s
            return True
        return False

    def _publish_joints(self):
        msg = JointState(name=self.joint_state_names)
        msg.header.stamp = self._stamp()
        msg.position = position = self.sim.joint_positions().tolist()
        msg.velocity = velocity = self.sim.joint_velocities().tolist()
        self.joint_pub.publish(msg)
        if self.wrench_pub is not None and not self.lockstep:
            self._publish_wrench(msg.header.stamp)   # the F/T broadcaster at this rate
        now_s = None
        for server in self.action_servers:
            if server.active is not None:    # goals progress at the joint state rate
                now_s = self._now_s() if now_s is None else now_s
                server.update(now_s, position, velocity)

    def _publish_wrench(self, stamp):
        self.wrench_pub.publish(convert.wrench_to_msg(self.sim.wrench(), stamp,
                                                      self.wrench_frame))

    def _publish_frame(self):
        rgb = self.sim.render()
        stamp = self._stamp()
        if self.insertion:
            # The success of the step that just ended goes out before the wrench the next
            # step's action is computed from: the episode ends on it without counting that
            # action, as the in-process environment terminates.
            self.success_pub.publish(Float32(data=1.0 if self.sim.success() else 0.0))
            if self.lockstep:
                # One wrench per held step, stamped as the frame: the controller acts on the
                # state at the step's start, as in the in-process environment.
                self._publish_wrench(stamp)
        self.camera_info.header.stamp = stamp
        self.image_pub.publish(convert.numpy_to_image(rgb, stamp, CAMERA_FRAME))
        self.info_pub.publish(self.camera_info)
        self.frames_published += 1
        if self.insertion:
            return
        self.success_pub.publish(Float32(data=1.0 if self.sim.object_lifted() else 0.0))
        self.objects_pub.publish(self._object_markers(stamp))

    def _publish_goal(self):
        """Publish the episode's observed (noisy) goal (insertion scene): the peg-tip position
        when fully inserted, plus the noise; orientation: the socket's, axis-aligned with
        base_link."""
        self.goal_pub.publish(convert.position_to_pose_msg(self.sim.goal_observed(),
                                                           self._stamp()))

    def _object_markers(self, stamp):
        """Return the objects as a MarkerArray: pose in base_link, scale = full size (m)."""
        shapes = {'box': Marker.CUBE, 'sphere': Marker.SPHERE}
        markers = MarkerArray()
        extents = self.sim.object_extents()
        for i, ((x, y, z, qw, qx, qy, qz), obj) in enumerate(
                zip(self.sim.object_poses(), self.sim.objects)):
            m = Marker(ns='sim_objects', id=i, action=Marker.ADD,
                       type=shapes.get(obj['shape'], Marker.CYLINDER))
            m.header.stamp = stamp
            m.header.frame_id = 'base_link'
            m.pose.position.x, m.pose.position.y, m.pose.position.z = float(x), float(y), float(z)
            m.pose.orientation.w, m.pose.orientation.x = float(qw), float(qx)
            m.pose.orientation.y, m.pose.orientation.z = float(qy), float(qz)
            m.scale.x, m.scale.y, m.scale.z = (2.0 * float(e) for e in extents[i])
            m.color.r, m.color.g, m.color.b, m.color.a = 0.8, 0.5, 0.2, 1.0
            markers.markers.append(m)
        return markers

    def _camera_info(self, width, height):
        k = self.sim.camera_matrix()
        info = CameraInfo(width=width, height=height, distortion_model='plumb_bob')
        info.header.frame_id = CAMERA_FRAME
        info.d = [0.0] * 5
        info.k = k.reshape(-1).tolist()
        info.r = np.eye(3).reshape(-1).tolist()
        info.p = np.hstack([k, np.zeros((3, 1))]).reshape(-1).tolist()
        return info

    # -- commands --------------------------------------------------------------------------
    def _set_arm(self, q, source):
        """Set the arm's servo target (7 rad, A1..A7); return whether the simulator took it."""
        try:
            self.sim.set_arm_target(q)
            self.commands['arm'] += 1
            if self.held_since is not None and self.command_wall is None:
                self.command_wall = time.monotonic()     # lockstep: the hold may end
            return True
        except ValueError as exc:
            self.commands['rejected'] += 1
            self.get_logger().warning(f'{source} rejected: {exc}', throttle_duration_sec=2.0)
            return False

    def _hold_arm(self):
        self.sim.set_arm_target(self.sim.joint_positions()[:7])

    def _set_gripper(self, finger_m):
        self.sim.set_gripper_target(finger_m)
        self.commands['gripper'] += 1

    def _hold_gripper(self):
        self.sim.set_gripper_target(self.sim.joint_positions()[7])

    def _before_reset(self, stamp_s):
        """Whether a command stamped ``stamp_s`` (s, > 0) was issued before the last reset.

        E.g. the arm interface's hold as the previous episode ended, delivered after the
        reset: it would drag the new episode's arm back to where the last one ended. One
        stamped at the reset itself is from before it too: under a held clock (lockstep)
        both carry the same time.
        """
        return convert.not_after(convert.s_to_stamp(stamp_s), self.reset_stamp_s)

    def _on_trajectory(self, msg, info):
        stamp_s = convert.stamp_to_s(msg.header.stamp)
        if stamp_s > 0.0 and self._before_reset(stamp_s):
            self.commands['before_reset'] += 1
            return
        names, points, _ = trajectory_points(msg)
        rejection = jtc.check_trajectory(self.names.arm, names, points, stamp_s,
                                         self._arrival_s(info))
        if rejection is not None:
            self.commands['rejected'] += 1
            self.get_logger().warning(f'joint trajectory rejected: {rejection.message}',
                                      throttle_duration_sec=2.0)
            return
        self._set_arm(jtc.in_controller_order(self.names.arm, names, points[-1].positions),
                      'joint trajectory')

    def _on_forward(self, msg):
        if len(msg.data) != len(self.names.arm):
            self.commands['rejected'] += 1
            self.get_logger().warning(f'forward command needs 7 positions, got {len(msg.data)}',
                                      throttle_duration_sec=2.0)
            return
        self._set_arm(list(msg.data), 'forward command')

    def _on_gripper(self, msg):
        if self.insertion:
            self.commands['rejected'] += 1
            self.get_logger().warning('gripper command refused: the insertion scene has no '
                                      'gripper (the peg is held rigidly)',
                                      throttle_duration_sec=5.0)
            return
        if len(msg.data) != 1 or not math.isfinite(msg.data[0]):
            self.commands['rejected'] += 1
            self.get_logger().warning(f'gripper command needs 1 finite value, got {msg.data}')
            return
        self._set_gripper(msg.data[0])

    def _on_reset(self, request, response):
        self.time_offset_s = self._sim_now()
        self.resets += 1
        self.current_seed = self.base_seed + self.resets
        self.sim.reset(self.current_seed)
        # The new scene's first render costs about 80 ms (15 ms after); paid here, before the
        # clock is re-anchored, it no longer puts the simulation behind the wall clock at the
        # episode's start, where catching up sent the first frames about 50 ms apart.
        self.sim.render()
        self.time_offset_s -= self.sim.time_s
        self.wall_start, self.sim_start = time.monotonic(), self._sim_now()
        self.next_frame_s = self.next_joint_s = self._sim_now()
        self.held_since = self.command_wall = None
        self.hold_outcomes = []
        self.reset_stamp_s = convert.stamp_to_s(self._stamp())
        if self.goal_pub is not None:
            self._publish_goal()
        if self.insertion and self.lockstep:
            # The new scene's first frame at the reset itself, then a hold: its action is
            # stamped at the arm's enable (ignored), so the first step always acts on the frame
            # one period later. Left to the loop, the first frame came one physics step after
            # the reset, and whether the enable came before it (a 99 ms first step) or after
            # (a full hold first) was a race: episodes differed from run to run.
            self._publish_joints()
            self._publish_frame()
            self.next_joint_s += 1.0 / self.joint_rate_hz
            self.next_frame_s += self.frame_period_s
            self.held_since = time.monotonic()
        response.success = True
        response.message = json.dumps({'seed': self.current_seed})
        self.get_logger().info(f'reset: scene seed {self.current_seed}')
        return response

    def _publish_diagnostics(self):
        wall, sim = time.monotonic(), self._sim_now()
        w0, s0 = self._rtf_window
        if wall > w0:
            self.measured_rtf = (sim - s0) / (wall - w0)
        self._rtf_window = (wall, sim)
        values = dict(frames_published=self.frames_published,
                      camera_rate_hz=round(1.0 / self.frame_period_s, 6),
                      sim_time_s=round(sim, 3), real_time_factor=round(self.measured_rtf, 3),
                      resets=self.resets, seed=self.current_seed, **self.commands)
        for server in self.action_servers:
            values.update({f'{server.kind}_goals_{k}': v for k, v in server.counts.items()})
        if self.lockstep:
            values.update(holds_commanded=self.holds['commanded'],
                          holds_timed_out=self.holds['timed_out'],
                          holds_missed=self.holds['missed'])
        self.diag_pub.publish(diagnostic_array(
            self, 'sim_robot', values, hardware_id='mujoco',
            message=f'{self.frames_published} frames, rtf {self.measured_rtf:.2f}'))

    def close(self):
        """Release the renderer and the action servers."""
        for server in self.action_servers:
            server.destroy()
        self.action_servers = []
        self.sim.close()


def _insertion_sim(physics_dt_s, image_size, variant, goal_noise_m, stiffness_n_m):
    """Return the :class:`awopt_ros.sim.insertion.InsertionSim` of the insertion scene."""
    from awopt_ros.sim.insertion import InsertionConfig, InsertionSim
    config = InsertionConfig(variant=variant, goal_noise_m=goal_noise_m,
                             physics_dt_s=physics_dt_s, stiffness_n_m=stiffness_n_m,
                             image_size=tuple(image_size), render=True)
    return InsertionSim(config)


def main(args=None):
    return spin_node(SimRobotNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
