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


@pytest.fixture
def ros_context():
    """A private rclpy Context, initialised for one test and shut down after it."""
    import rclpy
    from rclpy.context import Context
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)
