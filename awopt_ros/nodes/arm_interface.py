"""arm_interface: policy actions -> safe joint commands for the iiwa arm and gripper.

Inputs: ``/policy/action`` (JointState, 7 action names), the driver's joint states
(``joint_states_topic``, default ``/joint_states``, joints named per ``joint_names`` /
``gripper_joint``) and ``<camera_ns>/color/camera_info`` (watchdog only). Services:
``/arm/enable`` (std_srvs/SetBool; the node starts disabled and ignores actions until enabled,
and after an enable those stamped at or before it, i.e. computed on older frames) and
``/arm/stop`` (std_srvs/Trigger: hold at once, latched: actions are ignored until the next
``/arm/enable true``, or until ``/arm/clear_stop``, which acknowledges the stop and leaves the
arm disabled).

Each accepted action goes through ``core.arm.arm_command``: ``core.safety.filter_action``,
``core.kinematics.Kinematics.ik_step`` from the measured joints, then ``core.safety.
limit_joint_target`` (targets inside the URDF joint limits less ``joint_limit_margin_rad``;
the step from the measured joints scaled so that no joint exceeds ``max_joint_velocity_rad_s``
over ``control_period_s``), then out per ``command_interface`` (``ros.arm_backends``): the JTC
topic, the forward position controller, or a FollowJointTrajectory goal per step; and a
gripper command per ``gripper_interface`` (``core.arm.gripper_target``: close wins over open,
except that with ``reopen_empty_gripper`` both bits open a gripper that the joint states show
holding nothing). Joint names on every command are the driver's.

With ``joint_state_sync_s`` > 0 (the insertion bringup: lockstep, where the joint state of an
action's instant may arrive after the action computed from it) an action stamped later than
the newest joint state by more than that waits for a joint state that new, so that its IK
step starts from the joints it was computed for (counted in ``deferred_for_joint_state``).

Holding = the measured joints sent once as the target (a topic command or a goal). The node
holds while any input is stale (20 Hz watchdog), while an action server it needs is not
available, and, with ``heartbeat_timeout_s`` > 0, while the operator heartbeat is missing:
std_msgs/Bool on ``/arm/heartbeat``, ``true`` = deadman pressed, published faster than the
timeout; ``false`` or silence longer than the timeout holds at once, and no command goes out
until ``true`` messages come again. The first command after an enable, a stop or a hold must
start at the measured joints: a target more than ``max_start_jump_rad`` from them is refused
(hold, error log). A FollowJointTrajectory goal that the controller rejects, or that ends in
a failure that is not a preemption (``core.control_actions``), latches a hold like
``/arm/stop`` (diagnostics ERROR with the error string) until the next enable or
``/arm/clear_stop``.

``/arm/home`` (std_srvs/Trigger; the reset service of a cell without a simulator, called by
the episode manager between episodes, before the enable) moves the arm from its measured joints
to ``home_joint_positions_rad`` (``core.homing``: one minimum-jerk trajectory, long enough
that no joint exceeds ``home_velocity_scale`` x ``max_joint_velocity_rad_s``, through the
configured arm interface: one JointTrajectory message or one FollowJointTrajectory goal;
streamed targets on the forward position controller) and opens the gripper. It answers once
the measured joints are within ``home_tolerance_rad`` of home after the trajectory's time, or
fails (hold) after ``home_timeout_s``, on a controller fault, ``/arm/stop``, an
``/arm/enable`` call, stale joint states, a missing or released heartbeat, or a missing action
server. It is refused while the arm is enabled or stopped (latched), or when one of those
inputs is missing at the request. A request that comes while a homing is in progress (a
client that resends) waits for that homing and gets its answer; no second motion starts. The
service callback is a coroutine in a reentrant callback group of its own: the executor runs
every other callback while it waits (the node's state is not locked: spin it with a
single-threaded executor, as ``spin_node`` does). Its message is
JSON ``{"state": "home", "duration_s": d, "error_rad": e}`` (d = the time the homing took, e
= the largest joint error at the end) or ``{"state": "failed", "reason": "..."}``.

The enable reply's message is JSON: ``{"state": "enabled", "stamp_s": t, "stale": [...]}``
(``t`` = the enable time on the node clock: actions stamped at or before it are ignored;
``stale`` lists the inputs that hold the arm, among them the name of an action server that is
not available) or ``{"state": "disabled" | "already disabled"}``. The stop reply's:
``{"state": "stopped" | "already stopped"}``. See docs/INTERFACES.md for the topic contract.

Operator interventions (``core.intervention``): ``geometry_msgs/TwistStamped`` on
``operator_twist_topic`` (``/operator/twist``; frame ``base_link`` or empty, others are
rejected with a throttled warning; linear m/s, ``angular.z`` rad/s) and ``std_msgs/Bool`` on
``operator_gripper_topic`` (``/operator/gripper``, true close, false open). While the newest
of them is younger than ``intervention_timeout_s`` (steady clock, at reception) and came after
the latest ``/arm/enable true`` (an enable, at each episode start, ends an intervention: an
operator message received before it does not count, also when younger than the timeout, so a
key held to the end of one episode does not drive the next one's first steps; the next
operator message starts a new intervention), each policy action the node would act on is
replaced by the operator's action (the twist x
``control_period_s``, clipped to the action bounds; gripper bits from the newest gripper
message of this intervention, else no gripper change; terminate 0), which takes exactly the
policy action's path: the same enable/stop gate, watchdogs, heartbeat, safety filter,
workspace box, IK, joint limits and continuity check. An intervention never moves an arm that
is disabled, stopped, holding for stale inputs or homing, and never enables one; it acts only
when a policy action comes (in lockstep: one per frame), so the simulator steps as usual.
Each executed operator action is published on ``/arm/intervention`` (sensor_msgs/JointState,
names ``core.spec.ACTION_NAMES``, header stamp = the replaced policy action's stamp); the
logger marks those steps in the dataset. Diagnostics: ``interventions_enabled``,
``intervening`` (active now), ``intervention_steps``, ``operator_twists_rejected``.

``interventions_enabled`` (read-only, default true: the Kuka grasp files) false subscribes
no operator topic: every policy action is executed as sent. The Sawyer insertion files
(config/awopt_ros_sawyer_insertion.yaml, awopt_ros_sawyer_bridge.yaml) set it false: there
the residual controller's force-limit back-off and hold steps arrive as ordinary
``/policy/action`` messages, and an operator command would replace them (no force limit
while the operator drives); and the insertion state dataset records no interventions (its
steps are the controller's decisions), which is consistent only with none happening.
"""
import json
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import SetBool, Trigger

