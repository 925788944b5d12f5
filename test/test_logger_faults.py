"""A real logger process under faults: kill -9 mid-episode (its bag is rebuilt, by
``awopt bag-repair`` and at the logger's next start, and marked cut) and a full disk (a
4 MB tmpfs: the episode being written is dropped, earlier ones stay loadable, the logger
keeps running and says why it takes no more episodes)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, String

from awopt_ros.core.bag import read_messages
from awopt_ros.core.dataset import load_episodes
from awopt_ros.core.spec import ARM_JOINTS, GRIPPER_JOINT
from awopt_ros.ros import convert, qos
from awopt_ros.ros.diagnostics import logger_ready, parse_values

CAMERA = '/camera/color/image_raw'
DATASET_ID = 'awopt/kuka-grasp-v0'


class LoggerProcess:
    """``python -m awopt_ros.nodes.logger`` with ``params``, its output in a log file."""

    def __init__(self, log_path, **params):
        argv = [sys.executable, '-m', 'awopt_ros.nodes.logger', '--ros-args']
        for key, value in params.items():
            argv += ['-p', f'{key}:={value}']
        self.log_path = log_path
        self._log = open(log_path, 'w')
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self):
        return Path(self.log_path).read_text()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def stop(self, timeout_s=30):
        """SIGINT (as Ctrl-C) and wait; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


