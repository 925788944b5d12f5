"""Append finished grasping episodes to an offline-RL dataset in Minari format.

Layout (docs/INTERFACES.md, "Dataset"): one Minari dataset per run under
``<root_dir>/datasets/<dataset_id>`` (``MINARI_DATASETS_PATH = <root_dir>/datasets``), e.g.
``awopt/kuka-grasp-v0``. Observation space ``Dict(image: Box uint8 (S, S, 3), proprio: Box
float32 (6,))``, action space ``Box float32 (7,)`` with the bounds of ``core.spec``.

Per episode of T actions (Minari's convention):
- ``observations``: T + 1 entries (the observation each action was computed from, then the
  final one);
- ``actions`` (T, 7) float32, what the policy commanded, clipped to the action bounds;
- ``rewards`` (T,) float64: 1.0 on the last step when the episode succeeded, else 0;
- ``terminations`` / ``truncations`` (T,) bool: set on the last step only, from the episode
  outcome (terminated = success or terminate action; truncated = timeout/operator/node lost);
- ``infos``: numeric arrays with T + 1 entries aligned with the observations:
  ``success_probability`` (float32), ``policy`` (int64, see :data:`POLICY_IDS`) and
  ``stamp_s`` (float64, the observation image's stamp) and ``grasp_goal`` (float32 (4,): the
  grasp pose a scripted demonstrator aimed for at that step, x, y, z in m and yaw in rad in
  base_link; NaN where the policy published none, e.g. a learned policy) and
  ``noise_free_action`` (float32 (7,): the learned actor's own action before its exploration
  noise and discrete sampling; NaN where none was recorded, e.g. CEM steps) and
  ``success_classifier_probability`` (float32: the success detector's latest score stamped at
  or before the observation image's stamp, :func:`latest_at_or_before`, and only one stamped
  after the episode's start and at most :data:`CLASSIFIER_SCORE_MAX_AGE_S` before the image;
  NaN where none, e.g. no detector ran or the frame was not scored yet) and ``intervention``
  (int64: 1 on a step where an operator's command replaced the policy's, the arm interface's
  ``/arm/intervention``; its action is then the operator's, its policy id 'operator', and
  ``policy_action`` (float32 (7,), NaN on the other steps) keeps the policy's own action;
  ``core.intervention``). Minari stores no
  strings in infos, so the policy id -> name table is in the dataset metadata
  (``awopt_policy_ids``);
- episode metadata (Minari's episode ``options``): ``episode`` (the episode manager's number),
  ``reward_source`` ('ground_truth' or 'classifier': the source of the success that gave the
  rewards, the ``end`` event's ``success_source``) and, when known, ``ground_truth_success``
  (bool: the simulator's ground truth reached success during the episode; absent when no
  ground truth came, e.g. on hardware).

Episodes are buffered in memory and written only by :meth:`EpisodeRecorder.end`, so a crash
mid-episode loses that episode and nothing else: the dataset on disk stays loadable.
Images are stored losslessly (Minari's JPEG encoding is turned off).

A full disk never damages the episodes already written: before an append the free space is
checked against the episode's size (too little: :class:`NoRoomError`, an ``OSError(ENOSPC)``,
nothing touched). With less than :data:`IN_PLACE_MARGIN_BYTES` to spare, the episode is
appended to a copy of the dataset files (``data.staging``), which then replaces ``data`` by
renames; a write error leaves ``data`` as it was (an HDF5 file that fails mid-append can be
left unreadable). With ample space, or too little for the copy but enough for the episode,
it is appended in place. A dataset whose creation failed is removed again.

Insertion episodes go to a dataset of their own with :class:`StateEpisodeRecorder`
(e.g. ``awopt/sawyer-insertion-v0``): observation ``Dict(state: Box float32 (15,))`` in the
order of ``core.task.INSERTION.state_names``, action ``Box float32 (3,)`` = the residual in
[-1, 1] (``core.task.INSERTION.action_names``; zeros for the P-controller alone), the same
rewards, flags and infos ``success_probability``, ``policy``, ``stamp_s``, plus
``command_m`` float32 (3,) (the tool step the controller sent, m, base_link). The same
append machinery (free-space check, copy-and-rename, lock retries) writes it.

No rclpy here. Backed by ``minari`` (HDF5 storage by default; needs ``h5py`` and ``pillow``).
"""
import contextlib
import errno
import logging
import math
import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from awopt_ros.core.paths import fsync_dir
from awopt_ros.core.spec import (ACTION_DIM, ACTION_HIGH, ACTION_LOW, ACTION_NAMES,
                                 PROPRIO_DIM, PROPRIO_NAMES, validate_action)

_LOG = logging.getLogger(__name__)

#: Which policy produced an action (the ``policy`` info); names come from
#: ``/policy/model_info`` ``kind``; anything else is 'other'.
POLICY_IDS = {'scripted': 0, 'actor': 1, 'cem': 2, 'other': 3, 'residual': 4,
              'p_controller': 5, 'operator': 6}
#: Default Minari storage format.
DEFAULT_DATA_FORMAT = 'hdf5'
#: Dataset namespace used by :func:`dataset_id_for`.
NAMESPACE = 'awopt'

_ENV_LOCK = threading.Lock()


def _optional_info(value, size, name):
    """Return ``value`` as float32 (size,), or NaN (size,) for None; ValueError naming
    ``name`` for another shape."""
    if value is None:
        return np.full(size, np.nan, np.float32)
    out = np.asarray(value, dtype=np.float32).reshape(-1)
    if out.shape != (size,):
        raise ValueError(f'{name} must have {size} entries, got shape {out.shape}')
    return out


