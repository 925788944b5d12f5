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
from test_policy_runtime import export_tiny_critic

from awopt_ros.core import robot, spec
from awopt_ros.core.kinematics import proprio_from_joints
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
    """Overrides of the tests that feed policy images (the camera_pipeline input) and expect
    an action on every one (action_rate_hz 0); the camera input has its own tests."""
    values = {'model_path': str(path), 'image_size': SIZE, 'crop_xywh': CROP,
              'image_source': 'camera_pipeline', 'action_rate_hz': 0.0}
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


def _make_rig(ctx, params):
    """Policy node + test node on one executor; returns (executor, node, tester, actions,
    model infos, decisions (parsed JSON)). The tester publishes images, joint states and
    episode events."""
    node = PolicyNode(context=ctx, parameter_overrides=params)
    tester = rclpy.create_node('policy_tester', context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(tester)
    actions, infos, decisions = [], [], []
    tester.create_subscription(JointState, '/policy/action', actions.append, qos.COMMAND)
    tester.create_subscription(String, '/policy/model_info', infos.append, qos.LATCHED)
    tester.create_subscription(String, '/policy/decision',
                               lambda m: decisions.append(json.loads(m.data)), qos.COMMAND)
    tester.img_pub = tester.create_publisher(Image, '/policy/image', qos.SENSOR)
    tester.js_pub = tester.create_publisher(JointState, '/joint_states', qos.SENSOR)
    tester.event_pub = tester.create_publisher(String, '/episode/event', qos.LATCHED)
    return executor, node, tester, actions, infos, decisions


def _close_rig(executor, node, tester):
    executor.shutdown()
    tester.destroy_node()
    node.destroy_node()


@pytest.fixture
def rig(ros_context, model_path):
    """(executor, policy node, test node, received actions, model infos)."""
    executor, node, tester, actions, infos, _ = _make_rig(ros_context, _params(model_path))
    yield executor, node, tester, actions, infos
    _close_rig(executor, node, tester)


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
    assert info['proprio_topic'] is None          # publish_proprio is off by default


def test_publish_proprio_sends_the_proprio_of_each_action(ros_context, model_path):
    executor, node, tester, actions, infos, _ = _make_rig(
        ros_context, _params(model_path, publish_proprio=True))
    try:
        proprios = []
        tester.create_subscription(JointState, '/policy/proprio', proprios.append, qos.SENSOR)
        _wait_matched(executor, tester)
        assert _spin_until(executor, lambda: infos)
        assert json.loads(infos[-1].data)['proprio_topic'] == '/policy/proprio'
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        image_stamp = convert.s_to_stamp(node.get_clock().now().nanoseconds * 1e-9 - 0.05)

        def send():
            tester.js_pub.publish(_joint_state(node.get_clock().now().to_msg()))
            executor.spin_once(timeout_sec=0.02)
            tester.img_pub.publish(convert.numpy_to_image(img, image_stamp, 'camera'))
        assert _spin_sending(executor, send, lambda: actions and proprios, 5.0)
        assert proprios[0].header.stamp == image_stamp == actions[0].header.stamp
        np.testing.assert_allclose(convert.msg_to_proprio(proprios[0]),
                                   proprio_from_joints(robot.HOME_Q, 0.01), atol=1e-6)
    finally:
        _close_rig(executor, node, tester)


def test_actor_noise_std_perturbs_continuous_sub_actions(ros_context, model_path):
    executor, node, tester, actions, infos, decisions = _make_rig(
        ros_context, _params(model_path, actor_noise_std=0.5))
    try:
        assert node.runtime.actor_noise_std == 0.5
        _wait_matched(executor, tester)
        img = np.zeros((SIZE, SIZE, 3), np.uint8)

        def send():
            tester.js_pub.publish(_joint_state(node.get_clock().now().to_msg()))
            executor.spin_once(timeout_sec=0.02)
            stamp = convert.s_to_stamp(node.get_clock().now().nanoseconds * 1e-9 - 0.05)
            tester.img_pub.publish(convert.numpy_to_image(img, stamp, 'camera'))
        assert _spin_sending(executor, send, lambda: len(actions) >= 3 and
                             len(decisions) >= 3, 5.0)
        clean = OnnxActor(model_path).act(img, proprio_from_joints(robot.HOME_Q, 0.01))
        got = np.array([m.position for m in actions[:3]])
        assert np.all(np.abs(got[:, :4] - clean[:4]).max(axis=1) > 1e-4)   # noise on each
        np.testing.assert_array_equal(got[:, 4:], np.tile(clean[4:], (3, 1)))
        assert all(d['source'] == 'actor' and d['actor_noise_std'] == 0.5
                   for d in decisions[:3])
    finally:
        _close_rig(executor, node, tester)


def test_actor_sample_discrete_reported_on_every_decision(ros_context, model_path):
    executor, node, tester, actions, infos, decisions = _make_rig(
        ros_context, _params(model_path, actor_sample_discrete=True))
    try:
        assert node.runtime.actor_sample_discrete
        _wait_matched(executor, tester)
        img = np.zeros((SIZE, SIZE, 3), np.uint8)

        def send():
            tester.js_pub.publish(_joint_state(node.get_clock().now().to_msg()))
            executor.spin_once(timeout_sec=0.02)
            stamp = convert.s_to_stamp(node.get_clock().now().nanoseconds * 1e-9 - 0.05)
            tester.img_pub.publish(convert.numpy_to_image(img, stamp, 'camera'))
        assert _spin_sending(executor, send, lambda: len(actions) >= 3 and
                             len(decisions) >= 3, 5.0)
        assert all(d['source'] == 'actor' and d['discrete_sampled'] for d in decisions[:3])
        got = np.array([m.position for m in actions[:3]])
        assert set(np.unique(got[:, 4:])) <= {0.0, 1.0}
    finally:
        _close_rig(executor, node, tester)


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


# --- modes, decisions, hot swap ---------------------------------------------------------------

@pytest.fixture(scope='module')
def critic_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp('policy_critic')
    enc, head = d / 'enc.onnx', d / 'head.onnx'
    export_tiny_critic(enc, head, seed=1)
    return enc, head


@pytest.fixture(scope='module')
def model2_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('policy2') / 'tiny2.onnx'
    export_tiny_actor(path, seed=2, image_size=SIZE, crop_xywh=CROP, dataset='test/x-v1')
    return path


def _stamp_ns(stamp):
    return stamp['sec'] * 1_000_000_000 + stamp['nanosec']


def _send_image(executor, node, tester, img, stamp):
    """A fresh joint state, then the image with ``stamp``."""
    tester.js_pub.publish(_joint_state(node.get_clock().now().to_msg()))
    executor.spin_once(timeout_sec=0.01)
    tester.img_pub.publish(convert.numpy_to_image(img, stamp, 'camera'))


def test_cem_mode_publishes_actions_and_decisions(ros_context, critic_paths):
    enc, head = critic_paths
    executor, node, tester, actions, infos, decisions = _make_rig(ros_context, _params(
        '', mode='cem', critic_encoder_path=str(enc), critic_head_path=str(head),
        cem_samples=16, cem_elites=4, reload_period_s=0.0))
    try:
        _wait_matched(executor, tester)
        assert _spin_until(executor, lambda: infos)
        info = json.loads(infos[-1].data)
        assert info['kind'] == 'cem' and info['model_version'] == 1
        assert info['decision_topic'] == '/policy/decision' and info['model_path'] == ''
        assert info['cem'] == {'iterations': 2, 'samples': 16, 'elites': 4}
        assert info['contract']['role'] == 'critic_encoder'

        img = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        stamps = []

        def send():
            stamps.append(convert.s_to_stamp(node.get_clock().now().nanoseconds * 1e-9))
            _send_image(executor, node, tester, img, stamps[-1])
        assert _spin_sending(executor, send, lambda: len(actions) >= 3 and len(decisions) >= 3,
                             10.0)
        sent_ns = {s.sec * 1_000_000_000 + s.nanosec for s in stamps}
        for msg in actions:
            a = np.array(msg.position, dtype=np.float32)
            assert np.all(a >= spec.ACTION_LOW) and np.all(a <= spec.ACTION_HIGH)
            assert set(a[spec.DISCRETE].tolist()) <= {0.0, 1.0}
        action_ns = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
                     for m in actions]
        decided = {_stamp_ns(d['stamp']): d for d in decisions}
        for ns in action_ns:
            assert ns in sent_ns and ns in decided        # one decision per action, same stamp
            d = decided[ns]
            assert d['source'] == 'cem' and d['model_version'] == 1
            assert 0.0 <= d['q'] <= 1.0 and d['fallback'] is None
            assert d['episode_policy'] == 'cem' and d['model_mtime_ns'] > 0
        assert node.counts['actions_cem'] == node.counts['actions_published'] >= 3
        assert node.counts['actions_actor'] == 0
    finally:
        _close_rig(executor, node, tester)


