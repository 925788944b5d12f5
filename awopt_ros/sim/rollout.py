"""Fast in-process rollouts (no ROS) of the grasping task, in the logged dataset's layout.

For experiments that need many episodes (offline-to-online RL comparisons, evaluations): the
same simulated cell (:class:`awopt_ros.sim.scene.GraspSim`), the same policy image
(:func:`awopt_ros.core.image_ops.crop_resize` of the 640x480 camera frame), the same arm
interface step (:func:`awopt_ros.core.arm.arm_command`: safety filter + differential IK) and
the same episode ends (success = an object lifted, debounced; terminate action; step budget) as
the ROS stack, driven in one loop with no middleware, clock or message latency. Episodes come
back as dicts in the layout :class:`awopt_ros.core.dataset.EpisodeRecorder` writes to the
Minari dataset (see :meth:`RolloutEnv.run_episode`), so the learning code
(``awopt_ros.learning.data``, ``awopt_ros.learning.awopt.ReplayBuffer.from_episodes``)
consumes both.

One step (``control_period_s``, 0.1 s by default):

1. observation ``obs_t``: camera frame -> crop + resize -> ``image``; joints -> ``proprio``;
2. ``action_t = policy.act(obs_t)``;
3. ``arm_command`` -> arm joint / gripper targets (a non-finite action is rejected: the arm
   holds its targets, exactly as the arm interface does);
4. physics for ``control_period_s``; observation ``obs_{t+1}``;
5. episode end, checked in this order: ``success`` when an object has been lifted for
   ``success_debounce_steps`` consecutive observations, ``terminate`` when ``action_t`` set
   its terminate entry, ``timeout`` after ``max_steps`` actions.

Differences from the stack, all at episode boundaries: the stack decides ``terminate`` and
``timeout`` the moment the action arrives, so a lift caused by that very action does not count
there but does here (here the action's physics is always run and judged first); the stack's
wall-clock ``timeout_s`` and lost-node outcomes do not exist here. The logger drops a step whose
action is non-finite; here it is kept with the action the arm executed (all zeros: hold) and
flagged in ``infos['action_rejected']``, so consecutive observations stay one control period
apart.

Policies are objects with ``reset()`` and ``act(obs) -> (action, info)``; see
:class:`ScriptedAdapter` and :class:`CallableAdapter`. :func:`collect` runs many episodes in
worker processes. Rendering needs an offscreen GL: set ``MUJOCO_GL=egl`` (or ``osmesa``) in the
environment before starting (worker processes inherit it).
"""
import collections
import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import math
import multiprocessing as mp
import pickle
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from awopt_ros.core import robot, spec
from awopt_ros.core.arm import arm_command
from awopt_ros.core.dataset import policy_id
from awopt_ros.core.image_ops import check_crop, crop_resize
from awopt_ros.core.safety import SafetyLimits

#: Stack configuration these defaults come from (relative to the package share directory).
CONFIG_PATH = 'config/awopt_ros_kuka_grasp.yaml'
OUTCOMES = ('success', 'terminate', 'timeout')
#: Info keys the rollout itself writes; a policy info key with one of these names is stored
#: as ``'policy_' + key`` instead.
RESERVED_INFOS = ('success_probability', 'policy', 'policy_name', 'stamp_s', 'action_rejected')


def default_limits():
    """Return the arm interface's :class:`SafetyLimits` of ``config/awopt_ros_kuka_grasp.yaml``.

    max_step_m 0.03 m, max_yaw_step_rad 0.2 rad, workspace (0.35, -0.3, 0.02) to
    (0.85, 0.3, 0.5) m in base_link.
    """
    return SafetyLimits(max_step_m=0.03, max_yaw_step_rad=0.2,
                        workspace_min_m=(0.35, -0.3, 0.02), workspace_max_m=(0.85, 0.3, 0.5))


