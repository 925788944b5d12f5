"""Episode replay without ROS: which messages go out, on which topic, with which QoS, when.

``awopt replay`` (:mod:`awopt_ros.replay_cli`, the node :mod:`awopt_ros.ros.bag_player`)
republishes recorded bags on their topics. Everything it decides is here, importable and
tested without rclpy:

* :func:`bag_dirs`: the bags a command-line path names (a bag directory, its ``.mcap`` file,
  a ``bags/`` directory or a run directory with ``bags/``).
* :func:`load_recording`: the messages of those bags (:func:`awopt_ros.core.bag.read_messages`:
  plain CDR, older per-message zstd bags decompressed) in send-time order, after topic
  selection (:class:`Selection`) and remapping (:func:`remaps_for`), with each topic's message
  type and QoS (:func:`topic_qos`).
* :class:`Playback`: the schedule. A message with send time ``T`` (ns; its log time, or with
  ``--timing stamp`` its header stamp: :func:`send_time_ns`) goes out when the playback
  position reaches ``T``; the position advances ``rate`` times as fast as the wall clock while
  playing, stands still while paused, and jumps to a message on a step. ``/clock`` follows the
  position (:meth:`Playback.clock_ns`), so that consumers with ``use_sim_time`` see the
  recorded time: a camera frame arrives as old (by its header stamp) as when it was recorded,
  which the camera pipeline's and the policy's ``max_frame_age_s`` test.

Several bags (or ``--loop``) play one after the other, each on its own recorded timeline: the
next bag's first message follows the previous bag's last one at once, and ``/clock`` jumps to
the new bag's time: forward for the episodes of one run (its simulated or wall clock goes on),
backward for a new ``--loop`` pass or bags of different runs (:func:`timeline_goes_back`).
Nodes that keep the newest stamp they saw (the camera pipeline and the policy drop frames not
newer than the last) would drop every frame after such a jump, so ``awopt replay`` refuses it
when it starts one of :data:`FRAME_GATED_NODES`.

Timing: the log time of a bag is the time at which the logger's callback ran, by the logger's
clock (simulated time in lockstep and faster-than-real-time runs). A logger busy for a moment
logs a few messages with the same, later time: replayed by log time (the default, as ``ros2 bag
play``), such camera frames reach a node together and older than they reached the live one
(the policy, which keeps only the newest frame, then acts on the last of them only).
``--timing stamp`` sends stamped messages at their header stamps instead (when those lie
within :data:`STAMP_WINDOW_NS` before the log time), which gives the frames back their own
times. :func:`input_ages_s` measures the largest frame and joint-state age a replay gives, and
the replay raises the started nodes' ``max_frame_age_s`` (and the policy's
``max_joint_state_age_s``) above it.

Messages are never decoded here (only header stamps are read, from the CDR bytes): the player
publishes the recorded bytes as they are.
"""
import struct
from dataclasses import dataclass
from pathlib import Path

from awopt_ros.core.bag import scan_mcap

#: Topic prefix under which the recorded outputs of nodes started with ``--nodes`` go out.
RECORDED_PREFIX = '/recorded'
#: The nodes ``--nodes`` may start, with the topics each publishes (fixed names in the
#: nodes' code; ``docs/INTERFACES.md``). Their recorded messages are remapped to
#: ``/recorded/<topic>`` so that the fresh output can be compared with the recorded one.
NODE_OUTPUTS = {
    'camera_pipeline': ('/policy/image',),
    'policy': ('/policy/action', '/policy/decision', '/policy/model_info', '/policy/proprio'),
    'success_detector': ('/success_detector/classification', '/success_detector/success'),
    # the robot model, TF and markers for rviz (none of them is recorded)
    'robot_state': ('/robot_description', '/tf', '/tf_static', '/awopt/markers'),
}
#: Topics each of those nodes must have subscribed (when the recording has them, under the
#: default driver names) before the replay starts, so that it misses no message.
NODE_INPUTS = {
    'camera_pipeline': ('/camera/color/image_raw',),
    'policy': ('/camera/color/image_raw', '/joint_states', '/episode/event'),
    'success_detector': ('/episode/event',),
    'robot_state': ('/joint_states',),
}
#: The ``--nodes`` that drop frames not newer than the last they took (``FrameGate``): they
#: cannot run through a jump back of ``/clock`` (:func:`timeline_goes_back`).
FRAME_GATED_NODES = ('camera_pipeline', 'policy', 'success_detector')
#: Topics that the arm's driver executes (``arm_interface`` publishes them): replayed under
#: ``/recorded/<topic>`` unless a ``--remap`` names them, so that a replay on a ROS domain with
#: a robot driver moves nothing.
COMMAND_TOPICS = ('/arm_controller/joint_trajectory', '/forward_position_controller/commands',
                  '/gripper_controller/commands')
