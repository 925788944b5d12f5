"""A client node that runs episodes through the episode manager and collects what happened.

Used by ``awopt demo``, ``awopt collect`` and ``awopt bench`` (and the integration tests): it
calls ``/episode/start``, waits for the matching ``end`` event on ``/episode/event``, and
gathers frame-to-command latencies, the simulator's and logger's counters, the paths of the
saved bags and dataset, the policy node's latest ``/policy/model_info`` (which model
version runs, for runs that wait for a finetuner's next export) and the stamps of the camera
frames published (one ``<camera_ns>/color/camera_info`` goes with each frame; the small
message stands for the image, so that the client does not take every image), to count the
frames an episode's bag lacks (:func:`awopt_ros.core.report.frame_accounting`).
"""
import json
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from awopt_ros.core import robot_names
from awopt_ros.ros import qos
from awopt_ros.ros.diagnostics import logger_ready, parse_values


class EpisodeClient(Node):
    """Starts episodes and records events, latencies, counters and saved-episode records.

    Args:
        camera_ns: the camera's namespace (the stack's ``camera_ns`` parameter, e.g.
            ``/camera/camera`` for realsense-ros): frames are counted on
            ``<camera_ns>/color/camera_info``; :attr:`camera_topic` is the image topic the
            bags record.
        **kwargs: for ``rclpy.node.Node`` (e.g. ``context``).

    Raises:
        ValueError: ``camera_ns`` is not an absolute ROS name.
    """

    def __init__(self, camera_ns=robot_names.DEFAULT_CAMERA_NS, **kwargs):
        #: (image topic, camera_info topic) of the camera
        self.camera_topic, self.camera_info_topic = robot_names.camera_topics(camera_ns)
        super().__init__('awopt_episode_client', **kwargs)
        self.events = []             # every event dict received, in order
        self.saved = {}              # episode -> /logger/episode_saved record
        self.latencies_ms = []       # /arm/frame_to_command_ms samples while episodes ran
        self.counters = {}           # diagnostic status name -> latest values dict
        self.model_info = None       # latest /policy/model_info dict (None: none received)
        self.camera_stamps_ns = []   # header stamps (int ns) of every camera_info received
        self.recording = False
        self.start_client = self.create_client(Trigger, '/episode/start')
        self.stop_client = self.create_client(Trigger, '/episode/stop')
        self.create_subscription(String, '/episode/event', self._on_event, qos.LATCHED)
        self.create_subscription(String, '/logger/episode_saved', self._on_saved, qos.LATCHED)
        self.create_subscription(Float64, '/arm/frame_to_command_ms', self._on_latency,
                                 qos.COMMAND)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.create_subscription(String, '/policy/model_info', self._on_model_info, qos.LATCHED)
        self.create_subscription(CameraInfo, self.camera_info_topic, self._on_camera_info,
                                 qos.RECORD_SENSOR)
        self.executor_ = SingleThreadedExecutor(context=self.context)
        self.executor_.add_node(self)

    def _on_event(self, msg):
        try:
            self.events.append(json.loads(msg.data))
        except ValueError:
            self.get_logger().warning(f'unreadable episode event: {msg.data!r}')

    def _on_saved(self, msg):
        try:
            record = json.loads(msg.data)
            self.saved[int(record['episode'])] = record
        except (ValueError, KeyError, TypeError):
            self.get_logger().warning(f'unreadable episode_saved record: {msg.data!r}')

    def _on_latency(self, msg):
        if self.recording:
            self.latencies_ms.append(float(msg.data))

    def _on_camera_info(self, msg):
        self.camera_stamps_ns.append(msg.header.stamp.sec * 1_000_000_000
                                     + msg.header.stamp.nanosec)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            self.counters[status.name] = parse_values(status)

    def _on_model_info(self, msg):
        try:
            info = json.loads(msg.data)
            int(info['model_version'])
        except (ValueError, KeyError, TypeError):
            self.get_logger().warning(f'unreadable /policy/model_info: {msg.data!r}')
            return
        self.model_info = info

    @property
    def model_version(self):
        """The policy node's current ``model_version`` (int, +1 per hot swap), or None before
        its first ``/policy/model_info``."""
        return None if self.model_info is None else int(self.model_info['model_version'])

    # -- blocking helpers (spin this node until a condition or a wall deadline) -------------
    def spin_until(self, condition, timeout_s, alive=None):
        """Spin until ``condition()`` is true; False on timeout or when ``alive()`` is False."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            if alive is not None and not alive():
                return False
            self.executor_.spin_once(timeout_sec=0.05)
        return condition()

    def wait_ready(self, timeout_s=60.0, alive=None, logger=True):
        """Wait until ``/episode/start`` is available and, with ``logger``, until the logger's
        diagnostics report messages received on every input it records
        (``ros.diagnostics.logger_ready``: camera frames, policy images, actions, joint states;
        DDS discovery can take a second per topic after start-up, and best-effort messages sent
        before a match never reach the logger, so the first episode would miss its first
        frames or steps). The episode manager refuses to start before that too.

        Returns:
            bool: False on timeout (or when ``alive()`` turns False).
        """
        def ready():
            if not self.start_client.service_is_ready():
                return False
            if not logger:
                return True
            return logger_ready(self.counters.get('logger', {}))
        return self.spin_until(ready, timeout_s, alive)

    def start_episode(self, timeout_s=30.0, alive=None):
        """Ask for an episode; return its number, or raise RuntimeError with the reason."""
        deadline = time.monotonic() + timeout_s
        while True:
            future = self.start_client.call_async(Trigger.Request())
            if not self.spin_until(future.done, max(0.1, deadline - time.monotonic()), alive):
                raise RuntimeError('no answer from /episode/start')
            reply = future.result()
            info = json.loads(reply.message or '{}')
            if reply.success:
                return int(info['episode'])
            if 'not available' not in info.get('error', '') or time.monotonic() > deadline:
                raise RuntimeError(f'/episode/start refused: {info.get("error", reply.message)}')
            time.sleep(0.2)  # the reset service is not up yet: ask again

    def wait_end(self, episode, timeout_s, alive=None):
        """Wait for episode ``episode``'s ``end`` event; return it, or None on timeout."""
        def find():
            for event in self.events:
                if event.get('episode') == episode and event.get('event') in (
                        'end', 'start_failed'):
                    return event
            return None
        self.spin_until(lambda: find() is not None, timeout_s, alive)
        return find()

    def wait_saved(self, episode, timeout_s):
        """Wait until the logger reports episode ``episode`` saved; return its record or None."""
        self.spin_until(lambda: episode in self.saved, timeout_s)
        return self.saved.get(episode)

    def wait_model_newer(self, version, timeout_s, alive=None):
        """Wait until the policy node reports a ``model_version`` above ``version`` (it has
        hot-swapped a newer model); ``version`` None waits for any ``/policy/model_info``.

        Returns:
            dict: that ``/policy/model_info``; None on timeout or when ``alive()`` turns False.
        """
        def newer():
            return self.model_version is not None and (
                version is None or self.model_version > version)
        return self.model_info if self.spin_until(newer, timeout_s, alive) else None

    def stop_episode(self, timeout_s=5.0):
        """Ask the manager to end the running episode (operator stop); return the reply."""
        future = self.stop_client.call_async(Trigger.Request())
        self.spin_until(future.done, timeout_s)
        return future.result()
