"""Write rosbag2 MCAP bags from already serialized (CDR) messages, off the caller's thread.

The logger node receives every topic as raw CDR bytes (``create_subscription(raw=True)``) and
hands them to :class:`BagWriter`, which queues them and writes them on a background thread
with the ``rosbags`` library, so a ROS callback never waits for the disk. The result is a
rosbag2 directory (``metadata.yaml`` + one ``.mcap`` file) that ``ros2 bag play``/``info`` and
``rosbags.highlevel.AnyReader`` read. Message definitions and type hashes come from the
rosbags type store of the newest ROS 2 distribution it knows, preferring Kilted.

Compression: by default each message is zstd-compressed (rosbag2's ``--compression-mode
message --compression-format zstd``), which every rosbag2 reader decompresses transparently;
compression runs on the writer thread, never in a ROS callback.

No rclpy here: this module is usable (and tested) without ROS installed.
"""
import queue
import threading
from pathlib import Path

from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

#: rosbag2 metadata format version written (9 = Jazzy and newer).
BAG_VERSION = 9
#: Default cap on bytes waiting in the queue; beyond it messages are dropped (and counted).
DEFAULT_MAX_QUEUE_BYTES = 512 * 1024 * 1024
#: Accepted ``compression`` values.
COMPRESSIONS = ('zstd', 'none')

_ZERO = QosTime(sec=0, nsec=0)


def _qos(reliability, durability, depth):
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=reliability,
               durability=durability, deadline=_ZERO, lifespan=_ZERO,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=_ZERO,
               avoid_ros_namespace_conventions=False)


#: Offered-QoS presets recorded per topic in metadata.yaml (``ros2 bag play`` replays with
#: them): sensor data (best effort, depth 5), reliable (depth 10), latched (transient local).
QOS_PRESETS = {
    'sensor': _qos(QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 5),
    'reliable': _qos(QosReliability.RELIABLE, QosDurability.VOLATILE, 10),
    'latched': _qos(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 20),
}


def default_typestore():
    """Return the rosbags type store of ROS 2 Kilted, or of the newest ROS 2 store known."""
    store = getattr(Stores, 'ROS2_KILTED', None)
    if store is None:
        ros2 = [s for s in Stores if s.name.startswith('ROS2_')]
        store = ros2[-1]  # enum order is release order
    return get_typestore(store)


