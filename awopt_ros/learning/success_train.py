"""``awopt train-classifier`` / ``awopt evaluate-classifier``: the camera success classifier.

Training (:func:`train_classifier`): a small CNN from scratch (:class:`SuccessNet`, about
0.13 M parameters) on the policy image (uint8 (N, 64, 64, 3) RGB, ``spec.POLICY_CROP_XYWH``
of the camera frame; the normalisation is inside the network, so the ONNX file takes raw
uint8). Each step draws a class-balanced batch (half positive, half negative frames, with
replacement) and augments it: replicate-pad by ``pad`` px then a random crop back to the
input size (shifts of up to +-``pad`` px), random brightness (x U(1 - b, 1 + b)), contrast
(around the image mean, x U(1 - c, 1 + c)) and per-channel gains (x U(1 - g, 1 + g), a
small hue shift). Loss: binary cross-entropy on the logit. Adam with cosine decay.

Validation: whole episodes of the training FrameSet (``success_data.split_by_episode``;
frames of one episode never straddle the split) are scored after every epoch; the epoch
with the lowest validation loss (unbalanced BCE over all validation frames) is kept.

Thresholds (:func:`choose_threshold`), chosen on validation frames:

* ``on_threshold``: the lowest threshold whose validation false-positive rate is at most
  ``target_fpr`` (default 0.01) keeps the most positives; among the thresholds with that
  same recall (the gap between the highest negative it must reject and the lowest positive
  above it) the midpoint in logit space is taken, the largest margin on both sides;
* ``off_threshold``: the same rule for ``off_fpr`` (default 0.05), capped at the
  on-threshold: a frame must fall clearly back among the negatives to reset the run;
* ``debounce_frames`` K (default 2): consecutive frames at or above the on-threshold.

Export: ``image`` uint8 (N, S, S, 3) -> ``probability`` (sigmoid) and ``logit`` float32
(N,), N dynamic (opset 17), with the contract of :func:`core.success_classifier.make_contract`
and the model card, via ``learning.export.save_with_metadata``; torch and onnxruntime are
compared on random and validation frames (:func:`parity_check`).

Outputs beside ``--out`` (``<stem>`` = its name without ``.onnx``): ``<stem>.md`` (model card),
``<stem>_metrics.json`` (validation and held-out frame/episode metrics, thresholds, counts,
parity, ``stack_agreement_rate`` / ``stack_episodes`` placeholders), ``<stem>_reliability.png``,
``<stem>_pr.png``, ``<stem>_training.png``. Nothing in ``models/`` is overwritten without
``--force``; without ``--out`` a run writes into ``runs/success/<task>-<stamp>/``.

Evaluation (:func:`evaluate_model`, ``awopt evaluate-classifier``): frame and episode metrics
of an exported model (through onnxruntime) on FrameSets, optionally copying the demo report's
``stack_agreement_rate`` and ``stack_episodes`` into the metrics JSON.
"""
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from awopt_ros.cli_args import (HelpFormatter, UsageError, check_outputs,  # noqa: F401
                                usage_error)
from awopt_ros.core import success_classifier as sc

#: Parent folder of the default ``--out`` of ``awopt train-classifier``.
SUCCESS_RUNS = 'runs/success'
#: Parity bound of the exported probabilities (max abs difference torch vs onnxruntime).
PARITY_ATOL = 1e-5
#: Parity bound of the logits, relative to max(1, |logit|) (float32 sums over ~1e5 terms).
PARITY_RTOL_LOGIT = 1e-4
OPSET = 17
#: The episode manager's ``success_debounce_steps`` in the simulation configs per task
#: (config/awopt_ros_kuka_grasp.yaml: 2): the ``*_gt_debounced`` episode metrics count an
#: episode as a true success only when that many consecutive frames are labelled 1, as the
#: stack's ground truth does.
TRUTH_DEBOUNCE_FRAMES = {'grasp': 2, 'insertion': 1}
TRAIN_PROG = 'awopt train-classifier'
EVAL_PROG = 'awopt evaluate-classifier'


@dataclass
class ClassifierConfig:
    """Training settings of the success classifier (see the module docstring).

    Attributes:
        task: 'grasp' or 'insertion'.
        epochs: passes; an epoch is ``steps_per_epoch`` balanced batches.
        steps_per_epoch: batches per epoch; 0 = training frames // batch_size (at least 1).
        batch_size: frames per batch (half positive, half negative).
        lr, weight_decay: Adam settings (cosine decay of lr to 5 % over the run).
        channels: output channels of the four stride-2 conv stages.
        stem: channels of a stride-1 conv at full resolution first (0: none).
        hidden: width of the fully connected layer.
        pad: replicate padding of the random crop (px).
        brightness, contrast, channel_gain: half-widths of the colour augmentation factors.
        target_fpr: validation frame false-positive rate of the on-threshold.
        off_fpr: validation frame false-positive rate of the off-threshold.
        debounce_frames: K consecutive frames at or above the on-threshold.
        val_fraction: fraction of the training episodes used for validation.
        seed: RNG seed (split, initialisation, batches, augmentation).
        threads: torch intra-op threads.
    """

    task: str = 'grasp'
    epochs: int = 12
    steps_per_epoch: int = 0
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    channels: tuple = (16, 32, 64, 64)
    hidden: int = 64
    stem: int = 0
    pad: int = 4
    brightness: float = 0.25
    contrast: float = 0.25
    channel_gain: float = 0.08
    target_fpr: float = 0.01
    off_fpr: float = 0.05
    debounce_frames: int = 2
    val_fraction: float = 0.2
    seed: int = 0
    threads: int = 2
    extra: dict = field(default_factory=dict)


def _torch():
    import torch
    return torch


def build_net(image_size, channels=(16, 32, 64, 64), hidden=64, stem=0):
    """Return a :class:`SuccessNet` (a ``torch.nn.Module``); ``stem`` > 0 adds a stride-1
    3x3 conv of that many channels at full resolution before the stride-2 stages."""
    torch = _torch()
    nn = torch.nn

    class SuccessNet(nn.Module):
        """uint8/float (N, S, S, 3) RGB in [0, 255] -> logit float32 (N,).

        An optional stride-1 stem, four 3x3 stride-2 conv + BatchNorm + ReLU stages
        (S -> S/16), flatten (the position
        of the object in the image matters: lifted or not), a hidden layer, one logit.
        """

        def __init__(self):
            super().__init__()
            layers, cin = [], 3
            if stem:
                layers += [nn.Conv2d(3, int(stem), 3, padding=1, bias=False),
                           nn.BatchNorm2d(int(stem)), nn.ReLU(inplace=True)]
                cin = int(stem)
            for cout in channels:
                layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                           nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
            self.trunk = nn.Sequential(*layers)
            side = image_size
            for _ in channels:
                side = (side + 1) // 2
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, hidden),
                                      nn.ReLU(inplace=True), nn.Linear(hidden, 1))
            self.image_size = int(image_size)

        def forward(self, image):
            x = image.float().permute(0, 3, 1, 2) * (1.0 / 127.5) - 1.0   # (N, 3, S, S)
            return self.head(self.trunk(x)).reshape(-1)

    return SuccessNet()


def _export_module(net):
    torch = _torch()

    class Exported(torch.nn.Module):
        """image uint8 (N, S, S, 3) -> (probability, logit), float32 (N,) each."""

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image):
            logit = self.net(image)
            return torch.sigmoid(logit), logit

    return Exported().eval()


def parameter_count(net):
    """Return the number of trainable parameters of ``net``."""
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


def augment(images, rng, pad=4, brightness=0.25, contrast=0.25, channel_gain=0.08):
    """Return augmented float32 (N, S, S, 3) images in [0, 255] (torch tensor).

    Args:
        images: uint8 (N, S, S, 3) numpy array.
        rng: ``numpy.random.Generator``.
        pad: replicate padding (px) before the random crop back to S x S.
        brightness, contrast, channel_gain: half-widths of the uniform factors.
    """
    torch = _torch()
    n, s = images.shape[0], images.shape[1]
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    if pad > 0:
        xp = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (pad, pad, pad, pad),
                                     mode='replicate').permute(0, 2, 3, 1)
        off = rng.integers(0, 2 * pad + 1, size=(n, 2))
        rows = torch.from_numpy(off[:, 0, None] + np.arange(s)[None])     # (N, S)
        cols = torch.from_numpy(off[:, 1, None] + np.arange(s)[None])
        idx = torch.arange(n)[:, None, None]
        x = xp[idx, rows[:, :, None], cols[:, None, :]]                   # (N, S, S, 3)
    b = torch.from_numpy(rng.uniform(1 - brightness, 1 + brightness, (n, 1, 1, 1))).float()
    c = torch.from_numpy(rng.uniform(1 - contrast, 1 + contrast, (n, 1, 1, 1))).float()
    g = torch.from_numpy(rng.uniform(1 - channel_gain, 1 + channel_gain, (n, 1, 1, 3))).float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean) * b * g
    return x.clamp_(0.0, 255.0)