def test_switch_mode_draws_on_episode_start(ros_context, model_path, critic_paths):
    enc, head = critic_paths
    executor, node, tester, _, _, _ = _make_rig(ros_context, _params(
        model_path, mode='switch', critic_encoder_path=str(enc), critic_head_path=str(head),
        cem_samples=16, cem_elites=4, reload_period_s=0.0, seed=5))
    try:
        rt = node.runtime
        assert rt.episodes == 0 and rt.episode_policy in ('actor', 'cem')
        for episode in (1, 1, 2):   # a repeated (latched) start is not a new episode
            tester.event_pub.publish(String(data=json.dumps(
                {'event': 'start', 'episode': episode, 'seed': 0, 'stamp_s': 0.0})))
            tester.event_pub.publish(String(data=json.dumps({'event': 'end',
                                                             'episode': episode})))
        assert _spin_until(executor, lambda: rt.episodes == 2)
        executor.spin_once(timeout_sec=0.1)
        assert rt.episodes == 2
    finally:
        _close_rig(executor, node, tester)


def test_switch_mode_draws_the_next_episodes_policy_at_each_end(ros_context, model_path,
                                                                critic_paths):
    """A frame stamped after a start can reach the policy before the start event (under
    load): the episode's policy is drawn at start-up and at the previous episode's end, so such
    a frame is already acted on by it; the sequence of episode policies is the seed's."""
    from awopt_ros.core.policy_runtime import PolicyRuntime
    ref = PolicyRuntime('switch', object(), None, cem_episode_prob=0.5, seed=0)
    expected = [ref.begin_episode() for _ in range(3)]
    assert expected == ['cem', 'actor', 'cem']    # the seed gives a change at each episode
    enc, head = critic_paths
    executor, node, tester, actions, _, decisions = _make_rig(ros_context, _params(
        model_path, mode='switch', critic_encoder_path=str(enc), critic_head_path=str(head),
        cem_samples=16, cem_elites=4, reload_period_s=0.0, seed=0, cem_episode_prob=0.5))
    try:
        rt = node.runtime
        _wait_matched(executor, tester)
        img = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)

        def act_once():   # a frame before any start event: the first episode's policy acts
            n = len(decisions)
            stamp = convert.s_to_stamp(node.get_clock().now().nanoseconds * 1e-9)
            assert _spin_sending(executor, lambda: _send_image(executor, node, tester, img,
                                                               stamp),
                                 lambda: len(decisions) > n, 10.0)
            return decisions[-1]

        seen = []
        for episode in (1, 2, 3):
            d = act_once()                 # before the start event of this episode
            assert d['episode_policy'] == d['source'] == expected[episode - 1], (episode, d)
            tester.event_pub.publish(String(data=json.dumps(
                {'event': 'start', 'episode': episode, 'seed': 0, 'stamp_s': 0.0})))
            assert _spin_until(executor, lambda: rt.episodes == episode)
            seen.append(rt.episode_policy)
            tester.event_pub.publish(String(data=json.dumps({'event': 'end',
                                                             'episode': episode})))
            assert _spin_until(executor, lambda: rt._prepared is not None)
        assert seen == expected
    finally:
        _close_rig(executor, node, tester)


