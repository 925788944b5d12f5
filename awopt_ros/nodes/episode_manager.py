"""episode_manager: reset -> enable -> run -> done, one episode at a time.

Services ``/episode/start`` (refused until the reset/enable services are up and, with
``wait_for_logger``, the logger reports its inputs flowing; refused while a required node is
silent or the logger does not accept episodes; the reset waits for the reply to
the previous episode's disable call; the ``start`` event follows the arm's enable reply, so
every step of the episode reaches a live arm) and ``/episode/stop`` (std_srvs/Trigger); events on
``/episode/event`` (latched std_msgs/String JSON, see docs/INTERFACES.md).

Required nodes are watched all the time, not only during episodes: the camera (its
``<camera_ns>/color/camera_info``), the joint states (``joint_states_topic``: a message counts
when it names every arm joint of ``joint_names``; one that lacks some is not counted, and a
throttled warning names them; one of the gripper joint alone, from a separate gripper
driver, is ignored), the camera pipeline (its 1 Hz ``/diagnostics`` status:
no extra reader on the frame -> command path's ``/policy/image``), the policy
(``/policy/action``) and, with ``wait_for_logger``, the logger (its 1 Hz ``/diagnostics``
status). One silent for longer than its timeout ends a running episode as ``node_lost`` naming
it; a logger that reports ``accepting_episodes: false`` refuses the next start with its reason
(disk nearly full), and after a write error (``write_errors`` > 0) also ends a running episode
as ``failed``. With ``fault_topic`` set (the insertion stack: ``/residual/fault``, where the
residual controller reports a force above its limit), a std_msgs/String there ends a running
episode as ``failed`` with its text as the detail.

Success (``success_source``, read-only): ``ground_truth`` (default; the simulator's
``/success/probability``, std_msgs/Float32, ``success_debounce_steps`` samples in a row at or
above ``success_threshold``) or ``classifier`` (the ``success_detector`` node's debounced
decision ``/success_detector/success``, std_msgs/Bool, reliable: a true one ends the episode
as a success). Either counts only after a camera frame stamped after the episode's start
(samples still in flight from before the reset must not end the new episode); a true decision
also only after a false one in the episode (the detector's decision stays true from the
previous episode's success until it has seen the new start and reset its debouncer). With
``classifier`` the success detector is a required node too, heard from through its 1 Hz
``/diagnostics`` status 'success_detector' (``success_detector_timeout_s``), and one that
scores no frame is taken for dead as well: while its latest status is ERROR (it has scored no
frame for its ``input_timeout_s``; its message says since when) a start is refused with its
message, and a running episode ends as ``node_lost`` ('not working: success_detector (status
ERROR: <message>)'), but only on a status that came ``success_detector_grace_s`` (or the
``input_timeout_s`` the status reports, if longer) after the episode's start: one sent before
the detector saw the start describes the time before it. (Frames flow between episodes too,
the simulator's, also in lockstep, and the camera's on hardware, so an idle detector scores
on; the grace covers its status in flight.) Either way the
ground-truth samples that come are followed, and the ``end`` event carries
``success_source`` and ``ground_truth_success`` (true/false; null when no sample came, e.g.
on hardware). The decisions live in :mod:`awopt_ros.core.episode` and
:mod:`awopt_ros.core.liveness`; this node only wires topics and services to them.
"""
import json
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, JointState
from std_msgs.msg import Bool, Float32, String
from std_srvs.srv import SetBool, Trigger

from awopt_ros.core.episode import Episode, EpisodeConfig, check_success_source
from awopt_ros.core.liveness import SILENT, NodeMonitor
from awopt_ros.core.robot_names import check_topic_ns
from awopt_ros.ros import convert, qos
from awopt_ros.ros.diagnostics import (logger_ready, logger_refusal, logger_write_failed,
                                       parse_values)
from awopt_ros.ros.params import declare
from awopt_ros.ros.robot_params import declare_camera_ns, declare_joint_names
from awopt_ros.ros.run import StartupError, spin_node

