"""``awopt reevaluate MODEL RUN_DIR|BAG...``: a model on recorded episodes, compared with the log.

Run it before deploying a model: it runs the actor (and the critic, when given) on every
recorded step as the live policy node would and reports, per episode and in total, how the
new actions differ from the logged ones (:mod:`awopt_ros.learning.reevaluate`).

Inputs: run directories (their Minari dataset, the recorded policy images; ``--from-bags``:
their bags' camera frames instead), bag directories (``bags/episode_NNNN``), or
``--dataset-root R --dataset-id I``; ``--episode N`` and ``--index I`` (dataset index) pick
episodes (a number two recordings into one run directory used: ``episode_NNNN_index_I``, each
episode matched to its own bag as ``awopt view`` does). Outputs: ``summary.json`` and one
PNG per episode in ``--out`` (default
``runs/reevaluate/<model>_<input>_<YYYYmmdd-HHMMSS>``), and a table on stdout. Exit status
0 (1 with ``--fail-on-divergence`` when a deterministic step diverges; 2 on bad input, one
line on stderr).
"""
import re
import sys
import time
from pathlib import Path

from awopt_ros.cli_args import UsageError, count, nonnegative_float, usage_error

PROG = 'awopt reevaluate'


def add_reevaluate_args(parser):
    """Add the ``awopt reevaluate`` options to ``parser``."""
    from awopt_ros.learning.reevaluate import CAMERA_TOPIC, DEFAULT_ATOL
    parser.add_argument('model', metavar='MODEL', help='actor ONNX to evaluate')
    parser.add_argument('inputs', nargs='*', metavar='RUN_DIR|BAG',
                        help='run directories (their datasets/, or bags/ with --from-bags) '
                             'or bag directories (bags/episode_NNNN)')
    parser.add_argument('--dataset-root', default=None,
                        help='directory holding datasets/ (instead of RUN_DIR)')
    parser.add_argument('--dataset-id', default=None,
                        help='dataset under datasets/ (default: the only one there)')
    parser.add_argument('--from-bags', action='store_true',
                        help="read run directories' bags (camera frames through the model's "
                             'crop) instead of their dataset (the recorded policy images)')
    parser.add_argument('--camera-topic', default=CAMERA_TOPIC,
                        help='camera frames in the bags')
    parser.add_argument('--critic-encoder', default=None,
                        help='critic encoder ONNX (with --critic-head): Q of logged and new '
                             'actions')
    parser.add_argument('--critic-head', default=None, help='critic head ONNX')
    parser.add_argument('--episode', type=int, nargs='+', action='extend', default=None,
                        metavar='N', help="only these episode numbers (the episode "
                                          "manager's; default: all). A number that "
                                          'several recordings into one run directory used '
                                          'selects all its episodes, named '
                                          'episode_NNNN_index_I (--index picks one)')
    parser.add_argument('--index', type=count(0), nargs='+', action='extend', default=None,
                        metavar='I', help="only these dataset indices (of each input's "
                                          'dataset; with --episode they must hold those '
                                          'numbers)')
    parser.add_argument('--atol', type=nonnegative_float, default=DEFAULT_ATOL,
                        help='tolerance on dx, dy, dz (m) and dyaw (rad)')
    parser.add_argument('--out', default=None,
                        help='output directory (default: runs/reevaluate/<model>_<input>_'
                             '<time>)')
    parser.add_argument('--force', action='store_true',
                        help='write into an --out directory that already holds results')
    parser.add_argument('--fail-on-divergence', action='store_true',
                        help='exit with status 1 when a deterministic step diverges (for '
                             'scripts: a gate before deployment)')
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress bars')


def _dataset_ids(root):
    from awopt_ros.learning.plot_episode import find_dataset_ids
    return find_dataset_ids(root)


def _pick_dataset(root, dataset_id, option):
    ids = _dataset_ids(root)
    if dataset_id is None:
        if len(ids) != 1:
            raise UsageError('--dataset-id', f'{root} holds datasets {ids or "none"}: name one')
        return ids[0]
    if dataset_id not in ids:
        raise UsageError('--dataset-id' if option != 'RUN_DIR' else option,
                         f'no dataset {dataset_id!r} under {root}/datasets (there: '
                         f'{ids or "none"})')
    return dataset_id


