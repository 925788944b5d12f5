"""``awopt train``: train on a logged dataset -> ONNX model(s) + loss plot + summary JSON.

Two kinds of run, chosen by ``--preset``:

* ``bc`` (the default): plain behaviour cloning of the actor on the successful episodes
  (``learning.bc.train_bc``, held-out loss curve). Writes ``<out>`` (ONNX actor with its
  ``awopt_contract``), ``<out stem>_loss.png`` and ``<out stem>_summary.json``::

    awopt train --dataset-root runs/collect --dataset-id awopt/kuka-grasp-v0 \\
        --out runs/train/bc/grasp_bc.onnx --steps 15000 --batch-size 64 --lr 1e-3 --seed 0

* any preset of :data:`awopt_ros.learning.awopt.PRESETS` (``awopt``, ``awac``, ``awac_p``,
  ``qtopt``, the ablations ``awopt_no_pf`` ...; ``bc-learner`` is the learner's ``bc``
  preset; ``-`` and ``_`` are interchangeable): the whole dataset goes into a
  :class:`~awopt_ros.learning.awopt.ReplayBuffer` and a
  :class:`~awopt_ros.learning.awopt.Learner` takes ``--steps`` gradient steps (total, counted
  from the checkpoint's step with ``--resume``), with a tqdm bar. Writes

  - ``--checkpoint`` (default ``<out stem>_checkpoint.pt``) every ``--checkpoint-every``
    steps, at the end and on Ctrl-C; ``--resume`` continues from it;
  - the actor (presets with one) to ``<out>``, contract ``algorithm`` = the preset name;
  - the critic (presets with one) to ``<prefix>_encoder.onnx`` / ``<prefix>_head.onnx``,
    ``prefix`` = ``--critic-out-prefix`` or ``<out dir>/<out stem>_critic``, contracts with
    ``algorithm`` = the preset name (plus ``role``, ``pair_id``, ``feature_shape``);
  - ``<out stem>_loss.png`` (losses and Q statistics vs step) and ``<out stem>_summary.json``
    (config, dataset statistics, final losses, steps/s, contracts)::

    awopt train --preset awopt --dataset-root runs/collect --dataset-id awopt/kuka-grasp-v0 \\
        --steps 10000 --batch-size 64

  The actor options of behaviour cloning apply to the learner's actor as well
  (``--pooling``, ``--num-conv``, ``--stem-stride``, ``--grasp-pose``, ``--engaged-input``,
  ``--pose-weight``, ``--ema-decay``); with ``--pooling target`` and/or ``--action-label
  expert`` every episode gets its actor labels in the buffer
  (:func:`learner_labels`, ``learning.targets.episode_labels``), e.g. AW-Opt with the actor
  network of the shipped behaviour-cloning model::

    awopt train --preset awopt --dataset-root runs/collect_s9b \\
        --dataset-id awopt/kuka-grasp-v0 --pooling target --num-conv 5 --grasp-pose \\
        --pose-weight 10 --grasp-label expert --engaged-input --action-label expert \\
        --ema-decay 0.999 --lr 1e-3 --set critic_lr=3e-4 --set actor_weight_decay=0 \\
        --steps 6000 --out runs/train/awopt/grasp_awopt.onnx

Outputs: without ``--out`` a run writes into a fresh folder
``runs/train/<preset>-<YYYYmmdd-HHMMSS>/`` (:func:`default_out`); nothing goes into the
shipped ``models/`` unless ``--out`` points there. Before it reads the dataset, a run refuses
(exit 2, one line naming the file and its option) to overwrite any file it would write that
exists (actor, critic files, checkpoint, loss plot, summary), unless ``--force``; with
``--resume`` the run's own files may be replaced, except shipped ones (:func:`output_files`,
:func:`awopt_ros.cli_args.check_outputs`). Bad input (a missing dataset, with the ids that
exist under the root, a count below 1, a missing checkpoint) is one line in argparse's form,
``awopt train: error: argument --dataset-id: ...``, exit 2.

Every ONNX file (and the checkpoint) is first written to a temporary file in the same
directory (``.<name>.tmp-<pid>``, which does not end in ``.onnx``) and then moved over the
destination with ``os.replace``, an atomic rename: a policy node that hot-swaps models when
the file changes never reads a half-written model. The two critic files are replaced one
after the other (encoder, then head); their contracts share a ``pair_id`` so a reader that
catches the moment between the two renames sees a mismatch (``core.onnx_critic`` refuses it)
and simply retries.

The helpers here (:func:`export_learner`, :func:`save_checkpoint`, :func:`load_checkpoint`,
:class:`LossHistory`, :func:`add_learner_args`, :func:`build_learner_config`) are shared with
``awopt finetune`` (:mod:`awopt_ros.learning.finetune`).
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from awopt_ros.cli_args import (UsageError, check_outputs, nonnegative_float, nonnegative_int,
                                positive_int, usage_error)
from awopt_ros.core import spec
from awopt_ros.core.image_ops import check_crop

#: Camera crop of the shipped configuration (x, y, w, h in 640x480 source px).
DEFAULT_CROP = spec.POLICY_CROP_XYWH
#: ``--preset`` of the classic behaviour-cloning run (``learning.bc.train_bc``).
CLASSIC_BC = 'bc'
#: ``--preset`` name of the learner's own ``bc`` preset.
LEARNER_BC = 'bc-learner'
#: Folder of the default outputs: ``<TRAIN_RUNS>/<preset>-<time>/grasp_<preset>.onnx``.
TRAIN_RUNS = 'runs/train'
#: Key of the extra metadata this module stores in a learner checkpoint.
META_KEY = 'awopt_meta'
#: Random-shift augmentation (px) unless --shift-px says otherwise (0 with --pooling target).
DEFAULT_SHIFT_PX = 4
#: Stats of ``Learner.update`` that are counters or step numbers, not plotted as losses.
_NOT_LOSSES = ('step',)


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------

def add_learner_args(parser, image_size_help='policy image side (px); default: the size of '
                                             'the dataset images'):
    """Add the network / optimiser options shared by ``awopt train`` and ``awopt finetune``.

    Options: ``--image-size`` (px; default: the dataset's), ``--channels`` / ``--hidden``
    (actor), ``--critic-channels`` / ``--critic-hidden``, ``--batch-size``, ``--lr`` (Adam,
    actor and critic), ``--shift-px``, ``--seed``, ``--threads`` and ``--set FIELD=VALUE``
    (any :class:`~awopt_ros.learning.awopt.LearnerConfig` field, dotted for nested ones, e.g.
    ``--set gamma=0.95 --set critic.num_conv=3``; values are parsed as JSON when they can be).
    """
    parser.add_argument('--image-size', type=positive_int, default=None, help=image_size_help)
    parser.add_argument('--channels', type=positive_int, default=32, help='actor conv channels')
    parser.add_argument('--hidden', type=positive_int, default=256,
                        help='actor MLP hidden units')
    parser.add_argument('--critic-channels', type=positive_int, default=None,
                        help='critic conv channels (learner presets; default 32)')
    parser.add_argument('--critic-hidden', type=positive_int, default=None,
                        help='critic MLP hidden units (learner presets; default 64)')
    parser.add_argument('--batch-size', type=positive_int, default=64,
                        help='transitions per step')
    parser.add_argument('--lr', type=nonnegative_float, default=3e-4,
                        help='Adam learning rate (actor and critic)')
    parser.add_argument('--shift-px', type=nonnegative_int, default=None,
                        help='random-shift augmentation (px); default 4, and 0 with '
                             '--pooling target (its labels do not move with the image)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--threads', type=positive_int, default=2,
                        help='torch intra-op threads')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='FIELD=VALUE',
                        help='override a LearnerConfig field (learner presets), repeatable; '
                             'e.g. --set gamma=0.95 --set critic.num_conv=3')
    parser.add_argument('--crop-xywh', type=int, nargs=4, default=None,
                        metavar=('X', 'Y', 'W', 'H'),
                        help='camera crop the dataset images were made with (source px; '
                             f'default {list(DEFAULT_CROP)}); recorded in the model contract')
    return parser


def add_train_args(parser):
    """Add the ``awopt train`` options to ``parser`` (an ``argparse.ArgumentParser``)."""
    parser.add_argument('--dataset-root', required=True,
                        help='run directory holding datasets/ (MINARI_DATASETS_PATH parent)')
    parser.add_argument('--dataset-id', required=True,
                        help='Minari dataset id, e.g. awopt/kuka-grasp-v0')
    parser.add_argument('--preset', default=CLASSIC_BC,
                        help="'bc' (default: behaviour cloning of the actor), 'bc-learner', "
                             'or a learner preset of awopt_ros.learning.awopt.PRESETS: awopt, '
                             'awac, awac_p, awac_p_elrs, awac_p_elrs_maxq, qtopt, awopt_no_pf, '
                             'awopt_no_elrs, awopt_no_maxq, awopt_no_actor_candidate')
    parser.add_argument('--out', default=None,
                        help=f'output ONNX actor path; the loss plot, summary JSON, '
                             'checkpoint and critic files go beside it (default '
                             f'{TRAIN_RUNS}/<preset>-<time>/grasp_<preset>.onnx)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite output files that exist (without it an existing '
                             'model, checkpoint, plot or summary stops the run before '
                             "training; --resume may replace its own run's files, except "
                             'shipped ones in models/)')
    parser.add_argument('--critic-out-prefix', default=None,
                        help='critic files <prefix>_encoder.onnx / <prefix>_head.onnx '
                             '(default <out dir>/<out stem>_critic)')
    parser.add_argument('--steps', type=positive_int, default=3000,
                        help='gradient steps (learner presets: total, including the '
                             "checkpoint's with --resume)")
    add_learner_args(parser)
    parser.add_argument('--eval-every', type=positive_int, default=100,
                        help='bc: steps between held-out evaluations; learner presets: steps '
                             'per averaged loss point')
    parser.add_argument('--all-episodes', action='store_true',
                        help='bc: train on failed episodes too (default: successful only)')
    parser.add_argument('--pooling', default='flatten',
                        choices=('flatten', 'spatial_softmax', 'target'),   # networks.POOLINGS
                        help="the actor's pooling (networks.ActorConfig); 'target' learns "
                             'a grasp-target score map from hindsight grasp points '
                             '(learning.targets), labelled with the simulated shoulder camera')
    parser.add_argument('--num-conv', type=positive_int, default=4,
                        help='actor conv layers (networks.ActorConfig.num_conv)')
    parser.add_argument('--stem-stride', type=int, default=2, choices=(2, 3),
                        help='stride of the first conv (networks.ActorConfig.stem_stride); '
                             '3 with 96 px images keeps the 32-cell score map of 64 px')
    parser.add_argument('--grasp-pose', action='store_true',
                        help='--pooling target: also predict the grasp pose (tool position, '
                             'gripper yaw modulo 180 deg) from hindsight labels and feed it '
                             'to the action head (networks.ActorConfig.grasp_pose)')
    parser.add_argument('--engaged-input', action='store_true',
                        help='also give the action MLP the thresholded gripper closedness '
                             '(0 open, 1 closed on something; networks.ActorConfig.'
                             'engaged_input)')
    parser.add_argument('--grasp-label', default='hindsight', choices=('hindsight', 'expert'),
                        help='--pooling target: label the score map and grasp-pose head '
                             'with the tool pose at the grasp close (hindsight) or with the '
                             "scripted demonstrator's recorded noise-free goal (expert: the "
                             "dataset's grasp_goal info, simulation only; hindsight where an "
                             'episode has none) (learning.targets)')
    parser.add_argument('--action-label', default='logged', choices=('logged', 'expert'),
                        help="train the actor on the logged actions, or replace their x, y "
                             "commands with the scripted demonstrator's noise-free ones from "
                             "its recorded grasp_goal (expert: DART-style labels, simulation "
                             'only; learning.targets.expert_actions)')
    parser.add_argument('--pose-weight', type=nonnegative_float, default=1.0,
                        help='--grasp-pose: weight of the grasp-pose error '
                             '(BCConfig.pose_weight, LearnerConfig.pose_weight)')
    parser.add_argument('--max-episodes', type=positive_int, default=None,
                        help='use only the first N episodes of the dataset (in logged '
                             'order; default all)')
    parser.add_argument('--lr-schedule', default='constant', choices=('constant', 'cosine'),
                        help='bc: learning-rate schedule (cosine: decays to 0 over --steps)')
    parser.add_argument('--ema-decay', type=nonnegative_float, default=0.0,
                        help='export an exponential moving average of the actor weights with '
                             'this decay per step (e.g. 0.999; 0: the last iterate; '
                             'BCConfig.ema_decay, LearnerConfig.actor_ema_decay)')
    parser.add_argument('--checkpoint', default=None,
                        help='learner checkpoint (default <out dir>/<out stem>_checkpoint.pt)')
    parser.add_argument('--checkpoint-every', type=nonnegative_int, default=1000,
                        help='learner presets: steps between checkpoints (0: end only)')
    parser.add_argument('--resume', action='store_true',
                        help='continue from --checkpoint (or the one beside --out) up to '
                             '--steps total steps; needs --out or --checkpoint')
    parser.add_argument('--no-progress', action='store_true', help='no tqdm progress bar')
    return parser


def resolve_preset(name):
    """Map a ``--preset`` value to ``(kind, learner_preset)``.

    ``'bc'`` -> ``('bc', None)`` (classic behaviour cloning); ``'bc-learner'`` ->
    ``('learner', 'bc')``; a key of ``learning.awopt.PRESETS`` -> ``('learner', key)``.
    Hyphens and underscores are interchangeable, case is ignored.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    from awopt_ros.learning.awopt import PRESETS
    key = str(name).strip().lower().replace('-', '_')
    if key == CLASSIC_BC:
        return CLASSIC_BC, None
    if key == LEARNER_BC.replace('-', '_'):
        return 'learner', 'bc'
    if key in PRESETS and key != 'bc':
        return 'learner', key
    known = [CLASSIC_BC, LEARNER_BC] + sorted(k for k in PRESETS if k != 'bc')
    raise ValueError(f'unknown preset {name!r}; known presets: {", ".join(known)}')


def _parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items):
    """Parse ``['a=1', 'critic.num_conv=3']`` into ``{'a': 1, 'critic': {'num_conv': 3}}``.

    Values are JSON when they parse (numbers, true/false, null, lists), else strings.

    Raises:
        ValueError: an item without ``=`` or with an empty field name.
    """
    out = {}
    for item in items or []:
        if '=' not in item:
            raise ValueError(f'--set needs FIELD=VALUE, got {item!r}')
        key, text = item.split('=', 1)
        parts = [p.strip() for p in key.strip().split('.')]
        if not all(parts):
            raise ValueError(f'--set has an empty field name in {item!r}')
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f'--set {item!r}: {p!r} is set both as a value and a group')
        node[parts[-1]] = _parse_value(text.strip())
    return out


