"""Intel RealSense (D400) camera logic without ROS: profiles, camera_info, frame ids, static
transforms, stamps, stream health, and the device behind a small interface.

Names and conventions follow the realsense-ros 4.x driver, so that its node and
``awopt_ros.nodes.realsense_camera`` can replace each other:

- profiles are ``'WxHxFPS'`` text (``rgb_camera.color_profile: 640x480x30``);
- frame ids are ``<camera_name>_link`` (the depth camera's origin), ``<camera_name>_color_frame``,
  ``<camera_name>_color_optical_frame``, ``<camera_name>_depth_frame``,
  ``<camera_name>_depth_optical_frame``; images carry the optical frame of their stream, and
  the depth image aligned to colour carries the colour optical frame;
- ``camera_info``: ``K``/``P`` from the stream intrinsics, ``R`` identity, ``D`` the five
  librealsense coefficients under ``plumb_bob`` (four under ``equidistant`` for
  Kannala-Brandt), whatever the librealsense model (Brown-Conrady, inverse or modified
  Brown-Conrady): realsense-ros names them so;
- static transforms: ``<name>_link`` -> ``<name>_<stream>_frame`` from the device extrinsics
  (converted from the optical to the ROS axes), ``<name>_<stream>_frame`` ->
  ``<name>_<stream>_optical_frame`` the fixed body -> optical rotation (REP 103);
- stamps: a live D400 stamps frames in librealsense's global time (the host clock, ms), taken
  as is; a hardware-clock stamp is offset to the host clock at the first frame. A recording is
  played faster or slower than it was recorded (not real time, so that no frame is dropped),
  so its frames are stamped with their arrival time (:class:`StampMapper`).

The device: :class:`RealSenseDevice` is the interface (open, read, close);
:class:`PyRealSenseDevice` drives a live camera or plays a recording with pyrealsense2;
:class:`FakeRealSenseDevice` stands in for it in tests (unplug and plug back in).
:class:`CameraConfig` validates the parameters and raises ``ValueError`` on bad ones.
"""
import abc
import os
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from awopt_ros.core.camera_pose import LINK_TO_OPTICAL, quat_xyzw
from awopt_ros.core.robot_names import check_name_token

#: Body (x forward, y left, z up) -> optical (x right, y down, z forward) rotation, REP 103:
#: columns are the optical axes in the body frame.
OPTICAL_ROTATION = LINK_TO_OPTICAL
#: Depth unit of the published depth images (REP 117: 16UC1 in millimetres).
DEPTH_UNIT_M = 0.001
#: Longest wait for the first frame after the device opens (s): a live camera takes a moment
#: (USB set-up, auto exposure) before its first frame; ``frame_timeout_s`` applies after it.
FIRST_FRAME_TIMEOUT_S = 5.0
#: After a recording's playback stopped, frames still on their way are waited for this long
#: (ms) before the end is reported.
PLAYBACK_DRAIN_MS = 500
_PROFILE = re.compile(r'^\s*(\d+)\s*[xX,]\s*(\d+)\s*[xX,]\s*(\d+)\s*$')


class DeviceUnavailable(RuntimeError):
    """No camera to open (unplugged, another serial number, busy), or it went away; the
    message says why. The node retries every ``reconnect_period_s``."""


class FrameTimeout(RuntimeError):
    """No frame arrived within the read timeout."""


class PlaybackEnded(RuntimeError):
    """The recording played to its end (``repeat_playback`` false): no frame will come."""


# -- profiles, intrinsics, camera_info, frame ids -------------------------------------------
@dataclass(frozen=True)
class StreamProfile:
    """A stream's size and rate: ``width`` x ``height`` px at ``fps`` frames per second."""

    width: int
    height: int
    fps: int

    def __str__(self):
        return f'{self.width}x{self.height}x{self.fps}'


