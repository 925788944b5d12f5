"""Labelled camera frames for the success classifier (issue 24): collection, datasets, splits.

A :class:`FrameSet` holds policy-sized RGB frames (the stack's ``/policy/image``: the
``spec.POLICY_CROP_XYWH`` crop of the 640x480 camera frame resized to 64 px by
``core.image_ops.crop_resize``), one label per frame (1 = the success is visible in this
frame), the episode each frame belongs to and its index in it, a ``group`` that held-out
splits are made of (grasp: the object kind) and a ``kind`` naming the hard-negative scenario a
frame comes from (``'normal'`` otherwise). It is saved as one ``.npz`` file.

Sources:

- :func:`collect_grasp_frames`: in-process grasp episodes (``sim.rollout.RolloutEnv``) in
  which EVERY frame is labelled by the simulator's ground truth (``GraspSim.object_lifted``).
  Unlike the stack's episodes they do not end at the first success: a successful grasp is
  held, moved and lifted further for a while, so that positive frames are plentiful. Hard
  negatives are collected on purpose (:data:`GRASP_SCENARIOS`): the gripper closed on air and
  lifted high, an object held below the success height, an object lifted and dropped.
- :func:`frames_from_dataset`: frames of the logger's Minari datasets, labelled by the ground
  truth recorded with them (``infos['success_probability'] >= 0.5``) or by an operator's
  per-episode verdict (the last ``last_k`` frames of an episode take it; earlier frames are
  dropped, as nobody labelled them).
- :func:`frames_from_bags`: the same two labellings on the policy images of the logger's
  episode bags (the insertion dataset holds no images; its frames come from there).
- :func:`collect_insertion_frames`: in-process insertion episodes (the P-controller), every
  frame of the socket camera labelled by ``InsertionSim.success()``, peg-on-rim hard negatives.

Splits never cut an episode (:func:`split_by_episode`); held-out object kinds are whole
groups (:func:`split_by_group`). ``awopt collect-success-frames`` runs
:func:`collect_grasp_frames` / :func:`collect_insertion_frames` from the command line
(:func:`run_collect_cli`), or with ``--from-run RUN`` :func:`frames_from_runs`: the frames of
recorded runs (a real robot's), labelled by the ground truth they recorded or by an operator
(a JSON file of per-episode verdicts; episodes not in it keep their recorded outcome).

No rclpy here. Rendering needs an offscreen GL: ``MUJOCO_GL=egl`` (set by the CLI).
"""
import collections
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_LOG = logging.getLogger(__name__)

#: Hard-negative scenarios of :func:`collect_grasp_frames` (besides ``'normal'`` episodes).
HARD_NEGATIVE_KINDS = ('closed_on_air', 'grasped_not_lifted', 'dropped')
#: Episode scenarios and the fraction of episodes drawn for each (hard_negatives=True).
GRASP_SCENARIOS = {'normal': 0.55, 'closed_on_air': 0.15, 'grasped_not_lifted': 0.15,
                   'dropped': 0.15}
#: Object kinds of the training scenes and of the held-out scenes (grasp).
TRAIN_SHAPES = ('box', 'cylinder', 'sphere')
HELDOUT_SHAPES = ('capsule',)
#: Longest grasp episode (observations after the first, i.e. actions) of the collection.
MAX_EPISODE_STEPS = 90
FORMAT_VERSION = 1
#: ``meta`` keys naming the camera crop the images come from (``crop_xywh`` source px,
#: ``camera_size`` [w, h]): ``train-classifier`` writes them into the model's contract.
CAMERA_META_KEYS = ('crop_xywh', 'camera_size')
#: Episodes of ``awopt collect-success-frames`` without --episodes; frames an operator's
#: verdict labels at the end of an episode without --last-k.
DEFAULT_EPISODES = 400
DEFAULT_LAST_K = 5
#: Version of the episode scenarios of :func:`collect_grasp_frames` (in ``meta['generator']``):
#: 2 = post-lift carrying starts at the first lifted frame, held 0.20-0.30 m high, not-lifted
#: holds at most 7 cm up (1: after the scripted lift, 0.16-0.32 m, 10 cm).
GENERATOR_VERSION = 2


# -- the frame set --------------------------------------------------------------------------------

