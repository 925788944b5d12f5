"""logger: every topic of an episode -> rosbag2 MCAP, and each episode -> the Minari dataset.

Listens to ``/episode/event`` (latched JSON, docs/INTERFACES.md). On ``start`` it opens
``<output_dir>/bags/episode_NNNN/`` (:class:`awopt_ros.core.bag.BagWriter`) and starts an
episode of :class:`awopt_ros.core.dataset.EpisodeRecorder`; on ``end`` (after ``end_grace_s``,
so that messages still in flight land in the episode) it closes the bag, appends the episode
to the dataset and publishes ``/logger/episode_saved`` (latched JSON).

Recording uses raw subscriptions (``raw=True``: serialized CDR bytes go to the bag without a
deserialise round trip). Dataset steps are built per ``/policy/action``: the image is the
``/policy/image`` whose stamp equals the action's ``header.stamp``, the proprioception is the
one the policy acted on (``/policy/proprio`` with the action's stamp, while the model info
announces ``proprio_topic``: the latest joint state when the policy ran, about 40 ms newer than
the image), else computed from the latest joint state (``joint_states_topic``) with a stamp
<= that stamp (``core.kinematics.proprio_from_joints``), plus the latest
``/success/probability`` and the acting policy: the ``source`` of the ``/policy/decision`` with
the action's stamp, else the ``kind`` of the latched ``/policy/model_info``, and the decision's
``noise_free_action`` (the actor's action before exploration noise, NaN when absent). While the
latest model info announces a ``decision_topic``, an action waits (like one waiting for its
image) for its decision; while it announces ``grasp_goal_topic`` (the scripted
demonstrator), an action waits likewise for the ``/scripted_policy/grasp_goal`` with its stamp,
stored as the step's ``grasp_goal``. The node only converts and routes; bag and dataset
writing live in ``awopt_ros.core``.

The success detector (issue 24), when it runs: its ``/success_detector/classification``
(vision_msgs/Classification, stamped with the scored frame's stamp, the score of class
'success') and ``/success_detector/success`` (std_msgs/Bool, its debounced decision) go into
the bags; each grasp dataset step gets ``success_classifier_probability``, the latest score
stamped at or before its image's stamp, after the episode's start and at most
``core.dataset.CLASSIFIER_SCORE_MAX_AGE_S`` (0.25 s) before the image (looked up when the
episode ends, so a score that arrives after the step's action still counts; NaN where none:
no detector, or its frame not scored and no recent one of the episode), next to
``success_probability`` (the ground truth). Each episode's metadata gets ``reward_source``
(the ``end`` event's ``success_source``; 'ground_truth' when the event has none) and
``ground_truth_success`` (the event's, when known); the rewards come from the outcome as
before. Without vision_msgs installed the classification topic is left out (a warning).

Operator interventions (``core.intervention``): the bags record the operator's
``/operator/twist`` and ``/operator/gripper`` (best-effort subscriptions, like the arm
interface's: reliable and best-effort sources alike) and the arm interface's
``/arm/intervention`` (the operator's action executed in place of a policy action, stamped
with that action's stamp). Like the classifier scores, the interventions are looked up when
the episode ends: a grasp dataset step whose stamp has one records the operator's action,
info ``intervention`` 1, policy id 'operator' and the policy's own action in info
``policy_action`` (``EpisodeRecorder.finish``'s ``interventions``,
``core.intervention.apply_interventions``). The recorded action keeps the policy action's
terminate bit: the episode manager ends the episode on the terminate of ``/policy/action``
also while the operator drives (an episode-level decision, not executed by the arm), so the
terminal step of an episode the policy terminated says terminate 1. The step's
``noise_free_action`` stays the actor's (what it would have done without noise, not what was
executed, like ``policy_action``); the learner's action relabelling leaves intervention steps
as recorded (``learning.targets.intervention_steps``).

With ``task: insertion`` the joint states carry no gripper joint, the bags also
record the wrench, the goal and the residual controller's faults (:data:`INSERTION_TOPICS`),
and the dataset is a state dataset (``core.dataset.StateEpisodeRecorder``): one step per
``/policy/action`` of the residual controller, built from the ``/policy/decision`` with its
stamp (the 15-D state the controller saw, its residual in [-1, 1] as the action, the command
``u_m`` in the ``command_m`` info); no image is waited for. Only the controller's ``control``
steps are learning data: the recorded steps of an episode end at its first decision whose
``phase`` is not 'control' (the force limit's back-off, terminate or hold, whose command is not
the one the residual chose); that step's state (when it has one) becomes the episode's final
state, and it and every later step of the episode are left out (counted in
``non_control_steps``). The dataset format does not change.

Driver names (``core.robot_names``, parameters of ``ros.robot_params``): the camera topics are
``<camera_ns>/color/image_raw`` and ``<camera_ns>/color/camera_info``, the joint states come on
``joint_states_topic`` and name the joints ``joint_names`` + ``gripper_joint``. The bags record
these topics under those real names (the simulator's: ``/camera/color/...``, ``/joint_states``;
lbr-stack with realsense-ros: ``/camera/camera/color/...``, ``/lbr/joint_states``), and the
dataset's proprio is computed from the configured joints in the model's order. A joint state
that lacks a configured joint is not used; a throttled warning names the joints missing.

Disk: the free space of ``output_dir`` is checked before each episode and every second
(``min_free_disk_mb``); the 1 Hz ``/diagnostics`` status 'logger' carries ``free_disk_mb``,
``min_free_disk_mb``, ``accepting_episodes`` ('true'/'false') and ``write_errors``, at level
ERROR with the reason as its message while episodes are not accepted (the episode manager
refuses to start one then). An episode that starts anyway is not recorded. A write error
(e.g. ENOSPC from the bag or dataset writer) drops only the episode being written (its bag
is deleted, the dataset keeps every earlier episode), is logged and counted, and stops
further recording until the logger is restarted; except a dataset append refused by its
free-space check before anything was written (``core.dataset.NoRoomError``): that episode is
dropped, and the next one is accepted while ``min_free_disk_mb`` is free.

Crash recovery: at start the bags that a killed logger left unfinished (no footer, no
``metadata.yaml``) are rebuilt from what can be read and marked as cut
(``core.bag.recover_bags``, on the dataset worker thread); a bag being written is locked
(``flock`` on its ``.mcap``), so neither this nor ``awopt bag-repair`` touches a live bag.
"""
import importlib
import json
import math
import os
import shutil
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
import rclpy.logging
from rclpy.node import Node
from geometry_msgs.msg import PoseStamped
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, String

from awopt_ros.core import robot, robot_names
from awopt_ros.core.bag import COMPRESSIONS, BagWriter, default_typestore, recover_bags
from awopt_ros.core.dataset import (EpisodeRecorder, NoRoomError, StateEpisodeRecorder,
                                    dataset_id_for, datasets_dir,
                                    is_lock_error, policy_id)
