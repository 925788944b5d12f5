"""Online finetuning beside the running stack (``awopt finetune``): no ROS, files only.

AW-Opt (Lu et al. 2021, FACTS.md) pretrains offline and then keeps training while the robot
collects episodes with the current policy (the paper: 5k-10k pretraining steps, then 20k-200k
finetuning episodes). Here the robot side is the running ROS stack: its logger appends every
finished episode to a Minari dataset on disk (``core.dataset.EpisodeRecorder``) and its
policy node loads the actor (and critic) ONNX files and hot-swaps them when they change. The
finetuner is the learner process in between; it needs no ROS at all::

    logger --(episodes appended to <root>/datasets/<id>/data)--> Finetuner
    Finetuner --(os.replace of <out>, <prefix>_encoder.onnx, <prefix>_head.onnx)--> policy

Loop (:meth:`Finetuner.run`), every ``poll_s`` seconds at most:

1. ask the episode source for episodes it has not seen (``source(start)`` returns the
   episodes with index >= ``start``); a source that raises (dataset being written, HDF5 file
   busy) is retried at the next poll; an episode whose arrays are inconsistent (partially
   written) stops the intake there and is retried, and skipped with a warning after
   ``max_bad_polls`` tries;
2. add the new episodes to the replay buffer; each grants ``steps_per_episode`` gradient
   steps (a replay ratio); ``steps_per_poll`` adds a fixed number per poll instead or too;
3. train up to the granted budget (for at most ``poll_s`` seconds before polling again);
   every ``export_every`` steps export the models atomically (``train_cli.export_learner``:
   temporary file + ``os.replace``) and save the checkpoint;
4. print a progress line every ``log_every`` steps and whenever episodes arrive: steps,
   losses, episodes seen, success rate of the last ``success_window`` (20) episodes, exports.

It stops after ``max_steps`` gradient steps, once the granted steps are used up and no new
episode arrived for ``max_idle_s`` seconds since then (with ``steps_per_poll`` > 0 the grant
never runs out, so then only the time since the last new episode counts), or on Ctrl-C
(KeyboardInterrupt is caught: the checkpoint, the JSON history and the progress plot are
still written; the model files keep the last periodic export). A normal stop also exports the
final models.

:class:`Finetuner` takes the learner and the episode source as arguments, so it runs in tests
with a fake source (a list that grows) and no Minari; :class:`DatasetSource` is the real one
(reads only the episodes appended since the last poll).

Rewards: by default the dataset's own (``--reward-source ground_truth``; in simulation the
ground truth). ``--reward-source classifier`` labels each new episode with the success
classifier's debounced decision instead (``--success-model``, default
``models/grasp_success.onnx``; :mod:`awopt_ros.learning.relabel`): reward 1 and the episode
cut where the decision fires, as the stack would have ended it, else reward 0. Episodes the
logger recorded as already labelled by the classifier in the stack (``reward_source``) are
kept as they are; offline episodes keep their rewards. The history records the source (model
path, sha256, thresholds) per run and per episode, and the progress lines count the
classifier's successes against the dataset's own outcome (agreement). The same applies to
``--in-process`` runs (their episodes go through the same :meth:`Finetuner.poll`).

``awopt finetune --in-process`` runs the same finetuner on episodes of the simulated task run
in this process instead (:mod:`awopt_ros.learning.sim_finetune`: rounds of exploration
episodes with the current export, training, export, noise-free evaluation on fixed scenes).

Outputs: replacing ``--out`` (and the critic files, checkpoint, history and plot beside it)
is the point of a finetuner (the policy node hot-swaps the file), so existing files there are
replaced; without ``--out`` a run writes into a fresh folder
``runs/finetune/<YYYYmmdd-HHMMSS>/grasp_finetune.onnx`` (point the policy node at it with
``--set policy:model_path=...``, or give ``--out`` the file the node loads). Files of the
shipped ``models/`` are never replaced without ``--force``. Bad input is one line naming the
option (``awopt finetune: error: argument --init-checkpoint: ...``), exit 2.
"""
import collections
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from awopt_ros.cli_args import (UsageError, check_outputs, nonnegative_float, nonnegative_int,
                                positive_int, usage_error)
from awopt_ros.core import spec
from awopt_ros.core.dataset import episode_dict
from awopt_ros.learning.relabel import DEFAULT_SUCCESS_MODEL, REWARD_SOURCES
from awopt_ros.learning.train_cli import (DEFAULT_CROP, META_KEY, LossHistory, _pyplot,
                                          add_learner_args, build_learner_config,
                                          default_critic_prefix, episode_labeller,
                                          export_learner, first_episodes,
                                          fresh_learner_from_checkpoint,
                                          learner_from_checkpoint, learner_model_card,
                                          load_checkpoint, parse_overrides, save_checkpoint,
                                          write_json)


class FinetuneError(RuntimeError):
    """The finetuner cannot go on (e.g. the dataset's images do not fit the learner)."""


class IncompleteEpisode(ValueError):
    """An episode's arrays are inconsistent (e.g. read while it was being written)."""


def episode_arrays(episode):
    """Return ``(images, proprios, actions, rewards, terminated)`` of a dataset episode dict.

    ``episode`` is in the layout of ``core.dataset.load_episodes`` / ``sim.rollout`` (flat or
    with ``observations``): ``image`` uint8 (T+1, S, S, 3), ``proprio`` (T+1, 6), ``actions``
    (T, 7), ``rewards`` (T,), ``terminations`` (T,) bool. ``terminated`` is True when any
    termination flag is set.

    Raises:
        IncompleteEpisode: missing keys, T = 0, or lengths that do not agree.
    """
    try:
        obs = episode.get('observations', episode)
        images = np.asarray(obs['image'])
        proprios = np.asarray(obs['proprio'], dtype=np.float32)
        actions = np.asarray(episode['actions'], dtype=np.float32)
        rewards = np.asarray(episode['rewards'], dtype=np.float32).reshape(-1)
        terms = np.asarray(episode.get('terminations', np.zeros(len(actions), bool)),
                           dtype=bool).reshape(-1)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IncompleteEpisode(f'unreadable episode: {exc!r}') from exc
    t = actions.shape[0] if actions.ndim == 2 else -1
    problems = []
    if t < 1 or actions.shape[1:] != (spec.ACTION_DIM,):
        problems.append(f'actions {actions.shape}')
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != t + 1:
        problems.append(f'image {images.dtype} {images.shape}')
    if proprios.shape != (t + 1, spec.PROPRIO_DIM):
        problems.append(f'proprio {proprios.shape}')
    if rewards.shape != (t,):
        problems.append(f'rewards {rewards.shape}')
    if terms.shape not in ((t,), (0,)):
        problems.append(f'terminations {terms.shape}')
    if problems:
        raise IncompleteEpisode('inconsistent arrays: ' + ', '.join(problems))
    return images, proprios, actions, rewards, bool(terms.any())