def parse_profile(text, what='profile'):
    """Return the :class:`StreamProfile` of ``'WxHxFPS'`` text (realsense-ros syntax, e.g.
    ``'640x480x30'``; ``','`` may separate the numbers too).

    Raises:
        ValueError: not three positive integers, width or height above 8192 px or fps above
            1000; the message names ``what`` and the text.
    """
    match = _PROFILE.match(str(text))
    if not match:
        raise ValueError(f'{what} must be WIDTHxHEIGHTxFPS like 640x480x30, got {text!r}')
    width, height, fps = (int(g) for g in match.groups())
    if not (0 < width <= 8192 and 0 < height <= 8192 and 0 < fps <= 1000):
        raise ValueError(f'{what} {text!r}: width and height must be 1..8192 px and fps '
                         '1..1000')
    return StreamProfile(width, height, fps)


@dataclass(frozen=True)
class Intrinsics:
    """A stream's pinhole intrinsics and distortion, as librealsense reports them.

    Attributes:
        width, height: image size (px).
        fx, fy: focal lengths (px).
        ppx, ppy: principal point (px from the image's left and top edges; published
            unchanged, as realsense-ros does).
        model: librealsense distortion model name (``'brown_conrady'``,
            ``'inverse_brown_conrady'``, ``'modified_brown_conrady'``, ``'kannala_brandt4'``,
            ``'none'`` ...).
        coeffs: the five distortion coefficients.
    """

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: str = 'brown_conrady'
    coeffs: tuple = (0.0, 0.0, 0.0, 0.0, 0.0)

    @classmethod
    def from_rs(cls, intr):
        """Return the intrinsics of a ``pyrealsense2.intrinsics``."""
        return cls(int(intr.width), int(intr.height), float(intr.fx), float(intr.fy),
                   float(intr.ppx), float(intr.ppy), str(intr.model).split('.')[-1],
                   tuple(float(c) for c in intr.coeffs))


def camera_info_fields(intr):
    """Return the ``sensor_msgs/CameraInfo`` fields for ``intr`` as realsense-ros fills them.

    Returns:
        dict: ``width``, ``height`` (int), ``distortion_model`` (``'equidistant'`` for
        Kannala-Brandt with 4 coefficients, else ``'plumb_bob'`` with 5), ``d`` (list),
        ``k`` (9, row-major fx 0 ppx / 0 fy ppy / 0 0 1), ``r`` (9, identity), ``p`` (12,
        ``K`` with a zero fourth column: a monocular camera).
    """
    if intr.model == 'kannala_brandt4':
        model, n = 'equidistant', 4
    else:
        model, n = 'plumb_bob', 5
    d = [float(c) for c in intr.coeffs[:n]]
    d += [0.0] * (n - len(d))
    k = [intr.fx, 0.0, intr.ppx, 0.0, intr.fy, intr.ppy, 0.0, 0.0, 1.0]
    p = [intr.fx, 0.0, intr.ppx, 0.0, 0.0, intr.fy, intr.ppy, 0.0, 0.0, 0.0, 1.0, 0.0]
    r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    return dict(width=int(intr.width), height=int(intr.height), distortion_model=model, d=d,
                k=[float(v) for v in k], r=r, p=[float(v) for v in p])


@dataclass(frozen=True)
class FrameIds:
    """The TF frame ids of a camera named ``<name>`` (realsense-ros 4.x)."""

    link: str
    color_frame: str
    color_optical_frame: str
    depth_frame: str
    depth_optical_frame: str


def frame_ids(camera_name):
    """Return the :class:`FrameIds` of camera ``camera_name`` (e.g. ``camera_link``,
    ``camera_color_optical_frame`` for ``'camera'``).

    Raises:
        ValueError: ``camera_name`` is not a ROS name token.
    """
    name = check_name_token(camera_name, 'camera_name')
    return FrameIds(f'{name}_link', f'{name}_color_frame', f'{name}_color_optical_frame',
                    f'{name}_depth_frame', f'{name}_depth_optical_frame')


def camera_topics(camera_namespace, camera_name):
    """Return the topics of camera ``/<camera_namespace>/<camera_name>`` (realsense-ros 4.x):
    a dict with keys ``color_image``, ``color_info``, ``depth_image``, ``depth_info``,
    ``aligned_depth_image``, ``aligned_depth_info``.

    Raises:
        ValueError: a name that is not a ROS name token.
    """
    base = (f'/{check_name_token(camera_namespace, "camera_namespace")}'
            f'/{check_name_token(camera_name, "camera_name")}')
    return dict(color_image=f'{base}/color/image_raw', color_info=f'{base}/color/camera_info',
                depth_image=f'{base}/depth/image_rect_raw',
                depth_info=f'{base}/depth/camera_info',
                aligned_depth_image=f'{base}/aligned_depth_to_color/image_raw',
                aligned_depth_info=f'{base}/aligned_depth_to_color/camera_info')