@dataclass
class RolloutConfig:
    """Settings of the in-process rollout; every default equals the stack's configuration
    (``config/awopt_ros_kuka_grasp.yaml``, node named in brackets).

    Attributes:
        urdf_path: robot URDF; relative paths resolve against the package share directory
            [sim_robot, arm_interface].
        num_objects: objects in the bin [sim_robot].
        image_size: side S (px) of the square uint8 (S, S, 3) policy image [camera_pipeline].
        crop_xywh: (x, y, w, h) crop of the camera frame (source px) [camera_pipeline].
        max_steps: actions per episode before ``timeout`` (>= 1) [episode_manager].
        control_period_s: time per action (s, > 0) [arm_interface].
        limits: :class:`SafetyLimits` of each commanded step [arm_interface].
        success_debounce_steps: consecutive lifted observations that count as success (>= 1)
            [episode_manager ``success_debounce_steps``].
        success_height_m: lift height (m above the bin floor) that counts as lifted
            [sim_robot].
        physics_dt_s: physics time step (s) [sim_robot].
        camera_size: (width, height) of the camera frame (px) [sim_robot image_width/height].
        reopen_empty_gripper: an action with both gripper bits set opens a gripper that
            holds nothing (``core.arm.gripper_target``) [arm_interface].
        shapes: None (objects of every shape, the stack's scenes) or a tuple of the object
            shapes scenes are made of (``sim.scene.SHAPES`` names; e.g. held-out objects).

    Raises:
        ValueError: a value out of range, or a crop outside the camera frame.
    """

    urdf_path: str = robot.URDF_PATH
    num_objects: int = 5
    image_size: int = spec.POLICY_IMAGE_SIZE
    crop_xywh: tuple = spec.POLICY_CROP_XYWH
    max_steps: int = 40
    control_period_s: float = 0.1
    limits: SafetyLimits = field(default_factory=default_limits)
    success_debounce_steps: int = 2
    success_height_m: float = 0.12
    physics_dt_s: float = 0.002
    camera_size: tuple = (640, 480)
    reopen_empty_gripper: bool = True
    shapes: tuple | None = None

    def __post_init__(self):
        if self.shapes is not None:
            from awopt_ros.sim.scene import check_shapes
            self.shapes = check_shapes(self.shapes)
        self.urdf_path = str(self.urdf_path)
        for name in ('num_objects', 'image_size', 'max_steps', 'success_debounce_steps'):
            value = getattr(self, name)
            if int(value) != value or int(value) < 1:
                raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
            setattr(self, name, int(value))
        for name in ('control_period_s', 'success_height_m', 'physics_dt_s'):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f'{name} must be a finite value > 0, got {value!r}')
            setattr(self, name, value)
        if self.physics_dt_s > self.control_period_s:
            raise ValueError(f'physics_dt_s {self.physics_dt_s} must not exceed '
                             f'control_period_s {self.control_period_s}')
        cam = tuple(int(v) for v in self.camera_size)
        if len(cam) != 2 or min(cam) < 1:
            raise ValueError(f'camera_size must be (width, height) >= 1 px, got '
                             f'{self.camera_size!r}')
        self.camera_size = cam
        self.crop_xywh = check_crop(self.crop_xywh, cam[0], cam[1])
        self.reopen_empty_gripper = bool(self.reopen_empty_gripper)
        if not isinstance(self.limits, SafetyLimits):
            raise ValueError(f'limits must be a SafetyLimits, got {type(self.limits).__name__}')

    @property
    def physics_steps(self):
        """Physics steps per control period: ``round(control_period_s / physics_dt_s)``."""
        return max(1, int(round(self.control_period_s / self.physics_dt_s)))

    @classmethod
    def from_yaml(cls, path=CONFIG_PATH, **overrides):
        """Build a config from a stack parameter file (node-keyed ``ros__parameters``).

        Values missing from the file keep their defaults; ``overrides`` (field=value) win.
        """
        import yaml

        from awopt_ros.core.paths import resolve
        with open(resolve(path), encoding='utf-8') as f:
            doc = yaml.safe_load(f) or {}

        def params(node):
            return (doc.get(node) or {}).get('ros__parameters') or {}

        sim, cam = params('sim_robot'), params('camera_pipeline')
        arm, mgr = params('arm_interface'), params('episode_manager')
        kw = {}
        for key, src, name in (('urdf_path', sim, 'urdf_path'),
                               ('num_objects', sim, 'num_objects'),
                               ('success_height_m', sim, 'success_height_m'),
                               ('physics_dt_s', sim, 'physics_dt_s'),
                               ('image_size', cam, 'image_size'),
                               ('crop_xywh', cam, 'crop_xywh'),
                               ('control_period_s', arm, 'control_period_s'),
                               ('reopen_empty_gripper', arm, 'reopen_empty_gripper'),
                               ('max_steps', mgr, 'max_steps'),
                               ('success_debounce_steps', mgr, 'success_debounce_steps')):
            if name in src:
                kw[key] = src[name]
        if 'image_width' in sim or 'image_height' in sim:
            kw['camera_size'] = (sim.get('image_width', 640), sim.get('image_height', 480))
        lim = default_limits()
        kw['limits'] = SafetyLimits(
            max_step_m=arm.get('max_step_m', lim.max_step_m),
            max_yaw_step_rad=arm.get('max_yaw_step_rad', lim.max_yaw_step_rad),
            workspace_min_m=tuple(arm.get('workspace_min_m', lim.workspace_min_m)),
            workspace_max_m=tuple(arm.get('workspace_max_m', lim.workspace_max_m)))
        kw.update(overrides)
        return cls(**kw)


