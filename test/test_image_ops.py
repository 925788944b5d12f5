"""Tests of awopt_ros.core.image_ops (crop + resize, frame gate)."""
import numpy as np
import pytest

from awopt_ros.core.image_ops import (FrameGate, FrameLayoutCheck, check_crop, crop_resize,
                                     frame_age_s, frame_layout_error)


def _frame(h=480, w=640):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = (np.arange(w) % 256).astype(np.uint8)[None, :]
    img[:, :, 1] = (np.arange(h) % 256).astype(np.uint8)[:, None]
    return img


def test_crop_resize_shape_dtype_and_area_average():
    img = np.zeros((480, 640, 3), np.uint8)
    img[0:240, 80:320] = 200        # top-left quadrant of the crop is bright
    out = crop_resize(img, [80, 0, 480, 480], 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.all(out[:32, :32] == 200)
    assert np.all(out[32:, :] == 0) and np.all(out[:, 32:] == 0)


def test_crop_resize_area_is_mean_of_block():
    img = np.zeros((8, 8, 3), np.uint8)
    img[0, 0] = 255                 # one bright pixel in the top-left 4x4 block
    out = crop_resize(img, [0, 0, 8, 8], 2)
    assert out[0, 0, 0] == 16       # 255 / 16 rounded
    assert out[1, 1, 0] == 0


def test_crop_resize_identity_size_is_exact_crop():
    img = _frame()
    out = crop_resize(img, [10, 20, 64, 64], 64)
    np.testing.assert_array_equal(out, img[20:84, 10:74])


@pytest.mark.parametrize('crop, word', [
    ([600, 0, 100, 100], 'outside'),
    ([-1, 0, 10, 10], 'outside'),
    ([0, 400, 100, 100], 'outside'),
    ([0, 0, 0, 10], 'width and height'),
    ([0, 0, 10], '4 entries'),
    ([0.5, 0, 10, 10], 'integers'),
])
def test_crop_resize_bad_crop(crop, word):
    with pytest.raises(ValueError, match=word):
        crop_resize(_frame(), crop, 64)


def test_crop_resize_bad_image():
    with pytest.raises(ValueError, match='uint8'):
        crop_resize(np.zeros((480, 640, 3), np.float32), [0, 0, 10, 10], 8)
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        crop_resize(np.zeros((480, 640), np.uint8), [0, 0, 10, 10], 8)
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        crop_resize(np.zeros((480, 640, 4), np.uint8), [0, 0, 10, 10], 8)
    with pytest.raises(ValueError, match='numpy array'):
        crop_resize([[1, 2, 3]], [0, 0, 1, 1], 8)
    with pytest.raises(ValueError, match='size'):
        crop_resize(_frame(), [0, 0, 10, 10], 0)


def test_check_crop_returns_ints():
    assert check_crop([80.0, 0, 480, 480], 640, 480) == (80, 0, 480, 480)


def test_frame_age_and_gate():
    assert frame_age_s(10.5, 10.0) == pytest.approx(0.5)
    gate = FrameGate(0.2)
    assert gate.accept(10.05, 10.0)            # fresh
    assert not gate.accept(10.5, 10.1)         # 0.4 s old -> stale
    assert not gate.accept(10.06, 10.0)        # same stamp again -> out of order
    assert not gate.accept(10.06, 9.99)        # older stamp -> out of order
    assert gate.accept(10.2, 10.1)
    assert gate.counters() == {'accepted': 2, 'dropped_stale': 1, 'dropped_out_of_order': 2}
    assert gate.dropped == 3
    with pytest.raises(ValueError, match='max_age_s'):
        FrameGate(0.0)


@pytest.mark.parametrize('layout, kind, words', [
    (('rgb8', 1280, 960, 3840, 3840 * 960), 'size', ('1280x960', '640x480')),
    (('rgb8', 640, 480, 1920, 1920 * 480 + 1), 'size', ('921601', '921600')),
    (('rgb8', 640, 480, 1920, 1920 * 479), 'size', ('919680', '921600')),
    (('rgb8', 640, 480, 1900, 1900 * 480), 'size', ('step 1900', '1920')),
    (('bgr8', 640, 480, 1920, 1920 * 480), 'encoding', ("'bgr8'", "'rgb8'")),
    (('rgb8', 480, 640, 1440, 1440 * 640), 'size', ('480x640', '640x480')),
])
def test_frame_layout_error_names_expected_and_received(layout, kind, words):
    error = frame_layout_error(*layout, expected_wh=(640, 480))
    assert error is not None and error[0] == kind
    assert all(w in error[1] for w in words), error[1]


@pytest.mark.parametrize('step', [1920, 2048])   # row padding is allowed
def test_frame_layout_error_accepts_the_configured_layout(step):
    assert frame_layout_error('rgb8', 640, 480, step, step * 480, (640, 480)) is None


def test_frame_layout_check_counts_by_kind():
    check = FrameLayoutCheck((640, 480))
    assert check.check('rgb8', 640, 480, 1920, 1920 * 480) is None
    assert '1280x960' in check.check('rgb8', 1280, 960, 3840, 3840 * 960)
    assert check.check('mono8', 640, 480, 640, 640 * 480) is not None
    assert check.counters() == {'dropped_bad_encoding': 1, 'dropped_bad_size': 1}
    assert check.dropped == 2
    with pytest.raises(ValueError, match='positive'):
        FrameLayoutCheck((0, 480))


def test_rgb8_and_the_stamp_tolerance_are_defined_once_in_spec():
    """One definition each (core.spec, ROS-free), imported by core and ros modules alike."""
    from pathlib import Path

    from awopt_ros.core import image_ops, report, spec
    assert image_ops.RGB8 == spec.RGB8 == 'rgb8'
    assert report.STAMP_TOLERANCE_S == spec.STAMP_TOLERANCE_S
    root = Path(spec.__file__).resolve().parents[1]
    for path, name in (('core/image_ops.py', 'RGB8 ='), ('ros/convert.py', 'RGB8 ='),
                       ('core/report.py', 'STAMP_TOLERANCE_S ='),
                       ('ros/convert.py', 'STAMP_TOLERANCE_S =')):
        assert name not in (root / path).read_text(), path


def test_crop_resize_of_a_padded_message_view_equals_that_of_a_contiguous_copy():
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image

    from awopt_ros.ros.convert import image_view
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    padded = np.zeros((480, 640 * 3 + 64), np.uint8)
    padded[:, :640 * 3] = img.reshape(480, -1)
    msg = Image(height=480, width=640, encoding='rgb8', step=640 * 3 + 64,
                data=padded.tobytes(), header=Image().header)
    msg.header.stamp = Time(sec=1)
    view = image_view(msg)
    assert not view.flags.c_contiguous and not view.flags.writeable
    for crop, size in (([80, 0, 480, 480], 64), ([0, 0, 640, 480], 96), ([5, 7, 64, 64], 64)):
        out = crop_resize(view, crop, size)
        np.testing.assert_array_equal(out, crop_resize(img.copy(), crop, size))
        assert out.flags.c_contiguous and out.flags.writeable and out.flags.owndata


def test_crop_resize_output_never_shares_the_input():
    img = _frame()
    out = crop_resize(img, [0, 0, 640, 480], 480)      # a resize
    same = crop_resize(img[:64, :64], [0, 0, 64, 64], 64)   # the identity size: a copy
    assert not np.shares_memory(out, img) and not np.shares_memory(same, img)