class BagWriter:
    """A rosbag2 MCAP bag fed with serialized messages through a queue and a writer thread.

    Args:
        path: bag directory to create (must not exist; parents are created).
        topics: topic name -> message type, e.g. ``{'/joint_states':
            'sensor_msgs/msg/JointState'}``. Every type must be known to the type store.
        qos: optional topic -> key of :data:`QOS_PRESETS` ('sensor', 'reliable', 'latched'),
            recorded as the topic's offered QoS; topics not named get none (replay default).
        max_queue_bytes: bytes allowed to wait for the disk; messages arriving beyond it are
            dropped and counted in :attr:`frames_dropped` (the caller never blocks).
        typestore: rosbags type store (default :func:`default_typestore`).
        compression: 'zstd' (default: per-message zstd) or 'none'.

    Attributes:
        frames_written: topic -> messages written to disk so far (updated by the thread).
        frames_dropped: topic -> messages dropped because the queue was full.
        error: the first exception raised on the writer thread, or None.

    Raises:
        ValueError: ``topics`` empty, a topic name not starting with '/', an unknown message
            type, an unknown QoS preset or an unknown compression.
        FileExistsError: ``path`` exists already.
    """

    def __init__(self, path, topics, *, qos=None, max_queue_bytes=DEFAULT_MAX_QUEUE_BYTES,
                 typestore=None, compression='zstd'):
        self.path = Path(path)
        if compression not in COMPRESSIONS:
            raise ValueError(f'unknown bag compression {compression!r} (known: {COMPRESSIONS})')
        if not topics:
            raise ValueError('BagWriter needs at least one topic')
        qos = dict(qos or {})
        for topic in topics:
            if not isinstance(topic, str) or not topic.startswith('/'):
                raise ValueError(f'topic names must be absolute ("/name"), got {topic!r}')
        for topic, preset in qos.items():
            if preset not in QOS_PRESETS:
                raise ValueError(f'unknown QoS preset {preset!r} for {topic} '
                                 f'(known: {sorted(QOS_PRESETS)})')
        if int(max_queue_bytes) <= 0:
            raise ValueError(f'max_queue_bytes must be > 0, got {max_queue_bytes}')
        store = typestore if typestore is not None else default_typestore()
        unknown = {t: m for t, m in topics.items() if m not in store.fielddefs}
        if unknown:
            raise ValueError(f'message types unknown to the rosbags type store: {unknown}')
        if self.path.exists():
            raise FileExistsError(f'bag path {self.path} exists already, not overwriting')
        self.path.parent.mkdir(parents=True, exist_ok=True)

        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        if compression == 'zstd':
            self._writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self._connections = {}
        for topic, msgtype in topics.items():
            profiles = [QOS_PRESETS[qos[topic]]] if topic in qos else []
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=store, offered_qos_profiles=profiles)
        self.topics = dict(topics)
        self.frames_written = {t: 0 for t in topics}
        self.frames_dropped = {t: 0 for t in topics}
        self.error = None
        self._max_queue_bytes = int(max_queue_bytes)
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f'bag:{self.path.name}',
                                        daemon=True)
        self._thread.start()

    @property
    def closed(self):
        """True once :meth:`close` has been called."""
        return self._closed

    @property
    def queued_bytes(self):
        """Bytes waiting to be written."""
        return self._queued_bytes

    def write(self, topic, data, stamp_ns):
        """Queue one serialized message for writing; never blocks on disk.

        Args:
            topic: a topic given at construction.
            data: the CDR-serialized message (``bytes``, as rclpy raw subscriptions deliver).
            stamp_ns: log time (ns since the epoch, or sim time), int >= 0.

        Returns:
            True if queued, False if dropped because the queue is over ``max_queue_bytes``.

        Raises:
            ValueError: unknown topic, negative stamp, or data not bytes-like.
            RuntimeError: the bag is closed.
        """
        if self._closed:
            raise RuntimeError(f'bag {self.path} is closed')
        if topic not in self._connections:
            raise ValueError(f'topic {topic!r} was not declared for bag {self.path}')
        stamp_ns = int(stamp_ns)
        if stamp_ns < 0:
            raise ValueError(f'stamp_ns must be >= 0, got {stamp_ns}')
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f'data must be serialized bytes, got {type(data).__name__}')
        size = len(data)
        with self._lock:
            if self._queued_bytes + size > self._max_queue_bytes:
                self.frames_dropped[topic] += 1
                return False
            self._queued_bytes += size
        self._queue.put((topic, bytes(data), stamp_ns))
        return True

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, data, stamp_ns = item
            try:
                if self.error is None:
                    self._writer.write(self._connections[topic], stamp_ns, data)
                    self.frames_written[topic] += 1
            except Exception as exc:  # noqa: BLE001 - kept and re-raised by close()
                self.error = exc
            finally:
                with self._lock:
                    self._queued_bytes -= len(data)

    def close(self, timeout_s=None):
        """Write what is queued, then finish the MCAP file and metadata.yaml. Idempotent.

        Args:
            timeout_s: longest wait for the queue to drain (None: wait until done).

        Returns:
            dict topic -> messages written.

        Raises:
            TimeoutError: the queue did not drain within ``timeout_s`` (the bag stays open).
            RuntimeError: writing failed on the writer thread (the cause is chained).
        """
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f'bag {self.path}: writer thread still busy after {timeout_s} s')
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
        if self.error is not None:
            raise RuntimeError(f'writing bag {self.path} failed: {self.error}') from self.error
        return dict(self.frames_written)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
