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
  ``frame_period_s`` (s between the frames K counts, the rate the thresholds and K were chosen
  at: one frame per control step, 0.1 s; 0.1 when absent), ``target_false_positive_rate``,
  ``version``; ``model_card`` (text).

Decision (:class:`SuccessDebouncer`, hysteresis): success once K consecutive frames score at
or above the on-threshold (before that, any frame below the on-threshold starts the run
again); once true, the decision stays true until a frame scores below the off-threshold. Frames
are counted at ``frame_period_s`` (the node skips frames closer together). Model faults raise
the errors of :mod:`awopt_ros.core.onnx_policy`
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
                                        _check_file, check_graph_io, require_contract,
                                        read_contract, short_error)

__all__ = ['CLASSIFIER_KIND', 'INPUT_NAME', 'OUTPUT_NAMES', 'CONTRACT_KEYS', 'TASKS',
           'ECE_BINS', 'ModelContractError', 'ModelFileError', 'ModelRunError',
           'make_contract', 'expected_contract', 'check_thresholds', 'SuccessClassifier',
           'SuccessDebouncer', 'episode_decision', 'average_precision', 'pr_curve',
           'reliability_bins', 'expected_calibration_error', 'frame_metrics',
           'episode_metrics', 'DEFAULT_FRAME_PERIOD_S', 'SIGMOID_ATOL', 'check_frame_period',
           'CountedDecision', 'PERIOD_TOLERANCE', 'GAP_PERIODS']

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
#: ``frame_period_s`` of a contract without one (s): one frame per 10 Hz control step, the
#: spacing of the grasp and insertion training frames.
DEFAULT_FRAME_PERIOD_S = 0.1
#: Largest |probability - sigmoid(logit)| accepted on the warm-up batch at load.
SIGMOID_ATOL = 1e-5
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


def check_frame_period(frame_period_s):
    """Return ``frame_period_s`` (s between the frames the debouncer counts) as a float.

    Raises:
        ValueError: not a finite number > 0 (at most 60 s).
    """
    try:
        period = float(frame_period_s)
    except (TypeError, ValueError):
        raise ValueError(f'frame_period_s must be a number, got {frame_period_s!r}') from None
    if not (math.isfinite(period) and 0.0 < period <= 60.0):
        raise ValueError(f'frame_period_s must be in (0, 60] s, got {period}')
    return period


def make_contract(task, on_threshold, off_threshold, debounce_frames,
                  target_false_positive_rate, image_size=spec.POLICY_IMAGE_SIZE,
                  crop_xywh=spec.POLICY_CROP_XYWH, extra=None, source_size=spec.SOURCE_SIZE,
                  frame_period_s=DEFAULT_FRAME_PERIOD_S):
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
        frame_period_s: time between the frames the thresholds and K were chosen on (s, the
            training frames' control period); the node counts frames at this rate.

    Raises:
        ValueError: unknown task, bad thresholds, a bad crop, size or frame period, or a
            clashing extra.
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
                'frame_period_s': check_frame_period(frame_period_s),
                'target_false_positive_rate': fpr, 'version': CONTRACT_VERSION}
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(contract))
    if clash:
        raise ValueError(f'extra may not replace the contract keys {clash}')
    contract.update(extra)
    return contract