# -- static transforms ----------------------------------------------------------------------
@dataclass(frozen=True)
class Extrinsics:
    """A rigid transform between two streams as librealsense gives it (``p_to = R p_from + t``).

    Attributes:
        rotation: 9 values of ``R``, column-major (librealsense's storage order).
        translation: (3,) ``t`` (m), in the optical axes.
    """

    rotation: tuple = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    translation: tuple = (0.0, 0.0, 0.0)

    @classmethod
    def from_rs(cls, ex):
        """Return the extrinsics of a ``pyrealsense2.extrinsics``."""
        return cls(tuple(float(v) for v in ex.rotation), tuple(float(v) for v in ex.translation))

    def matrix(self):
        """Return ``R`` as a (3, 3) array."""
        return np.asarray(self.rotation, dtype=float).reshape(3, 3).T


def quaternion_from_matrix(rot):
    """Return the unit quaternion (x, y, z, w), w >= 0, of the (3, 3) rotation matrix ``rot``.

    Raises:
        ValueError: ``rot`` is not (3, 3).
    """
    m = np.asarray(rot, dtype=float)
    if m.shape != (3, 3):
        raise ValueError(f'rotation matrix must be (3, 3), got {m.shape}')
    return tuple(float(v) for v in quat_xyzw(m))


@dataclass(frozen=True)
class StaticTransform:
    """``child``'s pose in ``parent``: ``translation`` (x, y, z; m) and ``rotation``
    (quaternion x, y, z, w)."""

    parent: str
    child: str
    translation: tuple
    rotation: tuple


def static_transforms(ids, color_to_depth=None):
    """Return the camera's internal static transforms as realsense-ros publishes them.

    ``ids.link`` is the depth camera's origin (the left imager); the colour camera sits where
    the device extrinsics put it.

    Args:
        ids: the camera's :class:`FrameIds`.
        color_to_depth: :class:`Extrinsics` from the colour to the depth stream (None: the
            device gave none; identity, as realsense-ros does then).

    Returns:
        list of :class:`StaticTransform`: link -> color_frame, color_frame ->
        color_optical_frame, link -> depth_frame (identity), depth_frame ->
        depth_optical_frame.
    """
    ex = color_to_depth or Extrinsics()
    body_rot = OPTICAL_ROTATION @ ex.matrix() @ OPTICAL_ROTATION.T
    body_t = OPTICAL_ROTATION @ np.asarray(ex.translation, dtype=float)
    optical = quaternion_from_matrix(OPTICAL_ROTATION)
    zero, identity = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)
    return [
        StaticTransform(ids.link, ids.color_frame, tuple(float(v) for v in body_t),
                        quaternion_from_matrix(body_rot)),
        StaticTransform(ids.color_frame, ids.color_optical_frame, zero, optical),
        StaticTransform(ids.link, ids.depth_frame, zero, identity),
        StaticTransform(ids.depth_frame, ids.depth_optical_frame, zero, optical),
    ]


# -- depth, stamps ----------------------------------------------------------------------------
def depth_to_mm(raw, depth_scale_m):
    """Return depth image ``raw`` (H, W) uint16 in device units of ``depth_scale_m`` metres as
    (H, W) uint16 millimetres (0 = no depth).

    A D400's unit is 1 mm: ``raw`` comes back unchanged (no copy). Other units are rescaled and
    rounded; depths beyond 65.535 m saturate.

    Raises:
        ValueError: ``raw`` not 2-D uint16, or ``depth_scale_m`` not positive.
    """
    a = np.asarray(raw)
    if a.ndim != 2 or a.dtype != np.uint16:
        raise ValueError(f'depth image must be (H, W) uint16, got {a.shape} {a.dtype}')
    if not depth_scale_m > 0.0:
        raise ValueError(f'depth scale must be positive, got {depth_scale_m}')
    if abs(depth_scale_m - DEPTH_UNIT_M) < 1e-9:
        return a
    mm = np.rint(a.astype(np.float64) * (depth_scale_m / DEPTH_UNIT_M))
    return np.clip(mm, 0, 65535).astype(np.uint16)


