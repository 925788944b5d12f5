"""Which policy acts: the actor, CEM over the critic, or an episode-level switch (AW-Opt).

ROS-free (numpy + onnxruntime through :mod:`awopt_ros.core.onnx_policy` and
:mod:`awopt_ros.core.onnx_critic`); the policy node (``awopt_ros.nodes.policy``) is a thin
wrapper around :class:`PolicyRuntime`.

Modes
-----
* ``'actor'``: the actor acts. When it is missing for the step or returns an invalid action
  (non-finite, outside ``spec.ACTION_LOW/HIGH``, discrete entries other than 0/1), CEM over the
  critic acts instead (if a critic is loaded).
* ``'cem'``: CEM over the critic acts (QT-Opt policy); the actor's action, when the actor is
  loaded and valid, is one more CEM candidate in every iteration (AW-Opt "actor candidate").
* ``'switch'``: AW-Opt's episode-level random switching for exploration (Lu et al. 2021):
  :meth:`PolicyRuntime.begin_episode` draws the episode's policy, CEM with probability
  ``cem_episode_prob`` (0.8) and the actor otherwise, and the episode runs as in the matching
  mode above.

Every step reports its ``source`` ('actor' or 'cem'): the policy that chose the action, which
the dataset logs per step (``core.dataset.POLICY_IDS``).

Exploration noise (data collection, finetuning): with ``actor_noise_std`` > 0 an action the
actor chose gets independent Gaussian noise on its continuous sub-actions (``dx, dy, dz,
dyaw``), ``std = actor_noise_std`` in units of each one's half range ``spec.ACTION_HIGH``,
clipped to the bounds; the discrete sub-actions are kept. It plays the role of the Gaussian
actor's sampling in AWAC / AW-Opt data collection (Nair et al. 2020; Lu et al. 2021): a
deterministic actor only ever repeats itself, so positive filtering would keep nothing but its
own successes with its own actions. The actor's noise-free action stays the CEM candidate.
Default 0 (deployment: no noise).

With ``actor_sample_discrete`` the discrete sub-actions of an action the actor chose are
drawn from the actor's Bernoulli distribution (``open, close, terminate`` each set with the
probability ``discrete_prob`` its ONNX graph outputs) instead of thresholded at 0.5: the
stochastic actor of AWAC / AW-Opt samples its discrete sub-actions as well. It matters where
the actor is unsure: after a missed grasp the shipped actor lifts an empty, closed gripper
and then asks for open and close at once with probabilities of about 0.45-0.9 and 0.55-0.75
(the arm used to keep the gripper closed then, and the actor never reopened; the
arm now opens a gripper that holds nothing, ``core.arm.gripper_target``); sampled, it
reopens within a few steps and tries again, and finetuning has episodes that tell the two
apart. An actor without the ``discrete_prob`` output (exports before 2026-12-02) keeps its
thresholded bits; the step reports ``discrete_sampled`` False. Default off (deployment).

Hot swap of newly exported models
---------------------------------
:meth:`PolicyRuntime.reload_if_changed` stats the model files (``(st_mtime_ns, st_size)``,
:class:`ModelWatcher`). A changed file group (the actor file; or the critic encoder + head
pair) is loaded once its signature has stayed unchanged for ``settle_s`` (watcher clock), and
its contract and its graph's io (types, shapes, a warm-up run) are checked exactly as at
start-up. A file that is missing, unreadable or mismatching is rejected with an error
message and the old model keeps running; a rejected signature is retried only after the
file changes again. Loading is done
by the caller off the control path (the node runs it on its own thread); the swap itself is a
single reference assignment of an immutable :class:`ModelSet`, and :meth:`PolicyRuntime.act`
reads that reference once per step, so a step runs entirely on the old or entirely on the new
models and no step waits for a load.

Writer contract (trainers / exporters): write the new model to a temporary file in the SAME
directory (e.g. ``model.onnx.tmp``), close it, then ``os.replace(tmp, model.onnx)`` (atomic on
POSIX: readers see the old or the new complete file, never a partial one). For a critic pair,
replace the encoder first and the head last; a poll that falls between the two sees a pair
whose ``pair_id`` differs, rejects it (the old pair keeps running) and loads the pair once the
head lands. Writers that write in place are tolerated by ``settle_s`` > 0 (a file still growing
changes its signature and is not loaded yet), but are not recommended.

Versions: ``ModelSet.version`` counts the model sets (1 at start-up, +1 per swap) and
``ModelSet.files`` holds each loaded file's ``(mtime_ns, size)``; both are reported with every
decision and in :meth:`PolicyRuntime.model_info`.
"""
import os
import time
from dataclasses import dataclass, field