def expected_contract(task=None, image_size=spec.POLICY_IMAGE_SIZE,
                      crop_xywh=spec.POLICY_CROP_XYWH, source_size=None):
    """Return the contract fields a caller feeding the stack's policy image relies on.

    Args:
        task: ``'grasp'`` / ``'insertion'``, or None to accept either.
        image_size: side of the images the caller feeds (px).
        crop_xywh: crop of the camera frame those images come from.
        source_size: (width, height) of that camera frame (px), or None not to check it.

    Returns:
        dict for :func:`awopt_ros.core.onnx_policy.check_contract`: ``kind``, ``image_size``,
        ``crop_xywh`` and, when given, ``task`` and ``source_size``.
    """
    out = {'kind': CLASSIFIER_KIND, 'image_size': int(image_size),
           'crop_xywh': [int(v) for v in crop_xywh]}
    if task is not None:
        out['task'] = str(task)
    if source_size is not None:
        out['source_size'] = [int(v) for v in source_size]
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
            ``logit`` float32 (N,) with N dynamic and S = ``image_size``, a failing
            warm-up run on a fixed non-constant batch of 1 and of 2 frames, or warm-up
            probabilities outside [0, 1] or differing from sigmoid(logit) by more than
            :data:`SIGMOID_ATOL`; a bad ``frame_period_s``.
        ValueError: ``threads`` < 1.

    Attributes:
        path: the file (str).
        contract: the ``awopt_contract`` dict.
        task: the contract's task.
        image_size: S (px).
        on_threshold, off_threshold: probabilities (float).
        debounce_frames: K (int).
        frame_period_s: s between the frames K counts (float; the contract's, else
            :data:`DEFAULT_FRAME_PERIOD_S`).
    """

    def __init__(self, path, expected=None, threads=1):
        """Load and check the model; see the class docstring."""
        self.path = str(_check_file(path, 'awopt train-classifier'))
        if int(threads) < 1:
            raise ValueError(f'threads must be >= 1, got {threads}')
        self.contract = c = read_contract(self.path)
        if c.get('kind') != CLASSIFIER_KIND:
            raise ModelContractError(self.path, [
                f"contract kind is {c.get('kind')!r}, a success classifier needs "
                f'{CLASSIFIER_KIND!r} (is this a policy model?)'])
        require_contract(self.path, c, CONTRACT_KEYS, expected)
        try:
            self.on_threshold, self.off_threshold, self.debounce_frames = check_thresholds(
                c['on_threshold'], c['off_threshold'], c['debounce_frames'])
            self.frame_period_s = check_frame_period(
                c.get('frame_period_s', DEFAULT_FRAME_PERIOD_S))
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
        """Check graph io names/types/shapes, then run a non-constant batch of 1 and 2 frames
        and check the outputs (shape, dtype, probability in [0, 1] and = sigmoid(logit))."""
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
        # varied frames (a constant one would not tell a sigmoid from e.g. a clip)
        warm = np.random.default_rng(0).integers(0, 256, (2, s, s, 3), dtype=np.uint8)
        warm[1] //= 4
        for n in (1, 2):
            try:
                outs = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: warm[:n]})
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
            prob = np.asarray(outs[0], np.float64)
            logit = np.asarray(outs[1], np.float64)
            if not np.all((prob >= 0.0) & (prob <= 1.0)):
                raise ModelContractError(self.path, [
                    f'graph output probability {prob.tolist()} not in [0, 1] on the warm-up '
                    'frames'])
            with np.errstate(over='ignore', invalid='ignore'):
                expect = 0.5 * (1.0 + np.tanh(0.5 * logit))
            err = np.abs(prob - expect)
            worst = float(np.max(np.where(np.isnan(err), np.inf, err)))
            if worst > SIGMOID_ATOL:
                raise ModelContractError(self.path, [
                    f'graph output probability is not sigmoid(logit) on the warm-up frames '
                    f'(largest difference {worst:.3g} > {SIGMOID_ATOL:g})'])

    def run(self, images):
        """Return ``(probability, logit)``, each float32 (N,), for a batch of frames.

        Args:
            images: uint8 (N, S, S, 3) or one frame (S, S, 3), RGB, S = :attr:`image_size`.

        Raises:
            ValueError: wrong dtype or shape, or probabilities not finite or outside [0, 1].
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
        if not np.all((prob >= 0.0) & (prob <= 1.0)):
            raise ValueError(f'model {self.path} produced probabilities outside [0, 1] '
                             f'(min {prob.min():.6g}, max {prob.max():.6g})')
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

    ``update(p)``: ``p >= on_threshold`` extends the run of consecutive frames by one; any
    other ``p`` sets the run to 0. The decision becomes true when the run reaches
    ``debounce_frames`` (K consecutive frames at or above the on-threshold; no holding between
    the thresholds before that) and then stays true until a frame scores below
    ``off_threshold`` (or is non-finite), which makes it false again (run 0). Each ``update``
    is one frame at the contract's ``frame_period_s``: the caller feeds frames at that rate.

    Args:
        on_threshold, off_threshold, debounce_frames: see :func:`check_thresholds`.

    Raises:
        ValueError: settings out of range.

    Attributes:
        run: consecutive frames at or above the on-threshold, up to the latest (int).
        decision: the current decision (bool).
    """

    def __init__(self, on_threshold, off_threshold, debounce_frames):
        """Validate and store the settings; start reset."""
        self.on_threshold, self.off_threshold, self.debounce_frames = check_thresholds(
            on_threshold, off_threshold, debounce_frames)
        self.run = 0
        self._decision = False

    @property
    def decision(self):
        """True from the K-th consecutive frame at or above the on-threshold until a frame
        below the off-threshold."""
        return self._decision

    def update(self, probability):
        """Feed one frame's probability (float); return the decision after it (bool)."""
        p = float(probability)
        if not math.isfinite(p) or p < self.off_threshold:
            self.run = 0
            self._decision = False
        elif p >= self.on_threshold:
            self.run += 1
            if self.run >= self.debounce_frames:
                self._decision = True
        else:
            self.run = 0                # between the thresholds: a decision made stays
        return self._decision

    def reset(self):
        """Forget the run and the decision (a new episode, a gap or an unscored frame)."""
        self.run = 0
        self._decision = False


#: A frame counts when its stamp is at least this fraction of the frame period after the last
#: counted frame's (camera jitter: a 10 Hz frame may come a few ms early).
PERIOD_TOLERANCE = 0.9
#: ``max_gap_s`` of a :class:`CountedDecision` given none: this many frame periods.
GAP_PERIODS = 3.0


