"""success_detector: camera success classifier -> success probability and debounced decision.

Where no simulator says whether the grasp (or insertion) succeeded, this node says it from the
camera: a small CNN (``models/grasp_success.onnx``, written by ``awopt train-classifier``; the
runtime is :class:`awopt_ros.core.success_classifier.SuccessClassifier`) scores each policy
image, and :class:`awopt_ros.core.success_classifier.SuccessDebouncer` turns the scores into a
decision that the episode manager ends episodes on (``success_source: classifier``).

Inputs:

* ``image_topic`` (default ``/policy/image``; sensor_msgs/Image rgb8, ``image_size`` square,
  sensor-data QoS; from camera_pipeline, stamped with the camera frame's stamp; typically 30
  Hz). A frame of another size or encoding is dropped, counted (``dropped_bad_size`` /
  ``dropped_bad_encoding``) and warned about (throttled, 5 s); like a frame that fails scoring
  (``score_errors``) it resets the debouncer and a false decision is published.
* ``/episode/event`` (latched std_msgs/String JSON): every ``start`` resets the debouncer and
  publishes one false decision (the episode manager takes a true decision only after a false
  one in the episode; with K = 1 the first counted frame may already be true). Frames stamped
  at or before that start (its ``stamp_s``; the node clock's time of arrival when the event
  has none) still get a classification but do not count towards the decision
  (``frames_stale``): as for the episode manager's steps, a frame stamped at the start itself
  may show the previous episode (under sim_robot's lockstep the simulated clock stands still
  while the scene resets).

Every frame is scored and classified; only some are counted into the debouncer
(:class:`awopt_ros.core.success_classifier.CountedDecision`): the thresholds and K were chosen
on frames one control step apart (the contract's ``frame_period_s``, 0.1 s), so a frame counts
only when stamped at least 0.9 x ``debounce_period_s`` after the last counted one
(``frames_too_soon`` otherwise); frames not newer than the last counted one
(``frames_out_of_order``) or older than ``max_frame_age_s`` at arrival (``frames_too_old``)
do not count either; a stamp gap over ``max_gap_s`` since the last counted frame resets the
debouncer before the frame counts (``gap_resets``).

Outputs (classification first, then the decision):

* ``/success_detector/classification`` (vision_msgs/Classification, reliable), for every frame
  scored: ``header`` = the frame's header (its stamp is the camera frame's), ``results`` = one
  ``ObjectHypothesis(class_id='success', score=p)``, p in [0, 1];
* ``/success_detector/success`` (std_msgs/Bool, reliable): the debounced decision after each
  counted frame, and false after every reset (episode start, unscored frame): true once
  ``debounce_frames`` consecutive counted frames score at or above ``on_threshold`` (any
  counted frame below it before then starts the run again); once true it stays true until a
  counted frame scores below ``off_threshold``;
* ``/diagnostics`` status ``success_detector`` at 1 Hz (hardware_id 'onnx'): ``frames_received``,
  ``frames_scored``, ``frames_counted``, ``frames_stale``, ``frames_out_of_order``,
  ``frames_too_old``, ``frames_too_soon``, ``gap_resets``, the drop counters,
  ``score_errors``, ``latency_ms_p50`` / ``latency_ms_p99`` (frame arrival to classification
  published, over the last :data:`LATENCY_WINDOW` frames; 'nan' before the first),
  ``frame_age_ms`` (node clock minus the latest frame's stamp at its arrival),
  ``since_last_scored_s`` (node clock minus the arrival of the last frame scored; 'nan'
  before the first), ``probability`` and ``decision`` (latest), ``run``, ``episode``,
  ``model``, ``task``, ``on_threshold``, ``off_threshold``, ``debounce_frames``,
  ``debounce_period_s``, ``max_gap_s``, ``max_frame_age_s``, ``input_timeout_s``. Level ERROR
  when no frame was scored for ``input_timeout_s`` since the first frame arrived or since the
  latest episode start (message :data:`INPUT_TIMEOUT_MESSAGE`: ``'no frame scored for 1.23 s
  (input_timeout_s 1)'``), else WARN after dropped frames or scoring errors, else OK.

Parameters (all read-only): ``model_path``, ``on_threshold`` / ``off_threshold`` (0.0 = the
model contract's value), ``debounce_frames`` (0 = the contract's K), ``debounce_period_s``
(0.0 = the contract's ``frame_period_s``), ``max_gap_s`` (0.0 = 3 x the debounce period),
``max_frame_age_s`` (0.5 s; 0.0 = off), ``input_timeout_s`` (1.0 s), ``image_topic``,
``image_size``, ``crop_xywh``, ``source_width`` / ``source_height`` (the policy image this node
gets and the camera frame it is cut from; the launcher checks they agree with
camera_pipeline's, and the model's contract must match them), ``task`` ('' = any).

Start-up: a missing file, a file that is not a readable ONNX model, a model that is not a
success classifier, a contract that does not match ``image_size`` / ``crop_xywh`` /
``source_width`` x ``source_height`` / ``task`` or thresholds out of range are logged in
one line naming the parameter and the file, and the
process exits with code 1 (:class:`awopt_ros.ros.run.StartupError`).
"""
import collections
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from vision_msgs.msg import Classification, ObjectHypothesis

