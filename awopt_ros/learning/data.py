"""Load behaviour-cloning transitions from a logged Minari dataset (docs/INTERFACES.md).

Episodes come from :func:`awopt_ros.core.dataset.load_episodes`.
Layout: ``<root>/datasets/<dataset_id>/data`` (``MINARI_DATASETS_PATH=<root>/datasets``), e.g.
``dataset_id = 'awopt/kuka-grasp/run-v0'``. Each episode has observations ``image`` uint8
(T+1, 64, 64, 3) and ``proprio`` float32 (T+1, 6), ``actions`` float32 (T, 7), ``rewards``
(T,), ``terminations`` and ``truncations`` (T,) bool.

Behaviour cloning keeps only successful episodes (any reward > 0): AW-Opt's positive
filtering for the actor (Lu et al. 2021, FACTS.md).
"""
import numpy as np

from awopt_ros.cli_args import UsageError
from awopt_ros.core import spec


class DatasetNotFoundError(UsageError, FileNotFoundError):
    """No such dataset or run directory: a :class:`~awopt_ros.cli_args.UsageError` naming the
    option, and a ``FileNotFoundError``."""


def dataset_ids(root_dir):
    """Return the ids of the datasets under ``<root_dir>/datasets`` (sorted list of str, e.g.
    ``['awopt/kuka-grasp-v0']``): every folder below it holding ``data/metadata.json``, by its
    path (``<namespace>/<name>-vN``, nested namespaces too). [] when there is none."""
    from pathlib import Path
    base = Path(root_dir) / 'datasets'
    if not base.is_dir():
        return []
    return sorted(meta.parent.parent.relative_to(base).as_posix()
                  for meta in base.rglob('data/metadata.json'))


def check_dataset(root_dir, dataset_id, root_option='--dataset-root',
                  id_option='--dataset-id'):
    """Check that dataset ``dataset_id`` exists under ``root_dir`` before anything reads it
    (Minari's own error would advise ``download=True``, which does not apply here).

    Raises:
        awopt_ros.cli_args.UsageError: naming ``root_option`` when ``root_dir`` is not a
            folder, or ``id_option`` for a malformed or absent id; the message lists the ids
            that exist under the root. A missing root or dataset is also a
            ``FileNotFoundError``.
    """
    from pathlib import Path

    from awopt_ros.core.dataset import _parse_id
    root = Path(root_dir)
    if not root.is_dir():
        raise DatasetNotFoundError(root_option, f'{root_dir} is not a folder (the run directory '
                                                'of awopt collect --run-dir, which holds '
                                                'datasets/)')
    ids = dataset_ids(root)
    listed = (f'datasets under {root_dir}: {", ".join(ids)}' if ids else
              f'there is no dataset under {root_dir}/datasets (awopt collect --run-dir '
              f'{root_dir} writes one)')
    try:
        _parse_id(str(dataset_id))
    except ValueError as exc:
        raise UsageError(id_option, f'{exc}; {listed}') from None
    if str(dataset_id) not in ids:
        raise DatasetNotFoundError(id_option, f'dataset {dataset_id!r} not found under '
                                              f'{root_dir}; {listed}')


def load_episodes(root_dir, dataset_id, root_option='--dataset-root',
                  id_option='--dataset-id', training=True, out=print):
    """Return the dataset's episodes: ``awopt_ros.core.dataset.load_episodes`` (list of dict),
    after :func:`check_dataset` (the options name the arguments in its errors).

    With ``training`` (every caller that feeds a learner: ``awopt train``, ``dagger``,
    ``finetune``'s offline data) the operator's annotations apply
    (``core.annotations.training_episodes``): discarded episodes are left out and labelled
    ones get their label's rewards and flags; when any episode is annotated, ``out`` gets one
    line saying how many were discarded and relabelled.

    Raises:
        awopt_ros.cli_args.UsageError: (a ValueError) malformed id; no such root or dataset
            (then also a FileNotFoundError).
    """
    from awopt_ros.core import annotations, dataset
    check_dataset(root_dir, dataset_id, root_option, id_option)
    episodes = dataset.load_episodes(root_dir, dataset_id)
    if not training:
        return episodes
    kept, stats = annotations.training_episodes(episodes)
    if (stats['discarded'] or stats['labelled']) and out is not None:
        out(f'{dataset_id}: {annotations.summary_line(stats)}')
    return kept


