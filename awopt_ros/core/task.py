"""Task descriptions: what a learner, an exported model and a rollout read about a task.

A :class:`Task` is data, not code: the names, units and bounds of the action, which action
entries are discrete, whether the policy sees an image (and its side), the names and fixed
normalisation of the state vector, the episode length and control rate, and a one-line
success definition. :data:`TASKS` holds the two instances:

* :data:`GRASP`: the grasping task of AW-Opt (Lu et al. 2021, task 1), built from the
  constants of :mod:`awopt_ros.core.spec` (which stay the source of truth for grasping):
  7-D action ``dx, dy, dz`` (m), ``dyaw`` (rad), ``open, close, terminate`` (0/1), a 64 px
  RGB policy image and the 6-D proprioception.
* :data:`INSERTION`: residual-RL peg insertion on a Sawyer (Johannink et al. 2019,
  Schoettler et al. 2019): a 3-D residual ``res_x, res_y, res_z`` in [-1, 1] (fraction of
  the residual bound alpha, m per step, set by the controller), no discrete entries, no
  image, and the 15-D state :data:`INSERTION_STATE_NAMES`.

Networks normalise a state ``s`` as ``(s - state_offset) / state_scale`` inside the graph
(so exported models take raw states).
"""
from dataclasses import dataclass

import numpy as np

from awopt_ros.core import spec

#: Insertion state (15-D float32), in this order: tool tip minus the OBSERVED (noisy) goal
#: (m, base_link); tool tip linear velocity (m/s, base_link); wrench in the TOOL frame,
#: zeroed at reset (N, then N m); the P-controller's step this tick before clipping (m).
INSERTION_STATE_NAMES = ('rel_x', 'rel_y', 'rel_z', 'vel_x', 'vel_y', 'vel_z',
                         'force_x', 'force_y', 'force_z', 'torque_x', 'torque_y', 'torque_z',
                         'base_x', 'base_y', 'base_z')
#: Units of :data:`INSERTION_STATE_NAMES`, entry by entry.
INSERTION_STATE_UNITS = ('m',) * 3 + ('m/s',) * 3 + ('N',) * 3 + ('N m',) * 3 + ('m',) * 3
#: Scale of each insertion state entry (same units): the goal error up to a few mm laterally
#: and 3 cm vertically (the start height), velocities up to 5 cm/s, contact forces of tens of
#: N, torques at the tip of 0.05-0.2 N m (a peg jammed with one edge on the top face shows
#: about 0.06 N m about the other axis: which side is jammed), the P step (kp x error) of a
#: few mm laterally and 1.5 cm down.
INSERTION_STATE_SCALE = ((0.005, 0.005, 0.03) + (0.05,) * 3 + (20.0,) * 3 + (0.2,) * 3
                         + (0.005, 0.005, 0.015))
INSERTION_ACTION_NAMES = ('res_x', 'res_y', 'res_z')