#: ``--timing``: 'log' sends each message at its log time (as ``ros2 bag play``); 'stamp'
#: sends a message whose first field is a ``std_msgs/Header`` at its header stamp when that
#: lies at most :data:`STAMP_WINDOW_NS` before its log time (see :func:`send_time_ns`).
TIMINGS = ('log', 'stamp')
#: The longest ``log time - stamp`` taken as the message's send time with ``--timing stamp``
#: (ns); a stamp further back (or after the log time) is on another clock: the log time counts.
STAMP_WINDOW_NS = 1_000_000_000
#: Latched topics (a late subscriber still gets the last message): transient local whatever
#: the bag says.
LATCHED_TOPICS = ('/episode/event', '/policy/model_info', '/insertion/goal')


@dataclass(frozen=True)
class QosSpec:
    """A topic's QoS as the player offers it: ``reliable`` (else best effort),
    ``transient_local`` (else volatile) and the history ``depth`` (keep last)."""

    reliable: bool = True
    transient_local: bool = False
    depth: int = 10


#: The logger's presets (:data:`awopt_ros.core.bag.QOS_PRESETS`) as :class:`QosSpec`.
QOS_PRESETS = {
    'sensor': QosSpec(reliable=False, transient_local=False, depth=5),
    'reliable': QosSpec(reliable=True, transient_local=False, depth=10),
    'latched': QosSpec(reliable=True, transient_local=True, depth=20),
}


@dataclass(frozen=True)
class Message:
    """One recorded message: ``topic`` (as published now, after remapping), ``source_topic``
    (as recorded), ``msgtype`` ('pkg/msg/Name'), ``log_time_ns``, ``data`` (plain CDR) and
    ``time_ns``, the recorded time at which the replay sends it (default: the log time; see
    :func:`send_time_ns`)."""

    topic: str
    source_topic: str
    msgtype: str
    log_time_ns: int
    data: bytes
    time_ns: int = None

    def __post_init__(self):
        if self.time_ns is None:
            object.__setattr__(self, 'time_ns', int(self.log_time_ns))


@dataclass
class Segment:
    """The messages of one bag (``path``), in send-time order.

    ``messages`` is the list while the segment is loaded; a segment of
    :func:`load_recording` holds none between :meth:`load` and :meth:`release` (``loader``
    reads the bag again), so that a replay of a long run keeps one bag in memory, not all.
    ``count``, ``first_ns``, ``last_ns`` (send times) and ``ages_ns`` (:func:`message_ages_ns`)
    are known without loading."""

    path: Path
    messages: list = None
    loader: object = None
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    ages_ns: tuple = None

    def __post_init__(self):
        if self.messages is not None:
            self._describe(self.messages)

    def _describe(self, messages):
        self.count = len(messages)
        if messages:
            self.first_ns, self.last_ns = messages[0].time_ns, messages[-1].time_ns
        self.ages_ns = message_ages_ns(messages)

    def load(self):
        """Return the messages (read with ``loader`` when not loaded)."""
        if self.messages is None:
            self.messages = self.loader()
        return self.messages

    def release(self):
        """Drop the messages when ``loader`` can read them again (no-op otherwise)."""
        if self.loader is not None:
            self.messages = None


