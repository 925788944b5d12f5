"""DAgger for the grasping actor: the actor drives, the scripted expert labels (in process).

Behaviour cloning learns from the states the expert visits; the learned actor, once slightly
off, reaches states the expert never showed it and its errors compound (Ross, Gordon & Bagnell,
"A Reduction of Imitation Learning and Structured Prediction to No-Regret Online Learning",
AISTATS 2011). DAgger (their Algorithm 3.1) fixes that by data aggregation: in iteration i the
policy ``pi_i = beta_i * expert + (1 - beta_i) * actor_i`` runs episodes, the expert labels
every visited state with the action it would take there, the labelled states join the data set
D, and ``actor_{i+1}`` is trained on all of D.

Here the expert is the privileged scripted policy without its deliberate noise
(:class:`awopt_ros.sim.scripted.ScriptedGraspPolicy` with ``noise_std_m=0`` and
``slip_probability=0``); it reads object poses, so its labels exist only in simulation, and the
episodes run in process (:mod:`awopt_ros.sim.rollout`: same cell, image crop, safety filter and
IK as the ROS stack). The mixture is drawn per step (``beta_i`` is the probability that the
expert's action is executed at a step). D starts from the logged dataset's successful
episodes (their recorded actions as labels), so the result is the logged-data behaviour
cloning actor corrected on its own state distribution.

For an actor with 'target' pooling (``networks.ActorConfig``) the expert also labels the
grasp target of every step before its close (key ``expert_target``: the chosen object's x, y
at the height the expert closes at, base frame), which trains the actor's score map
(:func:`awopt_ros.learning.bc.target_loss`); the logged demonstrations keep their hindsight
labels (:mod:`awopt_ros.learning.targets`).

Every iteration's labelled episodes are saved (``<work_dir>/iter_<i>.npz``) before training,
so an interrupted run loses no collected data and :func:`run_dagger` resumes from the saved
iterations.
"""
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from awopt_ros.core import spec

#: Name of the per-step info key that carries the expert's label, float32 (7,).
EXPERT_KEY = 'expert_action'
#: Per-step info key of the expert's grasp target, float32 (4,): x, y, z (m, base frame) and
#: 1.0 on the steps up to its close (the score-map label applies), else 0.0.
TARGET_KEY = 'expert_target'


@dataclass
class DaggerConfig:
    """DAgger settings.

    Attributes:
        betas: expert share ``beta_i`` of iteration i = 1..len(betas) (probability, per step,
            that the expert's action is executed instead of the actor's); the number of
            entries is the number of iterations.
        episodes_per_iteration: episodes run (and labelled) per iteration.
        first_train_steps: gradient steps of the first training (from scratch, on the logged
            data plus iteration 1's labels; skipped when the run starts from a torch actor).
        train_steps: gradient steps of every later training (warm start from the previous
            actor, on all of D).
        first_seed: scene seed of the first DAgger episode; iteration i uses the next
            ``episodes_per_iteration`` seeds (keep them apart from evaluation seeds).
        eval_episodes: episodes of the final actor alone (no expert) on ``eval_first_seed``..
            after the last iteration; 0 skips it.
        eval_first_seed: first evaluation scene seed.
        processes: rollout worker processes.
        target_rule: the expert's choice of object (``ScriptedGraspPolicy.target_rule``);
            default ``'nearest_tool'``: once the actor heads for an object the expert's labels
            agree with it, while ``'bin_centre'`` keeps asking for one fixed object.
    """

    betas: tuple = (0.5, 0.25, 0.0, 0.0, 0.0, 0.0)
    episodes_per_iteration: int = 200
    first_train_steps: int = 8000
    train_steps: int = 3000
    first_seed: int = 200001
    eval_episodes: int = 50
    eval_first_seed: int = 5001
    processes: int = 2
    target_rule: str = 'nearest_tool'

    def __post_init__(self):
        from awopt_ros.sim.scripted import ScriptedGraspPolicy
        if self.target_rule not in ScriptedGraspPolicy.TARGET_RULES:
            raise ValueError(f'DaggerConfig.target_rule must be one of '
                             f'{ScriptedGraspPolicy.TARGET_RULES}, got {self.target_rule!r}')
        self.betas = tuple(float(b) for b in self.betas)
        if not self.betas:
            raise ValueError('DaggerConfig.betas needs at least one iteration')
        if any(not 0.0 <= b <= 1.0 for b in self.betas):
            raise ValueError(f'DaggerConfig.betas must lie in [0, 1], got {self.betas}')
        for name in ('episodes_per_iteration', 'first_train_steps', 'train_steps',
                     'processes'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'DaggerConfig.{name} must be >= 1, got '
                                 f'{getattr(self, name)!r}')
        if int(self.eval_episodes) < 0:
            raise ValueError(f'DaggerConfig.eval_episodes must be >= 0, got '
                             f'{self.eval_episodes!r}')

    def iteration_seeds(self, i):
        """Scene seeds of iteration ``i`` (1-based), a list of ints."""
        start = int(self.first_seed) + (i - 1) * int(self.episodes_per_iteration)
        return list(range(start, start + int(self.episodes_per_iteration)))

    def to_dict(self):
        """Return the settings as a JSON-friendly dict."""
        d = asdict(self)
        d['betas'] = list(self.betas)
        return d


