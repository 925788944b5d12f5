"""policy: actor, CEM over the critic, or AW-Opt's episode switch on camera frames -> action.

Inputs (``image_source``):

* ``camera`` (default): the camera's ``<camera_ns>/color/image_raw`` (rgb8, ``source_width`` x
  ``source_height``; best effort, depth 1: the newest frame), cropped and resized to the
  policy image here, in the callback (:func:`awopt_ros.core.image_ops.crop_resize` on a view
  of the message's data, no copy of the frame). This is the frame -> command hot path: no
  camera_pipeline hop. Frames of another layout (``FrameLayoutCheck``) and frames older than
  ``max_frame_age_s`` or not newer than the last one (``FrameGate``) are dropped and counted,
  as in camera_pipeline, which still publishes ``/policy/image`` for the logger and rviz
  (the same function on the same frame: the logger stores the image the policy acted on).
* ``camera_pipeline``: ``/policy/image`` (``image_size`` square, from camera_pipeline).

Joint states come on ``joint_states_topic`` (sensor-data QoS) under the driver's names
(``joint_names``, ``gripper_joint``: :func:`awopt_ros.ros.robot_params.declare_joint_names`),
and ``/episode/event`` (latched JSON; in mode 'switch' the next episode's policy is drawn at
start-up and at each ``end``, so that a frame stamped after a start that arrives before the
start event is already acted on by that episode's policy; a ``start`` takes that draw, or
draws when no end came between two starts, and restarts the action grid, below).

Action rate: the policy acts ``action_rate_hz`` times a second (10 Hz, the task's control
period; 0 = on every frame) on the newest frame, whatever the camera's rate
(:class:`awopt_ros.core.action_rate.ActionGrid`). A 30 Hz camera gives every third frame: the
steps keep the 0.1 s period that the models were trained with and that ``arm_interface``
``control_period_s`` and ``episode_manager`` ``max_steps`` count in, while the frame an
action is computed on is at most one camera period old when it is taken up. Frame-to-command
latency is measured from that frame's stamp. A ``start`` event restarts the grid on the first
frame stamped after the episode's start, which the arm acts on at once.

For each frame acted on: proprioception from the latest joint state
(:func:`awopt_ros.core.kinematics` FK), then :class:`awopt_ros.core.policy_runtime.PolicyRuntime`
chooses the action (``mode`` 'actor', 'cem' or 'switch'; CEM falls in when the actor is
missing or returns an invalid action), then

* ``/policy/decision`` (std_msgs/String JSON, reliable): ``stamp`` {sec, nanosec} (the
  image's stamp, = the action's), ``source`` 'actor' | 'cem', ``episode_policy``,
  ``model_version`` (int, +1 per model swap), ``model_mtime_ns``, ``q`` (CEM's best Q, for
  source 'cem'), ``fallback`` (why the episode's policy did not act, or null),
  ``actor_candidate``, ``actor_noise_std`` (exploration noise added, 0.0 when none),
  ``discrete_sampled`` (the discrete sub-actions were drawn from the actor's probabilities)
  and ``noise_free_action`` (7 floats: the actor's action before exploration noise and
  sampling, which the logger records per step; null for CEM); published BEFORE the action
  so that the logger has it when the action arrives;
* with ``publish_proprio`` (off by default), ``/policy/proprio`` (``sensor_msgs/JointState``,
  sensor-data QoS, names ``spec.PROPRIO_NAMES``, the action's stamp): the proprioception the
  action was computed from (the latest joint state at the time, newer than the image), which
  the logger then records with the step; published after the action (published before it,
  it delayed the action: the scripted policy's success fell from 24 to 15 of 30 episodes);
* ``/policy/action`` (``sensor_msgs/JointState``, reliable), stamped with the image's (= source
  camera frame's) stamp.

Frames are skipped and counted when the joint state is missing or older than
``max_joint_state_age_s``; a step where no policy can act publishes nothing (counted in
``invalid_outputs``; an onnxruntime error in the actor falls back to CEM when a critic is
loaded, and any other error in a step is counted in ``step_errors``: the node holds, it never
dies of a model fault). At start-up every configured model is loaded and its
``awopt_contract`` checked against this node's parameters, and its graph's inputs and outputs
against the contract (types, shapes, a warm-up run); a missing file, a file that is not a
readable ONNX model, a mismatch, or a model the mode needs but that is not configured is
logged in one line naming the parameter and the file (e.g. ``model_path: /x/m.onnx is not a
readable ONNX model (truncated or corrupt): DecodeError: ...``) and the process exits with
code 1. ``/policy/model_info`` (latched std_msgs/String JSON: ``kind`` = mode,
``model_path``, ``contract``, ``model_version``, ``models``, ``last_rejection`` (group ->
why its latest hot swap was refused; empty when none), ...) says what runs and is
re-published after every model swap or rejected swap.

Hot swap: every ``reload_period_s`` a dedicated Python thread (not an executor callback:
:func:`awopt_ros.ros.run.spin_node` spins a single-threaded executor, where a timer in another
callback group would still block the image callback) calls
:meth:`PolicyRuntime.reload_if_changed`, which loads changed model files off the control path
and swaps the model set by one reference assignment between two steps. The thread then
triggers a guard condition; its callback, on the executor, logs the outcome and re-publishes
``/policy/model_info``. A new file that fails the start-up checks is refused (logged, counted
in ``model_rejections``, named in ``last_rejection``) and the running model stays. Trainers
must write models with write-to-temp + ``os.replace`` (see
:mod:`awopt_ros.core.policy_runtime`).

Camera pose: at load and after each swap, ``camera_pose_xyz_rpy`` (this cell's hand-eye
result) is compared with the pose each model's contract records; a model trained with the
camera more than ``camera_pose_tolerance_m`` / ``camera_pose_tolerance_rad`` away gets a
warning and diagnostics ``camera_pose`` 'mismatch' (WARN); a model that records no pose an
info line ('not_recorded').
"""
import json
import queue
import threading

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from awopt_ros.core import camera_pose, paths, robot
from awopt_ros.core.action_rate import ActionGrid
from awopt_ros.core.cem import CEMConfig
from awopt_ros.core.image_ops import FrameGate, FrameLayoutCheck, check_crop, crop_resize
from awopt_ros.core.onnx_policy import ModelContractError, expected_contract
from awopt_ros.core.policy_runtime import (MODES, REQUIRED, ModelPaths, NoPolicyError,
                                           PolicyRuntime)
