"""arm_interface: policy actions -> safe joint commands for the iiwa arm and gripper.

Subscribes ``/policy/action`` (JointState, 7 action names), ``/joint_states`` and
``/camera/color/camera_info`` (watchdog only). Serves ``/arm/enable`` (std_srvs/SetBool; the
node starts disabled and ignores actions until enabled, and after an enable those stamped at
or before it, i.e. computed on older frames). Each accepted action goes through
``core.safety.filter_action`` and ``core.kinematics.Kinematics.ik_step`` from the measured
joints, then out as a JointTrajectory (``/arm_controller/joint_trajectory``) or a
Float64MultiArray (``/forward_position_controller/commands``) per ``command_interface``,
plus a gripper command on ``/gripper_controller/commands`` (``core.arm.gripper_target``: close
wins over open, except that with ``reopen_empty_gripper`` both bits open a gripper that
``/joint_states`` shows holding nothing). A 20 Hz watchdog holds the arm
(measured joints sent once as the target) while any input is stale.
The enable reply's message is JSON: ``{"state": "enabled", "stamp_s": t, "stale": [...]}``
(``t`` = the enable time on the node clock: actions stamped at or before it are ignored) or
``{"state": "disabled" | "already disabled"}``. See docs/INTERFACES.md for the topic contract.
"""
import json

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from awopt_ros.core import robot, spec
from awopt_ros.core.arm import arm_command
from awopt_ros.core.kinematics import Kinematics, quat_xyzw
from awopt_ros.core.safety import SafetyLimits, Watchdog
from awopt_ros.ros import qos
from awopt_ros.ros.convert import joint_positions, msg_to_action, not_after, stamp_to_s
from awopt_ros.ros.diagnostics import OK, WARN, diagnostic_array
from awopt_ros.ros.params import declare
from awopt_ros.ros.run import spin_node

COMMAND_INTERFACES = ('joint_trajectory', 'forward_position')
CAMERA, JOINTS, POLICY = 'camera_info', 'joint_states', 'policy_action'
WATCHDOG_PERIOD_S = 0.05
DIAGNOSTICS_PERIOD_S = 1.0
EE_POSE_PERIOD_S = 0.1
WARN_THROTTLE_S = 1.0
_TIMEOUT_PARAMS = {'camera_timeout_s': CAMERA, 'joint_state_timeout_s': JOINTS,
                   'policy_timeout_s': POLICY}
_LIMIT_PARAMS = ('max_step_m', 'max_yaw_step_rad', 'workspace_min_m', 'workspace_max_m')


