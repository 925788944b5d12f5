"""awopt_replay: the node that republishes a recording (``awopt replay``).

:class:`BagPlayer` is a thin node around :class:`awopt_ros.core.replay.Playback`, which decides
what goes out when. One publisher per replayed topic, with the recorded message type (the
class imported from the bag's type name) and the recorded QoS
(:class:`awopt_ros.core.replay.QosSpec`); it publishes the recorded CDR bytes as they are (no
decoding). ``/clock`` (rosgraph_msgs/Clock, reliable, depth 1) carries the playback position:
before each message its send time (its log time, or its header stamp with ``--timing
stamp``), and in between every ``1 / clock_hz`` s, so that nodes with ``use_sim_time: true``
run on the recorded time.

Services (std_srvs):

* ``/awopt_replay/pause`` (SetBool): ``data`` true pauses, false resumes; the answer says where
  the playback stands.
* ``/awopt_replay/step`` (Trigger): while paused, publish the next message at once (refused
  while playing).

The playback runs in :meth:`BagPlayer.play` on the calling thread (wall-clock sleeps, not ROS
timers: the node itself must not follow the ``/clock`` it publishes); the services are served
by an executor on a background thread (:meth:`BagPlayer.spin_in_background`).
"""
import importlib
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from std_srvs.srv import SetBool, Trigger

from awopt_ros.core.replay import Playback

#: A message due more than this long ago (wall s; the player starved of CPU) moves the
#: schedule rather than going out in a burst with the others due (core.replay.Playback).
MAX_LAG_S = 0.1
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       history=HistoryPolicy.KEEP_LAST)


def message_class(msgtype):
    """Return the rclpy message class of ``'pkg/msg/Name'``.

    Raises:
        ValueError: a malformed name, or a type not installed.
    """
    parts = str(msgtype).split('/')
    if len(parts) != 3 or parts[1] != 'msg':
        raise ValueError(f"message type must look like 'pkg/msg/Name', got {msgtype!r}")
    try:
        return getattr(importlib.import_module(f'{parts[0]}.msg'), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f'message type {msgtype} is not installed: {exc}') from None


def qos_profile(spec):
    """Return the rclpy QoSProfile of a :class:`awopt_ros.core.replay.QosSpec`."""
    return QoSProfile(
        depth=int(spec.depth), history=HistoryPolicy.KEEP_LAST,
        reliability=(ReliabilityPolicy.RELIABLE if spec.reliable
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if spec.transient_local
                    else DurabilityPolicy.VOLATILE))


def _clock_msg(ns):
    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = divmod(int(ns), 1_000_000_000)
    return msg