#: Required nodes watched with ``node_timeout_s``, and what is heard from each (the camera
#: pipeline: with ``camera_pipeline_timeout_s``), under the simulator's driver names (a node
#: uses its ``camera_ns`` and ``joint_states_topic``). Their data pause while the simulator
#: resets, so each counts as heard from at an episode's start.
WATCHED = {'camera': '/camera/color/camera_info', 'joint_states': '/joint_states',
           'camera_pipeline': "/diagnostics status 'camera_pipeline'",
           'policy': '/policy/action'}
#: Nodes heard from through their 1 Hz diagnostics status (name = node name), paced by their
#: node clock: the camera pipeline, with ``success_source`` 'classifier' the success
#: detector, and with ``wait_for_logger`` the logger.
STATUS_NODES = ('camera_pipeline', 'success_detector', 'logger')
#: The success detector (``success_source`` 'classifier'): heard from through its diagnostics
#: status (1 Hz), with ``success_detector_timeout_s``; its decision topic.
DETECTOR_SIGNAL = "/diagnostics status 'success_detector'"
DETECTOR_DECISION = '/success_detector/success'
#: The success detector's status key holding its input timeout (s), if it reports one.
DETECTOR_INPUT_TIMEOUT_KEY = 'input_timeout_s'
#: The logger is heard from through its diagnostics status (1 Hz), with ``logger_timeout_s``.
LOGGER_SIGNAL = "/diagnostics status 'logger'"