def test_hot_swap_during_image_stream_drops_nothing(ros_context, model_path, model2_path,
                                                    tmp_path):
    live = tmp_path / 'actor.onnx'
    live.write_bytes(model_path.read_bytes())
    executor, node, tester, actions, infos, decisions = _make_rig(ros_context, _params(
        live, reload_period_s=0.05, reload_settle_s=0.0))
    try:
        _wait_matched(executor, tester)
        assert _spin_until(executor, lambda: infos)
        assert json.loads(infos[-1].data)['model_version'] == 1
        img = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        proprio = proprio_from_joints(robot.HOME_Q, 0.01)
        want = {1: OnnxActor(model_path).act(img, proprio),
                2: OnnxActor(model2_path).act(img, proprio)}
        assert not np.allclose(want[1], want[2])

        # warm up until the action subscription is matched both ways, then stream
        assert _spin_sending(executor, lambda: _send_image(
            executor, node, tester, img, node.get_clock().now().to_msg()), lambda: actions, 5.0)
        _spin_until(executor, lambda: False, 0.2)
        warm = len(actions)
        sent, swapped_at = [], None
        for i in range(300):
            stamp = node.get_clock().now().to_msg()
            sent.append(stamp.sec * 1_000_000_000 + stamp.nanosec)
            _send_image(executor, node, tester, img, stamp)
            assert _spin_until(executor, lambda: len(actions) == warm + len(sent)), \
                f'image {i} got no action'
            if i == 10:   # a trainer exports a new actor: write to temp, then os.replace
                tmp = tmp_path / 'actor.onnx.tmp'
                tmp.write_bytes(model2_path.read_bytes())
                os.replace(tmp, live)
            if swapped_at is None and json.loads(infos[-1].data)['model_version'] == 2:
                swapped_at = i
            if swapped_at is not None and i >= swapped_at + 10:
                break
        assert swapped_at is not None, 'model was not swapped'
        _spin_until(executor, lambda: len(decisions) >= warm + len(sent), 2.0)

        got = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
               for m in actions[warm:]]
        assert got == sent                           # every image got its action, in order
        assert node.counts['actions_published'] == node.counts['images'] == warm + len(sent)
        by_stamp = {_stamp_ns(d['stamp']): d for d in decisions}
        versions = [by_stamp[ns]['model_version'] for ns in sent]
        assert versions == sorted(versions) and versions[0] == 1 and versions[-1] == 2
        for msg, ns in zip(actions[warm:], sent):
            d = by_stamp[ns]
            assert d['source'] == 'actor'
            np.testing.assert_allclose(np.array(msg.position), want[d['model_version']],
                                       atol=1e-6)
        info = json.loads(infos[-1].data)
        assert info['model_version'] == 2 and info['kind'] == 'actor'
        assert info['contract']['dataset'] == 'test/x-v1'
        assert info['models']['actor']['mtime_ns'] == os.stat(live).st_mtime_ns
        assert node.counts['model_swaps'] == 1 and node.counts['model_rejections'] == 0
    finally:
        _close_rig(executor, node, tester)


