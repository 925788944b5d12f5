"""In-process tests of the logger node: episode events -> MCAP bag + Minari dataset."""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from rosbags.highlevel import AnyReader
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float32, String
from vision_msgs.msg import Classification, ObjectHypothesis

from awopt_ros.core import kinematics
from awopt_ros.core.dataset import load_episodes
from awopt_ros.core.spec import ARM_JOINTS, GRIPPER_JOINT
from awopt_ros.core.report import bag_frame_stamps_ns
from awopt_ros.nodes.logger import LoggerNode
from awopt_ros.ros import convert, qos

CAMERA = '/camera/color/image_raw'
#: lbr-stack driver names with realsense-ros's camera (the fake-hardware bringup's)
LBR = {'joint_names': [f'lbr_A{i}' for i in range(1, 8)], 'gripper_joint': 'lbr_gripper',
       'joint_states_topic': '/lbr/joint_states', 'camera_ns': '/camera/camera'}


def fake_proprio(q7, finger_m):
    """Deterministic stand-in for the FK (the logger only routes its result)."""
    q = np.asarray(q7, dtype=np.float64)
    return np.array([q[0], q[1], q[2], np.sin(q[3]), np.cos(q[3]), finger_m / 0.04],
                    dtype=np.float32)


class Harness:
    """A publisher node beside the logger, both spun by one executor of a private context.
    ``names``: the driver names (keys of :data:`LBR`) the logger is configured with and the
    harness publishes under (default: the simulator's)."""

    def __init__(self, ctx, tmp_path, monkeypatch, params=(), names=None):
        names = names or {}
        params = [*params, *(Parameter(k, value=v) for k, v in names.items())]
        camera_ns = names.get('camera_ns', '/camera')
        self.camera_topic = f'{camera_ns}/color/image_raw'
        self.joint_names = (list(names.get('joint_names', ARM_JOINTS))
                            + [names.get('gripper_joint', GRIPPER_JOINT)])
        monkeypatch.setattr(kinematics, 'proprio_from_joints', fake_proprio)
        self.logger = LoggerNode(context=ctx, parameter_overrides=[
            Parameter('output_dir', value=str(tmp_path / 'run')),
            Parameter('end_grace_s', value=0.2), *params])
        self.node = rclpy.create_node('harness', context=ctx)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.logger)
        self.executor.add_node(self.node)
        n = self.node
        self.pub = {
            'event': n.create_publisher(String, '/episode/event', qos.LATCHED),
            'info': n.create_publisher(String, '/policy/model_info', qos.LATCHED),
            'camera': n.create_publisher(Image, self.camera_topic, qos.SENSOR),
            'camera_info': n.create_publisher(CameraInfo, f'{camera_ns}/color/camera_info',
                                              qos.SENSOR),
            'pimage': n.create_publisher(Image, '/policy/image', qos.SENSOR),
            'joints': n.create_publisher(JointState, names.get('joint_states_topic',
                                                               '/joint_states'), qos.SENSOR),
            'action': n.create_publisher(JointState, '/policy/action', qos.COMMAND),
            'success': n.create_publisher(Float32, '/success/probability', qos.COMMAND),
            'goal': n.create_publisher(PoseStamped, '/scripted_policy/grasp_goal', qos.COMMAND),
            'proprio': n.create_publisher(JointState, '/policy/proprio', qos.COMMAND),
            'classification': n.create_publisher(
                Classification, '/success_detector/classification', qos.COMMAND),
            'detector': n.create_publisher(Bool, '/success_detector/success', qos.COMMAND),
        }
        self.saved = []
        n.create_subscription(String, '/logger/episode_saved',
                              lambda m: self.saved.append(json.loads(m.data)), qos.LATCHED)
        self.spin_until(lambda: all(p.get_subscription_count() > 0 for p in self.pub.values()))

    def spin_until(self, cond, timeout_s=5.0):
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, 'condition not met in time'
            self.executor.spin_once(timeout_sec=0.02)

    def announce_actor(self):
        """Publish the latched model info of an actor and wait until the logger has it."""
        self.pub['info'].publish(String(data=json.dumps({'kind': 'actor', 'model': 'm.onnx'})))
        self.spin_until(lambda: self.logger._policy_kind == 'actor')

    def start(self, episode, seed):
        """Send a start event and wait until the logger records the episode."""
        self.event(event='start', episode=episode, seed=seed)
        self.spin_until(lambda: self.logger.recorder.in_episode)

    def event(self, **kw):
        # Messages in these tests carry stamps of a few seconds; the episode starts at 0 s.
        kw.setdefault('stamp_s', 0.0)
        self.pub['event'].publish(String(data=json.dumps(kw)))

    def close(self):
        self.executor.shutdown()
        self.logger.destroy_node()
        self.node.destroy_node()


@pytest.fixture
def harness(ros_context, tmp_path, monkeypatch):
    h = Harness(ros_context, tmp_path, monkeypatch)
    yield h
    h.close()


