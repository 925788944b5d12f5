"""One recorded episode as a Rerun recording (``.rrd``) for a person without ROS: ``awopt view``.

The recording combines the two things the logger writes per episode:

- from the run directory's Minari dataset (:func:`awopt_ros.core.dataset.load_episodes`): the
  policy image of every step, the proprioception, the logged action and the actor's own
  (noise-free) action, the success probability of the simulator's ground truth and of the
  camera success classifier, the reward, the policy that acted, and, where the dataset has
  them, the operator's ``label``, ``discarded`` flag, ``notes`` and ``intervention`` steps
  (all read tolerant of their absence); a state task (insertion) gives its state, residual and
  P-controller command instead of images and proprioception;
- from the episode's bag (``<run>/bags/episode_NNNN``, :func:`awopt_ros.core.bag.read_messages`,
  deserialised with :func:`awopt_ros.core.bag.default_typestore`): the camera frames (the
  ``<camera_ns>/color/image_raw`` topic; JPEG-compressed in the recording unless lossless is
  asked for), the joint states, the wrist wrench (insertion), the episode events and the
  diagnostics.

Entities (paths in the recording; scalar entities hold one ``Scalars`` row per time with the
series names of :data:`SERIES`):

============================  =====================================================
``/camera/image``             bag camera frames (EncodedImage JPEG, or Image rgb8)
``/policy/image``             dataset policy image (Image, S x S rgb8), T+1 rows
``/action/continuous``        logged action dx, dy, dz (m), dyaw (rad), T rows
``/action/discrete``          logged open, close, terminate bits, T rows
``/action/noise_free/...``    the actor's action before exploration noise (where recorded)
``/action/policy/...``        on intervention steps: the policy's own action, replaced by
                              the operator's (the logged action)
``/proprio/position``         ee_x, ee_y, ee_z (m); ``/proprio/yaw`` sin, cos;
                              ``/proprio/gripper`` gripper_closed
``/success/ground_truth``     simulator success probability, T+1 rows
``/success/classifier``       success classifier probability (finite rows only)
``/reward``                   reward, T rows; ``/intervention`` 0/1 per step (when recorded)
``/policy/id``                policy id per step (``core.dataset.POLICY_IDS``)
``/joints/position``          bag joint states (rad)
``/state/...``, ``/command``  state task: state groups, P-controller command (m)
``/action/residual``          state task: the residual action
``/wrench/force``, ``torque`` state task: bag wrist wrench (N, N m)
``/log/episode``              TextLog: start, policy changes, interventions, outcome, label,
                              discard, notes; ``/log/events`` the bag's /episode/event;
                              ``/log/diagnostics`` the bag's /diagnostics
``/summary``                  TextDocument (markdown): the episode at a glance
============================  =====================================================

Timelines: ``step`` (sequence: observation k and action k are at step k; T+1 observations,
T actions) and ``ros_time`` (the message header stamp, or the bag log time for messages
without a header: a duration from the clock's zero in simulated time, a timestamp when the
stamps are wall clock). Bag messages between two policy steps are at the earlier step; those
recorded before the first step (the logger keeps 1 s before an episode starts) have only
``ros_time``. A blueprint (:func:`blueprint`) lays out camera, policy image, summary, the
plots and the log.

Nothing leaves the machine. This writer only writes a file (no socket); Rerun's usage
analytics and its check for a newer release run in its viewer. ``awopt view`` (this process and
the viewer ``--spawn`` starts) runs with :func:`analytics_off_env`: ``CI`` set, which Rerun's
analytics pipeline reads as "off", and the variables that would force analytics or
OpenTelemetry export on removed; the spawned viewer also gets a private state directory
(:func:`viewer_state_dir`) whose settings turn the update check off, and its local server
listens on 127.0.0.1 only. A viewer a user starts by hand (``rerun FILE.rrd``) uses the user's
own settings: ``rerun analytics disable`` once, and "check for updates on startup" off in its
settings, keep it on the machine too.
"""
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from awopt_ros.core import spec

