"""awopt replay without ROS: schedule (rate, pause, step, loop, /clock), selection, remapping,
QoS, bag discovery and the command's one-line errors (awopt_ros.core.replay, replay_cli)."""
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from awopt_ros.core import replay
from awopt_ros.core.bag import BagWriter, read_messages
from awopt_ros.core.replay import (Message, Playback, QosSpec, Recording, Segment, Selection,
                                   bag_dirs, header_stamp_ns, input_ages_s, load_recording,
                                   parse_nodes, parse_remaps, remaps_for, topic_qos)

S = 1_000_000_000


def _segment(times_s, topic='/t', path='bag'):
    return Segment(path, [Message(topic, topic, 'std_msgs/msg/String', int(round(t * S)),
                                  bytes([i])) for i, t in enumerate(times_s)])


def _recording(*segments):
    return Recording(list(segments), {}, {})


def _drain(pb, wall_s):
    """Return the payload bytes of every message due at ``wall_s``."""
    out = []
    while (m := pb.due(wall_s)) is not None:
        out.append(m.data[0])
    return out


# ---- schedule ------------------------------------------------------------------------------
def test_messages_go_out_at_their_log_time_scaled_by_the_rate():
    pb = Playback(_recording(_segment([1.0, 1.1, 1.5, 2.0])), rate=0.5)
    pb.start(100.0)
    assert _drain(pb, 100.0) == [0]                 # the first message at once
    assert pb.wait_s(100.0) == pytest.approx(0.2)   # 0.1 s recorded at half speed
    assert _drain(pb, 100.19) == []
    assert _drain(pb, 100.2) == [1]
    assert _drain(pb, 101.0) == [2]                 # 1.5 s is due at 100 + 0.5 / 0.5
    assert _drain(pb, 101.99) == []
    assert _drain(pb, 102.0) == [3]
    assert pb.done and pb.wait_s(102.0) is None and pb.published == 4


def test_a_late_caller_gets_every_due_message_in_order():
    pb = Playback(_recording(_segment([1.0, 1.1, 1.2, 1.3])), rate=2.0)
    pb.start(0.0)
    assert _drain(pb, 10.0) == [0, 1, 2, 3]


def test_clock_follows_the_position_never_past_the_next_message():
    pb = Playback(_recording(_segment([1.0, 2.0])), rate=1.0)
    pb.start(0.0)
    assert pb.clock_ns(0.0) == 1 * S
    pb.due(0.0)
    assert pb.last_clock_ns == 1 * S
    assert pb.clock_ns(0.25) == int(1.25 * S)
    assert pb.clock_ns(5.0) == 2 * S                # capped at the next message's log time
    assert pb.clock_ns(0.5) == 2 * S                # and never backwards


def test_pause_stops_the_position_and_resume_goes_on_from_there():
    pb = Playback(_recording(_segment([1.0, 2.0, 3.0])), rate=1.0)
    pb.start(0.0)
    assert _drain(pb, 0.0) == [0]
    pb.pause(0.5)
    assert pb.paused and pb.wait_s(0.5) is None
    assert _drain(pb, 50.0) == []                  # paused: nothing, however long
    assert pb.clock_ns(50.0) == int(1.5 * S)        # /clock stands still
    pb.resume(60.0)
    assert pb.wait_s(60.0) == pytest.approx(0.5)
    assert _drain(pb, 60.5) == [1]
    assert pb.toggle(60.6) is True and pb.toggle(61.0) is False


def test_step_publishes_one_message_while_paused_and_playing_resumes_after_it():
    pb = Playback(_recording(_segment([1.0, 2.0, 3.0])), rate=1.0, start_paused=True)
    assert pb.due(0.0) is None
    assert pb.step(0.0).data[0] == 0
    assert pb.step(0.0).data[0] == 1
    assert pb.last_clock_ns == 2 * S
    pb.resume(10.0)
    assert pb.step(10.0) is None                    # step only while paused
    assert _drain(pb, 10.99) == []
    assert _drain(pb, 11.0) == [2]
    assert pb.done
    pb.pause(12.0)
    assert pb.step(12.0) is None                    # nothing left


def test_segments_play_one_after_the_other_each_on_its_own_timeline():
    pb = Playback(_recording(_segment([1.0, 1.5]), _segment([1.0, 1.2])), rate=1.0)
    pb.start(0.0)
    assert _drain(pb, 0.0) == [0]
    assert _drain(pb, 0.5) == [1, 0]                # the next bag starts where the last ended
    assert pb.last_clock_ns == 1 * S                # /clock back at the new bag's start
    assert _drain(pb, 0.69) == []
    assert _drain(pb, 0.7) == [1]
    assert pb.done and pb.passes == 1