def predict_logits(net, images, batch=512):
    """Return float64 (N,) logits of ``net`` (eval mode) on uint8 (N, S, S, 3) images."""
    torch = _torch()
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(net(torch.from_numpy(np.ascontiguousarray(images[i:i + batch]))).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _bce(logits, labels):
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))) \
        if z.size else math.nan


def choose_threshold(logits, labels, target_fpr):
    """Return the probability threshold for a frame false-positive rate <= ``target_fpr``.

    Among thresholds whose false-positive rate on these frames is at most ``target_fpr``, the
    ones with the highest recall span the gap between the highest negative logit that must
    be rejected and the lowest positive logit above it; the midpoint of that gap in logit
    space is returned (as a probability). ``p >= threshold`` is positive.

    Args:
        logits: float (N,) logits of the validation frames.
        labels: 0/1 (N,).
        target_fpr: in [0, 1).

    Returns:
        float probability in (0, 1).

    Raises:
        ValueError: no negative frames, or ``target_fpr`` out of range.
    """
    z = np.asarray(logits, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if not 0.0 <= float(target_fpr) < 1.0:
        raise ValueError(f'target_fpr must be in [0, 1), got {target_fpr}')
    neg = np.sort(z[~y])[::-1]
    if neg.size == 0:
        raise ValueError('no negative frames to choose a threshold on')
    allowed = int(math.floor(float(target_fpr) * neg.size + 1e-9))   # false positives allowed
    # the highest negative that must be rejected (with all below it); none: every frame passes
    low = float(neg[allowed]) if allowed < neg.size else float(np.min(z)) - 1.0
    above = z[y & (z > low)]
    mid = 0.5 * (low + float(np.min(above))) if above.size else low + 1.0
    return float(np.clip(_sigmoid(max(mid, np.nextafter(low, math.inf))), 1e-6, 1.0 - 1e-6))


def _balanced_indices(labels, batch_size, rng):
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    half = batch_size // 2
    return np.concatenate([rng.choice(pos, half), rng.choice(neg, batch_size - half)])


def frame_period_of(frames):
    """Return the time between consecutive frames of an episode in ``frames`` (s): the
    FrameSet's ``meta['frame_period_s']`` or ``meta['control_period_s']`` when it records one,
    else :data:`core.success_classifier.DEFAULT_FRAME_PERIOD_S` (0.1 s: grasp and insertion
    frames are taken once per 10 Hz control step, and datasets hold one observation per step).
    It goes into the contract as ``frame_period_s``, the rate the thresholds and K hold at.

    Raises:
        ValueError: a recorded period that is not a number in (0, 60] s.
    """
    meta = getattr(frames, 'meta', None) or {}
    for key in ('frame_period_s', 'control_period_s'):
        if meta.get(key) is not None:
            return sc.check_frame_period(meta[key])
    return sc.DEFAULT_FRAME_PERIOD_S


def split_metrics(prefix, frames, probs, on, off, k, truth_debounce_frames=None):
    """Return ``{prefix_key: value}`` frame and episode metrics of ``frames`` at (on, off, K).

    ``probs``: float (N,) success probabilities of the frames (the loss is the binary
    cross-entropy of the probabilities clipped to [1e-7, 1 - 1e-7]).

    Keys: ``<prefix>_frame_accuracy``, ``_pr_auc``, ``_fp_rate``, ``_fn_rate``, ``_ece``,
    ``_precision``, ``_frames``, ``_positives``, ``_negatives``, ``_loss``,
    ``_episode_false_success_rate``, ``_episode_false_success_rate_failed``,
    ``_episode_missed_success_rate``, ``_episodes``, ``_success_episodes``,
    ``_false_successes``, ``_missed_successes``, ``_detection_delay_frames_mean`` / ``_p95``,
    and ``_fp_rate_by_kind`` (frame false-positive rate per ``kind`` of negative frame, when
    the frames carry ``kind``). With ``truth_debounce_frames`` J > 1 also
    ``_episode_false_success_rate_gt_debounced``, ``_episode_missed_success_rate_gt_debounced``,
    ``_success_episodes_gt_debounced`` and ``_detection_delay_frames_mean_gt_debounced``:
    the same with an episode a true success only when J consecutive frames are labelled 1
    (:func:`core.success_classifier.episode_metrics`).
    """
    labels = np.asarray(frames.labels)
    probs = np.asarray(probs, np.float64).reshape(-1)
    fm = sc.frame_metrics(probs, labels, on)
    em = sc.episode_metrics(frames, probs, on, off, k)
    q = np.clip(probs, 1e-7, 1 - 1e-7)
    loss = float(-np.mean(labels * np.log(q) + (1 - labels) * np.log1p(-q))) \
        if labels.size else math.nan
    out = {f'{prefix}_frame_accuracy': fm['accuracy'], f'{prefix}_loss': loss}
    for key in ('pr_auc', 'fp_rate', 'fn_rate', 'ece', 'precision', 'frames', 'positives',
                'negatives'):
        out[f'{prefix}_{key}'] = fm[key]
    for key in ('false_success_rate', 'false_success_rate_failed', 'missed_success_rate'):
        out[f'{prefix}_episode_{key}'] = em[key]
    for key in ('episodes', 'success_episodes', 'false_successes', 'missed_successes',
                'detection_delay_frames_mean', 'detection_delay_frames_p95'):
        out[f'{prefix}_{key}'] = em[key]
    j = int(truth_debounce_frames or 1)
    if j > 1:
        ej = sc.episode_metrics(frames, probs, on, off, k, truth_debounce_frames=j)
        out[f'{prefix}_truth_debounce_frames'] = j
        for key in ('false_success_rate', 'missed_success_rate'):
            out[f'{prefix}_episode_{key}_gt_debounced'] = ej[key]
        for key in ('success_episodes', 'detection_delay_frames_mean'):
            out[f'{prefix}_{key}_gt_debounced'] = ej[key]
    kinds = getattr(frames, 'kind', None)
    if kinds is not None:
        kinds = np.asarray(kinds).astype(str)
        by_kind = {}
        for kind in sorted(set(kinds[labels == 0])):
            m = (kinds == kind) & (labels == 0)
            by_kind[kind] = float(np.mean(probs[m] >= on))
        out[f'{prefix}_fp_rate_by_kind'] = by_kind
    return out


def train_classifier(train, val, cfg, heldout=None, progress=True, log=print):
    """Train the classifier; return ``(net, result)``.

    Args:
        train, val: FrameSet-like objects (``images`` uint8 (N, S, S, 3), ``labels`` 0/1
            (N,), ``episode`` (N,), ``step`` (N,), optionally ``kind``); both need
            positive and negative frames.
        cfg: :class:`ClassifierConfig`.
        heldout: optional FrameSet-like held-out frames (metrics only).
        progress: show a tqdm bar per epoch.
        log: callable for one line per epoch.

    Returns:
        ``(net, result)``: the best epoch's network (eval mode) and a dict with
        ``history`` (per epoch: train_loss, val_loss, val_pr_auc), ``best_epoch``,
        ``on_threshold``, ``off_threshold``, ``debounce_frames``, ``metrics`` (validation
        and held-out :func:`split_metrics` plus thresholds and counts), ``val_logits``,
        ``heldout_logits``, ``train_seconds``.

    Raises:
        ValueError: a split without both classes, or images of different sizes.
    """
    torch = _torch()
    torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    rng = np.random.default_rng(int(cfg.seed))
    tr_y = np.asarray(train.labels).astype(np.int64)
    va_y = np.asarray(val.labels).astype(np.int64)
    for name, y in (('training', tr_y), ('validation', va_y)):
        if not (np.any(y == 1) and np.any(y == 0)):
            raise ValueError(f'the {name} frames need positive and negative frames '
                             f'({int(np.sum(y == 1))} positive of {y.size})')
    size = int(train.images.shape[1])
    if tuple(val.images.shape[1:]) != (size, size, 3):
        raise ValueError(f'validation images {val.images.shape[1:]} differ from training '
                         f'({size}, {size}, 3)')
    net = build_net(size, tuple(cfg.channels), int(cfg.hidden), int(cfg.stem))
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg.lr),
                           weight_decay=float(cfg.weight_decay))
    steps = int(cfg.steps_per_epoch) or max(1, len(tr_y) // int(cfg.batch_size))
    total = steps * int(cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    history = {'epoch': [], 'train_loss': [], 'val_loss': [], 'val_pr_auc': []}
    best = (math.inf, -1, None)
    t0 = time.monotonic()
    for epoch in range(1, int(cfg.epochs) + 1):
        net.train()
        losses = []
        bar = range(steps)
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(bar, desc=f'epoch {epoch}/{cfg.epochs}', unit='batch', leave=False)
        for _ in bar:
            idx = _balanced_indices(tr_y, int(cfg.batch_size), rng)
            x = augment(train.images[idx], rng, int(cfg.pad), float(cfg.brightness),
                        float(cfg.contrast), float(cfg.channel_gain))
            y = torch.from_numpy(tr_y[idx].astype(np.float32))
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        z = predict_logits(net, val.images)
        val_loss = _bce(z, va_y)
        val_ap = sc.average_precision(_sigmoid(z), va_y)
        for key, v in (('epoch', epoch), ('train_loss', float(np.mean(losses))),
                       ('val_loss', val_loss), ('val_pr_auc', val_ap)):
            history[key].append(v)
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(net.state_dict()))
        log(f'epoch {epoch}/{cfg.epochs}: train loss {np.mean(losses):.4f}, validation loss '
            f'{val_loss:.4f}, validation PR-AUC {val_ap:.4f} '
            f'({time.monotonic() - t0:.0f} s)')
    net.load_state_dict(best[2])
    net.eval()
    train_seconds = time.monotonic() - t0
    val_z = predict_logits(net, val.images)
    on = choose_threshold(val_z, va_y, cfg.target_fpr)
    off = min(choose_threshold(val_z, va_y, cfg.off_fpr), on)
    k = int(cfg.debounce_frames)
    metrics = {'parameters': parameter_count(net), 'best_epoch': best[1],
               'epochs': int(cfg.epochs), 'steps_per_epoch': steps,
               'train_seconds': train_seconds, 'on_threshold': on, 'off_threshold': off,
               'debounce_frames': k, 'frame_period_s': frame_period_of(train),
               'target_false_positive_rate': float(cfg.target_fpr),
               'off_false_positive_rate': float(cfg.off_fpr),
               'train_frames': int(tr_y.size), 'train_positives': int(tr_y.sum()),
               'train_episodes': int(np.unique(np.asarray(train.episode)).size)}
    j = TRUTH_DEBOUNCE_FRAMES.get(cfg.task, 1)
    metrics.update(split_metrics('validation', val, _sigmoid(val_z), on, off, k, j))
    held_z = None
    if heldout is not None:
        held_z = predict_logits(net, heldout.images)
        metrics.update(split_metrics('heldout', heldout, _sigmoid(held_z), on, off, k, j))
    metrics['stack_agreement_rate'] = None
    metrics['stack_episodes'] = None
    return net, {'history': history, 'best_epoch': best[1], 'on_threshold': on,
                 'off_threshold': off, 'debounce_frames': k, 'metrics': metrics,
                 'val_logits': val_z, 'heldout_logits': held_z,
                 'train_seconds': train_seconds}


# -- export -------------------------------------------------------------------------------

def export_bytes(net):
    """Return the serialized ONNX graph of ``net``: ``image`` -> ``probability``, ``logit``."""
    import io
    import warnings
    torch = _torch()
    module = _export_module(net)
    s = net.image_size
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, (torch.zeros((2, s, s, 3), dtype=torch.uint8),), buf,
                          dynamo=False, input_names=[sc.INPUT_NAME],
                          output_names=list(sc.OUTPUT_NAMES),
                          dynamic_axes={name: {0: 'N'} for name in
                                        (sc.INPUT_NAME,) + sc.OUTPUT_NAMES},
                          opset_version=OPSET)
    return buf.getvalue()


