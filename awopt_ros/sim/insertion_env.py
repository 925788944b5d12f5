"""Gymnasium environment of the in-process insertion task: the residual of a P-controller.

Residual reinforcement learning (Johannink et al. 2019; Schoettler et al. 2019, FACTS.md
"Residual RL"): the command of each 0.1 s step is a P-controller toward the OBSERVED (noisy)
goal plus a bounded learned residual,

    base = -kp * (x - goal_observed)                   (core.residual.p_controller)
    u    = clip(base + alpha * clip(r, -1, 1), -max_step, max_step)   (core.residual.command)

and ``u`` (m, base_link) goes to the arm exactly as the stack sends it: the 7-D arm action
``[u, 0, 0, 0, 0]`` (``core.residual.arm_action``) through ``core.arm.arm_command`` (safety
filter, differential IK on the Sawyer's kinematics, joint limits), then
``InsertionSim.set_arm_target`` and one control period of physics. Every learner (the
project's and stable-baselines3) runs on this one class, so all of them see the same task.

Spaces:
    observation: float32 (15,) ``core.residual.insertion_state`` (names
        ``core.task.INSERTION_STATE_NAMES``: pose relative to the noisy goal (m), tool
        velocity (m/s), wrench in the tool frame zeroed at reset (N, N m), this tick's
        P-controller step (m)); unbounded Box.
    action: float32 (3,) residual in [-1, 1] (fraction of ``alpha_m`` per axis).

Episode semantics (contract 23 section 5):
    * terminated with reward 1 when ``InsertionSim.success()`` (inserted to >= 90 % of the
      depth inside the bore) after a step;
    * terminated with reward 0 and ``info['fault'] = 'force_limit'`` when the wrench's force
      magnitude exceeds ``ResidualConfig.force_limit_n`` (the controller would back off and
      end the episode as failed);
    * truncated after ``max_steps`` (50) steps otherwise.
    With ``reward='dense'`` each step is rewarded with the thesis' dense reward
    (:func:`dense_reward`, negative) and success still terminates. It suits learners of
    returns (SB3 SAC), not the project's learner, whose critic predicts success
    probabilities in [0, 1] (``learning.insertion`` refuses that combination).

Seeding: ``reset(seed=s)`` resets the scene with ``InsertionSim.reset(s)``, so the same ``s``
gives the same socket pose, goal noise and start pose whichever policy acts (the experiment's
fixed evaluation scenes). ``reset()`` without a seed draws the scene seed from the
environment's own generator (seeded by the first ``reset(seed=...)`` or the constructor's
``seed``), so a training run is reproducible from its seed.
"""
import dataclasses

import numpy as np

try:
    import gymnasium as gym
except ImportError as exc:   # pragma: no cover - gymnasium is in requirements.txt
    raise ImportError('the insertion environment needs gymnasium (pip install gymnasium)') \
        from exc

from awopt_ros.core import residual as res
from awopt_ros.core.arm import arm_command
from awopt_ros.core.safety import JointSafety, SafetyLimits

#: Episode length (steps at 10 Hz), contract 23.
MAX_STEPS = 50
#: Thesis dense reward (Schoettler et al. 2019, FACTS.md): weights of the L1 distance (1/m),
#: of the inverse L2 distance (m) and of the vertical force (1/N), and the epsilon (m).
DENSE_ALPHA, DENSE_BETA, DENSE_PHI, DENSE_EPS = 100.0, 0.002, 0.1, 0.01
REWARDS = ('sparse', 'dense')


def default_limits(socket_m):
    """Return the arm interface's :class:`SafetyLimits` for insertion around ``socket_m``.

    Per-axis step up to 0.01 m (= ``ResidualConfig.max_step_m``), yaw step 0.2 rad, workspace
    box +-0.1 m in x, y around the socket top centre and from 5 cm below it to 20 cm above.
    """
    s = np.asarray(socket_m, dtype=np.float64).reshape(3)
    return SafetyLimits(max_step_m=0.01, max_yaw_step_rad=0.2,
                        workspace_min_m=tuple((s + (-0.1, -0.1, -0.05)).tolist()),
                        workspace_max_m=tuple((s + (0.1, 0.1, 0.2)).tolist()))