class EpisodeManagerNode(Node):
    """Runs episodes on request: reset the cell, enable the arm, watch for the end."""

    def __init__(self, **kwargs):
        super().__init__('episode_manager', **kwargs)
        try:
            self.joint_names, joints_topic = declare_joint_names(self)
            _, info_topic = declare_camera_ns(self)
        except ValueError as exc:
            raise StartupError(f'episode_manager: {exc}') from exc
        config = dict(
            max_steps=declare(self, 'max_steps', 40, 'Actions per episode before timeout.',
                              low=1, high=100000),
            timeout_s=declare(self, 'timeout_s', 30.0, 'Episode time limit (s, node clock).',
                              low=0.1, high=86400.0),
            success_threshold=declare(self, 'success_threshold', 0.5,
                                      'Success probability that counts as success.',
                                      low=0.01, high=1.0),
            success_debounce=declare(self, 'success_debounce_steps', 2,
                                     'Consecutive success samples needed.', low=1, high=100),
            node_timeout_s=declare(self, 'node_timeout_s', 2.0,
                                   'Camera (camera_info), joint states or policy '
                                   '(/policy/action) silent this long (s, wall) ends a '
                                   'running episode as node_lost and refuses '
                                   '/episode/start.', low=0.1, high=60.0),
        )
        self.reset_timeout_s = declare(self, 'reset_timeout_s', 10.0,
                                       'Time allowed for the reset service (s, wall).',
                                       low=0.1, high=600.0)
        self.reset_retry_s = declare(
            self, 'reset_retry_s', 4.0,
            'Resend the reset request when no reply came within this time (s, wall): a '
            'request sent while DDS is still matching the service can be lost. Only the '
            'reply to the latest request starts the episode.', low=0.1, high=600.0)
        reset_service = declare(self, 'reset_service', '/sim/reset',
                                'std_srvs/Trigger service that resets the cell to home.',
                                read_only=True)
        enable_service = declare(self, 'enable_service', '/arm/enable',
                                 'std_srvs/SetBool service that enables the arm interface.',
                                 read_only=True)
        self.wait_for_logger = declare(
            self, 'wait_for_logger', True,
            "Refuse /episode/start ('logger not available') until the logger's /diagnostics "
            'report camera frames, policy images, actions and joint states received, so its '
            'bag and dataset hold every episode from the first step (DDS discovery can take '
            'a second per topic after start-up). The logger is then a required node: '
            'start refused and a running episode ended (node_lost) when its diagnostics stop '
            'for logger_timeout_s; start refused while it reports accepting_episodes false '
            '(disk nearly full, write error) and, after a write error, a running episode '
            'ended (failed). false for a stack without a logger.', read_only=True)
        logger_timeout_s = declare(
            self, 'logger_timeout_s', 3.0,
            "The logger's /diagnostics (1 Hz) silent this long means a dead logger (with "
            'wait_for_logger; s, on the wall clock and, since the logger paces them by its '
            'node clock, on the node clock too).', low=0.5, high=600.0, read_only=True)
        pipeline_timeout_s = declare(
            self, 'camera_pipeline_timeout_s', 3.0,
            "The camera pipeline's /diagnostics status (1 Hz) silent this long ends a running "
            'episode as node_lost and refuses /episode/start (s, on the wall clock and, as '
            'its node clock paces it, on the node clock too).', low=0.5, high=600.0,
            read_only=True)
        self.success_source = declare(
            self, 'success_source', 'ground_truth',
            "What ends an episode as a success: ground_truth (the simulator's "
            '/success/probability, success_threshold and success_debounce_steps) or classifier '
            "(the success_detector node's debounced /success_detector/success; the detector is "
            'then a required node). The end event reports the ground truth either way.',
            read_only=True)
        try:
            check_success_source(self.success_source)
        except ValueError as exc:
            raise StartupError(f'episode_manager: {exc}') from exc
        detector_timeout_s = declare(
            self, 'success_detector_timeout_s', 3.0,
            "With success_source classifier: the success detector's /diagnostics status (1 Hz) "
            'silent this long ends a running episode as node_lost and refuses /episode/start '
            '(s, on the wall clock and, as its node clock paces it, on the node clock too).',
            low=0.5, high=600.0, read_only=True)
        self.detector_grace_s = declare(
            self, 'success_detector_grace_s', 1.0,
            'With success_source classifier: a success_detector status ERROR (no frame scored '
            'for its input_timeout_s) ends a running episode as node_lost only when it came '
            'this long after the episode start (s, wall; the input_timeout_s its status '
            'reports counts if longer): a status sent before the detector saw the start '
            'describes the time before it. A start is refused on any ERROR status.',
            low=0.0, high=60.0, read_only=True)
        self._detector_input_timeout_s = 0.0   # as its latest status reports it (0: none)
        fault_topic = declare(
            self, 'fault_topic', '',
            'std_msgs/String topic on which a controller reports a fault that ends the running '
            "episode as failed (the insertion stack: /residual/fault, force limit); '' = none",
            read_only=True)
        self.config = EpisodeConfig(**config, success_source=self.success_source)
        self.logger_ready = False
        # in data-flow order (liveness lists silent nodes so): the detector after the pipeline
        timeouts = {}
        for name in WATCHED:
            timeouts[name] = self.config.node_timeout_s
            if name == 'camera_pipeline':
                timeouts[name] = pipeline_timeout_s
                if self.success_source == 'classifier':
                    timeouts['success_detector'] = detector_timeout_s
        signals = dict(WATCHED, camera=info_topic, joint_states=joints_topic,
                       success_detector=DETECTOR_SIGNAL)
        #: inputs paused by the reset: each counts as heard from at an episode's start
        self._paused_by_reset = tuple(n for n in timeouts if n != 'logger')
        if self.wait_for_logger:
            timeouts['logger'] = logger_timeout_s
            signals['logger'] = LOGGER_SIGNAL
        self.monitor = NodeMonitor(timeouts, signals, clock_paced=STATUS_NODES)
        # Nodes that keep episodes from starting, logged on change; None until every required
        # node has been heard from (start-up).
        self.problem_nodes = None

        self.episode_index = 0
        self.episode = None        # Episode while running
        self.pending = None        # description of the start sequence in progress
        self.start_request_s = 0.0
        self.reset_future = None   # the latest reset request's future
        self.reset_sent_s = 0.0    # when it was sent (monotonic s)
        self.reset_requests = 0    # reset requests sent, retries included
        self.enable_future = None  # the enable request of the start in progress
        self.last_seed = None
        # The disable call of the last end; the next reset waits for its reply, so that arm
        # and gripper commands the arm interface sent before it stopped reach the simulator
        # before its reset, not after (they would drag the arm back to the old pose).
        self.disabling = None

        self.events = self.create_publisher(String, '/episode/event', qos.LATCHED)
        self.reset_client = self.create_client(Trigger, reset_service)
        self.enable_client = self.create_client(SetBool, enable_service)
        self.create_service(Trigger, '/episode/start', self._on_start)
        self.create_service(Trigger, '/episode/stop', self._on_stop)
        if fault_topic:
            # Before /policy/action: a fault and the action sent with it, taken in one round
            # of the executor, end the episode as failed, not by the action.
            self.create_subscription(String, check_topic_ns(fault_topic, 'fault_topic'),
                                     self._on_fault, qos.COMMAND)
        self.create_subscription(JointState, '/policy/action', self._on_action, qos.COMMAND)
        # Ground truth: followed with either source (the end event's ground_truth_success).
        self.create_subscription(Float32, '/success/probability', self._on_success, qos.COMMAND)
        if self.success_source == 'classifier':
            self.create_subscription(Bool, DETECTOR_DECISION, self._on_detector, qos.COMMAND)
        self._arm_joints = frozenset(self.joint_names.arm)
        self.create_subscription(JointState, joints_topic, self._on_joint_states, qos.SENSOR)
        self.create_subscription(CameraInfo, info_topic, self._on_camera, qos.SENSOR)
        # The camera pipeline's and the logger's status: not a reader of /policy/image, which
        # would add one more delivery to every frame on the frame -> command path.
        self._diag_sub = self.create_subscription(DiagnosticArray, '/diagnostics',
                                                  self._on_diagnostics, 50)
        # Success samples (and detector decisions) count only after a camera frame newer
        # than the episode's start: samples still in flight from before the reset must not
        # end the new episode.
        self.fresh_frame = False
        # A true detector decision counts only after a false one in the episode: the last
        # episode's success stays the detector's decision until it resets on the start event.
        self.detector_armed = False
        # Wall-clock timer: with use_sim_time a dead simulator stops the node clock.
        self.create_timer(0.05, self._on_timer, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # -- time -------------------------------------------------------------------------------
    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    # -- start sequence: reset -> enable -> running ------------------------------------------
    def _on_start(self, request, response):
        if self.episode is not None or self.pending is not None:
            response.success = False
            response.message = json.dumps({'error': 'an episode is already running',
                                           'episode': self.episode_index})
            return response
        for client in (self.reset_client, self.enable_client):
            if not client.service_is_ready():
                response.success = False
                response.message = json.dumps(
                    {'error': f'service {client.srv_name} not available'})
                return response
        refusal = self.monitor.start_refusal(time.monotonic(), self._now_s())
        if refusal is not None:
            response.success = False
            response.message = json.dumps(refusal)
            return response
        if self.wait_for_logger and not self.logger_ready:
            response.success = False
            response.message = json.dumps(
                {'error': 'logger not available: it has not yet received camera frames, '
                          'policy images, actions and joint states (see its /diagnostics)'})
            return response
        self.episode_index += 1
        self.start_request_s = time.monotonic()
        disabling, self.disabling = self.disabling, None
        if disabling is not None and not disabling.done():
            self.pending = 'disable'
            disabling.add_done_callback(lambda _: self._reset(after_disable=True))
        else:
            self._reset()
        response.success = True
        response.message = json.dumps({'episode': self.episode_index})
        return response

    def _reset(self, after_disable=False):
        if after_disable and self.pending != 'disable':
            return   # the start was aborted (timeout) while the disable was in flight
        self.pending = 'reset'
        self._send_reset()

    def _send_reset(self):
        if self.reset_future is not None and not self.reset_future.done():
            self.reset_client.remove_pending_request(self.reset_future)
        self.reset_sent_s = time.monotonic()
        self.reset_requests += 1
        self.reset_future = self.reset_client.call_async(Trigger.Request())
        self.reset_future.add_done_callback(self._after_reset)

    def _after_reset(self, future):
        if self.pending != 'reset' or future is not self.reset_future:
            return   # aborted, or the reply to a request superseded by a retry
        result = future.result()
        if result is None or not result.success:
            self.get_logger().error(f'reset failed: {getattr(result, "message", "no reply")}')
            self._abort_start('reset failed')
            return
        try:
            self.last_seed = json.loads(result.message).get('seed')
        except (ValueError, AttributeError):
            self.last_seed = None
        # Enable the arm before the episode starts: an action of the episode that reached a
        # still disabled arm interface would be logged as a step that moved nothing (the
        # first step of most episodes did, before). The arm interface ignores actions on
        # frames stamped at or before its enable and reports that time: it becomes the
        # episode's start, so the steps are exactly the actions the arm acts on.
        self.pending = 'enable'
        self.enable_future = self.enable_client.call_async(SetBool.Request(data=True))
        self.enable_future.add_done_callback(self._after_enable)

    def _after_enable(self, future):
        result = future.result()
        enabled = result is not None and result.success
        if self.pending != 'enable' or future is not self.enable_future:
            if enabled and self.episode is None and self.pending is None:
                # Answered after the start was aborted: no episode may drive the arm.
                self.disabling = self.enable_client.call_async(SetBool.Request(data=False))
            return
        if not enabled:
            self.get_logger().error('arm interface refused to enable: '
                                    f'{getattr(result, "message", "no reply")}')
            self._abort_start('arm interface did not enable')
            return
        # Announce the episode as the arm goes live, so the logger records from its start.
        start_s = self._enable_stamp(result.message, self._now_s())
        self.episode = Episode(self.episode_index, start_s, self.config)
        self.monitor.expect_from(self._paused_by_reset, time.monotonic())
        self.monitor.grace('success_detector', time.monotonic() + max(
            self.detector_grace_s, self._detector_input_timeout_s))
        self.fresh_frame = False
        self.detector_armed = False
        self._publish({'event': 'start', 'episode': self.episode_index, 'seed': self.last_seed,
                       'stamp_s': start_s})
        self.get_logger().info(f'episode {self.episode_index} started (seed {self.last_seed})')
        self.pending = None

    @staticmethod
    def _enable_stamp(message, now_s):
        """Return the episode's start (s, node clock): the enable time the arm interface
        reports (``stamp_s`` in its JSON reply; it acts on actions stamped after it), else
        ``now_s`` (an enable service that does not report one, or a time more than a second
        off: another clock). It may be ahead of ``now_s`` by a /clock message not yet
        received here."""
        try:
            stamp_s = float(json.loads(message)['stamp_s'])
        except (ValueError, TypeError, KeyError):
            return now_s
        return stamp_s if stamp_s > 0.0 and abs(stamp_s - now_s) < 1.0 else now_s

    def _abort_start(self, why):
        self.pending = None
        self._publish({'event': 'start_failed', 'episode': self.episode_index, 'detail': why,
                       'stamp_s': self._now_s()})

    # -- inputs ------------------------------------------------------------------------------
    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name in ('camera_pipeline', 'success_detector'):
                # (the detector is watched only with success_source classifier: else ignored)
                self.monitor.seen(status.name, time.monotonic(), self._now_s())
            if status.name == 'success_detector' and self.success_source == 'classifier':
                self._on_detector_status(status)
            if status.name != 'logger' or not self.wait_for_logger:
                continue
            values = parse_values(status)
            self.monitor.seen('logger', time.monotonic(), self._now_s())
            self.monitor.set_refusing('logger', logger_refusal(values, status.message),
                                      fault=logger_write_failed(values))
            if logger_ready(values) and not self.logger_ready:
                self.logger_ready = True
                self.get_logger().info('logger receives every input it records: episodes '
                                       'may start')

    def _on_detector_status(self, status):
        """Follow whether the success detector scores frames: ERROR = it has scored none for
        its input timeout (see the module doc)."""
        values = parse_values(status)
        try:
            input_timeout_s = float(values.get(DETECTOR_INPUT_TIMEOUT_KEY, 0.0))
        except ValueError:
            input_timeout_s = 0.0
        if 0.0 < input_timeout_s < 600.0:
            self._detector_input_timeout_s = input_timeout_s
        stall = None
        if status.level == DiagnosticStatus.ERROR:
            stall = f'status ERROR: {status.message}' if status.message else 'status ERROR'
            if 'since_last_scored_s' in values and not status.message:
                stall += f' (since_last_scored_s {values["since_last_scored_s"]})'
        self.monitor.set_stalled('success_detector', stall, time.monotonic())

    def _seen(self, name):
        self.monitor.seen(name, time.monotonic())

    def _on_joint_states(self, msg):
        found = self._arm_joints.intersection(msg.name)
        if len(found) == len(self._arm_joints):
            self._seen('joint_states')
        elif found or self.joint_names.gripper not in msg.name:
            missing = [j for j in self.joint_names.arm if j not in found]
            self.get_logger().warning(
                f'{self.monitor.signals["joint_states"]}: joint state without the arm joints '
                f'{missing} (parameter joint_names), it names {list(msg.name)}: not counted as '
                'the joint state driver heard from', throttle_duration_sec=5.0)

    def _on_camera(self, msg):
        self._seen('camera')
        if self.episode is not None and not self.fresh_frame:
            self.fresh_frame = convert.stamp_to_s(msg.header.stamp) > self.episode.start_s

    def _on_action(self, msg):
        if self.episode is None:
            self._seen('policy')   # between episodes: the policy acts at its action rate
            return
        # Actions computed on frames from before the episode started are not its steps, nor
        # is one on a frame stamped at the start itself: under a paused simulated clock
        # (sim_robot lockstep) that frame came before the arm's enable.
        if convert.not_after(msg.header.stamp, self.episode.start_s):
            return
        self._seen('policy')
        try:
            action = convert.msg_to_action(msg)
        except ValueError as exc:
            self.get_logger().error(f'bad action message: {exc}')
            return
        self._finish(self.episode.on_action(action, self._now_s()))

    def _on_fault(self, msg):
        if self.episode is not None:
            self._finish(self.episode.fail(self._now_s(), f'fault: {msg.data}'))

    def _on_success(self, msg):
        if self.episode is not None and self.fresh_frame:
            self._finish(self.episode.on_success_probability(float(msg.data), self._now_s()))

    def _on_detector(self, msg):
        if self.episode is None:
            return
        if not msg.data:
            self.detector_armed = True
        elif self.detector_armed and self.fresh_frame:
            self._finish(self.episode.on_classifier_success(True, self._now_s()))

    def _on_stop(self, request, response):
        if self.episode is None:
            response.success = False
            response.message = json.dumps({'error': 'no episode is running'})
            return response
        result = self.episode.stop(self._now_s())
        response.success = True
        response.message = json.dumps({'episode': result.episode, 'outcome': result.outcome})
        self._finish(result)
        return response

    def _on_timer(self):
        if self.episode is not None:
            now = self._now_s()
            problem = self.monitor.episode_problem(time.monotonic(), now)
            if problem is None:
                self._finish(self.episode.check(now))
            elif problem[0] == 'failed':
                self._finish(self.episode.fail(now, problem[1]))
            else:
                self._finish(self.episode.abort(now, problem[1]))
            return
        if self.pending is None:   # (a reset pauses the simulator's data)
            self._report_problems()
        if self.pending is not None and (
                time.monotonic() - self.start_request_s > self.reset_timeout_s):
            self.get_logger().error(f'start sequence stuck in {self.pending}')
            self._abort_start(f'{self.pending} timed out')
        elif self.pending == 'reset' and (
                time.monotonic() - self.reset_sent_s > self.reset_retry_s):
            self.get_logger().warning(f'no reply from {self.reset_client.srv_name} within '
                                      f'{self.reset_retry_s} s: sending the reset again')
            self._send_reset()

    def _report_problems(self):
        """Log (once per change) which required nodes keep episodes from starting."""
        refusal = self.monitor.start_refusal(time.monotonic(), self._now_s())
        nodes = tuple(refusal['nodes']) if refusal is not None else ()
        if self.problem_nodes is None and (refusal is None or refusal['kind'] == SILENT):
            # Start-up: nodes not heard from yet are expected, not worth a warning.
            self.problem_nodes = None if refusal is not None else ()
            return
        if nodes != self.problem_nodes:
            if refusal is not None:
                self.get_logger().warning(f'episodes refused: {refusal["error"]}')
            elif self.problem_nodes:   # neither None (start-up) nor ()
                self.get_logger().info('every required node is live again: episodes may start')
            self.problem_nodes = nodes

    # -- end ---------------------------------------------------------------------------------
    def _finish(self, result):
        if result is None:
            return
        self.episode = None
        if self.enable_client.service_is_ready():
            self.disabling = self.enable_client.call_async(SetBool.Request(data=False))
        self._publish(result.as_event(self._now_s()))
        text = (f'episode {result.episode} ended: {result.outcome} after {result.steps} steps '
                f'{result.detail}')
        if result.success:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    def _publish(self, event):
        self.events.publish(String(data=json.dumps(event)))


def main(args=None):
    return spin_node(EpisodeManagerNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