import numpy as np

from awopt_ros.core import spec
from awopt_ros.core.cem import CEM, CEMConfig
from awopt_ros.core.onnx_critic import OnnxCritic
from awopt_ros.core.onnx_policy import ModelContractError, OnnxActor

MODES = ('actor', 'cem', 'switch')
SOURCES = ('actor', 'cem')
#: Models each mode cannot run without ('actor' and 'cem' use the other one when present).
REQUIRED = {'actor': ('actor',), 'cem': ('critic',), 'switch': ('actor', 'critic')}
#: AW-Opt's share of CEM episodes in 'switch' mode.
DEFAULT_CEM_EPISODE_PROB = 0.8
_BOUND_ATOL = 1e-6


class NoPolicyError(RuntimeError):
    """No loaded policy can produce an action for this step; the message says why."""


def file_signature(path):
    """Return ``(st_mtime_ns, st_size)`` (ints) of ``path``; ``None`` if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (int(st.st_mtime_ns), int(st.st_size))


def check_action(action):
    """Return None if ``action`` is a valid actor output, else a one-line reason (str).

    Valid: shape (7,), finite, inside ``spec.ACTION_LOW/HIGH`` (atol 1e-6), and discrete
    entries (open, close, terminate) exactly 0.0 or 1.0 (the model contract).
    """
    a = np.asarray(action, dtype=np.float32)
    if a.shape != (spec.ACTION_DIM,):
        return f'action has shape {a.shape}, expected ({spec.ACTION_DIM},)'
    if not np.all(np.isfinite(a)):
        return f'action has non-finite entries {a.tolist()}'
    out = (a < spec.ACTION_LOW - _BOUND_ATOL) | (a > spec.ACTION_HIGH + _BOUND_ATOL)
    if np.any(out):
        names = [spec.ACTION_NAMES[i] for i in np.flatnonzero(out)]
        return f'action {a.tolist()} is out of bounds in {names}'
    disc = a[spec.DISCRETE]
    if np.any((disc != 0.0) & (disc != 1.0)):
        return f'discrete action entries {disc.tolist()} are not 0/1'
    return None


@dataclass(frozen=True)
class ModelPaths:
    """Model files to load and watch; ``''`` (or None) means that model is not used.

    Attributes:
        actor: actor ONNX file.
        critic_encoder: critic encoder ONNX file (given together with ``critic_head``).
        critic_head: critic head ONNX file.

    Raises:
        ValueError: only one of the two critic files given.
    """

    actor: str = ''
    critic_encoder: str = ''
    critic_head: str = ''

    def __post_init__(self):
        for name in ('actor', 'critic_encoder', 'critic_head'):
            object.__setattr__(self, name, str(getattr(self, name) or ''))
        if bool(self.critic_encoder) != bool(self.critic_head):
            raise ValueError('the critic needs both files: critic_encoder and critic_head '
                             f'(got {self.critic_encoder!r} and {self.critic_head!r})')

    def groups(self):
        """Return {'actor': (path,), 'critic': (encoder, head)} for the models that are set."""
        out = {}
        if self.actor:
            out['actor'] = (self.actor,)
        if self.critic_encoder:
            out['critic'] = (self.critic_encoder, self.critic_head)
        return out


@dataclass(frozen=True)
class ModelSet:
    """One immutable set of loaded models; replaced as a whole on a swap.

    Attributes:
        actor: ``OnnxActor`` (or any object with ``act(image, proprio) -> (7,)``), or None.
        critic: ``OnnxCritic`` (or any object with ``cem_action``), or None.
        version: int, 1 for the start-up set, +1 per swap.
        files: dict path -> ``(mtime_ns, size)`` of the files the models were loaded from
            (empty for models passed in as objects).
    """

    actor: object = None
    critic: object = None
    version: int = 1
    files: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of one :meth:`PolicyRuntime.reload_if_changed` call.

    Attributes:
        swapped: tuple of the groups replaced ('actor', 'critic'); empty if none.
        rejected: dict group -> error message for changed files that were not loaded (the old
            model keeps running).
        pending: tuple of groups that changed but have not settled yet.
        version: the model-set version after the call.
    """

    swapped: tuple = ()
    rejected: dict = field(default_factory=dict)
    pending: tuple = ()
    version: int = 1

    def __bool__(self):
        """True when something was swapped or rejected (worth reporting)."""
        return bool(self.swapped or self.rejected)