# -- policies -------------------------------------------------------------------------------

def _split_result(result):
    """``act`` may return ``(action, info)`` or a bare action; return (action, info dict)."""
    if isinstance(result, tuple) and len(result) == 2 and (
            result[1] is None or isinstance(result[1], dict)):
        return result[0], dict(result[1] or {})
    return result, {}


class ScriptedAdapter:
    """Run a :class:`awopt_ros.sim.scripted.ScriptedGraspPolicy` on rollout observations.

    It reads the privileged ``object_poses`` and ``object_extents`` of the observation.

    Args:
        policy: a ``ScriptedGraspPolicy`` (its noise RNG runs on across episodes, so outcomes
            depend on which episodes one instance ran before; see :meth:`seeded`).
        name: policy kind for the dataset's ``policy`` info ('scripted' -> id 0).
    """

    def __init__(self, policy, name='scripted'):
        self.policy = policy
        self.name = str(name)
        self._make = None

    @classmethod
    def seeded(cls, noise_std_m=0.004, slip_probability=0.35, seed_offset=0, name='scripted'):
        """An adapter that builds a fresh ``ScriptedGraspPolicy`` for every episode, its noise
        seeded from (episode seed, ``seed_offset``): an episode's actions depend on its seed
        only, not on the worker or the episodes run before it.
        """
        from awopt_ros.sim.scripted import ScriptedGraspPolicy
        adapter = cls(None, name=name)

        def make(seed):
            state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed_offset)])
            return ScriptedGraspPolicy(seed=int(state.generate_state(1)[0]),
                                       noise_std_m=noise_std_m,
                                       slip_probability=slip_probability)
        adapter._make = make
        return adapter

    def begin_episode(self, seed):
        """Called by :meth:`RolloutEnv.run_episode` with the scene seed before :meth:`reset`."""
        if self._make is not None:
            self.policy = self._make(seed)

    def reset(self):
        """Start a new episode."""
        if self.policy is None:
            raise RuntimeError('ScriptedAdapter.seeded needs begin_episode(seed) before reset')
        self.policy.reset()

    def act(self, obs):
        """Return (float32 (7,) action, info) from ``obs['proprio']``, ``obs['object_poses']``
        and ``obs['object_extents']``; info ``grasp_goal`` float32 (4,) is the policy's
        noise-free grasp goal (``ScriptedGraspPolicy.grasp_goal``), as the ROS node publishes
        it and the logger stores it."""
        action = self.policy.act(obs['proprio'], obs['object_poses'], obs['object_extents'])
        return (np.asarray(action, dtype=np.float32),
                {'grasp_goal': np.asarray(self.policy.grasp_goal, dtype=np.float32)})


class CallableAdapter:
    """Wrap a learned policy ``fn(image, proprio) -> action`` (image/proprio only).

    Args:
        fn: callable taking uint8 (S, S, 3) RGB and float32 (6,) proprio, returning a (7,)
            action, or ``(action, info dict)`` (e.g. ``OnnxActor(...).act``, or
            ``lambda im, p: learner.act(im, p, mode='actor_explore')``).
        name: policy kind for the dataset's ``policy`` info: 'actor' (id 1), 'cem' (2),
            'scripted' (0), anything else 'other' (3). The info dict may also carry
            ``'policy': kind`` to name one step's policy (mixed exploration).
        reset_fn: optional callable run at the start of each episode.
    """

    def __init__(self, fn, name='actor', reset_fn=None):
        if not callable(fn):
            raise ValueError(f'fn must be callable, got {type(fn).__name__}')
        self.fn = fn
        self.name = str(name)
        self.reset_fn = reset_fn

    def reset(self):
        """Start a new episode (calls ``reset_fn`` if given)."""
        if self.reset_fn is not None:
            self.reset_fn()

    def act(self, obs):
        """Return ``(action, info)`` from ``fn(obs['image'], obs['proprio'])``."""
        return _split_result(self.fn(obs['image'], obs['proprio']))