class DaggerPolicy:
    """Rollout policy of one DAgger iteration: per step, the expert's or the actor's action.

    Args:
        actor_path: ONNX actor (``core.onnx_policy.OnnxActor``); None runs the expert only.
        beta: probability per step of executing the expert's action.
        seed_offset: mixed with the episode seed into the per-step coin's seed, so an
            episode's coin flips depend on (scene seed, offset) only.
        target_rule: the expert's ``ScriptedGraspPolicy.target_rule``.

    ``act`` returns ``(action, {'expert_action': label, 'expert_target': target, 'policy':
    'scripted'|'actor'})``; the label is the noise-free scripted policy's action in the visited
    state (it reads the observation's privileged object poses), ``target`` its grasp target
    (see ``TARGET_KEY``).
    """

    name = 'actor'

    def __init__(self, actor_path=None, beta=0.0, seed_offset=0, target_rule='nearest_tool'):
        from awopt_ros.core.onnx_policy import OnnxActor
        from awopt_ros.sim.scripted import ScriptedGraspPolicy
        self.actor = OnnxActor(actor_path) if actor_path else None
        self.beta = 1.0 if self.actor is None else float(beta)
        self.seed_offset = int(seed_offset)
        self.expert = ScriptedGraspPolicy(seed=0, noise_std_m=0.0, slip_probability=0.0,
                                          target_rule=target_rule)
        self.rng = np.random.default_rng(0)

    def begin_episode(self, seed):
        """Seed the per-step coin from (scene ``seed``, ``seed_offset``)."""
        self.rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, self.seed_offset])

    def reset(self):
        """Start a new episode (the expert forgets its target and phase)."""
        self.expert.reset()

    def act(self, obs):
        """Return (float32 (7,) executed action, info with the expert's label)."""
        label = self.expert.act(obs['proprio'], obs['object_poses'], obs['object_extents'])
        info = {EXPERT_KEY: label, TARGET_KEY: self._target(obs['object_poses'])}
        if self.actor is None or self.rng.uniform() < self.beta:
            return label, dict(info, policy='scripted')
        action = self.actor.act(obs['image'], obs['proprio'])
        return action, dict(info, policy='actor')

    def _target(self, object_poses):
        """The expert's grasp target after its last ``act``: float32 (4,), see TARGET_KEY."""
        from awopt_ros.sim.scripted import grasp_height
        e = self.expert
        obj = np.asarray(object_poses, dtype=np.float64).reshape(-1, 7)[e.target]
        before_close = e.phase in ('approach', 'descend') or (e.phase == 'close'
                                                              and e.close_steps <= 1)
        return np.array([obj[0], obj[1], grasp_height(obj[2]), float(before_close)],
                        dtype=np.float32)


@dataclass
class DaggerFactory:
    """Picklable ``make_policy`` for :func:`awopt_ros.sim.rollout.collect`."""

    actor_path: str = None
    beta: float = 0.0
    seed_offset: int = 0
    target_rule: str = 'nearest_tool'

    def __call__(self, worker_index):
        return DaggerPolicy(self.actor_path, self.beta, self.seed_offset, self.target_rule)