def parity_check(net, onnx_path, images=None, batch_sizes=(1, 64), seed=0):
    """Compare torch and onnxruntime on random frames (and ``images``, if given).

    Returns:
        dict: ``probability_max_abs_diff``, ``logit_max_abs_diff``, ``frames`` compared.

    Raises:
        ValueError: probabilities differ by more than :data:`PARITY_ATOL` or logits by more
            than :data:`PARITY_RTOL_LOGIT` x max(1, |logit|).
    """
    torch = _torch()
    from awopt_ros.core.ort_session import session
    sess = session(onnx_path)
    module = _export_module(net)
    rng = np.random.default_rng(seed)
    s = net.image_size
    feeds = [rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8) for n in batch_sizes]
    if images is not None and len(images):
        feeds.append(np.ascontiguousarray(images[:256]))
    dp = dz = 0.0
    frames = 0
    for img in feeds:
        with torch.no_grad():
            ref_p, ref_z = (t.numpy() for t in module(torch.from_numpy(img)))
        got_p, got_z = sess.run(list(sc.OUTPUT_NAMES), {sc.INPUT_NAME: img})
        if got_p.shape != (len(img),) or got_p.dtype != np.float32:
            raise ValueError(f'ONNX probability has shape {got_p.shape} dtype {got_p.dtype}')
        dp = max(dp, float(np.max(np.abs(ref_p - got_p))))
        dz = max(dz, float(np.max(np.abs(ref_z - got_z) / np.maximum(1.0, np.abs(ref_z)))))
        frames += len(img)
    if not (dp <= PARITY_ATOL and dz <= PARITY_RTOL_LOGIT):
        raise ValueError(f'ONNX/torch parity failed: probability max abs diff {dp:.3g} '
                         f'(<= {PARITY_ATOL}), logit relative diff {dz:.3g} '
                         f'(<= {PARITY_RTOL_LOGIT})')
    return {'probability_max_abs_diff': dp, 'logit_max_rel_diff': dz, 'frames': frames}


def export_classifier(net, out_path, contract, model_card='', parity_images=None):
    """Write ``net`` as ONNX with ``contract`` and ``model_card`` (atomically); check the
    written file loads as a :class:`core.success_classifier.SuccessClassifier` and matches
    torch (:func:`parity_check`). Returns the parity dict."""
    from awopt_ros.learning.export import save_with_metadata
    from awopt_ros.learning.train_cli import atomic_write
    raw = export_bytes(net)
    atomic_write(out_path, lambda tmp: save_with_metadata(raw, tmp, contract, model_card))
    sc.SuccessClassifier(out_path)
    return parity_check(net, out_path, parity_images)


# -- plots and card ----------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_reliability(splits, png_path, bins=sc.ECE_BINS):
    """Reliability diagrams (positive rate vs mean probability per bin) of each split.

    Args:
        splits: dict name -> (probs (N,), labels (N,)); empty splits are skipped.
        png_path: PNG destination.
    """
    plt = _pyplot()
    splits = {k: v for k, v in splits.items() if v is not None and len(v[1])}
    fig, axes = plt.subplots(1, max(1, len(splits)), figsize=(4.5 * max(1, len(splits)), 4.2),
                             dpi=100, squeeze=False)
    for ax, (name, (p, y)) in zip(axes[0], splits.items()):
        r = sc.reliability_bins(p, y, bins)
        centers = 0.5 * (r['edges'][:-1] + r['edges'][1:])
        used = r['count'] > 0
        ax.bar(centers[used], r['positive_rate'][used], width=1.0 / bins, alpha=0.6,
               edgecolor='k', label='positive rate')
        ax.plot(r['mean_probability'][used], r['positive_rate'][used], 'o', color='C1',
                label='bin mean probability')
        ax.plot([0, 1], [0, 1], 'k--', linewidth=0.8, label='perfect calibration')
        for c, n in zip(centers[used], r['count'][used]):
            ax.text(c, 0.02, f'{int(n)}', ha='center', fontsize=6, rotation=90)
        ece = sc.expected_calibration_error(p, y, bins)
        ax.set_title(f'{name}: ECE {ece:.3f} ({len(y)} frames)')
        ax.set_xlabel('predicted success probability')
        ax.set_ylabel('fraction of success frames')
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc='upper left')
    fig.tight_layout()
    fig.savefig(str(png_path))
    plt.close(fig)


