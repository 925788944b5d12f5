"""Behaviour cloning of the grasping actor (the AW-Opt actor loss without advantage weights).

AW-Opt (Lu et al. 2021, FACTS.md) trains its actor with

    L_A(a, A_phi(s)) = sum_k w_k (mu_k(s) - a_k)^2 + w_d sum_j CE(a_j, p_j(s))

on transitions of successful episodes only ("positive filtering"), weighted by exp(Adv).
Behaviour cloning is that loss with all advantage weights equal to 1. For task 1 the weights
are w_x = w_y = w_z = 33.3, w_theta = 5.5 and w_d = 1.0 for each of open, close, terminate.
Continuous actions are compared after normalising by their bounds (a_k / high_k, so every
continuous term lives in [-1, 1]); discrete ones use binary cross-entropy on the logits.

Actors with 'target' pooling (``networks.ActorConfig``) also learn their grasp-target score
map: a cross-entropy between the score softmax and a Gaussian (``target_sigma_cells``) around
the hindsight grasp point (:mod:`awopt_ros.learning.targets`) on the steps before the close,
weighted ``target_weight``; the action head is trained with its window centred on the label
(teacher forcing), and at run time on the best-scoring cell. With ``ActorConfig.grasp_pose``
the predicted grasp pose (tool position, doubled gripper yaw) gets a mean-squared error against
the hindsight pose on the same steps, weighted ``pose_weight``.

Augmentation: random shift of +-``shift_px`` pixels with edge replication (DrQ, Kostrikov et
al. 2020), applied independently to each image in a batch.
"""
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from awopt_ros.core import spec
from awopt_ros.learning.networks import GRASP_POSE_DIM, Actor, ActorConfig

#: Task-1 sub-action weights (x, y, z, theta, open, close, terminate), AW-Opt Sec. 5.
TASK1_WEIGHTS = (33.3, 33.3, 33.3, 5.5, 1.0, 1.0, 1.0)


@dataclass
class BCConfig:
    """Behaviour-cloning hyper-parameters.

    Attributes:
        steps: gradient steps.
        batch_size: transitions per step.
        lr: Adam learning rate lambda_A (AWAC/AW-Opt use 3e-4).
        weight_decay: Adam L2 weight decay.
        weights: w_k for (x, y, z, theta, open, close, terminate), AW-Opt task 1.
        shift_px: random-shift augmentation range (px, each direction); 0 disables it.
        holdout_fraction: fraction of transitions kept aside for the held-out loss.
        eval_every: steps between held-out evaluations (and progress updates).
        seed: seed of torch and numpy generators used here.
        num_threads: torch intra-op threads (the target machine has 2 cores).
        actor: network shape (:class:`ActorConfig`).
        target_weight: weight of the score-map cross-entropy ('target' pooling).
        target_sigma_cells: std (score-map cells) of the Gaussian around the label.
        lr_schedule: 'constant' or 'cosine' (the learning rate decays to 0 over ``steps``,
            Loshchilov & Hutter 2017, without restarts).
        pose_weight: weight of the grasp-pose error (``ActorConfig.grasp_pose``).
        ema_decay: 0 (default) returns the last iterate; in (0, 1) the returned actor holds
            an exponential moving average of the weights, theta_ema <- d theta_ema +
            (1 - d) theta after every step (Polyak averaging, ``torch.optim.swa_utils``);
            the held-out loss is then measured on the average.
        intervention_weight: factor (>= 0) on the training loss of transitions where an
            operator's command replaced the policy's (``train_bc``'s ``intervention``, the
            dataset info; ``core.intervention``); 1 (default) = no change. The held-out
            loss stays unweighted.
    """

    steps: int = 5000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    weights: tuple = TASK1_WEIGHTS
    shift_px: int = 4
    holdout_fraction: float = 0.1
    eval_every: int = 100
    seed: int = 0
    num_threads: int = 2
    actor: ActorConfig = field(default_factory=ActorConfig)
    target_weight: float = 1.0
    target_sigma_cells: float = 0.75
    lr_schedule: str = 'constant'
    pose_weight: float = 1.0
    ema_decay: float = 0.0
    intervention_weight: float = 1.0

    def __post_init__(self):
        """Validate the values (ValueError naming the field)."""
        if self.steps < 1:
            raise ValueError(f'BCConfig.steps must be >= 1, got {self.steps}')
        if self.batch_size < 1:
            raise ValueError(f'BCConfig.batch_size must be >= 1, got {self.batch_size}')
        if not self.lr > 0:
            raise ValueError(f'BCConfig.lr must be > 0, got {self.lr}')
        if len(self.weights) != spec.ACTION_DIM:
            raise ValueError(f'BCConfig.weights needs {spec.ACTION_DIM} entries, '
                             f'got {len(self.weights)}')
        if self.shift_px < 0:
            raise ValueError(f'BCConfig.shift_px must be >= 0, got {self.shift_px}')
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f'BCConfig.holdout_fraction must be in [0, 1), '
                             f'got {self.holdout_fraction}')
        if self.eval_every < 1:
            raise ValueError(f'BCConfig.eval_every must be >= 1, got {self.eval_every}')
        if self.target_weight < 0 or not self.target_sigma_cells > 0:
            raise ValueError(f'BCConfig.target_weight must be >= 0 and target_sigma_cells '
                             f'> 0, got {self.target_weight}, {self.target_sigma_cells}')
        if not self.pose_weight >= 0:
            raise ValueError(f'BCConfig.pose_weight must be >= 0, got {self.pose_weight}')
        if not (math.isfinite(self.intervention_weight) and self.intervention_weight >= 0):
            raise ValueError(f'BCConfig.intervention_weight must be a finite value >= 0, got '
                             f'{self.intervention_weight}')
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f'BCConfig.ema_decay must be in [0, 1), got {self.ema_decay}')
        if self.lr_schedule not in ('constant', 'cosine'):
            raise ValueError(f"BCConfig.lr_schedule must be 'constant' or 'cosine', "
                             f'got {self.lr_schedule!r}')
        if self.actor.pooling == 'target' and self.shift_px:
            raise ValueError("BCConfig.shift_px must be 0 with pooling 'target': the target "
                             f'labels do not move with a shifted image (got {self.shift_px})')

    def to_dict(self):
        """Return the config as a plain (JSON-friendly) dict."""
        d = asdict(self)
        d['weights'] = list(self.weights)
        return d


