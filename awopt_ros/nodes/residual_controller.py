"""residual_controller: peg insertion by a P-controller plus a learned residual -> arm actions.

Residual RL (Johannink et al. 2019; Schoettler et al. 2019): each control step sends

    u = clip(-kp (x - x_goal) + alpha * r, -max_step_m, max_step_m)      (m, base_link)

with ``x`` the tool tip (``tcp_frame``) from forward kinematics of the measured joints,
``x_goal`` the observed goal, and ``r`` in [-1, 1]^3 the residual actor's output on the 15-D
insertion state (``core.residual.insertion_state``), or 0 with ``residual: off``. The logic
lives in :mod:`awopt_ros.core.residual`; this node converts messages and calls it.

Inputs:

* the goal: ``/insertion/goal`` (``geometry_msgs/PoseStamped`` in ``base_link``, reliable,
  transient local; its position is the peg tip fully inserted, as observed with noise); a goal
  in another frame is refused (error log, counted);
* the joint states: ``joint_states_topic`` (sensor-data QoS) under ``joint_names`` (the
  ``/**`` driver names, :mod:`awopt_ros.ros.robot_params`); the tool position by FK and its
  linear velocity by the Jacobian times the measured joint velocities (by finite differences
  of the tool positions of successive joint states when the message carries no velocities),
  with the kinematics of ``urdf_path`` (the Sawyer's by default);
* the wrist wrench: ``wrench_topic`` (``geometry_msgs/WrenchStamped`` in ``wrench_frame``, the
  tool frame, zeroed at reset; sensor-data QoS); one in another frame is dropped and counted;
* ``/episode/event`` (latched JSON): a ``start`` restarts the step grid at the episode's start
  and clears a force fault (only a ``start`` does: a goal republished mid-episode does not).

When it acts: on a wrench message, at most ``rate_hz`` times a second on the wrench stamps
(:class:`awopt_ros.core.action_rate.ActionGrid`; 0 = on every wrench message). The command is
computed in the wrench callback, so the wrench -> command latency is one callback, and the
action is stamped with that wrench's stamp (``arm_interface`` measures its latency from it).
The pose and the force of a step should be of one instant: a due wrench stamped more than
``joint_state_sync_s`` after the newest joint state (joint states slower than the sensor, or
a wrench that overtook its joint state) waits for the next joint state and acts in that
callback (counted in ``deferred_for_joint_state``); a newer wrench replaces a waiting one.
A due wrench acts only when a goal has arrived, the wrench is at most ``max_wrench_age_s``
old and the newest joint state at most ``max_joint_state_age_s`` (node clock; stamp, else
arrival): otherwise nothing is published (the arm interface holds when its actions stop),
the skip is counted and logged (throttled) and diagnostics report the stale inputs (WARN).

Outputs (mirroring the policy node, so the episode manager, arm interface and logger take
them as they are):

* ``/policy/decision`` (std_msgs/String JSON, reliable; before the action): ``stamp``
  {sec, nanosec} (= the action's), ``source`` ('residual' | 'p_controller'), ``phase``
  ('control' | 'back_off' | 'terminate' | 'hold'), ``observation`` (15 floats, the state
  the residual saw; null in a fault step without a goal or joint state), ``residual``
  (3 floats r, after the model's bounds; zeros when off or in a fault step), ``base_m``
  (P step; null likewise), ``u_m`` (the command), ``force_n`` (|f|), ``episode``,
  ``noise_free_action`` (null);
* ``/policy/action`` (sensor_msgs/JointState, reliable): the 7-D arm action of ``core.spec``,
  ``[u_x, u_y, u_z, 0, 0, 0, terminate]`` (``core.residual.arm_action``), which the arm
  interface filters and turns into joint targets with its IK, as any policy action;
* ``/policy/model_info`` (latched String JSON): ``kind`` ('residual' | 'p_controller'),
  ``model_version`` (0: the model is loaded once, no hot swap), ``model_path``,
  ``contract``, ``decision_topic``, ``residual``, ``alpha_m``, ``kp``,
  ``max_step_m``, ``force_limit_n``, ``back_off_m``;
* ``/residual/fault`` (std_msgs/String JSON, reliable): on a force above ``force_limit_n``:
  ``reason`` 'force_limit', ``force_n``, ``limit_n``, ``wrench`` (6 floats), ``stamp_s``,
  ``episode``;
* ``/diagnostics`` (1 Hz, status 'residual_controller'): counters, the stale inputs, the
  fault state.

Force limit: EVERY wrench message in ``wrench_frame`` is checked, whatever the step grid,
a pending step, the goal or the age of the inputs: when the force magnitude averaged over
the samples of the last ``force_window_s`` (0.05 s: impacts of a few ms do not trip it, a
push does; ``core.residual.ForceWindow``) exceeds ``force_limit_n``, it publishes a
``/residual/fault`` at once (an episode manager with ``fault_topic: /residual/fault`` ends
the episode as 'failed'), then, in the same callback
and stamped with that wrench, a back-off step (``back_off_m`` up, +z in base_link), and logs
an error. The back-off needs a fresh joint state (at most ``max_joint_state_age_s`` old: the
arm is alive); without one, a terminate action (no motion) goes out instead of the back-off.
The back-off takes the step grid's next slot, so the next due step (a period after that
slot) publishes a terminate action (no motion, ``terminate`` set: without a fault topic the episode
manager ends the episode there, outcome 'terminate', not a success); after that the node
publishes no-motion actions (phase 'hold': the arm stays, the episode manager keeps hearing
the policy) on the due wrenches. These fault steps need neither a goal nor fresh inputs (their
decision's ``observation`` and ``base_m`` are null when the goal or joint state is missing).
The fault clears only at the next episode ``start`` event (a new goal does not clear it).

Start-up: with ``residual: model`` the ONNX state actor at ``model_path`` is loaded and its
contract checked (:class:`awopt_ros.core.onnx_policy.OnnxStateActor`, task 'insertion'); its
``residual_alpha_m`` must equal ``alpha_m`` (the residual's scale it was trained with) and its
``kp`` the node's ``kp`` (the base controller it was trained on; relative tolerance 1e-9). A
missing or mismatching model, a bad parameter or a URDF without the joints exits with code 1
and a one-line reason. A model error while acting publishes nothing for that step (counted
in ``step_errors``; the node holds, it does not die).
"""
import json

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from awopt_ros.core import paths, residual
from awopt_ros.core.action_rate import ActionGrid
from awopt_ros.core.onnx_policy import ModelContractError, OnnxStateActor
from awopt_ros.ros import convert, diagnostics, episode_events, qos
from awopt_ros.ros.params import declare
from awopt_ros.ros.robot_params import declare_joint_names
from awopt_ros.ros.run import StartupError, spin_node