def plot_pr(splits, png_path, threshold=None):
    """Precision-recall curves of each split, the operating point at ``threshold`` marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    for i, (name, v) in enumerate(splits.items()):
        if v is None or not len(v[1]) or not np.any(np.asarray(v[1]) == 1):
            continue
        p, y = v
        precision, recall, _ = sc.pr_curve(p, y)
        ap = sc.average_precision(p, y)
        ax.step(np.r_[0, recall], np.r_[1, precision], where='post', color=f'C{i}',
                label=f'{name} (AP {ap:.3f})')
        if threshold is not None:
            m = sc.frame_metrics(p, y, threshold)
            ax.plot(1 - m['fn_rate'], m['precision'], 'o', color=f'C{i}')
    if threshold is not None:
        ax.plot([], [], 'ko', label=f'on-threshold {threshold:.3f}')
    ax.set_xlabel('recall')
    ax.set_ylabel('precision')
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc='lower left')
    fig.tight_layout()
    fig.savefig(str(png_path))
    plt.close(fig)


def plot_training(history, png_path, best_epoch=None):
    """Training curves: train and validation loss, validation PR-AUC, per epoch."""
    plt = _pyplot()
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax_l.plot(history['epoch'], history['train_loss'], 'o-', label='train (balanced, augmented)')
    ax_l.plot(history['epoch'], history['val_loss'], 'o-', label='validation')
    ax_l.set_yscale('log')
    ax_l.set_ylabel('BCE loss')
    ax_a.plot(history['epoch'], history['val_pr_auc'], 'o-', color='C2')
    ax_a.set_ylabel('validation PR-AUC')
    for ax in (ax_l, ax_a):
        ax.set_xlabel('epoch')
        ax.grid(True, alpha=0.3)
        if best_epoch is not None:
            ax.axvline(best_epoch, color='grey', linestyle=':', label='kept epoch')
    ax_l.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(png_path))
    plt.close(fig)


def _fmt(v, digits=4):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return 'n/a'
    return f'{v:.{digits}f}' if isinstance(v, float) else str(v)


def model_card(cfg, metrics, data_note, out_name, heldout_group=None,
               crop_xywh=(80, 0, 480, 480), source_size=(640, 480),
               label_text='labels from the simulator ground truth', reproduce=None,
               train_groups=None, simulated=True):
    """Return the model card (markdown) of a trained classifier; ``crop_xywh`` and
    ``source_size`` say which part of which camera frame the 64 px input shows,
    ``label_text`` where the labels come from (:func:`label_text`), ``reproduce`` the command
    lines that make it again (:func:`reproduce_section`; None: no such section) and
    ``train_groups`` the groups (object kinds / scene variants) trained on; ``simulated``
    False: the labels are not (all) the simulator's ground truth (recorded, operator-labelled
    frames)."""
    m = metrics
    crop = ','.join(str(int(v)) for v in crop_xywh)
    source = 'x'.join(str(int(v)) for v in source_size)
    rows = [('frame accuracy', 'frame_accuracy'), ('PR-AUC (average precision)', 'pr_auc'),
            ('frame false-positive rate', 'fp_rate'), ('frame false-negative rate', 'fn_rate'),
            ('ECE (10 bins)', 'ece'), ('episode false-success rate',
                                       'episode_false_success_rate'),
            ('episode false-success rate per failed episode',
             'episode_false_success_rate_failed'),
            ('episode missed-success rate', 'episode_missed_success_rate'),
            ('episode false-success rate, truth debounced (J frames)',
             'episode_false_success_rate_gt_debounced'),
            ('episode missed-success rate, truth debounced (J frames)',
             'episode_missed_success_rate_gt_debounced'),
            ('detection delay, mean (frames)', 'detection_delay_frames_mean'),
            ('detection delay, p95 (frames)', 'detection_delay_frames_p95'),
            ('frames (positive)', None), ('episodes (successful)', None)]
    lines = [f'# {out_name}: camera success classifier ({cfg.task})', '',
             'A small CNN trained from scratch that scores each 64x64 policy image '
             f'(`/policy/image`, crop {crop} of the {source} camera frame) with the '
             'probability that the task has succeeded in that frame '
             f'({"object lifted" if cfg.task == "grasp" else "peg inserted"}; {label_text}). '
             'The `success_detector` node debounces the scores into the '
             "episode's success decision.", '',
             '## Model', '',
             f'- {m["parameters"]:,} parameters: '
             + (f'a stride-1 3x3 conv stem of {cfg.stem} channels, ' if cfg.stem else '')
             + 'four 3x3 stride-2 conv stages '
             f'{list(cfg.channels)} with BatchNorm and ReLU, a {cfg.hidden}-unit layer, one '
             'logit. Input uint8 (N, 64, 64, 3) RGB (normalised in the graph); outputs '
             '`probability` and `logit` float32 (N,).',
             f'- Training: {m["epochs"]} epochs x {m["steps_per_epoch"]} class-balanced batches '
             f'of {cfg.batch_size} (50/50), Adam lr {cfg.lr} (cosine), weight decay '
             f'{cfg.weight_decay}; augmentation: replicate-pad {cfg.pad} px + random crop, '
             f'brightness +-{cfg.brightness}, contrast +-{cfg.contrast}, per-channel gain '
             f'+-{cfg.channel_gain}; epoch kept: {m["best_epoch"]} (lowest validation loss); '
             f'seed {cfg.seed}; {m["train_seconds"]:.0f} s on {cfg.threads} CPU threads.', '',
             '## Data and splits', '', data_note, '',
             f'- Training: {m["train_frames"]} frames ({m["train_positives"]} positive), '
             f'{m["train_episodes"]} episodes.',
             f'- Validation: {int(cfg.val_fraction * 100)} % of the training episodes, '
             'whole episodes (same groups as training).']
    if 'heldout_frames' in m:
        trained = set(train_groups or [])
        held = {g.strip() for g in (heldout_group or '').split(',') if g.strip()}
        what = ('episodes of object kind(s) never seen in training' if cfg.task == 'grasp'
                else 'episodes of a socket variant never seen in training' if held - trained
                else 'episodes of other scene seeds of the same socket variant')
        lines.append(f'- Held out: {m["heldout_frames"]} frames, {m["heldout_episodes"]} '
                     f'{what}{f" ({heldout_group})" if heldout_group else ""}.')
    lines += ['', '## Thresholds (in the ONNX contract)', '',
              f'- `on_threshold` {m["on_threshold"]:.4f}: validation frame false-positive rate '
              f'<= {cfg.target_fpr} (the largest-margin threshold of the highest recall).',
              f'- `off_threshold` {m["off_threshold"]:.4f}: the same rule for a false-positive '
              f'rate of {cfg.off_fpr}, capped at the on-threshold.',
              f'- `debounce_frames` {m["debounce_frames"]}: success once that many consecutive '
              'frames score at or above the on-threshold (before that, any frame below it '
              'starts the count again); once true, the decision stays true until a frame '
              'scores below the off-threshold.',
              f'- `frame_period_s` {m.get("frame_period_s", sc.DEFAULT_FRAME_PERIOD_S):g}: the '
              'frames above are one control step apart; the `success_detector` node counts '
              'camera frames at that period, not at the camera rate.', '',
              '## Metrics (at the thresholds above)', '']
    splits = [s for s in ('validation', 'heldout') if f'{s}_frames' in m]
    lines.append('| metric | ' + ' | '.join(splits) + ' |')
    lines.append('|---|' + '---|' * len(splits))
    for label, key in rows:
        if key is None:
            if label.startswith('frames'):
                vals = [f'{m[f"{s}_frames"]} ({m[f"{s}_positives"]})' for s in splits]
            else:
                vals = [f'{m[f"{s}_episodes"]} ({m[f"{s}_success_episodes"]})'
                        for s in splits]
        else:
            vals = [_fmt(m.get(f'{s}_{key}')) for s in splits]
        lines.append(f'| {label} | ' + ' | '.join(vals) + ' |')
    for s in splits:
        by_kind = m.get(f'{s}_fp_rate_by_kind') or {}
        if len(by_kind) > 1:
            lines.append('')
            lines.append(f'{s} frame false-positive rate by negative kind: ' + ', '.join(
                f'{k} {_fmt(v)}' for k, v in by_kind.items()) + '.')
    if 'heldout_frames' in m:
        checks = [(f'frame accuracy {_fmt(m["heldout_frame_accuracy"], 3)} >= 0.97',
                   m['heldout_frame_accuracy'] >= 0.97),
                  (f'episode false-success rate '
                   f'{_fmt(m["heldout_episode_false_success_rate"], 3)} <= 0.02',
                   m['heldout_episode_false_success_rate'] <= 0.02),
                  (f'missed-success rate {_fmt(m["heldout_episode_missed_success_rate"], 3)}'
                   ' <= 0.05', m['heldout_episode_missed_success_rate'] <= 0.05)]
        held_what = ('the held-out object kind' if cfg.task == 'grasp' else
                     'the held-out frames')
        lines += ['', f'Targets of issue 24 on {held_what}: ' + '; '.join(
            f'{text} ({"met" if ok else "NOT met"})' for text, ok in checks) + '.']
    lines += ['', 'Episode false-success rate: episodes where the debounced decision fires '
              'before the first success frame or in an episode without one, over all '
              'episodes (successful and failed); per failed episode: the false successes in '
              'episodes without a success frame over those episodes; missed-success rate: '
              'successful episodes where it never fires, over the successful episodes. '
              'Truth debounced: an episode counts as a success only when J consecutive frames '
              "are (J = the episode manager's success_debounce_steps of the simulation "
              "config, 2 for grasp), as the stack's ground truth does. "
              'Plots: `' + out_name.replace('.onnx', '') + '_reliability.png`, `'
              + out_name.replace('.onnx', '') + '_pr.png`, `'
              + out_name.replace('.onnx', '') + '_training.png`.', '',
              '## Limits', '',
              ('- Trained and tested on simulated frames only (MuJoCo renders of the training '
               'cell); on a real camera it needs operator-labelled frames '
               '(`awopt collect-success-frames --from-run RUN --label operator`) and retraining.'
               if simulated else
               '- Trained on recorded frames labelled by an operator: the last k frames of an '
               'episode take its verdict, so frames before the success is visible may carry it; '
               'the thresholds hold for the camera, lighting and objects of those runs only.'),
              *limits_lines(cfg.task, heldout_group, train_groups),
              "- Stack agreement with the simulator's ground truth through the running stack "
              '(`stack_agreement_rate`) is measured by `awopt demo --set '
              'episode_manager:success_source=classifier` and copied into the metrics JSON by '
              '`awopt evaluate-classifier --stack-report`.']
    if reproduce:
        lines += ['', '## Reproduce', '', '```sh', *reproduce, '```']
    return '\n'.join(lines) + '\n'


def limits_lines(task, heldout_group=None, train_groups=None):
    """Return the card's task-specific limit lines (what one 64x64 view cannot see, and what
    the held-out numbers say)."""
    if task == 'grasp':
        return ['- It sees one 64x64 view: an object hidden by the gripper, or lifted outside '
                'the crop, is invisible to it; lighting, camera pose and object colours outside '
                'the augmentation ranges are untested.',
                '- The thresholds were set on validation frames of the training object kinds; '
                'held-out numbers show how they carry over to a new kind.']
    held = {g.strip() for g in (heldout_group or '').split(',') if g.strip()}
    new_variant = bool(held - set(train_groups or []))
    return ['- It sees one 64x64 view of the socket: a peg hidden or occluded (by the arm, '
            'the gripper or the socket itself) is invisible to it, and the last ~2 mm before '
            'the success depth are not resolvable at 64 px, so frames right at the success '
            'boundary are the least certain; lighting, camera pose and colours outside the '
            'augmentation ranges are untested.',
            '- The thresholds were set on validation frames of the training socket variant(s); '
            + ('held-out numbers show how they carry over to a socket variant not trained on.'
               if new_variant else
               'the held-out frames are other scene seeds of the same socket, not a new '
               'variant: they do not show how the thresholds carry over to another socket.')]


# -- CLI ----------------------------------------------------------------------------------

def output_paths(out):
    """Return dict role -> Path of the files ``awopt train-classifier --out out`` writes."""
    out = Path(out)
    stem = out.with_suffix('')
    return {'model': out, 'card': stem.with_suffix('.md'),
            'metrics': Path(f'{stem}_metrics.json'),
            'reliability': Path(f'{stem}_reliability.png'), 'pr': Path(f'{stem}_pr.png'),
            'training': Path(f'{stem}_training.png')}


def default_out(task, stamp=None):
    """``runs/success/<task>-<YYYYmmdd-HHMMSS>/<task>_success.onnx``."""
    stamp = time.strftime('%Y%m%d-%H%M%S') if stamp is None else stamp
    return str(Path(SUCCESS_RUNS) / f'{task}-{stamp}' / f'{task}_success.onnx')


def add_train_classifier_args(parser):
    """Add the ``awopt train-classifier`` options to ``parser``."""
    d = ClassifierConfig()
    parser.add_argument('--task', choices=sc.TASKS, default='grasp',
                        help='which success the frames show')
    parser.add_argument('--frames', required=True, action='append', metavar='TRAIN.npz',
                        help='training FrameSet (learning.success_data; repeat for several, '
                             'concatenated); validation episodes are split off it')
    parser.add_argument('--crop-xywh', default=None, metavar='X,Y,W,H',
                        help='camera crop (source px) the frames show, for frames whose '
                             'FrameSet records none (frames of recorded runs): the crop of the '
                             "run's camera_pipeline; goes into the contract (with --source-size)")
    parser.add_argument('--source-size', default=None, metavar='W,H',
                        help='camera frame size (px) that --crop-xywh is taken from')
    parser.add_argument('--heldout', default=None, metavar='HELDOUT.npz',
                        help='held-out FrameSet (e.g. an object kind never trained on): '
                             'metrics only (default: none)')
    parser.add_argument('--epochs', type=int, default=d.epochs,
                        help='training epochs; the epoch of the lowest validation loss is kept')
    parser.add_argument('--steps-per-epoch', type=int, default=d.steps_per_epoch,
                        help='balanced batches per epoch (0: training frames / batch size)')
    parser.add_argument('--batch-size', type=int, default=d.batch_size,
                        help='frames per batch, half positive and half negative')
    parser.add_argument('--lr', type=float, default=d.lr,
                        help='Adam learning rate (cosine decay to 5 %% of it)')
    parser.add_argument('--channels', default=','.join(str(c) for c in d.channels),
                        help='output channels of the four stride-2 conv stages, comma-separated')
    parser.add_argument('--stem', type=int, default=d.stem,
                        help='channels of a stride-1 3x3 conv at full resolution before the '
                             'stride-2 stages (0: none)')
    parser.add_argument('--hidden', type=int, default=d.hidden,
                        help='units of the fully connected layer')
    parser.add_argument('--pad', type=int, default=d.pad,
                        help='random-crop augmentation: replicate padding (px) then a crop back '
                             'to the input size (0: no shift)')
    parser.add_argument('--target-fpr', type=float, default=d.target_fpr,
                        help='validation frame false-positive rate of the on-threshold')
    parser.add_argument('--off-fpr', type=float, default=d.off_fpr,
                        help='validation frame false-positive rate of the off-threshold')
    parser.add_argument('--debounce-frames', type=int, default=d.debounce_frames,
                        help='K consecutive frames at or above the on-threshold')
    parser.add_argument('--val-fraction', type=float, default=d.val_fraction,
                        help='fraction of the training episodes held for validation')
    parser.add_argument('--seed', type=int, default=d.seed,
                        help='seed of the validation split, initialisation and batches')
    parser.add_argument('--threads', type=int, default=d.threads, help='torch threads')
    parser.add_argument('--out', default=None,
                        help='ONNX model path; card, metrics JSON and plots go beside it '
                             '(default: runs/success/<task>-<stamp>/<task>_success.onnx)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing outputs (needed for the shipped models/)')
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no tqdm bar')


def _load_frames(path, option):
    from awopt_ros.learning.success_data import FrameSet
    if not Path(path).is_file():
        raise UsageError(option, f'no FrameSet file {path}')
    try:
        return FrameSet.load(path)
    except Exception as exc:  # noqa: BLE001 - np.load / format errors: one line
        raise UsageError(option, f'{path} is not a readable FrameSet: {exc}') from None


def _split(frames, val_fraction, seed):
    from awopt_ros.learning.success_data import split_by_episode
    return split_by_episode(frames, val_fraction, seed)


def _int_list(text, option, n, what):
    try:
        vals = [int(v) for v in str(text).split(',')]
    except ValueError:
        vals = []
    if len(vals) != n or min(vals) < (0 if n == 4 else 1):
        raise UsageError(option, f'must be {what}, got {text!r}')
    return vals


def camera_crop(sources, crop_xywh=None, source_size=None):
    """Return ``(crop_xywh, source_size)`` (lists of ints) of the camera frames that the
    FrameSets in ``sources`` show: their ``meta['crop_xywh']`` / ``meta['camera_size']``, or
    the ``--crop-xywh`` / ``--source-size`` texts ('X,Y,W,H', 'W,H') for FrameSets that record
    none (frames of recorded runs, datasets, bags).

    Args:
        sources: ``[(option, path, FrameSet), ...]``.
        crop_xywh, source_size: the option texts or None.

    Raises:
        UsageError: a FrameSet without a crop and no options (both are needed), options that
            differ from a FrameSet's recorded crop, FrameSets with different crops, a crop
            outside the source frame.
    """
    from awopt_ros.core.image_ops import check_crop
    given = None
    if crop_xywh is not None or source_size is not None:
        if crop_xywh is None or source_size is None:
            raise UsageError('--crop-xywh' if crop_xywh is None else '--source-size',
                             'give both --crop-xywh X,Y,W,H and --source-size W,H')
        size = _int_list(source_size, '--source-size', 2, 'W,H (two integers >= 1)')
        crop = _int_list(crop_xywh, '--crop-xywh', 4, 'X,Y,W,H (four integers)')
        try:
            crop = [int(v) for v in check_crop(crop, *size)]
        except ValueError as exc:
            raise UsageError('--crop-xywh', f'{exc} (source {size[0]}x{size[1]})') from None
        given = (crop, size)
    found = None
    for option, path, frames in sources:
        meta = getattr(frames, 'meta', None) or {}
        if meta.get('crop_xywh') is None or meta.get('camera_size') is None:
            if given is None:
                raise UsageError('--crop-xywh', f'{path} records no camera crop (frames of a '
                                 'recorded run?): give --crop-xywh X,Y,W,H and --source-size '
                                 "W,H (the crop of the run's camera_pipeline)")
            this = given
        else:
            this = ([int(v) for v in meta['crop_xywh']], [int(v) for v in meta['camera_size']])
            if given is not None and this != given:
                raise UsageError('--crop-xywh', f'{path} records crop {this[0]} of '
                                 f'{this[1][0]}x{this[1][1]}, the options say {given[0]} of '
                                 f'{given[1][0]}x{given[1][1]}')
        if found is not None and this != found:
            raise UsageError(option, f'{path} shows crop {this[0]} of {this[1][0]}x{this[1][1]}, '
                             f'other frames {found[0]} of {found[1][0]}x{found[1][1]}')
        found = this
    return found


def _label_kinds(meta):
    """Return the set of label sources of a FrameSet ``meta``: 'ground_truth', 'operator'
    or the recorded text (parts of a concatenated FrameSet included)."""
    if meta.get('label') is None and meta.get('parts'):
        return set().union(*(_label_kinds(m) for m in meta['parts']))
    labels = meta.get('label')
    labels = labels if isinstance(labels, (list, tuple)) else [labels]
    out = set()
    for text in labels:
        text = str(text)
        out.add('ground_truth' if text.startswith('ground_truth') else
                'operator' if text.startswith('operator') else text)
    return out


def label_text(metas):
    """Return the card's words for where the labels of FrameSets with ``metas`` come from."""
    kinds = set().union(*(_label_kinds(m) for m in metas)) if metas else set()
    words = {'ground_truth': 'the simulator ground truth',
             'operator': "an operator's episode verdicts (the last k frames of each episode "
                         'take the verdict)'}
    return 'labels from ' + ' and '.join(words.get(k, f'{k!r}') for k in sorted(kinds)) \
        if kinds else 'labels as recorded (the FrameSet names no label source)'