def incremental_source(source):
    """Return ``source`` as a ``source(start)`` callable.

    A callable that takes no positional argument is taken to return ALL episodes so far
    (e.g. ``lambda: core.dataset.load_episodes(root, dataset_id)``) and is wrapped as
    ``lambda start: list(source())[start:]``; anything else is returned unchanged.
    """
    import inspect
    try:
        params = inspect.signature(source).parameters.values()
    except (TypeError, ValueError):      # builtins without a signature: assume (start)
        return source
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.VAR_POSITIONAL)
    if any(p.kind in kinds for p in params):
        return source

    def from_all(start):
        return list(source())[start:]
    return from_all


class DatasetSource:
    """Episode source over a logger's Minari dataset ``<root>/datasets/<id>/data``.

    ``source(start)`` returns the episodes with index >= ``start`` as dicts (``id``, ``image``
    uint8 (T+1, S, S, 3), ``proprio`` float32 (T+1, 6), ``actions`` float32 (T, 7),
    ``rewards`` (T,), ``terminations`` / ``truncations`` (T,) bool, ``policy`` (T+1,) int64
    when logged, ``seed`` and ``episode`` from the episode's metadata, and ``reward_source``
    when the logger recorded who labelled the rewards, e.g. 'classifier'), reading only
    those: the cheap ``metadata.json`` says how many episodes exist, and
    ``minari.MinariDataset.iterate_episodes`` reads just the new ones (the dataset's own
    :func:`awopt_ros.core.dataset.load_episodes` reads everything, which grows with the
    run). A dataset that does not exist yet (no episode logged) gives [].

    Set ``HDF5_USE_FILE_LOCKING=FALSE`` in the process (``awopt finetune`` does) so that
    reading never blocks the logger's appends; a read that races an append raises or returns
    an inconsistent episode, which :class:`Finetuner` retries.
    """

    def __init__(self, root_dir, dataset_id):
        """Point at ``<root_dir>/datasets/<dataset_id>/data``; nothing is read yet."""
        from awopt_ros.core.dataset import datasets_dir
        if '/' not in str(dataset_id):
            raise ValueError(f"dataset id {dataset_id!r} should look like 'awopt/name-v0'")
        self.root_dir = Path(root_dir)
        self.dataset_id = str(dataset_id)
        self.data_dir = datasets_dir(root_dir).absolute() / self.dataset_id / 'data'

    def total_episodes(self):
        """Episodes the dataset's ``metadata.json`` lists (0 when there is no dataset yet)."""
        meta = self.data_dir / 'metadata.json'
        if not meta.is_file():
            return 0
        return int(json.loads(meta.read_text())['total_episodes'])

    def __call__(self, start=0):
        """Return the episodes with index >= ``start`` (list of dicts, in index order)."""
        total = self.total_episodes()
        if total <= start:
            return []
        from minari import MinariDataset

        from awopt_ros.learning.relabel import episode_reward_source
        dataset = MinariDataset(self.data_dir)
        total = min(total, int(dataset.total_episodes))
        indices = range(int(start), total)
        out = []
        for meta, ep in zip(dataset.storage.get_episode_metadata(indices),
                            dataset.iterate_episodes(indices)):
            episode = episode_dict(ep, meta)
            source = episode_reward_source(episode, meta)
            if source is not None:
                episode['reward_source'] = source
            out.append(episode)
        from awopt_ros.core.annotations import annotate, episode_identities, journal_path
        # the operator's label / discard / notes as they stand now (a later one does not
        # reach an episode already taken in), resolved against every episode of the dataset
        # (an after_index record matched against the new ones only would miss its episode)
        try:
            identities = episode_identities(self.root_dir, self.dataset_id)
        except FileNotFoundError:     # cannot be: the dataset gave episodes just now
            identities = None
        return annotate(out, journal_path(self.root_dir, self.dataset_id), identities)


@dataclass
class FinetuneConfig:
    """Settings of :class:`Finetuner`.

    Attributes:
        export_every: K, gradient steps (of this run) between exports; each export also saves
            the checkpoint and the JSON history.
        steps_per_episode: gradient steps granted per new episode (replay ratio; float >= 0).
        steps_per_poll: fixed extra gradient steps granted per poll while the buffer can be
            trained on (int >= 0; a fixed update rate independent of the data rate).
        max_steps: stop after this many gradient steps of this run (None: no limit).
        max_idle_s: stop when the granted steps are used up and no new episode arrived
            for this long since (s; None: never); training time does not count, so a long
            catch-up between rounds of episodes (``awopt demo --new-model-every``) is not
            idleness (with ``steps_per_poll`` > 0: the time since the last new episode).
        poll_s: seconds between polls when idle, and the longest training stretch between
            two polls.
        min_episodes: episodes in the buffer before training starts.
        success_window: episodes in the "recent success rate" (20).
        log_every: gradient steps between progress lines and averaged loss points.
        max_bad_polls: polls an inconsistent episode is retried before it is skipped.
        check_parity: torch vs onnxruntime check before each export is swapped in.

    Raises:
        ValueError: a value out of range (the message names it).
    """

    export_every: int = 500
    steps_per_episode: float = 10.0
    steps_per_poll: int = 0
    max_steps: int = None
    max_idle_s: float = None
    poll_s: float = 5.0
    min_episodes: int = 1
    success_window: int = 20
    log_every: int = 100
    max_bad_polls: int = 3
    check_parity: bool = True

    def __post_init__(self):
        """Validate (ValueError naming the field)."""
        for name, low in (('export_every', 1), ('steps_per_poll', 0), ('min_episodes', 1),
                          ('success_window', 1), ('log_every', 1), ('max_bad_polls', 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise ValueError(f'FinetuneConfig.{name} must be an int >= {low}, '
                                 f'got {value!r}')
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(
                self.max_steps, (int, np.integer)) or self.max_steps < 0):
            raise ValueError(f'FinetuneConfig.max_steps must be None or an int >= 0, '
                             f'got {self.max_steps!r}')
        for name, optional in (('steps_per_episode', False), ('poll_s', False),
                               ('max_idle_s', True)):
            value = getattr(self, name)
            if optional and value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f'FinetuneConfig.{name} must be a finite number >= 0, '
                                 f'got {value!r}')

    def to_dict(self):
        """Return the settings as a plain dict."""
        return asdict(self)


def grasp_target_labeller(crop_xywh, with_pose, action_label='expert', miss_label='mask'):
    """Return ``labeller(episode) -> labels`` for a grasp-target actor's replay buffer.

    Each episode is labelled by :func:`awopt_ros.learning.targets.episode_labels` with the
    simulated shoulder camera and ``crop_xywh``: the demonstrator's recorded goal where the
    episode has one (scripted episodes), else the hindsight grasp point and pose at the grasp
    close (the robot's own episodes: where the successful grasp closed, after any misses), and
    the noise-free x, y actions where a goal was recorded, else the logged ones
    (``action_label='expert'``) or, with ``action_label='hindsight'``, x, y actions that steer
    to the hindsight grasp point (:func:`~awopt_ros.learning.targets.expert_actions` with
    ``hindsight_goal``, and z, yaw from the actor's recorded noise-free action); the steps of
    misses before the grasp close are masked out of the actor's batches (``miss_label``
    'mask': ``actor_mask``, :func:`~awopt_ros.learning.targets.miss_mask`) or relabelled as
    a reopening ('reopen': :func:`~awopt_ros.learning.targets.reopen_actions`).
    """
    return episode_labeller(crop_xywh, 'expert', with_pose, action_label, miss_label)