@dataclass
class Recording:
    """What to replay: ``segments`` (one per bag, in order), ``topics`` {published topic:
    (msgtype, :class:`QosSpec`)} and ``remapped`` {recorded topic: published topic} (only
    the topics whose name changed)."""

    segments: list
    topics: dict
    remapped: dict

    @property
    def message_count(self):
        return sum(s.count for s in self.segments)


def bag_dirs(path):
    """Return the bag directories (sorted Paths) that ``path`` names: a bag directory (with a
    ``.mcap`` file), an ``.mcap`` file (its directory), a directory of bags or a run directory
    (its ``bags/``).

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no bag.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'{path} does not exist')
    if path.is_file():
        if path.suffix != '.mcap':
            raise FileNotFoundError(f'{path} is not a bag (.mcap file or bag directory)')
        return [path.parent]
    if any(path.glob('*.mcap')):
        return [path]
    for root in (path, path / 'bags'):
        if root.is_dir():
            found = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob('*.mcap')))
            if found:
                return found
    raise FileNotFoundError(f'no bag in {path} (a bag directory, a bags/ directory or a run '
                            'directory with bags/)')


def parse_remaps(items):
    """Return ``{from: to}`` of ``['FROM:=TO', ...]`` (absolute topic names).

    Raises:
        ValueError: an item not of the form ``/from:=/to``.
    """
    out = {}
    for item in items or ():
        src, sep, dst = str(item).partition(':=')
        src, dst = src.strip(), dst.strip()
        if not sep or not src.startswith('/') or not dst.startswith('/') or len(dst) < 2:
            raise ValueError(f'expects /FROM:=/TO (absolute topic names), got {item!r}')
        out[src] = dst
    return out


def parse_nodes(text):
    """Return the node names of ``'camera_pipeline,policy'`` (a tuple, in the given order,
    without duplicates; '' -> ()).

    Raises:
        ValueError: a name not in :data:`NODE_OUTPUTS`.
    """
    names = []
    for name in str(text or '').split(','):
        name = name.strip()
        if not name:
            continue
        if name not in NODE_OUTPUTS:
            raise ValueError(f'unknown node {name!r} (known: {", ".join(NODE_OUTPUTS)})')
        if name not in names:
            names.append(name)
    return tuple(names)


def remaps_for(nodes, remaps=None):
    """Return ``{recorded topic: published topic}``: the outputs of ``nodes`` (and, when
    there are any, ``/diagnostics``, where they report under their own names) and the
    :data:`COMMAND_TOPICS` to ``/recorded/<topic>``, then the user's ``remaps`` (which win)."""
    out = {t: RECORDED_PREFIX + t for t in COMMAND_TOPICS}
    for node in nodes:
        out.update((t, RECORDED_PREFIX + t) for t in NODE_OUTPUTS[node])
    if nodes:
        out['/diagnostics'] = RECORDED_PREFIX + '/diagnostics'
    out.update(remaps or {})
    return out


@dataclass
class Selection:
    """Topic selection: ``topics`` (recorded names; empty: all) minus ``exclude``."""

    topics: tuple = ()
    exclude: tuple = ()

    def keeps(self, topic):
        return (not self.topics or topic in self.topics) and topic not in self.exclude


def qos_from_profiles(profiles):
    """Return the :class:`QosSpec` of a bag's offered QoS profiles (rosbags ``Qos`` objects
    as :func:`rosbags.rosbag2.metadata.parse_qos` gives them; the first one counts), or None
    when there is none."""
    if not profiles:
        return None
    first = profiles[0]
    reliability = getattr(getattr(first, 'reliability', None), 'name', '')
    durability = getattr(getattr(first, 'durability', None), 'name', '')
    depth = int(getattr(first, 'depth', 0) or 0)
    return QosSpec(reliable=reliability.upper() != 'BEST_EFFORT',
                   transient_local=durability.upper() == 'TRANSIENT_LOCAL',
                   depth=depth if depth > 0 else 10)


