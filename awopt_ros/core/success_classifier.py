"""Camera success classifier at run time: load the ONNX model, debounce its scores, measure it.

numpy + onnxruntime only (no torch, no rclpy); used by the ``success_detector`` node, by
``awopt finetune`` (episodes labelled by the classifier), by training
(``awopt_ros.learning.success_train``) and by ``awopt evaluate-classifier``.

Model file (written by ``awopt train-classifier``; docs/INTERFACES.md):

* input ``image`` uint8 (N, S, S, 3) RGB, the policy image (S = ``image_size``, 64 in the
  stack: ``spec.POLICY_CROP_XYWH`` of the 640x480 camera frame resized), N dynamic; the
  normalisation is inside the graph;
* outputs ``probability`` float32 (N,) in [0, 1] (sigmoid in the graph) and ``logit`` float32
  (N,), the success score of each frame;
* metadata ``awopt_contract`` (JSON): ``kind`` = ``'success_classifier'``, ``task``
  (``'grasp'`` | ``'insertion'``), ``image_size`` (int, px), ``crop_xywh``, ``source_size``,
  ``on_threshold``, ``off_threshold`` (probabilities), ``debounce_frames`` (K, frames),
  ``target_false_positive_rate``, ``version``; ``model_card`` (text).

Decision (:class:`SuccessDebouncer`): success once K consecutive frames score at or above the
on-threshold; a frame below the off-threshold resets the run and the decision; a frame in
between holds the run. Model faults raise the errors of :mod:`awopt_ros.core.onnx_policy`
(:class:`ModelFileError`, :class:`ModelContractError`, :class:`ModelRunError`), one line each,
naming the file.

Metrics (:func:`frame_metrics`, :func:`episode_metrics`): frame accuracy, false-positive and
false-negative rates at a threshold, PR-AUC as average precision, expected calibration error
over 10 equal-width bins; episode false-success and missed-success rates and the detection
delay (frames after the first positive frame).
"""
import math

import numpy as np

from awopt_ros.core import ort_session, spec
from awopt_ros.core.onnx_policy import (CONTRACT_VERSION, ORT_FLOAT, ORT_UINT8,
                                        ModelContractError, ModelFileError, ModelRunError,
                                        _check_file, check_contract, check_graph_io,
                                        read_contract, short_error)

__all__ = ['CLASSIFIER_KIND', 'INPUT_NAME', 'OUTPUT_NAMES', 'CONTRACT_KEYS', 'TASKS',
           'ECE_BINS', 'ModelContractError', 'ModelFileError', 'ModelRunError',
           'make_contract', 'expected_contract', 'check_thresholds', 'SuccessClassifier',
           'SuccessDebouncer', 'episode_decision', 'average_precision', 'pr_curve',
           'reliability_bins', 'expected_calibration_error', 'frame_metrics',
           'episode_metrics']

#: ``kind`` of a success classifier's contract (an actor's contract has none).
CLASSIFIER_KIND = 'success_classifier'
#: Graph input name and output names, in order.
INPUT_NAME = 'image'
OUTPUT_NAMES = ('probability', 'logit')
#: Keys every success classifier's contract carries.
CONTRACT_KEYS = ('kind', 'task', 'image_size', 'crop_xywh', 'source_size', 'on_threshold',
                 'off_threshold', 'debounce_frames', 'target_false_positive_rate', 'version')
#: Tasks a classifier may be trained for.
TASKS = ('grasp', 'insertion')
#: Bins of the expected calibration error and the reliability diagram (equal width on [0, 1]).
ECE_BINS = 10