class StampMapper:
    """Map frame timestamps to ROS time (ns).

    - ``arrival=True`` (playback): the frame's arrival time ``now_ns``.
    - ``global_time`` / ``system_time`` domain: the timestamp itself (host clock, ms).
    - ``hardware_clock`` domain: ``now_ns`` at the first frame plus the device time elapsed
      since it; re-based when the device clock runs backwards (reset or wrap).
    """

    def __init__(self, arrival=False):
        self.arrival = bool(arrival)
        self._base = None      # (device ms, ros ns) at the first hardware-clock frame

    def reset(self):
        """Forget the hardware-clock base (after a reconnect)."""
        self._base = None

    def stamp_ns(self, timestamp_ms, domain, now_ns):
        """Return the ROS time (int ns) of a frame stamped ``timestamp_ms`` in ``domain``
        (``'global_time'``, ``'system_time'``, ``'hardware_clock'``) that arrived at
        ``now_ns``."""
        if self.arrival:
            return int(now_ns)
        if domain != 'hardware_clock':
            return ms_to_ns(timestamp_ms)
        if self._base is None or timestamp_ms < self._base[0]:
            self._base = (float(timestamp_ms), int(now_ns))
        return self._base[1] + ms_to_ns(float(timestamp_ms) - self._base[0])


def ms_to_ns(t_ms):
    """Return ``t_ms`` (float ms, >= 0) as int ns, the whole milliseconds exactly (a float
    product would round a 2020s host time in ms off by tens of ns)."""
    whole, frac = divmod(float(t_ms), 1.0)
    return int(whole) * 1_000_000 + int(round(frac * 1e6))


# -- stream health ----------------------------------------------------------------------------
OK, WARN, ERROR = 0, 1, 2


class StreamMonitor:
    """The camera stream's health for diagnostics (thread-safe; times in s, monotonic).

    Levels: OK while frames arrive within ``frame_timeout_s`` of each other; WARN while the
    device opened and its first frame is awaited (up to :data:`FIRST_FRAME_TIMEOUT_S`);
    ERROR when the device cannot be opened, frames are late, or the recording ended.
    """

    def __init__(self, frame_timeout_s):
        if not frame_timeout_s > 0.0:
            raise ValueError(f'frame_timeout_s must be positive, got {frame_timeout_s}')
        self.frame_timeout_s = float(frame_timeout_s)
        self._lock = threading.Lock()
        self.state = 'starting'
        self.reason = 'device not opened yet'
        self.opened_at = None
        self.last_frame_at = None
        self.frames = 0
        self.timeouts = 0
        self.opens = 0
        self.open_failures = 0

    def opened(self, now_s):
        """The device opened (now ``now_s``); its first frame is awaited."""
        with self._lock:
            self.state, self.reason = 'starting', 'waiting for the first frame'
            self.opened_at, self.last_frame_at = now_s, None
            self.opens += 1

    def open_failed(self, reason, now_s):
        """Opening the device failed with ``reason`` (str)."""
        with self._lock:
            self.state, self.reason = 'unavailable', str(reason)
            self.open_failures += 1

    def frame(self, now_s):
        """A frame arrived at ``now_s``."""
        with self._lock:
            self.state, self.reason = 'streaming', ''
            self.last_frame_at = now_s
            self.frames += 1

    def timed_out(self, now_s):
        """No frame came in time: the device is closed and will be reopened."""
        with self._lock:
            self.timeouts += 1
            since = self.last_frame_at if self.last_frame_at is not None else self.opened_at
            waited = now_s - since if since is not None else 0.0
            self.state = 'late'
            self.reason = (f'no frame for {waited:.1f} s (frame_timeout_s '
                           f'{self.frame_timeout_s:g}): unplugged or stalled')

    def ended(self, now_s):
        """The recording played to its end."""
        with self._lock:
            self.state, self.reason = 'ended', 'the recording ended (repeat_playback false)'

    def deadline(self):
        """Return the monotonic time by which the next frame must arrive (None: not open)."""
        with self._lock:
            if self.last_frame_at is not None:
                return self.last_frame_at + self.frame_timeout_s
            if self.opened_at is None:
                return None
            return self.opened_at + max(self.frame_timeout_s, FIRST_FRAME_TIMEOUT_S)

    def frame_age_s(self, now_s):
        """Return the seconds since the last frame (None before the first)."""
        with self._lock:
            return None if self.last_frame_at is None else now_s - self.last_frame_at

    def status(self, now_s):
        """Return ``(level, message)`` at ``now_s``: OK/WARN/ERROR (0/1/2) and why."""
        with self._lock:
            if self.state == 'streaming':
                age = now_s - self.last_frame_at
                if age > self.frame_timeout_s:
                    return ERROR, (f'no frame for {age:.1f} s (frame_timeout_s '
                                   f'{self.frame_timeout_s:g})')
                return OK, 'streaming'
            if self.state == 'starting':
                return WARN, self.reason
            return ERROR, self.reason