def _step_infos(episode, key, what):
    """Return ``episode['infos'][key]`` of its T steps, float32 (T, ...); ValueError if absent."""
    values = episode['infos'].get(key)
    if values is None or isinstance(values, list):
        raise ValueError(f'episode with seed {episode.get("seed")} has no {what} '
                         f'(infos[{key!r}])')
    return np.asarray(values, dtype=np.float32)[:len(episode['actions'])]


def labelled_transitions(episodes):
    """Return (images uint8 (N, S, S, 3), proprios float32 (N, 6), labels float32 (N, 7)).

    Every step of every episode (successful or not) with the expert's label from
    ``infos['expert_action']`` (the last info entry repeats the last step's and is dropped).

    Raises:
        ValueError: an episode has no expert labels.
    """
    imgs, pros, labels = [], [], []
    for ep in episodes:
        t = len(ep['actions'])
        imgs.append(ep['observations']['image'][:t])
        pros.append(ep['observations']['proprio'][:t])
        labels.append(_step_infos(ep, EXPERT_KEY, 'expert labels'))
    if not imgs:
        return (np.zeros((0, 0, 0, 3), np.uint8), np.zeros((0, spec.PROPRIO_DIM), np.float32),
                np.zeros((0, spec.ACTION_DIM), np.float32))
    return np.concatenate(imgs), np.concatenate(pros), np.concatenate(labels)


def labelled_targets(episodes):
    """Return the expert's grasp targets of :func:`labelled_transitions`' rows.

    Returns:
        (xyz float32 (N, 3) in m, base frame; mask bool (N,): steps up to the expert's
        close), from ``infos['expert_target']``.

    Raises:
        ValueError: an episode has no target labels.
    """
    xyz, mask = [], []
    for ep in episodes:
        lab = _step_infos(ep, TARGET_KEY, 'target labels')
        xyz.append(lab[:, :3])
        mask.append(lab[:, 3] > 0.5)
    if not xyz:
        return np.zeros((0, 3), np.float32), np.zeros(0, bool)
    return np.concatenate(xyz), np.concatenate(mask)


def _save_iteration(path, episodes, images, proprios, labels, stats, targets):
    tmp = path.with_name(path.name + '.tmp.npz')
    np.savez_compressed(tmp, images=images, proprios=proprios, labels=labels,
                        target_xyz=targets[0], target_mask=targets[1],
                        stats=json.dumps(stats))
    tmp.replace(path)


def _load_iteration(path):
    """Return (images, proprios, labels, stats, targets or None for older files)."""
    with np.load(path) as z:
        targets = (z['target_xyz'], z['target_mask']) if 'target_xyz' in z.files else None
        return (z['images'], z['proprios'], z['labels'], json.loads(str(z['stats'])),
                targets)


def iteration_stats(episodes, beta):
    """Return a JSON-friendly summary of one iteration's episodes."""
    expert_steps = sum(int(np.sum(np.asarray(ep['infos']['policy_name'][:-1]) == 'scripted'))
                       for ep in episodes)
    steps = sum(int(ep['steps']) for ep in episodes)
    return {'beta': beta, 'episodes': len(episodes), 'steps': steps,
            'expert_step_share': expert_steps / max(steps, 1),
            'successes': int(sum(ep['success'] for ep in episodes)),
            'success_rate': (sum(ep['success'] for ep in episodes) / len(episodes)
                             if episodes else math.nan),
            'outcomes': {k: int(sum(ep['outcome'] == k for ep in episodes))
                         for k in ('success', 'terminate', 'timeout')}}


