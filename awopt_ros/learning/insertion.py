"""Residual RL for peg insertion: P-controller vs our residual (AWAC) vs SB3-SAC residual.

The residual-learning experiment (Johannink et al. 2019; Schoettler et al.
2019; FACTS.md "Residual RL" and "Insertion"), in process, on
:class:`awopt_ros.sim.insertion_env.InsertionResidualEnv` (the same gymnasium environment for
every method):

* ``p_controller``: the residual switched off, ``u = clip(-kp (x - goal_observed))``.
* ``residual``: the project's learner (``learning.awopt.Learner``, AWAC preset by default,
  state-only networks of the insertion task, output layer zero-initialised so the starting
  residual is 0): offline data from P-controller episodes with Gaussian exploration noise on
  the residual, offline pretraining, then online finetuning in process (episodes acted by the
  actor with its exploration std, appended to the same buffer, gradient steps after each).
* ``sb3_sac_residual``: stable-baselines3 SAC on the same environment with the same
  environment-step budget (its observation normalised by the task's fixed scale, as our
  networks do inside the graph; its mean layer zero-initialised like ours).

Evaluation: for training seed ``k`` every method runs the same ``episodes_per_seed`` scenes
:func:`eval_scene_seeds` (``k``) (socket pose, goal noise and start pose fixed by the scene
seed), deterministic policies (actor mean; SAC ``deterministic=True``). Reported: success
rate per seed, mean and std over seeds (population std, ``ddof=0``), env steps per method,
wall time, learning curves (training-episode success vs env steps).

Outputs: per (method, seed) a JSON under the work dir (the comparison resumes from them), the
plot, ``insertion_results.json`` and ``insertion.md`` in the docs dir (default
``<work dir>/docs``; the published ``docs/`` only when named, and a docs dir that already
holds results only with ``--force``); the residual actor of each seed as ONNX under the work
dir, the best one copied to ``models/`` only with ``--ship`` (and never over an existing file
without ``--force``).
"""
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

#: Scene seeds of evaluation episodes start here (training scenes are drawn from the
#: environment's generator, which in practice never reaches these exact seeds).
EVAL_SEED_BASE = 1_000_000
#: Scene seeds per training seed's evaluation block.
EVAL_SEED_STRIDE = 10_000
METHODS = ('p_controller', 'residual', 'sb3_sac_residual')
DEFAULT_WORK_DIR = 'runs/insertion_compare'
#: Largest accepted ``goal_noise_m`` (m): half the peg side; larger values are usually a
#: value in mm given as metres.
MAX_GOAL_NOISE_M = 0.005
SHIPPED_MODEL = 'models/insertion_residual.onnx'


def eval_scene_seeds(seed, episodes):
    """Return the scene seeds (list of int) of training seed ``seed``'s evaluation."""
    return [EVAL_SEED_BASE + EVAL_SEED_STRIDE * int(seed) + i for i in range(int(episodes))]