# -- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraConfig:
    """What to open and how; validates itself (``ValueError`` naming the parameter).

    Attributes:
        color_profile: colour stream ``'WxHxFPS'`` (a live camera; a recording plays its own).
        depth_profile: depth stream ``'WxHxFPS'`` (used when depth or alignment is on).
        enable_depth: publish the depth image.
        align_depth: publish the depth image aligned to the colour image (needs depth frames
            from the device even when ``enable_depth`` is false).
        serial_no: the camera's serial number ('' = the first camera found; a leading ``_``,
            realsense-ros's way to keep digits a string, is dropped).
        rosbag_filename: a recording to play instead of a live camera ('' = live); it must
            exist (``FileNotFoundError`` otherwise).
        repeat_playback: play the recording in a loop.
        frame_timeout_s: frames further apart than this are late (s, > 0).
        reconnect_period_s: retry period for opening the device (s, > 0).
    """

    color_profile: str = '640x480x30'
    depth_profile: str = '848x480x30'
    enable_depth: bool = False
    align_depth: bool = False
    serial_no: str = ''
    rosbag_filename: str = ''
    repeat_playback: bool = False
    frame_timeout_s: float = 0.5
    reconnect_period_s: float = 1.0
    color: StreamProfile = field(init=False, repr=False)
    depth: StreamProfile = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, 'color', parse_profile(self.color_profile,
                                                        'rgb_camera.color_profile'))
        object.__setattr__(self, 'depth', parse_profile(self.depth_profile,
                                                        'depth_module.depth_profile'))
        serial = str(self.serial_no).strip()
        object.__setattr__(self, 'serial_no', serial[1:] if serial.startswith('_') else serial)
        if not self.frame_timeout_s > 0.0:
            raise ValueError(f'frame_timeout_s must be positive, got {self.frame_timeout_s}')
        if not self.reconnect_period_s > 0.0:
            raise ValueError(f'reconnect_period_s must be positive, got '
                             f'{self.reconnect_period_s}')
        if self.rosbag_filename:
            path = os.path.expanduser(str(self.rosbag_filename))
            if not os.path.isfile(path):
                raise FileNotFoundError(f'rosbag_filename {self.rosbag_filename!r}: no such '
                                        'file (a RealSense recording, .bag or .db3)')
            object.__setattr__(self, 'rosbag_filename', os.path.abspath(path))

    @property
    def playback(self):
        """True when a recording is played instead of a live camera."""
        return bool(self.rosbag_filename)

    @property
    def wants_depth(self):
        """True when depth frames are needed (published or aligned)."""
        return bool(self.enable_depth or self.align_depth)