def _bag_dirs(path):
    """Bag directories under ``path`` (itself, or its bags/), sorted."""
    if any(path.glob('*.mcap')):
        return [path]
    root = path / 'bags' if (path / 'bags').is_dir() else path
    return sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob('*.mcap')))


def _run_bags(path, dataset_id):
    """The bags of run directory ``path`` as ``('bag', dir, name, index, number)`` sources:
    matched to the episodes of its dataset ``dataset_id`` (by number, seed and recording
    order, as ``awopt view`` does), so that they carry the dataset's name and index; bags no
    dataset episode claims follow with name and index None, as do all bags when the dataset
    cannot be read."""
    from awopt_ros.core.annotations import episode_identities
    from awopt_ros.learning.reevaluate import dataset_episode_name, episode_bag
    bags = _bag_dirs(path)
    matched = []
    if dataset_id is not None:
        try:
            identities = episode_identities(path, dataset_id)
        except (FileNotFoundError, OSError, ValueError, KeyError):
            identities = []
        episodes = [dict(ident, id=i) for i, ident in enumerate(identities)]
        numbers = [ep['episode'] for ep in episodes]
        for ep in episodes:
            bag = episode_bag(path, ep, episodes)
            if bag is not None and bag not in [m[1] for m in matched]:
                matched.append(('bag', bag, dataset_episode_name(ep['episode'], ep['id'],
                                                                 numbers),
                                ep['id'], ep['episode']))
    claimed = {m[1] for m in matched}
    return matched + [('bag', b, None, None, _bag_number(b)) for b in bags if b not in claimed]


def _sources(args):
    """Return a list of ('dataset', root, dataset_id) and ('bag', dir, name, index, number)
    sources (UsageError); name, index (the dataset's) and number may be None."""
    sources = []
    if args.dataset_root is not None:
        root = Path(args.dataset_root)
        if not (root / 'datasets').is_dir():
            raise UsageError('--dataset-root', f'no datasets/ directory under {root}')
        sources.append(('dataset', root, _pick_dataset(root, args.dataset_id, '--dataset-id')))
    elif args.dataset_id is not None and not args.inputs:
        raise UsageError('--dataset-id', 'needs --dataset-root or a RUN_DIR')
    for raw in args.inputs:
        path = Path(raw)
        if not path.exists():
            raise UsageError('RUN_DIR|BAG', f'{raw} does not exist')
        if path.is_file() and path.suffix == '.mcap':
            path = path.parent
        if not path.is_dir():
            raise UsageError('RUN_DIR|BAG', f'{raw} is not a run or bag directory')
        if any(path.glob('*.mcap')):
            sources.append(('bag', path, None, None, _bag_number(path)))
        elif (path / 'datasets').is_dir() and not args.from_bags:
            sources.append(('dataset', path, _pick_dataset(path, args.dataset_id, 'RUN_DIR')))
        else:
            if not _bag_dirs(path):
                raise UsageError('RUN_DIR|BAG', f'{raw} holds no dataset (datasets/) and no '
                                 'bag (.mcap): no episodes')
            ids = _dataset_ids(path) if (path / 'datasets').is_dir() else []
            dataset_id = (args.dataset_id if args.dataset_id in ids else
                          ids[0] if len(ids) == 1 and args.dataset_id is None else None)
            sources += _run_bags(path, dataset_id)
    if not sources:
        raise UsageError('RUN_DIR|BAG', 'give a run directory, bag directories or '
                         '--dataset-root/--dataset-id')
    return sources


def _default_out(model, inputs):
    first = Path(inputs[0]).resolve() if inputs else Path('dataset')
    name = first.name
    if first.parent.name == 'bags':          # bags/episode_0001 -> <run>_episode_0001
        name = f'{first.parent.parent.name}_{name}'
    stamp = time.strftime('%Y%m%d-%H%M%S')
    out = Path('runs') / 'reevaluate' / f'{Path(model).stem}_{name}_{stamp}'
    k = 2
    while out.exists():                      # two runs in one second: never the same directory
        out = out.with_name(f'{Path(model).stem}_{name}_{stamp}-{k}')
        k += 1
    return out