def check_thresholds(on_threshold, off_threshold, debounce_frames):
    """Validate debouncer settings; return them as ``(float, float, int)``.

    Args:
        on_threshold: probability at or above which a frame counts towards success, in (0, 1].
        off_threshold: probability below which the run and the decision reset, in
            [0, on_threshold].
        debounce_frames: K >= 1 consecutive frames at or above ``on_threshold``.

    Raises:
        ValueError: a value out of range or not a number (the message names it).
    """
    try:
        on, off = float(on_threshold), float(off_threshold)
    except (TypeError, ValueError):
        raise ValueError(f'thresholds must be numbers, got on_threshold={on_threshold!r}, '
                         f'off_threshold={off_threshold!r}') from None
    if not 0.0 < on <= 1.0:
        raise ValueError(f'on_threshold must be in (0, 1], got {on}')
    if not 0.0 <= off <= on:
        raise ValueError(f'off_threshold must be in [0, on_threshold={on}], got {off}')
    if isinstance(debounce_frames, bool) or int(debounce_frames) != debounce_frames \
            or int(debounce_frames) < 1:
        raise ValueError(f'debounce_frames must be an integer >= 1, got {debounce_frames!r}')
    return on, off, int(debounce_frames)


def make_contract(task, on_threshold, off_threshold, debounce_frames,
                  target_false_positive_rate, image_size=spec.POLICY_IMAGE_SIZE,
                  crop_xywh=spec.POLICY_CROP_XYWH, extra=None, source_size=spec.SOURCE_SIZE):
    """Return the ``awopt_contract`` dict of a success classifier.

    Args:
        task: ``'grasp'`` or ``'insertion'``.
        on_threshold, off_threshold, debounce_frames: see :func:`check_thresholds`.
        target_false_positive_rate: frame false-positive rate the on-threshold was chosen for
            on validation frames, in [0, 1].
        image_size: side S of the square input image (px).
        crop_xywh: (x, y, w, h) crop of the ``source_size`` camera frame (px).
        source_size: (width, height) of the camera frame (px); the grasp stack's 640x480 by
            default (insertion's camera pipeline: 320x240, crop (40, 0, 240, 240)).
        extra: further JSON-able keys (e.g. ``dataset``, ``heldout_group``); they may not
            replace the standard ones.

    Raises:
        ValueError: unknown task, bad thresholds, a bad crop or size, or a clashing extra.
    """
    if task not in TASKS:
        raise ValueError(f'task must be one of {TASKS}, got {task!r}')
    on, off, k = check_thresholds(on_threshold, off_threshold, debounce_frames)
    fpr = float(target_false_positive_rate)
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f'target_false_positive_rate must be in [0, 1], got {fpr}')
    crop = [int(v) for v in crop_xywh]
    source = [int(v) for v in source_size]
    if len(crop) != 4 or len(source) != 2 or int(image_size) < 1:
        raise ValueError(f'need crop_xywh of 4 entries and image_size >= 1, got {crop}, '
                         f'{image_size}')
    contract = {'kind': CLASSIFIER_KIND, 'task': task, 'image_size': int(image_size),
                'crop_xywh': crop, 'source_size': source,
                'on_threshold': on, 'off_threshold': off, 'debounce_frames': k,
                'target_false_positive_rate': fpr, 'version': CONTRACT_VERSION}
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(contract))
    if clash:
        raise ValueError(f'extra may not replace the contract keys {clash}')
    contract.update(extra)
    return contract


def expected_contract(task=None, image_size=spec.POLICY_IMAGE_SIZE,
                      crop_xywh=spec.POLICY_CROP_XYWH):
    """Return the contract fields a caller feeding the stack's policy image relies on.

    Args:
        task: ``'grasp'`` / ``'insertion'``, or None to accept either.
        image_size: side of the images the caller feeds (px).
        crop_xywh: crop of the camera frame those images come from.

    Returns:
        dict for :func:`awopt_ros.core.onnx_policy.check_contract`: ``kind``, ``image_size``,
        ``crop_xywh`` and, when given, ``task``.
    """
    out = {'kind': CLASSIFIER_KIND, 'image_size': int(image_size),
           'crop_xywh': [int(v) for v in crop_xywh]}
    if task is not None:
        out['task'] = str(task)
    return out