def test_hot_swap_rejects_mismatching_model(ros_context, model_path, tmp_path):
    from conftest import rewrite_contract
    live = tmp_path / 'actor.onnx'
    live.write_bytes(model_path.read_bytes())
    executor, node, tester, _, infos, _ = _make_rig(ros_context, _params(
        live, reload_period_s=0.05, reload_settle_s=0.0))
    try:
        rewrite_contract(model_path, tmp_path / 'bad.tmp', crop_xywh=[0, 0, 480, 480])
        os.replace(tmp_path / 'bad.tmp', live)
        assert _spin_until(executor, lambda: node.counts['model_rejections'] == 1)
        assert node.runtime.version == 1 and node.counts['model_swaps'] == 0
        assert len(infos) <= 1 or json.loads(infos[-1].data)['model_version'] == 1
    finally:
        _close_rig(executor, node, tester)


@pytest.mark.parametrize('override, message', [
    ({'mode': 'cem'}, "mode 'cem' needs the critic but parameter critic_encoder_path"),
    ({'mode': 'cem', 'critic_encoder_path': '/nonexistent/enc.onnx',
      'critic_head_path': '/nonexistent/head.onnx'}, 'critic_encoder_path.*not found'),
    ({'mode': 'switch', 'critic_encoder_path': 'e.onnx'}, 'set together'),
    ({'mode': 'greedy'}, 'parameter mode must be one of'),
    ({'cem_elites': 100}, 'cem_elites'),
])
def test_bad_mode_setup_is_startup_error(ros_context, model_path, override, message):
    with pytest.raises(StartupError, match=message):
        PolicyNode(context=ros_context, parameter_overrides=_params(model_path, **override))


