"""Tests of the image conversions of awopt_ros.ros.convert: views without copies, copies that
the caller owns, one copy into a message."""
import array

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from awopt_ros.ros import convert


def _msg(h=6, w=5, pad=0, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rows = np.full((h, 3 * w + pad), 7, np.uint8)
    rows[:, :3 * w] = arr.reshape(h, -1)
    return arr, Image(height=h, width=w, encoding='rgb8', step=3 * w + pad,
                      data=rows.tobytes())


def test_image_to_numpy_is_a_copy_that_leaves_the_message_alone():
    arr, msg = _msg()
    msg = convert.numpy_to_image(arr, Time(sec=1), 'cam')
    out = convert.image_to_numpy(msg)
    out[:] = 0                                      # the caller owns it
    np.testing.assert_array_equal(convert.image_to_numpy(msg), arr)
    assert out.flags.c_contiguous and out.flags.owndata


def test_image_view_shares_the_message_data_read_only_and_skips_padding():
    for pad in (0, 4):
        arr, msg = _msg(pad=pad)
        msg.data = array.array('B', bytes(msg.data))
        view = convert.image_view(msg)
        np.testing.assert_array_equal(view, arr)
        assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
        assert not view.flags.writeable
        assert view.flags.c_contiguous == (pad == 0)


def test_numpy_to_image_fills_an_array_of_the_pixels_from_any_layout():
    arr, _ = _msg(seed=2)
    for src in (arr, np.asfortranarray(arr), arr[:, ::-1][:, ::-1]):
        msg = convert.numpy_to_image(src, Time(sec=2, nanosec=5), 'cam')
        assert isinstance(msg.data, array.array) and msg.data.typecode == 'B'
        assert len(msg.data) == arr.size and msg.step == 15
        np.testing.assert_array_equal(convert.image_view(msg), arr)
    msg = convert.numpy_to_image(arr, Time(), 'cam')
    arr[:] = 0                                      # the message holds its own copy
    assert convert.image_view(msg).any()
