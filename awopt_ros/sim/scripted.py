"""A noisy scripted grasping policy (privileged: it reads object poses).

The scripted policy produces demonstrations for behaviour cloning and offline RL: it picks the
object nearest the bin centre (a rule a camera-based policy can learn: one fixed place in a
fixed view; re-chosen every step while approaching, so a pushed object changes the choice as it
would for a learned policy; ``target_rule='nearest_tool'`` picks the object nearest the tool
instead, the labelling rule of :mod:`awopt_ros.learning.dagger`), moves above it while
descending, turns the gripper across the narrow side of elongated objects, descends, closes,
lifts as soon as it sees the fingers closed (the gripper closedness in its proprioception, so a
policy that imitates it can see when to lift) and terminates. Noise makes it
imperfect on purpose: a per-episode grasp-point error (a stand-in for perception error,
sometimes large) and per-step Gaussian motion noise, so the dataset holds successes and
failures.

In-process episodes (no ROS) run through :class:`awopt_ros.sim.rollout.RolloutEnv` with
:class:`awopt_ros.sim.rollout.ScriptedAdapter`.
"""
import math

import numpy as np

from awopt_ros.core import robot, spec

HOVER_M = 0.10          # tool height above the object centre while approaching (m)
LIFT_Z_M = 0.25         # tool height at which the lift is over (m)
CLOSE_STEPS = 4         # most steps spent closing the gripper ('count' rule: always this many)
XY_TOLERANCE_M = 0.008  # descend once this close above the grasp point (m)
YAW_TOLERANCE_RAD = 0.15
ROUND_RATIO = 1.3       # objects whose footprint is this close to round need no yaw alignment


def wrap_half_pi(angle):
    """Wrap ``angle`` (rad) to [-pi/2, pi/2): a parallel gripper is symmetric under pi."""
    return (angle + math.pi / 2) % math.pi - math.pi / 2


def object_yaw(quat_wxyz):
    """Return the yaw (rad, about base z) of a body's x axis from its wxyz quaternion."""
    w, x, y, z = quat_wxyz
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def grasp_height(object_z):
    """Return the tool height (m) at which the policy closes on an object centred at
    ``object_z`` (m): 5 mm above its centre, at least 25 mm above the floor."""
    return max(float(object_z) + 0.005, 0.025)


