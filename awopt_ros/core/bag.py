"""Write rosbag2 MCAP bags from already serialized (CDR) messages, off the caller's thread.

The logger node receives every topic as raw CDR bytes (``create_subscription(raw=True)``) and
hands them to :class:`BagWriter`, which queues them and writes them on a background thread
with the ``rosbags`` library, so a ROS callback never waits for the disk. The result is a
rosbag2 directory (``metadata.yaml`` + one ``.mcap`` file) that ``ros2 bag play``/``info`` and
``rosbags.highlevel.AnyReader`` read. Message definitions and type hashes come from the
rosbags type store of the newest ROS 2 distribution it knows, preferring Kilted.

Compression: by default the MCAP chunks are zstd-compressed (MCAP chunk compression, as
``ros2 bag record --storage-preset-profile zstd_fast``); every message stays plain CDR with
``message_encoding: cdr``, so generic MCAP tools (Foxglove, the ``mcap`` package's ROS 2
decoder) read every message, and the ``.mcap`` file alone (without ``metadata.yaml``) is a
complete bag. Compression runs on the writer thread, never in a ROS callback. Older bags,
written with per-message zstd (rosbag2's ``--compression-mode message``), are still read by
:func:`read_messages` and :func:`repair_bag`.

Crash safety: a chunk is closed and handed to the operating system (``flush``, no fsync: the
page cache outlives a killed process) at least every ``chunk_max_s`` (and whenever it reaches
rosbags' 1 MiB chunk size), so a process killed with SIGKILL loses at most the last chunk;
:meth:`BagWriter.close` fsyncs the finished bag. A killed writer's bag has no MCAP
summary/footer and no ``metadata.yaml``; :func:`repair_bag` (``awopt bag-repair``, and the
logger node at start-up through :func:`recover_bags`) rewrites the readable messages into a
complete bag marked as cut (``custom_data`` in ``metadata.yaml``: ``awopt_cut: 'true'``).

Locking: while a :class:`BagWriter` writes a bag (and while :func:`repair_bag` rebuilds one)
it holds an exclusive ``flock`` on the bag's ``.mcap`` file; the kernel drops it when the
process dies. A bag still being written also lacks ``metadata.yaml``, so :func:`bag_in_use`
tells it from a crashed one: :func:`unfinished_bags`, :func:`recover_bags` and ``awopt
bag-repair`` skip it, and :func:`repair_bag` refuses it (:class:`BagInUseError`).

No rclpy here: this module is usable (and tested) without ROS installed.
"""
import errno
import fcntl
import os
import queue
import shutil
import threading
import time
from contextlib import suppress
from pathlib import Path

from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from awopt_ros.core.paths import fsync_dir

#: rosbag2 metadata format version written (9 = Jazzy and newer).
BAG_VERSION = 9
#: Default cap on bytes waiting in the queue; beyond it messages are dropped (and counted).
DEFAULT_MAX_QUEUE_BYTES = 512 * 1024 * 1024
#: Accepted ``compression`` values: 'zstd' (MCAP chunk compression) or 'none'.
COMPRESSIONS = ('zstd', 'none')
#: Default longest time (s) between closing chunks (data reaches the OS at least this often).
DEFAULT_CHUNK_MAX_S = 1.0
#: ``custom_data`` key (metadata.yaml) set to 'true' in a bag rebuilt after a crash.
CUT_KEY = 'awopt_cut'
#: Four bytes that start a zstd frame (a per-message-compressed payload of an older bag).
_ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'

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


class BagInUseError(OSError):
    """The bag is locked by a running writer (a logger) or another repair (errno EBUSY)."""


def _lock_bag_file(file):
    """Open ``file`` and take an exclusive, non-blocking ``flock`` on it; return the fd (close
    it to release). Raises BagInUseError when another open file holds a lock on it."""
    fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise BagInUseError(errno.EBUSY, 'in use by a running logger', str(file)) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def bag_in_use(path):
    """True while a writer or a repair holds the lock of the ``.mcap`` file(s) of bag
    directory ``path`` (see the module docstring); False for a bag nobody writes."""
    for file in _mcap_files(path):
        try:
            fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
    return False


#: Message types the stack publishes that rosbags' ROS 2 stores lack (the vision_msgs subset
#: of ``interfaces/vision_msgs``: the success detector's ``/success_detector/classification``),
#: registered by :func:`default_typestore`; type name -> .msg text.
EXTRA_TYPES = {
    'vision_msgs/msg/ObjectHypothesis': 'string class_id\nfloat64 score\n',
    'vision_msgs/msg/Classification': ('std_msgs/Header header\n'
                                       'vision_msgs/ObjectHypothesis[] results\n'),
}