def _run_steps(h, rng, steps, t0_s, reverse_joints=False):
    """Publish ``steps`` (camera, joints, policy image, success, action) rounds; with
    ``reverse_joints`` the joint states list the joints from the gripper back to A1."""
    sent = {'camera': [], 'image': [], 'action': [], 'q7': [], 'finger': [], 'p': []}
    for i in range(steps):
        stamp = convert.s_to_stamp(t0_s + 0.1 * i)
        q7 = rng.uniform(-1, 1, 7)
        finger = float(rng.uniform(0, 0.04))
        order = slice(None, None, -1 if reverse_joints else 1)
        js = JointState(name=h.joint_names[order], position=(q7.tolist() + [finger])[order])
        js.header.stamp = convert.s_to_stamp(t0_s + 0.1 * i - 0.005)
        cam = convert.numpy_to_image(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), stamp,
                                     'camera_color_optical_frame')
        small = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        action = np.float32([0.01, -0.02, 0.005, 0.1, 0.0, float(i == steps - 1), 0.0])
        p = np.float32(0.1 * i)
        h.pub['joints'].publish(js)
        h.pub['camera'].publish(cam)
        h.pub['pimage'].publish(convert.numpy_to_image(small, stamp, 'camera_color_optical_frame'))
        h.pub['success'].publish(Float32(data=float(p)))
        h.spin_until(lambda: h.logger._success_p == p)
        h.pub['action'].publish(convert.action_to_msg(action, stamp))
        h.spin_until(lambda: h.logger.recorder.steps == i + 1)
        for key, val in (('camera', cam), ('image', small), ('action', action), ('q7', q7),
                         ('finger', finger), ('p', p)):
            sent[key].append(val)
    return sent


def _bag_messages(path):
    out = {}
    with AnyReader([Path(path)]) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(raw)
    return out


def test_episode_recorded_to_bag_and_dataset(harness, tmp_path):
    h, rng = harness, np.random.default_rng(3)
    h.announce_actor()
    h.start(5, 1005)
    sent = _run_steps(h, rng, 6, 50.0)
    h.event(event='end', episode=5, outcome='success', steps=6, success=True, terminated=True,
            truncated=False)
    h.spin_until(lambda: h.saved)
    saved = h.saved[0]
    bag = tmp_path / 'run' / 'bags' / 'episode_0005'
    assert saved == {'episode': 5, 'bag': str(bag), 'frames_logged': 6, 'steps': 6,
                     'dataset_id': 'awopt/kuka-grasp-v0',
                     'dataset_root': str(tmp_path / 'run'), 'outcome': 'success',
                     'dataset_written': True, 'dataset_index': 0, 'bag_error': None,
                     'write_error': None}

    msgs = _bag_messages(bag)
    cams = [deserialize_message(raw, Image) for raw in msgs[CAMERA]]
    assert len(cams) == 6
    for got, ref in zip(cams, sent['camera']):
        assert bytes(got.data) == bytes(ref.data) and got.header.stamp == ref.header.stamp
    assert len(msgs['/policy/action']) == 6 and len(msgs['/policy/image']) == 6
    # the diagnostics counters that the episode manager's start readiness reads
    from awopt_ros.ros.diagnostics import LOGGER_READY_KEYS, logger_ready
    assert logger_ready(h.logger.counts)
    assert all(h.logger.counts[k] >= 6 for k in LOGGER_READY_KEYS)
    assert not logger_ready(dict(h.logger.counts, actions_received=0))
    assert not logger_ready({'camera_frames_received': 'x'})
    events = [json.loads(deserialize_message(r, String).data)['event']
              for r in msgs['/episode/event']]
    assert events == ['start', 'end']
    assert len(msgs['/policy/model_info']) == 1  # latched state copied into the episode

    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    assert (ep['episode'], ep['seed']) == (5, 1005)
    np.testing.assert_array_equal(ep['image'][:6], np.stack(sent['image']))
    np.testing.assert_array_equal(ep['image'][6], sent['image'][-1])  # no newer frame
    np.testing.assert_array_equal(ep['actions'], np.stack(sent['action']))
    expected = np.stack([fake_proprio(q, f) for q, f in zip(sent['q7'], sent['finger'])])
    np.testing.assert_array_equal(ep['proprio'][:6], expected)
    np.testing.assert_array_equal(ep['success_probability'][:6], np.float32(sent['p']))
    np.testing.assert_allclose(ep['stamp_s'][:6], 50.0 + 0.1 * np.arange(6), atol=1e-9)
    assert ep['policy'].tolist() == [1] * 7
    assert ep['grasp_goal'].shape == (7, 4) and np.isnan(ep['grasp_goal']).all()  # an actor
    assert ep['rewards'].tolist() == [0.0] * 5 + [1.0]
    assert ep['terminations'].tolist() == [False] * 5 + [True]
    assert not ep['truncations'].any()
    # no success detector ran; an end event without success_source (an older manager)
    assert ep['success_classifier_probability'].shape == (7,)
    assert np.isnan(ep['success_classifier_probability']).all()
    assert ep['reward_source'] == 'ground_truth' and ep['ground_truth_success'] is None


def test_classifier_scores_go_into_the_bag_and_each_step_and_the_source_into_metadata(
        harness, tmp_path):
    """Scores that arrive after their step's action still count (looked up at the end by
    stamp); a frame without a score takes the latest earlier one; the end event's
    success_source and ground_truth_success become the episode's metadata."""
    h, rng = harness, np.random.default_rng(21)
    h.announce_actor()
    h.start(3, 1003)
    _run_steps(h, rng, 4, 70.0)          # frames stamped 70.0, 70.1, 70.2, 70.3
    scores = {70.0: 0.05, 70.1: 0.4, 70.3: 0.9}    # 70.2 was not scored
    for stamp_s, score in scores.items():
        msg = Classification(results=[ObjectHypothesis(class_id='success', score=score)])
        msg.header.stamp = convert.s_to_stamp(stamp_s)
        h.pub['classification'].publish(msg)
        h.pub['detector'].publish(Bool(data=score > 0.5))
    h.spin_until(lambda: len(h.logger._scores) == 3)
    h.event(event='end', episode=3, outcome='success', steps=4, success=True, terminated=True,
            truncated=False, success_source='classifier', ground_truth_success=False)
    h.spin_until(lambda: h.saved)
    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    np.testing.assert_array_equal(ep['success_classifier_probability'],
                                  np.float32([0.05, 0.4, 0.4, 0.9, 0.9]))
    assert ep['reward_source'] == 'classifier' and ep['ground_truth_success'] is False
    assert ep['rewards'].tolist() == [0.0, 0.0, 0.0, 1.0]   # from the outcome, as before
    bag = h.saved[0]['bag']
    msgs = _bag_messages(bag)          # rosbags' AnyReader opens it
    got = [deserialize_message(r, Classification)
           for r in msgs['/success_detector/classification']]
    assert [(g.results[0].class_id, g.results[0].score) for g in got] == [
        ('success', v) for v in scores.values()]
    assert [deserialize_message(r, Bool).data for r in msgs['/success_detector/success']] == [
        False, False, True]
    assert bag_frame_stamps_ns(bag, '/success_detector/classification') == [
        int(round(t * 1e9)) for t in scores]