APPLICATION_ID = 'awopt_ros'
#: Timelines of the recording.
STEP = 'step'
ROS_TIME = 'ros_time'
#: Stamps above this (s, 1973) are wall clock (a ``timestamp`` timeline); below, simulated
#: time from the clock's zero (a ``duration`` timeline).
WALL_CLOCK_MIN_S = 1.0e8
#: Default JPEG quality of camera frames in the recording (0: lossless rgb8).
DEFAULT_JPEG_QUALITY = 90
#: Environment variables that turn Rerun's analytics on despite its configuration, or that
#: turn on its OpenTelemetry trace export; removed by :func:`analytics_off_env`.
ANALYTICS_ON_VARS = ('FORCE_RERUN_ANALYTICS', 'TELEMETRY_ENABLED', 'RERUN_TELEMETRY_ENDPOINT',
                     'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT')
#: Policy ids of the dataset (``core.dataset.POLICY_IDS``, plus 'operator' for interventions
#: where the dataset does not define it yet) -> name.
_POLICY_NAMES = {0: 'scripted', 1: 'actor', 2: 'cem', 3: 'other', 4: 'residual',
                 5: 'p_controller', 6: 'operator'}
#: Series names of the scalar entities.
SERIES = {
    '/action/continuous': spec.ACTION_NAMES[spec.CONTINUOUS],
    '/action/discrete': spec.ACTION_NAMES[spec.DISCRETE],
    '/action/noise_free/continuous': tuple(f'{n} (noise-free)'
                                           for n in spec.ACTION_NAMES[spec.CONTINUOUS]),
    '/action/noise_free/discrete': tuple(f'{n} (noise-free)'
                                         for n in spec.ACTION_NAMES[spec.DISCRETE]),
    '/action/policy/continuous': tuple(f'{n} (policy, replaced)'
                                       for n in spec.ACTION_NAMES[spec.CONTINUOUS]),
    '/action/policy/discrete': tuple(f'{n} (policy, replaced)'
                                     for n in spec.ACTION_NAMES[spec.DISCRETE]),
    '/proprio/position': spec.PROPRIO_NAMES[0:3],
    '/proprio/yaw': spec.PROPRIO_NAMES[3:5],
    '/proprio/gripper': spec.PROPRIO_NAMES[5:6],
    '/success/ground_truth': ('ground truth',),
    '/success/classifier': ('classifier',),
    '/reward': ('reward',),
    '/intervention': ('intervention',),
    '/policy/id': ('policy id',),
    '/command': ('command_x', 'command_y', 'command_z'),
    '/wrench/force': ('force_x', 'force_y', 'force_z'),
    '/wrench/torque': ('torque_x', 'torque_y', 'torque_z'),
}
#: State groups of the insertion state (``core.task.INSERTION_STATE_NAMES`` order).
STATE_GROUPS = (('rel', slice(0, 3), 'tip - goal (m)'), ('vel', slice(3, 6), 'velocity (m/s)'),
                ('force', slice(6, 9), 'force (N)'), ('torque', slice(9, 12), 'torque (N m)'),
                ('base', slice(12, 15), 'base (m)'))
#: Bag topics read besides the camera (the logger's names, ``nodes.logger``, which imports
#: rclpy: the viewer needs no ROS install).
JOINTS_TOPIC = '/joint_states'
WRENCH_TOPIC = '/force_torque_sensor_broadcaster/wrench'
EVENT_TOPIC = '/episode/event'
DIAGNOSTICS_TOPIC = '/diagnostics'
#: ``diagnostic_msgs/DiagnosticStatus`` level -> Rerun TextLog level.
_DIAGNOSTIC_LEVELS = {0: 'DEBUG', 1: 'WARN', 2: 'ERROR', 3: 'WARN'}


def analytics_off_env(env=None):
    """Return a copy of ``env`` (default ``os.environ``) in which Rerun collects no usage
    analytics and exports no traces.

    Rerun's analytics pipeline (its ``re_analytics`` crate) starts only in the viewer, and
    not when the analytics config says off (``rerun analytics disable``) or when ``CI`` is
    set, unless ``FORCE_RERUN_ANALYTICS`` is truthy; the SDK's OpenTelemetry export needs
    ``TELEMETRY_ENABLED``. So: ``CI`` is set (kept if already set) and
    :data:`ANALYTICS_ON_VARS` are removed.
    """
    out = dict(os.environ if env is None else env)
    for name in ANALYTICS_ON_VARS:
        out.pop(name, None)
    out.setdefault('CI', '1')
    return out