class CountedDecision:
    """Which frames the debouncer counts, for a stream of scored frames (30 Hz camera, say).

    The thresholds and K of a contract were chosen on frames one control step apart
    (``frame_period_s``, 0.1 s); a faster camera would let K near-identical frames 33 ms
    apart make the decision. A scored frame (stamp ``stamp_s``, arrival ``arrival_s`` on the
    same clock) counts, in this order of checks, unless:

    * ``'stale'``: stamped at or before the episode's start (:meth:`start`; ``stamp_tol_s``);
    * ``'out_of_order'``: not stamped after the last counted frame;
    * ``'too_old'``: older than ``max_frame_age_s`` at arrival (0: no limit);
    * ``'too_soon'``: stamped less than :data:`PERIOD_TOLERANCE` x ``period_s`` after the last
      counted frame.

    Before a counted frame is fed, a stamp gap over ``max_gap_s`` since the last counted frame
    resets the debouncer (``gap_resets``). :meth:`unscored` (a frame that could not be scored)
    resets it too.

    Args:
        debouncer: the :class:`SuccessDebouncer` fed the counted frames.
        period_s: s between counted frames (> 0; the contract's ``frame_period_s``).
        max_gap_s: stamp gap (s) that resets the run; None = :data:`GAP_PERIODS` x
            ``period_s``.
        max_frame_age_s: s; 0 = frames of any age count.
        stamp_tol_s: tolerance of the stamp-at-start comparison (s).

    Raises:
        ValueError: ``period_s`` <= 0, ``max_gap_s`` < ``period_s`` or ``max_frame_age_s`` < 0.

    Attributes:
        counts: dict of ints ``frames_counted``, ``frames_stale``, ``frames_out_of_order``,
            ``frames_too_old``, ``frames_too_soon``, ``gap_resets``, ``unscored_resets``.
        start_s: the episode start's stamp (s) or None; ``last_counted_s``: the last counted
            frame's stamp (s) or None.
    """

    REASONS = ('stale', 'out_of_order', 'too_old', 'too_soon')

    def __init__(self, debouncer, period_s, max_gap_s=None, max_frame_age_s=0.0,
                 stamp_tol_s=1e-6):
        """Check and store the settings; see the class docstring."""
        self.debouncer = debouncer
        self.period_s = check_frame_period(period_s)
        self.max_gap_s = GAP_PERIODS * self.period_s if not max_gap_s else float(max_gap_s)
        if not self.max_gap_s >= self.period_s:
            raise ValueError(f'max_gap_s {self.max_gap_s} must be >= the frame period '
                             f'{self.period_s} s')
        self.max_frame_age_s = float(max_frame_age_s)
        if not self.max_frame_age_s >= 0.0:
            raise ValueError(f'max_frame_age_s must be >= 0 (0 = off), got {max_frame_age_s}')
        self.stamp_tol_s = float(stamp_tol_s)
        self.start_s = None
        self.last_counted_s = None
        self.counts = dict.fromkeys(('frames_counted',) + tuple(
            f'frames_{r}' for r in self.REASONS) + ('gap_resets', 'unscored_resets'), 0)

    @property
    def decision(self):
        """The debouncer's decision (bool)."""
        return self.debouncer.decision

    def start(self, start_s):
        """A new episode started at ``start_s`` (s, the stamps' clock): reset everything."""
        self.start_s = None if start_s is None else float(start_s)
        self.last_counted_s = None
        self.debouncer.reset()

    def unscored(self):
        """A frame could not be scored: reset the run and the decision."""
        self.counts['unscored_resets'] += 1
        self.debouncer.reset()

    def offer(self, probability, stamp_s, arrival_s):
        """Offer one scored frame; return None when it was counted (the decision is then
        :attr:`decision`), else the reason it was not (one of :attr:`REASONS`)."""
        stamp_s, last = float(stamp_s), self.last_counted_s
        if self.start_s is not None and stamp_s <= self.start_s + self.stamp_tol_s:
            why = 'stale'
        elif last is not None and stamp_s <= last:
            why = 'out_of_order'
        elif self.max_frame_age_s > 0.0 and float(arrival_s) - stamp_s > self.max_frame_age_s:
            why = 'too_old'
        elif last is not None and stamp_s - last < PERIOD_TOLERANCE * self.period_s:
            why = 'too_soon'
        else:
            why = None
        if why is not None:
            self.counts[f'frames_{why}'] += 1
            return why
        if last is not None and stamp_s - last > self.max_gap_s:
            self.counts['gap_resets'] += 1
            self.debouncer.reset()
        self.last_counted_s = stamp_s
        self.counts['frames_counted'] += 1
        self.debouncer.update(probability)
        return None


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