def test_switch_without_actor_is_startup_error(ros_context, critic_paths):
    enc, head = critic_paths
    with pytest.raises(StartupError, match='needs the actor but parameter model_path'):
        PolicyNode(context=ros_context, parameter_overrides=_params(
            '', mode='switch', critic_encoder_path=str(enc), critic_head_path=str(head)))


def test_logger_records_the_decision_source_per_step(ros_context, model_path, critic_paths,
                                                      tmp_path):
    """Policy (mode switch, exploration noise) + logger in one process: the dataset's per-step
    policy id is the decision's source, not the model info kind ('switch' -> 'other'), and
    its noise-free action is the decision's (the actor's action without the noise; NaN on
    CEM steps)."""
    from awopt_ros.core.dataset import POLICY_IDS, load_episodes
    from awopt_ros.nodes.logger import LoggerNode
    enc, head = critic_paths
    executor, node, tester, actions, _, decisions = _make_rig(ros_context, _params(
        model_path, mode='switch', critic_encoder_path=str(enc), critic_head_path=str(head),
        cem_samples=16, cem_elites=4, reload_period_s=0.0, seed=3, actor_noise_std=0.3))
    logger = LoggerNode(context=ros_context, parameter_overrides=[
        Parameter('output_dir', value=str(tmp_path / 'run')), Parameter('image_size', value=SIZE),
        Parameter('end_grace_s', value=0.2)])
    executor.add_node(logger)
    saved = []
    tester.create_subscription(String, '/logger/episode_saved',
                               lambda m: saved.append(json.loads(m.data)), qos.LATCHED)
    try:
        _wait_matched(executor, tester)
        assert _spin_until(executor, lambda: logger._expect_decisions)
        img = np.random.default_rng(4).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        policies = []
        for episode in (1, 2, 3):
            tester.event_pub.publish(String(data=json.dumps(
                {'event': 'start', 'episode': episode, 'seed': episode, 'stamp_s': 0.0})))
            assert _spin_until(executor, lambda: logger.recorder.in_episode
                               and node.runtime.episodes == episode)
            policies.append(node.runtime.episode_policy)
            # until the logger's subscriptions match, resend; then one image per action
            assert _spin_sending(executor, lambda: _send_image(
                executor, node, tester, img, node.get_clock().now().to_msg()),
                lambda: logger.recorder.steps >= 1, 5.0)
            while logger.recorder.steps < 4:
                n = logger.recorder.steps
                _send_image(executor, node, tester, img, node.get_clock().now().to_msg())
                assert _spin_until(executor, lambda: logger.recorder.steps > n)
            steps = logger.recorder.steps
            tester.event_pub.publish(String(data=json.dumps(
                {'event': 'end', 'episode': episode, 'outcome': 'timeout', 'steps': steps,
                 'success': False, 'terminated': False, 'truncated': True, 'stamp_s': 1.0})))
            assert _spin_until(executor, lambda: len(saved) == episode)
        by_stamp = {_stamp_ns(d['stamp']): d['source'] for d in decisions}
        episodes = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
        assert len(episodes) == 3
        for ep, policy in zip(episodes, policies):
            n = len(ep['actions'])
            keys = np.array(sorted(by_stamp))   # float64 stamp_s: match within 1 us
            near = [int(keys[np.argmin(np.abs(keys - t * 1e9))]) for t in ep['stamp_s'][:n]]
            assert all(abs(k - t * 1e9) < 1e3 for k, t in zip(near, ep['stamp_s'][:n]))
            want = [POLICY_IDS[by_stamp[k]] for k in near]
            assert ep['policy'][:n].tolist() == want == [POLICY_IDS[policy]] * n
            clean = ep['noise_free_action'][:n]
            if policy == 'cem':
                assert np.isnan(clean).all()
            else:
                by_clean = {_stamp_ns(d['stamp']): d['noise_free_action'] for d in decisions}
                np.testing.assert_allclose(clean, [by_clean[k] for k in near], atol=1e-6)
                assert np.abs(clean[:, :4] - ep['actions'][:, :4]).max() > 1e-3   # noisy
        assert set(policies) == {'actor', 'cem'}   # seed 3: cem, actor, cem
    finally:
        executor.remove_node(logger)
        logger.close()
        logger.destroy_node()
        _close_rig(executor, node, tester)


