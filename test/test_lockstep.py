"""Integration: the stack in lockstep moves the arm as the in-process rollout does.

``awopt demo --lockstep`` (``run_episodes(lockstep=True)``): sim_robot holds after each
frame until the arm interface's command arrives, every node on the simulated clock. Two
episodes of the shipped actor through real node processes; then each episode's logged
actions are replayed in process (``awopt_ros.sim.rollout``, same scene seed) and the tool
paths compared up to the first close: with the simulator held, the policy's latency and
this machine's load cost no simulated time, so the stack's arm follows the in-process one
step for step, from the first step (the arm interface is enabled before the episode starts).
The camera is set to 30 Hz: in lockstep the simulator still sends one frame per control
period, so the policy acts once per frame and the steps match the rollout's.
"""
import numpy as np
import pytest

from awopt_ros.core import spec
from awopt_ros.core.dataset import load_episodes
from awopt_ros.ros.runner import run_episodes
from awopt_ros.sim.rollout import CallableAdapter, RolloutConfig, RolloutEnv

MAX_STEPS = 12
DATASET_ID = 'awopt/kuka-grasp-v0'


@pytest.fixture(scope='module')
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp('lockstep')
    report = run_episodes(2, run_dir=out, seed=4300, lockstep=True,
                          extra_overrides={'episode_manager': {'max_steps': MAX_STEPS},
                                           'policy': {'publish_proprio': True},
                                           # a D435's rate: lockstep keeps one frame per
                                           # control period (lockstep_period_s) all the same
                                           'sim_robot': {'camera_rate_hz': 30.0,
                                                         # a command later than this (a
                                                         # loaded 2-core host) would be
                                                         # a lost step, not a difference
                                                         'lockstep_timeout_s': 1.0}},
                          out=lambda *_: None)
    assert not report.get('error'), report
    return load_episodes(out, DATASET_ID)


def _replay(seed, actions):
    queue = list(actions)
    policy = CallableAdapter(lambda image, proprio: queue.pop(0) if queue else np.zeros(7))
    with RolloutEnv(RolloutConfig(max_steps=len(actions))) as env:
        return env.run_episode(seed, policy)


def test_every_step_moves_the_arm_as_in_process(episodes):
    assert len(episodes) == 2
    for ep in episodes:
        steps = len(ep['actions'])
        assert steps >= 5, ep['seed']
        stack_xyz = ep['proprio'][:, :3]
        first_move = np.linalg.norm(stack_xyz[1] - stack_xyz[0])
        commanded = np.linalg.norm(ep['actions'][0, :3])
        assert first_move > 0.5 * commanded > 0.0, (first_move, commanded)
        ref = _replay(ep['seed'], ep['actions'])
        # The observations of the free approach, up to the first close (contacts after it
        # amplify any difference, e.g. a gripper command a step late under a loaded CPU).
        closes = np.flatnonzero(ep['actions'][:, spec.IDX_CLOSE] > 0.5)
        n = min(steps, ref['steps'], int(closes[0]) + 1 if len(closes) else steps)
        assert n >= 3, (ep['seed'], n)
        ref_xyz = ref['observations']['proprio'][:n, :3]
        error = np.abs(stack_xyz[:n] - ref_xyz).max(axis=1)
        assert error.max() < 0.001, (ep['seed'], np.round(error * 1e3, 2))