@dataclass
class ScriptedFactory:
    """Picklable ``make_policy`` for :func:`collect`: a :meth:`ScriptedAdapter.seeded` per
    worker (outcomes independent of the number of worker processes).

    Attributes:
        noise_std_m: per-step motion noise (m) of ``ScriptedGraspPolicy``.
        slip_probability: probability of a large per-episode grasp-point error.
        seed_offset: mixed into every episode's policy seed.
    """

    noise_std_m: float = 0.004
    slip_probability: float = 0.35
    seed_offset: int = 0

    def __call__(self, worker_index):
        return ScriptedAdapter.seeded(self.noise_std_m, self.slip_probability,
                                      self.seed_offset)


# -- environment ------------------------------------------------------------------------------

class RolloutEnv:
    """One simulated cell and its kinematics, running whole episodes in process.

    Args:
        config: :class:`RolloutConfig` (default: the stack's values).

    Use as a context manager or call :meth:`close` to release the renderer.
    """

    def __init__(self, config=None):
        from awopt_ros.core.kinematics import Kinematics
        from awopt_ros.core.paths import resolve
        from awopt_ros.sim.scene import GraspSim
        self.config = config if config is not None else RolloutConfig()
        urdf = str(resolve(self.config.urdf_path))
        c = self.config
        self.sim = GraspSim(urdf, num_objects=c.num_objects, physics_dt_s=c.physics_dt_s,
                            image_size=c.camera_size, success_height_m=c.success_height_m,
                            shapes=c.shapes)
        self.kin = Kinematics(urdf)

    def close(self):
        """Release the renderer's GL context."""
        self.sim.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def tool_position(self):
        """Return the (3,) float64 tcp position (m, base_link) from the measured joints."""
        pos, _ = self.kin.fk(self.sim.joint_positions()[:7])
        return np.asarray(pos, dtype=np.float64)

    def observe(self):
        """Return the current observation dict.

        Keys: ``image`` uint8 (S, S, 3) RGB policy crop; ``proprio`` float32 (6,)
        (``spec.PROPRIO_NAMES``: tcp xyz m, sin/cos yaw, gripper closedness 0..1);
        ``object_poses`` float64 (N, 7) (xyz m, quat wxyz, base_link) and
        ``object_extents`` float64 (N, 3) half extents (m): privileged, for scripted policies
        only; a learned policy must use ``image`` and ``proprio`` alone (all the stack gives
        it).
        """
        c = self.config
        frame = self.sim.render()
        q = self.sim.joint_positions()
        return {'image': crop_resize(frame, c.crop_xywh, c.image_size),
                'proprio': np.asarray(self.kin.proprio(q[:7], q[7]), dtype=np.float32),
                'object_poses': np.array(self.sim.object_poses(), dtype=np.float64),
                'object_extents': np.array(self.sim.object_extents(), dtype=np.float64)}

    def run_episode(self, seed, policy, record=True):
        """Run one episode of scene ``seed`` with ``policy``.

        Args:
            seed: scene seed (int): object set, poses and arm start pose.
            policy: object with ``reset()`` and ``act(obs) -> (action, info)`` (``obs`` as
                :meth:`observe`; ``action`` (7,) per ``spec.ACTION_NAMES``; ``info`` a dict of
                scalars/arrays, may be omitted). Optional ``begin_episode(seed)`` is called
                before ``reset()``; optional ``name`` (str) gives its policy kind.
            record: keep observations, actions and infos (False: summary fields only).

        Returns:
            dict (T = ``steps``, S = image size):

            - ``observations``: ``image`` uint8 (T+1, S, S, 3), ``proprio`` float32 (T+1, 6);
              entry t is what action t was computed from, entry T the final observation;
            - ``actions`` float32 (T, 7): the policy's action clipped to
              ``spec.ACTION_LOW..HIGH``; a rejected (non-finite) action is stored as zeros,
              which is what the arm executed (hold);
            - ``rewards`` float64 (T,): 1.0 on the last step when the episode succeeded, else 0
              (float64 as ``EpisodeRecorder`` stores and ``load_episodes`` returns them);
            - ``terminations`` / ``truncations`` bool (T,): set on the last step only,
              terminated for success/terminate, truncated for timeout;
            - ``infos`` (T+1 entries each, aligned with the observations; the final entry
              repeats the last step's): ``success_probability`` float32 (the ground-truth
              detector, 1.0 when an object is lifted in that observation), ``policy`` int64
              (``core.dataset.POLICY_IDS``), ``stamp_s`` float64 (simulated time since reset,
              s), as in the Minari dataset; plus ``policy_name`` str array,
              ``action_rejected`` bool and every key of the policy's info dicts (stacked into
              an array; a list when steps disagree in shape or miss the key);
            - ``seed`` int, ``outcome`` 'success' | 'terminate' | 'timeout', ``success`` bool,
              ``terminated`` bool, ``truncated`` bool, ``steps`` int (T),
              ``wall_s`` float (s), ``policy_name`` str, ``rejected_actions`` /
              ``clipped_actions`` / ``clamped_actions`` int (actions the safety filter
              rejected, step-limited, or moved back into the workspace).

        Raises:
            ValueError: the policy returned an action that is not 7 values.
        """
        c = self.config
        t0 = time.monotonic()
        seed = int(seed)
        self.sim.reset(seed)
        if hasattr(policy, 'begin_episode'):
            policy.begin_episode(seed)
        policy.reset()
        default_name = str(getattr(policy, 'name', 'other'))
        n_physics = c.physics_steps
        obs = self.observe()
        lifted = self.sim.object_lifted()
        images, proprios, actions, sprob, stamps = [], [], [], [], []
        names, rejected_flags, step_infos = [], [], []
        counts = {'rejected_actions': 0, 'clipped_actions': 0, 'clamped_actions': 0}
        lifted_run = 0
        outcome, steps = 'timeout', 0
        for steps in range(1, c.max_steps + 1):
            if record:
                images.append(obs['image'])
                proprios.append(obs['proprio'])
                sprob.append(1.0 if lifted else 0.0)
                stamps.append(self.sim.time_s)
            raw, info = _split_result(policy.act(obs))
            raw = np.asarray(raw, dtype=np.float32).reshape(-1)
            if raw.shape != (spec.ACTION_DIM,):
                raise ValueError(f'policy {default_name!r} returned an action of shape '
                                 f'{raw.shape}, expected ({spec.ACTION_DIM},) '
                                 f'{spec.ACTION_NAMES}')
            q = self.sim.joint_positions()
            closedness = spec.gripper_closedness(q[7]) if c.reopen_empty_gripper else None
            cmd = arm_command(self.kin, q[:7], raw, c.limits, c.control_period_s, closedness)
            counts['rejected_actions'] += cmd.flags.rejected
            counts['clipped_actions'] += cmd.flags.clipped
            counts['clamped_actions'] += cmd.flags.clamped
            if cmd.q_target is not None:
                self.sim.set_arm_target(cmd.q_target)
            if cmd.gripper_m is not None:
                self.sim.set_gripper_target(cmd.gripper_m)
            self.sim.step(n_physics)
            if record:
                if cmd.flags.rejected:
                    actions.append(np.zeros(spec.ACTION_DIM, dtype=np.float32))
                else:
                    actions.append(np.clip(raw, spec.ACTION_LOW, spec.ACTION_HIGH)
                                   .astype(np.float32))
                name = info.pop('policy', None)
                names.append(default_name if name is None else str(name))
                rejected_flags.append(bool(cmd.flags.rejected))
                step_infos.append(info)
            obs = self.observe()
            lifted = self.sim.object_lifted()
            lifted_run = lifted_run + 1 if lifted else 0
            if lifted_run >= c.success_debounce_steps:
                outcome = 'success'
                break
            if not cmd.flags.rejected and spec.is_set(raw[spec.IDX_TERMINATE]):
                outcome = 'terminate'
                break
        result = {'seed': seed, 'outcome': outcome, 'success': outcome == 'success',
                  'terminated': outcome in ('success', 'terminate'),
                  'truncated': outcome == 'timeout', 'steps': steps,
                  'policy_name': default_name, **counts}
        if record:
            result.update(self._layout(obs, lifted, images, proprios, actions, sprob, stamps,
                                       names, rejected_flags, step_infos, result))
        result['wall_s'] = time.monotonic() - t0
        return result

    def _layout(self, final_obs, final_lifted, images, proprios, actions, sprob, stamps,
                names, rejected_flags, step_infos, result):
        steps = len(actions)
        rewards = np.zeros(steps, dtype=np.float64)
        terminations = np.zeros(steps, dtype=bool)
        truncations = np.zeros(steps, dtype=bool)
        rewards[-1] = 1.0 if result['success'] else 0.0
        terminations[-1] = result['terminated']
        truncations[-1] = result['truncated']
        infos = {
            'success_probability': np.array(sprob + [1.0 if final_lifted else 0.0],
                                            dtype=np.float32),
            'policy': np.array([policy_id(n) for n in names + names[-1:]], dtype=np.int64),
            'stamp_s': np.array(stamps + [self.sim.time_s], dtype=np.float64),
            'policy_name': np.array(names + names[-1:], dtype=str),
            'action_rejected': np.array(rejected_flags + rejected_flags[-1:], dtype=bool),
        }
        keys = list(dict.fromkeys(k for info in step_infos for k in info))
        for key in keys:
            values = [info.get(key) for info in step_infos]
            values.append(values[-1])
            out_key = 'policy_' + key if key in RESERVED_INFOS else key
            stacked = values
            if all(v is not None for v in values):
                try:
                    stacked = np.stack([np.asarray(v) for v in values])
                except ValueError:
                    stacked = values
            infos[out_key] = stacked
        return {'observations': {'image': np.stack(images + [final_obs['image']]),
                                 'proprio': np.stack(proprios + [final_obs['proprio']])},
                'actions': np.stack(actions), 'rewards': rewards,
                'terminations': terminations, 'truncations': truncations, 'infos': infos}