#: Oldest success-classifier score (s before a step's image stamp) that may stand for the
#: step's own: the detector scores every policy image and stamps its score with the frame's
#: stamp, so a step normally finds its own frame's score (age 0); a frame it has not scored
#: (dropped, or still queued when the episode ended) takes the previous frame's score, up to
#: about 2 frame periods back: 0.2 s at the lockstep control period (0.1 s), 6 frames at the
#: camera's 30 Hz. Older than that the score says little about the step's frame: NaN.
CLASSIFIER_SCORE_MAX_AGE_S = 0.25


def latest_at_or_before(query_s, stamps_s, values, after_s=None, max_age_s=None):
    """Return, for each query stamp, the value whose stamp is the latest at or before it.

    Args:
        query_s: (N,) stamps to look up (s).
        stamps_s: (M,) stamps of ``values`` (s), in any order; ties: the value given last.
        values: (M,) values.
        after_s: optional stamp (s): only values stamped strictly after it count (an
            episode's start: a score of the previous episode's frames must not stand for a
            step of this one).
        max_age_s: optional age (s, >= 0): a value stamped more than this before the query
            does not count.

    Returns:
        float32 (N,): the values found; NaN where no stamp that counts is at or before the
        query (and for every query when ``stamps_s`` is empty).

    Raises:
        ValueError: ``stamps_s`` and ``values`` differ in length.
    """
    query = np.asarray(query_s, dtype=np.float64).reshape(-1)
    stamps = np.asarray(stamps_s, dtype=np.float64).reshape(-1)
    vals = np.asarray(values, dtype=np.float32).reshape(-1)
    if stamps.shape != vals.shape:
        raise ValueError(f'stamps_s and values differ in length: {stamps.shape} vs '
                         f'{vals.shape}')
    if after_s is not None:
        keep = stamps > float(after_s)
        stamps, vals = stamps[keep], vals[keep]
    out = np.full(query.shape, np.nan, np.float32)
    if stamps.size == 0:
        return out
    order = np.argsort(stamps, kind='stable')
    stamps, vals = stamps[order], vals[order]
    index = np.searchsorted(stamps, query, side='right') - 1
    found = index >= 0
    if max_age_s is not None:
        found[found] = query[found] - stamps[index[found]] <= float(max_age_s)
    out[found] = vals[index[found]]
    return out


def episode_options(episode, reward_source='ground_truth', ground_truth_success=None):
    """Return the Minari episode ``options`` the recorders store (see the module doc)."""
    from awopt_ros.core.episode import check_success_source
    options = {'episode': int(episode), 'reward_source': check_success_source(reward_source)}
    if ground_truth_success is not None:
        options['ground_truth_success'] = bool(ground_truth_success)
    return options


def policy_id(kind):
    """Return the integer id of policy ``kind`` ('scripted' 0, 'actor' 1, 'cem' 2, else 3)."""
    return POLICY_IDS.get(str(kind), POLICY_IDS['other'])


def dataset_id_for(name, version=0):
    """Return the Minari dataset id for dataset ``name``: ``'awopt/<name>-v<version>'``.

    A ``name`` that is already a full id (contains '/' and ends in ``-v<N>``) is returned as
    it is. Raises ValueError if the result is not a valid Minari id.
    """
    name = str(name)
    if '/' in name and _parse_id(name)[2] is not None:
        return name
    dataset_id = f'{NAMESPACE}/{name}-v{int(version)}'
    _parse_id(dataset_id)
    return dataset_id


def _parse_id(dataset_id):
    from minari.dataset.minari_dataset import DATASET_ID_RE
    match = DATASET_ID_RE.fullmatch(dataset_id)
    if not match:
        raise ValueError(f'malformed Minari dataset id {dataset_id!r}: expected '
                         "'namespace/name-vN' (letters, digits, '-', '_')")
    return match.group('namespace', 'dataset', 'version')


def datasets_dir(root_dir):
    """Return ``<root_dir>/datasets`` (the MINARI_DATASETS_PATH of a run) as a Path."""
    return Path(root_dir) / 'datasets'


@contextlib.contextmanager
def _minari_path(root_dir):
    """Point MINARI_DATASETS_PATH at ``<root_dir>/datasets`` for the duration of a call."""
    path = datasets_dir(root_dir).absolute()  # minari's get_size breaks on relative paths
    path.mkdir(parents=True, exist_ok=True)
    with _ENV_LOCK:
        old = os.environ.get('MINARI_DATASETS_PATH')
        os.environ['MINARI_DATASETS_PATH'] = str(path)
        try:
            yield path
        finally:
            if old is None:
                os.environ.pop('MINARI_DATASETS_PATH', None)
            else:
                os.environ['MINARI_DATASETS_PATH'] = old


def spaces(image_size=64):
    """Return ``(observation_space, action_space)`` of the dataset (gymnasium spaces)."""
    from gymnasium import spaces as gs
    size = int(image_size)
    obs = gs.Dict({
        'image': gs.Box(0, 255, (size, size, 3), dtype=np.uint8),
        'proprio': gs.Box(-np.inf, np.inf, (PROPRIO_DIM,), dtype=np.float32),
    })
    act = gs.Box(ACTION_LOW, ACTION_HIGH, (ACTION_DIM,), dtype=np.float32)
    return obs, act


#: Seconds between attempts to open a dataset file that another process has locked.
LOCK_RETRY_PERIOD_S = 0.2
#: Free bytes beyond an episode's size above which it is appended in place; below, to a copy
#: (when the copy fits; else in place). Kept below the logger's default ``min_free_disk_mb``
#: (200 MB), so the copy path stays rare while the logger accepts episodes.
IN_PLACE_MARGIN_BYTES = 128 * 1024 * 1024
#: Bytes added to an episode's array sizes for HDF5 structures and metadata.json.
APPEND_OVERHEAD_BYTES = 512 * 1024


