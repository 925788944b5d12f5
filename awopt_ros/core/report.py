"""Summaries for run reports (demo, collect, bench): success counts, how often the outcome
agrees with the simulator's ground truth (:func:`stack_agreement`), latency percentiles,
camera frames published vs logged during episodes, and the warnings a run deserves."""
import struct
from collections import Counter
from pathlib import Path

import numpy as np

from awopt_ros.core import robot_names
from awopt_ros.core.spec import STAMP_TOLERANCE_S


def percentile_ms(samples_ms, q):
    """Return the ``q``-th percentile (0..100) of ``samples_ms`` (ms), or None when empty."""
    if len(samples_ms) == 0:
        return None
    return float(np.percentile(np.asarray(samples_ms, dtype=np.float64), q))


def summarize_episodes(end_events):
    """Return episodes, successes, success_rate and outcome counts from ``end`` events."""
    n = len(end_events)
    successes = sum(1 for e in end_events if e.get('success'))
    return {'episodes': n, 'successes': successes,
            'success_rate': successes / n if n else 0.0,
            'outcomes': dict(Counter(e.get('outcome', 'unknown') for e in end_events))}


def stack_agreement(end_events):
    """Return how often the stack's outcome agrees with the simulator's ground truth.

    Each ``end`` event (docs/INTERFACES.md) carries ``success`` (the outcome, decided by its
    ``success_source``: 'ground_truth' or 'classifier') and ``ground_truth_success`` (whether
    the ground truth reached success during the episode; None/absent where none came, e.g.
    hardware, and in events of managers that predate it). Only episodes with a ground truth
    count.

    Returns:
        dict: ``stack_episodes`` (episodes with a ground truth), ``stack_agreement_rate``
        (fraction of them whose ``success`` equals ``ground_truth_success``; None when there
        are none), ``stack_false_successes`` (success without the ground truth's),
        ``stack_missed_successes`` (the ground truth's success, not the outcome's),
        ``stack_ground_truth_cut_short`` (episodes, among them, whose
        ``ground_truth_success`` was true only because a classifier success ended them on a
        ground-truth sample at or above the threshold before its debounce: the event's
        ``ground_truth_cut_short``; :mod:`awopt_ros.core.episode`),
        ``success_source`` (the events' source: one name, 'mixed', or None without events;
        an event without one counts as 'ground_truth') and ``stack_agreement_by_source``
        ({source: {'episodes', 'agreement_rate'}}).
    """
    sources = [e.get('success_source') or 'ground_truth' for e in end_events]
    judged = [(src, bool(e.get('success')), bool(e['ground_truth_success']))
              for src, e in zip(sources, end_events)
              if e.get('ground_truth_success') is not None]
    cut_short = sum(bool(e.get('ground_truth_cut_short')) for e in end_events
                    if e.get('ground_truth_success') is not None)

    def rate(rows):
        return sum(ok == truth for _, ok, truth in rows) / len(rows) if rows else None
    by_source = {}
    for src in sorted(set(s for s, _, _ in judged)):
        rows = [r for r in judged if r[0] == src]
        by_source[src] = {'episodes': len(rows), 'agreement_rate': rate(rows)}
    distinct = sorted(set(sources))
    return {'stack_episodes': len(judged), 'stack_agreement_rate': rate(judged),
            'stack_false_successes': sum(ok and not truth for _, ok, truth in judged),
            'stack_missed_successes': sum(truth and not ok for _, ok, truth in judged),
            'stack_ground_truth_cut_short': cut_short,
            'success_source': (distinct[0] if len(distinct) == 1 else
                               'mixed' if distinct else None),
            'stack_agreement_by_source': by_source}


def agreement_line(report):
    """Return the run summary's line on the success source and its agreement with the ground
    truth (``report`` with :func:`stack_agreement`'s keys), or '' when it has none."""
    source = report.get('success_source')
    if source is None:
        return ''
    n, agree = report.get('stack_episodes', 0), report.get('stack_agreement_rate')
    if not n:
        return f'success source {source}: no ground truth to compare with'
    cut_short = report.get('stack_ground_truth_cut_short') or 0
    return (f'success source {source}: outcome agrees with the ground truth in '
            f'{round(agree * n)}/{n} episodes ({100 * agree:.0f}%; false successes '
            f'{report.get("stack_false_successes", 0)}, missed successes '
            f'{report.get("stack_missed_successes", 0)}'
            + (f'; ground truth cut short by the end in {cut_short}' if cut_short else '')
            + ')')


