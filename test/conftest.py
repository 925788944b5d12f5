"""Test environment: DDS stays on this machine, each worker gets its own ROS_DOMAIN_ID."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _domain_id():
    """Return a ROS_DOMAIN_ID no other pytest process on this machine holds (60..99), and
    on which no awopt stack holds its lock.

    Each candidate domain is claimed with an exclusive ``flock`` on a file in the temp dir,
    held for this process's life, so that concurrent test runs (pytest-xdist workers or
    separate checkouts) never share a domain and never see each other's nodes.
    """
    import fcntl
    import tempfile
    start = os.getpid() % 40
    for i in range(40):
        domain = 60 + (start + i) % 40
        fd = os.open(os.path.join(tempfile.gettempdir(), f'awopt_test_domain_{domain}.lock'),
                     os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if not _stack_lock_free(domain):   # an awopt stack (or its orphans) runs there
            os.close(fd)
            continue
        _DOMAIN_LOCKS.append(fd)   # kept open: the lock lasts as long as this process
        return str(domain)
    raise RuntimeError('no free ROS_DOMAIN_ID in 60..99 for this test run')


_DOMAIN_LOCKS = []


def _stack_lock_free(domain):
    """True when no awopt stack holds ``domain``'s stack lock (launcher.domain_lock_path)."""
    import fcntl
    import tempfile
    path = os.path.join(tempfile.gettempdir(), f'awopt_stack_domain_{domain}.lock')
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True            # no such lock file: never used
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)           # closing releases the probe's lock at once
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


@pytest.fixture(scope='session')
def recorded_demo_run(tmp_path_factory):
    """A run directory of 2 lockstep demo episodes (12 steps at most) with the shipped actor
    (models/grasp_awopt.onnx), recorded once per test session (test/recorded_run.py).
    Tests must not modify it: copy it (shutil.copytree) before writing into it."""
    from recorded_run import record_demo
    return record_demo(tmp_path_factory.mktemp('recorded_demo') / 'run')