# --- model faults: refused at start and at swap, held (not fatal) at act -----------------------

@pytest.fixture(scope='module')
def shape_liar(tmp_path_factory):
    """A 32 px actor whose contract says SIZE px: the contract matches, the graph does not."""
    from conftest import rewrite_contract
    d = tmp_path_factory.mktemp('policy_liar')
    export_tiny_actor(d / 'a32.onnx', seed=3, image_size=32, crop_xywh=CROP)
    return rewrite_contract(d / 'a32.onnx', d / 'a32_says16.onnx', image_size=[SIZE, SIZE])


def test_truncated_model_is_startup_error_naming_parameter_and_file(ros_context, model_path,
                                                                     tmp_path):
    bad = tmp_path / 'truncated.onnx'
    bad.write_bytes(model_path.read_bytes()[:1000])
    with pytest.raises(StartupError) as info:
        PolicyNode(context=ros_context, parameter_overrides=_params(bad))
    assert str(info.value).startswith(f'model_path: {bad} is not a readable ONNX model '
                                      '(truncated or corrupt): ')
    assert '\n' not in str(info.value)


def test_shape_mismatching_graph_is_startup_error(ros_context, shape_liar):
    with pytest.raises(StartupError, match=r"model_path: .*graph input 'image'"):
        PolicyNode(context=ros_context, parameter_overrides=_params(shape_liar))


def test_main_exits_1_with_one_line_on_random_bytes(tmp_path):
    bad = tmp_path / 'random.onnx'
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, np.uint8).tobytes())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, '-m', 'awopt_ros.nodes.policy', '--ros-args',
         '-p', f'model_path:={bad}', '-p', f'image_size:={SIZE}'],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert 'Traceback' not in proc.stderr and 'google.protobuf' not in proc.stderr
    assert f'model_path: {bad} is not a readable ONNX model' in proc.stderr


def test_hot_swap_refuses_a_graph_differing_from_its_contract(ros_context, model_path,
                                                             shape_liar, tmp_path):
    live = tmp_path / 'actor.onnx'
    live.write_bytes(model_path.read_bytes())
    executor, node, tester, actions, infos, _ = _make_rig(ros_context, _params(
        live, reload_period_s=0.05, reload_settle_s=0.0))
    try:
        _wait_matched(executor, tester)
        img = np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        want = OnnxActor(model_path).act(img, proprio_from_joints(robot.HOME_Q, 0.01))
        tmp = tmp_path / 'actor.onnx.tmp'
        tmp.write_bytes(shape_liar.read_bytes())
        os.replace(tmp, live)
        assert _spin_until(executor, lambda: node.counts['model_rejections'] == 1)
        assert node.runtime.version == 1 and node.counts['model_swaps'] == 0
        assert _spin_until(executor, lambda: infos and json.loads(infos[-1].data)[
            'last_rejection'])
        info = json.loads(infos[-1].data)
        assert info['model_version'] == 1
        assert "graph input 'image'" in info['last_rejection']['actor']
        n = len(actions)   # the old model keeps acting on SIZE px images
        assert _spin_sending(executor, lambda: _send_image(
            executor, node, tester, img, node.get_clock().now().to_msg()),
            lambda: len(actions) > n, 5.0)
        np.testing.assert_allclose(np.array(actions[-1].position), want, atol=1e-6)
        assert node.counts['step_errors'] == 0 and node.counts['invalid_outputs'] == 0
    finally:
        _close_rig(executor, node, tester)


def _ort_fail(*args, **kwargs):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail
    raise Fail('[ONNXRuntimeError] : 1 : FAIL : injected failure')