def episode_bytes(buffer):
    """Return the bytes an episode ``buffer`` (Minari EpisodeBuffer) needs on disk (its
    arrays, uncompressed, plus :data:`APPEND_OVERHEAD_BYTES`)."""
    total = APPEND_OVERHEAD_BYTES

    def add(value):
        nonlocal total
        if isinstance(value, dict):
            for item in value.values():
                add(item)
        elif value is not None:
            total += int(np.asarray(value).nbytes)
    for value in (buffer.observations, buffer.actions, buffer.rewards, buffer.terminations,
                  buffer.truncations, buffer.infos):
        add(value)
    return total


def is_lock_error(exc):
    """True for HDF5's 'unable to lock file' (errno 11: another process has it open)."""
    return isinstance(exc, BlockingIOError) or 'unable to lock file' in str(exc).lower()


class NoRoomError(OSError):
    """The free-space check refused an append before anything was written (errno ENOSPC):
    the dataset is untouched, and the same append may succeed once space is freed."""


class EpisodeRecorder:
    """Buffer one episode at a time and append it to a Minari dataset when it ends.

    Args:
        root_dir: run directory; the dataset lives in ``<root_dir>/datasets/<dataset_id>``.
        dataset_id: Minari id ``namespace/name-vN`` (e.g. 'awopt/kuka-grasp-v0').
        image_size: side S of the square (S, S, 3) uint8 observation image (px).
        data_format: Minari storage ('hdf5' default, or 'arrow'/'parquet' with pyarrow).
        description: dataset description (a default naming the spec is used if None).
        lock_retry_s: how long (s) :meth:`append` keeps retrying while another process holds
            the dataset file open (HDF5 file locking: e.g. a training script loading the
            dataset) before it gives up; the episode then stays pending and is written
            first by the next :meth:`append` (or :meth:`flush_pending`).

    An existing dataset with the same id is appended to (its spaces must match).

    Raises:
        ValueError: malformed ``dataset_id``, ``image_size`` < 1.
    """

    def __init__(self, root_dir, dataset_id, image_size=64, *, data_format=DEFAULT_DATA_FORMAT,
                 description=None, lock_retry_s=30.0):
        import minari  # noqa: F401 - fail at construction, not at the first episode's end
        _parse_id(dataset_id)
        if int(image_size) < 1:
            raise ValueError(f'image_size must be >= 1, got {image_size}')
        self.root_dir = Path(root_dir).absolute()
        self.dataset_id = dataset_id
        self.image_size = int(image_size)
        self.data_format = data_format
        self.description = description or (
            'awopt_ros Kuka iiwa grasping episodes. observation: image uint8 (S, S, 3) RGB, '
            f'proprio float32 {PROPRIO_NAMES}; action float32 {ACTION_NAMES} '
            f'(low {ACTION_LOW.tolist()}, high {ACTION_HIGH.tolist()}); infos: '
            f'success_probability, policy (ids {POLICY_IDS}), stamp_s.')
        self.observation_space, self.action_space = spaces(self.image_size)
        self._dataset = None
        self._episode = None
        self._pending = []            # finished episodes (buffer, summary) not yet written
        self.lock_retry_s = float(lock_retry_s)
        self.lock_retries = 0         # appends that found the file locked and waited
        self.episodes_written = 0
        self.steps_written = 0

    @property
    def dataset_path(self):
        """Directory of the dataset (``<root_dir>/datasets/<dataset_id>``)."""
        return datasets_dir(self.root_dir) / self.dataset_id

    @property
    def in_episode(self):
        """True between :meth:`begin` and :meth:`end` / :meth:`abort`."""
        return self._episode is not None

    @property
    def steps(self):
        """Steps buffered in the running episode (0 when none runs)."""
        return 0 if self._episode is None else len(self._episode['actions'])

    def begin(self, episode, seed=None):
        """Start buffering episode number ``episode`` (int >= 0) reset with ``seed``.

        A running episode is discarded with a warning (it never ended).
        """
        if int(episode) < 0:
            raise ValueError(f'episode must be >= 0, got {episode}')
        if self._episode is not None:
            _LOG.warning('episode %d never ended; discarding its %d steps',
                         self._episode['episode'], self.steps)
        self._episode = {'episode': int(episode), 'seed': None if seed is None else int(seed),
                         'image': [], 'proprio': [], 'actions': [], 'success_probability': [],
                         'policy': [], 'stamp_s': [], 'grasp_goal': [],
                         'noise_free_action': [], 'success_classifier_probability': []}

    def _check_obs(self, image, proprio):
        img = np.asarray(image)
        shape = (self.image_size, self.image_size, 3)
        if img.shape != shape or img.dtype != np.uint8:
            raise ValueError(f'image must be uint8 {shape}, got {img.dtype} {img.shape}')
        p = np.asarray(proprio, dtype=np.float32).reshape(-1)
        if p.shape != (PROPRIO_DIM,):
            raise ValueError(f'proprio must have {PROPRIO_DIM} entries {PROPRIO_NAMES}, '
                             f'got {p.shape}')
        if not np.all(np.isfinite(p)):
            raise ValueError(f'proprio has non-finite entries: {p.tolist()}')
        return np.array(img, copy=True), p

    def add_step(self, image, proprio, action, success_probability, policy_id, stamp_s,
                 grasp_goal=None, noise_free_action=None,
                 success_classifier_probability=math.nan):
        """Buffer one step: the observation (image, proprio) and the action taken from it.

        Args:
            image: (S, S, 3) uint8 RGB policy image.
            proprio: (6,) proprioception (``spec.PROPRIO_NAMES``), finite.
            action: (7,) commanded action (``spec.ACTION_NAMES``), finite; stored clipped to
                ``ACTION_LOW``..``ACTION_HIGH``.
            success_probability: latest success probability in [0, 1] (NaN if none yet).
            policy_id: int from :data:`POLICY_IDS`.
            stamp_s: stamp of the image (s).
            grasp_goal: optional (4,) demonstrator's grasp goal (x, y, z m, yaw rad, base
                frame); None stores NaN.
            noise_free_action: optional (7,) actor's action before exploration noise and
                discrete sampling (``/policy/decision``); None stores NaN.
            success_classifier_probability: the success detector's score for this step (NaN:
                none); :meth:`finish` with ``classifier_scores`` replaces it.

        Raises:
            RuntimeError: no episode is running.
            ValueError: wrong shape/dtype, or non-finite proprio or action, or a grasp goal
                that is not 4 values, or a noise-free action that is not 7 values.
        """
        if self._episode is None:
            raise RuntimeError('add_step called with no episode running (call begin first)')
        img, p = self._check_obs(image, proprio)
        a = np.clip(validate_action(action), ACTION_LOW, ACTION_HIGH).astype(np.float32)
        goal = _optional_info(grasp_goal, 4, 'grasp_goal (x, y, z, yaw)')
        clean = _optional_info(noise_free_action, ACTION_DIM, 'noise_free_action')
        ep = self._episode
        ep['image'].append(img)
        ep['proprio'].append(p)
        ep['actions'].append(a)
        ep['success_probability'].append(np.float32(success_probability))
        ep['policy'].append(int(policy_id))
        ep['stamp_s'].append(float(stamp_s))
        ep['grasp_goal'].append(goal)
        ep['noise_free_action'].append(clean)
        ep['success_classifier_probability'].append(np.float32(success_classifier_probability))

    def truncate(self, steps):
        """Keep only the first ``steps`` buffered steps of the running episode.

        Returns:
            None when nothing was dropped, else the first dropped step's observation as a
            dict ``image`` (S, S, 3) uint8, ``proprio`` (6,) float32, ``success_probability``,
            ``stamp_s``: the observation the last kept action led to.

        Raises:
            RuntimeError: no episode is running. ValueError: ``steps`` < 0.
        """
        if self._episode is None:
            raise RuntimeError('truncate called with no episode running')
        if int(steps) < 0:
            raise ValueError(f'steps must be >= 0, got {steps}')
        n = int(steps)
        ep = self._episode
        if len(ep['actions']) <= n:
            return None
        first = {k: ep[k][n] for k in ('image', 'proprio', 'success_probability', 'stamp_s')}
        for key in ('image', 'proprio', 'actions', 'success_probability', 'policy', 'stamp_s',
                    'grasp_goal', 'noise_free_action', 'success_classifier_probability'):
            del ep[key][n:]
        return first

    def abort(self):
        """Drop the running episode without writing it. Returns its number of steps."""
        n = self.steps
        self._episode = None
        return n

    def end(self, success, terminated, truncated, final_image, final_proprio, *,
            final_success_probability=None, final_stamp_s=None, **kwargs):
        """Finish the running episode and append it to the dataset.

        Same as :meth:`finish` followed by :meth:`append`.

        Args:
            success: the episode succeeded (reward 1.0 on its last step).
            terminated: episode terminated (set on the last step's ``terminations``).
            truncated: episode truncated (set on the last step's ``truncations``).
            final_image: (S, S, 3) uint8 observation after the last action.
            final_proprio: (6,) proprioception after the last action.
            final_success_probability: info for the final observation (default: last step's).
            final_stamp_s: stamp of ``final_image`` (default: last step's stamp).
            kwargs: ``classifier_scores``, ``reward_source``, ``ground_truth_success`` of
                :meth:`finish`.

        Returns:
            dict with ``episode``, ``seed``, ``steps`` (T), ``written`` (False when the episode
            had no action and was skipped), ``index`` (episode index in the dataset or None),
            ``dataset_id``, ``dataset_path``, ``success``, ``terminated``, ``truncated``.

        Raises:
            RuntimeError: no episode is running.
            ValueError: bad final observation (the episode is kept; call again or abort).
        """
        buffer, summary = self.finish(
            success, terminated, truncated, final_image, final_proprio,
            final_success_probability=final_success_probability, final_stamp_s=final_stamp_s,
            **kwargs)
        return self.append(buffer, summary)

    def _close(self, success, terminated, truncated):
        """Return ``(episode dict, summary)`` of the running episode, or ``(None, summary)``
        (the episode dropped, a warning logged) when it has no actions.

        Raises:
            RuntimeError: no episode running.
        """
        if self._episode is None:
            raise RuntimeError('end called with no episode running')
        ep = self._episode
        steps = len(ep['actions'])
        summary = {'episode': ep['episode'], 'seed': ep['seed'], 'steps': steps,
                   'written': False, 'index': None, 'dataset_id': self.dataset_id,
                   'dataset_path': str(self.dataset_path), 'success': bool(success),
                   'terminated': bool(terminated), 'truncated': bool(truncated)}
        if steps == 0:
            _LOG.warning('episode %d has no actions; not written to %s', ep['episode'],
                         self.dataset_id)
            self._episode = None
            return None, summary
        return ep, summary

    def finish(self, success, terminated, truncated, final_image, final_proprio, *,
               final_success_probability=None, final_stamp_s=None, classifier_scores=None,
               scores_after_s=None, reward_source='ground_truth', ground_truth_success=None,
               interventions=None):
        """Close the running episode in memory (fast); return ``(buffer, summary)``.

        ``buffer`` is None for an episode without actions (nothing to write). A new episode
        may :meth:`begin` at once; write this one with :meth:`append` (e.g. on a worker
        thread). Arguments and errors as :meth:`end`, and:

        Args:
            classifier_scores: optional ``(stamps_s (M,), scores (M,))`` of the success
                detector: each observation's ``success_classifier_probability`` becomes the
                latest score stamped at or before its ``stamp_s`` and at most
                :data:`CLASSIFIER_SCORE_MAX_AGE_S` before it (NaN where none); None keeps
                the values given to :meth:`add_step` (the final observation: the last
                step's).
            scores_after_s: the episode's start (s, the ``start`` event's ``stamp_s``): only
                scores stamped after it count (None: any; the scores of the previous
                episode's frames would then stand for steps whose frame was not scored).
            reward_source: 'ground_truth' or 'classifier', the source of ``success``
                (episode metadata).
            ground_truth_success: the simulator's ground truth reached success (episode
                metadata; None: unknown, not stored).
            interventions: optional ``(stamps_s (M,), actions (M, 7))`` of the arm
                interface's ``/arm/intervention``: a step whose stamp has one records that
                action, ``intervention`` 1, policy 'operator' and its own action as
                ``policy_action`` (``core.intervention.apply_interventions``).
        """
        ep, summary = self._close(success, terminated, truncated)
        if ep is None:
            return None, summary
        if interventions is not None and len(interventions[0]):
            from awopt_ros.core.intervention import apply_interventions
            acts, flags, own = apply_interventions(ep['actions'], ep['stamp_s'], *interventions)
            ep['actions'] = list(acts)
            ep['policy'] = [POLICY_IDS['operator'] if f else p
                            for f, p in zip(flags, ep['policy'])]
            ep['intervention'], ep['policy_action'] = [int(f) for f in flags], list(own)
        img, p = self._check_obs(final_image, final_proprio)
        options = episode_options(ep['episode'], reward_source, ground_truth_success)
        final_sp = ep['success_probability'][-1] if final_success_probability is None \
            else np.float32(final_success_probability)
        final_stamp = ep['stamp_s'][-1] if final_stamp_s is None else float(final_stamp_s)
        if classifier_scores is not None:
            ep['success_classifier_probability'] = list(latest_at_or_before(
                ep['stamp_s'] + [final_stamp], *classifier_scores, after_s=scores_after_s,
                max_age_s=CLASSIFIER_SCORE_MAX_AGE_S))
        else:
            ep['success_classifier_probability'].append(ep['success_classifier_probability'][-1])
        buffer = self._buffer(ep, img, p, final_sp, final_stamp, bool(success),
                              bool(terminated), bool(truncated), options)
        self._episode = None
        return buffer, summary

    def append(self, buffer, summary):
        """Append a buffer from :meth:`finish` to the dataset; return the updated summary.

        Calls must not overlap (one writer). ``buffer`` None: nothing is written (pending
        episodes still are). Episodes left pending by an earlier failure are written first,
        in order.

        Raises:
            OSError: the file stayed locked for ``lock_retry_s`` (the episode stays pending),
                or another I/O error (the episode is dropped, as a retry would repeat it).
        """
        if buffer is not None:
            self._pending.append((buffer, summary))
        written = self.flush_pending()
        return written if buffer is not None else summary

    @property
    def pending_episodes(self):
        """Finished episodes not yet in the dataset (the file was locked)."""
        return len(self._pending)

    def flush_pending(self):
        """Write every pending episode, oldest first; return the last one's summary (None if
        none was pending). See :meth:`append` for errors.

        An error other than a lock drops the episode that failed (the oldest pending one,
        which need not be the one just appended): the raised ``OSError`` names it in its
        attribute ``episode_summary`` (the summary given to :meth:`append`); the episodes
        after it stay pending.
        """
        written = None
        while self._pending:
            buffer, summary = self._pending[0]
            deadline = time.monotonic() + self.lock_retry_s
            while True:
                try:
                    index = self._append(buffer)
                    break
                except OSError as exc:
                    if not is_lock_error(exc):
                        self._pending.pop(0)
                        exc.episode_summary = summary
                        raise
                    if time.monotonic() >= deadline:
                        raise OSError(f'{exc} (dataset file still locked after '
                                      f'{self.lock_retry_s:.0f} s; episode kept pending, '
                                      f'{len(self._pending)} pending)') from exc
                    self.lock_retries += 1
                    time.sleep(LOCK_RETRY_PERIOD_S)
            self._pending.pop(0)
            written = dict(summary, index=index, written=True)
            self.episodes_written += 1
            self.steps_written += summary['steps']
        return written

    @staticmethod
    def _buffer(ep, final_image, final_proprio, final_sp, final_stamp, success, terminated,
                truncated, options):
        """``ep['success_classifier_probability']`` has T + 1 entries (the final one too)."""
        from minari.data_collector import EpisodeBuffer
        steps = len(ep['actions'])
        rewards = np.zeros(steps, dtype=np.float64)
        terminations = np.zeros(steps, dtype=bool)
        truncations = np.zeros(steps, dtype=bool)
        rewards[-1] = 1.0 if success else 0.0
        terminations[-1] = terminated
        truncations[-1] = truncated
        observations = {'image': np.stack(ep['image'] + [final_image]),
                        'proprio': np.stack(ep['proprio'] + [final_proprio])}
        infos = {
            'success_probability': np.array(ep['success_probability'] + [final_sp],
                                            dtype=np.float32),
            'policy': np.array(ep['policy'] + [ep['policy'][-1]], dtype=np.int64),
            'stamp_s': np.array(ep['stamp_s'] + [final_stamp], dtype=np.float64),
            'grasp_goal': np.stack(ep['grasp_goal'] + ep['grasp_goal'][-1:]).astype(np.float32),
            'noise_free_action': np.stack(ep['noise_free_action']
                                          + ep['noise_free_action'][-1:]).astype(np.float32),
            'success_classifier_probability': np.array(ep['success_classifier_probability'],
                                                       dtype=np.float32),
        }
        flags = ep.get('intervention') or [0] * steps
        own = ep.get('policy_action') or [np.full(ACTION_DIM, np.nan, np.float32)] * steps
        infos['intervention'] = np.array(flags + flags[-1:], dtype=np.int64)
        infos['policy_action'] = np.stack(own + own[-1:]).astype(np.float32)
        return EpisodeBuffer(seed=ep['seed'], options=options,
                             observations=observations, actions=np.stack(ep['actions']),
                             rewards=rewards, terminations=terminations,
                             truncations=truncations, infos=infos)

    def _metadata(self):
        """Return the awopt keys of the dataset metadata (names and policy ids)."""
        return {'awopt_policy_ids': dict(POLICY_IDS), 'awopt_action_names': list(ACTION_NAMES),
                'awopt_proprio_names': list(PROPRIO_NAMES)}

    def _open_existing(self):
        from minari import MinariDataset
        dataset = MinariDataset(self.dataset_path / 'data')
        if (dataset.observation_space != self.observation_space
                or dataset.action_space != self.action_space):
            raise ValueError(f'existing dataset {self.dataset_path} has observation space '
                             f'{dataset.observation_space} / action space '
                             f'{dataset.action_space}, expected {self.observation_space} / '
                             f'{self.action_space}')
        return dataset

    def _recover_swap(self):
        """Finish or undo a copy-and-rename append that a crash interrupted."""
        data = self.dataset_path / 'data'
        old, staging = self.dataset_path / 'data.old', self.dataset_path / 'data.staging'
        if not data.exists() and old.is_dir():
            old.rename(data)          # killed between the two renames: the old data is whole
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)

    def _append(self, buffer):
        """Append ``buffer``; return its episode index. OSError (ENOSPC) when the disk lacks
        room, with the dataset left as it was."""
        need = episode_bytes(buffer)
        if self.dataset_path.is_dir():
            self._recover_swap()
        data = self.dataset_path / 'data'
        probe = data if data.is_dir() else datasets_dir(self.root_dir)
        probe.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(probe).free
        if free < need:
            raise NoRoomError(errno.ENOSPC, f'{os.strerror(errno.ENOSPC)}: episode needs about '
                              f'{need / 2**20:.1f} MB, {free / 2**20:.1f} MB free; not '
                              'written', str(data))
        if data.is_dir() and free < need + IN_PLACE_MARGIN_BYTES:
            size = sum(f.stat().st_size for f in data.iterdir() if f.is_file())
            if free >= need + size:
                return self._append_to_copy(buffer)
            # No room for a copy, but the episode fits: in place beats dropping it.
            _LOG.warning('%s: %.1f MB free, too little for a copy of the dataset (%.1f MB); '
                         'appending in place', self.dataset_id, free / 2**20,
                         (need + size) / 2**20)
        created = not data.is_dir()
        try:
            return self._append_in_place(buffer)
        except BaseException:
            self._dataset = None
            if created:   # a half-created dataset would make every later append fail
                shutil.rmtree(self.dataset_path, ignore_errors=True)
            raise

    def _append_to_copy(self, buffer):
        """Append to a copy of ``data`` and swap it in by renames; ``data`` stays untouched
        when anything fails."""
        from minari.dataset.minari_storage import MinariStorage
        data = self.dataset_path / 'data'
        staging, old = self.dataset_path / 'data.staging', self.dataset_path / 'data.old'
        self._dataset = None   # reopened on the swapped-in files at the next in-place append
        try:
            staging.mkdir()
            for file in data.iterdir():
                if file.is_file():
                    shutil.copy2(file, staging / file.name)
            storage = MinariStorage.read(staging)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', UserWarning)
                storage.update_episodes([buffer])
            index = int(storage.total_episodes) - 1
            del storage
            fsync_dir(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        data.rename(old)
        staging.rename(data)
        shutil.rmtree(old, ignore_errors=True)
        return index

    def _append_in_place(self, buffer):
        import minari
        with _minari_path(self.root_dir):
            if self._dataset is None and (self.dataset_path / 'data').is_dir():
                self._dataset = self._open_existing()
            if self._dataset is None:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore', UserWarning)
                    self._dataset = minari.create_dataset_from_buffers(
                        dataset_id=self.dataset_id, buffer=[buffer],
                        observation_space=self.observation_space,
                        action_space=self.action_space, algorithm_name='awopt_ros',
                        author='awopt_ros', author_email='dev@awopt-ros.invalid',
                        code_permalink='awopt_ros', description=self.description,
                        data_format=self.data_format, jpeg_encoding=False)
                self._dataset.storage.update_metadata(self._metadata())
            else:
                self._dataset.update_dataset_from_buffer([buffer])
            return int(self._dataset.total_episodes) - 1


class StateEpisodeRecorder(EpisodeRecorder):
    """:class:`EpisodeRecorder` for a task with a state observation and no image (insertion):
    observation ``{'state': (D,) float32}``, action (A,) float32 within the task's bounds
    (see the module docstring).

    Args:
        root_dir, dataset_id, data_format, lock_retry_s: as :class:`EpisodeRecorder`.
        task: ``core.task.Task`` or its name; must have no image ('insertion').
        description: dataset description (a default naming the layout when None).

    Raises:
        ValueError: malformed ``dataset_id``, or a task with an image.
    """

    def __init__(self, root_dir, dataset_id, task='insertion', *,
                 data_format=DEFAULT_DATA_FORMAT, description=None, lock_retry_s=30.0):
        from awopt_ros.core.task import get_task
        self.task = get_task(task)
        if self.task.has_image:
            raise ValueError(f'StateEpisodeRecorder needs a task without an image, '
                             f'{self.task.name!r} has one: use EpisodeRecorder')
        super().__init__(root_dir, dataset_id, 1, data_format=data_format,
                         lock_retry_s=lock_retry_s, description=description or (
                             f'awopt_ros {self.task.name} episodes. observation: state float32 '
                             f'{self.task.state_names}; action float32 '
                             f'{self.task.action_names} (low {self.task.action_low.tolist()}, '
                             f'high {self.task.action_high.tolist()}); infos: '
                             f'success_probability, policy (ids {POLICY_IDS}), stamp_s, '
                             'command_m.'))
        self.state_dim = len(self.task.state_names)
        self.action_dim = len(self.task.action_names)
        self.observation_space, self.action_space = self.spaces()

    def spaces(self):
        """Return ``(observation_space, action_space)`` (gymnasium spaces) of the task."""
        from gymnasium import spaces as gs
        obs = gs.Dict({'state': gs.Box(-np.inf, np.inf, (self.state_dim,), dtype=np.float32)})
        act = gs.Box(self.task.action_low, self.task.action_high, (self.action_dim,),
                     dtype=np.float32)
        return obs, act

    def begin(self, episode, seed=None):
        """Start buffering episode ``episode`` (int >= 0) reset with ``seed``."""
        super().begin(episode, seed)
        self._episode = {'episode': int(episode), 'seed': None if seed is None else int(seed),
                         'state': [], 'actions': [], 'success_probability': [], 'policy': [],
                         'stamp_s': [], 'command_m': []}

    def _check_state(self, state):
        x = np.asarray(state, dtype=np.float32).reshape(-1)
        if x.shape != (self.state_dim,):
            raise ValueError(f'state must have {self.state_dim} entries '
                             f'{self.task.state_names}, got {x.shape}')
        if not np.all(np.isfinite(x)):
            raise ValueError(f'state has non-finite entries: {x.tolist()}')
        return x

    def add_step(self, state, action, success_probability, policy_id, stamp_s,
                 command_m=None):
        """Buffer one step: the state and the action taken from it.

        Args:
            state: (D,) observation (``task.state_names``), finite.
            action: (A,) action (``task.action_names``), finite; stored clipped to the
                task's bounds.
            success_probability: latest success probability in [0, 1] (NaN if none yet).
            policy_id: int from :data:`POLICY_IDS`.
            stamp_s: stamp of the state (s).
            command_m: optional (3,) tool step the controller sent (m); None stores NaN.

        Raises:
            RuntimeError: no episode is running.
            ValueError: wrong shapes or non-finite state or action.
        """
        if self._episode is None:
            raise RuntimeError('add_step called with no episode running (call begin first)')
        x = self._check_state(state)
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != (self.action_dim,) or not np.all(np.isfinite(a)):
            raise ValueError(f'action must be {self.action_dim} finite values '
                             f'{self.task.action_names}, got {np.asarray(action).tolist()}')
        ep = self._episode
        ep['state'].append(x)
        ep['actions'].append(np.clip(a, self.task.action_low, self.task.action_high))
        ep['success_probability'].append(np.float32(success_probability))
        ep['policy'].append(int(policy_id))
        ep['stamp_s'].append(float(stamp_s))
        ep['command_m'].append(_optional_info(command_m, 3, 'command_m'))

    def truncate(self, steps):
        """Keep the first ``steps`` steps; return None, or the first dropped step's ``state``,
        ``success_probability`` and ``stamp_s`` (dict). Errors as
        :meth:`EpisodeRecorder.truncate`."""
        if self._episode is None:
            raise RuntimeError('truncate called with no episode running')
        if int(steps) < 0:
            raise ValueError(f'steps must be >= 0, got {steps}')
        n, ep = int(steps), self._episode
        if len(ep['actions']) <= n:
            return None
        first = {k: ep[k][n] for k in ('state', 'success_probability', 'stamp_s')}
        for key in ('state', 'actions', 'success_probability', 'policy', 'stamp_s',
                    'command_m'):
            del ep[key][n:]
        return first

    def finish(self, success, terminated, truncated, final_state=None, *,
               final_success_probability=None, final_stamp_s=None,
               reward_source='ground_truth', ground_truth_success=None):
        """Close the running episode in memory; return ``(buffer, summary)`` as
        :meth:`EpisodeRecorder.finish` (no classifier score: a state dataset has no image).
        ``final_state`` (D,) is the state after the last action; None repeats the last
        step's state (no observation came after it)."""
        ep, summary = self._close(success, terminated, truncated)
        if ep is None:
            return None, summary
        options = episode_options(ep['episode'], reward_source, ground_truth_success)
        final = ep['state'][-1] if final_state is None else self._check_state(final_state)
        final_sp = (ep['success_probability'][-1] if final_success_probability is None
                    else np.float32(final_success_probability))
        final_stamp = ep['stamp_s'][-1] if final_stamp_s is None else float(final_stamp_s)
        from minari.data_collector import EpisodeBuffer
        steps = summary['steps']
        rewards = np.zeros(steps, dtype=np.float64)
        terminations = np.zeros(steps, dtype=bool)
        truncations = np.zeros(steps, dtype=bool)
        rewards[-1] = 1.0 if success else 0.0
        terminations[-1], truncations[-1] = bool(terminated), bool(truncated)
        infos = {
            'success_probability': np.array(ep['success_probability'] + [final_sp],
                                            dtype=np.float32),
            'policy': np.array(ep['policy'] + [ep['policy'][-1]], dtype=np.int64),
            'stamp_s': np.array(ep['stamp_s'] + [final_stamp], dtype=np.float64),
            'command_m': np.stack(ep['command_m'] + ep['command_m'][-1:]).astype(np.float32),
        }
        buffer = EpisodeBuffer(seed=ep['seed'], options=options,
                               observations={'state': np.stack(ep['state'] + [final])},
                               actions=np.stack(ep['actions']), rewards=rewards,
                               terminations=terminations, truncations=truncations,
                               infos=infos)
        self._episode = None
        return buffer, summary

    def end(self, success, terminated, truncated, final_state=None, **kwargs):
        """:meth:`finish` then :meth:`append` (see there)."""
        return self.append(*self.finish(success, terminated, truncated, final_state, **kwargs))

    def _metadata(self):
        return {'awopt_policy_ids': dict(POLICY_IDS), 'awopt_task': self.task.name,
                'awopt_action_names': list(self.task.action_names),
                'awopt_state_names': list(self.task.state_names)}


def episode_dict(ep, meta=None):
    """Return a Minari ``EpisodeData`` ``ep`` as the dict :func:`load_episodes` documents.

    ``meta`` is the episode's stored metadata (seed, options.episode); None leaves ``seed``
    and ``episode`` None.
    """
    meta = meta or {}
    infos = ep.infos or {}
    options = meta.get('options') or {}
    episode = options.get('episode')
    truth = options.get('ground_truth_success')
    sources = {'reward_source': str(options.get('reward_source', 'ground_truth')),
               'ground_truth_success': None if truth is None else bool(truth)}
    if 'state' in ep.observations:      # a state task (StateEpisodeRecorder)
        out = {
            'id': int(ep.id),
            'seed': None if meta.get('seed') is None else int(meta['seed']),
            'episode': None if episode is None else int(episode), **sources,
            'state': np.asarray(ep.observations['state'], dtype=np.float32),
            'actions': np.asarray(ep.actions, dtype=np.float32),
            'rewards': np.asarray(ep.rewards, dtype=np.float64),
            'terminations': np.asarray(ep.terminations, dtype=bool),
            'truncations': np.asarray(ep.truncations, dtype=bool)}
        for key, dtype in (('success_probability', np.float32), ('policy', np.int64),
                           ('stamp_s', np.float64), ('command_m', np.float32)):
            out[key] = np.asarray(infos.get(key, []), dtype=dtype)
        return out
    return {
        'id': int(ep.id),
        'seed': None if meta.get('seed') is None else int(meta['seed']),
        'episode': None if episode is None else int(episode), **sources,
        'image': np.asarray(ep.observations['image'], dtype=np.uint8),
        'proprio': np.asarray(ep.observations['proprio'], dtype=np.float32),
        'actions': np.asarray(ep.actions, dtype=np.float32),
        'rewards': np.asarray(ep.rewards, dtype=np.float64),
        'terminations': np.asarray(ep.terminations, dtype=bool),
        'truncations': np.asarray(ep.truncations, dtype=bool),
        'success_probability': np.asarray(infos.get('success_probability', []),
                                          dtype=np.float32),
        'policy': np.asarray(infos.get('policy', []), dtype=np.int64),
        'stamp_s': np.asarray(infos.get('stamp_s', []), dtype=np.float64),
        'grasp_goal': (np.asarray(infos['grasp_goal'], dtype=np.float32) if 'grasp_goal' in infos
                       else np.full((len(ep.actions) + 1, 4), np.nan, np.float32)),
        'noise_free_action': (
            np.asarray(infos['noise_free_action'], dtype=np.float32)
            if 'noise_free_action' in infos
            else np.full((len(ep.actions) + 1, ACTION_DIM), np.nan, np.float32)),
        'success_classifier_probability': (
            np.asarray(infos['success_classifier_probability'], dtype=np.float32)
            if 'success_classifier_probability' in infos
            else np.full(len(ep.actions) + 1, np.nan, np.float32)),
        'intervention': (np.asarray(infos['intervention'], dtype=bool)
                         if 'intervention' in infos
                         else np.zeros(len(ep.actions) + 1, dtype=bool)),
        'policy_action': (
            np.asarray(infos['policy_action'], dtype=np.float32) if 'policy_action' in infos
            else np.full((len(ep.actions) + 1, ACTION_DIM), np.nan, np.float32)),
    }


def load_episodes(root_dir, dataset_id):
    """Load every episode of dataset ``dataset_id`` under ``<root_dir>/datasets`` (for training).

    Returns:
        list of dict, one per episode in order, with numpy arrays (T = steps):
        ``id`` (int), ``seed`` (int or None), ``episode`` (int, the episode manager's number,
        or None), ``image`` (T+1, S, S, 3) uint8, ``proprio`` (T+1, 6) float32, ``actions``
        (T, 7) float32, ``rewards`` (T,) float64, ``terminations`` / ``truncations`` (T,) bool,
        ``success_probability`` (T+1,) float32, ``policy`` (T+1,) int64, ``stamp_s`` (T+1,)
        float64, ``grasp_goal`` (T+1, 4) float32, ``noise_free_action`` (T+1, 7) float32 and
        ``success_classifier_probability`` (T+1,) float32 (NaN where none was recorded, and
        for datasets written before they existed), ``intervention`` (T+1,) bool (the
        operator's command replaced the policy's on that step; all False for datasets
        written before it existed) and ``policy_action`` (T+1, 7) float32 (the policy's own
        action on intervention steps, else NaN); ``reward_source`` (str, 'ground_truth'
        for datasets written before it existed) and ``ground_truth_success`` (bool, or None
        where unknown). A state
        task's dataset (:class:`StateEpisodeRecorder`) gives ``state`` (T+1, D) instead of
        ``image`` and ``proprio``, ``actions`` (T, A), and ``command_m`` (T+1, 3) instead of
        ``grasp_goal`` and ``noise_free_action``. Every episode also has the operator's
        annotations (``core.annotations``, the dataset's ``annotations.jsonl``): ``label``
        ('success' | 'failure' | None), ``discarded`` (bool) and ``notes`` (list of str); the
        arrays stay as recorded (training applies them: ``annotations.training_episodes``).

    Raises:
        FileNotFoundError: no such dataset.
        ValueError: malformed ``dataset_id``.
    """
    import minari
    _parse_id(dataset_id)
    with _minari_path(root_dir):
        dataset = minari.load_dataset(dataset_id)
        indices = list(dataset.episode_indices)
        metadata = list(dataset.storage.get_episode_metadata(indices))
        episodes = list(dataset.iterate_episodes())
    from awopt_ros.core.annotations import annotate, journal_path
    return annotate([episode_dict(ep, meta) for meta, ep in zip(metadata, episodes)],
                    journal_path(root_dir, dataset_id))
