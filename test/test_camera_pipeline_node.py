"""camera_pipeline node in process: crop/resize, stamp passthrough, dropping stale frames and
frames of another layout than the configured source size."""
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from awopt_ros.core.image_ops import crop_resize
from awopt_ros.nodes.camera_pipeline import CameraPipelineNode
from awopt_ros.ros import convert, qos


def make(ctx, **params):
    node = CameraPipelineNode(context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    peer = rclpy.create_node('camera_peer', context=ctx)
    received = []
    peer.create_subscription(Image, '/policy/image', received.append, qos.SENSOR)
    pub = peer.create_publisher(Image, '/camera/color/image_raw', qos.SENSOR)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(peer)
    deadline = time.monotonic() + 5
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.02)
    return node, peer, pub, received, ex


def frame(peer, age_s=0.0, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    ns = peer.get_clock().now().nanoseconds - int(age_s * 1e9)
    return rgb, convert.numpy_to_image(rgb, convert.s_to_stamp(ns * 1e-9),
                                       'camera_color_optical_frame')


def spin_until(ex, cond, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.02)
    return cond()


def test_fresh_frame_is_cropped_resized_and_keeps_its_stamp(ros_context):
    node, peer, pub, received, ex = make(ros_context, image_size=32, crop_xywh=[100, 20, 400, 400])
    rgb, msg = frame(peer)
    pub.publish(msg)
    assert spin_until(ex, lambda: received)
    out = received[0]
    assert (out.width, out.height, out.encoding) == (32, 32, 'rgb8')
    assert out.header.stamp == msg.header.stamp
    np.testing.assert_array_equal(convert.image_to_numpy(out),
                                  crop_resize(rgb, [100, 20, 400, 400], 32))
    assert node.gate.accepted == 1


def test_stale_and_bad_frames_are_dropped_and_counted(ros_context):
    node, peer, pub, received, ex = make(ros_context, max_frame_age_s=0.1)
    _, old = frame(peer, age_s=1.0)
    pub.publish(old)
    bad = Image(height=480, width=640, encoding='bgr8', step=1920)
    bad.header.stamp = peer.get_clock().now().to_msg()
    pub.publish(bad)
    assert spin_until(ex, lambda: node.gate.dropped_stale == 1
                      and node.layout.dropped_bad_encoding == 1)
    _, fresh = frame(peer)
    pub.publish(fresh)
    assert spin_until(ex, lambda: received)
    assert len(received) == 1 and received[0].header.stamp == fresh.header.stamp


def _raw(peer, rgb):
    return convert.numpy_to_image(rgb, peer.get_clock().now().to_msg(),
                                  'camera_color_optical_frame')


def test_frames_of_another_size_or_layout_are_dropped_and_counted(ros_context):
    node, peer, pub, received, ex = make(ros_context)
    big = np.zeros((960, 1280, 3), np.uint8)
    pub.publish(_raw(peer, big))                                     # 1280x960 rgb8
    ok = np.zeros((480, 640, 3), np.uint8)
    longer = _raw(peer, ok)
    longer.data = bytes(longer.data) + bytes(3 * 640)                # one row too many
    pub.publish(longer)
    padded_wrong = _raw(peer, ok)
    padded_wrong.step = 1900                                         # step < 3 * width
    pub.publish(padded_wrong)
    _, fresh = frame(peer)
    pub.publish(fresh)
    assert spin_until(ex, lambda: any(m.header.stamp == fresh.header.stamp for m in received))
    spin_until(ex, lambda: False, 0.1)
    assert [m.header.stamp for m in received] == [fresh.header.stamp]   # only the good one
    assert node.layout.counters() == {'dropped_bad_encoding': 0, 'dropped_bad_size': 3}
    assert node.gate.accepted == 1


def test_source_size_is_a_parameter_and_camera_info_of_another_size_is_counted(ros_context):
    node, peer, pub, received, ex = make(ros_context, source_width=320, source_height=240,
                                         crop_xywh=[40, 0, 240, 240])
    info_pub = peer.create_publisher(CameraInfo, '/camera/color/camera_info', qos.SENSOR)
    spin_until(ex, lambda: info_pub.get_subscription_count() > 0)
    info_pub.publish(CameraInfo(width=640, height=480))
    wrong = _raw(peer, np.zeros((480, 640, 3), np.uint8))            # not the configured size
    pub.publish(wrong)
    right = _raw(peer, np.zeros((240, 320, 3), np.uint8))
    pub.publish(right)
    assert spin_until(ex, lambda: any(m.header.stamp == right.header.stamp for m in received))
    assert [m.header.stamp for m in received] == [right.header.stamp]
    assert (received[0].width, received[0].height) == (64, 64)
    assert spin_until(ex, lambda: node.camera_info_mismatch >= 1)
    assert node.layout.dropped_bad_size == 1
    assert node.info_sub is not None   # still watching: the camera disagrees


def test_camera_info_is_read_only_until_one_of_the_configured_size(ros_context):
    # Not on every frame: the pipeline's single thread also serves the frame -> command path.
    node, peer, pub, received, ex = make(ros_context)
    info_pub = peer.create_publisher(CameraInfo, '/camera/color/camera_info', qos.SENSOR)
    assert spin_until(ex, lambda: info_pub.get_subscription_count() > 0)
    info_pub.publish(CameraInfo(width=320, height=240))
    assert spin_until(ex, lambda: node.camera_info_mismatch == 1)
    info_pub.publish(CameraInfo(width=640, height=480))
    assert spin_until(ex, lambda: info_pub.get_subscription_count() == 0)
    assert node.info_sub is None and node.camera_info_mismatch == 1
    _, fresh = frame(peer)
    pub.publish(fresh)                  # frames still flow after the subscription is gone
    assert spin_until(ex, lambda: received)


def test_crop_outside_the_configured_source_size_fails_at_start(ros_context):
    with pytest.raises(ValueError, match='outside the 320x240 image'):
        CameraPipelineNode(context=ros_context, parameter_overrides=[
            Parameter('source_width', value=320), Parameter('source_height', value=240)])


def test_camera_ns_names_the_camera_topics(ros_context):
    node = CameraPipelineNode(context=ros_context, parameter_overrides=[
        Parameter('camera_ns', value='/camera/camera')])
    peer = rclpy.create_node('camera_ns_peer', context=ros_context)
    received = []
    peer.create_subscription(Image, '/policy/image', received.append, qos.SENSOR)
    pub = peer.create_publisher(Image, '/camera/camera/color/image_raw', qos.SENSOR)
    info_pub = peer.create_publisher(CameraInfo, '/camera/camera/color/camera_info',
                                     qos.SENSOR)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    ex.add_node(peer)
    try:
        assert spin_until(ex, lambda: pub.get_subscription_count() == 1
                          and info_pub.get_subscription_count() == 1)
        rgb, msg = frame(peer, seed=4)
        assert spin_until(ex, lambda: pub.publish(msg) or received)
        np.testing.assert_array_equal(convert.image_to_numpy(received[0]),
                                      crop_resize(rgb, [80, 0, 480, 480], 64))
    finally:
        ex.shutdown()
        peer.destroy_node()
        node.destroy_node()