from awopt_ros.core import paths
from awopt_ros.core.image_ops import FrameLayoutCheck
from awopt_ros.core.report import percentile_ms
from awopt_ros.core.spec import POLICY_CROP_XYWH, POLICY_IMAGE_SIZE, SOURCE_SIZE
from awopt_ros.core.success_classifier import (GAP_PERIODS, CountedDecision,
                                               ModelContractError, ModelFileError,
                                               ModelRunError, SuccessClassifier,
                                               SuccessDebouncer, check_frame_period,
                                               check_thresholds, expected_contract)
from awopt_ros.ros import convert, diagnostics, episode_events, qos
from awopt_ros.ros.params import declare
from awopt_ros.ros.run import StartupError, spin_node

CLASSIFICATION_TOPIC = '/success_detector/classification'
SUCCESS_TOPIC = '/success_detector/success'
#: ``class_id`` of the one hypothesis in each classification.
SUCCESS_CLASS = 'success'
#: Frames the latency percentiles are taken over.
LATENCY_WINDOW = 300
#: The ERROR status message when no frame was scored for ``input_timeout_s``.
INPUT_TIMEOUT_MESSAGE = 'no frame scored for {since_s:.2f} s (input_timeout_s {timeout_s:g})'


class SuccessDetectorNode(Node):
    """Policy image -> success probability (every frame) and debounced decision."""

    def __init__(self, **kwargs):
        super().__init__('success_detector', **kwargs)
        model_path = declare(self, 'model_path', 'models/grasp_success.onnx',
                             'Success classifier ONNX (awopt train-classifier); relative paths '
                             'resolve against the package share directory.', read_only=True)
        on = declare(self, 'on_threshold', 0.0,
                     'Probability at or above which a frame counts towards success '
                     "(0.0 = the model contract's on_threshold).", low=0.0, high=1.0,
                     read_only=True)
        off = declare(self, 'off_threshold', 0.0,
                      'Probability below which the run of frames and the decision reset '
                      "(0.0 = the model contract's off_threshold).", low=0.0, high=1.0,
                      read_only=True)
        k = declare(self, 'debounce_frames', 0,
                    'Consecutive frames at or above on_threshold before the decision is '
                    "success (0 = the model contract's debounce_frames).", low=0, high=10000,
                    read_only=True)
        period = declare(self, 'debounce_period_s', 0.0,
                         'Time (s) between the frames counted into the debouncer: a frame '
                         'counts when stamped at least 0.9 x this after the last counted one '
                         "(0.0 = the model contract's frame_period_s, the rate its thresholds "
                         'and K were chosen at).', low=0.0, high=60.0, read_only=True)
        max_gap_s = declare(self, 'max_gap_s', 0.0,
                            'A stamp gap (s) over this since the last counted frame resets the '
                            'debouncer before the frame counts (0.0 = 3 x the debounce '
                            'period).', low=0.0, high=3600.0, read_only=True)
        max_age_s = declare(self, 'max_frame_age_s', 0.5,
                            'Frames older than this (s, node clock minus stamp) when they arrive '
                            'are classified but not counted (0.0 = no limit).', low=0.0,
                            high=3600.0, read_only=True)
        self.input_timeout_s = declare(
            self, 'input_timeout_s', 1.0,
            'Diagnostics level ERROR when no frame was scored for this long (s, node clock) '
            'since the first frame arrived or since the latest episode start.', low=0.01,
            high=3600.0, read_only=True)
        image_topic = declare(self, 'image_topic', '/policy/image',
                              'Policy images to score (sensor_msgs/Image rgb8, image_size '
                              'square).', read_only=True)
        image_size = declare(self, 'image_size', POLICY_IMAGE_SIZE,
                             "Policy image side (px); must match the model's contract.",
                             low=8, high=1024, read_only=True)
        crop_xywh = [int(v) for v in declare(
            self, 'crop_xywh', list(POLICY_CROP_XYWH),
            'Camera crop (x, y, w, h; source px) the policy images are made with; must match '
            "the model's contract.", read_only=True)]
        source_wh = [declare(self, 'source_width', SOURCE_SIZE[0],
                             'Camera frame width (px) the policy images are cut from; must match '
                             "the model's contract (source_size).", low=16, high=8192,
                             read_only=True),
                     declare(self, 'source_height', SOURCE_SIZE[1],
                             'Camera frame height (px) the policy images are cut from; must '
                             "match the model's contract (source_size).", low=16, high=8192,
                             read_only=True)]
        task = declare(self, 'task', '',
                       "Task the model must be trained for ('grasp' | 'insertion'; '' = any).",
                       read_only=True)

        self.model_path = str(paths.resolve(model_path)) if model_path else ''
        if not self.model_path:
            self._startup_error('model_path: empty (the success detector needs a model)')
        try:
            self.classifier = SuccessClassifier(
                self.model_path, expected_contract(task or None, image_size, crop_xywh,
                                                   source_wh))
        except (FileNotFoundError, ModelFileError, ModelContractError) as exc:
            self._startup_error(f'model_path: {exc}', exc)
        c = self.classifier
        try:
            self.on_threshold, self.off_threshold, self.debounce_frames = check_thresholds(
                on or c.on_threshold, off or c.off_threshold, k or c.debounce_frames)
        except ValueError as exc:
            self._startup_error(f'on_threshold/off_threshold/debounce_frames: {exc} (0 = the '
                                f'contract of {self.model_path})', exc)
        try:
            self.debounce_period_s = check_frame_period(period or c.frame_period_s)
            self.max_gap_s = float(max_gap_s or GAP_PERIODS * self.debounce_period_s)
            self.max_frame_age_s = float(max_age_s)
            self.debouncer = SuccessDebouncer(self.on_threshold, self.off_threshold,
                                              self.debounce_frames)
            self.counted = CountedDecision(self.debouncer, self.debounce_period_s,
                                           self.max_gap_s, self.max_frame_age_s,
                                           convert.STAMP_TOLERANCE_S)
        except ValueError as exc:
            self._startup_error(f'debounce_period_s/max_gap_s: {exc} (0 = the contract of '
                                f'{self.model_path})', exc)
        self.layout = FrameLayoutCheck((c.image_size, c.image_size))

        self.counts = dict.fromkeys(('frames_received', 'frames_scored', 'score_errors'), 0)
        self._latency_ms = collections.deque(maxlen=LATENCY_WINDOW)
        self._frame_age_ms = float('nan')
        self._probability = float('nan')
        self._episode = None            # number of the episode whose start was handled
        self._last_scored_s = None      # node clock at the last scored frame's arrival (s)
        self._watch_since_s = None      # node clock: first frame's arrival or latest start

        self.class_pub = self.create_publisher(Classification, CLASSIFICATION_TOPIC,
                                               qos.COMMAND)
        self.success_pub = self.create_publisher(Bool, SUCCESS_TOPIC, qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(Image, image_topic, self._on_image, qos.SENSOR)
        self.create_subscription(String, '/episode/event', self._on_event, qos.LATCHED)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f'success classifier {self.model_path} (task {c.task!r}, {c.image_size} px) on '
            f'{image_topic}: on {self.on_threshold:.3f}, off {self.off_threshold:.3f}, '
            f'{self.debounce_frames} frames {self.debounce_period_s:g} s apart')

    def _startup_error(self, message, cause=None):
        self.get_logger().error(message)
        raise StartupError(message) from cause

    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_event(self, msg):
        start = episode_events.start_of(msg.data, self._episode, self.get_logger())
        if start is None:
            return
        now_s = self._now_s()
        self._episode, stamp_s = start
        self.counted.start(float(stamp_s) if stamp_s is not None else now_s)
        self._watch_since_s = now_s
        self.success_pub.publish(Bool(data=False))

    def _not_scored(self):
        """A frame that could not be scored: reset the decision and publish it (false)."""
        self.counted.unscored()
        self.success_pub.publish(Bool(data=False))

    def _on_image(self, msg):
        """Score one policy image; publish its classification and, when it counts (or cannot
        be scored), the decision."""
        t0 = time.perf_counter()
        now_s = self._now_s()
        self.counts['frames_received'] += 1
        if self._watch_since_s is None:
            self._watch_since_s = now_s
        stamp_s = convert.stamp_to_s(msg.header.stamp)
        self._frame_age_ms = (now_s - stamp_s) * 1e3
        why = self.layout.check(msg.encoding, msg.width, msg.height, msg.step, len(msg.data))
        if why is not None:
            self.get_logger().warning(f'policy image dropped: {why} ({self.layout.dropped} '
                                      'dropped so far)', throttle_duration_sec=5.0)
            self._not_scored()
            return
        try:
            p = self.classifier.score(convert.image_view(msg))
        except (ValueError, ModelRunError) as exc:
            self.counts['score_errors'] += 1
            self.get_logger().error(f'frame not scored: {exc}', throttle_duration_sec=5.0)
            self._not_scored()
            return
        self._probability = p
        self._last_scored_s = now_s
        self.class_pub.publish(Classification(
            header=msg.header, results=[ObjectHypothesis(class_id=SUCCESS_CLASS, score=p)]))
        self.counts['frames_scored'] += 1
        self._latency_ms.append((time.perf_counter() - t0) * 1e3)
        if self.counted.offer(p, stamp_s, now_s) is None:
            self.success_pub.publish(Bool(data=self.counted.decision))

    def input_status(self, now_s):
        """Return ``(since_last_scored_s, timed_out)`` at node-clock time ``now_s``:
        timed out when nothing was scored for ``input_timeout_s`` since the first frame
        arrived or since the latest episode start (whichever is later); NaN before the first
        scored frame."""
        since = now_s - self._last_scored_s if self._last_scored_s is not None else float('nan')
        marks = [t for t in (self._last_scored_s, self._watch_since_s) if t is not None]
        timed_out = bool(marks) and now_s - max(marks) > self.input_timeout_s
        return since, timed_out

    def _publish_diagnostics(self):
        def ms(value):
            return 'nan' if value is None or value != value else f'{value:.3f}'

        c = self.classifier
        dropped = self.layout.dropped
        now_s = self._now_s()
        since, timed_out = self.input_status(now_s)
        if timed_out:
            marks = [t for t in (self._last_scored_s, self._watch_since_s) if t is not None]
            level = diagnostics.ERROR
            message = INPUT_TIMEOUT_MESSAGE.format(since_s=now_s - max(marks),
                                                   timeout_s=self.input_timeout_s)
        else:
            level = (diagnostics.WARN if dropped or self.counts['score_errors']
                     else diagnostics.OK)
            message = (f"{self.counts['frames_scored']} frames scored, "
                       f"{self.counted.counts['frames_counted']} counted, decision "
                       f'{self.debouncer.decision}, {dropped} dropped')
        values = dict(
            self.counts, **self.counted.counts, **self.layout.counters(),
            latency_ms_p50=ms(percentile_ms(self._latency_ms, 50)),
            latency_ms_p99=ms(percentile_ms(self._latency_ms, 99)),
            frame_age_ms=ms(self._frame_age_ms), since_last_scored_s=ms(since),
            probability=ms(self._probability),
            decision=self.debouncer.decision, run=self.debouncer.run, episode=self._episode,
            model=self.model_path, task=c.task, on_threshold=self.on_threshold,
            off_threshold=self.off_threshold, debounce_frames=self.debounce_frames,
            debounce_period_s=self.debounce_period_s, max_gap_s=self.max_gap_s,
            max_frame_age_s=self.max_frame_age_s, input_timeout_s=self.input_timeout_s)
        self.diag_pub.publish(diagnostics.diagnostic_array(
            self, 'success_detector', values, message=message, level=level,
            hardware_id='onnx'))


def main(args=None):
    """Run the success detector; return the exit code (1 when the model cannot be loaded)."""
    return spin_node(SuccessDetectorNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
