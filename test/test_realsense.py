"""RealSense logic without ROS: profiles, camera_info, frame ids, static transforms, depth
units, stamps, stream health, the config's checks, the fake device, and the pyrealsense2
device on a real D435 recording (test/data, see its README)."""
import time
from pathlib import Path

import numpy as np
import pytest

from awopt_ros.core import realsense
from awopt_ros.core.realsense import (CameraConfig, DeviceUnavailable, Extrinsics,
                                      FakeRealSenseDevice, FrameTimeout, Intrinsics,
                                      PlaybackEnded, StampMapper, StreamMonitor, StreamProfile)

BAG = Path(__file__).resolve().parent / 'data' / 'realsense_d435_single_640x480.bag'
#: The recording's colour intrinsics (librealsense reports these for it).
BAG_COLOR = dict(width=640, height=480, fx=613.2036743164062, fy=613.4193115234375,
                 ppx=319.9388427734375, ppy=239.18299865722656)


# -- profiles ---------------------------------------------------------------------------------
@pytest.mark.parametrize('text, expected', [
    ('640x480x30', StreamProfile(640, 480, 30)),
    ('1280X720X15', StreamProfile(1280, 720, 15)),
    (' 848, 480, 90 ', StreamProfile(848, 480, 90)),
])
def test_profiles_parse(text, expected):
    assert realsense.parse_profile(text) == expected
    assert str(expected) == f'{expected.width}x{expected.height}x{expected.fps}'


@pytest.mark.parametrize('text', ['', '640x480', '640x480x30x2', 'axbxc', '640x480x-30',
                                  '0x480x30', '640x0x30', '640x480x0', '9000x480x30',
                                  '640x480x2000', '640.5x480x30', None])
def test_bad_profiles_are_refused_naming_the_parameter(text):
    with pytest.raises(ValueError, match='rgb_camera.color_profile'):
        realsense.parse_profile(text, 'rgb_camera.color_profile')


# -- camera_info ------------------------------------------------------------------------------
@pytest.mark.parametrize('model', ['brown_conrady', 'inverse_brown_conrady',
                                   'modified_brown_conrady', 'none'])