def merge_overrides(values, overrides):
    """Apply ``overrides`` (from :func:`parse_overrides`) to the config dict ``values`` in
    place: a nested dict updates the sub-config dict it names (``actor``, ``critic``), any
    other value replaces the field. Returns ``values``."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = dict(values[key], **value)
        else:
            values[key] = value
    return values


def build_learner_config(args, preset, image_size):
    """Return the :class:`~awopt_ros.learning.awopt.LearnerConfig` for ``preset`` from the
    options of :func:`add_learner_args` and the dataset's ``image_size`` (px).

    Raises:
        ValueError: unknown ``--set`` field or an invalid resulting config.
    """
    from awopt_ros.learning.awopt import make_config
    actor = {'image_size': int(image_size), 'channels': args.channels, 'hidden': args.hidden}
    # The actor-network options of ``awopt train`` (absent in other commands' parsers).
    for name in ('num_conv', 'pooling', 'grasp_pose', 'stem_stride', 'engaged_input'):
        if hasattr(args, name):
            actor[name] = getattr(args, name)
    critic = {'image_size': int(image_size)}
    if args.critic_channels is not None:
        critic['channels'] = args.critic_channels
    if args.critic_hidden is not None:
        critic['hidden'] = args.critic_hidden
    values = {'actor': actor, 'critic': critic, 'batch_size': args.batch_size,
              'actor_lr': args.lr, 'critic_lr': args.lr,
              'shift_px': DEFAULT_SHIFT_PX if args.shift_px is None else args.shift_px,
              'seed': args.seed, 'num_threads': args.threads}
    if getattr(args, 'pooling', None) == 'target':
        values['pose_weight'] = args.pose_weight
    if getattr(args, 'ema_decay', 0.0):
        values['actor_ema_decay'] = args.ema_decay
    merge_overrides(values, parse_overrides(args.overrides))
    try:
        return make_config(preset, **values)
    except TypeError as exc:   # unknown nested field, e.g. --set critic.bogus=1
        raise ValueError(f'bad --set value: {exc}') from exc


# ---------------------------------------------------------------------------------------------
# Files: atomic writes, exports, checkpoints
# ---------------------------------------------------------------------------------------------

def temp_path(path):
    """Return the temporary path next to ``path`` used before the atomic rename:
    ``<dir>/.<name>.tmp-<pid>`` (same filesystem; never ends in ``.onnx``)."""
    path = Path(path)
    return path.with_name(f'.{path.name}.tmp-{os.getpid()}')


def atomic_write(path, write):
    """Call ``write(tmp)`` to produce a temporary file next to ``path``, then ``os.replace``
    it onto ``path`` (an atomic rename: readers see the old or the new file, never a partial
    one). The temporary file is removed when ``write`` raises. Returns ``path`` (Path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def default_out(kind, preset, stamp=None):
    """Return the default ``--out``, a fresh run folder under :data:`TRAIN_RUNS`:
    ``runs/train/<name>-<stamp>/grasp_<name>.onnx`` with ``name`` = ``bc`` for classic BC,
    else the preset, and ``stamp`` (default: the local time, ``YYYYmmdd-HHMMSS``). Training
    never writes into the shipped ``models/`` unless ``--out`` says so."""
    name = CLASSIC_BC if kind == CLASSIC_BC else preset
    stamp = time.strftime('%Y%m%d-%H%M%S') if stamp is None else stamp
    return str(Path(TRAIN_RUNS) / f'{name}-{stamp}' / f'grasp_{name}.onnx')


def output_files(args, kind, preset):
    """Return ``[(option, path), ...]``: every file ``awopt train`` with ``args`` (``--out``
    set) writes, with the option that chose it: the actor (presets with one), critic encoder
    and head (presets with a critic), loss plot, summary JSON and (learner presets) the
    checkpoint."""
    out = Path(args.out)
    files = []
    if kind == CLASSIC_BC:
        files.append(('--out', out))
    else:
        from awopt_ros.learning.awopt import PRESETS
        components = dict(PRESETS.get(preset, {}))
        components.update({k: v for k, v in parse_overrides(args.overrides).items()
                           if k in ('use_actor', 'use_critic')})
        if components.get('use_actor', True):
            files.append(('--out', out))
        if components.get('use_critic', True):
            option = '--critic-out-prefix' if args.critic_out_prefix else '--out'
            files += [(option, p) for p in critic_paths(args.critic_out_prefix
                                                        or default_critic_prefix(out))]
        files.append(('--checkpoint' if args.checkpoint else '--out', checkpoint_path(args)))
    files += [('--out', out.with_name(out.stem + '_loss.png')),
              ('--out', out.with_name(out.stem + '_summary.json'))]
    return files


def checkpoint_path(args):
    """Return the learner checkpoint Path: ``--checkpoint`` or
    ``<out dir>/<out stem>_checkpoint.pt``."""
    out = Path(args.out)
    return Path(args.checkpoint) if args.checkpoint else out.with_name(
        out.stem + '_checkpoint.pt')


def default_critic_prefix(out):
    """Return the default critic prefix for actor path ``out``: ``<dir>/<stem>_critic``."""
    out = Path(out)
    return str(out.with_name(out.stem + '_critic'))


def critic_paths(prefix):
    """Return ``(encoder, head)`` paths for critic ``prefix``:
    ``<prefix>_encoder.onnx``, ``<prefix>_head.onnx``."""
    return Path(f'{prefix}_encoder.onnx'), Path(f'{prefix}_head.onnx')


def _swap_in(pairs):
    """``os.replace`` every (tmp, final) of ``pairs`` in order (cleans up on failure)."""
    try:
        for tmp, final in pairs:
            os.replace(tmp, final)
    finally:
        for tmp, _ in pairs:
            if Path(tmp).exists():
                Path(tmp).unlink()


def export_learner(learner, actor_path=None, critic_prefix=None, crop_xywh=DEFAULT_CROP,
                   dataset_id='', algorithm=None, model_card='', check_parity=True):
    """Export a learner's actor and/or critic to ONNX, atomically (see the module docstring).

    Args:
        learner: :class:`~awopt_ros.learning.awopt.Learner`.
        actor_path: ONNX actor destination; None (or no actor) skips it.
        critic_prefix: critic destination prefix (:func:`critic_paths`); None (or no critic)
            skips it.
        crop_xywh: camera crop (x, y, w, h, source px) recorded in the contracts.
        dataset_id: dataset id recorded in the contracts.
        algorithm: contract ``algorithm`` (default: ``learner.config.name``, the preset).
        model_card: text stored in every file's ``model_card`` metadata.
        check_parity: torch vs onnxruntime check of every file before it is swapped in.

    Returns:
        dict with ``actor`` ({path, contract, parity}) and/or ``critic`` ({encoder, head,
        encoder_contract, head_contract, parity}); absent parts are omitted.

    Raises:
        ValueError: a parity check failed; nothing of that part was swapped in and the
            temporary files are removed.
    """
    from awopt_ros.learning.critic import export_critic
    from awopt_ros.learning.export import export_actor, make_contract
    algorithm = learner.config.name if algorithm is None else algorithm
    crop = [int(v) for v in crop_xywh]
    out = {}
    if actor_path is not None and learner.actor is not None:
        holder = {}

        def write(tmp):
            holder.update(export_actor(learner.deployed_actor, tmp, crop, dataset=dataset_id,
                                       algorithm=algorithm, model_card=model_card,
                                       check_parity=check_parity))
        path = atomic_write(actor_path, write)
        out['actor'] = {'path': str(path), 'contract': holder['contract'],
                        'parity': {str(k): v for k, v in holder['parity'].items()}}
    if critic_prefix is not None and learner.critic is not None:
        enc, head = critic_paths(critic_prefix)
        enc.parent.mkdir(parents=True, exist_ok=True)
        pairs = [(temp_path(enc), enc), (temp_path(head), head)]
        contract = make_contract(learner.critic.config.image_size, crop, algorithm=algorithm,
                                 dataset=dataset_id)
        try:
            result = export_critic(learner.critic, pairs[0][0], pairs[1][0], contract,
                                   model_card=model_card, check_parity=check_parity)
        except BaseException:
            for tmp, _ in pairs:
                if tmp.exists():
                    tmp.unlink()
            raise
        _swap_in(pairs)
        out['critic'] = {'encoder': str(enc), 'head': str(head),
                         'encoder_contract': result['encoder_contract'],
                         'head_contract': result['head_contract'],
                         'parity': {str(k): v for k, v in result['parity'].items()}}
    return out


def save_checkpoint(path, learner, meta=None):
    """Write ``learner.state_dict()`` plus ``meta`` (under :data:`META_KEY`) to ``path``
    atomically (``torch.save`` to a temporary file, then ``os.replace``). Returns the Path."""
    import torch
    state = learner.state_dict()
    state[META_KEY] = dict(meta or {})
    return atomic_write(path, lambda tmp: torch.save(state, str(tmp)))


def load_checkpoint(path):
    """Load a checkpoint written by :func:`save_checkpoint` (or a bare
    ``Learner.state_dict()``); returns the dict (``META_KEY`` is {} when absent).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a learner checkpoint.
    """
    import torch
    from awopt_ros.learning.awopt import CHECKPOINT_FORMAT
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        state = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f'cannot read checkpoint {path}: {exc}') from exc
    if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
        raise ValueError(f'{path} is not an awopt learner checkpoint (expected format '
                         f'{CHECKPOINT_FORMAT!r})')
    state.setdefault(META_KEY, {})
    return state