class ModelWatcher:
    """Decide when watched file groups changed and have settled.

    Args:
        groups: dict group name -> tuple of file paths (e.g. ``ModelPaths.groups()``).
        settle_s: a changed group is ready once its signature has been seen unchanged for at
            least this long (s, ``clock``); 0 = ready on the first poll that sees it.
        clock: monotonic time source in seconds (tests pass a fake one).

    A group's signature is the tuple of its files' :func:`file_signature` (None for a file
    that cannot be stat'ed). :meth:`mark` records the signature a group was loaded (or
    rejected) at; :meth:`poll` reports groups whose current signature differs from it.
    """

    def __init__(self, groups, settle_s=0.0, clock=time.monotonic):
        settle_s = float(settle_s)
        if not np.isfinite(settle_s) or settle_s < 0.0:
            raise ValueError(f'settle_s must be a finite value >= 0, got {settle_s!r}')
        self.groups = {k: tuple(str(p) for p in v) for k, v in groups.items()}
        self.settle_s = settle_s
        self._clock = clock
        self._marked = {}      # group -> signature last loaded or rejected
        self._candidate = {}   # group -> (signature, first seen s)

    def signature(self, group):
        """Return the current signature (tuple of ``(mtime_ns, size)`` or None) of ``group``."""
        return tuple(file_signature(p) for p in self.groups[group])

    def mark(self, group, signature):
        """Record that ``group`` was loaded (or rejected) at ``signature``."""
        self._marked[group] = signature
        self._candidate.pop(group, None)

    def poll(self):
        """Return ``(ready, pending)``: ready = {group: signature} changed and settled,
        pending = tuple of groups changed but not settled yet."""
        now = self._clock()
        ready, pending = {}, []
        for group in self.groups:
            sig = self.signature(group)
            if sig == self._marked.get(group):
                self._candidate.pop(group, None)
                continue
            cand = self._candidate.get(group)
            if cand is None or cand[0] != sig:
                cand = (sig, now)
                self._candidate[group] = cand
            if now - cand[1] >= self.settle_s:
                ready[group] = sig
            else:
                pending.append(group)
        return ready, tuple(pending)