def disable_analytics():
    """Apply :func:`analytics_off_env` to this process's environment (before rerun is
    imported: children such as a spawned viewer inherit it)."""
    env = analytics_off_env()
    for name in ANALYTICS_ON_VARS:
        os.environ.pop(name, None)
    os.environ['CI'] = env['CI']


# ---------------------------------------------------------------------------------------
# Bag


def _stamp_s(msg, log_ns):
    header = getattr(msg, 'header', None)
    stamp = getattr(header, 'stamp', None)
    if stamp is not None and (stamp.sec or stamp.nanosec):
        return stamp.sec + stamp.nanosec * 1e-9
    return log_ns * 1e-9


def image_array(msg):
    """Return a ``sensor_msgs/Image`` (rosbags message) as an (H, W, 3) uint8 RGB array.

    Encodings rgb8, bgr8, rgba8, bgra8 and mono8 are converted (row padding of ``step``
    dropped).

    Raises:
        ValueError: another encoding, or data shorter than height x step.
    """
    channels = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
    encoding = str(msg.encoding).lower()
    if encoding not in channels:
        raise ValueError(f'image encoding {msg.encoding!r} is not shown (rgb8, bgr8, rgba8, '
                         'bgra8, mono8 are)')
    ch, h, w, step = channels[encoding], int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray)
                         else msg.data.tobytes(), dtype=np.uint8)
    if data.size < h * step or step < w * ch:
        raise ValueError(f'image data has {data.size} bytes, expected {h} x {step}')
    img = data[:h * step].reshape(h, step)[:, :w * ch].reshape(h, w, ch)
    if encoding.startswith('bgr'):
        img = img[..., [2, 1, 0]]
    elif ch == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def camera_topic_of(topics):
    """Return the camera colour topic among ``topics`` ({name: msgtype}): the one named
    ``<camera_ns>/color/image_raw`` (realsense-ros names, ``core.robot_names``), else None."""
    for name, msgtype in sorted(topics.items()):
        if name.endswith('/color/image_raw') and msgtype == 'sensor_msgs/msg/Image':
            return name
    return None


def bag_metadata(bag_dir):
    """Return the ``custom_data`` mapping of a bag's ``metadata.yaml`` (str -> str; empty when
    there is none, e.g. a bag cut short by a crash)."""
    import yaml
    path = Path(bag_dir) / 'metadata.yaml'
    if not path.is_file():
        return {}
    try:
        info = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    custom = (info.get('rosbag2_bagfile_information') or {}).get('custom_data') or {}
    return {str(k): str(v) for k, v in custom.items()}


