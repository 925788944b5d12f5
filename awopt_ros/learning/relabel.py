"""Label the robot's own episodes with the success classifier's decision (no ROS).

On a real robot nobody records whether a grasp succeeded; the success classifier
(:mod:`awopt_ros.core.success_classifier`, ``models/grasp_success.onnx``) is what decides.
``awopt finetune --reward-source classifier`` trains on the rewards the classifier would
have given, computed here per episode the way the stack decides online (the
``success_detector`` node and the episode manager with ``success_source: classifier``):

1. score every observation image of the episode, p_i = classifier(image_i) for
   i = 0..T (uint8 (T+1, S, S, 3), S = the classifier's ``image_size``);
2. debounce like the node (:class:`~awopt_ros.core.success_classifier.SuccessDebouncer`:
   success once p >= ``on_threshold`` for ``debounce_frames`` (K) consecutive frames, any
   frame below it before then starts the run again); f = the first frame where it fires.
   Every observation is fed: a dataset holds one observation per control step (the logger
   records one per step, ``control_period_s`` 0.1 s in every config), which is the rate the
   contract's thresholds and K were chosen at (its ``frame_period_s``, 0.1 s); the node, fed
   a 30 Hz camera, counts only frames that far apart. A classifier whose ``frame_period_s``
   differs from the episodes' step period (``step_period_s``) by more than 10 % is refused;
3. fired at frame f: the stack would have ended the episode there, after action f - 1, so
   the episode is cut to T' = max(f, 1) steps (observations 0..T', later steps dropped),
   with reward 1 and ``terminations`` set on its last step; never fired: the T steps stay,
   rewards 0, and the last step is ``terminations`` when its action was the terminate
   action (a terminal state, as the stack records it) else ``truncations`` (time limit).

An episode the dataset says was already labelled by the classifier in the stack (its
per-episode metadata ``reward_source == 'classifier'``, written by the logger) is kept as
it is: its rewards are already the classifier's, and the stack already cut it.

An episode recorded under another success source may end before the classifier could
confirm: the simulator's ground truth ends a grasp after its own debounce, often 1-2 frames
after the lift, fewer than K. It is labelled failed (a missed success: relabelling cannot
see frames that were never recorded), and counted as ``ended_unconfirmed`` (the progress
line says how many). Relabelling fits episodes that ran to a timeout, the terminate action
or an operator's end; those logged under ``success_source: classifier`` are kept as they are.

Every episode gets a record (``reward_source``, model path and sha256, the frame the
decision fired at, the dataset's own outcome and the classifier's), and
:class:`ClassifierRelabeller` counts how often the classifier's outcome agrees with the
dataset's own (in simulation: the ground truth).
"""
import hashlib
from pathlib import Path

import numpy as np

from awopt_ros.core import spec

#: ``--reward-source`` choices: the dataset's own rewards, or the classifier's decision.
REWARD_SOURCES = ('ground_truth', 'classifier')
#: Default ``--success-model`` (the contract's grasp classifier).
DEFAULT_SUCCESS_MODEL = 'models/grasp_success.onnx'


class RelabelError(RuntimeError):
    """The classifier cannot label this data (e.g. its image size differs)."""