class PolicyRuntime:
    """The acting policy: mode, current models, CEM and the episode-level switch.

    Args:
        mode: 'actor', 'cem' or 'switch' (see the module docstring).
        actor: loaded actor (``OnnxActor``) or None.
        critic: loaded critic (``OnnxCritic``) or None.
        cem_config: ``CEMConfig`` of the CEM policy (default: 2 iterations x 64 samples,
            6 elites, QT-Opt's deployed setting).
        cem_episode_prob: probability that a 'switch' episode runs CEM, in [0, 1].
        seed: seed of the episode switch, of CEM sampling and of the actor's exploration
            noise (None = from OS entropy).
        actor_noise_std: exploration noise on the actor's continuous sub-actions, std in
            units of their half range (module docstring); in [0, 1], 0 = none.
        actor_sample_discrete: draw the actor's discrete sub-actions from its Bernoulli
            probabilities (module docstring); False = thresholded.
        paths: ``ModelPaths`` the models were loaded from; they are watched by
            :meth:`reload_if_changed` (None = no hot swap).
        expected: contract fields new models must match (``onnx_policy.expected_contract``);
            None skips the check.
        intra_op_threads: onnxruntime intra-op threads of models loaded on a swap.
        settle_s: see :class:`ModelWatcher`.
        files: initial ``ModelSet.files`` (path -> (mtime_ns, size)) of the given models;
            also the signatures the watcher starts from (default: stat'ed now).

    Either model may be None here: :meth:`act` then falls back as documented (an actor
    episode without an actor runs CEM; without both it raises :class:`NoPolicyError`).
    :meth:`from_files`, the deployment entry point, insists on the mode's :data:`REQUIRED`
    models.

    Raises:
        ValueError: unknown mode, ``cem_episode_prob`` or ``actor_noise_std`` out of [0, 1].
    """

    def __init__(self, mode='actor', actor=None, critic=None, *, cem_config=None,
                 cem_episode_prob=DEFAULT_CEM_EPISODE_PROB, seed=None, paths=None,
                 expected=None, intra_op_threads=1, settle_s=0.0, files=None,
                 actor_noise_std=0.0, actor_sample_discrete=False):
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        p = float(cem_episode_prob)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f'cem_episode_prob must be in [0, 1], got {cem_episode_prob!r}')
        noise = float(actor_noise_std)
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f'actor_noise_std must be in [0, 1], got {actor_noise_std!r}')
        self.mode = mode
        self.cem_episode_prob = p
        self.actor_noise_std = noise
        self.actor_sample_discrete = bool(actor_sample_discrete)
        seeds = np.random.SeedSequence(seed).spawn(4)
        self._switch_rng = np.random.default_rng(seeds[0])
        self.cem = CEM(cem_config if cem_config is not None else CEMConfig(), seed=seeds[1])
        self._noise_rng = np.random.default_rng(seeds[2])
        self._discrete_rng = np.random.default_rng(seeds[3])
        self.paths = paths if paths is not None else ModelPaths()
        self.expected = expected
        self.intra_op_threads = int(intra_op_threads)
        self.watcher = ModelWatcher(self.paths.groups(), settle_s)
        if files is None:
            files = {path: file_signature(path)
                     for group in self.watcher.groups.values() for path in group}
        for group, group_paths in self.watcher.groups.items():
            self.watcher.mark(group, tuple(files.get(p) for p in group_paths))
        self._models = ModelSet(actor=actor, critic=critic, version=1, files=dict(files))
        self.episode_policy = None
        self._prepared = None
        self.episodes = 0
        self.begin_episode()
        self.episodes = 0   # the start-up draw is not an episode

    # -- construction from files --------------------------------------------------------------

    @classmethod
    def from_files(cls, mode, paths, expected=None, intra_op_threads=1, **kwargs):
        """Load the models of ``paths`` (a :class:`ModelPaths`) and build the runtime.

        Every model that has a path is loaded and must pass the contract check; the mode's
        required models (:data:`REQUIRED`) must have a path.

        Raises:
            FileNotFoundError: a model file is missing (message names the file).
            ModelContractError: a model does not match ``expected`` (message names the field).
                Both carry ``model_group`` ('actor' or 'critic'): which model failed.
            ValueError: a required model has no path, or bad mode/arguments.
        """
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        groups = paths.groups()
        missing = [m for m in REQUIRED[mode] if m not in groups]
        if missing:
            raise ValueError(f"mode {mode!r} needs {' and '.join(missing)} but no "
                             f"{' or '.join(missing)} file is configured")
        files = {p: file_signature(p) for group in groups.values() for p in group}
        loaded = {}
        for group, group_paths in groups.items():
            try:
                loaded[group] = _load_group(group, group_paths, expected, intra_op_threads)
            except (FileNotFoundError, ModelContractError) as exc:
                exc.model_group = group   # lets the caller name its own setting
                raise
        actor, critic = loaded.get('actor'), loaded.get('critic')
        return cls(mode, actor, critic, paths=paths, expected=expected,
                   intra_op_threads=intra_op_threads, files=files, **kwargs)

    # -- state ----------------------------------------------------------------------------------

    @property
    def models(self):
        """The current :class:`ModelSet` (read it once per use; it may be swapped any time)."""
        return self._models

    @property
    def version(self):
        """Current model-set version (int)."""
        return self._models.version

    def begin_episode(self):
        """Start an episode; return its policy ('actor' or 'cem').

        'switch' draws CEM with probability ``cem_episode_prob`` (AW-Opt episode-level
        switching), else the actor; 'actor' and 'cem' modes always return their own policy.
        After :meth:`prepare_next_episode` the episode takes the policy drawn there (no new
        draw), so the sequence of episode policies for a seed is the same either way.
        """
        if self._prepared is None:
            self._draw()
        self._prepared = None
        self.episodes += 1
        return self.episode_policy

    def prepare_next_episode(self):
        """Draw the next episode's policy now and act with it from now on; return it.

        For a node that hears of an episode's start on one topic and its frames on another:
        drawn when the previous episode ends (and at start-up), the policy is already the
        episode's when a frame stamped after the start reaches the node before the start event
        does (under load), so an AW-Opt episode is one policy's from its first step. The next
        :meth:`begin_episode` keeps this draw; calling this again before it replaces nothing
        (the draw stands until an episode takes it).
        """
        if self._prepared is None:
            self._draw()
            self._prepared = self.episode_policy
        return self._prepared

    def _draw(self):
        if self.mode == 'switch':
            draw = self._switch_rng.random()
            self.episode_policy = 'cem' if draw < self.cem_episode_prob else 'actor'
        else:
            self.episode_policy = self.mode

    # -- acting -----------------------------------------------------------------------------------

    def act(self, image, proprio):
        """Choose the action for one observation.

        Args:
            image: uint8 (H, W, 3) RGB policy image (the models' ``image_size``).
            proprio: float32 (6,) ``spec.PROPRIO_NAMES`` (m, sin/cos, closedness).

        Returns:
            tuple ``(action, source, info)``: action float32 (7,) in physical units inside
            ``spec.ACTION_LOW/HIGH`` (discrete entries 0/1); source 'actor' or 'cem';
            info dict with ``episode_policy``, ``model_version`` (int), ``model_mtime_ns``
            (int, newest mtime of the files of the model that chose; None for models passed
            as objects), ``q`` (float, CEM's best Q; only for source 'cem'), ``fallback``
            (str reason when the episode's policy could not act, else None) and
            ``actor_candidate`` (bool, the actor's action was a CEM candidate),
            ``actor_noise_std`` (float, the exploration noise added to this action; 0.0
            when none was) and ``discrete_sampled`` (bool, its discrete sub-actions were
            drawn from the actor's probabilities) and ``noise_free_action`` (float32 (7,): for
            source 'actor', the actor's own action before the exploration noise and the
            discrete sampling, in bounds, discrete entries thresholded; None for source
            'cem'). Learners label noisy exploration steps with it (DART, Laskey et al.
            2017).

        Raises:
            NoPolicyError: neither the actor nor CEM can produce an action (both reasons
                are in the message; any error a model raises, e.g. an onnxruntime failure
                or an image size the model does not take, counts as that model being unable
                to act: the actor's falls back to CEM, CEM's to the actor).
            ValueError: image not uint8 (H, W, 3) or proprio not 6 finite values.
        """
        image, proprio = _check_inputs(image, proprio)
        models = self._models   # one read: the whole step uses one model set
        want = self.episode_policy
        info = {'episode_policy': want, 'model_version': models.version, 'fallback': None,
                'actor_candidate': False, 'actor_noise_std': 0.0, 'discrete_sampled': False,
                'noise_free_action': None}
        actor_action, actor_problem, prob = None, 'no actor loaded', None
        if models.actor is not None:
            try:
                if self.actor_sample_discrete and getattr(models.actor, 'has_discrete_prob',
                                                          False):
                    candidate, prob = models.actor.act_with_prob(image, proprio)
                else:
                    candidate = models.actor.act(image, proprio)
                candidate = np.asarray(candidate, dtype=np.float32)
                actor_problem = check_action(candidate)
            except Exception as exc:  # noqa: BLE001 - inputs are checked: a model problem
                actor_problem = f'{type(exc).__name__}: {exc}'

            if actor_problem is None:
                actor_action = np.clip(candidate, spec.ACTION_LOW, spec.ACTION_HIGH)
        if want == 'actor' and actor_action is not None:
            info['model_mtime_ns'] = self._mtime(models, 'actor')
            return self._explore(actor_action, info, prob), 'actor', info

        cem_problem = 'no critic loaded'
        if models.critic is not None:
            try:
                action, q = models.critic.cem_action(image, proprio, self.cem,
                                                     extra_candidates=actor_action)
            except Exception as exc:  # noqa: BLE001 - inputs are checked: a model problem
                cem_problem = f'CEM failed: {type(exc).__name__}: {exc}'
            else:
                if want == 'actor':
                    info['fallback'] = f'actor: {actor_problem}'
                info.update(q=float(q), actor_candidate=actor_action is not None,
                            model_mtime_ns=self._mtime(models, 'critic'))
                return np.asarray(action, dtype=np.float32), 'cem', info
        if actor_action is not None:   # a CEM episode whose critic cannot act
            info['fallback'] = f'cem: {cem_problem}'
            info['model_mtime_ns'] = self._mtime(models, 'actor')
            return self._explore(actor_action, info, prob), 'actor', info
        raise NoPolicyError(f'no policy can act (episode policy {want!r}): '
                            f'actor: {actor_problem}; cem: {cem_problem}')

    def _explore(self, action, info, prob=None):
        """Return the actor's ``action`` (7,) with the exploration noise, float32, in bounds;
        with ``actor_sample_discrete`` and the actor's ``prob`` (3,), its discrete entries
        drawn from them. ``info['noise_free_action']`` gets a copy of ``action``."""
        action = np.array(action, dtype=np.float32)
        info['noise_free_action'] = action.copy()
        if self.actor_sample_discrete and prob is not None:
            p = np.clip(np.asarray(prob, dtype=np.float64).reshape(-1), 0.0, 1.0)
            action[spec.DISCRETE] = (self._discrete_rng.random(p.shape) < p).astype(np.float32)
            info['discrete_sampled'] = True
        if self.actor_noise_std > 0.0:
            half = spec.ACTION_HIGH[spec.CONTINUOUS]
            noise = self._noise_rng.standard_normal(half.shape) * self.actor_noise_std * half
            action[spec.CONTINUOUS] = np.clip(action[spec.CONTINUOUS] + noise,
                                              spec.ACTION_LOW[spec.CONTINUOUS], half)
            info['actor_noise_std'] = self.actor_noise_std
        return action

    def _mtime(self, models, group):
        paths = self.watcher.groups.get(group, ())
        stamps = [models.files[p][0] for p in paths if models.files.get(p) is not None]
        return max(stamps) if stamps else None

    # -- hot swap ---------------------------------------------------------------------------------

    def reload_if_changed(self):
        """Load changed, settled model files and swap them in; return a :class:`ReloadResult`.

        Blocking (file reads, onnxruntime session creation): call it off the control path.
        A group that fails to load (missing file, contract mismatch, unreadable ONNX) is
        reported in ``rejected`` and the running model stays.
        """
        ready, pending = self.watcher.poll()
        if not ready:
            return ReloadResult(pending=pending, version=self._models.version)
        loaded, rejected = {}, {}
        for group, sig in ready.items():
            paths = self.watcher.groups[group]
            try:
                loaded[group] = (_load_group(group, paths, self.expected,
                                             self.intra_op_threads), sig)
            except Exception as exc:  # noqa: BLE001 - contract, missing or unreadable file
                rejected[group] = (f'new {group} model rejected, keeping model version '
                                   f'{self._models.version}: {type(exc).__name__}: {exc}')
            self.watcher.mark(group, sig)
        if not loaded:
            return ReloadResult(rejected=rejected, pending=pending,
                                version=self._models.version)
        old = self._models
        files = dict(old.files)
        for group, (_, sig) in loaded.items():
            files.update(zip(self.watcher.groups[group], sig))
        new = ModelSet(actor=loaded['actor'][0] if 'actor' in loaded else old.actor,
                       critic=loaded['critic'][0] if 'critic' in loaded else old.critic,
                       version=old.version + 1, files=files)
        self._models = new   # the swap: one reference assignment, between two act() calls
        return ReloadResult(swapped=tuple(sorted(loaded)), rejected=rejected, pending=pending,
                            version=new.version)

    def model_info(self):
        """Return a JSON-able dict describing the running models (for ``/policy/model_info``).

        Keys: ``mode``, ``episode_policy``, ``cem_episode_prob``, ``cem`` (iterations,
        samples, elites), ``model_version`` and ``models``: per loaded model its ``paths``,
        ``mtime_ns`` (newest file mtime, int ns) and ``contract`` (actor contract; critic
        encoder contract) when known.
        """
        models = self._models
        cfg = self.cem.config
        out = {'mode': self.mode, 'episode_policy': self.episode_policy,
               'cem_episode_prob': self.cem_episode_prob,
               'cem': {'iterations': cfg.iterations, 'samples': cfg.samples,
                       'elites': cfg.elites},
               'model_version': models.version, 'models': {}}
        for group, model in (('actor', models.actor), ('critic', models.critic)):
            if model is None:
                continue
            contract = getattr(model, 'contract', None)
            if contract is None:
                contract = getattr(model, 'encoder_contract', None)
            out['models'][group] = {'paths': list(self.watcher.groups.get(group, ())),
                                    'mtime_ns': self._mtime(models, group),
                                    'contract': contract}
        return out