def _checkpoint_overrides(state, preset, num_threads):
    """Config fields that replace checkpoint ``state``'s stored ones: ``preset``'s component
    settings when it differs from the stored preset, and ``num_threads`` when given.

    Raises:
        ValueError: unknown preset.
    """
    from awopt_ros.learning.awopt import PRESETS
    overrides = {}
    if num_threads is not None:
        overrides['num_threads'] = int(num_threads)
    if preset is not None and preset != state['config'].get('name'):
        if preset not in PRESETS:
            raise ValueError(f'unknown preset {preset!r}; known: {sorted(PRESETS)}')
        overrides.update(PRESETS[preset], name=preset)
    return overrides


def learner_from_checkpoint(state, preset=None, num_threads=None):
    """Build a :class:`~awopt_ros.learning.awopt.Learner` from checkpoint ``state``.

    Args:
        state: dict from :func:`load_checkpoint`.
        preset: learner preset to continue with (None: the checkpoint's). A different preset
            keeps the stored networks and hyper-parameters and switches the preset's
            component settings (e.g. pretrain ``awac_p``, finetune ``awopt``); the actor /
            critic presence must match.
        num_threads: torch threads (None: keep the stored value).

    Raises:
        ValueError: unknown preset, or components that do not match the checkpoint.
    """
    from awopt_ros.learning.awopt import Learner
    overrides = _checkpoint_overrides(state, preset, num_threads)
    try:
        return Learner.from_state_dict(state, **overrides)
    except (KeyError, TypeError) as exc:
        raise ValueError(f'checkpoint does not fit preset {preset!r}: {exc}') from exc


