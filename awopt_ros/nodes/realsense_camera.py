"""realsense_camera: an Intel RealSense camera (or a recording of one) through pyrealsense2,
under the realsense-ros 4.x names, so that either driver can run the cell.

Publishes, with ``<ns>`` = ``/<camera_namespace>/<camera_name>`` (``/camera/camera`` by
default):

- ``<ns>/color/image_raw`` (sensor_msgs/Image rgb8) and ``<ns>/color/camera_info`` (from the
  device intrinsics), frame ``<camera_name>_color_optical_frame``;
- with ``enable_depth``: ``<ns>/depth/image_rect_raw`` (16UC1, mm) and ``<ns>/depth/camera_info``,
  frame ``<camera_name>_depth_optical_frame``;
- with ``align_depth.enable``: ``<ns>/aligned_depth_to_color/image_raw`` (16UC1, mm, the colour
  image's size and frame) and ``<ns>/aligned_depth_to_color/camera_info``;
- ``/tf_static``: ``<name>_link`` -> ``<name>_color_frame`` -> ``<name>_color_optical_frame``
  (and depth likewise) from the device extrinsics, when ``publish_tf`` and tf2_msgs is
  importable;
- ``/diagnostics`` at 1 Hz (status ``realsense_camera``): OK while frames arrive, WARN while the
  first frame is awaited, ERROR when the camera is missing (unplugged, wrong ``serial_no``),
  frames are later than ``frame_timeout_s``, or the recording ended.

Images use sensor-data QoS (best effort); a reliable subscriber (rviz's default) needs
``qos_overrides.<topic>.publisher.reliability: reliable`` on this node.

Frames are read on a thread of their own and published as they arrive. Late frames: the
device is closed, nothing is published (so that the arm's camera watchdog holds), and it is
reopened, every ``reconnect_period_s`` while it is missing; streaming resumes when it returns.

Stamps (:class:`awopt_ros.core.realsense.StampMapper`): a live camera's frames carry their
device timestamp in librealsense's global time (the host clock), as realsense-ros does by
default; a played recording's frames carry their arrival time, as the recording is played
not in real time (no frame is dropped, however slow the reader), paced at its recorded rate
(at most ``frame_timeout_s / 2`` between frames).

``rosbag_filename`` plays a recording (``.bag``; pyrealsense2 2.59 also plays ``.db3``): its
own streams, whatever the profiles say. It plays once (``repeat_playback`` false, as
realsense-ros does): then diagnostics report ERROR 'the recording ended'. A file that does
not exist or cannot be played stops the node at start-up with the reason.
"""
import threading
import time
import traceback

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image

from awopt_ros.core import realsense
from awopt_ros.ros import convert, diagnostics, qos
from awopt_ros.ros.params import declare
from awopt_ros.ros.run import StartupError, spin_node

try:
    from tf2_msgs.msg import TFMessage
except ImportError:     # built into the venv by `make setup`; a ROS install has it
    TFMessage = None

#: Longest single wait inside the reader thread (s): how fast it notices a stop.
_READ_SLICE_S = 0.1
_LEVELS = {realsense.OK: diagnostics.OK, realsense.WARN: diagnostics.WARN,
           realsense.ERROR: diagnostics.ERROR}


