"""``awopt view RUN_DIR [--episode N]``: one recorded episode as a Rerun recording (``.rrd``).

Writes ``RUN_DIR/viewer/episode_NNNN.rrd`` (or ``--out``) from the run's dataset and the
episode's bag (:mod:`awopt_ros.learning.view_episode`), to open with ``rerun FILE.rrd``
(``pip install rerun-sdk``; no ROS needed) or at once with ``--spawn``. An existing file is
kept unless ``--force``. Rerun's usage analytics are off in this process and in the viewer
it spawns (:func:`awopt_ros.learning.view_episode.analytics_off_env`).
"""
import os
import sys
from pathlib import Path

from awopt_ros.cli_args import UsageError, check_outputs, count, usage_error

PROG = 'awopt view'


def _jpeg_quality(text):
    value = count(0)(text)
    if value > 100:
        import argparse
        raise argparse.ArgumentTypeError(f'must be in 0..100, got {text}')
    return value


def add_view_args(parser):
    """Add the ``awopt view`` options to ``parser``."""
    from awopt_ros.learning.view_episode import DEFAULT_JPEG_QUALITY
    parser.add_argument('run_dir', metavar='RUN_DIR',
                        help='run directory of the stack (its datasets/ and bags/ folders), '
                             'e.g. runs/demo/latest')
    parser.add_argument('--episode', type=int, default=None,
                        help="the episode manager's episode number (bags/episode_NNNN; "
                             'default: the last episode of the dataset)')
    parser.add_argument('--index', type=count(0), default=None,
                        help='the dataset index of the episode instead (for a number that '
                             'two runs into the same directory both used)')
    parser.add_argument('--dataset-id', default=None,
                        help='dataset under RUN_DIR/datasets (default: the only one there)')
    parser.add_argument('--out', default=None,
                        help='.rrd path (default: RUN_DIR/viewer/episode_NNNN.rrd; '
                             'episode_NNNN_index_I.rrd for a number two recordings used)')
    parser.add_argument('--force', action='store_true', help='replace an existing .rrd')
    parser.add_argument('--spawn', action='store_true',
                        help='open the Rerun viewer on the file once written (needs a '
                             'desktop; the file is written either way)')
    parser.add_argument('--camera-topic', default=None,
                        help='camera image topic in the bag (default: the '
                             '<camera_ns>/color/image_raw topic found there)')
    parser.add_argument('--no-bag', action='store_true',
                        help='only the dataset (no camera frames, joint states, events)')
    parser.add_argument('--jpeg-quality', type=_jpeg_quality, default=DEFAULT_JPEG_QUALITY,
                        help='JPEG quality of the camera frames in the recording, 1..100; 0 '
                             'keeps them lossless (about 0.9 MB a 640x480 frame)')


def _select_episode(run, args):
    """Return ``(dataset_id, episode dict, every episode of the dataset)``; UsageError on bad
    input."""
    from awopt_ros.core.dataset import load_episodes
    from awopt_ros.learning.plot_episode import find_dataset_ids
    if not run.is_dir():
        raise UsageError('RUN_DIR', f'no run directory {run}')
    ids = find_dataset_ids(run)
    if not ids:
        inner = sorted(d.name for d in run.iterdir() if d.is_dir() and find_dataset_ids(d))
        raise UsageError('RUN_DIR', f'{run} is not a run directory: no dataset under '
                                    f'{run / "datasets"}' + (
                                        f' (it holds the run directories {", ".join(inner)}: '
                                        'name one, e.g. ' + str(run / inner[-1]) + ')'
                                        if inner else ''))
    dataset_id = args.dataset_id
    if dataset_id is None:
        if len(ids) != 1:
            raise UsageError('--dataset-id', f'{run} holds datasets {ids}: name one')
        dataset_id = ids[0]
    elif dataset_id not in ids:
        raise UsageError('--dataset-id', f'no dataset {dataset_id!r} under {run} '
                                         f'(there: {ids})')
    episodes = load_episodes(run, dataset_id)
    if not episodes:
        raise UsageError('RUN_DIR', f'dataset {dataset_id} of {run} holds no episode')
    if args.index is not None:
        matches = [ep for ep in episodes if ep['id'] == args.index]
        if not matches:
            raise UsageError('--index', f'no index {args.index} in {dataset_id} '
                                        f'(indices 0..{len(episodes) - 1})')
        if args.episode is not None and matches[0]['episode'] != args.episode:
            raise UsageError('--index', f'index {args.index} is episode '
                                        f'{matches[0]["episode"]}, not {args.episode}')
        return dataset_id, matches[0], episodes
    if args.episode is None:
        return dataset_id, episodes[-1], episodes
    matches = [ep for ep in episodes if ep['episode'] == args.episode]
    if not matches:
        numbers = sorted({ep['episode'] for ep in episodes if ep['episode'] is not None})
        raise UsageError('--episode', f'no episode {args.episode} in {dataset_id} of {run} '
                                      f'(episodes: {_ranges(numbers) or "none numbered"})')
    if len(matches) > 1:
        print(f'{PROG}: episode {args.episode} is at indices '
              f'{[ep["id"] for ep in matches]} of {dataset_id}; showing the last '
              f'(--index picks another)', file=sys.stderr)
    return dataset_id, matches[-1], episodes