def read_bag(bag_dir, camera_topic=None, typestore=None):
    """Read what the viewer shows from one episode's bag.

    Args:
        bag_dir: bag directory (or ``.mcap`` file); complete, older (per-message zstd) or cut
            short by a crash (what can be read).
        camera_topic: the camera image topic; None: :func:`camera_topic_of` the bag's topics.
        typestore: rosbags type store (default :func:`awopt_ros.core.bag.default_typestore`).

    Returns:
        dict with ``camera_topic`` (str or None), ``camera`` [(stamp_s, (H, W, 3) uint8)],
        ``joints`` [(stamp_s, names tuple, positions (N,) float64)], ``wrench``
        [(stamp_s, force (3,), torque (3,))], ``events`` [(stamp_s, text)],
        ``diagnostics`` [(stamp_s, level int, name, message)], ``skipped`` (list of str: why
        messages were left out), in bag order.

    Raises:
        FileNotFoundError: no ``.mcap`` file there.
    """
    from awopt_ros.core.bag import default_typestore, read_messages
    messages = read_messages(bag_dir)
    topics = {}
    for topic, msgtype, _, _ in messages:
        topics.setdefault(topic, msgtype)
    camera_topic = camera_topic or camera_topic_of(topics)
    typestore = typestore or default_typestore()
    wanted = {camera_topic: 'camera', JOINTS_TOPIC: 'joints', WRENCH_TOPIC: 'wrench',
              EVENT_TOPIC: 'events', DIAGNOSTICS_TOPIC: 'diagnostics'}
    out = {'camera_topic': camera_topic if camera_topic in topics else None, 'camera': [],
           'joints': [], 'wrench': [], 'events': [], 'diagnostics': [], 'skipped': []}
    for topic, msgtype, log_ns, data in messages:
        kind = wanted.get(topic)
        if kind is None or not msgtype:
            continue
        try:
            msg = typestore.deserialize_cdr(data, msgtype)
        except Exception as exc:  # noqa: BLE001 - one bad message is skipped, not fatal
            out['skipped'].append(f'{topic}: cannot deserialise a {msgtype}: {exc}')
            continue
        stamp = _stamp_s(msg, log_ns)
        if kind == 'camera':
            try:
                out['camera'].append((stamp, image_array(msg)))
            except ValueError as exc:
                out['skipped'].append(f'{topic}: {exc}')
        elif kind == 'joints':
            out['joints'].append((stamp, tuple(msg.name),
                                  np.asarray(msg.position, dtype=np.float64)))
        elif kind == 'wrench':
            w = msg.wrench
            out['wrench'].append((stamp, np.array([w.force.x, w.force.y, w.force.z]),
                                  np.array([w.torque.x, w.torque.y, w.torque.z])))
        elif kind == 'events':
            out['events'].append((stamp, str(msg.data)))
        elif kind == 'diagnostics':
            for status in msg.status:
                level = status.level
                level = (level[0] if isinstance(level, (bytes, bytearray)) and level
                         else int(level or 0))
                out['diagnostics'].append((stamp, level, str(status.name),
                                           str(status.message)))
    return out


# ---------------------------------------------------------------------------------------
# Episode -> recording


def outcome_of(episode):
    """Return 'success', 'terminated' or 'truncated' for a loaded episode dict (from its
    recorded rewards and flags; an operator label is shown beside it, never instead)."""
    from awopt_ros.learning.plot_episode import outcome_of as recorded_outcome
    return recorded_outcome(episode)


def _notes(episode):
    out = []
    for note in episode.get('notes') or []:
        if isinstance(note, dict):
            note = note.get('note', note.get('text', json.dumps(note)))
        out.append(str(note))
    return out


def _policy_name(pid):
    return _POLICY_NAMES.get(int(pid), f'id {int(pid)}')