def topic_qos(topic, offered=None, presets=None):
    """Return the :class:`QosSpec` to publish recorded ``topic`` with: the bag's ``offered``
    QoS (:func:`qos_from_profiles`) when it has one, else the preset that ``presets``
    ({topic: 'sensor' | 'reliable' | 'latched'}, the logger's table) names, else reliable.
    :data:`LATCHED_TOPICS` are transient local in any case."""
    spec = qos_from_profiles(offered)
    if spec is None:
        spec = QOS_PRESETS.get((presets or {}).get(topic), QOS_PRESETS['reliable'])
    if topic in LATCHED_TOPICS and not spec.transient_local:
        spec = QosSpec(reliable=True, transient_local=True, depth=max(spec.depth, 1))
    return spec


def _offered_profiles(channel):
    from rosbags.rosbag2.metadata import parse_qos
    text = (channel.metadata or {}).get('offered_qos_profiles', '')
    if not text:
        return []
    try:
        return parse_qos(text)
    except Exception:  # noqa: BLE001 - QoS is advisory: the presets apply without it
        return []


def _metadata_profiles(bag):
    """Return {topic: offered QoS profiles} from the bag's metadata.yaml ({} without one)."""
    meta = Path(bag) / 'metadata.yaml'
    if not meta.is_file():
        return {}
    import yaml
    from rosbags.rosbag2.metadata import parse_qos
    try:
        info = yaml.safe_load(meta.read_text())['rosbag2_bagfile_information']
        out = {}
        for entry in info.get('topics_with_message_count') or ():
            topic = entry['topic_metadata']
            raw = topic.get('offered_qos_profiles') or ''
            if isinstance(raw, list):
                raw = yaml.safe_dump(raw)
            out[topic['name']] = parse_qos(raw) if raw else []
        return out
    except Exception:  # noqa: BLE001 - a damaged metadata.yaml: the MCAP channels' QoS
        return {}


def load_recording(paths, *, selection=None, remaps=None, presets=None, timing='log'):
    """Read the bags of ``paths`` (each as :func:`bag_dirs` takes it) for a replay.

    Args:
        paths: command-line paths, in order.
        selection: :class:`Selection` of recorded topics (default: all).
        remaps: {recorded topic: published topic} (:func:`remaps_for`).
        presets: {recorded topic: logger QoS preset name}, used where a bag offers no QoS.
        timing: 'log' or 'stamp' (:func:`send_time_ns`).

    Returns:
        :class:`Recording`; each segment's messages sorted by send time (stable: file order
        among equal times).

    Raises:
        FileNotFoundError: a path without a bag.
        ValueError: nothing to replay (no message left after the selection), or two recorded
            topics remapped onto one topic of another type.
    """
    selection = selection or Selection()
    remaps = dict(remaps or {})
    if timing not in TIMINGS:
        raise ValueError(f'timing must be one of {TIMINGS}, got {timing!r}')
    typestore = None
    if timing == 'stamp':
        from awopt_ros.core.bag import default_typestore
        typestore = default_typestore()
    segments, topics, recorded = [], {}, set()
    for path in paths:
        for bag in bag_dirs(path):
            scan = scan_mcap(bag)
            meta_qos = _metadata_profiles(bag)
            types = {}
            for channel in scan['channels'].values():
                schema = scan['schemas'].get(channel.schema_id)
                msgtype = schema.name if schema else ''
                if not selection.keeps(channel.topic) or not msgtype:
                    continue
                types[channel.topic] = msgtype
                name = remaps.get(channel.topic, channel.topic)
                offered = meta_qos.get(channel.topic) or _offered_profiles(channel)
                spec = topic_qos(channel.topic, offered, presets)
                known = topics.get(name)
                if known is not None and known[0] != msgtype:
                    raise ValueError(f'{name}: recorded as {known[0]} and as {msgtype}')
                topics.setdefault(name, (msgtype, spec))
            stamped = {t: typestore is not None and has_header(m, typestore)
                       for t, m in types.items()}

            def loader(bag=bag, types=types, stamped=stamped, scan=None):
                scan = scan or scan_mcap(bag)
                messages = [Message(remaps.get(topic, topic), topic, msgtype, int(t),
                                    bytes(data), send_time_ns(t, data, stamped[topic], timing))
                            for topic, msgtype, t, data in _read(scan) if topic in types]
                messages.sort(key=lambda m: m.time_ns)
                return messages
            segment = Segment(Path(bag), loader(scan=scan), loader)
            del scan
            recorded.update(m.source_topic for m in segment.messages)
            if segments:            # the first bag stays loaded: the replay begins with it
                segment.release()
            if segment.count:
                segments.append(segment)
    if not segments:
        raise ValueError('nothing to replay: no message on the selected topics')
    remapped = {src: dst for src, dst in remaps.items() if src != dst and src in recorded}
    return Recording(segments, topics, remapped)


