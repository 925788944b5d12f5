"""A small tmpfs for disk-full tests (needs root; the test is skipped with the reason if not)."""
import contextlib
import subprocess

import pytest


@contextlib.contextmanager
def small_tmpfs(path, size_kb):
    """Mount a tmpfs of ``size_kb`` KiB at ``path`` (created) for the block; unmount after.

    Skips the calling test, naming the reason, where mounting is not permitted (not root,
    or a container without CAP_SYS_ADMIN).
    """
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={int(size_kb)}k', 'tmpfs',
                           str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs for the disk-full case: {proc.stderr.strip()}')
    try:
        yield path
    finally:
        subprocess.run(['umount', '-l', str(path)], check=False)