def _describe(path, frames):
    groups = sorted(set(np.asarray(frames.group).astype(str))) \
        if getattr(frames, 'group', None) is not None else []
    kinds = sorted(set(np.asarray(frames.kind).astype(str))) \
        if getattr(frames, 'kind', None) is not None else []
    return (f'`{path}`: {len(frames.labels)} frames, {len(np.unique(frames.episode))} episodes '
            f'(task {frames.task}; groups {", ".join(groups) or "n/a"}; frame kinds '
            f'{", ".join(kinds) or "n/a"}; {label_text([frames.meta or {}])})')


def data_section(parts, heldout_path=None, heldout=None):
    """Return the card's data lines: every training FrameSet file and the held-out one.

    Args:
        parts: ``[(path, FrameSet), ...]`` of ``--frames``.
        heldout_path, heldout: ``--heldout`` and its FrameSet, or None.
    """
    lines = ['Training FrameSet' + ('s' if len(parts) > 1 else '')
             + (' (concatenated):' if len(parts) > 1 else ':')]
    lines += [f'- {_describe(p, f)}' for p, f in parts]
    lines.append(f'- Held out: {_describe(heldout_path, heldout)}' if heldout is not None
                 else '- Held out: none.')
    return '\n'.join(lines)


def collect_command(meta, path):
    """Return the ``awopt collect-success-frames`` command that makes the FrameSet with
    ``meta`` at ``path`` again (from the seeds, shapes, variant, crop and label options it
    records), or None when its meta does not say how it was collected."""
    from awopt_ros.core import spec
    src = meta.get('source')
    if src is None and meta.get('parts'):
        stem = str(path)[:-4] if str(path).endswith('.npz') else str(path)
        parts = [collect_command(m, f'{stem}_part{k}.npz') for k, m in enumerate(meta['parts'])]
        if any(c is None for c in parts):
            return None
        return '\n'.join([f'# {path}: FrameSet.concat of the parts below (give each part '
                          'as --frames: the same frames)'] + parts)
    cmd = ['awopt collect-success-frames']
    if src in ('collect_grasp_frames', 'collect_insertion_frames'):
        seeds = [int(v) for v in meta.get('seeds') or []]
        if not seeds or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            return None
        task = 'grasp' if src == 'collect_grasp_frames' else 'insertion'
        cmd += [f'--task {task}', f'--episodes {len(seeds)}', f'--seed {seeds[0]}']
        if task == 'grasp':
            shapes = meta.get('shapes')
            cmd.append(f'--shapes {",".join(shapes) if shapes else "all"}')
            crop = meta.get('crop_xywh')
            if crop is not None and tuple(crop) != tuple(spec.POLICY_CROP_XYWH):
                cmd.append(f'--crop-xywh {",".join(str(int(v)) for v in crop)}')
        else:
            cmd.append(f'--variant {meta.get("variant", "default")}')
        if meta.get('hard_negatives') is False:
            cmd.append('--no-hard-negatives')
        if int(meta.get('image_size', 64)) != 64:
            cmd.append(f'--image-size {int(meta["image_size"])}')
    elif src == 'frames_from_runs':
        cmd += [f'--from-run {r}' for r in meta.get('runs') or []]
        labels = meta.get('label')
        labels = labels if isinstance(labels, (list, tuple)) else [labels]
        if len(labels) == 1 and labels[0] in ('ground_truth', 'operator'):
            cmd.append(f'--label {labels[0]}')
            if labels[0] == 'operator':
                cmd.append(f'--last-k {meta.get("last_k")} --labels <the verdicts file>')
        if meta.get('only_labelled'):
            cmd.append('--only-labelled')
        if meta.get('crop_xywh') is not None and meta.get('camera_size') is not None:
            cmd.append(f'--crop-xywh {",".join(str(int(v)) for v in meta["crop_xywh"])} '
                       f'--source-size {",".join(str(int(v)) for v in meta["camera_size"])}')
    else:
        return None
    return ' '.join(cmd + [f'--out {path}'])