GOAL_TOPIC = '/insertion/goal'
DEFAULT_WRENCH_TOPIC = '/force_torque_sensor_broadcaster/wrench'
ACTION_TOPIC = '/policy/action'
DECISION = '/policy/decision'
MODEL_INFO = '/policy/model_info'
FAULT_TOPIC = '/residual/fault'
EVENT_TOPIC = '/episode/event'
#: Default URDF and tool frame: the simulated Sawyer with its peg (``core.sawyer``).
SAWYER_URDF = 'urdf/sawyer.urdf'
TCP_FRAME = 'tcp'
BASE_FRAME = 'base_link'
MODES = ('model', 'off')
#: Fault states: none, back-off sent (terminate next), terminated (hold until cleared).
NO_FAULT, BACKED_OFF, TERMINATED = 'none', 'backed_off', 'terminated'
COUNTERS = ('wrenches', 'actions_published', 'back_offs', 'terminates', 'holds',
            'deferred_for_joint_state',
            'skipped_no_goal', 'skipped_no_joint_state', 'skipped_stale_joint_state',
            'skipped_stale_wrench', 'wrench_frame_mismatch', 'goal_frame_mismatch',
            'bad_inputs', 'step_errors')
_THROTTLE_S = 5.0


def _joint_velocities(msg, names):
    """Return the velocities of joints ``names`` from a JointState, or None when the message
    carries no velocity per name (a driver that publishes positions only)."""
    if len(msg.velocity) < len(msg.name) or not msg.velocity:
        return None
    index = {n: i for i, n in enumerate(msg.name)}
    v = np.array([msg.velocity[index[n]] for n in names], dtype=np.float64)
    return v if np.all(np.isfinite(v)) else None