from awopt_ros.core.spec import POLICY_IMAGE_SIZE
from awopt_ros.core.sync import StampedHistory
from awopt_ros.ros import convert, diagnostics, qos
from awopt_ros.ros.params import declare
from awopt_ros.ros.robot_params import declare_camera_ns, declare_joint_names
from awopt_ros.ros.run import StartupError, spin_node

#: The driver topics under the simulator's default names (``core.robot_names``); a node
#: records and reads them under its configured names (:func:`stack_topics`).
CAMERA, CAMERA_INFO = robot_names.camera_topics(robot_names.DEFAULT_CAMERA_NS)
JOINTS = robot_names.DEFAULT_JOINT_STATES_TOPIC
EVENT = '/episode/event'
MODEL_INFO = '/policy/model_info'
DECISION = '/policy/decision'
POLICY_IMAGE = '/policy/image'
ACTION = '/policy/action'
SUCCESS = '/success/probability'
CLASSIFICATION = '/success_detector/classification'
DETECTOR_SUCCESS = '/success_detector/success'
GRASP_GOAL = '/scripted_policy/grasp_goal'
PROPRIO = convert.PROPRIO_TOPIC
SAVED = '/logger/episode_saved'
ARM_TRAJECTORY = '/arm_controller/joint_trajectory'
FORWARD_COMMANDS = '/forward_position_controller/commands'
GRIPPER_COMMANDS = '/gripper_controller/commands'
INTERVENTION = '/arm/intervention'
OPERATOR_TWIST = '/operator/twist'
OPERATOR_GRIPPER = '/operator/gripper'

#: The stack's topics (docs/INTERFACES.md) under the simulator's driver names: name ->
#: (message type, QoS preset). A node uses :func:`stack_topics` (its configured names).
STACK_TOPICS = {
    CAMERA: ('sensor_msgs/msg/Image', 'sensor'),
    CAMERA_INFO: ('sensor_msgs/msg/CameraInfo', 'sensor'),
    JOINTS: ('sensor_msgs/msg/JointState', 'sensor'),
    POLICY_IMAGE: ('sensor_msgs/msg/Image', 'sensor'),
    ACTION: ('sensor_msgs/msg/JointState', 'reliable'),
    MODEL_INFO: ('std_msgs/msg/String', 'latched'),
    DECISION: ('std_msgs/msg/String', 'reliable'),
    ARM_TRAJECTORY: ('trajectory_msgs/msg/JointTrajectory', 'reliable'),
    FORWARD_COMMANDS: ('std_msgs/msg/Float64MultiArray', 'reliable'),
    GRIPPER_COMMANDS: ('std_msgs/msg/Float64MultiArray', 'reliable'),
    '/arm/frame_to_command_ms': ('std_msgs/msg/Float64', 'reliable'),
    SUCCESS: ('std_msgs/msg/Float32', 'reliable'),
    CLASSIFICATION: ('vision_msgs/msg/Classification', 'reliable'),
    DETECTOR_SUCCESS: ('std_msgs/msg/Bool', 'reliable'),
    '/sim/objects': ('visualization_msgs/msg/MarkerArray', 'reliable'),
    GRASP_GOAL: ('geometry_msgs/msg/PoseStamped', 'reliable'),
    PROPRIO: ('sensor_msgs/msg/JointState', 'sensor'),
    EVENT: ('std_msgs/msg/String', 'latched'),
    '/diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', 'reliable'),
    INTERVENTION: ('sensor_msgs/msg/JointState', 'reliable'),
    # best effort, as the arm interface subscribes: records reliable and best-effort
    # operator sources (a spacemouse or joystick driver) alike
    OPERATOR_TWIST: ('geometry_msgs/msg/TwistStamped', 'sensor'),
    OPERATOR_GRIPPER: ('std_msgs/msg/Bool', 'sensor'),
}
#: Topics of the insertion stack: the wrist wrench, the observed goal (latched: the
#: episode's goal goes into its bag at the start) and the residual controller's force faults.
#: Recorded by default with ``task: insertion``; any bringup may name them in ``topics``.
WRENCH = '/force_torque_sensor_broadcaster/wrench'
INSERTION_GOAL = '/insertion/goal'
RESIDUAL_FAULT = '/residual/fault'
INSERTION_TOPICS = {
    WRENCH: ('geometry_msgs/msg/WrenchStamped', 'sensor'),
    INSERTION_GOAL: ('geometry_msgs/msg/PoseStamped', 'latched'),
    RESIDUAL_FAULT: ('std_msgs/msg/String', 'reliable'),
}
TASKS = ('grasp', 'insertion')
#: Topics the dataset needs (simulator names); subscribed even when not recorded to the bag.
INPUT_TOPICS = (EVENT, MODEL_INFO, DECISION, POLICY_IMAGE, ACTION, JOINTS, SUCCESS, GRASP_GOAL,
                PROPRIO, CLASSIFICATION, INTERVENTION)
#: Topics whose messages are counted in the diagnostics (simulator names; counter names as in
#: ``ros.diagnostics.LOGGER_READY_KEYS``).
_RECEIVED = {CAMERA: 'camera_frames_received', POLICY_IMAGE: 'policy_images_received',
             ACTION: 'actions_received', JOINTS: 'joint_states_received'}
_QOS = {'sensor': qos.RECORD_SENSOR, 'reliable': qos.RECORD_RELIABLE, 'latched': qos.LATCHED}
_MAX_IMAGES = 64          # recent policy images kept for stamp matching
PRESTART_S = 1.0          # messages kept between episodes (s), see LoggerNode._prestart
_MAX_JOINT_STATES = 400   # 4 s at 100 Hz
_MAX_PENDING_ACTIONS = 8  # actions waiting for their image before being dropped
# Classifier scores kept: the detector scores every policy image, so they come at the camera
# rate (30 Hz; in lockstep 10 Hz), and they are looked up when the episode ends, so the buffer
# must hold a whole episode: 18000 = 10 min at 30 Hz (default timeout_s 30 s: 900 scores).
# A longer episode's first steps get NaN.
_MAX_SCORES = 18000
#: Interventions kept (one per step at most, looked up at the episode's end): 10 min at 10 Hz.
_MAX_INTERVENTIONS = 6000


def _message_class(msgtype):
    """Return the rclpy message class of 'pkg/msg/Name'. Raises ValueError if unknown."""
    parts = msgtype.split('/')
    if len(parts) != 3 or parts[1] != 'msg':
        raise ValueError(f"message type must look like 'pkg/msg/Name', got {msgtype!r}")
    try:
        return getattr(importlib.import_module(f'{parts[0]}.msg'), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f'cannot import message type {msgtype!r}: {exc}') from exc