def _progress(enabled, desc):
    def wrap(items):
        if not enabled:
            return items
        from tqdm import tqdm
        return tqdm(items, desc=desc, unit='episode', file=sys.stderr, leave=False)
    return wrap


def run_reevaluate(args):
    """``awopt reevaluate``: returns the exit code (module docstring)."""
    from awopt_ros.learning import reevaluate as rv
    try:
        contract = rv.check_model_kind(args.model)
        if bool(args.critic_encoder) != bool(args.critic_head):
            raise UsageError('--critic-encoder', 'needs --critic-head too (and the reverse)')
        for option, path in (('--critic-encoder', args.critic_encoder),
                             ('--critic-head', args.critic_head)):
            if path and not Path(path).is_file():
                raise UsageError(option, f'critic file not found: {path}')
        sources = _sources(args)
        size, crop = rv.model_geometry(contract)
        episodes, geometry = [], None
        for source in sources:
            if source[0] == 'dataset':
                root, dataset_id = source[1], source[2]
                bags = root / 'bags'
                loaded, ds_size = rv.dataset_episodes(root, dataset_id,
                                                      bags if bags.is_dir() else None)
                rec_crop = _recorded_crop(bags, loaded) or list(rv.spec.POLICY_CROP_XYWH)
                geo = (ds_size, rec_crop)
                if geometry is not None and geo != geometry and loaded:
                    raise UsageError('RUN_DIR', f'{root}: policy images {geo} differ from the '
                                     f"other inputs' {geometry}")
                if loaded:
                    geometry = geo
                episodes += loaded
            else:
                episodes.append(source)
        episodes = _select(episodes, args)
        if not episodes:
            raise UsageError('RUN_DIR|BAG', 'the inputs hold no episodes')
        has_dataset = any(not isinstance(e, tuple) for e in episodes)
        try:
            evaluator = rv.Reevaluator(
                args.model, *(geometry if has_dataset else (size, crop)),
                critic_encoder=args.critic_encoder, critic_head=args.critic_head)
        except rv.ReevaluateError as exc:
            if has_dataset and ('crop_xywh' in str(exc) or 'image_size' in str(exc)):
                raise rv.ReevaluateError(
                    f"{exc} (the dataset's policy images are {geometry[0]} px from crop "
                    f"{geometry[1]}; --from-bags crops the camera frames with the model's "
                    'own crop)') from None
            raise
        bag_evaluator = evaluator
        if has_dataset and any(isinstance(e, tuple) for e in episodes) and geometry != (
                size, crop):
            bag_evaluator = rv.Reevaluator(args.model, size, crop, args.critic_encoder,
                                           args.critic_head)
        out = Path(args.out) if args.out else _default_out(args.model, args.inputs or [
            args.dataset_root])
        if out.exists() and any(out.iterdir()) and not args.force:
            raise UsageError('--out', f'{out} already holds results; pass --force to write '
                             'into it, or choose another directory')
    except UsageError as exc:
        return usage_error(PROG, exc)
    except rv.ReevaluateError as exc:
        return usage_error(PROG, exc)

    reports = []
    for item in _progress(args.progress, 're-evaluating')(episodes):
        if isinstance(item, tuple):
            try:
                item = rv.bag_episode(item[1], crop, size, args.camera_topic, name=item[2],
                                      index=item[3])
            except (rv.ReevaluateError, FileNotFoundError, ValueError, KeyError) as exc:
                return usage_error(PROG, f'{item[1]}: {exc}')
            result = bag_evaluator.run(item)
        else:
            result = evaluator.run(item)
        reports.append(rv.compare(item, result, args.atol))
    summary = rv.summarize(reports, args.atol)
    critic = ([str(args.critic_encoder), str(args.critic_head)] if args.critic_encoder
              else None)
    written = rv.write_outputs(out, args.model, [str(s[1]) for s in sources], reports,
                               summary, critic, _progress(args.progress, 'plots'))
    print(rv.table(reports, summary))
    for r in reports:
        for note in r['notes']:
            print(f'{r["name"]}: {note}')
        if r['policy_image_mismatches']:
            print(f'{r["name"]}: {r["policy_image_mismatches"]} of '
                  f'{r["policy_images_compared"]} preprocessed camera frames differ from the '
                  "recorded /policy/image (the model's crop differs from the recording's?)")
    if 'joint_states' in summary['proprio_sources']:
        print('note: some episodes lack the proprio the policy acted on (/policy/proprio); '
              'their proprio comes from the joint states and actions may differ slightly. '
              'Record with --set policy:publish_proprio=true for an exact comparison.')
    print(f'{summary["verdict"]}: {summary["diverging_steps"]} of '
          f'{summary["deterministic_steps"]} deterministic steps diverge (atol {args.atol:g}); '
          f'wrote {written["summary"]} and {len(written["plots"])} plot(s)')
    if args.fail_on_divergence and summary['diverging_steps']:
        return 1
    return 0


