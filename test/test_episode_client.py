"""EpisodeClient follows the policy node's /policy/model_info and collects the camera frames'
stamps (in process, private Context)."""
import json

import pytest
import rclpy
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import String

from awopt_ros.nodes.scripted_policy import ScriptedPolicyNode
from awopt_ros.ros import convert, qos
from awopt_ros.ros.episode_client import EpisodeClient


def test_wait_model_newer_follows_the_policys_model_version(ros_context):
    client = EpisodeClient(context=ros_context)
    policy = rclpy.create_node('fake_policy', context=ros_context)
    pub = policy.create_publisher(String, '/policy/model_info', qos.LATCHED)

    def publish(data):
        pub.publish(String(data=data if isinstance(data, str) else json.dumps(data)))
    try:
        assert client.model_version is None
        assert client.wait_model_newer(None, 0.2) is None        # nothing published yet
        publish({'kind': 'actor', 'model_version': 3, 'model_path': 'a.onnx'})
        info = client.wait_model_newer(None, 10.0)
        assert info['model_version'] == 3 and client.model_version == 3
        assert client.wait_model_newer(3, 0.3) is None            # no swap yet
        publish('not json')                                       # ignored, warned
        publish({'kind': 'actor'})                                # no version: ignored
        assert client.wait_model_newer(3, 0.3) is None and client.model_version == 3
        publish({'kind': 'actor', 'model_version': 4})
        assert client.wait_model_newer(3, 10.0)['model_version'] == 4
        assert client.wait_model_newer(4, 5.0, alive=lambda: False) is None
    finally:
        policy.destroy_node()
        client.destroy_node()


def test_the_scripted_policys_model_info_is_readable(ros_context):
    # Every collect warned "unreadable /policy/model_info" on the scripted policy's info.
    client = EpisodeClient(context=ros_context)
    scripted = ScriptedPolicyNode(context=ros_context)
    try:
        assert client.spin_until(lambda: client.model_info is not None, 10.0)
        assert client.model_info['kind'] == 'scripted' and client.model_version == 0
        assert client.wait_model_newer(None, 1.0)['kind'] == 'scripted'
    finally:
        scripted.destroy_node()
        client.destroy_node()


@pytest.mark.parametrize('camera_ns', [None, '/camera/camera'])
def test_camera_info_stamps_are_collected(ros_context, camera_ns):
    """On the simulator's /camera/color/camera_info by default, and under the camera_ns given
    (realsense-ros: /camera/camera/color/camera_info)."""
    kwargs = {} if camera_ns is None else {'camera_ns': camera_ns}
    client = EpisodeClient(context=ros_context, **kwargs)
    ns = camera_ns or '/camera'
    assert (client.camera_topic, client.camera_info_topic) == (
        f'{ns}/color/image_raw', f'{ns}/color/camera_info')
    camera = rclpy.create_node('fake_camera', context=ros_context)
    pub = camera.create_publisher(CameraInfo, f'{ns}/color/camera_info', qos.SENSOR)
    try:
        assert client.spin_until(lambda: pub.get_subscription_count() > 0, 10.0)
        for ns in (1_500_000_000, 1_600_000_001):
            msg = CameraInfo(width=640, height=480)
            msg.header.stamp = convert.s_to_stamp(ns * 1e-9)
            pub.publish(msg)
        assert client.spin_until(lambda: len(client.camera_stamps_ns) == 2, 10.0)
        assert client.camera_stamps_ns == [1_500_000_000, 1_600_000_001]
    finally:
        camera.destroy_node()
        client.destroy_node()


def test_a_bad_camera_ns_is_refused(ros_context):
    with pytest.raises(ValueError, match='camera_ns must be an absolute ROS name'):
        EpisodeClient(context=ros_context, camera_ns='camera/camera/')