def fresh_learner_from_checkpoint(state, preset=None, num_threads=None, overrides=None,
                                  seed=None):
    """Build a :class:`~awopt_ros.learning.awopt.Learner` with checkpoint ``state``'s
    networks and hyper-parameters but freshly initialised weights (step 0, empty optimisers):
    the same model trained from scratch, e.g. a weak start for finetuning experiments.

    Args:
        state: dict from :func:`load_checkpoint`; only its ``config`` is read.
        preset: learner preset whose component settings replace the stored ones (None: the
            checkpoint's).
        num_threads: torch threads (None: keep the stored value).
        overrides: ``{field: value}`` from :func:`parse_overrides` (nested dicts update the
            ``actor`` / ``critic`` sub-configs), applied last.
        seed: weight-initialisation and sampling seed (None: the stored one).

    Raises:
        ValueError: unknown preset or field, or an invalid resulting config.
    """
    from awopt_ros.learning.awopt import Learner, LearnerConfig
    values = dict(state['config'], **_checkpoint_overrides(state, preset, num_threads))
    if seed is not None:
        values['seed'] = int(seed)
    merge_overrides(values, overrides or {})
    try:
        return Learner(LearnerConfig(**values))
    except TypeError as exc:   # unknown field, e.g. --set bogus=1
        raise ValueError(f'bad --set value: {exc}') from exc