def default_typestore():
    """Return the rosbags type store of ROS 2 Kilted, or of the newest ROS 2 store known, with
    :data:`EXTRA_TYPES` registered."""
    from rosbags.typesys import get_types_from_msg
    store = getattr(Stores, 'ROS2_KILTED', None)
    if store is None:
        ros2 = [s for s in Stores if s.name.startswith('ROS2_')]
        store = ros2[-1]  # enum order is release order
    typestore = get_typestore(store)
    types = {}
    for name, text in EXTRA_TYPES.items():
        if name not in typestore.fielddefs:
            types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore


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
        compression: 'zstd' (default: zstd MCAP chunk compression) or 'none'.
        chunk_max_s: longest time (s, > 0) a written message waits in the open chunk before
            the chunk is closed and flushed to the operating system (a crash loses at most
            this much, or one 1 MiB chunk, whichever is less).
        custom_data: optional str -> str written to metadata.yaml's ``custom_data``.

    Attributes:
        frames_written: topic -> messages written to disk so far (updated by the thread).
        frames_dropped: topic -> messages dropped because the queue was full.
        error: the first exception raised on the writer thread, or None (an ``OSError``
            such as ENOSPC for a full disk: see :attr:`write_error`).

    Raises:
        ValueError: ``topics`` empty, a topic name not starting with '/', an unknown message
            type, an unknown QoS preset or an unknown compression.
        FileExistsError: ``path`` exists already.

    While the bag is open its ``.mcap`` file is locked (``flock``), see :func:`bag_in_use`.
    """

    def __init__(self, path, topics, *, qos=None, max_queue_bytes=DEFAULT_MAX_QUEUE_BYTES,
                 typestore=None, compression='zstd', chunk_max_s=DEFAULT_CHUNK_MAX_S,
                 custom_data=None):
        self.path = Path(path)
        if not float(chunk_max_s) > 0.0:
            raise ValueError(f'chunk_max_s must be > 0, got {chunk_max_s}')
        self.chunk_max_s = float(chunk_max_s)
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

        self._writer = _open_writer(self.path, compression)
        self._lock_fd = None
        try:
            self._lock_fd = _lock_bag_file(_mcap_files(self.path)[0])
            for key, value in (custom_data or {}).items():
                if value is not None:
                    self._writer.set_custom_data(str(key), str(value))
            self._connections = {}
            for topic, msgtype in topics.items():
                profiles = [QOS_PRESETS[qos[topic]]] if topic in qos else []
                self._connections[topic] = self._writer.add_connection(
                    topic, msgtype, typestore=store, offered_qos_profiles=profiles)
        except BaseException:
            with suppress(Exception):
                self._writer.abort()
            self._unlock()
            raise
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
    def write_error(self):
        """The ``OSError`` (e.g. ENOSPC) that stopped the writer thread, else None."""
        return self.error if isinstance(self.error, OSError) else None

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
        chunk_opened = None   # monotonic time of the first message in the open chunk
        while True:
            try:
                item = self._queue.get(timeout=self.chunk_max_s)
            except queue.Empty:
                item = ()
            if item is None:
                return
            if item:
                topic, data, stamp_ns = item
                try:
                    if self.error is None:
                        self._writer.write(self._connections[topic], stamp_ns, data)
                        self.frames_written[topic] += 1
                        if chunk_opened is None:
                            chunk_opened = time.monotonic()
                except Exception as exc:  # noqa: BLE001 - kept and re-raised by close()
                    self.error = exc
                finally:
                    with self._lock:
                        self._queued_bytes -= len(data)
            if chunk_opened is not None and time.monotonic() - chunk_opened >= self.chunk_max_s:
                chunk_opened = None
                self._flush_chunk()

    def _flush_chunk(self):
        """Close the open MCAP chunk (if it holds messages) and hand the file's buffered bytes
        to the operating system (``flush``: the page cache survives a killed process, so no
        fsync here; :meth:`close` fsyncs once)."""
        if self.error is not None:
            return
        storage = getattr(self._writer, 'storage', None)
        chunk = getattr(storage, 'chunk', None)
        try:
            if chunk is not None and getattr(chunk, 'msgs', None):
                storage.close_chunk()
            bio = getattr(storage, 'bio', None)
            if bio is not None:
                bio.flush()
        except Exception as exc:  # noqa: BLE001 - kept and re-raised by close()
            self.error = exc

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
            if self.error is None:
                try:
                    writer.close()
                    fsync_dir(self.path)
                except Exception as exc:  # noqa: BLE001 - e.g. ENOSPC writing the summary
                    self.error = exc
            if self.error is not None:
                with suppress(Exception):
                    writer.abort()
            self._unlock()
        if self.error is not None:
            raise RuntimeError(f'writing bag {self.path} failed: {self.error}') from self.error
        return dict(self.frames_written)

    def discard(self, timeout_s=5.0):
        """Stop writing and delete the bag directory (an episode that is dropped, e.g. after
        a write error); never raises. Returns True when the directory is gone."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout_s)
        if self._writer is not None and not self._thread.is_alive():
            writer, self._writer = self._writer, None
            with suppress(Exception):
                writer.abort()
        shutil.rmtree(self.path, ignore_errors=True)
        self._unlock()
        return not self.path.exists()

    def _unlock(self):
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _open_writer(path, compression):
    """Return an open rosbags MCAP :class:`Writer` at ``path`` with ``compression``."""
    writer = Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
    if compression == 'zstd':
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    return writer