def latency_summary(samples_ms):
    """Return p50/p99/max/mean frame-to-command latency (ms) and the sample count."""
    return {'frame_to_command_ms_p50': percentile_ms(samples_ms, 50),
            'frame_to_command_ms_p99': percentile_ms(samples_ms, 99),
            'frame_to_command_ms_max': float(np.max(samples_ms)) if len(samples_ms) else None,
            'latency_samples': len(samples_ms)}


#: Camera image topic the bags record under the simulator's default ``camera_ns`` (the
#: logger's CAMERA); a bringup with another ``camera_ns`` records
#: ``core.robot_names.camera_topics(camera_ns)[0]`` (realsense-ros:
#: ``/camera/camera/color/image_raw``), which the run reports pass as ``topic``.
CAMERA_TOPIC = robot_names.camera_topics(robot_names.DEFAULT_CAMERA_NS)[0]


def episode_windows(events, episodes):
    """Return ``{episode: (start_s, end_s)}``: the stamps of each episode's ``start`` and
    ``end`` events (s, the episode manager's clock) for the episode numbers in ``episodes``.

    Episodes without both events (or without a numeric ``stamp_s``) are left out.
    """
    wanted = set(episodes)
    starts, ends = {}, {}
    for event in events:
        k, stamp = event.get('episode'), event.get('stamp_s')
        if k not in wanted or not isinstance(stamp, (int, float)):
            continue
        if event.get('event') == 'start':
            starts[k] = float(stamp)
        elif event.get('event') == 'end':
            ends[k] = float(stamp)
    return {k: (starts[k], ends[k]) for k in sorted(starts) if k in ends}


def stamps_in_window(stamps_ns, window_s):
    """Return the set of ``stamps_ns`` (int ns) inside ``window_s`` = (start_s, end_s).

    The window is half open, (start, end]: a frame stamped at the start itself came before
    the episode (the episode manager's rule: its action is not a step), one stamped at the
    end is the episode's last.
    """
    start_ns = int(round((window_s[0] + STAMP_TOLERANCE_S) * 1e9))
    end_ns = int(round((window_s[1] + STAMP_TOLERANCE_S) * 1e9))
    return {int(s) for s in stamps_ns if start_ns < int(s) <= end_ns}


def unrecorded_episodes(saved):
    """Return ``{episode: reason}`` for the episodes the logger did not record: those whose
    ``/logger/episode_saved`` record (dicts, as published) has no ``bag`` and gives a
    ``write_error`` (refused at its start, e.g. disk nearly full, or dropped by a write
    error). A record without a bag and without a ``write_error`` is not one of them: its bag is
    missing for no reason given (:func:`frame_accounting` counts it unreadable)."""
    out = {}
    for record in saved:
        k, reason = record.get('episode'), record.get('write_error')
        if not record.get('bag') and reason and k is not None:
            out[k] = str(reason)
    return out


