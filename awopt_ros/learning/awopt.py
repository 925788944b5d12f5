"""AW-Opt learner (Lu et al., CoRL 2021) and its baselines (BC, AWAC, QT-Opt) as settings.

Sources:

* AW-Opt: Lu, Hausman, Chebotar et al., "AW-Opt: Learning Robotic Skills with Imitation and
  Reinforcement at Scale", CoRL 2021 (``shared/FACTS.md``). AW-Opt is AWAC made to work for
  sparse-reward visual grasping in four steps, each a switch of :class:`LearnerConfig`:

  1. positive filtering ("AWAC_P"): the actor regresses only onto transitions of successful
     episodes (``positive_filter``) and each critic batch holds 50 % transitions of
     successful episodes (``success_share``);
  2. hybrid exploration ("ELRS"): per episode, act with the CEM policy over the critic with
     probability 0.8, else with the actor (``exploration='switch'``, ``cem_episode_prob``);
  3. max-Q Bellman targets ("maxQ"): ``a* = argmax_a Q(s', a)`` by CEM (``target='cem'``);
  4. the actor's action as one more CEM candidate in every round ("ActorCandidate",
     ``target='cem+actor'``).

  Actor update (AW-Opt eq. for the actor, FACTS.md)::

      phi <- phi - lambda_A * exp(Adv(s, a)) * grad_phi L_A(a, A_phi(s)) * 1[success]
      Adv(s, a) = Q(s, a) - E_{a'~pi(.|s)} Q(s, a')          (target critic)
      L_A = sum_k w_k (mu_k(s) - a_k)^2 + w_d * CE(discrete)   (task 1 weights, bc.py)

* AWAC: Nair, Gupta, Dalal, Levine 2020: weights ``exp(Adv / lambda)``, lambda = 0.3 for
  manipulation, normaliser Z(s) omitted; lr 3e-4; policy weight decay 1e-4.
* QT-Opt: Kalashnikov et al. 2018: Q = sigmoid(logit) is the success probability, trained
  with cross-entropy against ``y = r + gamma * (1 - done) * min(Q_t1, Q_t2)(s', a*)``
  (clipped double Q over two delayed target critics), ``a*`` by CEM, gamma = 0.9.

Presets (:data:`PRESETS`, :func:`make_config`)::

    name                      actor critic adv.w  pos.filt share explore  target
    bc                        yes   no     no     yes      -     actor    -
    awac                      yes   yes    yes    no       0.0   actor    actor
    awac_p                    yes   yes    yes    yes      0.5   actor    actor
    awac_p_elrs               yes   yes    yes    yes      0.5   switch   actor
    awac_p_elrs_maxq          yes   yes    yes    yes      0.5   switch   cem
    awopt                     yes   yes    yes    yes      0.5   switch   cem+actor
    qtopt                     no    yes    no     no       0.0   cem      cem
    awopt_no_pf               yes   yes    yes    no       0.0   switch   cem+actor
    awopt_no_elrs             yes   yes    yes    yes      0.5   actor    cem+actor
    awopt_no_maxq             yes   yes    yes    yes      0.5   switch   actor
    awopt_no_actor_candidate  yes   yes    yes    yes      0.5   switch   cem

Target critics (QT-Opt's clipped double Q with two delayed networks, scheme used here): every
``target_update_period`` gradient steps ``target2 <- target1`` and then ``target1 <- online
critic`` (hard copies). ``target1`` therefore lags the online critic by 0..P-1 steps and
``target2`` by P..2P-1 steps. ``a*`` is chosen with ``target1`` (CEM or the actor) and the
target value is ``min(Q_t1(s', a*), Q_t2(s', a*))``. The advantage of the actor update uses
``target1``.

Everything in one gradient step is batched: the CEM for the B Bellman targets encodes the B
next images once and scores all ``B * (K + 1)`` candidates with one head call per CEM round.

Grasp-target actors (``ActorConfig.pooling='target'``, the network of the shipped behaviour-
cloning model): the replay buffer then carries per-transition actor labels
(:func:`awopt_ros.learning.targets.episode_labels`: the grasp point in the policy image, its
mask, optionally the grasp pose and relabelled actions ``actor_action``), and the actor loss
adds the score-map cross-entropy and grasp-pose error of ``bc.bc_loss`` to ``L_A``, every
per-sample term multiplied by the same advantage weight; the actor's window is centred on the
labelled grasp point (teacher forcing, as in behaviour cloning), its images are not shifted
(the labels would not move with them; the critic's still are), and the advantage baseline
``Q(s, pi(s))`` uses that teacher-forced action. With ``actor_ema_decay`` the exported actor
is an exponential moving average of the actor's weights (:attr:`Learner.deployed_actor`).

Units: images uint8 RGB (N, H, W, 3); proprio float32 (N, 6) (``core.spec``: m, sin/cos,
closedness); actions float32 (N, 7) in physical units (m, m, m, rad, then 0/1); rewards
float32 in {0, 1} (sparse grasp success); Q values are success probabilities in [0, 1].

Tasks (``LearnerConfig.task``, :mod:`awopt_ros.core.task`): the above is the grasping task.
A task without an image (insertion: 15-D state, 3-D residual in [-1, 1], no discrete
entries) runs the same learner, presets and losses on MLPs over its state vector
(``networks.StateActor``, ``critic.StateCritic``); images are None there and the proprio
slot carries the state. Its rewards must keep the Bellman targets in [0, 1] (the QT-Opt
critic's cross-entropy), e.g. the sparse success reward.
"""
import copy
import math
from collections import deque
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from awopt_ros.core import spec
from awopt_ros.core.cem import CEM, CEMConfig
from awopt_ros.core.task import get_task
from awopt_ros.learning.bc import TASK1_WEIGHTS, pose_loss, random_shift, target_loss
from awopt_ros.learning.critic import (Critic, CriticConfig, StateCritic, StateCriticConfig,
                                       critic_loss)
from awopt_ros.learning.networks import (GRASP_POSE_DIM, Actor, ActorConfig, StateActor,
                                         StateActorConfig)

EXPLORATION = ('actor', 'cem', 'switch')
TARGETS = ('actor', 'cem', 'cem+actor')
ACT_MODES = ('actor', 'actor_explore', 'cem')
CHECKPOINT_FORMAT = 'awopt_ros.learner/1'
#: Optional per-transition actor labels of a replay buffer: relabelled actions the actor
#: regresses on, float32 (7,); grasp point in the policy image, float32 (2,) in [-1, 1]; its
#: mask, bool (steps up to the close); grasp pose, float32 (``networks.GRASP_POSE_DIM``,);
#: whether the actor trains on the transition at all, bool (``targets.miss_mask``).
_LABEL_SHAPES = {'actor_action': (spec.ACTION_DIM,), 'target_xy': (2,), 'target_mask': (),
                 'target_pose': (GRASP_POSE_DIM,), 'actor_mask': ()}
_BOOL_LABELS = ('target_mask', 'actor_mask')
LABEL_KEYS = tuple(_LABEL_SHAPES)
#: Actor labels a buffer of a task without an image takes (no grasp point or pose).
STATE_LABEL_KEYS = ('actor_action', 'actor_mask')


def _label_shapes(task):
    """Per-transition label shapes of a buffer for ``task`` (``actor_action`` is (A,))."""
    if task.has_image:
        return dict(_LABEL_SHAPES, actor_action=(task.action_dim,))
    return {k: ((task.action_dim,) if k == 'actor_action' else _LABEL_SHAPES[k])
            for k in STATE_LABEL_KEYS}


#: Default actor-loss weights per task name (AW-Opt task 1 for grasping); other tasks weight
#: every action entry 1.
TASK_WEIGHTS = {'grasp': TASK1_WEIGHTS}


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and math.isfinite(float(value)))


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