from awopt_ros.core.spec import POLICY_CROP_XYWH, POLICY_IMAGE_SIZE, SOURCE_SIZE
from awopt_ros.ros import convert, diagnostics, episode_events, qos
from awopt_ros.ros.convert import PROPRIO_TOPIC as PROPRIO, proprio_publisher
from awopt_ros.ros.params import declare
from awopt_ros.ros.robot_params import declare_camera_ns, declare_joint_names
from awopt_ros.ros.run import StartupError, spin_node

DECISION = '/policy/decision'
POLICY_IMAGE = '/policy/image'
IMAGE_SOURCES = ('camera', 'camera_pipeline')
#: The camera subscription of the hot path: best effort like sensor data, but only the newest
#: frame is kept (a frame that waited behind another is older than the next one to come).
LATEST_FRAME = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                          history=HistoryPolicy.KEEP_LAST)
COUNTERS = ('frames', 'images', 'actions_published', 'actions_actor', 'actions_cem', 'fallbacks',
            'skipped_no_joint_state', 'skipped_stale_joint_state', 'invalid_outputs',
            'bad_inputs', 'step_errors', 'model_swaps', 'model_rejections')
#: Parameters that configure each model group (named in start-up errors).
_GROUP_PARAMS = {'actor': 'model_path', 'critic': 'critic_encoder_path/critic_head_path'}