@dataclass
class ExperimentConfig:
    """Settings of the comparison (every field is recorded in the results JSON).

    The defaults are the configuration of ``docs/insertion.md`` (its table), except
    ``seeds`` and ``episodes_per_seed``, which it gives explicitly as well.

    Attributes:
        seeds: training seeds (each evaluated on its own block of scenes).
        episodes_per_seed: evaluation episodes per seed and method.
        env_steps: environment-step budget of EACH learner per seed (ours: offline data
            collection + online finetuning; SB3 SAC: all its steps).
        offline_episodes: P-controller episodes with exploration noise collected first
            (ours; counted in ``env_steps``).
        offline_noise_std: largest std of the Gaussian residual (normalised units, fraction
            of alpha) in the offline episodes (per episode uniform in [0, this]), clipped to
            [-1, 1].
        offline_noise_prob: share of offline episodes that get the noise (the others run
            the P-controller alone).
        scripted_share: share of the offline episodes acted by the scripted corrector
            (:func:`scripted_policy`, privileged: it reads the true socket pose).
        preset: learner preset (``learning.awopt.PRESETS``).
        awac_lambda: temperature of the advantage weights ``exp(Adv / lambda)`` (AWAC: 0.3).
        pretrain_steps: gradient steps on the offline data before the online phase.
        critic_warmup_steps: of those, the first ones train the critic only (actor frozen).
        updates_per_step: gradient steps per online env step.
        batch_size, lr, hidden, layers: learner batch, learning rates, MLP width and hidden
            layers (ours; SB3 SAC gets ``layers`` x ``hidden`` too).
        init_std: initial exploration std of our actor (normalised units).
        sb3_learning_starts: SAC steps before its first update.
        sb3_ent_coef: SAC's entropy coefficient: 'auto' (SB3's default, learned toward a
            target entropy, starting at 1: with the sparse reward of 1 SAC then learned to
            avoid ending episodes, 0 % success, docs/insertion.md), 'auto_<start>' (learned,
            starting at ``start`` > 0) or a fixed number >= 0 as a string ('0.001', the
            default; a number is stored as its string).
        goal_noise_m: uniform +- goal noise in x and y (m, per episode), in
            [0, :data:`MAX_GOAL_NOISE_M`].
        variant: a ``sim.insertion.InsertionConfig`` variant ('default' or 'hard').
        reward: 'sparse' or 'dense' (training reward; success is always the measure).
            'dense' only for the environment and SB3 SAC: our learner refuses it
            (:meth:`check_method`).
        threads: torch threads per process.

    Raises:
        ValueError: (at construction) a field out of its range, naming the field: counts
            below their minimum, shares outside [0, 1], ``lr``, ``init_std``,
            ``awac_lambda``, ``updates_per_step`` not finite and > 0, ``offline_noise_std``
            < 0, ``critic_warmup_steps`` > ``pretrain_steps``, repeated seeds, an unknown
            ``preset``, ``variant`` or ``reward``, an ``sb3_ent_coef`` SB3 would not take.
    """

    seeds: tuple = (0, 1, 2)
    episodes_per_seed: int = 100
    env_steps: int = 10_000
    offline_episodes: int = 200
    offline_noise_std: float = 1.0
    offline_noise_prob: float = 0.8
    scripted_share: float = 1.0
    preset: str = 'awac'
    awac_lambda: float = 0.1
    pretrain_steps: int = 20000
    critic_warmup_steps: int = 500
    updates_per_step: float = 1.0
    batch_size: int = 256
    lr: float = 3e-4
    hidden: int = 256
    layers: int = 2
    init_std: float = 0.3
    sb3_learning_starts: int = 1000
    sb3_ent_coef: str = '0.001'
    goal_noise_m: float = 0.001
    variant: str = 'default'
    reward: str = 'sparse'
    threads: int = 1

    def __post_init__(self):
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds or min(self.seeds) < 0:
            raise ValueError(f'seeds must be non-empty ints >= 0, got {self.seeds}')
        for name in ('episodes_per_seed', 'env_steps', 'batch_size', 'hidden', 'layers',
                     'threads'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
            setattr(self, name, int(getattr(self, name)))
        for name in ('offline_episodes', 'pretrain_steps', 'critic_warmup_steps',
                     'sb3_learning_starts'):
            if int(getattr(self, name)) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
            setattr(self, name, int(getattr(self, name)))
        for name in ('scripted_share', 'offline_noise_prob', 'offline_noise_std', 'awac_lambda',
                     'lr', 'init_std', 'updates_per_step', 'goal_noise_m'):
            setattr(self, name, _finite(name, getattr(self, name)))
        if not 0.0 <= self.scripted_share <= 1.0:
            raise ValueError(f'scripted_share must be in [0, 1], got {self.scripted_share}')
        if not 0.0 <= self.offline_noise_prob <= 1.0:
            raise ValueError(f'offline_noise_prob must be in [0, 1], '
                             f'got {self.offline_noise_prob}')
        if self.reward not in ('sparse', 'dense'):
            raise ValueError(f"reward must be 'sparse' or 'dense', got {self.reward!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f'seeds must not repeat, got {self.seeds}')
        for name in ('lr', 'init_std', 'awac_lambda', 'updates_per_step'):
            if not getattr(self, name) > 0.0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')
        if self.offline_noise_std < 0.0:
            raise ValueError(f'offline_noise_std must be >= 0, got {self.offline_noise_std}')
        if self.critic_warmup_steps > self.pretrain_steps:
            raise ValueError(f'critic_warmup_steps ({self.critic_warmup_steps}) must not '
                             f'exceed pretrain_steps ({self.pretrain_steps})')
        if not 0.0 <= self.goal_noise_m <= MAX_GOAL_NOISE_M:
            raise ValueError(f'goal_noise_m must be in [0, {MAX_GOAL_NOISE_M}] m, got '
                             f'{self.goal_noise_m} (a value in mm?)')
        self.sb3_ent_coef = _check_ent_coef(self.sb3_ent_coef)
        from awopt_ros.learning.awopt import PRESETS
        if self.preset not in PRESETS:
            raise ValueError(f'preset must be one of {sorted(PRESETS)}, got {self.preset!r}')
        from awopt_ros.sim.insertion import InsertionConfig
        try:
            InsertionConfig(variant=self.variant, render=False)
        except ValueError as exc:
            raise ValueError(f'variant: {exc}') from None

    def check_method(self, method):
        """Raise ValueError where this configuration cannot train ``method``.

        Our learner (``'residual'``) refuses ``reward='dense'``: its critic is a
        cross-entropy critic whose Bellman targets are success probabilities clamped to
        [0, 1] (``learning.awopt``), and the dense reward is negative, so every target would
        be 0 and nothing would be learned. The P-controller and SB3 SAC take either reward.

        Raises:
            ValueError: an unknown method, or the combination above.
        """
        if method not in METHODS:
            raise ValueError(f'unknown method {method!r}; known: {METHODS}')
        if method == 'residual' and self.reward == 'dense':
            raise ValueError(
                "reward 'dense' cannot train our residual (method 'residual'): the learner's "
                'critic targets are success probabilities in [0, 1] (cross-entropy critic, '
                'Bellman targets clamped to [0, 1]) and the dense reward is negative, so '
                "every target would be 0; use reward 'sparse' ('dense' stays available for "
                "sb3_sac_residual and the environment)")

    def to_dict(self):
        """Return the fields as a JSON-ready dict (``seeds`` as a list)."""
        d = asdict(self)
        d['seeds'] = list(self.seeds)
        return d


def _finite(name, value):
    """Return ``value`` as a float; ValueError naming ``name`` if it is not a finite number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be a number, got {value!r}') from None
    if not math.isfinite(v):
        raise ValueError(f'{name} must be finite, got {value!r}')
    return v


def _check_ent_coef(value):
    """Return SB3's ``ent_coef`` setting as a string, as SB3 SAC accepts it: 'auto',
    'auto_<start>' with a start value > 0, or a number >= 0.

    Raises:
        ValueError: anything else (naming ``sb3_ent_coef``).
    """
    text = str(value).strip()
    if text == 'auto':
        return text
    learned = text.startswith('auto_')
    try:
        v = float(text[len('auto_'):] if learned else text)
    except ValueError:
        v = float('nan')
    if not math.isfinite(v) or v < 0.0 or (learned and v == 0.0):
        raise ValueError("sb3_ent_coef must be 'auto', 'auto_<start value > 0>' or a number "
                         f'>= 0, got {value!r}')
    return text


# ---------------------------------------------------------------------------------------------
# Environment, episodes, evaluation
# ---------------------------------------------------------------------------------------------

def scene_config(cfg):
    """Return the ``sim.insertion.InsertionConfig`` of ``cfg``'s scene (no rendering)."""
    from awopt_ros.sim.insertion import InsertionConfig
    return InsertionConfig(variant=cfg.variant, goal_noise_m=cfg.goal_noise_m, render=False)


def scene_text(cfg):
    """One phrase with the peg, hole, clearance and chamfer of ``cfg``'s scene, from its
    ``InsertionConfig`` (docs, model card), e.g. '10 mm square peg, 20 mm deep hole,
    clearance 0.4 mm, 0.5 mm chamfer'."""
    s = scene_config(cfg)
    chamfer = f'{s.chamfer_m * 1000:g} mm chamfer' if s.chamfer_m > 0 else 'no chamfer'
    return (f'{s.peg_side_m * 1000:g} mm square peg, {s.hole_depth_m * 1000:g} mm deep hole, '
            f'clearance {s.clearance_m * 1000:g} mm, {chamfer}')


def make_env(cfg, residual=True):
    """Return an :class:`InsertionResidualEnv` for ``cfg`` (no rendering)."""
    from awopt_ros.sim.insertion_env import InsertionResidualEnv
    return InsertionResidualEnv(scene_config(cfg), residual=residual, reward=cfg.reward)


def run_episode(env, policy, scene_seed=None):
    """Run one episode; ``policy(obs (15,)) -> residual (3,)``.

    Returns:
        dict: ``states`` float32 (T+1, 15), ``actions`` float32 (T, 3), ``rewards``
        float32 (T,), ``terminated`` bool, ``success`` bool, ``fault`` (None or str),
        ``steps`` T, ``scene_seed``.
    """
    obs, info = env.reset(seed=scene_seed)
    states, actions, rewards = [obs], [], []
    terminated = truncated = False
    fault = None
    while not (terminated or truncated):
        a = np.clip(np.asarray(policy(obs), dtype=np.float32).reshape(3), -1.0, 1.0)
        obs, r, terminated, truncated, step_info = env.step(a)
        states.append(obs)
        actions.append(a)
        rewards.append(r)
        fault = step_info.get('fault') or fault
        info = step_info
    return {'states': np.asarray(states, np.float32), 'actions': np.asarray(actions, np.float32),
            'rewards': np.asarray(rewards, np.float32), 'terminated': bool(terminated),
            'success': bool(info['success']), 'fault': fault, 'steps': len(actions),
            'scene_seed': env.scene_seed}


def zero_policy(obs):
    """The residual 0 (the P-controller alone when the env's residual is on)."""
    return np.zeros(3, np.float32)


def evaluate(env, policy, scene_seeds):
    """Success of ``policy`` on ``scene_seeds`` (one episode each).

    Returns:
        dict: ``success_rate``, ``successes`` (list of 0/1 per scene), ``steps`` (env steps
        used), ``force_faults``, ``mean_episode_steps``.
    """
    successes, steps, faults = [], 0, 0
    for s in scene_seeds:
        ep = run_episode(env, policy, s)
        successes.append(int(ep['success']))
        steps += ep['steps']
        faults += int(ep['fault'] == 'force_limit')
    n = max(1, len(successes))
    return {'success_rate': float(np.mean(successes)) if successes else 0.0,
            'successes': successes, 'steps': steps, 'force_faults': faults,
            'mean_episode_steps': steps / n}


class EpisodeCurve:
    """Learning curve: (cumulative env steps, success) of every training episode."""

    def __init__(self):
        self.steps, self.success = [], []
        self.total = 0

    def add(self, steps, success):
        """Record one episode of ``steps`` env steps (int) that ended in ``success`` (bool)."""
        self.total += int(steps)
        self.steps.append(self.total)
        self.success.append(int(success))

    def to_dict(self):
        """Return ``{'env_steps': [cumulative steps after each episode], 'success': [0/1]}``."""
        return {'env_steps': list(self.steps), 'success': list(self.success)}


def smooth_curve(curve, window=20):
    """Return (env steps, rolling success rate over ``window`` episodes) as numpy arrays."""
    s = np.asarray(curve['success'], np.float64)
    x = np.asarray(curve['env_steps'], np.float64)
    if s.size == 0:
        return x, s
    c = np.cumsum(np.insert(s, 0, 0.0))
    idx = np.arange(1, s.size + 1)
    lo = np.maximum(0, idx - window)
    return x, (c[idx] - c[lo]) / (idx - lo)


# ---------------------------------------------------------------------------------------------
# Our residual: the project's learner
# ---------------------------------------------------------------------------------------------

#: Scripted corrector: contact force (N) above which the peg counts as touching the socket.
SCRIPT_CONTACT_N = 2.0
#: Scripted corrector: lateral error (m) at which its residual saturates at +-1.
SCRIPT_SATURATION_M = 0.0005


def scripted_policy(env, rng, random_prob=0.2):
    """Return the scripted corrector's ``policy(obs) -> residual (3,)`` on ``env``.

    The thesis' scripted data collection (FACTS.md, "Learned rewards for insertion": move
    toward the socket centre line, random action with probability 0.2), as a residual that
    reads the TRUE socket pose from the simulator (privileged: only for collecting offline
    data): while the peg does not touch the socket (force below ``SCRIPT_CONTACT_N``) it adds
    nothing (the P-controller approaches the noisy goal); in contact and off the bore axis by
    more than half the clearance it pushes toward the axis (``(socket - tool) /
    SCRIPT_SATURATION_M``, clipped to [-1, 1]) and eases the downward push (``r_z = +1``);
    with probability ``random_prob`` per step it takes a uniform random residual instead.
    What it does in contact is what a policy can learn from the wrench: a peg jammed on one
    edge shows a torque of about 5 mm x fz whose sign gives the side of the bore.
    """
    sim = env.unwrapped.sim
    half_clearance = 0.5 * sim.config.clearance_m

    def policy(obs):
        if rng.random() < random_prob:
            return rng.uniform(-1.0, 1.0, 3)
        if np.linalg.norm(obs[6:9]) < SCRIPT_CONTACT_N:
            return np.zeros(3)
        err = sim.socket_pose()[:2] - sim.tool_pose()[0][:2]
        if np.all(np.abs(err) <= half_clearance):
            return np.zeros(3)
        return np.array([*np.clip(err / SCRIPT_SATURATION_M, -1.0, 1.0), 1.0])
    return policy


def collect_offline(env, cfg, rng, curve=None):
    """The offline data: noisy P-controller episodes and scripted corrections.

    A share ``cfg.scripted_share`` of the episodes is acted by :func:`scripted_policy`;
    of the others, with probability ``cfg.offline_noise_prob`` an episode's residual is
    ``clip(N(0, std), -1, 1)`` per step with ``std`` uniform in ``[0, offline_noise_std]``
    for the episode (a spread of perturbations), else 0 (the P-controller alone).

    Returns:
        list of episode dicts (:func:`run_episode`).
    """
    episodes = []
    n_scripted = int(round(cfg.scripted_share * cfg.offline_episodes))
    for i in range(cfg.offline_episodes):
        std = rng.uniform(0.0, cfg.offline_noise_std) if rng.random() < cfg.offline_noise_prob \
            else 0.0

        def noisy(obs, std=std):
            return np.clip(rng.normal(0.0, std, 3), -1.0, 1.0) if std > 0 else np.zeros(3)
        ep = run_episode(env, scripted_policy(env, rng) if i < n_scripted else noisy)
        episodes.append(ep)
        if curve is not None:
            curve.add(ep['steps'], ep['success'])
    return episodes


def make_learner(cfg, seed):
    """Return the project's :class:`~awopt_ros.learning.awopt.Learner` for the insertion task
    (state-only MLPs of ``cfg.hidden`` units, actor output zero-initialised: residual 0)."""
    from awopt_ros.learning import awopt
    overrides = dict(seed=int(seed), num_threads=cfg.threads, batch_size=cfg.batch_size,
                     actor_lr=cfg.lr, critic_lr=cfg.lr, init_std=cfg.init_std,
                     awac_lambda=cfg.awac_lambda, task='insertion',
                     state_actor=dict(hidden=cfg.hidden, layers=cfg.layers,
                                      zero_init_output=True),
                     state_critic=dict(hidden=cfg.hidden, layers=cfg.layers))
    return awopt.Learner(awopt.make_config(cfg.preset, **overrides))


def _buffer(capacity):
    from awopt_ros.learning import awopt
    return awopt.ReplayBuffer(capacity=capacity, task='insertion')


def _add(buffer, ep):
    buffer.add_episode(None, ep['states'], ep['actions'], ep['rewards'], ep['terminated'],
                       success=ep['success'])


def learner_policy(learner, mode='actor', rng=None):
    """Return ``policy(obs) -> residual (3,)`` of ``learner`` ('actor' or 'actor_explore')."""
    def policy(obs):
        return learner.act_batch(None, np.asarray(obs, np.float32)[None], mode, rng=rng)[0]
    return policy


def _train_steps(learner, buffer, steps, critic_only=False):
    """``steps`` gradient steps; with ``critic_only`` only the critic learns (warm-up before
    actor updates, FACTS.md "Residual RL practice")."""
    if steps <= 0:
        return {}
    return learner.train(buffer, int(steps), critic_only=critic_only)


def train_residual(cfg, seed, progress=None):
    """Train our residual (offline from P-controller episodes, then online) for one seed.

    Returns:
        (learner, info dict: env_steps, offline_steps, online_steps, gradient_steps,
        curve, wall_s, offline_success_rate).

    Raises:
        ValueError: ``cfg.reward`` is 'dense' (:meth:`ExperimentConfig.check_method`).
    """
    cfg.check_method('residual')
    t0 = time.perf_counter()
    env = make_env(cfg)
    env.reset(seed=int(seed) * 7919 + 13)       # seeds the env's training-scene generator
    rng = np.random.default_rng(seed)
    curve = EpisodeCurve()
    offline = collect_offline(env, cfg, rng, curve)
    learner = make_learner(cfg, seed)
    buffer = _buffer(capacity=max(cfg.env_steps, 1000) + 100)
    for ep in offline:
        _add(buffer, ep)
    offline_steps = curve.total
    warm = min(cfg.critic_warmup_steps, cfg.pretrain_steps)
    _train_steps(learner, buffer, warm, critic_only=True)
    _train_steps(learner, buffer, cfg.pretrain_steps - warm)
    grad_steps = cfg.pretrain_steps
    if progress:
        print(f'[residual seed {seed}] offline {len(offline)} episodes, {offline_steps} steps, '
              f'success {np.mean([e["success"] for e in offline]):.2f}; pretrained '
              f'{cfg.pretrain_steps} steps ({time.perf_counter() - t0:.0f} s)', flush=True)
    explore = learner_policy(learner, 'actor_explore', rng)
    debt = 0.0
    while curve.total < cfg.env_steps:
        ep = run_episode(env, explore)
        curve.add(ep['steps'], ep['success'])
        _add(buffer, ep)
        debt += ep['steps'] * cfg.updates_per_step
        n = int(debt)
        debt -= n
        _train_steps(learner, buffer, n)
        grad_steps += n
        if progress and len(curve.success) % 25 == 0:
            recent = np.mean(curve.success[-25:])
            print(f'[residual seed {seed}] {curve.total} steps, last 25 episodes success '
                  f'{recent:.2f} ({time.perf_counter() - t0:.0f} s)', flush=True)
    env.close()
    info = {'env_steps': curve.total, 'offline_steps': offline_steps,
            'online_steps': curve.total - offline_steps, 'gradient_steps': grad_steps,
            'offline_episodes': len(offline),
            'offline_success_rate': float(np.mean([e['success'] for e in offline]))
            if offline else None,
            'curve': curve.to_dict(), 'train_wall_s': time.perf_counter() - t0}
    return learner, info


# ---------------------------------------------------------------------------------------------
# Peer baseline: stable-baselines3 SAC
# ---------------------------------------------------------------------------------------------

def _sb3_env(cfg, curve):
    """The insertion env with the task's fixed observation scaling and a curve recorder."""
    import gymnasium as gym

    from awopt_ros.core.task import INSERTION

    class Scaled(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (INSERTION.state_dim,),
                                                    np.float32)

        def observation(self, obs):
            return INSERTION.normalise_state(obs)

        def step(self, action):
            obs, r, term, trunc, info = super().step(action)
            if curve is not None and (term or trunc):
                curve.add(info['step'], info['success'])
            return obs, r, term, trunc, info

    return Scaled(make_env(cfg))


def _ent_coef(value):
    """SB3's ``ent_coef``: 'auto...' strings as they are, anything else as a float."""
    text = str(value)
    return text if text.startswith('auto') else float(text)


def train_sb3_sac(cfg, seed, progress=None):
    """Train SB3 SAC on the residual for ``cfg.env_steps`` env steps.

    Returns:
        (model, info dict: env_steps, gradient_steps, curve, train_wall_s, sb3 settings).
    """
    import torch
    from stable_baselines3 import SAC
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    curve = EpisodeCurve()
    env = _sb3_env(cfg, curve)
    env.reset(seed=int(seed) * 7919 + 13)
    settings = dict(learning_rate=cfg.lr, batch_size=cfg.batch_size,
                    learning_starts=cfg.sb3_learning_starts, buffer_size=cfg.env_steps + 100,
                    policy_kwargs=dict(net_arch=[cfg.hidden] * cfg.layers), train_freq=1,
                    gradient_steps=max(1, int(round(cfg.updates_per_step))),
                    ent_coef=_ent_coef(cfg.sb3_ent_coef))
    model = SAC('MlpPolicy', env, seed=int(seed), device='cpu', verbose=0, **settings)
    with torch.no_grad():      # zero residual at the start, like ours (mean layer = 0)
        model.actor.mu.weight.zero_()
        model.actor.mu.bias.zero_()
    model.learn(total_timesteps=cfg.env_steps, progress_bar=False)
    grad = int(model._n_updates)
    env.close()
    settings['policy_kwargs'] = {'net_arch': [cfg.hidden] * cfg.layers}
    info = {'env_steps': int(model.num_timesteps), 'gradient_steps': grad,
            'curve': curve.to_dict(), 'train_wall_s': time.perf_counter() - t0,
            'sb3_settings': settings}
    if progress:
        print(f'[sb3 seed {seed}] {info["env_steps"]} steps, {grad} updates '
              f'({info["train_wall_s"]:.0f} s)', flush=True)
    return model, info


def sb3_policy(model):
    """Deterministic residual of an SB3 model on a raw 15-D observation."""
    from awopt_ros.core.task import INSERTION

    def policy(obs):
        a, _ = model.predict(INSERTION.normalise_state(obs), deterministic=True)
        return a
    return policy


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def model_card(cfg, unit, command):
    """Return the model card text (markdown) of an exported residual actor."""
    from awopt_ros.core.residual import KP, ResidualConfig
    rc = ResidualConfig()
    return f"""# insertion_residual.onnx

Residual policy for peg insertion on a Sawyer (residual RL, Johannink et al. 2019; Schoettler
et al. 2019): the residual controller sends `u = clip(-kp (x - goal) + alpha * r)` with
kp = {list(KP)}, alpha = {rc.alpha_m} m per step, max step {rc.max_step_m} m, and `r` this
model's output.

- Task: `insertion` (core.task.INSERTION): {scene_text(cfg)}
  (sim.insertion, variant `{cfg.variant}`), goal observed with uniform
  +-{cfg.goal_noise_m * 1000:.1f} mm noise in x and y, 50 steps at 10 Hz. Success: the peg tip
  inserted to at least 90 % of the depth inside the bore.
- Contract: input `observation` float32 (N, 15) raw (core.task.INSERTION_STATE_NAMES: tool
  tip minus observed goal (m), tool velocity (m/s), wrench in the tool frame zeroed at reset
  (N, N m), the P-controller step (m)); output `action` float32 (N, 3) residual in [-1, 1]
  (fraction of alpha); metadata `residual_alpha_m`, `kp`.
- Training: learner preset `{cfg.preset}` (learning.awopt, lambda {cfg.awac_lambda}),
  {cfg.layers} x {cfg.hidden} MLPs, seed {unit['seed']}, sparse reward 1 on success.
  {cfg.pretrain_steps} pretraining gradient steps ({cfg.critic_warmup_steps} critic only) on
  the offline data, then online finetuning in process; {unit['env_steps']} env steps in all,
  {unit.get('gradient_steps')} gradient steps.
- Offline data: {_data_text(cfg)}.
- Measured (in process, {cfg.episodes_per_seed} fixed evaluation scenes of seed
  {unit['seed']}): success {unit['success_rate']:.2f}; the P-controller alone on the same
  scenes: {unit.get('p_controller_success_rate', float('nan')):.2f}. All seeds:
  docs/insertion.md.
- Command:

      {command}
"""


def export_residual(learner, out_path, cfg, unit, command):
    """Write our residual actor as ONNX (``learning.export.export_state_actor``) with its card.

    Returns:
        the export result dict of ``export_state_actor``.
    """
    from awopt_ros.core.residual import KP, ResidualConfig
    from awopt_ros.learning import export
    card = model_card(cfg, unit, command)
    extras = {'residual_alpha_m': ResidualConfig().alpha_m, 'kp': list(KP)}
    result = export.export_state_actor(
        learner.deployed_actor, out_path, algorithm=cfg.preset,
        dataset=f'in-process insertion episodes (offline: {_data_text(cfg)}; then online)',
        extra=extras, model_card=card)
    Path(out_path).with_suffix('.md').write_text(card)
    return result


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------

def _unit_path(work_dir, method, seed):
    return Path(work_dir) / f'{method}_seed{seed}.json'


def run_unit(cfg, method, seed, work_dir, progress=True, command=''):
    """Train (learners) and evaluate ``method`` for ``seed``; write and return its JSON."""
    t0 = time.perf_counter()
    scenes = eval_scene_seeds(seed, cfg.episodes_per_seed)
    unit = {'method': method, 'seed': int(seed), 'eval_scene_seeds': [scenes[0], scenes[-1]]}
    if method == 'p_controller':
        env = make_env(cfg, residual=False)
        ev = evaluate(env, zero_policy, scenes)
        env.close()
        unit.update(env_steps=0, train_wall_s=0.0)
    elif method == 'residual':
        learner, info = train_residual(cfg, seed, progress)
        unit.update(info)
        import torch
        ckpt = Path(work_dir) / f'residual_seed{seed}.pt'
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(learner.state_dict(), ckpt)      # first: evaluation may be cut short
        unit['checkpoint'] = str(ckpt)
        env = make_env(cfg)
        ev = evaluate(env, learner_policy(learner, 'actor'), scenes)
        env.close()
        out = Path(work_dir) / f'insertion_residual_seed{seed}.onnx'
        unit['onnx'] = str(out)
        try:
            p_unit = json.loads(_unit_path(work_dir, 'p_controller', seed).read_text())
            unit['p_controller_success_rate'] = p_unit['success_rate']
        except (OSError, ValueError, KeyError):
            pass
        unit['success_rate'] = ev['success_rate']
        export_residual(learner, out, cfg, unit, command)
    elif method == 'sb3_sac_residual':
        model, info = train_sb3_sac(cfg, seed, progress)
        unit.update(info)
        env = make_env(cfg)
        ev = evaluate(env, sb3_policy(model), scenes)
        env.close()
        model.save(Path(work_dir) / f'sb3_sac_seed{seed}.zip')
    else:
        raise ValueError(f'unknown method {method!r}; known: {METHODS}')
    unit.update(success_rate=ev['success_rate'], successes=ev['successes'],
                eval_env_steps=ev['steps'], eval_force_faults=ev['force_faults'],
                wall_s=time.perf_counter() - t0)
    path = _unit_path(work_dir, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(unit))
    if progress:
        print(f'[{method} seed {seed}] success {ev["success_rate"]:.2f} on '
              f'{len(scenes)} scenes ({unit["wall_s"]:.0f} s)', flush=True)
    return unit


def _stats(values):
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std())


def summarise(cfg, units, command):
    """Return the results dict (docs/insertion_results.json) from the per-unit dicts."""
    out = {'goal_noise_m': cfg.goal_noise_m, 'episodes_per_seed': cfg.episodes_per_seed,
           'seeds': len(cfg.seeds), 'seed_list': list(cfg.seeds)}
    env_steps, per_seed, std, wall = {}, {}, {}, {}
    for method in METHODS:
        rows = [units[(method, s)] for s in cfg.seeds if (method, s) in units]
        if not rows:
            continue
        rates = [r['success_rate'] for r in rows]
        mean, sd = _stats(rates)
        out[f'{method}_success_rate'] = round(mean, 4)
        std[method] = round(sd, 4)
        per_seed[method] = {str(r['seed']): r['success_rate'] for r in rows}
        env_steps[method] = int(round(np.mean([r['env_steps'] for r in rows])))
        wall[method] = round(float(np.mean([r.get('train_wall_s', 0.0) for r in rows])), 1)
    out['env_steps'] = env_steps
    out['success_rate_std'] = std
    out['success_rate_per_seed'] = per_seed
    out['train_wall_s_per_seed'] = wall
    if 'residual' in per_seed and 'p_controller' in per_seed:
        out['residual_minus_p_controller_points'] = round(
            100 * (out['residual_success_rate'] - out['p_controller_success_rate']), 1)
    if 'residual' in per_seed and 'sb3_sac_residual' in per_seed:
        out['residual_minus_sb3_points'] = round(
            100 * (out['residual_success_rate'] - out['sb3_sac_residual_success_rate']), 1)
    res_rows = [units[('residual', s)] for s in cfg.seeds if ('residual', s) in units]
    if res_rows:
        out['residual_gradient_steps'] = int(np.mean([r['gradient_steps'] for r in res_rows]))
        out['residual_offline_steps'] = int(np.mean([r['offline_steps'] for r in res_rows]))
    sb_rows = [units[('sb3_sac_residual', s)] for s in cfg.seeds
               if ('sb3_sac_residual', s) in units]
    if sb_rows:
        out['sb3_gradient_steps'] = int(np.mean([r['gradient_steps'] for r in sb_rows]))
        out['sb3_settings'] = sb_rows[0].get('sb3_settings')
    import stable_baselines3
    import torch
    out['target'] = {'residual_minus_p_controller_points_at_least': 20,
                     'residual_not_below_sb3': True}
    if 'residual_minus_p_controller_points' in out:
        out['target_met'] = {
            'residual_minus_p_controller_points_at_least_20':
                out['residual_minus_p_controller_points'] >= 20,
            'residual_not_below_sb3': out.get('residual_minus_sb3_points', 0.0) >= 0}
    out['config'] = cfg.to_dict()
    out['commands'] = [command]
    out['host'] = {'cpu_count': os.cpu_count(), 'python': platform.python_version(),
                   'torch': torch.__version__, 'stable_baselines3': stable_baselines3.__version__}
    return out


def plot_curves(cfg, units, path, window=20):
    """Learning curves (rolling training-episode success vs env steps) -> PNG ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {'residual': 'tab:blue', 'sb3_sac_residual': 'tab:orange'}
    labels = {'residual': f'our residual ({cfg.preset})', 'sb3_sac_residual': 'SB3 SAC residual'}
    for method in ('residual', 'sb3_sac_residual'):
        for i, s in enumerate(cfg.seeds):
            u = units.get((method, s))
            if not u or not u.get('curve'):
                continue
            x, y = smooth_curve(u['curve'], window)
            ax.plot(x, y, color=colours[method], alpha=0.8, lw=1.2,
                    label=labels[method] if i == 0 else None)
            ax.plot([u['env_steps']], [u['success_rate']], 'o', color=colours[method], ms=5)
    p = [units[('p_controller', s)]['success_rate'] for s in cfg.seeds
         if ('p_controller', s) in units]
    if p:
        ax.axhline(float(np.mean(p)), color='k', ls='--', lw=1, label='P-controller (eval)')
    ax.set_xlabel('environment steps (offline data + online)')
    ax.set_ylabel(f'training success (rolling {window} episodes)')
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f'Insertion residual, goal noise +-{cfg.goal_noise_m * 1000:.1f} mm '
                 f'(dots: final evaluation)')
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(mean, sd):
    return f'{100 * mean:.1f} +- {100 * sd:.1f} %'


def _data_text(cfg):
    """One phrase describing the offline data of ``cfg`` (docs, model card)."""
    n_scripted = int(round(cfg.scripted_share * cfg.offline_episodes))
    parts = []
    if n_scripted:
        parts.append(f'{n_scripted} episodes of the scripted corrector '
                     f'(learning.insertion.scripted_policy; privileged: it reads the true '
                     f'socket pose)')
    if cfg.offline_episodes - n_scripted:
        parts.append(f'{cfg.offline_episodes - n_scripted} P-controller episodes, '
                     f'{100 * cfg.offline_noise_prob:.0f} % of them with Gaussian residual '
                     f'noise of std up to {cfg.offline_noise_std:g}')
    return '; '.join(parts) or 'none'


#: insertion.md: what follows this line is written by hand and kept when the docs are rewritten.
NOTES_MARKER = '<!-- notes below: written by hand, kept by awopt insertion-compare -->'


def write_docs(cfg, results, docs_dir, plot_name='insertion_curves.png'):
    """Write ``docs_dir``/insertion_results.json and insertion.md (keeping the hand-written
    notes after :data:`NOTES_MARKER` of an existing insertion.md)."""
    docs = Path(docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / 'insertion_results.json').write_text(json.dumps(results, indent=2) + '\n')
    rows = []
    names = {'p_controller': 'P-controller alone', 'residual': f'our residual ({cfg.preset})',
             'sb3_sac_residual': 'SB3 SAC residual'}
    for m in METHODS:
        key = f'{m}_success_rate'
        if key not in results:
            continue
        per = ', '.join(f'{100 * v:.0f}' for v in results['success_rate_per_seed'][m].values())
        rows.append(f'| {names[m]} | {_fmt(results[key], results["success_rate_std"][m])} | '
                    f'{per} | {results["env_steps"][m]} | '
                    f'{results["train_wall_s_per_seed"][m]} |')
    table = '\n'.join(rows)
    cmd = results['commands'][0]
    md = docs / 'insertion.md'
    notes = ''
    if md.is_file() and NOTES_MARKER in md.read_text():
        notes = md.read_text().split(NOTES_MARKER, 1)[1]
    md.write_text(f"""# Insertion with residual RL: P-controller vs residuals

What: peg insertion on the simulated Sawyer (sim.insertion: {scene_text(cfg)},
variant `{cfg.variant}`), goal observed with uniform
+-{cfg.goal_noise_m * 1000:.1f} mm noise in x and y (fixed per episode), episodes of 50 steps at
10 Hz. The command of each step is `u = clip(-kp (x - goal_observed) + alpha * r)` (kp = [1, 1,
0.3], alpha = 2 mm, core.residual), sent through the arm interface's code path
(core.arm.arm_command: safety filter, IK on the Sawyer). Three controllers on the SAME scenes:

- P-controller alone (r = 0);
- our residual: the project's learner (learning.awopt, preset `{cfg.preset}`, state-only
  networks of {cfg.layers} x {cfg.hidden} units, zero-initialised output), offline data
  ({_data_text(cfg)}), {cfg.pretrain_steps} offline gradient steps
  ({cfg.critic_warmup_steps} critic only), then online finetuning in process (the actor with
  its exploration noise, {cfg.updates_per_step:g} gradient step per env step), all within the
  env-step budget;