def dense_reward(tool_m, goal_m, force_z_n, inserted):
    """Return the thesis' dense insertion reward (float) for one step.

    ``r = -alpha ||x - x*||_1 - beta / (||x - x*||_2 + eps) - phi * s * p`` with alpha 100
    (1/m), beta 0.002 (m), eps 0.01 (m), phi 0.1 (1/N), ``s = +1`` before insertion and -1
    once inserted (the sign of phi flips); ``x`` the tool tip and ``x*`` the TRUE goal (m,
    base_link; the reward is computed by the simulator, which knows it).

    ``p = -force_z_n`` is the force pressing the peg down along its axis (N, > 0 when the peg
    pushes onto a surface): ``force_z_n`` is the wrench's z force in the tool frame as the
    sensor reports it (``InsertionSim.wrench``: the force the environment exerts ON the peg,
    tool z along the peg, pointing down), which is negative when the peg presses down. So
    pressing before insertion (e.g. on the socket's top face) lowers the reward by phi per
    newton and pressing once inserted raises it.

    Args:
        tool_m, goal_m: (3,) positions (m).
        force_z_n: wrench z force (N), sensor convention above.
        inserted: True once the peg counts as inserted (the environment passes its success).
    """
    d = np.asarray(tool_m, dtype=np.float64) - np.asarray(goal_m, dtype=np.float64)
    sign = -1.0 if inserted else 1.0
    press_n = -float(force_z_n)
    return float(-DENSE_ALPHA * np.abs(d).sum() - DENSE_BETA / (np.linalg.norm(d) + DENSE_EPS)
                 - DENSE_PHI * sign * press_n)


