"""Actor networks: the grasping task's (RGB image + proprioception -> 7-D action) and a state
actor for tasks without an image (:class:`StateActor`, e.g. the insertion residual).

Image actor architecture (a small version of the AW-Opt actor, Lu et al. 2021: same kind of image
backbone as the critic, Gaussian mean for the continuous sub-actions and logits for the
discrete ones; FACTS.md):

    image uint8 (N, H, W, 3) -> float (N, 3, H, W) / 255, plus CoordConv channels x, y, r
      -> conv trunk (``num_conv`` 3x3 convs, ``channels`` each, ReLU)
      -> pooling: 'flatten' (default; every layer strides 2, features flattened),
         'spatial_softmax' (first layer strides 2; Levine et al. 2016, "End-to-End Training
         of Deep Visuomotor Policies": per channel the expected image coordinates (x, y) in
         [-1, 1] of a softmax over the feature map -> (N, 2 * channels) keypoints) or
         'target' (first layer strides 2, then dilated convs 1, 2, 4, ...; a 1x1 conv scores
         every cell as the grasp target; the best cell (argmax) picks a window of
         ``target_window_cells``, whose softmax-weighted coordinates (x, y) and features
         (N, 2 + channels) go on. Choosing by argmax over a score map keeps one object where
         regression averages the candidates; the score map is trained on hindsight grasp
         points, :mod:`awopt_ros.learning.targets`, as in affordance maps / Transporter
         Networks, Zeng et al. 2020); with ``grasp_pose`` a small MLP on those features
         also predicts the grasp pose in the base frame (tool position x, y, z and gripper
         yaw as (cos 2yaw, sin 2yaw): a parallel gripper is symmetric under 180 deg, so the
         doubled angle is continuous where a yaw regression flips sign at +-90 deg), trained
         on hindsight labels; the action MLP gets it relative to the tool (position - tool
         position, cos/sin of 2 (yaw - tool yaw)) and as is
      -> concat proprio (N, 6) -> MLP (``hidden`` units, ReLU, 2 layers)
      -> continuous mean (N, 4) = tanh(.) * bound (``core.spec`` ACTION_HIGH, symmetric)
         and discrete logits (N, 3) for open, close, terminate (independent Bernoulli).

Normalisation lives inside the module so an exported ONNX graph takes uint8 NHWC images.
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from awopt_ros.core import spec


#: Pooling choices of :class:`ActorConfig`.
POOLINGS = ('flatten', 'spatial_softmax', 'target')
#: Grasp-pose head output (``grasp_pose``): position (x, y, z) in base_link =
#: GRASP_POS_OFFSET_M + GRASP_POS_SCALE_M * raw (per axis), then cos 2yaw, sin 2yaw.
GRASP_POS_OFFSET_M = (0.6, 0.0, 0.05)
GRASP_POS_SCALE_M = (0.1, 0.1, 0.05)
GRASP_POSE_DIM = 5
#: Inputs the grasp pose adds to the MLP: position - tool position (raw units), cos 2dyaw,
#: sin 2dyaw, and the predicted pose (GRASP_POSE_DIM raw values).
GRASP_POSE_FEATURES = 5 + GRASP_POSE_DIM
#: Hidden units of the grasp-pose head.
GRASP_POSE_HIDDEN = 64


@dataclass
class ActorConfig:
    """Shape of the actor network.

    Attributes:
        image_size: side of the square input image (px).
        channels: conv channels per layer.
        num_conv: number of 3x3 conv layers (the first strides ``stem_stride``, the others 1;
            'flatten' pooling strides every layer 2).
        stem_stride: stride of the first conv layer (2 or 3): the feature and score maps
            have side ``ceil(image_size / stem_stride)``; 3 keeps a 32-cell map at 96 px,
            so a larger image adds detail to each cell without more cells to compute.
        hidden: MLP hidden units (2 hidden layers).
        coord_conv: append pixel-coordinate channels x, y and r (distance from the image
            centre) to the image (CoordConv with the radius channel, Liu et al. 2018), so that
            features can depend on where in the (fixed) camera view they are: e.g. prefer the
            object nearest the bin centre, which the camera looks at.
        pooling: 'flatten' (all conv features, spatially strided, into the MLP: keeps the
            relations between objects), 'spatial_softmax' (2 keypoints per channel, Levine
            et al. 2016: compact, but averages over look-alike objects) or 'target' (a
            grasp-target score map at half the image resolution, argmax + local soft-argmax;
            needs target labels to train, see ``bc.train_bc``).
        target_window_cells: radius (score-map cells) of the window around the best cell
            whose soft-argmax gives the target coordinates ('target' pooling only).
        grasp_pose: ('target' pooling only) predict the grasp pose (tool x, y, z, 2 x yaw)
            from the target window and feed it to the MLP; needs pose labels to train
            (:func:`awopt_ros.learning.targets.grasp_pose_targets`).
        engaged_input: also feed the MLP ``min(closedness / GRIPPER_ENGAGED_CLOSEDNESS, 1)``
            (``core.spec``): 0 open, 1 once the fingers have closed on something, whatever
            the object's width. The scripted demonstrations lift on exactly that condition;
            through the linear proprio normalisation alone a wide object (closedness 0.2-0.35)
            sits nearer the open gripper (0) than the narrow ones (0.4-0.8) do, and an actor
            trained without this input lifted wide objects slowly or reopened on them.
    """

    image_size: int = 64
    channels: int = 32
    num_conv: int = 4
    hidden: int = 256
    coord_conv: bool = True
    pooling: str = 'flatten'
    target_window_cells: float = 1.5
    grasp_pose: bool = False
    stem_stride: int = 2
    engaged_input: bool = False

    def __post_init__(self):
        """Validate the sizes (ValueError naming the field)."""
        for name in ('image_size', 'channels', 'num_conv', 'hidden'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'ActorConfig.{name} must be >= 1, got {getattr(self, name)}')
        if self.pooling not in POOLINGS:
            raise ValueError(f'ActorConfig.pooling must be one of {POOLINGS}, '
                             f'got {self.pooling!r}')
        if not self.target_window_cells > 0:
            raise ValueError(f'ActorConfig.target_window_cells must be > 0, '
                             f'got {self.target_window_cells}')
        if self.grasp_pose and self.pooling != 'target':
            raise ValueError(f"ActorConfig.grasp_pose needs pooling 'target', "
                             f'got {self.pooling!r}')
        if self.stem_stride not in (2, 3):
            raise ValueError(f'ActorConfig.stem_stride must be 2 or 3, got {self.stem_stride}')
        if self.image_size < 8:
            raise ValueError(f'ActorConfig.image_size must be >= 8, got {self.image_size}')

    def to_dict(self):
        """Return the config as a plain dict."""
        return asdict(self)


class SpatialSoftmax(nn.Module):
    """Feature map (N, C, H, W) -> keypoints (N, 2C): softmax-expected (x, y) in [-1, 1].

    A learnable temperature scales the logits (Levine et al. 2016).
    """

    def __init__(self, height, width):
        """Precompute the coordinate grids for a ``height`` x ``width`` feature map."""
        super().__init__()
        ys = torch.linspace(-1.0, 1.0, height)
        xs = torch.linspace(-1.0, 1.0, width)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
        self.register_buffer('pos_x', grid_x.reshape(1, 1, -1))
        self.register_buffer('pos_y', grid_y.reshape(1, 1, -1))
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features):
        """Return (N, 2C) keypoints ordered [x_0..x_{C-1}, y_0..y_{C-1}]."""
        n, c = features.shape[0], features.shape[1]
        logits = features.reshape(n, c, -1) / torch.exp(self.log_temperature)
        prob = torch.softmax(logits, dim=-1)                 # (N, C, H*W)
        kx = (prob * self.pos_x).sum(-1)                     # (N, C)
        ky = (prob * self.pos_y).sum(-1)
        return torch.cat([kx, ky], dim=1)


class Actor(nn.Module):
    """The actor: ``forward(image, proprio) -> (mean (N, 4), logits (N, 3))``.

    Args:
        config: an :class:`ActorConfig`.

    ``image`` is uint8 (N, H, W, 3) RGB (float inputs in 0..255 also work, used by tests);
    ``proprio`` float32 (N, 6). ``mean`` is in physical units (m, m, m, rad) within
    ``spec.ACTION_LOW/HIGH[:4]``; ``logits`` are Bernoulli logits of open, close, terminate.
    """

    def __init__(self, config=None):
        """Build the layers; see the class docstring."""
        super().__init__()
        self.config = config or ActorConfig()
        c = self.config
        layers = []
        in_ch = 6 if c.coord_conv else 3
        size = c.image_size
        ramp = torch.linspace(-1.0, 1.0, c.image_size)
        gy, gx = torch.meshgrid(ramp, ramp, indexing='ij')
        radius = torch.sqrt(gx ** 2 + gy ** 2)
        self.register_buffer('coords', torch.stack([gx, gy, radius]).unsqueeze(0))  # (1,3,H,W)
        flatten = c.pooling == 'flatten'
        for i in range(c.num_conv):
            stride = c.stem_stride if i == 0 else (2 if flatten else 1)
            dilation = 2 ** (i - 1) if (c.pooling == 'target' and i > 0) else 1
            layers += [nn.Conv2d(in_ch, c.channels, 3, stride=stride, padding=dilation,
                                 dilation=dilation), nn.ReLU()]
            in_ch = c.channels
            size = (size + 2 - 3) // stride + 1
        self.trunk = nn.Sequential(*layers)
        self.map_side = size
        if flatten:   # (N, C, s, s) -> (N, C * s * s)
            self.keypoints = nn.Flatten()
            n_features = c.channels * size * size
        elif c.pooling == 'spatial_softmax':   # (N, C, s, s) -> (N, 2C) keypoints
            self.keypoints = SpatialSoftmax(size, size)
            n_features = 2 * c.channels
        else:         # (N, C, s, s) -> score map (N, s * s) -> (N, 2 + C)
            self.keypoints = None
            self.target_score = nn.Conv2d(c.channels, 1, 1)
            centres = (torch.arange(size, dtype=torch.float32) * 2.0 + 1.0) / size - 1.0
            cy, cx = torch.meshgrid(centres, centres, indexing='ij')
            self.register_buffer('target_grid', torch.stack([cx.reshape(-1), cy.reshape(-1)], 1))
            self.target_radius = float(c.target_window_cells) * 2.0 / size
            n_features = 2 + c.channels
        self.pose_head = None
        if c.grasp_pose:
            self.pose_head = nn.Sequential(nn.Linear(n_features, GRASP_POSE_HIDDEN), nn.ReLU(),
                                           nn.Linear(GRASP_POSE_HIDDEN, GRASP_POSE_DIM))
            self.register_buffer('pose_offset', torch.tensor(GRASP_POS_OFFSET_M).reshape(1, 3))
            self.register_buffer('pose_scale', torch.tensor(GRASP_POS_SCALE_M).reshape(1, 3))
            n_features += GRASP_POSE_FEATURES
        n_features += 1 if c.engaged_input else 0
        self.mlp = nn.Sequential(
            nn.Linear(n_features + spec.PROPRIO_DIM, c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, 4 + 3))
        high = torch.as_tensor(spec.ACTION_HIGH[spec.CONTINUOUS], dtype=torch.float32)
        self.register_buffer('cont_scale', high.reshape(1, 4))
        self.register_buffer('proprio_offset',
                             torch.tensor(spec.PROPRIO_OFFSET, dtype=torch.float32).reshape(1, -1))
        self.register_buffer('proprio_scale',
                             torch.tensor(spec.PROPRIO_SCALE, dtype=torch.float32).reshape(1, -1))

    def _trunk(self, image):
        x = image.permute(0, 3, 1, 2).to(torch.float32) * (1.0 / 255.0)   # (N, 3, H, W)
        if self.config.coord_conv:
            x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], dim=1)
        return self.trunk(x)

    def target_maps(self, image):
        """Return the 'target' pooling's score logits (N, S*S) and features (N, C, S*S).

        S = ``map_side`` (half the image side); cell i has centre ``target_grid[i]`` (x, y)
        in [-1, 1] policy-image coordinates (``core.camera``). Raises ValueError for other
        poolings.
        """
        if self.config.pooling != 'target':
            raise ValueError(f"target_maps needs pooling 'target', not {self.config.pooling!r}")
        f = self._trunk(image)
        n = f.shape[0]
        return self.target_score(f).reshape(n, -1), f.reshape(n, f.shape[1], -1)

    def attend(self, scores, feats, centre):
        """Soft-argmax in a window: (coordinates (N, 2), features (N, C)).

        The window holds the cells within ``target_window_cells`` of ``centre`` (N, 2) in
        [-1, 1]; a softmax of ``scores`` (N, S*S) over it weights the cell centres and the
        features (N, C, S*S).
        """
        d2 = ((self.target_grid.unsqueeze(0) - centre.unsqueeze(1)) ** 2).sum(-1)   # (N, S*S)
        inside = d2 <= self.target_radius ** 2
        prob = torch.softmax(torch.where(inside, scores, torch.full_like(scores, -1e4)), -1)
        return prob @ self.target_grid, (feats * prob.unsqueeze(1)).sum(-1)

    def target_features(self, image, target_xy=None):
        """'target' pooling: (features (N, 2 + C) = window position and features, scores).

        The window sits on ``target_xy`` (N, 2) in [-1, 1] when given (teacher forcing in
        training), else on the best-scoring cell; ``scores`` (N, S*S) as :meth:`target_maps`.
        """
        scores, maps = self.target_maps(image)
        if target_xy is None:
            target_xy = self.target_grid[torch.argmax(scores, dim=-1)]
        xy, local = self.attend(scores, maps, target_xy)
        return torch.cat([xy, local], dim=1), scores

    def grasp_pose(self, feats):
        """Predicted grasp pose (N, GRASP_POSE_DIM) from 'target' features (N, 2 + C).

        Entries: the tool position where the gripper will close, in base_link, as raw values
        (position_m = ``GRASP_POS_OFFSET_M + GRASP_POS_SCALE_M * raw``), then cos 2yaw and
        sin 2yaw of the gripper yaw (rad, about base z; not forced onto the unit circle).
        Raises ValueError without ``grasp_pose``.
        """
        if self.pose_head is None:
            raise ValueError('grasp_pose needs an actor built with ActorConfig(grasp_pose=True)')
        return self.pose_head(feats)

    def _pose_inputs(self, feats, proprio):
        """MLP inputs (N, GRASP_POSE_FEATURES) from the predicted pose and the tool pose."""
        pose = self.grasp_pose(feats)
        proprio = proprio.to(torch.float32)
        rel_pos = pose[:, :3] - (proprio[:, :3] - self.pose_offset) / self.pose_scale
        s, c = proprio[:, 3], proprio[:, 4]
        c2, s2 = c * c - s * s, 2.0 * s * c                       # tool's doubled yaw
        rel_c = pose[:, 3] * c2 + pose[:, 4] * s2                 # cos 2(yaw - tool yaw)
        rel_s = pose[:, 4] * c2 - pose[:, 3] * s2                 # sin 2(yaw - tool yaw)
        return torch.cat([rel_pos, rel_c.unsqueeze(1), rel_s.unsqueeze(1), pose], 1)

    def normalised(self, image, proprio, target_xy=None):
        """Return (mean in [-1, 1] (N, 4), logits (N, 3)): the tanh output before scaling.

        ``target_xy`` (N, 2) in [-1, 1] ('target' pooling only, for training): centre the
        window on these labels instead of the best-scoring cell (teacher forcing).
        """
        if self.config.pooling == 'target':
            feats, _ = self.target_features(image, target_xy)
        else:
            if target_xy is not None:
                raise ValueError(f"target_xy needs pooling 'target', not "
                                 f'{self.config.pooling!r}')
            feats = self.keypoints(self._trunk(image))                      # (N, features)
        return self.head(feats, proprio)

    def head(self, feats, proprio):
        """MLP on pooled features (N, F) + normalised proprio: (mean_n (N, 4), logits (N, 3))."""
        p = (proprio.to(torch.float32) - self.proprio_offset) / self.proprio_scale
        if self.pose_head is not None:
            feats = torch.cat([feats, self._pose_inputs(feats, proprio)], dim=1)
        if self.config.engaged_input:
            closed = proprio[:, spec.PROPRIO_NAMES.index('gripper_closed')].to(torch.float32)
            engaged = torch.clamp(closed * (1.0 / spec.GRIPPER_ENGAGED_CLOSEDNESS), 0.0, 1.0)
            feats = torch.cat([feats, engaged.unsqueeze(1)], dim=1)
        h = self.mlp(torch.cat([feats, p], dim=1))                          # (N, 7)
        return torch.tanh(h[:, :4]), h[:, 4:]

    def forward(self, image, proprio):
        """Return (mean (N, 4) in physical units, logits (N, 3))."""
        mean_n, logits = self.normalised(image, proprio)
        return mean_n * self.cont_scale, logits


class ActorPolicy(nn.Module):
    """Deployment wrapper: ``forward(image, proprio) -> action (N, 7)`` (the ONNX graph).

    Continuous entries are the actor mean clipped to ``spec.ACTION_LOW/HIGH``; discrete
    entries are 1.0 where sigmoid(logit) > 0.5 (equivalently logit > 0), else 0.0. With
    ``discrete_prob=True`` it returns ``(action, discrete_prob)``: also the probabilities
    sigmoid(logit) float32 (N, 3) of ``open, close, terminate`` (the actor's Bernoulli
    distribution, which exploration samples from; ``learning.export``'s second output).
    """

    def __init__(self, actor, discrete_prob=False):
        """Wrap ``actor`` (an :class:`Actor`)."""
        super().__init__()
        self.actor = actor
        self.discrete_prob = bool(discrete_prob)
        low = torch.as_tensor(spec.ACTION_LOW[spec.CONTINUOUS]).reshape(1, 4)
        high = torch.as_tensor(spec.ACTION_HIGH[spec.CONTINUOUS]).reshape(1, 4)
        self.register_buffer('low', low)
        self.register_buffer('high', high)

    def forward(self, image, proprio):
        """Return float32 (N, 7) final actions (and (N, 3) probabilities, see the class)."""
        mean, logits = self.actor(image, proprio)
        cont = torch.minimum(torch.maximum(mean, self.low), self.high)
        prob = torch.sigmoid(logits)
        action = torch.cat([cont, (prob > 0.5).to(torch.float32)], dim=1)
        return (action, prob) if self.discrete_prob else action


# ---------------------------------------------------------------------------------------------
# State actors (tasks without an image, ``core.task.Task.image_size == 0``)
# ---------------------------------------------------------------------------------------------

@dataclass
class StateActorConfig:
    """Shape of the state actor (an MLP; AWAC, Nair et al. 2020, uses 4 x 256 ReLU).

    Attributes:
        hidden: units of every hidden layer.
        layers: number of hidden layers (>= 1); 3 by default, one fewer than AWAC's to keep
            gradient steps cheap on a 2-core CPU.
        zero_init_output: initialise the output layer's weights and biases to zero, so the
            untrained actor outputs the centre of the action bounds for every state (0 for a
            symmetric residual: residual RL then starts exactly as its base controller,
            Johannink et al. 2019; ResiP, ResFiT). Gradients still reach the output layer at
            once and the layers below from the first step on.

    Raises:
        ValueError: a field out of range; the message names the field.
    """

    hidden: int = 256
    layers: int = 3
    zero_init_output: bool = False

    def __post_init__(self):
        """Validate the fields (ValueError naming the field)."""
        for name in ('hidden', 'layers'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'StateActorConfig.{name} must be an int >= 1, got {value!r}')
        if not isinstance(self.zero_init_output, bool):
            raise ValueError(f'StateActorConfig.zero_init_output must be a bool, '
                             f'got {self.zero_init_output!r}')

    def to_dict(self):
        """Return the config as a plain dict."""
        return asdict(self)


def mlp(n_in, hidden, layers, n_out):
    """Return ``nn.Sequential``: ``layers`` x (Linear(., hidden), ReLU), then Linear(., n_out)."""
    mods, width = [], n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


class StateActor(nn.Module):
    """Actor of a state task: ``forward(state) -> (mean (N, C), logits (N, S))``.

    The state float32 (N, D) is raw (``task.state_names``, their units) and normalised inside
    as ``(state - task.state_offset) / task.state_scale``; an MLP (:class:`StateActorConfig`)
    gives C + S outputs: the Gaussian mean of the C continuous action entries as
    ``tanh(.)`` in [-1, 1] (normalised units: ``mean = centre + half * mean_n`` with centre
    and half range of the task's bounds) and Bernoulli logits of the S discrete entries. The
    task's continuous entries must come first (``task.continuous == (0, .., C-1)``).

    For the learner's single code path the methods take an ``image`` argument too, which must
    be None (a state task has none).

    Args:
        task: a ``core.task.Task`` (or its name) with ``image_size == 0``.
        config: a :class:`StateActorConfig`.

    Raises:
        ValueError: a task with an image, or one whose discrete entries do not come last.
    """

    def __init__(self, task, config=None):
        """Build the MLP and the normalisation buffers; see the class docstring."""
        super().__init__()
        from awopt_ros.core.task import get_task
        self.task = t = get_task(task)
        self.config = c = config or StateActorConfig()
        if t.has_image:
            raise ValueError(f'StateActor needs a task without an image, {t.name!r} has one')
        n_c = len(t.continuous)
        if t.continuous != tuple(range(n_c)):
            raise ValueError(f'task {t.name!r}: the continuous action entries must come first')
        self.n_cont, self.n_disc = n_c, len(t.discrete)
        self.mlp = mlp(t.state_dim, c.hidden, c.layers, n_c + self.n_disc)
        if c.zero_init_output:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        low = np.asarray(t.action_low[:n_c], np.float64)
        high = np.asarray(t.action_high[:n_c], np.float64)
        as_row = lambda v: torch.tensor(np.asarray(v), dtype=torch.float32).reshape(1, -1)  # noqa: E731
        self.register_buffer('state_offset', as_row(t.state_offset))
        self.register_buffer('state_scale', as_row(t.state_scale))
        self.register_buffer('cont_centre', as_row((low + high) / 2.0))
        self.register_buffer('cont_half', as_row((high - low) / 2.0))
        self.register_buffer('low', as_row(low))
        self.register_buffer('high', as_row(high))

    def normalised(self, image, state):
        """Return (mean_n (N, C) in [-1, 1], logits (N, S)); ``image`` must be None."""
        if image is not None:
            raise ValueError(f'task {self.task.name!r} has no image; pass image=None')
        h = self.mlp((state.to(torch.float32) - self.state_offset) / self.state_scale)
        return torch.tanh(h[:, :self.n_cont]), h[:, self.n_cont:]

    def forward(self, state):
        """Return (mean (N, C) in the task's units, within its bounds, logits (N, S))."""
        mean_n, logits = self.normalised(None, state)
        return self.cont_centre + self.cont_half * mean_n, logits


class StateActorPolicy(nn.Module):
    """Deployment wrapper of a :class:`StateActor`: ``forward(observation) -> action``.

    ``observation`` float32 (N, D) raw; ``action`` float32 (N, A): the Gaussian mean clipped
    to the task's bounds, then the discrete entries 1.0 where the logit > 0, else 0.0 (the
    ONNX graph of ``learning.export.export_state_actor``).
    """

    def __init__(self, actor):
        """Wrap ``actor`` (a :class:`StateActor`)."""
        super().__init__()
        self.actor = actor

    def forward(self, observation):
        """Return float32 (N, A) deterministic actions."""
        mean, logits = self.actor(observation)
        cont = torch.minimum(torch.maximum(mean, self.actor.low), self.actor.high)
        if self.actor.n_disc == 0:
            return cont
        return torch.cat([cont, (logits > 0).to(torch.float32)], dim=1)