- SB3 SAC residual: stable-baselines3 SAC (defaults but batch {cfg.batch_size},
  {cfg.layers} x {cfg.hidden} networks, learning_starts {cfg.sb3_learning_starts}, ent_coef
  {cfg.sb3_ent_coef}, mean layer
  zero-initialised like ours, observation scaled by the task's fixed scale) on the same
  gymnasium environment (sim.insertion_env.InsertionResidualEnv) with the same env-step budget.

Measured: the success rate of the deterministic policy on {cfg.episodes_per_seed} evaluation
scenes per seed (scene seeds `{EVAL_SEED_BASE} + {EVAL_SEED_STRIDE} * seed + i`: same socket
pose, goal noise and start pose for every method), over seeds {list(cfg.seeds)}; mean +- std
(population std over seeds). Why: the issue's question is whether a learned residual beats
the P-controller under goal noise (the thesis: USB 60 -> 84 %), and whether the project's
learner keeps up with a standard peer (SB3 SAC) given the same number of environment steps.

## Results

| controller | success (mean +- std) | per seed (%) | env steps | train wall s |
|---|---|---|---|---|
{table}

Target: our residual >= P-controller + 20 points and not below SB3 SAC.
Our residual - P-controller: {results.get('residual_minus_p_controller_points', 'n/a')} points;
our residual - SB3 SAC: {results.get('residual_minus_sb3_points', 'n/a')} points.

![learning curves]({plot_name})

Learning curves: rolling success of the training episodes (ours: the offline episodes
first, then the actor with its exploration noise; SAC: uniform random residuals for its first
{cfg.sb3_learning_starts} steps, then its stochastic policy) against environment steps; dots:
the final deterministic evaluation; dashed: the P-controller's evaluation.

## Reproduce

```
{cmd}
```

Per (method, seed) results land in the work directory as JSON and the comparison resumes
from them; `docs/insertion_results.json` holds every number above, the configuration and the
host. `awopt train --task insertion` trains one seed of our residual alone.

{NOTES_MARKER}{notes}""")


def run_compare(cfg, work_dir=DEFAULT_WORK_DIR, docs_dir=None, methods=METHODS,
                ship=False, force=False, restart=False, progress=True, command='', write=True):
    """Run (or resume) every (method, seed) unit, then write the docs and plot.

    Args:
        cfg: :class:`ExperimentConfig`.
        work_dir: per-unit JSON, checkpoints, ONNX exports (a directory holding another
            configuration, seeds aside, is refused unless ``restart``; processes running
            different ``--seeds`` may share it).
        docs_dir: where insertion.md, insertion_results.json and insertion_curves.png go;
            None: ``work_dir``/docs (the published ``docs/`` only when asked for).
        methods: the subset of :data:`METHODS` to run.
        ship: copy the best seed's residual (and card) to :data:`SHIPPED_MODEL`.
        force: let ``write`` replace a ``docs_dir`` that already holds
            insertion_results.json, and ``ship`` replace an existing shipped model.
        restart: delete the work dir's per-unit results first.
        progress: print progress lines.
        command: the command line recorded in the results and docs.
        write: write the docs files and the plot.

    Raises:
        ValueError: the work dir holds another configuration (without ``restart``), an
            unknown method, or a method ``cfg`` cannot train
            (:meth:`ExperimentConfig.check_method`).
        FileExistsError: without ``force``: ``write`` into a ``docs_dir`` holding
            insertion_results.json, or ``ship`` onto an existing model. All of these are
            checked before any unit runs.

    Returns:
        the results dict.
    """
    for method in methods:
        cfg.check_method(method)
    work = Path(work_dir)
    docs = work / 'docs' if docs_dir is None else Path(docs_dir)
    if write and not force and (docs / 'insertion_results.json').exists():
        raise FileExistsError(f'{docs / "insertion_results.json"} exists; pass --force to '
                              f'rewrite {docs} (or give another --docs-dir)')
    if ship and not force and Path(SHIPPED_MODEL).exists():
        raise FileExistsError(f'{SHIPPED_MODEL} exists; pass --force to replace the shipped '
                              'model')
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / 'config.json'
    mine = {k: v for k, v in cfg.to_dict().items() if k != 'seeds'}   # units are per seed
    if cfg_path.is_file() and not restart:
        old = dict(ExperimentConfig().to_dict(), **json.loads(cfg_path.read_text()))
        old.pop('seeds', None)       # fields added since default to their values
        if old != mine:
            raise ValueError(f'{cfg_path} holds another configuration; use another --work-dir '
                             f'or --restart to start over')
    elif restart:
        for p in work.glob('*_seed*.json'):
            p.unlink()
    cfg_path.write_text(json.dumps(mine, indent=2))
    units = {}
    order = [m for m in METHODS if m in methods]
    for seed in cfg.seeds:
        for method in order:
            path = _unit_path(work, method, seed)
            if path.is_file():
                units[(method, seed)] = json.loads(path.read_text())
                continue
            units[(method, seed)] = run_unit(cfg, method, seed, work, progress, command)
    results = summarise(cfg, units, command)
    rows = [units[('residual', s)] for s in cfg.seeds if ('residual', s) in units]
    if ship and rows:
        best = max(rows, key=lambda u: u['success_rate'])
        ship_model(best['onnx'], SHIPPED_MODEL, force=force)
        results.update(shipped_model=SHIPPED_MODEL, shipped_seed=best['seed'],
                       shipped_success_rate=best['success_rate'])
    if write:
        plot_curves(cfg, units, docs / 'insertion_curves.png')
        write_docs(cfg, results, docs)
    return results


def ship_model(src, dst=SHIPPED_MODEL, force=False):
    """Copy an exported residual (and its card) to ``dst``; never over a file without
    ``force``.

    Raises:
        FileExistsError: ``dst`` exists and ``force`` is False.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not force:
        raise FileExistsError(f'{dst} exists; pass --force to replace the shipped model')
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    if src.with_suffix('.md').is_file():
        shutil.copyfile(src.with_suffix('.md'), dst.with_suffix('.md'))
    return dst


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

_HELP = {
    'seeds': 'training seeds; seed k is evaluated on its own block of scenes',
    'episodes_per_seed': 'evaluation episodes per seed and method',
    'env_steps': 'env-step budget of each learner per seed (ours: offline data + online)',
    'offline_episodes': 'noisy P-controller episodes collected first (ours)',
    'offline_noise_std': 'largest std of the offline residual noise (per episode uniform '
                         'in [0, this]; units of alpha)',
    'offline_noise_prob': 'share of noisy offline episodes with noise (the rest: P alone)',
    'scripted_share': 'share of offline episodes by the scripted corrector (reads the true '
                      'socket: privileged data collection)',
    'preset': 'learner preset (learning.awopt.PRESETS)',
    'awac_lambda': 'temperature lambda of the advantage weights exp(Adv / lambda)',
    'pretrain_steps': 'offline gradient steps before the online phase',
    'critic_warmup_steps': 'of those, the first ones train only the critic',
    'updates_per_step': 'gradient steps per online env step (both learners)',
    'batch_size': 'batch size (both learners)',
    'lr': 'learning rate of actor and critic (both learners)',
    'hidden': 'units per hidden layer (both learners)',
    'layers': 'hidden layers (both learners)',
    'init_std': 'initial exploration std of our actor (units of alpha)',
    'sb3_learning_starts': 'SB3 SAC: random-action steps before its first update',
    'sb3_ent_coef': "SB3 SAC entropy coefficient: 'auto' (SB3's own choice), 'auto_<start>' "
                    'or a number >= 0',
    'goal_noise_m': f'uniform +- error of the observed goal in x and y (m, at most '
                    f'{MAX_GOAL_NOISE_M})',
    'variant': "scene: 'default' (0.4 mm clearance, 0.5 mm chamfer) or 'hard' (0.1 mm, "
               'no chamfer)',
    'reward': "training reward: 'sparse' (1 on success) or 'dense' (thesis; SB3 SAC only: "
              "our learner's critic targets are success probabilities)",
    'threads': 'torch threads per process',
}


def add_experiment_args(parser):
    """Options of the experiment (each maps to an :class:`ExperimentConfig` field; the
    defaults are the fields' defaults, read without building a config, so that building the
    parser imports neither torch nor MuJoCo)."""
    d = {f.name: f.default for f in fields(ExperimentConfig)}
    parser.add_argument('--seeds', type=int, nargs='+', default=list(d['seeds']),
                        help=_HELP['seeds'])
    parser.add_argument('--episodes', dest='episodes_per_seed', type=int,
                        default=d['episodes_per_seed'], help=_HELP['episodes_per_seed'])
    for f in fields(ExperimentConfig):
        if f.name in ('seeds', 'episodes_per_seed'):
            continue
        default = d[f.name]
        parser.add_argument('--' + f.name.replace('_', '-'), type=type(default),
                            default=default, dest=f.name, help=_HELP.get(f.name))


def config_from_args(args):
    """Return the :class:`ExperimentConfig` of parsed ``args`` (an ``argparse.Namespace``
    with one attribute per field, as :func:`add_experiment_args` adds them).

    Raises:
        ValueError: a field out of range (:class:`ExperimentConfig`).
    """
    return ExperimentConfig(**{f.name: getattr(args, f.name) for f in fields(ExperimentConfig)})


def add_compare_args(parser):
    """Add the ``awopt insertion-compare`` options."""
    add_experiment_args(parser)
    parser.add_argument('--work-dir', default=DEFAULT_WORK_DIR,
                        help='per (method, seed) JSON, checkpoints and ONNX exports')
    parser.add_argument('--docs-dir', default=None,
                        help='where insertion.md, insertion_results.json and the plot go '
                             '(default: <work-dir>/docs; one that holds results needs --force)')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS,
                        help='run only these methods (their results join the others)')
    parser.add_argument('--ship', action='store_true',
                        help=f"copy the best seed's residual to {SHIPPED_MODEL} (+ card)")
    parser.add_argument('--restart', action='store_true',
                        help='start the work dir over (delete its per-unit results)')
    parser.add_argument('--force', action='store_true',
                        help='rewrite a --docs-dir that holds results; with --ship: replace '
                             'an existing shipped model')


