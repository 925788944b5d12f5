"""``awopt plot-episode``: one recorded episode as a PNG for reports (no ROS, no rviz).

From a run directory's Minari dataset (``<run>/datasets/<dataset-id>``, what the logger writes):

- grasp (image task): a strip of policy images (64x64, evenly spaced over the episode, the step
  under each), the continuous actions (dx, dy, dz m; dyaw rad), the discrete bits (open,
  close, terminate), the tool position and gripper closedness, and the success probability of
  the simulator's ground truth and of the success classifier (NaN where none) with the reward;
- insertion (state task): the state (tip minus goal, m; wrench, N / N m), the residual and the
  success probability with the reward.

The x axis is the step; the title gives the episode number, seed, outcome (from the rewards,
terminations and truncations) and the reward source.
"""
from pathlib import Path

import numpy as np

from awopt_ros.cli_args import UsageError, check_outputs, usage_error
from awopt_ros.core import spec

PROG = 'awopt plot-episode'
#: Policy images in the strip above the plots.
STRIP_FRAMES = 8


def find_dataset_ids(run_dir):
    """Return the dataset ids (``namespace/name-vN``) under ``<run_dir>/datasets``, sorted."""
    root = Path(run_dir) / 'datasets'
    return sorted(f'{ns.name}/{d.name}' for ns in root.glob('*') if ns.is_dir()
                  for d in ns.iterdir() if (d / 'data').is_dir())


def outcome_of(episode):
    """Return 'success', 'terminated' or 'truncated' for a loaded episode dict."""
    if len(episode['rewards']) and episode['rewards'][-1] > 0:
        return 'success'
    if len(episode['terminations']) and episode['terminations'][-1]:
        return 'terminated'
    return 'truncated'