# -- the device -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    """What an opened device reports.

    Attributes:
        name, serial_no, firmware: device strings ('' when unknown).
        color: colour stream :class:`Intrinsics`; ``color_fps`` its rate (Hz).
        depth: depth stream :class:`Intrinsics` (None without depth).
        color_to_depth: :class:`Extrinsics` colour -> depth (None when unknown).
        depth_scale_m: metres per depth unit.
        playback: True for a recording.
    """

    name: str
    serial_no: str
    firmware: str
    color: Intrinsics
    color_fps: float
    depth: Intrinsics = None
    color_to_depth: Extrinsics = None
    depth_scale_m: float = DEPTH_UNIT_M
    playback: bool = False


@dataclass
class Frames:
    """One frame set.

    Attributes:
        color: (H, W, 3) uint8 RGB (may be a read-only view of the device's buffer, valid as
            long as this object is).
        timestamp_ms: device timestamp (ms) in ``domain`` (``'global_time'``,
            ``'system_time'``, ``'hardware_clock'``).
        frame_number: the colour frame's number.
        depth: (H, W) uint16 depth in mm, or None.
        aligned_depth: (H_color, W_color) uint16 depth in mm aligned to colour, or None.
    """

    color: np.ndarray
    timestamp_ms: float
    domain: str
    frame_number: int = 0
    depth: np.ndarray = None
    aligned_depth: np.ndarray = None


class RealSenseDevice(abc.ABC):
    """A RealSense camera (or a recording, or a fake): open, read frame sets, close.

    ``read`` is called from one thread; ``open``/``close`` from the same thread.
    """

    def __init__(self, config):
        self.config = config

    @abc.abstractmethod
    def open(self):
        """Start streaming; return its :class:`DeviceInfo`.

        Raises:
            DeviceUnavailable: no such device (or the file cannot be played).
        """

    @abc.abstractmethod
    def read(self, timeout_s):
        """Return the next :class:`Frames` within ``timeout_s`` (s).

        Raises:
            FrameTimeout: none came in time.
            PlaybackEnded: the recording ended.
        """

    @abc.abstractmethod
    def close(self):
        """Stop streaming (no-op when not open)."""


class PyRealSenseDevice(RealSenseDevice):
    """A live camera or a recording through pyrealsense2.

    Live: the colour stream at ``config.color`` in rgb8 (and depth z16 at ``config.depth``
    when ``config.wants_depth``), from the camera ``config.serial_no`` or the first one.
    Recording: ``enable_device_from_file(path, repeat_playback)`` and the recording's own
    colour (rgb8 or bgr8) and depth streams, played not in real time, so that every frame is
    delivered however slowly they are read.
    """

    def __init__(self, config):
        """Raises:
            ImportError: pyrealsense2 (or the libusb-1.0 it links) is missing; the message
                says how to install them.
        """
        super().__init__(config)
        try:
            import pyrealsense2 as rs
        except ImportError as exc:
            raise ImportError(f'pyrealsense2 cannot be imported ({exc}): `pip install '
                              'pyrealsense2` (in requirements.txt) and the system library '
                              'libusb-1.0-0 (`make setup` installs both)') from exc
        self._rs = rs
        self._pipeline = None
        self._playback = None
        self._align = None
        self._depth_scale_m = DEPTH_UNIT_M
        self._bgr = False

    def open(self):
        rs = self._rs
        cfg = self.config
        rs_cfg = rs.config()
        if cfg.playback:
            rs_cfg.enable_device_from_file(cfg.rosbag_filename, bool(cfg.repeat_playback))
            rs_cfg.enable_stream(rs.stream.color)
            if cfg.wants_depth:
                rs_cfg.enable_stream(rs.stream.depth)
        else:
            if cfg.serial_no:
                rs_cfg.enable_device(cfg.serial_no)
            c = cfg.color
            rs_cfg.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
            if cfg.wants_depth:
                d = cfg.depth
                rs_cfg.enable_stream(rs.stream.depth, d.width, d.height, rs.format.z16, d.fps)
        ctx = rs.context()
        if not cfg.playback:
            # pipeline.start waits 15 s for a missing camera: look first, answer at once
            serials = self._serials(ctx)
            if not serials or (cfg.serial_no and cfg.serial_no not in serials):
                raise DeviceUnavailable(self._why_not('not found', serials))
        pipeline = rs.pipeline(ctx)
        try:
            if not cfg.playback and not rs_cfg.can_resolve(pipeline):
                raise RuntimeError('no such stream profile')
            profile = pipeline.start(rs_cfg)
        except RuntimeError as exc:
            raise DeviceUnavailable(self._why_not(exc, self._serials(ctx))) from exc
        try:
            info = self._started(pipeline, profile)
        except Exception:
            pipeline.stop()
            raise
        self._pipeline = pipeline
        return info

    def _serials(self, ctx):
        """Return the serial numbers of the connected cameras (list of str)."""
        try:
            return [d.get_info(self._rs.camera_info.serial_number)
                    for d in ctx.query_devices()]
        except RuntimeError:
            return []

    def _why_not(self, exc, serials):
        """Return why the camera or file cannot stream (str), naming it."""
        cfg = self.config
        if cfg.playback:
            return f'cannot play {cfg.rosbag_filename}: {exc}'
        who = f'serial_no {cfg.serial_no}' if cfg.serial_no else 'any RealSense camera'
        if not serials:
            return f'no RealSense camera connected (looking for {who})'
        if cfg.serial_no and cfg.serial_no not in serials:
            return f'no camera with serial_no {cfg.serial_no} (connected: {serials})'
        streams = f'colour {cfg.color} rgb8' + (f', depth {cfg.depth} z16'
                                                if cfg.wants_depth else '')
        return f'{who} connected ({serials}) but cannot stream {streams}: {exc}'

    def _started(self, pipeline, profile):
        rs = self._rs
        dev = profile.get_device()
        if self.config.playback:
            self._playback = dev.as_playback()
            self._playback.set_real_time(False)
        color_sp = profile.get_stream(rs.stream.color).as_video_stream_profile()
        fmt = color_sp.format()
        if fmt not in (rs.format.rgb8, rs.format.bgr8):
            raise DeviceUnavailable(f'colour stream format {fmt} is not rgb8 or bgr8')
        self._bgr = fmt == rs.format.bgr8
        depth_sp = self._depth_profile(profile, dev)
        depth_intr = None
        if depth_sp is not None and self.config.wants_depth:
            depth_intr = Intrinsics.from_rs(depth_sp.get_intrinsics())
        color_to_depth = None
        if depth_sp is not None:
            try:
                color_to_depth = Extrinsics.from_rs(color_sp.get_extrinsics_to(depth_sp))
            except RuntimeError:
                color_to_depth = None
        try:
            self._depth_scale_m = float(dev.first_depth_sensor().get_depth_scale())
        except RuntimeError:
            self._depth_scale_m = DEPTH_UNIT_M
        self._align = rs.align(rs.stream.color) if self.config.align_depth else None

        def get(key):
            try:
                return dev.get_info(key) if dev.supports(key) else ''
            except RuntimeError:
                return ''
        return DeviceInfo(
            name=get(rs.camera_info.name), serial_no=get(rs.camera_info.serial_number),
            firmware=get(rs.camera_info.firmware_version),
            color=Intrinsics.from_rs(color_sp.get_intrinsics()), color_fps=float(color_sp.fps()),
            depth=depth_intr,
            color_to_depth=color_to_depth, depth_scale_m=self._depth_scale_m,
            playback=self.config.playback)

    def _depth_profile(self, profile, dev):
        """Return the depth stream's video profile: the streamed one, else one of the
        device's depth profiles (for the extrinsics only), else None."""
        rs = self._rs
        try:
            return profile.get_stream(rs.stream.depth).as_video_stream_profile()
        except RuntimeError:
            pass
        for sensor in dev.query_sensors():
            for sp in sensor.get_stream_profiles():
                if sp.stream_type() == rs.stream.depth and sp.is_video_stream_profile():
                    return sp.as_video_stream_profile()
        return None

    def read(self, timeout_s):
        if self._pipeline is None:
            raise DeviceUnavailable('the device is not open')
        deadline = time.monotonic() + timeout_s
        while True:     # a recording's end is noticed within 0.6 s, a camera waits it all
            wait_s = deadline - time.monotonic()
            if self._playback is not None:
                wait_s = min(wait_s, 0.1)
            ok, frameset = self._pipeline.try_wait_for_frames(max(1, int(wait_s * 1000)))
            if ok:
                break
            if self._playback is not None and \
                    self._playback.current_status() == self._rs.playback_status.stopped:
                # The playback stops once it has handed its last frames on; on a busy host
                # they can still be on their way to the pipeline's queue: wait for them once.
                ok, frameset = self._pipeline.try_wait_for_frames(PLAYBACK_DRAIN_MS)
                if ok:
                    break
                raise PlaybackEnded('the recording ended')
            if time.monotonic() >= deadline:
                raise FrameTimeout(f'no frame within {timeout_s:g} s')
        color_frame = frameset.get_color_frame()
        if not color_frame:
            raise FrameTimeout('a frame set without a colour frame')
        color = np.asanyarray(color_frame.get_data())
        if self._bgr:
            color = color[:, :, ::-1]
        depth = aligned = None
        if self.config.enable_depth:
            depth_frame = frameset.get_depth_frame()
            if depth_frame:
                depth = depth_to_mm(np.asanyarray(depth_frame.get_data()), self._depth_scale_m)
        if self._align is not None:
            aligned_frame = self._align.process(frameset).get_depth_frame()
            if aligned_frame:
                aligned = depth_to_mm(np.asanyarray(aligned_frame.get_data()),
                                      self._depth_scale_m)
        return Frames(color=color, timestamp_ms=float(color_frame.get_timestamp()),
                      domain=str(color_frame.get_frame_timestamp_domain()).split('.')[-1],
                      frame_number=int(color_frame.get_frame_number()), depth=depth,
                      aligned_depth=aligned)

    def close(self):
        pipeline, self._pipeline = self._pipeline, None
        self._playback = self._align = None
        if pipeline is not None:
            try:
                pipeline.stop()
            except RuntimeError:
                pass