class InsertionResidualEnv(gym.Env):
    """The residual insertion task as a gymnasium environment (see the module docstring).

    Args:
        config: ``sim.insertion.InsertionConfig`` or None (defaults; rendering is switched
            off here, the state observation needs no image).
        residual: False ignores the action (the P-controller alone; the action space stays).
        reward: 'sparse' (1 on success) or 'dense' (:func:`dense_reward`).
        seed: seed of the scene-seed generator (used when ``reset`` gets no seed).
        residual_config: ``core.residual.ResidualConfig`` (kp, alpha_m, max_step_m,
            force_limit_n); default one when None.
        max_steps: episode length (steps) before truncation.
        limits: ``core.safety.SafetyLimits`` of the arm interface, or None
            (:func:`default_limits` around the sim's nominal socket).
        sim: an existing ``InsertionSim`` to drive (tests); None builds one from ``config``.

    Raises:
        ValueError: unknown ``reward`` or ``max_steps`` < 1.
    """

    metadata = {'render_modes': []}

    def __init__(self, config=None, residual=True, reward='sparse', seed=None,
                 residual_config=None, max_steps=MAX_STEPS, limits=None, sim=None):
        if reward not in REWARDS:
            raise ValueError(f'reward must be one of {REWARDS}, got {reward!r}')
        if int(max_steps) < 1:
            raise ValueError(f'max_steps must be >= 1, got {max_steps}')
        from awopt_ros.core import sawyer
        from awopt_ros.sim.insertion import InsertionConfig, InsertionSim
        if sim is None:
            if config is None:
                config = InsertionConfig(render=False)
            sim = InsertionSim(config)
        self.sim = sim
        self.residual = bool(residual)
        self.reward_kind = reward
        self.max_steps = int(max_steps)
        self.rcfg = residual_config or res.ResidualConfig()
        if not self.residual:
            self.rcfg = dataclasses.replace(self.rcfg, residual_enabled=False)
        self.kin = sawyer.kinematics()     # the arm interface's IK model of the Sawyer
        self.limits = limits or default_limits(sawyer.SOCKET_M)
        jl = self.kin.joint_limits()
        self.joint_safety = JointSafety(jl.lower_rad, jl.upper_rad, 0.05,
                                        tuple(jl.velocity_rad_s), 0.25,
                                        velocity_cap_rad_s=jl.velocity_rad_s)
        self.control_period_s = float(getattr(self.sim.config, 'control_period_s', 0.1))
        physics_dt = float(getattr(self.sim.config, 'physics_dt_s', 0.001))
        self._substeps = max(1, int(round(self.control_period_s / physics_dt)))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(res.STATE_DIM,),
                                                dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self._scene_rng = np.random.default_rng(seed)
        self._t = 0
        self._obs = None
        self.scene_seed = None

    # -- helpers ----------------------------------------------------------------------------
    def _state(self):
        """Return (obs (15,), base (3,)) for the current sim state."""
        tool, _ = self.sim.tool_pose()
        goal = self.sim.goal_observed()
        base = res.p_controller(tool, goal, self.rcfg.kp)
        obs = res.insertion_state(tool, goal, self.sim.tool_velocity(), self.sim.wrench(), base)
        return obs, base

    def _info(self, **extra):
        info = {'success': bool(self.sim.success()), 'scene_seed': self.scene_seed,
                'step': self._t, 'insertion_depth_m': float(self.sim.insertion_depth_m()),
                'lateral_error_m': float(self.sim.lateral_error_m())}
        info.update(extra)
        return info

    # -- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        """Reset to a new scene; ``seed`` (int) selects the scene (same seed, same scene).

        Returns:
            (observation float32 (15,), info dict with 'scene_seed', 'success', ...).
        """
        super().reset(seed=seed)
        if seed is not None:
            self._scene_rng = np.random.default_rng(seed)
            scene = int(seed)
        else:
            scene = int(self._scene_rng.integers(0, 2**31 - 1))
        self.scene_seed = scene
        self.sim.reset(scene)
        self._t = 0
        self._obs, self._base = self._state()
        return self._obs.copy(), self._info()

    def step(self, action):
        """Apply the residual ``action`` (3,) in [-1, 1] for one control period.

        Returns:
            (observation (15,) float32, reward float, terminated bool, truncated bool, info);
            info has 'success', 'fault' (None | 'force_limit' | 'rejected'), 'u_m' (3,) the
            command sent, 'scene_seed', 'step', 'insertion_depth_m', 'lateral_error_m'.

        Raises:
            RuntimeError: ``step`` before ``reset``.
            ValueError: an action that is not 3 finite values.
        """
        if self._obs is None:
            raise RuntimeError('call reset() before step()')
        r = np.asarray(action, dtype=np.float64).reshape(-1)
        if r.shape != (3,) or not np.all(np.isfinite(r)):
            raise ValueError(f'action must be 3 finite values in [-1, 1], got {action!r}')
        u = res.command(self._base, r, self.rcfg)
        q = np.asarray(self.sim.joint_positions(), dtype=np.float64)
        cmd = arm_command(self.kin, q, res.arm_action(u), self.limits, self.control_period_s,
                          joint_safety=self.joint_safety)
        fault = None
        if cmd.q_target is None:
            fault = 'rejected'
        else:
            self.sim.set_arm_target(cmd.q_target)
        self.sim.step(self._substeps)
        self._t += 1
        self._obs, self._base = self._state()
        success = bool(self.sim.success())
        wrench = np.asarray(self.sim.wrench(), dtype=np.float64)
        if not success and res.force_exceeded(wrench, self.rcfg.force_limit_n):
            fault = 'force_limit'
        terminated = success or fault == 'force_limit'
        truncated = not terminated and self._t >= self.max_steps
        if self.reward_kind == 'sparse':
            reward = 1.0 if success else 0.0
        else:
            tool, _ = self.sim.tool_pose()
            reward = dense_reward(tool, self.sim.goal_true(), wrench[2], success)
        info = self._info(fault=fault, u_m=u)
        return self._obs.copy(), float(reward), bool(terminated), bool(truncated), info

    def close(self):
        """Release the simulator."""
        if self.sim is not None:
            self.sim.close()
            self.sim = None