def frame_accounting(published_ns, logged_ns_by_episode, windows, unrecorded=None):
    """Count camera frames published and logged during episodes; a frame lost is one
    published during an episode that the episode's bag lacks.

    Args:
        published_ns: stamps (int ns) of camera frames seen published over the run (e.g. the
            ``camera_info`` that accompanies each frame), resets and warm-up included.
        logged_ns_by_episode: ``{episode: stamps (int ns) of the camera frames in its bag}``;
            None (or a missing episode) = the bag could not be read: nothing counts as logged.
        windows: ``{episode: (start_s, end_s)}`` (:func:`episode_windows`).
        unrecorded: ``{episode: reason}`` of the episodes the logger said it did not record
            (:func:`unrecorded_episodes`): listed apart, their frames counted neither as
            published nor as lost (nothing was meant to record them), their bags not as
            unreadable. None: none.

    Returns:
        dict: ``frames_published_in_episodes`` (frames stamped inside the episodes' windows:
        those seen published, plus any the bag holds that the observer missed),
        ``frames_logged_in_episodes`` (the bags' frames inside the windows; a bag also holds
        a few frames after its episode's end, the logger's end grace), ``frames_lost`` (the
        difference: 0 when nothing was lost), ``frames_observed_in_episodes`` (those of
        ``published_ns``: how much of the count rests on the observer, not on the bags) and
        ``unreadable_bags`` (episode numbers whose bag is missing or unreadable) and
        ``unrecorded_episodes`` (``[{'episode': k, 'reason': text}]``, those of ``windows``
        in ``unrecorded``).
    """
    published_ns = sorted(int(s) for s in published_ns)
    unrecorded = unrecorded or {}
    out = {'frames_published_in_episodes': 0, 'frames_logged_in_episodes': 0,
           'frames_lost': 0, 'frames_observed_in_episodes': 0, 'unreadable_bags': [],
           'unrecorded_episodes': []}
    for k, window in sorted(windows.items()):
        if k in unrecorded:
            out['unrecorded_episodes'].append({'episode': k, 'reason': unrecorded[k]})
            continue
        logged = logged_ns_by_episode.get(k)
        if logged is None:
            out['unreadable_bags'].append(k)
            logged = ()
        logged_in = stamps_in_window(logged, window)
        observed_in = stamps_in_window(published_ns, window)
        published_in = observed_in | logged_in
        out['frames_observed_in_episodes'] += len(observed_in)
        out['frames_published_in_episodes'] += len(published_in)
        out['frames_logged_in_episodes'] += len(logged_in)
    out['frames_lost'] = out['frames_published_in_episodes'] - out['frames_logged_in_episodes']
    return out


def bag_frame_stamps_ns(bag_dir, topic=CAMERA_TOPIC):
    """Return the header stamps (list of int ns) of the messages on ``topic`` in a rosbag2
    directory, or None when the bag cannot be read (missing, cut, unknown format). A bag
    without ``topic`` gives ``[]``: pass the camera topic of the run's ``camera_ns``.

    Only the header is read from each serialized message (CDR: 4-byte encapsulation, then
    ``int32 sec``, ``uint32 nanosec``), so any message type with a ``std_msgs/Header`` first
    works.
    """
    try:
        from rosbags.highlevel import AnyReader
        stamps = []
        with AnyReader([Path(bag_dir)]) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            if not conns:   # (an empty list would read every topic)
                return []
            for _, _, raw in reader.messages(connections=conns):
                head = bytes(raw[:12])
                order = '<' if head[1] & 1 else '>'   # CDR_LE / CDR_BE
                sec, nsec = struct.unpack_from(order + 'iI', head, 4)
                stamps.append(sec * 1_000_000_000 + nsec)
        return stamps
    except Exception:  # noqa: BLE001 - any failure to read means: not readable
        return None


#: Frame-to-command latency above this fraction of the camera period is warned about: the
#: arm then acts on frames a large part of a period old (the stack's bench target is 1/3).
LATENCY_WARN_FRACTION = 1.0 / 3.0
#: Success collapse: 0 successes over at least this many episodes, or a success rate below
#: :data:`LOW_SUCCESS_RATE` over at least :data:`LOW_SUCCESS_MIN_EPISODES` episodes. The
#: shipped model and the scripted demonstrator succeed in about 50-80 % of the stack's
#: episodes; a rate far below usually means a loaded host (a real-time simulator running
#: ahead of the policy) or a broken model, and the data are not worth keeping.
ZERO_SUCCESS_MIN_EPISODES = 5
LOW_SUCCESS_RATE = 0.2
LOW_SUCCESS_MIN_EPISODES = 10