class FakeRealSenseDevice(RealSenseDevice):
    """A camera that serves one image at ``config.color.fps`` and can be unplugged.

    ``unplug()``: reads time out and ``open`` raises :class:`DeviceUnavailable` until
    ``plug_in()``. Frames are stamped in ``'global_time'`` (the host clock, ms).
    """

    def __init__(self, config, color=None, intrinsics=None, depth_mm=None,
                 serial_no='000000000000'):
        super().__init__(config)
        c = config.color
        self.image = (np.zeros((c.height, c.width, 3), np.uint8) if color is None
                      else np.asarray(color, dtype=np.uint8))
        h, w = self.image.shape[:2]
        self.intrinsics = intrinsics or Intrinsics(w, h, 600.0, 600.0, w / 2.0, h / 2.0)
        self.depth_mm = (np.full((h, w), 1000, np.uint16) if depth_mm is None
                         else np.asarray(depth_mm, dtype=np.uint16))
        self.serial_no = serial_no
        self._plugged = threading.Event()
        self._plugged.set()
        self._open = False
        self._next_s = 0.0
        self.frame_number = 0
        self.opens = 0

    def unplug(self):
        """Pull the cable: no more frames, and ``open`` fails."""
        self._plugged.clear()

    def plug_in(self):
        """Plug the camera back in."""
        self._plugged.set()

    def open(self):
        if not self._plugged.is_set():
            raise DeviceUnavailable('no RealSense camera connected (fake device unplugged)')
        self._open = True
        self._next_s = time.monotonic()
        self.opens += 1
        return DeviceInfo(name='Fake RealSense', serial_no=self.serial_no, firmware='0',
                          color=self.intrinsics, color_fps=float(self.config.color.fps),
                          depth=self.intrinsics if self.config.wants_depth else None,
                          color_to_depth=Extrinsics(), playback=False)

    def read(self, timeout_s):
        if not self._open:
            raise DeviceUnavailable('the device is not open')
        deadline = time.monotonic() + timeout_s
        wait = self._next_s - time.monotonic()
        if not self._plugged.is_set() or wait > timeout_s:
            time.sleep(max(0.0, deadline - time.monotonic()))
            raise FrameTimeout(f'no frame within {timeout_s:g} s')
        time.sleep(max(0.0, wait))
        self._next_s = max(self._next_s + 1.0 / self.config.color.fps, time.monotonic())
        self.frame_number += 1
        return Frames(color=self.image, timestamp_ms=time.time() * 1e3, domain='global_time',
                      frame_number=self.frame_number,
                      depth=self.depth_mm if self.config.enable_depth else None,
                      aligned_depth=self.depth_mm if self.config.align_depth else None)

    def close(self):
        self._open = False