def _command_line():
    return 'awopt ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])


def run_compare_cli(args):
    """``awopt insertion-compare``: returns an exit code (2: a bad option, a method the
    configuration cannot train, or results/model in the way without ``--force``; nothing
    ran)."""
    from awopt_ros.cli_args import usage_error
    try:
        cfg = config_from_args(args)
        results = run_compare(cfg, args.work_dir, args.docs_dir, methods=args.methods,
                              ship=args.ship, force=args.force, restart=args.restart,
                              command=_command_line())
    except (ValueError, FileExistsError) as exc:
        return usage_error('awopt insertion-compare', exc)
    keys = [k for k in results if k.endswith('_success_rate')]
    print(json.dumps({k: results[k] for k in keys + ['env_steps']}, indent=2))
    return 0


def add_train_args(parser):
    """Options of ``awopt train --task insertion`` (one seed of our residual)."""
    add_experiment_args(parser)
    parser.set_defaults(seeds=[0])
    parser.add_argument('--out', default=None,
                        help='ONNX path (default runs/insertion_train/insertion_residual.onnx)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing --out')


def run_train_cli(args):
    """``awopt train --task insertion``: train, evaluate and export one seed; exit code (2:
    a bad option, several seeds, reward 'dense' or an existing ``--out``; nothing ran)."""
    from awopt_ros.cli_args import usage_error
    prog = 'awopt train --task insertion'
    try:
        cfg = config_from_args(args)
        cfg.check_method('residual')
    except ValueError as exc:
        return usage_error(prog, exc)
    if len(cfg.seeds) != 1:
        return usage_error(prog, f'it trains one seed, got --seeds '
                                 f'{" ".join(map(str, cfg.seeds))}; run awopt insertion-compare '
                                 f'--methods residual for several seeds')
    seed = cfg.seeds[0]
    out = Path(args.out or 'runs/insertion_train/insertion_residual.onnx')
    if out.exists() and not args.force:
        print(f'awopt train: {out} exists; pass --force to overwrite', file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    learner, info = train_residual(cfg, seed, progress=True)
    env = make_env(cfg)
    ev = evaluate(env, learner_policy(learner, 'actor'), eval_scene_seeds(seed,
                                                                          cfg.episodes_per_seed))
    env.close()
    unit = dict(info, seed=seed, success_rate=ev['success_rate'])
    export_residual(learner, out, cfg, unit, _command_line())
    print(f'success {ev["success_rate"]:.2f} on {cfg.episodes_per_seed} scenes; '
          f'{info["env_steps"]} env steps; wrote {out}')
    return 0


def steps_per_second(seconds=3.0, cfg=None):
    """In-process env steps per second of the insertion env (P-controller, zero residual)."""
    cfg = cfg or ExperimentConfig()
    env = make_env(cfg)
    steps, t0, seed = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        env.reset(seed=seed)
        seed += 1
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(np.zeros(3, np.float32))
            steps += 1
            done = term or trunc
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


if __name__ == '__main__':     # pragma: no cover
    import argparse
    p = argparse.ArgumentParser()
    add_compare_args(p)
    raise SystemExit(run_compare_cli(p.parse_args()))