def test_a_step_takes_no_score_of_the_previous_episode_nor_a_stale_one(harness, tmp_path):
    """A step whose frame was not scored takes an earlier score only when it is of this
    episode (stamped after its start) and at most 0.25 s older; else NaN."""
    h, rng = harness, np.random.default_rng(22)
    h.announce_actor()
    h.event(event='start', episode=4, seed=1004, stamp_s=69.95)
    h.spin_until(lambda: h.logger.recorder.in_episode)
    _run_steps(h, rng, 6, 70.0)          # frames stamped 70.0 .. 70.5
    scores = {69.9: 0.95, 70.1: 0.4}     # 69.9: the previous episode's last frame
    for stamp_s, score in scores.items():
        msg = Classification(results=[ObjectHypothesis(class_id='success', score=score)])
        msg.header.stamp = convert.s_to_stamp(stamp_s)
        h.pub['classification'].publish(msg)
    h.spin_until(lambda: len(h.logger._scores) == 2)
    h.event(event='end', episode=4, outcome='timeout', steps=6, success=False,
            terminated=False, truncated=True, success_source='classifier',
            ground_truth_success=False)
    h.spin_until(lambda: h.saved)
    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    np.testing.assert_array_equal(ep['success_classifier_probability'],
                                  np.float32([np.nan, 0.4, 0.4, 0.4, np.nan, np.nan, np.nan]))


def test_without_vision_msgs_the_logger_runs_and_leaves_the_classification_out(
        ros_context, tmp_path, monkeypatch):
    from awopt_ros.nodes import logger as logger_module
    real = logger_module._message_class

    def no_vision_msgs(msgtype):
        if msgtype.startswith('vision_msgs/'):
            raise ValueError(f"cannot import message type {msgtype!r}: no module 'vision_msgs'")
        return real(msgtype)
    monkeypatch.setattr(logger_module, '_message_class', no_vision_msgs)
    node = LoggerNode(context=ros_context, parameter_overrides=[
        Parameter('output_dir', value=str(tmp_path / 'run'))])
    try:
        assert '/success_detector/classification' not in node.recorded
        assert '/success_detector/success' in node.recorded
    finally:
        node.destroy_node()


def test_shutdown_mid_episode_saves_truncated(harness, tmp_path):
    h, rng = harness, np.random.default_rng(4)
    h.event(event='start', episode=0, seed=7)
    h.spin_until(lambda: h.logger.recorder.in_episode)
    sent = _run_steps(h, rng, 3, 10.0)
    h.logger.close()  # what spin_node does on Ctrl-C / SIGTERM
    h.spin_until(lambda: h.saved)
    assert h.saved[0]['outcome'] == 'shutdown' and h.saved[0]['frames_logged'] == 3
    assert len(_bag_messages(h.saved[0]['bag'])[CAMERA]) == 3
    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    np.testing.assert_array_equal(ep['actions'], np.stack(sent['action']))
    assert ep['truncations'].tolist() == [False, False, True]
    assert not ep['terminations'].any() and not ep['rewards'].any()


def test_messages_between_start_stamp_and_late_start_event_are_kept(harness, tmp_path):
    """A busy logger may process the start event late: what arrived after the event's stamp
    still goes into the episode's bag and dataset; what arrived before it does not."""
    h, rng = harness, np.random.default_rng(5)
    h.announce_actor()

    def publish_round(stamp_s):
        stamp = convert.s_to_stamp(stamp_s)
        js = JointState(name=list(ARM_JOINTS) + [GRIPPER_JOINT], position=[0.1] * 7 + [0.0])
        js.header.stamp = convert.s_to_stamp(stamp_s - 0.005)
        cam = convert.numpy_to_image(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), stamp,
                                     'camera_color_optical_frame')
        small = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        n = len(h.logger._prestart)
        h.pub['joints'].publish(js)
        h.pub['camera'].publish(cam)
        h.pub['pimage'].publish(convert.numpy_to_image(small, stamp, 'camera_color_optical_frame'))
        h.pub['action'].publish(convert.action_to_msg(np.zeros(7, np.float32), stamp))
        h.spin_until(lambda: len(h.logger._prestart) >= n + 4)
        return cam

    for _ in range(2):                      # before the episode's start stamp: not recorded
        publish_round(time.time())
    time.sleep(0.05)
    start_s = time.time()
    late = [publish_round(time.time()) for _ in range(3)]
    h.event(event='start', episode=1, seed=1, stamp_s=start_s)
    h.spin_until(lambda: h.logger.recorder.in_episode)
    h.spin_until(lambda: h.logger.recorder.steps == 3)
    h.event(event='end', episode=1, outcome='timeout', steps=3, success=False,
            terminated=False, truncated=True)
    h.spin_until(lambda: h.saved)
    assert h.saved[0]['frames_logged'] == 3 and h.saved[0]['steps'] == 3
    cams = [deserialize_message(raw, Image)
            for raw in _bag_messages(tmp_path / 'run' / 'bags' / 'episode_0001')[CAMERA]]
    assert [bytes(c.data) for c in cams] == [bytes(c.data) for c in late]
    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    assert ep['actions'].shape == (3, 7)


