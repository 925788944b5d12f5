"""Run reports (core.report): camera frames published vs logged during episodes, and the
warnings a run deserves (latency, success collapse, lost frames)."""
import numpy as np
import pytest
from rclpy.serialization import serialize_message

from awopt_ros.core.bag import BagWriter
from awopt_ros.core.report import (CAMERA_TOPIC, bag_frame_stamps_ns, episode_seeds,
                                   episode_windows, frame_accounting, run_warnings,
                                   stamps_in_window, unrecorded_episodes)
from awopt_ros.ros import convert

S = 1_000_000_000   # ns per s


def _events():
    """Two episodes (2..4 s and 6..8 s) and a warm-up (0.5..1 s), as /episode/event gives."""
    return [{'event': 'start', 'episode': 1, 'seed': 11, 'stamp_s': 0.5},
            {'event': 'end', 'episode': 1, 'stamp_s': 1.0},
            {'event': 'start', 'episode': 2, 'seed': 12, 'stamp_s': 2.0},
            {'event': 'end', 'episode': 2, 'stamp_s': 4.0},
            {'event': 'start', 'episode': 3, 'seed': 13, 'stamp_s': 6.0},
            {'event': 'end', 'episode': 3, 'stamp_s': 8.0}]


def test_episode_windows_and_seeds_of_the_counted_episodes():
    assert episode_windows(_events(), [2, 3]) == {2: (2.0, 4.0), 3: (6.0, 8.0)}
    assert episode_windows(_events() + [{'event': 'start', 'episode': 4, 'stamp_s': 9.0}],
                           [2, 4]) == {2: (2.0, 4.0)}           # 4 never ended
    assert episode_seeds(_events(), [2, 3, 5]) == [12, 13, None]


def test_stamps_in_window_is_half_open():
    stamps = [2 * S, 2 * S + 500, 2 * S + 10_000, 3 * S, 4 * S + 500, 4 * S + 10_000]
    # equal within 1 us: 2 s + 500 ns is the start itself, 4 s + 500 ns the end
    assert stamps_in_window(stamps, (2.0, 4.0)) == {2 * S + 10_000, 3 * S, 4 * S + 500}