def has_header(msgtype, typestore):
    """True when ``msgtype``'s first field is a ``std_msgs/msg/Header`` (``typestore``:
    rosbags, :func:`awopt_ros.core.bag.default_typestore`); False for unknown types."""
    fields = typestore.fielddefs.get(msgtype)
    if not fields or not fields[1]:
        return False
    kind = fields[1][0][1]
    return len(kind) == 2 and kind[1] == 'std_msgs/msg/Header'


def send_time_ns(log_time_ns, data, stamped, timing='log'):
    """Return the recorded time (ns) at which a message is sent: its log time, or with
    ``timing`` 'stamp' and a ``stamped`` message (:func:`has_header`) its header stamp when
    that lies within :data:`STAMP_WINDOW_NS` before the log time (when the message was made,
    before the logger's callback ran: in a lockstep recording the logger logs a few camera
    frames together, later).

    Raises:
        ValueError: an unknown ``timing``.
    """
    if timing not in TIMINGS:
        raise ValueError(f'timing must be one of {TIMINGS}, got {timing!r}')
    if timing == 'log' or not stamped:
        return int(log_time_ns)
    try:
        stamp = header_stamp_ns(data)
    except ValueError:
        return int(log_time_ns)
    return stamp if 0 <= log_time_ns - stamp <= STAMP_WINDOW_NS else int(log_time_ns)


def timeline_goes_back(recording, loop=False):
    """Return True when ``/clock`` would go back during the replay: with ``loop`` (each pass
    starts again at the first message), or a bag that starts before the previous one ended
    (the bags of one run follow each other on its clock; bags of different runs may not)."""
    if loop:
        return True
    end = None
    for segment in recording.segments:
        if segment.count and end is not None and segment.first_ns < end:
            return True
        if segment.count:
            end = segment.last_ns
    return False


def _read(scan):
    """Yield ``(topic, msgtype, log_time ns, data)`` of a scanned bag (as
    :func:`awopt_ros.core.bag.read_messages` does)."""
    for channel_id, stamp_ns, data in scan['messages']:
        channel = scan['channels'].get(channel_id)
        if channel is None:
            continue
        schema = scan['schemas'].get(channel.schema_id)
        yield channel.topic, schema.name if schema else '', stamp_ns, data


def header_stamp_ns(data):
    """Return the header stamp (ns) of a CDR message whose first field is a
    ``std_msgs/Header`` (sensor_msgs/Image, JointState, ...), read from the bytes.

    Raises:
        ValueError: ``data`` too short or not CDR.
    """
    if len(data) < 12 or data[0] != 0:
        raise ValueError('not a CDR message with a header')
    little = data[1] & 1
    sec, nanosec = struct.unpack('<iI' if little else '>iI', bytes(data[4:12]))
    return sec * 1_000_000_000 + nanosec


def _is_camera_frame(m):
    return m.msgtype == 'sensor_msgs/msg/Image' and m.source_topic.endswith('/color/image_raw')


def _is_joint_state(m):
    return m.msgtype == 'sensor_msgs/msg/JointState' and m.source_topic.endswith('joint_states')


