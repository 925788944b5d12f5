"""awopt replay through real processes: a recorded episode into a fresh camera pipeline and
policy gives the recorded policy images bit for bit; old message-compressed bags play too."""
import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from awopt_ros.core.bag import read_messages
from awopt_ros.core.replay import header_stamp_ns

ROOT = Path(__file__).resolve().parents[1]
AWOPT = Path(sys.prefix) / 'bin' / 'awopt'


class _Listener:
    """A node in its own context that keeps raw CDR messages per topic, spun on a thread."""

    def __init__(self, topics):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from awopt_ros.core.replay import QOS_PRESETS
        from awopt_ros.ros.bag_player import message_class, qos_profile
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('replay_listener', context=self.context)
        self.got = {topic: [] for topic in topics}
        self.lock = threading.Lock()
        for topic, (msgtype, preset) in topics.items():   # deep queues: keep every message
            qos = dataclasses.replace(QOS_PRESETS[preset], depth=100)
            self.node.create_subscription(message_class(msgtype), topic, self._keep(topic),
                                          qos_profile(qos), raw=True)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _keep(self, topic):
        def keep(data):
            with self.lock:
                self.got[topic].append(bytes(data))
        return keep

    def connected(self, topics):
        """True when each of ``topics`` has a publisher matched with this listener."""
        return all(self.node.count_publishers(t) > 0 for t in topics) and all(
            sub.get_publisher_count() > 0 for sub in self.node.subscriptions
            if sub.topic_name in topics)

    def resume_replay(self, proc, topics, probe=None, timeout_s=90.0):
        """Once ``topics`` are connected (and ``probe`` returned True), resume the paused
        replay ``proc`` (Popen) through ``/awopt_replay/pause``; fails when the replay exits
        first or on the timeout."""
        from std_srvs.srv import SetBool
        client = self.node.create_client(SetBool, '/awopt_replay/pause')
        deadline = time.monotonic() + timeout_s
        while not (self.connected(topics) and client.service_is_ready()
                   and (probe is None or probe())):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f'replay not connected: {topics}'
            time.sleep(0.05)
        answer = _answer(client, SetBool.Request(data=False), deadline)
        assert answer.success and answer.message.startswith('playing'), answer.message

    def wait_for(self, topic, count, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got[topic]) >= count:
                    return
            time.sleep(0.05)

    def close(self):
        import rclpy
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _answer(client, request, deadline, retry_s=2.0):
    """Call the service of ``client`` (its executor spins elsewhere) until it answers, asking
    again every ``retry_s`` (idempotent requests only): a request sent while DDS is still
    matching the service's reply path can be lost. Fails at ``deadline`` (monotonic s)."""
    while True:
        future = client.call_async(request)
        again = time.monotonic() + retry_s
        while not future.done() and time.monotonic() < min(again, deadline):
            time.sleep(0.02)
        if future.done():
            return future.result()
        assert time.monotonic() < deadline, f'no answer from {client.srv_name}'