def _plain_cdr(data):
    """Return a message payload as plain CDR: payloads of older bags written with per-message
    zstd compression are decompressed (CDR starts with a 0x00 encapsulation byte, a zstd frame
    with 0x28 b5 2f fd, so the two cannot be confused)."""
    data = bytes(data)
    if data[:4] == _ZSTD_MAGIC:
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _mcap_files(path):
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob('*.mcap') if p.is_file())


def scan_mcap(path):
    """Read every record of the MCAP file(s) of a bag that can be read, in file order, even
    from a file cut short (no summary, no footer, a last record half written).

    Args:
        path: bag directory or ``.mcap`` file.

    Returns:
        dict with ``schemas`` (id -> mcap Schema), ``channels`` (id -> mcap Channel),
        ``messages`` (list of ``(channel id, log_time ns, plain CDR bytes)``; older bags'
        per-message zstd payloads decompressed), ``complete`` (True when every file ended
        with a valid footer), ``error`` (text of the first read error, or None) and
        ``unread_bytes`` (bytes after the last record that could be read).

    Raises:
        FileNotFoundError: no ``.mcap`` file at ``path``.
    """
    from mcap.records import Channel, Footer, Message, Schema
    from mcap.stream_reader import StreamReader

    files = _mcap_files(path)
    if not files:
        raise FileNotFoundError(f'no .mcap file in {path}')
    out = {'schemas': {}, 'channels': {}, 'messages': [], 'complete': True, 'error': None,
           'unread_bytes': 0}
    for file in files:
        size = file.stat().st_size
        footer = False
        with file.open('rb') as stream:
            # emit_chunks=False: chunks are decompressed and their records yielded; a chunk
            # cut short raises before yielding any of its messages (it is lost as a whole).
            reader = StreamReader(stream, skip_magic=False, emit_chunks=False)
            last_good = 0
            try:
                for record in reader.records:
                    if isinstance(record, Schema):
                        out['schemas'][record.id] = record
                    elif isinstance(record, Channel):
                        out['channels'][record.id] = record
                    elif isinstance(record, Message):
                        out['messages'].append((record.channel_id, record.log_time,
                                                _plain_cdr(record.data)))
                    elif isinstance(record, Footer):
                        footer = True
                    last_good = stream.tell()
            except Exception as exc:  # noqa: BLE001 - any damage ends the readable part
                out['error'] = out['error'] or f'{file.name}: {type(exc).__name__}: {exc}'
            if not footer:
                out['complete'] = False
                out['unread_bytes'] += max(0, size - last_good)
    return out


def read_messages(path):
    """Return ``[(topic, msgtype, log_time ns, plain CDR bytes)]`` of a bag in file order.

    Reads bags of this module (chunk-compressed) and older ones (per-message zstd), complete
    or cut short by a crash (what can be read). Raises FileNotFoundError without an .mcap.
    """
    scan = scan_mcap(path)
    out = []
    for channel_id, stamp_ns, data in scan['messages']:
        channel = scan['channels'].get(channel_id)
        if channel is None:
            continue
        schema = scan['schemas'].get(channel.schema_id)
        out.append((channel.topic, schema.name if schema else '', stamp_ns, data))
    return out