def message_ages_ns(messages):
    """Return ``(frame age, joint state age)`` (ns, >= 0) of one segment's messages (in send
    order), as :func:`input_ages_s` defines them; camera frames are the sensor_msgs/Image
    messages on ``.../color/image_raw``, joint states the JointState messages on
    ``...joint_states``; messages without a readable header are left out."""
    frame, joints, newest = 0, 0, None
    for m in messages:
        try:
            if _is_joint_state(m):
                stamp = header_stamp_ns(m.data)
                newest = stamp if newest is None else max(newest, stamp)
            elif _is_camera_frame(m):
                frame = max(frame, m.time_ns - header_stamp_ns(m.data))
                if newest is not None:
                    joints = max(joints, m.time_ns - newest)
        except ValueError:
            continue
    return frame, joints


def input_ages_s(recording):
    """Return ``(frame age, joint state age)`` (s, >= 0): the largest age that a node on the
    replay's ``/clock`` sees, by the header stamps, of a camera frame when it arrives
    (``send time - stamp``) and of the newest joint state at that moment (``frame send time -
    newest joint state stamp``), over the recording's segments."""
    ages = [s.ages_ns for s in recording.segments if s.ages_ns is not None]
    return (max((a[0] for a in ages), default=0) * 1e-9,
            max((a[1] for a in ages), default=0) * 1e-9)