class SuccessClassifier:
    """A success classifier (ONNX) run by onnxruntime on CPU, its contract checked at load.

    Args:
        path: ONNX file written by ``awopt train-classifier``.
        expected: contract fields the caller relies on (:func:`expected_contract`); None
            checks only the classifier's own consistency.
        threads: onnxruntime intra-op threads (>= 1).

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelFileError: not a readable ONNX model, or onnxruntime cannot load it.
        ModelContractError: metadata missing or not a success classifier's (``kind``), keys
            missing (named), thresholds out of range, a mismatch with ``expected`` (each field
            named), graph io other than ``image`` uint8 (N, S, S, 3) -> ``probability`` and
            ``logit`` float32 (N,) with N dynamic and S = ``image_size``, or a failing
            warm-up run on zeros at batch 1 and 2.
        ValueError: ``threads`` < 1.

    Attributes:
        path: the file (str).
        contract: the ``awopt_contract`` dict.
        task: the contract's task.
        image_size: S (px).
        on_threshold, off_threshold: probabilities (float).
        debounce_frames: K (int).
    """

    def __init__(self, path, expected=None, threads=1):
        """Load and check the model; see the class docstring."""
        self.path = str(_check_file(path))
        if int(threads) < 1:
            raise ValueError(f'threads must be >= 1, got {threads}')
        self.contract = c = read_contract(self.path)
        if c.get('kind') != CLASSIFIER_KIND:
            raise ModelContractError(self.path, [
                f"contract kind is {c.get('kind')!r}, a success classifier needs "
                f'{CLASSIFIER_KIND!r} (is this a policy model?)'])
        missing = [k for k in CONTRACT_KEYS if k not in c]
        if missing:
            raise ModelContractError(self.path, [f'contract keys missing: {missing}'])
        if expected is not None:
            problems = check_contract(c, expected)
            if problems:
                raise ModelContractError(self.path, problems)
        try:
            self.on_threshold, self.off_threshold, self.debounce_frames = check_thresholds(
                c['on_threshold'], c['off_threshold'], c['debounce_frames'])
            self.image_size = int(c['image_size'])
        except (TypeError, ValueError) as exc:
            raise ModelContractError(self.path, [f'contract values: {exc}']) from None
        if self.image_size < 1:
            raise ModelContractError(self.path, [f'image_size {self.image_size} < 1'])
        self.task = str(c['task'])
        try:
            self._session = ort_session.session(self.path, threads)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors
            raise ModelFileError(self.path, short_error(exc),
                                 'onnxruntime cannot load it') from exc
        self._check_graph()

    def _check_graph(self):
        """Check graph io names/types/shapes, then run zeros at batch 1 and 2."""
        s = self.image_size
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(outputs):
            raise ModelContractError(self.path, [
                f'graph io: model has inputs {inputs} outputs {outputs}, a success classifier '
                f'needs the input [{INPUT_NAME!r}] and the outputs {list(OUTPUT_NAMES)}'])
        problems = check_graph_io(self._session, {INPUT_NAME: (ORT_UINT8, (None, s, s, 3))},
                                  {name: (ORT_FLOAT, (None,)) for name in OUTPUT_NAMES})
        if problems:
            raise ModelContractError(self.path, problems)
        for n in (1, 2):
            try:
                outs = self._session.run(list(OUTPUT_NAMES),
                                         {INPUT_NAME: np.zeros((n, s, s, 3), np.uint8)})
            except Exception as exc:  # noqa: BLE001 - onnxruntime's run errors
                raise ModelContractError(self.path, [
                    f'graph does not run on a contract-shaped input (image uint8 '
                    f'[{n}, {s}, {s}, 3]): {short_error(exc)}']) from exc
            for name, out in zip(OUTPUT_NAMES, outs):
                out = np.asarray(out)
                if out.shape != (n,) or out.dtype != np.float32:
                    raise ModelContractError(self.path, [
                        f'graph output {name!r} is {out.dtype} {list(out.shape)} for a batch '
                        f'of {n}, contract needs float32 [{n}]'])

    def run(self, images):
        """Return ``(probability, logit)``, each float32 (N,), for a batch of frames.

        Args:
            images: uint8 (N, S, S, 3) or one frame (S, S, 3), RGB, S = :attr:`image_size`.

        Raises:
            ValueError: wrong dtype or shape, or non-finite outputs.
            ModelRunError: onnxruntime failed running the graph (message names the file).
        """
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f'images must be uint8, got {images.dtype}')
        if images.ndim == 3:
            images = images[None]
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(f'images must be ({s}, {s}, 3) or (N, {s}, {s}, 3) uint8, got '
                             f'{images.shape}')
        try:
            prob, logit = self._session.run(list(OUTPUT_NAMES),
                                            {INPUT_NAME: np.ascontiguousarray(images)})
        except Exception as exc:  # noqa: BLE001 - onnxruntime errors are not RuntimeErrors
            raise ModelRunError(f'model {self.path} failed in onnxruntime: '
                                f'{short_error(exc)}') from exc
        prob = np.asarray(prob, np.float32).reshape(-1)
        if not np.all(np.isfinite(prob)):
            raise ValueError(f'model {self.path} produced non-finite probabilities')
        return prob, np.asarray(logit, np.float32).reshape(-1)

    def probability(self, images):
        """Return the success probability float32 (N,) of each frame (N = 1 for one frame
        (S, S, 3)); see :meth:`run` for the arguments and errors."""
        return self.run(images)[0]

    def score(self, image):
        """Return the success probability of one frame uint8 (S, S, 3) as a float."""
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f'score takes one frame (S, S, 3), got {image.shape}')
        return float(self.run(image)[0][0])

    def debouncer(self):
        """Return a :class:`SuccessDebouncer` with the contract's thresholds and K."""
        return SuccessDebouncer(self.on_threshold, self.off_threshold, self.debounce_frames)


