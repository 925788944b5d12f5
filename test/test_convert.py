"""Tests for awopt_ros.ros.convert (message <-> numpy)."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image, JointState

from awopt_ros.core.spec import ACTION_NAMES, PROPRIO_NAMES
from awopt_ros.ros import convert


def test_image_round_trip():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    msg = convert.numpy_to_image(arr, Time(sec=3, nanosec=7), 'cam')
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 5, 15, 'rgb8')
    assert msg.header.frame_id == 'cam' and msg.header.stamp.nanosec == 7
    out = convert.image_to_numpy(msg)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, arr)


def test_image_with_step_padding():
    arr = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    padded = np.zeros((4, 12), dtype=np.uint8)
    padded[:, :9] = arr.reshape(4, 9)
    padded[:, 9:] = 255
    msg = Image(height=4, width=3, encoding='rgb8', step=12, data=padded.tobytes())
    np.testing.assert_array_equal(convert.image_to_numpy(msg), arr)


def test_image_bad_inputs():
    arr = np.zeros((2, 2, 3), dtype=np.uint8)
    msg = convert.numpy_to_image(arr, Time(), 'cam')
    msg.encoding = 'bgr8'
    with pytest.raises(ValueError, match='encoding'):
        convert.image_to_numpy(msg)
    msg = convert.numpy_to_image(arr, Time(), 'cam')
    msg.height = 3
    with pytest.raises(ValueError, match='bytes'):
        convert.image_to_numpy(msg)
    msg = convert.numpy_to_image(arr, Time(), 'cam')
    msg.step = 5
    with pytest.raises(ValueError, match='step'):
        convert.image_to_numpy(msg)
    with pytest.raises(ValueError, match='shape'):
        convert.numpy_to_image(np.zeros((2, 2), np.uint8), Time(), 'cam')
    with pytest.raises(ValueError, match='uint8'):
        convert.numpy_to_image(np.zeros((2, 2, 3), np.float32), Time(), 'cam')


def test_action_round_trip():
    action = np.array([0.01, -0.02, 0.03, -0.1, 0.0, 1.0, 0.0], dtype=np.float32)
    msg = convert.action_to_msg(action, Time(sec=5, nanosec=250_000_000))
    assert tuple(msg.name) == ACTION_NAMES
    assert msg.header.frame_id == 'base_link'
    assert convert.stamp_to_s(msg.header.stamp) == pytest.approx(5.25)
    out = convert.msg_to_action(msg)
    assert out.dtype == np.float32 and out.shape == (7,)
    np.testing.assert_array_equal(out, action)


def test_action_bad_inputs():
    with pytest.raises(ValueError, match='7'):
        convert.action_to_msg(np.zeros(6), Time())
    msg = convert.action_to_msg(np.zeros(7), Time())
    msg.name = list(reversed(ACTION_NAMES))
    with pytest.raises(ValueError, match='names'):
        convert.msg_to_action(msg)
    msg = convert.action_to_msg(np.zeros(7), Time())
    msg.position = [0.0] * 6
    with pytest.raises(ValueError, match='positions'):
        convert.msg_to_action(msg)


def test_proprio_round_trip_and_bad_inputs():
    proprio = np.float32([0.6, -0.05, 0.2, 0.1, 0.99, 0.3])
    msg = convert.proprio_to_msg(proprio, Time(sec=7, nanosec=5))
    assert tuple(msg.name) == PROPRIO_NAMES and msg.header.frame_id == 'base_link'
    assert convert.stamp_to_ns(msg.header.stamp) == 7_000_000_005
    out = convert.msg_to_proprio(msg)
    assert out.dtype == np.float32 and out.shape == (6,)
    np.testing.assert_allclose(out, proprio)
    with pytest.raises(ValueError, match='6 entries'):
        convert.proprio_to_msg(np.zeros(7), Time())
    msg.name = list(reversed(PROPRIO_NAMES))
    with pytest.raises(ValueError, match='names'):
        convert.msg_to_proprio(msg)
    msg = convert.proprio_to_msg(proprio, Time())
    msg.position = [0.0, 0.0, float('nan'), 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match='finite'):
        convert.msg_to_proprio(msg)


def test_joint_positions_reorders_and_names_missing():
    msg = JointState(name=['b', 'a', 'c'], position=[2.0, 1.0, 3.0])
    out = convert.joint_positions(msg, ['a', 'b', 'c'])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])
    with pytest.raises(KeyError, match='zz'):
        convert.joint_positions(msg, ['a', 'zz'])
    with pytest.raises(ValueError, match='positions'):
        convert.joint_positions(JointState(name=['a', 'b'], position=[1.0]), ['a'])


def test_stamps():
    assert convert.stamp_to_s(Time(sec=1, nanosec=500_000_000)) == pytest.approx(1.5)
    stamp = convert.s_to_stamp(12.345)
    assert (stamp.sec, stamp.nanosec) == (12, 345_000_000)
    with pytest.raises(ValueError):
        convert.s_to_stamp(-1.0)


def test_grasp_goal_round_trip_and_bad_inputs():
    stamp = convert.s_to_stamp(3.5)
    for yaw in (0.0, 1.2, -1.5, 3.0):
        goal = np.array([0.61, -0.04, 0.03, yaw])
        msg = convert.grasp_goal_to_msg(goal, stamp)
        assert msg.header.frame_id == 'base_link' and msg.header.stamp == stamp
        back = convert.msg_to_grasp_goal(msg)
        assert back.dtype == np.float32
        np.testing.assert_allclose(back, goal, atol=1e-6)
    with pytest.raises(ValueError, match='x, y, z, yaw'):
        convert.grasp_goal_to_msg([0.1, 0.2, 0.3], stamp)
    msg = convert.grasp_goal_to_msg([0.1, 0.2, 0.3, 0.0], stamp)
    msg.pose.orientation.w = 0.0
    with pytest.raises(ValueError, match='zero quaternion'):
        convert.msg_to_grasp_goal(msg)
    msg = convert.grasp_goal_to_msg([float('nan'), 0.2, 0.3, 0.0], stamp)
    with pytest.raises(ValueError, match='not finite'):
        convert.msg_to_grasp_goal(msg)


def test_not_after_treats_a_stamp_and_its_float_seconds_as_equal():
    stamp = convert.s_to_stamp(1796313270.641190697)    # a wall-clock epoch
    t_s = convert.stamp_to_s(stamp)
    assert convert.not_after(stamp, t_s) and convert.not_after(stamp, t_s + 0.01)
    assert convert.not_after(stamp, float(f'{t_s:.7f}'))   # float seconds sent as JSON text
    assert not convert.not_after(stamp, t_s - 1e-4)