def _intervention(episode, steps):
    raw = episode.get('intervention')
    if raw is None:
        return None
    arr = np.asarray(raw, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return None
    return arr[:steps]


def summary_markdown(episode, dataset_id='', bag_dir=None, bag=None):
    """Return the episode at a glance (markdown) for the ``/summary`` entity."""
    steps = len(episode['actions'])
    lines = [f'# Episode {episode.get("episode")} of {dataset_id or "the dataset"}', '',
             f'- dataset index: {episode.get("id")}, seed: {episode.get("seed")}',
             f'- steps: {steps}, recorded outcome: **{outcome_of(episode)}**'
             f' (return {float(np.sum(episode["rewards"])):.3g})',
             f'- reward source: {episode.get("reward_source", "ground_truth")}, ground-truth '
             f'success: {episode.get("ground_truth_success")}']
    policies = episode.get('policy')
    if policies is not None and len(policies):
        used = sorted({_policy_name(p) for p in np.asarray(policies)})
        lines.append(f'- policy: {", ".join(used)}')
    label = episode.get('label')
    lines.append(f'- operator label: {label if label is not None else "none"}'
                 + (', **discarded** (left out of training)' if episode.get('discarded')
                    else ''))
    inter = _intervention(episode, steps)
    if inter is not None:
        lines.append(f'- intervention steps: {int(np.count_nonzero(inter > 0))} of {steps}')
    notes = _notes(episode)
    if notes:
        lines += ['', '## Notes', ''] + [f'- {n}' for n in notes]
    lines += ['', '## Sources', '', f'- bag: {bag_dir if bag_dir else "none"}']
    if bag is not None:
        lines.append(f'- camera: {bag["camera_topic"] or "no camera topic"} '
                     f'({len(bag["camera"])} frames)')
    return '\n'.join(lines) + '\n'


def blueprint(state_task=False, has_camera=True):
    """Return the recording's default layout (``rerun.blueprint.Blueprint``): images and the
    summary on the left, the plots in the middle, the log on the right; the time panel on
    the ``step`` timeline."""
    import rerun.blueprint as rrb
    left = [rrb.Spatial2DView(origin='/camera', name='camera')] if has_camera else []
    if state_task:
        left += [rrb.TextDocumentView(origin='/summary', name='episode')]
        plots = [rrb.TimeSeriesView(origin=f'/state/{name}', name=f'state: {title}')
                 for name, _, title in STATE_GROUPS[:4]]
        plots += [rrb.TimeSeriesView(contents=['/action/residual', '/command'],
                                     name='residual and P command'),
                  rrb.TimeSeriesView(origin='/wrench', name='wrist wrench (bag)'),
                  rrb.TimeSeriesView(contents=['/success/**', '/reward', '/intervention'],
                                     name='success probability and reward')]
    else:
        left += [rrb.Spatial2DView(origin='/policy/image', name='policy image'),
                 rrb.TextDocumentView(origin='/summary', name='episode')]
        plots = [rrb.TimeSeriesView(contents=['/action/continuous',
                                              '/action/noise_free/continuous',
                                              '/action/policy/continuous'],
                                    name='action (m, rad)'),
                 rrb.TimeSeriesView(contents=['/action/discrete', '/action/noise_free/discrete',
                                              '/action/policy/discrete'],
                                    name='open, close, terminate'),
                 rrb.TimeSeriesView(contents=['/success/**', '/reward', '/intervention'],
                                    name='success probability and reward'),
                 rrb.TimeSeriesView(origin='/proprio', name='tool (m) and gripper'),
                 rrb.TimeSeriesView(origin='/joints', name='joint positions (rad)')]
    return rrb.Blueprint(
        rrb.Horizontal(rrb.Vertical(*left), rrb.Vertical(*plots),
                       rrb.TextLogView(origin='/log', name='log'), column_shares=[2, 3, 2]),
        rrb.TimePanel(timeline=STEP))


class _Writer:
    """Log calls on one ``RecordingStream`` with both timelines set."""

    def __init__(self, rec, wall_clock):
        self.rec = rec
        self.wall_clock = wall_clock
        self.named = set()

    def at(self, step=None, stamp_s=None):
        self.rec.reset_time()
        if step is not None:
            self.rec.set_time(STEP, sequence=int(step))
        if stamp_s is not None and math.isfinite(stamp_s):
            if self.wall_clock:
                self.rec.set_time(ROS_TIME, timestamp=float(stamp_s))
            else:
                self.rec.set_time(ROS_TIME, duration=float(stamp_s))

    def scalars(self, path, values, names=None):
        """Log ``values`` (scalar or (N,)) at ``path``; the series names (``names``, else
        :data:`SERIES`) go in once, static, with the first values."""
        import rerun as rr
        values = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if path not in self.named:
            self.named.add(path)
            names = names or SERIES.get(path)
            if names is not None:
                self.rec.log(path, rr.SeriesLines(names=list(names)[:len(values)]), static=True)
        self.rec.log(path, rr.Scalars(values))


def _step_of(stamps, stamp):
    """Index of the last observation stamp <= ``stamp`` (None before the first)."""
    if not len(stamps) or not (stamp >= stamps[0] - 1e-9):
        return None
    return int(np.searchsorted(stamps, stamp + 1e-9, side='right') - 1)


def write_episode(episode, out_path, *, bag=None, dataset_id='', bag_dir=None,
                  jpeg_quality=DEFAULT_JPEG_QUALITY, progress=False):
    """Write ``episode`` (and its ``bag``) as a Rerun recording.

    Args:
        episode: a :func:`awopt_ros.core.dataset.load_episodes` dict (image task or state
            task; ``label``, ``discarded``, ``notes``, ``intervention`` used when present).
        out_path: ``.rrd`` path; written to ``<out_path>.partial`` first and renamed when
            complete (an existing file at ``out_path`` is replaced: check before).
        bag: :func:`read_bag` of the episode's bag, or None (dataset only).
        dataset_id: shown in the summary; part of the recording id.
        bag_dir: shown in the summary.
        jpeg_quality: 1..100: camera frames JPEG-compressed at this quality; 0: lossless.
        progress: a tqdm bar over the camera frames.

    Returns:
        dict of counts: ``steps``, ``policy_images``, ``camera_frames``, ``joint_states``.
    """
    import rerun as rr

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + '.partial')
    actions = np.asarray(episode['actions'], dtype=np.float64)
    steps = len(actions)
    stamps = np.asarray(episode.get('stamp_s', []), dtype=np.float64).reshape(-1)
    if len(stamps) != steps + 1 or not np.all(np.isfinite(stamps)):
        stamps = np.full(steps + 1, np.nan)
    finite = stamps[np.isfinite(stamps)]
    bag_stamps = [s for key in ('camera', 'joints', 'wrench')
                  for s, *_ in (bag or {}).get(key, [])]
    wall_clock = bool(np.any(finite > WALL_CLOCK_MIN_S)) or any(
        s > WALL_CLOCK_MIN_S for s in bag_stamps)
    state_task = 'state' in episode
    has_camera = bool(bag and bag.get('camera'))
    number = episode.get('episode')
    rec = rr.RecordingStream(APPLICATION_ID,
                             recording_id=f'{dataset_id or "dataset"}/index_{episode.get("id")}'
                                          f'/episode_{number}')
    rec.set_log_time_enabled(False)
    rec.set_log_tick_enabled(False)
    rec.save(partial, default_blueprint=blueprint(state_task, has_camera))
    w = _Writer(rec, wall_clock)
    try:
        rec.send_recording_name(f'{dataset_id} episode {number}'.strip())
        rec.log('/summary', rr.TextDocument(summary_markdown(episode, dataset_id, bag_dir, bag),
                                            media_type=rr.MediaType.MARKDOWN), static=True)
        counts = {'steps': steps, 'policy_images': 0, 'camera_frames': 0, 'joint_states': 0}
        _log_steps(w, episode, actions, stamps, state_task, counts)
        if bag is not None:
            _log_bag(w, bag, stamps, jpeg_quality, progress, counts)
        rec.flush()
    finally:
        rec.disconnect()
    os.replace(partial, out_path)
    return counts