from awopt_ros.core import homing, intervention, robot, robot_names, spec
from awopt_ros.core.arm import arm_command
from awopt_ros.core.kinematics import Kinematics, quat_xyzw
from awopt_ros.core.safety import (IIWA14_MAX_VELOCITY_RAD_S, CommandGate, JointSafety,
                                   SafetyLimits, Watchdog)
from awopt_ros.ros import arm_backends, qos
from awopt_ros.ros.convert import joint_positions, msg_to_action, not_after, stamp_to_s
from awopt_ros.ros.diagnostics import ERROR, OK, WARN, diagnostic_array
from awopt_ros.ros.params import declare
from awopt_ros.ros.robot_params import declare_camera_ns, declare_joint_names
from awopt_ros.ros.run import StartupError, spin_node

COMMAND_INTERFACES = arm_backends.ARM_INTERFACES
GRIPPER_INTERFACES = arm_backends.GRIPPER_INTERFACES
CAMERA, JOINTS, POLICY, HEARTBEAT = 'camera_info', 'joint_states', 'policy_action', 'heartbeat'
WATCHDOG_PERIOD_S = 0.05
DIAGNOSTICS_PERIOD_S = 1.0
EE_POSE_PERIOD_S = 0.1
WARN_THROTTLE_S = 1.0
_TIMEOUT_PARAMS = {'camera_timeout_s': CAMERA, 'joint_state_timeout_s': JOINTS,
                   'policy_timeout_s': POLICY}
_LIMIT_PARAMS = ('max_step_m', 'max_yaw_step_rad', 'workspace_min_m', 'workspace_max_m')
STOP_SERVICE = '/arm/stop'
CLEAR_STOP_SERVICE = '/arm/clear_stop'
HEARTBEAT_TOPIC = '/arm/heartbeat'
HOME_SERVICE = '/arm/home'
INTERVENTION_TOPIC = intervention.INTERVENTION_TOPIC


def _closedness(msg, gripper_joint):
    """The gripper closedness of a JointState that names ``gripper_joint``, or None when its
    position is missing or not finite (the conflicting-bits rule then lets close win)."""
    try:
        finger = joint_positions(msg, [gripper_joint])[0]
    except (KeyError, ValueError):
        return None
    return spec.gripper_closedness(finger) if np.isfinite(finger) else None