def _replay(listener, args, topics, probe=None, timeout_s=120):
    """Run ``awopt replay --start-paused ARGS``, resume it once the listener's ``topics`` are
    connected (and ``probe()`` is True), wait for it; return (stdout, stderr)."""
    proc = subprocess.Popen([str(AWOPT), 'replay', '--start-paused', *map(str, args)], cwd=ROOT,
                            env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        listener.resume_replay(proc, topics, probe)
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, (out[-3000:], err[-3000:])
    return out, err


def _image(data):
    """Return the fields of a serialized sensor_msgs/Image: header, size, encoding, step and
    the pixel bytes (the CDR padding bytes between fields are not part of the message)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image
    msg = deserialize_message(bytes(data), Image)
    return ((msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id), msg.height,
            msg.width, msg.encoding, msg.is_bigendian, msg.step, bytes(msg.data))


def _by_stamp(images):
    return {header_stamp_ns(data): data for data in images}


class _PipelineProbe:
    """Camera frames (and joint states) of the test's own, stamped before the recording's
    first frame, sent to the started nodes until the pipeline's policy image and the policy's
    action on one of them reach the listener: then the pipeline's writer has matched the
    listener's reader too (each side of a DDS match comes in its own time, and a best-effort
    sample sent before it is lost), and the policy has made its first, slow inference (on a
    2-core host it starved the pipeline for a second, which then lost recorded frames from its
    5-deep queue). Then the recorded frames can go."""

    def __init__(self, listener, first_ns):
        import numpy as np
        from sensor_msgs.msg import CameraInfo, Image, JointState

        from awopt_ros.core.spec import ARM_JOINTS, GRIPPER_JOINT, SOURCE_SIZE
        from awopt_ros.ros import qos
        self.listener, self.first_ns, self.sent = listener, first_ns, []
        self.pub = listener.node.create_publisher(Image, '/camera/color/image_raw', qos.SENSOR)
        self.joints_pub = listener.node.create_publisher(JointState, '/joint_states',
                                                         qos.SENSOR)
        self.info_pub = listener.node.create_publisher(CameraInfo, '/camera/color/camera_info',
                                                       qos.SENSOR)
        self.info = CameraInfo(width=SOURCE_SIZE[0], height=SOURCE_SIZE[1])
        self.joints = JointState(name=[*ARM_JOINTS, GRIPPER_JOINT],
                                 position=[0.0, 0.5, 0.0, -1.2, 0.0, 1.0, 0.0, 0.0])
        w, h = SOURCE_SIZE
        self.frame = Image(width=w, height=h, encoding='rgb8', step=3 * w,
                           data=np.full((h, w, 3), 128, np.uint8).tobytes())
        self.next_s = 0.0
        self.seen_s = None

    def __call__(self):
        with self.listener.lock:
            got = {header_stamp_ns(d) for d in self.listener.got['/policy/image']}
            acted = {header_stamp_ns(d) for d in self.listener.got['/policy/action']}
        if got & set(self.sent) and acted & set(self.sent):
            if self.seen_s is None:
                self.seen_s = time.monotonic()
            return time.monotonic() > self.seen_s + 1.0   # and the other readers settled
        if time.monotonic() >= self.next_s:     # again, newer, every 0.5 s
            stamp = self.first_ns - 500_000_000 + len(self.sent) * 10_000_000
            for msg in (self.joints, self.frame, self.info):
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            self.joints_pub.publish(self.joints)
            self.info_pub.publish(self.info)
            self.pub.publish(self.frame)
            self.sent.append(stamp)
            self.next_s = time.monotonic() + 0.5
        return False


def test_replayed_episode_gives_fresh_policy_images_identical_to_the_recorded_ones(
        recorded_demo_run, tmp_path):
    """Every frame of a recorded episode replayed into a fresh camera pipeline gives the
    recorded policy image bit for bit (matched by stamp; every field and pixel byte, not the
    CDR padding, which a serializer may leave as it finds it). Fresh images reach this test best
    effort, as rviz gets them: on a loaded host one can be lost on the way, so a frame whose
    fresh image did not arrive is looked for in one more replay (a wrong image fails at
    once)."""
    bag = recorded_demo_run / 'bags' / 'episode_0001'
    recorded = [m for m in read_messages(bag) if m[0] == '/policy/image']
    want = _by_stamp(m[3] for m in recorded)
    assert want
    first_ns = min(want)
    seen, missing = set(), sorted(want)
    for attempt in range(3):
        listener = _Listener({
            '/policy/image': ('sensor_msgs/msg/Image', 'sensor'),
            '/recorded/policy/image': ('sensor_msgs/msg/Image', 'sensor'),
            '/policy/action': ('sensor_msgs/msg/JointState', 'reliable'),
            '/arm_controller/joint_trajectory': ('trajectory_msgs/msg/JointTrajectory',
                                                 'reliable')})
        try:
            stdout, _ = _replay(listener, [bag, '--rate', '0.5', '--timing', 'stamp',
                                           '--nodes', 'camera_pipeline,policy',
                                           '--log-dir', tmp_path / f'logs{attempt}'],
                                ['/policy/image', '/recorded/policy/image', '/policy/action'],
                                _PipelineProbe(listener, first_ns))
            listener.wait_for('/policy/image', len(want), 5.0)
        finally:
            listener.close()
        assert f'published {len(read_messages(bag))} messages' in stdout
        # every fresh image is bit for bit the recorded image of its stamp
        for data in listener.got['/policy/image']:
            stamp = _by_stamp([data]).popitem()[0]
            if stamp < first_ns:        # the probe's frames
                continue
            assert stamp in want, stamp
            assert _image(data) == _image(want[stamp]), stamp
            seen.add(stamp)
        # the recorded images went out on /recorded/policy/image, as recorded
        replayed = _by_stamp(listener.got['/recorded/policy/image'])
        assert replayed and all(want.get(stamp) == data for stamp, data in replayed.items())
        assert listener.got['/policy/action'], 'the fresh policy acted on the replayed frames'
        # nothing commanded the arm's controllers: recorded commands went to /recorded/...
        assert listener.got['/arm_controller/joint_trajectory'] == []
        missing = sorted(set(want) - seen)
        if not missing:
            break
    # every recorded frame had its fresh image
    assert not missing, (missing, stdout)


def _message_compressed_copy(bag, dst):
    """Write the messages of ``bag`` into ``dst`` as older versions did: per-message zstd
    payloads (rosbag2's --compression-mode message), same topics, types and log times."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    from awopt_ros.core.bag import default_typestore
    store = default_typestore()
    writer = Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    writer.open()
    conns = {}
    messages = read_messages(bag)
    for topic, msgtype, stamp_ns, data in messages:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
        writer.write(conns[topic], stamp_ns, data)
    writer.close()
    return messages


def test_old_message_compressed_bag_replays_plain_messages(recorded_demo_run, tmp_path):
    old = tmp_path / 'episode_0001_old'
    messages = _message_compressed_copy(recorded_demo_run / 'bags' / 'episode_0001', old)
    raw = (next(old.glob('*.mcap'))).read_bytes()
    assert b'\x28\xb5\x2f\xfd' in raw            # zstd frames: the payloads are compressed
    topics = {'/policy/image': ('sensor_msgs/msg/Image', 'sensor'),
              '/episode/event': ('std_msgs/msg/String', 'latched'),
              '/policy/decision': ('std_msgs/msg/String', 'reliable')}
    want = {t: [m[3] for m in messages if m[0] == t] for t in topics}
    assert all(want.values())
    listener = _Listener(topics)
    try:
        _replay(listener, [old, '--rate', '4', '--topics', *topics], list(topics))
        listener.wait_for('/policy/decision', len(want['/policy/decision']), 5.0)
    finally:
        listener.close()
    assert listener.got['/episode/event'] == want['/episode/event']
    assert listener.got['/policy/decision'] == want['/policy/decision']
    assert listener.got['/policy/image'] == want['/policy/image']


def _call(node, srv_type, name, request, timeout_s=20.0):
    """One request (a step is not idempotent: no retry), in the same process as the server."""
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout_s), name
    return _answer(client, request, time.monotonic() + timeout_s, retry_s=timeout_s)