def _bag_number(bag_dir):
    """The episode number of a bag directory's name (``episode_NNNN`` or, for a number a
    second recording into the run used again, ``episode_NNNN_K``), else None."""
    match = re.fullmatch(r'episode_(\d+)(?:_\d+)?', Path(bag_dir).name)
    return int(match.group(1)) if match else None


def _number(item):
    return item[4] if isinstance(item, tuple) else item.number


def _index(item):
    return item[3] if isinstance(item, tuple) else item.index


def _select(episodes, args):
    """The episodes (RecordedEpisode, or bag sources) that ``--episode`` and ``--index`` pick,
    in input order (UsageError for numbers or indices the inputs lack)."""
    if args.index:
        indices = {_index(e) for e in episodes} - {None}
        if not indices:
            raise UsageError('--index', 'the inputs have no dataset (a dataset index picks an '
                             "episode of a run directory's dataset)")
        missing = sorted(set(args.index) - indices)
        if missing:
            raise UsageError('--index', f'no dataset index {missing} in the inputs (indices '
                             f'{", ".join(map(str, sorted(indices)))})')
        episodes = [e for e in episodes if _index(e) in set(args.index)]
        wanted = set(args.episode or ())
        if wanted:
            wrong = [e for e in episodes if _number(e) not in wanted]
            if wrong:
                numbers = ' or '.join(map(str, sorted(wanted)))
                raise UsageError('--index', f'dataset index {_index(wrong[0])} is episode '
                                 f'{_number(wrong[0])}, not {numbers}')
        return episodes
    if not args.episode:
        return episodes
    wanted = set(args.episode)
    known = {_number(e) for e in episodes} - {None}
    missing = sorted(wanted - known)
    if missing:
        raise UsageError('--episode', f'no episode {missing} in the inputs (episodes '
                         f'{sorted(known) or "none"})')
    episodes = [e for e in episodes if _number(e) in wanted]
    for number in sorted(wanted):
        indices = [_index(e) for e in episodes if _number(e) == number
                   and '_index_' in str(e[2] if isinstance(e, tuple) else e.name)]
        if not indices:
            continue              # the number is used once in each input
        print(f'{PROG}: episode {number} is at dataset indices {indices} (several recordings '
              'into one run directory): all re-evaluated, named episode_NNNN_index_I '
              '(--index picks one)', file=sys.stderr)
    return episodes


def _recorded_crop(bags, episodes):
    """The crop of the recorded actor's contract in the first episode bag that has one."""
    from awopt_ros.learning.reevaluate import recorded_model_contract
    if not bags.is_dir():
        return None
    for ep in episodes:
        bag = Path(ep.bag) if ep.bag else None
        if bag is not None and bag.is_dir():
            contract = recorded_model_contract(bag)
            if contract and contract.get('crop_xywh'):
                return [int(v) for v in contract['crop_xywh']]
    return None