# ---------------------------------------------------------------------------------------------
# Loss history and plots
# ---------------------------------------------------------------------------------------------

class LossHistory:
    """Per-step learner statistics averaged over windows of ``every`` steps.

    :meth:`add` takes the dict of one ``Learner.update`` call; every ``every`` steps the
    NaN-ignoring means of the window are appended. :meth:`to_dict` gives ``{'step': [...],
    key: [...]}`` (one entry per window, ``step`` = the learner step at the window's end),
    JSON-friendly and small for long runs.
    """

    def __init__(self, every=100, data=None):
        """Start empty (or from ``data``, a :meth:`to_dict` result) with window ``every``."""
        self.every = max(1, int(every))
        self.data = {k: list(v) for k, v in (data or {}).items()}
        self.data.setdefault('step', [])
        self._sums, self._counts, self._n, self._last_step = {}, {}, 0, None

    def add(self, stats):
        """Accumulate one step's stats (dict of floats with a ``step`` entry)."""
        for key, value in stats.items():
            if key in _NOT_LOSSES:
                continue
            value = float(value)
            if math.isfinite(value):
                self._sums[key] = self._sums.get(key, 0.0) + value
                self._counts[key] = self._counts.get(key, 0) + 1
            else:
                self._sums.setdefault(key, 0.0)
                self._counts.setdefault(key, 0)
        self._n += 1
        if 'step' in stats:
            self._last_step = int(stats['step'])
        else:
            self._last_step = (self._last_step or (self.data['step'] or [0])[-1]) + 1
        if self._n >= self.every:
            self.flush()

    def flush(self):
        """Close the running window (if it has any step)."""
        if self._n == 0:
            return
        n_points = len(self.data['step'])
        for key in self._sums:
            values = self.data.setdefault(key, [math.nan] * n_points)
            values.append(self._sums[key] / self._counts[key] if self._counts[key]
                          else math.nan)
        self.data['step'].append(self._last_step)
        for key, values in self.data.items():   # keys missing in this window
            if len(values) < n_points + 1:
                values.append(math.nan)
        self._sums, self._counts, self._n = {}, {}, 0

    def last(self):
        """Return {key: latest finite window mean} (keys without one are left out)."""
        out = {}
        for key, values in self.data.items():
            if key == 'step':
                continue
            finite = [v for v in values if v is not None and math.isfinite(v)]
            if finite:
                out[key] = finite[-1]
        return out

    def recent(self):
        """Return the means of the open window (steps since the last point) where it has
        finite values, else :meth:`last`'s; for progress lines between points."""
        out = self.last()
        out.update({k: self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]})
        return out

    def to_dict(self):
        """Return ``{'step': [...], key: [...]}`` (copies; NaN where a window had none)."""
        return {k: list(v) for k, v in self.data.items()}


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_learner_losses(history, png_path, title='', exports=()):
    """Plot learner losses (left: critic cross-entropy and weighted actor loss, log scale) and
    Q statistics (right: mean Q, Bellman target, advantage) vs gradient step to ``png_path``.

    Args:
        history: :meth:`LossHistory.to_dict` result.
        png_path: PNG destination (matplotlib Agg).
        title: figure title.
        exports: gradient steps at which models were exported (dotted vertical lines).
    """
    plt = _pyplot()
    steps = history.get('step', [])
    fig, (ax_l, ax_q) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for key, label in (('critic_loss', 'critic (BCE, nats)'),
                       ('actor_loss', 'actor (weighted L_A)')):
        if key in history:
            ax_l.plot(steps, [_nan(v) for v in history[key]], label=label)
    for key, label in (('q_mean', 'mean Q(s, a)'), ('target_mean', 'mean Bellman target'),
                       ('adv_mean', 'mean advantage')):
        if key in history:
            ax_q.plot(steps, [_nan(v) for v in history[key]], label=label)
    for ax in (ax_l, ax_q):
        for s in exports:
            ax.axvline(s, color='grey', linestyle=':', linewidth=0.8)
        ax.set_xlabel('gradient step')
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax_l.set_ylabel('loss (window mean)')
    if any(v is not None and v > 0 for k in ('critic_loss', 'actor_loss')
           for v in history.get(k, [])):
        ax_l.set_yscale('log')
    ax_q.set_ylabel('value')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(png_path))
    plt.close(fig)


def _nan(value):
    return math.nan if value is None else value


def plot_losses(history, png_path, title=''):
    """Write the train / held-out BC loss curves of ``history`` to ``png_path`` (Agg)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(history['step'], history['train_loss'], label='train (running mean)')
    ax.plot(history['step'], history['heldout_loss'], label='held-out')
    ax.set_xlabel('gradient step')
    ax.set_ylabel('BC loss (weighted MSE + BCE)')
    ax.set_yscale('log')
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(png_path))
    plt.close(fig)


def _json_safe(value):
    """Return ``value`` with NaN/inf floats replaced by None and tuples by lists."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, data):
    """Write ``data`` as strict JSON (NaN -> null) to ``path`` atomically."""
    text = json.dumps(_json_safe(data), indent=2)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def dataset_stats(episodes):
    """Return dataset statistics of episode dicts: episodes, successful, success_rate,
    transitions, mean_episode_steps, image_size (px, None when empty)."""
    import numpy as np
    lengths = [len(ep['actions']) for ep in episodes]
    success = [bool(np.any(np.asarray(ep['rewards']) > 0)) for ep in episodes]
    image_size = None
    if episodes:
        image_size = int(np.asarray(episodes[0].get('observations', episodes[0])['image'])
                         .shape[1])
    return {'episodes': len(episodes), 'successful': int(sum(success)),
            'success_rate': (sum(success) / len(success)) if success else None,
            'transitions': int(sum(lengths)),
            'mean_episode_steps': (sum(lengths) / len(lengths)) if lengths else None,
            'image_size': image_size}


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------