def is_success(episode):
    """Return True when any reward of ``episode`` is > 0."""
    return bool(np.any(np.asarray(episode['rewards']) > 0))


def episode_transitions(episode):
    """Return (images (T,H,W,3) uint8, proprios (T,6) float32, actions (T,7) float32).

    Observation t is paired with action t; the final observation (index T) has no action.

    Raises:
        ValueError: shapes inconsistent with the spec.
    """
    obs = episode.get('observations', episode)   # nested Minari layout or flat dict
    actions = np.asarray(episode['actions'], dtype=np.float32)
    t = actions.shape[0]
    images = np.asarray(obs['image'])
    proprios = np.asarray(obs['proprio'], dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] != spec.ACTION_DIM:
        raise ValueError(f'episode {episode.get("id")}: actions must be (T, {spec.ACTION_DIM}),'
                         f' got {actions.shape}')
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] < t:
        raise ValueError(f'episode {episode.get("id")}: images must be uint8 (T+1, H, W, 3) '
                         f'with T={t}, got {images.dtype} {images.shape}')
    if proprios.shape[0] < t or proprios.shape[1:] != (spec.PROPRIO_DIM,):
        raise ValueError(f'episode {episode.get("id")}: proprio must be (T+1, '
                         f'{spec.PROPRIO_DIM}) with T={t}, got {proprios.shape}')
    return images[:t], proprios[:t], actions


def _bc_kept(episodes, successful_only):
    """The episodes :func:`bc_arrays` takes transitions from, in order."""
    return [ep for ep in episodes if is_success(ep) or not successful_only]


def intervention_flags(episode):
    """Return bool (T,): the transitions of ``episode`` where an operator's command replaced
    the policy's (its ``intervention`` info; all False when it has none)."""
    t = len(episode['actions'])
    flags = np.asarray(episode.get('intervention', np.zeros(0)), dtype=bool).reshape(-1)
    return flags[:t] if flags.shape[0] >= t else np.zeros(t, dtype=bool)


def bc_intervention(episodes, successful_only=True):
    """Return bool (N,): :func:`intervention_flags` of the transitions :func:`bc_arrays`
    returns for the same arguments, in its order (``BCConfig.intervention_weight``)."""
    parts = [intervention_flags(ep) for ep in _bc_kept(episodes, successful_only)]
    return np.concatenate(parts + [np.zeros(0, dtype=bool)])


def bc_arrays(episodes, successful_only=True):
    """Concatenate transitions of ``episodes`` into (images, proprios, actions, stats).

    Args:
        episodes: list of episode dicts (see :func:`load_episodes`).
        successful_only: keep only episodes with any reward > 0 (positive filtering).

    Returns:
        images uint8 (N, H, W, 3), proprios float32 (N, 6), actions float32 (N, 7), and a
        stats dict (episodes, successful, used_episodes, transitions).

    Raises:
        ValueError: no episode left to learn from.
    """
    kept = _bc_kept(episodes, successful_only)
    stats = {'episodes': len(episodes), 'successful': sum(is_success(e) for e in episodes),
             'used_episodes': len(kept)}
    parts = [episode_transitions(ep) for ep in kept]
    parts = [p for p in parts if p[2].shape[0] > 0]
    if not parts:
        raise ValueError(f'no transitions to train on: {stats["episodes"]} episodes, '
                         f'{stats["successful"]} successful')
    images = np.concatenate([p[0] for p in parts])
    proprios = np.concatenate([p[1] for p in parts])
    actions = np.concatenate([p[2] for p in parts])
    stats['transitions'] = int(actions.shape[0])
    return images, proprios, actions, stats


def load_bc_data(root_dir, dataset_id, successful_only=True):
    """Load the dataset (:func:`load_episodes`) and return :func:`bc_arrays` of its
    episodes."""
    return bc_arrays(load_episodes(root_dir, dataset_id), successful_only=successful_only)