def test_camera_info_is_plumb_bob_with_five_coefficients_like_realsense_ros(model):
    intr = Intrinsics(640, 480, 613.2, 613.4, 319.9, 239.2, model, (0.1, -0.2, 0.01, 0.02, 0.3))
    info = realsense.camera_info_fields(intr)
    assert info['distortion_model'] == 'plumb_bob'
    assert info['d'] == pytest.approx([0.1, -0.2, 0.01, 0.02, 0.3])
    assert (info['width'], info['height']) == (640, 480)
    assert info['k'] == pytest.approx([613.2, 0, 319.9, 0, 613.4, 239.2, 0, 0, 1])
    assert info['r'] == [1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert info['p'] == pytest.approx([613.2, 0, 319.9, 0, 0, 613.4, 239.2, 0, 0, 0, 1, 0])


def test_camera_info_of_kannala_brandt_is_equidistant_with_four_coefficients():
    intr = Intrinsics(848, 800, 286.0, 286.1, 420.0, 400.0, 'kannala_brandt4',
                      (-0.01, 0.04, -0.04, 0.007, 0.0))
    info = realsense.camera_info_fields(intr)
    assert info['distortion_model'] == 'equidistant'
    assert info['d'] == pytest.approx([-0.01, 0.04, -0.04, 0.007])


# -- names ------------------------------------------------------------------------------------
def test_frame_ids_and_topics_follow_realsense_ros():
    ids = realsense.frame_ids('camera')
    assert (ids.link, ids.color_frame, ids.color_optical_frame, ids.depth_frame,
            ids.depth_optical_frame) == ('camera_link', 'camera_color_frame',
                                         'camera_color_optical_frame', 'camera_depth_frame',
                                         'camera_depth_optical_frame')
    assert realsense.frame_ids('wrist_cam').color_optical_frame == 'wrist_cam_color_optical_frame'
    topics = realsense.camera_topics('camera', 'camera')
    assert topics['color_image'] == '/camera/camera/color/image_raw'
    assert topics['color_info'] == '/camera/camera/color/camera_info'
    assert topics['depth_image'] == '/camera/camera/depth/image_rect_raw'
    assert topics['aligned_depth_image'] == '/camera/camera/aligned_depth_to_color/image_raw'


@pytest.mark.parametrize('bad', ['', '1cam', 'my-cam', 'a/b', 'cam ', '/camera'])
def test_bad_names_are_refused(bad):
    with pytest.raises(ValueError, match='camera_name'):
        realsense.frame_ids(bad)
    with pytest.raises(ValueError, match='camera_namespace'):
        realsense.camera_topics(bad, 'camera')


# -- static transforms ------------------------------------------------------------------------
def _matrix(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_quaternion_from_matrix_round_trips_and_knows_the_optical_rotation():
    assert realsense.quaternion_from_matrix(realsense.OPTICAL_ROTATION) == pytest.approx(
        (-0.5, 0.5, -0.5, 0.5))
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        got = realsense.quaternion_from_matrix(_matrix(q))
        assert got[3] >= 0
        np.testing.assert_allclose(_matrix(got), _matrix(q), atol=1e-12)
    for diag in ([1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]):
        rot = np.diag(diag)
        np.testing.assert_allclose(_matrix(realsense.quaternion_from_matrix(rot)), rot,
                                   atol=1e-12)   # 180 degree turns (trace -1)
    with pytest.raises(ValueError):
        realsense.quaternion_from_matrix(np.eye(4))


def _pose(t):
    m = np.eye(4)
    m[:3, :3] = _matrix(t.rotation)
    m[:3, 3] = t.translation
    return m


def test_static_transforms_place_the_colour_optical_frame_where_the_extrinsics_say():
    # colour -> depth: p_depth = R p_color + t (optical axes), a small turn and 15 mm
    angle = np.radians(1.5)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                    [-np.sin(angle), 0, np.cos(angle)]])
    ex = Extrinsics(tuple(rot.T.reshape(-1)), (-0.015, 0.0002, 0.0004))   # column-major
    ids = realsense.frame_ids('camera')
    tfs = {(t.parent, t.child): t for t in realsense.static_transforms(ids, ex)}
    assert set(tfs) == {('camera_link', 'camera_color_frame'),
                        ('camera_color_frame', 'camera_color_optical_frame'),
                        ('camera_link', 'camera_depth_frame'),
                        ('camera_depth_frame', 'camera_depth_optical_frame')}
    color = _pose(tfs['camera_link', 'camera_color_frame']) @ _pose(
        tfs['camera_color_frame', 'camera_color_optical_frame'])
    depth = _pose(tfs['camera_link', 'camera_depth_frame']) @ _pose(
        tfs['camera_depth_frame', 'camera_depth_optical_frame'])
    p_color = np.array([0.1, -0.2, 1.3, 1.0])           # a point in colour optical coordinates
    p_depth = np.append(rot @ p_color[:3] + ex.translation, 1.0)
    np.testing.assert_allclose(color @ p_color, depth @ p_depth, atol=1e-12)
    # optical (x right, y down, z forward) -> camera_link (x forward, y left, z up): the
    # colour camera 15 mm along optical -x (as on a D435) is at y = +0.015
    assert tfs['camera_link', 'camera_color_frame'].translation == pytest.approx(
        (0.0004, 0.015, -0.0002))


def test_static_transforms_without_extrinsics_put_colour_at_the_link():
    tfs = realsense.static_transforms(realsense.frame_ids('camera'), None)
    assert tfs[0].translation == (0.0, 0.0, 0.0)
    assert tfs[0].rotation == pytest.approx((0.0, 0.0, 0.0, 1.0))