def test_player_services_pause_step_and_clock(ros_context):
    """The node in process: /awopt_replay/step publishes one message (with /clock at its log
    time) while paused, is refused while playing; /awopt_replay/pause resumes."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.serialization import serialize_message
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from awopt_ros.core.replay import Message, QosSpec, Recording, Segment
    from awopt_ros.ros.bag_player import BagPlayer
    s = 1_000_000_000
    msgs = [Message('/t', '/t', 'std_msgs/msg/String', int((5 + 0.05 * i) * s),
                    serialize_message(String(data=f'm{i}'))) for i in range(4)]
    rec = Recording([Segment('x', msgs)], {'/t': ('std_msgs/msg/String', QosSpec())}, {})
    player = BagPlayer(rec, start_paused=True, context=ros_context)
    node = rclpy.create_node('replay_test', context=ros_context)
    got, clocks = [], []
    node.create_subscription(String, '/t', lambda m: got.append(m.data), 10)
    node.create_subscription(Clock, '/clock', lambda m: clocks.append(
        m.clock.sec * s + m.clock.nanosec), 10)
    executor = MultiThreadedExecutor(context=ros_context)
    executor.add_node(node)
    player.spin_in_background(executor)
    deadline = time.monotonic() + 10.0
    while player.pubs['/t'].get_subscription_count() < 1 or player.clock_pub.\
            get_subscription_count() < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    thread = threading.Thread(target=player.play)
    thread.start()
    try:
        answer = _call(node, Trigger, '/awopt_replay/step', Trigger.Request())
        assert answer.success and answer.message.startswith('paused; 1 messages published')
        deadline = time.monotonic() + 5.0
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == ['m0'] and clocks and clocks[-1] == 5 * s
        answer = _call(node, SetBool, '/awopt_replay/pause', SetBool.Request(data=False))
        assert answer.success and answer.message.startswith('playing')
        thread.join(timeout=10.0)
        assert not thread.is_alive()
        answer = _call(node, Trigger, '/awopt_replay/step', Trigger.Request())
        assert not answer.success and 'not stepped: done' in answer.message
        deadline = time.monotonic() + 5.0
        while len(got) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == ['m0', 'm1', 'm2', 'm3']
        assert clocks == sorted(clocks) and clocks[-1] == int(5.15 * s)
    finally:
        player.stop()
        thread.join(timeout=5.0)
        player.close()
        node.destroy_node()