def test_start_during_the_previous_end_grace_period_keeps_the_new_episodes_frames(
        harness, tmp_path):
    """The next episode may start while the logger still waits out the previous episode's
    end grace period: frames stamped after the new start go into the NEW episode's bag too
    (seen once in the integration test under load: a bag missing its first 0.7 s)."""
    h, rng = harness, np.random.default_rng(11)
    h.announce_actor()
    h.logger.end_grace_s = 10.0     # a grace period the test cannot outlive by accident
    h.start(1, 1)
    _run_steps(h, rng, 1, time.time())
    h.event(event='end', episode=1, outcome='timeout', steps=1, success=False,
            terminated=False, truncated=True)
    h.spin_until(lambda: h.logger._ending is not None)
    start_s = time.time()
    sent = []
    for _ in range(2):          # published after episode 2's start stamp, within the grace
        stamp = convert.s_to_stamp(time.time())
        cam = convert.numpy_to_image(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), stamp,
                                     'camera_color_optical_frame')
        n = len(h.logger._prestart)
        h.pub['camera'].publish(cam)
        h.spin_until(lambda: len(h.logger._prestart) > n)
        sent.append(bytes(cam.data))
    assert h.logger._ending is not None and not h.saved      # still in the grace period
    h.event(event='start', episode=2, seed=2, stamp_s=start_s)
    h.spin_until(lambda: h.logger.recorder.in_episode and len(h.saved) == 1)
    h.logger.end_grace_s = 0.0      # episode 2 ends at once
    h.event(event='end', episode=2, outcome='timeout', steps=0, success=False,
            terminated=False, truncated=True)
    h.spin_until(lambda: len(h.saved) == 2)
    cams = [bytes(deserialize_message(raw, Image).data)
            for raw in _bag_messages(tmp_path / 'run' / 'bags' / 'episode_0002')[CAMERA]]
    assert cams[:2] == sent


def test_actions_after_the_last_counted_step_are_trimmed(harness, tmp_path):
    """An action that reaches the logger before the end event (e.g. the next frame's action
    after a terminate) is not a step: the dataset keeps the manager's count, and the dropped
    step's observation becomes the episode's final observation."""
    h, rng = harness, np.random.default_rng(9)
    h.announce_actor()
    h.start(2, 2)
    sent = _run_steps(h, rng, 2, 60.0)
    h.event(event='end', episode=2, outcome='terminate', steps=1, success=False,
            terminated=True, truncated=False)
    h.spin_until(lambda: h.saved)
    assert h.saved[0]['steps'] == 1 and h.logger.counts['trimmed_steps'] == 1
    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    np.testing.assert_array_equal(ep['actions'], np.stack(sent['action'][:1]))
    np.testing.assert_array_equal(ep['image'], np.stack(sent['image']))   # T+1 observations
    assert ep['terminations'].tolist() == [True]


def test_actions_published_while_the_logger_is_held_up_are_all_recorded(harness, tmp_path):
    """A logger whose executor is held up (closing the previous episode on a loaded host) for
    longer than 10 actions takes every action afterwards: none is lost from bag or dataset."""
    h, rng = harness, np.random.default_rng(10)
    h.announce_actor()
    h.start(3, 3)
    n = 30   # 3 s of 10 Hz actions, published while nothing is spun
    actions = [np.float32([0.001 * i, 0, 0, 0, 0, 0, 0]) for i in range(n)]
    for i, action in enumerate(actions):
        stamp = convert.s_to_stamp(70.0 + 0.1 * i)
        js = JointState(name=h.joint_names, position=[0.0] * 8)
        js.header.stamp = stamp
        h.pub['joints'].publish(js)
        small = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        h.pub['pimage'].publish(convert.numpy_to_image(small, stamp, 'camera_color_optical_frame'))
        h.pub['action'].publish(convert.action_to_msg(action, stamp))
    time.sleep(0.5)   # every message delivered to the logger's subscriptions
    h.spin_until(lambda: h.logger.recorder.steps == n, timeout_s=10.0)
    h.event(event='end', episode=3, outcome='timeout', steps=n, success=False,
            terminated=False, truncated=True)
    h.spin_until(lambda: h.saved)
    assert h.saved[0]['steps'] == n
    assert len(_bag_messages(tmp_path / 'run' / 'bags' / 'episode_0003')['/policy/action']) == n
    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    np.testing.assert_array_equal(ep['actions'], np.stack(actions))


def _steps_each_waiting_for(h, t0_s, companions):
    """Publish one step per ``companions`` entry (joint state, policy image, action stamped
    t0_s + 0.1 i), check the logger holds the step back, then call the entry with the stamp
    (it publishes the message the step waits for) and check the step is recorded."""
    rng = np.random.default_rng(int(t0_s))
    for i, publish_companion in enumerate(companions):
        stamp = convert.s_to_stamp(t0_s + 0.1 * i)
        js = JointState(name=list(ARM_JOINTS) + [GRIPPER_JOINT], position=[0.1] * 7 + [0.0])
        js.header.stamp = stamp
        h.pub['joints'].publish(js)
        h.pub['pimage'].publish(convert.numpy_to_image(
            rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), stamp, 'cam'))
        h.spin_until(lambda: len(h.logger._images) > i)
        h.pub['action'].publish(convert.action_to_msg(np.zeros(7, np.float32), stamp))
        h.spin_until(lambda: h.logger.counts['actions_received'] > i)
        for _ in range(5):
            h.executor.spin_once(timeout_sec=0.02)
        assert h.logger.recorder.steps == i   # still waiting for this step's companion
        publish_companion(stamp)
        h.spin_until(lambda: h.logger.recorder.steps == i + 1)