def train_command(args, out):
    """Return the ``awopt train-classifier`` command line of ``args`` (every option given
    explicitly, so that defaults changing later do not change it)."""
    cmd = [TRAIN_PROG, f'--task {args.task}'] + [f'--frames {p}' for p in args.frames]
    if args.heldout:
        cmd.append(f'--heldout {args.heldout}')
    if args.crop_xywh is not None:
        cmd.append(f'--crop-xywh {args.crop_xywh} --source-size {args.source_size}')
    for name in ('epochs', 'steps_per_epoch', 'batch_size', 'lr', 'channels', 'stem', 'hidden',
                 'pad', 'target_fpr', 'off_fpr', 'debounce_frames', 'val_fraction', 'seed',
                 'threads'):
        cmd.append(f'--{name.replace("_", "-")} {getattr(args, name)}')
    cmd.append(f'--out {out}')
    if args.force:
        cmd.append('--force')
    return ' '.join(cmd)


def reproduce_section(parts, heldout_path, heldout, train_cmd):
    """Return the card's "Reproduce" lines: the collection command of every FrameSet (from
    its meta; a note where the meta does not record one) and the training command."""
    lines = []
    for path, frames in parts + ([(heldout_path, heldout)] if heldout is not None else []):
        meta = frames.meta or {}
        cmd = collect_command(meta, path)
        if cmd is None:
            lines.append(f'# {path}: its meta records no collection command (source '
                         f'{meta.get("source")!r})')
            continue
        gen = meta.get('generator')
        if gen is not None:
            from awopt_ros.learning.success_data import GENERATOR_VERSION
            if int(gen) != GENERATOR_VERSION:
                lines.append(f'# {path} was collected by episode generator {gen}; the '
                             f'current code is generator {GENERATOR_VERSION}')
        lines.append(cmd)
    lines.append(train_cmd)
    return lines


