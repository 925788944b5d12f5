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

from awopt_ros.core import spec


def load_episodes(root_dir, dataset_id):
    """Return the dataset's episodes: ``awopt_ros.core.dataset.load_episodes`` (list of dict).

    Raises:
        FileNotFoundError: the dataset does not exist.
        ValueError: malformed ``dataset_id``.
    """
    from awopt_ros.core import dataset
    return dataset.load_episodes(root_dir, dataset_id)


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
    kept = [ep for ep in episodes if is_success(ep) or not successful_only]
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
    """Load the dataset and return :func:`bc_arrays` of its episodes."""
    return bc_arrays(load_episodes(root_dir, dataset_id), successful_only=successful_only)