def file_sha256(path):
    """Return the sha256 hex digest (str, 64 chars) of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def episode_reward_source(episode, meta=None):
    """Return who labelled ``episode``'s rewards per the dataset (str, e.g. 'classifier' or
    'ground_truth'), or None when the dataset does not say (datasets written before the
    logger recorded it).

    Looks at ``episode['reward_source']``, then the episode metadata ``meta`` (Minari's
    per-episode metadata dict: ``reward_source`` at its top level or in ``options``).
    """
    for holder in (episode, meta or {}, (meta or {}).get('options') or {}):
        value = holder.get('reward_source') if isinstance(holder, dict) else None
        if isinstance(value, np.ndarray):
            value = value.reshape(-1)[0] if value.size else None
        if isinstance(value, bytes):
            value = value.decode()
        if value is not None and str(value):
            return str(value)
    return None


def cut_episode(episode, steps):
    """Return a copy of ``episode`` keeping its first ``steps`` actions.

    Every array whose first axis has T + 1 entries (observations and their infos: image,
    proprio, success_probability, policy, stamp_s, ...) keeps entries 0..steps; every one
    with T entries (actions, rewards, terminations, truncations) keeps 0..steps-1; other
    values are kept as they are. Works on the flat layout and on a nested ``observations``
    dict. T is the number of actions.

    Raises:
        ValueError: ``steps`` not in 1..T.
    """
    t = len(episode['actions'])
    if not 1 <= steps <= t:
        raise ValueError(f'cannot cut an episode of {t} steps to {steps}')

    def cut(value):
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        if isinstance(value, (np.ndarray, list, tuple)) and np.ndim(value) >= 1:
            n = len(value)
            if n == t + 1:
                return np.asarray(value)[:steps + 1]
            if n == t:
                return np.asarray(value)[:steps]
        return value
    return {k: cut(v) for k, v in episode.items()}


def decision_rewards(actions, fire_frame):
    """Return ``(steps, rewards, terminations, truncations)`` of an episode of actions
    ``actions`` (T, 7) whose classifier decision fired at observation ``fire_frame``
    (int or None for never).

    Fired at f: steps = max(f, 1) (the episode ends after action steps - 1), rewards (steps,)
    float64 zeros with 1 on the last step, terminations True on the last step. Never:
    steps = T, rewards 0, the last step terminated when its terminate action is set (> 0.5),
    else truncated.
    """
    actions = np.asarray(actions)
    t = int(actions.shape[0])
    if fire_frame is not None:
        steps = min(max(int(fire_frame), 1), t)
        success = True
    else:
        steps, success = t, False
    rewards = np.zeros(steps, np.float64)
    terms = np.zeros(steps, bool)
    truncs = np.zeros(steps, bool)
    if success:
        rewards[-1] = 1.0
        terms[-1] = True
    elif actions[-1, spec.IDX_TERMINATE] > 0.5:
        terms[-1] = True
    else:
        truncs[-1] = True
    return steps, rewards, terms, truncs


class ClassifierRelabeller:
    """Callable ``relabel(episode) -> (episode, record)``: the episode with the classifier's
    rewards (see the module docstring) and what was done.

    Args:
        classifier: object with ``.probability(images) -> float32 (N,)`` for uint8
            (N, S, S, 3), and ``on_threshold``, ``off_threshold``, ``debounce_frames``
            (e.g. :class:`~awopt_ros.core.success_classifier.SuccessClassifier`); an
            ``image_size`` attribute, when present, is checked against the episodes.
        model_path: the classifier's file (recorded with its sha256; None: not recorded).
        on_threshold, off_threshold, debounce_frames: override the classifier's values
            (None: the classifier's, i.e. its contract's).
        step_period_s: time between the episodes' observations (s; one control step, 0.1 s
            in the stack); must be within 10 % of the classifier's ``frame_period_s``
            (0.1 s when it has none).

    Raises:
        RelabelError: the step period does not match the classifier's frame period.
        ValueError: thresholds or periods out of range.

    Attributes:
        counts: dict of episodes ``relabelled``, ``kept`` (already labelled by the classifier
            in the stack), ``classifier_success`` and ``dataset_success`` (of the relabelled
            ones), ``agree`` (relabelled episodes whose outcome equals the dataset's own),
            ``steps_dropped``; ``ground_truth_known`` (episodes whose dataset recorded the
            simulator's ``ground_truth_success`` beside the classifier's) and
            ``ground_truth_agree`` (of those, the classifier's outcome equals it);
            ``ended_unconfirmed`` (relabelled episodes that ended while the classifier's run
            was open, fewer than K frames at or above the on-threshold: labelled failed, but
            the recording, not the classifier, cut them short) (:meth:`tally`).
    """

    source = 'classifier'

    def __init__(self, classifier, model_path=None, on_threshold=None, off_threshold=None,
                 debounce_frames=None, step_period_s=0.1):
        from awopt_ros.core.success_classifier import (DEFAULT_FRAME_PERIOD_S,
                                                       check_frame_period, check_thresholds)
        self.classifier = classifier
        self.frame_period_s = check_frame_period(
            getattr(classifier, 'frame_period_s', DEFAULT_FRAME_PERIOD_S))
        self.step_period_s = check_frame_period(step_period_s)
        if abs(self.step_period_s - self.frame_period_s) > 0.1 * self.frame_period_s:
            raise RelabelError(
                f'the success classifier counts frames {self.frame_period_s:g} s apart '
                f'(contract frame_period_s), the episodes have one observation every '
                f'{self.step_period_s:g} s: its thresholds and K do not apply')
        self.on_threshold, self.off_threshold, self.debounce_frames = check_thresholds(
            classifier.on_threshold if on_threshold is None else on_threshold,
            classifier.off_threshold if off_threshold is None else off_threshold,
            classifier.debounce_frames if debounce_frames is None else debounce_frames)
        self.image_size = getattr(classifier, 'image_size', None)
        self.model_path = None if model_path is None else str(model_path)
        self.model_sha256 = (None if model_path is None or not Path(model_path).is_file()
                             else file_sha256(model_path))
        self.counts = {'relabelled': 0, 'kept': 0, 'classifier_success': 0,
                       'dataset_success': 0, 'agree': 0, 'steps_dropped': 0,
                       'ground_truth_known': 0, 'ground_truth_agree': 0,
                       'ended_unconfirmed': 0}

    def describe(self):
        """Return the settings (JSON-able dict): source, model, sha256, thresholds."""
        return {'reward_source': self.source, 'model': self.model_path,
                'model_sha256': self.model_sha256, 'on_threshold': self.on_threshold,
                'off_threshold': self.off_threshold, 'debounce_frames': self.debounce_frames,
                'frame_period_s': self.frame_period_s}

    def decide(self, images):
        """Score ``images`` uint8 (T+1, S, S, 3) and debounce them as the stack does; return
        ``(fire_frame, open_run)``: the first observation index (int) where the decision
        fires, or None when it never does, and then the run of frames still counting towards
        success at the last frame (0 < open_run < K: the recording stopped before K frames
        could confirm a success, e.g. an episode ended by another success source).

        Raises:
            RelabelError: images of another size than the classifier's, or a wrong number of
                probabilities.
        """
        from awopt_ros.core.success_classifier import SuccessDebouncer
        images = np.asarray(images)
        if self.image_size is not None and images.shape[1:3] != (self.image_size,) * 2:
            raise RelabelError(f'the success classifier takes {self.image_size}x'
                               f'{self.image_size} images, the episode has {images.shape[1]}x'
                               f'{images.shape[2]}')
        probs = np.asarray(self.classifier.probability(images), dtype=np.float32).reshape(-1)
        if probs.shape != (images.shape[0],):
            raise RelabelError(f'the success classifier gave {probs.shape} probabilities for '
                               f'{images.shape[0]} images')
        debouncer = SuccessDebouncer(self.on_threshold, self.off_threshold,
                                     self.debounce_frames)
        for i, p in enumerate(probs):
            if debouncer.update(p):
                return i, 0
        return None, int(debouncer.run)

    def __call__(self, episode, meta=None):
        """Return ``(episode, record)``: ``episode`` relabelled (a new dict; the input is not
        changed) or, when the dataset says the classifier already labelled it, as it is.

        ``record`` (JSON-able dict): ``reward_source`` ('classifier'), ``relabelled`` (bool),
        ``model`` and ``model_sha256``, ``fire_frame`` (int or None), ``open_run`` (see
        :meth:`decide`), ``classifier_success``,
        ``dataset_success``, ``ground_truth_success`` (the dataset's, bool or None),
        ``recorded_steps`` and ``steps``.
        """
        obs = episode.get('observations', episode)
        rewards = np.asarray(episode['rewards']).reshape(-1)
        dataset_success = bool(np.any(rewards > 0))
        t = len(episode['actions'])
        truth = episode.get('ground_truth_success')
        record = {'reward_source': self.source, 'model': self.model_path,
                  'model_sha256': self.model_sha256, 'dataset_success': dataset_success,
                  'ground_truth_success': None if truth is None else bool(truth),
                  'recorded_steps': int(t)}
        if episode_reward_source(episode, meta) == self.source:
            record.update(relabelled=False, fire_frame=None, open_run=0,
                          classifier_success=dataset_success, steps=int(t))
            return episode, record
        fire, open_run = self.decide(obs['image'])
        steps, new_rewards, terms, truncs = decision_rewards(episode['actions'], fire)
        out = cut_episode(episode, steps) if steps < t else dict(episode)
        out['rewards'] = new_rewards
        out['terminations'] = terms
        out['truncations'] = truncs
        out['reward_source'] = self.source
        success = fire is not None
        for key, value in (('success', success), ('terminated', bool(terms[-1]))):
            if key in out:                  # in-process rollouts carry their own outcome
                out[key] = value
        record.update(relabelled=True, fire_frame=fire, open_run=open_run,
                      classifier_success=success, steps=int(steps))
        return out, record

    def tally(self, record):
        """Count one episode's ``record`` (from :meth:`__call__`) in :attr:`counts`; the
        finetuner calls it once the episode is in the replay buffer (an episode read
        half-written is relabelled again at the next poll, and counted once)."""
        c = self.counts
        if record.get('ground_truth_success') is not None:
            c['ground_truth_known'] += 1
            c['ground_truth_agree'] += (record['classifier_success']
                                        == record['ground_truth_success'])
        if not record['relabelled']:
            c['kept'] += 1
            return
        c['relabelled'] += 1
        c['classifier_success'] += record['classifier_success']
        c['dataset_success'] += record['dataset_success']
        c['agree'] += record['classifier_success'] == record['dataset_success']
        c['steps_dropped'] += record['recorded_steps'] - record['steps']
        c['ended_unconfirmed'] += record.get('open_run', 0) > 0

    def progress_text(self):
        """One clause for progress lines: the classifier's successes vs the dataset's own
        outcome on the relabelled episodes (agreement), and the episodes kept as labelled by
        the classifier in the stack."""
        c = self.counts
        parts = []
        if c['relabelled']:
            parts.append(f"rewards by classifier: {c['classifier_success']}/{c['relabelled']} "
                         f"success vs {c['dataset_success']} in the dataset, agree "
                         f"{c['agree']}/{c['relabelled']}")
        if c['ended_unconfirmed']:
            parts.append(f"{c['ended_unconfirmed']} ended before {self.debounce_frames} frames "
                         'could confirm a success (labelled failed)')
        if c['kept']:
            parts.append(f"{c['kept']} already labelled by the classifier in the stack "
                         '(not relabelled)')
        if c['ground_truth_known']:
            parts.append('classifier agrees with the recorded ground truth on '
                         f"{c['ground_truth_agree']}/{c['ground_truth_known']}")
        return '; '.join(parts) or 'rewards by classifier: no episode yet'