def test_frames_published_over_the_run_are_not_counted_as_lost():
    # 10 Hz for 9 s: 91 frames published, resets and a warm-up included (the old report put
    # them next to the frames logged in episodes: 295 vs 236 looked like loss).
    published = [k * S // 10 for k in range(91)]
    windows = episode_windows(_events(), [2, 3])
    grace = 3 * S // 10   # the logger also records frames just after the end
    logged = {k: [s for s in published if w[0] * S < s <= w[1] * S + grace]
              for k, w in windows.items()}
    out = frame_accounting(published, logged, windows)
    assert out == {'frames_published_in_episodes': 40, 'frames_logged_in_episodes': 40,
                   'frames_lost': 0, 'frames_observed_in_episodes': 40, 'unreadable_bags': [],
                   'unrecorded_episodes': []}
    # A frame missing from a bag is lost; one the observer missed still counts as published.
    logged[2] = logged[2][1:]
    observed = [s for s in published if s != 7 * S]
    out = frame_accounting(observed, logged, windows)
    assert (out['frames_published_in_episodes'], out['frames_logged_in_episodes'],
            out['frames_lost'], out['frames_observed_in_episodes']) == (40, 39, 1, 39)


def test_an_unreadable_bag_loses_its_frames():
    windows = {1: (0.0, 1.0)}
    out = frame_accounting([S // 2, S], {1: None}, windows)
    assert out['frames_lost'] == 2 and out['unreadable_bags'] == [1]
    assert frame_accounting([S], {}, windows)['unreadable_bags'] == [1]


def test_episodes_the_logger_did_not_record_are_listed_apart_not_as_lost_frames():
    """An episode the logger refused (disk nearly full) or dropped (write error) has a saved
    record with no bag and a write_error: not an unreadable bag, and no frame of it lost."""
    saved = [{'episode': 1, 'bag': '/r/ep1', 'write_error': None},
             {'episode': 2, 'bag': None, 'write_error': 'only 3.2 MB free on /r (min 50)'},
             {'episode': 3, 'bag': None, 'write_error': None}]     # no reason: unreadable
    unrecorded = unrecorded_episodes(saved)
    assert unrecorded == {2: 'only 3.2 MB free on /r (min 50)'}
    windows = {1: (0.0, 1.0), 2: (1.0, 2.0), 3: (2.0, 3.0)}
    published = [S // 2, S, 3 * S // 2, 2 * S, 5 * S // 2, 3 * S]
    out = frame_accounting(published, {1: [S // 2, S]}, windows, unrecorded)
    assert out['unrecorded_episodes'] == [{'episode': 2,
                                           'reason': 'only 3.2 MB free on /r (min 50)'}]
    assert out['unreadable_bags'] == [3]
    assert (out['frames_published_in_episodes'], out['frames_logged_in_episodes'],
            out['frames_lost']) == (4, 2, 2)           # episode 3's two frames, not 2's
    warnings = run_warnings(_report(**out))
    assert ('episodes [2] ran but the logger did not record them: only 3.2 MB free on /r '
            '(min 50)') in warnings
    assert any('episodes [3] could not be read' in w for w in warnings)


def test_bag_frame_stamps_are_the_camera_frames_header_stamps(tmp_path):
    writer = BagWriter(tmp_path / 'bag', {CAMERA_TOPIC: 'sensor_msgs/msg/Image'})
    stamps = [5 * S + 1, 5 * S + S // 10, 6 * S]
    for stamp in stamps:
        msg = convert.numpy_to_image(np.zeros((4, 6, 3), np.uint8),
                                     convert.s_to_stamp(stamp * 1e-9), 'camera')
        assert writer.write(CAMERA_TOPIC, serialize_message(msg), stamp + 12345)
    writer.close()
    assert bag_frame_stamps_ns(tmp_path / 'bag') == stamps
    assert bag_frame_stamps_ns(tmp_path / 'bag', topic='/other') == []
    assert bag_frame_stamps_ns(tmp_path / 'missing') is None


def _report(**kw):
    base = {'episodes': 6, 'successes': 3, 'frame_to_command_ms_p99': 20.0,
            'camera_frame_period_ms': 100.0, 'latency_clock': 'wall', 'frames_lost': 0}
    return dict(base, **kw)


def test_no_warning_for_a_healthy_run():
    assert run_warnings(_report()) == []
    assert run_warnings(_report(frame_to_command_ms_p99=None, episodes=0, successes=0)) == []


@pytest.mark.parametrize('p99, warned', [(33.0, False), (34.0, True), (100.0, True)])
def test_latency_above_a_third_of_the_period_is_warned_about(p99, warned):
    warnings = run_warnings(_report(frame_to_command_ms_p99=p99))
    assert bool(warnings) == warned
    if warned:
        assert 'a third of the camera period' in warnings[0] and f'{p99:.1f} ms' in warnings[0]


@pytest.mark.parametrize('episodes, successes, warned', [
    (6, 0, True), (5, 0, True), (4, 0, False),          # 0 successes over >= 5 episodes
    (10, 1, True), (10, 2, False), (9, 1, False),       # < 20 % over >= 10 episodes
])
def test_success_collapse_is_warned_about(episodes, successes, warned):
    warnings = run_warnings(_report(episodes=episodes, successes=successes))
    assert any('success collapsed' in w for w in warnings) == warned


def test_lost_frames_and_unreadable_bags_are_warned_about():
    warnings = run_warnings(_report(frames_lost=2, frames_published_in_episodes=50,
                                    unreadable_bags=[3]))
    assert any('2 of 50 camera frames' in w for w in warnings)
    assert any('episodes [3]' in w for w in warnings)


def test_bag_frame_stamps_under_a_realsense_camera_ns(tmp_path):
    """A bringup with camera_ns /camera/camera records its frames on that camera's topic:
    read with that topic (as run reports do), not the simulator's."""
    from awopt_ros.core.robot_names import camera_topics
    topic, _ = camera_topics('/camera/camera')
    assert CAMERA_TOPIC == camera_topics('/camera')[0] == '/camera/color/image_raw'
    writer = BagWriter(tmp_path / 'bag', {topic: 'sensor_msgs/msg/Image'})
    msg = convert.numpy_to_image(np.zeros((4, 6, 3), np.uint8), convert.s_to_stamp(7.0),
                                 'camera_color_optical_frame')
    assert writer.write(topic, serialize_message(msg), 7 * S)
    writer.close()
    assert bag_frame_stamps_ns(tmp_path / 'bag', topic) == [7 * S]
    assert bag_frame_stamps_ns(tmp_path / 'bag') == []


def _end(success, truth, source='classifier', cut_short=None):
    event = {'event': 'end', 'success': success, 'ground_truth_success': truth}
    if cut_short is not None:
        event['ground_truth_cut_short'] = cut_short
    if source is not None:
        event['success_source'] = source
    return event


def test_stack_agreement_counts_only_episodes_with_a_ground_truth():
    from awopt_ros.core.report import stack_agreement
    ends = [_end(True, True), _end(False, False), _end(True, False),   # a false success
            _end(False, True), _end(True, True), _end(False, None)]    # a missed; no truth
    out = stack_agreement(ends)
    assert out['stack_episodes'] == 5 and out['stack_agreement_rate'] == pytest.approx(0.6)
    assert (out['stack_false_successes'], out['stack_missed_successes']) == (1, 1)
    assert out['success_source'] == 'classifier'
    assert out['stack_agreement_by_source'] == {'classifier': {'episodes': 5,
                                                               'agreement_rate': 0.6}}


def test_stack_agreement_counts_the_episodes_whose_ground_truth_was_cut_short():
    from awopt_ros.core.report import stack_agreement
    ends = [_end(True, True, cut_short=True), _end(True, True, cut_short=False),
            _end(True, True), _end(False, False, cut_short=False),   # older event: no key
            _end(True, True, cut_short=True), _end(True, None, cut_short=False)]
    out = stack_agreement(ends)
    assert out['stack_ground_truth_cut_short'] == 2 and out['stack_episodes'] == 5
    assert stack_agreement([])['stack_ground_truth_cut_short'] == 0


def test_stack_agreement_per_source_and_without_ground_truth():
    from awopt_ros.core.report import stack_agreement
    mixed = stack_agreement([_end(True, True, 'ground_truth'), _end(True, False),
                             _end(False, False, None)])   # an older manager's event
    assert mixed['success_source'] == 'mixed' and mixed['stack_episodes'] == 3
    assert mixed['stack_agreement_by_source'] == {
        'classifier': {'episodes': 1, 'agreement_rate': 0.0},
        'ground_truth': {'episodes': 2, 'agreement_rate': 1.0}}
    hardware = stack_agreement([_end(True, None), _end(False, None)])
    assert hardware['stack_episodes'] == 0 and hardware['stack_agreement_rate'] is None
    assert stack_agreement([])['success_source'] is None


def test_demo_summary_prints_the_agreement():
    from awopt_ros.core.report import stack_agreement, summarize_episodes
    from awopt_ros.ros.runner import print_summary
    ends = [_end(True, True)] * 48 + [_end(True, False), _end(False, True)]
    report = dict(summarize_episodes(ends), **stack_agreement(ends),
                  frame_to_command_ms_p50=None, frame_to_command_ms_p99=None,
                  camera_frame_period_ms=100.0, latency_samples=0,
                  frames_published_in_episodes=0, frames_logged_in_episodes=0, frames_lost=0,
                  frames_published=0, frames_logged=0, dataset=None)
    lines = []
    print_summary(report, out=lines.append)
    assert lines[1] == ('success source classifier: outcome agrees with the ground truth in '
                        '48/50 episodes (96%; false successes 1, missed successes 1)')
    cut = [_end(True, True, cut_short=True)] * 3 + [_end(True, True)] * 47
    lines.clear()
    print_summary(dict(report, **stack_agreement(cut)), out=lines.append)
    assert lines[1] == ('success source classifier: outcome agrees with the ground truth in '
                        '50/50 episodes (100%; false successes 0, missed successes 0; ground '
                        'truth cut short by the end in 3)')
    hardware = stack_agreement([_end(True, None)])
    lines.clear()
    print_summary(dict(report, **hardware), out=lines.append)
    assert lines[1] == 'success source classifier: no ground truth to compare with'