def test_onnxruntime_error_at_act_holds_without_killing_the_node(ros_context, model_path,
                                                                 monkeypatch):
    import onnxruntime
    executor, node, tester, actions, _, decisions = _make_rig(
        ros_context, _params(model_path, reload_period_s=0.0))
    try:
        _wait_matched(executor, tester)
        monkeypatch.setattr(onnxruntime.InferenceSession, 'run', _ort_fail)
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        # spinning would raise out of the executor if the image callback died
        assert _spin_sending(executor, lambda: _send_image(
            executor, node, tester, img, node.get_clock().now().to_msg()),
            lambda: node.counts['invalid_outputs'] >= 3, 5.0)
        _spin_until(executor, lambda: False, 0.2)
        assert not actions and not decisions and node.counts['actions_published'] == 0
        monkeypatch.undo()                      # the model works again: the node acts
        assert _spin_sending(executor, lambda: _send_image(
            executor, node, tester, img, node.get_clock().now().to_msg()),
            lambda: actions, 5.0)
    finally:
        _close_rig(executor, node, tester)


def test_onnxruntime_error_at_act_falls_back_to_cem(ros_context, model_path, critic_paths,
                                                    monkeypatch):
    import onnxruntime
    enc, head = critic_paths
    executor, node, tester, actions, _, decisions = _make_rig(ros_context, _params(
        model_path, critic_encoder_path=str(enc), critic_head_path=str(head),
        cem_samples=16, cem_elites=4, reload_period_s=0.0))
    try:
        _wait_matched(executor, tester)
        monkeypatch.setattr(onnxruntime.InferenceSession, 'run', _ort_fail)  # CEM: IOBinding
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        assert _spin_sending(executor, lambda: _send_image(
            executor, node, tester, img, node.get_clock().now().to_msg()),
            lambda: actions and decisions, 5.0)
        assert decisions[-1]['source'] == 'cem'
        assert 'injected failure' in decisions[-1]['fallback']
        assert node.counts['fallbacks'] >= 1 and node.counts['actions_cem'] >= 1
    finally:
        _close_rig(executor, node, tester)


# ---- image_source 'camera': the frame -> command hot path, at action_rate_hz -----------------
LBR = {'joint_names': [f'lbr_A{i}' for i in range(1, 8)], 'gripper_joint': 'lbr_finger',
       'joint_states_topic': '/lbr/joint_states', 'camera_ns': '/camera/camera'}


class CameraRig:
    """A policy node on the camera input (driver names of ``names``) and a test node that
    sends it camera frames one at a time (the hot path keeps only the newest frame)."""

    def __init__(self, ctx, model_path, **params):
        values = {'model_path': str(model_path), 'image_size': SIZE, 'crop_xywh': CROP,
                  'reload_period_s': 0.0, **LBR, **params}
        self.node = PolicyNode(context=ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in values.items()])
        self.tester = rclpy.create_node('camera_tester', context=ctx)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self.actions, self.decisions = [], []
        self.tester.create_subscription(JointState, '/policy/action', self.actions.append,
                                        qos.COMMAND)
        self.tester.create_subscription(
            String, '/policy/decision', lambda m: self.decisions.append(json.loads(m.data)),
            qos.COMMAND)
        self.cam_pub = self.tester.create_publisher(Image, '/camera/camera/color/image_raw',
                                                    qos.SENSOR)
        self.js_pub = self.tester.create_publisher(JointState, '/lbr/joint_states', qos.SENSOR)
        self.event_pub = self.tester.create_publisher(String, '/episode/event', qos.LATCHED)
        assert _spin_until(self.executor, lambda: self.cam_pub.get_subscription_count() > 0
                           and self.js_pub.get_subscription_count() > 0)

    def now_s(self):
        return self.node.get_clock().now().nanoseconds * 1e-9

    def joint_state(self):
        msg = _joint_state(self.node.get_clock().now().to_msg())
        msg.name = list(LBR['joint_names']) + [LBR['gripper_joint']]
        self.js_pub.publish(msg)
        return _spin_until(self.executor, lambda: self.node._joint_state is not None, 2.0)

    def frame(self, rgb, stamp_s):
        """Send one camera frame and spin until the node has taken it."""
        before = self.node.counts['frames']
        self.cam_pub.publish(convert.numpy_to_image(rgb, convert.s_to_stamp(stamp_s),
                                                    'camera_color_optical_frame'))
        assert _spin_until(self.executor, lambda: self.node.counts['frames'] > before, 3.0)
        self.executor.spin_once(timeout_sec=0.01)     # the action and decision, if any

    def close(self):
        _close_rig(self.executor, self.node, self.tester)