class Finetuner:
    """Train a learner on episodes as they are appended, exporting models as it goes.

    Args:
        learner: :class:`~awopt_ros.learning.awopt.Learner` (fresh or from a pretraining
            checkpoint).
        episode_source: callable ``source(start) -> sequence`` of the episodes with index >=
            ``start`` appended so far (dicts, see :func:`episode_arrays`); e.g.
            :class:`DatasetSource`, or ``lambda start: episodes[start:]`` over a list that
            grows. A callable without arguments returning ALL episodes so far also works
            (:func:`incremental_source`). It may raise (the poll is retried later).
        config: :class:`FinetuneConfig` (defaults if None).
        actor_path: ONNX actor the policy node loads (None: not exported).
        critic_prefix: critic files ``<prefix>_encoder.onnx`` / ``<prefix>_head.onnx``
            (None: not exported).
        crop_xywh: camera crop recorded in the contracts (source px).
        dataset_id: dataset id recorded in the contracts and the history.
        buffer: :class:`~awopt_ros.learning.awopt.ReplayBuffer` (default: capacity 100,000
            transitions); it may already hold offline data.
        checkpoint_path, history_path, plot_path: where the learner checkpoint, the JSON
            history and the PNG progress plot go (None: not written).
        log: callable(str) for progress lines (default ``print``).
        labeller: callable ``labeller(episode) -> labels dict`` giving each episode's actor
            labels for the buffer (``ReplayBuffer.add_episode``); default: for a learner
            whose actor has 'target' pooling, :func:`grasp_target_labeller` with
            ``action_label`` ('expert' or 'hindsight'; this class keeps 'expert' as its
            default, ``awopt finetune`` passes 'hindsight' unless told otherwise) and
            ``miss_label`` ('mask' or 'reopen'), else none.
        relabel: callable ``relabel(episode) -> (episode, record)`` labelling each new
            episode's rewards before it enters the buffer, e.g.
            :class:`~awopt_ros.learning.relabel.ClassifierRelabeller` (the success
            classifier's decision instead of the dataset's rewards; ``record`` goes into the
            episode's history entry; an optional ``tally(record)`` is called once the episode
            is in the buffer, ``describe()`` and ``progress_text()`` go into the history and
            the progress lines). Offline episodes (:meth:`add_offline`) are not relabelled.
            None: the dataset's own rewards.
        sleep, clock: injectable ``time.sleep`` / ``time.monotonic`` (tests).
    """

    def __init__(self, learner, episode_source, config=None, *, actor_path=None,
                 critic_prefix=None, crop_xywh=DEFAULT_CROP, dataset_id='', buffer=None,
                 checkpoint_path=None, history_path=None, plot_path=None, log=print,
                 labeller=None, action_label='expert', miss_label='mask', relabel=None,
                 sleep=time.sleep, clock=time.monotonic):
        from awopt_ros.learning.awopt import ReplayBuffer
        self.learner = learner
        self.source = incremental_source(episode_source)
        self.config = config or FinetuneConfig()
        self.actor_path = None if actor_path is None else Path(actor_path)
        self.critic_prefix = critic_prefix
        self.crop_xywh = [int(v) for v in crop_xywh]
        self.dataset_id = str(dataset_id)
        self.buffer = ReplayBuffer(100_000) if buffer is None else buffer
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.history_path = None if history_path is None else Path(history_path)
        self.plot_path = None if plot_path is None else Path(plot_path)
        self.log = log
        self.labels = None              # the default labeller's settings (history)
        if labeller is None and learner.config.grasp_target:
            labeller = grasp_target_labeller(self.crop_xywh, learner.config.actor.grasp_pose,
                                             action_label, miss_label)
            self.labels = {'action_label': action_label, 'miss_label': miss_label}
        self.labeller = labeller
        self.relabel = relabel
        self.sleep = sleep
        self.clock = clock
        self.seen = 0                  # episode indices consumed from the source
        self.steps = 0                 # gradient steps of this run
        self.budget = 0.0              # granted, not yet taken gradient steps
        self.start_learner_step = int(learner.step)
        self.history = LossHistory(self.config.log_every)
        self.episodes = []             # one dict per episode taken in
        self.recent = collections.deque(maxlen=self.config.success_window)
        self.exports = []
        self.export_errors = []
        self.source_errors = []
        self.skipped = []
        self.discarded = []            # indices the operator discarded (counted as seen)
        self.offline_episodes = 0
        self.stop_reason = None
        self.evaluations = []          # in-process runs: noise-free evaluations (sim_finetune)
        self._bad = (None, 0)          # (episode index, polls it was inconsistent)
        self._t0 = None
        self._train_s = 0.0
        self._waiting_logged = False

    # -- data ------------------------------------------------------------------------------
    def _check_image(self, images, where):
        size = self.learner.config.image_size
        if images.shape[1:] != (size, size, 3):
            raise FinetuneError(f'{where} has {images.shape[1]}x{images.shape[2]} images, the '
                                f'learner takes {size}x{size} (use a matching --image-size '
                                f'or checkpoint)')

    def _labels(self, episode):
        return None if self.labeller is None else self.labeller(episode)

    def add_offline(self, episodes):
        """Add offline episodes (e.g. the pretraining dataset) to the buffer; they grant no
        steps and do not count in the success rate. Returns how many were added.

        Raises:
            FinetuneError: images of the wrong size.
            IncompleteEpisode: an inconsistent episode.
        """
        n = 0
        for ep in episodes:
            images, proprios, actions, rewards, terminated = episode_arrays(ep)
            self._check_image(images, 'an offline episode')
            self.buffer.add_episode(images, proprios, actions, rewards, terminated,
                                    labels=self._labels(ep),
                                    intervention=ep.get('intervention'))
            n += 1
        self.offline_episodes += n
        return n

    def poll(self):
        """Take in the episodes appended since the last poll; return how many were added.

        Never raises for a failing source or an inconsistent episode (both are retried at
        the next poll, see the module docstring); raises :class:`FinetuneError` for images
        that do not fit the learner, and lets KeyboardInterrupt through.
        """
        try:
            new = self.source(self.seen)
            new = list(new) if new is not None else []
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - any read error is retried next poll
            self.source_errors.append({'time_s': self._elapsed(), 'seen': self.seen,
                                       'error': f'{type(exc).__name__}: {exc}'})
            self.log(f'finetune: reading episodes failed ({type(exc).__name__}: {exc}); '
                     f'retrying at the next poll')
            return 0
        added = 0
        for ep in new:
            index = self.seen
            if ep.get('discarded'):       # core.annotations: never trained on
                self.seen += 1
                self.discarded.append(index)
                self.log(f'finetune: episode {index} discarded by the operator; skipped')
                continue
            try:
                images, proprios, actions, rewards, terminated = episode_arrays(ep)
                self._check_image(images, f'episode {index}')
                dataset_success = bool(np.any(rewards > 0))
                reward_record = self._reward_record(ep)
                if ep.get('label') is not None:    # the operator's verdict wins
                    from awopt_ros.core.annotations import labelled
                    ep, reward_record = labelled(ep), {'reward_source': 'operator'}
                    self.log(f'finetune: episode {index} labelled {ep["label"]} by the operator')
                    images, proprios, actions, rewards, terminated = episode_arrays(ep)
                elif self.relabel is not None:
                    ep, reward_record = self._relabelled(ep, index)
                    images, proprios, actions, rewards, terminated = episode_arrays(ep)
                self.buffer.add_episode(images, proprios, actions, rewards, terminated,
                                        labels=self._labels(ep),
                                        intervention=ep.get('intervention'))
            except (IncompleteEpisode, ValueError) as exc:
                bad_index, count = self._bad
                count = count + 1 if bad_index == index else 1
                self._bad = (index, count)
                if count < self.config.max_bad_polls:
                    self.log(f'finetune: episode {index} is not readable yet ({exc}); '
                             f'retrying at the next poll')
                    break
                self.log(f'finetune: skipping episode {index} after {count} polls: {exc}')
                self.skipped.append({'index': index, 'error': str(exc)})
                self.seen += 1
                self._bad = (None, 0)
                continue
            success = bool(np.any(rewards > 0))
            self.seen += 1
            self._bad = (None, 0)
            self.recent.append(success)
            self.budget += self.config.steps_per_episode
            if (self.relabel is not None and hasattr(self.relabel, 'tally')
                    and reward_record.get('reward_source') != 'operator'):
                self.relabel.tally(reward_record)
            self.episodes.append({'index': index, 'success': success,
                                  'steps': int(actions.shape[0]),
                                  'learner_step': int(self.learner.step),
                                  'time_s': round(self._elapsed(), 3),
                                  'recent_success_rate': self.recent_success_rate(),
                                  'dataset_success': dataset_success, **reward_record})
            added += 1
        return added

    @staticmethod
    def _reward_record(episode):
        """History fields of an episode trained on the dataset's own rewards."""
        from awopt_ros.learning.relabel import episode_reward_source
        return {'reward_source': episode_reward_source(episode) or 'ground_truth'}

    def _relabelled(self, episode, index):
        """Return ``self.relabel(episode)`` (episode, record); a classifier that cannot label
        the data stops the run (:class:`FinetuneError`)."""
        from awopt_ros.learning.relabel import RelabelError
        try:
            episode, record = self.relabel(episode)
        except RelabelError as exc:
            raise FinetuneError(f'episode {index}: {exc}') from exc
        return episode, dict(record)

    def reward_source(self):
        """Return who labels the online episodes' rewards (JSON-able dict): the relabeller's
        ``describe()`` and ``counts`` (e.g. ``reward_source`` 'classifier', model, sha256,
        thresholds), or ``{'reward_source': 'ground_truth'}`` (the dataset's rewards)."""
        if self.relabel is None:
            return {'reward_source': 'ground_truth'}
        out = dict(self.relabel.describe()) if hasattr(self.relabel, 'describe') else {
            'reward_source': getattr(self.relabel, 'source', 'relabel')}
        counts = getattr(self.relabel, 'counts', None)
        if counts is not None:
            out['counts'] = dict(counts)
        return out

    def begin(self):
        """Start the run's clock (:meth:`run` does; a caller driving :meth:`poll` and
        :meth:`train_available` itself, e.g. ``learning.sim_finetune``, calls it first)."""
        self._t0 = self.clock()

    def recent_success_rate(self):
        """Success rate of the last ``success_window`` episodes taken in (None if none)."""
        return (sum(self.recent) / len(self.recent)) if self.recent else None

    def ready(self):
        """True when the buffer can be trained on (enough episodes, and a successful one
        for an actor-only preset with positive filtering)."""
        c = self.learner.config
        if self.buffer.num_episodes < self.config.min_episodes or len(self.buffer) == 0:
            return False
        return c.use_critic or not c.positive_filter or self.buffer.num_successful > 0

    # -- training --------------------------------------------------------------------------
    def _steps_left(self):
        m = self.config.max_steps
        return math.inf if m is None else m - self.steps

    def train_available(self):
        """Take granted gradient steps (at most ``poll_s`` seconds' worth); return how many.

        Exports every ``export_every`` steps and logs every ``log_every`` steps.
        """
        if not self.ready():
            return 0
        t_start = self.clock()
        n = 0
        while self.budget >= 1.0 and self._steps_left() > 0:
            cb, ab = self.learner.sample_batches(self.buffer)
            stats = self.learner.update(cb if cb is not None else ab, ab)
            self.history.add(stats)
            self.steps += 1
            self.budget -= 1.0
            n += 1
            if self.steps % self.config.export_every == 0:
                self._train_s += self.clock() - t_start
                self.export()
                t_start = self.clock()
            if self.steps % self.config.log_every == 0:
                self.log(self.progress_line())
            if self.clock() - t_start >= self.config.poll_s:
                break
        self._train_s += self.clock() - t_start
        return n

    def export(self):
        """Export the models now (atomically), save the checkpoint and the JSON history.

        Returns the export record (dict) or None when nothing is exported or the export
        failed (logged, recorded in ``export_errors``; training goes on).
        """
        if self.actor_path is None and self.critic_prefix is None:
            return None
        card = learner_model_card(
            self.learner.config.name, self.dataset_id, self.learner.config, self.learner.step,
            f'finetuned online on {len(self.episodes)} episodes after {self.offline_episodes}'
            f' offline ones' + self._card_rewards(), self.crop_xywh)
        try:
            result = export_learner(self.learner, self.actor_path, self.critic_prefix,
                                    self.crop_xywh, dataset_id=self.dataset_id,
                                    model_card=card, check_parity=self.config.check_parity)
        except ValueError as exc:
            self.export_errors.append({'step': self.steps, 'error': str(exc)})
            self.log(f'finetune: export at step {self.steps} failed: {exc}')
            return None
        files = [p for p in (result.get('actor', {}).get('path'),
                             result.get('critic', {}).get('encoder'),
                             result.get('critic', {}).get('head')) if p]
        record = {'step': self.steps, 'learner_step': int(self.learner.step),
                  'time_s': round(self._elapsed(), 3), 'episodes_seen': len(self.episodes),
                  'files': files}
        self.exports.append(record)
        self.log(f'finetune: exported step {self.steps} (learner {self.learner.step}) to '
                 f'{", ".join(files)}')
        self.save_checkpoint()
        self.save_history()
        return record

    def _card_rewards(self):
        """Model-card clause naming who labelled the online rewards ('' for the dataset's)."""
        source = self.reward_source()
        if source['reward_source'] == 'ground_truth':
            return ''
        model = source.get('model')
        sha = source.get('model_sha256')
        return (f", rewards labelled by the {source['reward_source']}"
                + (f' {model}' if model else '') + (f' (sha256 {sha[:12]})' if sha else ''))

    # -- outputs ---------------------------------------------------------------------------
    def _elapsed(self):
        return 0.0 if self._t0 is None else self.clock() - self._t0

    def progress_line(self):
        """One line: steps, losses, episodes seen, recent success rate, exports, rate."""
        rate = self.recent_success_rate()
        rate_text = 'n/a' if rate is None else f'{100 * rate:.0f}% of {len(self.recent)}'
        losses = ' '.join(f'{k} {v:.4f}' for k, v in self.history.recent().items()
                          if k in ('critic_loss', 'actor_loss'))
        sps = self.steps / self._train_s if self._train_s > 0 else 0.0
        return (f'finetune: step {self.steps} (learner {self.learner.step}) | episodes '
                f'{len(self.episodes)} (buffer {self.buffer.num_episodes}, '
                f'{self.buffer.num_successful} successful) | recent success {rate_text} | '
                f'{losses or "no loss yet"} | exports {len(self.exports)} | '
                f'{sps:.2f} steps/s' + self._reward_text())

    def _reward_text(self):
        """' | <relabeller's progress_text()>' when one is set, else ''."""
        text = getattr(self.relabel, 'progress_text', None)
        return f' | {text()}' if text is not None else ''

    def save_checkpoint(self):
        """Save the learner checkpoint (atomically) when a path is set."""
        if self.checkpoint_path is None:
            return None
        meta = {'kind': 'finetune', 'preset': self.learner.config.name,
                'dataset_id': self.dataset_id, 'crop_xywh': self.crop_xywh,
                'episodes_seen': self.seen, 'reward_source': self.reward_source(),
                'history': self.history.to_dict()}
        return save_checkpoint(self.checkpoint_path, self.learner, meta)

    def summary(self):
        """Return the run's history as a JSON-friendly dict."""
        return {
            'preset': self.learner.config.name, 'dataset_id': self.dataset_id,
            'labels': self.labels, 'reward_source': self.reward_source(),
            'config': self.config.to_dict(), 'learner_config': self.learner.config.to_dict(),
            'stop_reason': self.stop_reason, 'steps': self.steps,
            'learner_step_start': self.start_learner_step,
            'learner_step': int(self.learner.step),
            'elapsed_s': round(self._elapsed(), 3), 'train_s': round(self._train_s, 3),
            'steps_per_s': (self.steps / self._train_s) if self._train_s > 0 else None,
            'episodes_seen': len(self.episodes), 'offline_episodes': self.offline_episodes,
            'recent_success_rate': self.recent_success_rate(),
            'buffer': self.buffer.stats() if len(self.buffer) else {'episodes': 0},
            'final_losses': self.history.last(), 'episodes': self.episodes,
            'exports': self.exports, 'export_errors': self.export_errors,
            'source_errors': self.source_errors, 'skipped_episodes': self.skipped,
            'discarded_episodes': self.discarded,
            'losses': self.history.to_dict(), 'evaluations': self.evaluations,
            'files': {'actor': None if self.actor_path is None else str(self.actor_path),
                      'critic_prefix': self.critic_prefix,
                      'checkpoint': None if self.checkpoint_path is None
                      else str(self.checkpoint_path),
                      'plot': None if self.plot_path is None else str(self.plot_path)},
        }

    def save_history(self):
        """Write :meth:`summary` to ``history_path`` (atomically) when set."""
        if self.history_path is None:
            return None
        return write_json(self.history_path, self.summary())

    def save_plot(self):
        """Write the progress plot to ``plot_path`` when set: success rate of the recent
        episodes vs episodes seen (top; with the noise-free evaluations of an in-process run
        as points) and losses vs learner gradient step (bottom); exports are dotted lines in
        both."""
        if self.plot_path is None:
            return None
        plt = _pyplot()
        fig, (ax_s, ax_l) = plt.subplots(2, 1, figsize=(8, 6.5), dpi=100)
        eps = self.episodes
        w = self.config.success_window
        if eps:
            ax_s.plot(range(1, len(eps) + 1), [100 * e['recent_success_rate'] for e in eps],
                      drawstyle='steps-post', label=f'success rate of the last {w} episodes')
        if self.evaluations:
            ax_s.plot([e['episodes_seen'] for e in self.evaluations],
                      [100 * e['success_rate'] for e in self.evaluations], 'o-', color='C3',
                      label=f"noise-free evaluation ({self.evaluations[0]['episodes']} fixed "
                            f"scenes)")
        for e in self.exports:
            ax_s.axvline(e['episodes_seen'], color='grey', linestyle=':', linewidth=0.8)
        ax_s.set_xlabel('episodes seen (this run)')
        ax_s.set_ylabel(f'success, last {w} (%)')
        ax_s.set_ylim(-5, 105)
        hist = self.history.to_dict()
        for key, label in (('critic_loss', 'critic (BCE, nats)'),
                           ('actor_loss', 'actor (weighted L_A)')):
            if key in hist:
                ax_l.plot(hist['step'], [math.nan if v is None else v for v in hist[key]],
                          label=label)
        if any(v is not None and v > 0 for k in ('critic_loss', 'actor_loss')
               for v in hist.get(k, [])):
            ax_l.set_yscale('log')
        ax_l.set_ylabel(f'loss (mean of {self.config.log_every} steps)')
        ax_l.set_xlabel('learner gradient step')
        for e in self.exports:
            ax_l.axvline(e['learner_step'], color='grey', linestyle=':', linewidth=0.8)
        for ax in (ax_s, ax_l):
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc='upper left')
        fig.suptitle(f'{self.learner.config.name} finetuning on {self.dataset_id} '
                     f'(exports dotted)')
        fig.tight_layout()
        fig.savefig(str(self.plot_path))
        plt.close(fig)
        return self.plot_path

    # -- main loop -------------------------------------------------------------------------
    def run(self):
        """Poll, train and export until ``max_steps``, ``max_idle_s`` or Ctrl-C.

        Returns:
            :meth:`summary` dict; ``stop_reason`` is 'max_steps', 'idle' or 'interrupted'.

        Raises:
            FinetuneError: the data does not fit the learner (outputs are still written).
        """
        c = self.config
        self.begin()
        last_new = self.clock()
        self.log(f'finetune: {self.learner.config.name} from learner step '
                 f'{self.learner.step}, {c.steps_per_episode:g} steps per episode'
                 + (f' + {c.steps_per_poll} per poll' if c.steps_per_poll else '')
                 + f', export every {c.export_every} steps; polling every {c.poll_s:g} s '
                 '(Ctrl-C stops)')
        try:
            while True:
                if self._steps_left() <= 0:
                    self.stop_reason = 'max_steps'
                    break
                added = self.poll()
                if added:
                    last_new = self.clock()
                    self._waiting_logged = False
                    self.log(self.progress_line().replace(
                        'finetune:', f'finetune: +{added} episode{"s" * (added > 1)} |', 1))
                ready = self.ready()
                if ready and c.steps_per_poll:
                    self.budget += c.steps_per_poll
                elif not ready and len(self.buffer) and not self._waiting_logged:
                    self.log(f'finetune: waiting for data to train on (buffer: '
                             f'{self.buffer.num_episodes} episodes, '
                             f'{self.buffer.num_successful} successful)')
                    self._waiting_logged = True
                trained = self.train_available()
                if trained and not c.steps_per_poll:
                    last_new = self.clock()      # busy on the granted steps: not idle
                idle = c.max_idle_s is not None and self.clock() - last_new >= c.max_idle_s
                if idle and (trained == 0 or c.steps_per_poll):
                    self.stop_reason = 'idle'
                    break
                if trained == 0:
                    self.sleep(c.poll_s)
        except KeyboardInterrupt:
            self.stop_reason = 'interrupted'
            self.log('\nfinetune: interrupted; saving the checkpoint, history and plot '
                     '(no final export)')
        except FinetuneError:
            self.stop_reason = 'error'
            self._finish(export=False)
            raise
        return self._finish(export=self.stop_reason != 'interrupted')

    def _finish(self, export):
        self.history.flush()
        last = self.exports[-1]['step'] if self.exports else 0
        if export and self.steps > last:
            self.export()
        else:
            self.save_checkpoint()
        self.save_history()
        self.save_plot()
        self.log(self.progress_line())
        self.log(f'finetune: stopped ({self.stop_reason}) after {self.steps} steps, '
                 f'{len(self.episodes)} episodes, {len(self.exports)} exports')
        return self.summary()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def add_finetune_args(parser):
    """Add the ``awopt finetune`` options to ``parser`` (an ``argparse.ArgumentParser``)."""
    parser.add_argument('--dataset-root', default=None,
                        help='run directory of the running stack (holds datasets/); '
                             'required unless --in-process')
    parser.add_argument('--dataset-id', default=None,
                        help='Minari dataset id the logger appends to, e.g. '
                             'awopt/kuka-grasp-v0; required unless --in-process (then it '
                             'only names the data in the model contracts)')
    parser.add_argument('--preset', default=None,
                        help="learner preset (awopt, awac, qtopt, ..., 'bc-learner'); "
                             "default: the --init-checkpoint's, else awopt")
    parser.add_argument('--init-checkpoint', default=None,
                        help='learner checkpoint to start from (awopt train --preset ...); '
                             'its networks and hyper-parameters are used, the network and '
                             'optimiser options below are ignored')
    parser.add_argument('--fresh-weights', action='store_true',
                        help='with --init-checkpoint: its networks and hyper-parameters '
                             '(plus --set, --seed) with freshly initialised weights, i.e. '
                             'the same model trained from scratch (e.g. a weak start: '
                             '--steps-per-poll on a few demonstrations)')
    parser.add_argument('--out', default=None,
                        help='ONNX actor path the policy node loads, replaced atomically at '
                             'every export; the critic files, checkpoint, history and plot go '
                             f'beside it (default {FINETUNE_RUNS}/<time>/grasp_finetune.onnx)')
    parser.add_argument('--force', action='store_true',
                        help='allow the outputs to replace shipped files in models/ (other '
                             'existing files at --out are replaced anyway: hot swap)')
    parser.add_argument('--critic-out-prefix', default=None,
                        help='critic files <prefix>_encoder.onnx / <prefix>_head.onnx '
                             '(default <out dir>/<out stem>_critic)')
    parser.add_argument('--checkpoint', default=None,
                        help='checkpoint written at every export '
                             '(default <out dir>/<out stem>_checkpoint.pt)')
    parser.add_argument('--export-every', type=positive_int, default=500,
                        help='gradient steps between exports (default 500)')
    parser.add_argument('--steps-per-episode', type=nonnegative_float, default=10.0,
                        help='gradient steps per new episode (default 10)')
    parser.add_argument('--steps-per-poll', type=nonnegative_int, default=0,
                        help='fixed gradient steps per poll, independent of new data '
                             '(default 0: off)')
    parser.add_argument('--max-steps', type=positive_int, default=None,
                        help='stop after this many gradient steps (default: run until Ctrl-C)')
    parser.add_argument('--max-idle-s', type=nonnegative_float, default=None,
                        help='stop when the granted steps are done and no episode arrived '
                             'for this long (s) since (default: never)')
    parser.add_argument('--poll-s', type=nonnegative_float, default=5.0,
                        help='seconds between dataset polls (default 5)')
    parser.add_argument('--min-episodes', type=positive_int, default=1,
                        help='episodes in the buffer before training starts')
    parser.add_argument('--capacity', type=positive_int, default=100_000,
                        help='replay buffer capacity (transitions; FIFO)')
    parser.add_argument('--log-every', type=positive_int, default=100,
                        help='gradient steps between progress lines')
    parser.add_argument('--action-label', default='hindsight', choices=('expert', 'hindsight'),
                        help="x, y action labels of a grasp-target actor: 'hindsight' "
                             "(default) = the demonstrator's noise-free ones where it "
                             "recorded a goal, the robot's own episodes steer to where they "
                             "closed and take z, yaw from the actor's recorded noise-free "
                             "action; 'expert' = the logged actions for the robot's own "
                             'episodes (with exploration noise they taught the noise: README)')
    parser.add_argument('--miss-label', default='mask', choices=('mask', 'reopen'),
                        help="steps of misses (closes before the grasp close) in the robot's "
                             "own successful episodes: 'mask' (default) = left out of the "
                             "actor's batches; 'reopen' = relabelled as the reopening that "
                             'should have come at once (learning.targets.reopen_actions)')
    parser.add_argument('--reward-source', default='ground_truth', choices=REWARD_SOURCES,
                        help="who labels the rewards of the episodes trained on: "
                             "'ground_truth' (default) = the dataset's own rewards; "
                             "'classifier' = the success classifier's debounced decision on "
                             'the episode images (reward 1 and the episode cut where it '
                             'fires, else 0; learning.relabel), except episodes the dataset '
                             'says the classifier already labelled in the stack; offline '
                             'episodes keep their rewards')
    parser.add_argument('--success-model', default=None,
                        help='success classifier ONNX for --reward-source classifier '
                             f'(default {DEFAULT_SUCCESS_MODEL}); its contract thresholds and '
                             'debounce frames decide')
    parser.add_argument('--offline-dataset-root', default=None,
                        help='also put this dataset (e.g. the pretraining one) in the buffer '
                             '(default: --dataset-root)')
    parser.add_argument('--offline-dataset-id', default=None,
                        help='Minari dataset id under --offline-dataset-root (default: none)')
    parser.add_argument('--offline-max-episodes', type=positive_int, default=None,
                        help='use only the first N episodes of the offline dataset (default '
                             'all)')
    sim = parser.add_argument_group(
        'in process', 'finetune on episodes of the simulated task run in this process '
        '(learning.sim_finetune: the same task code as the ROS sim node, about 40x faster than '
        'the stack at real time; no ROS, no dataset)')
    sim.add_argument('--in-process', action='store_true',
                     help='run rounds of episodes in process instead of reading a dataset')
    sim.add_argument('--rounds', type=positive_int, default=10, help='collect-train-export rounds')
    sim.add_argument('--episodes-per-round', type=nonnegative_int, default=100,
                     help='exploration episodes per round (each grants --steps-per-episode; '
                          '0 with --steps-per-poll N trains N steps per round on the offline '
                          'data alone: the control)')
    sim.add_argument('--first-seed', type=nonnegative_int, default=100_000,
                     help='scene seed of the first exploration episode')
    sim.add_argument('--actor-noise-std', type=float, default=0.1,
                     help="exploration noise of the acting actor (the policy node's "
                          'actor_noise_std), in [0, 1]')
    sim.add_argument('--actor-sample-discrete', action='store_true',
                     help="draw the acting actor's open, close and terminate from its "
                          "probabilities (the policy node's actor_sample_discrete)")
    sim.add_argument('--policy-mode', default='actor', choices=('actor', 'switch'),
                     help="how the episodes are run, as the policy node's mode: 'actor' "
                          "(the noisy actor) or 'switch' (AW-Opt's episode-level switch: "
                          '--cem-episode-prob of the episodes by CEM over the exported critic)')
    sim.add_argument('--cem-episode-prob', type=float, default=0.8,
                     help='share of CEM episodes with --policy-mode switch (AW-Opt: 0.8)')
    sim.add_argument('--eval-episodes', type=nonnegative_int, default=100,
                     help='noise-free evaluation episodes on fixed scenes (0: none)')
    sim.add_argument('--eval-every', type=positive_int, default=2,
                     help='rounds between evaluations')
    sim.add_argument('--eval-first-seed', type=nonnegative_int, default=6001,
                     help='scene seed of the first evaluation episode')
    sim.add_argument('--processes', type=positive_int, default=2, help='rollout worker processes')
    sim.add_argument('--offline-scripted-episodes', type=nonnegative_int, default=0,
                     help='first collect this many noisy scripted demonstrations in process '
                          '(scene seeds 1..N, with their recorded grasp goals) into the buffer '
                          'as offline data (also beside the stack: the simulated task code '
                          'without ROS, no stack dataset needed)')
    add_learner_args(parser, image_size_help='policy image side (px) of a fresh learner '
                                             '(default 64); must match the dataset')
    return parser