PROG = 'awopt train'


def _fail(msg):
    """Print a failure that is not the input's fault (one line) and return 1."""
    print(f'{PROG}: {msg}', file=sys.stderr)
    return 1


def _usage(option, msg=None):
    """Print a bad-input error naming ``option`` (or a :class:`UsageError` given as
    ``option``) in argparse's form and return 2."""
    return usage_error(PROG, option if msg is None else UsageError(option, msg))


def run_train(args):
    """Run ``awopt train`` with parsed ``args``; return the exit code (0 ok, 1 failure,
    2 bad input: one line naming the option, 130 interrupted).

    Refuses (exit 2, before reading the dataset) to overwrite any file it would write that
    exists, unless ``--force``; with ``--resume`` its own run's files may be replaced, except
    shipped ones (``models/``).
    """
    try:
        kind, preset = resolve_preset(getattr(args, 'preset', CLASSIC_BC))
    except ValueError as exc:
        return _usage('--preset', exc)
    try:
        crop = list(DEFAULT_CROP if args.crop_xywh is None else args.crop_xywh)
        check_crop(crop, *spec.SOURCE_SIZE)
    except ValueError as exc:
        return _usage('--crop-xywh', exc)
    try:
        parse_overrides(args.overrides)
    except ValueError as exc:
        return _usage('--set', exc)
    args.crop_xywh = crop
    if args.steps < 1:
        return _usage('--steps', f'must be >= 1, got {args.steps}')
    if args.resume and kind == CLASSIC_BC:
        return _usage('--resume', "needs a learner preset (e.g. --preset awopt or "
                                  "bc-learner); plain 'bc' keeps no checkpoint")
    if args.resume and args.out is None and not args.checkpoint:
        return _usage('--resume', 'needs --out (or --checkpoint) of the run to continue')
    if args.out is None:
        args.out = default_out(kind, preset)
    try:
        keep = ([p for _, p in output_files(args, kind, preset)] if args.resume else ())
        check_outputs(output_files(args, kind, preset), force=getattr(args, 'force', False),
                      keep=keep)
    except UsageError as exc:
        return _usage(exc)
    if kind == CLASSIC_BC:
        return _run_bc(args)
    return _run_learner(args, preset)


def first_episodes(episodes, count, option='--max-episodes'):
    """Return the first ``count`` episodes (all for None); ValueError naming ``option`` for
    ``count`` < 1."""
    if count is None:
        return episodes
    if count < 1:
        raise ValueError(f'{option} must be >= 1, got {count}')
    return episodes[:count]


def _run_bc(args):
    """Classic behaviour cloning (``learning.bc``); see the module docstring."""
    from awopt_ros.learning.bc import BCConfig, train_bc
    from awopt_ros.learning.data import bc_arrays, bc_intervention, load_episodes
    from awopt_ros.learning.export import export_actor
    from awopt_ros.learning.networks import ActorConfig
    from awopt_ros.learning.targets import (expert_action_arrays, expert_label_count,
                                            target_arrays)
    from awopt_ros.sim.scene import shoulder_camera
    successful_only = not args.all_episodes
    try:
        episodes = first_episodes(load_episodes(args.dataset_root, args.dataset_id),
                                   args.max_episodes)
    except UsageError as exc:
        return _usage(exc)
    try:
        images, proprios, actions, stats = bc_arrays(episodes, successful_only=successful_only)
    except (FileNotFoundError, ValueError) as exc:
        return _usage('--dataset-id', exc)
    # --set intervention_weight=W (the operator's steps, core.intervention)
    intervention_weight = parse_overrides(args.overrides).get('intervention_weight', 1.0)
    if isinstance(intervention_weight, bool) or not isinstance(intervention_weight,
                                                               (int, float)):
        return _usage('--set', f'intervention_weight must be a number, got '
                               f'{intervention_weight!r}')
    intervention = bc_intervention(episodes, successful_only)
    stats['intervention_steps'] = int(intervention.sum())
    if args.action_label == 'expert':
        relabelled, n_steps = expert_action_arrays(episodes, successful_only)
        if n_steps == 0:
            return _usage('--action-label', 'expert: no episode recorded a grasp_goal '
                                            '(collect with the scripted policy node of this '
                                            'version)')
        actions = relabelled
        print(f"expert action labels: x, y of {n_steps} of {len(actions)} transitions from "
              f"the demonstrator's recorded goal")
    targets = None
    if args.pooling == 'target':
        if args.grasp_label == 'expert':
            n_goal, n_close = expert_label_count(episodes, successful_only)
            if n_goal == 0:
                return _usage('--grasp-label', 'expert: no episode recorded a grasp_goal '
                                               '(collect with the scripted policy node of '
                                               'this version)')
            print(f"expert grasp labels: {n_goal} of {n_close} episodes recorded the "
                  f"demonstrator's goal at their close (the rest keep hindsight labels)")
        targets = target_arrays(episodes, shoulder_camera(*spec.SOURCE_SIZE), args.crop_xywh,
                                successful_only=successful_only, with_pose=args.grasp_pose,
                                label=args.grasp_label)
        print(f'grasp-target labels on {int(targets[1].sum())} of {len(targets[1])} '
              f'transitions (steps up to the close)')
    del episodes
    shift_px = args.shift_px
    if shift_px is None:
        shift_px = 0 if args.pooling == 'target' else DEFAULT_SHIFT_PX
    image_size = images.shape[1] if args.image_size is None else args.image_size
    if images.shape[1:3] != (image_size, image_size):
        return _usage('--image-size', f'dataset images are {images.shape[1]}x'
                                      f'{images.shape[2]} but --image-size is '
                                      f'{args.image_size}')
    print(f'dataset {args.dataset_id}: {stats["episodes"]} episodes, {stats["successful"]} '
          f'successful, training on {stats["transitions"]} transitions from '
          f'{stats["used_episodes"]} episodes')
    try:
        config = BCConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, shift_px=shift_px, eval_every=args.eval_every,
                          lr_schedule=args.lr_schedule, pose_weight=args.pose_weight,
                          ema_decay=args.ema_decay, num_threads=args.threads,
                          intervention_weight=intervention_weight,
                          actor=ActorConfig(image_size=image_size, channels=args.channels,
                                            hidden=args.hidden, num_conv=args.num_conv,
                                            pooling=args.pooling,
                                            grasp_pose=args.grasp_pose,
                                            stem_stride=args.stem_stride,
                                            engaged_input=args.engaged_input))
    except ValueError as exc:
        return _usage('--set' if 'intervention_weight' in str(exc) else '', exc)
    t0 = time.perf_counter()
    actor, history = train_bc(images, proprios, actions, config,
                              progress=not args.no_progress,
                              log=print if args.no_progress else None, targets=targets,
                              intervention=intervention)
    train_s = time.perf_counter() - t0
    out = Path(args.out)
    card = (f'awopt_ros grasping actor, behaviour cloning (AW-Opt actor loss, task-1 weights '
            f'{list(config.weights)}) on {args.dataset_id} ({stats["transitions"]} transitions '
            f'from {stats["used_episodes"]} successful episodes), actor pooling '
            f'{args.pooling!r} with {args.num_conv} convs'
            f'{", grasp-pose head" if args.grasp_pose else ""}'
            f'{", engaged-gripper input" if args.engaged_input else ""}'
            f'{", " + args.grasp_label + " grasp labels" if args.pooling == "target" else ""}'
            f'{", expert x, y action labels" if args.action_label == "expert" else ""}, '
            f'{args.steps} steps, batch '
            f'{args.batch_size}, seed {args.seed}. Inputs image uint8 (N,{image_size},'
            f'{image_size},3) cropped {list(args.crop_xywh)} from 640x480, proprio '
            f'float32 (N,6) {list(spec.PROPRIO_NAMES)}; output action float32 (N,7) '
            f'{list(spec.ACTION_NAMES)}. Simulation only.')
    result = {}

    def write(tmp):
        result.update(export_actor(actor, tmp, args.crop_xywh, dataset=args.dataset_id,
                                   algorithm='bc', model_card=card))
    try:
        atomic_write(out, write)
    except ValueError as exc:
        return _fail(f'export failed: {exc}')
    png = out.with_name(out.stem + '_loss.png')
    plot_losses(history, png, title=f'BC on {args.dataset_id}')
    summary = {
        'model': str(out), 'preset': CLASSIC_BC, 'dataset_root': str(args.dataset_root),
        'dataset_id': args.dataset_id, 'data': stats, 'config': config.to_dict(),
        'grasp_label': args.grasp_label if args.pooling == 'target' else None,
        'action_label': args.action_label,
        'train_s': round(train_s, 2), 'steps_per_s': round(args.steps / max(train_s, 1e-9), 2),
        'history': history,
        'final_train_loss': history['train_loss'][-1],
        'final_heldout_loss': history['heldout_loss'][-1],
        'parity_max_abs_diff': {str(k): v[0] for k, v in result['parity'].items()},
        'contract': result['contract'], 'loss_png': str(png),
    }
    summary_path = write_json(out.with_name(out.stem + '_summary.json'), summary)
    print(f'trained {args.steps} steps in {train_s:.1f} s: train loss '
          f'{summary["final_train_loss"]:.4f}, held-out {summary["final_heldout_loss"]:.4f}')
    print(f'wrote {out}, {png}, {summary_path}')
    return 0