class ResidualControllerNode(Node):
    """P-controller plus learned residual on the wrench, joint states and goal (see module
    docstring). ``kwargs`` go to ``rclpy.node.Node``.

    Raises:
        StartupError: a bad parameter, a URDF or model that cannot be loaded, or a model whose
            contract does not match.
    """

    def __init__(self, **kwargs):
        super().__init__('residual_controller', **kwargs)
        self.mode = declare(self, 'residual', 'model',
                            "'model': P-controller plus the ONNX residual actor at model_path; "
                            "'off': the P-controller alone.", read_only=True)
        model_path = declare(self, 'model_path', 'models/insertion_residual.onnx',
                             "ONNX state actor of task 'insertion' (residual: model); relative "
                             'paths resolve against the package share directory.',
                             read_only=True)
        threads = declare(self, 'intra_op_threads', 1, 'onnxruntime intra-op threads.',
                          low=1, high=64, read_only=True)
        alpha_m = declare(self, 'alpha_m', 0.002,
                          'Residual bound (m per step per axis): u adds alpha_m * r, r in '
                          "[-1, 1]; must equal the model's residual_alpha_m.",
                          low=0.0, high=0.05, read_only=True)
        kp = declare(self, 'kp', list(residual.KP),
                     'P gains (x, y, z) per step: base = -kp (x - x_goal) (Johannink 2019: '
                     '1, 1, 0.3).', read_only=True)
        max_step_m = declare(self, 'max_step_m', 0.01,
                             'Per-axis clip of the command u (m per step).',
                             low=1e-5, high=0.03, read_only=True)
        force_limit_n = declare(self, 'force_limit_n', 40.0,
                                'Force magnitude (N) above which the controller backs off '
                                'and ends the episode.', low=0.1, high=1000.0, read_only=True)
        back_off_m = declare(self, 'back_off_m', 0.005,
                             'Upward step (m, +z base_link) sent when the force limit is '
                             'exceeded.', low=1e-4, high=0.03, read_only=True)
        rate_hz = declare(self, 'rate_hz', 10.0,
                          'Actions per second on the wrench stamps (the control period the '
                          'residual was trained with); 0 = on every wrench message.',
                          low=0.0, high=1000.0, read_only=True)
        force_window_s = declare(
            self, 'force_window_s', 0.05,
            'The force limit applies to the force magnitude averaged over the wrench samples '
            'of this window (s); 0 = each sample alone.', low=0.0, high=1.0, read_only=True)
        self._force_window = residual.ForceWindow(force_window_s)
        self.max_wrench_age_s = declare(
            self, 'max_wrench_age_s', 0.2,
            'A wrench older than this (s, node clock) when due is stale: nothing published.',
            low=0.001, high=10.0)
        self.max_joint_state_age_s = declare(
            self, 'max_joint_state_age_s', 0.2,
            'Skip a step when the newest joint state is older than this (s, node clock).',
            low=0.001, high=10.0)
        self.joint_state_sync_s = declare(
            self, 'joint_state_sync_s', 0.02,
            'A due wrench whose stamp is more than this (s) newer than the newest joint state '
            'waits for the next joint state (the pose as new as the force), at most until '
            'the inputs go stale.', low=0.0, high=1.0)
        urdf_path = declare(self, 'urdf_path', SAWYER_URDF,
                            'Robot URDF for forward kinematics of the tool tip.',
                            read_only=True)
        tcp_frame = declare(self, 'tcp_frame', TCP_FRAME,
                            'URDF frame of the tool tip (the peg tip).', read_only=True)
        wrench_topic = declare(self, 'wrench_topic', DEFAULT_WRENCH_TOPIC,
                               'geometry_msgs/WrenchStamped topic of the wrist F/T sensor '
                               '(tool frame, zeroed at reset).', read_only=True)
        self.wrench_frame = declare(self, 'wrench_frame', TCP_FRAME,
                                    'frame_id the wrench must carry (the tool frame the '
                                    'residual was trained with); others are dropped.',
                                    read_only=True)
        try:
            self.joint_names, joint_states_topic = declare_joint_names(self)
        except ValueError as exc:
            self._startup_error(f'residual_controller: {exc}', exc)
        if self.mode not in MODES:
            self._startup_error(f'parameter residual must be one of {MODES}, got {self.mode!r}')
        try:
            self.config = residual.ResidualConfig(
                kp=tuple(kp), alpha_m=alpha_m, max_step_m=max_step_m,
                force_limit_n=force_limit_n, back_off_m=back_off_m,
                residual_enabled=self.mode == 'model')
        except (TypeError, ValueError) as exc:
            self._startup_error(f'kp/alpha_m/max_step_m/force_limit_n/back_off_m: {exc}', exc)
        try:
            from awopt_ros.core.kinematics import Kinematics
            self._kin = Kinematics(urdf_path, joint_names=self.joint_names.arm,
                                   tcp_frame=tcp_frame)
        except (FileNotFoundError, ValueError) as exc:
            self._startup_error(f'cannot load kinematics (urdf_path, joint_names, tcp_frame): '
                                f'{exc}', exc)
        self.model_path = ''
        self.actor = None
        if self.mode == 'model':
            self.model_path = str(paths.resolve(model_path))
            self.actor = self._load_actor(self.model_path, threads)
        self.grid = ActionGrid(rate_hz)
        self.rate_hz = rate_hz
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.goal_m = None             # (3,) observed goal, base_link
        self._joint = None             # (stamp or arrival s, arrival s, tool pos, tool vel)
        self._prev_tool = None         # (stamp s, tool pos) for finite differences
        self._wrench_s = None          # stamp (else arrival) of the newest wrench taken (s)
        self._pending = None           # (stamp, stamp s, wrench) of a step waiting for joints
        self.fault = NO_FAULT
        self.fault_detail = ''
        self._force_n = 0.0             # force magnitude over force_window_s (N)
        self._episode = None

        self.decision_pub = self.create_publisher(String, DECISION, qos.COMMAND)
        self.action_pub = self.create_publisher(JointState, ACTION_TOPIC, qos.COMMAND)
        self.fault_pub = self.create_publisher(String, FAULT_TOPIC, qos.COMMAND)
        self.info_pub = self.create_publisher(String, MODEL_INFO, qos.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(JointState, joint_states_topic, self._on_joint_state,
                                 qos.SENSOR)
        self.create_subscription(WrenchStamped, wrench_topic, self._on_wrench, qos.SENSOR)
        self.create_subscription(PoseStamped, GOAL_TOPIC, self._on_goal, qos.LATCHED)
        self.create_subscription(String, EVENT_TOPIC, self._on_event, qos.LATCHED)
        self.create_timer(1.0, self._publish_diagnostics)
        self._publish_model_info()
        self.get_logger().info(
            f'residual_controller ready: residual {self.mode!r}'
            + (f' ({self.model_path})' if self.actor else '')
            + f', kp {list(self.config.kp)}, alpha {self.config.alpha_m} m, max step '
            f'{self.config.max_step_m} m, force limit {self.config.force_limit_n} N, '
            f'{rate_hz} Hz on {wrench_topic}')

    # ---- start-up ----------------------------------------------------------------------------
    def _startup_error(self, message, cause=None):
        self.get_logger().error(message)
        raise StartupError(message) from cause

    def _load_actor(self, path, threads):
        try:
            actor = OnnxStateActor(path, expected_task='insertion', threads=threads)
        except (FileNotFoundError, ModelContractError) as exc:
            self._startup_error(f'model_path: {exc}', exc)
        trained_alpha = float(actor.contract['residual_alpha_m'])
        if not np.isclose(trained_alpha, self.config.alpha_m, rtol=1e-6, atol=1e-9):
            self._startup_error(
                f'model_path: {path} was trained with residual_alpha_m {trained_alpha} m but '
                f'alpha_m is {self.config.alpha_m} m: set alpha_m to {trained_alpha}')
        trained_kp = actor.contract['kp']
        try:
            kp_ok = bool(np.allclose(np.asarray(trained_kp, dtype=np.float64).reshape(3),
                                     self.config.kp, rtol=1e-9, atol=0.0))
        except (TypeError, ValueError):
            kp_ok = False
        if not kp_ok:
            self._startup_error(
                f'model_path: {path} was trained with kp {trained_kp} but kp is '
                f'{list(self.config.kp)}: set kp to {trained_kp}')
        return actor

    def _publish_model_info(self):
        self.info_pub.publish(String(data=json.dumps({
            'kind': 'residual' if self.actor else 'p_controller', 'residual': self.mode,
            'model_version': 0, 'model_path': self.model_path,
            'contract': self.actor.contract if self.actor else None,
            'decision_topic': DECISION, 'fault_topic': FAULT_TOPIC,
            'alpha_m': self.config.alpha_m, 'kp': list(self.config.kp),
            'max_step_m': self.config.max_step_m, 'force_limit_n': self.config.force_limit_n,
            'back_off_m': self.config.back_off_m, 'rate_hz': self.rate_hz})))

    # ---- inputs ------------------------------------------------------------------------------
    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_goal(self, msg):
        if msg.header.frame_id != BASE_FRAME:
            self.counts['goal_frame_mismatch'] += 1
            self.get_logger().error(f'goal in frame {msg.header.frame_id!r} ignored: it must be '
                                    f'in {BASE_FRAME!r}', throttle_duration_sec=_THROTTLE_S)
            return
        try:
            self.goal_m = convert.pose_msg_position(msg)
        except ValueError as exc:
            self.counts['bad_inputs'] += 1
            self.get_logger().error(f'goal ignored: {exc}', throttle_duration_sec=_THROTTLE_S)
            return

    def _on_event(self, msg):
        start = episode_events.start_of(msg.data, self._episode, self.get_logger())
        if start is None:
            return
        self._episode, stamp_s = start
        self.grid.restart(stamp_s)
        self._clear_fault(f'episode {self._episode} started')
        self._force_window.reset()

    def _clear_fault(self, why):
        if self.fault != NO_FAULT:
            self.get_logger().info(f'force fault cleared: {why}')
        self.fault, self.fault_detail = NO_FAULT, ''

    def _on_joint_state(self, msg):
        now_s = self._now_s()
        try:
            q = convert.joint_positions(msg, self.joint_names.arm)
            tool, _ = self._kin.fk(q)
            stamp_s = convert.stamp_to_s(msg.header.stamp)
            dq = _joint_velocities(msg, self.joint_names.arm)
            if dq is not None:
                vel = self._kin.tcp_velocity(q, dq)
            else:
                vel = self._finite_difference(stamp_s if stamp_s > 0.0 else now_s, tool)
        except (KeyError, ValueError) as exc:
            self.counts['bad_inputs'] += 1
            self.get_logger().error(f'joint state not used: {exc}',
                                    throttle_duration_sec=_THROTTLE_S)
            return
        tool = np.asarray(tool, dtype=np.float64)
        self._joint = (stamp_s if stamp_s > 0.0 else now_s, now_s, tool, vel)
        pending = self._pending
        if pending is not None and self._joint[0] >= pending[1] - self.joint_state_sync_s:
            self._pending = None
            self._act(*pending)

    def _finite_difference(self, t_s, tool):
        """Tool velocity (3,) m/s from this and the previous joint state's tool positions
        (zero for the first, or when the stamps do not advance)."""
        prev, self._prev_tool = self._prev_tool, (t_s, np.asarray(tool, dtype=np.float64))
        if prev is None or t_s <= prev[0]:
            return np.zeros(3)
        return (self._prev_tool[1] - prev[1]) / (t_s - prev[0])

    def _on_wrench(self, msg):
        """A wrench message -> (every ``rate_hz``) one step: see the module docstring."""
        self.counts['wrenches'] += 1
        if msg.header.frame_id != self.wrench_frame:
            self.counts['wrench_frame_mismatch'] += 1
            self.get_logger().error(f'wrench in frame {msg.header.frame_id!r} dropped: '
                                    f'wrench_frame is {self.wrench_frame!r}',
                                    throttle_duration_sec=_THROTTLE_S)
            return
        stamp_s = convert.stamp_to_s(msg.header.stamp)
        if stamp_s <= 0.0:   # unstamped: its arrival
            stamp_s = self._now_s()
        try:
            wrench = convert.msg_to_wrench(msg)
        except ValueError as exc:
            self.counts['bad_inputs'] += 1
            self.get_logger().error(f'wrench not used: {exc}', throttle_duration_sec=_THROTTLE_S)
            return
        self._wrench_s = stamp_s
        self._pending = None            # a newer wrench replaces one waiting for joints
        self._force_n = self._force_window.add(stamp_s, wrench)
        if self.fault == NO_FAULT and self._force_n > self.config.force_limit_n:
            self._fault_step(msg.header.stamp, stamp_s, wrench, started=True)
            return
        if not self.grid.due(stamp_s):
            return
        if self.fault != NO_FAULT:      # terminate, then hold: no goal or fresh input needed
            self._fault_step(msg.header.stamp, stamp_s, wrench)
            return
        if (self._joint is not None and not self.stale_inputs(stamp_s)
                and stamp_s - self._joint[0] > self.joint_state_sync_s):
            # the pose is older than the wrench by more than a joint state period: act on
            # the next joint state instead (as new as the wrench), e.g. in lockstep
            self._pending = (msg.header.stamp, stamp_s, wrench)
            self.counts['deferred_for_joint_state'] += 1
            return
        self._act(msg.header.stamp, stamp_s, wrench)

    def _act(self, stamp, stamp_s, wrench):
        """Run one step on the due wrench ``wrench`` (6,) stamped ``stamp`` (``stamp_s`` s),
        unless inputs are stale; advance the step grid when an action went out."""
        if self._stale(stamp_s):
            return
        try:
            self._step(stamp, wrench)
        except Exception as exc:  # noqa: BLE001 - hold (no action) rather than die
            self.counts['step_errors'] += 1
            self.get_logger().error(f'no action published: {type(exc).__name__}: {exc}',
                                    throttle_duration_sec=_THROTTLE_S)
            return
        self.grid.acted(stamp_s)

    def stale_inputs(self, wrench_stamp_s=None):
        """Return the names of the inputs that keep a step from acting now (list of str):
        'goal' (none yet), 'joint_states' (none, or older than ``max_joint_state_age_s``),
        'wrench' (none, or older than ``max_wrench_age_s``: the wrench stamped
        ``wrench_stamp_s`` (s), default the newest one taken)."""
        now_s = self._now_s()
        stale = []
        if self.goal_m is None:
            stale.append('goal')
        if self._joint is None or now_s - self._joint[0] > self.max_joint_state_age_s:
            stale.append('joint_states')
        wrench_s = self._wrench_s if wrench_stamp_s is None else wrench_stamp_s
        if wrench_s is None or now_s - wrench_s > self.max_wrench_age_s:
            stale.append('wrench')
        return stale

    def _stale(self, wrench_stamp_s):
        """Count, log (throttled) and return True when a due step must not act."""
        stale = self.stale_inputs(wrench_stamp_s)
        if not stale:
            return False
        if 'goal' in stale:
            self.counts['skipped_no_goal'] += 1
        if 'joint_states' in stale:
            key = 'skipped_no_joint_state' if self._joint is None else 'skipped_stale_joint_state'
            self.counts[key] += 1
        if 'wrench' in stale:
            self.counts['skipped_stale_wrench'] += 1
        self.get_logger().warning(f'holding (nothing published): stale inputs {stale}',
                                  throttle_duration_sec=_THROTTLE_S)
        return True

    # ---- the step ----------------------------------------------------------------------------
    def _step(self, stamp, wrench):
        """Compute and publish one action stamped ``stamp`` from the inputs (all fresh)."""
        _, _, tool, vel = self._joint
        base = residual.p_controller(tool, self.goal_m, self.config.kp)
        obs = residual.insertion_state(tool, self.goal_m, vel, wrench, base)
        r = self.actor.act(obs) if self.actor is not None else np.zeros(3, dtype=np.float32)
        action = residual.arm_action(residual.command(base, r, self.config))
        self._publish('control', stamp, action, wrench, obs, base, r)

    def _fault_step(self, stamp, stamp_s, wrench, started=False):
        """Publish the fault sequence's step for the wrench ``wrench`` (6,) stamped ``stamp``
        (``stamp_s`` s): with ``started`` the fault message and the back-off (a terminate when
        the joint state is missing or stale), else a terminate after the back-off, else a hold.
        Needs no goal; advances the step grid."""
        config = self.config
        force_n = self._force_n
        if started:
            self.fault_detail = (f'force {force_n:.1f} N (mean over force_window_s) > '
                                 f'force_limit_n {config.force_limit_n} N')
            self.fault_pub.publish(String(data=json.dumps({
                'reason': 'force_limit', 'force_n': force_n, 'limit_n': config.force_limit_n,
                'wrench': [float(v) for v in wrench], 'stamp_s': stamp_s,
                'episode': self._episode})))
            joints_fresh = (self._joint is not None and self._now_s() - self._joint[0]
                            <= self.max_joint_state_age_s)
            if joints_fresh:
                phase, action, self.fault = ('back_off', residual.back_off_action(config),
                                             BACKED_OFF)
                self.counts['back_offs'] += 1
                self.get_logger().error(f'{self.fault_detail}: backing off '
                                        f'{config.back_off_m} m and ending the episode')
            else:
                phase, action, self.fault = 'terminate', residual.terminate_action(), TERMINATED
                self.counts['terminates'] += 1
                self.get_logger().error(f'{self.fault_detail} with no fresh joint state: '
                                        'ending the episode without backing off')
        elif self.fault == BACKED_OFF:
            phase, action, self.fault = 'terminate', residual.terminate_action(), TERMINATED
            self.counts['terminates'] += 1
            self.get_logger().error(f'episode {self._episode} ended as failed after the force '
                                    f'limit: {self.fault_detail}')
        else:
            phase, action = 'hold', residual.arm_action(np.zeros(3))
            self.counts['holds'] += 1
        obs = base = None
        if self._joint is not None and self.goal_m is not None:
            _, _, tool, vel = self._joint
            try:
                base = residual.p_controller(tool, self.goal_m, config.kp)
                obs = residual.insertion_state(tool, self.goal_m, vel, wrench, base)
            except ValueError:      # a non-finite velocity: the fault step goes out anyway
                obs = base = None
        self._publish(phase, stamp, action, wrench, obs, base, np.zeros(3, dtype=np.float32))
        self.grid.acted(stamp_s)

    def _publish(self, phase, stamp, action, wrench, obs, base, r):
        """Publish the decision, then the action (7,) stamped ``stamp``; ``obs`` (15,) and
        ``base`` (3,) may be None (a fault step without a goal or joint state)."""
        def floats(v):
            return None if v is None else [float(x) for x in v]
        self.decision_pub.publish(String(data=json.dumps({
            'stamp': {'sec': int(stamp.sec), 'nanosec': int(stamp.nanosec)},
            'source': 'residual' if self.actor is not None else 'p_controller',
            'phase': phase, 'episode': self._episode,
            'observation': floats(obs), 'residual': floats(r), 'base_m': floats(base),
            'u_m': floats(action[:3]), 'force_n': float(np.linalg.norm(wrench[:3])),
            'noise_free_action': None})))
        self.action_pub.publish(convert.action_to_msg(action, stamp))
        self.counts['actions_published'] += 1

    # ---- diagnostics -------------------------------------------------------------------------
    def _publish_diagnostics(self):
        stale = self.stale_inputs()
        bad = self.counts['step_errors'] + self.counts['bad_inputs']
        if bad or self.fault != NO_FAULT:
            level = diagnostics.ERROR
        elif stale or self.counts['wrench_frame_mismatch'] or self.counts['goal_frame_mismatch']:
            level = diagnostics.WARN
        else:
            level = diagnostics.OK
        values = dict(self.counts, **self.grid.counters(), residual=self.mode,
                      fault=self.fault, fault_detail=self.fault_detail,
                      stale_inputs=','.join(stale), episode=self._episode)
        message = (f'force fault ({self.fault}): {self.fault_detail}' if self.fault != NO_FAULT
                   else f'holding: stale inputs {stale}' if stale
                   else f"{self.counts['actions_published']} actions")
        self.diag_pub.publish(diagnostics.diagnostic_array(
            self, 'residual_controller', values, message=message, level=level,
            hardware_id='onnx' if self.actor else 'p_controller'))


def main(args=None):
    """Run the residual controller node; return the exit code (1 when it cannot start)."""
    return spin_node(ResidualControllerNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