@dataclass
class LearnerConfig:
    """Settings of :class:`Learner`: which AW-Opt components are on, and hyper-parameters.

    Components (what a preset switches; see the module docstring's table):
        use_actor: train an :class:`~awopt_ros.learning.networks.Actor`.
        use_critic: train a QT-Opt critic (:class:`~awopt_ros.learning.critic.Critic`) and
            its two delayed target copies.
        advantage_weighting: weight each actor sample by ``exp(Adv / awac_lambda)`` clipped
            to ``max_weight`` (AWAC / AW-Opt); False gives plain BC weights 1. Needs the
            critic.
        positive_filter: the actor trains only on transitions of successful episodes
            (AW-Opt step 1, ``1[success]`` in the actor update).
        success_share: share of each CRITIC batch drawn from successful episodes, the rest
            from unsuccessful ones (AW-Opt: 0.5); 0 = uniform over all transitions.
        exploration: data-collection policy per episode: 'actor', 'cem' (CEM over the
            critic, QT-Opt) or 'switch' (episode-level random switch, AW-Opt "ELRS").
        cem_episode_prob: for 'switch', probability that an episode uses the CEM policy
            (AW-Opt: 0.8).
        target: Bellman target action ``a*`` at ``s'``: 'actor' (the actor's action, AWAC),
            'cem' (argmax of ``Q_t1`` by CEM, "maxQ") or 'cem+actor' (CEM with the actor's
            action as one extra candidate in every round, AW-Opt "ActorCandidate").

    Hyper-parameters (defaults sized for a 2-core CPU, 64 px images):
        name: label (the preset name when made by :func:`make_config`).
        gamma: discount (QT-Opt: 0.9).
        awac_lambda: AWAC temperature lambda in ``exp(Adv / lambda)``; 0.3 (AWAC's value for
            manipulation). With Q in [0, 1], Adv is in [-1, 1] so weights span
            [exp(-3.3), min(exp(3.3), max_weight)] = [0.036, 20].
        max_weight: upper clip of the advantage weights (20).
        normalise_weights: divide the weights by their batch mean. Default False: AWAC and
            AW-Opt use the unnormalised ``exp(Adv / lambda)`` (AWAC drops Z(s)); note that
            positive filtering already keeps Adv near 0 on demonstrations.
        advantage_samples: how ``E_{a'~pi} Q(s, a')`` is estimated: 0 (default) = Q at the
            actor's deterministic action (Gaussian mean, discrete logit > 0), a cheap and
            common estimate; n > 0 = mean over n samples of the exploration distribution.
        actor_lr, critic_lr: Adam learning rates (3e-4, AWAC).
        actor_weight_decay: Adam L2 weight decay of the actor weights (1e-4, AWAC policy).
        batch_size: transitions per critic batch and per actor batch (64: one step of the
            default 64 px networks takes ~0.1-0.2 s on 2 CPU cores).
        target_update_period: P, gradient steps between target-critic copies (100: short
            runs of a few thousand steps still refresh the targets tens of times; QT-Opt
            lags much more at its scale).
        weights: one weight per action entry of the task for the actor loss (grasp, 7: AW-Opt
            task 1, ``bc.TASK1_WEIGHTS`` = 33.3 x3, 5.5, 1 x3); None (default) takes the
            task's default (:data:`TASK_WEIGHTS`, else 1 per entry).
        init_std, min_std, max_std: initial value and bounds of the learned state-independent
            exploration std of the continuous sub-actions (grasp: 4), in normalised units
            (fraction of the half range of the task's bounds).
        target_cem: CEM for the Bellman targets (2 iterations x 16 samples, 4 elites: small,
            for speed; QT-Opt uses 2 x 64 / 6).
        deploy_cem: CEM for acting (``Learner.act`` mode 'cem'): QT-Opt's 2 x 64 / 6.
        actor: :class:`ActorConfig` (dict accepted). critic: :class:`CriticConfig` (dict
            accepted); the image sizes of both must agree. Used by tasks with an image.
        shift_px: random-shift augmentation (DrQ) in px, each direction; 0 disables it. A
            grasp-target actor's images are never shifted (see the module docstring). Tasks
            without an image ignore it.
        target_weight, target_sigma_cells, pose_weight: the score-map and grasp-pose terms of
            a grasp-target actor's loss (as ``bc.BCConfig``).
        actor_ema_decay: 0 (default) exports the actor's last iterate; in (0, 1) the deployed
            actor is an exponential moving average of its weights with this decay per step.
        intervention_weight: factor (finite, >= 0) on every actor-loss term of a transition
            where an operator's command replaced the policy's (dataset info
            ``intervention``, ``core.intervention``; HIL-SERL's human corrections), on top
            of the advantage weight. 1 (default) treats them like any other transition;
            e.g. 5 makes the actor follow the operator's corrections more closely. Positive
            filtering still applies (an intervention in a failed episode is left out).
        seed: seed of the network initialisation, batch sampling, augmentation and CEM.
        num_threads: torch intra-op threads set when the learner is built (None: leave as
            is).
        task: name of the ``core.task.Task`` learned ('grasp' default, 'insertion'); a
            ``Task`` is accepted and stored by name. A task with an image (grasp) uses the
            image networks (``actor``, ``critic``); a task without one (insertion) uses MLPs
            on its state vector: ``state_actor`` (:class:`StateActorConfig`, dict accepted;
            ``zero_init_output=True`` starts a residual at exactly 0) and ``state_critic``
            (:class:`StateCriticConfig`, dict accepted). Checkpoints store the task; those
            written before it existed are grasp ones.

    Raises:
        ValueError: a value of the wrong type or out of range, an unknown ``exploration`` or
            ``target``, or a component combination that cannot run (e.g. exploration 'actor'
            without an actor); the message names the field.
    """

    use_actor: bool = True
    use_critic: bool = True
    advantage_weighting: bool = True
    positive_filter: bool = True
    success_share: float = 0.5
    exploration: str = 'switch'
    cem_episode_prob: float = 0.8
    target: str = 'cem+actor'
    name: str = 'custom'
    gamma: float = 0.9
    awac_lambda: float = 0.3
    max_weight: float = 20.0
    normalise_weights: bool = False
    advantage_samples: int = 0
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    actor_weight_decay: float = 1e-4
    batch_size: int = 64
    target_update_period: int = 100
    weights: tuple = None
    init_std: float = 0.3
    min_std: float = 0.05
    max_std: float = 1.0
    target_cem: CEMConfig = field(default_factory=lambda: CEMConfig(iterations=2, samples=16,
                                                                    elites=4))
    deploy_cem: CEMConfig = field(default_factory=lambda: CEMConfig(iterations=2, samples=64,
                                                                    elites=6))
    actor: ActorConfig = field(default_factory=ActorConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    shift_px: int = 4
    target_weight: float = 1.0
    target_sigma_cells: float = 0.75
    pose_weight: float = 1.0
    actor_ema_decay: float = 0.0
    intervention_weight: float = 1.0
    seed: int = 0
    num_threads: int = 2
    task: str = 'grasp'
    state_actor: StateActorConfig = field(default_factory=StateActorConfig)
    state_critic: StateCriticConfig = field(default_factory=StateCriticConfig)

    def __post_init__(self):
        """Convert nested dicts to their configs and validate (ValueError naming the field)."""
        try:
            task = get_task(self.task)
        except ValueError as exc:
            raise ValueError(f'LearnerConfig.task: {exc}') from None
        self.task = task.name
        for name, cls in (('target_cem', CEMConfig), ('deploy_cem', CEMConfig),
                          ('actor', ActorConfig), ('critic', CriticConfig),
                          ('state_actor', StateActorConfig),
                          ('state_critic', StateCriticConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                value = cls(**value)
                setattr(self, name, value)
            if not isinstance(value, cls):
                raise ValueError(f'LearnerConfig.{name} must be a {cls.__name__} (or dict), '
                                 f'got {type(value).__name__}')
        for name in ('use_actor', 'use_critic', 'advantage_weighting', 'positive_filter',
                     'normalise_weights'):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f'LearnerConfig.{name} must be a bool, got {value!r}')
            setattr(self, name, bool(value))
        if self.exploration not in EXPLORATION:
            raise ValueError(f'LearnerConfig.exploration must be one of {EXPLORATION}, '
                             f'got {self.exploration!r}')
        if self.target not in TARGETS:
            raise ValueError(f'LearnerConfig.target must be one of {TARGETS}, '
                             f'got {self.target!r}')
        ranges = {'success_share': (0.0, 1.0), 'cem_episode_prob': (0.0, 1.0),
                  'gamma': (0.0, 1.0)}
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if not _is_real(value) or not lo <= value <= hi:
                raise ValueError(f'LearnerConfig.{name} must be a number in [{lo}, {hi}], '
                                 f'got {value!r}')
            setattr(self, name, float(value))
        for name in ('awac_lambda', 'max_weight', 'actor_lr', 'critic_lr', 'init_std',
                     'min_std', 'max_std'):
            value = getattr(self, name)
            if not _is_real(value) or value <= 0:
                raise ValueError(f'LearnerConfig.{name} must be a finite number > 0, '
                                 f'got {value!r}')
            setattr(self, name, float(value))
        for name in ('target_weight', 'pose_weight', 'intervention_weight'):
            value = getattr(self, name)
            if not _is_real(value) or value < 0:
                raise ValueError(f'LearnerConfig.{name} must be a finite number >= 0, '
                                 f'got {value!r}')
            setattr(self, name, float(value))
        if not _is_real(self.target_sigma_cells) or self.target_sigma_cells <= 0:
            raise ValueError(f'LearnerConfig.target_sigma_cells must be a finite number > 0, '
                             f'got {self.target_sigma_cells!r}')
        self.target_sigma_cells = float(self.target_sigma_cells)
        if not _is_real(self.actor_ema_decay) or not 0.0 <= self.actor_ema_decay < 1.0:
            raise ValueError(f'LearnerConfig.actor_ema_decay must be in [0, 1), '
                             f'got {self.actor_ema_decay!r}')
        self.actor_ema_decay = float(self.actor_ema_decay)
        if not _is_real(self.actor_weight_decay) or self.actor_weight_decay < 0:
            raise ValueError(f'LearnerConfig.actor_weight_decay must be >= 0, '
                             f'got {self.actor_weight_decay!r}')
        self.actor_weight_decay = float(self.actor_weight_decay)
        if not self.min_std <= self.init_std <= self.max_std:
            raise ValueError(f'LearnerConfig needs min_std <= init_std <= max_std, got '
                             f'{self.min_std}, {self.init_std}, {self.max_std}')
        for name, low in (('batch_size', 1), ('target_update_period', 1),
                          ('advantage_samples', 0), ('shift_px', 0), ('seed', 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f'LearnerConfig.{name} must be an int >= {low}, '
                                 f'got {value!r}')
            setattr(self, name, int(value))
        if self.num_threads is not None and (not _is_int(self.num_threads)
                                             or self.num_threads < 1):
            raise ValueError(f'LearnerConfig.num_threads must be None or an int >= 1, '
                             f'got {self.num_threads!r}')
        if self.weights is None:
            self.weights = TASK_WEIGHTS.get(task.name, (1.0,) * task.action_dim)
        w = tuple(float(x) for x in self.weights)
        if len(w) != task.action_dim or not all(math.isfinite(x) and x >= 0 for x in w):
            raise ValueError(f'LearnerConfig.weights needs {task.action_dim} finite values '
                             f'>= 0 {task.action_names}, got {self.weights!r}')
        self.weights = w
        if not isinstance(self.name, str):
            raise ValueError(f'LearnerConfig.name must be a str, got {self.name!r}')

        # Component combinations.
        if not (self.use_actor or self.use_critic):
            raise ValueError('LearnerConfig needs use_actor or use_critic (both are False)')
        if self.exploration in ('actor', 'switch') and not self.use_actor:
            raise ValueError(f"LearnerConfig.exploration={self.exploration!r} needs an actor "
                             f"(use_actor=False); use 'cem'")
        if self.exploration in ('cem', 'switch') and not self.use_critic:
            raise ValueError(f"LearnerConfig.exploration={self.exploration!r} needs a critic "
                             f"(use_critic=False); use 'actor'")
        if self.use_critic and self.target in ('actor', 'cem+actor') and not self.use_actor:
            raise ValueError(f"LearnerConfig.target={self.target!r} needs an actor "
                             f"(use_actor=False); use 'cem'")
        if self.advantage_weighting and not (self.use_critic and self.use_actor):
            raise ValueError('LearnerConfig.advantage_weighting needs both the actor and the '
                             'critic; set advantage_weighting=False')
        if task.has_image and self.use_actor and self.use_critic \
                and self.actor.image_size != self.critic.image_size:
            raise ValueError(f'LearnerConfig.actor.image_size {self.actor.image_size} differs '
                             f'from critic.image_size {self.critic.image_size}')

    @property
    def task_spec(self):
        """The ``core.task.Task`` named by ``task``."""
        return get_task(self.task)

    @property
    def has_image(self):
        """True when the task's policy takes an image (grasp); False for state tasks."""
        return self.task_spec.has_image

    @property
    def grasp_target(self):
        """True when the actor has 'target' pooling (it needs the buffer's actor labels)."""
        return self.has_image and self.use_actor and self.actor.pooling == 'target'

    @property
    def image_size(self):
        """Side (px) of the square uint8 images the learner takes (0: a task without an
        image)."""
        if not self.has_image:
            return 0
        return self.actor.image_size if self.use_actor else self.critic.image_size

    def to_dict(self):
        """Return the config as a plain (JSON-friendly) dict; ``LearnerConfig(**d)`` rebuilds
        it."""
        d = asdict(self)
        d['weights'] = list(self.weights)
        return d


#: Preset name -> :class:`LearnerConfig` overrides (the defaults are full AW-Opt).
PRESETS = {
    'bc': dict(use_critic=False, advantage_weighting=False, positive_filter=True,
               success_share=0.0, exploration='actor'),
    'awac': dict(positive_filter=False, success_share=0.0, exploration='actor',
                 target='actor'),
    'awac_p': dict(positive_filter=True, success_share=0.5, exploration='actor',
                   target='actor'),
    'awac_p_elrs': dict(positive_filter=True, success_share=0.5, exploration='switch',
                        target='actor'),
    'awac_p_elrs_maxq': dict(positive_filter=True, success_share=0.5, exploration='switch',
                             target='cem'),
    'awopt': dict(positive_filter=True, success_share=0.5, exploration='switch',
                  target='cem+actor'),
    'qtopt': dict(use_actor=False, advantage_weighting=False, positive_filter=False,
                  success_share=0.0, exploration='cem', target='cem'),
    'awopt_no_pf': dict(positive_filter=False, success_share=0.0, exploration='switch',
                        target='cem+actor'),
    'awopt_no_elrs': dict(positive_filter=True, success_share=0.5, exploration='actor',
                          target='cem+actor'),
    'awopt_no_maxq': dict(positive_filter=True, success_share=0.5, exploration='switch',
                          target='actor'),
    'awopt_no_actor_candidate': dict(positive_filter=True, success_share=0.5,
                                     exploration='switch', target='cem'),
}


def make_config(preset='awopt', **overrides):
    """Return the :class:`LearnerConfig` of ``preset`` with ``overrides`` applied.

    Args:
        preset: a key of :data:`PRESETS`.
        **overrides: any :class:`LearnerConfig` field (e.g. ``batch_size=32``,
            ``critic=CriticConfig(...)``); they win over the preset's values.

    Raises:
        ValueError: unknown preset (the message lists the known ones), unknown field, or an
            invalid resulting config.
    """
    if preset not in PRESETS:
        raise ValueError(f'unknown preset {preset!r}; known presets: {sorted(PRESETS)}')
    known = {f.name for f in fields(LearnerConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f'unknown LearnerConfig fields {unknown}; known: {sorted(known)}')
    values = dict(PRESETS[preset], name=preset)
    values.update(overrides)
    return LearnerConfig(**values)


# ---------------------------------------------------------------------------------------------
# Replay buffer
# ---------------------------------------------------------------------------------------------

class ReplayBuffer:
    """FIFO replay buffer of whole episodes stored as flat numpy rings.

    Observations of an episode (T + 1 of them) are stored contiguously (modulo the ring) in
    ``image`` uint8 (obs_capacity, H, W, 3) and ``proprio`` float32 (obs_capacity, 6);
    transitions in ``action`` float32 (capacity, 7), ``reward`` float32, ``done`` float32,
    ``success`` bool and the observation indices ``obs_index`` / ``next_obs_index`` (int64).
    Transition t of an episode pairs observation t, action t, reward t with the next
    observation t + 1. ``done`` is 1 only on the last transition of a TERMINATED episode; a
    truncated episode's last transition has done = 0 and bootstraps from its final
    observation (T).

    ``intervention`` bool (capacity,) marks transitions where an operator's command replaced
    the policy's (``add_episode``'s ``intervention``; False by default); :meth:`sample`
    returns it and the learner weights those rows (``LearnerConfig.intervention_weight``).

    Episodes may carry per-transition actor labels (:data:`LABEL_KEYS`, ``labels`` of
    :meth:`add_episode`); the first episode fixes which keys the buffer holds (``label_keys``)
    and every later one must bring the same keys; :meth:`sample` returns them too.

    When adding an episode would exceed ``capacity`` transitions or ``max_episodes``
    episodes, the oldest episodes are evicted first. Storage is allocated (lazily, on the
    first episode, which fixes H and W) for ``capacity`` transitions and
    ``capacity + max_episodes`` observations.

    Tasks without an image (``core.task.Task.image_size == 0``, e.g. insertion): the buffer
    stores no image; the ``proprio`` ring holds the task's state vector (D =
    ``task.state_dim``, raw, ``task.state_names`` order), actions are (A,) =
    ``task.action_dim``. Episodes are added with ``images=None``::

        buf = ReplayBuffer(50_000, task='insertion')
        buf.add_episode(None, states, actions, rewards, terminated)   # (T+1, 15), (T, 3), (T,)

    and :meth:`sample` returns no ``image`` / ``next_image``; ``proprio`` / ``next_proprio``
    are the states. Actor labels are limited to :data:`STATE_LABEL_KEYS` there.

    Args:
        capacity: maximum number of transitions, int >= 1.
        max_episodes: maximum number of episodes (default ``max(1, capacity // 4)``, i.e.
            episodes of >= 4 steps on average fill the transition capacity).
        task: ``core.task.Task`` or its name (default 'grasp'); fixes the state and action
            sizes and whether images are stored.

    Raises:
        ValueError: bad capacity / max_episodes, unknown task.
    """

    def __init__(self, capacity=100_000, max_episodes=None, task='grasp'):
        if not _is_int(capacity) or capacity < 1:
            raise ValueError(f'capacity must be an int >= 1, got {capacity!r}')
        if max_episodes is None:
            max_episodes = max(1, int(capacity) // 4)
        if not _is_int(max_episodes) or max_episodes < 1:
            raise ValueError(f'max_episodes must be an int >= 1, got {max_episodes!r}')
        self.task = get_task(task)
        self._label_shapes = _label_shapes(self.task)
        self.capacity = int(capacity)
        self.max_episodes = int(max_episodes)
        self.obs_capacity = self.capacity + self.max_episodes
        self.image_shape = None      # (H, W, 3) once allocated; stays None without images
        self._allocated = False
        self._episodes = deque()     # dicts: obs_start, n_obs, tr_start, n_tr, success
        self._n_obs = self._n_tr = 0
        self._obs_head = self._tr_head = 0
        self._n_success = 0
        self._index_cache = None
        self.episodes_added = 0
        self.label_keys = None       # tuple of LABEL_KEYS, fixed by the first episode
        self.labels = {}

    # -- counts ----------------------------------------------------------------------------
    @property
    def num_episodes(self):
        """Episodes held now (int)."""
        return len(self._episodes)

    @property
    def num_transitions(self):
        """Transitions held now (int)."""
        return self._n_tr

    @property
    def num_successful(self):
        """Successful episodes held now (int)."""
        return self._n_success

    def __len__(self):
        return self._n_tr

    def stats(self):
        """Return a dict: episodes, transitions, successful_episodes, successful_transitions,
        episodes_added (ever)."""
        succ, _ = self._index_sets()
        return {'episodes': self.num_episodes, 'transitions': self.num_transitions,
                'successful_episodes': self.num_successful,
                'successful_transitions': int(len(succ)),
                'episodes_added': self.episodes_added}

    # -- adding ----------------------------------------------------------------------------
    def _allocate(self, image_shape):
        self._allocated = True
        if image_shape is not None:
            self.image_shape = tuple(image_shape)
            self.image = np.empty((self.obs_capacity,) + self.image_shape, dtype=np.uint8)
        else:
            self.image = None
        self.proprio = np.empty((self.obs_capacity, self.task.state_dim), dtype=np.float32)
        self.action = np.empty((self.capacity, self.task.action_dim), dtype=np.float32)
        self.reward = np.empty(self.capacity, dtype=np.float32)
        self.done = np.empty(self.capacity, dtype=np.float32)
        self.success = np.empty(self.capacity, dtype=bool)
        self.intervention = np.zeros(self.capacity, dtype=bool)
        self.obs_index = np.empty(self.capacity, dtype=np.int64)
        self.next_obs_index = np.empty(self.capacity, dtype=np.int64)

    def _evict_oldest(self):
        ep = self._episodes.popleft()
        self._n_obs -= ep['n_obs']
        self._n_tr -= ep['n_tr']
        self._n_success -= int(ep['success'])

    def _check_labels(self, labels, t):
        """Return ``labels`` as arrays of the :data:`LABEL_KEYS` layouts (T rows), or {}."""
        labels = dict(labels or {})
        shapes = self._label_shapes
        unknown = sorted(set(labels) - set(shapes))
        if unknown:
            raise ValueError(f'unknown label keys {unknown}; known: {list(shapes)}')
        keys = tuple(k for k in shapes if k in labels)
        if self.label_keys is not None and keys != self.label_keys:
            raise ValueError(f"episode labels {list(keys)} differ from the buffer's "
                             f'{list(self.label_keys)}')
        out = {}
        for k in keys:
            dtype = bool if k in _BOOL_LABELS else np.float32
            a = np.asarray(labels[k]).astype(dtype, copy=False)
            if a.shape != (t,) + shapes[k]:
                raise ValueError(f'label {k!r} must have shape {(t,) + shapes[k]}, '
                                 f'got {a.shape}')
            if dtype is np.float32 and not np.all(np.isfinite(a)):
                raise ValueError(f'label {k!r} contains non-finite values')
            out[k] = a
        return out

    def add_episode(self, images, proprios, actions, rewards, terminated, success=None,
                    labels=None, intervention=None):
        """Append one episode.

        Args:
            images: uint8 (T+1, H, W, 3) observations, the last one after the last action;
                None for a task without an image (and only then).
            proprios: float32 (T+1, D): the task's state vector (grasp: the 6-D proprio,
                ``spec.PROPRIO_NAMES``; insertion: the 15-D ``core.task.INSERTION_STATE_NAMES``).
            actions: float32 (T, A) in the task's units (grasp: ``spec.ACTION_NAMES``).
            rewards: (T,) rewards (sparse: 1 on the successful last step, else 0).
            terminated: True when the episode ended in a terminal state (done = 1 on its last
                transition); False for a truncated episode (time limit: bootstrap from the
                final observation).
            success: episode success flag (positive filtering); default ``any(rewards > 0)``.
            labels: optional dict of per-transition actor labels (T rows each, keys of
                :data:`LABEL_KEYS`, e.g. from ``learning.targets.episode_labels``).
            intervention: optional (T,) or (T+1,) bool, the dataset's ``intervention`` info
                (the first T entries are used); None: no intervention.

        Raises:
            ValueError: inconsistent shapes or dtypes, non-finite values, an image shape
                different from earlier episodes, images given for a task without an image
                (or missing for one with), label keys different from earlier episodes,
                T = 0, or T > capacity.
        """
        task = self.task
        if task.has_image and images is None:
            raise ValueError(f'task {task.name!r} needs images (T+1, H, W, 3), got None')
        if not task.has_image and images is not None:
            raise ValueError(f'task {task.name!r} has no image: pass images=None and the '
                             f'states as proprios')
        if images is not None:
            images = np.asarray(images)
        proprios = np.asarray(proprios, dtype=np.float32)
        actions = np.asarray(actions, dtype=np.float32)
        rewards = np.asarray(rewards, dtype=np.float32).reshape(-1)
        if actions.ndim != 2 or actions.shape[1] != task.action_dim:
            raise ValueError(f'actions must be (T, {task.action_dim}) {task.action_names}, '
                             f'got {actions.shape}')
        t = actions.shape[0]
        if t < 1:
            raise ValueError('an episode needs at least one transition (T >= 1)')
        if t > self.capacity:
            raise ValueError(f'episode of {t} transitions exceeds the capacity {self.capacity}')
        if images is not None and (images.dtype != np.uint8 or images.ndim != 4
                                   or images.shape[0] != t + 1 or images.shape[3] != 3):
            raise ValueError(f'images must be uint8 (T+1={t + 1}, H, W, 3), got '
                             f'{images.dtype} {images.shape}')
        if proprios.shape != (t + 1, task.state_dim):
            what = 'proprios' if task.has_image else f'{task.name} states'
            raise ValueError(f'{what} must be (T+1={t + 1}, {task.state_dim}) '
                             f'{task.state_names}, got {proprios.shape}')
        if rewards.shape != (t,):
            raise ValueError(f'rewards must be (T={t},), got {rewards.shape}')
        for name, arr in (('proprios', proprios), ('actions', actions), ('rewards', rewards)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f'{name} contain non-finite values')
        labels = self._check_labels(labels, t)
        flags = np.zeros(t, dtype=bool) if intervention is None \
            else np.asarray(intervention, dtype=bool).reshape(-1)[:t]
        if flags.shape != (t,):
            raise ValueError(f'intervention must have at least T={t} entries, got '
                             f'{np.shape(intervention)}')
        if not self._allocated:
            self._allocate(None if images is None else images.shape[1:])
            self.label_keys = tuple(labels)
            self.labels = {k: np.empty((self.capacity,) + v.shape[1:], dtype=v.dtype)
                           for k, v in labels.items()}
        elif images is not None and images.shape[1:] != self.image_shape:
            raise ValueError(f'images are {images.shape[1:]}, the buffer holds '
                             f'{self.image_shape}')
        success = bool(np.any(rewards > 0)) if success is None else bool(success)

        while self._episodes and (self._n_tr + t > self.capacity
                                  or self._n_obs + t + 1 > self.obs_capacity
                                  or len(self._episodes) >= self.max_episodes):
            self._evict_oldest()
        obs_idx = (self._obs_head + np.arange(t + 1)) % self.obs_capacity
        tr_idx = (self._tr_head + np.arange(t)) % self.capacity
        if images is not None:
            self.image[obs_idx] = images
        self.proprio[obs_idx] = proprios
        self.action[tr_idx] = actions
        self.reward[tr_idx] = rewards
        done = np.zeros(t, dtype=np.float32)
        done[-1] = 1.0 if terminated else 0.0
        self.done[tr_idx] = done
        self.success[tr_idx] = success
        self.intervention[tr_idx] = flags
        self.obs_index[tr_idx] = obs_idx[:-1]
        for k, v in labels.items():
            self.labels[k][tr_idx] = v
        self.next_obs_index[tr_idx] = obs_idx[1:]
        self._episodes.append({'obs_start': self._obs_head, 'n_obs': t + 1,
                               'tr_start': self._tr_head, 'n_tr': t, 'success': success})
        self._obs_head = (self._obs_head + t + 1) % self.obs_capacity
        self._tr_head = (self._tr_head + t) % self.capacity
        self._n_obs += t + 1
        self._n_tr += t
        self._n_success += int(success)
        self.episodes_added += 1
        self._index_cache = None

    @classmethod
    def from_episodes(cls, episodes, capacity=None, max_episodes=None, labels=None,
                      task='grasp'):
        """Build a buffer from dataset episode dicts (``learning.data.load_episodes``).

        Each dict has ``observations`` (or flat) ``image`` uint8 (T+1, H, W, 3) and
        ``proprio`` (T+1, 6), ``actions`` (T, 7), ``rewards`` (T,), ``terminations`` and
        ``truncations`` (T,) bool; an episode counts as terminated when any termination flag
        is set; its ``intervention`` flags (when present) mark the operator's steps.
        Episodes without transitions are skipped. For a task without an image the
        observations hold ``state`` (T+1, D) (``proprio`` is accepted too) and no image.

        Args:
            capacity: default = the total transitions (at least 1).
            max_episodes: default = the number of episodes (at least 1).
            labels: optional list of per-episode label dicts (``add_episode``), one per
                episode in the same order.
            task: ``core.task.Task`` or its name (default 'grasp').
        """
        episodes = list(episodes)
        if labels is not None and len(labels) != len(episodes):
            raise ValueError(f'labels has {len(labels)} entries for {len(episodes)} episodes')
        lengths = [len(np.asarray(ep['actions'])) for ep in episodes]
        if capacity is None:
            capacity = max(1, int(sum(lengths)))
        if max_episodes is None:
            max_episodes = max(1, len(episodes))
        buf = cls(capacity, max_episodes, task=task)
        for i, (ep, t) in enumerate(zip(episodes, lengths)):
            if t == 0:
                continue
            obs = ep.get('observations', ep)
            term = np.asarray(ep.get('terminations', np.zeros(t, bool)))
            if buf.task.has_image:
                image, state = np.asarray(obs['image'])[:t + 1], obs['proprio']
            else:
                image, state = None, obs['state'] if 'state' in obs else obs['proprio']
            buf.add_episode(image, np.asarray(state)[:t + 1], ep['actions'], ep['rewards'],
                            terminated=bool(np.any(term)),
                            labels=None if labels is None else labels[i],
                            intervention=ep.get('intervention'))
        return buf

    # -- sampling --------------------------------------------------------------------------
    def _index_sets(self):
        """Return (successful, unsuccessful) int64 arrays of valid transition slots."""
        if self._index_cache is None:
            succ, fail = [], []
            for ep in self._episodes:
                idx = (ep['tr_start'] + np.arange(ep['n_tr'])) % self.capacity
                (succ if ep['success'] else fail).append(idx)
            cat = lambda parts: (np.concatenate(parts) if parts  # noqa: E731
                                 else np.zeros(0, np.int64))
            self._index_cache = (cat(succ), cat(fail))
        return self._index_cache

    def sample(self, batch_size, success_share=0.0, rng=None, successful_only=False):
        """Sample ``batch_size`` transitions with replacement.

        Args:
            batch_size: B, int >= 1.
            success_share: fraction of the batch (``round(share * B)`` rows) drawn from
                successful episodes, the rest from unsuccessful ones (AW-Opt's 50 % critic
                batches). 0 means uniform over all transitions; when the buffer holds only
                successful or only unsuccessful episodes the batch is uniform too.
            rng: ``np.random.Generator`` or seed.
            successful_only: draw only from successful episodes (the actor's batch under
                positive filtering).

        Returns:
            dict of numpy arrays: ``image`` uint8 (B, H, W, 3), ``proprio`` float32 (B, 6),
            ``action`` float32 (B, 7), ``reward`` float32 (B,), ``done`` float32 (B,) (1 only
            on terminal transitions), ``next_image`` uint8 (B, H, W, 3), ``next_proprio``
            float32 (B, 6), ``success`` bool (B,), ``intervention`` bool (B,), ``index``
            int64 (B,) transition slots;
            plus the buffer's label arrays (:data:`LABEL_KEYS`, B rows each). A task without
            an image: no ``image`` / ``next_image``; ``proprio`` / ``next_proprio`` are the
            (B, D) states and ``action`` is (B, A).

        Raises:
            ValueError: empty buffer, bad arguments, or ``successful_only`` without any
                successful episode.
        """
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f'batch_size must be an int >= 1, got {batch_size!r}')
        if not _is_real(success_share) or not 0.0 <= success_share <= 1.0:
            raise ValueError(f'success_share must be in [0, 1], got {success_share!r}')
        if self._n_tr == 0:
            raise ValueError('cannot sample from an empty replay buffer')
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        succ, fail = self._index_sets()
        b = int(batch_size)
        if successful_only:
            if len(succ) == 0:
                raise ValueError('successful_only=True but the buffer holds no successful '
                                 'episode')
            idx = succ[rng.integers(0, len(succ), b)]
        elif success_share <= 0.0 or len(succ) == 0 or len(fail) == 0:
            pool = np.concatenate([succ, fail])
            idx = pool[rng.integers(0, len(pool), b)]
        else:
            n_s = int(round(success_share * b))
            idx = np.concatenate([succ[rng.integers(0, len(succ), n_s)],
                                  fail[rng.integers(0, len(fail), b - n_s)]])
            idx = idx[rng.permutation(b)]
        o, n = self.obs_index[idx], self.next_obs_index[idx]
        batch = {'image': None, 'proprio': self.proprio[o],
                 'action': self.action[idx], 'reward': self.reward[idx],
                 'done': self.done[idx], 'next_image': None,
                 'next_proprio': self.proprio[n], 'success': self.success[idx],
                 'intervention': self.intervention[idx], 'index': idx}
        if self.image is None:                  # a task without an image
            del batch['image'], batch['next_image']
        else:
            batch['image'], batch['next_image'] = self.image[o], self.image[n]
        for k, v in self.labels.items():
            batch[k] = v[idx]
        return batch


# ---------------------------------------------------------------------------------------------
# Learner
# ---------------------------------------------------------------------------------------------

_BATCH_KEYS = ('image', 'proprio', 'action', 'reward', 'done', 'next_image', 'next_proprio',
               'success')
#: Critic batch keys of a task without an image.
_STATE_BATCH_KEYS = tuple(k for k in _BATCH_KEYS if k not in ('image', 'next_image'))


def _tensors(batch, keys):
    """Return dict of torch tensors for ``keys`` of a numpy batch (see ReplayBuffer.sample)."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f'batch lacks {missing}; it needs {list(keys)}')
    out = {}
    for k in keys:
        v = batch[k]
        if isinstance(v, torch.Tensor):
            out[k] = v
            continue
        v = np.asarray(v)
        if k in ('image', 'next_image'):
            if v.dtype != np.uint8:
                raise ValueError(f'batch[{k!r}] must be uint8, got {v.dtype}')
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
        elif k in ('success', 'intervention') + _BOOL_LABELS:
            out[k] = torch.from_numpy(v.astype(bool))
        else:
            out[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    return out


class Learner:
    """AW-Opt / AWAC / QT-Opt / BC learner over one :class:`LearnerConfig`.

    One learner serves every task (``config.task``, ``core.task``): a task with an image
    (grasp) trains the image :class:`Actor` / :class:`Critic`; a task without one
    (insertion) trains :class:`~awopt_ros.learning.networks.StateActor` /
    :class:`~awopt_ros.learning.critic.StateCritic` MLPs on its state vector with the same
    losses, targets, presets and CEM (over the task's continuous entries within its bounds).
    Everything that takes images takes ``None`` in their place there, and the proprio slot
    carries the task's state (D = ``task.state_dim``); actions are (A,) = ``task.action_dim``
    in the task's units::

        learner = Learner(make_config('awac', task='insertion', batch_size=256,
                                      state_actor={'zero_init_output': True}))
        learner.train(buffer, 1000)                    # buffer = ReplayBuffer(task='insertion')
        residual = learner.act(None, state, 'actor')   # float32 (3,) in [-1, 1]

    Attributes:
        config: the :class:`LearnerConfig`.
        task: the ``core.task.Task`` of ``config.task``.
        actor: :class:`Actor` / :class:`StateActor`, or None (``use_actor=False``).
        log_std: float32 (C,) ``torch.nn.Parameter`` (C continuous action entries, grasp 4),
            state-independent log std of the Gaussian over the continuous sub-actions in
            normalised units (fraction of the half range of the task's bounds); trained by
            Gaussian NLL with the actor mean detached, used only for exploration sampling
            (:meth:`act` 'actor_explore'). None without actor. Discrete sub-actions explore
            by Bernoulli(sigmoid(logit)).
        critic: online :class:`Critic` / :class:`StateCritic`, or None
            (``use_critic=False``).
        target1, target2: the delayed target critics (see the module docstring) or None.
        actor_ema: ``torch.optim.swa_utils.AveragedModel`` of the actor (``actor_ema_decay``
            > 0) or None.
        step: gradient steps taken (int).

    Args:
        config: :class:`LearnerConfig` (default: full AW-Opt).
    """

    def __init__(self, config=None):
        self.config = c = LearnerConfig() if config is None else config
        if not isinstance(c, LearnerConfig):
            raise ValueError(f'config must be a LearnerConfig, got {type(c).__name__}')
        if c.num_threads is not None:
            torch.set_num_threads(c.num_threads)
        self.task = task = c.task_spec
        n_c = len(task.continuous)
        if task.continuous != tuple(range(n_c)):
            raise ValueError(f'task {task.name!r}: the learner needs the continuous action '
                             f'entries first, then the discrete ones')
        self._n_cont, self._n_disc = n_c, len(task.discrete)
        seeds = np.random.SeedSequence(c.seed).spawn(4)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            if task.has_image:
                self.actor = Actor(c.actor) if c.use_actor else None
                self.critic = Critic(c.critic) if c.use_critic else None
            else:
                self.actor = StateActor(task, c.state_actor) if c.use_actor else None
                self.critic = StateCritic(task, c.state_critic) if c.use_critic else None
        self.log_std = None
        self.actor_opt = self.critic_opt = None
        self.target1 = self.target2 = self.actor_ema = None
        if self.actor is not None and c.actor_ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
            self.actor_ema = AveragedModel(
                self.actor, multi_avg_fn=get_ema_multi_avg_fn(c.actor_ema_decay),
                use_buffers=True)
        if self.actor is not None:
            self.log_std = torch.nn.Parameter(
                torch.full((n_c,), math.log(c.init_std), dtype=torch.float32))
            self.actor_opt = torch.optim.Adam(
                [{'params': list(self.actor.parameters()),
                  'weight_decay': c.actor_weight_decay},
                 {'params': [self.log_std], 'weight_decay': 0.0}], lr=c.actor_lr)
        if self.critic is not None:
            self.target1 = copy.deepcopy(self.critic).requires_grad_(False).eval()
            self.target2 = copy.deepcopy(self.critic).requires_grad_(False).eval()
            self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr)
        self.step = 0
        self.rng = np.random.default_rng(seeds[0])        # batch sampling in train()
        self.act_rng = np.random.default_rng(seeds[1])    # act() / episode_mode() default
        self._gen = torch.Generator().manual_seed(int(seeds[2].generate_state(1)[0]))
        self._target_cem = self._cem(c.target_cem, seeds[3])
        low = task.action_low[:n_c].astype(np.float64)
        high = task.action_high[:n_c].astype(np.float64)
        # Continuous action = centre + half * normalised (grasp: centre 0, half = high).
        self._centre_np = ((low + high) / 2.0).astype(np.float32)      # (C,)
        self._half_np = ((high - low) / 2.0).astype(np.float32)        # (C,)
        self._centred = bool(np.any(self._centre_np != 0.0))
        self._half = torch.as_tensor(self._half_np).reshape(1, n_c)
        self._centre = torch.as_tensor(self._centre_np).reshape(1, n_c)
        self._w = torch.as_tensor(c.weights, dtype=torch.float32)
        self._log_std_range = (math.log(c.min_std), math.log(c.max_std))

    def _cem(self, config, seed):
        """A :class:`~awopt_ros.core.cem.CEM` over the task's action box."""
        t = self.task
        return CEM(config, low=t.action_low, high=t.action_high, discrete=t.discrete, seed=seed)

    def _physical(self, cont_n):
        """Normalised continuous entries (..., C) -> the task's units (same array type)."""
        if isinstance(cont_n, torch.Tensor):
            out = cont_n * self._half
            return out + self._centre if self._centred else out
        out = cont_n * self._half_np
        return out + self._centre_np if self._centred else out

    def _normalised(self, cont):
        """Continuous entries (N, C) in the task's units -> normalised, clamped to [-1, 1]."""
        if self._centred:
            cont = cont - self._centre
        return (cont / self._half).clamp(-1.0, 1.0)

    @property
    def deployed_actor(self):
        """The actor to export and deploy: the weight average with ``actor_ema_decay`` > 0,
        else the actor itself (None without actor)."""
        return self.actor if self.actor_ema is None else self.actor_ema.module

    # -- policies --------------------------------------------------------------------------
    def _actor_action(self, image, proprio):
        """Deterministic actor action float32 (N, 7): Gaussian mean (physical units) and
        discrete 1.0 where logit > 0 (``networks.ActorPolicy``). No gradient."""
        with torch.no_grad():
            mean_n, logits = self.actor.normalised(image, proprio)
            return self._compose(mean_n, logits)

    def _compose(self, mean_n, logits):
        """(N, C) normalised continuous + (N, S) logits -> (N, A) deterministic action
        (grasp: 4 + 3 -> 7)."""
        return torch.cat([self._physical(mean_n.clamp(-1.0, 1.0)),
                          (logits > 0).to(torch.float32)], dim=1)

    def _sample_policy(self, mean_n, logits, n):
        """Return float32 (N, n, A) samples of the exploration policy (torch generator):
        continuous ``centre + clip(mean_n + std * eps, -1, 1) * half``, discrete Bernoulli."""
        N, n_c = mean_n.shape[0], self._n_cont
        std = torch.exp(self.log_std.detach()).reshape(1, 1, n_c)
        eps = torch.randn((N, n, n_c), generator=self._gen)
        cont = self._physical((mean_n[:, None, :] + std * eps).clamp(-1.0, 1.0))
        u = torch.rand((N, n, self._n_disc), generator=self._gen)
        disc = (u < torch.sigmoid(logits)[:, None, :]).to(torch.float32)
        return torch.cat([cont, disc], dim=2)

    # -- Bellman targets -------------------------------------------------------------------
    @torch.no_grad()
    def _targets(self, next_image, next_proprio, reward, done):
        """Return (y (B,), a* (B, A), q1 (B,), q2 (B,)) as torch tensors (``next_image``
        None for a task without an image).

        ``y = clip(r + gamma * (1 - done) * min(Q_t1, Q_t2)(s', a*), 0, 1)`` with ``a*`` per
        ``config.target`` (QT-Opt eq. for the target; AW-Opt maxQ / ActorCandidate).
        """
        c = self.config
        b = next_proprio.shape[0]
        feats1 = self.target1.encode(next_image)             # (B, C, h, w), once; None: state
        if c.target == 'actor':
            a_star = self._actor_action(next_image, next_proprio)
        else:
            extra = None
            if c.target == 'cem+actor':
                extra = self._actor_action(next_image, next_proprio)[:, None, :].numpy()
            score_fn = self.target1.make_score_fn(feats1, next_proprio, use_q=True)
            result = self._target_cem.maximise(score_fn, b, extra_candidates=extra)
            a_star = torch.from_numpy(result.actions)
        q1 = torch.sigmoid(self.target1.head(feats1, next_proprio, a_star))
        q2 = torch.sigmoid(self.target2(next_image, next_proprio, a_star))
        y = reward + c.gamma * (1.0 - done) * torch.minimum(q1, q2)
        return y.clamp(0.0, 1.0), a_star, q1, q2

    def compute_targets(self, batch, augment=False):
        """Return the Bellman targets of a numpy batch (no gradient step).

        Args:
            batch: dict as returned by :meth:`ReplayBuffer.sample` (needs ``reward``,
                ``done``, ``next_image`` (not for a task without an image), ``next_proprio``).
            augment: apply the random-shift augmentation to ``next_image`` (as in update).

        Returns:
            dict of numpy float32: ``target`` (B,) in [0, 1], ``action`` (B, A) the target
            action a*, ``q1`` / ``q2`` (B,) the two target critics' Q at a*.

        Raises:
            ValueError: no critic, or a malformed batch.
        """
        if self.critic is None:
            raise ValueError('compute_targets needs a critic (use_critic=False)')
        if not self.task.has_image:
            t = _tensors(batch, ('reward', 'done', 'next_proprio'))
            y, a_star, q1, q2 = self._targets(None, t['next_proprio'], t['reward'], t['done'])
            return {'target': y.numpy(), 'action': a_star.numpy(), 'q1': q1.numpy(),
                    'q2': q2.numpy()}
        t = _tensors(batch, ('reward', 'done', 'next_image', 'next_proprio'))
        nimg = random_shift(t['next_image'], self.config.shift_px, self._gen) if augment \
            else t['next_image']
        y, a_star, q1, q2 = self._targets(nimg, t['next_proprio'], t['reward'], t['done'])
        return {'target': y.numpy(), 'action': a_star.numpy(), 'q1': q1.numpy(),
                'q2': q2.numpy()}

    # -- updates ---------------------------------------------------------------------------
    def _refresh_targets(self):
        """target2 <- target1, target1 <- online critic (hard copies)."""
        self.target2.load_state_dict(self.target1.state_dict())
        self.target1.load_state_dict(self.critic.state_dict())

    def _critic_step(self, batch):
        c = self.config
        if self.task.has_image:
            t = _tensors(batch, _BATCH_KEYS)
            img = random_shift(t['image'], c.shift_px, self._gen)
            nimg = random_shift(t['next_image'], c.shift_px, self._gen)
        else:
            t = _tensors(batch, _STATE_BATCH_KEYS)
            img = nimg = None
        y, _, q1, q2 = self._targets(nimg, t['next_proprio'], t['reward'], t['done'])
        logits = self.critic(img, t['proprio'], t['action'])
        loss = critic_loss(logits, y)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {'critic_loss': float(loss.detach()),
                'q_mean': float(torch.sigmoid(logits.detach()).mean()),
                'target_mean': float(y.mean()),
                'target_q_next_mean': float(torch.minimum(q1, q2).mean()),
                'critic_success_frac': float(t['success'].to(torch.float32).mean()),
                'done_frac': float(t['done'].mean())}

    def _actor_step(self, batch):
        c = self.config
        nan = float('nan')
        empty = {'actor_loss': nan, 'std_nll': nan, 'adv_mean': nan, 'weight_mean': nan,
                 'weight_max': nan, 'actor_samples': 0.0, 'actor_failed_samples': 0.0,
                 'exploration_std': float(torch.exp(self.log_std.detach()).mean())}
        if c.grasp_target:
            empty['target_loss'] = nan
            if c.actor.grasp_pose:
                empty['pose_loss'] = nan
        if batch is None:
            return empty
        keys = ['image', 'proprio', 'action', 'success'] if self.task.has_image \
            else ['proprio', 'action', 'success']
        if c.grasp_target:
            keys += ['target_xy', 'target_mask'] + (['target_pose'] if c.actor.grasp_pose
                                                    else [])
            if not all(k in batch for k in keys):
                raise ValueError(f"an actor with pooling 'target' needs the batch labels "
                                 f"{keys[4:]} (ReplayBuffer labels, learning.targets."
                                 f"episode_labels); the batch has {sorted(batch)}")
        keys += [k for k in ('actor_action', 'actor_mask', 'intervention') if k in batch]
        t = _tensors(batch, keys)
        keep = t.pop('actor_mask', torch.ones_like(t['success']))    # not the misses' steps
        if c.positive_filter:                       # AW-Opt: 1[success] in the actor update
            keep = keep & t['success']
        if not bool(keep.all()):
            t = {k: v[keep] for k, v in t.items()}
        n = t['action'].shape[0]
        if n == 0:
            return empty
        pro = t['proprio']
        act = t.get('actor_action', t['action'])       # relabelled actions where given
        n_c = self._n_cont
        if c.grasp_target:            # teacher forcing on the labelled grasp point, no shift
            img = t['image']
            feats, scores = self.actor.target_features(img, t['target_xy'])
            mean_n, logits = self.actor.head(feats, pro)
        elif self.task.has_image:
            img = random_shift(t['image'], c.shift_px, self._gen)
            mean_n, logits = self.actor.normalised(img, pro)           # (n, 4), (n, 3)
        else:
            img = None
            mean_n, logits = self.actor.normalised(None, pro)          # (n, C), (n, S)
        target_n = self._normalised(act[:, :n_c])
        per_sample = (self._w[:n_c] * (mean_n - target_n) ** 2).sum(1)  # (n,)
        if self._n_disc:
            target_d = (act[:, n_c:] > 0.5).to(torch.float32)
            per_sample = per_sample + (self._w[n_c:] * F.binary_cross_entropy_with_logits(
                logits, target_d, reduction='none')).sum(1)

        adv = torch.zeros(n)
        if c.advantage_weighting:
            with torch.no_grad():
                critic_feats = self.target1.encode(img)
                if c.advantage_samples == 0:
                    pi = self._compose(mean_n.detach(), logits.detach())[:, None, :]
                else:
                    pi = self._sample_policy(mean_n.detach(), logits.detach(),
                                             c.advantage_samples)
                cand = torch.cat([act[:, None, :], pi], dim=1)           # (n, 1 + S, 7)
                q = torch.sigmoid(self.target1.score_candidates(critic_feats, pro, cand))
                adv = q[:, 0] - q[:, 1:].mean(1)
                weight = torch.exp(adv / c.awac_lambda).clamp(max=c.max_weight)
                if c.normalise_weights:
                    weight = weight / weight.mean()
        else:
            weight = torch.ones(n)
        if 'intervention' in t and c.intervention_weight != 1.0:   # the operator's steps
            weight = weight * torch.where(t['intervention'],
                                          torch.tensor(c.intervention_weight), torch.tensor(1.0))
        actor_loss = (weight * per_sample).mean()
        extra = {}
        if c.grasp_target:
            mask = t['target_mask']
            part = target_loss(self.actor, scores, t['target_xy'], mask,
                               c.target_sigma_cells, weight=weight)
            extra['target_loss'] = float(part.detach())
            actor_loss = actor_loss + c.target_weight * part
            if c.actor.grasp_pose:
                part = pose_loss(self.actor.grasp_pose(feats), t['target_pose'], mask,
                                 weight=weight)
                extra['pose_loss'] = float(part.detach())
                actor_loss = actor_loss + c.pose_weight * part
        std = torch.exp(self.log_std)
        nll = (0.5 * ((target_n - mean_n.detach()) / std) ** 2 + self.log_std).sum(1)
        std_nll = (weight * nll).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        (actor_loss + std_nll).backward()
        self.actor_opt.step()
        with torch.no_grad():
            self.log_std.clamp_(*self._log_std_range)
        if self.actor_ema is not None:
            self.actor_ema.update_parameters(self.actor)
        return {'actor_loss': float(actor_loss.detach()), 'std_nll': float(std_nll.detach()),
                'adv_mean': float(adv.mean()), 'weight_mean': float(weight.mean()),
                'weight_max': float(weight.max()), 'actor_samples': float(n),
                'actor_failed_samples': float((~t['success']).sum()),
                'exploration_std': float(torch.exp(self.log_std.detach()).mean()), **extra}

    def update(self, batch, actor_batch=None, critic_only=False):
        """One gradient step of the critic and/or the actor.

        Args:
            batch: numpy dict from :meth:`ReplayBuffer.sample` for the critic (and the actor
                when ``actor_batch`` is None). May be None for an actor-only learner when
                ``actor_batch`` is given.
            actor_batch: optional separate actor batch (e.g. ``successful_only=True``). With
                ``positive_filter`` the rows of unsuccessful episodes are always dropped from
                the actor batch, so the actor never trains on them; rows whose ``actor_mask``
                label is False (the misses of an episode that grasped again) are dropped too;
                when no row is left the actor step is skipped (``actor_samples`` 0, actor
                losses NaN).
            critic_only: step only the critic (and count the step, refresh the targets);
                the actor and its std stay as they are: a critic warm-up before actor
                updates, as residual RL does (FACTS.md "Residual RL practice"). Needs a
                critic; the returned dict then has no actor keys.

        Returns:
            dict of floats, the same keys for every call of one config: ``step``; with the
            critic ``critic_loss`` (nats), ``q_mean``, ``target_mean``,
            ``target_q_next_mean``, ``critic_success_frac``, ``done_frac``; with the actor
            ``actor_loss`` (weighted L_A), ``std_nll``, ``adv_mean``, ``weight_mean``,
            ``weight_max``, ``actor_samples``, ``actor_failed_samples``,
            ``exploration_std``; for a grasp-target actor also ``target_loss`` (and
            ``pose_loss`` with the grasp-pose head), the advantage-weighted terms included in
            ``actor_loss``. Target critics are refreshed after the step when
            ``step % target_update_period == 0``.

        Raises:
            ValueError: a malformed batch, or no batch for a component that needs one.
        """
        stats = {}
        if critic_only and self.critic is None:
            raise ValueError('critic_only needs a critic (use_critic=False)')
        if self.critic is not None:
            if batch is None:
                raise ValueError('update needs a critic batch (batch is None)')
            self.critic.train()
            stats.update(self._critic_step(batch))
        if self.actor is not None and not critic_only:
            self.actor.train()
            stats.update(self._actor_step(actor_batch if actor_batch is not None else batch))
        self.step += 1
        if self.critic is not None and self.step % self.config.target_update_period == 0:
            self._refresh_targets()
        stats['step'] = float(self.step)
        return stats

    def sample_batches(self, buffer, rng=None, critic_only=False):
        """Return (critic batch or None, actor batch or None) from ``buffer`` per the config.

        Critic: ``buffer.sample(B, success_share)``. Actor: with ``positive_filter`` a
        separate ``successful_only`` batch (None when the buffer holds no success); without
        it, the critic batch when that one is uniform (``success_share == 0``), else a
        separate uniform batch. ``critic_only`` draws no actor batch (None).
        """
        c = self.config
        rng = self.rng if rng is None else rng
        cb = buffer.sample(c.batch_size, c.success_share, rng) if c.use_critic else None
        ab = None
        if c.use_actor and not critic_only:
            if c.positive_filter:
                if buffer.num_successful > 0:
                    ab = buffer.sample(c.batch_size, 0.0, rng, successful_only=True)
            elif cb is not None and c.success_share == 0.0:
                ab = cb
            else:
                ab = buffer.sample(c.batch_size, 0.0, rng)
        return cb, ab

    def train(self, buffer, steps, progress=None, critic_only=False):
        """Run ``steps`` gradient steps on batches from ``buffer``.

        Args:
            buffer: :class:`ReplayBuffer`.
            steps: int >= 0.
            progress: True shows a tqdm bar.
            critic_only: train only the critic (warm-up before actor updates; see
                :meth:`update`); needs a critic.

        Returns:
            dict: key -> list of floats, one entry per step (keys of :meth:`update`).

        Raises:
            ValueError: empty buffer, a buffer of another task, an actor-only config with
                positive filtering and no successful episode in the buffer, or a grasp-target
                actor and a buffer without its labels.
        """
        if not _is_int(steps) or steps < 0:
            raise ValueError(f'steps must be an int >= 0, got {steps!r}')
        if buffer.num_transitions == 0:
            raise ValueError('the replay buffer is empty')
        c = self.config
        if buffer.task.name != c.task:
            raise ValueError(f'the replay buffer holds task {buffer.task.name!r}, this '
                             f'learner learns {c.task!r}')
        if c.grasp_target:
            need = {'target_xy', 'target_mask'} | ({'target_pose'} if c.actor.grasp_pose
                                                   else set())
            missing = sorted(need - set(buffer.label_keys or ()))
            if missing:
                raise ValueError(f"an actor with pooling 'target' needs the replay buffer "
                                 f"labels {missing} (learning.targets.episode_labels)")
        if critic_only and not c.use_critic:
            raise ValueError(f'critic_only needs a critic; preset {c.name!r} has none')
        if not critic_only and not c.use_critic and c.positive_filter \
                and buffer.num_successful == 0:
            raise ValueError(f'preset {c.name!r} trains only the actor with positive '
                             f'filtering, and the buffer holds no successful episode')
        history = {}
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps, desc=c.name, unit='step', dynamic_ncols=True)
        for _ in range(steps):
            cb, ab = self.sample_batches(buffer, critic_only=critic_only)
            stats = self.update(cb if cb is not None else ab, ab, critic_only=critic_only)
            for k, v in stats.items():
                history.setdefault(k, []).append(v)
            if bar is not None:
                bar.update(1)
                shown = {k: f'{stats[k]:.4f}' for k in ('critic_loss', 'actor_loss')
                         if k in stats}
                bar.set_postfix(shown, refresh=False)
        if bar is not None:
            bar.close()
        return history

    # -- acting ----------------------------------------------------------------------------
    def episode_mode(self, rng=None):
        """Return the policy of the next exploration episode: 'actor' or 'cem'.

        'actor' exploration -> always 'actor'; 'cem' -> always 'cem'; 'switch' -> 'cem' with
        probability ``cem_episode_prob`` (AW-Opt ELRS: 0.8), else 'actor'. The rollout then
        calls :meth:`act` with mode 'actor_explore' (or 'actor') or 'cem' for every step.
        """
        c = self.config
        if c.exploration != 'switch':
            return c.exploration
        rng = self.act_rng if rng is None else rng
        return 'cem' if rng.random() < c.cem_episode_prob else 'actor'

    def act_batch(self, images, proprios, mode='actor', rng=None):
        """Actions for N states at once; see :meth:`act`. images uint8 (N, H, W, 3) (None for
        a task without an image), proprios float32 (N, D) (grasp: 6; insertion: the 15-D
        state) -> float32 (N, A) (grasp: 7)."""
        if mode not in ACT_MODES:
            raise ValueError(f'mode must be one of {ACT_MODES}, got {mode!r}')
        if mode.startswith('actor') and self.actor is None:
            raise ValueError(f'mode {mode!r} needs an actor (use_actor=False)')
        if mode == 'cem' and self.critic is None:
            raise ValueError("mode 'cem' needs a critic (use_critic=False)")
        task = self.task
        proprios = np.asarray(proprios, dtype=np.float32)
        if task.has_image:
            if images is None:
                raise ValueError(f'task {task.name!r} needs images, got None')
            images = np.asarray(images)
            size = self.config.image_size
            if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
                raise ValueError(f'images must be uint8 (N, {size}, {size}, 3), got '
                                 f'{images.dtype} {images.shape}')
            n = images.shape[0]
            if proprios.shape != (n, task.state_dim):
                raise ValueError(f'proprios must be (N={n}, {task.state_dim}), '
                                 f'got {proprios.shape}')
            img = torch.from_numpy(np.ascontiguousarray(images))
        else:
            if images is not None:
                raise ValueError(f'task {task.name!r} has no image: pass images=None')
            if proprios.ndim != 2 or proprios.shape[1] != task.state_dim:
                raise ValueError(f'{task.name} states must be (N, {task.state_dim}) '
                                 f'{task.state_names}, got {proprios.shape}')
            if not np.all(np.isfinite(proprios)):
                raise ValueError(f'{task.name} states contain non-finite values')
            n, img = proprios.shape[0], None
        rng = self.act_rng if rng is None else rng
        pro = torch.from_numpy(np.ascontiguousarray(proprios))
        n_c, n_d = self._n_cont, self._n_disc
        with torch.no_grad():
            if mode == 'cem':
                feats = self.critic.encode(img)
                extra = None
                if self.actor is not None:
                    extra = self._actor_action(img, pro)[:, None, :].numpy()
                cem = self._cem(self.config.deploy_cem, rng)
                out = cem.maximise(self.critic.make_score_fn(feats, pro), n,
                                   extra_candidates=extra).actions
            else:
                mean_n, logits = self.actor.normalised(img, pro)
                mean_n, logits = mean_n.numpy(), logits.numpy()
                out = np.empty((n, task.action_dim), dtype=np.float32)
                if mode == 'actor':
                    out[:, :n_c] = self._physical(np.clip(mean_n, -1.0, 1.0))
                    out[:, n_c:] = logits > 0
                else:
                    std = np.exp(self.log_std.detach().numpy())
                    z = mean_n + std * rng.standard_normal((n, n_c))
                    out[:, :n_c] = self._physical(np.clip(z, -1.0, 1.0))
                    if n_d:
                        out[:, n_c:] = rng.random((n, n_d)) < 1.0 / (1.0 + np.exp(-logits))
        out = np.clip(np.asarray(out, dtype=np.float32), task.action_low, task.action_high)
        if n_d:
            out[:, n_c:] = (out[:, n_c:] > 0.5).astype(np.float32)
        return out

    def act(self, image, proprio, mode='actor', rng=None):
        """Action for one state (in-process rollouts).

        Args:
            image: uint8 (H, W, 3) RGB, H = W = ``config.image_size``; None for a task
                without an image.
            proprio: float32 (D,): the task's state (grasp: ``spec.PROPRIO_NAMES``;
                insertion: ``core.task.INSERTION_STATE_NAMES``, raw units).
            mode: 'actor' (Gaussian mean, discrete 1 where logit > 0), 'actor_explore'
                (Gaussian sample with the learned std, clipped to the bounds; discrete
                Bernoulli(sigmoid(logit))), or 'cem' (CEM over the ONLINE critic with
                ``config.deploy_cem``, the actor's deterministic action as an extra candidate
                when there is an actor; QT-Opt / AW-Opt CEM policy).
            rng: ``np.random.Generator`` for the sampling (default: the learner's act rng).

        Returns:
            float32 (A,) action in the task's units (grasp: 7, physical units), within the
            task's bounds, discrete entries exactly 0.0 or 1.0.

        Raises:
            ValueError: unknown mode, a mode needing a missing network, or bad shapes.
        """
        image = None if image is None else np.asarray(image)[None]
        return self.act_batch(image, np.asarray(proprio, dtype=np.float32)
                              .reshape(1, -1), mode, rng)[0]

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self):
        """Return a checkpoint dict (``torch.save``-able): format, config (dict), step,
        network / target / optimiser state dicts, ``log_std`` and the RNG states (sampling,
        acting, augmentation, target CEM) so that training continues identically."""
        sd = {'format': CHECKPOINT_FORMAT, 'config': self.config.to_dict(), 'step': self.step,
              'rng': self.rng.bit_generator.state, 'act_rng': self.act_rng.bit_generator.state,
              'torch_gen': self._gen.get_state(),
              'target_cem_rng': self._target_cem.rng.bit_generator.state}
        if self.actor is not None:
            sd.update(actor=self.actor.state_dict(), log_std=self.log_std.detach().clone(),
                      actor_opt=self.actor_opt.state_dict())
            if self.actor_ema is not None:
                sd['actor_ema'] = self.actor_ema.state_dict()
        if self.critic is not None:
            sd.update(critic=self.critic.state_dict(), target1=self.target1.state_dict(),
                      target2=self.target2.state_dict(),
                      critic_opt=self.critic_opt.state_dict())
        return sd

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict` (same network shapes and components).

        Raises:
            ValueError: wrong format, a checkpoint of another task (one without a stored
                task is a grasp one), or components that do not match this learner's config.
        """
        if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
            raise ValueError(f'not an awopt learner checkpoint (format '
                             f'{state.get("format") if isinstance(state, dict) else None!r},'
                             f' expected {CHECKPOINT_FORMAT!r})')
        stored = dict(state.get('config') or {}).get('task', 'grasp')
        if stored != self.config.task:
            raise ValueError(f'checkpoint is for task {stored!r}, this learner learns '
                             f'{self.config.task!r}')
        for part, net in (('actor', self.actor), ('critic', self.critic)):
            if (part in state) != (net is not None):
                raise ValueError(f'checkpoint {"has" if part in state else "lacks"} an {part}'
                                 f' but this learner {"has none" if net is None else "has one"}')
        if self.actor is not None:
            self.actor.load_state_dict(state['actor'])
            with torch.no_grad():
                self.log_std.copy_(torch.as_tensor(state['log_std']))
            self.actor_opt.load_state_dict(state['actor_opt'])
            if self.actor_ema is not None:
                if 'actor_ema' in state:
                    self.actor_ema.load_state_dict(state['actor_ema'])
                else:           # e.g. finetuning a checkpoint trained without the average
                    self.actor_ema.module.load_state_dict(state['actor'])
        if self.critic is not None:
            self.critic.load_state_dict(state['critic'])
            self.target1.load_state_dict(state['target1'])
            self.target2.load_state_dict(state['target2'])
            self.critic_opt.load_state_dict(state['critic_opt'])
        self.step = int(state['step'])
        self.rng.bit_generator.state = state['rng']
        self.act_rng.bit_generator.state = state['act_rng']
        self._gen.set_state(state['torch_gen'])
        self._target_cem.rng.bit_generator.state = state['target_cem_rng']

    @classmethod
    def from_state_dict(cls, state, **overrides):
        """Build a learner from a checkpoint's stored config (``overrides`` replace fields,
        e.g. ``num_threads``) and load it."""
        cfg = dict(state['config'])
        cfg.update(overrides)
        learner = cls(LearnerConfig(**cfg))
        learner.load_state_dict(state)
        return learner
