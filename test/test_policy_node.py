"""In-process tests of the policy node (awopt_ros.nodes.policy)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from conftest import export_tiny_actor

from awopt_ros.core import robot, spec
from awopt_ros.core.onnx_policy import OnnxActor
from awopt_ros.nodes.policy import PolicyNode
from awopt_ros.ros import convert, qos
from awopt_ros.ros.run import StartupError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
CROP = [80, 0, 480, 480]


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('policy') / 'tiny.onnx'
    export_tiny_actor(path, seed=1, image_size=SIZE, crop_xywh=CROP, dataset='test/x-v0')
    return path


def _params(path, **extra):
    values = {'model_path': str(path), 'image_size': SIZE, 'crop_xywh': CROP}
    values.update(extra)
    return [Parameter(k, value=v) for k, v in values.items()]


def _spin_until(executor, cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not cond():
        executor.spin_once(timeout_sec=0.05)
    return cond()


def _spin_sending(executor, send, cond, timeout_s=3.0):
    """Call ``send()`` and spin briefly until ``cond()`` holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not cond():
        send()
        _spin_until(executor, cond, 0.05)
    return cond()


def _joint_state(stamp, q=robot.HOME_Q, finger=0.01):
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(spec.ARM_JOINTS) + [spec.GRIPPER_JOINT]
    msg.position = [float(v) for v in q] + [finger]
    return msg


@pytest.fixture
def rig(ros_context, model_path):
    """(executor, policy node, test node, received actions, model infos)."""
    node = PolicyNode(context=ros_context, parameter_overrides=_params(model_path))
    tester = rclpy.create_node('policy_tester', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(tester)
    actions, infos = [], []
    tester.create_subscription(JointState, '/policy/action', actions.append, qos.COMMAND)
    tester.create_subscription(String, '/policy/model_info', infos.append, qos.LATCHED)
    tester.img_pub = tester.create_publisher(Image, '/policy/image', qos.SENSOR)
    tester.js_pub = tester.create_publisher(JointState, '/joint_states', qos.SENSOR)
    yield executor, node, tester, actions, infos
    executor.shutdown()
    tester.destroy_node()
    node.destroy_node()


def _wait_matched(executor, tester):
    ok = _spin_until(executor, lambda: tester.img_pub.get_subscription_count() > 0
                     and tester.js_pub.get_subscription_count() > 0)
    assert ok, 'policy node subscriptions not matched'


def test_image_and_joint_state_give_action(rig, model_path):
    executor, node, tester, actions, infos = rig
    _wait_matched(executor, tester)
    assert _spin_until(executor, lambda: infos)
    info = json.loads(infos[0].data)
    assert info['kind'] == 'actor' and info['model_path'] == str(model_path)
    assert info['contract']['crop_xywh'] == CROP

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    now = node.get_clock().now()
    image_stamp = convert.s_to_stamp(now.nanoseconds * 1e-9 - 0.05)   # camera frame time

    def send():   # a fresh joint state, then the image
        tester.js_pub.publish(_joint_state(node.get_clock().now().to_msg()))
        executor.spin_once(timeout_sec=0.02)
        tester.img_pub.publish(convert.numpy_to_image(img, image_stamp, 'camera'))
    assert _spin_sending(executor, send, lambda: actions, 5.0), 'no action published'
    msg = actions[0]
    assert list(msg.name) == list(spec.ACTION_NAMES)
    assert msg.header.frame_id == 'base_link'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (image_stamp.sec,
                                                                image_stamp.nanosec)
    from awopt_ros.core.kinematics import proprio_from_joints
    proprio = proprio_from_joints(robot.HOME_Q, 0.01)
    expected = OnnxActor(model_path).act(img, proprio)
    np.testing.assert_allclose(np.array(msg.position), expected, atol=1e-6)
    assert node.counts['actions_published'] >= 1


def test_missing_or_stale_joint_state_is_skipped(rig):
    executor, node, tester, actions, _ = rig
    _wait_matched(executor, tester)
    img = convert.numpy_to_image(np.zeros((SIZE, SIZE, 3), np.uint8),
                                 node.get_clock().now().to_msg(), 'c')
    assert _spin_sending(executor, lambda: tester.img_pub.publish(img),
                         lambda: node.counts['skipped_no_joint_state'] > 0)
    old = convert.s_to_stamp(node.get_clock().now().nanoseconds * 1e-9 - 1.0)   # 1 s old

    def send_stale():
        tester.js_pub.publish(_joint_state(old))
        tester.img_pub.publish(img)
    assert _spin_sending(executor, send_stale,
                         lambda: node.counts['skipped_stale_joint_state'] > 0)
    executor.spin_once(timeout_sec=0.05)
    assert not actions
    assert node.counts['actions_published'] == 0


def test_wrong_image_size_counted(rig):
    executor, node, tester, actions, _ = rig
    _wait_matched(executor, tester)
    img = np.zeros((SIZE * 2, SIZE * 2, 3), np.uint8)

    def send():
        tester.js_pub.publish(_joint_state(node.get_clock().now().to_msg()))
        tester.img_pub.publish(convert.numpy_to_image(img, node.get_clock().now().to_msg(), 'c'))
    assert _spin_sending(executor, send, lambda: node.counts['bad_inputs'] > 0)
    assert not actions


@pytest.mark.parametrize('override, field', [
    ({'crop_xywh': [0, 0, 480, 480]}, 'crop_xywh'),
    ({'image_size': 64}, 'image_size'),
])
def test_contract_mismatch_is_startup_error(ros_context, model_path, override, field):
    with pytest.raises(StartupError, match=field):
        PolicyNode(context=ros_context, parameter_overrides=_params(model_path, **override))


def test_missing_model_is_startup_error(ros_context, tmp_path):
    with pytest.raises(StartupError, match='not found'):
        PolicyNode(context=ros_context, parameter_overrides=_params(tmp_path / 'none.onnx'))


def test_main_exits_1_on_contract_mismatch(model_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, '-m', 'awopt_ros.nodes.policy', '--ros-args',
         '-p', f'model_path:={model_path}', '-p', 'image_size:=64'],
        env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert 'image_size' in proc.stderr and 'Traceback' not in proc.stderr
