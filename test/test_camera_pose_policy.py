"""Policy node: the deployed camera pose against the model's recorded one (a warning and a
diagnostics WARN when the camera sits elsewhere; an info line for models that record none)."""
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from awopt_ros.core import camera_pose
from awopt_ros.nodes.policy import PolicyNode
from awopt_ros.ros.diagnostics import WARN, parse_values
from awopt_ros.ros.run import StartupError
from conftest import export_tiny_actor

SIZE = 16
CROP = [80, 0, 480, 480]
SIM = list(camera_pose.SIM_CAMERA_POSE_XYZ_RPY)


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('camera_pose') / 'tiny.onnx'
    export_tiny_actor(path, seed=1, image_size=SIZE, crop_xywh=CROP, check_parity=False)
    return path


def _node(ctx, path, **extra):
    values = {'model_path': str(path), 'image_size': SIZE, 'crop_xywh': CROP,
              'reload_period_s': 0.0}
    values.update(extra)
    return PolicyNode(context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in values.items()])


def _diagnostics(ctx, node):
    peer = rclpy.create_node('camera_pose_peer', context=ctx)
    got = []
    peer.create_subscription(DiagnosticArray, '/diagnostics', got.append, 10)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(peer)
    deadline = time.monotonic() + 5.0
    while not got and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.05)
    assert got
    return got[-1].status[0]


def test_same_pose_is_ok(ros_context, model_path):
    node = _node(ros_context, model_path)
    assert node.camera_pose_status == camera_pose.POSE_OK
    status = _diagnostics(ros_context, node)
    assert parse_values(status)['camera_pose'] == 'ok'
    node.close()
    node.destroy_node()


def test_moved_camera_warns_in_log_and_diagnostics(ros_context, model_path, monkeypatch):
    moved = SIM[:2] + [SIM[2] + 0.1] + SIM[3:]
    warnings = []
    node = None

    real_get_logger = PolicyNode.get_logger

    def spy(self):
        logger = real_get_logger(self)

        class Spy:
            def __getattr__(self, name):
                return getattr(logger, name)

            def warning(self, msg, *a, **k):
                warnings.append(msg)
                return logger.warning(msg, *a, **k)
        return Spy()
    monkeypatch.setattr(PolicyNode, 'get_logger', spy)
    node = _node(ros_context, model_path, camera_pose_xyz_rpy=moved)
    assert node.camera_pose_status == camera_pose.POSE_MISMATCH
    assert any('camera sits 0.100 m' in w for w in warnings), warnings
    status = _diagnostics(ros_context, node)
    assert status.level == WARN and parse_values(status)['camera_pose'] == 'mismatch'
    node.close()
    node.destroy_node()


def test_within_tolerance_is_ok(ros_context, model_path):
    moved = SIM[:2] + [SIM[2] + 0.1] + SIM[3:]
    node = _node(ros_context, model_path, camera_pose_xyz_rpy=moved,
                 camera_pose_tolerance_m=0.15)
    assert node.camera_pose_status == camera_pose.POSE_OK
    node.close()
    node.destroy_node()


def test_model_without_pose_is_not_checked(ros_context):
    """The shipped models predate the field: no warning wherever the camera is (only read)."""
    from awopt_ros.core.paths import models_dir
    moved = SIM[:2] + [SIM[2] + 0.5] + SIM[3:]
    node = _node(ros_context, models_dir() / 'grasp_bc.onnx', camera_pose_xyz_rpy=moved,
                 image_size=64)
    assert node.camera_pose_status == camera_pose.POSE_NOT_RECORDED
    status = _diagnostics(ros_context, node)
    assert parse_values(status)['camera_pose'] == 'not_recorded' and status.level != WARN
    node.close()
    node.destroy_node()


def test_bad_deployed_pose_refuses_to_start(ros_context, model_path):
    with pytest.raises(StartupError, match='camera_pose_xyz_rpy'):
        _node(ros_context, model_path, camera_pose_xyz_rpy=[0.0, 0.0, 1.0])