@dataclass
class FrameSet:
    """Labelled frames (N of them) of one task.

    Attributes:
        images: uint8 (N, S, S, 3) RGB policy images.
        labels: uint8 (N,) 1 = success visible in the frame, 0 = not.
        episode: int64 (N,) episode id (unique within the set); frames of an episode are
            contiguous and in order.
        step: int64 (N,) frame index within its episode (0 = first observation).
        group: str (N,) what held-out splits are made of (grasp: object kind, e.g. 'box').
        kind: str (N,) ``'normal'`` or the hard-negative scenario (:data:`HARD_NEGATIVE_KINDS`,
            ``'peg_on_rim'``...). Only negative frames carry a hard-negative kind.
        task: 'grasp' or 'insertion'.
        meta: JSON-able dict: how the frames were made (seeds, source, settings).
        extras: optional per-frame arrays, name -> (N,) (e.g. ``lift_height_m`` of collected
            grasp frames: the highest object's lowest point above the bin floor, m, the
            quantity ``GraspSim.object_lifted`` compares with ``success_height_m``; insertion:
            ``insertion_depth_m``); kept by :meth:`subset`, :meth:`save` and :meth:`load`,
            and by :meth:`concat` where every part has them.

    Raises:
        ValueError: arrays of different lengths, wrong shapes, labels other than 0/1.
    """

    images: np.ndarray
    labels: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    group: np.ndarray
    kind: np.ndarray
    task: str = 'grasp'
    meta: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        self.images = np.asarray(self.images, dtype=np.uint8)
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[3] != 3 or (
                n and self.images.shape[1] != self.images.shape[2]):
            raise ValueError(f'images must be uint8 (N, S, S, 3), got {self.images.shape}')
        self.labels = np.asarray(self.labels).reshape(-1)
        if self.labels.size and not np.all((self.labels == 0) | (self.labels == 1)):
            raise ValueError('labels must be 0 or 1')
        self.labels = self.labels.astype(np.uint8)
        self.episode = np.asarray(self.episode, dtype=np.int64).reshape(-1)
        self.step = np.asarray(self.step, dtype=np.int64).reshape(-1)
        self.group = np.asarray(self.group, dtype=str).reshape(-1)
        self.kind = np.asarray(self.kind, dtype=str).reshape(-1)
        for name in ('labels', 'episode', 'step', 'group', 'kind'):
            if len(getattr(self, name)) != n:
                raise ValueError(f'{name} has {len(getattr(self, name))} entries for {n} images')
        self.task = str(self.task)
        self.meta = dict(self.meta or {})
        self.extras = {str(k): np.asarray(v).reshape(-1) for k, v in (self.extras or {}).items()}
        for name, values in self.extras.items():
            if len(values) != n:
                raise ValueError(f'extras[{name!r}] has {len(values)} entries for {n} images')

    def __len__(self):
        return len(self.labels)

    @property
    def image_size(self):
        """Side S (px) of the images; None for an empty set."""
        return int(self.images.shape[1]) if len(self) else None

    def episodes(self):
        """Return the episode ids, int64 (E,), in the order they appear."""
        _, first = np.unique(self.episode, return_index=True)
        return self.episode[np.sort(first)]

    def subset(self, mask):
        """Return a new FrameSet of the frames selected by ``mask`` (bool (N,) or indices),
        in their original order; ``meta`` is copied."""
        mask = np.asarray(mask)
        if mask.dtype == bool:
            if mask.shape != (len(self),):
                raise ValueError(f'a boolean mask must have shape ({len(self)},), got '
                                 f'{mask.shape}')
            index = np.flatnonzero(mask)
        else:
            index = np.sort(mask.astype(np.int64).reshape(-1))
        return FrameSet(self.images[index], self.labels[index], self.episode[index],
                        self.step[index], self.group[index], self.kind[index], self.task,
                        json.loads(json.dumps(self.meta)),
                        {k: v[index] for k, v in self.extras.items()})

    @classmethod
    def concat(cls, sets):
        """Return one FrameSet of ``sets`` in order.

        Episode ids stay as they are when no two sets share one; otherwise each set's ids are
        shifted past the previous ones (``meta['renumbered']`` True). ``meta['parts']`` holds
        the parts' metas.

        Raises:
            ValueError: no sets, different tasks, image sizes or camera crops
                (``meta['crop_xywh']`` / ``meta['camera_size']``, carried into the result when
                the parts that have them agree).
        """
        sets = list(sets)
        if not sets:
            raise ValueError('concat needs at least one FrameSet')
        tasks = {s.task for s in sets}
        if len(tasks) != 1:
            raise ValueError(f'cannot concat frames of different tasks {sorted(tasks)}')
        sizes = {s.image_size for s in sets if len(s)}
        if len(sizes) > 1:
            raise ValueError(f'cannot concat images of different sizes {sorted(sizes)}')
        ids = [set(s.episode.tolist()) for s in sets]
        clash = sum(len(i) for i in ids) != len(set().union(*ids))
        episodes, offset = [], 0
        for s in sets:
            episodes.append(s.episode + offset if clash else s.episode)
            if clash and len(s):
                offset = int(episodes[-1].max()) + 1
        meta = {'parts': [s.meta for s in sets], 'renumbered': bool(clash)}
        for key in CAMERA_META_KEYS:     # the contract's crop: the same for every part or none
            values = {tuple(s.meta[key]) for s in sets if s.meta.get(key) is not None}
            if len(values) > 1:
                raise ValueError(f'cannot concat frames of different {key} {sorted(values)}')
            if values:
                meta[key] = list(values.pop())
        size = sizes.pop() if sizes else 64
        images = [s.images for s in sets if len(s)] or [np.zeros((0, size, size, 3), np.uint8)]
        return cls(np.concatenate(images), np.concatenate([s.labels for s in sets]),
                   np.concatenate(episodes), np.concatenate([s.step for s in sets]),
                   np.concatenate([s.group for s in sets]),
                   np.concatenate([s.kind for s in sets]), sets[0].task, meta,
                   {k: np.concatenate([s.extras[k] for s in sets])
                    for k in set.intersection(*(set(s.extras) for s in sets))})

    def summary(self):
        """Return counts: ``frames``, ``episodes``, ``positives``, ``positive_fraction``,
        ``positive_episodes`` (episodes with a positive frame), ``labels`` {0: n, 1: n} and
        per ``group`` / per ``kind`` dicts of ``frames``, ``positives``, ``episodes``."""
        def counts(mask):
            return {'frames': int(mask.sum()), 'positives': int(self.labels[mask].sum()),
                    'episodes': int(len(np.unique(self.episode[mask])))}
        pos_eps = np.unique(self.episode[self.labels == 1])
        return {
            'task': self.task, 'frames': len(self), 'episodes': int(len(self.episodes())),
            'positives': int(self.labels.sum()),
            'positive_fraction': float(self.labels.mean()) if len(self) else float('nan'),
            'positive_episodes': int(len(pos_eps)),
            'labels': {0: int((self.labels == 0).sum()), 1: int((self.labels == 1).sum())},
            'group': {g: counts(self.group == g) for g in sorted(set(self.group.tolist()))},
            'kind': {k: counts(self.kind == k) for k in sorted(set(self.kind.tolist()))},
        }

    def save(self, path):
        """Write the set to ``path`` (a compressed ``.npz``; parent folders are made).

        Returns the Path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + '.tmp.npz')
        np.savez_compressed(tmp, images=self.images, labels=self.labels, episode=self.episode,
                            step=self.step, group=self.group, kind=self.kind,
                            task=np.array(self.task), version=np.array(FORMAT_VERSION),
                            meta=np.array(json.dumps(self.meta)),
                            **{'extra_' + k: v for k, v in self.extras.items()})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path):
        """Read a set written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a FrameSet file, or a newer format version.
        """
        with np.load(Path(path), allow_pickle=False) as z:
            missing = {'images', 'labels', 'episode', 'step', 'group', 'kind', 'task',
                       'meta'} - set(z.files)
            if missing:
                raise ValueError(f'{path} is not a FrameSet file (missing {sorted(missing)})')
            version = int(z['version']) if 'version' in z.files else 1
            if version > FORMAT_VERSION:
                raise ValueError(f'{path} has FrameSet format {version}; this code reads up to '
                                 f'{FORMAT_VERSION}')
            return cls(z['images'], z['labels'], z['episode'], z['step'], z['group'],
                       z['kind'], str(z['task']), json.loads(str(z['meta'])),
                       {k[len('extra_'):]: z[k] for k in z.files if k.startswith('extra_')})


def split_by_episode(frames, val_fraction, seed=0):
    """Split ``frames`` into ``(train, val)`` by whole episodes.

    Args:
        frames: a :class:`FrameSet`.
        val_fraction: fraction (0..1) of the episodes that go to ``val`` (rounded; at least one
            episode when > 0 and the set has two or more, at least one left for ``train``).
        seed: shuffles the episodes (same seed, same split).

    Returns:
        ``(train, val)`` FrameSets; no episode has frames in both; frame order is kept.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1].
    """
    if not 0.0 <= float(val_fraction) <= 1.0:
        raise ValueError(f'val_fraction must be in [0, 1], got {val_fraction}')
    episodes = frames.episodes()
    order = np.random.default_rng(seed).permutation(len(episodes))
    n_val = int(round(float(val_fraction) * len(episodes)))
    if 0.0 < val_fraction < 1.0 and len(episodes) >= 2:
        n_val = min(max(n_val, 1), len(episodes) - 1)
    val_ids = episodes[order[:n_val]]
    in_val = np.isin(frames.episode, val_ids)
    return frames.subset(~in_val), frames.subset(in_val)


def split_by_group(frames, groups):
    """Return ``(rest, held_out)``: the frames whose ``group`` is in ``groups`` go to
    ``held_out`` (e.g. ``split_by_group(frames, ['capsule'])``)."""
    held = np.isin(frames.group, [str(g) for g in groups])
    return frames.subset(~held), frames.subset(held)


# -- grasp episodes in process --------------------------------------------------------------------

def _draw_scenario(seed, hard_negatives, scenarios, stream):
    """Return the scenario name of episode ``seed``, drawn from the seed alone with the
    fractions ``scenarios`` {name: fraction} on random stream ``stream`` ('normal' without
    hard negatives)."""
    if not hard_negatives:
        return 'normal'
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 24, stream])
    names = list(scenarios)
    p = np.array([scenarios[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _scenario_of(seed, hard_negatives):
    """Return the grasp scenario name of episode ``seed`` (drawn from the seed alone)."""
    return _draw_scenario(seed, hard_negatives, GRASP_SCENARIOS, 1)


#: Post-lift waypoints project at least this far (px of the 640x480 frame) inside the crop.
VIEW_MARGIN_PX = 100
#: Tool heights (m above the bin floor) of the post-lift waypoints: a held object's lowest
#: point stays well above the success height (0.12 m) instead of lingering at it.
POST_HEIGHT_M = (0.20, 0.30)
#: grasped_not_lifted: the tool rises at most this much (m) above its grasp height, so the
#: held object stays clearly below the success height.
NOT_LIFTED_RISE_M = 0.07
_CAMERA = []


def _camera():
    """The shoulder camera model (``sim.scene.shoulder_camera``), built once per process."""
    if not _CAMERA:
        from awopt_ros.sim.scene import shoulder_camera
        _CAMERA.append(shoulder_camera())
    return _CAMERA[0]


class _GraspScenario:
    """Drives one collection episode: the noisy scripted grasp, then the scenario's ending.

    ``act(obs, lifted)`` returns ``(action (7,) float32, hard)``; ``hard`` True from the step at
    which the scenario's hard-negative part starts (gripper closed on air, held object kept
    low, object released), so that the negative frames from then on get the scenario's kind.

    Scenarios (every step's label is the simulator's ground truth whatever happens):

    - ``normal``: the scripted policy (35 % large grasp-point errors, so failures too); from
      the first lifted frame (or the end of its lift) the gripper stays closed and the tool
      keeps moving (``post`` phase: random waypoints :data:`POST_HEIGHT_M` high and in view,
      yaw turns) for 18-40 steps with an object in the gripper, 6-14 without;
    - ``closed_on_air``: the grasp point is 5-9 cm beside the target object, so the fingers
      close on nothing; then lifted and moved high like ``normal`` for 6-14 steps (looks like
      a success without an object);
    - ``grasped_not_lifted``: a good grasp, then the tool rises only 0-7 cm
      (:data:`NOT_LIFTED_RISE_M`) and wanders there: the object held, below the success
      height;
    - ``dropped``: a good grasp lifted above the success height for 1-4 steps, then the
      gripper opens (sometimes after a sideways move) and the object falls.
    """

    def __init__(self, seed, scenario, rng):
        from awopt_ros.sim.scripted import ScriptedGraspPolicy
        self.scenario = scenario
        self.rng = rng
        slip = 0.35 if scenario == 'normal' else 0.0
        state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 24])
        self.policy = ScriptedGraspPolicy(seed=int(state.generate_state(1)[0]),
                                          noise_std_m=0.004, slip_probability=slip)
        self.phase = 'scripted'
        self.post_left = int(rng.integers(18, 41))
        self.drop_after = int(rng.integers(1, 5))
        self.lifted_steps = 0
        self.waypoint = None
        self.yaw = 0.0
        self.released = False
        self.hold_z = None
        self._aimed = False

    def _aim_beside(self, obs):
        """closed_on_air: move the grasp point 5-9 cm off the target, towards the bin centre
        (+-90 deg) so that the tool does not land on a wall."""
        from awopt_ros.core import robot
        obj = np.asarray(obs['object_poses'], dtype=np.float64)[self.policy.target, :2]
        to_centre = np.asarray(robot.BIN_CENTER_M[:2]) - obj
        angle = math.atan2(to_centre[1], to_centre[0]) + self.rng.uniform(-math.pi / 2,
                                                                          math.pi / 2)
        self.policy.grasp_error_m = self.rng.uniform(0.05, 0.09) * np.array(
            [math.cos(angle), math.sin(angle)])

    def _waypoint(self, tool, low, high):
        """A random tool point 0-12 cm from above the bin centre (x, y) at a height in
        [low, high] whose projection lies well inside the policy crop (:data:`VIEW_MARGIN_PX`),
        so that a held object stays in view."""
        from awopt_ros.core import robot, spec
        cx, cy = robot.BIN_CENTER_M[:2]
        x0, y0, w, h = spec.POLICY_CROP_XYWH
        m = VIEW_MARGIN_PX
        for _ in range(30):
            xy = np.array([cx, cy]) + self.rng.uniform(-0.12, 0.12, 2)
            point = np.array([xy[0], xy[1], self.rng.uniform(low, high)])
            u, v = np.asarray(_camera().project(point[None])).reshape(-1)[:2]
            if x0 + m <= u <= x0 + w - m and y0 + m <= v <= y0 + h - m:
                break
        return point

    def _move(self, tool, goal, yaw=0.0):
        from awopt_ros.core import spec
        action = np.zeros(spec.ACTION_DIM)
        delta = goal - tool
        delta = delta * min(1.0, 0.025 / max(np.linalg.norm(delta), 1e-9))
        action[:3] = delta + self.rng.normal(0.0, 0.002, 3)
        action[3] = yaw
        return action

    def act(self, obs, lifted):
        from awopt_ros.core import robot, spec
        tool = np.asarray(obs['proprio'][:3], dtype=np.float64)
        closedness = float(obs['proprio'][5])
        floor_z = float(robot.BIN_CENTER_M[2])
        self.lifted_steps = self.lifted_steps + 1 if lifted else 0
        p = self.policy
        holding = spec.GRIPPER_ENGAGED_CLOSEDNESS <= closedness < spec.GRIPPER_EMPTY_CLOSEDNESS
        if self.phase == 'scripted':
            action = np.asarray(p.act(obs['proprio'], obs['object_poses'],
                                      obs['object_extents']), dtype=np.float64)
            if self.scenario == 'closed_on_air' and not self._aimed:
                self._aim_beside(obs)
                self._aimed = True
            if p.phase == 'lift':
                if self.scenario == 'grasped_not_lifted':
                    self.phase = 'low'
                    self.hold_z = float(p.grasp_goal[2]) + self.rng.uniform(0.0, NOT_LIFTED_RISE_M)
                    self.post_left = int(self.rng.integers(14, 26))
                elif self.scenario == 'dropped' and self.lifted_steps >= self.drop_after:
                    self.phase = 'release'
                    self.released = True
                    side = self.rng.uniform() < 0.4
                    self.waypoint = (self._waypoint(tool, floor_z + 0.2, floor_z + 0.35)
                                     if side else tool.copy())
                    self.post_left = int(self.rng.integers(10, 20))
            if self.scenario == 'normal' and p.phase == 'lift' and lifted:
                self.phase = 'post'     # lifted: carry it about in view from here
            if self.phase == 'scripted' and spec.is_set(action[spec.IDX_TERMINATE]):
                self.phase = 'post'
                if not holding:   # nothing in the gripper: a shorter tail of negatives
                    self.post_left = int(self.rng.integers(6, 15))
            if self.phase == 'scripted':
                return action.astype(np.float32), self._hard(holding)
        self.post_left -= 1
        if self.phase == 'low':
            if self.waypoint is None or np.linalg.norm(self.waypoint - tool) < 0.01 \
                    or self.rng.uniform() < 0.15:
                xy = tool[:2] + self.rng.uniform(-0.03, 0.03, 2)
                self.waypoint = np.array([xy[0], xy[1], self.hold_z + self.rng.uniform(
                    -0.01, 0.01)])
            action = self._move(tool, self.waypoint)
            action[spec.IDX_CLOSE] = 1.0
        elif self.phase == 'release':
            action = self._move(tool, self.waypoint)
            action[spec.IDX_OPEN] = 1.0
        else:   # 'post': keep the grip closed and wander high above the bin
            if self.waypoint is None or np.linalg.norm(self.waypoint - tool) < 0.015 \
                    or self.rng.uniform() < 0.1:
                self.waypoint = self._waypoint(tool, floor_z + POST_HEIGHT_M[0],
                                               floor_z + POST_HEIGHT_M[1])
                self.yaw = float(self.rng.uniform(-0.15, 0.15)) if self.rng.uniform() < 0.3 \
                    else 0.0
            action = self._move(tool, self.waypoint, self.yaw)
            action[spec.IDX_CLOSE] = 1.0
        return (np.clip(action, spec.ACTION_LOW, spec.ACTION_HIGH).astype(np.float32),
                self._hard(holding))

    def _hard(self, holding):
        """Whether the scenario's hard-negative part is under way at this step."""
        if self.scenario == 'closed_on_air':
            return self.policy.phase == 'lift' and not holding
        if self.scenario == 'grasped_not_lifted':
            return self.phase == 'low' and holding
        if self.scenario == 'dropped':
            return self.released
        return False

    @property
    def done(self):
        return self.phase != 'scripted' and self.post_left <= 0