def stack_topics(names=None, task='grasp'):
    """Return :data:`STACK_TOPICS` (with ``task`` 'insertion' also :data:`INSERTION_TOPICS`)
    with the driver topics renamed by ``names`` ({simulator name, e.g. :data:`CAMERA`:
    configured name}; None: the simulator's names), in the same order."""
    names = names or {}
    topics = dict(STACK_TOPICS, **(INSERTION_TOPICS if task == 'insertion' else {}))
    return {names.get(topic, topic): value for topic, value in topics.items()}


def parse_topics(entries, known=None):
    """Return topic -> (msgtype, QoS preset) for the ``topics`` parameter.

    An entry is a stack topic name (its type from ``known``, default :data:`STACK_TOPICS`;
    a node passes :func:`stack_topics` of its driver names) or ``'/name:pkg/msg/Type'`` for
    any other topic (recorded with reliable QoS).

    Raises:
        ValueError: unknown topic without a type, or a malformed entry.
    """
    known = STACK_TOPICS if known is None else known
    out = {}
    for entry in entries:
        entry = str(entry).strip()
        name, _, msgtype = entry.partition(':')
        if not name.startswith('/'):
            raise ValueError(f'topic names must start with "/", got {entry!r}')
        if msgtype:
            _message_class(msgtype)
            out[name] = (msgtype, known.get(name, (None, 'reliable'))[1])
        elif name in known:
            out[name] = known[name]
        else:
            raise ValueError(f'unknown topic {entry!r} in "topics": give its type as '
                             f"'{entry}:pkg/msg/Type' (known: {sorted(known)})")
    return out