def needs_repair(path):
    """True for a bag directory whose ``.mcap`` lacks ``metadata.yaml`` or its MCAP footer
    (the writer was killed: rosbags cannot open it). False for a complete bag or a directory
    without an ``.mcap`` file."""
    path = Path(path)
    files = _mcap_files(path)
    if not files:
        return False
    if not (path / 'metadata.yaml').is_file():
        return True
    for file in files:
        with file.open('rb') as stream:
            stream.seek(0, os.SEEK_END)
            if stream.tell() < 8 + 37:
                return True
            stream.seek(-8, os.SEEK_END)
            if stream.read(8) != b'\x89MCAP0\r\n':
                return True
    return False


def _connection_args(schema, typestore):
    """Return ``(msgtype, kwargs)`` for ``Writer.add_connection`` of an MCAP schema: the type
    store's definition when it knows the type, else the schema's own text."""
    msgtype = schema.name
    if msgtype in typestore.fielddefs:
        return msgtype, {'typestore': typestore}
    from rosbags.typesys import get_types_from_msg
    text = schema.data.decode() if isinstance(schema.data, bytes) else str(schema.data)
    typestore.register(get_types_from_msg(text, msgtype))
    return msgtype, {'msgdef': text, 'rihs01': typestore.hash_rihs01(msgtype)}


def _qos_profiles(channel):
    from rosbags.rosbag2.metadata import parse_qos
    try:
        return parse_qos(channel.metadata.get('offered_qos_profiles', ''))
    except Exception:  # noqa: BLE001 - QoS is advisory; replay uses defaults without it
        return []