def run_grasp_frame_episode(env, seed, scenario, max_steps=MAX_EPISODE_STEPS):
    """Run one collection episode in ``env`` and return its frames.

    Args:
        env: a :class:`awopt_ros.sim.rollout.RolloutEnv`.
        seed: scene seed (int); the policy noise and the scenario's choices come from it too.
        scenario: 'normal' or a name of :data:`HARD_NEGATIVE_KINDS`.
        max_steps: most actions.

    Returns:
        dict: ``images`` uint8 (T+1, S, S, 3), ``labels`` uint8 (T+1,) (``object_lifted`` of
        each observation), ``kind`` str (T+1,) (the scenario on negative frames after its hard
        part began, else 'normal'), ``group`` (the target object's shape), ``seed``,
        ``scenario``, ``steps`` (T), ``wall_s``.
    """
    from awopt_ros.core import robot, spec
    from awopt_ros.core.arm import arm_command
    t0 = time.monotonic()
    seed = int(seed)
    c = env.config
    env.sim.reset(seed)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 24, 2])
    driver = _GraspScenario(seed, scenario, rng)
    obs = env.observe()
    floor_z = float(robot.BIN_CENTER_M[2])

    def height():
        return float(np.max(env.sim.object_lowest_z()) - floor_z)
    images, labels, hard = [obs['image']], [env.sim.object_lifted()], [False]
    heights = [height()]
    steps = 0
    for steps in range(1, max_steps + 1):
        action, is_hard = driver.act(obs, labels[-1])
        q = env.sim.joint_positions()
        cmd = arm_command(env.kin, q[:7], action, c.limits, c.control_period_s,
                          spec.gripper_closedness(q[7]))
        if cmd.q_target is not None:
            env.sim.set_arm_target(cmd.q_target)
        if cmd.gripper_m is not None:
            env.sim.set_gripper_target(cmd.gripper_m)
        env.sim.step(c.physics_steps)
        obs = env.observe()
        images.append(obs['image'])
        labels.append(env.sim.object_lifted())
        heights.append(height())
        hard.append(is_hard)
        if driver.done:
            break
    labels = np.array(labels, dtype=np.uint8)
    kind = np.where(np.array(hard) & (labels == 0), scenario, 'normal')
    target = driver.policy.target
    group = env.sim.objects[target]['shape'] if target is not None else 'none'
    return {'images': np.stack(images), 'labels': labels, 'kind': kind.astype(str),
            'group': str(group), 'seed': seed, 'scenario': scenario, 'steps': steps,
            'extras': {'lift_height_m': np.array(heights, dtype=np.float32)},
            'wall_s': time.monotonic() - t0}


_WORKER = {}


def _make_env(task, config):
    """The in-process environment a worker runs ``task``'s episodes in."""
    if task == 'grasp':
        from awopt_ros.sim.rollout import RolloutEnv
        return RolloutEnv(config)
    from awopt_ros.sim.insertion import InsertionSim
    from awopt_ros.sim.insertion_env import InsertionResidualEnv
    return InsertionResidualEnv(residual=False, sim=InsertionSim(config))


def _run_episode(task, env, seed, scenario, options):
    if task == 'grasp':
        return run_grasp_frame_episode(env, seed, scenario, **options)
    return run_insertion_frame_episode(env, seed, scenario, **options)


def _worker_init(task, config):
    _WORKER.clear()
    _WORKER.update(task=task, config=config, env=None)


def _worker_episode(seed, scenario, options):
    if _WORKER.get('env') is None:
        _WORKER['env'] = _make_env(_WORKER['task'], _WORKER['config'])
    return _run_episode(_WORKER['task'], _WORKER['env'], seed, scenario, options)


def _run_episodes(task, config, seeds, scenarios, options, processes, progress):
    """Run one frame episode per (seed, scenario), here or in 'spawn' worker processes, with
    the episode function's keyword ``options``; return the episode dicts in seed order."""
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(seeds), desc=f'{task} success frames', unit='ep')
    results = [None] * len(seeds)
    try:
        if int(processes) <= 1 or len(seeds) <= 1:
            env = _make_env(task, config)
            try:
                for i, (seed, scen) in enumerate(zip(seeds, scenarios)):
                    results[i] = _run_episode(task, env, seed, scen, options)
                    if bar is not None:
                        bar.update(1)
            finally:
                env.close()
        else:
            ctx = mp.get_context('spawn')
            with cf.ProcessPoolExecutor(max_workers=min(int(processes), len(seeds)),
                                        mp_context=ctx, initializer=_worker_init,
                                        initargs=(task, config)) as pool:
                futures = {pool.submit(_worker_episode, seed, scen, options): i
                           for i, (seed, scen) in enumerate(zip(seeds, scenarios))}
                try:
                    for future in cf.as_completed(futures):
                        results[futures[future]] = future.result()
                        if bar is not None:
                            bar.update(1)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()
    return results