def run_train_classifier(args):
    """``awopt train-classifier``: returns the exit code (2 on bad input)."""
    from awopt_ros.learning.train_cli import write_json
    try:
        for name in ('epochs', 'batch_size', 'debounce_frames', 'threads'):
            if getattr(args, name) < 1:
                raise UsageError('--' + name.replace('_', '-'), 'must be >= 1')
        for name in ('steps_per_epoch', 'stem'):
            if getattr(args, name) < 0:
                raise UsageError('--' + name.replace('_', '-'), 'must be >= 0 (0: '
                                 + ('training frames / batch size)' if name == 'steps_per_epoch'
                                    else 'no stem)'))
        if args.batch_size < 2:
            raise UsageError('--batch-size', 'must be >= 2 (half positive, half negative)')
        for name in ('target_fpr', 'off_fpr'):
            if not 0.0 <= getattr(args, name) < 1.0:
                raise UsageError('--' + name.replace('_', '-'), 'must be in [0, 1)')
        try:
            channels = tuple(int(c) for c in str(args.channels).split(','))
        except ValueError:
            raise UsageError('--channels', f'{args.channels!r} is not a list of ints') from None
        if len(channels) != 4 or min(channels) < 1:
            raise UsageError('--channels', 'needs four channel counts >= 1')
        if args.hidden < 1 or args.pad < 0:
            raise UsageError('--hidden' if args.hidden < 1 else '--pad', 'out of range')
        if not 0.0 < args.lr < 1.0:
            raise UsageError('--lr', f'must be in (0, 1), got {args.lr}')
        if not 0.0 < args.val_fraction < 1.0:
            raise UsageError('--val-fraction', 'must be in (0, 1)')
        out = args.out or default_out(args.task)
        if not out.endswith('.onnx'):
            raise UsageError('--out', f'{out} must end in .onnx')
        paths = output_paths(out)
        check_outputs([('--out', p) for p in paths.values()], force=args.force)
        parts = [_load_frames(p, '--frames') for p in args.frames]
        heldout = _load_frames(args.heldout, '--heldout') if args.heldout else None
        for option, fs in [('--frames', f) for f in parts] + [('--heldout', heldout)]:
            if fs is not None and str(fs.task) != args.task:
                raise UsageError(option, f'frames of task {fs.task!r}, --task is {args.task!r}')
        crop, source = camera_crop(
            [('--frames', p, f) for p, f in zip(args.frames, parts)]
            + ([('--heldout', args.heldout, heldout)] if heldout is not None else []),
            args.crop_xywh, args.source_size)
        if len(parts) > 1:
            from awopt_ros.learning.success_data import FrameSet
            try:
                frames = FrameSet.concat(parts)
            except ValueError as exc:
                raise UsageError('--frames', str(exc)) from None
        else:
            frames = parts[0]
        train, val = _split(frames, args.val_fraction, args.seed)
    except UsageError as exc:
        return usage_error(TRAIN_PROG, exc)
    cfg = ClassifierConfig(task=args.task, epochs=args.epochs,
                           steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                           lr=args.lr, target_fpr=args.target_fpr, off_fpr=args.off_fpr,
                           debounce_frames=args.debounce_frames, val_fraction=args.val_fraction,
                           seed=args.seed, threads=args.threads, channels=channels,
                           hidden=args.hidden, pad=args.pad, stem=args.stem)
    print(f'{TRAIN_PROG}: {len(train.labels)} training frames '
          f'({int(np.sum(train.labels))} positive), {len(val.labels)} validation, '
          f'{0 if heldout is None else len(heldout.labels)} held out')
    try:
        net, res = train_classifier(train, val, cfg, heldout, progress=args.progress)
    except ValueError as exc:
        return usage_error(TRAIN_PROG, exc)
    metrics = res['metrics']
    held_groups = sorted(set(np.asarray(heldout.group).astype(str))) if heldout is not None \
        and getattr(heldout, 'group', None) is not None else []
    train_groups = sorted(set(np.asarray(frames.group).astype(str))) \
        if getattr(frames, 'group', None) is not None else []
    metrics.update({'task': args.task, 'frames_files': [str(p) for p in args.frames],
                    'heldout_file': None if heldout is None else str(args.heldout),
                    'train_groups': train_groups, 'heldout_groups': held_groups,
                    'validation_fraction': args.val_fraction, 'seed': args.seed,
                    'config': asdict(cfg)})
    data_note = data_section(list(zip(args.frames, parts)), args.heldout, heldout)
    card = model_card(cfg, metrics, data_note, paths['model'].name,
                      ', '.join(held_groups) or None, crop, source,
                      label_text=label_text([f.meta for f in parts]), train_groups=train_groups,
                      simulated=set().union(*(_label_kinds(f.meta or {}) for f in parts))
                      == {'ground_truth'},
                      reproduce=reproduce_section(list(zip(args.frames, parts)), args.heldout,
                                                  heldout, train_command(args, out)))
    contract = sc.make_contract(args.task, res['on_threshold'], res['off_threshold'],
                                res['debounce_frames'], args.target_fpr,
                                image_size=net.image_size, crop_xywh=crop, source_size=source,
                                frame_period_s=frame_period_of(frames),
                                extra={'dataset': ', '.join(Path(p).name
                                                            for p in args.frames),
                                       'heldout_groups': held_groups,
                                       'parameters': metrics['parameters']})
    try:
        parity = export_classifier(net, paths['model'], contract, card, val.images)
    except ValueError as exc:
        print(f'{TRAIN_PROG}: error: {exc}', file=__import__('sys').stderr)
        return 1
    metrics['parity'] = parity
    metrics['contract'] = contract
    write_json(paths['metrics'], metrics)
    paths['card'].write_text(card + f'\nParity torch vs onnxruntime: probability max abs diff '
                                    f'{parity["probability_max_abs_diff"]:.2e} over '
                                    f'{parity["frames"]} frames.\n')
    val_split = (_sigmoid(res['val_logits']), np.asarray(val.labels))
    held_split = None if heldout is None else (_sigmoid(res['heldout_logits']),
                                               np.asarray(heldout.labels))
    plot_reliability({'validation': val_split, 'held out': held_split}, paths['reliability'])
    plot_pr({'validation': val_split, 'held out': held_split}, paths['pr'],
            res['on_threshold'])
    plot_training(res['history'], paths['training'], res['best_epoch'])
    print(_summary_line(metrics))
    print(f'wrote {paths["model"]} and beside it: '
          + ', '.join(p.name for k, p in paths.items() if k != 'model'))
    return 0


def _summary_line(m, prefixes=('validation', 'heldout')):
    parts = [f'on {m["on_threshold"]:.3f} off {m["off_threshold"]:.3f} K '
             f'{m["debounce_frames"]}']
    for s in prefixes:
        if f'{s}_frames' in m:
            parts.append(f'{s}: accuracy {_fmt(m[f"{s}_frame_accuracy"])}, PR-AUC '
                         f'{_fmt(m[f"{s}_pr_auc"])}, FP {_fmt(m[f"{s}_fp_rate"])}, FN '
                         f'{_fmt(m[f"{s}_fn_rate"])}, ECE {_fmt(m[f"{s}_ece"])}, episode '
                         f'false success {_fmt(m[f"{s}_episode_false_success_rate"])}, '
                         f'missed {_fmt(m[f"{s}_episode_missed_success_rate"])}, delay '
                         f'{_fmt(m[f"{s}_detection_delay_frames_mean"], 2)} frames')
    return '; '.join(parts)


# -- evaluation ----------------------------------------------------------------------------

def evaluate_model(model, splits):
    """Return metrics of an ONNX classifier (onnxruntime) on FrameSet-like ``splits``.

    Args:
        model: :class:`core.success_classifier.SuccessClassifier`.
        splits: dict prefix -> FrameSet-like.

    Returns:
        dict: the contract's thresholds and :func:`split_metrics` of every split.
    """
    on, off, k = model.on_threshold, model.off_threshold, model.debounce_frames
    out = {'on_threshold': on, 'off_threshold': off, 'debounce_frames': k,
           'frame_period_s': getattr(model, 'frame_period_s', sc.DEFAULT_FRAME_PERIOD_S)}
    for prefix, frames in splits.items():
        probs = np.concatenate([model.probability(frames.images[i:i + 512])
                                for i in range(0, len(frames.labels), 512)]) \
            if len(frames.labels) else np.zeros(0, np.float32)
        out.update(split_metrics(prefix, frames, probs, on, off, k,
                                 TRUTH_DEBOUNCE_FRAMES.get(model.task, 1)))
    return out


#: The success_detector node's start-up log line (awopt_ros/nodes/success_detector.py): the
#: model file and its task, read from ``<run dir>/logs/success_detector.log``.
_DETECTOR_LOG_RE = r"success classifier (\S+) \(task '([^']*)'"