@dataclass(frozen=True, eq=False)
class Task:
    """Description of one task (see the module docstring); validates itself.

    Attributes:
        name: 'grasp' | 'insertion'.
        action_names: names of the action entries (A of them).
        action_units: unit of each action entry ('m', 'rad', 'bool'; '1' = dimensionless,
            e.g. the insertion residual as a fraction of the residual bound alpha).
        action_low, action_high: float32 (A,) bounds of the action; discrete entries have
            bounds [0, 1].
        discrete: indices of the discrete (0/1) action entries (grasp: (4, 5, 6)).
        image_size: side (px) of the square uint8 RGB policy image; 0 = no image.
        state_names: names of the state vector entries (D of them; grasp: the proprio).
        state_offset, state_scale: per-entry normalisation ``(s - offset) / scale`` (D each,
            scale > 0) applied inside the networks.
        episode_steps: control steps of one episode (time limit).
        rate_hz: control rate (Hz).
        success: one-line success definition (docs, model cards).

    Raises:
        ValueError: inconsistent lengths, bounds or indices; the message names the field.
    """

    name: str
    action_names: tuple
    action_units: tuple
    action_low: np.ndarray
    action_high: np.ndarray
    discrete: tuple
    image_size: int
    state_names: tuple
    state_offset: tuple
    state_scale: tuple
    episode_steps: int
    rate_hz: float
    success: str

    def __post_init__(self):
        """Normalise the field types and check their consistency."""
        def put(name, value):
            object.__setattr__(self, name, value)
        for name in ('action_names', 'action_units', 'state_names'):
            put(name, tuple(str(v) for v in getattr(self, name)))
        for name in ('state_offset', 'state_scale'):
            put(name, tuple(float(v) for v in getattr(self, name)))
        put('discrete', tuple(int(i) for i in self.discrete))
        for name in ('action_low', 'action_high'):
            arr = np.array(getattr(self, name), dtype=np.float32).reshape(-1)
            arr.setflags(write=False)
            put(name, arr)
        a, d = len(self.action_names), len(self.state_names)
        if a < 1 or d < 1:
            raise ValueError(f'Task {self.name!r} needs at least one action and one state entry')
        for name, n in (('action_units', a), ('action_low', a), ('action_high', a),
                        ('state_offset', d), ('state_scale', d)):
            if len(getattr(self, name)) != n:
                raise ValueError(f'Task {self.name!r}: {name} has {len(getattr(self, name))} '
                                 f'entries, expected {n}')
        if not (np.all(np.isfinite(self.action_low)) and np.all(np.isfinite(self.action_high))):
            raise ValueError(f'Task {self.name!r}: action bounds must be finite')
        if sorted(set(self.discrete)) != list(self.discrete) or any(
                not 0 <= i < a for i in self.discrete):
            raise ValueError(f'Task {self.name!r}: discrete must be sorted unique indices in '
                             f'[0, {a}), got {self.discrete}')
        cont = list(self.continuous)
        if np.any(self.action_low[cont] >= self.action_high[cont]):
            raise ValueError(f'Task {self.name!r}: action_low must be < action_high on the '
                             f'continuous entries')
        disc = list(self.discrete)
        if np.any(self.action_low[disc] != 0.0) or np.any(self.action_high[disc] != 1.0):
            raise ValueError(f'Task {self.name!r}: discrete entries need bounds [0, 1]')
        if not all(np.isfinite(self.state_offset)) or not all(
                np.isfinite(s) and s > 0 for s in self.state_scale):
            raise ValueError(f'Task {self.name!r}: state_offset must be finite and state_scale '
                             f'finite and > 0')
        put('image_size', int(self.image_size))
        put('episode_steps', int(self.episode_steps))
        put('rate_hz', float(self.rate_hz))
        if self.image_size < 0 or self.episode_steps < 1 or not self.rate_hz > 0:
            raise ValueError(f'Task {self.name!r}: image_size must be >= 0, episode_steps >= 1 '
                             f'and rate_hz > 0')

    def __copy__(self):
        """Return self: a task is immutable (networks holding it are deep-copied, e.g. for
        target critics, and keep the very same task)."""
        return self

    def __deepcopy__(self, memo):
        """Return self (see :meth:`__copy__`)."""
        return self

    # -- derived ---------------------------------------------------------------------------
    @property
    def action_dim(self):
        """A, the number of action entries."""
        return len(self.action_names)

    @property
    def state_dim(self):
        """D, the number of state entries (grasp: the proprio)."""
        return len(self.state_names)

    @property
    def continuous(self):
        """Indices of the continuous action entries (tuple, ascending)."""
        return tuple(i for i in range(self.action_dim) if i not in self.discrete)

    @property
    def has_image(self):
        """True when the policy takes an image (``image_size > 0``)."""
        return self.image_size > 0

    @property
    def period_s(self):
        """Control period (s), ``1 / rate_hz``."""
        return 1.0 / self.rate_hz

    def normalise_state(self, state):
        """Return ``(state - state_offset) / state_scale`` as float32 (..., D).

        Raises:
            ValueError: the last axis is not D long.
        """
        s = np.asarray(state, dtype=np.float32)
        if s.ndim < 1 or s.shape[-1] != self.state_dim:
            raise ValueError(f'{self.name} state must have {self.state_dim} entries on its '
                             f'last axis {self.state_names}, got shape {s.shape}')
        return ((s - np.asarray(self.state_offset, np.float32))
                / np.asarray(self.state_scale, np.float32))

    def clip_action(self, action):
        """Return ``action`` float32 (..., A) clipped to the bounds, discrete entries 0/1
        (set where > 0.5).

        Raises:
            ValueError: the last axis is not A long, or a value is NaN.
        """
        a = np.asarray(action, dtype=np.float32)
        if a.ndim < 1 or a.shape[-1] != self.action_dim:
            raise ValueError(f'{self.name} action must have {self.action_dim} entries on its '
                             f'last axis {self.action_names}, got shape {a.shape}')
        if np.any(np.isnan(a)):
            raise ValueError(f'{self.name} action has NaN entries')
        out = np.clip(a, self.action_low, self.action_high).astype(np.float32)
        if self.discrete:
            d = list(self.discrete)
            out[..., d] = (out[..., d] > 0.5).astype(np.float32)
        return out


GRASP = Task(
    name='grasp',
    action_names=spec.ACTION_NAMES,
    action_units=spec.ACTION_UNITS,
    action_low=spec.ACTION_LOW,
    action_high=spec.ACTION_HIGH,
    discrete=(spec.IDX_OPEN, spec.IDX_CLOSE, spec.IDX_TERMINATE),
    image_size=spec.POLICY_IMAGE_SIZE,
    state_names=spec.PROPRIO_NAMES,
    state_offset=spec.PROPRIO_OFFSET,
    state_scale=spec.PROPRIO_SCALE,
    episode_steps=40,             # episode_manager / sim.rollout max_steps
    rate_hz=10.0,                 # 0.1 s control period
    success=('an object is lifted at least 0.12 m above the bin floor for the debounce steps '
             '(sim.rollout)'),
)

INSERTION = Task(
    name='insertion',
    action_names=INSERTION_ACTION_NAMES,
    action_units=('1', '1', '1'),
    action_low=(-1.0, -1.0, -1.0),
    action_high=(1.0, 1.0, 1.0),
    discrete=(),
    image_size=0,
    state_names=INSERTION_STATE_NAMES,
    state_offset=(0.0,) * len(INSERTION_STATE_NAMES),
    state_scale=INSERTION_STATE_SCALE,
    episode_steps=50,
    rate_hz=10.0,
    success='the peg tip is inserted to at least 90% of the hole depth and inside the bore',
)

#: Task name -> :class:`Task`.
TASKS = {'grasp': GRASP, 'insertion': INSERTION}


def get_task(name):
    """Return the :class:`Task` called ``name`` (a :class:`Task` is returned as is).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if isinstance(name, Task):
        return name
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f'unknown task {name!r}; known tasks: {sorted(TASKS)}') from None