# -- depth, stamps ----------------------------------------------------------------------------
def test_depth_in_millimetres():
    raw = np.array([[0, 1000], [1500, 65535]], np.uint16)
    assert realsense.depth_to_mm(raw, 0.0010000000474974513) is raw     # a D400: no copy
    np.testing.assert_array_equal(realsense.depth_to_mm(raw, 0.0001),
                                  [[0, 100], [150, 6554]])              # a D405 unit
    np.testing.assert_array_equal(realsense.depth_to_mm(raw, 0.01),
                                  [[0, 10000], [15000, 65535]])         # saturates
    with pytest.raises(ValueError):
        realsense.depth_to_mm(raw.astype(np.float32), 0.001)
    with pytest.raises(ValueError):
        realsense.depth_to_mm(raw[0], 0.001)
    with pytest.raises(ValueError):
        realsense.depth_to_mm(raw, 0.0)


def test_stamps_follow_the_frame_domain():
    live = StampMapper()
    assert live.stamp_ns(1_700_000_000_123.5, 'global_time', 5) == 1_700_000_000_123_500_000
    assert live.stamp_ns(42.0, 'system_time', 5) == 42_000_000
    # hardware clock: the host time at the first frame plus device time since then
    assert live.stamp_ns(1000.0, 'hardware_clock', 7_000_000_000) == 7_000_000_000
    assert live.stamp_ns(1033.3, 'hardware_clock', 9_999_000_000) == 7_033_300_000
    assert live.stamp_ns(10.0, 'hardware_clock', 8_000_000_000) == 8_000_000_000   # reset
    live.reset()
    assert live.stamp_ns(2000.0, 'hardware_clock', 1_000) == 1_000
    playback = StampMapper(arrival=True)
    assert playback.stamp_ns(360713.523, 'hardware_clock', 123_456) == 123_456


# -- stream health ----------------------------------------------------------------------------
def test_stream_monitor_levels():
    mon = StreamMonitor(frame_timeout_s=0.5)
    assert mon.status(0.0)[0] == realsense.WARN and mon.deadline() is None
    mon.open_failed('no RealSense camera connected', 0.0)
    assert mon.status(0.1) == (realsense.ERROR, 'no RealSense camera connected')
    mon.opened(1.0)
    assert mon.status(1.1) == (realsense.WARN, 'waiting for the first frame')
    assert mon.deadline() == pytest.approx(1.0 + realsense.FIRST_FRAME_TIMEOUT_S)
    mon.frame(2.0)
    assert mon.status(2.4) == (realsense.OK, 'streaming')
    assert mon.deadline() == pytest.approx(2.5)
    level, message = mon.status(2.7)               # late, before the reader noticed
    assert level == realsense.ERROR and 'no frame for 0.7 s' in message
    mon.timed_out(2.6)
    assert mon.status(2.6)[0] == realsense.ERROR and mon.timeouts == 1
    mon.ended(3.0)
    assert mon.status(3.0) == (realsense.ERROR, 'the recording ended (repeat_playback false)')
    assert (mon.frames, mon.opens, mon.open_failures) == (1, 1, 1)
    with pytest.raises(ValueError):
        StreamMonitor(0.0)


# -- config -----------------------------------------------------------------------------------
def test_config_validates_itself():
    cfg = CameraConfig()
    assert (cfg.color, cfg.depth) == (StreamProfile(640, 480, 30), StreamProfile(848, 480, 30))
    assert not cfg.playback and not cfg.wants_depth
    assert CameraConfig(serial_no='_012345678901').serial_no == '012345678901'
    assert CameraConfig(align_depth=True).wants_depth
    with pytest.raises(ValueError, match='rgb_camera.color_profile'):
        CameraConfig(color_profile='640x480')
    with pytest.raises(ValueError, match='depth_module.depth_profile'):
        CameraConfig(depth_profile='848x480x')
    with pytest.raises(ValueError, match='frame_timeout_s'):
        CameraConfig(frame_timeout_s=0.0)
    with pytest.raises(ValueError, match='reconnect_period_s'):
        CameraConfig(reconnect_period_s=-1.0)


def test_config_refuses_a_missing_recording(tmp_path):
    missing = tmp_path / 'nope.bag'
    with pytest.raises(FileNotFoundError, match=r"rosbag_filename '.*nope\.bag': no such file"):
        CameraConfig(rosbag_filename=str(missing))
    cfg = CameraConfig(rosbag_filename=str(BAG))
    assert cfg.playback and Path(cfg.rosbag_filename).is_absolute()