def _announce(h, info, expect_attr):
    """Publish the policy's model info ``info`` and spin until the logger set ``expect_attr``."""
    h.pub['info'].publish(String(data=json.dumps(info)))
    h.spin_until(lambda: getattr(h.logger, expect_attr))


def test_scripted_grasp_goals_are_waited_for_and_stored_per_step(harness, tmp_path):
    """A demonstrator that announces grasp_goal_topic: each action waits for the goal with its
    stamp (here published after the action, the worst order) and the dataset keeps it."""
    h = harness
    _announce(h, {'kind': 'scripted', 'grasp_goal_topic': '/scripted_policy/grasp_goal'},
              '_expect_goals')
    h.start(2, 1002)
    goals = [np.float32([0.6 + 0.01 * i, -0.05, 0.03, 0.4 - 0.1 * i]) for i in range(3)]
    _steps_each_waiting_for(h, 20.0, [
        lambda stamp, g=g: h.pub['goal'].publish(convert.grasp_goal_to_msg(g, stamp))
        for g in goals])
    h.event(event='end', episode=2, outcome='terminate', steps=3, success=False,
            terminated=True, truncated=False)
    h.spin_until(lambda: h.saved)
    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    np.testing.assert_allclose(ep['grasp_goal'][:3], np.stack(goals), atol=1e-6)
    np.testing.assert_allclose(ep['grasp_goal'][3], goals[-1], atol=1e-6)
    assert ep['policy'].tolist() == [0] * 4


def test_the_proprio_a_policy_acted_on_is_waited_for_and_recorded(harness, tmp_path):
    """A policy that announces proprio_topic: each step records the proprio it published with
    the action's stamp (computed from a joint state newer than the image), not the one the
    logger would compute from the joint state at the image's stamp."""
    h = harness
    _announce(h, {'kind': 'actor', 'proprio_topic': '/policy/proprio'}, '_expect_proprio')
    h.start(3, 1003)
    used = [np.float32([0.6, 0.01 * i, 0.2 - 0.03 * i, 0.0, 1.0, 0.0]) for i in range(2)]
    _steps_each_waiting_for(h, 30.0, [
        lambda stamp, p=p: h.pub['proprio'].publish(convert.proprio_to_msg(p, stamp))
        for p in used])
    h.event(event='end', episode=3, outcome='terminate', steps=2, success=False,
            terminated=True, truncated=False)
    h.spin_until(lambda: h.saved)
    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    np.testing.assert_allclose(ep['proprio'][:2], np.stack(used), atol=1e-6)
    from awopt_ros.core.kinematics import proprio_from_joints
    assert not np.allclose(ep['proprio'][0], proprio_from_joints([0.1] * 7, 0.0), atol=1e-3)


def _logger_status(h):
    """Publish the logger's diagnostics now; return (level, message, values) of 'logger'."""
    from diagnostic_msgs.msg import DiagnosticArray

    from awopt_ros.ros.diagnostics import parse_values
    got = []
    sub = h.node.create_subscription(DiagnosticArray, '/diagnostics',
                                     lambda m: got.extend(m.status), 10)
    try:
        h.spin_until(lambda: h.node.count_publishers('/diagnostics') > 0)
        h.logger._publish_diagnostics()
        h.spin_until(lambda: any(s.name == 'logger' for s in got))
    finally:
        h.node.destroy_subscription(sub)
    status = [s for s in got if s.name == 'logger'][-1]
    return status.level, status.message, parse_values(status)


def test_too_little_free_disk_refuses_episodes_with_the_reason(ros_context, tmp_path,
                                                                monkeypatch):
    from diagnostic_msgs.msg import DiagnosticStatus
    h = Harness(ros_context, tmp_path, monkeypatch,
                params=[Parameter('min_free_disk_mb', value=10_000_000)])
    try:
        level, message, values = _logger_status(h)
        assert level == DiagnosticStatus.ERROR
        assert message.startswith('only ') and message.endswith(
            f'MB free on {tmp_path / "run"} (min_free_disk_mb 10000000)')
        assert values['accepting_episodes'] == 'false'
        assert values['min_free_disk_mb'] == '10000000' and float(values['free_disk_mb']) > 0
        assert values['write_errors'] == '0'
        h.event(event='start', episode=0, seed=1)
        h.spin_until(lambda: h.logger.counts['episodes_refused'] == 1)
        assert not h.logger.recorder.in_episode
        h.event(event='end', episode=0, outcome='success', steps=0, success=True)
        h.spin_until(lambda: h.saved)
        # the same refusal (the free MB may have changed meanwhile: other writers)
        reason = h.saved[0]['write_error']
        assert reason.startswith('only ') and reason.endswith(message.partition(' MB ')[2])
        assert h.saved[0]['bag'] is None
        assert not (tmp_path / 'run' / 'bags').exists()
    finally:
        h.close()


