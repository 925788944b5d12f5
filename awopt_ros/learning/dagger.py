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

    ``act`` returns ``(action, {'expert_action': label, 'policy': 'scripted'|'actor'})``; the
    label is the noise-free scripted policy's action in the visited state (it reads the
    observation's privileged object poses).
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
        if self.actor is None or self.rng.uniform() < self.beta:
            return label, {EXPERT_KEY: label, 'policy': 'scripted'}
        action = self.actor.act(obs['image'], obs['proprio'])
        return action, {EXPERT_KEY: label, 'policy': 'actor'}


@dataclass
class DaggerFactory:
    """Picklable ``make_policy`` for :func:`awopt_ros.sim.rollout.collect`."""

    actor_path: str = None
    beta: float = 0.0
    seed_offset: int = 0
    target_rule: str = 'nearest_tool'

    def __call__(self, worker_index):
        return DaggerPolicy(self.actor_path, self.beta, self.seed_offset, self.target_rule)


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
        lab = ep['infos'].get(EXPERT_KEY)
        if lab is None or isinstance(lab, list):
            raise ValueError(f'episode with seed {ep.get("seed")} has no expert labels '
                             f'(infos[{EXPERT_KEY!r}])')
        imgs.append(ep['observations']['image'][:t])
        pros.append(ep['observations']['proprio'][:t])
        labels.append(np.asarray(lab, dtype=np.float32)[:t])
    if not imgs:
        return (np.zeros((0, 0, 0, 3), np.uint8), np.zeros((0, spec.PROPRIO_DIM), np.float32),
                np.zeros((0, spec.ACTION_DIM), np.float32))
    return np.concatenate(imgs), np.concatenate(pros), np.concatenate(labels)


def _save_iteration(path, episodes, images, proprios, labels, stats):
    tmp = path.with_name(path.name + '.tmp.npz')
    np.savez_compressed(tmp, images=images, proprios=proprios, labels=labels,
                        stats=json.dumps(stats))
    tmp.replace(path)


def _load_iteration(path):
    with np.load(path) as z:
        return z['images'], z['proprios'], z['labels'], json.loads(str(z['stats']))


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
               log=print, progress=True, rollout_config=None):
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

    Raises:
        ValueError: bad arrays (see ``train_bc``) or an image size that differs from the
            rollout's.
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
    actor, actor_path = None, init_actor_path
    summary = {'config': config.to_dict(), 'bc_config': bc_config.to_dict(),
               'base_transitions': int(images.shape[0]), 'iterations': []}
    t_start = time.perf_counter()
    for i, beta in enumerate(config.betas, start=1):
        path = work / f'iter_{i}.npz'
        if path.exists():
            imgs, pros, labels, stats = _load_iteration(path)
            log(f'iteration {i}: reusing {path} ({stats["episodes"]} episodes)')
        else:
            t0 = time.perf_counter()
            episodes = collect(config.iteration_seeds(i),
                               DaggerFactory(actor_path, beta, seed_offset=i,
                                             target_rule=config.target_rule),
                               rollout_config, processes=config.processes, progress=progress)
            imgs, pros, labels = labelled_transitions(episodes)
            stats = iteration_stats(episodes, beta)
            stats['rollout_s'] = round(time.perf_counter() - t0, 1)
            stats['actor'] = str(actor_path) if actor_path else None
            _save_iteration(path, episodes, imgs, pros, labels, stats)
            del episodes
        log(f'iteration {i}: beta {beta:.2f}, {stats["episodes"]} episodes, success '
            f'{stats["successes"]}/{stats["episodes"]}, outcomes {stats["outcomes"]}, '
            f'{len(labels)} labelled steps')
        data.append((imgs, pros, labels))
        all_imgs = np.concatenate([d[0] for d in data if len(d[0])])
        all_pros = np.concatenate([d[1] for d in data if len(d[1])])
        all_acts = np.concatenate([d[2] for d in data if len(d[2])])
        steps = config.first_train_steps if actor is None else config.train_steps
        t0 = time.perf_counter()
        actor, history = train_bc(all_imgs, all_pros, all_acts,
                                  replace(bc_config, steps=steps, seed=bc_config.seed + i),
                                  progress=progress, actor=actor)
        stats['train_s'] = round(time.perf_counter() - t0, 1)
        stats['train_steps'] = steps
        stats['dataset_transitions'] = int(all_acts.shape[0])
        stats['heldout_loss'] = history['heldout_loss'][-1]
        del all_imgs, all_pros, all_acts
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

DEFAULT_OUT = 'models/grasp_dagger.onnx'


