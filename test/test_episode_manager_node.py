"""episode_manager node in process: start sequence, outcomes and events."""
import json
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float32, String
from std_srvs.srv import SetBool, Trigger

from awopt_ros.core import spec
from awopt_ros.nodes.episode_manager import EpisodeManagerNode
from awopt_ros.ros import convert, diagnostics, qos


#: lbr-stack driver names with realsense-ros's camera (the fake-hardware bringup's)
LBR = {'joint_names': [f'lbr_A{i}' for i in range(1, 8)], 'gripper_joint': 'lbr_gripper',
       'joint_states_topic': '/lbr/joint_states', 'camera_ns': '/camera/camera'}


class FakeCell:
    """Stands in for sim_robot's reset service, arm_interface's enable, the sensors, and the
    signs of life of the camera pipeline, policy and logger (``alive`` says which send).
    ``names``: the driver's joint names, the joint state topic and the camera namespace
    (default: the simulator's)."""

    def __init__(self, ctx, joint_names=tuple(spec.ARM_JOINTS) + (spec.GRIPPER_JOINT,),
                 joint_states_topic='/joint_states', camera_ns='/camera'):
        self.node = rclpy.create_node('fake_cell', context=ctx)
        self.joint_names = list(joint_names)
        self.resets, self.enables = 0, []
        self.node.create_service(Trigger, '/sim/reset', self._reset)
        self.node.create_service(SetBool, '/arm/enable', self._enable)
        self.events = []
        self.node.create_subscription(String, '/episode/event',
                                      lambda m: self.events.append(json.loads(m.data)),
                                      qos.LATCHED)
        self.action = self.node.create_publisher(JointState, '/policy/action', qos.COMMAND)
        self.success = self.node.create_publisher(Float32, '/success/probability', qos.COMMAND)
        self.detector = self.node.create_publisher(Bool, '/success_detector/success',
                                                   qos.COMMAND)
        self.joints = self.node.create_publisher(JointState, joint_states_topic, qos.SENSOR)
        self.camera = self.node.create_publisher(CameraInfo, f'{camera_ns}/color/camera_info',
                                                 qos.SENSOR)
        self.policy_image = self.node.create_publisher(Image, '/policy/image', qos.SENSOR)
        self.diag = self.node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.logger_frames = 1     # the fake logger's policy_images_received (others: 5)
        self.logger_refusal = ''   # non-empty: the fake logger does not accept episodes
        self.logger_write_errors = 0
        self.detector_error = ''   # non-empty: the fake detector's status is ERROR with it
        self.alive = {'camera', 'joint_states', 'camera_pipeline', 'success_detector',
                      'policy', 'logger'}
        self.last_beat_s = 0.0
        self.start = self.node.create_client(Trigger, '/episode/start')
        self.stop = self.node.create_client(Trigger, '/episode/stop')

    def _reset(self, request, response):
        self.resets += 1
        response.success, response.message = True, json.dumps({'seed': 1000 + self.resets})
        return response

    def _enable(self, request, response):
        self.enables.append(request.data)
        response.success = True
        return response

    def heartbeat(self):
        """Send what each live node sends; the policy's action is stamped 10 s ago, so that in
        an episode it is no step (an action on a frame from before the start). At most every
        50 ms (wall), as sensors at their rates: an executor spun once per message keeps up."""
        if time.monotonic() - self.last_beat_s < 0.05:
            return
        self.last_beat_s = time.monotonic()
        if 'joint_states' in self.alive:
            self.joints.publish(JointState(name=self.joint_names,
                                           position=[0.0] * len(self.joint_names)))
        if 'camera' in self.alive:
            info = CameraInfo()
            info.header.stamp = self.node.get_clock().now().to_msg()
            self.camera.publish(info)
        if 'camera_pipeline' in self.alive:   # its 1 Hz status (the manager reads no frames)
            self.diag.publish(diagnostics.diagnostic_array(
                self.node, 'camera_pipeline', {'accepted': 1}, hardware_id='camera'))
        if 'success_detector' in self.alive:   # its 1 Hz status (read with success_source
            self.diag.publish(diagnostics.diagnostic_array(   # classifier only)
                self.node, 'success_detector',
                {'frames_scored': 1, 'since_last_scored_s': 1.5 if self.detector_error else 0.0},
                message=self.detector_error, hardware_id='onnx',
                level=diagnostics.ERROR if self.detector_error else diagnostics.OK))
        if 'policy' in self.alive:
            old = convert.s_to_stamp(self.node.get_clock().now().nanoseconds * 1e-9 - 10.0)
            self.action.publish(convert.action_to_msg([0.0] * 7, old))
        if 'logger' in self.alive:
            self.diag.publish(self.logger_status())

    def logger_status(self):
        """The fake logger's diagnostics (the logger's contract: counters, accepting_episodes,
        free_disk_mb, min_free_disk_mb, write_errors; ERROR and a reason when refusing)."""
        values = dict.fromkeys(diagnostics.LOGGER_READY_KEYS, 5)
        values['policy_images_received'] = self.logger_frames
        values.update(accepting_episodes='false' if self.logger_refusal else 'true',
                      free_disk_mb='3.2' if self.logger_refusal else '5000.0',
                      min_free_disk_mb='50.0', write_errors=str(self.logger_write_errors))
        return diagnostics.diagnostic_array(
            self.node, 'logger', values, message=self.logger_refusal,
            level=diagnostics.ERROR if self.logger_refusal else diagnostics.OK)

    def send_action(self, terminate=0.0):
        stamp = self.node.get_clock().now().to_msg()
        self.action.publish(convert.action_to_msg([0.01, 0, 0, 0, 0, 0, terminate], stamp))