def learner_model_card(preset, dataset_id, config, step, data_note, crop):
    """Return the model-card text of a learner export (preset, data, step, I/O spec)."""
    size = config.image_size
    parts = []
    if config.use_actor:
        parts.append('actor')
    if config.use_critic:
        parts.append('critic (QT-Opt style, encoder + head)')
    return (f'awopt_ros grasping {" and ".join(parts)}, learner preset {preset!r} '
            f'(learning/awopt.py: positive_filter={config.positive_filter}, success_share='
            f'{config.success_share}, exploration={config.exploration!r}, target='
            f'{config.target!r}, advantage_weighting={config.advantage_weighting}) on '
            f'{dataset_id} ({data_note}), gradient step {step}, batch {config.batch_size}, '
            f'seed {config.seed}. Inputs image uint8 (N,{size},{size},3) cropped {list(crop)} '
            f'from 640x480, proprio float32 (N,6) {list(spec.PROPRIO_NAMES)}; actor output '
            f'action float32 (N,7) {list(spec.ACTION_NAMES)}; critic output q float32 (N,) '
            f'success probability. Simulation only.')


def episode_labeller(crop_xywh, grasp_label, with_pose, action_label, miss_label='mask'):
    """Return ``labeller(episode) -> labels dict`` for a replay buffer:
    ``learning.targets.episode_labels`` with the simulated shoulder camera (made once) and the
    policy crop ``crop_xywh``; the other arguments as there."""
    from awopt_ros.learning.targets import episode_labels
    camera = None
    if grasp_label is not None:
        from awopt_ros.sim.scene import shoulder_camera
        camera = shoulder_camera(*spec.SOURCE_SIZE)
    crop = [int(v) for v in crop_xywh]

    def labeller(episode):
        return episode_labels(episode, camera, crop, grasp_label, with_pose=with_pose,
                              action_label=action_label, miss_label=miss_label)
    return labeller


def learner_labels(args, episodes):
    """Return the per-episode actor labels (``learning.targets.episode_labels``) that the
    ``awopt train`` options ask for (``--pooling target``: grasp point and mask, with
    ``--grasp-pose`` the pose, ``--grasp-label``; ``--action-label expert``: relabelled
    actions), or None when they ask for none. Prints what was labelled.

    Raises:
        ValueError: expert labels asked for and no episode recorded a grasp goal.
    """
    from awopt_ros.learning.targets import expert_label_count
    target = getattr(args, 'pooling', None) == 'target'
    expert_actions = getattr(args, 'action_label', 'logged') == 'expert'
    if not (target or expert_actions):
        return None
    grasp_label = args.grasp_label if target else None
    if (expert_actions or grasp_label == 'expert') \
            and expert_label_count(episodes, successful_only=False)[0] == 0:
        raise ValueError('expert labels asked for (--grasp-label / --action-label expert) but '
                         'no episode recorded a grasp_goal (collect with the scripted policy '
                         'node of this version)')
    labeller = episode_labeller(args.crop_xywh, grasp_label, target and args.grasp_pose,
                                'expert' if expert_actions else 'logged')
    labels = [labeller(ep) for ep in episodes]
    parts = []
    if target:
        parts.append(f'grasp point ({grasp_label})' + (', pose' if args.grasp_pose else ''))
    if expert_actions:
        parts.append('expert x, y actions')
    line = f'actor labels: {", ".join(parts)} on {len(labels)} episodes'
    if target:
        line += f'; {sum(int(lab["target_mask"].sum()) for lab in labels)} steps up to a close'
    print(line)
    return labels


