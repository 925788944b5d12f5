"""Bags cut short by a crash (SIGKILL of the writer) are rebuilt readable and marked as cut."""
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from rclpy.serialization import serialize_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from std_msgs.msg import String

from awopt_ros.core.bag import (CUT_KEY, default_typestore, needs_repair, read_messages,
                                recover_bags, repair_bag)
from test_bag import mcap_ros2_decode_all

TOPIC = '/chatter'

_KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys, time
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String
    from awopt_ros.core.bag import BagWriter
    w = BagWriter(sys.argv[1], {'/chatter': 'std_msgs/msg/String'}, chunk_max_s=0.05)
    for i in range(int(sys.argv[2])):
        w.write('/chatter', serialize_message(String(data=f'msg {i} ' + 'x' * 200)), i * 1000)
    deadline = time.monotonic() + 10
    while sum(w.frames_written.values()) < int(sys.argv[2]) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)     # more than chunk_max_s: the chunk reached the OS
    w.write('/chatter', serialize_message(String(data='lost')), 10**9)   # in the open chunk
    time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _write_and_kill(path, count):
    proc = subprocess.run([sys.executable, '-c', _KILLED_WRITER, str(path), str(count)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _metadata(path):
    return yaml.safe_load((Path(path) / 'metadata.yaml').read_text())[
        'rosbag2_bagfile_information']


def test_a_killed_writers_bag_is_unreadable_until_repaired_then_complete_and_marked(tmp_path):
    bag = tmp_path / 'bags' / 'episode_0003'
    _write_and_kill(bag, 40)
    assert not (bag / 'metadata.yaml').exists()
    assert needs_repair(bag)
    with pytest.raises(Exception):
        with AnyReader([bag]) as reader:
            list(reader.messages())
    result = repair_bag(bag)
    assert result['messages'] == 40 and result['topics'] == {TOPIC: 40}
    assert not needs_repair(bag)
    with AnyReader([bag]) as reader:
        got = [reader.deserialize(raw, c.msgtype).data for c, _, raw in reader.messages()]
    assert got == [f'msg {i} ' + 'x' * 200 for i in range(40)]
    meta = _metadata(bag)
    assert meta['custom_data'][CUT_KEY] == 'true'
    assert meta['custom_data']['awopt_recovered_messages'] == '40'
    assert mcap_ros2_decode_all(bag)[:2] == (40, 0)
    assert not list(tmp_path.glob('bags/.*'))   # no work directory left
    assert repair_bag(bag)['messages'] == 40   # a complete bag can be rewritten again


def test_recover_bags_repairs_only_unfinished_bags_and_finishes_an_interrupted_swap(tmp_path):
    bags = tmp_path / 'bags'
    _write_and_kill(bags / 'episode_0001', 5)
    from awopt_ros.core.bag import BagWriter
    with BagWriter(bags / 'episode_0000', {TOPIC: 'std_msgs/msg/String'}) as w:
        w.write(TOPIC, serialize_message(String(data='ok')), 1)
    before = (bags / 'episode_0000' / 'metadata.yaml').read_text()
    # A repair killed between its two renames: the original sits in the work directory.
    _write_and_kill(bags / 'episode_0002', 3)
    work = bags / '.episode_0002.repair'
    work.mkdir()
    (bags / 'episode_0002').rename(work / 'orig')
    results = recover_bags(bags)
    assert sorted(Path(r['path']).name for r in results) == ['episode_0001', 'episode_0002']
    assert [r['messages'] for r in results] == [5, 3]
    assert (bags / 'episode_0000' / 'metadata.yaml').read_text() == before
    assert _metadata(bags / 'episode_0000').get('custom_data') is None
    for name, n in (('episode_0001', 5), ('episode_0002', 3)):
        with AnyReader([bags / name]) as reader:
            assert reader.message_count == n
    assert recover_bags(bags) == []
    assert not work.exists()


def test_older_message_compressed_bags_are_read_and_repaired_to_plain_cdr(tmp_path):
    """Bags written before chunk compression (per-message zstd) stay readable by this
    project's reader, complete or cut short; a repair stores plain CDR."""
    path = tmp_path / 'old'
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    writer.open()
    conn = writer.add_connection(TOPIC, 'std_msgs/msg/String', typestore=default_typestore())
    sent = [serialize_message(String(data=f'old {i}')) for i in range(300)]
    for i, data in enumerate(sent):
        writer.write(conn, i, data)
    writer.close()
    assert [m[3] for m in read_messages(path)] == sent
    # Cut the file after the first chunk (as a crash would) and drop metadata.yaml.
    mcap = next(path.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:len(data) - 600])
    (path / 'metadata.yaml').unlink()
    result = repair_bag(path, keep_original=True)
    assert 0 < result['messages'] <= 300
    assert (path / f'{mcap.name}.orig').exists()
    with AnyReader([path]) as reader:
        got = [bytes(raw) for _, _, raw in reader.messages()]
    assert got == sent[:result['messages']]
    assert mcap_ros2_decode_all(path)[:2] == (result['messages'], 0)
    assert [m.data for m in _generic_decode(path)] == [
        f'old {i}' for i in range(result['messages'])]


def _generic_decode(path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    with next(Path(path).glob('*.mcap')).open('rb') as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        return [m for _, _, _, m in reader.iter_decoded_messages()]


def test_repair_of_a_missing_bag_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        repair_bag(tmp_path / 'nothing')
    assert needs_repair(tmp_path) is False
    assert recover_bags(tmp_path / 'none') == []


def _lock(path):
    """Hold an exclusive flock on the .mcap of bag ``path`` through a separate fd (as a
    running logger's BagWriter does); return the fd."""
    import fcntl
    import os
    fd = os.open(next(Path(path).glob('*.mcap')), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_bag_locked_by_a_running_writer_is_skipped_by_bag_repair(tmp_path, capsys):
    """A bag a live logger still writes has no metadata.yaml either: ``awopt bag-repair``
    (and recover_bags) leave it alone and say so, while a crashed bag beside it is repaired."""
    import argparse
    import os

    from awopt_ros.bag_cli import add_bag_repair_args, run_bag_repair_cli
    from awopt_ros.core.bag import BagInUseError, bag_in_use
    bags = tmp_path / 'run' / 'bags'
    _write_and_kill(bags / 'episode_0000', 4)
    _write_and_kill(bags / 'episode_0001', 6)
    live = bags / 'episode_0001'
    before = next(live.glob('*.mcap')).read_bytes()
    fd = _lock(live)
    try:
        assert bag_in_use(live) and not bag_in_use(bags / 'episode_0000')
        parser = argparse.ArgumentParser()
        add_bag_repair_args(parser)
        assert run_bag_repair_cli(parser.parse_args([str(tmp_path / 'run')])) == 0
        out = capsys.readouterr().out
        assert f'{live}: in use by a running logger, skipped' in out
        assert 'episode_0000: rebuilt' in out
        assert run_bag_repair_cli(parser.parse_args([str(live)])) == 0
        assert f'{live}: in use by a running logger, skipped' in capsys.readouterr().out
        assert next(live.glob('*.mcap')).read_bytes() == before
        assert not (live / 'metadata.yaml').exists()
        assert recover_bags(bags) == [{'path': str(live),
                                       'skipped': 'in use by a running logger, skipped'}]
        with pytest.raises(BagInUseError):
            repair_bag(live)
        assert next(live.glob('*.mcap')).read_bytes() == before
    finally:
        os.close(fd)
    assert not bag_in_use(live)
    assert [r['messages'] for r in recover_bags(bags)] == [6]


def test_a_bag_writer_holds_the_lock_while_open(tmp_path):
    from awopt_ros.core.bag import BagWriter, bag_in_use, unfinished_bags
    bags = tmp_path / 'bags'
    w = BagWriter(bags / 'episode_0000', {TOPIC: 'std_msgs/msg/String'})
    try:
        w.write(TOPIC, serialize_message(String(data='live')), 1)
        assert bag_in_use(bags / 'episode_0000')
        in_use = []
        assert unfinished_bags(bags, in_use=in_use) == [] and in_use == [bags / 'episode_0000']
    finally:
        w.close()
    assert not bag_in_use(bags / 'episode_0000')
    assert unfinished_bags(bags) == []