# -- the fake device --------------------------------------------------------------------------
def test_fake_device_unplugs_and_comes_back():
    cfg = CameraConfig(color_profile='64x48x100')
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    dev = FakeRealSenseDevice(cfg, color=image)
    info = dev.open()
    assert (info.color.width, info.color.height, info.color_fps) == (64, 48, 100.0)
    frames = dev.read(1.0)
    np.testing.assert_array_equal(frames.color, image)
    assert frames.domain == 'global_time' and abs(frames.timestamp_ms - time.time() * 1e3) < 1e3
    dev.unplug()
    with pytest.raises(FrameTimeout):
        dev.read(0.05)
    dev.close()
    with pytest.raises(DeviceUnavailable):
        dev.open()
    dev.plug_in()
    dev.open()
    assert dev.read(1.0).frame_number == 2


# -- pyrealsense2 on the real recording -------------------------------------------------------
def test_recording_plays_its_colour_frame_with_its_intrinsics():
    dev = realsense.PyRealSenseDevice(CameraConfig(rosbag_filename=str(BAG)))
    info = dev.open()
    try:
        assert (info.name, info.serial_no, info.playback) == ('Intel RealSense D435',
                                                              '728612070259', True)
        for key, value in BAG_COLOR.items():
            assert getattr(info.color, key) == pytest.approx(value), key
        assert info.color.model == 'brown_conrady' and info.color.coeffs == (0.0,) * 5
        assert info.color_fps == 6.0 and info.depth is None
        # the extrinsics come from the recorded depth stream although depth is not streamed
        assert info.color_to_depth.translation[0] == pytest.approx(-0.0143, abs=1e-4)
        frames = dev.read(5.0)
        assert frames.color.shape == (480, 640, 3) and frames.color.dtype == np.uint8
        assert frames.frame_number == 162 and frames.depth is None
        assert 100 < frames.color.mean() < 130       # an office scene, not a blank frame
        with pytest.raises(PlaybackEnded):           # one colour frame, then the end
            dev.read(2.0)
    finally:
        dev.close()


def test_recording_with_depth_and_alignment():
    dev = realsense.PyRealSenseDevice(CameraConfig(rosbag_filename=str(BAG), enable_depth=True,
                                                   align_depth=True, repeat_playback=True))
    info = dev.open()
    try:
        assert info.depth.fx == pytest.approx(390.43145751953125)
        assert info.depth_scale_m == pytest.approx(0.001)
        numbers = [dev.read(5.0).frame_number for _ in range(3)]    # repeats: no end
        frames = dev.read(5.0)
        assert numbers == [162] * 3
        assert frames.depth.shape == (480, 640) and frames.depth.dtype == np.uint16
        assert frames.aligned_depth.shape == (480, 640)
        assert 1300 < np.median(frames.depth[frames.depth > 0]) < 1700      # mm
    finally:
        dev.close()


def test_no_camera_is_reported_at_once():
    dev = realsense.PyRealSenseDevice(CameraConfig(serial_no='_000000000001'))
    start = time.monotonic()
    with pytest.raises(DeviceUnavailable, match='000000000001'):
        dev.open()
    assert time.monotonic() - start < 3.0      # not pyrealsense2's 15 s wait for a device