def _run_learner(args, preset):
    """Learner presets: replay buffer + :class:`Learner`; see the module docstring."""
    from awopt_ros.learning.awopt import Learner, ReplayBuffer
    from awopt_ros.learning.data import load_episodes
    out = Path(args.out)
    ckpt = checkpoint_path(args)
    critic_prefix = args.critic_out_prefix or default_critic_prefix(out)
    try:
        episodes = load_episodes(args.dataset_root, args.dataset_id)
        episodes = first_episodes(episodes, args.max_episodes)
    except UsageError as exc:
        return _usage(exc)
    except (FileNotFoundError, ValueError) as exc:
        return _usage('--dataset-id', exc)
    stats = dataset_stats(episodes)
    if stats['transitions'] == 0:
        return _usage('--dataset-id', f'dataset {args.dataset_id} has no transitions')
    image_size = stats['image_size']
    if args.image_size is not None and args.image_size != image_size:
        return _usage('--image-size', f'dataset images are {image_size}x{image_size} but '
                                      f'--image-size is {args.image_size}')
    try:
        labels = learner_labels(args, episodes)
        buffer = ReplayBuffer.from_episodes(episodes, labels=labels)
    except ValueError as exc:
        return _usage('--dataset-id', f'dataset {args.dataset_id}: {exc}')
    del episodes
    history = LossHistory(args.eval_every)
    try:
        if args.resume:
            try:
                state = load_checkpoint(ckpt)
            except (FileNotFoundError, ValueError) as exc:
                return _usage('--checkpoint', exc)
            stored = state['config'].get('name')
            if stored != preset:
                return _usage('--preset', f'checkpoint {ckpt} is preset {stored!r}, not '
                                          f'{preset!r}')
            learner = learner_from_checkpoint(state, num_threads=args.threads)
            history = LossHistory(args.eval_every, state[META_KEY].get('history'))
            print(f'resuming {preset} from {ckpt} at step {learner.step} (its stored config '
                  'is used; network and optimiser options are ignored)')
        else:
            learner = Learner(build_learner_config(args, preset, image_size))
        if learner.config.image_size != image_size:
            return _usage('--dataset-id', f'the learner takes {learner.config.image_size} px '
                                          f'images, the dataset has {image_size} px')
        learner.train(buffer, 0)     # validates buffer vs config (e.g. no success for bc)
    except (FileNotFoundError, ValueError) as exc:
        return _usage('', exc)
    config = learner.config
    print(f'dataset {args.dataset_id}: {stats["episodes"]} episodes ({stats["successful"]} '
          f'successful), {stats["transitions"]} transitions, {image_size} px; preset '
          f'{preset}: actor {"yes" if config.use_actor else "no"}, critic '
          f'{"yes" if config.use_critic else "no"}')
    meta = {'kind': 'train', 'preset': preset, 'dataset_root': str(args.dataset_root),
            'dataset_id': args.dataset_id, 'crop_xywh': list(args.crop_xywh)}

    def checkpoint():
        history.flush()
        save_checkpoint(ckpt, learner, dict(meta, history=history.to_dict()))

    start = learner.step
    todo = max(0, args.steps - start)
    if todo == 0:
        print(f'checkpoint is at step {start} >= --steps {args.steps}: no training, exporting')
    bar = None
    if not args.no_progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=args.steps, initial=start, desc=preset, unit='step',
                   dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for _ in range(todo):
            cb, ab = learner.sample_batches(buffer)
            step_stats = learner.update(cb if cb is not None else ab, ab)
            history.add(step_stats)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f'{step_stats[k]:.4f}' for k in
                                 ('critic_loss', 'actor_loss') if k in step_stats},
                                refresh=False)
            elif args.no_progress and learner.step % max(1, args.eval_every) == 0:
                shown = ' '.join(f'{k} {v:.4f}' for k, v in history.recent().items()
                                 if k in ('critic_loss', 'actor_loss'))
                print(f'step {learner.step}/{args.steps} {shown}')
            if args.checkpoint_every and learner.step % args.checkpoint_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        checkpoint()
        print(f'\ninterrupted at step {learner.step}: checkpoint {ckpt}; continue with the '
              f'same command plus --resume', file=sys.stderr)
        return 130
    if bar is not None:
        bar.close()
    train_s = time.perf_counter() - t0
    checkpoint()
    card = learner_model_card(preset, args.dataset_id, config, learner.step,
                              f'{stats["episodes"]} episodes, {stats["successful"]} '
                              f'successful, {stats["transitions"]} transitions',
                              args.crop_xywh)
    try:
        exported = export_learner(learner, out, critic_prefix, args.crop_xywh,
                                  dataset_id=args.dataset_id, algorithm=preset,
                                  model_card=card)
    except ValueError as exc:
        return _fail(f'export failed: {exc}')
    hist = history.to_dict()
    png = out.with_name(out.stem + '_loss.png')
    plot_learner_losses(hist, png, title=f'{preset} on {args.dataset_id}')
    summary = {
        'preset': preset, 'dataset_root': str(args.dataset_root),
        'dataset_id': args.dataset_id, 'data': stats, 'config': config.to_dict(),
        'start_step': start, 'end_step': learner.step, 'steps_trained': todo,
        'train_s': round(train_s, 2),
        'steps_per_s': round(todo / train_s, 3) if todo and train_s > 0 else None,
        'final_losses': history.last(), 'checkpoint': str(ckpt),
        'actor': exported.get('actor'), 'critic': exported.get('critic'),
        'loss_png': str(png), 'history': hist,
    }
    summary_path = write_json(out.with_name(out.stem + '_summary.json'), summary)
    losses = ', '.join(f'{k} {v:.4f}' for k, v in history.last().items()
                       if k in ('critic_loss', 'actor_loss'))
    rate = f' ({summary["steps_per_s"]} steps/s)' if summary['steps_per_s'] else ''
    print(f'{preset}: steps {start} -> {learner.step} in {train_s:.1f} s{rate}; {losses}')
    written = [p for p in (exported.get('actor', {}).get('path'),
                           exported.get('critic', {}).get('encoder'),
                           exported.get('critic', {}).get('head')) if p]
    print(f'wrote {", ".join(written + [str(png), str(summary_path), str(ckpt)])}')
    return 0


def main(argv=None):
    """Stand-alone entry point (``python -m awopt_ros.learning.train_cli``)."""
    from awopt_ros.cli_args import HelpFormatter
    parser = add_train_args(argparse.ArgumentParser(
        prog=PROG, description=__doc__.split('\n')[0], formatter_class=HelpFormatter))
    return run_train(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