def random_shift(images, shift_px, generator=None):
    """Shift each image by a random integer offset in [-shift_px, shift_px] (edge replicate).

    DrQ augmentation (Kostrikov et al. 2020). The batch is edge-padded once (two
    ``index_select``) and each image's window is gathered from a strided view of all
    ``(2 s + 1)^2`` windows (about 2x faster than a per-pixel 3-D advanced index).

    Args:
        images: uint8 or float tensor (N, H, W, C).
        shift_px: maximum shift s (px); 0 returns ``images`` unchanged.
        generator: optional ``torch.Generator`` (one ``randint`` of shape (N, 2) is drawn).

    Returns:
        contiguous tensor of the same shape and dtype.
    """
    if shift_px == 0:
        return images
    n, h, w = images.shape[:3]
    s = int(shift_px)
    d = torch.randint(-s, s + 1, (n, 2), generator=generator) + s    # (N, 2) in [0, 2s]
    rows = torch.arange(-s, h + s).clamp_(0, h - 1)
    cols = torch.arange(-s, w + s).clamp_(0, w - 1)
    padded = images.index_select(1, rows).index_select(2, cols)      # (N, H+2s, W+2s, C)
    sn, sh, sw = padded.stride()[:3]
    windows = padded.as_strided((n, 2 * s + 1, 2 * s + 1) + tuple(images.shape[1:]),
                                (sn, sh, sw, sh, sw) + tuple(padded.stride()[3:]))
    return windows[torch.arange(n), d[:, 0], d[:, 1]]


def _masked_mean(per_sample, mask, weight):
    """sum(weight * per_sample * mask) / sum(mask) (0 when no step is labelled)."""
    m = mask.to(torch.float32)
    w = m if weight is None else m * weight
    return (per_sample * w).sum() / m.sum().clamp(min=1.0)


def target_loss(actor, scores, target_xy, mask, sigma_cells, weight=None):
    """Score-map cross-entropy against a Gaussian around ``target_xy``, mean over ``mask``.

    Args:
        actor: :class:`Actor` with 'target' pooling (its ``target_grid``, ``map_side``).
        scores: (N, S*S) score logits; target_xy: float (N, 2) in [-1, 1]; mask: (N,) bool
            or 0/1 (steps with a label); sigma_cells: Gaussian std in score-map cells.
        weight: optional (N,) per-sample weights (the AW-Opt advantage weights); the sum of
            the weighted terms is still divided by the number of labelled steps.

    Returns:
        scalar tensor (0 when no step is labelled).
    """
    sigma = sigma_cells * 2.0 / actor.map_side
    d2 = ((actor.target_grid.unsqueeze(0) - target_xy.unsqueeze(1)) ** 2).sum(-1)
    label = torch.softmax(-0.5 * d2 / sigma ** 2, dim=-1)                    # (N, S*S)
    ce = -(label * torch.log_softmax(scores, dim=-1)).sum(-1)                 # (N,)
    return _masked_mean(ce, mask, weight)