def collect_grasp_frames(seeds, shapes=None, hard_negatives=True, processes=2, progress=True,
                         config=None, max_steps=MAX_EPISODE_STEPS):
    """Collect labelled grasp frames, one in-process episode per seed.

    Every frame's label is the simulator's ground truth (``GraspSim.object_lifted``). Each
    episode's scenario (:data:`GRASP_SCENARIOS`; all ``'normal'`` without ``hard_negatives``)
    is drawn from its seed, so the frames depend on the seeds alone (not on ``processes``).

    Args:
        seeds: iterable of int scene seeds; episode ids are their positions in this list.
        shapes: object kinds of the scenes (e.g. :data:`TRAIN_SHAPES`, :data:`HELDOUT_SHAPES`);
            None: every kind (the stack's scenes).
        hard_negatives: draw hard-negative scenarios too.
        processes: worker processes ('spawn'); 1 runs here.
        progress: show a tqdm progress bar.
        config: :class:`awopt_ros.sim.rollout.RolloutConfig` (default: the stack's values);
            ``shapes`` overrides its ``shapes``.
        max_steps: most actions per episode.

    Returns:
        a :class:`FrameSet` (task 'grasp'); ``meta`` holds the seeds, shapes, scenario per
        episode and collection settings, and ``wall_s``.
    """
    from dataclasses import replace

    from awopt_ros.sim.rollout import RolloutConfig
    seeds = [int(s) for s in seeds]
    config = replace(config if config is not None else RolloutConfig(),
                     shapes=None if shapes is None else tuple(shapes))
    scenarios = [_scenario_of(s, hard_negatives) for s in seeds]
    t0 = time.monotonic()
    results = _run_episodes('grasp', config, seeds, scenarios, {'max_steps': max_steps},
                            processes, progress)
    meta = {'source': 'collect_grasp_frames', 'generator': GENERATOR_VERSION, 'seeds': seeds,
            'shapes': None if config.shapes is None else list(config.shapes),
            'hard_negatives': bool(hard_negatives),
            'scenarios': [r['scenario'] for r in results],
            'scenario_fractions': GRASP_SCENARIOS if hard_negatives else {'normal': 1.0},
            'label': 'ground_truth: GraspSim.object_lifted()',
            'success_height_m': config.success_height_m, 'image_size': config.image_size,
            'crop_xywh': list(config.crop_xywh), 'camera_size': list(config.camera_size),
            'wall_s': float(time.monotonic() - t0)}
    return _frameset(results, 'grasp', config.image_size, meta)


def _frameset(results, task, size, meta):
    images = [r['images'] for r in results] or [np.zeros((0, size, size, 3), np.uint8)]
    n = [len(r['labels']) for r in results]
    empty = np.zeros(0)
    return FrameSet(
        np.concatenate(images),
        np.concatenate([r['labels'] for r in results]) if results else empty,
        np.repeat(np.arange(len(results)), n),
        np.concatenate([np.arange(k) for k in n]) if results else empty,
        np.repeat([r['group'] for r in results], n) if results else np.zeros(0, str),
        np.concatenate([r['kind'] for r in results]) if results else np.zeros(0, str),
        task, meta,
        {k: np.concatenate([r['extras'][k] for r in results]) for k in
         (results[0].get('extras', {}) if results else {})})


# -- insertion episodes in process -----------------------------------------------------------

#: Insertion scenarios and their fractions (hard_negatives=True): ``normal`` the observed goal
#: within +-0.2 mm of the bore (the P-controller inserts), ``goal_noise`` the scene's own goal
#: noise (the P-controller jams on the chamfer or rim about half the time; frames labelled as
#: they are, kind 'normal'), ``peg_on_rim`` the goal 0.8-4 mm off the bore axis so that the
#: peg lands and presses on the socket's top face.
INSERTION_SCENARIOS = {'normal': 0.5, 'goal_noise': 0.25, 'peg_on_rim': 0.25}
#: The insertion stack's camera pipeline (config/awopt_ros_sawyer_insertion.yaml): a
#: 320x240 frame, crop (x, y, w, h), resized to 64 px.
INSERTION_CAMERA_SIZE = (320, 240)
INSERTION_CROP_XYWH = (40, 0, 240, 240)
#: Longest insertion episode (actions, the stack's max_steps); a success episode goes on
#: 10-25 steps after its first success instead.
INSERTION_MAX_STEPS = 50
#: Frames of a peg_on_rim episode with the tip at most this far above the socket's top face
#: (m) and no success carry the kind 'peg_on_rim'.
RIM_HEIGHT_M = 0.002


def _insertion_scenario_of(seed, hard_negatives):
    """Return the insertion scenario name of episode ``seed`` (drawn from the seed alone)."""
    return _draw_scenario(seed, hard_negatives, INSERTION_SCENARIOS, 3)


def run_insertion_frame_episode(env, seed, scenario, max_steps=INSERTION_MAX_STEPS,
                                image_size=64, crop_xywh=INSERTION_CROP_XYWH):
    """Run one insertion collection episode (the P-controller alone) and return its frames.

    Args:
        env: an :class:`awopt_ros.sim.insertion_env.InsertionResidualEnv` (``residual=False``)
            whose sim renders (:data:`INSERTION_CAMERA_SIZE`).
        seed: scene seed (int); the scenario's goal error comes from it too.
        scenario: a name of :data:`INSERTION_SCENARIOS`.
        max_steps: actions after which an episode without a success ends; one with a
            success ends 10-25 steps after its first success.

    Returns:
        dict as :func:`run_grasp_frame_episode` (labels = ``InsertionSim.success()`` of each
        frame; ``group`` = the scene variant).
    """
    from awopt_ros.core.image_ops import crop_resize
    t0 = time.monotonic()
    seed = int(seed)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 24, 4])
    sim = env.sim
    env.reset(seed=seed)
    if scenario == 'normal':
        sim._noise = np.array([*rng.uniform(-0.0002, 0.0002, 2), 0.0])
    elif scenario == 'peg_on_rim':
        angle = rng.uniform(-math.pi, math.pi)
        r = rng.uniform(0.0008, 0.004)
        sim._noise = np.array([r * math.cos(angle), r * math.sin(angle), 0.0])
    env._obs, env._base = env._state()      # the P-controller aims at the changed goal
    post = int(rng.integers(10, 26))
    images, labels, depth = [], [], []

    def observe():
        images.append(crop_resize(sim.render(), crop_xywh, image_size))
        labels.append(bool(sim.success()))
        depth.append(sim.insertion_depth_m())
    observe()
    steps, since = 0, None
    while True:
        env.step(np.zeros(3))
        steps += 1
        observe()
        if since is None and labels[-1]:
            since = 0
        if since is not None:
            since += 1
            if since >= post:
                break
        elif steps >= max_steps:
            break
    labels = np.array(labels, dtype=np.uint8)
    depth = np.array(depth, dtype=np.float32)
    hard = (depth >= -RIM_HEIGHT_M) & (labels == 0) & (scenario == 'peg_on_rim')
    kind = np.where(hard, 'peg_on_rim', 'normal')
    return {'images': np.stack(images), 'labels': labels, 'kind': kind.astype(str),
            'group': str(sim.config.variant), 'seed': seed, 'scenario': scenario,
            'steps': steps, 'extras': {'insertion_depth_m': depth},
            'wall_s': time.monotonic() - t0}


def collect_insertion_frames(seeds, variant='default', hard_negatives=True, processes=2,
                             progress=True, config=None, max_steps=INSERTION_MAX_STEPS,
                             image_size=64):
    """Collect labelled insertion frames, one in-process episode per seed (P-controller).

    Frames are the stack's policy images of the socket camera: a 320x240 render cropped to
    :data:`INSERTION_CROP_XYWH` and resized to 64 px; every label is ``InsertionSim.success()``
    of that frame. Episodes go on 10-25 steps after the first success (the peg stays in).

    Args:
        seeds: iterable of int scene seeds; episode ids are their positions.
        variant: the socket variant ('default' or 'hard'), also the frames' ``group``.
        hard_negatives: draw :data:`INSERTION_SCENARIOS` (else all 'normal').
        processes, progress, max_steps: as :func:`collect_grasp_frames`.
        image_size: side (px) the crop is resized to (the stack's policy image: 64).
        config: ``sim.insertion.InsertionConfig`` (default: the variant's, rendering at
            :data:`INSERTION_CAMERA_SIZE`).

    Returns:
        a :class:`FrameSet` (task 'insertion').
    """
    from awopt_ros.sim.insertion import InsertionConfig
    seeds = [int(s) for s in seeds]
    config = config or InsertionConfig(variant=variant, image_size=INSERTION_CAMERA_SIZE)
    scenarios = [_insertion_scenario_of(s, hard_negatives) for s in seeds]
    t0 = time.monotonic()
    results = _run_episodes('insertion', config, seeds, scenarios,
                            {'max_steps': max_steps, 'image_size': int(image_size)}, processes,
                            progress)
    meta = {'source': 'collect_insertion_frames', 'seeds': seeds, 'variant': config.variant,
            'hard_negatives': bool(hard_negatives),
            'scenarios': [r['scenario'] for r in results],
            'scenario_fractions': INSERTION_SCENARIOS if hard_negatives else {'normal': 1.0},
            'label': 'ground_truth: InsertionSim.success()', 'image_size': int(image_size),
            'crop_xywh': list(INSERTION_CROP_XYWH),
            'camera_size': list(config.image_size), 'wall_s': float(time.monotonic() - t0)}
    return _frameset(results, 'insertion', int(image_size), meta)