class SuccessDebouncer:
    """Debounced success decision from per-frame probabilities (hysteresis + K frames).

    ``update(p)``: ``p >= on_threshold`` extends the run of frames by one; ``p <
    off_threshold`` (or a non-finite ``p``) resets the run and the decision; a ``p`` in between
    holds the run. The decision is ``run >= debounce_frames`` (so it stays true while frames
    stay at or above the off-threshold).

    Args:
        on_threshold, off_threshold, debounce_frames: see :func:`check_thresholds`.

    Raises:
        ValueError: settings out of range.

    Attributes:
        run: consecutive frames counted towards success (int).
        decision: the current decision (bool).
    """

    def __init__(self, on_threshold, off_threshold, debounce_frames):
        """Validate and store the settings; start reset."""
        self.on_threshold, self.off_threshold, self.debounce_frames = check_thresholds(
            on_threshold, off_threshold, debounce_frames)
        self.run = 0

    @property
    def decision(self):
        """True once ``run >= debounce_frames``."""
        return self.run >= self.debounce_frames

    def update(self, probability):
        """Feed one frame's probability (float); return the decision after it (bool)."""
        p = float(probability)
        if not math.isfinite(p) or p < self.off_threshold:
            self.run = 0
        elif p >= self.on_threshold:
            self.run += 1
        return self.decision

    def reset(self):
        """Forget the run and the decision (a new episode)."""
        self.run = 0


def episode_decision(probabilities, on_threshold, off_threshold, debounce_frames):
    """Return the first frame index at which the debounced decision becomes true, or None.

    Args:
        probabilities: float (T,) per-frame probabilities of one episode, in frame order.
        on_threshold, off_threshold, debounce_frames: see :class:`SuccessDebouncer`.
    """
    deb = SuccessDebouncer(on_threshold, off_threshold, debounce_frames)
    for i, p in enumerate(np.asarray(probabilities, dtype=np.float64).reshape(-1)):
        if deb.update(p):
            return i
    return None


