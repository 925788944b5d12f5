"""``awopt bag-repair PATH...``: make bags that a crash cut short readable again.

A logger killed mid-episode (SIGKILL, power loss, out of memory) leaves that episode's bag
without its MCAP summary and footer and without ``metadata.yaml``; rosbags and ``ros2 bag``
cannot open it. This command rewrites every message that can still be read into a complete
bag at the same place, marked as cut (``metadata.yaml`` ``custom_data``: ``awopt_cut:
'true'``), as the logger itself does at its next start (:func:`awopt_ros.core.bag.repair_bag`).
A bag that a running logger is still writing (it holds a ``flock`` on the ``.mcap``) also has
no ``metadata.yaml`` yet; it is skipped, with a line saying so.
"""
import sys
from pathlib import Path


def add_bag_repair_args(parser):
    """Add the ``bag-repair`` options to ``parser``."""
    parser.add_argument('paths', nargs='+', metavar='PATH',
                        help='a bag directory, its .mcap file, a bags/ directory or a run '
                             'directory (its bags/ are searched); complete bags are left '
                             'alone')
    parser.add_argument('--keep-original', action='store_true',
                        help='keep each damaged file beside the rebuilt bag as '
                             '<name>.mcap.orig (default: deleted once the new bag is '
                             'complete)')
    parser.add_argument('--dry-run', action='store_true',
                        help='only list the bags that need a repair')


def _bags_to_repair(path):
    """Return ``(bags needing a repair, complete bags found, bags in use by a running
    writer)`` for one command-line path."""
    from awopt_ros.core.bag import bag_in_use, needs_repair, unfinished_bags
    if path.is_file() and path.suffix == '.mcap':
        path = path.parent
    if any(path.glob('*.mcap')):
        if not needs_repair(path):
            return [], [path], []
        return ([], [], [path]) if bag_in_use(path) else ([path], [], [])
    todo, in_use = [], []
    for root in (path, path / 'bags'):
        todo += unfinished_bags(root, in_use=in_use)
    complete = [p for root in (path, path / 'bags') if root.is_dir()
                for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob('*.mcap'))
                and p not in todo and p not in in_use]
    return todo, complete, in_use


def run_bag_repair_cli(args):
    """Repair the bags under ``args.paths``; print one line per bag; return the exit code
    (0: every bag readable now or being written by a running logger, 1: a path is missing
    or a repair failed)."""
    from awopt_ros.core.bag import IN_USE_TEXT, BagInUseError, repair_bag, repair_error_text
    status = 0
    for raw in args.paths:
        path = Path(raw)
        if not path.exists():
            print(f'awopt bag-repair: error: PATH {raw} does not exist', file=sys.stderr)
            status = 1
            continue
        todo, complete, in_use = _bags_to_repair(path)
        for bag in in_use:
            print(f'{bag}: {IN_USE_TEXT}')
        if not todo:
            print(f'{raw}: no bag needs a repair ({len(complete)} complete bag(s) found)')
            continue
        for bag in todo:
            if args.dry_run:
                print(f'{bag}: needs a repair (no metadata.yaml or no MCAP footer)')
                continue
            try:
                result = repair_bag(bag, keep_original=args.keep_original,
                                    reason='repaired with awopt bag-repair after the writer '
                                           'stopped mid-episode')
            except BagInUseError:
                print(f'{bag}: {IN_USE_TEXT}')
                continue
            except Exception as exc:  # noqa: BLE001 - one line per bag, then go on
                print(f'awopt bag-repair: error: {bag}: {repair_error_text(exc)}', file=sys.stderr)
                status = 1
                continue
            topics = ', '.join(f'{t} {n}' for t, n in sorted(result['topics'].items()))
            skipped = (f'; topics of unknown type left out: {result["skipped_channels"]}'
                       if result['skipped_channels'] else '')
            print(f'{bag}: rebuilt, {result["messages"]} messages kept ({topics or "none"}), '
                  f'{result["unread_bytes"]} bytes unreadable; marked cut '
                  f'(metadata.yaml custom_data awopt_cut: true){skipped}')
    return status