def plot_episode(episode, out_path, title=''):
    """Draw ``episode`` (a :func:`awopt_ros.core.dataset.load_episodes` dict) into a PNG.

    Args:
        episode: dict with ``actions`` (T, A), ``rewards`` (T,), ``success_probability``
            (T+1,), and either ``image`` (T+1, S, S, 3) uint8 + ``proprio`` (T+1, 6) (grasp)
            or ``state`` (T+1, D) (insertion).
        out_path: PNG path (parent folders are made).
        title: first line of the figure title.

    Returns:
        Path of the PNG.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    actions = np.asarray(episode['actions'], dtype=np.float64)
    steps = np.arange(len(actions))
    obs_steps = np.arange(len(actions) + 1)
    image_task = 'image' in episode
    rows = 4 if image_task else 3
    fig = plt.figure(figsize=(11, 2.2 * rows + (1.8 if image_task else 0)))
    grid = fig.add_gridspec(rows + (1 if image_task else 0), 1,
                            height_ratios=([1.2] if image_task else []) + [1] * rows)
    axes = [fig.add_subplot(grid[i + (1 if image_task else 0), 0]) for i in range(rows)]
    if image_task:
        images = np.asarray(episode['image'])
        picks = np.unique(np.linspace(0, len(images) - 1, STRIP_FRAMES).round().astype(int))
        strip = fig.add_subplot(grid[0, 0])
        strip.imshow(np.concatenate([images[i] for i in picks], axis=1))
        size = images.shape[2]
        strip.set_xticks([(k + 0.5) * size for k in range(len(picks))],
                         [f'step {i}' for i in picks])
        strip.set_yticks([])
        proprio = np.asarray(episode['proprio'], dtype=np.float64)
        for k, name in enumerate(spec.ACTION_NAMES[spec.CONTINUOUS]):
            axes[0].plot(steps, actions[:, k], label=name)
        axes[0].set_ylabel('action (m, rad)')
        for k, name in zip(range(spec.DISCRETE.start, spec.DISCRETE.stop),
                           spec.ACTION_NAMES[spec.DISCRETE]):
            axes[1].step(steps, actions[:, k] + 0.02 * (k - spec.DISCRETE.start), where='post',
                         label=name)
        axes[1].set_ylabel('discrete bits')
        for k in range(3):
            axes[2].plot(obs_steps, proprio[:, k], label=spec.PROPRIO_NAMES[k])
        axes[2].plot(obs_steps, proprio[:, 5] * 0.1, '--', label='gripper_closed x 0.1')
        axes[2].set_ylabel('tool (m)')
    else:
        state = np.asarray(episode['state'], dtype=np.float64)
        for k in range(min(3, state.shape[1])):
            axes[0].plot(obs_steps, state[:, k] * 1e3, label=f'state[{k}] x 1000')
        axes[0].set_ylabel('tip - goal (mm)')
        for k in range(actions.shape[1]):
            axes[1].plot(steps, actions[:, k], label=f'residual[{k}]')
        axes[1].set_ylabel('residual')
    ax = axes[-1]
    ax.plot(obs_steps, episode['success_probability'], label='ground truth')
    scores = episode.get('success_classifier_probability')
    if scores is not None and np.any(np.isfinite(scores)):
        ax.plot(obs_steps, scores, label='classifier')
    ax.step(steps, episode['rewards'], where='post', label='reward')
    ax.set_ylim(-0.05, 1.1)
    ax.set_ylabel('success')
    ax.set_xlabel('step')
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(loc='upper left', fontsize=7, ncol=4)
        a.set_xlim(0, max(1, len(actions)))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def add_plot_episode_args(parser):
    """Add the ``awopt plot-episode`` options to ``parser``."""
    parser.add_argument('run_dir', metavar='RUN_DIR',
                        help='run directory of the stack (its datasets/ folder)')
    parser.add_argument('--episode', type=int, default=None,
                        help="the episode manager's episode number (default: the last one)")
    parser.add_argument('--dataset-id', default=None,
                        help='dataset under RUN_DIR/datasets (default: the only one there)')
    parser.add_argument('--out', default=None,
                        help='PNG path (default: RUN_DIR/plots/episode_NNNN.png)')
    parser.add_argument('--force', action='store_true', help='replace an existing PNG')


def run_plot_episode(args):
    """``awopt plot-episode``: returns the exit code (2 on bad input)."""
    from awopt_ros.core.dataset import load_episodes
    try:
        run = Path(args.run_dir)
        if not run.is_dir():
            raise UsageError('RUN_DIR', f'no run directory {run}')
        ids = find_dataset_ids(run)
        dataset_id = args.dataset_id
        if dataset_id is None:
            if len(ids) != 1:
                raise UsageError('--dataset-id', f'{run} holds datasets {ids or "none"}: '
                                 'name one')
            dataset_id = ids[0]
        elif dataset_id not in ids:
            raise UsageError('--dataset-id', f'no dataset {dataset_id!r} under {run} '
                             f'(there: {ids or "none"})')
        episodes = load_episodes(run, dataset_id)
        if not episodes:
            raise UsageError('RUN_DIR', f'dataset {dataset_id} of {run} holds no episode')
        numbers = [ep['episode'] for ep in episodes]
        if args.episode is None:
            episode = episodes[-1]
        else:
            matches = [ep for ep in episodes if ep['episode'] == args.episode]
            if not matches:
                raise UsageError('--episode', f'no episode {args.episode} in {dataset_id} '
                                 f'(episodes {min(numbers)}..{max(numbers)})')
            episode = matches[-1]
        number = episode['episode'] if episode['episode'] is not None else episode['id']
        out = Path(args.out or run / 'plots' / f'episode_{int(number):04d}.png')
        check_outputs([('--out', out)], force=args.force)
    except UsageError as exc:
        return usage_error(PROG, exc)
    title = (f'{dataset_id} episode {number}, seed {episode["seed"]}: {outcome_of(episode)} '
             f'after {len(episode["actions"])} steps (reward source '
             f'{episode.get("reward_source", "ground_truth")})')
    path = plot_episode(episode, out, title)
    print(f'{PROG}: wrote {path}')
    return 0