# -- the logger's datasets ------------------------------------------------------------------------

def _resolve_dataset(source, dataset_root):
    """Return ``(root_dir, dataset_id)`` for a dataset folder, a run folder with one dataset,
    or an id (with ``dataset_root``)."""
    from awopt_ros.core import dataset as ds
    path = Path(str(source))
    if dataset_root is not None:
        return Path(dataset_root), ds.dataset_id_for(str(source))
    if path.is_dir() and (path / 'data').is_dir() and path.parent.parent.name == 'datasets':
        return path.parent.parent.parent, f'{path.parent.name}/{path.name}'
    if path.is_dir() and ds.datasets_dir(path).is_dir():
        found = sorted(p.parent for p in ds.datasets_dir(path).glob('*/*/data'))
        if len(found) == 1:
            return path, f'{found[0].parent.name}/{found[0].name}'
        raise ValueError(f'{path} holds {len(found)} datasets; name one: its folder '
                         f'<run>/datasets/<namespace>/<name-vN>, or its id with dataset_root')
    raise FileNotFoundError(f'no dataset at {source!r}: expected a dataset folder '
                            '(<run>/datasets/<namespace>/<name-vN>), a run folder holding one, '
                            'or a dataset id with dataset_root')


def _frames_of_episodes(parts, group, task, meta):
    """Return the FrameSet of recorded episodes ``parts``: a list of (images uint8 (T, S, S, 3),
    labels (T,), episode id, steps (T,)), all of group ``group``, kind 'normal'."""
    size = parts[0][0].shape[1] if parts else 64
    n = [len(p[1]) for p in parts]
    return FrameSet(
        np.concatenate([p[0] for p in parts]) if parts
        else np.zeros((0, size, size, 3), np.uint8),
        np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.uint8),
        np.repeat([p[2] for p in parts], n).astype(np.int64),
        np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int64),
        np.full(sum(n), str(group)), np.full(sum(n), 'normal'), task, meta)


def frames_from_dataset(source, label='ground_truth', last_k=5, operator_labels=None,
                        dataset_root=None, group=None, unlabelled='skip'):
    """Return the labelled frames of a logged (Minari) grasp dataset as a :class:`FrameSet`.

    Args:
        source: the dataset folder (``<run>/datasets/awopt/kuka-grasp-v0``), a run folder that
            holds exactly one dataset, a dataset id (with ``dataset_root``), or a list of
            episode dicts as ``core.dataset.load_episodes`` returns them.
        label: ``'ground_truth'``: every frame labelled ``infos['success_probability'] >= 0.5``
            (frames with NaN, i.e. no detector sample yet, are dropped); ``'operator'``: the
            last ``last_k`` frames of each episode take the episode's label and earlier frames
            are dropped.
        last_k: frames per episode that an operator label covers (>= 1).
        operator_labels: ``'operator'`` only: dict episode -> bool, keyed by the episode
            manager's episode number (``episode``; the dataset index ``id`` for episodes
            without one); episodes missing from it are skipped (see ``unlabelled``). None:
            the recorded outcome (reward 1 on the last step = success).
        dataset_root: run folder of a dataset id ``source``.
        group: the frames' ``group`` (default: the dataset id, or 'dataset').
        unlabelled: ``'skip'`` or ``'recorded'``: episodes missing from ``operator_labels``
            take their recorded outcome instead of being skipped.

    Returns:
        FrameSet (task 'grasp', kind 'normal'); ``episode`` = the dataset's episode index
        ``id``, ``step`` = frame index in the episode (T+1 observations per episode).
        ``meta['numbers']``: the episode number of every episode in the dataset (kept or
        not); ``meta['sources']``: ``[episode id, number, label source]`` per kept episode
        (``'ground_truth'``, ``'operator'`` = from ``operator_labels``, ``'annotation'`` = the
        label in the dataset's annotations journal (``core.annotations``, used when
        ``operator_labels`` has none for it), ``'recorded'`` = the recorded outcome).
        Episodes the operator discarded (``core.annotations``) give no frames
        (``meta['discarded_episodes']`` counts them).

    Raises:
        ValueError: unknown ``label`` or ``unlabelled``, or ``last_k`` < 1.
        FileNotFoundError: no such dataset.
    """
    _check_label_args(label, last_k, unlabelled)
    last_k = int(last_k)
    dataset_id = None
    if isinstance(source, (list, tuple)):
        episodes = list(source)
    else:
        from awopt_ros.core.dataset import load_episodes
        root, dataset_id = _resolve_dataset(source, dataset_root)
        episodes = load_episodes(root, dataset_id)
    group = str(group if group is not None else dataset_id or 'dataset')
    parts, skipped, numbers, sources, discarded = [], 0, [], [], 0
    for ep in episodes:
        images = np.asarray(ep['image'], dtype=np.uint8)
        n = len(images)
        steps = np.arange(n)
        key = ep.get('episode') if ep.get('episode') is not None else ep.get('id')
        numbers.append(int(key))
        if ep.get('discarded'):      # the operator discarded it (core.annotations)
            discarded += 1
            continue
        source = label
        if label == 'ground_truth':
            p = np.asarray(ep['success_probability'], dtype=np.float32)
            keep = np.isfinite(p)
            labels = (np.nan_to_num(p, nan=0.0) >= 0.5).astype(np.uint8)
        else:
            if operator_labels is not None and key in operator_labels:
                verdict = bool(operator_labels[key])
            elif ep.get('label') is not None:   # the dataset's annotations journal
                verdict, source = ep['label'] == 'success', 'annotation'
            elif operator_labels is not None and unlabelled == 'skip':
                skipped += 1
                continue
            else:
                rewards = np.asarray(ep['rewards'])
                verdict, source = bool(len(rewards) and rewards[-1] > 0), 'recorded'
            keep = steps >= n - last_k
            labels = np.full(n, int(verdict), dtype=np.uint8)
        if not keep.any():
            continue
        parts.append((images[keep], labels[keep], int(ep['id']), steps[keep]))
        sources.append([int(ep['id']), int(key), source])
    meta = {'source': 'frames_from_dataset', 'dataset_id': dataset_id, 'label': label,
            'last_k': last_k if label == 'operator' else None,
            'operator_labels': operator_labels is not None,
            'skipped_unlabelled_episodes': skipped, 'episodes': [p[2] for p in parts],
            'numbers': numbers, 'sources': sources, 'discarded_episodes': discarded}
    return _frames_of_episodes(parts, group, 'grasp', meta)


def _check_label_args(label, last_k, unlabelled):
    """Raise ValueError for an unknown ``label`` / ``unlabelled`` or ``last_k`` < 1."""
    if label not in ('ground_truth', 'operator'):
        raise ValueError(f"label must be 'ground_truth' or 'operator', got {label!r}")
    if int(last_k) != last_k or int(last_k) < 1:
        raise ValueError(f'last_k must be an integer >= 1, got {last_k!r}')
    if unlabelled not in ('skip', 'recorded'):
        raise ValueError(f"unlabelled must be 'skip' or 'recorded', got {unlabelled!r}")


def _bag_dirs(source):
    """Return the episode bag folders of a run folder (``<run>/bags/episode_*``), a bags
    folder, one bag folder or a list of bag folders, sorted by name."""
    if isinstance(source, (list, tuple)):
        return [Path(p) for p in source]
    path = Path(source)
    if list(path.glob('*.mcap')):
        return [path]
    if (path / 'bags').is_dir():
        path = path / 'bags'
    found = sorted(p for p in path.iterdir() if p.is_dir() and list(p.glob('*.mcap'))) \
        if path.is_dir() else []
    if not found:
        raise FileNotFoundError(f'no bags at {source!r}: expected a run folder with bags/, a '
                                'bags folder of episode_* bags, or one bag folder')
    return found


def _journal_tables(source):
    """Return the operator annotations of the run folder that ``source`` (a run folder, its
    ``bags`` folder or one bag folder in it) belongs to: a list of ``(dataset id, identities,
    states)`` per Minari dataset of the run (``core.annotations.episode_identities`` and
    ``fold``, by dataset index); [] for a list of bags or a run without a dataset."""
    if isinstance(source, (list, tuple)):
        return []
    from awopt_ros.core import annotations as ann
    from awopt_ros.core.dataset import datasets_dir
    path = Path(source)
    for run in (path, path.parent, path.parent.parent):
        if datasets_dir(run).is_dir():
            break
    else:
        return []
    tables = []
    for data in sorted(datasets_dir(run).glob('*/*/data')):
        dataset_id = f'{data.parent.parent.name}/{data.parent.name}'
        try:
            identities = ann.episode_identities(run, dataset_id)
        except FileNotFoundError:         # a dataset folder without episodes yet
            continue
        states = ann.fold(ann.read_journal(ann.journal_path(run, dataset_id)),
                          [i['episode'] for i in identities], identities)
        tables.append((dataset_id, identities, states))
    return tables


