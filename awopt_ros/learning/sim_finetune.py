"""Online finetuning in process (``awopt finetune --in-process``): the fast path, no ROS.

The same learner loop as finetuning beside the stack (:class:`~awopt_ros.learning.finetune.
Finetuner`: replay buffer, labels, gradient steps granted per episode, atomic exports,
checkpoint, JSON history and plot), with the episodes coming from the simulated task code run
in this machine's processes (:func:`awopt_ros.sim.rollout.collect`, the code the ROS sim node
runs) instead of a logger's dataset. Episodes are about 40x faster than at real time through
the stack (100 episodes in about 25 s on 2 cores), so experiments that need thousands of
episodes fit in minutes.

One round (:func:`run_sim_finetune`):

1. run ``episodes_per_round`` episodes on new scene seeds with the current exports, acting
   as the policy node does (:class:`~awopt_ros.core.policy_runtime.PolicyRuntime`): mode
   'actor' (the actor with ``actor_noise_std`` exploration noise) or 'switch' (AW-Opt's
   episode-level switch: with probability ``cem_episode_prob`` an episode is run by CEM over
   the exported critic, with the actor's action as a candidate, else by the noisy actor);
   with ``actor_sample_discrete`` the actor's open, close and terminate are drawn from its
   probabilities; the draws are seeded per scene;
2. hand them to the finetuner (``Finetuner.poll``): each grants ``steps_per_episode``
   gradient steps, and every round grants ``steps_per_poll`` more (a round with 0 episodes
   and ``steps_per_poll`` > 0 is the offline control: the same training without new data);
3. train until the granted steps are used, export the models;
4. every ``eval_every`` rounds (and after the last) evaluate the exported actor without
   noise on the same fixed scenes (``eval_first_seed`` ..), the curve of the run.

Round 0 exports and evaluates the starting model. The evaluations are stored in the
finetuner's history (``evaluations``) and drawn in its plot.
"""
import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from awopt_ros.core.spec import ACTION_DIM