def run_warnings(report):
    """Return the warnings (list of str) a run's report deserves: frame-to-command latency
    p99 above a third of the camera period, a success collapse (see
    :data:`ZERO_SUCCESS_MIN_EPISODES`, :data:`LOW_SUCCESS_RATE`), camera frames lost during
    episodes, unreadable bags, episodes the logger did not record.

    Args:
        report: dict with ``episodes``, ``successes``, ``frame_to_command_ms_p99`` (ms or
            None), ``camera_frame_period_ms``; optional ``latency_clock``, ``frames_lost``,
            ``frames_published_in_episodes``, ``unreadable_bags``, ``unrecorded_episodes``
            (as :func:`frame_accounting` returns them).
    """
    warnings = []
    p99, period = report.get('frame_to_command_ms_p99'), report.get('camera_frame_period_ms')
    if p99 is not None and period and p99 > LATENCY_WARN_FRACTION * period:
        simulated = report.get('latency_clock') == 'simulated'
        warnings.append(
            f'frame-to-command latency p99 {p99:.1f} ms{" (simulated time)" if simulated else ""}'
            f' exceeds a third of the camera period ({period:.0f} ms / 3 = {period / 3.0:.1f} '
            'ms): the arm acts on old frames' + (
                '' if simulated else ' (a loaded host?); lockstep (--lockstep) keeps '
                'episodes exact whatever the load'))
    n, successes = int(report.get('episodes', 0)), int(report.get('successes', 0))
    if n >= ZERO_SUCCESS_MIN_EPISODES and successes == 0:
        warnings.append(f'success collapsed: 0 successes in {n} episodes')
    elif n >= LOW_SUCCESS_MIN_EPISODES and successes / n < LOW_SUCCESS_RATE:
        warnings.append(f'success collapsed: {successes}/{n} episodes '
                        f'({100.0 * successes / n:.0f} %, below {100 * LOW_SUCCESS_RATE:.0f} %)')
    lost = report.get('frames_lost')
    if lost:
        warnings.append(f'{lost} of {report.get("frames_published_in_episodes")} camera '
                        'frames published during episodes are missing from the bags')
    if report.get('unreadable_bags'):
        warnings.append(f'bags of episodes {report["unreadable_bags"]} could not be read')
    by_reason = {}
    for item in report.get('unrecorded_episodes') or ():
        by_reason.setdefault(item.get('reason') or 'no reason given', []).append(item['episode'])
    for reason, episodes in by_reason.items():
        warnings.append(f'episodes {episodes} ran but the logger did not record them: {reason}')
    return warnings


def episode_seeds(events, episodes):
    """Return the scene seeds (list, in the order of ``episodes``) that the ``start`` events of
    the episode numbers ``episodes`` report; an episode without one gives None."""
    seeds = {e.get('episode'): e.get('seed') for e in events if e.get('event') == 'start'}
    return [seeds.get(k) for k in episodes]


#: The two controllers ``awopt demo --task insertion`` runs on the same scenes, in run order:
#: report key -> the residual controller's ``residual`` parameter.
INSERTION_RUNS = {'p_controller': 'off', 'residual': 'model'}


def insertion_comparison(reports):
    """Return the insertion demo's summary of its runs on the same scenes.

    Args:
        reports: ``{'p_controller': report, 'residual': report}`` (either may be missing),
            each a :func:`awopt_ros.ros.runner.run_episodes` report dict (``episodes``,
            ``successes``, ``success_rate``, ``outcomes``, ``seeds``, ``error``).

    Returns:
        dict: ``task`` 'insertion', per run ``<name>_successes``, ``<name>_episodes``,
        ``<name>_success_rate`` and ``<name>_outcomes``; ``same_seeds`` (True when every run
        played the same scene seeds in the same order, None with fewer than two runs),
        ``seeds`` (the first run's), ``residual_minus_p_controller`` (success-rate points,
        None unless both ran), ``errors`` ({name: error} of runs that stopped early) and
        ``runs`` (the reports themselves).
    """
    out = {'task': 'insertion'}
    seeds = {}
    errors = {}
    for name in INSERTION_RUNS:
        report = reports.get(name)
        if report is None:
            continue
        for key in ('successes', 'episodes', 'success_rate', 'outcomes'):
            out[f'{name}_{key}'] = report.get(key)
        seeds[name] = list(report.get('seeds') or [])
        if report.get('error'):
            errors[name] = report['error']
    lists = list(seeds.values())
    out['seeds'] = lists[0] if lists else []
    out['same_seeds'] = (all(s == lists[0] for s in lists) and bool(lists[0])
                         if len(lists) > 1 else None)
    both = all(f'{n}_success_rate' in out for n in INSERTION_RUNS) and not errors
    out['residual_minus_p_controller'] = (
        round(100.0 * (out['residual_success_rate'] - out['p_controller_success_rate']), 2)
        if both else None)
    out['errors'] = errors
    out['runs'] = {name: reports[name] for name in INSERTION_RUNS if name in reports}
    return out
