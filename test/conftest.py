"""Test environment: DDS stays on this machine, each worker gets its own ROS_DOMAIN_ID."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _domain_id():
    worker = os.environ.get('PYTEST_XDIST_WORKER', 'gw0')
    digits = ''.join(c for c in worker if c.isdigit()) or '0'
    return str(60 + (os.getpid() % 40) + int(digits) % 10)


os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(ROOT / 'config' / 'fastdds_localhost_shm.xml')
os.environ['ROS_DOMAIN_ID'] = _domain_id()
os.environ.setdefault('AMENT_PREFIX_PATH', str(Path(sys.prefix)))
os.environ.setdefault('MUJOCO_GL', 'egl')


def export_tiny_actor(path, seed=0, image_size=16, crop_xywh=(80, 0, 480, 480), **export_kw):
    """Export a small random actor (image_size px, 4 channels) to ONNX at ``path``.

    Returns ``(actor, export result)``. torch is imported here, not by every test module.
    """
    import torch

    from awopt_ros.learning.export import export_actor
    from awopt_ros.learning.networks import Actor, ActorConfig
    torch.manual_seed(seed)
    actor = Actor(ActorConfig(image_size=image_size, channels=4, num_conv=2, hidden=16)).eval()
    return actor, export_actor(actor, path, list(crop_xywh), **export_kw)


@pytest.fixture
def ros_context():
    """A private rclpy Context, initialised for one test and shut down after it."""
    import rclpy
    from rclpy.context import Context
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def rewrite_contract(src, dst, **changes):
    """Copy the ONNX model ``src`` to ``dst`` with ``changes`` applied to its awopt_contract."""
    import json

    import onnx

    from awopt_ros.core.onnx_policy import CONTRACT_KEY
    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == CONTRACT_KEY:
            contract = json.loads(prop.value)
            contract.update(changes)
            prop.value = json.dumps(contract)
    onnx.save(model, str(dst))
    return dst