def pose_loss(pose, label, mask, weight=None):
    """Mean squared error (summed over the entries) of a predicted grasp pose (N, P) against
    ``label`` (N, P), mean over ``mask`` (N,) (0 when no step is labelled); ``weight`` as in
    :func:`target_loss`."""
    return _masked_mean(((pose - label) ** 2).sum(-1), mask, weight)


def bc_loss(actor, images, proprios, actions, weights, targets=None, target_weight=1.0,
            target_sigma_cells=0.75, pose_weight=1.0, sample_weight=None):
    """Return (total loss, dict of per-sub-action losses) for one batch.

    Args:
        actor: :class:`Actor`.
        images: uint8 tensor (N, H, W, 3); proprios: float32 (N, 6); actions: float32 (N, 7).
        weights: 7 sub-action weights w_k.
        targets: optional (target_xy float (N, 2), mask (N,)) grasp-target labels
            (:mod:`awopt_ros.learning.targets`) for an actor with 'target' pooling: the
            window is centred on them and :func:`target_loss` is added (part ``'target'``);
            an actor with ``grasp_pose`` needs a third entry, the pose labels
            (N, ``GRASP_POSE_DIM``), and adds :func:`pose_loss` (part ``'pose'``).
            None: the actor picks its own target (evaluation without labels).
        target_weight, target_sigma_cells, pose_weight: see :class:`BCConfig`.
        sample_weight: optional float32 (N,) factor on every term of each sample (e.g.
            ``core.intervention.intervention_weights``); the means still divide by N.

    total = sum_k w_k mean_n (mu_k/high_k - a_k/high_k)^2 + sum_j w_j mean_n BCE(logit_j, a_j)
    with discrete targets a_j > 0.5 -> 1 else 0 (+ target_weight * target loss).

    Raises:
        ValueError: ``targets`` for an actor without 'target' pooling, or without pose labels
            for an actor with ``grasp_pose``.
    """
    w = torch.as_tensor(weights, dtype=torch.float32)
    extra = pose_extra = None
    if targets is None:
        mean_n, logits = actor.normalised(images, proprios)
    else:
        if actor.config.pooling != 'target':
            raise ValueError(f"targets need an actor with pooling 'target', not "
                             f'{actor.config.pooling!r}')
        target_xy, mask = targets[:2]
        feats, scores = actor.target_features(images, target_xy)
        mean_n, logits = actor.head(feats, proprios)
        extra = target_loss(actor, scores, target_xy, mask, target_sigma_cells,
                            weight=sample_weight)
        if actor.config.grasp_pose:
            if len(targets) < 3:
                raise ValueError('an actor with grasp_pose needs pose labels: targets = (xy, '
                                 'mask, pose), learning.targets.target_arrays(with_pose=True)')
            pose_extra = pose_loss(actor.grasp_pose(feats), targets[2], mask,
                                   weight=sample_weight)
    high = torch.as_tensor(spec.ACTION_HIGH[spec.CONTINUOUS], dtype=torch.float32)
    target_n = (actions[:, :4] / high).clamp(-1.0, 1.0)
    sw = 1.0 if sample_weight is None else sample_weight.reshape(-1, 1)
    mse = (sw * (mean_n - target_n) ** 2).mean(0)                            # (4,)
    target_d = (actions[:, 4:] > 0.5).to(torch.float32)
    bce = (sw * F.binary_cross_entropy_with_logits(logits, target_d,
                                                   reduction='none')).mean(0)
    total = (w[:4] * mse).sum() + (w[4:] * bce).sum()
    parts = {name: float(v) for name, v in
             zip(spec.ACTION_NAMES, torch.cat([mse, bce]).detach())}
    if extra is not None:
        total = total + target_weight * extra
        parts['target'] = float(extra.detach())
    if pose_extra is not None:
        total = total + pose_weight * pose_extra
        parts['pose'] = float(pose_extra.detach())
    return total, parts