def _bag_annotation(tables, number, start, end):
    """Return the annotations (``label``, ``discarded``, ``notes``) of the dataset episode an
    episode bag holds: the one numbered ``number`` (and, where several are, the one whose seed
    and first step's stamp fit the bag's ``start`` / ``end`` events); None when the datasets
    have none; ``'ambiguous'`` when several fit and their annotations differ."""
    from awopt_ros.core.annotations import same_episode
    found = [(ident, state) for _, identities, states in tables
             for ident, state in zip(identities, states) if ident['episode'] == number]
    if len(found) > 1:
        start = start or {}
        record = {'seed': start.get('seed'), 'start_stamp_s': start.get('stamp_s'),
                  'end_stamp_s': (end or {}).get('stamp_s')}
        found = [f for f in found if same_episode(record, f[0])] or found
    kinds = {json.dumps(state, sort_keys=True) for _, state in found}
    if not kinds:
        return None
    return found[0][1] if len(kinds) == 1 else 'ambiguous'


def _image_array(msg):
    """Return a ``sensor_msgs/Image`` (rgb8 or bgr8) as uint8 (H, W, 3) RGB."""
    if msg.encoding not in ('rgb8', 'bgr8'):
        raise ValueError(f'images must be rgb8 or bgr8, got {msg.encoding!r}')
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    image = data[:, :msg.width * 3].reshape(msg.height, msg.width, 3)
    return image[..., ::-1].copy() if msg.encoding == 'bgr8' else image.copy()


def frames_from_bags(source, label='ground_truth', last_k=5, operator_labels=None,
                     image_topic='/policy/image', success_topic='/success/probability',
                     event_topic='/episode/event', task='grasp', group='bags',
                     unlabelled='skip'):
    """Return labelled frames of the logger's episode bags (one bag per episode).

    The images are the policy images recorded in the bags (``image_topic``, rgb8/bgr8, up to
    the episode's ``end`` event when the bag has one); the insertion task's Minari dataset
    holds no images, so its frames come from here.

    Args:
        source: a run folder (``<run>/bags/episode_NNNN``), its ``bags`` folder, one bag folder
            or a list of bag folders.
        label: ``'ground_truth'``: each frame takes the latest ``success_topic`` sample
            (``std_msgs/Float32``) logged at or before it, ``>= 0.5`` = success (frames before
            the first sample are dropped); ``'operator'``: the last ``last_k`` frames take the
            episode's label, earlier ones are dropped.
        last_k: frames an operator label covers (>= 1).
        operator_labels: dict episode number -> bool (the ``episode`` of the bag's events, else
            the number in its folder name ``episode_NNNN``); episodes missing from it are
            skipped (see ``unlabelled``). None: the ``success`` of the bag's ``end`` event
            (bags without one are skipped).
        image_topic, success_topic, event_topic: recorded topic names.
        task: the FrameSet's task; group: its frames' group.
        unlabelled: ``'skip'`` or ``'recorded'``: episodes missing from ``operator_labels``
            take the ``success`` of their ``end`` event instead of being skipped.

    The operator's annotations of the run's datasets (``core.annotations``: ``awopt label``,
    ``awopt discard``, the operator node) apply as on :func:`frames_from_dataset`: a bag of a
    discarded episode gives no frames, and with ``'operator'`` an episode's journal label
    stands where ``operator_labels`` has none (label source ``'annotation'``). A bag is
    matched to its dataset episode by its number and, where the dataset holds that number
    several times (several recordings into one run folder), by the seed and first step's
    stamp within the bag's start and end events; a bag that still matches several episodes
    with different annotations is skipped with a warning (``meta['ambiguous_bags']``).
    Only a run folder (or its bags) has a journal; a list of bag folders has none.

    Returns:
        FrameSet (kind 'normal'); ``episode`` = the episode number, ``step`` = the frame's
        index among the bag's images. ``meta['numbers']``: every bag's episode number;
        ``meta['sources']``: ``[episode, episode, label source]`` per kept episode (as
        :func:`frames_from_dataset`); ``meta['success_samples']``: ``success_topic`` messages
        read; ``meta['discarded_episodes']``: bags left out as discarded.

    Raises:
        ValueError: unknown ``label`` or ``unlabelled``, ``last_k`` < 1, an image encoding
            other than rgb8/bgr8 or images of different sizes.
        FileNotFoundError: no bags at ``source``.
    """
    import re

    from awopt_ros.core.bag import default_typestore, read_messages
    _check_label_args(label, last_k, unlabelled)
    last_k = int(last_k)
    store = default_typestore()
    parts, skipped, bags = [], [], _bag_dirs(source)
    numbers, sources, n_samples = [], [], 0
    tables, discarded, ambiguous = _journal_tables(source), 0, []
    for k, bag in enumerate(bags):
        images, samples, end, number, start = [], [], None, None, None
        match = re.search(r'(\d+)$', bag.name)
        for topic, msgtype, stamp_ns, data in read_messages(bag):
            if topic == image_topic:
                images.append((stamp_ns, _image_array(store.deserialize_cdr(data, msgtype))))
            elif topic == success_topic:
                samples.append((stamp_ns, float(store.deserialize_cdr(data, msgtype).data)))
            elif topic == event_topic:
                event = json.loads(store.deserialize_cdr(data, msgtype).data)
                if event.get('episode') is not None:
                    number = int(event['episode'])
                if event.get('event') == 'end' and end is None:
                    end = (stamp_ns, event)
                if event.get('event') == 'start' and start is None:
                    start = event
        if number is None:
            number = int(match.group(1)) if match else k
        numbers.append(number)
        n_samples += len(samples)
        state = _bag_annotation(tables, number, start, end and end[1]) if tables else None
        if state == 'ambiguous':
            _LOG.warning('%s skipped: episode %d is in the dataset several times with different '
                         'operator annotations, and the bag does not tell which it is', bag,
                         number)
            ambiguous.append(str(bag))
            continue
        if state is not None and state['discarded']:    # the operator discarded it
            discarded += 1
            continue
        source = label
        if end is not None:
            images = [im for im in images if im[0] <= end[0]]
        steps = np.arange(len(images))
        if label == 'ground_truth':
            times = np.array([t for t, _ in samples], dtype=np.int64)
            values = np.array([v for _, v in samples], dtype=np.float64)
            at = np.searchsorted(times, [t for t, _ in images], side='right') - 1
            keep = at >= 0
            labels = (values[np.maximum(at, 0)] >= 0.5) if len(values) else keep
            labels = np.asarray(labels, dtype=np.uint8)
        else:
            verdict = None if operator_labels is None else operator_labels.get(number)
            if verdict is None and state is not None and state['label'] is not None:
                verdict, source = state['label'] == 'success', 'annotation'
            if verdict is None and (operator_labels is None or unlabelled == 'recorded'):
                verdict, source = None if end is None else end[1].get('success'), 'recorded'
            if verdict is None:
                skipped.append(str(bag))
                continue
            keep = steps >= len(images) - last_k
            labels = np.full(len(images), int(bool(verdict)), dtype=np.uint8)
        if not len(images) or not keep.any():
            continue
        stack = np.stack([im for _, im in images])
        parts.append((stack[keep], labels[keep], number, steps[keep]))
        sources.append([number, number, source])
    sizes = {p[0].shape[1:] for p in parts}
    if len(sizes) > 1:
        raise ValueError(f'the bags hold images of different sizes {sorted(sizes)}')
    meta = {'source': 'frames_from_bags', 'bags': [str(b) for b in bags], 'label': label,
            'last_k': last_k if label == 'operator' else None,
            'operator_labels': operator_labels is not None, 'skipped_bags': skipped,
            'episodes': [p[2] for p in parts], 'image_topic': image_topic,
            'numbers': numbers, 'sources': sources, 'success_samples': n_samples,
            'discarded_episodes': discarded, 'ambiguous_bags': ambiguous}
    return _frames_of_episodes(parts, group, task, meta)


# -- montage (checking labels by eye) -------------------------------------------------------------