# -- many episodes -------------------------------------------------------------------------------

class RolloutError(RuntimeError):
    """An episode failed inside :func:`collect` (the message names the seed and the worker and
    carries the original traceback)."""


_WORKER = {}


def _worker_init(config, make_policy, counter):
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _WORKER.clear()
    _WORKER.update(index=index, config=config, make_policy=make_policy, env=None, policy=None)


def _worker_episode(seed, record):
    w = _WORKER
    what = f'rollout worker {w["index"]} could not build its env/policy (for seed {seed})'
    try:
        if w['env'] is None:
            env = RolloutEnv(w['config'])
            w['policy'] = w['make_policy'](w['index'])
            w['env'] = env
        what = f'episode with seed {seed} failed in rollout worker {w["index"]}'
        return w['env'].run_episode(seed, w['policy'], record=record)
    except Exception as exc:  # noqa: BLE001 - re-raised with context in the parent
        raise RolloutError(f'{what}: {type(exc).__name__}: {exc}\n--- worker traceback ---\n'
                           f'{traceback.format_exc()}') from None


def _progress_bar(total, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc='rollout', unit='ep')


def _tick(bar, episodes_done):
    if bar is None:
        return
    bar.update(1)
    bar.set_postfix(success=f'{success_rate(episodes_done):.2f}', refresh=False)