#: Folder of the default outputs: ``<FINETUNE_RUNS>/<time>/grasp_finetune.onnx``.
FINETUNE_RUNS = 'runs/finetune'
PROG = 'awopt finetune'


def _fail(msg):
    """Print a failure that is not the input's fault (one line) and return 1."""
    print(f'{PROG}: {msg}', file=sys.stderr)
    return 1


def _usage(option, msg=None):
    """Print a bad-input error naming ``option`` (or a :class:`UsageError` given as
    ``option``) in argparse's form and return 2."""
    return usage_error(PROG, option if msg is None else UsageError(option, msg))


def output_files(args):
    """Return ``[(option, path), ...]``: the files ``awopt finetune`` with ``args`` (``--out``
    set) writes: actor, critic encoder and head, checkpoint, history JSON and plot (whether
    the learner has an actor or a critic is not known yet: both are listed)."""
    from awopt_ros.learning.train_cli import critic_paths
    out = Path(args.out)
    stem = out.with_name(out.stem)
    prefix = args.critic_out_prefix or default_critic_prefix(out)
    option = '--critic-out-prefix' if args.critic_out_prefix else '--out'
    return ([('--out', out)] + [(option, p) for p in critic_paths(prefix)]
            + [('--checkpoint' if args.checkpoint else '--out',
                Path(args.checkpoint or f'{stem}_checkpoint.pt')),
               ('--out', Path(f'{stem}_finetune_history.json')),
               ('--out', Path(f'{stem}_finetune.png'))])