class ArmInterfaceNode(Node):
    """The arm interface node (see module docstring). ``kwargs`` go to ``rclpy.node.Node``.

    Raises:
        ValueError: a bad parameter (interface names, joint names, limits).
        StartupError: an action interface was chosen and control_msgs is not installed.
    """

    def __init__(self, **kwargs):
        super().__init__('arm_interface', **kwargs)
        self._names, joint_states_topic = declare_joint_names(self)
        _, camera_info_topic = declare_camera_ns(self)
        p = {}
        p['urdf_path'] = declare(self, 'urdf_path', robot.URDF_PATH,
                                 'URDF with the arm and a tcp frame (relative: package share)',
                                 read_only=True)
        p['urdf_joint_names'] = declare(
            self, 'urdf_joint_names', [''],
            "The URDF's names of the 7 arm joints in chain order, for an arm other than the "
            "iiwa 14 (the Sawyer: right_j0..right_j6); [''] = the iiwa model's "
            "(core.spec.ARM_JOINTS). With them set, the IK's nullspace pulls toward "
            'home_joint_positions_rad', read_only=True)
        p['tcp_frame'] = declare(self, 'tcp_frame', robot.TCP_FRAME,
                                 "The URDF's tool frame that actions move (m, base_link)",
                                 read_only=True)
        p['command_interface'] = declare(
            self, 'command_interface', 'joint_trajectory',
            'joint_trajectory (topic <arm_controller>/joint_trajectory), forward_position '
            '(topic <forward_controller>/commands) or follow_joint_trajectory (action '
            '<arm_controller>/follow_joint_trajectory, control_msgs)', read_only=True)
        p['arm_controller'] = declare(
            self, 'arm_controller', '/arm_controller',
            'Namespace of the joint_trajectory_controller (lbr-stack: '
            '/lbr/joint_trajectory_controller; ICube iiwa_ros2: /iiwa_arm_controller)',
            read_only=True)
        p['forward_controller'] = declare(
            self, 'forward_controller', '/forward_position_controller',
            'Namespace of the forward position controller (command_interface '
            'forward_position)', read_only=True)
        p['gripper_interface'] = declare(
            self, 'gripper_interface', 'forward',
            'forward (topic <gripper_controller>/commands, [finger m]), gripper_command or '
            'parallel_gripper_command (action <gripper_controller>/gripper_cmd, control_msgs '
            'GripperCommand / ParallelGripperCommand) or none', read_only=True)
        p['gripper_controller'] = declare(self, 'gripper_controller', '/gripper_controller',
                                          'Namespace of the gripper controller',
                                          read_only=True)
        p['gripper_max_effort_n'] = declare(
            self, 'gripper_max_effort_n', 40.0,
            'Grip force limit sent with gripper action goals (N): GripperCommand '
            'command.max_effort, ParallelGripperCommand command.effort (0: no effort sent, '
            'the controller default)', low=0.0, high=1000.0, read_only=True)
        p['control_period_s'] = declare(
            self, 'control_period_s', 0.1,
            'Time given to reach each commanded step (s): trajectory time_from_start and the '
            'dt of the IK and joint velocity limits', low=0.01, high=2.0)
        p['max_step_m'] = declare(self, 'max_step_m', 0.03,
                                  'Largest tcp translation per action and axis (m)',
                                  low=0.001, high=0.1)
        p['max_yaw_step_rad'] = declare(self, 'max_yaw_step_rad', 0.2,
                                        'Largest tcp yaw change per action (rad)',
                                        low=0.01, high=1.0)
        p['workspace_min_m'] = declare(self, 'workspace_min_m', [0.35, -0.3, 0.02],
                                       'Lower corner x, y, z of the tcp workspace box in '
                                       'base_link (m)')
        p['workspace_max_m'] = declare(self, 'workspace_max_m', [0.85, 0.3, 0.5],
                                       'Upper corner x, y, z of the tcp workspace box in '
                                       'base_link (m)')
        p['joint_limit_margin_rad'] = declare(
            self, 'joint_limit_margin_rad', 0.05,
            'Distance kept from the URDF joint position limits: every joint target is '
            'clipped to [lower + margin, upper - margin] (rad)', low=0.0, high=0.5)
        p['max_joint_velocity_rad_s'] = declare(
            self, 'max_joint_velocity_rad_s', list(IIWA14_MAX_VELOCITY_RAD_S),
            'Velocity limits of A1..A7 (rad/s, 7 values > 0, at most the URDF limits; '
            'default: iiwa 14 datasheet 85, 85, 100, 75, 130, 135, 135 deg/s): each step from '
            'the measured joints is scaled so that no joint exceeds them over '
            'control_period_s')
        p['max_start_jump_rad'] = declare(
            self, 'max_start_jump_rad', 0.25,
            'The first command after an enable, a stop or a hold is refused (hold) when a '
            'joint target is further than this from the measured joints (rad)',
            low=0.001, high=3.2)
        p['heartbeat_timeout_s'] = declare(
            self, 'heartbeat_timeout_s', 0.0,
            'Operator deadman: hold unless std_msgs/Bool true arrived on /arm/heartbeat '
            'within this time (s); false holds at once; 0 = off', low=0.0, high=10.0,
            read_only=True)
        p['camera_timeout_s'] = declare(self, 'camera_timeout_s', 0.5,
                                        'Hold when no camera_info for this long (s)',
                                        low=0.01, high=10.0)
        p['joint_state_timeout_s'] = declare(self, 'joint_state_timeout_s', 0.2,
                                             'Hold when no joint_states for this long (s)',
                                             low=0.01, high=10.0)
        p['policy_timeout_s'] = declare(self, 'policy_timeout_s', 0.5,
                                        'Hold when no action for this long after the first '
                                        'action of an enable period (s)', low=0.01, high=10.0)
        p['joint_state_sync_s'] = declare(
            self, 'joint_state_sync_s', 0.0,
            'An action stamped more than this (s) after the newest joint state waits for a '
            'joint state that new before its IK step, so that the step starts from the '
            "joints of the action's own instant (lockstep: the joint state may arrive after "
            'the action computed from it); 0 = off (act on the newest joint state)',
            low=0.0, high=1.0, read_only=True)
        p['reopen_empty_gripper'] = declare(
            self, 'reopen_empty_gripper', True,
            'An action with both the open and the close bit set opens a gripper that holds '
            'nothing (joint state closedness below 0.05 or at least 0.95: open, or closed '
            'on air after a missed grasp); one holding an object stays closed. False: close '
            'always wins')
        p['home_joint_positions_rad'] = declare(
            self, 'home_joint_positions_rad', [float(v) for v in robot.HOME_Q],
            'Joint positions A1..A7 that /arm/home moves the arm to (rad, 7 values inside the '
            'joint limits less joint_limit_margin_rad)', read_only=True)
        p['home_tolerance_rad'] = declare(
            self, 'home_tolerance_rad', 0.02,
            '/arm/home succeeds once every measured joint is this close to home (rad)',
            low=0.001, high=0.5)
        p['home_timeout_s'] = declare(
            self, 'home_timeout_s', 30.0,
            '/arm/home fails (hold) when the arm is not home this long after the request (s)',
            low=0.5, high=600.0)
        p['home_velocity_scale'] = declare(
            self, 'home_velocity_scale', 0.2,
            'Fraction of max_joint_velocity_rad_s that no joint exceeds while /arm/home moves '
            'the arm', low=0.01, high=1.0)
        p['interventions_enabled'] = declare(
            self, 'interventions_enabled', True,
            'Operator interventions: subscribe operator_twist_topic / operator_gripper_topic and '
            "let the operator's command replace policy actions; false (the Sawyer insertion "
            'files): no operator subscription, every policy action is executed as sent',
            read_only=True)
        p['intervention_timeout_s'] = declare(
            self, 'intervention_timeout_s', intervention.DEFAULT_TIMEOUT_S,
            'Operator intervention: active while the newest operator twist or gripper message '
            'is younger than this (s, steady clock) and came after the latest /arm/enable '
            "true; while active the operator's command replaces each policy action",
            low=0.01, high=5.0)
        p['operator_twist_topic'] = declare(
            self, 'operator_twist_topic', intervention.TWIST_TOPIC,
            'Operator command, geometry_msgs/TwistStamped in base_link (linear m/s, '
            'angular.z rad/s), e.g. awopt teleop or a spacemouse driver', read_only=True)
        p['operator_gripper_topic'] = declare(
            self, 'operator_gripper_topic', intervention.GRIPPER_TOPIC,
            'Operator gripper command, std_msgs/Bool (true close, false open)',
            read_only=True)
        for name in ('arm_controller', 'forward_controller', 'gripper_controller',
                     'operator_twist_topic', 'operator_gripper_topic'):
            robot_names.check_topic_ns(p[name], name)     # ValueError naming the parameter
        if p['command_interface'] not in COMMAND_INTERFACES:
            raise ValueError(f'command_interface must be one of {COMMAND_INTERFACES}, '
                             f'got {p["command_interface"]!r}')
        if p['gripper_interface'] not in GRIPPER_INTERFACES:
            raise ValueError(f'gripper_interface must be one of {GRIPPER_INTERFACES}, '
                             f'got {p["gripper_interface"]!r}')
        self._params = p
        self._kin = self._make_kinematics(p)
        self._limits = self._make_limits(p)
        self._joint_safety = self._make_joint_safety(p)
        self._home_q = homing.check_home_pose(p['home_joint_positions_rad'],
                                              self._joint_safety.lo, self._joint_safety.hi)
        timeouts = {name: p[param] for param, name in _TIMEOUT_PARAMS.items()}
        self._heartbeat = p['heartbeat_timeout_s'] > 0.0
        if self._heartbeat:
            timeouts[HEARTBEAT] = p['heartbeat_timeout_s']
        self._watchdog = Watchdog(timeouts)
        self._period_s = float(p['control_period_s'])
        self._interface = p['command_interface']
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._gate = CommandGate()
        self._epoch = 0                # enable count: faults of goals sent before are old
        self._got_action = False       # an action arrived in this enable period
        self._holding = False          # a hold was sent and no fresh command since
        self._q_meas = None            # (7,) measured arm joints, rad
        self._closedness = None        # measured gripper closedness 0..1, None if unknown
        self._enabled_at_s = 0.0       # node-clock time (s) of the last enable
        self._last_pose_s = -np.inf
        self._gripper_warning = ''
        self._homing = None            # core.homing.Homing while /arm/home moves the arm
        self._stream_t_s = 0.0         # forward position controller: plan time streamed
        self._homing_done = None       # Future of its answer (success, message JSON)
        self._homing_tag = None        # the epoch its goals carry (faults are matched to it)
        self._counts = dict(commands_sent=0, rejected=0, clipped=0, clamped=0, holds=0,
                            ignored=0, clamped_joints=0, velocity_limited=0,
                            continuity_refusals=0, stops=0, controller_faults=0, homings=0,
                            homings_failed=0, deferred_for_joint_state=0)
        self._sync_s = float(p['joint_state_sync_s'])
        self._q_stamp_s = None         # stamp (s) of the joint state of _q_meas
        self._deferred = None          # an action waiting for its joint state (sync)
        self._arm, self._gripper = self._make_backends(p)
        self._override = intervention.OperatorOverride(p['intervention_timeout_s'])
        self._counts.update(intervention_steps=0, operator_twists_rejected=0)
        self._intervention_pub = self.create_publisher(JointState, INTERVENTION_TOPIC,
                                                       qos.COMMAND)

        self._latency_pub = self.create_publisher(Float64, '/arm/frame_to_command_ms',
                                                  qos.COMMAND)
        self._pose_pub = self.create_publisher(PoseStamped, '/arm/ee_pose', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # Joint states first: when both are ready the executor takes them in this order, so
        # an action is computed from the newest measured joints.
        self.create_subscription(JointState, joint_states_topic, self._on_joint_states,
                                 qos.SENSOR)
        self.create_subscription(JointState, '/policy/action', self._on_action, qos.COMMAND)
        self.create_subscription(CameraInfo, camera_info_topic, self._on_camera_info,
                                 qos.SENSOR)
        if self._heartbeat:
            self.create_subscription(Bool, HEARTBEAT_TOPIC, self._on_heartbeat, qos.COMMAND)
        self._interventions = bool(p['interventions_enabled'])
        if self._interventions:
            # Best effort: matches reliable and best-effort operator sources alike.
            self.create_subscription(TwistStamped, p['operator_twist_topic'], self._on_twist,
                                     qos.SENSOR)
            self.create_subscription(Bool, p['operator_gripper_topic'],
                                     self._on_operator_gripper, qos.SENSOR)
        else:
            self.get_logger().info('operator interventions disabled (interventions_enabled '
                                   f'false): {p["operator_twist_topic"]} and '
                                   f'{p["operator_gripper_topic"]} are not subscribed')
        self.create_service(SetBool, '/arm/enable', self._on_enable)
        self.create_service(Trigger, STOP_SERVICE, self._on_stop)
        self.create_service(Trigger, CLEAR_STOP_SERVICE, self._on_clear_stop)
        # Its own reentrant group: a pending coroutine keeps its callback group busy (rclpy
        # ends a callback's execution when its coroutine returns), so in the node's default
        # mutually exclusive group it would block every other callback until home; reentrant
        # so that a repeated request joins the homing in progress.
        self.create_service(Trigger, HOME_SERVICE, self._on_home,
                            callback_group=ReentrantCallbackGroup())
        self.create_timer(WATCHDOG_PERIOD_S, self._on_watchdog)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        heartbeat = (f', heartbeat {p["heartbeat_timeout_s"]} s on {HEARTBEAT_TOPIC}'
                     if self._heartbeat else '')
        self.get_logger().info(
            f'arm_interface ready ({self._interface} -> {self._arm.target}, gripper '
            f'{p["gripper_interface"]} -> {self._gripper.target}{heartbeat}), disabled until '
            '/arm/enable true')

    # ---------------------------------------------------------------- set-up
    def _make_backends(self, p):
        arm = None
        try:
            if self._interface == 'follow_joint_trajectory':
                arm = arm_backends.TrajectoryActionArm(self, p['arm_controller'],
                                                       self._names.arm, self._on_arm_fault)
            else:
                controller = (p['arm_controller'] if self._interface == 'joint_trajectory'
                              else p['forward_controller'])
                arm = arm_backends.TopicArm(self, self._interface, controller,
                                            self._names.arm)
            kind = p['gripper_interface']
            if kind == 'forward':
                gripper = arm_backends.TopicGripper(self, p['gripper_controller'])
            elif kind == 'none':
                gripper = arm_backends.NoGripper()
            else:
                gripper = arm_backends.GripperAction(
                    self, kind, p['gripper_controller'], self._names.gripper,
                    p['gripper_max_effort_n'], self._on_gripper_warning)
        except RuntimeError as exc:      # control_msgs missing
            if arm is not None:
                arm.destroy()
            raise StartupError(str(exc)) from exc
        return arm, gripper

    @staticmethod
    def _make_kinematics(p):
        """Return the arm's :class:`Kinematics` (the iiwa's joints unless ``urdf_joint_names``).

        Raises:
            ValueError: ``urdf_joint_names`` not 7 names of the URDF, or no ``tcp_frame``.
        """
        names = [str(n) for n in p['urdf_joint_names'] if str(n)]
        if not names:
            return Kinematics(p['urdf_path'], tcp_frame=p['tcp_frame'])
        return Kinematics(p['urdf_path'], joint_names=names, tcp_frame=p['tcp_frame'],
                          home_q=np.asarray(p['home_joint_positions_rad'], dtype=float))

    @staticmethod
    def _make_limits(p):
        return SafetyLimits(p['max_step_m'], p['max_yaw_step_rad'],
                            tuple(p['workspace_min_m']), tuple(p['workspace_max_m']))

    def _make_joint_safety(self, p):
        urdf = self._kin.joint_limits()
        return JointSafety(urdf.lower_rad, urdf.upper_rad, p['joint_limit_margin_rad'],
                           tuple(p['max_joint_velocity_rad_s']), p['max_start_jump_rad'],
                           velocity_cap_rad_s=urdf.velocity_rad_s)

    def _on_set_parameters(self, params):
        new = dict(self._params)
        for param in params:
            new[param.name] = param.value
        try:
            limits = self._make_limits(new)
            joint_safety = self._make_joint_safety(new)
            homing.check_home_pose(self._home_q, joint_safety.lo, joint_safety.hi)
            self._override.set_timeout(new['intervention_timeout_s'])
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._params = new
        self._limits = limits
        self._joint_safety = joint_safety
        self._period_s = float(new['control_period_s'])
        for param, name in _TIMEOUT_PARAMS.items():
            self._watchdog.set_timeout(name, new[param])
        return SetParametersResult(successful=True)

    def destroy_node(self):
        """Answer a homing in progress (failed), destroy the action clients (rclpy does
        not), then the node."""
        if getattr(self, '_homing', None) is not None:
            self._end_homing(False, 'arm_interface shutting down', hold=False)
        for backend in (getattr(self, '_arm', None), getattr(self, '_gripper', None)):
            if backend is not None:
                backend.destroy()
        self._arm = self._gripper = None
        super().destroy_node()

    # ---------------------------------------------------------------- helpers
    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _missing_servers(self):
        return [m for m in (self._arm.missing(), self._gripper.missing()) if m]

    def _stale(self, now_s):
        stale = self._watchdog.stale(now_s)
        if not self._got_action:
            stale = [n for n in stale if n != POLICY]
        return stale + self._missing_servers()

    def _send_arm(self, q7):
        self._arm.send(q7, self._period_s, self._epoch)

    def _hold(self, reason, force=False):
        """Send the measured joints once as the target (if known) and enter the hold state;
        ``force``: send it even when already holding."""
        if self._holding and not force:
            return
        self._holding = True
        self._gate.hold()
        self._counts['holds'] += 1
        if self._q_meas is not None:
            self._send_arm(self._q_meas)
        self.get_logger().info(f'holding position: {reason}')

    def _on_arm_fault(self, message, epoch):
        """A goal was rejected or failed (``ros.arm_backends``): a homing goal ends its homing
        (failed, hold); a goal of this enable period while the arm was active latches a
        hold."""
        self._counts['controller_faults'] += 1
        if self._homing is not None and epoch == self._homing_tag:
            self.get_logger().error(f'arm controller fault while homing: {message}')
            self._end_homing(False, f'controller fault: {message}')
        elif epoch == self._epoch and self._gate.active:
            self.get_logger().error(f'arm controller fault: {message}')
            self._gate.stop(f'controller fault: {message}')
            self._hold('controller fault (latched until /arm/clear_stop or /arm/enable true)',
                       force=True)
        else:     # a goal of an earlier enable period, or sent while disabled or stopped
            self.get_logger().warning(f'arm controller fault while not active: {message}')

    def _on_gripper_warning(self, message):
        self._gripper_warning = message
        self.get_logger().warning(f'gripper: {message}')

    # ---------------------------------------------------------------- callbacks
    def _on_twist(self, msg):
        reason = intervention.check_twist_frame(msg.header.frame_id)
        try:
            if reason is not None:
                raise ValueError(reason)
            self._override.on_twist(time.monotonic(),
                                    (msg.twist.linear.x, msg.twist.linear.y,
                                     msg.twist.linear.z), msg.twist.angular.z)
        except ValueError as exc:
            self._counts['operator_twists_rejected'] += 1
            self.get_logger().warning(f'{self._params["operator_twist_topic"]}: {exc}',
                                      throttle_duration_sec=WARN_THROTTLE_S)

    def _on_operator_gripper(self, msg):
        self._override.on_gripper(time.monotonic(), msg.data)

    def _on_camera_info(self, _msg):
        self._watchdog.feed(CAMERA, self._now_s())

    def _on_heartbeat(self, msg):
        if msg.data:
            self._watchdog.feed(HEARTBEAT, self._now_s())
            return
        self._watchdog.reset(HEARTBEAT)         # released: hold now, not at the timeout
        if self._homing is not None:
            self._end_homing(False, 'operator heartbeat released')
        if self._gate.active:
            self._hold('operator heartbeat released')

    def _on_joint_states(self, msg):
        gripper, arm = self._names.gripper, self._names.arm
        if gripper in msg.name:   # also alone, from a separate gripper driver
            self._closedness = _closedness(msg, gripper)
            if not set(arm) & set(msg.name):
                return
        try:
            q = joint_positions(msg, arm)
        except (KeyError, ValueError) as exc:
            self.get_logger().error(f'bad joint states: {exc}', throttle_duration_sec=5.0)
            return
        if not np.all(np.isfinite(q)):
            self.get_logger().error('non-finite joint states ignored',
                                    throttle_duration_sec=5.0)
            return
        now_s = self._now_s()
        self._q_meas = q
        self._q_stamp_s = stamp_to_s(msg.header.stamp)
        self._watchdog.feed(JOINTS, now_s)
        if now_s - self._last_pose_s >= EE_POSE_PERIOD_S:
            self._last_pose_s = now_s
            pos, rot = self._kin.fk(q)
            quat = quat_xyzw(rot)
            pose = PoseStamped()
            pose.header.stamp = msg.header.stamp
            pose.header.frame_id = 'base_link'
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = pos.tolist()
            (pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z,
             pose.pose.orientation.w) = quat.tolist()
            self._pose_pub.publish(pose)
        deferred = self._deferred
        if deferred is not None and (
                self._q_stamp_s >= stamp_to_s(deferred.header.stamp) - self._sync_s):
            self._deferred = None
            self._on_action(deferred)

    def _on_enable(self, request, response):
        if self._homing is not None:   # enable: hold before the policy; disable holds below
            self._end_homing(False, f'interrupted by /arm/enable {request.data}',
                             hold=request.data)
        if request.data:
            self._gate.enable()
            self._epoch += 1
            self._got_action = False
            self._holding = False
            self._gripper_warning = ''
            self._gripper.reset()
            # Enabled after a reset: joints measured before it must not be the base of the
            # next command (an action that arrives before the first new joint state would
            # send the arm back to where the last episode ended).
            self._q_meas = None
            self._deferred = None
            # Nor may an action computed on a frame from before it (the previous scene):
            # it waits for a newer frame. The reply tells when (node clock), so that the
            # episode manager counts exactly the actions this node acts on as steps.
            self._enabled_at_s = self._now_s()
            self._watchdog.reset(POLICY)
            # Nor does an operator command received before it (a key held to the end of the
            # last episode): an intervention starts again only with a newer operator message.
            self._override.end()
            stale = self._stale(self._now_s())
            response.message = json.dumps({'state': 'enabled', 'stamp_s': self._enabled_at_s,
                                           'stale': stale})
        else:
            was = self._gate.enabled
            self._gate.disable()
            self._holding = False
            self._hold('disabled')
            response.message = json.dumps({'state': 'disabled' if was else 'already disabled'})
        response.success = True
        self.get_logger().info(f'/arm/enable {request.data}: {response.message}')
        return response

    def _on_stop(self, _request, response):
        was = self._gate.stopped
        self._gate.stop('/arm/stop')
        self._counts['stops'] += 1
        self._hold('/arm/stop (latched until /arm/clear_stop or /arm/enable true)', force=True)
        self._gripper.reset()
        if self._homing is not None:
            self._end_homing(False, 'stopped: /arm/stop', hold=False)
        response.success = True
        response.message = json.dumps({'state': 'already stopped' if was else 'stopped'})
        self.get_logger().warning(f'{STOP_SERVICE}: {response.message}')
        return response

    def _on_clear_stop(self, _request, response):
        """Acknowledge a latched stop: clear it and leave the arm disabled (holding), so the
        next episode's reset and enable may move it; the policy is not armed by this."""
        enabled = self._gate.enabled
        was = self._gate.clear_stop()
        if enabled:
            self._holding = False
            self._hold('disabled by /arm/clear_stop')
        response.success = True
        response.message = json.dumps({'state': 'cleared' if was else 'not stopped'})
        self.get_logger().info(f'{CLEAR_STOP_SERVICE}: {response.message}')
        return response

    # ---------------------------------------------------------------- /arm/home
    async def _on_home(self, _request, response):
        """Start a homing (or join the one in progress) and answer when it ends; a coroutine,
        so the executor serves every other callback meanwhile."""
        done = self._homing_done if self._homing is not None else self._start_homing()
        success, message = await done
        response.success, response.message = success, message
        return response

    def _homing_problem(self, now_s):
        """Return why the arm cannot be homed now (str), or None: joint states, heartbeat or
        an action server missing."""
        age_s = self._watchdog.age_s(JOINTS, now_s)
        if self._q_meas is None or JOINTS in self._watchdog.stale(now_s):
            return (f'joint states stale: none for {age_s:.2f} s '
                    f'(joint_state_timeout_s {self._params["joint_state_timeout_s"]})')
        if self._heartbeat and HEARTBEAT in self._watchdog.stale(now_s):
            return f'operator heartbeat missing on {HEARTBEAT_TOPIC}'
        missing = self._missing_servers()
        if missing:
            return f'action server not available: {missing}'
        return None

    def _start_homing(self):
        """Return a Future of the answer (success, message): done at once when refused, else
        when the homing started here ends (:meth:`_end_homing`)."""
        done = Future()
        now_s = self._now_s()
        p = self._params
        if self._gate.stopped:
            reason = (f'arm stopped ({self._gate.stop_reason}): latched until '
                      '/arm/clear_stop (or /arm/enable true)')
        elif self._gate.enabled:
            reason = 'arm enabled: call /arm/enable false first (the policy commands it)'
        else:
            reason = self._homing_problem(now_s)
        plan = None
        if reason is None:
            plan = homing.HomingPlan.make(self._q_meas, self._home_q,
                                          self._joint_safety.max_velocity_rad_s,
                                          p['home_velocity_scale'], self._period_s)
            if plan.duration_s > p['home_timeout_s']:
                reason = (f'the move home takes {plan.duration_s:.1f} s at '
                          f'home_velocity_scale {p["home_velocity_scale"]}, more than '
                          f'home_timeout_s {p["home_timeout_s"]}')
        if reason is not None:
            self._counts['homings_failed'] += 1
            message = json.dumps({'state': 'failed', 'reason': reason})
            self.get_logger().error(f'{HOME_SERVICE} refused: {reason}')
            done.set_result((False, message))
            return done
        self._counts['homings'] += 1
        self._homing = homing.Homing(plan, now_s, p['home_timeout_s'], p['home_tolerance_rad'])
        self._homing_done = done
        self._homing_tag = ('home', self._counts['homings'])
        self._gate.hold()              # the next command after it is continuity-checked
        self._holding = False
        self._gripper.reset()
        self._gripper.send(0.0)        # open
        self._stream_t_s = 0.0         # plan time of the last streamed target
        if self._arm.trajectories:
            times_s, positions = plan.waypoints()
            self._arm.send_trajectory(times_s, positions, self._homing_tag)
        else:
            self._stream_home(now_s)
        self.get_logger().info(
            f'{HOME_SERVICE}: moving home in {plan.duration_s:.2f} s (largest joint error '
            f'{homing.max_error_rad(self._q_meas, self._home_q):.3f} rad)')
        return done

    def _stream_home(self, now_s):
        """Send the plan's target one watchdog tick further along it (forward position
        controller). The plan advances by one tick per target sent, not by the wall clock:
        a tick that comes late (a busy host) delays the motion instead of making a larger
        step, so no step exceeds the scaled velocity limits over a tick."""
        self._stream_t_s = min(self._stream_t_s + WATCHDOG_PERIOD_S,
                               self._homing.plan.duration_s)
        self._arm.send(self._homing.plan.position_at(self._stream_t_s), WATCHDOG_PERIOD_S,
                       self._homing_tag)

    def _check_homing(self):
        """Watchdog tick while homing: answer when home, fail on a timeout or a missing
        input, else stream the next target (forward position controller)."""
        now_s = self._now_s()
        reason = self._homing_problem(now_s)
        if reason is None:
            status = self._homing.status(now_s, self._q_meas)
            if status == homing.HOME:
                self._end_homing(True)
                return
            if status == homing.TIMED_OUT:
                reason = (f'not home after home_timeout_s {self._homing.timeout_s} s: '
                          f'largest joint error '
                          f'{homing.max_error_rad(self._q_meas, self._home_q):.3f} rad > '
                          f'home_tolerance_rad {self._homing.tolerance_rad}')
        if reason is not None:
            self._end_homing(False, reason)
        elif not self._arm.trajectories:
            self._stream_home(now_s)

    def _end_homing(self, success, reason='', hold=True):
        """End the homing in progress and answer its requests; a failure holds (``hold``)."""
        run, done = self._homing, self._homing_done
        self._homing = self._homing_done = None
        if success:
            message = json.dumps({'state': 'home',
                                  'duration_s': round(run.elapsed_s(self._now_s()), 3),
                                  'error_rad': homing.max_error_rad(self._q_meas,
                                                                    self._home_q)})
            self.get_logger().info(f'{HOME_SERVICE}: {message}')
        else:
            self._counts['homings_failed'] += 1
            message = json.dumps({'state': 'failed', 'reason': reason})
            self.get_logger().error(f'{HOME_SERVICE} failed: {reason}')
            if hold:
                self._hold(f'homing failed: {reason}', force=True)
        done.set_result((success, message))

    def _on_action(self, msg):
        now_s = self._now_s()
        if not self._gate.active:
            self._counts['ignored'] += 1
            return
        if not_after(msg.header.stamp, self._enabled_at_s):
            self._counts['ignored'] += 1   # computed on a frame from before the enable
            return
        if (self._sync_s > 0.0 and self._q_stamp_s is not None and self._q_meas is not None
                and stamp_to_s(msg.header.stamp) - self._q_stamp_s > self._sync_s):
            self._deferred = msg      # acted on when its joint state comes (a newer replaces)
            self._counts['deferred_for_joint_state'] += 1
            return
        self._deferred = None
        self._got_action = True
        self._watchdog.feed(POLICY, now_s)
        try:
            action = msg_to_action(msg)
        except ValueError as exc:
            self._counts['rejected'] += 1
            self.get_logger().error(f'bad /policy/action: {exc}')
            self._hold('malformed action')
            return
        stale = self._stale(now_s)
        if stale:
            self._counts['ignored'] += 1
            self._hold(f'stale inputs {stale}')
            return
        if self._q_meas is None:   # no joint state since the enable yet
            self._counts['ignored'] += 1
            return
        operator = (self._override.action(time.monotonic(), self._period_s)
                    if self._interventions else None)
        if operator is not None:   # the operator's command takes the policy action's path
            action = operator
        closedness = self._closedness if self._params['reopen_empty_gripper'] else None
        cmd = arm_command(self._kin, self._q_meas, action, self._limits, self._period_s,
                          closedness, self._joint_safety)
        if cmd.flags.rejected:
            self._counts['rejected'] += 1
            self.get_logger().error(f'non-finite action rejected: {action.tolist()}')
            self._holding = False      # always send a hold for a rejected action
            self._hold('non-finite action')
            return
        q_target, joint_flags = cmd.q_target, cmd.joint_flags
        refusal = self._gate.check_start(self._q_meas, q_target,
                                         self._joint_safety.max_start_jump_rad)
        if refusal is not None:
            self._counts['continuity_refusals'] += 1
            self.get_logger().error(f'command refused: {refusal}; holding',
                                    throttle_duration_sec=WARN_THROTTLE_S)
            self._hold('discontinuous first command')
            return
        self._counts['clipped'] += int(cmd.flags.clipped)
        self._counts['clamped'] += int(cmd.flags.clamped)
        self._counts['clamped_joints'] += joint_flags.clamped_joints
        self._counts['velocity_limited'] += int(joint_flags.velocity_limited)
        # Gripper first: a simulator in lockstep steps once the arm command has come.
        if cmd.gripper_m is not None:
            self._gripper.send(cmd.gripper_m)
        self._send_arm(q_target)
        self._gate.commanded()
        self._holding = False
        self._counts['commands_sent'] += 1
        if operator is not None:
            self._counts['intervention_steps'] += 1
            out = JointState(name=list(spec.ACTION_NAMES), position=operator.tolist())
            out.header.stamp = msg.header.stamp
            self._intervention_pub.publish(out)
        latency_ms = (self._now_s() - stamp_to_s(msg.header.stamp)) * 1e3
        self._latency_pub.publish(Float64(data=latency_ms))

    def _on_watchdog(self):
        if self._homing is not None:
            self._check_homing()
        if not self._gate.active:
            return
        stale = self._stale(self._now_s())
        if stale:
            self.get_logger().warning(f'stale inputs {stale}: holding position',
                                      throttle_duration_sec=WARN_THROTTLE_S)
            self._hold(f'stale inputs {stale}')
        else:
            self._holding = False      # fresh again: the next stale period holds again

    def _diagnostic_status(self, stale, missing):
        """Return (level, message) of the diagnostics (see ``_publish_diagnostics``)."""
        gate = self._gate
        if gate.stopped and gate.stop_reason.startswith('controller fault'):
            return ERROR, f'stopped: {gate.stop_reason}'
        if missing:
            return ERROR, f'action server not available: {missing}'
        if gate.stopped:
            return WARN, f'stopped: {gate.stop_reason}'
        if stale:
            return WARN, f'holding: stale {stale}'
        if self._gripper_warning:
            return WARN, f'gripper: {self._gripper_warning}'
        if self._homing is not None:
            return OK, 'homing'
        return OK, ('enabled' if gate.enabled else 'disabled')

    def _publish_diagnostics(self):
        now_s = self._now_s()
        missing = self._missing_servers()
        stale = self._stale(now_s) if self._gate.active else []
        values = dict(self._counts, **self._arm.counts, **self._gripper.counts,
                      enabled=self._gate.enabled, stopped=self._gate.stopped,
                      holding=self._holding, homing=self._homing is not None,
                      interventions_enabled=self._interventions,
                      intervening=(self._interventions
                                   and self._override.active(time.monotonic())),
                      stale=','.join(stale),
                      last_controller_error=getattr(self._arm, 'last_error', ''))
        level, message = self._diagnostic_status(stale, missing)
        arr = diagnostic_array(self, 'arm_interface', values, message=message, level=level,
                               hardware_id='iiwa14')
        self._diag_pub.publish(arr)

    def counts(self):
        """Return a copy of the counters (commands_sent, rejected, clipped, clamped, holds,
        ignored, clamped_joints, velocity_limited, continuity_refusals, stops,
        controller_faults, homings (started), homings_failed (refused or failed),
        intervention_steps, operator_twists_rejected) with the
        arm and gripper backends' goal counters."""
        return dict(self._counts, **self._arm.counts, **self._gripper.counts)


def main(args=None):
    """Run the arm_interface node."""
    return spin_node(ArmInterfaceNode, args=args)


if __name__ == '__main__':
    raise SystemExit(main())
