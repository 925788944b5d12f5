"""camera_pipeline node in process: crop/resize, stamp passthrough, stale-frame dropping."""
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

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
    assert spin_until(ex, lambda: node.gate.dropped_stale == 1 and node.bad_frames == 1)
    _, fresh = frame(peer)
    pub.publish(fresh)
    assert spin_until(ex, lambda: received)
    assert len(received) == 1 and received[0].header.stamp == fresh.header.stamp