def record_software_camera(path, images, fmt='rgb8', fps=30):
    """Record ``images`` ((H, W, 3) uint8 each, in ``fmt`` channel order) as a colour stream
    of a pyrealsense2 software device into ``path`` (pyrealsense2 2.59 records ``.db3``)."""
    import gc

    import pyrealsense2 as rs
    h, w = images[0].shape[:2]
    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, '123456789012')
    device.register_info(rs.camera_info.name, 'Software camera')
    sensor = device.add_sensor('RGB Camera')
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = w, h, 50.0, 51.0, 31.5, 23.5
    intr.model, intr.coeffs = rs.distortion.inverse_brown_conrady, [0.1, 0.01, 0.0, 0.0, 0.0]
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid, stream.width, stream.height = (rs.stream.color, 0,
                                                                          1, w, h)
    stream.fps, stream.bpp, stream.fmt, stream.intrinsics = fps, 3, getattr(rs.format, fmt), intr
    profile = sensor.add_video_stream(stream)
    recorder = rs.recorder(str(path), device)
    recorded = recorder.query_sensors()[0]
    recorded.open(profile)
    recorded.start(rs.frame_queue(len(images) + 1))
    for i, image in enumerate(images):
        frame = rs.software_video_frame()
        frame.pixels, frame.bpp, frame.stride = image.tobytes(), 3, 3 * w
        frame.timestamp, frame.domain = 1000.0 + i * 1000.0 / fps, rs.timestamp_domain.system_time
        frame.frame_number, frame.profile = i + 1, profile.as_video_stream_profile()
        sensor.on_video_frame(frame)
        time.sleep(0.02)
    time.sleep(0.1)
    recorded.stop()
    recorded.close()
    del recorder, recorded
    gc.collect()        # the recorder writes the file out when it is freed


@pytest.mark.parametrize('fmt', ['rgb8', 'bgr8'])
def test_db3_recording_plays_every_frame_as_rgb(tmp_path, fmt):
    rng = np.random.default_rng(3)
    rgb = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    path = tmp_path / 'software.db3'
    record_software_camera(path, [im[:, :, ::-1] if fmt == 'bgr8' else im for im in rgb],
                           fmt=fmt)
    dev = realsense.PyRealSenseDevice(CameraConfig(rosbag_filename=str(path)))
    info = dev.open()
    try:
        assert info.serial_no == '123456789012' and info.color_fps == 30.0
        assert info.color == Intrinsics(64, 48, 50.0, 51.0, 31.5, 23.5, 'inverse_brown_conrady',
                                        pytest.approx((0.1, 0.01, 0.0, 0.0, 0.0)))
        assert info.color_to_depth is None          # no depth stream in this recording
        time.sleep(0.3)                              # a slow reader loses no frame
        got = [dev.read(5.0) for _ in rgb]
        for frames, expected in zip(got, rgb):
            np.testing.assert_array_equal(frames.color, expected)
        assert [f.frame_number for f in got] == [1, 2, 3, 4]
        start = time.monotonic()
        with pytest.raises(PlaybackEnded):
            dev.read(10.0)
        assert time.monotonic() - start < 2.0       # the end is noticed, not waited out
    finally:
        dev.close()


def test_frames_still_on_their_way_when_a_recording_stops_are_read(tmp_path):
    """On a busy host the playback can report 'stopped' while its last frame set has not
    reached the pipeline's queue yet: read() waits for it once before it reports the end
    (a clean-clone make test lost a frame of a 4-frame recording this way)."""
    import types
    (tmp_path / 'rec.db3').write_bytes(b'')      # opened by nobody: the pipeline is a fake
    dev = realsense.PyRealSenseDevice(CameraConfig(rosbag_filename=str(tmp_path / 'rec.db3')))
    stopped = dev._rs.playback_status.stopped
    frame = types.SimpleNamespace(get_data=lambda: np.zeros((2, 2, 3), np.uint8),
                                  get_timestamp=lambda: 12.0, get_frame_number=lambda: 3,
                                  get_frame_timestamp_domain=lambda: 'domain.system_time')
    frameset = types.SimpleNamespace(get_color_frame=lambda: frame)
    answers = [(False, None), (True, frameset), (False, None), (False, None)]
    waits = []

    def try_wait_for_frames(ms):
        waits.append(ms)
        return answers.pop(0)
    dev._pipeline = types.SimpleNamespace(try_wait_for_frames=try_wait_for_frames)
    dev._playback = types.SimpleNamespace(current_status=lambda: stopped)
    got = dev.read(5.0)                  # the first wait missed it, the drain gets it
    assert got.frame_number == 3 and waits[1] == realsense.PLAYBACK_DRAIN_MS
    with pytest.raises(PlaybackEnded):   # nothing more: the end
        dev.read(5.0)