# -- metrics ----------------------------------------------------------------------------------

def _probs_labels(probs, labels):
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f'probs and labels differ in length: {p.shape[0]} vs {y.shape[0]}')
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError('labels must be 0 or 1')
    if not np.all(np.isfinite(p)):
        raise ValueError('probs must be finite')
    return p, y.astype(bool)


def pr_curve(probs, labels):
    """Return ``(precision, recall, thresholds)`` over the distinct scores, highest first.

    ``precision[i]``, ``recall[i]`` are those of predicting positive when ``p >=
    thresholds[i]``; float64 arrays of equal length (empty when there are no frames).
    """
    p, y = _probs_labels(probs, labels)
    order = np.argsort(-p, kind='stable')
    p, y = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p)), p.size - 1] if p.size else np.array([], int)
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = (last + 1) - tp
    positives = float(y.sum())
    with np.errstate(invalid='ignore', divide='ignore'):
        precision = tp / (tp + fp)
        recall = tp / positives if positives else np.full(tp.shape, np.nan)
    return precision, recall, p[last]


def average_precision(probs, labels):
    """Return the PR-AUC as average precision: ``sum_i (R_i - R_{i-1}) P_i`` over the distinct
    thresholds, highest first (R_0 = 0); NaN when there is no positive label."""
    precision, recall, _ = pr_curve(probs, labels)
    if recall.size == 0 or not np.isfinite(recall).all():
        return math.nan
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def reliability_bins(probs, labels, bins=ECE_BINS):
    """Return per-bin calibration statistics over ``bins`` equal-width bins of [0, 1].

    Bin b holds ``b/bins <= p < (b+1)/bins`` (the last one includes 1).

    Returns:
        dict of float64 arrays (bins,): ``count``, ``mean_probability`` and ``positive_rate``
        (NaN in empty bins), and ``edges`` (bins + 1,).
    """
    p, y = _probs_labels(probs, labels)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    with np.errstate(invalid='ignore', divide='ignore'):
        mean_p = np.bincount(idx, weights=p, minlength=bins) / count
        rate = np.bincount(idx, weights=y.astype(np.float64), minlength=bins) / count
    return {'count': count, 'mean_probability': mean_p, 'positive_rate': rate,
            'edges': np.linspace(0.0, 1.0, bins + 1)}


def expected_calibration_error(probs, labels, bins=ECE_BINS):
    """Return the ECE: ``sum_b n_b / N * |positive_rate_b - mean_probability_b|`` over
    :func:`reliability_bins` (NaN when there are no frames)."""
    r = reliability_bins(probs, labels, bins)
    n = r['count'].sum()
    if n == 0:
        return math.nan
    used = r['count'] > 0
    return float(np.sum(r['count'][used] / n * np.abs(r['positive_rate'][used]
                                                       - r['mean_probability'][used])))


def frame_metrics(probs, labels, threshold):
    """Return frame-level metrics of probabilities against labels at ``threshold``.

    A frame is predicted positive when ``p >= threshold``.

    Args:
        probs: float (N,) success probabilities.
        labels: 0/1 (N,) ground truth.
        threshold: probability threshold.

    Returns:
        dict: ``frames``, ``positives``, ``negatives`` (int); ``accuracy``, ``fp_rate`` (false
        positives / negatives), ``fn_rate`` (false negatives / positives), ``precision``,
        ``pr_auc`` (average precision), ``ece`` (10 bins) as floats, NaN where undefined.

    Raises:
        ValueError: lengths differ, labels not 0/1 or non-finite probabilities.
    """
    p, y = _probs_labels(probs, labels)
    pred = p >= float(threshold)
    n, pos = int(y.size), int(y.sum())
    neg = n - pos
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = pos - tp
    return {
        'frames': n, 'positives': pos, 'negatives': neg,
        'accuracy': float(np.mean(pred == y)) if n else math.nan,
        'fp_rate': fp / neg if neg else math.nan,
        'fn_rate': fn / pos if pos else math.nan,
        'precision': tp / (tp + fp) if tp + fp else math.nan,
        'pr_auc': average_precision(p, y),
        'ece': expected_calibration_error(p, y),
    }