class LoggerNode(Node):
    """Record each episode to a rosbag2 MCAP bag and append it to the Minari dataset."""

    def __init__(self, **kwargs):
        super().__init__('logger', **kwargs)
        try:
            self.joint_names, self.joints_topic = declare_joint_names(self)
            self.camera_topic, info_topic = declare_camera_ns(self)
        except ValueError as exc:
            raise StartupError(f'logger: {exc}') from exc
        # the controllers' command topics under arm_interface's names (its goals, when it
        # uses the controllers' actions, are not recorded; the actions and joint states are)
        about = ('Namespace of the {} controller whose command topic is recorded (as '
                 'arm_interface {})')
        arm = declare(self, 'arm_controller', '/arm_controller',
                      about.format('arm', 'arm_controller'), read_only=True)
        forward = declare(self, 'forward_controller', '/forward_position_controller',
                          about.format('forward position', 'forward_controller'),
                          read_only=True)
        gripper = declare(self, 'gripper_controller', '/gripper_controller',
                          about.format('gripper', 'gripper_controller'), read_only=True)
        try:
            commands = {ARM_TRAJECTORY: robot_names.check_topic_ns(arm, 'arm_controller')
                        + '/joint_trajectory',
                        FORWARD_COMMANDS: robot_names.check_topic_ns(
                            forward, 'forward_controller') + '/commands',
                        GRIPPER_COMMANDS: robot_names.check_topic_ns(
                            gripper, 'gripper_controller') + '/commands'}
        except ValueError as exc:
            raise StartupError(f'logger: {exc}') from exc
        #: {simulator name: configured name} of the driver topics
        self.driver_topics = {CAMERA: self.camera_topic, CAMERA_INFO: info_topic,
                              JOINTS: self.joints_topic, **commands}
        self.task = declare(self, 'task', 'grasp',
                            'grasp, or insertion (joint states without a gripper '
                            'joint; the wrench, goal and fault topics recorded by default)',
                            read_only=True)
        if self.task not in TASKS:
            raise StartupError(f'logger: task must be one of {TASKS}, got {self.task!r}')
        known = stack_topics(self.driver_topics, self.task)
        # a topic named in 'topics' is known with its type whatever the task
        known_any = dict(stack_topics(self.driver_topics, 'insertion'), **known)
        self.output_dir = Path(declare(self, 'output_dir', 'runs/latest',
                                       'Run directory: bags/ and datasets/ go below it.',
                                       read_only=True))
        name = declare(self, 'dataset_name', 'kuka-grasp',
                       "Dataset name; the Minari id is 'awopt/<name>-v0' (or give a full id).",
                       read_only=True)
        topics = declare(self, 'topics', list(known),
                         'Topics recorded to the bags (default: every stack topic): stack '
                         'names (the camera and joint states under their configured names) '
                         "or '/name:pkg/msg/Type'.", read_only=True)
        self.image_size = declare(self, 'image_size', POLICY_IMAGE_SIZE, 'Policy image side (px).',
                                  low=8, high=1024, read_only=True)
        self.urdf_path = declare(self, 'urdf_path', robot.URDF_PATH,
                                 'URDF for the proprioception forward kinematics.',
                                 read_only=True)
        self.end_grace_s = declare(self, 'end_grace_s', 0.3,
                                   'Wait after an end event for messages in flight (s).',
                                   low=0.0, high=5.0)
        max_queue_mb = declare(self, 'max_queue_mb', 512,
                               'Bag bytes allowed to wait for the disk before dropping (MB).',
                               low=1, high=65536, read_only=True)
        self._bag_compression = declare(
            self, 'bag_compression', 'zstd',
            "MCAP chunk compression of the bags: 'zstd' or 'none' (messages stay plain CDR).",
            read_only=True)
        self._bag_flush_s = declare(
            self, 'bag_flush_period_s', 1.0,
            'Longest time recorded messages wait before reaching the OS (s): a crash loses '
            'at most this much of a bag.', low=0.05, high=60.0, read_only=True)
        self.min_free_disk_mb = declare(
            self, 'min_free_disk_mb', 200,
            'Episodes are not recorded (and not started) while output_dir has less free '
            'space (MB); 0 disables the check.', low=0, high=10_000_000, read_only=True)
        if self._bag_compression not in COMPRESSIONS:
            raise StartupError(f'logger: bag_compression must be one of {COMPRESSIONS}, got '
                               f'{self._bag_compression!r}')
        try:
            self.recorded = parse_topics(topics, known_any)
        except ValueError as exc:
            raise StartupError(f'logger: {exc}') from exc
        self.dataset_id = dataset_id_for(name)
        self.dataset_root = datasets_dir(self.output_dir)
        self.recorder = (StateEpisodeRecorder(self.output_dir, self.dataset_id, 'insertion')
                         if self.task == 'insertion' else
                         EpisodeRecorder(self.output_dir, self.dataset_id, self.image_size))
        # Dataset appends run on one worker thread: the executor keeps taking camera frames
        # (a blocked executor overflows the sensor-data queues and loses frames).
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix='dataset')
        self._typestore = default_typestore()   # built once, not at every episode start
        importlib.import_module('minari')   # the first append must not pay for the import
        self._max_queue_bytes = int(max_queue_mb) * 1024 * 1024
        self._proprio_fn = None

        self._bag = None
        self._episode = None      # dict of the running episode (number, seed, bag path, ...)
        self._ending = None       # (end event dict, timer) while in the end grace period
        self._step_limit = None   # the end event's step count: later actions are not steps
        self._latched = {}        # topic -> last raw message of latched topics
        self._images = OrderedDict()  # stamp ns -> (S, S, 3) uint8, recent policy images
        self._last_image = None   # (stamp ns, image) of the newest policy image
        self._joints = StampedHistory(_MAX_JOINT_STATES)  # stamp ns -> (q7, finger m)
        self._pending = deque()   # (stamp ns, action) waiting for their policy image
        # Between episodes: (receive ns, topic, raw) of the last PRESTART_S, so messages that
        # arrive after the start event's stamp but before this node has processed the event
        # (a busy executor) still go into the episode's bag and dataset.
        self._prestart = deque()
        self._success_p = math.nan
        self._scores = deque(maxlen=_MAX_SCORES)   # (stamp s, score) of the success detector
        # (stamp s, (7,) action) of the arm interface's /arm/intervention
        self._interventions = deque(maxlen=_MAX_INTERVENTIONS)
        self._policy = policy_id('other')
        self._policy_kind = 'unknown'
        self._decisions = OrderedDict()  # stamp ns -> (policy id, noise-free action or None)
        # insertion: stamp ns -> (state (15,) or None, residual (3,), command (3,) m, phase)
        # of a decision
        self._states = OrderedDict()
        # insertion: the first non-'control' step of the episode ({state, success_probability,
        # stamp_s}): the recorded steps end there
        self._phase_end = None
        self._expect_decisions = False   # the model info announces a decision topic
        self._goals = OrderedDict()      # stamp ns -> (4,) demonstrator's grasp goal
        self._expect_goals = False       # the model info announces a grasp goal topic
        self._proprios = OrderedDict()   # stamp ns -> (6,) proprio the policy acted on
        self._expect_proprio = False     # the model info announces a proprio topic
        self.frames_logged_total = 0
        self.counts = {'camera_frames_received': 0, 'policy_images_received': 0,
                       'actions_received': 0, 'joint_states_received': 0,
                       'episodes_saved': 0, 'steps_total': 0,
                       'unmatched_actions': 0, 'non_control_steps': 0,
                       'pre_start_actions': 0, 'trimmed_steps': 0,
                       'bad_messages': 0, 'bag_drops': 0, 'save_errors': 0,
                       'write_errors': 0, 'episodes_refused': 0, 'bags_repaired': 0}
        self._write_error = None   # text of the first write error (recording stops)
        self._refused = None       # {'episode', 'reason'} of an episode started, not recorded
        self._refusal_logged = None   # key (see _check_disk) of the refusal last logged
        self.last_saved = None
        self._start_ns = self.get_clock().now().nanoseconds

        self._saved_pub = self.create_publisher(String, SAVED, qos.LATCHED)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._handlers = {MODEL_INFO: self._on_model_info, DECISION: self._on_decision,
                          POLICY_IMAGE: self._on_policy_image,
                          ACTION: self._on_action, self.joints_topic: self._on_joint_states,
                          SUCCESS: self._on_success, GRASP_GOAL: self._on_grasp_goal,
                          PROPRIO: self._on_proprio, CLASSIFICATION: self._on_classification,
                          INTERVENTION: self._on_intervention}
        rename = self.driver_topics
        # joint states count once their configured joints are found (_on_joint_states)
        self._received = {rename.get(t, t): c for t, c in _RECEIVED.items() if t != JOINTS}
        inputs = [rename.get(t, t) for t in INPUT_TOPICS]
        classes = {}
        for topic in list(self.recorded) + [t for t in inputs if t not in self.recorded]:
            msgtype, preset = self.recorded.get(topic, known.get(topic))
            try:
                cls = classes[msgtype] if msgtype in classes else _message_class(msgtype)
            except ValueError as exc:
                if topic != CLASSIFICATION:
                    raise
                # vision_msgs not installed (make setup builds it): no classifier scores
                self.get_logger().warning(f'{topic} not recorded: {exc}')
                self.recorded.pop(topic, None)
                continue
            classes[msgtype] = cls
            self.create_subscription(cls, topic, self._callback(topic), _QOS[preset], raw=True)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f'logging {len(self.recorded)} topics to {self.output_dir}/bags, '
                               f'dataset {self.dataset_id} in {self.dataset_root}; camera '
                               f'{self.camera_topic}, joint states {self.joints_topic} '
                               f'{list(self.joint_names.all)}')
        self._recover_bags()

    # ---- disk and crash recovery ------------------------------------------------------------
    def _recover_bags(self):
        """Rebuild the bags a killed logger left unfinished (``core.bag.recover_bags``, on the
        dataset worker thread, with a type store of its own: the executor thread uses
        ``self._typestore`` to open bags meanwhile); return the Future of its results."""
        return self._saver.submit(self._recover)

    def _recover(self):
        try:
            results = recover_bags(self.output_dir / 'bags',
                                   reason='the logger stopped mid-episode')
        except OSError as exc:
            self.get_logger().error(f'cannot look for unfinished bags: {exc}')
            return []
        for result in results:
            path = result['path']
            if 'failed' in result:
                self.get_logger().error(f'bag {path} was left unfinished (the logger stopped '
                                        f'mid-episode); repair failed: {result["failed"]}')
            elif 'skipped' in result:
                self.get_logger().warning(f'bag {path} is unfinished but {result["skipped"]}')
            else:
                self.counts['bags_repaired'] += 1
                self.get_logger().warning(
                    f'bag {path} was left unfinished (the logger stopped mid-episode), '
                    f'rebuilt: {result["messages"]} messages kept, {result["unread_bytes"]} '
                    'bytes unreadable; marked cut (metadata.yaml custom_data awopt_cut: true); '
                    'the episode is not in the dataset')
        return results

    def _check_disk(self):
        """Return ``(free MB, accepting, reason, key)`` for ``output_dir`` (its nearest existing
        parent while it does not exist yet); never raises (an unreadable disk, e.g. EACCES,
        EIO or ESTALE, is 'not accepting' with the reason). ``key`` names the kind of refusal
        without the changing numbers ('' when accepting), so it is logged once, not every
        second."""
        try:
            probe = self.output_dir.absolute()
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            free_mb = shutil.disk_usage(probe).free / 2**20
        except OSError as exc:
            return (math.nan, False, f'cannot read the free space of {self.output_dir}: {exc}',
                    'unreadable')
        if self._write_error is not None:
            return free_mb, False, self._write_error, 'write error'
        if self.min_free_disk_mb > 0 and free_mb < self.min_free_disk_mb:
            return free_mb, False, (f'only {free_mb:.1f} MB free on {self.output_dir} '
                                    f'(min_free_disk_mb {self.min_free_disk_mb})'), 'low disk'
        return free_mb, True, '', ''

    def _on_write_error(self, exc, what):
        """Count a write error, log it, and stop recording further episodes (until restart),
        except for a :class:`NoRoomError`: the dataset refused the episode before writing
        anything, so the next episode is accepted again once ``min_free_disk_mb`` is free."""
        self.counts['write_errors'] += 1
        if isinstance(exc, OSError) and exc.errno:
            text = f'{os.strerror(exc.errno)} writing {exc.filename or what}'
        else:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else None
            text = (f'{os.strerror(cause.errno)} writing {cause.filename or what}'
                    if cause is not None and cause.errno else f'{exc} ({what})')
        if self._write_error is None and not isinstance(exc, NoRoomError):
            self._write_error = (f'write error: {text}; not recording episodes (free space, '
                                 'then restart the logger)')
        self.get_logger().error(f'write error: {text}')
        return text

    # ---- message routing ----------------------------------------------------------------
    def _callback(self, topic):
        def on_raw(data):
            self._on_raw(topic, data)
        return on_raw

    def _now_ns(self):
        return self.get_clock().now().nanoseconds

    def _record(self, topic, data, now_ns=None):
        if self._bag is None or topic not in self.recorded:
            return
        if not self._bag.write(topic, data, self._now_ns() if now_ns is None else now_ns):
            self.counts['bag_drops'] += 1

    def _on_raw(self, topic, data):
        if topic == EVENT:
            self._on_event(data)
            return
        counter = self._received.get(topic)
        if counter is not None:
            # In the diagnostics: all > 0 tells clients that the subscriptions the dataset
            # needs are matched and flowing (ros.diagnostics.logger_ready; the episode
            # manager and EpisodeClient.wait_ready wait for it before the first episode).
            self.counts[counter] += 1
        if self.recorded.get(topic, (None, ''))[1] == 'latched':
            self._latched[topic] = data
            if self._ending is not None:
                # In the end grace period a latched message is the next episode's (the
                # insertion goal of the next reset): its bag gets it at its start, from
                # _latched; the bag being closed must not end with it.
                return
        elif self._episode is None or self._ending is not None:
            # Between episodes, and in the previous episode's end grace period (a start event
            # may arrive then: what follows its stamp belongs to the new episode too).
            now = self._now_ns()
            self._prestart.append((now, topic, data))
            while self._prestart and self._prestart[0][0] < now - int(PRESTART_S * 1e9):
                self._prestart.popleft()
        self._record(topic, data)
        handler = self._handlers.get(topic)
        if handler is None:
            return
        try:
            handler(data)
        except (ValueError, KeyError) as exc:
            self.counts['bad_messages'] += 1
            self.get_logger().warning(f'bad {topic} message ignored: {exc}',
                                      throttle_duration_sec=5.0)

    def _on_model_info(self, data):
        info = json.loads(deserialize_message(data, String).data)
        kind = str(info.get('kind', 'other')) if isinstance(info, dict) else 'other'
        self._policy_kind, self._policy = kind, policy_id(kind)
        self._expect_decisions = isinstance(info, dict) and bool(info.get('decision_topic'))
        self._expect_goals = (isinstance(info, dict)
                              and info.get('grasp_goal_topic') == GRASP_GOAL)
        self._expect_proprio = isinstance(info, dict) and info.get('proprio_topic') == PROPRIO

    def _on_decision(self, data):
        decision = json.loads(deserialize_message(data, String).data)
        try:
            stamp_ns = int(decision['stamp']['sec']) * 1_000_000_000 + int(
                decision['stamp']['nanosec'])
            source = policy_id(decision['source'])
            clean = decision.get('noise_free_action')
            clean = None if clean is None else [float(v) for v in clean]
        except TypeError as exc:
            raise ValueError(f'decision is not {{stamp: {{sec, nanosec}}, source}}: {exc}') \
                from exc
        if self.task == 'insertion':
            phase = str(decision.get('phase', 'control'))
            try:
                if phase == 'control':
                    step = tuple(np.asarray(decision[k], dtype=np.float32).reshape(-1)
                                 for k in ('observation', 'residual', 'u_m'))
                else:   # a fault step: not learning data; its state, if any, ends the episode
                    obs = decision.get('observation')
                    step = (None if obs is None else np.asarray(obs, np.float32).reshape(-1),
                            None, None)
            except (KeyError, TypeError) as exc:
                raise ValueError(f'insertion decision lacks observation/residual/u_m: '
                                 f'{exc}') from exc
            self._states[stamp_ns] = (*step, phase)
            while len(self._states) > _MAX_IMAGES:
                self._states.popitem(last=False)
        self._remember(self._decisions, stamp_ns, (source, clean))

    def _on_grasp_goal(self, data):
        msg = deserialize_message(data, PoseStamped)
        self._remember(self._goals, convert.stamp_to_ns(msg.header.stamp),
                       convert.msg_to_grasp_goal(msg))

    def _on_proprio(self, data):
        msg = deserialize_message(data, JointState)
        self._remember(self._proprios, convert.stamp_to_ns(msg.header.stamp),
                       convert.msg_to_proprio(msg))

    def _remember(self, table, stamp_ns, value):
        """Keep ``value`` for the action with ``stamp_ns`` (the newest _MAX_IMAGES), then
        flush the actions that were waiting for it."""
        table[stamp_ns] = value
        while len(table) > _MAX_IMAGES:
            table.popitem(last=False)
        self._flush_pending()

    def _on_success(self, data):
        self._success_p = float(deserialize_message(data, Float32).data)

    def _on_classification(self, data):
        from vision_msgs.msg import Classification
        msg = deserialize_message(data, Classification)
        scores = [r.score for r in msg.results if r.class_id == 'success']
        if not scores:
            raise ValueError("classification without a result of class_id 'success'")
        self._scores.append((convert.stamp_to_s(msg.header.stamp), float(scores[0])))

    def _on_intervention(self, data):
        msg = deserialize_message(data, JointState)
        self._interventions.append((convert.stamp_to_s(msg.header.stamp),
                                    convert.msg_to_action(msg)))

    def _intervention_records(self):
        """Return ``(stamps s, actions (M, 7))`` of the interventions received so far
        (``EpisodeRecorder.finish``'s ``interventions``)."""
        if not self._interventions:
            return [], np.zeros((0, 7), np.float32)
        stamps, actions = zip(*self._interventions)
        return list(stamps), np.stack(actions)

    def _classifier_scores(self):
        """Return ``(stamps s, scores)`` of the success detector's scores received so far
        (``EpisodeRecorder.finish``'s ``classifier_scores``)."""
        if not self._scores:
            return [], []
        stamps, scores = zip(*self._scores)
        return list(stamps), list(scores)

    @staticmethod
    def _start_stamp(start_event):
        """Return the ``start`` event's ``stamp_s`` (s), or None when it has none: scores
        stamped at or before it belong to the previous episode's frames."""
        stamp = (start_event or {}).get('stamp_s')
        return float(stamp) if isinstance(stamp, (int, float)) else None

    @staticmethod
    def _sources(event):
        """Return the episode metadata the end ``event`` gives: ``reward_source`` (its
        ``success_source``, 'ground_truth' when absent or unknown) and
        ``ground_truth_success``."""
        source = event.get('success_source')
        truth = event.get('ground_truth_success')
        return {'reward_source': source if source in ('ground_truth', 'classifier')
                else 'ground_truth',
                'ground_truth_success': truth if isinstance(truth, bool) else None}

    def _on_joint_states(self, data):
        msg = deserialize_message(data, JointState)
        try:   # the driver's names -> positions in the model's order (A1..A7, finger)
            if self.task == 'insertion':     # no gripper: the peg is held rigidly
                q8 = list(convert.joint_positions(msg, self.joint_names.arm)) + [0.0]
            else:
                q8 = convert.joint_positions(msg, self.joint_names.all)
        except KeyError as exc:
            raise ValueError(f'{exc.args[0]} (parameters joint_names, gripper_joint); it names '
                             f'{list(msg.name)}') from exc
        self._joints.append(convert.stamp_to_ns(msg.header.stamp), (q8[:7], float(q8[7])))
        self.counts['joint_states_received'] += 1

    def _on_policy_image(self, data):
        msg = deserialize_message(data, Image)
        img = convert.image_to_numpy(msg)
        size = (self.image_size, self.image_size, 3)
        if img.shape != size:
            raise ValueError(f'policy image is {img.shape}, expected {size}')
        stamp = convert.stamp_to_ns(msg.header.stamp)
        self._images[stamp] = img
        while len(self._images) > _MAX_IMAGES:
            self._images.popitem(last=False)
        self._last_image = (stamp, img)
        self._flush_pending()

    def _on_action(self, data):
        if self._episode is None:
            return
        msg = deserialize_message(data, JointState)
        stamp_ns = convert.stamp_to_ns(msg.header.stamp)
        start_s = self._episode.get('stamp_s')
        if isinstance(start_s, (int, float)) and convert.not_after(msg.header.stamp, start_s):
            # Computed on a frame from before the episode started (or stamped at its start):
            # not one of its steps (the episode manager does not count it either).
            self.counts['pre_start_actions'] += 1
            return
        action = convert.msg_to_action(msg)
        self._pending.append((stamp_ns, action))
        self._flush_pending()

    # ---- dataset steps --------------------------------------------------------------------
    def _proprio(self, q7, finger_m):
        if self._proprio_fn is None:
            from awopt_ros.core import kinematics
            if self.urdf_path == robot.URDF_PATH:
                self._proprio_fn = kinematics.proprio_from_joints
            else:
                self._proprio_fn = kinematics.Kinematics(self.urdf_path).proprio
        return self._proprio_fn(q7, finger_m)

    def _proprio_at(self, stamp_ns):
        """Proprio from the latest joint state with stamp <= ``stamp_ns`` (else the oldest),
        for policies that do not publish the proprio they acted on."""
        chosen = self._joints.at(stamp_ns)
        if chosen is None:
            raise ValueError(f'no joint state with joints {list(self.joint_names.all)} received '
                             f'on {self.joints_topic} yet')
        return self._proprio(*chosen[1])

    def _step_limit_reached(self):
        steps = self._step_limit
        return isinstance(steps, int) and self.recorder.steps >= steps

    def _flush_pending(self, final=False):
        """Turn queued actions into dataset steps, in order, as their images are known."""
        if self.task == 'insertion':
            self._flush_pending_states(final)
            return
        while self._pending:
            stamp, action = self._pending[0]
            img = self._images.get(stamp)
            waiting = (img is None or (self._expect_decisions and stamp not in self._decisions)
                       or (self._expect_goals and stamp not in self._goals)
                       or (self._expect_proprio and stamp not in self._proprios))
            if waiting and not final and len(self._pending) <= _MAX_PENDING_ACTIONS:
                return
            self._pending.popleft()
            if img is None or self._episode is None or self._step_limit_reached():
                self.counts['unmatched_actions'] += img is None
                continue
            try:
                proprio = self._proprios.get(stamp)
                if proprio is None:
                    proprio = self._proprio_at(stamp)
                source, clean = self._decisions.get(stamp, (self._policy, None))
                self.recorder.add_step(img, proprio, action, self._success_p, source,
                                       stamp * 1e-9, grasp_goal=self._goals.get(stamp),
                                       noise_free_action=clean)
            except ValueError as exc:
                self.counts['bad_messages'] += 1
                self.get_logger().warning(f'step dropped: {exc}', throttle_duration_sec=5.0)

    def _flush_pending_states(self, final=False):
        """Insertion: turn queued actions into dataset steps as their decisions (the state the
        controller saw, the residual, the command) are known; no image is waited for."""
        while self._pending:
            stamp, _ = self._pending[0]
            step = self._states.get(stamp)
            if step is None and not final and len(self._pending) <= _MAX_PENDING_ACTIONS:
                return
            self._pending.popleft()
            if step is None or self._episode is None or self._step_limit_reached():
                self.counts['unmatched_actions'] += step is None
                continue
            state, res, command, phase = step
            if phase != 'control' or self._phase_end is not None:
                self.counts['non_control_steps'] += 1
                if self._phase_end is None:
                    self._phase_end = {'state': state, 'success_probability': self._success_p,
                                       'stamp_s': stamp * 1e-9}
                continue
            source, _ = self._decisions.get(stamp, (self._policy, None))
            try:
                self.recorder.add_step(state, res, self._success_p, source, stamp * 1e-9,
                                       command_m=command)
            except ValueError as exc:
                self.counts['bad_messages'] += 1
                self.get_logger().warning(f'step dropped: {exc}', throttle_duration_sec=5.0)

    def _finish_states(self, event, extra):
        """Insertion: close the state episode; the final state is the first dropped step's
        (``extra``, the state after the last kept action; else the first non-'control' step's),
        else the last step's."""
        phase_end, self._phase_end = self._phase_end, None
        if extra is None and phase_end is not None and phase_end['state'] is not None:
            extra = phase_end
        success = bool(event.get('success', False))
        terminated = bool(event.get('terminated', False))
        truncated = bool(event.get('truncated', True))
        if extra is not None and self.recorder.steps > 0:
            return self.recorder.finish(success, terminated, truncated, extra['state'],
                                        final_success_probability=extra['success_probability'],
                                        final_stamp_s=extra['stamp_s'], **self._sources(event))
        if self.recorder.steps > 0:
            return self.recorder.finish(success, terminated, truncated,
                                        final_success_probability=self._success_p,
                                        **self._sources(event))
        return self.recorder.finish(False, False, True)

    # ---- episodes ---------------------------------------------------------------------------
    def _on_event(self, data):
        try:
            event = json.loads(deserialize_message(data, String).data)
            kind, episode = event['event'], int(event.get('episode', -1))
        except (ValueError, KeyError, TypeError) as exc:
            self.counts['bad_messages'] += 1
            self.get_logger().warning(f'bad episode event ignored: {exc}')
            return
        if kind == 'start':
            if self._episode is not None:
                self._finish(self._ending[0] if self._ending else
                             {'event': 'end', 'episode': self._episode['episode'],
                              'outcome': 'restarted', 'success': False, 'terminated': False,
                              'truncated': True})
            self._begin(event, episode)
            self._record(EVENT, data)
        elif kind == 'end' and self._refused is not None and self._episode is None:
            self._report_refused(event)
        elif kind == 'end' and self._episode is not None and self._ending is None:
            if episode != self._episode['episode']:
                self.get_logger().warning(f'end of episode {episode} while episode '
                                          f'{self._episode["episode"]} runs; ending it')
            self._record(EVENT, data)
            self._step_limit = event.get('steps')
            if self.end_grace_s <= 0.0:
                self._finish(event)
            else:
                timer = self.create_timer(self.end_grace_s, self._on_grace_over)
                self._ending = (event, timer)

    def _on_grace_over(self):
        if self._ending is not None:
            self._finish(self._ending[0])

    def _bag_path(self, episode):
        base = self.output_dir / 'bags' / f'episode_{episode:04d}'
        path, k = base, 1
        while path.exists():
            path, k = base.with_name(f'{base.name}_{k}'), k + 1
        return path

    def _refuse(self, episode, reason):
        """Leave episode ``episode`` unrecorded; its end is reported as not saved."""
        self._prestart.clear()
        self._refused = {'episode': episode, 'reason': reason}
        self.counts['episodes_refused'] += 1
        self.get_logger().error(f'episode {episode} not recorded: {reason}')

    def _report_refused(self, event):
        refused, self._refused = self._refused, None
        saved = {'episode': refused['episode'], 'bag': None, 'frames_logged': 0, 'steps': 0,
                 'dataset_id': self.dataset_id, 'dataset_root': str(self.output_dir),
                 'outcome': event.get('outcome'), 'dataset_written': False,
                 'dataset_index': None, 'bag_error': None, 'write_error': refused['reason']}
        self.last_saved = saved
        self._saved_pub.publish(String(data=json.dumps(saved)))

    def _begin(self, event, episode):
        self._refused = None
        _, accepting, reason, _ = self._check_disk()
        if not accepting:
            self._refuse(episode, reason)
            return
        path = self._bag_path(max(episode, 0))
        try:
            self._bag = BagWriter(path, {t: v[0] for t, v in self.recorded.items()},
                                  typestore=self._typestore,
                                  qos={t: v[1] for t, v in self.recorded.items()},
                                  max_queue_bytes=self._max_queue_bytes,
                                  compression=self._bag_compression,
                                  chunk_max_s=self._bag_flush_s,
                                  custom_data={'awopt_episode': episode,
                                               'awopt_seed': event.get('seed')})
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            self._refuse(episode, self._on_write_error(exc, path))
            return
        now = self._now_ns()
        for topic, raw in self._latched.items():  # latched state the episode depends on
            self._record(topic, raw, now)
        self._episode = {'episode': episode, 'seed': event.get('seed'), 'bag': str(path),
                         'stamp_s': event.get('stamp_s')}
        self._pending.clear()
        self._step_limit = None
        self._phase_end = None
        self.recorder.begin(max(episode, 0), event.get('seed'))
        self.get_logger().info(f'episode {episode}: recording to {path}')
        stamp_s = event.get('stamp_s')
        late = [m for m in self._prestart
                if isinstance(stamp_s, (int, float)) and m[0] >= int(stamp_s * 1e9)]
        self._prestart.clear()
        for recv_ns, topic, data in late:   # arrived after the start, before we knew of it
            self._record(topic, data, recv_ns)
            if topic == ACTION:
                self._on_action(data)

    def _finish(self, event):
        """Close the bag and hand the episode to the dataset worker (a Future); never raises."""
        if self._ending is not None:
            self._ending[1].cancel()
            self.destroy_timer(self._ending[1])
            self._ending = None
        if self._episode is None:
            return None
        if self._step_limit is None:
            self._step_limit = event.get('steps')
        self._flush_pending(final=True)  # the episode still counts as running here
        # Actions that arrived before the end event was processed but after the episode's
        # last counted step (e.g. the next frame's action after a terminate) are not steps.
        extra = None
        if isinstance(self._step_limit, int) and self.recorder.in_episode:
            extra = self.recorder.truncate(self._step_limit)
            self.counts['trimmed_steps'] += extra is not None
        ep, self._episode = self._episode, None
        bag, self._bag = self._bag, None
        buffer, summary = None, {'steps': 0, 'written': False}
        try:
            if self.task == 'insertion':
                buffer, summary = self._finish_states(event, extra)
            elif extra is not None and self.recorder.steps > 0:
                buffer, summary = self.recorder.finish(
                    bool(event.get('success', False)), bool(event.get('terminated', False)),
                    bool(event.get('truncated', True)), extra['image'], extra['proprio'],
                    final_success_probability=extra['success_probability'],
                    final_stamp_s=extra['stamp_s'], classifier_scores=self._classifier_scores(),
                    scores_after_s=self._start_stamp(ep),
                    interventions=self._intervention_records(), **self._sources(event))
            elif self._last_image is not None and self.recorder.steps > 0:
                stamp, img = self._last_image
                buffer, summary = self.recorder.finish(
                    bool(event.get('success', False)), bool(event.get('terminated', False)),
                    bool(event.get('truncated', True)), img, self._proprio_at(stamp),
                    final_success_probability=self._success_p, final_stamp_s=stamp * 1e-9,
                    classifier_scores=self._classifier_scores(),
                    scores_after_s=self._start_stamp(ep),
                    interventions=self._intervention_records(), **self._sources(event))
            else:
                buffer, summary = self.recorder.finish(False, False, True, None, None)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next episode
            self.counts['save_errors'] += 1
            self.recorder.abort()
            self.get_logger().error(f'episode {ep["episode"]}: dataset append failed: {exc}')
        if self._is_replayed_history(event, bag.frames_written.get(self.camera_topic, 0),
                                     summary['steps']):
            bag.close()
            shutil.rmtree(ep['bag'], ignore_errors=True)
            self.get_logger().info(f'episode {ep["episode"]} ended before this node started '
                                   '(latched history): nothing recorded, bag removed')
            return None
        return self._saver.submit(self._save, ep, event, bag, buffer, summary)

    def _save(self, ep, event, bag, buffer, summary):
        """Close the bag, append the episode to the dataset and announce it.

        Runs on the dataset worker thread, so the executor keeps taking messages meanwhile.
        """
        bag_error = write_error = None
        try:
            frames = bag.close().get(self.camera_topic, 0)
        except Exception as exc:  # noqa: BLE001 - the episode must still be saved
            frames = bag.frames_written.get(self.camera_topic, 0)
            if bag.write_error is not None:   # e.g. ENOSPC: the episode is dropped
                write_error = self._episode_write_error(ep, bag.write_error, ep['bag'])
            else:
                bag_error = str(exc)
                self.get_logger().error(f'bag {ep["bag"]}: {exc}')
        if write_error is None:
            summary, write_error = self._append_episode(ep, buffer, summary)
        if write_error is not None:
            bag.discard()   # frees the space; a dropped episode leaves no half bag behind
            frames, summary = 0, dict(summary, steps=0, written=False, index=None)
            self.get_logger().error(f'episode {ep["episode"]} dropped (bag and dataset): '
                                    f'{write_error}; earlier episodes are kept')
        self.frames_logged_total += frames
        self.counts['episodes_saved'] += write_error is None
        self.counts['steps_total'] += summary['steps']
        saved = {'episode': ep['episode'], 'bag': None if write_error else ep['bag'],
                 'frames_logged': frames,
                 'steps': summary['steps'], 'dataset_id': self.dataset_id,
                 'dataset_root': str(self.output_dir), 'outcome': event.get('outcome'),
                 'dataset_written': summary['written'], 'dataset_index': summary.get('index'),
                 'bag_error': bag_error, 'write_error': write_error}
        self.last_saved = saved
        try:
            if self.context.ok():  # not after a SIGINT/SIGTERM shut the context down
                self._saved_pub.publish(String(data=json.dumps(saved)))
        except Exception as exc:  # noqa: BLE001 - context may be shut down at exit
            self.get_logger().warning(f'could not publish {SAVED}: {exc}')
        if write_error is None:
            self.get_logger().info(f'episode {ep["episode"]} saved: {frames} camera frames, '
                                   f'{summary["steps"]} steps ({event.get("outcome")})')
        return saved

    def _append_episode(self, ep, buffer, summary):
        """Append episode ``ep`` (``buffer`` from the recorder, None for no steps) to the
        dataset, after the episodes still pending; return ``(summary, write error text or
        None)``. An older pending episode that fails is dropped alone (its bag deleted) and
        the append goes on; never raises."""
        if buffer is not None:
            summary = dict(summary, bag=ep['bag'])
        write = lambda: self.recorder.append(buffer, summary)  # noqa: E731
        while True:
            try:
                written = write()
                return (summary if written is None else written), None
            except OSError as exc:
                if is_lock_error(exc.__cause__ or exc):   # kept pending, written later
                    self.counts['save_errors'] += 1
                    self.get_logger().error(f'episode {ep["episode"]}: dataset append '
                                            f'failed: {exc}')
                    return summary, None
                failed = getattr(exc, 'episode_summary', None)
                if failed is None or failed is summary:
                    # this episode is dropped; the dataset keeps every earlier one
                    return summary, self._episode_write_error(
                        ep, exc, self.recorder.dataset_path)
                self._drop_pending(failed, exc)
                write = self.recorder.flush_pending   # this episode is pending now
            except Exception as exc:  # noqa: BLE001 - report; the bag is kept either way
                self.counts['save_errors'] += 1
                self.get_logger().error(f'episode {ep["episode"]}: dataset append failed: '
                                        f'{exc}')
                return summary, None

    def _drop_pending(self, summary, exc):
        """An episode left pending earlier (the dataset was locked) failed to be written and
        was dropped by the recorder: delete its bag too, and report it."""
        text = self._on_write_error(exc, self.recorder.dataset_path)
        bag = summary.get('bag')
        if bag:
            shutil.rmtree(bag, ignore_errors=True)
        self.get_logger().error(f'episode {summary.get("episode")} (pending since the dataset '
                                f'was locked) dropped (bag and dataset): {text}')

    def _episode_write_error(self, ep, exc, what):
        """Report a write error of episode ``ep`` once (see :meth:`_on_write_error`)."""
        if ep.get('write_error') is None:
            ep['write_error'] = self._on_write_error(exc, what)
        return ep['write_error']

    def _is_replayed_history(self, event, frames, steps):
        """True for an episode whose start and end both predate this node (latched replay)."""
        stamp_s = event.get('stamp_s')
        return (frames == 0 and steps == 0 and isinstance(stamp_s, (int, float))
                and stamp_s < self._start_ns * 1e-9)

    def _publish_diagnostics(self):
        running = self._episode is not None
        if running and self._bag is not None and self._bag.write_error is not None:
            self._episode_write_error(self._episode, self._bag.write_error,
                                      self._episode['bag'])
        free_mb, accepting, reason, key = self._check_disk()
        frames_now = (self._bag.frames_written.get(self.camera_topic, 0)
                      if self._bag is not None else 0)
        values = dict(self.counts, frames_logged=self.frames_logged_total + frames_now,
                      frames_logged_episode=frames_now, recording=running,
                      episode=self._episode['episode'] if running else -1,
                      steps_episode=self.recorder.steps, policy=self._policy_kind,
                      bag_queue_bytes=self._bag.queued_bytes if self._bag is not None else 0,
                      dataset_pending=self.recorder.pending_episodes,
                      dataset_lock_retries=self.recorder.lock_retries,
                      free_disk_mb=f'{free_mb:.1f}', min_free_disk_mb=f'{self.min_free_disk_mb}',
                      accepting_episodes='true' if accepting else 'false')
        level = diagnostics.OK if self.counts['save_errors'] == 0 else diagnostics.WARN
        message = f'episode {values["episode"]} recording' if running else 'idle'
        if not accepting:
            level, message = diagnostics.ERROR, reason
            if self._refusal_logged != key:
                self.get_logger().error(f'not accepting episodes: {reason}')
        self._refusal_logged = None if accepting else key
        self._diag_pub.publish(diagnostics.diagnostic_array(
            self, 'logger', values, level=level, message=message))

    def close(self):
        """Save a running episode as truncated (outcome 'shutdown'); called at shutdown."""
        if self._episode is not None:
            event = self._ending[0] if self._ending else {
                'event': 'end', 'episode': self._episode['episode'], 'outcome': 'shutdown',
                'success': False, 'terminated': False, 'truncated': True}
            self._finish(event)
        self._saver.shutdown(wait=True)   # every finished episode reaches the dataset
        while self.recorder.pending_episodes:    # the file was locked at their end: retry
            try:
                self.recorder.flush_pending()
                self.get_logger().info('pending episodes written to the dataset')
            except Exception as exc:  # noqa: BLE001 - report at exit; bags are kept
                failed = getattr(exc, 'episode_summary', None)
                if failed is not None:   # that one is dropped (its bag too); go on
                    self._drop_pending(failed, exc)
                    continue
                self.get_logger().error(f'{self.recorder.pending_episodes} episode(s) not '
                                        f'written to the dataset (their bags are kept): {exc}')
                break
        # What was received, dropped and saved, for the record (also in /diagnostics).
        # A logger of its own: at shutdown the node's rosout publisher is gone.
        rclpy.logging.get_logger(f'{self.get_name()}.counts').info(', '.join(
            f'{k} {v}' for k, v in sorted(self.counts.items()) if v))


def main(args=None):
    return spin_node(LoggerNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