def _log_steps(w, episode, actions, stamps, state_task, counts):
    import rerun as rr

    from awopt_ros.core.task import INSERTION_STATE_NAMES
    rec = w.rec
    steps = len(actions)
    sp = np.asarray(episode.get('success_probability', []), dtype=np.float64).reshape(-1)
    scores = np.asarray(episode.get('success_classifier_probability', np.full(steps + 1, np.nan)),
                        dtype=np.float64).reshape(-1)
    policies = np.asarray(episode.get('policy', []), dtype=np.int64).reshape(-1)
    noise_free = episode.get('noise_free_action')
    noise_free = (np.asarray(noise_free, dtype=np.float64) if noise_free is not None else None)
    inter = _intervention(episode, steps + 1)
    own = episode.get('policy_action')
    own = np.asarray(own, dtype=np.float64) if own is not None else None
    rewards = np.asarray(episode['rewards'], dtype=np.float64)
    w.at(0, stamps[0])
    rec.log('/log/episode', rr.TextLog(
        f'episode {episode.get("episode")} (seed {episode.get("seed")}) starts: {steps} steps '
        'recorded', level='INFO'))
    last_policy = None
    was_intervening = False
    for k in range(steps + 1):
        w.at(k, stamps[k])
        if state_task:
            state = np.asarray(episode['state'][k], dtype=np.float64)
            if state.size == len(INSERTION_STATE_NAMES):
                for name, sl, _ in STATE_GROUPS:
                    w.scalars(f'/state/{name}', state[sl], INSERTION_STATE_NAMES[sl])
            else:
                w.scalars('/state/all', state, [f'state[{i}]' for i in range(state.size)])
            command = episode.get('command_m')
            if command is not None and len(command) > k and np.all(np.isfinite(command[k])):
                w.scalars('/command', command[k])
        else:
            rec.log('/policy/image', rr.Image(np.asarray(episode['image'][k], dtype=np.uint8),
                                              color_model='RGB'))
            counts['policy_images'] += 1
            proprio = np.asarray(episode['proprio'][k], dtype=np.float64)
            w.scalars('/proprio/position', proprio[0:3])
            w.scalars('/proprio/yaw', proprio[3:5])
            w.scalars('/proprio/gripper', proprio[5:6])
            if noise_free is not None and k < len(noise_free) and np.all(
                    np.isfinite(noise_free[k])):
                w.scalars('/action/noise_free/continuous', noise_free[k][spec.CONTINUOUS])
                w.scalars('/action/noise_free/discrete', noise_free[k][spec.DISCRETE])
        if k < len(sp) and math.isfinite(sp[k]):
            w.scalars('/success/ground_truth', sp[k])
        if k < len(scores) and math.isfinite(scores[k]):
            w.scalars('/success/classifier', scores[k])
        if k < len(policies):
            w.scalars('/policy/id', policies[k])
            if policies[k] != last_policy and k < steps:
                rec.log('/log/episode', rr.TextLog(
                    f'step {k}: policy {_policy_name(policies[k])}', level='DEBUG'))
                last_policy = policies[k]
        if inter is not None and k < len(inter):
            w.scalars('/intervention', float(inter[k] > 0))
            if (inter[k] > 0) != was_intervening:
                was_intervening = bool(inter[k] > 0)
                rec.log('/log/episode', rr.TextLog(
                    f'step {k}: operator intervention '
                    f'{"starts" if was_intervening else "ends"}', level='WARN'))
        if k < steps:
            if state_task:
                w.scalars('/action/residual', actions[k],
                          [f'residual[{i}]' for i in range(actions.shape[1])])
            else:
                w.scalars('/action/continuous', actions[k][spec.CONTINUOUS])
                w.scalars('/action/discrete', actions[k][spec.DISCRETE])
                if own is not None and k < len(own) and np.all(np.isfinite(own[k])):
                    w.scalars('/action/policy/continuous', own[k][spec.CONTINUOUS])
                    w.scalars('/action/policy/discrete', own[k][spec.DISCRETE])
            w.scalars('/reward', rewards[k])
    w.at(steps, stamps[steps])
    outcome = outcome_of(episode)
    rec.log('/log/episode', rr.TextLog(
        f'recorded outcome: {outcome} after {steps} steps (return {float(rewards.sum()):.3g})',
        level='INFO' if outcome == 'success' else 'WARN'))
    label = episode.get('label')
    if label is not None:
        rec.log('/log/episode', rr.TextLog(f'operator label: {label}', level='INFO'))
    if episode.get('discarded'):
        rec.log('/log/episode', rr.TextLog('discarded by the operator (left out of training)',
                                           level='WARN'))
    for note in _notes(episode):
        rec.log('/log/episode', rr.TextLog(f'note: {note}', level='INFO'))