class BagPlayer(Node):
    """Publish a :class:`awopt_ros.core.replay.Recording` on its topics.

    Args:
        recording: what to replay (:func:`awopt_ros.core.replay.load_recording`).
        rate, loop, start_paused: as :class:`awopt_ros.core.replay.Playback`.
        publish_clock: publish ``/clock`` (False: ``--no-clock``).
        clock_hz: ``/clock`` messages per wall second between messages (> 0).
        on_message: optional callable(:class:`Message`) after each published message
            (progress output).

    Raises:
        ValueError: a recorded message type that is not installed, a bad rate.
    """

    def __init__(self, recording, *, rate=1.0, loop=False, start_paused=False,
                 publish_clock=True, clock_hz=100.0, on_message=None, **kwargs):
        super().__init__('awopt_replay', **kwargs)
        if not float(clock_hz) > 0.0:
            raise ValueError(f'clock_hz must be > 0, got {clock_hz}')
        self.playback = Playback(recording, rate=rate, loop=loop, start_paused=start_paused,
                                 max_lag_s=MAX_LAG_S)
        self.clock_period_s = 1.0 / float(clock_hz)
        self.on_message = on_message
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.pubs = {}
        for topic, (msgtype, spec) in sorted(recording.topics.items()):
            self.pubs[topic] = self.create_publisher(message_class(msgtype), topic,
                                                     qos_profile(spec))
        self.clock_pub = (self.create_publisher(Clock, '/clock', CLOCK_QOS)
                          if publish_clock else None)
        self._last_clock_ns = None
        #: Names of the ``/diagnostics`` statuses heard (:meth:`watch_diagnostics`).
        self.diagnostics_heard = set()
        self._diag_sub = None
        self.create_service(SetBool, '/awopt_replay/pause', self._on_pause)
        self.create_service(Trigger, '/awopt_replay/step', self._on_step)
        self._spin_thread = None
        self._executor = None

    # ---- services and keys -------------------------------------------------------------------
    def _where(self):
        pb = self.playback
        state = 'done' if pb.done else ('paused' if pb.paused else 'playing')
        return f'{state}; {pb.published} messages published, clock {pb.last_clock_ns * 1e-9:.3f} s'

    def set_paused(self, paused):
        """Pause (True) or resume (False); return a line saying where the playback stands."""
        with self.lock:
            now = time.monotonic()
            (self.playback.pause if paused else self.playback.resume)(now)
            self.wake.set()
            return self._where()

    def toggle_pause(self):
        """Pause when playing, resume when paused (the space key); return the state line."""
        with self.lock:
            return self.set_paused(not self.playback.paused)

    def step(self):
        """Publish the next message while paused; return (published, state line)."""
        with self.lock:
            msg = self.playback.step(time.monotonic())
            if msg is not None:
                self._publish(msg)
            self.wake.set()
            return msg is not None, self._where()

    def stop(self):
        """Make :meth:`play` return soon (the q key, Ctrl-C)."""
        self.stopped.set()
        self.wake.set()

    def _on_pause(self, request, response):
        response.message = self.set_paused(bool(request.data))
        response.success = True
        return response

    def _on_step(self, request, response):
        del request
        response.success, state = self.step()
        response.message = state if response.success else f'not stepped: {state} (step ' \
            'works while paused: call /awopt_replay/pause with data: true first)'
        return response

    # ---- playback ----------------------------------------------------------------------------
    def publish_clock(self, ns):
        """Publish ``/clock`` = ``ns`` (int) when it changed since the last one."""
        if self.clock_pub is not None and ns != self._last_clock_ns:
            self.clock_pub.publish(_clock_msg(ns))
            self._last_clock_ns = ns

    def _publish(self, msg):
        self.publish_clock(self.playback.last_clock_ns)
        self.pubs[msg.topic].publish(msg.data)
        if self.on_message is not None:
            self.on_message(msg)

    def play(self):
        """Publish until the recording ends (never with ``loop``) or :meth:`stop`; returns
        the number of messages published."""
        pb = self.playback
        with self.lock:
            now = time.monotonic()
            pb.start(now)
            pb.begin(now)
            self.publish_clock(pb.clock_ns(now))
        while not self.stopped.is_set():
            with self.lock:
                now = time.monotonic()
                msg = pb.due(now)
                if msg is not None:
                    self._publish(msg)
                    continue
                if pb.done:
                    break
                self.publish_clock(pb.clock_ns(now))
                wait = pb.wait_s(now)
            timeout = self.clock_period_s if wait is None else min(wait, self.clock_period_s)
            self.wake.wait(max(0.0, timeout))
            self.wake.clear()
        self.flush()
        return pb.published

    def flush(self, timeout_s=2.0):
        """Wait (at most ``timeout_s`` in all) until every reliable subscriber acknowledged
        what was published: a process that exits at once would lose it. Returns True when
        all did."""
        from rclpy.duration import Duration
        deadline = time.monotonic() + timeout_s
        ok = True
        for pub in list(self.pubs.values()):
            left = deadline - time.monotonic()
            if left <= 0.0:
                return False
            ok = pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))) and ok
        return ok

    def spin_in_background(self, executor):
        """Serve the services on a daemon thread with ``executor`` (a fresh
        SingleThreadedExecutor is fine); returns the thread."""
        executor.add_node(self)
        self._executor = executor

        def spin():
            try:
                executor.spin()
            except Exception:  # noqa: BLE001 - the context shut down under it
                pass
        self._spin_thread = threading.Thread(target=spin, name='awopt_replay_services',
                                             daemon=True)
        self._spin_thread.start()
        return self._spin_thread

    def close(self):
        """Stop the playback and the service thread, then destroy the node."""
        self.stop()
        if self._spin_thread is not None:
            self._executor.shutdown(timeout_sec=2.0)
            self._spin_thread.join(timeout=2.0)
            self._spin_thread = None
        self.destroy_node()

    # ---- readiness of started nodes ----------------------------------------------------------
    def graph_nodes(self):
        """Return the names of the nodes on the graph (set)."""
        return set(self.get_node_names())

    def subscriptions_of(self, node_name):
        """Return the topics that node ``node_name`` (namespace /) subscribes (set; empty when
        it is not on the graph)."""
        try:
            return {t for t, _ in self.get_subscriber_names_and_types_by_node(node_name, '/')}
        except Exception:  # noqa: BLE001 - NodeNameNonExistentError while it starts
            return set()

    def watch_diagnostics(self, on=True):
        """Start (or stop) collecting the status names on ``/diagnostics`` into
        :attr:`diagnostics_heard`: a started node's first status says that it spins and
        has heard the replay's ``/clock`` (its timers run on it)."""
        if on and self._diag_sub is None:
            self._diag_sub = self.create_subscription(
                DiagnosticArray, '/diagnostics',
                lambda msg: self.diagnostics_heard.update(st.name for st in msg.status), 10)
        elif not on and self._diag_sub is not None:
            self.destroy_subscription(self._diag_sub)
            self._diag_sub = None

    def graph_subscriber_counts(self):
        """Return ``{published topic: subscriptions on the graph}`` of the replayed topics
        (``/clock`` included)."""
        topics = list(self.pubs) + (['/clock'] if self.clock_pub is not None else [])
        return {t: self.count_subscribers(t) for t in topics}

    def unmatched(self, topic_counts):
        """Return the topics of ``{published topic: subscriptions wanted}`` whose publisher
        has fewer matched subscriptions than wanted (``/clock`` included)."""
        out = []
        for topic, wanted in topic_counts.items():
            pub = self.clock_pub if topic == '/clock' else self.pubs.get(topic)
            if pub is not None and pub.get_subscription_count() < wanted:
                out.append(topic)
        return out