class Playback:
    """The replay schedule: the playback position over the recording's segments, against a
    wall clock given in every call (s, monotonic), so it runs with a fake clock in tests.

    Args:
        recording: a :class:`Recording` (or any object with ``segments``).
        rate: playback speed (> 0; 2.0 = twice as fast as recorded).
        loop: start again at the first segment after the last one.
        start_paused: begin paused (:meth:`resume` or :meth:`step` go on).
        max_lag_s: None (default): a caller that comes late gets every message that is due at
            once (the schedule never drifts). A number (wall s): a message due more than this
            long ago moves the schedule instead (the position restarts at that message, now),
            so that a player starved of CPU for a moment sends the next messages with their
            recorded spacing rather than in a burst that a subscriber's short queue (sensor
            data: 5 frames) would cut; :attr:`lag_shifts` and :attr:`lag_s` count it.

    Each segment plays on its recorded timeline: at wall time ``w`` the position is
    ``anchor_ns + (w - anchor_wall) * rate`` s, and a message is due when the position
    reaches its send time (``Message.time_ns``). The first segment starts at its first
    message's send time, at the wall time of the first :meth:`start`. A new segment (the next
    bag, or the first again with ``loop``) begins at its own first send time, at the wall time
    at which the previous
    segment's last message was due (no drift however late the caller is).

    Raises:
        ValueError: ``rate`` not > 0, or an empty recording.
    """

    def __init__(self, recording, rate=1.0, loop=False, start_paused=False, max_lag_s=None):
        if not float(rate) > 0.0:
            raise ValueError(f'rate must be > 0, got {rate}')
        if max_lag_s is not None and not float(max_lag_s) >= 0.0:
            raise ValueError(f'max_lag_s must be >= 0 or None, got {max_lag_s}')
        self.max_lag_s = None if max_lag_s is None else float(max_lag_s)
        self.lag_shifts = 0      # times the schedule moved for a late caller (max_lag_s)
        self.lag_s = 0.0         # wall seconds it moved in all
        self.segments = [s for s in recording.segments if s.count]
        if not self.segments:
            raise ValueError('nothing to replay')
        self.rate = float(rate)
        self.loop = bool(loop)
        self.paused = bool(start_paused)
        self.segment = 0
        self.index = 0
        self.passes = 0          # completed passes over every segment
        self.published = 0
        self._messages = self.segments[0].load()     # the current segment's
        self._anchor_ns = self._messages[0].time_ns
        self._anchor_wall = None
        self._clock_ns = self._anchor_ns

    @property
    def last_clock_ns(self):
        """The ``/clock`` time last handed out (ns): a published message's send time or
        :meth:`clock_ns`."""
        return self._clock_ns

    # ---- state --------------------------------------------------------------------------
    @property
    def done(self):
        """True once the last message went out (never with ``loop``)."""
        return self.segment >= len(self.segments)

    def peek(self):
        """Return the next :class:`Message` (None when done)."""
        return None if self.done else self._messages[self.index]

    def start(self, wall_s):
        """Anchor the position to wall time ``wall_s`` (the first call only)."""
        if self._anchor_wall is None:
            self._anchor_wall = float(wall_s)

    def begin(self, wall_s):
        """The player starts sending at wall time ``wall_s``: anchor the position there when
        nothing went out yet (a resume that came while the player was still waiting for its
        subscribers must not make the first messages overdue)."""
        if self.published == 0 and self.segment == 0 and self.index == 0:
            self._anchor_wall = float(wall_s)

    def position_ns(self, wall_s):
        """Return the playback position (ns of recorded time) at wall time ``wall_s``."""
        self.start(wall_s)
        if self.paused:
            return self._anchor_ns
        return self._anchor_ns + int(round((float(wall_s) - self._anchor_wall) * self.rate
                                           * 1e9))

    def clock_ns(self, wall_s):
        """Return the ``/clock`` time to publish at ``wall_s`` (ns): the position, never past
        the next message's send time, never behind the last value within a segment."""
        nxt = self.peek()
        position = self.position_ns(wall_s)
        if nxt is not None:
            position = min(position, nxt.time_ns)
        self._clock_ns = max(self._clock_ns, position)
        return self._clock_ns

    def wait_s(self, wall_s):
        """Return the wall seconds until the next message is due (<= 0: due now; None: done
        or paused)."""
        nxt = self.peek()
        if nxt is None or self.paused:
            return None
        return (nxt.time_ns - self.position_ns(wall_s)) / (self.rate * 1e9)

    def due(self, wall_s):
        """Return the next message when it is due at ``wall_s`` and advance past it (its log
        time becomes the clock); else None."""
        wait = self.wait_s(wall_s)
        if wait is None or wait > 0.0:
            return None
        if self.max_lag_s is not None and -wait > self.max_lag_s:
            self._anchor_ns = self.peek().time_ns     # restart the schedule here, now
            self._anchor_wall = float(wall_s)
            self.lag_shifts += 1
            self.lag_s += -wait
        return self._advance()

    def pause(self, wall_s):
        """Stop the position where it is at ``wall_s`` (no-op when paused)."""
        if not self.paused:
            self._anchor_ns = self.position_ns(wall_s)
            self.paused = True

    def resume(self, wall_s):
        """Go on from the paused position, from wall time ``wall_s`` (no-op when playing)."""
        if self.paused:
            self._anchor_wall = float(wall_s)
            self.paused = False

    def toggle(self, wall_s):
        """Pause when playing, resume when paused; return the new ``paused``."""
        (self.resume if self.paused else self.pause)(wall_s)
        return self.paused

    def step(self, wall_s):
        """While paused: return the next message at once and move the position to its log
        time (None when done or playing)."""
        if not self.paused or self.done:
            return None
        self.start(wall_s)
        return self._advance()

    # ---- internals -------------------------------------------------------------------------
    def _advance(self):
        msg = self._messages[self.index]
        self.published += 1
        self._clock_ns = max(self._clock_ns, msg.time_ns)
        self.index += 1
        if self.index < len(self._messages):
            if self.paused:
                self._anchor_ns = msg.time_ns
            return msg
        # End of a segment: the next one starts where this one's last message was due. Only
        # the segment being played is held in memory (a bag read again when it comes).
        due_wall = self._anchor_wall + (msg.time_ns - self._anchor_ns) / (self.rate * 1e9)
        self.index = 0
        if len(self.segments) > 1:
            self.segments[self.segment].release()
        self.segment += 1
        if self.segment >= len(self.segments):
            self.passes += 1
            if not self.loop:
                self._messages = []
                return msg
            self.segment = 0
        self._messages = self.segments[self.segment].load()
        first = self._messages[0].time_ns
        if not self.paused:
            self._anchor_wall = due_wall
        self._anchor_ns = first
        self._clock_ns = first     # a new timeline: /clock may go back
        return msg
