"""success_detector node in process (private rclpy Context) with a tiny ONNX classifier made
here, whose probability is the frame's mean brightness / 255: the probability is published
with the frame's stamp, the debounced decision, its reset on an episode start, stale frames,
diagnostics, start-up refusals and dropped frames; and one node process started from the
grasp bringup's params file."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from onnx import TensorProto, helper
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from vision_msgs.msg import Classification

from awopt_ros import launcher
from awopt_ros.core import param_schema
from awopt_ros.core.spec import SOURCE_SIZE
from awopt_ros.core.success_classifier import SuccessClassifier, expected_contract, make_contract
from awopt_ros.learning.export import save_with_metadata
from awopt_ros.nodes.success_detector import (CLASSIFICATION_TOPIC, SUCCESS_TOPIC,
                                              SuccessDetectorNode)
from awopt_ros.ros import convert, diagnostics, qos
from awopt_ros.ros.run import StartupError

ON, OFF, K = 0.8, 0.3, 3


def write_model(path, size=64, on=ON, off=OFF, k=K, task='grasp'):
    """Write a success classifier whose probability is mean(image) / 255 (float32 (N,)) and
    logit its inverse sigmoid log(p / (1 - p)) (+-inf at 1 and 0)."""
    img = helper.make_tensor_value_info('image', TensorProto.UINT8, ['N', size, size, 3])
    nodes = [helper.make_node('Cast', ['image'], ['f'], to=TensorProto.FLOAT),
             helper.make_node('ReduceMean', ['f'], ['m'], axes=[1, 2, 3], keepdims=0),
             helper.make_node('Div', ['m', 'full'], ['probability']),
             helper.make_node('Sub', ['one', 'probability'], ['q']),
             helper.make_node('Div', ['probability', 'q'], ['odds']),
             helper.make_node('Log', ['odds'], ['logit'])]
    inits = [helper.make_tensor('full', TensorProto.FLOAT, [], [255.0]),
             helper.make_tensor('one', TensorProto.FLOAT, [], [1.0])]
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ['N'])
            for name in ('probability', 'logit')]
    model = helper.make_model(helper.make_graph(nodes, 'brightness', [img], outs, inits),
                              opset_imports=[helper.make_opsetid('', 17)])
    contract = make_contract(task, on, off, k, 0.01, image_size=size)
    return save_with_metadata(model.SerializeToString(), path, contract, 'test model')


@pytest.fixture
def model(tmp_path):
    return str(write_model(tmp_path / 'success.onnx'))


class Cell:
    """The node under test and a peer that records its outputs."""

    def __init__(self, ctx, **params):
        self.node = SuccessDetectorNode(context=ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.peer = rclpy.create_node('success_peer', context=ctx)
        self.classes, self.bools, self.diags = [], [], []
        self.peer.create_subscription(Classification, CLASSIFICATION_TOPIC, self.classes.append,
                                      qos.COMMAND)
        self.peer.create_subscription(Bool, SUCCESS_TOPIC, lambda m: self.bools.append(m.data),
                                      qos.COMMAND)
        self.peer.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        self.image_pub = self.peer.create_publisher(Image, '/policy/image', qos.SENSOR)
        self.event_pub = self.peer.create_publisher(String, '/episode/event', qos.LATCHED)
        self.ex = SingleThreadedExecutor(context=ctx)
        self.ex.add_node(self.node)
        self.ex.add_node(self.peer)
        # reliable outputs: matched before a frame is fed
        assert self.spin_until(lambda: self.peer.count_publishers(CLASSIFICATION_TOPIC) > 0
                               and self.node.class_pub.get_subscription_count() > 0
                               and self.node.success_pub.get_subscription_count() > 0)

    def _on_diag(self, msg):
        self.diags.extend(s for s in msg.status if s.name == 'success_detector')

    def spin_until(self, cond, timeout_s=5.0):
        deadline = time.monotonic() + timeout_s
        while not cond() and time.monotonic() < deadline:
            self.ex.spin_once(timeout_sec=0.02)
        return cond()

    def now_s(self):
        return self.node.get_clock().now().nanoseconds * 1e-9

    def frame(self, value, stamp_s=None, size=64, encoding='rgb8'):
        """A uniform policy image of brightness ``value`` (probability value / 255)."""
        stamp = convert.s_to_stamp(self.now_s() if stamp_s is None else stamp_s)
        msg = convert.numpy_to_image(np.full((size, size, 3), value, np.uint8), stamp,
                                     'camera_color_optical_frame')
        msg.encoding = encoding
        return msg

    def feed(self, values, start_s=None, dt_s=0.1):
        """Hand frames of these brightness values to the node's image callback directly
        (deterministic: no best-effort transport), stamped ``start_s`` + i * ``dt_s``;
        wait for their classifications. Returns the messages."""
        t0 = self.now_s() if start_s is None else start_s
        before = len(self.classes)
        msgs = [self.frame(v, t0 + i * dt_s) for i, v in enumerate(values)]
        for m in msgs:
            self.node._on_image(m)
        assert self.spin_until(lambda: len(self.classes) == before + len(msgs))
        return msgs

    def start_episode(self, episode, stamp_s):
        self.node._on_event(String(data=json.dumps(
            {'event': 'start', 'episode': episode, 'stamp_s': stamp_s})))

    def close(self):
        self.ex.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()


@pytest.fixture
def make(ros_context):
    cells = []

    def _make(**params):
        cells.append(Cell(ros_context, **params))
        return cells[-1]
    yield _make
    for cell in cells:
        cell.close()


def high(p):
    """Brightness whose probability is about ``p``."""
    return int(round(p * 255))


def test_probability_published_with_the_frames_stamp(make, model):
    cell = make(model_path=model)
    msg = cell.frame(high(0.5))
    msg.header.stamp = convert.s_to_stamp(round(cell.now_s()) + 0.25)
    # through the topic (best effort: published until heard)
    assert cell.spin_until(lambda: cell.image_pub.get_subscription_count() > 0)
    deadline = time.monotonic() + 5.0
    while not cell.classes and time.monotonic() < deadline:
        cell.image_pub.publish(msg)
        cell.spin_until(lambda: cell.classes, timeout_s=0.2)
    out = cell.classes[0]
    assert out.header.stamp == msg.header.stamp
    assert out.header.frame_id == 'camera_color_optical_frame'
    assert [r.class_id for r in out.results] == ['success']
    assert out.results[0].score == pytest.approx(high(0.5) / 255.0, abs=1e-6)
    assert cell.spin_until(lambda: cell.bools)
    assert cell.bools[0] is False


def test_decision_after_k_frames_above_on_and_reset_below_off(make, model):
    cell = make(model_path=model)
    # the contract's thresholds: on 0.8, off 0.3, K 3
    assert (cell.node.on_threshold, cell.node.off_threshold, cell.node.debounce_frames) == (
        ON, OFF, K)
    cell.feed([high(0.9), high(0.9), high(0.95), high(0.5), high(0.9), high(0.2), high(0.9)])
    assert cell.spin_until(lambda: len(cell.bools) == 7)
    # 2 frames: not yet; the 3rd: success; between off and on: holds; below off: reset
    assert cell.bools == [False, False, True, True, True, False, False]
    scores = [c.results[0].score for c in cell.classes]
    assert scores == pytest.approx([v / 255 for v in (230, 230, 242, 128, 230, 51, 230)],
                                   abs=1e-6)


def test_parameters_override_the_contracts_thresholds(make, model):
    cell = make(model_path=model, on_threshold=0.5, off_threshold=0.4, debounce_frames=1)
    # what the launcher's params check reads from the source is what the node declares
    runtime = {n for n in cell.node.list_parameters([], 0).names
               if not param_schema.is_builtin(n)}
    assert runtime == param_schema.declared_parameters('awopt_ros.nodes.success_detector')
    assert (cell.node.on_threshold, cell.node.off_threshold, cell.node.debounce_frames) == (
        0.5, 0.4, 1)
    cell.feed([high(0.6), high(0.45), high(0.35)])
    assert cell.spin_until(lambda: len(cell.bools) == 3)
    assert cell.bools == [True, True, False]


def test_episode_start_resets_and_stale_frames_do_not_count(make, model):
    cell = make(model_path=model)
    t0 = cell.now_s()
    cell.feed([high(0.9)] * 3, start_s=t0)
    assert cell.spin_until(lambda: len(cell.bools) == 3) and cell.bools[-1] is True
    start_s = t0 + 1.0
    cell.start_episode(7, start_s)
    assert cell.node.debouncer.decision is False and cell.node.debouncer.run == 0
    # frames stamped before the start, and at the start itself (under a lockstep simulator's
    # paused clock it may show the previous episode): classified, not counted (no decision)
    cell.feed([high(0.9)] * 6, start_s=start_s - 0.5)
    assert cell.node.counted.counts['frames_stale'] == 6 and cell.node.debouncer.run == 0
    assert len(cell.classes) == 9
    # the same latched start heard again does not reset; frames after the start count
    cell.feed([high(0.9)] * 2, start_s=start_s + 0.1)
    cell.start_episode(7, start_s)
    cell.feed([high(0.9)], start_s=start_s + 0.3)
    assert cell.spin_until(lambda: len(cell.bools) == 7)
    # the start published one false (the manager arms on it), then the counted frames
    assert cell.bools[3:] == [False, False, False, True]
    # a frame not newer than the last one counted does not count
    cell.feed([high(0.1)], start_s=start_s + 0.3)
    assert cell.node.counted.counts['frames_out_of_order'] == 1 and cell.node.debouncer.decision
    # an event through the latched topic resets too (episode 8, no stamp: now)
    cell.event_pub.publish(String(data=json.dumps({'event': 'start', 'episode': 8})))
    assert cell.spin_until(lambda: cell.node._episode == 8)
    assert cell.node.debouncer.run == 0 and t0 <= cell.node.counted.start_s <= cell.now_s()


def test_diagnostics(make, model):
    cell = make(model_path=model)
    cell.feed([high(0.9)] * 3, start_s=cell.now_s() - 0.3)   # the last one 0.1 s old
    assert cell.spin_until(lambda: cell.diags and int(diagnostics.parse_values(
        cell.diags[-1])['frames_scored']) == 3, timeout_s=5.0)
    status = cell.diags[-1]
    values = diagnostics.parse_values(status)
    assert status.level == diagnostics.OK and status.hardware_id == 'onnx'
    assert values['model'] == model and values['task'] == 'grasp'
    assert (float(values['on_threshold']), float(values['off_threshold']),
            int(values['debounce_frames'])) == (ON, OFF, K)
    p50, p99 = float(values['latency_ms_p50']), float(values['latency_ms_p99'])
    assert 0.0 < p50 <= p99 < 1000.0
    assert 100.0 <= float(values['frame_age_ms']) < 10_000.0
    assert values['decision'] == 'True' and values['frames_received'] == '3'


def test_wrong_size_or_encoding_frames_are_dropped(make, model):
    cell = make(model_path=model)
    cell.node._on_image(cell.frame(high(0.9), size=32))
    cell.node._on_image(cell.frame(high(0.9), encoding='bgr8'))
    assert cell.node.layout.counters() == {'dropped_bad_encoding': 1, 'dropped_bad_size': 1}
    cell.feed([high(0.9)])
    assert len(cell.classes) == 1 and cell.node.counts['frames_scored'] == 1
    assert cell.spin_until(lambda: cell.diags and diagnostics.parse_values(
        cell.diags[-1])['dropped_bad_size'] == '1')
    assert cell.diags[-1].level == diagnostics.WARN


def test_refuses_a_model_for_another_image_size(ros_context, tmp_path):
    small = write_model(tmp_path / 'small.onnx', size=32)
    with pytest.raises(StartupError, match=r'model_path: .*small\.onnx.*image_size'):
        SuccessDetectorNode(context=ros_context,
                            parameter_overrides=[Parameter('model_path', value=str(small))])
    # the same model is accepted by a node configured for 32 px images
    node = SuccessDetectorNode(context=ros_context, parameter_overrides=[
        Parameter('model_path', value=str(small)), Parameter('image_size', value=32)])
    assert node.classifier.image_size == 32
    node.destroy_node()


def test_refuses_missing_corrupt_and_foreign_models(ros_context, tmp_path, model):
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'not a model')
    cases = [(str(tmp_path / 'missing.onnx'), 'missing.onnx'),
             (str(corrupt), 'corrupt.onnx'),
             ('models/grasp_awopt.onnx', 'success classifier')]   # a policy, not a classifier
    for path, words in cases:
        with pytest.raises(StartupError, match=words) as err:
            SuccessDetectorNode(context=ros_context,
                                parameter_overrides=[Parameter('model_path', value=path)])
        assert '\n' not in str(err.value) and str(err.value).startswith('model_path: ')
    with pytest.raises(StartupError, match='off_threshold'):
        SuccessDetectorNode(context=ros_context, parameter_overrides=[
            Parameter('model_path', value=model), Parameter('on_threshold', value=0.2)])
    with pytest.raises(StartupError, match='task'):
        SuccessDetectorNode(context=ros_context, parameter_overrides=[
            Parameter('model_path', value=model), Parameter('task', value='insertion')])


def test_node_process_starts_from_the_grasp_bringup_config(tmp_path, model):
    """The launcher starts the node with the grasp params file; it reports on /diagnostics,
    stops cleanly on SIGINT; with a missing model it exits 1 with a one-line reason."""
    config = launcher.DEFAULT_CONFIG
    env = launcher.ros_environment()
    argv = launcher.node_command('awopt_ros.nodes.success_detector', 'success_detector', config,
                                 {'model_path': str(tmp_path / 'missing.onnx')})
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    fatal = [line for line in out.stderr.splitlines() if 'startup failed' in line]
    assert len(fatal) == 1 and 'missing.onnx' in fatal[0]

    argv = launcher.node_command('awopt_ros.nodes.success_detector', 'success_detector', config,
                                 {'model_path': model})
    log = tmp_path / 'node.log'
    with open(log, 'wb') as f:
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        try:
            peer = rclpy.create_node('success_process_peer', context=ctx)
            seen = []
            peer.create_subscription(
                DiagnosticArray, '/diagnostics',
                lambda m: seen.extend(s for s in m.status if s.name == 'success_detector'), 10)
            ex = SingleThreadedExecutor(context=ctx)
            ex.add_node(peer)
            deadline = time.monotonic() + 30.0
            while not seen and time.monotonic() < deadline and proc.poll() is None:
                ex.spin_once(timeout_sec=0.1)
            assert seen, log.read_text()
            assert diagnostics.parse_values(seen[0])['model'] == model
            ex.shutdown()
            peer.destroy_node()
        finally:
            rclpy.try_shutdown(context=ctx)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize('config, policy, source, task', [
    ('config/awopt_ros_kuka_grasp.yaml', 'actor', 'ground_truth', 'grasp'),
    ('config/awopt_ros_kuka_fake_hardware.yaml', 'actor', 'classifier', 'grasp'),
    ('config/awopt_ros_kuka_lbr.yaml', 'actor', 'classifier', 'grasp'),
    ('config/awopt_ros_kuka_icube.yaml', 'actor', 'classifier', 'grasp'),
    ('config/awopt_ros_sawyer_insertion.yaml', 'residual', 'ground_truth', 'insertion'),
])
def test_bringups_run_the_detector_and_name_their_success_source(config, policy, source, task):
    """The grasp and simulated insertion bringups start the success detector right after the
    policy (so the logger records its score); simulation takes success from the ground truth,
    (fake) hardware from the classifier. The shipped model's contract matches each bringup's
    policy image."""
    names = [n for n, _ in launcher.stack_node_specs(config, policy)]
    assert names[names.index(launcher.POLICY_NODES[policy][0]) + 1] == 'success_detector'
    assert launcher.effective_params(config, 'episode_manager')['success_source'] == source
    detector = launcher.effective_params(config, 'success_detector')
    assert detector['model_path'] == f'models/{task}_success.onnx' and detector['task'] == task
    pipeline = launcher.effective_params(config, 'camera_pipeline')
    assert (detector['image_size'], detector['crop_xywh']) == (pipeline['image_size'],
                                                               pipeline['crop_xywh'])
    source = [detector.get(k, d) for k, d in zip(('source_width', 'source_height'),
                                                 SOURCE_SIZE)]
    assert source == [pipeline.get(k, d) for k, d in zip(('source_width', 'source_height'),
                                                         SOURCE_SIZE)]
    launcher.check_shared_params(config, names)
    SuccessClassifier(f'models/{task}_success.onnx', expected_contract(
        task, detector['image_size'], detector['crop_xywh'], source))


def test_the_sawyer_bridge_runs_no_detector():
    """The real Sawyer's camera (640x480 RealSense) is not the simulated socket camera the
    insertion classifier was trained on: no detector there (episodes end as before)."""
    names = [n for n, _ in launcher.stack_node_specs('config/awopt_ros_sawyer_bridge.yaml',
                                                     'residual')]
    assert 'success_detector' not in names


def test_frames_count_at_the_contracts_frame_period_not_the_camera_rate(make, model):
    """A 30 Hz camera: every frame is classified, but only frames 0.1 s apart (the contract's
    frame_period_s, the rate K was chosen at) count, so K = 3 takes 0.2 s, not 67 ms."""
    cell = make(model_path=model)
    assert cell.node.debounce_period_s == pytest.approx(0.1)
    cell.feed([high(0.9)] * 7, dt_s=1 / 30)
    assert len(cell.classes) == 7
    assert cell.spin_until(lambda: len(cell.bools) == 3)
    cell.spin_until(lambda: len(cell.bools) > 3, timeout_s=0.3)
    assert cell.bools == [False, False, True]          # frames 0, 3 and 6 counted
    assert cell.node.counted.counts['frames_too_soon'] == 4
    # a parameter overrides the contract's period
    fast = make(model_path=model, debounce_period_s=0.03)
    fast.feed([high(0.9)] * 3, dt_s=1 / 30)
    assert fast.spin_until(lambda: len(fast.bools) == 3) and fast.bools == [False, False, True]


def test_unscored_frames_reset_and_publish_false(make, model, monkeypatch):
    cell = make(model_path=model)
    t0 = cell.now_s()
    cell.feed([high(0.9)] * 2, start_s=t0)
    cell.node._on_image(cell.frame(high(0.9), t0 + 0.2, size=32))     # bad size: reset
    assert cell.node.debouncer.run == 0
    cell.feed([high(0.9)], start_s=t0 + 0.3)
    assert cell.spin_until(lambda: len(cell.bools) == 4)
    assert cell.bools == [False, False, False, False]   # the run started again at 0.3 s
    cell.feed([high(0.9)] * 2, start_s=t0 + 0.4)
    assert cell.spin_until(lambda: len(cell.bools) == 6) and cell.bools[-1] is True
    # a scoring error resets a decision already made

    def broken(image):
        raise ValueError('model produced non-finite probabilities')
    monkeypatch.setattr(cell.node.classifier, 'score', broken)
    cell.node._on_image(cell.frame(high(0.9), t0 + 0.6))
    assert cell.spin_until(lambda: len(cell.bools) == 7)
    assert cell.bools[-1] is False and cell.node.debouncer.decision is False
    assert cell.node.counts['score_errors'] == 1


def test_a_stamp_gap_resets_and_old_frames_do_not_count(make, model):
    cell = make(model_path=model)
    assert cell.node.max_gap_s == pytest.approx(0.3)      # 3 x the contract's 0.1 s
    # a frame 1 s old at arrival (max_frame_age_s 0.5): classified, not counted
    cell.feed([high(0.9)], start_s=cell.now_s() - 1.0)
    assert cell.node.counted.counts['frames_too_old'] == 1 and cell.node.debouncer.run == 0
    t0 = cell.now_s()
    cell.feed([high(0.9)] * 2, start_s=t0)
    cell.feed([high(0.9)], start_s=t0 + 0.6)             # 0.5 s without a counted frame
    assert cell.spin_until(lambda: len(cell.bools) == 3)
    assert cell.bools == [False, False, False] and cell.node.debouncer.run == 1
    assert cell.node.counted.counts['gap_resets'] == 1


def test_episode_start_publishes_false(make, model):
    cell = make(model_path=model, debounce_frames=1)
    t0 = cell.now_s()
    cell.feed([high(0.9)], start_s=t0)
    assert cell.spin_until(lambda: cell.bools == [True])
    cell.start_episode(3, t0 + 0.05)
    assert cell.spin_until(lambda: len(cell.bools) == 2) and cell.bools == [True, False]
    cell.feed([high(0.9)], start_s=t0 + 0.1)
    assert cell.spin_until(lambda: len(cell.bools) == 3) and cell.bools[-1] is True


def test_input_timeout_is_an_error_status(make, model):
    cell = make(model_path=model, input_timeout_s=0.2)
    now = cell.now_s()
    assert cell.node.input_status(now)[1] is False       # nothing yet: not watched
    cell.feed([high(0.9)])
    since, timed_out = cell.node.input_status(cell.now_s())
    assert 0.0 <= since < 0.2 and not timed_out
    time.sleep(0.3)
    since, timed_out = cell.node.input_status(cell.now_s())
    assert since >= 0.3 and timed_out
    before = len(cell.diags)
    cell.node._publish_diagnostics()
    assert cell.spin_until(lambda: len(cell.diags) > before)
    status = cell.diags[-1]
    assert status.level == diagnostics.ERROR
    assert status.message.startswith('no frame scored for ') and 'input_timeout_s 0.2' in \
        status.message
    assert float(diagnostics.parse_values(status)['since_last_scored_s']) >= 0.3
    # an episode start restarts the watch
    cell.start_episode(1, cell.now_s())
    assert cell.node.input_status(cell.now_s())[1] is False
    time.sleep(0.3)
    assert cell.node.input_status(cell.now_s())[1] is True


def test_refuses_a_model_for_another_camera_frame_size(ros_context, model):
    with pytest.raises(StartupError, match='source_size'):
        SuccessDetectorNode(context=ros_context, parameter_overrides=[
            Parameter('model_path', value=model), Parameter('source_width', value=320),
            Parameter('source_height', value=240)])