def run_dagger(base, config, bc_config, work_dir, init_actor_path=None, export=None,
               log=print, progress=True, rollout_config=None, base_targets=None,
               camera=None):
    """Run DAgger; return (torch actor, summary dict).

    Args:
        base: (images uint8 (N, S, S, 3), proprios float32 (N, 6), actions float32 (N, 7)):
            the logged demonstrations D starts from (may hold N = 0 rows).
        config: :class:`DaggerConfig`.
        bc_config: :class:`awopt_ros.learning.bc.BCConfig` of every training (its ``steps``
            is replaced by the config's first/later step counts).
        work_dir: directory for ``iter_<i>.npz`` (labelled episodes), ``actor_<i>.onnx`` and
            ``summary.json``; existing ``iter_<i>.npz`` files are reused (resume).
        init_actor_path: ONNX actor that drives iteration 1 (None: the expert alone).
        export: callable(actor, path) writing an ONNX actor (the rollout workers load it).
        log: callable(str) for progress lines.
        progress: tqdm bars for rollouts and training.
        rollout_config: :class:`awopt_ros.sim.rollout.RolloutConfig` (default: the stack's).
        base_targets: ('target' pooling only) grasp-target labels of ``base``'s rows,
            (xy float32 (N, 2) in policy-image coordinates, mask bool (N,)), e.g.
            :func:`awopt_ros.learning.targets.target_arrays`.
        camera: ('target' pooling only) :class:`awopt_ros.core.camera.PinholeCamera` that
            projects the expert's targets with ``rollout_config.crop_xywh`` (default: the
            simulated shoulder camera).

    Raises:
        ValueError: bad arrays (see ``train_bc``), an image size that differs from the
            rollout's, or 'target' pooling without ``base_targets`` or with an iteration
            file saved without target labels.
    """
    from dataclasses import replace

    from awopt_ros.learning.bc import train_bc
    from awopt_ros.sim.rollout import RolloutConfig, collect
    rollout_config = rollout_config or RolloutConfig()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    images, proprios, actions = (np.asarray(a) for a in base)
    if images.shape[0] and images.shape[1] != rollout_config.image_size:
        raise ValueError(f'logged images are {images.shape[1]} px, the rollout renders '
                         f'{rollout_config.image_size} px')
    data = [(images, proprios, actions)]
    with_targets = bc_config.actor.pooling == 'target'
    if with_targets:
        if base_targets is None:
            raise ValueError("'target' pooling needs base_targets for the logged data")
        if camera is None:
            from awopt_ros.sim.scene import shoulder_camera
            camera = shoulder_camera(*spec.SOURCE_SIZE)
        targets = [tuple(np.asarray(a) for a in base_targets)]
    actor, actor_path = None, init_actor_path
    summary = {'config': config.to_dict(), 'bc_config': bc_config.to_dict(),
               'base_transitions': int(images.shape[0]), 'iterations': []}
    t_start = time.perf_counter()
    for i, beta in enumerate(config.betas, start=1):
        path = work / f'iter_{i}.npz'
        if path.exists():
            imgs, pros, labels, stats, iter_targets = _load_iteration(path)
            log(f'iteration {i}: reusing {path} ({stats["episodes"]} episodes)')
            if with_targets and iter_targets is None:
                raise ValueError(f'{path} has no target labels (saved by an older version); '
                                 'remove it to collect the iteration again')
        else:
            t0 = time.perf_counter()
            episodes = collect(config.iteration_seeds(i),
                               DaggerFactory(actor_path, beta, seed_offset=i,
                                             target_rule=config.target_rule),
                               rollout_config, processes=config.processes, progress=progress)
            imgs, pros, labels = labelled_transitions(episodes)
            iter_targets = labelled_targets(episodes)
            stats = iteration_stats(episodes, beta)
            stats['rollout_s'] = round(time.perf_counter() - t0, 1)
            stats['actor'] = str(actor_path) if actor_path else None
            _save_iteration(path, episodes, imgs, pros, labels, stats, iter_targets)
            del episodes
        log(f'iteration {i}: beta {beta:.2f}, {stats["episodes"]} episodes, success '
            f'{stats["successes"]}/{stats["episodes"]}, outcomes {stats["outcomes"]}, '
            f'{len(labels)} labelled steps')
        data.append((imgs, pros, labels))
        all_imgs = np.concatenate([d[0] for d in data if len(d[0])])
        all_pros = np.concatenate([d[1] for d in data if len(d[1])])
        all_acts = np.concatenate([d[2] for d in data if len(d[2])])
        all_targets = None
        if with_targets:
            xy = (camera.to_policy_image(iter_targets[0], rollout_config.crop_xywh)
                  if len(iter_targets[0]) else np.zeros((0, 2), np.float32))
            targets.append((xy, np.asarray(iter_targets[1], dtype=bool)))
            kept = [t for d, t in zip(data, targets) if len(d[0])]
            all_targets = (np.concatenate([t[0] for t in kept]),
                           np.concatenate([t[1] for t in kept]))
        steps = config.first_train_steps if actor is None else config.train_steps
        t0 = time.perf_counter()
        actor, history = train_bc(all_imgs, all_pros, all_acts,
                                  replace(bc_config, steps=steps, seed=bc_config.seed + i),
                                  progress=progress, actor=actor, targets=all_targets)
        stats['train_s'] = round(time.perf_counter() - t0, 1)
        stats['train_steps'] = steps
        stats['dataset_transitions'] = int(all_acts.shape[0])
        stats['heldout_loss'] = history['heldout_loss'][-1]
        del all_imgs, all_pros, all_acts, all_targets
        actor_path = work / f'actor_{i}.onnx'
        export(actor, actor_path)
        log(f'iteration {i}: trained {steps} steps on {stats["dataset_transitions"]} '
            f'transitions in {stats["train_s"]:.0f} s, held-out loss '
            f'{stats["heldout_loss"]:.3f}; exported {actor_path}')
        summary['iterations'].append(stats)
        _write_json(work / 'summary.json', summary)
    if config.eval_episodes:
        seeds = range(config.eval_first_seed, config.eval_first_seed + config.eval_episodes)
        episodes = collect(seeds, DaggerFactory(actor_path, 0.0, seed_offset=0,
                                                target_rule=config.target_rule),
                           rollout_config, processes=config.processes,
                           progress=progress, record=False)
        ev = {'seeds': [config.eval_first_seed, config.eval_first_seed + config.eval_episodes
                        - 1],
              'successes': int(sum(ep['success'] for ep in episodes)),
              'episodes': len(episodes),
              'outcomes': {k: int(sum(ep['outcome'] == k for ep in episodes))
                           for k in ('success', 'terminate', 'timeout')}}
        summary['evaluation'] = ev
        log(f'evaluation (actor alone, in process): {ev["successes"]}/{ev["episodes"]}, '
            f'outcomes {ev["outcomes"]}')
    summary['total_s'] = round(time.perf_counter() - t_start, 1)
    _write_json(work / 'summary.json', summary)
    return actor, summary