@pytest.mark.parametrize('where', ['bag', 'dataset'])
def test_a_write_error_drops_only_that_episode_and_stops_recording(harness, tmp_path,
                                                                   monkeypatch, where):
    """ENOSPC (simulated) from the bag writer or the dataset: that episode is dropped (no
    half bag left), earlier ones stay loadable, the error is in the diagnostics, and later
    episodes are refused; nothing raises."""
    import errno

    from diagnostic_msgs.msg import DiagnosticStatus
    from rosbags.rosbag2.storage_mcap import McapWriter

    from awopt_ros.core.dataset import EpisodeRecorder
    h, rng = harness, np.random.default_rng(8)
    h.announce_actor()
    h.start(0, 100)
    _run_steps(h, rng, 3, 10.0)
    h.event(event='end', episode=0, outcome='success', steps=3, success=True, terminated=True,
            truncated=False)
    h.spin_until(lambda: len(h.saved) == 1)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if where == 'bag':
        monkeypatch.setattr(McapWriter, 'write', full)
    else:
        monkeypatch.setattr(EpisodeRecorder, '_append', full)
    h.start(1, 101)
    _run_steps(h, rng, 3, 20.0)
    h.event(event='end', episode=1, outcome='success', steps=3, success=True, terminated=True,
            truncated=False)
    h.spin_until(lambda: len(h.saved) == 2)
    rec = h.saved[1]
    assert rec['write_error'].startswith('No space left on device writing ')
    assert (rec['bag'], rec['dataset_written'], rec['steps']) == (None, False, 0)
    level, message, values = _logger_status(h)
    assert level == DiagnosticStatus.ERROR and values['accepting_episodes'] == 'false'
    assert message.startswith('write error: No space left on device writing ')
    assert values['write_errors'] == '1'
    assert sorted(p.name for p in (tmp_path / 'run' / 'bags').iterdir()) == ['episode_0000']
    assert [e['episode'] for e in load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')] == [0]
    assert len(_bag_messages(tmp_path / 'run' / 'bags' / 'episode_0000')[CAMERA]) == 3
    h.event(event='start', episode=2, seed=102)
    h.spin_until(lambda: h.logger.counts['episodes_refused'] == 1)
    assert not h.logger.recorder.in_episode


def _save_episode(h, rng, episode, t0_s):
    h.start(episode, 100 + episode)
    _run_steps(h, rng, 3, t0_s)
    count = len(h.saved)
    h.event(event='end', episode=episode, outcome='success', steps=3, success=True,
            terminated=True, truncated=False)
    h.spin_until(lambda: len(h.saved) == count + 1)
    return h.saved[-1]


def test_a_dataset_refusal_for_lack_of_space_drops_the_episode_but_not_later_ones(
        harness, tmp_path, monkeypatch):
    """The dataset's free-space check refuses an episode before writing anything: that
    episode is dropped and counted, but the logger keeps accepting episodes (it is not a
    permanent write error) and the next one is recorded."""
    import errno

    from awopt_ros.core.dataset import EpisodeRecorder, NoRoomError
    h, rng = harness, np.random.default_rng(9)
    h.announce_actor()
    real = EpisodeRecorder._append
    calls = []

    def refuse_once(self, buffer):
        calls.append(1)
        if len(calls) == 1:
            raise NoRoomError(errno.ENOSPC, 'No space left on device: episode needs more',
                              str(self.dataset_path))
        return real(self, buffer)
    monkeypatch.setattr(EpisodeRecorder, '_append', refuse_once)
    rec = _save_episode(h, rng, 0, 10.0)
    assert rec['write_error'].startswith('No space left on device writing ')
    assert (rec['bag'], rec['dataset_written']) == (None, False)
    _, _, values = _logger_status(h)
    assert values['accepting_episodes'] == 'true' and values['write_errors'] == '1'
    rec = _save_episode(h, rng, 1, 20.0)
    assert rec['write_error'] is None and rec['dataset_written']
    assert h.logger.counts['episodes_refused'] == 0
    assert [e['episode'] for e in load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')] == [1]
    assert sorted(p.name for p in (tmp_path / 'run' / 'bags').iterdir()) == ['episode_0001']


def test_a_failed_append_drops_the_pending_episode_that_failed_not_the_current_one(
        harness, tmp_path, monkeypatch):
    """Episode 0 is left pending (dataset locked); at episode 1's end writing episode 0 fails
    (EIO): episode 0's bag is deleted, episode 1 is written and its bag kept."""
    import errno

    h, rng = harness, np.random.default_rng(10)
    h.announce_actor()
    h.logger.recorder.lock_retry_s = 0.0
    from test_dataset import fail_appends
    fail_appends(monkeypatch, [BlockingIOError(errno.EAGAIN, 'unable to lock file'),
              OSError(errno.EIO, os.strerror(errno.EIO))])
    rec = _save_episode(h, rng, 0, 10.0)
    assert rec['write_error'] is None and not rec['dataset_written']
    assert h.logger.recorder.pending_episodes == 1
    rec = _save_episode(h, rng, 1, 20.0)
    assert rec['write_error'] is None and rec['dataset_written'], rec
    assert rec['bag'] == str(tmp_path / 'run' / 'bags' / 'episode_0001')
    assert h.logger.recorder.pending_episodes == 0
    assert [e['episode'] for e in load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')] == [1]
    assert sorted(p.name for p in (tmp_path / 'run' / 'bags').iterdir()) == ['episode_0001']
    assert h.logger.counts['write_errors'] == 1


class _Log:
    def __init__(self):
        self.errors = []

    def error(self, text, **kw):
        self.errors.append(text)

    def warning(self, *a, **kw):
        pass

    info = warning


def test_not_accepting_is_logged_once_while_the_free_space_changes(ros_context, tmp_path,
                                                                   monkeypatch):
    import shutil
    from collections import namedtuple
    h = Harness(ros_context, tmp_path, monkeypatch,
                params=[Parameter('min_free_disk_mb', value=10_000_000)])
    try:
        log = _Log()
        monkeypatch.setattr(h.logger, 'get_logger', lambda: log)
        usage = namedtuple('usage', 'total used free')
        for free_mb in (100, 101, 99.5, 250):
            monkeypatch.setattr(shutil, 'disk_usage',
                                lambda p, f=free_mb: usage(10**12, 0, int(f * 2**20)))
            h.logger._publish_diagnostics()
        assert len(log.errors) == 1 and 'only 100.0 MB free' in log.errors[0], log.errors
    finally:
        h.close()


def test_an_unreadable_output_dir_is_reported_not_raised(harness, tmp_path, monkeypatch):
    """Path.exists raising (EIO, e.g. a stale NFS handle) while looking for the disk: the
    logger reports 'not accepting' with the reason instead of dying in its timer."""
    import errno
    import pathlib
    h = harness
    real = pathlib.Path.exists
    run = (tmp_path / 'run').absolute()

    def exists(self, *a, **kw):
        if self == run:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))
        return real(self, *a, **kw)
    monkeypatch.setattr(pathlib.Path, 'exists', exists)
    if real(run):
        import shutil
        shutil.rmtree(run)
    free_mb, accepting, reason, _ = h.logger._check_disk()
    assert not accepting and 'cannot read the free space' in reason and 'Input/output' in reason
    level, message, values = _logger_status(h)
    assert values['accepting_episodes'] == 'false' and message == reason


def test_start_up_recovery_uses_recover_bags_with_its_own_typestore(ros_context, tmp_path,
                                                                    monkeypatch):
    """The logger rebuilds a crashed bag through core.bag.recover_bags, on the worker
    thread, never with the type store the executor thread opens bags with; counted."""
    from awopt_ros.core import bag as bagmod
    from awopt_ros.core.bag import BagWriter
    bag = tmp_path / 'run' / 'bags' / 'episode_0000'
    w = BagWriter(bag, {CAMERA: 'sensor_msgs/msg/Image'})
    w.write(CAMERA, b'\x00\x01\x00\x00' + bytes(60), 1)
    w.close()
    (bag / 'metadata.yaml').unlink()          # as a killed logger leaves it
    used = []
    real = bagmod.repair_bag

    def spy(path, **kw):
        used.append(kw.get('typestore'))
        return real(path, **kw)
    monkeypatch.setattr(bagmod, 'repair_bag', spy)
    h = Harness(ros_context, tmp_path, monkeypatch)
    try:
        h.logger._saver.submit(lambda: None).result(timeout=30)   # recovery done
        assert h.logger.counts['bags_repaired'] == 1
        assert len(used) == 1 and used[0] is not None and used[0] is not h.logger._typestore
        assert (bag / 'metadata.yaml').exists()
    finally:
        h.close()


def test_at_exit_a_pending_episode_that_fails_loses_its_bag_and_the_next_is_written(
        harness, tmp_path, monkeypatch):
    """Two episodes left pending (dataset locked); at shutdown writing the first fails (EIO):
    its bag is deleted, the second is written and keeps its bag."""
    import errno

    h, rng = harness, np.random.default_rng(13)
    h.announce_actor()
    h.logger.recorder.lock_retry_s = 0.0
    from test_dataset import fail_appends
    fail_appends(monkeypatch, [BlockingIOError(errno.EAGAIN, 'unable to lock file'),
              BlockingIOError(errno.EAGAIN, 'unable to lock file'),
              OSError(errno.EIO, os.strerror(errno.EIO))])
    _save_episode(h, rng, 0, 10.0)
    _save_episode(h, rng, 1, 20.0)
    assert h.logger.recorder.pending_episodes == 2
    h.logger.close()
    assert h.logger.recorder.pending_episodes == 0
    assert [e['episode'] for e in load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')] == [1]
    assert sorted(p.name for p in (tmp_path / 'run' / 'bags').iterdir()) == ['episode_0001']
    assert h.logger.counts['write_errors'] == 1


def test_under_lbr_stack_names_the_bag_has_the_real_topics_and_the_proprio_is_right(
        ros_context, tmp_path, monkeypatch):
    """Configured for lbr-stack joints (listed by the driver in another order) and
    realsense-ros's camera: the bag records the topics under those names, the frames are
    counted on the real camera topic, and the proprio is the model's joints in A1..A7 order."""
    h = Harness(ros_context, tmp_path, monkeypatch, names=LBR)
    try:
        rng = np.random.default_rng(11)
        h.announce_actor()
        h.start(1, 101)
        info = CameraInfo(width=64, height=48)
        info.header.stamp = convert.s_to_stamp(20.0)
        h.pub['camera_info'].publish(info)
        sent = _run_steps(h, rng, 4, 20.0, reverse_joints=True)
        assert h.logger.counts['joint_states_received'] == 4
        h.event(event='end', episode=1, outcome='success', steps=4, success=True,
                terminated=True, truncated=False)
        h.spin_until(lambda: h.saved)
        assert h.saved[0]['frames_logged'] == 4 and h.saved[0]['steps'] == 4
        msgs = _bag_messages(h.saved[0]['bag'])
        assert {'/camera/camera/color/image_raw', '/camera/camera/color/camera_info',
                '/lbr/joint_states'} <= set(msgs)
        assert not {CAMERA, '/camera/color/camera_info', '/joint_states'} & set(msgs)
        assert len(msgs['/lbr/joint_states']) == 4 and len(
            msgs['/camera/camera/color/camera_info']) == 1
        assert bag_frame_stamps_ns(h.saved[0]['bag'], '/camera/camera/color/image_raw') == [
            int(round((20.0 + 0.1 * i) * 1e9)) for i in range(4)]
        (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
        expected = np.stack([fake_proprio(q, f) for q, f in zip(sent['q7'], sent['finger'])])
        np.testing.assert_array_equal(ep['proprio'][:4], expected)
    finally:
        h.close()


class _Warnings:
    """Stands in for the node's logger: keeps (text, keyword arguments) of each warning."""

    def __init__(self):
        self.warnings = []

    def warning(self, text, **kw):
        self.warnings.append((text, kw))

    def info(self, *a, **kw):
        pass

    error = info


def test_joint_states_without_the_configured_joints_say_which_are_missing(
        ros_context, tmp_path, monkeypatch):
    """Configured for lbr-stack joints, a driver that publishes the simulator's names on the
    topic: no step gets a proprio from them, the logger does not report joint states received
    (so it is not ready: no episode starts), and a throttled warning names the joints
    missing and the ones the message has."""
    h = Harness(ros_context, tmp_path, monkeypatch, names=LBR)
    try:
        log = _Warnings()
        monkeypatch.setattr(h.logger, 'get_logger', lambda: log)
        h.pub['joints'].publish(JointState(name=list(ARM_JOINTS) + [GRIPPER_JOINT],
                                           position=[0.0] * 8))
        h.spin_until(lambda: log.warnings)
        text, kw = log.warnings[0]
        assert text.startswith("bad /lbr/joint_states message ignored: joint state lacks "
                               "joints ['lbr_A1', ")
        assert "'lbr_gripper'] (parameters joint_names, gripper_joint); it names " \
               "['iiwa_joint_1'," in text
        assert kw == {'throttle_duration_sec': 5.0}
        assert h.logger.counts['joint_states_received'] == 0
        assert h.logger.counts['bad_messages'] == 1
        with pytest.raises(ValueError, match=r"no joint state with joints \['lbr_A1'.* "
                                             'received on /lbr/joint_states yet'):
            h.logger._proprio_at(0)
    finally:
        h.close()


def test_a_recorded_topic_under_the_simulators_name_is_refused_under_other_names(
        ros_context, tmp_path):
    from awopt_ros.ros.run import StartupError
    params = [Parameter(k, value=v) for k, v in LBR.items()]
    with pytest.raises(StartupError, match=r"unknown topic '/joint_states' in \"topics\".*"
                                           "/lbr/joint_states"):
        LoggerNode(context=ros_context, parameter_overrides=[
            *params, Parameter('output_dir', value=str(tmp_path / 'run')),
            Parameter('topics', value=['/joint_states'])])
    node = LoggerNode(context=ros_context, parameter_overrides=[
        *params, Parameter('output_dir', value=str(tmp_path / 'run')),
        Parameter('topics', value=['/lbr/joint_states', '/camera/camera/color/image_raw'])])
    try:
        assert node.recorded == {
            '/lbr/joint_states': ('sensor_msgs/msg/JointState', 'sensor'),
            '/camera/camera/color/image_raw': ('sensor_msgs/msg/Image', 'sensor')}
    finally:
        node.close()
        node.destroy_node()


def test_insertion_steps_end_at_the_first_non_control_decision(ros_context, tmp_path,
                                                               monkeypatch):
    """The residual controller's back-off, terminate and hold steps (decision phase not
    'control') are not learning data: the recorded steps end at the first of them, whose
    state becomes the episode's final state."""
    params = [Parameter('task', value='insertion'),
              Parameter('dataset_name', value='sawyer-insertion')]
    h = Harness(ros_context, tmp_path, monkeypatch, params=params)
    try:
        decision_pub = h.node.create_publisher(String, '/policy/decision', qos.COMMAND)
        h.spin_until(lambda: decision_pub.get_subscription_count() > 0)
        _announce(h, {'kind': 'residual', 'decision_topic': '/policy/decision'},
                  '_expect_decisions')
        h.start(1, 5)
        phases = ('control', 'control', 'back_off', 'terminate', 'hold')
        for i, phase in enumerate(phases):
            stamp = convert.s_to_stamp(1.0 + 0.1 * i)
            control = phase == 'control'
            decision_pub.publish(String(data=json.dumps({
                'stamp': {'sec': stamp.sec, 'nanosec': stamp.nanosec}, 'source': 'p_controller',
                'phase': phase, 'observation': None if phase == 'terminate' else [float(i)] * 15,
                'residual': [0.1 * i] * 3 if control else [0.0] * 3,
                'u_m': [0.001 * i] * 3 if control else [0.0, 0.0, 0.005]})))
            h.spin_until(lambda: len(h.logger._decisions) > i)
            action = np.float32([0.001 * i] * 3 + [0, 0, 0, float(phase == 'terminate')])
            h.pub['action'].publish(convert.action_to_msg(action, stamp))
            h.spin_until(lambda: h.logger.counts['actions_received'] > i)
        h.event(event='end', episode=1, outcome='failed', steps=4, success=False,
                terminated=True, truncated=False)
        h.spin_until(lambda: h.saved)
        assert h.saved[0]['steps'] == 2 and h.logger.counts['non_control_steps'] == 3
        (ep,) = load_episodes(tmp_path / 'run', 'awopt/sawyer-insertion-v0')
        np.testing.assert_array_equal(ep['state'][:, 0], [0.0, 1.0, 2.0])   # final: back-off's
        np.testing.assert_allclose(ep['actions'], [[0.0] * 3, [0.1] * 3], atol=1e-7)
        assert ep['terminations'].tolist() == [False, True]
    finally:
        h.close()