def collect(seeds, make_policy, config=None, processes=2, progress=True, record=True):
    """Run one episode per seed; return the episode dicts in the order of ``seeds``.

    Args:
        seeds: iterable of int scene seeds.
        make_policy: picklable callable ``make_policy(worker_index) -> policy`` (a module-level
            function, ``functools.partial`` or e.g. :class:`ScriptedFactory`); every worker
            builds its own policy and :class:`RolloutEnv` once and runs its episodes with them.
        config: :class:`RolloutConfig` (default: the stack's values).
        processes: worker processes ('spawn' context); 1 runs in this process, no pool.
            Capped at the number of seeds.
        progress: show a tqdm progress bar.
        record: passed to :meth:`RolloutEnv.run_episode`; recorded episodes stay in memory
            (about 12.3 kB per step with 64 px images), so collect very many in chunks.

    Returns:
        list of episode dicts (:meth:`RolloutEnv.run_episode`), ``result[i]`` for
        ``seeds[i]``. With a per-worker stateful policy (e.g. a bare ``ScriptedAdapter``)
        outcomes may depend on ``processes``; policies seeded per episode (``ScriptedFactory``,
        deterministic actors) give the same episodes for any ``processes``.

    Raises:
        RolloutError: an episode (or building a worker's env/policy) failed; the message
            names the seed and includes the original traceback. Pending episodes are
            cancelled.
        ValueError: ``processes`` < 1, or ``make_policy``/``config`` not picklable with
            ``processes`` > 1.
    """
    seeds = [int(s) for s in seeds]
    config = config if config is not None else RolloutConfig()
    if int(processes) < 1:
        raise ValueError(f'processes must be >= 1, got {processes}')
    processes = min(int(processes), max(1, len(seeds)))
    if not seeds:
        return []
    bar = _progress_bar(len(seeds), progress)
    try:
        if processes == 1:
            return _collect_here(seeds, make_policy, config, record, bar)
        return _collect_pool(seeds, make_policy, config, processes, record, bar)
    finally:
        if bar is not None:
            bar.close()