def add_dagger_args(parser):
    """Add the ``awopt dagger`` options to ``parser`` (an ``argparse.ArgumentParser``)."""
    d = DaggerConfig()
    parser.add_argument('--dataset-root', required=True,
                        help='run directory holding datasets/ (the logged demonstrations)')
    parser.add_argument('--dataset-id', required=True,
                        help='Minari dataset id, e.g. awopt/kuka-grasp-v0; its successful '
                             'episodes start the aggregated data set')
    parser.add_argument('--init', default=None,
                        help='ONNX actor that drives iteration 1 (e.g. the BC model); '
                             'default: the expert alone')
    parser.add_argument('--out', default=DEFAULT_OUT, help='final ONNX actor path')
    parser.add_argument('--work-dir', default='runs/dagger',
                        help='labelled episodes per iteration, per-iteration actors, '
                             'summary.json (an existing iter_<i>.npz is reused)')
    parser.add_argument('--betas', type=float, nargs='+', default=list(d.betas),
                        help='expert share per step of each iteration (one value per '
                             'iteration)')
    parser.add_argument('--episodes-per-iteration', type=int, default=d.episodes_per_iteration)
    parser.add_argument('--first-train-steps', type=int, default=d.first_train_steps,
                        help='gradient steps of the first training (from scratch)')
    parser.add_argument('--train-steps', type=int, default=d.train_steps,
                        help='gradient steps of each later training (warm start)')
    parser.add_argument('--first-seed', type=int, default=d.first_seed,
                        help='scene seed of the first DAgger episode')
    parser.add_argument('--eval-episodes', type=int, default=d.eval_episodes,
                        help='in-process episodes of the final actor alone (0: none)')
    parser.add_argument('--eval-first-seed', type=int, default=d.eval_first_seed)
    parser.add_argument('--target-rule', choices=('nearest_tool', 'bin_centre'),
                        default=d.target_rule, help="the expert's choice of object")
    parser.add_argument('--processes', type=int, default=d.processes,
                        help='rollout worker processes')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=1e-3, help='Adam learning rate')
    parser.add_argument('--shift-px', type=int, default=0,
                        help='random-shift augmentation (px); default 0: with the fixed '
                             "camera an object's pixel position is its place in the bin, and "
                             "a 4 px shift left the actor fitting only R^2 0.34 of the expert's "
                             'x/y commands (0.84 without)')
    parser.add_argument('--seed', type=int, default=0, help='training seed')
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
    """``awopt dagger``: run :func:`run_dagger` from the parsed ``args``; return exit code."""
    import sys

    from awopt_ros.learning.bc import BCConfig
    from awopt_ros.learning.data import load_bc_data
    from awopt_ros.learning.export import export_actor
    from awopt_ros.learning.networks import ActorConfig
    from awopt_ros.learning.train_cli import DEFAULT_CROP, atomic_write
    try:
        config = DaggerConfig(betas=tuple(args.betas),
                              episodes_per_iteration=args.episodes_per_iteration,
                              first_train_steps=args.first_train_steps,
                              train_steps=args.train_steps, first_seed=args.first_seed,
                              eval_episodes=args.eval_episodes,
                              eval_first_seed=args.eval_first_seed, processes=args.processes,
                              target_rule=args.target_rule)
        images, proprios, actions, stats = load_bc_data(args.dataset_root, args.dataset_id)
        bc = BCConfig(batch_size=args.batch_size, lr=args.lr, shift_px=args.shift_px,
                      seed=args.seed, eval_every=500,
                      actor=ActorConfig(image_size=images.shape[1]))
    except (FileNotFoundError, ValueError) as exc:
        print(f'awopt dagger: {exc}', file=sys.stderr)
        return 2
    print(f'dataset {args.dataset_id}: {stats["episodes"]} episodes, {stats["successful"]} '
          f'successful, {stats["transitions"]} transitions start the data set')

    def export(actor, path):
        export_actor(actor, path, DEFAULT_CROP, dataset=args.dataset_id, algorithm='bc-dagger',
                     model_card='per-iteration DAgger actor')
    actor, summary = run_dagger((images, proprios, actions), config, bc, args.work_dir,
                                init_actor_path=args.init, export=export,
                                progress=not args.no_progress)
    its = summary['iterations']
    card = (f'awopt_ros grasping actor: behaviour cloning (AW-Opt actor loss, task-1 weights) '
            f'on the successful episodes of {args.dataset_id} ({stats["transitions"]} '
            f'transitions), then DAgger (Ross et al. 2011) for {len(its)} iterations of '
            f'{config.episodes_per_iteration} in-process episodes labelled by the noise-free '
            f'scripted expert (target rule {config.target_rule}, betas {list(config.betas)}), '
            f'{its[-1]["dataset_transitions"]} transitions in the end. Inputs image uint8 '
            f'(N,{images.shape[1]},{images.shape[1]},3) cropped {list(DEFAULT_CROP)} from '
            f'640x480, proprio float32 (N,6) {list(spec.PROPRIO_NAMES)}; output action float32 '
            f'(N,7) {list(spec.ACTION_NAMES)}. Simulation only.')
    out = Path(args.out)
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