def test_loop_starts_again_without_drift():
    pb = Playback(_recording(_segment([1.0, 2.0])), rate=1.0, loop=True)
    pb.start(0.0)
    # a pass lasts 1 s (the next starts when the last message goes out): a late caller gets
    # 0 1 | 0 1 | 0 1 | 0 by wall 3.5
    assert _drain(pb, 3.5) == [0, 1, 0, 1, 0, 1, 0]
    assert not pb.done and pb.passes == 3
    assert pb.wait_s(3.5) == pytest.approx(0.5)     # its 2nd message is due at wall 4.0


def test_timeline_goes_back_with_loop_or_bags_out_of_order():
    one_run = _recording(_segment([1.0, 2.0]), _segment([2.2, 3.0]))
    assert not replay.timeline_goes_back(one_run)
    assert replay.timeline_goes_back(one_run, loop=True)
    assert replay.timeline_goes_back(_recording(_segment([2.2, 3.0]), _segment([1.0, 2.0])))


def test_playback_rejects_bad_input():
    with pytest.raises(ValueError, match='rate must be > 0'):
        Playback(_recording(_segment([1.0])), rate=0.0)
    with pytest.raises(ValueError, match='nothing to replay'):
        Playback(_recording(Segment('x', [])))


# ---- selection, remapping, QoS ------------------------------------------------------------
def test_parse_remaps_and_nodes():
    assert parse_remaps(['/a:=/b', ' /c := /d ']) == {'/a': '/b', '/c': '/d'}
    for bad in ('a:=/b', '/a:/b', '/a:=b', '/a:=/'):
        with pytest.raises(ValueError, match='expects /FROM:=/TO'):
            parse_remaps([bad])
    assert parse_nodes('policy, camera_pipeline,policy') == ('policy', 'camera_pipeline')
    assert parse_nodes('') == ()
    with pytest.raises(ValueError, match="unknown node 'arm_interface'"):
        parse_nodes('camera_pipeline,arm_interface')


def test_remaps_move_started_nodes_outputs_and_controller_commands_to_recorded():
    remaps = remaps_for(('camera_pipeline', 'policy'), {'/policy/action': '/mine'})
    assert remaps['/policy/image'] == '/recorded/policy/image'
    assert remaps['/policy/decision'] == '/recorded/policy/decision'
    assert remaps['/policy/model_info'] == '/recorded/policy/model_info'
    assert remaps['/policy/action'] == '/mine'                  # the user's remap wins
    assert remaps['/arm_controller/joint_trajectory'] == \
        '/recorded/arm_controller/joint_trajectory'            # never to the controllers
    assert remaps['/diagnostics'] == '/recorded/diagnostics'       # fresh statuses alone
    assert '/success_detector/success' not in remaps
    assert '/camera/color/image_raw' not in remaps
    assert '/diagnostics' not in remaps_for(())


def test_selection():
    sel = Selection(topics=('/a', '/b'), exclude=('/b',))
    assert [sel.keeps(t) for t in ('/a', '/b', '/c')] == [True, False, False]
    assert Selection(exclude=('/x',)).keeps('/y') and not Selection(exclude=('/x',)).keeps('/x')


def test_topic_qos_offered_then_preset_and_latched_topics_transient_local():
    from awopt_ros.core.bag import QOS_PRESETS as BAG_QOS
    assert topic_qos('/camera/color/image_raw', [BAG_QOS['sensor']]) == QosSpec(False, False, 5)
    assert topic_qos('/x', None, {'/x': 'sensor'}) == QosSpec(False, False, 5)
    assert topic_qos('/unknown') == QosSpec(True, False, 10)
    # latched whatever the bag offered
    assert topic_qos('/episode/event', [BAG_QOS['reliable']]).transient_local
    assert topic_qos('/policy/model_info').transient_local


# ---- bags ---------------------------------------------------------------------------------
def _image(stamp_s, size=4):
    msg = Image(height=size, width=size, encoding='rgb8', step=3 * size,
                data=bytes(range(3 * size * size)))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(round(stamp_s * S)), S)
    return msg


def _joints(stamp_s):
    msg = JointState(name=['a'], position=[stamp_s])
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(round(stamp_s * S)), S)
    return msg