def spin(executor, cond, timeout_s=5.0, cell=None, acting=False):
    """Spin until ``cond()``; with ``cell`` its live nodes send, with ``acting`` the policy
    also sends actions that are steps (every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    last_action_s = 0.0
    while time.monotonic() < deadline and not cond():
        if cell is not None:
            cell.heartbeat()
        if acting and time.monotonic() - last_action_s > 0.05:
            cell.send_action()
            last_action_s = time.monotonic()
        executor.spin_once(timeout_sec=0.02)
    return cond()


def setup(ctx, logger_frames=1, cell_names=None, **params):
    """Start a manager with ``params`` and a fake cell that speaks the same driver names
    (``cell_names``: FakeCell's arguments, to make them differ); wait until every required
    node is heard from and the logger is ready."""
    from rclpy.parameter import Parameter
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    manager = EpisodeManagerNode(context=ctx, parameter_overrides=overrides)
    if cell_names is None:
        cell_names = {k: params[k] for k in ('joint_states_topic', 'camera_ns') if k in params}
        cell_names['joint_names'] = (
            list(params.get('joint_names', spec.ARM_JOINTS))
            + [params.get('gripper_joint', spec.GRIPPER_JOINT)])
    cell = FakeCell(ctx, **cell_names)
    cell.logger_frames = logger_frames
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(manager)
    ex.add_node(cell.node)
    assert spin(ex, lambda: cell.start.service_is_ready() and all(
        c.service_is_ready() for c in (manager.reset_client, manager.enable_client)),
        timeout_s=15.0)
    # Every required node heard from (the manager refuses to start before).
    assert spin(ex, lambda: not manager.monitor.silent(time.monotonic()), timeout_s=15.0,
                cell=cell)
    if logger_frames and manager.wait_for_logger:
        assert spin(ex, lambda: manager.logger_ready, cell=cell)
    return manager, cell, ex


def call(ex, client, cell):
    future = client.call_async(Trigger.Request())
    assert spin(ex, future.done, cell=cell)
    return future.result()


def events_of(cell, kind):
    return [e for e in cell.events if e['event'] == kind]


def test_start_resets_enables_and_ends_on_terminate(ros_context):
    manager, cell, ex = setup(ros_context)
    reply = call(ex, cell.start, cell)
    assert reply.success and json.loads(reply.message) == {'episode': 1}
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    start = events_of(cell, 'start')[0]
    assert start['episode'] == 1 and start['seed'] == 1001
    assert spin(ex, lambda: cell.enables == [True], cell=cell)
    busy = call(ex, cell.start, cell)
    assert not busy.success and 'already running' in busy.message
    cell.send_action()
    cell.send_action(terminate=1.0)
    assert spin(ex, lambda: events_of(cell, 'end'), cell=cell)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'terminate' and end['steps'] == 2 and end['terminated']
    assert spin(ex, lambda: cell.enables == [True, False], cell=cell)  # arm disabled at end
    manager.destroy_node()


def test_success_and_operator_stop(ros_context):
    manager, cell, ex = setup(ros_context, success_debounce_steps=2)
    call(ex, cell.start, cell)
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    cell.success.publish(Float32(data=1.0))   # before any new frame: stale, ignored
    cell.success.publish(Float32(data=1.0))
    spin(ex, lambda: False, timeout_s=0.1)
    assert not events_of(cell, 'end')
    assert spin(ex, lambda: manager.fresh_frame, cell=cell)
    for _ in range(2):
        cell.success.publish(Float32(data=1.0))
    assert spin(ex, lambda: events_of(cell, 'end'), cell=cell)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'success'
    assert end['success_source'] == 'ground_truth' and end['ground_truth_success'] is True
    assert not call(ex, cell.stop, cell).success   # nothing running
    call(ex, cell.start, cell)
    assert spin(ex, lambda: len(events_of(cell, 'start')) == 2, cell=cell)
    assert events_of(cell, 'start')[1]['seed'] == 1002
    assert call(ex, cell.stop, cell).success
    assert spin(ex, lambda: len(events_of(cell, 'end')) == 2, cell=cell)
    end = events_of(cell, 'end')[1]
    assert end['outcome'] == 'operator' and end['truncated'] and end['episode'] == 2
    assert end['ground_truth_success'] is None     # no ground-truth sample in this one
    manager.destroy_node()


def test_classifier_source_ends_on_a_fresh_true_decision_and_reports_the_ground_truth(
        ros_context):
    """success_source classifier: the detector's decision ends the episode (not the ground
    truth, which the end event reports); a decision before a frame of the episode is stale."""
    manager, cell, ex = setup(ros_context, success_source='classifier',
                              success_debounce_steps=2)
    assert manager.monitor.signals['success_detector'] == (
        "/diagnostics status 'success_detector'")
    assert call(ex, cell.start, cell).success
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    cell.detector.publish(Bool(data=True))   # before any new frame: stale, ignored
    spin(ex, lambda: False, timeout_s=0.1)
    assert not events_of(cell, 'end') and not manager.fresh_frame
    assert spin(ex, lambda: manager.fresh_frame, cell=cell)
    # still the previous episode's decision (the detector has not reset yet): ignored
    cell.detector.publish(Bool(data=True))
    for _ in range(3):                       # ground truth: success, but not the source
        cell.success.publish(Float32(data=1.0))
    cell.detector.publish(Bool(data=False))  # the detector's decision of this episode
    spin(ex, lambda: False, timeout_s=0.2, cell=cell)
    assert not events_of(cell, 'end') and manager.episode.ground_truth_success
    assert manager.detector_armed
    cell.detector.publish(Bool(data=True))
    assert spin(ex, lambda: events_of(cell, 'end'), cell=cell)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'success' and end['terminated'] and end['detail'] == 'classifier'
    assert end['success_source'] == 'classifier' and end['ground_truth_success'] is True
    manager.destroy_node()


def test_ground_truth_source_ignores_the_detector(ros_context):
    manager, cell, ex = setup(ros_context)
    assert cell.detector.get_subscription_count() == 0
    assert 'success_detector' not in manager.monitor.nodes
    manager.destroy_node()


def test_silent_success_detector_ends_the_episode_as_node_lost_and_refuses_starts(
        ros_context):
    manager, cell, ex = setup(ros_context, success_source='classifier',
                              success_detector_timeout_s=0.5, max_steps=100000)
    assert call(ex, cell.start, cell).success
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    cell.alive.discard('success_detector')
    assert spin(ex, lambda: events_of(cell, 'end'), timeout_s=3.0, cell=cell, acting=True)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'node_lost' and end['truncated'] and not end['success']
    assert end['detail'].startswith("no data from: success_detector (no /diagnostics status "
                                    "'success_detector' for")
    assert end['success_source'] == 'classifier'
    refused = call(ex, cell.start, cell)
    info = json.loads(refused.message)
    assert not refused.success and info['nodes'] == ['success_detector']
    assert info['error'].startswith('success_detector not available')
    cell.alive.add('success_detector')
    assert spin(ex, lambda: not manager.monitor.silent(time.monotonic()), cell=cell)
    assert call(ex, cell.start, cell).success
    manager.destroy_node()


def test_detector_that_scores_nothing_refuses_starts_and_ends_the_episode_after_its_grace(
        ros_context):
    """A success detector that is heard from but has scored no frame for its input timeout
    (status ERROR) is no working detector: the start is refused with its message, and in an
    episode its ERROR ends it as node_lost, once the grace after the start is over (a status
    sent before the detector saw the start describes the time before it)."""
    manager, cell, ex = setup(ros_context, success_source='classifier',
                              success_detector_grace_s=1.0, max_steps=100000)
    idle = 'no frame scored for 1.5 s'
    cell.detector_error = idle
    assert spin(ex, lambda: manager.monitor.start_refusal(time.monotonic()), cell=cell)
    refused = call(ex, cell.start, cell)
    info = json.loads(refused.message)
    assert not refused.success and info['nodes'] == ['success_detector']
    assert info['error'] == f'success_detector is not working: status ERROR: {idle}'
    cell.detector_error = ''
    assert spin(ex, lambda: manager.monitor.start_refusal(time.monotonic()) is None, cell=cell)
    assert call(ex, cell.start, cell).success
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    started_s = time.monotonic()
    cell.detector_error = idle     # as if sent before it saw the start: within the grace
    spin(ex, lambda: events_of(cell, 'end'), timeout_s=0.7, cell=cell, acting=True)
    assert not events_of(cell, 'end')
    assert spin(ex, lambda: events_of(cell, 'end'), timeout_s=5.0, cell=cell, acting=True)
    assert time.monotonic() - started_s >= 0.7
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'node_lost' and end['truncated'] and not end['success']
    assert end['detail'] == f'not working: success_detector (status ERROR: {idle})'
    manager.destroy_node()


def test_ground_truth_source_ignores_a_detector_that_scores_nothing(ros_context):
    manager, cell, ex = setup(ros_context, max_steps=100000)
    cell.detector_error = 'no frame scored for 1.5 s'
    spin(ex, lambda: False, timeout_s=0.3, cell=cell)
    assert call(ex, cell.start, cell).success
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    spin(ex, lambda: events_of(cell, 'end'), timeout_s=1.5, cell=cell, acting=True)
    assert not events_of(cell, 'end')
    manager.destroy_node()


@pytest.mark.parametrize('source', ['vision', ''])
def test_unknown_success_source_is_refused_at_start_up(ros_context, source):
    from rclpy.parameter import Parameter

    from awopt_ros.ros.run import StartupError
    with pytest.raises(StartupError) as info:
        EpisodeManagerNode(context=ros_context, parameter_overrides=[
            Parameter('success_source', value=source)])
    text = str(info.value)
    assert text == ("episode_manager: success_source must be one of ('ground_truth', "
                    f"'classifier'), got {source!r}") and '\n' not in text


def test_arm_that_refuses_to_enable_fails_the_start(ros_context):
    manager, cell, ex = setup(ros_context)
    cell.node.destroy_service(next(s for s in cell.node.services
                                   if s.srv_name == '/arm/enable'))
    refuse = cell.node.create_service(
        SetBool, '/arm/enable', lambda req, res: setattr(res, 'success', False) or res)
    assert refuse is not None
    call(ex, cell.start, cell)
    assert spin(ex, lambda: events_of(cell, 'start_failed'), cell=cell)
    failed = events_of(cell, 'start_failed')[0]
    assert 'enable' in failed['detail'] and failed['episode'] == 1
    assert not events_of(cell, 'start') and manager.episode is None
    assert call(ex, cell.start, cell).success       # free to try again
    manager.destroy_node()


def test_start_event_follows_the_enable_reply(ros_context):
    """Every step of an episode must reach an enabled arm: the manager announces the episode
    (and starts counting actions) only once the arm interface has answered its enable, an
    action sent while the enable is unanswered is not a step, and the episode starts at the
    enable time the arm reports (it acts on actions stamped after it)."""
    manager, cell, ex = setup(ros_context)
    enables, arm, arm_ex = move_enable(ros_context, cell, reported_ago_s=0.05)
    try:
        assert spin(ex, lambda: manager.enable_client.service_is_ready())
        assert call(ex, cell.start, cell).success
        assert spin(ex, lambda: manager.pending == 'enable', cell=cell)
        cell.send_action()       # the arm is not enabled yet: would move nothing
        assert not spin(ex, lambda: events_of(cell, 'start'), timeout_s=0.4, cell=cell)
        assert manager.episode is None and cell.resets == 1
        assert spin(arm_ex, lambda: enables == [True])     # the arm answers
        assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
        start_s = events_of(cell, 'start')[0]['stamp_s']
        assert start_s < time.time() - 0.04                 # the arm's enable time
        # On a frame stamped at the start itself (a paused simulated clock): not a step.
        at_start = convert.s_to_stamp(start_s)
        cell.action.publish(convert.action_to_msg([0.01, 0, 0, 0, 0, 0, 1.0], at_start))
        spin(ex, lambda: False, timeout_s=0.2, cell=cell)
        assert not events_of(cell, 'end')
        # On a frame between the arm's enable and the reply: the arm acted, a step.
        cell.action.publish(convert.action_to_msg([0.01, 0, 0, 0, 0, 0, 0.0],
                                                  convert.s_to_stamp(start_s + 0.01)))
        cell.send_action(terminate=1.0)
        assert spin(ex, lambda: events_of(cell, 'end'), cell=cell)
        assert events_of(cell, 'end')[0]['steps'] == 2     # only actions after the start
    finally:
        arm_ex.shutdown()
        arm.destroy_node()
    manager.destroy_node()


def test_start_is_the_arms_reported_enable_time_or_now():
    stamp = EpisodeManagerNode._enable_stamp
    reply = json.dumps({'state': 'enabled', 'stamp_s': 99.95, 'stale': []})
    assert stamp(reply, 100.0) == 99.95
    assert stamp(json.dumps({'stamp_s': 100.002}), 100.0) == 100.002   # /clock not here yet
    for other in ('enabled', '', '{}', json.dumps({'stamp_s': 'x'}),
                  json.dumps({'stamp_s': 5.0}), json.dumps({'stamp_s': -1.0})):
        assert stamp(other, 100.0) == 100.0


def test_dead_camera_ends_episode_as_node_lost(ros_context):
    manager, cell, ex = setup(ros_context, node_timeout_s=0.3, max_steps=100000)
    call(ex, cell.start, cell)
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    # Joint states and actions keep coming; the camera has gone silent.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and not events_of(cell, 'end'):
        cell.joints.publish(JointState())
        cell.send_action()
        ex.spin_once(timeout_sec=0.02)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'node_lost' and 'camera' in end['detail'] and end['truncated']
    manager.destroy_node()


def test_start_waits_until_the_logger_receives_all_its_inputs(ros_context):
    manager, cell, ex = setup(ros_context, logger_frames=0)
    spin(ex, lambda: False, timeout_s=0.3, cell=cell)    # diagnostics: no policy images
    refused = call(ex, cell.start, cell)
    assert not refused.success
    error = json.loads(refused.message)['error']
    assert 'logger not available' in error     # 'not available': EpisodeClient retries
    assert cell.resets == 0 and not events_of(cell, 'start')
    cell.logger_frames = 3
    assert spin(ex, lambda: manager.logger_ready, cell=cell)
    reply = call(ex, cell.start, cell)
    assert reply.success and json.loads(reply.message) == {'episode': 1}
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    manager.destroy_node()


def test_start_without_a_logger_when_configured(ros_context):
    manager, cell, ex = setup(ros_context, logger_frames=0, wait_for_logger=False,
                              logger_timeout_s=0.5)
    cell.alive.discard('logger')          # no logger in this stack
    spin(ex, lambda: False, timeout_s=0.8, cell=cell)
    reply = call(ex, cell.start, cell)
    assert reply.success and not manager.logger_ready
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    spin(ex, lambda: False, timeout_s=0.8, cell=cell)
    assert not events_of(cell, 'end')     # the logger is not watched
    manager.destroy_node()


def test_silent_logger_ends_the_episode_as_node_lost_and_refuses_the_next(ros_context):
    """A logger that dies mid-episode (its 1 Hz diagnostics stop) must not let the episode
    end as if it had been recorded, nor later episodes run unrecorded."""
    manager, cell, ex = setup(ros_context, logger_timeout_s=0.5, max_steps=100000)
    assert call(ex, cell.start, cell).success
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    cell.alive.discard('logger')    # everything else, the policy's steps included, goes on
    assert spin(ex, lambda: events_of(cell, 'end'), timeout_s=3.0, cell=cell, acting=True)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'node_lost' and end['truncated'] and not end['success']
    assert end['detail'].startswith('no data from: logger')
    refused = call(ex, cell.start, cell)
    assert not refused.success
    info = json.loads(refused.message)
    assert info['nodes'] == ['logger'] and 'logger not available' in info['error']
    assert cell.resets == 1 and len(events_of(cell, 'start')) == 1
    cell.alive.add('logger')              # restarted: episodes may start again
    assert spin(ex, lambda: not manager.monitor.silent(time.monotonic()), cell=cell)
    assert call(ex, cell.start, cell).success
    manager.destroy_node()


def test_logger_that_does_not_accept_episodes_refuses_the_start_with_its_reason(ros_context):
    manager, cell, ex = setup(ros_context)
    cell.logger_refusal = 'only 3.2 MB free on /x/runs (min_free_disk_mb 50)'
    assert spin(ex, lambda: manager.monitor.problems(time.monotonic()), cell=cell)
    refused = call(ex, cell.start, cell)
    assert not refused.success
    info = json.loads(refused.message)
    assert info['error'] == ('logger does not accept episodes: only 3.2 MB free on /x/runs '
                             '(min_free_disk_mb 50)')
    assert info['nodes'] == ['logger'] and 'not available' not in info['error']  # no retry
    assert cell.resets == 0 and not events_of(cell, 'start')
    cell.logger_refusal = ''              # space freed
    assert spin(ex, lambda: not manager.monitor.problems(time.monotonic()), cell=cell)
    assert call(ex, cell.start, cell).success
    manager.destroy_node()


def test_logger_write_error_mid_episode_fails_the_episode(ros_context):
    manager, cell, ex = setup(ros_context, max_steps=100000)
    assert call(ex, cell.start, cell).success
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    cell.logger_refusal = 'write error: [Errno 28] No space left on device'
    cell.logger_write_errors = 1
    assert spin(ex, lambda: events_of(cell, 'end'), cell=cell, acting=True)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'failed' and end['truncated'] and not end['success']
    assert end['detail'] == 'logger: write error: [Errno 28] No space left on device'
    refused = json.loads(call(ex, cell.start, cell).message)
    assert refused['kind'] == 'fault' and 'write error' in refused['error']
    manager.destroy_node()


def test_low_disk_mid_episode_lets_it_finish_and_refuses_the_next(ros_context):
    """The logger still records the running episode: it ends as usual; the next is refused."""
    manager, cell, ex = setup(ros_context)
    assert call(ex, cell.start, cell).success
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    cell.logger_refusal = 'only 3.2 MB free on /x/runs (min_free_disk_mb 50)'
    assert spin(ex, lambda: manager.monitor.problems(time.monotonic()), cell=cell,
                acting=True)
    spin(ex, lambda: False, timeout_s=0.3, cell=cell, acting=True)
    assert not events_of(cell, 'end')
    cell.send_action(terminate=1.0)
    assert spin(ex, lambda: events_of(cell, 'end'), cell=cell)
    assert events_of(cell, 'end')[0]['outcome'] == 'terminate'
    refused = call(ex, cell.start, cell)
    assert not refused.success and 'only 3.2 MB free' in json.loads(refused.message)['error']
    manager.destroy_node()


@pytest.mark.parametrize('dead', ['policy', 'camera_pipeline', 'camera', 'joint_states'])
def test_dead_required_node_refuses_the_start(ros_context, dead):
    """A dead policy or camera pipeline used to let a 0-step episode start."""
    manager, cell, ex = setup(ros_context, node_timeout_s=0.3, camera_pipeline_timeout_s=0.5)
    cell.alive.discard(dead)
    spin(ex, lambda: False, timeout_s=0.8, cell=cell)
    refused = call(ex, cell.start, cell)
    assert not refused.success
    info = json.loads(refused.message)
    assert info['nodes'] == [dead] and info['kind'] == 'silent'
    assert info['error'].startswith(f'{dead} not available')   # EpisodeClient asks again
    assert cell.resets == 0 and not events_of(cell, 'start')
    cell.alive.add(dead)
    assert spin(ex, lambda: not manager.monitor.silent(time.monotonic()), cell=cell)
    assert call(ex, cell.start, cell).success
    manager.destroy_node()


def move_service(ctx, cell, srv_type, name, callback):
    """Serve ``name`` from a new node on its own executor (spun only when a test says so,
    i.e. a server that answers late) instead of the fake cell; return (node, executor)."""
    node = rclpy.create_node('paused_' + name.strip('/').replace('/', '_'), context=ctx)
    cell.node.destroy_service(next(s for s in cell.node.services if s.srv_name == name))
    node.create_service(srv_type, name, callback)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    return node, executor


def move_enable(ctx, cell, reported_ago_s=None):
    """Serve ``/arm/enable`` (always accepting) from a node that answers only when spun,
    reporting (like arm_interface) an enable time ``reported_ago_s`` before its reply when
    given; return (requests' data list, node, executor)."""
    enables = []

    def on_enable(request, response):
        enables.append(request.data)
        response.success = True
        if reported_ago_s is not None:
            response.message = json.dumps({'state': 'enabled',
                                           'stamp_s': time.time() - reported_ago_s})
        return response
    return (enables, *move_service(ctx, cell, SetBool, '/arm/enable', on_enable))


def test_reset_waits_for_the_previous_episodes_disable(ros_context):
    """Commands the arm interface sends until it is disabled must reach the cell before its
    reset: the next start resets only once the disable call has been answered."""
    manager, cell, ex = setup(ros_context)
    enables, arm, arm_ex = move_enable(ros_context, cell)
    try:
        assert call(ex, cell.start, cell).success
        assert spin(ex, lambda: manager.pending == 'enable', cell=cell)
        assert spin(arm_ex, lambda: enables == [True])
        assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
        cell.send_action(terminate=1.0)
        assert spin(ex, lambda: events_of(cell, 'end'), cell=cell)
        assert call(ex, cell.start, cell).success          # the disable is still unanswered
        assert not spin(ex, lambda: cell.resets > 1, timeout_s=0.5, cell=cell)
        assert manager.pending == 'disable'
        assert spin(arm_ex, lambda: enables[:2] == [True, False])   # the arm answers
        assert spin(ex, lambda: cell.resets == 2 and manager.pending == 'enable', cell=cell)
        assert spin(arm_ex, lambda: enables == [True, False, True])
        assert spin(ex, lambda: len(events_of(cell, 'start')) == 2, cell=cell)
    finally:
        arm_ex.shutdown()
        arm.destroy_node()


def test_unanswered_reset_is_sent_again_and_only_the_latest_reply_starts(ros_context):
    """A reset request lost while DDS matches the service would stall the start until
    reset_timeout_s: the manager resends it after reset_retry_s and starts the episode on the
    reply to its latest request only (the reset that reply reports is the cell's state)."""
    manager, cell, ex = setup(ros_context, reset_retry_s=0.3)
    seeds = []

    def on_reset(request, response):
        seeds.append(2000 + len(seeds) + 1)
        response.success, response.message = True, json.dumps({'seed': seeds[-1]})
        return response
    slow, slow_ex = move_service(ros_context, cell, Trigger, '/sim/reset', on_reset)
    try:
        assert spin(ex, manager.reset_client.service_is_ready)
        assert call(ex, cell.start, cell).success
        assert spin(ex, lambda: manager.reset_requests == 2, cell=cell)   # resent
        assert not events_of(cell, 'start') and manager.pending == 'reset'
        assert spin(slow_ex, lambda: len(seeds) == 2)      # both requests reach the cell
        assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
        spin(ex, lambda: False, timeout_s=0.3, cell=cell)
        starts = events_of(cell, 'start')
        assert len(starts) == 1 and starts[0]['seed'] == 2002   # the latest reset's reply
        assert manager.reset_requests == 2 and cell.enables == [True]
    finally:
        slow_ex.shutdown()
        slow.destroy_node()


def test_camera_pipeline_is_heard_from_by_its_status_not_by_reading_its_images(ros_context):
    """No reader of /policy/image in the manager: one more would be served on every frame of
    the frame -> command path. Its 1 Hz /diagnostics status tells that it runs."""
    manager, cell, ex = setup(ros_context, camera_pipeline_timeout_s=0.5)
    assert cell.policy_image.get_subscription_count() == 0
    assert manager.monitor.signals['camera_pipeline'] == "/diagnostics status 'camera_pipeline'"
    assert call(ex, cell.start, cell).success     # no /policy/image was ever published
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    cell.alive.discard('camera_pipeline')
    assert spin(ex, lambda: events_of(cell, 'end'), timeout_s=3.0, cell=cell, acting=True)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'node_lost'
    assert end['detail'].startswith("no data from: camera_pipeline (no /diagnostics status "
                                    "'camera_pipeline' for")
    manager.destroy_node()


def test_under_lbr_stack_names_the_camera_and_joints_are_heard_and_an_episode_runs(
        ros_context):
    manager, cell, ex = setup(ros_context, success_debounce_steps=2, **LBR)
    assert manager.monitor.signals['camera'] == '/camera/camera/color/camera_info'
    assert manager.monitor.signals['joint_states'] == '/lbr/joint_states'
    assert call(ex, cell.start, cell).success
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    assert spin(ex, lambda: manager.fresh_frame, cell=cell)   # a camera_info of the episode
    cell.send_action()
    for _ in range(2):
        cell.success.publish(Float32(data=1.0))
    assert spin(ex, lambda: events_of(cell, 'end'), cell=cell)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'success' and end['steps'] == 1
    manager.destroy_node()


class _Log:
    """Stands in for the node's logger: keeps (text, keyword arguments) of each warning."""

    def __init__(self):
        self.warnings = []

    def warning(self, text, **kw):
        self.warnings.append((text, kw))

    def info(self, *a, **kw):
        pass

    error = info


def test_joint_states_without_the_configured_joints_are_not_heard_and_say_which_are_missing(
        ros_context, monkeypatch):
    """A manager configured for lbr-stack joints beside a driver that publishes other names
    on the topic: joint_states stays silent (episodes refused, naming it), and a throttled
    warning names the joints missing; a gripper driver's own message is no such warning."""
    from rclpy.parameter import Parameter
    manager = EpisodeManagerNode(context=ros_context, parameter_overrides=[
        Parameter(k, value=v) for k, v in dict(LBR, node_timeout_s=0.3).items()])
    log = _Log()
    monkeypatch.setattr(manager, 'get_logger', lambda: log)
    cell = FakeCell(ros_context, joint_states_topic='/lbr/joint_states',
                    camera_ns='/camera/camera')   # the simulator's joint names
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(manager)
    ex.add_node(cell.node)
    try:
        assert spin(ex, lambda: cell.start.service_is_ready() and len(log.warnings) >= 2,
                    timeout_s=15.0, cell=cell)
        text, kw = log.warnings[0]
        assert text.startswith("/lbr/joint_states: joint state without the arm joints ['lbr_A1'")
        assert "'lbr_A7'] (parameter joint_names)" in text and "'iiwa_joint_1'" in text
        assert kw == {'throttle_duration_sec': 5.0}
        assert [p.node for p in manager.monitor.silent(time.monotonic())] == ['joint_states']
        refused = call(ex, cell.start, cell)
        info = json.loads(refused.message)
        assert not refused.success and info['nodes'] == ['joint_states']
        assert 'nothing received on /lbr/joint_states' in info['error']
        # a separate gripper driver's message (the gripper joint alone): no warning
        log.warnings.clear()
        cell.alive.discard('joint_states')
        cell.joints.publish(JointState(name=['lbr_gripper'], position=[0.01]))
        spin(ex, lambda: False, timeout_s=0.3, cell=cell)
        assert log.warnings == []
        # the driver's names configured: heard from, episodes start
        cell.joint_names = LBR['joint_names'] + ['lbr_gripper']
        cell.alive.add('joint_states')
        assert spin(ex, lambda: not manager.monitor.silent(time.monotonic()), cell=cell)
        assert spin(ex, lambda: manager.logger_ready, cell=cell)
        assert call(ex, cell.start, cell).success
    finally:
        ex.shutdown()
        manager.destroy_node()
        cell.node.destroy_node()