def repair_bag(path, *, typestore=None, reason='the writer stopped before closing the bag',
               keep_original=False):
    """Rebuild a bag cut short by a crash into a complete one, marked as cut.

    Every message that can still be read (all but the last, partly written MCAP chunk) is
    rewritten, in order, into a new chunk-compressed bag with ``metadata.yaml``, whose
    ``custom_data`` says ``awopt_cut: 'true'``, ``awopt_cut_reason``,
    ``awopt_recovered_messages`` and ``awopt_unread_bytes``. The new bag replaces the old one
    at ``path`` (built in a work directory ``.<name>.repair`` beside it, then swapped in by
    renames; a repair that a crash interrupted is undone by :func:`unfinished_bags`, and so by
    :func:`recover_bags`: the original is put back, to be repaired again). The original's
    ``.mcap`` is locked (``flock``) during the repair.

    Args:
        path: bag directory (or its ``.mcap`` file).
        typestore: rosbags type store (default :func:`default_typestore`).
        reason: text stored as ``awopt_cut_reason``.
        keep_original: keep the damaged file as ``<name>.mcap.orig`` in the bag directory
            (default: deleted once the new bag is complete).

    Returns:
        dict ``path``, ``messages`` (recovered), ``topics`` (topic -> count), ``unread_bytes``,
        ``error`` (why reading stopped, or None), ``skipped_channels`` (topics whose type
        could not be rebuilt).

    Raises:
        FileNotFoundError: no ``.mcap`` file. BagInUseError: a writer (a running logger) or
        another repair holds the bag's lock; nothing is touched. OSError: writing failed (the
        original is kept).
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    files = _mcap_files(path)
    if not files:
        raise FileNotFoundError(f'no .mcap file in {path}')
    locks = []
    try:
        for file in files:
            locks.append(_lock_bag_file(file))
        return _repair_locked(path, typestore, reason, keep_original)
    finally:
        for fd in locks:
            os.close(fd)


def _repair_locked(path, typestore, reason, keep_original):
    """:func:`repair_bag` of bag directory ``path`` while its lock is held."""
    store = typestore if typestore is not None else default_typestore()
    scan = scan_mcap(path)
    work = path.parent / f'.{path.name}.repair'
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    new = work / path.name
    result = {'path': str(path), 'messages': 0, 'topics': {}, 'unread_bytes':
              scan['unread_bytes'], 'error': scan['error'], 'skipped_channels': []}
    try:
        writer = _open_writer(new, 'zstd')
        try:
            connections = {}
            for cid, channel in sorted(scan['channels'].items()):
                schema = scan['schemas'].get(channel.schema_id)
                try:
                    msgtype, kwargs = _connection_args(schema, store)
                    connections[cid] = writer.add_connection(
                        channel.topic, msgtype, offered_qos_profiles=_qos_profiles(channel),
                        serialization_format=channel.message_encoding or 'cdr', **kwargs)
                except Exception:  # noqa: BLE001 - reported; the other topics are kept
                    result['skipped_channels'].append(channel.topic)
            for cid, stamp_ns, data in scan['messages']:
                conn = connections.get(cid)
                if conn is None:
                    continue
                writer.write(conn, stamp_ns, data)
                result['messages'] += 1
                result['topics'][conn.topic] = result['topics'].get(conn.topic, 0) + 1
            for key, value in ((CUT_KEY, 'true'), ('awopt_cut_reason', reason),
                               ('awopt_recovered_messages', str(result['messages'])),
                               ('awopt_unread_bytes', str(scan['unread_bytes']))):
                writer.set_custom_data(key, value)
            writer.close()
        except BaseException:
            with suppress(Exception):
                writer.abort()
            raise
        for file in new.iterdir():
            with file.open('rb') as stream:
                os.fsync(stream.fileno())
        old = work / 'orig'
        path.rename(old)
        new.rename(path)
    except BaseException:
        if not path.exists() and (work / 'orig').exists():
            (work / 'orig').rename(path)
        shutil.rmtree(work, ignore_errors=True)
        raise
    if keep_original:
        for file in _mcap_files(old):
            file.rename(path / f'{file.name}.orig')
    shutil.rmtree(work, ignore_errors=True)
    return result


def unfinished_bags(bags_dir, *, in_use=None):
    """Return the bag directories under ``bags_dir`` that need :func:`repair_bag` (sorted).

    First undoes repairs a crash interrupted (a ``.<name>.repair`` work directory: the
    original bag is put back, to be repaired again); a repair still running is left alone.
    Bags that a running writer or repair holds (:func:`bag_in_use`: a logger still writing
    them) are not returned; they are appended to the list ``in_use`` when one is given.
    """
    bags_dir = Path(bags_dir)
    if not bags_dir.is_dir():
        return []
    for work in sorted(bags_dir.glob('.*.repair')):
        target = bags_dir / work.name[1:-len('.repair')]
        if bag_in_use(target) or bag_in_use(work / 'orig'):
            continue   # another process is repairing it right now
        if not target.exists() and (work / 'orig').is_dir():
            (work / 'orig').rename(target)
        shutil.rmtree(work, ignore_errors=True)
    out = []
    for p in sorted(bags_dir.iterdir()):
        if not p.is_dir() or p.name.startswith('.') or not needs_repair(p):
            continue
        if bag_in_use(p):
            if in_use is not None:
                in_use.append(p)
        else:
            out.append(p)
    return out


def repair_error_text(exc):
    """Short text of a repair failure (the errno text for an OSError)."""
    if isinstance(exc, OSError) and exc.errno:
        return f'{os.strerror(exc.errno)} ({exc.filename or ""})'
    return f'{type(exc).__name__}: {exc}'


#: Why a bag was skipped by :func:`recover_bags` and ``awopt bag-repair``.
IN_USE_TEXT = 'in use by a running logger, skipped'


def recover_bags(bags_dir, *, typestore=None, reason='the logger stopped mid-episode'):
    """Repair every bag under ``bags_dir`` left unfinished by a crash (see :func:`repair_bag`
    and :func:`unfinished_bags`). A bag that cannot be repaired (e.g. the disk is full) is
    left as it is, and reported; a bag being written (locked) is skipped, and reported.

    Args:
        typestore: rosbags type store; default: a new one for this call (a type store is not
            thread safe: do not pass one that another thread uses, e.g. to open writers).

    Returns:
        list of dicts, one per bag: :func:`repair_bag`'s result, ``{'path', 'failed': text}``
        or ``{'path', 'skipped': text}``. OSError if ``bags_dir`` cannot be listed.
    """
    store = typestore if typestore is not None else default_typestore()
    in_use = []
    todo = unfinished_bags(bags_dir, in_use=in_use)
    results = [{'path': str(p), 'skipped': IN_USE_TEXT} for p in in_use]
    for path in todo:
        try:
            results.append(repair_bag(path, typestore=store, reason=reason))
        except BagInUseError:
            results.append({'path': str(path), 'skipped': IN_USE_TEXT})
        except Exception as exc:  # noqa: BLE001 - reported; retried at the next start
            results.append({'path': str(path), 'failed': repair_error_text(exc)})
    return results

