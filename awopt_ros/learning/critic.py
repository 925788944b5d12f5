"""QT-Opt-style grasp-success critic Q(s, a), split into an image encoder and a Q head
(and :class:`StateCritic`, an MLP Q(s, a) with the same semantics for tasks without an image).

Source: QT-Opt (Kalashnikov et al. 2018, "QT-Opt: Scalable Deep Reinforcement Learning for
Vision-Based Robotic Manipulation", Fig. 3 and Sec. 4) as used by AW-Opt (Lu et al. 2021,
"AW-Opt: Learning Robotic Skills with Imitation and Reinforcement at Scale"): the image goes
through a conv trunk; the action and the proprioception go through a small MLP to one vector
per channel that is broadcast-added to the feature map ("merge"); more convs, pooling and a
small MLP give one logit; ``Q = sigmoid(logit)`` is the probability of task success, trained
with cross-entropy against Bellman targets in [0, 1].

Splitting the network at the merge lets the cross-entropy method (``core.cem``) encode the
image ONCE per state and score all ``K`` candidate actions with one batched head call. The
head runs once per candidate, so it is kept cheap: the encoder reduces the trunk output to a
small map (4 x 4 by default) of ``feature_channels`` channels, and the head's convs are 1x1
by default (QT-Opt's 3x3 head convs on a 8 x 8 map cost about 30x more per candidate)::

    image uint8 (N, H, W, 3) RGB -> float (N, 3, H, W) / 255, + CoordConv x, y, r channels
      ENCODER: num_conv 3x3 convs (channels each, ReLU); the first num_strided stride 2
               -> max-pool with kernel = stride = max(1, s // feature_size) where s is the
                  trunk output side (no pool when s <= feature_size)
               -> 1x1 conv to feature_channels F (linear: the merge and ReLU follow)
               -> features float32 (N, F, h, w)
      HEAD:    [action / ACTION_HIGH (7), (proprio - offset) / scale (6)]
                  -> Linear(13, hidden), ReLU, Linear(hidden, F) -> v (N, F)
               ReLU(features + v tiled over h x w)    (QT-Opt broadcast-add merge)
               -> head_conv convs (head_kernel x head_kernel, F channels, stride 1, ReLU)
               -> pooling: 'max_mean' (global max and mean per channel, (N, 2F); default),
                  'max' ((N, F)) or 'flatten' (QT-Opt, (N, F*h*w))
               -> Linear(pooled, hidden), ReLU, Linear(hidden, 1) -> logit (N,)

Feature-map side (see :meth:`CriticConfig.feature_hw`), defaults (4 stride-2 convs, the
actor's trunk; ``feature_size=4``): 32 px -> 2x2, 64 px -> 4x4 (no pool), 472 px -> 30 after
the trunk, pooled with kernel 7 -> 4x4. In general ``h = w = s // max(1, s // feature_size)``
with ``s`` the trunk output side, i.e. between ``feature_size`` and ``2 * feature_size - 1``
when ``s > feature_size``.

Cost of the defaults (32 channels, F = 16, hidden 64, 4x4 map): the head does about 8 k
multiply-adds per candidate row (merge MLP 1.9 k, 1x1 conv 4.1 k, final MLP 2.1 k, plus the
merge add and pooling), i.e. about 0.5 M for QT-Opt's 65 CEM rows (two 3x3 head convs of 32
channels on an 8x8 map, the previous head, took 77 M). Implementation notes that keep the
function but cut time: the encoder's first conv is split into an image part (1/255 folded
into the weights) and a constant CoordConv term; the head folds the fixed action/proprio
normalisation into its first merge layer and tiles the merge vector with one MatMul.

Export (:func:`export_critic`) writes two ONNX graphs (opset 17) with contract metadata:
encoder ``image`` uint8 (N, H, W, 3) -> ``features`` float32 (N, F, h, w), and head
``features``, ``proprio`` float32 (N, 6), ``action`` float32 (N, 7) -> ``q`` float32 (N,)
(= sigmoid(logit), in [0, 1]); both have a dynamic batch axis N. The numpy/onnxruntime
runtime side is ``awopt_ros.core.onnx_critic.OnnxCritic``.
"""
import hashlib
import io
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from awopt_ros.core import spec
from awopt_ros.learning.export import OPSET, PARITY_ATOL, make_contract, save_with_metadata