def _check_inputs(image, proprio):
    """Return (image uint8 (H, W, 3), proprio float32 (6,)); ValueError names a bad input."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be uint8 (H, W, 3), got {image.dtype} {image.shape}')
    proprio = np.asarray(proprio, dtype=np.float32)
    if proprio.shape != (spec.PROPRIO_DIM,) or not np.all(np.isfinite(proprio)):
        raise ValueError(f'proprio must be {spec.PROPRIO_DIM} finite values, got '
                         f'{proprio.tolist()}')
    return image, proprio


def _load_group(group, paths, expected, intra_op_threads):
    """Load one model group: 'actor' (path,) -> OnnxActor; 'critic' (enc, head) -> OnnxCritic.

    Raises FileNotFoundError / ModelContractError (both name the file; a
    ``onnx_policy.ModelFileError`` for a file that is not a readable ONNX model, a
    ModelContractError for a graph whose io differs from its contract).
    """
    if group == 'actor':
        return OnnxActor(paths[0], expected, intra_op_threads=intra_op_threads)
    if group == 'critic':
        return OnnxCritic(paths[0], paths[1], expected=expected,
                          intra_op_threads=intra_op_threads)
    raise ValueError(f'unknown model group {group!r}')


__all__ = ['MODES', 'SOURCES', 'REQUIRED', 'DEFAULT_CEM_EPISODE_PROB', 'NoPolicyError',
           'ModelContractError', 'ModelPaths', 'ModelSet', 'ModelWatcher', 'PolicyRuntime',
           'ReloadResult', 'check_action', 'file_signature']