def _duration(t_s):
    ns = int(round(t_s * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _closedness(msg):
    """The gripper closedness of a JointState that names the gripper joint, or None when its
    position is missing or not finite (the conflicting-bits rule then lets close win)."""
    try:
        finger = joint_positions(msg, [spec.GRIPPER_JOINT])[0]
    except (KeyError, ValueError):
        return None
    return spec.gripper_closedness(finger) if np.isfinite(finger) else None


class ArmInterfaceNode(Node):
    """The arm interface node (see module docstring). ``kwargs`` go to ``rclpy.node.Node``."""

    def __init__(self, **kwargs):
        super().__init__('arm_interface', **kwargs)
        p = {}
        p['urdf_path'] = declare(self, 'urdf_path', robot.URDF_PATH,
                                 'URDF with the arm and a tcp frame (relative: package share)',
                                 read_only=True)
        p['command_interface'] = declare(
            self, 'command_interface', 'joint_trajectory',
            'joint_trajectory (/arm_controller/joint_trajectory) or forward_position '
            '(/forward_position_controller/commands)', read_only=True)
        p['control_period_s'] = declare(
            self, 'control_period_s', 0.1,
            'Time given to reach each commanded step (s): trajectory time_from_start and the '
            'dt of the IK velocity limits', low=0.01, high=2.0)
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
        p['camera_timeout_s'] = declare(self, 'camera_timeout_s', 0.5,
                                        'Hold when no camera_info for this long (s)',
                                        low=0.01, high=10.0)
        p['joint_state_timeout_s'] = declare(self, 'joint_state_timeout_s', 0.2,
                                             'Hold when no joint_states for this long (s)',
                                             low=0.01, high=10.0)
        p['policy_timeout_s'] = declare(self, 'policy_timeout_s', 0.5,
                                        'Hold when no action for this long after the first '
                                        'action of an enable period (s)', low=0.01, high=10.0)
        p['reopen_empty_gripper'] = declare(
            self, 'reopen_empty_gripper', True,
            'An action with both the open and the close bit set opens a gripper that holds '
            'nothing (/joint_states closedness below 0.05 or at least 0.95: open, or closed '
            'on air after a missed grasp); one holding an object stays closed. False: close '
            'always wins')
        if p['command_interface'] not in COMMAND_INTERFACES:
            raise ValueError(f'command_interface must be one of {COMMAND_INTERFACES}, '
                             f'got {p["command_interface"]!r}')
        self._params = p
        self._limits = self._make_limits(p)
        self._watchdog = Watchdog({name: p[param] for param, name in _TIMEOUT_PARAMS.items()})
        self._kin = Kinematics(p['urdf_path'])
        self._period_s = float(p['control_period_s'])
        self._interface = p['command_interface']
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._enabled = False
        self._got_action = False       # an action arrived in this enable period
        self._holding = False          # a hold was sent and no fresh command since
        self._q_meas = None            # (7,) measured arm joints, rad
        self._closedness = None        # measured gripper closedness 0..1, None if unknown
        self._enabled_at_s = 0.0       # node-clock time (s) of the last enable
        self._last_pose_s = -np.inf
        self._counts = dict(commands_sent=0, rejected=0, clipped=0, clamped=0, holds=0,
                            ignored=0)

        if self._interface == 'joint_trajectory':
            self._arm_pub = self.create_publisher(
                JointTrajectory, '/arm_controller/joint_trajectory', qos.COMMAND)
        else:
            self._arm_pub = self.create_publisher(
                Float64MultiArray, '/forward_position_controller/commands', qos.COMMAND)
        self._gripper_pub = self.create_publisher(
            Float64MultiArray, '/gripper_controller/commands', qos.COMMAND)
        self._latency_pub = self.create_publisher(Float64, '/arm/frame_to_command_ms',
                                                  qos.COMMAND)
        self._pose_pub = self.create_publisher(PoseStamped, '/arm/ee_pose', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # Joint states first: when both are ready the executor takes them in this order, so
        # an action is computed from the newest measured joints.
        self.create_subscription(JointState, '/joint_states', self._on_joint_states, qos.SENSOR)
        self.create_subscription(JointState, '/policy/action', self._on_action, qos.COMMAND)
        self.create_subscription(CameraInfo, '/camera/color/camera_info', self._on_camera_info,
                                 qos.SENSOR)
        self.create_service(SetBool, '/arm/enable', self._on_enable)
        self.create_timer(WATCHDOG_PERIOD_S, self._on_watchdog)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.get_logger().info(f'arm_interface ready ({self._interface}), disabled until '
                               '/arm/enable true')

    # ---------------------------------------------------------------- parameters
    @staticmethod
    def _make_limits(p):
        return SafetyLimits(p['max_step_m'], p['max_yaw_step_rad'],
                            tuple(p['workspace_min_m']), tuple(p['workspace_max_m']))

    def _on_set_parameters(self, params):
        new = dict(self._params)
        for param in params:
            new[param.name] = param.value
        try:
            limits = self._make_limits(new)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._params = new
        self._limits = limits
        self._period_s = float(new['control_period_s'])
        for param, name in _TIMEOUT_PARAMS.items():
            self._watchdog.set_timeout(name, new[param])
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- helpers
    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _stale(self, now_s):
        stale = self._watchdog.stale(now_s)
        if not self._got_action:
            stale = [n for n in stale if n != POLICY]
        return stale

    def _send_arm(self, q7):
        if self._interface == 'joint_trajectory':
            msg = JointTrajectory()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.joint_names = list(spec.ARM_JOINTS)
            point = JointTrajectoryPoint()
            point.positions = [float(v) for v in q7]
            point.time_from_start = _duration(self._period_s)
            msg.points = [point]
        else:
            msg = Float64MultiArray(data=[float(v) for v in q7])
        self._arm_pub.publish(msg)

    def _hold(self, reason):
        """Send the measured joints once as the target (if known) and enter the hold state."""
        if self._holding:
            return
        self._holding = True
        self._counts['holds'] += 1
        if self._q_meas is not None:
            self._send_arm(self._q_meas)
        self.get_logger().info(f'holding position: {reason}')

    # ---------------------------------------------------------------- callbacks
    def _on_camera_info(self, _msg):
        self._watchdog.feed(CAMERA, self._now_s())

    def _on_joint_states(self, msg):
        if spec.GRIPPER_JOINT in msg.name:   # also alone, from a separate gripper driver
            self._closedness = _closedness(msg)
            if not set(spec.ARM_JOINTS) & set(msg.name):
                return
        try:
            q = joint_positions(msg, spec.ARM_JOINTS)
        except (KeyError, ValueError) as exc:
            self.get_logger().error(f'bad /joint_states: {exc}', throttle_duration_sec=5.0)
            return
        if not np.all(np.isfinite(q)):
            self.get_logger().error('non-finite /joint_states ignored',
                                    throttle_duration_sec=5.0)
            return
        now_s = self._now_s()
        self._q_meas = q
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

    def _on_enable(self, request, response):
        if request.data:
            self._enabled = True
            self._got_action = False
            self._holding = False
            # Enabled after a reset: joints measured before it must not be the base of the
            # next command (an action that arrives before the first new joint state would
            # send the arm back to where the last episode ended).
            self._q_meas = None
            # Nor may an action computed on a frame from before it (the previous scene):
            # it waits for a newer frame. The reply tells when (node clock), so that the
            # episode manager counts exactly the actions this node acts on as steps.
            self._enabled_at_s = self._now_s()
            self._watchdog.reset(POLICY)
            stale = self._stale(self._now_s())
            response.message = json.dumps({'state': 'enabled', 'stamp_s': self._enabled_at_s,
                                           'stale': stale})
        else:
            was = self._enabled
            self._enabled = False
            self._holding = False
            self._hold('disabled')
            response.message = json.dumps({'state': 'disabled' if was else 'already disabled'})
        response.success = True
        self.get_logger().info(f'/arm/enable {request.data}: {response.message}')
        return response

    def _on_action(self, msg):
        now_s = self._now_s()
        if not self._enabled:
            self._counts['ignored'] += 1
            return
        if not_after(msg.header.stamp, self._enabled_at_s):
            self._counts['ignored'] += 1   # computed on a frame from before the enable
            return
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
        closedness = self._closedness if self._params['reopen_empty_gripper'] else None
        cmd = arm_command(self._kin, self._q_meas, action, self._limits, self._period_s,
                          closedness)
        if cmd.flags.rejected:
            self._counts['rejected'] += 1
            self.get_logger().error(f'non-finite action rejected: {action.tolist()}')
            self._holding = False      # always send a hold for a rejected action
            self._hold('non-finite action')
            return
        self._counts['clipped'] += int(cmd.flags.clipped)
        self._counts['clamped'] += int(cmd.flags.clamped)
        # Gripper first: a simulator in lockstep steps once the arm command has come.
        if cmd.gripper_m is not None:
            self._gripper_pub.publish(Float64MultiArray(data=[cmd.gripper_m]))
        self._send_arm(cmd.q_target)
        self._holding = False
        self._counts['commands_sent'] += 1
        latency_ms = (self._now_s() - stamp_to_s(msg.header.stamp)) * 1e3
        self._latency_pub.publish(Float64(data=latency_ms))

    def _on_watchdog(self):
        if not self._enabled:
            return
        stale = self._stale(self._now_s())
        if stale:
            self.get_logger().warning(f'stale inputs {stale}: holding position',
                                   throttle_duration_sec=WARN_THROTTLE_S)
            self._hold(f'stale inputs {stale}')
        else:
            self._holding = False      # fresh again: the next stale period holds again

    def _publish_diagnostics(self):
        now_s = self._now_s()
        stale = self._stale(now_s) if self._enabled else []
        values = dict(self._counts, enabled=self._enabled, holding=self._holding,
                      stale=','.join(stale))
        if stale:
            level, message = WARN, f'holding: stale {stale}'
        else:
            level, message = OK, ('enabled' if self._enabled else 'disabled')
        arr = diagnostic_array(self, 'arm_interface', values, message=message, level=level,
                               hardware_id='iiwa14')
        self._diag_pub.publish(arr)

    def counts(self):
        """Return a copy of the counters (commands_sent, rejected, clipped, clamped, holds,
        ignored)."""
        return dict(self._counts)


def main(args=None):
    """Run the arm_interface node."""
    return spin_node(ArmInterfaceNode, args=args)


if __name__ == '__main__':
    raise SystemExit(main())
