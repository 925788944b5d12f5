"""success_detector: camera success classifier -> success probability and debounced decision.

Where no simulator says whether the grasp (or insertion) succeeded, this node says it from the
camera: a small CNN (``models/grasp_success.onnx``, written by ``awopt train-classifier``; the
runtime is :class:`awopt_ros.core.success_classifier.SuccessClassifier`) scores each policy
image, and :class:`awopt_ros.core.success_classifier.SuccessDebouncer` turns the scores into a
decision that the episode manager ends episodes on (``success_source: classifier``).

Inputs:

* ``image_topic`` (default ``/policy/image``; sensor_msgs/Image rgb8, ``image_size`` square,
  sensor-data QoS; from camera_pipeline, stamped with the camera frame's stamp). A frame of
  another size or encoding is dropped, counted (``dropped_bad_size`` /
  ``dropped_bad_encoding``) and warned about (throttled, 5 s).
* ``/episode/event`` (latched std_msgs/String JSON): every ``start`` resets the debouncer, and
  frames stamped at or before that start (its ``stamp_s``; the node clock's time of arrival
  when the event has none) still get a classification but do not count towards the decision
  (``frames_stale``): as for the episode manager's steps, a frame stamped at the start itself
  may show the previous episode (under sim_robot's lockstep the simulated clock stands still
  while the scene resets). Frames whose stamp is not newer than the last one counted do not
  count either (``frames_out_of_order``).

Outputs, for each frame scored (classification first, then the decision):

* ``/success_detector/classification`` (vision_msgs/Classification, reliable): ``header`` =
  the frame's header (its stamp is the camera frame's), ``results`` = one
  ``ObjectHypothesis(class_id='success', score=p)``, p in [0, 1];
* ``/success_detector/success`` (std_msgs/Bool, reliable): the debounced decision after the
  frame (none for a stale frame): true once ``debounce_frames`` consecutive frames score at or
  above ``on_threshold``; a frame below ``off_threshold`` resets it; a frame in between holds
  the run;
* ``/diagnostics`` status ``success_detector`` at 1 Hz (hardware_id 'onnx'): ``frames_received``,
  ``frames_scored``, ``frames_stale``, ``frames_out_of_order``, the drop counters,
  ``score_errors``, ``latency_ms_p50`` / ``latency_ms_p99`` (frame arrival to classification
  published, over the last :data:`LATENCY_WINDOW` frames; 'nan' before the first),
  ``frame_age_ms`` (node clock minus the latest frame's stamp at its arrival), ``probability``
  and ``decision`` (latest), ``run``, ``episode``, ``model``, ``task``, ``on_threshold``,
  ``off_threshold``, ``debounce_frames``. Level WARN after dropped frames, ERROR after a
  scoring error.

Parameters (all read-only): ``model_path``, ``on_threshold`` / ``off_threshold`` (0.0 = the
model contract's value), ``debounce_frames`` (0 = the contract's K), ``image_topic``,
``image_size`` and ``crop_xywh`` (the policy image this node gets; the launcher checks they
agree with camera_pipeline's, and the model's contract must match them), ``task`` ('' = any).

Start-up: a missing file, a file that is not a readable ONNX model, a model that is not a
success classifier, a contract that does not match ``image_size`` / ``crop_xywh`` / ``task``
or thresholds out of range are logged in one line naming the parameter and the file, and the
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
from awopt_ros.core.spec import POLICY_CROP_XYWH, POLICY_IMAGE_SIZE
from awopt_ros.core.success_classifier import (ModelContractError, ModelFileError,
                                               ModelRunError, SuccessClassifier,
                                               SuccessDebouncer, check_thresholds,
                                               expected_contract)
from awopt_ros.ros import convert, diagnostics, episode_events, qos
from awopt_ros.ros.params import declare
from awopt_ros.ros.run import StartupError, spin_node

CLASSIFICATION_TOPIC = '/success_detector/classification'
SUCCESS_TOPIC = '/success_detector/success'
#: ``class_id`` of the one hypothesis in each classification.
SUCCESS_CLASS = 'success'
#: Frames the latency percentiles are taken over.
LATENCY_WINDOW = 300


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
        task = declare(self, 'task', '',
                       "Task the model must be trained for ('grasp' | 'insertion'; '' = any).",
                       read_only=True)

        self.model_path = str(paths.resolve(model_path)) if model_path else ''
        if not self.model_path:
            self._startup_error('model_path: empty (the success detector needs a model)')
        try:
            self.classifier = SuccessClassifier(
                self.model_path, expected_contract(task or None, image_size, crop_xywh))
        except (FileNotFoundError, ModelFileError, ModelContractError) as exc:
            self._startup_error(f'model_path: {exc}', exc)
        c = self.classifier
        try:
            self.on_threshold, self.off_threshold, self.debounce_frames = check_thresholds(
                on or c.on_threshold, off or c.off_threshold, k or c.debounce_frames)
        except ValueError as exc:
            self._startup_error(f'on_threshold/off_threshold/debounce_frames: {exc} (0 = the '
                                f'contract of {self.model_path})', exc)
        self.debouncer = SuccessDebouncer(self.on_threshold, self.off_threshold,
                                          self.debounce_frames)
        self.layout = FrameLayoutCheck((c.image_size, c.image_size))

        self.counts = dict.fromkeys(('frames_received', 'frames_scored', 'frames_stale',
                                     'frames_out_of_order', 'score_errors'), 0)
        self._latency_ms = collections.deque(maxlen=LATENCY_WINDOW)
        self._frame_age_ms = float('nan')
        self._probability = float('nan')
        self._episode = None            # number of the episode whose start was handled
        self._start_s = None            # its start (s, stamp clock); None before any start
        self._last_counted_s = None     # stamp of the last frame fed to the debouncer (s)

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
            f'{self.debounce_frames} frames')

    def _startup_error(self, message, cause=None):
        self.get_logger().error(message)
        raise StartupError(message) from cause

    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_event(self, msg):
        start = episode_events.start_of(msg.data, self._episode, self.get_logger())
        if start is None:
            return
        self._episode, stamp_s = start
        self._start_s = float(stamp_s) if stamp_s is not None else self._now_s()
        self._last_counted_s = None
        self.debouncer.reset()

    def _on_image(self, msg):
        """Score one policy image; publish its classification and (when it counts) the
        decision."""
        t0 = time.perf_counter()
        self.counts['frames_received'] += 1
        stamp_s = convert.stamp_to_s(msg.header.stamp)
        self._frame_age_ms = (self._now_s() - stamp_s) * 1e3
        why = self.layout.check(msg.encoding, msg.width, msg.height, msg.step, len(msg.data))
        if why is not None:
            self.get_logger().warning(f'policy image dropped: {why} ({self.layout.dropped} '
                                      'dropped so far)', throttle_duration_sec=5.0)
            return
        try:
            p = self.classifier.score(convert.image_view(msg))
        except (ValueError, ModelRunError) as exc:
            self.counts['score_errors'] += 1
            self.get_logger().error(f'frame not scored: {exc}', throttle_duration_sec=5.0)
            return
        self._probability = p
        self.class_pub.publish(Classification(
            header=msg.header, results=[ObjectHypothesis(class_id=SUCCESS_CLASS, score=p)]))
        self.counts['frames_scored'] += 1
        self._latency_ms.append((time.perf_counter() - t0) * 1e3)
        if self._start_s is not None and convert.not_after(msg.header.stamp, self._start_s):
            self.counts['frames_stale'] += 1
            return
        if self._last_counted_s is not None and stamp_s <= self._last_counted_s:
            self.counts['frames_out_of_order'] += 1
            return
        self._last_counted_s = stamp_s
        self.success_pub.publish(Bool(data=self.debouncer.update(p)))

    def _publish_diagnostics(self):
        def ms(value):
            return 'nan' if value is None or value != value else f'{value:.3f}'

        c = self.classifier
        dropped = self.layout.dropped
        level = (diagnostics.ERROR if self.counts['score_errors']
                 else diagnostics.WARN if dropped else diagnostics.OK)
        values = dict(
            self.counts, **self.layout.counters(),
            latency_ms_p50=ms(percentile_ms(self._latency_ms, 50)),
            latency_ms_p99=ms(percentile_ms(self._latency_ms, 99)),
            frame_age_ms=ms(self._frame_age_ms), probability=ms(self._probability),
            decision=self.debouncer.decision, run=self.debouncer.run, episode=self._episode,
            model=self.model_path, task=c.task, on_threshold=self.on_threshold,
            off_threshold=self.off_threshold, debounce_frames=self.debounce_frames)
        self.diag_pub.publish(diagnostics.diagnostic_array(
            self, 'success_detector', values,
            message=f"{self.counts['frames_scored']} frames scored, decision "
                    f'{self.debouncer.decision}, {dropped} dropped',
            level=level, hardware_id='onnx'))


def main(args=None):
    """Run the success detector; return the exit code (1 when the model cannot be loaded)."""
    return spin_node(SuccessDetectorNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