class Feeder:
    """Publishes what the stack would (events, frames, joints, policy images, actions) and
    listens to the logger's diagnostics and saved-episode records."""

    def __init__(self, ctx):
        self.node = rclpy.create_node('feeder', context=ctx)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.node)
        n = self.node
        self.pub = {
            'event': n.create_publisher(String, '/episode/event', qos.LATCHED),
            'camera': n.create_publisher(Image, CAMERA, qos.SENSOR),
            'pimage': n.create_publisher(Image, '/policy/image', qos.SENSOR),
            'joints': n.create_publisher(JointState, '/joint_states', qos.SENSOR),
            'action': n.create_publisher(JointState, '/policy/action', qos.COMMAND),
            'success': n.create_publisher(Float32, '/success/probability', qos.COMMAND),
        }
        self.diag = None      # (level, message, values) of the latest 'logger' status
        self.saved = {}
        n.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        n.create_subscription(String, '/logger/episode_saved', self._on_saved, qos.LATCHED)
        self.rng = np.random.default_rng(0)

    def _on_diag(self, msg):
        for status in msg.status:
            if status.name == 'logger':
                self.diag = (status.level, status.message, parse_values(status))

    def _on_saved(self, msg):
        record = json.loads(msg.data)
        self.saved[record['episode']] = record

    def spin_until(self, cond, timeout_s=30.0, what='condition'):
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, f'{what} not met within {timeout_s} s'
            self.executor.spin_once(timeout_sec=0.02)

    def spin_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def step(self, big=False):
        """One frame: camera, joints, policy image, success probability and action."""
        stamp = convert.s_to_stamp(time.time())
        js = JointState(name=list(ARM_JOINTS) + [GRIPPER_JOINT], position=[0.1] * 7 + [0.02])
        js.header.stamp = convert.s_to_stamp(time.time() - 0.005)
        if big:   # 640x480 noise: 0.9 MB that no compression shrinks
            cam = self.rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        else:
            cam = np.full((48, 64, 3), 100, np.uint8)
        self.pub['joints'].publish(js)
        self.pub['camera'].publish(convert.numpy_to_image(cam, stamp, 'camera_optical_frame'))
        self.pub['pimage'].publish(convert.numpy_to_image(
            np.full((64, 64, 3), 50, np.uint8), stamp, 'camera_optical_frame'))
        self.pub['success'].publish(Float32(data=0.5))
        self.pub['action'].publish(convert.action_to_msg(
            np.float32([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), stamp))
        self.spin_for(0.05)

    def wait_ready(self, timeout_s=60.0):
        """Feed frames until the logger's diagnostics count every input (DDS matched)."""
        deadline = time.monotonic() + timeout_s
        while self.diag is None or not logger_ready(self.diag[2]):
            assert time.monotonic() < deadline, 'the logger never saw the inputs'
            self.step()

    def event(self, **kw):
        kw.setdefault('stamp_s', time.time() - 0.01)
        self.pub['event'].publish(String(data=json.dumps(kw)))
        self.spin_for(0.1)

    def values(self):
        return self.diag[2] if self.diag else {}

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def feeder(ros_context):
    f = Feeder(ros_context)
    yield f
    f.close()


def _bag_info(path):
    meta = yaml.safe_load((Path(path) / 'metadata.yaml').read_text())
    with AnyReader([Path(path)]) as reader:
        counts = {}
        for conn, _, _ in reader.messages():
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
    return meta['rosbag2_bagfile_information'].get('custom_data') or {}, counts


def test_kill_9_mid_episode_bag_rebuilt_by_bag_repair_and_at_the_next_start(feeder, tmp_path):
    run = tmp_path / 'run'
    params = {'output_dir': str(run), 'bag_flush_period_s': 0.2, 'end_grace_s': 0.1}
    first = LoggerProcess(tmp_path / 'logger1.log', **params)
    second = None
    try:
        feeder.wait_ready()
        feeder.event(event='start', episode=0, seed=3)
        frames = 12
        for _ in range(frames):
            feeder.step()
        feeder.spin_until(lambda: int(feeder.values().get('frames_logged_episode', 0)) >= frames,
                          what='frames written')
        # Before the kill, wait until the file itself holds every frame (the logger's flush
        # timer ran): under load this takes longer than bag_flush_period_s.
        bag = run / 'bags' / 'episode_0000'
        deadline = time.monotonic() + 60
        while sum(m[0] == CAMERA for m in read_messages(bag)) < frames:
            assert time.monotonic() < deadline, 'frames never reached the file: ' + first.log()
            time.sleep(0.1)
        assert first.kill9() == -signal.SIGKILL
        assert not (bag / 'metadata.yaml').exists()
        with pytest.raises(Exception):
            _bag_info(bag)
        # the episode ends while no logger runs (so the next logger sees a finished episode)
        feeder.event(event='end', episode=0, outcome='node_lost', success=False,
                     terminated=False, truncated=True, steps=frames)

        # awopt bag-repair on a copy
        copy = tmp_path / 'copy' / 'bags'
        shutil.copytree(run / 'bags', copy)
        proc = subprocess.run([sys.executable, '-m', 'awopt_ros.cli', 'bag-repair',
                               str(copy.parent)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert 'episode_0000: rebuilt' in proc.stdout and 'marked cut' in proc.stdout
        custom, counts = _bag_info(copy / 'episode_0000')
        assert custom['awopt_cut'] == 'true'
        assert counts[CAMERA] == frames       # nothing written before the kill is lost
        again = subprocess.run([sys.executable, '-m', 'awopt_ros.cli', 'bag-repair',
                                str(copy.parent)], capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and 'no bag needs a repair' in again.stdout

        # the logger's next start rebuilds it in place
        second = LoggerProcess(tmp_path / 'logger2.log', **params)
        deadline = time.monotonic() + 60
        while not (bag / 'metadata.yaml').exists():
            assert time.monotonic() < deadline, second.log()
            time.sleep(0.1)
        feeder.spin_until(lambda: int(feeder.values().get('bags_repaired', 0)) == 1,
                          what='bags_repaired reported')
        custom, counts = _bag_info(bag)
        assert custom['awopt_cut'] == 'true' and counts[CAMERA] == frames
        assert 'marked cut' in second.log()
        # The latched start/end of episode 0 replayed to the new logger opens a bag beside it
        # (locked, so the recovery skips it) that is removed once the replayed end is handled.
        deadline = time.monotonic() + 30
        while sorted(p.name for p in (run / 'bags').iterdir()) != ['episode_0000']:
            assert time.monotonic() < deadline, second.log()
            time.sleep(0.1)
        assert second.stop() == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_full_disk_drops_only_the_episode_being_written_and_the_logger_keeps_running(
        feeder, tmp_path):
    from tmpfs_util import small_tmpfs
    with small_tmpfs(tmp_path / 'disk', 4096) as disk:
        run = disk / 'run'
        logger = LoggerProcess(tmp_path / 'logger.log', output_dir=str(run),
                               min_free_disk_mb=0, bag_flush_period_s=0.2, end_grace_s=0.1)
        try:
            feeder.wait_ready()
            assert feeder.values()['accepting_episodes'] == 'true'
            # episode 0 fits
            feeder.event(event='start', episode=0, seed=1)
            feeder.spin_until(lambda: feeder.values().get('recording') == 'True')
            for _ in range(3):
                feeder.step()
            feeder.spin_until(lambda: int(feeder.values().get('steps_episode', 0)) >= 3)
            feeder.event(event='end', episode=0, outcome='success', success=True,
                         terminated=True, truncated=False, steps=3)
            feeder.spin_until(lambda: 0 in feeder.saved, what='episode 0 saved')
            assert feeder.saved[0]['dataset_written'] and feeder.saved[0]['write_error'] is None
            # episode 1 fills the disk
            feeder.event(event='start', episode=1, seed=2)
            feeder.spin_until(lambda: feeder.values().get('episode') == '1')
            for _ in range(8):
                feeder.step(big=True)
            feeder.spin_until(lambda: feeder.values().get('accepting_episodes') == 'false',
                              what='the write error reported')
            level, message, values = feeder.diag
            assert level == DiagnosticStatus.ERROR
            assert message.startswith('write error: No space left on device'), message
            assert values['write_errors'] == '1' and float(values['free_disk_mb']) >= 0
            assert values['min_free_disk_mb'] == '0'
            feeder.event(event='end', episode=1, outcome='success', success=True,
                         terminated=True, truncated=False, steps=8)
            feeder.spin_until(lambda: 1 in feeder.saved, what='episode 1 reported')
            rec = feeder.saved[1]
            assert 'No space left on device' in rec['write_error']
            assert rec['bag'] is None and not rec['dataset_written']
            # a later episode is refused, with the reason
            feeder.event(event='start', episode=2, seed=3)
            feeder.step()
            feeder.event(event='end', episode=2, outcome='success', success=True,
                         terminated=True, truncated=False, steps=1)
            feeder.spin_until(lambda: 2 in feeder.saved, what='episode 2 reported')
            assert feeder.saved[2]['write_error'].startswith('write error')
            assert logger.proc.poll() is None, logger.log()    # never crashed
            assert logger.stop() == 0, logger.log()
            # every earlier episode is loadable; the dropped one left nothing behind
            assert [e['episode'] for e in load_episodes(run, DATASET_ID)] == [0]
            custom, counts = _bag_info(run / 'bags' / 'episode_0000')
            assert counts[CAMERA] == 3 and custom.get('awopt_cut') is None
            assert sorted(p.name for p in (run / 'bags').iterdir()) == ['episode_0000']
        finally:
            logger.stop()
            os.sync()