def _write_json(path, data):
    tmp = Path(str(path) + '.tmp')
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(path)


# -- command line (``awopt dagger``) -------------------------------------------------------------

#: File name of the final actor in ``--work-dir`` unless ``--out`` says otherwise.
DEFAULT_OUT_NAME = 'grasp_dagger.onnx'
PROG = 'awopt dagger'


def add_dagger_args(parser):
    """Add the ``awopt dagger`` options to ``parser`` (an ``argparse.ArgumentParser``)."""
    from awopt_ros.cli_args import nonnegative_int, positive_int, probability
    d = DaggerConfig()
    parser.add_argument('--dataset-root', required=True,
                        help='run directory holding datasets/ (the logged demonstrations)')
    parser.add_argument('--dataset-id', required=True,
                        help='Minari dataset id, e.g. awopt/kuka-grasp-v0; its successful '
                             'episodes start the aggregated data set')
    parser.add_argument('--init', default=None,
                        help='ONNX actor that drives iteration 1 (e.g. the BC model); '
                             'default: the expert alone')
    parser.add_argument('--out', default=None,
                        help='final ONNX actor path; its iteration plot and summary JSON go '
                             f'beside it (default <work dir>/{DEFAULT_OUT_NAME})')
    parser.add_argument('--force', action='store_true',
                        help='overwrite the final actor, plot and summary if they exist')
    parser.add_argument('--work-dir', default='runs/dagger',
                        help='labelled episodes per iteration, per-iteration actors, '
                             'summary.json (an existing iter_<i>.npz is reused)')
    parser.add_argument('--betas', type=probability, nargs='+', default=list(d.betas),
                        help='expert share per step of each iteration (one value per '
                             'iteration)')
    parser.add_argument('--episodes-per-iteration', type=positive_int,
                        default=d.episodes_per_iteration,
                        help='in-process episodes run and labelled per iteration')
    parser.add_argument('--first-train-steps', type=positive_int, default=d.first_train_steps,
                        help='gradient steps of the first training (from scratch)')
    parser.add_argument('--train-steps', type=positive_int, default=d.train_steps,
                        help='gradient steps of each later training (warm start)')
    parser.add_argument('--first-seed', type=nonnegative_int, default=d.first_seed,
                        help='scene seed of the first DAgger episode')
    parser.add_argument('--eval-episodes', type=nonnegative_int, default=d.eval_episodes,
                        help='in-process episodes of the final actor alone (0: none)')
    parser.add_argument('--eval-first-seed', type=nonnegative_int, default=d.eval_first_seed,
                        help='scene seed of the first evaluation episode')
    parser.add_argument('--target-rule', choices=('nearest_tool', 'bin_centre'),
                        default=d.target_rule, help="the expert's choice of object")
    parser.add_argument('--processes', type=positive_int, default=d.processes,
                        help='rollout worker processes')
    parser.add_argument('--batch-size', type=positive_int, default=64,
                        help='transitions per gradient step')
    parser.add_argument('--lr', type=float, default=1e-3, help='Adam learning rate')
    parser.add_argument('--shift-px', type=nonnegative_int, default=0,
                        help='random-shift augmentation (px); default 0: with the fixed '
                             "camera an object's pixel position is its place in the bin, and "
                             "a 4 px shift left the actor fitting only R^2 0.34 of the expert's "
                             'x/y commands (0.84 without)')
    parser.add_argument('--seed', type=int, default=0, help='training seed')
    parser.add_argument('--pooling', default='flatten',
                        choices=('flatten', 'spatial_softmax', 'target'),   # networks.POOLINGS
                        help="the actor's pooling; 'target': a grasp-target score map, "
                             'labelled by hindsight grasp points on the logged data and by '
                             "the expert's target on DAgger states")
    parser.add_argument('--num-conv', type=positive_int, default=4, help='actor conv layers')
    parser.add_argument('--no-progress', action='store_true', help='no tqdm progress bars')
    return parser


