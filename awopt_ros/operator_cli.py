"""``awopt label``, ``awopt discard``, ``awopt note``: an operator's verdict on recorded episodes.

Each command appends one record to the dataset's annotations journal
(``<run>/datasets/<id>/annotations.jsonl``, :mod:`awopt_ros.core.annotations`); the recorded
HDF5 and bags are never changed, and a logger may be appending episodes meanwhile::

    awopt label runs/demo/latest --episode 2 failure --note "cube slipped out"
    awopt label runs/demo/latest --episode 2 clear          # remove the label
    awopt discard runs/demo/latest --episode 1 --reason "camera covered"
    awopt discard runs/demo/latest --episode 1 --undo
    awopt note runs/demo/latest --episode 2 "lighting changed mid-episode"

``--episode N`` is the episode manager's number (``bags/episode_NNNN``). An unknown number is
refused with the numbers that exist; a number that several episodes of the dataset share (two
recordings into one run directory) is refused with their dataset indices, to be chosen with
``--index``. The dataset is the run's only one, or ``--dataset-id``.
"""
import sys
from pathlib import Path

from awopt_ros.cli_args import UsageError, usage_error

#: The label words: ``clear`` removes the label.
LABEL_CHOICES = ('success', 'failure', 'clear')


def _add_common(parser):
    parser.add_argument('run_dir', metavar='RUN_DIR',
                        help='run directory holding datasets/ (e.g. runs/demo/latest)')
    parser.add_argument('--episode', type=int, required=True, metavar='N',
                        help="the episode manager's episode number (bags/episode_NNNN)")
    parser.add_argument('--index', type=int, default=None, metavar='I',
                        help='the dataset index of the episode, where its number is in the '
                             'dataset more than once')
    parser.add_argument('--dataset-id', default=None, metavar='ID',
                        help="the dataset under RUN_DIR/datasets (default: the run's only "
                             'one, e.g. awopt/kuka-grasp-v0)')


def add_label_args(parser):
    """Add the ``label`` options to ``parser``."""
    _add_common(parser)
    parser.add_argument('label', choices=LABEL_CHOICES,
                        help='the outcome the operator saw (clear: remove the label)')
    parser.add_argument('--note', default=None, metavar='TEXT', help='a note to add with it')


def add_discard_args(parser):
    """Add the ``discard`` options to ``parser``."""
    _add_common(parser)
    parser.add_argument('--reason', default=None, metavar='TEXT',
                        help='why (kept as a note)')
    parser.add_argument('--undo', action='store_true',
                        help='take the episode back into training')


def add_note_args(parser):
    """Add the ``note`` options to ``parser``."""
    _add_common(parser)
    parser.add_argument('text', metavar='TEXT', help='the note')


def _target(args):
    """Return ``(root, dataset id, index)`` of the episode ``args`` name.

    Raises:
        UsageError: no run directory, no or several datasets, unknown or ambiguous episode.
    """
    from awopt_ros.core import annotations
    from awopt_ros.learning.data import check_dataset, dataset_ids
    root = Path(args.run_dir)
    dataset_id = args.dataset_id
    if dataset_id is None:
        if not root.is_dir():
            raise UsageError('RUN_DIR', f'{args.run_dir} is not a folder')
        ids = dataset_ids(root)
        if not ids:
            raise UsageError('RUN_DIR', f'there is no dataset under {args.run_dir}/datasets')
        if len(ids) > 1:
            raise UsageError('--dataset-id', f'{args.run_dir} holds {len(ids)} datasets '
                                             f'({", ".join(ids)}): name one')
        dataset_id = ids[0]
    check_dataset(root, dataset_id, 'RUN_DIR')
    try:
        numbers = annotations.episode_numbers(root, dataset_id)
        index = annotations.resolve_episode(numbers, args.episode, args.index)
    except annotations.UnknownEpisodeError as exc:
        raise UsageError('--index' if args.index is not None else '--episode', exc) from None
    return root, dataset_id, index


def _write(prog, args, **fields):
    from awopt_ros.core import annotations
    try:
        root, dataset_id, index = _target(args)
        record = annotations.make_record(args.episode, index=index, source='cli', **fields)
    except (UsageError, ValueError) as exc:
        return usage_error(prog, exc)
    path = annotations.journal_path(root, dataset_id)
    try:
        annotations.append_record(path, record)
    except OSError as exc:
        print(f'{prog}: error: could not write {path}: {exc}', file=sys.stderr)
        return 1
    identities = annotations.episode_identities(root, dataset_id)
    state = annotations.fold(annotations.read_journal(path),
                             [i['episode'] for i in identities], identities)[index]
    flags = [f'label {state["label"] or "none"}',
             'DISCARDED (left out of training)' if state['discarded'] else 'kept for training',
             f'{len(state["notes"])} note(s)']
    print(f'{dataset_id} episode {args.episode} (dataset index {index}): {", ".join(flags)}'
          f'; journal {path}')
    return 0


def run_label(args):
    """``awopt label``; return the exit code (0 ok, 1 write error, 2 bad input)."""
    label = None if args.label == 'clear' else args.label
    return _write('awopt label', args, label=label, note=args.note)


def run_discard(args):
    """``awopt discard``; return the exit code (0 ok, 1 write error, 2 bad input)."""
    if args.undo and args.reason:
        return usage_error('awopt discard', UsageError('--reason', 'not with --undo'))
    return _write('awopt discard', args, discarded=not args.undo, reason=args.reason)


def run_note(args):
    """``awopt note``; return the exit code (0 ok, 1 write error, 2 bad input)."""
    return _write('awopt note', args, note=args.text)