def _ranges(numbers):
    """'1..3, 5' for [1, 2, 3, 5]."""
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(start) if start == n else f'{start}..{n}')
            start = None
    return ', '.join(out)


def _bag_for(run, episode, episodes, args):
    """Return ``(bag dir or None, read_bag dict or None, note or None)``."""
    from awopt_ros.learning.view_episode import find_bag, read_bag
    if args.no_bag:
        return None, None, None
    if episode['episode'] is None:
        return None, None, 'the episode has no number: no bag'
    bag_dir, note = find_bag(run, episode, episodes)
    if bag_dir is None:
        return None, None, note
    bag = read_bag(bag_dir, camera_topic=args.camera_topic)
    if args.camera_topic and bag['camera_topic'] is None:
        raise UsageError('--camera-topic', f'{args.camera_topic} is not in {bag_dir}')
    return bag_dir, bag, None


def run_view(args):
    """``awopt view``: returns the exit code (2 on bad input, 1 when the viewer cannot
    start)."""
    from awopt_ros.learning import view_episode
    view_episode.disable_analytics()      # before rerun is imported anywhere in this process
    run = Path(args.run_dir)
    try:
        dataset_id, episode, episodes = _select_episode(run, args)
        number = episode['episode'] if episode['episode'] is not None else episode['id']
        name = f'episode_{int(number):04d}'
        if sum(ep['episode'] == episode['episode'] for ep in episodes) > 1:
            name += f'_index_{episode["id"]}'       # a number two recordings both used
        out = Path(args.out) if args.out else run / 'viewer' / f'{name}.rrd'
        if out.suffix != '.rrd':
            raise UsageError('--out', f'{out} must end with .rrd')
        check_outputs([('--out', out)], force=args.force)
        bag_dir, bag, note = _bag_for(run, episode, episodes, args)
    except UsageError as exc:
        return usage_error(PROG, exc)
    except FileNotFoundError as exc:
        return usage_error(PROG, UsageError('RUN_DIR', str(exc)))
    if note:
        print(f'{PROG}: {note}', file=sys.stderr)
    for line in (bag or {}).get('skipped', [])[:5]:
        print(f'{PROG}: {line}', file=sys.stderr)
    counts = view_episode.write_episode(
        episode, out, bag=bag, dataset_id=dataset_id, bag_dir=bag_dir,
        jpeg_quality=args.jpeg_quality, progress=sys.stderr.isatty())
    print(f'{PROG}: wrote {out} ({dataset_id} episode {number}: {counts["steps"]} steps, '
          f'{counts["policy_images"]} policy images, {counts["camera_frames"]} camera frames, '
          f'{counts["joint_states"]} joint states)')
    if not args.spawn:
        print(f'{PROG}: open it with: rerun {out}')
        return 0
    if sys.platform.startswith('linux') and not (os.environ.get('DISPLAY')
                                                 or os.environ.get('WAYLAND_DISPLAY')):
        print(f'{PROG}: error: --spawn: no desktop here (neither DISPLAY nor WAYLAND_DISPLAY '
              f'is set); open the file on a machine with one: rerun {out}', file=sys.stderr)
        return 1
    try:
        proc, log = view_episode.spawn_viewer(out)
    except OSError as exc:
        print(f'{PROG}: error: cannot start the Rerun viewer: {exc}', file=sys.stderr)
        return 1
    print(f'{PROG}: started the Rerun viewer (pid {proc.pid}) on {out}; its log: {log}')
    return 0