def montage(frames, path, per_row=12, rows_per_kind=2, seed=0):
    """Save a PNG of random frames: for each (label, kind) present, ``rows_per_kind`` rows of
    ``per_row`` frames, each row titled. Returns the Path written."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(seed)
    rows = []
    for lab in (1, 0):
        for kind in sorted(set(frames.kind.tolist())):
            idx = np.flatnonzero((frames.labels == lab) & (frames.kind == kind))
            if len(idx):
                pick = np.sort(rng.choice(idx, min(len(idx), per_row * rows_per_kind),
                                          replace=False))
                for r in range(0, len(pick), per_row):
                    rows.append((f'label {lab} {kind}', pick[r:r + per_row]))
    fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 1.1, len(rows) * 1.25),
                             squeeze=False)
    for (title, idx), ax_row in zip(rows, axes):
        for j, ax in enumerate(ax_row):
            ax.axis('off')
            if j < len(idx):
                ax.imshow(frames.images[idx[j]])
                ax.set_title(f'e{frames.episode[idx[j]]} s{frames.step[idx[j]]}', fontsize=6)
        ax_row[0].text(-0.1, 0.5, title, transform=ax_row[0].transAxes, fontsize=7,
                       ha='right', va='center')
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# -- command line ---------------------------------------------------------------------------------

def add_collect_args(parser):
    """Add the options of ``awopt collect-success-frames`` to ``parser``."""
    from awopt_ros.cli_args import positive_int
    from awopt_ros.core import spec
    parser.add_argument('--task', choices=('grasp', 'insertion'), default='grasp',
                        help='grasp: in-process Kuka bin-grasping episodes (scripted policy); '
                             'insertion: Sawyer peg insertion (the P-controller alone)')
    parser.add_argument('--episodes', type=positive_int, default=None,
                        help=f'episodes (one scene seed each: --seed, --seed+1, ...; default '
                             f'{DEFAULT_EPISODES})')
    parser.add_argument('--seed', type=int, default=None, help='first scene seed (default 0)')
    parser.add_argument('--shapes', default=None,
                        help="--task grasp: object kinds of the scenes, comma-separated ('all': "
                             f"every kind; default {','.join(TRAIN_SHAPES)}; "
                             f"held-out objects: {','.join(HELDOUT_SHAPES)})")
    parser.add_argument('--variant', choices=('default', 'hard'), default='default',
                        help="--task insertion: the socket variant (the frames' group)")
    parser.add_argument('--no-hard-negatives', dest='hard_negatives', action='store_false',
                        help='only normal episodes (grasp: no closed-on-air, '
                             'grasped-not-lifted or dropped episodes; insertion: no peg on '
                             'the rim)')
    parser.add_argument('--image-size', type=positive_int, default=64,
                        help="side (px) of the frames: the camera crop resized (the stack's "
                             'policy image is 64 px; larger for resolution experiments)')
    parser.add_argument('--crop-xywh', default=None, metavar='X,Y,W,H',
                        help='--task grasp: crop (source px) of the 640x480 camera frame that '
                             "is resized to --image-size (default: the stack's policy crop "
                             f"{','.join(str(v) for v in spec.POLICY_CROP_XYWH)}; other crops for "
                             'resolution experiments); with --from-run: the crop that the '
                             "run's camera_pipeline used, recorded in the FrameSet (with "
                             '--source-size; train-classifier needs it for recorded frames)')
    parser.add_argument('--source-size', default=None, metavar='W,H',
                        help="--from-run: the size (px) of the run's camera frames that "
                             '--crop-xywh is taken from (e.g. 640,480 for the Kuka cell)')
    parser.add_argument('--processes', type=positive_int, default=2,
                        help='worker processes')
    parser.add_argument('--out', default=None,
                        help='output .npz (FrameSet; default runs/success/<task>_frames.npz, '
                             'with --from-run runs/success/<run folder name>_frames.npz)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite an existing --out / --montage')
    parser.add_argument('--montage', default=None,
                        help='also save a PNG montage of positive and negative frames here')
    run = parser.add_argument_group(
        'frames of recorded runs (a real robot)',
        "instead of simulating, take the frames of runs that the stack's logger recorded "
        '(awopt bringup --set logger:output_dir=RUN, awopt demo --run-dir RUN): the images '
        "of the run's Minari dataset, or of its episode bags (RUN/bags/episode_NNNN) when the "
        'dataset holds none (insertion)')
    run.add_argument('--from-run', action='append', default=None, metavar='RUN_DIR',
                     help='a recorded run folder (repeat for several; --episodes, --seed and '
                          '--shapes do not apply; --crop-xywh with --source-size record the '
                          "run's camera crop; default: simulate)")
    run.add_argument('--label', choices=('ground_truth', 'operator'), default=None,
                     help="ground_truth: every frame labelled by the run's /success/probability "
                          '(simulation); operator: the last --last-k frames of each episode take '
                          "the episode's verdict (--labels, else the recorded outcome) and "
                          'earlier frames are dropped (default: ground_truth when the run '
                          'recorded /success/probability samples; operator with --labels)')
    run.add_argument('--last-k', type=positive_int, default=None,
                     help=f'--label operator: frames at the end of an episode that its verdict '
                          f'labels (default {DEFAULT_LAST_K})')
    run.add_argument('--labels', default=None, metavar='FILE.json',
                     help="--label operator: the operator's verdicts, a JSON object "
                          '{"<episode number>": true|false, ...} (the episode manager\'s '
                          'number, as in bags/episode_NNNN; "<run folder name>/<number>" picks '
                          'one of several runs); episodes not in it take the recorded outcome '
                          'of their end event (default: none: every episode its recorded '
                          'outcome)')
    run.add_argument('--only-labelled', action='store_true',
                     help='--labels: skip the episodes that the file does not name')


def _crop_option(text, source_size=(640, 480)):
    """``{'crop_xywh': (x, y, w, h)}`` from the ``--crop-xywh`` text 'X,Y,W,H' (source px),
    ``{}`` for None (RolloutConfig's default crop); raises UsageError if malformed or not
    inside the ``source_size`` (W, H) camera frame (default 640x480)."""
    if text is None:
        return {}
    from awopt_ros.cli_args import UsageError
    from awopt_ros.core.image_ops import check_crop
    w, h = (int(v) for v in source_size)
    try:
        crop = tuple(int(v) for v in str(text).split(','))
        if len(crop) != 4:
            raise ValueError('expects 4 integers')
        return {'crop_xywh': tuple(check_crop(crop, w, h))}
    except ValueError as exc:
        raise UsageError('--crop-xywh', f'must be X,Y,W,H inside the {w}x{h} frame, got '
                                        f'{text!r} ({exc})') from None


def _source_size_option(text):
    """``(W, H)`` from the ``--source-size`` text 'W,H' (px); UsageError if malformed."""
    from awopt_ros.cli_args import UsageError
    try:
        size = tuple(int(v) for v in str(text).split(','))
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise UsageError('--source-size', f'must be W,H (two integers >= 1), got {text!r}')
    return size


def run_collect_cli(args):
    """Run ``awopt collect-success-frames``; print the counts; return 0.

    Raises:
        UsageError: bad options (see :func:`frames_from_runs`), an --out or --montage that
            exists without --force.
    """
    from awopt_ros.cli_args import UsageError, check_outputs
    if getattr(args, 'from_run', None):
        return _run_from_runs_cli(args)
    for option in ('label', 'last_k', 'labels'):
        if getattr(args, option, None) is not None:
            raise UsageError('--' + option.replace('_', '-'), 'applies to --from-run only')
    if getattr(args, 'only_labelled', False):
        raise UsageError('--only-labelled', 'applies to --from-run --labels only')
    if getattr(args, 'source_size', None) is not None:
        raise UsageError('--source-size', 'applies to --from-run only (simulated frames '
                                          'record their camera size)')
    if args.task == 'insertion':
        for option, name in (('--shapes', 'shapes'), ('--crop-xywh', 'crop_xywh')):
            if getattr(args, name, None) is not None:
                raise UsageError(option, 'does not apply to --task insertion (grasp object '
                                         'kinds / the Kuka camera crop)')
    args.episodes = DEFAULT_EPISODES if args.episodes is None else args.episodes
    args.seed = 0 if args.seed is None else args.seed
    args.shapes = ','.join(TRAIN_SHAPES) if args.shapes is None else args.shapes
    args.out = args.out or f'runs/success/{args.task}_frames.npz'
    _crop_option(getattr(args, 'crop_xywh', None))            # a malformed crop: before --out
    shapes = None
    if args.task == 'grasp':
        from awopt_ros.sim.scene import check_shapes
        shapes = None if args.shapes.strip() in ('', 'all') else tuple(
            s.strip() for s in args.shapes.split(',') if s.strip())
        try:
            shapes = check_shapes(shapes)
        except ValueError as exc:
            raise UsageError('--shapes', str(exc)) from None
    check_outputs([('--out', args.out)] + ([('--montage', args.montage)] if args.montage
                                           else []), getattr(args, 'force', False))
    seeds = range(args.seed, args.seed + args.episodes)
    if args.task == 'insertion':
        frames = collect_insertion_frames(seeds, variant=args.variant,
                                          image_size=getattr(args, 'image_size', 64),
                                          hard_negatives=args.hard_negatives,
                                          processes=args.processes)
    else:
        from awopt_ros.sim.rollout import RolloutConfig
        frames = collect_grasp_frames(seeds, shapes=shapes,
                                      config=RolloutConfig(
                                          image_size=getattr(args, 'image_size', 64),
                                          **_crop_option(getattr(args, 'crop_xywh', None))),
                                      hard_negatives=args.hard_negatives,
                                      processes=args.processes)
    path = frames.save(args.out)
    if args.montage:
        montage(frames, args.montage)
    print(format_summary(frames))
    print(f'wrote {path} ({frames.meta["wall_s"]:.0f} s)')
    return 0


def _read_labels_file(path):
    """Return the operator's verdicts of ``--labels`` as ``{key: bool}`` (key: ``'12'`` or
    ``'run/12'``); raises UsageError naming --labels when the file is missing, not JSON, not
    an object of booleans, or a key is not an episode number."""
    from awopt_ros.cli_args import UsageError, require_file
    path = require_file('--labels', path, 'labels file')
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError('--labels', f'{path} is not JSON ({exc})') from None
    if not isinstance(data, dict) or not data:
        raise UsageError('--labels', f'{path} must hold a JSON object {{"<episode number>": '
                                     'true|false, ...}} with at least one episode')
    out = {}
    for key, value in data.items():
        number = str(key).rsplit('/', 1)[-1].strip()
        if not number.lstrip('-').isdigit():
            raise UsageError('--labels', f'{path}: {key!r} is not an episode number (expected '
                                         '"12" or "<run folder name>/12")')
        if not isinstance(value, bool):
            raise UsageError('--labels', f'{path}: episode {key!r} must be true or false, got '
                                         f'{json.dumps(value)}')
        out[str(key).strip()] = value
    return out


def _run_source(run):
    """Return ``(kind, dataset root, dataset id, episodes)`` of a run folder: kind 'dataset'
    (a dataset with images; its episodes loaded) or 'bags' (no image dataset; dataset id and
    episodes None when it has no dataset either)."""
    from awopt_ros.core import dataset as ds
    found = sorted(p.parent for p in ds.datasets_dir(run).glob('*/*/data')) \
        if ds.datasets_dir(run).is_dir() else []
    state_ids = []
    for folder in found:
        dataset_id = f'{folder.parent.name}/{folder.name}'
        episodes = ds.load_episodes(run, dataset_id)
        if episodes and 'image' in episodes[0]:
            return 'dataset', run, dataset_id, episodes
        state_ids.append(dataset_id)
    return 'bags', run, (state_ids[0] if state_ids else None), None


def frames_from_runs(runs, label=None, last_k=None, labels=None, only_labelled=False,
                     task='grasp'):
    """Return the labelled frames of recorded run folders (``--from-run``) as one FrameSet.

    Each run gives the images of its Minari dataset (:func:`frames_from_dataset`), or of its
    episode bags (:func:`frames_from_bags`) when it has no dataset with images (insertion);
    the frames' ``group`` is the run folder's name.

    Args:
        runs: run folders (str or Path).
        label: 'ground_truth', 'operator' or None: ground_truth when every run recorded
            ``/success/probability`` samples, operator when ``labels`` are given.
        last_k: frames an operator verdict labels (None: :data:`DEFAULT_LAST_K`).
        labels: ``{'12': bool, 'run/12': bool}`` (:func:`_read_labels_file`) or None.
        only_labelled: skip the episodes that ``labels`` does not name (else they take the
            recorded outcome of their end event).
        task: the task of runs whose dataset does not say it (bags only).

    Returns:
        ``(frames, rows)``: the FrameSet and one ``(run name, episode number, label source,
        frames, positives)`` row per episode kept.

    Raises:
        UsageError: a missing run folder, a run without episodes, ground-truth labels asked
            for (or defaulted to) where a run recorded no ``/success/probability``, options
            that do not apply to the label mode, labels of unknown or ambiguous episodes.
    """
    from awopt_ros.cli_args import UsageError
    if label is None:
        label = 'operator' if labels is not None else None
    if label == 'ground_truth':
        for option, value in (('--last-k', last_k), ('--labels', labels)):
            if value is not None:
                raise UsageError(option, 'applies to --label operator only')
    if only_labelled and labels is None:
        raise UsageError('--only-labelled', 'needs --labels FILE.json')
    last_k = DEFAULT_LAST_K if last_k is None else int(last_k)
    labels = labels or {}
    sets, rows, matched = [], [], collections.defaultdict(list)
    for run in (Path(r) for r in runs):
        if not run.is_dir():
            raise UsageError('--from-run', f'no run folder {run}')
        kind, root, dataset_id, episodes = _run_source(run)
        if kind == 'bags' and not (run / 'bags').is_dir():
            raise UsageError('--from-run', f'{run} holds no episodes (no dataset with images, '
                                           'no bags/ folder)')
        if kind == 'dataset':
            numbers = [ep['episode'] if ep['episode'] is not None else ep['id']
                       for ep in episodes]
            recorded = any(np.isfinite(ep['success_probability']).any() for ep in episodes)
        else:
            try:
                probe = frames_from_bags(run, label='operator', operator_labels={})
            except FileNotFoundError:
                probe = None
            if probe is None or not probe.meta['numbers']:
                raise UsageError('--from-run', f'{run} holds no episodes (empty bags/ folder)')
            numbers, recorded = probe.meta['numbers'], probe.meta['success_samples'] > 0
        if not numbers:
            raise UsageError('--from-run', f'{run} holds no episodes')
        run_label = label or ('ground_truth' if recorded else None)
        if run_label is None:
            raise UsageError('--label', f'{run} recorded no /success/probability samples (no '
                                        'ground truth, e.g. a real robot): use --label operator '
                                        '(and --labels FILE.json with your verdicts)')
        if run_label == 'ground_truth' and not recorded:
            raise UsageError('--label', f'ground_truth: {run} recorded no /success/probability '
                                        'samples; use --label operator')
        verdicts = {}
        for key, value in labels.items():
            prefix, _, number = key.rpartition('/')
            if prefix in ('', run.name) and int(number) in numbers:
                verdicts[int(number)] = value
                matched[key].append(run.name)
        common = dict(label=run_label, last_k=last_k,
                      operator_labels=verdicts if run_label == 'operator' else None,
                      unlabelled='skip' if only_labelled else 'recorded')
        if kind == 'dataset':
            frames = frames_from_dataset(episodes, group=run.name, **common)
            frames.meta['dataset_id'] = dataset_id
        else:
            run_task = 'insertion' if dataset_id and 'insertion' in dataset_id else task
            frames = frames_from_bags(run, task=run_task, group=run.name, **common)
        frames.meta.update(run=str(run), source_kind=kind)
        for e, n, source in frames.meta['sources']:
            mask = frames.episode == e
            rows.append((run.name, n, source, int(mask.sum()), int(frames.labels[mask].sum())))
        sets.append(frames)
    unknown = [k for k in labels if not matched.get(k)]
    if unknown:
        raise UsageError('--labels', f'episodes not in the run(s): {", ".join(unknown)}')
    ambiguous = [k for k, names in matched.items() if len(names) > 1]
    if ambiguous:
        key = ambiguous[0]
        raise UsageError('--labels', f'episode {key} is in several runs; name one as '
                                     f'{" or ".join(f"{n}/{key}" for n in matched[key])} '
                                     '("<run folder name>/<number>")')
    tasks = {s.task for s in sets}
    if len(tasks) > 1:
        raise UsageError('--from-run', f'the runs hold different tasks {sorted(tasks)}')
    frames = FrameSet.concat(sets) if len(sets) > 1 else sets[0]
    frames.meta.update(source='frames_from_runs', runs=[str(r) for r in runs],
                       label=sorted({s.meta['label'] for s in sets}),
                       last_k=last_k, only_labelled=bool(only_labelled))
    if not len(frames):
        raise UsageError('--from-run', 'no labelled frames in the run(s) (with --only-labelled: '
                                       'does --labels name any episode?)')
    return frames, rows


def _run_from_runs_cli(args):
    """``awopt collect-success-frames --from-run``: see :func:`frames_from_runs`."""
    from awopt_ros.cli_args import UsageError, check_outputs
    given = [option for option, name in (('--episodes', 'episodes'), ('--seed', 'seed'),
                                          ('--shapes', 'shapes'))
             if getattr(args, name, None) is not None]
    if given:
        raise UsageError(given[0], 'does not apply to --from-run (the frames come from the '
                                   'recorded episodes)')
    camera = {}
    crop_text, size_text = getattr(args, 'crop_xywh', None), getattr(args, 'source_size', None)
    if (crop_text is None) != (size_text is None):
        raise UsageError('--source-size' if size_text is None else '--crop-xywh',
                         "--from-run records the run's camera crop with both --crop-xywh "
                         'X,Y,W,H and --source-size W,H')
    if crop_text is not None:
        size = _source_size_option(size_text)
        camera = {'crop_xywh': list(_crop_option(crop_text, size)['crop_xywh']),
                  'camera_size': list(size)}
    labels = _read_labels_file(args.labels) if args.labels is not None else None
    out = args.out or f'runs/success/{Path(args.from_run[0]).resolve().name}_frames.npz'
    check_outputs([('--out', out)] + ([('--montage', args.montage)] if args.montage else []),
                  args.force)
    frames, rows = frames_from_runs(args.from_run, label=args.label, last_k=args.last_k,
                                    labels=labels, only_labelled=args.only_labelled,
                                    task=args.task)
    frames.meta.update(camera)
    path = frames.save(out)
    if args.montage:
        montage(frames, args.montage)
    print(format_summary(frames))
    print('  per episode (run, episode, label source: frames, positives):')
    for name, number, source, n, pos in rows:
        print(f'    {name} {number} {source}: {n}, {pos}')
    print(f'wrote {path}')
    return 0


def format_summary(frames):
    """Return a few lines of :meth:`FrameSet.summary` counts."""
    s = frames.summary()
    lines = [f'{s["frames"]} frames, {s["episodes"]} episodes, {s["positives"]} positive '
             f'({s["positive_fraction"]:.2f}), {s["positive_episodes"]} episodes with a '
             'positive frame']
    for name in ('group', 'kind'):
        for key, c in s[name].items():
            lines.append(f'  {name} {key}: {c["frames"]} frames, {c["positives"]} positive, '
                         f'{c["episodes"]} episodes')
    scen = frames.meta.get('scenarios')
    if scen:
        lines.append('  scenarios: ' + ', '.join(
            f'{k} {v}' for k, v in sorted(collections.Counter(scen).items())))
    return '\n'.join(lines)