class RealSenseCameraNode(Node):
    """Publish a RealSense camera's (or a recording's) colour, depth, camera_info and static
    transforms under realsense-ros names; report its health on /diagnostics.

    Args:
        device_factory: ``callable(CameraConfig) -> RealSenseDevice`` (default
            :class:`awopt_ros.core.realsense.PyRealSenseDevice`); tests pass a fake.
        **kwargs: rclpy ``Node`` arguments (``context``, ``parameter_overrides`` ...).

    Raises:
        StartupError: a bad parameter, a missing ``rosbag_filename`` or one that cannot be
            played, or pyrealsense2 missing.
    """

    def __init__(self, device_factory=None, **kwargs):
        super().__init__('realsense_camera', **kwargs)
        self._closed = False
        self._serial_number_as_text()
        namespace = declare(self, 'camera_namespace', 'camera',
                            'Namespace of the camera topics: /<camera_namespace>/<camera_name>/'
                            '... (realsense-ros).', read_only=True)
        name = declare(self, 'camera_name', 'camera',
                       'Camera name: topics /<camera_namespace>/<camera_name>/..., frames '
                       '<camera_name>_link, <camera_name>_color_optical_frame ...',
                       read_only=True)
        try:
            self.config = realsense.CameraConfig(
                color_profile=declare(self, 'rgb_camera.color_profile', '640x480x30',
                                      'Colour stream WIDTHxHEIGHTxFPS (px, px, Hz); rgb8.',
                                      read_only=True),
                depth_profile=declare(self, 'depth_module.depth_profile', '848x480x30',
                                      'Depth stream WIDTHxHEIGHTxFPS (px, px, Hz); z16.',
                                      read_only=True),
                enable_depth=declare(self, 'enable_depth', False,
                                     'Publish depth/image_rect_raw (16UC1, mm).',
                                     read_only=True),
                align_depth=declare(self, 'align_depth.enable', False,
                                    'Publish aligned_depth_to_color/image_raw (16UC1, mm, '
                                    "the colour image's size and frame).", read_only=True),
                serial_no=declare(self, 'serial_no', '',
                                  "Serial number of the camera to open ('' = the first "
                                  'found; a leading _ is dropped, as in realsense-ros).',
                                  read_only=True),
                rosbag_filename=declare(self, 'rosbag_filename', '',
                                        'RealSense recording (.bag or .db3) to play instead '
                                        "of a live camera ('' = live).", read_only=True),
                repeat_playback=declare(self, 'repeat_playback', False,
                                        'Play the recording in a loop (false: once, as '
                                        'realsense-ros does).', read_only=True),
                frame_timeout_s=declare(self, 'frame_timeout_s', 0.5,
                                        'Frames further apart than this are late: '
                                        'diagnostics ERROR, the device is reopened (s).',
                                        low=0.01, high=60.0, read_only=True),
                reconnect_period_s=declare(self, 'reconnect_period_s', 1.0,
                                           'Retry period for opening a missing camera (s).',
                                           low=0.01, high=60.0, read_only=True))
            topics = realsense.camera_topics(namespace, name)
            self.ids = realsense.frame_ids(name)
        except (ValueError, FileNotFoundError) as exc:
            raise StartupError(str(exc)) from exc
        self.publish_tf = declare(self, 'publish_tf', True,
                                  "Publish the camera's internal static transforms on "
                                  '/tf_static (needs tf2_msgs).', read_only=True)
        self.topics = topics
        self.monitor = realsense.StreamMonitor(self.config.frame_timeout_s)
        self.stamps = realsense.StampMapper(arrival=self.config.playback)
        try:
            self.device = (device_factory or realsense.PyRealSenseDevice)(self.config)
        except ImportError as exc:
            raise StartupError(str(exc)) from exc
        self.info = None                  # DeviceInfo while the device is open
        self.last_info = None             # DeviceInfo of the last device opened
        self._infos = {}                  # camera_info messages of the open device

        image_qos = dict(qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.color_pub = self.create_publisher(Image, topics['color_image'], qos.SENSOR,
                                               **image_qos)
        self.color_info_pub = self.create_publisher(CameraInfo, topics['color_info'],
                                                    qos.SENSOR, **image_qos)
        self.depth_pub = self.depth_info_pub = None
        self.aligned_pub = self.aligned_info_pub = None
        if self.config.enable_depth:
            self.depth_pub = self.create_publisher(Image, topics['depth_image'], qos.SENSOR,
                                                   **image_qos)
            self.depth_info_pub = self.create_publisher(CameraInfo, topics['depth_info'],
                                                        qos.SENSOR, **image_qos)
        if self.config.align_depth:
            self.aligned_pub = self.create_publisher(Image, topics['aligned_depth_image'],
                                                     qos.SENSOR, **image_qos)
            self.aligned_info_pub = self.create_publisher(
                CameraInfo, topics['aligned_depth_info'], qos.SENSOR, **image_qos)
        self.tf_pub = None
        if self.publish_tf and TFMessage is None:
            self.get_logger().info("tf2_msgs is not importable: the camera's static "
                                   'transforms are not published on /tf_static')
        elif self.publish_tf:
            self.tf_pub = self.create_publisher(TFMessage, '/tf_static', qos.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        if self.config.playback:    # a file that cannot be played stops the node now
            try:
                info = self.device.open()
            except (realsense.DeviceUnavailable, RuntimeError) as exc:
                raise StartupError(f'rosbag_filename: {exc}') from exc
            self._on_open(info)
        self._last_diag = (time.monotonic(), 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='realsense_reader', daemon=True)
        self._thread.start()
        self.create_timer(1.0, self._publish_diagnostics)

    def _serial_number_as_text(self):
        """Take a ``serial_no`` given as a number (``-p serial_no:=8316...``) as its text."""
        overrides = getattr(self, '_parameter_overrides', None)   # rclpy keeps no public copy
        given = overrides.get('serial_no') if overrides else None
        if given is not None and given.type_ == Parameter.Type.INTEGER:
            overrides['serial_no'] = Parameter('serial_no', Parameter.Type.STRING,
                                               str(given.value))
            self.get_logger().warning(
                f'serial_no given as the number {given.value}: taken as the text '
                f"'{given.value}' (leading zeros are lost: write it as _<serial>)")

    # -- the reader thread ------------------------------------------------------------------
    def _run(self):
        """The reader thread: :meth:`_read_loop`; an unexpected error stops it, and then
        diagnostics report ERROR (as nothing is published any more)."""
        try:
            self._read_loop()
        except Exception as exc:    # reported on /diagnostics and in the log, then it ends
            if self._stop.is_set() or not self.context.ok():
                return              # shutting down: the context went first
            self.monitor.open_failed(f'the camera reader stopped: {exc!r}', time.monotonic())
            self.get_logger().fatal(f'the camera reader stopped:\n{traceback.format_exc()}')

    def _read_loop(self):
        """Open the device, publish its frames, reopen it when frames stop (until close)."""
        log = self.get_logger()
        while not self._stop.is_set():
            if self.info is None:
                try:
                    info = self.device.open()
                except (realsense.DeviceUnavailable, RuntimeError) as exc:
                    self.monitor.open_failed(str(exc), time.monotonic())
                    log.error(f'camera not available: {exc}; retrying every '
                              f'{self.config.reconnect_period_s:g} s',
                              throttle_duration_sec=10.0)
                    self._stop.wait(self.config.reconnect_period_s)
                    continue
                self._on_open(info)
            try:
                frames = self._next_frames()
            except realsense.PlaybackEnded:
                self.monitor.ended(time.monotonic())
                log.info(f'{self.config.rosbag_filename}: the recording ended after '
                         f'{self.monitor.frames} frames')
                self._close_device()
                return
            except (realsense.FrameTimeout, realsense.DeviceUnavailable, RuntimeError) as exc:
                self.monitor.timed_out(time.monotonic())
                log.error(f'{self.monitor.reason} ({exc}): publishing stops, reopening the '
                          'camera')
                self._close_device()
                continue
            if frames is None:      # stopping
                return
            self._publish(frames)
            if self.config.playback:    # the device does not pace a recording: its rate does
                self._stop.wait(min(1.0 / max(self.info.color_fps, 1.0),
                                    0.5 * self.config.frame_timeout_s))

    def _next_frames(self):
        """Return the next Frames, or None when the node stops.

        Raises:
            FrameTimeout: none before the monitor's deadline (frame_timeout_s after the last).
            PlaybackEnded: the recording ended.
        """
        while not self._stop.is_set():
            remaining = self.monitor.deadline() - time.monotonic()
            if remaining <= 0.0:
                raise realsense.FrameTimeout(f'none for frame_timeout_s '
                                             f'{self.config.frame_timeout_s:g}')
            try:
                return self.device.read(min(remaining, _READ_SLICE_S))
            except realsense.FrameTimeout:
                continue
        return None

    def _on_open(self, info):
        """The device opened: build its camera_info, publish its static transforms."""
        self.info = self.last_info = info
        self.stamps.reset()
        self.monitor.opened(time.monotonic())
        ids = self.ids
        self._infos = {'color': self._camera_info(info.color, ids.color_optical_frame)}
        if info.depth is not None:
            self._infos['depth'] = self._camera_info(info.depth, ids.depth_optical_frame)
        self._infos['aligned'] = self._infos['color']
        source = self.config.rosbag_filename or 'live'
        self.get_logger().info(
            f'{info.name or "RealSense"} serial {info.serial_no or "?"} firmware '
            f'{info.firmware or "?"} ({source}): colour {info.color.width}x{info.color.height} '
            f'at {info.color_fps:g} Hz on {self.topics["color_image"]}')
        if self.tf_pub is not None:
            self._publish_static_tf(info)

    def _camera_info(self, intrinsics, frame_id):
        fields = realsense.camera_info_fields(intrinsics)
        msg = CameraInfo(width=fields['width'], height=fields['height'],
                         distortion_model=fields['distortion_model'], d=fields['d'],
                         k=fields['k'], r=fields['r'], p=fields['p'])
        msg.header.frame_id = frame_id
        return msg

    def _publish_static_tf(self, info):
        stamp = self.get_clock().now().to_msg()
        transforms = []
        for t in realsense.static_transforms(self.ids, info.color_to_depth):
            msg = TransformStamped()
            msg.header.stamp = stamp
            msg.header.frame_id, msg.child_frame_id = t.parent, t.child
            tr, rot = msg.transform.translation, msg.transform.rotation
            tr.x, tr.y, tr.z = t.translation
            rot.x, rot.y, rot.z, rot.w = t.rotation
            transforms.append(msg)
        self.tf_pub.publish(TFMessage(transforms=transforms))

    def _publish(self, frames):
        now_ns = self.get_clock().now().nanoseconds
        ns = self.stamps.stamp_ns(frames.timestamp_ms, frames.domain, now_ns)
        stamp = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        self.color_pub.publish(convert.numpy_to_image(frames.color, stamp,
                                                      self.ids.color_optical_frame))
        self._publish_info(self.color_info_pub, 'color', stamp)
        if self.depth_pub is not None and frames.depth is not None:
            self.depth_pub.publish(depth_image(frames.depth, stamp, self.ids.depth_optical_frame))
            self._publish_info(self.depth_info_pub, 'depth', stamp)
        if self.aligned_pub is not None and frames.aligned_depth is not None:
            self.aligned_pub.publish(depth_image(frames.aligned_depth, stamp,
                                                 self.ids.color_optical_frame))
            self._publish_info(self.aligned_info_pub, 'aligned', stamp)
        self.monitor.frame(time.monotonic())

    def _publish_info(self, pub, key, stamp):
        msg = self._infos.get(key)
        if msg is not None:
            msg.header.stamp = stamp
            pub.publish(msg)

    def _close_device(self):
        self.info = None
        self.device.close()

    # -- diagnostics, shutdown --------------------------------------------------------------
    def _publish_diagnostics(self):
        now = time.monotonic()
        level, message = self.monitor.status(now)
        last_t, last_frames = self._last_diag
        frames = self.monitor.frames
        rate_hz = (frames - last_frames) / max(now - last_t, 1e-6)
        self._last_diag = (now, frames)
        age = self.monitor.frame_age_s(now)
        info = self.last_info
        if level == realsense.OK and info is not None:
            message = (f'streaming {info.color.width}x{info.color.height} at '
                       f'{rate_hz:.1f} Hz')
        values = dict(frames=frames, frame_rate_hz=f'{rate_hz:.2f}',
                      last_frame_age_s='' if age is None else f'{age:.3f}',
                      late=self.monitor.timeouts, reconnects=max(0, self.monitor.opens - 1),
                      open_failures=self.monitor.open_failures,
                      source=self.config.rosbag_filename or 'live',
                      serial_no=(info.serial_no if info else self.config.serial_no),
                      device=(info.name if info else ''),
                      firmware=(info.firmware if info else ''),
                      color_topic=self.topics['color_image'])
        self.diag_pub.publish(diagnostics.diagnostic_array(
            self, 'realsense_camera', values, message=message, level=_LEVELS[level],
            hardware_id=values['serial_no'] or 'realsense'))

    def close(self):
        """Stop the reader thread and close the device (idempotent)."""
        if self._closed:
            return
        self._closed = True
        stop = getattr(self, '_stop', None)
        if stop is not None:
            stop.set()
            self._thread.join(timeout=10.0)
        device = getattr(self, 'device', None)
        if device is not None:
            device.close()

    def destroy_node(self):
        self.close()
        return super().destroy_node()


def depth_image(depth_mm, stamp, frame_id):
    """Return a ``sensor_msgs/Image`` (16UC1, little endian) holding ``depth_mm`` (H, W)
    uint16 millimetres.

    Raises:
        ValueError: not a 2-D uint16 array.
    """
    if depth_mm.ndim != 2 or depth_mm.dtype != 'uint16':
        raise ValueError(f'depth must be (H, W) uint16, got {depth_mm.shape} {depth_mm.dtype}')
    msg = Image(height=int(depth_mm.shape[0]), width=int(depth_mm.shape[1]),
                encoding='16UC1', is_bigendian=0, step=2 * int(depth_mm.shape[1]))
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.data = depth_mm.astype('<u2', copy=False).tobytes()
    return msg


def main(args=None):
    return spin_node(RealSenseCameraNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