def _log_bag(w, bag, stamps, jpeg_quality, progress, counts):
    import rerun as rr
    rec = w.rec
    obs = stamps if np.all(np.isfinite(stamps)) else np.array([])
    frames = bag.get('camera', [])
    if progress and len(frames) > 50:
        from tqdm import tqdm
        frames = tqdm(frames, desc='camera frames', unit='frame', leave=False)
    for stamp, img in frames:
        w.at(_step_of(obs, stamp), stamp)
        image = rr.Image(img, color_model='RGB')
        rec.log('/camera/image', image.compress(jpeg_quality) if jpeg_quality else image)
        counts['camera_frames'] += 1
    names = None
    for stamp, joint_names, positions in bag.get('joints', []):
        names = names or joint_names
        if joint_names != names:
            continue
        w.at(_step_of(obs, stamp), stamp)
        w.scalars('/joints/position', positions, names)
        counts['joint_states'] += 1
    for stamp, force, torque in bag.get('wrench', []):
        w.at(_step_of(obs, stamp), stamp)
        w.scalars('/wrench/force', force)
        w.scalars('/wrench/torque', torque)
    for stamp, text in bag.get('events', []):
        w.at(_step_of(obs, stamp), stamp)
        rec.log('/log/events', rr.TextLog(text, level='INFO'))
    for stamp, level, name, message in bag.get('diagnostics', []):
        w.at(_step_of(obs, stamp), stamp)
        rec.log('/log/diagnostics', rr.TextLog(f'{name}: {message}',
                                               level=_DIAGNOSTIC_LEVELS.get(level, 'WARN')))