def _write_bag(path, frames=((1.0, 1.0), (1.1, 1.3), (1.2, 1.3)), t0=0.0):
    """A bag with camera frames (stamp, log time), a joint state at ``t0`` + 0.95 s and a
    latched event at ``t0`` + 0.9 s."""
    topics = {'/camera/color/image_raw': 'sensor_msgs/msg/Image',
              '/joint_states': 'sensor_msgs/msg/JointState',
              '/episode/event': 'std_msgs/msg/String',
              '/policy/image': 'sensor_msgs/msg/Image'}
    with BagWriter(path, topics, qos={'/camera/color/image_raw': 'sensor',
                                      '/joint_states': 'sensor', '/episode/event': 'latched'},
                   compression='none') as writer:
        writer.write('/episode/event', serialize_message(String(data='{"event": "start"}')),
                     int((t0 + 0.9) * S))
        writer.write('/joint_states', serialize_message(_joints(t0 + 0.95)),
                     int((t0 + 0.95) * S))
        for stamp, logged in frames:
            writer.write('/camera/color/image_raw', serialize_message(_image(stamp)),
                         int(round(logged * S)))
            writer.write('/policy/image', serialize_message(_image(stamp, 2)),
                         int(round(logged * S)))
    return path


def test_bag_dirs_accepts_a_bag_its_mcap_a_bags_dir_and_a_run(tmp_path):
    run = tmp_path / 'run'
    a = _write_bag(run / 'bags' / 'episode_0001')
    b = _write_bag(run / 'bags' / 'episode_0002')
    assert bag_dirs(a) == [a]
    assert bag_dirs(next(a.glob('*.mcap'))) == [a]
    assert bag_dirs(run / 'bags') == [a, b]
    assert bag_dirs(run) == [a, b]
    with pytest.raises(FileNotFoundError, match='does not exist'):
        bag_dirs(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError, match='no bag in'):
        bag_dirs(tmp_path / 'run' / 'bags' / '..' / '..')
    (tmp_path / 'f.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match='not a bag'):
        bag_dirs(tmp_path / 'f.txt')


def test_load_recording_selects_remaps_and_keeps_qos_and_bytes(tmp_path):
    bag = _write_bag(tmp_path / 'bag')
    rec = load_recording([bag], selection=Selection(exclude=('/joint_states',)),
                         remaps=remaps_for(('camera_pipeline',)))
    assert set(rec.topics) == {'/camera/color/image_raw', '/episode/event',
                               '/recorded/policy/image'}
    assert rec.remapped == {'/policy/image': '/recorded/policy/image'}
    assert rec.topics['/camera/color/image_raw'] == ('sensor_msgs/msg/Image',
                                                     QosSpec(False, False, 5))
    assert rec.topics['/episode/event'][1].transient_local
    msgs = rec.segments[0].load()
    assert [m.log_time_ns for m in msgs] == sorted(m.log_time_ns for m in msgs)
    for topic in ('/camera/color/image_raw', '/policy/image', '/episode/event'):
        assert [m.data for m in msgs if m.source_topic == topic] == [
            d for t, _, _, d in read_messages(bag) if t == topic]
    with pytest.raises(ValueError, match='nothing to replay'):
        load_recording([bag], selection=Selection(topics=('/nope',)))


def test_a_run_is_replayed_one_bag_in_memory_at_a_time(tmp_path):
    run = tmp_path / 'run'
    for k, t0 in enumerate((0.0, 10.0, 20.0)):
        _write_bag(run / 'bags' / f'episode_{k + 1:04d}',
                   frames=[(t0 + 1.0, t0 + 1.0), (t0 + 1.1, t0 + 1.3)], t0=t0)
    rec = load_recording([run])
    assert [s.messages is None for s in rec.segments] == [False, True, True]  # 1st held
    assert rec.message_count == 3 * 6 and not replay.timeline_goes_back(rec)
    assert input_ages_s(rec) == pytest.approx((0.2, 0.35))
    pb = Playback(rec, rate=100.0)
    pb.start(0.0)
    seen = []
    for wall in range(300):
        while pb.due(wall * 0.01) is not None:
            loaded = [s.messages is not None for s in rec.segments]
            assert sum(loaded) <= 1, loaded
            seen.append(pb.segment)
    assert pb.done and pb.published == 18 and seen[-1] == 3


def test_header_stamps_and_the_ages_a_replay_gives(tmp_path):
    assert header_stamp_ns(serialize_message(_image(1.25))) == int(1.25 * S)
    with pytest.raises(ValueError):
        header_stamp_ns(b'\x01\x02')
    rec = load_recording([_write_bag(tmp_path / 'bag')])
    frame_s, joints_s = input_ages_s(rec)
    assert frame_s == pytest.approx(0.2)      # the frame stamped 1.1 was logged at 1.3
    assert joints_s == pytest.approx(0.35)    # newest joint state 0.95 at the frame of 1.3


def test_stamp_timing_sends_stamped_messages_at_their_stamps(tmp_path):
    from awopt_ros.core.bag import default_typestore
    store = default_typestore()
    assert replay.has_header('sensor_msgs/msg/Image', store)
    assert not replay.has_header('std_msgs/msg/String', store)
    assert not replay.has_header('pkg/msg/Unknown', store)
    frame = serialize_message(_image(1.1))
    assert replay.send_time_ns(int(1.3 * S), frame, True, 'log') == int(1.3 * S)
    assert replay.send_time_ns(int(1.3 * S), frame, True, 'stamp') == int(1.1 * S)
    assert replay.send_time_ns(int(1.3 * S), frame, False, 'stamp') == int(1.3 * S)
    # a stamp after the log time, or long before it, is on another clock: the log time
    assert replay.send_time_ns(int(1.0 * S), frame, True, 'stamp') == int(1.0 * S)
    assert replay.send_time_ns(int(9.0 * S), frame, True, 'stamp') == int(9.0 * S)
    with pytest.raises(ValueError, match='timing must be one of'):
        replay.send_time_ns(0, frame, True, 'wall')
    bag = _write_bag(tmp_path / 'bag')
    frames = [m for m in load_recording([bag], timing='stamp').segments[0].load()
              if m.source_topic == '/camera/color/image_raw']
    assert [m.time_ns for m in frames] == [int(1.0 * S), int(1.1 * S), int(1.2 * S)]
    assert [m.log_time_ns for m in frames] == [int(1.0 * S), int(1.3 * S), int(1.3 * S)]
    rec = load_recording([bag], timing='stamp')
    assert input_ages_s(rec) == pytest.approx((0.0, 0.25))
    pb = Playback(rec)                  # the frame stamped 1.1 goes out 0.2 s after the
    pb.start(0.0)                       # first message (logged at 0.9 s), not 0.4 s
    sent = [(m.source_topic, round(m.time_ns / S, 3)) for m in iter(lambda: pb.due(0.2), None)]
    assert sent[-2:] == [('/camera/color/image_raw', 1.1), ('/policy/image', 1.1)]


def test_started_nodes_get_sim_time_and_age_limits_above_the_recordings():
    from awopt_ros.launcher import DEFAULT_CONFIG
    from awopt_ros.replay_cli import AGE_MARGIN_S, node_overrides
    out, notes = node_overrides(('camera_pipeline', 'policy', 'success_detector'),
                                {'policy': {'max_frame_age_s': 0.05, 'mode': 'actor'}},
                                (0.3, 0.4), DEFAULT_CONFIG, rate=0.5)
    assert all(p['use_sim_time'] is True for p in out.values())
    assert out['camera_pipeline']['max_frame_age_s'] == pytest.approx(0.3 + AGE_MARGIN_S)
    assert out['policy']['max_frame_age_s'] == 0.05              # --set wins
    assert out['policy']['max_joint_state_age_s'] == pytest.approx(0.4 + AGE_MARGIN_S)
    assert out['policy']['mode'] == 'actor'
    assert len(notes) == 3 and all('--set' in n for n in notes)
    fast, _ = node_overrides(('camera_pipeline', 'robot_state'), {}, (0.0, 0.0),
                             DEFAULT_CONFIG, rate=4.0)
    assert fast['camera_pipeline']['max_frame_age_s'] == pytest.approx(4 * AGE_MARGIN_S)
    assert fast['robot_state'] == {'use_sim_time': True}       # no age limit to raise


# ---- the command's errors -----------------------------------------------------------------
@pytest.mark.parametrize('args, text', [
    (['--nodes', 'arm_interface'], "argument --nodes: unknown node 'arm_interface'"),
    (['--remap', 'a:=b'], 'argument --remap: expects /FROM:=/TO'),
    (['--set', 'policy:mode=cem'], 'argument --set: node(s) policy not started'),
    (['--topics', '/nope'], 'nothing to replay'),
    (['--nodes', 'robot_state,policy', '--loop'],
     'argument --nodes: the started nodes (camera_pipeline, policy, success_detector) drop'),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, text):
    from awopt_ros.cli import main
    assert main(['replay', str(_write_bag(tmp_path / 'bag')), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'awopt replay: error: {text}'), err
    assert len(err.strip().splitlines()) == 1


def test_replay_refuses_a_domain_where_a_stack_runs(tmp_path, capsys):
    """A stack's arm interface would act on replayed actions: the replay refuses its domain
    (here the stack's lock is held, as a running stack holds it)."""
    import os

    from awopt_ros.cli import main
    from awopt_ros.launcher import acquire_domain_lock, domain_id_of
    fd = acquire_domain_lock(domain_id_of())
    try:
        assert main(['replay', str(_write_bag(tmp_path / 'bag'))]) == 1
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert err.startswith('awopt replay: error: another awopt stack is running on ROS_DOMAIN_ID')


def test_missing_bag_is_one_line(tmp_path, capsys):
    from awopt_ros.cli import main
    assert main(['replay', str(tmp_path / 'nope')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('awopt replay: error: argument BAG_OR_RUN: ')
    assert 'does not exist' in err and len(err.strip().splitlines()) == 1


def test_module_needs_no_rclpy():
    import subprocess
    import sys
    code = ('import sys; import awopt_ros.core.replay; '
            'sys.exit(1 if "rclpy" in sys.modules else 0)')
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0
    assert replay.RECORDED_PREFIX == '/recorded'


def test_keys_on_a_terminal_pause_step_and_quit(monkeypatch):
    """space toggles pause, s steps, q stops (a pseudo-terminal as stdin); the terminal's
    mode is restored afterwards."""
    import os
    import pty
    import termios
    import threading

    from awopt_ros.replay_cli import _keys

    class FakePlayer:
        def __init__(self):
            self.calls = []
            self.stopped = threading.Event()

        def toggle_pause(self):
            self.calls.append('toggle')
            return 'paused'

        def step(self):
            self.calls.append('step')
            return True, 'stepped'

        def stop(self):
            self.calls.append('stop')
            self.stopped.set()

    master, slave = pty.openpty()
    stdin = os.fdopen(slave, 'r')
    try:
        monkeypatch.setattr('sys.stdin', stdin)
        before = termios.tcgetattr(slave)
        player, lines = FakePlayer(), []
        restore = _keys(player, lines.append)
        assert restore is not None
        assert not termios.tcgetattr(slave)[3] & termios.ICANON    # keys without Enter
        os.write(master, b' sq')
        assert player.stopped.wait(5.0)
        assert player.calls == ['toggle', 'step', 'stop']
        assert lines == ['paused', 'stepped']
        restore()
        assert termios.tcgetattr(slave) == before
    finally:
        stdin.close()
        os.close(master)


def test_no_keys_off_a_terminal(monkeypatch):
    import io

    from awopt_ros.replay_cli import _keys
    monkeypatch.setattr('sys.stdin', io.StringIO(''))
    assert _keys(object(), print) is None


def test_a_late_player_keeps_the_recorded_spacing_with_max_lag():
    """A player starved of CPU for a moment: without max_lag_s every message due goes out at
    once (a burst a 5-deep sensor queue cuts); with it, the schedule moves and the next
    messages keep their recorded spacing."""
    times = [1.0, 1.1, 1.2, 1.3, 1.4]
    burst = Playback(_recording(_segment(times)), rate=1.0)
    burst.start(0.0)
    assert len(list(iter(lambda: burst.due(1.0), None))) == 5   # all due at once
    pb = Playback(_recording(_segment(times)), rate=1.0, max_lag_s=0.1)
    pb.start(0.0)
    assert pb.due(1.0) is not None                   # 1 s late: goes out, the schedule moves
    assert pb.due(1.0) is None                       # the next one keeps its 0.1 s spacing
    assert pb.wait_s(1.0) == pytest.approx(0.1)
    assert pb.due(1.1) is not None and pb.due(1.1) is None
    assert pb.lag_shifts == 1 and pb.lag_s == pytest.approx(1.0)
    with pytest.raises(ValueError, match='max_lag_s'):
        Playback(_recording(_segment(times)), max_lag_s=-1.0)


def test_a_resume_before_the_player_begins_does_not_make_messages_overdue():
    """The pause service answers while the player still waits for its subscribers: a resume
    then, and the player beginning 10 s later, sends the first messages on their schedule
    from then, not all at once."""
    pb = Playback(_recording(_segment([1.0, 1.1, 1.2])), rate=1.0, start_paused=True)
    pb.clock_ns(0.0)
    pb.resume(0.0)                     # the test resumes early
    pb.begin(10.0)                     # the player's loop starts 10 s later
    assert pb.due(10.0) is not None and pb.due(10.0) is None
    assert pb.wait_s(10.0) == pytest.approx(0.1)