def _detector_of_run(report_path, report):
    """Return ``(model path or None, task or None, where)`` of the success detector that ran
    in the demo whose report is ``report_path``: the report's ``success_detector_model`` /
    ``success_detector_task`` keys when it has them, else the node's start-up line in
    ``logs/success_detector.log`` beside the report; ``where`` says which (None: neither)."""
    import re
    model = report.get('success_detector_model')
    if model is not None:
        return str(model), report.get('success_detector_task'), 'report'
    log = Path(report_path).parent / 'logs' / 'success_detector.log'
    try:
        text = log.read_text(errors='replace')
    except OSError:
        return None, None, None
    found = re.findall(_DETECTOR_LOG_RE, text)
    return (found[-1][0], found[-1][1], str(log)) if found else (None, None, None)


def read_stack_report(path, model=None):
    """Return the classifier's stack agreement from a demo report JSON (``awopt demo --set
    episode_manager:success_source=classifier``): ``{'stack_agreement_rate': r,
    'stack_episodes': n, 'stack_report_model': path or None}``.

    The numbers are those of ``stack_agreement_by_source['classifier']`` when the report has
    them (else the top-level ones of a report whose ``success_source`` is 'classifier'). The
    report's keys are looked up at the top level first, then in nested objects (first found).

    Args:
        path: the report JSON.
        model: the :class:`core.success_classifier.SuccessClassifier` being evaluated, or None
            (no model checks). A report whose run used another model file (the report's
            ``success_detector_model`` or the node's log line in ``logs/`` beside the report)
            or that names another task (``task``, ``success_detector_task``) is refused;
            when the run does not record its model, the report is accepted
            (``stack_report_model`` None).

    Raises:
        UsageError: unreadable file, no ``stack_agreement_rate`` in it, episodes not decided by
            the classifier, another task or model.
    """
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError('--stack-report', f'cannot read {path}: {exc}') from None
    if not isinstance(report, dict):
        raise UsageError('--stack-report', f'{path} is not a JSON object')

    def holder(obj):
        """The (first) dict holding stack_agreement_rate, top level first."""
        if isinstance(obj, dict):
            if 'stack_agreement_rate' in obj:
                return obj
            for v in obj.values():
                got = holder(v)
                if got is not None:
                    return got
        return None

    found = holder(report)
    if found is None or found.get('stack_agreement_rate') is None:
        raise UsageError('--stack-report', f'{path} has no stack_agreement_rate (run awopt '
                         'demo with a report that records it)')
    by_source = found.get('stack_agreement_by_source') or {}
    entry = by_source.get('classifier') if isinstance(by_source, dict) else None
    if entry is not None:
        stack = {'stack_agreement_rate': entry.get('agreement_rate'),
                 'stack_episodes': entry.get('episodes')}
    elif found.get('success_source') == 'classifier':
        stack = {'stack_agreement_rate': found['stack_agreement_rate'],
                 'stack_episodes': found.get('stack_episodes')}
    else:
        raise UsageError('--stack-report', f'{path}: episodes decided by success_source '
                         f'{found.get("success_source")!r}, not the classifier (run awopt demo '
                         '--set episode_manager:success_source=classifier)')
    stack['stack_report_model'] = None
    if model is not None:
        run_model, run_task, where = _detector_of_run(path, report)
        tasks = {t for t in (report.get('task'), found.get('task'), run_task) if t}
        other = sorted(t for t in tasks if t != model.task)
        if other:
            raise UsageError('--stack-report', f'{path} is a run of task {other[0]!r}, the '
                             f'model is a classifier of task {model.task!r}')
        if run_model is not None:
            if Path(run_model).resolve() != Path(model.path).resolve():
                raise UsageError('--stack-report', f'{path}: the run used the success '
                                 f'classifier {run_model} (from {where}), not {model.path}')
            stack['stack_report_model'] = run_model
    return stack


def check_frames_for(model, frames, option, path=None):
    """Raise UsageError (naming ``option``) when ``frames`` cannot be scored by ``model``
    (a :class:`core.success_classifier.SuccessClassifier`): another task than the contract's,
    another image size, or a recorded camera crop / source size other than the contract's."""
    name = path or option
    task = getattr(frames, 'task', None)
    if task is not None and str(task) != model.task:
        raise UsageError(option, f'{name}: frames of task {task!r}, the model is a '
                                 f'classifier of task {model.task!r}')
    shape = tuple(np.asarray(frames.images).shape[1:])
    s = model.image_size
    if len(frames.labels) and shape != (s, s, 3):
        raise UsageError(option, f'{name}: images of shape {shape}, the model takes '
                                 f'({s}, {s}, 3)')
    meta = getattr(frames, 'meta', None) or {}
    for key, contract_key in (('crop_xywh', 'crop_xywh'), ('camera_size', 'source_size')):
        want = model.contract.get(contract_key)
        if meta.get(key) is not None and want is not None \
                and [int(v) for v in meta[key]] != [int(v) for v in want]:
            raise UsageError(option, f"{name}: frames of {key} {list(meta[key])}, the model's "
                                     f'contract has {contract_key} {list(want)}')


def add_evaluate_classifier_args(parser):
    """Add the ``awopt evaluate-classifier`` options to ``parser``."""
    parser.add_argument('model', help='success classifier ONNX file')
    parser.add_argument('--frames', action='append', default=[], metavar='X.npz',
                        help='in-distribution FrameSet (repeatable, concatenated; metrics '
                             'prefixed "frames_", not "validation_": these are not the '
                             "training run's validation frames)")
    parser.add_argument('--heldout', action='append', default=[], metavar='X.npz',
                        help='held-out FrameSet (repeatable; metrics prefixed "heldout_")')
    parser.add_argument('--frames-from-dataset', default=None, metavar='PATH',
                        help='a logged dataset: frames labelled by the ground truth '
                             '(success_data.frames_from_dataset; prefix "dataset_")')
    parser.add_argument('--stack-report', default=None, metavar='REPORT.json',
                        help='demo report whose stack_agreement_rate and stack_episodes go '
                             'into the metrics JSON')
    parser.add_argument('--metrics-out', default=None,
                        help='metrics JSON (updated in place if it exists, with --force); '
                             'default runs/success/eval-<stamp>/metrics.json')
    parser.add_argument('--force', action='store_true',
                        help='update an existing metrics JSON (e.g. models/*_metrics.json)')


def run_evaluate_classifier(args):
    """``awopt evaluate-classifier``: returns the exit code (2 on bad input)."""
    from awopt_ros.learning.train_cli import write_json
    try:
        if not (args.frames or args.heldout or args.frames_from_dataset or args.stack_report):
            raise UsageError('', 'give --frames, --heldout, --frames-from-dataset or '
                                 '--stack-report')
        stamp = time.strftime('%Y%m%d-%H%M%S')
        out = Path(args.metrics_out or Path(SUCCESS_RUNS) / f'eval-{stamp}' / 'metrics.json')
        check_outputs([('--metrics-out', out)], force=args.force)
        try:
            model = sc.SuccessClassifier(args.model)
        except (FileNotFoundError, sc.ModelContractError) as exc:
            raise UsageError('model', str(exc)) from None
        splits = {}
        for option, prefix, paths in (('--frames', 'frames', args.frames),
                                      ('--heldout', 'heldout', args.heldout)):
            loaded = [_load_frames(p, option) for p in paths]
            for p, fs in zip(paths, loaded):
                check_frames_for(model, fs, option, p)
            if loaded:
                from awopt_ros.learning.success_data import FrameSet
                splits[prefix] = loaded[0] if len(loaded) == 1 else FrameSet.concat(loaded)
        if args.frames_from_dataset:
            from awopt_ros.learning.success_data import frames_from_dataset
            try:
                splits['dataset'] = frames_from_dataset(args.frames_from_dataset)
            except (OSError, ValueError, KeyError) as exc:
                raise UsageError('--frames-from-dataset', str(exc)) from None
            check_frames_for(model, splits['dataset'], '--frames-from-dataset',
                             args.frames_from_dataset)
        stack = read_stack_report(args.stack_report, model) if args.stack_report else {}
    except UsageError as exc:
        return usage_error(EVAL_PROG, exc)
    metrics = {}
    if out.exists():
        try:
            metrics = json.loads(out.read_text())
        except ValueError:
            metrics = {}
    metrics.update(evaluate_model(model, splits))
    stack_model = stack.pop('stack_report_model', None)
    metrics.update(stack)
    if args.stack_report:
        metrics['stack_report'] = str(args.stack_report)
        print(f'stack agreement from {args.stack_report} (success classifier of the run: '
              + (stack_model if stack_model else 'not recorded in the run; not checked') + ')')
    write_json(out, metrics)
    line = _summary_line(metrics, tuple(splits))
    if stack:
        line += (f'; stack agreement {stack["stack_agreement_rate"]} over '
                 f'{stack["stack_episodes"]} episodes')
    print(line)
    print(f'wrote {out}')
    return 0
