"""EpisodeClient follows the policy node's /policy/model_info (in process, private Context)."""
import json

import rclpy
from std_msgs.msg import String

from awopt_ros.ros import qos
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