class PolicyNode(Node):
    """Policy in the loop: policy image + joint state -> action and decision."""

    def __init__(self, **kwargs):
        super().__init__('policy', **kwargs)
        self.mode = declare(self, 'mode', 'actor',
                            "Acting policy: 'actor' (CEM fallback), 'cem' (CEM over the critic, "
                            "actor action as a candidate) or 'switch' (per episode: CEM with "
                            'probability cem_episode_prob, else the actor).', read_only=True)
        model_path = declare(self, 'model_path', 'models/grasp_awopt.onnx',
                             "ONNX actor ('' = none; needed by modes actor and switch); "
                             'relative paths resolve against the package share directory.',
                             read_only=True)
        encoder_path = declare(self, 'critic_encoder_path', '',
                               "Critic encoder ONNX ('' = no critic; needed by modes cem and "
                               'switch, and by the CEM fallback of mode actor).',
                               read_only=True)
        head_path = declare(self, 'critic_head_path', '',
                            "Critic Q-head ONNX from the same export as critic_encoder_path "
                            "('' = no critic).", read_only=True)
        self.image_size = declare(self, 'image_size', POLICY_IMAGE_SIZE, 'Policy image side (px).',
                                  low=8, high=1024, read_only=True)
        self.crop_xywh = [int(v) for v in declare(
            self, 'crop_xywh', list(POLICY_CROP_XYWH),
            'Camera crop (x, y, w, h; source px) the images are made with; must match the '
            "models' contracts.", read_only=True)]
        self.max_joint_state_age_s = declare(
            self, 'max_joint_state_age_s', 0.2,
            'Skip an image when the latest joint state is older than this (s, node clock).',
            low=0.001, high=10.0)
        self.image_source = declare(
            self, 'image_source', 'camera',
            "Where the policy image comes from: 'camera' (the camera frame, cropped and "
            "resized in this node: the low-latency path) or 'camera_pipeline' (its "
            '/policy/image).', read_only=True)
        self.action_rate_hz = declare(
            self, 'action_rate_hz', 10.0,
            'Actions per second, on the newest frame (the control period the models were '
            'trained with: 10 Hz); 0 = an action on every frame.', low=0.0, high=1000.0,
            read_only=True)
        max_frame_age_s = declare(self, 'max_frame_age_s', 0.2,
                                  "image_source 'camera': frames older than this when they "
                                  'arrive are dropped (s).', low=0.001, high=10.0)
        source_wh = (declare(self, 'source_width', SOURCE_SIZE[0],
                             "image_source 'camera': camera frame width (px); frames of "
                             'another size are dropped.', low=16, high=8192, read_only=True),
                     declare(self, 'source_height', SOURCE_SIZE[1],
                             "image_source 'camera': camera frame height (px); frames of "
                             'another size are dropped.', low=16, high=8192, read_only=True))
        self.joint_names, joint_states_topic = declare_joint_names(self)
        camera_topic, _ = declare_camera_ns(self)
        if self.image_source not in IMAGE_SOURCES:
            self._startup_error(f'parameter image_source must be one of {IMAGE_SOURCES}, got '
                                f'{self.image_source!r}')
        if self.image_source == 'camera':
            try:
                check_crop(self.crop_xywh, *source_wh)   # fail at start-up, not per frame
            except ValueError as exc:
                self._startup_error(f'crop_xywh: {exc} (source_width x source_height)', exc)
        self.layout = FrameLayoutCheck(source_wh)
        self.gate = FrameGate(max_frame_age_s)
        self.grid = ActionGrid(self.action_rate_hz)
        threads = declare(self, 'intra_op_threads', 1, 'onnxruntime intra-op threads.',
                          low=1, high=64, read_only=True)
        urdf_path = declare(self, 'urdf_path', robot.URDF_PATH,
                            'Robot URDF used for forward kinematics (proprioception).',
                            read_only=True)
        cem_iterations = declare(self, 'cem_iterations', 2, 'CEM rounds per action.',
                                 low=1, high=100, read_only=True)
        cem_samples = declare(self, 'cem_samples', 64, 'CEM samples per round.',
                              low=2, high=100000, read_only=True)
        cem_elites = declare(self, 'cem_elites', 6, 'CEM elites per round (<= cem_samples).',
                             low=1, high=100000, read_only=True)
        cem_episode_prob = declare(self, 'cem_episode_prob', 0.8,
                                   "Mode 'switch': probability that an episode runs CEM "
                                   '(AW-Opt: 0.8), else the actor.', low=0.0, high=1.0,
                                   read_only=True)
        self.reload_period_s = declare(self, 'reload_period_s', 1.0,
                                       'Check the model files for a new export every this '
                                       'many seconds (wall clock); 0 disables hot swap.',
                                       low=0.0, high=3600.0, read_only=True)
        settle_s = declare(self, 'reload_settle_s', 0.5,
                           'A changed model file is loaded once its (mtime, size) has stayed '
                           'unchanged this long (s, wall clock).', low=0.0, high=600.0,
                           read_only=True)
        actor_noise_std = declare(
            self, 'actor_noise_std', 0.0,
            "Exploration for data collection and finetuning: Gaussian noise on the actor's "
            'dx, dy, dz, dyaw, std in units of their half range (0.03 m, 0.2 rad), clipped '
            'to the bounds; 0 = none (deployment).', low=0.0, high=1.0, read_only=True)
        sample_discrete = declare(
            self, 'actor_sample_discrete', False,
            "Exploration for data collection and finetuning: draw the actor's open, close and "
            'terminate from its Bernoulli probabilities (the ONNX output discrete_prob) '
            'instead of thresholding them at 0.5; false in deployment.', read_only=True)
        seed = declare(self, 'seed', 0, 'Seed of the episode switch, of CEM sampling and of '
                       'the exploration noise (-1: from OS entropy).', low=-1,
                       high=2**31 - 1, read_only=True)
        self._camera_pose = declare(
            self, 'camera_pose_xyz_rpy', list(camera_pose.SIM_CAMERA_POSE_XYZ_RPY),
            "This cell's camera pose (hand-eye result: camera_link in base_link, x y z m, roll "
            "pitch yaw rad), compared with the pose in the models' contracts", read_only=True)
        self._camera_tolerance = (
            declare(self, 'camera_pose_tolerance_m', camera_pose.DEFAULT_TOLERANCE_M,
                    'Warn when the camera sits farther than this from where the model was '
                    'trained (m)', low=0.0, high=10.0, read_only=True),
            declare(self, 'camera_pose_tolerance_rad', camera_pose.DEFAULT_TOLERANCE_RAD,
                    'Warn when the camera is turned more than this from how the model was '
                    'trained (rad)', low=0.0, high=3.2, read_only=True))
        try:
            camera_pose.as_pose(self._camera_pose)
        except ValueError as exc:
            self._startup_error(str(exc), exc)
        self.camera_pose_status = camera_pose.POSE_NOT_RECORDED
        self.runtime = self._load_runtime(
            model_path, encoder_path, head_path, threads, settle_s,
            cem_config=(cem_iterations, cem_samples, cem_elites),
            cem_episode_prob=cem_episode_prob, seed=None if seed < 0 else seed,
            actor_noise_std=actor_noise_std, actor_sample_discrete=sample_discrete)
        self.model_path = self.runtime.paths.actor
        try:
            from awopt_ros.core.kinematics import Kinematics
            self._kin = Kinematics(urdf_path)
        except (FileNotFoundError, ValueError) as exc:
            self.get_logger().error(f'cannot load kinematics: {exc}')
            raise StartupError(f'cannot load kinematics: {exc}') from exc
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._joint_state = None          # latest sensor_msgs/JointState
        self._joint_state_rx_s = None     # node-clock time it arrived (s)
        self._episode = None              # number of the episode whose start was handled
        self.runtime.prepare_next_episode()   # the first episode's policy (mode 'switch')
        self._last_rejection = {}         # group -> message of its latest rejected swap

        self.info_pub = self.create_publisher(String, '/policy/model_info', qos.LATCHED)
        self.decision_pub = self.create_publisher(String, DECISION, qos.COMMAND)
        self.proprio_pub = proprio_publisher(self)
        self.action_pub = self.create_publisher(JointState, '/policy/action', qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(JointState, joint_states_topic, self._on_joint_state,
                                 qos.SENSOR)
        if self.image_source == 'camera':
            self.create_subscription(Image, camera_topic, self._on_camera_frame, LATEST_FRAME)
        else:
            self.create_subscription(Image, POLICY_IMAGE, self._on_image, qos.SENSOR)
        self.create_subscription(String, '/episode/event', self._on_event, qos.LATCHED)
        self.create_timer(1.0, self._publish_diagnostics)
        self._publish_model_info()
        self._log_models('loaded')
        self._check_camera_pose()

        # Hot swap: loads run on this thread; results come back through the guard condition.
        self._reload_results = queue.SimpleQueue()
        self._reload_guard = self.create_guard_condition(self._on_reload_results)
        self._reload_stop = threading.Event()
        self._reload_thread = None
        if self.reload_period_s > 0.0 and self.runtime.watcher.groups:
            self._reload_thread = threading.Thread(target=self._reload_loop,
                                                   name='policy-model-reload', daemon=True)
            self._reload_thread.start()

    # ---- start-up ----------------------------------------------------------------------------
    def _startup_error(self, message, cause=None):
        self.get_logger().error(message)
        raise StartupError(message) from cause

    def _load_runtime(self, model_path, encoder_path, head_path, threads, settle_s, *,
                      cem_config, cem_episode_prob, seed, actor_noise_std,
                      actor_sample_discrete):
        if self.mode not in MODES:
            self._startup_error(f'parameter mode must be one of {MODES}, got {self.mode!r}')
        try:
            cem = CEMConfig(*cem_config)
        except ValueError as exc:
            self._startup_error(f'cem_iterations/cem_samples/cem_elites: {exc}', exc)
        if bool(encoder_path) != bool(head_path):
            self._startup_error('critic_encoder_path and critic_head_path must be set '
                                f'together (got {encoder_path!r} and {head_path!r})')
        model_paths = ModelPaths(
            actor=str(paths.resolve(model_path)) if model_path else '',
            critic_encoder=str(paths.resolve(encoder_path)) if encoder_path else '',
            critic_head=str(paths.resolve(head_path)) if head_path else '')
        groups = model_paths.groups()
        for group in REQUIRED[self.mode]:
            if group not in groups:
                self._startup_error(f'mode {self.mode!r} needs the {group} but parameter '
                                    f'{_GROUP_PARAMS[group]} is empty')
        try:
            return PolicyRuntime.from_files(
                self.mode, model_paths, expected_contract(self.image_size, self.crop_xywh),
                intra_op_threads=threads, cem_config=cem, cem_episode_prob=cem_episode_prob,
                seed=seed, settle_s=settle_s, actor_noise_std=actor_noise_std,
                actor_sample_discrete=actor_sample_discrete)
        except (FileNotFoundError, ModelContractError) as exc:
            param = _GROUP_PARAMS.get(getattr(exc, 'model_group', ''), 'model')
            self._startup_error(f'{param}: {exc}', exc)

    def _log_models(self, verb):
        info = self.runtime.model_info()
        parts = []
        for group, model in info['models'].items():
            contract = model.get('contract') or {}
            parts.append(f"{group} {', '.join(model['paths'])} (algorithm "
                         f"{contract.get('algorithm')!r}, dataset {contract.get('dataset')!r})")
        self.get_logger().info(f"{verb} model version {info['model_version']} for mode "
                               f"{self.mode!r}: " + '; '.join(parts))

    def _check_camera_pose(self):
        """Log how the deployed camera pose compares with the models' (a warning per model
        trained elsewhere: ``core.camera_pose.check_models``); the status goes to
        diagnostics (WARN on a mismatch)."""
        contracts = {group: model.get('contract')
                     for group, model in self.runtime.model_info()['models'].items()}
        self.camera_pose_status, lines = camera_pose.check_models(
            self._camera_pose, contracts, *self._camera_tolerance)
        log = self.get_logger()
        for line in lines:
            (log.warning if self.camera_pose_status == camera_pose.POSE_MISMATCH
             else log.info)(line)

    def _publish_model_info(self):
        info = self.runtime.model_info()
        models = info['models']
        main = models.get('actor') or models.get('critic') or {}
        self.info_pub.publish(String(data=json.dumps(dict(
            info, kind=self.mode, model_path=self.model_path,
            contract=main.get('contract'), decision_topic=DECISION,
            last_rejection=dict(self._last_rejection),
            proprio_topic=PROPRIO if self.proprio_pub is not None else None))))

    # ---- hot swap ------------------------------------------------------------------------------
    def _reload_loop(self):
        """Reload thread: poll the model files every ``reload_period_s`` until closed."""
        while not self._reload_stop.wait(self.reload_period_s):
            try:
                result = self.runtime.reload_if_changed()
            except Exception as exc:  # noqa: BLE001 - keep watching; the old model runs on
                self.get_logger().error(f'model reload failed: {exc}',
                                        throttle_duration_sec=10.0)
                continue
            if result:
                self._reload_results.put(result)
                try:
                    self._reload_guard.trigger()
                except Exception:  # noqa: BLE001 - node being destroyed
                    return

    def _on_reload_results(self):
        """Executor side of a reload: log, count, re-publish ``/policy/model_info``."""
        swapped, rejected = set(), False
        while True:
            try:
                result = self._reload_results.get_nowait()
            except queue.Empty:
                break
            for group, message in result.rejected.items():
                self.counts['model_rejections'] += 1
                self._last_rejection[group] = message
                self.get_logger().error(message)
            if result.swapped:
                self.counts['model_swaps'] += 1
                swapped.update(result.swapped)
                for group in result.swapped:
                    self._last_rejection.pop(group, None)
            rejected = rejected or bool(result.rejected)
        if swapped or rejected:
            self._publish_model_info()
        if swapped:
            self._log_models(f'swapped in the new {" and ".join(sorted(swapped))}:')
            self._check_camera_pose()

    def close(self):
        """Stop the reload thread (called by ``spin_node`` and :meth:`destroy_node`)."""
        self._reload_stop.set()
        if self._reload_thread is not None and self._reload_thread.is_alive():
            self._reload_thread.join(timeout=30.0)

    def destroy_node(self):
        """Stop the reload thread, then destroy the node."""
        if hasattr(self, '_reload_stop'):
            self.close()
        return super().destroy_node()

    # ---- inputs -------------------------------------------------------------------------------
    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg):
        self._joint_state = msg
        self._joint_state_rx_s = self._now_s()

    def _on_event(self, msg):
        if episode_events.is_end(msg.data):
            # The next episode's policy is drawn now: a frame stamped after its start that
            # comes before the start event is acted on by that episode's policy.
            self.runtime.prepare_next_episode()
            return
        start = episode_events.start_of(msg.data, self._episode, self.get_logger())
        if start is None:
            return
        self._episode, stamp_s = start
        self.grid.restart(stamp_s)
        policy = self.runtime.begin_episode()
        self.get_logger().info(f'episode {self._episode}: policy {policy!r} (mode {self.mode!r})')

    def _joint_state_age_s(self):
        """Age of the latest joint state: node clock now minus its stamp (arrival if unset)."""
        stamp_s = convert.stamp_to_s(self._joint_state.header.stamp)
        ref_s = stamp_s if stamp_s > 0.0 else self._joint_state_rx_s
        return self._now_s() - ref_s

    def _on_camera_frame(self, msg):
        """``image_source`` 'camera': a camera frame -> (every ``action_rate_hz``) action."""
        self.counts['frames'] += 1
        if not convert.frame_layout_ok(self, self.layout, msg):
            return
        stamp_s = convert.stamp_to_s(msg.header.stamp)
        if not self.gate.accept(self._now_s(), stamp_s) or not self.grid.due(stamp_s):
            return
        # The layout check took the frame and the crop was checked against its size at
        # start-up: the crop of the view (no copy of the frame) cannot fail.
        self._step(msg.header.stamp, stamp_s, lambda: crop_resize(
            convert.image_view(msg), self.crop_xywh, self.image_size))

    def _on_image(self, msg):
        """``image_source`` 'camera_pipeline': a policy image -> (every ``action_rate_hz``)
        action."""
        self.counts['frames'] += 1
        stamp_s = convert.stamp_to_s(msg.header.stamp)
        if not self.grid.due(stamp_s):
            return
        self._step(msg.header.stamp, stamp_s, lambda: self._policy_image(msg))

    def _policy_image(self, msg):
        image = convert.image_view(msg)
        if image.shape[:2] != (self.image_size, self.image_size):
            raise ValueError(f'policy image is {image.shape[1]}x{image.shape[0]}, '
                             f'expected {self.image_size}x{self.image_size}')
        return image

    def _step(self, stamp, stamp_s, get_image):
        """Act on the image ``get_image()`` (ValueError: a bad image) of the due frame stamped
        ``stamp`` (``stamp_s`` s): decision, action (stamped ``stamp``), proprio, and the
        action grid advances; or skip, counted (the next frame is then due)."""
        self.counts['images'] += 1
        if self._joint_state is None:
            self.counts['skipped_no_joint_state'] += 1
            self.get_logger().warning('no joint state yet: image skipped',
                                      throttle_duration_sec=5.0)
            return
        age_s = self._joint_state_age_s()
        if age_s > self.max_joint_state_age_s:
            self.counts['skipped_stale_joint_state'] += 1
            self.get_logger().warning(f'joint state is {age_s:.3f} s old (> '
                                      f'{self.max_joint_state_age_s} s): image skipped',
                                      throttle_duration_sec=5.0)
            return
        try:
            image = get_image()
            q = convert.joint_positions(self._joint_state, self.joint_names.all)
            proprio = self._kin.proprio(q[:7], q[7])
            action, source, info = self.runtime.act(image, proprio)
        except (KeyError, ValueError) as exc:
            self.counts['bad_inputs'] += 1
            self.get_logger().error(f'bad input, image skipped: {exc}',
                                    throttle_duration_sec=5.0)
            return
        except NoPolicyError as exc:
            self.counts['invalid_outputs'] += 1
            self.get_logger().error(f'no action published: {exc}', throttle_duration_sec=5.0)
            return
        except Exception as exc:  # noqa: BLE001 - hold (no action) rather than die
            self.counts['step_errors'] += 1
            self.get_logger().error(f'no action published: {type(exc).__name__}: {exc}',
                                    throttle_duration_sec=5.0)
            return
        if info['fallback']:
            self.counts['fallbacks'] += 1
            self.get_logger().warning(f'{source} acted instead: {info["fallback"]}',
                                      throttle_duration_sec=5.0)
        decision = {'stamp': {'sec': int(stamp.sec), 'nanosec': int(stamp.nanosec)},
                    'source': source, **info}
        if decision['noise_free_action'] is not None:
            decision['noise_free_action'] = [float(v) for v in decision['noise_free_action']]
        self.decision_pub.publish(String(data=json.dumps(decision)))
        self.action_pub.publish(convert.action_to_msg(action, stamp))
        if self.proprio_pub is not None:
            self.proprio_pub.publish(convert.proprio_to_msg(proprio, stamp))
        self.grid.acted(stamp_s)
        self.counts['actions_published'] += 1
        self.counts[f'actions_{source}'] += 1

    def _publish_diagnostics(self):
        bad = (self.counts['invalid_outputs'] + self.counts['bad_inputs']
               + self.counts['step_errors'])
        skipped = self.counts['skipped_no_joint_state'] + self.counts['skipped_stale_joint_state']
        dropped = self.layout.dropped + self.gate.dropped_stale
        warn = (skipped or dropped or self.counts['fallbacks']
                or self.counts['model_rejections']
                or self.camera_pose_status == camera_pose.POSE_MISMATCH)
        level = diagnostics.ERROR if bad else (diagnostics.WARN if warn else diagnostics.OK)
        values = dict(self.counts, **self.grid.counters(), **self.gate.counters(),
                      **self.layout.counters(), image_source=self.image_source,
                      action_rate_hz=self.action_rate_hz,
                      mode=self.mode, episode_policy=self.runtime.episode_policy,
                      model_version=self.runtime.version,
                      last_rejection='; '.join(self._last_rejection.values()),
                      camera_pose=self.camera_pose_status)
        self.diag_pub.publish(diagnostics.diagnostic_array(
            self, 'policy', values,
            message=f"{self.counts['actions_published']} actions ("
                    f"{self.counts['actions_actor']} actor, {self.counts['actions_cem']} cem), "
                    f'{skipped} skipped, {bad} bad',
            level=level, hardware_id='onnx'))


def main(args=None):
    """Run the policy node; return the exit code (1 when a model cannot be loaded)."""
    return spin_node(PolicyNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
