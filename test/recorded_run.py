"""A short recorded demo run for tests that read recorded episodes (replay, re-evaluation,
operator labels, the episode viewer): ``awopt demo`` in lockstep with the shipped actor, as a
real user's run directory (``bags/``, ``datasets/``, ``report.json``, ``logs/``)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AWOPT = Path(sys.prefix) / 'bin' / 'awopt'


def record_demo(run_dir, episodes=2, max_steps=12, seed=7, extra=(), timeout_s=300):
    """Run ``awopt demo --lockstep`` into ``run_dir`` and return it as a Path.

    Episode k gets scene ``seed + k``; every episode ends by ``max_steps`` at the latest.
    ``extra``: more command-line arguments (e.g. ``['--set', 'policy:actor_noise_std=0.1']``).
    Raises AssertionError with the command's output when it fails.
    """
    run_dir = Path(run_dir)
    cmd = [str(AWOPT), 'demo', '--lockstep', '--episodes', str(episodes), '--seed', str(seed),
           '--run-dir', str(run_dir), '--set', f'episode_manager:max_steps={max_steps}',
           *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=timeout_s)
    assert proc.returncode == 0, (cmd, proc.stdout[-3000:], proc.stderr[-3000:])
    return run_dir