def plot_dagger(summary, png_path):
    """Plot success rate of each iteration's episodes (with its beta) and held-out loss."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    its = summary['iterations']
    x = np.arange(1, len(its) + 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(x, [100 * s['success_rate'] for s in its], 'o-', label='iteration episodes')
    for xi, s in zip(x, its):
        a1.annotate(f'beta {s["beta"]:.2f}', (xi, 100 * s['success_rate']),
                    textcoords='offset points', xytext=(0, 6), ha='center', fontsize=8)
    ev = summary.get('evaluation')
    if ev:
        a1.axhline(100 * ev['successes'] / max(ev['episodes'], 1), color='k', ls='--',
                   label=f'final actor alone ({ev["episodes"]} eval episodes)')
    a1.set_xlabel('DAgger iteration')
    a1.set_ylabel('success (%)')
    a1.set_ylim(0, 105)
    a1.legend(fontsize=8, loc='lower right')
    a2.plot(x, [s['heldout_loss'] for s in its], 's-')
    a2.set_xlabel('DAgger iteration')
    a2.set_ylabel('held-out BC loss (after training)')
    fig.suptitle('DAgger: actor drives, noise-free scripted expert labels')
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def run_dagger_cli(args):
    """``awopt dagger``: run :func:`run_dagger` from the parsed ``args``; return the exit code
    (0 ok, 2 bad input: one line naming the option).

    Without ``--out`` the final actor goes to ``<work dir>/grasp_dagger.onnx``; an existing
    final actor, plot or summary is not overwritten without ``--force`` (exit 2 before any
    work), and neither is a shipped file of ``models/``.
    """
    from awopt_ros.cli_args import UsageError, check_outputs, require_file, usage_error
    from awopt_ros.learning.bc import BCConfig
    from awopt_ros.learning.data import bc_arrays, load_episodes
    from awopt_ros.learning.export import export_actor
    from awopt_ros.learning.networks import ActorConfig
    from awopt_ros.learning.targets import target_arrays
    from awopt_ros.learning.train_cli import DEFAULT_CROP, atomic_write
    from awopt_ros.sim.scene import shoulder_camera
    if args.out is None:
        args.out = str(Path(args.work_dir) / DEFAULT_OUT_NAME)
    out = Path(args.out)
    try:
        check_outputs([('--out', out), ('--out', out.with_name(out.stem + '_iterations.png')),
                       ('--out', out.with_name(out.stem + '_summary.json'))],
                      force=args.force)
        if args.init is not None:
            require_file('--init', args.init, 'ONNX actor')
    except UsageError as exc:
        return usage_error(PROG, exc)
    try:
        config = DaggerConfig(betas=tuple(args.betas),
                              episodes_per_iteration=args.episodes_per_iteration,
                              first_train_steps=args.first_train_steps,
                              train_steps=args.train_steps, first_seed=args.first_seed,
                              eval_episodes=args.eval_episodes,
                              eval_first_seed=args.eval_first_seed, processes=args.processes,
                              target_rule=args.target_rule)
    except ValueError as exc:
        return usage_error(PROG, exc)
    try:
        episodes = load_episodes(args.dataset_root, args.dataset_id)
    except UsageError as exc:
        return usage_error(PROG, exc)
    try:
        images, proprios, actions, stats = bc_arrays(episodes)
        base_targets = (target_arrays(episodes, shoulder_camera(*spec.SOURCE_SIZE),
                                      DEFAULT_CROP) if args.pooling == 'target' else None)
        del episodes
        bc = BCConfig(batch_size=args.batch_size, lr=args.lr, shift_px=args.shift_px,
                      seed=args.seed, eval_every=500,
                      actor=ActorConfig(image_size=images.shape[1], pooling=args.pooling,
                                        num_conv=args.num_conv))
    except (FileNotFoundError, ValueError) as exc:
        return usage_error(PROG, UsageError('--dataset-id', exc))
    print(f'dataset {args.dataset_id}: {stats["episodes"]} episodes, {stats["successful"]} '
          f'successful, {stats["transitions"]} transitions start the data set')

    def export(actor, path):
        export_actor(actor, path, DEFAULT_CROP, dataset=args.dataset_id, algorithm='bc-dagger',
                     model_card='per-iteration DAgger actor')
    actor, summary = run_dagger((images, proprios, actions), config, bc, args.work_dir,
                                init_actor_path=args.init, export=export,
                                progress=not args.no_progress, base_targets=base_targets)
    its = summary['iterations']
    card = (f'awopt_ros grasping actor: behaviour cloning (AW-Opt actor loss, task-1 weights) '
            f'(actor pooling {args.pooling!r}, {args.num_conv} convs) '
            f'on the successful episodes of {args.dataset_id} ({stats["transitions"]} '
            f'transitions), then DAgger (Ross et al. 2011) for {len(its)} iterations of '
            f'{config.episodes_per_iteration} in-process episodes labelled by the noise-free '
            f'scripted expert (target rule {config.target_rule}, betas {list(config.betas)}), '
            f'{its[-1]["dataset_transitions"]} transitions in the end. Inputs image uint8 '
            f'(N,{images.shape[1]},{images.shape[1]},3) cropped {list(DEFAULT_CROP)} from '
            f'640x480, proprio float32 (N,6) {list(spec.PROPRIO_NAMES)}; output action float32 '
            f'(N,7) {list(spec.ACTION_NAMES)}. Simulation only.')
    atomic_write(out, lambda tmp: export_actor(actor, tmp, DEFAULT_CROP,
                                               dataset=args.dataset_id,
                                               algorithm='bc-dagger', model_card=card))
    png = out.with_name(out.stem + '_iterations.png')
    plot_dagger(summary, png)
    summary.update({'model': str(out), 'plot': str(png), 'dataset_root': str(args.dataset_root),
                    'dataset_id': args.dataset_id, 'init': args.init, 'data': stats})
    summary_path = out.with_name(out.stem + '_summary.json')
    _write_json(summary_path, summary)
    print(f'wrote {out}, {png}, {summary_path}')
    return 0
