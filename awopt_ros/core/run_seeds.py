"""Scene seeds of a run folder, so that collecting into it again continues with new scenes.

The simulator's k-th reset uses scene seed ``base + k`` (``sim_robot`` ``seed`` = ``base``),
so two ``awopt collect`` runs with the same base seed into one run folder would record the
same scenes twice. :func:`used_seeds` reads the seeds already recorded there (each Minari
dataset's episode metadata, and the ``seeds`` of the folder's ``report.json``);
:func:`continue_seed` picks the base seed of the next run: the one asked for when its scenes
are all new, else the largest seed used, so the next run starts right after it.

No rclpy here.
"""
import json
from pathlib import Path

from awopt_ros.core.dataset import datasets_dir


def _dataset_seeds(data_dir):
    """Seeds (list of int) in one Minari dataset's episode metadata."""
    from minari import MinariDataset
    dataset = MinariDataset(data_dir)
    indices = list(dataset.episode_indices)
    return [int(m['seed']) for m in dataset.storage.get_episode_metadata(indices)
            if m.get('seed') is not None]


def used_seeds(run_dir):
    """Return the sorted list of distinct scene seeds already recorded under ``run_dir``.

    Sources: every Minari dataset under ``<run_dir>/datasets`` (``<namespace>/<name>/data``),
    and the ``seeds`` list of ``<run_dir>/report.json`` (a run whose episodes the dataset
    lacks, e.g. a failed append). A folder that does not exist holds none.

    Raises:
        ValueError: a dataset or the report exists but cannot be read (the message names it):
            continuing blindly could repeat its scenes.
    """
    run_dir = Path(run_dir)
    seeds = set()
    root = datasets_dir(run_dir)
    for data_dir in sorted(root.glob('*/*/data')) if root.is_dir() else []:
        try:
            seeds.update(_dataset_seeds(data_dir))
        except Exception as exc:  # noqa: BLE001 - minari/h5py raise many kinds
            raise ValueError(f'cannot read the scene seeds of dataset {data_dir}: {exc}') \
                from None
    report = run_dir / 'report.json'
    if report.is_file():
        try:
            seeds.update(int(s) for s in json.loads(report.read_text()).get('seeds', [])
                         if s is not None)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f'cannot read the seeds of {report}: {exc}') from None
    return sorted(seeds)


def continue_seed(used, base_seed, episodes):
    """Return ``(base, note)``: the simulator base seed for ``episodes`` new episodes.

    Args:
        used: seeds already recorded (:func:`used_seeds`).
        base_seed: the base seed asked for (int); its episodes would use ``base_seed + 1``
            ... ``base_seed + episodes``.
        episodes: number of episodes to run (>= 1).

    Returns:
        ``(base_seed, None)`` when none of those seeds is used yet, else
        ``(max(used), note)``: the run continues after the last seed used, and ``note``
        (str) says so.
    """
    wanted = range(int(base_seed) + 1, int(base_seed) + int(episodes) + 1)
    clash = [s for s in used if s in wanted]
    if not clash:
        return int(base_seed), None
    base = max(used)
    return base, (f'{len(used)} scene seeds ({used[0]}..{used[-1]}) are already recorded '
                  f'here; seeds {wanted.start}..{wanted.stop - 1} would repeat {len(clash)} of '
                  f'them: continuing with seeds {base + 1}..{base + episodes}')


def config_seed(config_path, overrides=None):
    """Return the simulator base seed a stack would use: ``overrides['sim_robot']['seed']``
    (``--set sim_robot:seed=N``) or else the params file's ``sim_robot`` ``seed`` (0 when
    absent)."""
    import yaml
    from awopt_ros.core.paths import resolve
    seed = ((overrides or {}).get('sim_robot') or {}).get('seed')
    if seed is None:
        params = yaml.safe_load(resolve(config_path).read_text()) or {}
        seed = ((params.get('sim_robot') or {}).get('ros__parameters') or {}).get('seed', 0)
    return int(seed)