#: The viewer's persisted app options that :func:`viewer_state_dir` seeds: no check for a newer
#: Rerun release at start (the viewer asks api.github.com otherwise); the rest stays default.
VIEWER_APP_OPTIONS = '(app_options:(check_for_updates_on_startup:false))'


def viewer_state_dir(root=None):
    """Return a fresh directory for the spawned viewer's persisted state (its
    ``XDG_DATA_HOME``), seeded with :data:`VIEWER_APP_OPTIONS`; the user's own Rerun state and
    settings are left alone. ``root``: parent directory (default: the system temp dir)."""
    import tempfile
    state = Path(tempfile.mkdtemp(prefix='awopt-rerun-viewer-', dir=root))
    (state / 'rerun').mkdir()
    (state / 'rerun' / 'app.ron').write_text('{\n    "app": ' + json.dumps(VIEWER_APP_OPTIONS)
                                             + ',\n}\n')
    return state


def viewer_command(path, extra=()):
    """Return the command that opens the Rerun viewer on ``path``: ``python -m rerun_cli``
    with its local server on 127.0.0.1 (never on every interface) on a free port."""
    return [sys.executable, '-m', 'rerun_cli', '--bind', '127.0.0.1', '--port', 'auto',
            *map(str, extra), str(path)]


def viewer_env(state_dir, env=None):
    """Return the viewer's environment: :func:`analytics_off_env` and ``XDG_DATA_HOME`` =
    ``state_dir`` (:func:`viewer_state_dir`)."""
    out = analytics_off_env(env)
    out['XDG_DATA_HOME'] = str(state_dir)
    return out


def spawn_viewer(path, popen=None):
    """Start the Rerun viewer on ``path`` detached from this process (its own session), with
    :func:`viewer_env` (no usage analytics, no update check) and :func:`viewer_command`; its
    output goes to ``viewer.log`` in its state directory (``XDG_DATA_HOME`` of its env).
    ``popen``: ``subprocess.Popen`` or a stand-in (tests). Returns ``(process, log path)``."""
    import subprocess
    popen = popen or subprocess.Popen
    state = viewer_state_dir()
    log_path = state / 'viewer.log'
    with open(log_path, 'ab') as log:      # its own log, not the terminal
        proc = popen(viewer_command(path), env=viewer_env(state), stdin=subprocess.DEVNULL,
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log_path


def find_bag(run, episode, episodes):
    """Return the bag directory of ``episode`` under ``run/bags`` and a note (str or None).

    The logger names a bag ``episode_NNNN`` and, when that exists already (a second recording
    into the same run directory numbered its episodes from 1 again), ``episode_NNNN_1``,
    ``_2``, ... in recording order. A bag is the episode's when its ``metadata.yaml`` seed
    (``awopt_seed``) is the episode's; among the dataset's episodes with the same number and
    seed, the k-th (by index) gets the k-th such bag. Returns ``(None, note)`` when none fits.
    """
    number, seed = int(episode['episode']), episode['seed']
    base = f'episode_{number:04d}'
    pattern = re.compile(rf'{base}(_(\d+))?')
    found = []
    for path in (run / 'bags').glob(f'{base}*'):
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and any(path.glob('*.mcap')):
            found.append((int(match.group(2) or 0), path))
    found = [path for _, path in sorted(found)]
    if not found:
        return None, f'no bag at {run / "bags" / base}: camera frames and joint states left out'
    if seed is None:
        return found[0], None
    fits = [p for p in found if bag_metadata(p).get('awopt_seed', str(seed)) == str(seed)]
    if not fits:
        return None, (f'the bags {", ".join(p.name for p in found)} hold other episodes (seed '
                      f'{", ".join(bag_metadata(p).get("awopt_seed", "?") for p in found)}, not '
                      f'{seed}): bag left out')
    same = [ep['id'] for ep in episodes if ep['episode'] == number and ep['seed'] == seed]
    k = same.index(episode['id']) if episode['id'] in same else 0
    return fits[min(k, len(fits) - 1)], None