def _collect_here(seeds, make_policy, config, record, bar):
    out = []
    try:
        env = RolloutEnv(config)
    except Exception as exc:
        raise RolloutError(f'could not build the rollout env: {type(exc).__name__}: '
                           f'{exc}') from exc
    with env:
        try:
            policy = make_policy(0)
        except Exception as exc:
            raise RolloutError(f'make_policy(0) failed: {type(exc).__name__}: {exc}') from exc
        for seed in seeds:
            try:
                out.append(env.run_episode(seed, policy, record=record))
            except Exception as exc:
                raise RolloutError(f'episode with seed {seed} failed: '
                                   f'{type(exc).__name__}: {exc}') from exc
            _tick(bar, out)
    return out


def _collect_pool(seeds, make_policy, config, processes, record, bar):
    try:
        pickle.dumps((config, make_policy))
    except Exception as exc:
        raise ValueError(f'make_policy and config must be picklable to run in worker '
                         f'processes (use a module-level function, functools.partial or a '
                         f'class instance such as ScriptedFactory; or processes=1): '
                         f'{type(exc).__name__}: {exc}') from exc
    ctx = mp.get_context('spawn')
    counter = ctx.Value('i', 0)
    results = [None] * len(seeds)
    done = []
    with cf.ProcessPoolExecutor(max_workers=processes, mp_context=ctx,
                                initializer=_worker_init,
                                initargs=(config, make_policy, counter)) as pool:
        futures = {pool.submit(_worker_episode, seed, record): i for i, seed in enumerate(seeds)}
        try:
            for future in cf.as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except RolloutError:
                    raise
                except BrokenProcessPool as exc:
                    raise RolloutError(f'a rollout worker process died while running seed '
                                       f'{seeds[i]} (crash or killed, e.g. out of memory); '
                                       f'see its stderr') from exc
                except Exception as exc:   # e.g. the result or make_policy failed to pickle
                    raise RolloutError(f'episode with seed {seeds[i]} failed: '
                                       f'{type(exc).__name__}: {exc}') from exc
                done.append(results[i])
                _tick(bar, done)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


# -- summaries -----------------------------------------------------------------------------------

def success_rate(episodes):
    """Return the fraction (0..1) of ``episodes`` with ``success``; NaN for no episodes."""
    episodes = list(episodes)
    if not episodes:
        return float('nan')
    return sum(bool(ep['success']) for ep in episodes) / len(episodes)


def summarise(episodes):
    """Return a summary dict of ``episodes``.

    Keys: ``episodes`` int, ``successes`` int, ``success_rate`` float (NaN if none),
    ``outcomes`` dict outcome -> count, ``mean_steps`` float (NaN if none),
    ``rejected_actions`` int (total), ``wall_s`` float (sum of episode wall times, s).
    """
    episodes = list(episodes)
    steps = [int(ep['steps']) for ep in episodes]
    return {
        'episodes': len(episodes),
        'successes': sum(bool(ep['success']) for ep in episodes),
        'success_rate': success_rate(episodes),
        'outcomes': dict(collections.Counter(ep['outcome'] for ep in episodes)),
        'mean_steps': float(np.mean(steps)) if steps else float('nan'),
        'rejected_actions': sum(int(ep.get('rejected_actions', 0)) for ep in episodes),
        'wall_s': float(sum(float(ep.get('wall_s', 0.0)) for ep in episodes)),
    }