@dataclass
class SimFinetuneConfig:
    """Settings of :func:`run_sim_finetune`.

    Attributes:
        rounds: collect-train-export rounds (>= 1).
        episodes_per_round: new exploration episodes per round (>= 0).
        first_seed: scene seed of the first exploration episode; round r (1-based) runs
            ``first_seed + (r - 1) * episodes_per_round`` onwards (disjoint from the
            evaluation scenes by default).
        actor_noise_std: exploration noise of the acting actor (``PolicyRuntime``), std in
            units of each continuous sub-action's half range, in [0, 1].
        actor_sample_discrete: draw the acting actor's discrete sub-actions from its
            Bernoulli probabilities (``PolicyRuntime``; the exports carry them).
        policy_mode: 'actor' or 'switch' (the policy node's modes; 'switch' needs the
            critic exports).
        cem_episode_prob: share of 'switch' episodes run by CEM over the critic, in [0, 1]
            (AW-Opt: 0.8).
        eval_episodes: noise-free evaluation episodes per evaluation (0: none).
        eval_every: rounds between evaluations (>= 1); the last round is always evaluated.
        eval_first_seed: scene seed of the first evaluation episode (the same scenes every
            time, so the curve compares like with like).
        processes: rollout worker processes.

    Raises:
        ValueError: a value out of range (the message names the field).
    """

    rounds: int = 10
    episodes_per_round: int = 100
    first_seed: int = 100_000
    actor_noise_std: float = 0.1
    actor_sample_discrete: bool = False
    policy_mode: str = 'actor'
    cem_episode_prob: float = 0.8
    eval_episodes: int = 100
    eval_every: int = 2
    eval_first_seed: int = 6001
    processes: int = 2

    def __post_init__(self):
        """Validate (ValueError naming the field)."""
        for name, low in (('rounds', 1), ('episodes_per_round', 0), ('first_seed', 0),
                          ('eval_episodes', 0), ('eval_every', 1), ('eval_first_seed', 0),
                          ('processes', 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise ValueError(f'SimFinetuneConfig.{name} must be an int >= {low}, '
                                 f'got {value!r}')
        for name in ('actor_noise_std', 'cem_episode_prob'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f'SimFinetuneConfig.{name} must be in [0, 1], '
                                 f'got {value!r}')
        if self.policy_mode not in ('actor', 'switch'):
            raise ValueError(f"SimFinetuneConfig.policy_mode must be 'actor' or 'switch', "
                             f'got {self.policy_mode!r}')

    def round_seeds(self, round_index):
        """Scene seeds (list of int) of exploration round ``round_index`` (1-based)."""
        start = self.first_seed + (round_index - 1) * self.episodes_per_round
        return list(range(start, start + self.episodes_per_round))

    def eval_seeds(self):
        """Scene seeds (list of int) of every evaluation."""
        return list(range(self.eval_first_seed, self.eval_first_seed + self.eval_episodes))

    def to_dict(self):
        """Return the settings as a plain dict."""
        return asdict(self)


class EpisodeList(list):
    """The in-memory episode source of an in-process run: a list of episode dicts that is
    also the ``source(start)`` callable a :class:`~awopt_ros.learning.finetune.Finetuner`
    polls (``source(start)`` returns the episodes from index ``start``)."""

    def __call__(self, start=0):
        return self[start:]


class ActorRuntimePolicy:
    """Rollout policy (``begin_episode`` / ``reset`` / ``act``) acting as the policy node:
    ONNX models in a :class:`~awopt_ros.core.policy_runtime.PolicyRuntime`, re-seeded from
    (``seed``, scene seed) every episode (episode switch draw, CEM sampling, exploration
    noise), so that an episode's actions depend on its scene only, not on the worker.

    Args:
        actor: loaded :class:`~awopt_ros.core.onnx_policy.OnnxActor`.
        actor_noise_std: exploration noise, as ``PolicyRuntime``.
        seed: int mixed into every episode's seeds.
        mode: 'actor' or 'switch' (``PolicyRuntime`` modes).
        critic: loaded :class:`~awopt_ros.core.onnx_critic.OnnxCritic` (needed by 'switch').
        cem_episode_prob: share of CEM episodes in mode 'switch'.
        actor_sample_discrete: as ``PolicyRuntime``.
    """

    name = 'actor'

    def __init__(self, actor, actor_noise_std=0.0, seed=0, mode='actor', critic=None,
                 cem_episode_prob=0.8, actor_sample_discrete=False):
        from awopt_ros.core.policy_runtime import PolicyRuntime
        if mode == 'switch' and critic is None:
            raise ValueError("mode 'switch' needs a critic")
        self.actor, self.critic, self.mode = actor, critic, mode
        self.actor_noise_std = float(actor_noise_std)
        self.cem_episode_prob = float(cem_episode_prob)
        self.actor_sample_discrete = bool(actor_sample_discrete)
        self.seed = int(seed)
        self._make = PolicyRuntime
        self.begin_episode(None)

    def begin_episode(self, seed):
        """Re-seed from the scene seed and draw the episode's policy ('switch')."""
        seeds = [self.seed] if seed is None else [self.seed, int(seed)]
        self.runtime = self._make(self.mode, self.actor, self.critic, seed=seeds,
                                  actor_noise_std=self.actor_noise_std,
                                  cem_episode_prob=self.cem_episode_prob,
                                  actor_sample_discrete=self.actor_sample_discrete)
        self.name = self.runtime.episode_policy

    def reset(self):
        """Nothing to reset between episodes beyond :meth:`begin_episode`."""

    def act(self, obs):
        """Return ``(action float32 (7,), info)`` for ``obs['image']``, ``obs['proprio']``;
        info: ``policy`` ('actor' or 'cem', the per-step policy the dataset records), the
        runtime's ``actor_noise_std``, ``discrete_sampled`` and ``noise_free_action``
        (float32 (7,), NaN for CEM steps, as the logger records it)."""
        action, source, info = self.runtime.act(obs['image'], obs['proprio'])
        clean = info['noise_free_action']
        clean = np.full(ACTION_DIM, np.nan, np.float32) if clean is None else clean
        return action, {'policy': source, 'actor_noise_std': info['actor_noise_std'],
                        'discrete_sampled': info['discrete_sampled'],
                        'noise_free_action': clean}


@dataclass
class ActorRuntimeFactory:
    """Picklable ``make_policy`` for ``rollout.collect``: loads the ONNX actor at ``path``
    (and, with ``critic_prefix``, the critic pair ``<prefix>_encoder.onnx`` /
    ``<prefix>_head.onnx``) in each worker (one onnxruntime thread) into an
    :class:`ActorRuntimePolicy`."""

    path: str
    actor_noise_std: float = 0.0
    seed: int = 0
    mode: str = 'actor'
    critic_prefix: str = None
    cem_episode_prob: float = 0.8
    actor_sample_discrete: bool = False

    def __call__(self, worker_index):
        from awopt_ros.core.onnx_critic import OnnxCritic
        from awopt_ros.core.onnx_policy import OnnxActor
        critic = None
        if self.critic_prefix is not None:
            critic = OnnxCritic(f'{self.critic_prefix}_encoder.onnx',
                                f'{self.critic_prefix}_head.onnx', intra_op_threads=1)
        return ActorRuntimePolicy(OnnxActor(self.path, intra_op_threads=1),
                                  self.actor_noise_std, self.seed, self.mode, critic,
                                  self.cem_episode_prob, self.actor_sample_discrete)


def scripted_demonstrations(episodes, first_seed=1, processes=2, progress=True,
                            rollout_config=None):
    """Collect ``episodes`` noisy scripted demonstrations in process (scene seeds
    ``first_seed`` ..), with the demonstrator's recorded grasp goal per step (the expert
    labels of ``learning.targets``), as the stack's ``awopt collect`` would log them.

    Returns:
        list of episode dicts (``sim.rollout`` layout).
    """
    from awopt_ros.sim import rollout
    seeds = list(range(int(first_seed), int(first_seed) + int(episodes)))
    return rollout.collect(seeds, rollout.ScriptedFactory(), rollout_config,
                           processes=processes, progress=progress, record=True)


def _evaluate(path, config, rollout_config):
    from awopt_ros.sim import rollout
    seeds = config.eval_seeds()
    eps = rollout.collect(seeds, ActorRuntimeFactory(str(path), 0.0), rollout_config,
                          processes=config.processes, progress=False, record=False)
    outcomes = {}
    for ep in eps:
        outcomes[ep['outcome']] = outcomes.get(ep['outcome'], 0) + 1
    return sum(bool(ep['success']) for ep in eps), outcomes


def run_sim_finetune(finetuner, config, rollout_config=None, log=print, seed=0):
    """Finetune in process: rounds of exploration episodes, training and exports.

    Args:
        finetuner: :class:`~awopt_ros.learning.finetune.Finetuner` built with an
            :class:`EpisodeList` as its episode source (the rounds append to it) and an
            ``actor_path`` (the episodes are run with its exports).
        config: :class:`SimFinetuneConfig`.
        rollout_config: ``sim.rollout.RolloutConfig`` (default: the stack's parameters).
        log: callable(str) for progress lines.
        seed: int mixed into the exploration noise seeds.

    Returns:
        the finetuner's summary dict (``Finetuner.summary``; ``stop_reason`` 'rounds', or
        'interrupted' after Ctrl-C, when the last export stays) with ``evaluations``: one
        dict per evaluation (``round``, ``episodes_seen``, ``learner_step``, ``successes``,
        ``episodes``, ``success_rate``, ``outcomes``).

    Raises:
        ValueError: the finetuner exports no actor, or its source is not an
            :class:`EpisodeList`.
        awopt_ros.sim.rollout.RolloutError: an episode failed in a worker.
    """
    if finetuner.actor_path is None:
        raise ValueError('in-process finetuning needs a finetuner that exports an actor')
    if config.policy_mode == 'switch' and finetuner.critic_prefix is None:
        raise ValueError("policy_mode 'switch' needs a finetuner that exports the critic")
    episodes = finetuner.source
    if not isinstance(episodes, EpisodeList):
        raise ValueError('in-process finetuning needs a finetuner whose episode source is an '
                         f'EpisodeList, got {type(episodes).__name__}')
    finetuner.begin()
    switch = (f', {config.policy_mode} ({100 * config.cem_episode_prob:g} % CEM episodes)'
              if config.policy_mode == 'switch' else '')
    log(f'finetune (in process): {config.rounds} rounds x {config.episodes_per_round} '
        f'episodes{switch}, actor noise {config.actor_noise_std:g}'
        f'{", discrete sub-actions sampled" if config.actor_sample_discrete else ""}, '
        f'evaluation on '
        f'{config.eval_episodes} scenes from seed {config.eval_first_seed} every '
        f'{config.eval_every} rounds')
    finetuner.stop_reason = 'interrupted'
    try:
        finetuner.export()
        _record_eval(finetuner, config, rollout_config, 0, log)
        for r in range(1, config.rounds + 1):
            t0 = time.monotonic()
            seeds = config.round_seeds(r)
            if seeds:
                from awopt_ros.sim import rollout
                factory = ActorRuntimeFactory(
                    str(finetuner.actor_path), config.actor_noise_std, seed,
                    config.policy_mode,
                    finetuner.critic_prefix if config.policy_mode == 'switch' else None,
                    config.cem_episode_prob, actor_sample_discrete=config.actor_sample_discrete)
                new = rollout.collect(seeds, factory, rollout_config,
                                      processes=config.processes, progress=False, record=True)
                episodes.extend(new)
            t1 = time.monotonic()
            added = finetuner.poll()
            finetuner.budget += finetuner.config.steps_per_poll
            while finetuner.budget >= 1.0 and finetuner._steps_left() > 0 and finetuner.ready():
                finetuner.train_available()
            t2 = time.monotonic()
            finetuner.export()
            log(f'finetune (in process): round {r}/{config.rounds}: {added} episodes '
                f'({_tally(episodes[len(episodes) - added:])}, {t1 - t0:.0f} s), '
                f'{finetuner.steps} steps so far ({t2 - t1:.0f} s)')
            if r % config.eval_every == 0 or r == config.rounds:
                _record_eval(finetuner, config, rollout_config, r, log)
            finetuner.save_history()
            finetuner.save_plot()
        finetuner.stop_reason = 'rounds'
    except KeyboardInterrupt:
        log('\nfinetune (in process): interrupted; saving the checkpoint, history and plot')
        return finetuner._finish(export=False)
    return finetuner._finish(export=True)


def _tally(episodes):
    """'S successful' (plus 'actor a/n, cem c/m' when CEM ran episodes) of ``episodes``."""
    wins = sum(bool(ep['success']) for ep in episodes)
    kinds = {}
    for ep in episodes:
        kind = kinds.setdefault(str(ep.get('policy_name', 'actor')), [0, 0])
        kind[0] += bool(ep['success'])
        kind[1] += 1
    text = f'{wins} successful'
    if 'cem' in kinds:
        text += ': ' + ', '.join(f'{k} {w}/{n}' for k, (w, n) in sorted(kinds.items()))
    return text


def _record_eval(finetuner, config, rollout_config, round_index, log):
    if not config.eval_episodes:
        return None
    successes, outcomes = _evaluate(finetuner.actor_path, config, rollout_config)
    rec = {'round': round_index, 'episodes_seen': len(finetuner.episodes),
           'learner_step': int(finetuner.learner.step), 'successes': successes,
           'episodes': config.eval_episodes,
           'success_rate': successes / config.eval_episodes, 'outcomes': outcomes}
    finetuner.evaluations.append(rec)
    log(f'finetune (in process): evaluation after round {round_index}: {successes}/'
        f'{config.eval_episodes} ({100 * rec["success_rate"]:.0f} %) {outcomes}')
    return rec