def _camera_frame(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_camera_frame_is_cropped_in_the_node_and_acted_on_with_driver_names(ros_context,
                                                                           model_path):
    from awopt_ros.core.image_ops import crop_resize
    rig = CameraRig(ros_context, model_path)
    try:
        rgb = _camera_frame()
        assert rig.joint_state()
        stamp_s = rig.now_s() - 0.02
        rig.frame(rgb, stamp_s)
        assert _spin_until(rig.executor, lambda: rig.actions and rig.decisions)
        msg = rig.actions[0]
        assert abs(convert.stamp_to_s(msg.header.stamp) - stamp_s) < 1e-6
        # The image camera_pipeline publishes for this frame (the logger's) is the one acted
        # on: the same crop_resize of the same frame.
        expected = OnnxActor(model_path).act(crop_resize(rgb, CROP, SIZE),
                                             proprio_from_joints(robot.HOME_Q, 0.01))
        np.testing.assert_allclose(np.array(msg.position), expected, atol=1e-6)
        assert rig.node.image_source == 'camera'
    finally:
        rig.close()


def test_30hz_camera_gets_an_action_on_every_third_frame_at_10hz(ros_context, model_path):
    rig = CameraRig(ros_context, model_path)
    try:
        rgb = _camera_frame(1)
        t0 = rig.now_s() - 0.1
        for k in range(9):                  # 0.3 s of a 30 Hz camera
            assert rig.joint_state()
            rig.frame(rgb, t0 + k / 30.0)
        assert _spin_until(rig.executor, lambda: len(rig.actions) >= 3, 2.0)
        rig.executor.spin_once(timeout_sec=0.05)
        stamps = [convert.stamp_to_s(m.header.stamp) for m in rig.actions]
        np.testing.assert_allclose(stamps, [t0, t0 + 0.1, t0 + 0.2], atol=1e-6)
        c = rig.node.grid.counters()
        assert c['frames_acted'] == 3 and c['frames_skipped_rate'] == 6
    finally:
        rig.close()


def test_episode_start_restarts_the_action_grid_on_the_next_newer_frame(ros_context,
                                                                       model_path):
    rig = CameraRig(ros_context, model_path)
    try:
        rgb = _camera_frame(2)
        t0 = rig.now_s() - 0.1
        assert rig.joint_state()
        rig.frame(rgb, t0)                          # acted on: the next due is t0 + 0.1
        rig.event_pub.publish(String(data=json.dumps(
            {'event': 'start', 'episode': 1, 'seed': 1, 'stamp_s': t0 + 0.04})))
        assert _spin_until(rig.executor, lambda: rig.node._episode == 1)
        rig.frame(rgb, t0 + 1 / 30)                 # before the episode's start: not acted on
        rig.frame(rgb, t0 + 2 / 30)                 # the first after it: acted on at once
        assert _spin_until(rig.executor, lambda: len(rig.actions) >= 2, 2.0)
        stamps = [convert.stamp_to_s(m.header.stamp) for m in rig.actions]
        np.testing.assert_allclose(stamps, [t0, t0 + 2 / 30], atol=1e-6)
    finally:
        rig.close()


def test_camera_frames_of_another_layout_or_stale_are_dropped_and_counted(ros_context,
                                                                         model_path):
    rig = CameraRig(ros_context, model_path)
    try:
        assert rig.joint_state()
        rig.frame(np.zeros((240, 320, 3), np.uint8), rig.now_s())
        rig.frame(_camera_frame(), rig.now_s() - 5.0)          # 5 s old
        assert rig.node.layout.dropped_bad_size == 1
        assert rig.node.gate.dropped_stale == 1
        assert not rig.actions
    finally:
        rig.close()


@pytest.mark.parametrize('override, message', [
    ({'image_source': 'pipeline'}, 'image_source'),
    ({'source_width': 320}, 'crop_xywh'),
])
def test_bad_camera_input_setup_is_startup_error(ros_context, model_path, override, message):
    with pytest.raises(StartupError, match=message):
        PolicyNode(context=ros_context, parameter_overrides=[
            Parameter(k, value=v) for k, v in {'model_path': str(model_path),
                                               'image_size': SIZE, 'crop_xywh': CROP,
                                               **override}.items()])