def _episodes(frames):
    """Yield ``(episode id, index array in frame order)`` of a FrameSet-like object."""
    ep = np.asarray(frames.episode).reshape(-1)
    step = np.asarray(getattr(frames, 'step', np.arange(ep.size))).reshape(-1)
    order = np.lexsort((step, ep))
    ep_sorted = ep[order]
    cuts = np.flatnonzero(np.diff(ep_sorted)) + 1
    for chunk in np.split(order, cuts):
        if chunk.size:
            yield ep[chunk[0]], chunk


def episode_metrics(frames, probs, on_threshold, off_threshold, debounce_frames,
                    truth_debounce_frames=1):
    """Return episode-level metrics of the debounced decision on each episode's frames.

    An episode is a true success when any of its frames is labelled 1 (with
    ``truth_debounce_frames`` = J > 1: when J consecutive frames are, as the episode manager
    debounces the simulator's ground truth with ``success_debounce_steps``); its success
    starts at the first frame of that run. A false success is a decision that fires before
    the success starts, or in an episode with no success; a missed success is a true success
    whose decision never fires; the delay is the firing frame index minus the index where
    the success starts (frames; K - 1 at best).

    Args:
        frames: FrameSet-like object with ``episode`` int (N,), ``labels`` 0/1 (N,) and
            optionally ``step`` int (N,) (frame order within an episode; else the given
            order).
        probs: float (N,) probabilities of those frames.
        on_threshold, off_threshold, debounce_frames: the :class:`SuccessDebouncer`'s.
        truth_debounce_frames: J >= 1 consecutive positive labels that make an episode a
            true success (1: any positive frame).

    Returns:
        dict: ``episodes``, ``success_episodes``, ``failed_episodes``, ``false_successes``,
        ``missed_successes`` (int); ``false_success_rate`` (false successes / all episodes),
        ``false_success_rate_failed`` (false successes in episodes with no positive frame /
        failed episodes), ``missed_success_rate`` (missed / true-success episodes),
        ``detection_delay_frames_mean`` and ``detection_delay_frames_p95`` (over detected
        true successes); NaN where undefined.
    """
    labels = np.asarray(frames.labels).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.shape != labels.shape:
        raise ValueError(f'probs and frames differ in length: {p.size} vs {labels.size}')
    n = succ = false = false_failed = missed = 0
    delays = []
    for _, idx in _episodes(frames):
        n += 1
        fire = episode_decision(p[idx], on_threshold, off_threshold, debounce_frames)
        truth = episode_decision(labels[idx], 0.5, 0.5, truth_debounce_frames)
        if truth is None:
            false += fire is not None
            false_failed += fire is not None
            continue
        start = truth - (int(truth_debounce_frames) - 1)
        succ += 1
        if fire is None:
            missed += 1
        elif fire < start:
            false += 1
        else:
            delays.append(fire - start)
    failed = n - succ
    return {
        'episodes': n, 'success_episodes': succ, 'failed_episodes': failed,
        'false_successes': false, 'missed_successes': missed,
        'false_success_rate': false / n if n else math.nan,
        'false_success_rate_failed': false_failed / failed if failed else math.nan,
        'missed_success_rate': missed / succ if succ else math.nan,
        'detection_delay_frames_mean': float(np.mean(delays)) if delays else math.nan,
        'detection_delay_frames_p95': float(np.percentile(delays, 95)) if delays else math.nan,
    }