ROLE_ENCODER = 'critic_encoder'
ROLE_HEAD = 'critic_head'
ALGORITHM = 'awopt-critic'
HEAD_POOLING = ('max_mean', 'max', 'flatten')


@dataclass
class CriticConfig:
    """Shape of the critic (QT-Opt / AW-Opt style, scaled down by default).

    Attributes:
        image_size: side of the square uint8 input image (px); 64 by default, QT-Opt uses 472.
        channels: conv channels ``C`` of every trunk layer (the actor's default is 32, too).
        num_conv: 3x3 conv layers in the encoder trunk.
        num_strided: how many of the first trunk layers stride 2 (the rest stride 1);
            ``<= num_conv``. Default 4 = ``num_conv``: the same trunk as the actor's
            (``networks.ActorConfig``: 4 stride-2 3x3 convs of 32 channels).
        feature_size: target side of the feature map; when the trunk output side ``s``
            exceeds it, a max-pool with kernel = stride = ``s // feature_size`` follows
            (feature side in ``[feature_size, 2 * feature_size - 1]``).
        feature_channels: channels ``F`` of the feature map handed to the head (a linear 1x1
            conv after the pool maps ``C`` to ``F``) and of the head convs.
        head_conv: conv layers in the head after the action merge (>= 1).
        head_kernel: kernel side of the head convs (odd; 1 = 1x1 convs, cheap per candidate;
            3 = QT-Opt's 3x3).
        hidden: units of the action/proprio MLP and of the final MLP's hidden layer.
        coord_conv: append pixel-coordinate channels x, y in [-1, 1] and radius r (CoordConv,
            Liu et al. 2018) to the image, so features know where in the fixed camera view
            they are.
        head_pooling: 'max_mean' (global max and mean per channel; small, translation
            invariant), 'max' (global max only; two fewer ONNX nodes per head run, but it
            fits brightness-like targets worse) or 'flatten' (all positions, as QT-Opt's
            final FC layers).

    Raises:
        ValueError: a field out of range; the message names the field.
    """

    image_size: int = 64
    channels: int = 32
    num_conv: int = 4
    num_strided: int = 4
    feature_size: int = 4
    feature_channels: int = 16
    head_conv: int = 1
    head_kernel: int = 1
    hidden: int = 64
    coord_conv: bool = True
    head_pooling: str = 'max_mean'

    def __post_init__(self):
        """Validate the fields (ValueError naming the field)."""
        minimum = {'image_size': 8, 'channels': 1, 'num_conv': 1, 'num_strided': 0,
                   'feature_size': 1, 'feature_channels': 1, 'head_conv': 1,
                   'head_kernel': 1, 'hidden': 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise ValueError(f'CriticConfig.{name} must be an int >= {low}, got {value!r}')
            setattr(self, name, int(value))
        if self.num_strided > self.num_conv:
            raise ValueError(f'CriticConfig.num_strided must be <= num_conv={self.num_conv}, '
                             f'got {self.num_strided}')
        if self.head_kernel % 2 == 0:
            raise ValueError(f'CriticConfig.head_kernel must be odd, got {self.head_kernel}')
        if not isinstance(self.coord_conv, (bool, np.bool_)):
            raise ValueError(f'CriticConfig.coord_conv must be a bool, got {self.coord_conv!r}')
        self.coord_conv = bool(self.coord_conv)
        if self.head_pooling not in HEAD_POOLING:
            raise ValueError(f'CriticConfig.head_pooling must be one of {HEAD_POOLING}, '
                             f'got {self.head_pooling!r}')

    def trunk_side(self):
        """Return the side (px) of the trunk output before the reduction pool."""
        side = self.image_size
        for _ in range(self.num_strided):
            side = (side - 1) // 2 + 1      # 3x3, stride 2, padding 1
        return side

    def pool_kernel(self):
        """Return the reduction max-pool kernel (= stride); 1 means no pool."""
        return max(1, self.trunk_side() // self.feature_size)

    def feature_hw(self):
        """Return the feature-map size (h, w) the encoder outputs for this config."""
        side = self.trunk_side() // self.pool_kernel()
        return side, side

    def feature_shape(self):
        """Return the per-sample feature shape (F, h, w)."""
        return (self.feature_channels,) + self.feature_hw()

    def to_dict(self):
        """Return the config as a plain dict."""
        return asdict(self)


def _coord_channels(size):
    """Return float32 (1, 3, size, size): x, y in [-1, 1] and radius from the image centre."""
    ramp = torch.linspace(-1.0, 1.0, size)
    y, x = torch.meshgrid(ramp, ramp, indexing='ij')
    return torch.stack([x, y, torch.sqrt(x * x + y * y)]).unsqueeze(0)


class CriticEncoder(nn.Module):
    """Image encoder of the critic (QT-Opt conv trunk): ``forward(image) -> features``.

    ``image`` is uint8 (N, H, W, 3) RGB with H = W = ``config.image_size`` (float tensors in
    0..255 also work); scaling to [0, 1] and the CoordConv channels happen inside, so the ONNX
    graph takes raw camera crops. Returns float32 features (N, F, h, w) with
    ``(F, h, w) = config.feature_shape()``: trunk, reduction max-pool, linear 1x1 conv.
    """

    def __init__(self, config):
        """Build the trunk for ``config`` (a :class:`CriticConfig`)."""
        super().__init__()
        self.config = c = config
        self.register_buffer('coords', _coord_channels(c.image_size))
        in_ch = 6 if c.coord_conv else 3
        layers = []
        for i in range(c.num_conv):
            stride = 2 if i < c.num_strided else 1
            layers += [nn.Conv2d(in_ch, c.channels, 3, stride=stride, padding=1),
                       nn.ReLU(inplace=True)]
            in_ch = c.channels
        k = c.pool_kernel()
        if k > 1:
            layers.append(nn.MaxPool2d(k, stride=k))
        self.trunk = nn.Sequential(*layers)
        self.project = nn.Conv2d(c.channels, c.feature_channels, 1)

    def forward(self, image):
        """Return float32 features (N, F, h, w) for uint8 images (N, H, W, 3)."""
        if image.dim() != 4 or image.shape[3] != 3:
            raise ValueError(f'image must be (N, H, W, 3), got {tuple(image.shape)}')
        size = self.config.image_size
        if image.shape[1] != size or image.shape[2] != size:
            raise ValueError(f'image is {image.shape[1]}x{image.shape[2]}, the critic expects '
                             f'{size}x{size}')
        x = image.permute(0, 3, 1, 2).to(torch.float32)   # NCHW view, channels-last strides
        first = self.trunk[0]
        # The first conv, split by input channel (the same function as on the concatenation
        # [image / 255, coords]): the 1/255 scaling is folded into the image weights and the
        # CoordConv channels contribute a per-position constant (1, C, h1, w1), computed once
        # per call (and constant-folded in the ONNX graph) instead of per image. The add and
        # the ReLU work in place on the conv output (the largest activation of the trunk).
        weight = first.weight[:, :3] * (1.0 / 255.0)
        x = F.conv2d(x, weight, first.bias, first.stride, first.padding)
        if self.config.coord_conv:
            term = F.conv2d(self.coords, first.weight[:, 3:], None, first.stride,
                            first.padding)
            if not torch.jit.is_tracing() and x.is_contiguous(
                    memory_format=torch.channels_last):
                term = term.contiguous(memory_format=torch.channels_last)
            x = x.add_(term)
        return self.project(self.trunk[1:](x))


class CriticHead(nn.Module):
    """Q head of the critic (QT-Opt merge + convs + MLP): ``forward(features, proprio,
    action) -> logit``.

    Args (of ``forward``):
        features: float32 (N, F, h, w) from :class:`CriticEncoder`.
        proprio: float32 (N, 6), ``spec.PROPRIO_NAMES`` (m, sin/cos, closedness in [0, 1]).
        action: float32 (N, 7), ``spec.ACTION_NAMES`` in physical units (m, m, m, rad, then
            0/1); divided by ``spec.ACTION_HIGH`` inside so every entry is in [-1, 1].
            The proprio is normalised inside with the fixed ``spec.PROPRIO_OFFSET`` /
            ``spec.PROPRIO_SCALE`` (workspace box to about [-1, 1]). Both normalisations are
            folded into the first merge layer's weights (exact, and constant-folded into the
            ONNX graph).

    Returns:
        float32 (N,) logits; ``sigmoid(logit)`` is Q, the predicted success probability.

    :meth:`forward_candidates` scores K actions per feature map without tiling the features.
    """

    def __init__(self, config):
        """Build the head for ``config`` (a :class:`CriticConfig`)."""
        super().__init__()
        self.config = c = config
        f = c.feature_channels
        h, w = c.feature_hw()
        scale = np.concatenate([1.0 / spec.ACTION_HIGH, 1.0 / np.asarray(spec.PROPRIO_SCALE)])
        offset = np.concatenate([np.zeros(spec.ACTION_DIM), spec.PROPRIO_OFFSET])
        self.register_buffer('input_scale', torch.as_tensor(scale, dtype=torch.float32)
                             .reshape(1, -1))
        self.register_buffer('input_offset', torch.as_tensor(offset, dtype=torch.float32)
                             .reshape(-1, 1))
        # (1, h*w) ones: v (N, F, 1) @ ones tiles the merge vector over the map with one
        # MatMul (in onnxruntime much cheaper than a broadcast Add with (N, F, 1, 1)).
        self.register_buffer('tile', torch.ones(1, h * w))
        self.merge = nn.Sequential(
            nn.Linear(spec.ACTION_DIM + spec.PROPRIO_DIM, c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, f))
        convs = []
        for _ in range(c.head_conv):
            convs += [nn.Conv2d(f, f, c.head_kernel, padding=c.head_kernel // 2), nn.ReLU()]
        self.convs = nn.Sequential(*convs)
        n_pool = {'max_mean': 2 * f, 'max': f}.get(c.head_pooling, f * h * w)
        self.mlp = nn.Sequential(nn.Linear(n_pool, c.hidden), nn.ReLU(), nn.Linear(c.hidden, 1))

    def embed(self, proprio, action):
        """Return the merge vectors float32 (..., F) for proprio (..., 6), action (..., 7)."""
        first = self.merge[0]
        weight = first.weight * self.input_scale                      # (hidden, 13)
        bias = first.bias - (weight @ self.input_offset).squeeze(1)   # (hidden,)
        x = torch.cat([action.float(), proprio.float()], dim=-1)
        return self.merge[2](self.merge[1](F.linear(x, weight, bias)))

    def _rest(self, x):
        """(M, F, h, w) merged pre-activations -> logits (M,)."""
        x = self.convs(torch.relu(x))
        if self.config.head_pooling == 'max_mean':
            pooled = torch.cat([F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)],
                               dim=1).flatten(1)                           # (M, 2F)
        elif self.config.head_pooling == 'max':
            pooled = F.adaptive_max_pool2d(x, 1).flatten(1)                # (M, F)
        else:
            pooled = x.flatten(1)                                          # (M, F*h*w)
        return self.mlp(pooled).reshape(-1)

    def forward(self, features, proprio, action):
        """Return float32 logits (N,); see the class docstring for shapes and units."""
        v = self.embed(proprio, action)                                    # (N, F)
        tiled = torch.matmul(v.unsqueeze(2), self.tile)                    # (N, F, h*w)
        return self._rest(features + tiled.reshape(-1, *self.config.feature_shape()))

    def forward_candidates(self, features, proprio, candidates):
        """Return logits (B, K) of K candidate actions per state (features are broadcast).

        Args:
            features: float32 (B, F, h, w).
            proprio: float32 (B, 6).
            candidates: float32 (B, K, 7) actions in physical units.
        """
        b, k = candidates.shape[0], candidates.shape[1]
        pro = proprio.unsqueeze(1).expand(b, k, proprio.shape[1])
        v = self.embed(pro, candidates)                                    # (B, K, F)
        x = features.unsqueeze(1) + v[:, :, :, None, None]                 # (B, K, F, h, w)
        return self._rest(x.reshape(b * k, *features.shape[1:])).reshape(b, k)


class Critic(nn.Module):
    """Grasp-success critic Q(s, a) = sigmoid(head(encoder(image), proprio, action)).

    QT-Opt (Kalashnikov et al. 2018) architecture split at the action merge so CEM (AW-Opt,
    Lu et al. 2021) encodes each image once (:meth:`encode`) and scores many candidate actions
    with one head call (:meth:`score_candidates`).

    Args:
        config: a :class:`CriticConfig` (default: 64 px, 32 channels, 16 x 4 x 4 features).
    """

    def __init__(self, config=None):
        """Build encoder and head; see the class docstring."""
        super().__init__()
        self.config = config or CriticConfig()
        self.encoder = CriticEncoder(self.config)
        self.head = CriticHead(self.config)

    def encode(self, image):
        """Return float32 features (N, F, h, w) for uint8 images (N, H, W, 3)."""
        return self.encoder(image)

    def forward(self, image, proprio, action):
        """Return float32 logits (N,) for image uint8 (N, H, W, 3), proprio float32 (N, 6)
        and action float32 (N, 7) in physical units (m, rad, discrete 0/1)."""
        return self.head(self.encoder(image), proprio, action)

    def q(self, image, proprio, action):
        """Return Q = sigmoid(logit), float32 (N,) in [0, 1]; arguments as :meth:`forward`."""
        return torch.sigmoid(self.forward(image, proprio, action))

    def score_candidates(self, features, proprio, candidates):
        """Return logits (B, K) of K candidate actions per state, one head call on B*K rows.

        Args:
            features: float32 (B, F, h, w) from :meth:`encode` (the encoder is NOT re-run).
            proprio: float32 (B, 6).
            candidates: float32 (B, K, 7) actions in physical units.

        Returns:
            float32 (B, K) logits (apply ``torch.sigmoid`` for Q).

        Raises:
            ValueError: shapes do not agree.
        """
        if candidates.dim() != 3 or candidates.shape[2] != spec.ACTION_DIM:
            raise ValueError(f'candidates must be (B, K, {spec.ACTION_DIM}), '
                             f'got {tuple(candidates.shape)}')
        b = candidates.shape[0]
        if features.dim() != 4 or features.shape[0] != b:
            raise ValueError(f'features must be (B={b}, F, h, w), got {tuple(features.shape)}')
        if tuple(proprio.shape) != (b, spec.PROPRIO_DIM):
            raise ValueError(f'proprio must be (B={b}, {spec.PROPRIO_DIM}), '
                             f'got {tuple(proprio.shape)}')
        return self.head.forward_candidates(features, proprio, candidates)

    def make_score_fn(self, features, proprio, use_q=True):
        """Return a numpy ``score_fn`` for ``core.cem.CEM.maximise`` (e.g. Bellman targets).

        Args:
            features: float32 tensor (B, F, h, w) from :meth:`encode`, computed once.
            proprio: float32 tensor (B, 6).
            use_q: score with Q = sigmoid(logit) (True) or the raw logit.

        Returns:
            callable: float32 ndarray (B, K, 7) -> float32 ndarray (B, K), evaluated under
            ``torch.no_grad()`` with one head call per CEM iteration.
        """
        def score_fn(candidates):
            cand = torch.as_tensor(np.asarray(candidates, dtype=np.float32),
                                   device=features.device)
            with torch.no_grad():
                out = self.score_candidates(features, proprio, cand)
                if use_q:
                    out = torch.sigmoid(out)
            return out.cpu().numpy()
        return score_fn


def critic_loss(logits, target_q):
    """QT-Opt's cross-entropy loss: mean binary cross-entropy of sigmoid(logits) vs targets.

    Args:
        logits: float tensor (N,) (or any shape), critic logits.
        target_q: float tensor of the same shape, Bellman targets in [0, 1] (success
            probabilities; QT-Opt, Kalashnikov et al. 2018, Sec. 4, eq. for L(theta)).

    Returns:
        scalar float tensor (nats per sample).

    Raises:
        ValueError: shapes differ, or a target lies outside [0, 1] or is NaN.
    """
    target_q = target_q.to(logits.dtype)
    if logits.shape != target_q.shape:
        raise ValueError(f'logits {tuple(logits.shape)} and target_q '
                         f'{tuple(target_q.shape)} must have the same shape')
    with torch.no_grad():
        if not bool(torch.all((target_q >= 0.0) & (target_q <= 1.0))):
            raise ValueError('target_q must lie in [0, 1] (and not be NaN)')
    return F.binary_cross_entropy_with_logits(logits, target_q)


# ---------------------------------------------------------------------------------------------
# State critic (tasks without an image, ``core.task.Task.image_size == 0``)
# ---------------------------------------------------------------------------------------------

@dataclass
class StateCriticConfig:
    """Shape of the state critic Q(s, a), an MLP (AWAC, Nair et al. 2020: 4 x 256 ReLU).

    Attributes:
        hidden: units of every hidden layer.
        layers: number of hidden layers (>= 1); 3 by default (2-core CPU).

    Raises:
        ValueError: a field out of range; the message names the field.
    """

    hidden: int = 256
    layers: int = 3

    def __post_init__(self):
        """Validate the fields (ValueError naming the field)."""
        for name in ('hidden', 'layers'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < 1:
                raise ValueError(f'StateCriticConfig.{name} must be an int >= 1, '
                                 f'got {value!r}')
            setattr(self, name, int(value))

    def to_dict(self):
        """Return the config as a plain dict."""
        return asdict(self)


class StateCritic(nn.Module):
    """Success critic of a state task: Q(s, a) = sigmoid(MLP([s_n, a_n])).

    Same semantics as :class:`Critic` (QT-Opt: Q is the success probability, trained by
    :func:`critic_loss` against Bellman targets in [0, 1]), on a state vector instead of an
    image: ``s_n = (state - task.state_offset) / task.state_scale`` and ``a_n`` the action with
    its continuous entries mapped to [-1, 1] by the task's bounds (``(a - centre) / half``;
    discrete entries stay 0/1). The methods keep :class:`Critic`'s signatures so the learner
    has one code path: ``encode(image)`` returns None for ``image=None``, and the
    ``features`` / ``image`` arguments must be None.

    Args:
        task: a ``core.task.Task`` (or its name) with ``image_size == 0``.
        config: a :class:`StateCriticConfig`.

    Raises:
        ValueError: a task with an image.
    """

    def __init__(self, task, config=None):
        """Build the MLP; see the class docstring."""
        super().__init__()
        from awopt_ros.core.task import get_task
        from awopt_ros.learning.networks import mlp
        self.task = t = get_task(task)
        self.config = c = config or StateCriticConfig()
        if t.has_image:
            raise ValueError(f'StateCritic needs a task without an image, {t.name!r} has one')
        low = np.asarray(t.action_low, np.float64)
        high = np.asarray(t.action_high, np.float64)
        centre, half = (low + high) / 2.0, (high - low) / 2.0
        disc = list(t.discrete)
        centre[disc], half[disc] = 0.0, 1.0
        offset = np.concatenate([t.state_offset, centre])
        scale = np.concatenate([t.state_scale, half])
        self.register_buffer('input_offset', torch.as_tensor(offset, dtype=torch.float32)
                             .reshape(1, -1))
        self.register_buffer('input_scale', torch.as_tensor(scale, dtype=torch.float32)
                             .reshape(1, -1))
        self.mlp = mlp(t.state_dim + t.action_dim, c.hidden, c.layers, 1)

    def _check(self, what, value):
        if value is not None:
            raise ValueError(f'task {self.task.name!r} has no image; {what} must be None')

    def encode(self, image):
        """Return None (no image to encode); ``image`` must be None."""
        self._check('image', image)
        return None

    def _logits(self, state, action):
        """(..., D) states and (..., A) actions -> logits (...)."""
        x = torch.cat([state.to(torch.float32), action.to(torch.float32)], dim=-1)
        return self.mlp((x - self.input_offset) / self.input_scale).squeeze(-1)

    def head(self, features, state, action):
        """Return logits (N,) for state (N, D), action (N, A); ``features`` must be None."""
        self._check('features', features)
        return self._logits(state, action)

    def forward(self, image, state, action):
        """Return logits (N,) for state float32 (N, D) raw and action float32 (N, A) in the
        task's units; ``image`` must be None."""
        self._check('image', image)
        return self._logits(state, action)

    def q(self, image, state, action):
        """Return Q = sigmoid(logit), float32 (N,) in [0, 1]; arguments as :meth:`forward`."""
        return torch.sigmoid(self.forward(image, state, action))

    def score_candidates(self, features, state, candidates):
        """Return logits (B, K) of K candidate actions (B, K, A) per state (B, D).

        Raises:
            ValueError: ``features`` not None, or shapes that do not agree.
        """
        self._check('features', features)
        t = self.task
        if candidates.dim() != 3 or candidates.shape[2] != t.action_dim:
            raise ValueError(f'candidates must be (B, K, {t.action_dim}), '
                             f'got {tuple(candidates.shape)}')
        b, k = candidates.shape[0], candidates.shape[1]
        if tuple(state.shape) != (b, t.state_dim):
            raise ValueError(f'state must be (B={b}, {t.state_dim}), got {tuple(state.shape)}')
        return self._logits(state.unsqueeze(1).expand(b, k, t.state_dim), candidates)

    def make_score_fn(self, features, state, use_q=True):
        """Return a numpy ``score_fn`` (B, K, A) -> (B, K) for ``core.cem.CEM.maximise``
        (Q = sigmoid(logit) with ``use_q``, else the logit), under ``torch.no_grad()``."""
        self._check('features', features)

        def score_fn(candidates):
            cand = torch.as_tensor(np.asarray(candidates, dtype=np.float32))
            with torch.no_grad():
                out = self.score_candidates(None, state, cand)
                if use_q:
                    out = torch.sigmoid(out)
            return out.cpu().numpy()
        return score_fn


# ---------------------------------------------------------------------------------------------
# ONNX export
# ---------------------------------------------------------------------------------------------

class _HeadQ(nn.Module):
    """Export wrapper: (features, proprio, action) -> q = sigmoid(logit), float32 (N,)."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, features, proprio, action):
        return torch.sigmoid(self.head(features, proprio, action))


def make_critic_contract(image_size, crop_xywh, dataset=''):
    """Return the base ``awopt_contract`` for a critic (``make_contract`` with algorithm
    ``'awopt-critic'``); :func:`export_critic` adds ``role``, ``feature_shape`` etc."""
    return make_contract(image_size, crop_xywh, algorithm=ALGORITHM, dataset=dataset)


def _pair_id(critic):
    """Return a short hash of all critic weights, shared by the two exported graphs."""
    digest = hashlib.sha256()
    for name, tensor in sorted(critic.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _onnx_bytes(module, args, input_names, output_names):
    buf = io.BytesIO()
    axes = {name: {0: 'N'} for name in list(input_names) + list(output_names)}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, args, buf, dynamo=False, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=axes,
                          opset_version=OPSET)
    return buf.getvalue()


def export_critic(critic, encoder_path, head_path, contract, model_card='', check_parity=True):
    """Write ``critic`` as two ONNX graphs (opset 17) with ``awopt_contract`` metadata.

    Encoder graph: ``image`` uint8 (N, H, W, 3) RGB -> ``features`` float32 (N, F, h, w).
    Head graph: ``features`` float32 (N, F, h, w), ``proprio`` float32 (N, 6), ``action``
    float32 (N, 7) (physical units: m, rad, 0/1) -> ``q`` float32 (N,) = sigmoid(logit), the
    success probability (QT-Opt / AW-Opt critic). N is dynamic on every input and output.

    Args:
        critic: a :class:`Critic` (put in eval mode).
        encoder_path: destination of the encoder ``.onnx`` (parent dirs are created).
        head_path: destination of the head ``.onnx``.
        contract: base contract dict, e.g. ``make_critic_contract(size, crop)`` or
            ``export.make_contract(..., algorithm='awopt-critic')``; its ``image_size`` must
            equal ``critic.config.image_size``. Each file gets a copy plus ``role``
            ('critic_encoder' / 'critic_head'), ``feature_shape`` [F, h, w], ``pair_id``
            (hash of the weights, equal in both files) and ``critic_config``.
        model_card: free text stored under the ``model_card`` metadata key of both files.
        check_parity: run :func:`critic_parity_check` at batch 1 and 64.

    Returns:
        dict: ``encoder_contract``, ``head_contract`` and ``parity`` (see
        :func:`critic_parity_check`; {} when skipped).

    Raises:
        ValueError: contract not a dict or its ``image_size`` differs from the config, or
            parity fails (the files are still written, for inspection).
    """
    critic = critic.eval()
    size = int(critic.config.image_size)
    if not isinstance(contract, dict):
        raise ValueError(f'contract must be a dict, got {type(contract).__name__}')
    if list(contract.get('image_size', [])) != [size, size]:
        raise ValueError(f"contract image_size {contract.get('image_size')} does not match "
                         f'the critic config image_size {size}')
    common = dict(contract, feature_shape=list(critic.config.feature_shape()),
                  pair_id=_pair_id(critic), critic_config=critic.config.to_dict())
    enc_contract = dict(common, role=ROLE_ENCODER)
    head_contract = dict(common, role=ROLE_HEAD)

    img = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    feats = torch.zeros((2,) + critic.config.feature_shape(), dtype=torch.float32)
    pro = torch.zeros((2, spec.PROPRIO_DIM), dtype=torch.float32)
    act = torch.zeros((2, spec.ACTION_DIM), dtype=torch.float32)
    save_with_metadata(_onnx_bytes(critic.encoder, (img,), ['image'], ['features']),
                        encoder_path, enc_contract, model_card)
    save_with_metadata(_onnx_bytes(_HeadQ(critic.head).eval(), (feats, pro, act),
                                    ['features', 'proprio', 'action'], ['q']),
                        head_path, head_contract, model_card)
    parity = critic_parity_check(critic, encoder_path, head_path, size) if check_parity else {}
    return {'encoder_contract': enc_contract, 'head_contract': head_contract,
            'parity': parity}


def critic_parity_check(critic, encoder_path, head_path, image_size, batch_sizes=(1, 64),
                        seed=0):
    """Compare torch ``critic.q`` with onnxruntime encoder -> head on random inputs.

    Random uint8 images (image_size px), proprio ~ N(0, 0.3) and actions uniform in the
    ``spec`` bounds (discrete entries 0/1).

    Returns:
        dict {batch size: {'q': max abs diff of q, 'features': max abs diff of features}}.

    Raises:
        ValueError: an ONNX output has the wrong shape/dtype, or the q difference exceeds
            ``PARITY_ATOL`` (1e-4) at any batch size.
    """
    from awopt_ros.core.ort_session import session
    enc = session(encoder_path)
    head = session(head_path)
    critic = critic.eval()
    rng = np.random.default_rng(seed)
    out = {}
    for n in batch_sizes:
        img = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
        pro = rng.normal(0.0, 0.3, (n, spec.PROPRIO_DIM)).astype(np.float32)
        act = rng.uniform(spec.ACTION_LOW, spec.ACTION_HIGH,
                          (n, spec.ACTION_DIM)).astype(np.float32)
        act[:, spec.DISCRETE] = np.round(act[:, spec.DISCRETE])
        with torch.no_grad():
            ref_f = critic.encode(torch.from_numpy(img)).numpy()
            ref_q = critic.q(torch.from_numpy(img), torch.from_numpy(pro),
                             torch.from_numpy(act)).numpy()
        got_f = enc.run(['features'], {'image': img})[0]
        got_q = head.run(['q'], {'features': got_f, 'proprio': pro, 'action': act})[0]
        if got_q.shape != (n,) or got_q.dtype != np.float32:
            raise ValueError(f'ONNX q has shape {got_q.shape} dtype {got_q.dtype}, expected '
                             f'({n},) float32')
        if got_f.shape != ref_f.shape:
            raise ValueError(f'ONNX features have shape {got_f.shape}, expected {ref_f.shape}')
        diff_q = float(np.max(np.abs(ref_q - got_q)))
        diff_f = float(np.max(np.abs(ref_f - got_f)))
        if not diff_q <= PARITY_ATOL:
            raise ValueError(f'critic ONNX/torch parity failed at batch {n}: max abs q diff '
                             f'{diff_q:.3g} > {PARITY_ATOL}')
        out[n] = {'q': diff_q, 'features': diff_f}
    return out