def success_relabeller(path, image_size, crop_xywh):
    """Load the success classifier at ``path`` for the learner's images and return its
    :class:`~awopt_ros.learning.relabel.ClassifierRelabeller`.

    The contract must be a grasp classifier for ``image_size`` px images cropped
    ``crop_xywh`` (those of the dataset the learner trains on).

    Raises:
        awopt_ros.cli_args.UsageError: naming ``--success-model``: no file, not a readable
            ONNX model, or a contract that does not fit (one line).
    """
    from awopt_ros.core.success_classifier import (ModelContractError, ModelFileError,
                                                   SuccessClassifier, expected_contract)
    from awopt_ros.learning.relabel import ClassifierRelabeller
    try:
        classifier = SuccessClassifier(path, expected_contract('grasp', image_size, crop_xywh))
    except (FileNotFoundError, ModelFileError, ModelContractError) as exc:
        raise UsageError('--success-model', str(exc).replace('\n', ' ')) from None
    return ClassifierRelabeller(classifier, path)


def run_finetune(args):
    """Run ``awopt finetune`` with parsed ``args``; return the exit code (0 ok, 1 failure,
    2 bad input: one line naming the option, 130 interrupted)."""
    # Reading must never lock the HDF5 file the logger appends to (before h5py opens it).
    os.environ.setdefault('HDF5_USE_FILE_LOCKING', 'FALSE')
    from awopt_ros.core.image_ops import check_crop
    from awopt_ros.learning.awopt import Learner, ReplayBuffer
    from awopt_ros.learning.train_cli import resolve_preset
    in_process = getattr(args, 'in_process', False)
    if not in_process and not (args.dataset_root and args.dataset_id):
        return _usage('--dataset-root' if not args.dataset_root else '--dataset-id',
                      '--dataset-root and --dataset-id are required (or --in-process)')
    if args.fresh_weights and not args.init_checkpoint:
        return _usage('--fresh-weights', 'needs --init-checkpoint (the model to copy)')
    reward_source = getattr(args, 'reward_source', 'ground_truth')
    success_model = getattr(args, 'success_model', None)
    if success_model is not None and reward_source != 'classifier':
        return _usage('--success-model', 'is used only with --reward-source classifier')
    if reward_source == 'classifier':
        success_model = success_model or DEFAULT_SUCCESS_MODEL
        if not Path(success_model).is_file():
            return _usage('--success-model', f'no success classifier at {success_model} '
                                             '(awopt train-classifier writes one)')
    if args.out is None:
        args.out = str(Path(FINETUNE_RUNS) / time.strftime('%Y%m%d-%H%M%S')
                       / 'grasp_finetune.onnx')
    out = Path(args.out)
    try:
        outputs = output_files(args)
        check_outputs(outputs, force=getattr(args, 'force', False),
                      keep=[p for _, p in outputs])
        parse_overrides(args.overrides)
    except UsageError as exc:
        return _usage(exc)
    except ValueError as exc:
        return _usage('--set', exc)
    dataset_id = args.dataset_id or ('sim/in-process' if in_process else '')
    try:
        preset = None
        if args.preset is not None:
            try:
                kind, preset = resolve_preset(args.preset)
            except ValueError as exc:
                raise UsageError('--preset', exc) from None
            preset = 'bc' if kind == 'bc' else preset   # finetuning is always the learner
        meta = {}
        if args.init_checkpoint:
            try:
                state = load_checkpoint(args.init_checkpoint)
            except (FileNotFoundError, ValueError) as exc:
                raise UsageError('--init-checkpoint', exc) from None
            meta = state[META_KEY]
            if args.fresh_weights:
                learner = fresh_learner_from_checkpoint(
                    state, preset, num_threads=args.threads, seed=args.seed,
                    overrides=parse_overrides(args.overrides))
            else:
                learner = learner_from_checkpoint(state, preset, num_threads=args.threads)
            del state
        else:
            size = 64 if args.image_size is None else args.image_size
            learner = Learner(build_learner_config(args, preset or 'awopt', size))
        if args.image_size is not None and args.image_size != learner.config.image_size:
            return _usage('--image-size', f"{args.image_size} differs from the checkpoint's "
                                          f'{learner.config.image_size}')
        crop = list(args.crop_xywh or meta.get('crop_xywh') or DEFAULT_CROP)
        try:
            check_crop(crop, *spec.SOURCE_SIZE)
        except ValueError as exc:
            raise UsageError('--crop-xywh', exc) from None
        config = FinetuneConfig(export_every=args.export_every,
                                steps_per_episode=args.steps_per_episode,
                                steps_per_poll=args.steps_per_poll, max_steps=args.max_steps,
                                max_idle_s=args.max_idle_s, poll_s=args.poll_s,
                                min_episodes=args.min_episodes, log_every=args.log_every)
        if in_process:
            from awopt_ros.learning.sim_finetune import EpisodeList, SimFinetuneConfig
            sim_config = SimFinetuneConfig(
                rounds=args.rounds, episodes_per_round=args.episodes_per_round,
                first_seed=args.first_seed, actor_noise_std=args.actor_noise_std,
                policy_mode=args.policy_mode, cem_episode_prob=args.cem_episode_prob,
                actor_sample_discrete=args.actor_sample_discrete,
                eval_episodes=args.eval_episodes, eval_every=args.eval_every,
                eval_first_seed=args.eval_first_seed, processes=args.processes)
            if learner.actor is None:
                return _usage('--in-process', 'runs episodes with the actor; this learner '
                                              'has none')
            source = EpisodeList()
        else:
            try:
                source = DatasetSource(args.dataset_root, args.dataset_id)
            except ValueError as exc:
                raise UsageError('--dataset-id', exc) from None
        if in_process or args.offline_scripted_episodes > 0:
            from awopt_ros.sim.rollout import RolloutConfig
            rollout_config = RolloutConfig.from_yaml(image_size=learner.config.image_size,
                                                     crop_xywh=crop)
        relabel = (success_relabeller(success_model, learner.config.image_size, crop)
                   if reward_source == 'classifier' else None)
        buffer = ReplayBuffer(args.capacity)
    except UsageError as exc:
        return _usage(exc)
    except (FileNotFoundError, ValueError) as exc:
        return _usage('', exc)
    prefix = args.critic_out_prefix or default_critic_prefix(out)
    stem = out.with_name(out.stem)
    finetuner = Finetuner(
        learner, source, config, actor_path=out if learner.actor is not None else None,
        critic_prefix=prefix if learner.critic is not None else None, crop_xywh=crop,
        dataset_id=dataset_id, buffer=buffer,
        checkpoint_path=args.checkpoint or f'{stem}_checkpoint.pt',
        history_path=f'{stem}_finetune_history.json', plot_path=f'{stem}_finetune.png',
        action_label=args.action_label, miss_label=args.miss_label, relabel=relabel)
    if relabel is not None:
        d = relabel.describe()
        print(f"finetune: rewards labelled by the success classifier {d['model']} (sha256 "
              f"{d['model_sha256'][:12]}, on {d['on_threshold']:g}, off "
              f"{d['off_threshold']:g}, K {d['debounce_frames']}) instead of the dataset's; "
              'episodes the classifier already labelled in the stack are kept as they are')
    if args.offline_dataset_id:
        from awopt_ros.learning.data import load_episodes
        root = args.offline_dataset_root or args.dataset_root
        if root is None:
            return _usage('--offline-dataset-root', '--offline-dataset-id needs it with '
                                                    '--in-process')
        try:
            episodes = load_episodes(root, args.offline_dataset_id, '--offline-dataset-root'
                                     if args.offline_dataset_root else '--dataset-root',
                                     '--offline-dataset-id')
            episodes = first_episodes(episodes, args.offline_max_episodes,
                                      '--offline-max-episodes')
            print(f'finetune: {finetuner.add_offline(episodes)} offline episodes from '
                  f'{args.offline_dataset_id} in the buffer')
        except UsageError as exc:
            return _usage(exc)
        except (FileNotFoundError, ValueError, FinetuneError) as exc:
            return _usage('--offline-dataset-id', f'offline dataset: {exc}')
        del episodes
    try:
        if args.offline_scripted_episodes > 0:
            from awopt_ros.learning.sim_finetune import scripted_demonstrations
            print(f'finetune: collecting {args.offline_scripted_episodes} scripted '
                  'demonstrations in process')
            demos = scripted_demonstrations(args.offline_scripted_episodes,
                                            processes=args.processes,
                                            rollout_config=rollout_config)
            print(f'finetune: {finetuner.add_offline(demos)} offline scripted episodes '
                  f'({sum(bool(ep["success"]) for ep in demos)} successful) in the buffer')
            del demos
        if in_process:
            from awopt_ros.learning.sim_finetune import run_sim_finetune
            summary = run_sim_finetune(finetuner, sim_config, rollout_config, seed=args.seed)
        else:
            summary = finetuner.run()
    except FinetuneError as exc:
        return _fail(exc)
    written = [str(p) for p in (finetuner.history_path, finetuner.plot_path,
                                finetuner.checkpoint_path)]
    if summary['exports']:
        written = summary['exports'][-1]['files'] + written
    print(f'finetune: wrote {", ".join(written)}')
    return 130 if summary['stop_reason'] == 'interrupted' else 0


def main(argv=None):
    """Stand-alone entry point (``python -m awopt_ros.learning.finetune``)."""
    import argparse

    from awopt_ros.cli_args import HelpFormatter
    parser = add_finetune_args(argparse.ArgumentParser(
        prog=PROG, description=__doc__.split('\n')[0], formatter_class=HelpFormatter))
    return run_finetune(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