class ScriptedGraspPolicy:
    """Scripted top-down grasping with configurable noise.

    Args:
        seed: random seed of the noise (int).
        noise_std_m: standard deviation of the per-step motion noise (m); the per-episode
            grasp-point error is 1.5x this, and with probability ``slip_probability`` an episode
            gets a large error (2-4 cm) that usually makes it fail.
        slip_probability: probability of a large per-episode grasp-point error.
        target_rule: which object to grasp, re-chosen every step while approaching:
            ``'bin_centre'`` (default, the demonstrations' rule) the object nearest the bin
            centre; ``'nearest_tool'`` the object nearest the tool in x, y (a rule that agrees
            with wherever a learner has already headed, as DAgger's labels need).
        lift_rule: when the close ends and the lift starts: ``'closed'`` (default) at the first
            step after the close command whose proprio closedness is >=
            ``spec.GRIPPER_ENGAGED_CLOSEDNESS`` (at most ``CLOSE_STEPS`` close steps), a state
            an image-and-proprio policy can observe; ``'count'`` after exactly ``CLOSE_STEPS``
            close steps (the rule of datasets collected before this rule existed, e.g.
            runs/collect: a count that no single observation shows).

    Attributes:
        grasp_goal: after :meth:`act`, float64 (4,): the grasp pose the policy aims for,
            without its deliberate noise: the target object's centre x, y (m, base frame), the
            tool height it closes at (m) and the tool yaw (rad) it turns to (the object's
            narrow side, or the current yaw for a near-round footprint); None before the
            first ``act`` of an episode. Privileged (object poses): a training label only.

    Raises:
        ValueError: a negative noise, a probability outside [0, 1] or an unknown rule.
    """

    TARGET_RULES = ('bin_centre', 'nearest_tool')
    LIFT_RULES = ('closed', 'count')

    def __init__(self, seed=0, noise_std_m=0.004, slip_probability=0.35,
                 target_rule='bin_centre', lift_rule='closed'):
        if noise_std_m < 0:
            raise ValueError(f'noise_std_m must be >= 0, got {noise_std_m}')
        if not 0.0 <= slip_probability <= 1.0:
            raise ValueError(f'slip_probability must be in [0, 1], got {slip_probability}')
        if target_rule not in self.TARGET_RULES:
            raise ValueError(f'target_rule must be one of {self.TARGET_RULES}, got '
                             f'{target_rule!r}')
        if lift_rule not in self.LIFT_RULES:
            raise ValueError(f'lift_rule must be one of {self.LIFT_RULES}, got {lift_rule!r}')
        self.target_rule = target_rule
        self.lift_rule = lift_rule
        self.rng = np.random.default_rng(seed)
        self.noise_std_m = float(noise_std_m)
        self.slip_probability = float(slip_probability)
        self.reset()

    def reset(self):
        """Start a new episode: forget the target, draw a new grasp-point error."""
        self.phase = 'approach'
        self.target = None
        self.grasp_goal = None
        self.close_steps = 0
        self.lifted_steps = 0
        error = self.rng.normal(0.0, 1.5 * self.noise_std_m, size=2)
        if self.rng.uniform() < self.slip_probability:
            angle = self.rng.uniform(-math.pi, math.pi)
            error = self.rng.uniform(0.02, 0.04) * np.array([math.cos(angle), math.sin(angle)])
        self.grasp_error_m = error

    def act(self, proprio, object_poses, object_extents=None):
        """Return the next action, float32 (7,) within the spec bounds.

        Args:
            proprio: (6,) as in core.spec (tool xyz in m, sin/cos yaw, gripper closedness).
            object_poses: (N, 7) object poses in base_link (xyz m, quat wxyz).
            object_extents: optional (N, 3) half extents (m) along each body's x, y, z; objects
                with a near-round footprint are grasped at any yaw. None: align to every object.

        Raises:
            ValueError: wrong shapes.
        """
        proprio = np.asarray(proprio, dtype=np.float64).reshape(-1)
        poses = np.asarray(object_poses, dtype=np.float64).reshape(-1, 7)
        if proprio.shape != (spec.PROPRIO_DIM,):
            raise ValueError(f'proprio must have {spec.PROPRIO_DIM} entries, got {proprio.shape}')
        if len(poses) == 0:
            raise ValueError('object_poses is empty')
        tool = proprio[:3]
        tool_yaw = math.atan2(proprio[3], proprio[4])
        if self.target is None or self.phase == 'approach':
            centre = (np.asarray(robot.BIN_CENTER_M[:2]) if self.target_rule == 'bin_centre'
                      else tool[:2])
            self.target = int(np.argmin(np.linalg.norm(poses[:, :2] - centre, axis=1)))
        obj = poses[self.target]
        round_footprint = False
        if object_extents is not None:
            hx, hy = np.asarray(object_extents, dtype=np.float64).reshape(-1, 3)[self.target, :2]
            round_footprint = max(hx, hy) <= ROUND_RATIO * min(hx, hy)
        goal_xy = obj[:2] + self.grasp_error_m
        grasp_z = grasp_height(obj[2])
        # The gripper closes along the tool's y axis; turn it across the object's narrow side.
        yaw_error = 0.0 if round_footprint else wrap_half_pi(object_yaw(obj[3:]) - tool_yaw)
        self.grasp_goal = np.array([obj[0], obj[1], grasp_z, tool_yaw + yaw_error])
        action = np.zeros(spec.ACTION_DIM)
        delta = np.zeros(3)
        xy_error = goal_xy - tool[:2]
        if self.phase == 'approach':
            delta[:2] = xy_error
            delta[2] = (grasp_z + HOVER_M) - tool[2]
            action[spec.IDX_OPEN] = 1.0
            if np.linalg.norm(xy_error) < XY_TOLERANCE_M and abs(yaw_error) < YAW_TOLERANCE_RAD:
                self.phase = 'descend'
        if self.phase == 'descend':
            delta[:2] = xy_error
            delta[2] = grasp_z - tool[2]
            if tool[2] - grasp_z < 0.01:
                self.phase = 'close'
        if self.phase == 'close':
            engaged = proprio[5] >= spec.GRIPPER_ENGAGED_CLOSEDNESS
            seen_closed = self.close_steps > 0 and engaged
            if (self.lift_rule == 'closed' and seen_closed) or self.close_steps >= CLOSE_STEPS:
                self.phase = 'lift'
            else:
                action[spec.IDX_CLOSE] = 1.0
                self.close_steps += 1
        if self.phase == 'lift':
            action[spec.IDX_CLOSE] = 1.0
            delta[2] = LIFT_Z_M + 0.05 - tool[2]
            if tool[2] > LIFT_Z_M:
                self.lifted_steps += 1
                if self.lifted_steps >= 2:
                    action[spec.IDX_TERMINATE] = 1.0
        if self.phase in ('approach', 'descend', 'lift'):
            delta += self.rng.normal(0.0, self.noise_std_m, size=3)
        action[:3] = delta
        action[3] = yaw_error if self.phase in ('approach', 'descend') else 0.0
        return np.clip(action, spec.ACTION_LOW, spec.ACTION_HIGH).astype(np.float32)