def split_holdout(n, fraction, seed):
    """Return (train indices, held-out indices) of ``n`` samples, shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_hold = int(round(n * fraction)) if n > 1 else 0
    n_hold = min(n_hold, n - 1)
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def _check_arrays(images, proprios, actions):
    images = np.asarray(images)
    proprios = np.asarray(proprios, dtype=np.float32)
    actions = np.asarray(actions, dtype=np.float32)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f'images must be uint8 (N, H, W, 3), got {images.dtype} '
                         f'{images.shape}')
    n = images.shape[0]
    if n < 2:
        raise ValueError(f'need at least 2 transitions to train, got {n}')
    if proprios.shape != (n, spec.PROPRIO_DIM):
        raise ValueError(f'proprios must be (N={n}, {spec.PROPRIO_DIM}), got {proprios.shape}')
    if actions.shape != (n, spec.ACTION_DIM):
        raise ValueError(f'actions must be (N={n}, {spec.ACTION_DIM}), got {actions.shape}')
    if not (np.all(np.isfinite(proprios)) and np.all(np.isfinite(actions))):
        raise ValueError('proprios or actions contain non-finite values')
    return images, proprios, actions


@torch.no_grad()
def _check_targets(targets, n, actor_config):
    """Return ``targets`` as tensors (xy (N, 2) float32, mask (N,) bool[, pose (N, 5)]),
    or None."""
    pooling = actor_config.pooling
    if pooling != 'target':
        if targets is not None:
            raise ValueError(f"targets need an actor with pooling 'target', not {pooling!r}")
        return None
    if targets is None:
        raise ValueError("an actor with pooling 'target' needs targets (grasp-target labels, "
                         'learning.targets.target_arrays)')
    xy = np.asarray(targets[0], dtype=np.float32)
    mask = np.asarray(targets[1], dtype=bool)
    if xy.shape != (n, 2) or mask.shape != (n,):
        raise ValueError(f'targets must be ((N, 2), (N,)) with N={n}, got {xy.shape}, '
                         f'{mask.shape}')
    if not np.all(np.isfinite(xy)):
        raise ValueError('targets contain non-finite coordinates')
    out = (torch.from_numpy(xy), torch.from_numpy(mask))
    if actor_config.grasp_pose:
        pose = np.asarray(targets[2], dtype=np.float32) if len(targets) > 2 else None
        if pose is None or pose.shape != (n, GRASP_POSE_DIM) or not np.all(np.isfinite(pose)):
            raise ValueError(f'an actor with grasp_pose needs finite pose labels (N={n}, '
                             f'{GRASP_POSE_DIM}) as the third entry of targets, got '
                             f'{None if pose is None else pose.shape}')
        out += (torch.from_numpy(pose),)
    return out


def evaluate(actor, images, proprios, actions, weights, batch_size=256, targets=None,
             **loss_kw):
    """Return the mean BC loss (float) of ``actor`` over tensors, without augmentation.

    ``targets`` and ``loss_kw`` as in :func:`bc_loss` (tensors of all N rows).
    """
    actor.eval()
    total, count = 0.0, 0
    for s in range(0, images.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        part = None if targets is None else tuple(t[sl] for t in targets)
        with torch.no_grad():
            loss, _ = bc_loss(actor, images[sl], proprios[sl], actions[sl], weights, part,
                              **loss_kw)
        k = images[sl].shape[0]
        total += float(loss) * k
        count += k
    actor.train()
    return total / max(count, 1)


def train_bc(images, proprios, actions, config=None, progress=True, log=None, actor=None,
             targets=None, intervention=None):
    """Train an :class:`Actor` by behaviour cloning on (image, proprio) -> action pairs.

    Args:
        images: uint8 (N, H, W, 3), H = W = ``config.actor.image_size``.
        proprios: float32 (N, 6). actions: float32 (N, 7), ``spec.ACTION_NAMES``.
        config: :class:`BCConfig` (defaults if None).
        progress: show a tqdm progress bar.
        log: optional callable(str) for progress lines.
        actor: optional :class:`Actor` to go on training (warm start, e.g. the previous
            DAgger iteration's); it is trained in place. None: a new ``Actor(config.actor)``.
        targets: (target_xy float32 (N, 2), mask bool (N,)[, pose float32 (N, 5)])
            grasp-target labels (:func:`awopt_ros.learning.targets.target_arrays`); required
            for, and only for, 'target' pooling; the pose entry for ``grasp_pose``. The
            held-out loss is then the teacher-forced one plus the target (and pose) terms.
        intervention: optional bool (N,): transitions where an operator's command replaced
            the policy's; their loss is scaled by ``config.intervention_weight``.

    Returns:
        (actor in eval mode, history dict with lists ``step``, ``train_loss`` (running mean
        since the last evaluation), ``heldout_loss`` (nan when no held-out data) and the
        final per-sub-action held-out losses ``heldout_parts``).

    Raises:
        ValueError: bad array shapes/dtypes, an image size different from the config's, a
            warm-start actor whose network differs from ``config.actor``, or targets missing
            for (or given without) 'target' pooling.
    """
    config = config or BCConfig()
    if actor is not None and actor.config.to_dict() != config.actor.to_dict():
        raise ValueError(f'warm-start actor {actor.config.to_dict()} differs from '
                         f'config.actor {config.actor.to_dict()}')
    images, proprios, actions = _check_arrays(images, proprios, actions)
    if images.shape[1:3] != (config.actor.image_size, config.actor.image_size):
        raise ValueError(f'images are {images.shape[1]}x{images.shape[2]}, the actor expects '
                         f'{config.actor.image_size}x{config.actor.image_size}')
    labels = _check_targets(targets, images.shape[0], config.actor)
    sample_w = None
    if intervention is not None and config.intervention_weight != 1.0:
        from awopt_ros.core.intervention import intervention_weights
        flags = np.asarray(intervention, dtype=bool).reshape(-1)
        if flags.shape != (images.shape[0],):
            raise ValueError(f'intervention must be (N={images.shape[0]},), got {flags.shape}')
        sample_w = torch.from_numpy(intervention_weights(flags, config.intervention_weight))
    torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    train_idx, hold_idx = split_holdout(images.shape[0], config.holdout_fraction, config.seed)
    t_img = torch.from_numpy(np.ascontiguousarray(images))
    t_pro = torch.from_numpy(proprios)
    t_act = torch.from_numpy(actions)
    tr_idx = torch.from_numpy(train_idx)
    ho = (t_img[hold_idx], t_pro[hold_idx], t_act[hold_idx]) if len(hold_idx) else None
    ho_labels = None if labels is None else tuple(t[hold_idx] for t in labels)
    loss_kw = {'target_weight': config.target_weight,
               'target_sigma_cells': config.target_sigma_cells,
               'pose_weight': config.pose_weight}

    actor = Actor(config.actor) if actor is None else actor
    actor.train()
    opt = torch.optim.Adam(actor.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
                if config.lr_schedule == 'cosine' else None)
    averaged = None
    if config.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        averaged = AveragedModel(actor, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                 use_buffers=True)
    scored = actor if averaged is None else averaged.module
    history = {'step': [], 'train_loss': [], 'heldout_loss': [], 'heldout_parts': {}}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, desc='bc', unit='step', dynamic_ncols=True)
    running, running_n = 0.0, 0
    for step in range(1, config.steps + 1):
        pick = tr_idx[torch.randint(0, len(tr_idx), (config.batch_size,), generator=gen)]
        img = random_shift(t_img[pick], config.shift_px, gen)
        pick_labels = None if labels is None else tuple(t[pick] for t in labels)
        loss, _ = bc_loss(actor, img, t_pro[pick], t_act[pick], config.weights, pick_labels,
                          sample_weight=None if sample_w is None else sample_w[pick], **loss_kw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()
        if averaged is not None:
            averaged.update_parameters(actor)
        running += float(loss.detach())
        running_n += 1
        if step % config.eval_every == 0 or step == config.steps:
            held = (evaluate(scored, *ho, config.weights, targets=ho_labels, **loss_kw)
                    if ho is not None else math.nan)
            history['step'].append(step)
            history['train_loss'].append(running / running_n)
            history['heldout_loss'].append(held)
            if bar is not None:
                bar.set_postfix(train=f'{running / running_n:.4f}', heldout=f'{held:.4f}')
            if log is not None:
                log(f'step {step}/{config.steps} train {running / running_n:.4f} '
                    f'heldout {held:.4f}')
            running, running_n = 0.0, 0
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if averaged is not None:
        actor.load_state_dict(averaged.module.state_dict())
    if ho is not None:
        with torch.no_grad():
            actor.eval()
            _, parts = bc_loss(actor, *ho, config.weights, ho_labels, **loss_kw)
        history['heldout_parts'] = parts
    actor.eval()
    return actor, history
