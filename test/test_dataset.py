"""Tests for awopt_ros.core.dataset: episodes appended to a Minari dataset and read back."""
import json
import os

import numpy as np
import pytest

from awopt_ros.core.dataset import (POLICY_IDS, EpisodeRecorder, dataset_id_for, load_episodes,
                                    policy_id)
from awopt_ros.core.spec import ACTION_HIGH, ACTION_LOW

DATASET_ID = 'awopt/kuka-grasp-v0'


def _episode(rng, steps):
    return {
        'image': rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8),
        'proprio': rng.normal(size=(steps + 1, 6)).astype(np.float32),
        'action': np.clip(rng.normal(scale=0.02, size=(steps, 7)), ACTION_LOW,
                          ACTION_HIGH).astype(np.float32),
        'p': rng.uniform(size=steps + 1).astype(np.float32),
        'stamp': 100.0 + 0.1 * np.arange(steps + 1),
    }


def _record(rec, k, ep, success, policy=1):
    steps = len(ep['action'])
    rec.begin(k, 1000 + k)
    for t in range(steps):
        rec.add_step(ep['image'][t], ep['proprio'][t], ep['action'][t], ep['p'][t], policy,
                     ep['stamp'][t])
    return rec.end(success, success, not success, ep['image'][-1], ep['proprio'][-1],
                   final_success_probability=ep['p'][-1], final_stamp_s=ep['stamp'][-1])



def fail_appends(monkeypatch, errors):
    """Make ``EpisodeRecorder._append`` raise ``errors`` (list of exceptions) in turn, one per
    call, then append as usual."""
    from awopt_ros.core.dataset import EpisodeRecorder
    errors, real = list(errors), EpisodeRecorder._append

    def failing(self, buffer):
        if errors:
            raise errors.pop(0)
        return real(self, buffer)
    monkeypatch.setattr(EpisodeRecorder, '_append', failing)

def test_round_trip_three_episodes_and_unfinished_fourth(tmp_path, monkeypatch):
    import minari
    monkeypatch.delenv('MINARI_DATASETS_PATH', raising=False)
    rng = np.random.default_rng(0)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    lengths, success = [3, 7, 12], [False, True, False]
    eps = [_episode(rng, n) for n in lengths]
    for k, (ep, s) in enumerate(zip(eps, success)):
        summary = _record(rec, k, ep, s, policy=k)
        assert summary['written'] and summary['index'] == k and summary['steps'] == lengths[k]
    assert 'MINARI_DATASETS_PATH' not in os.environ  # set only during minari calls
    # A fourth episode begun (steps buffered) but never ended: nothing on disk changes.
    rec.begin(3, 1003)
    rec.add_step(eps[0]['image'][0], eps[0]['proprio'][0], eps[0]['action'][0], 0.0, 1, 0.0)

    monkeypatch.setenv('MINARI_DATASETS_PATH', str(tmp_path / 'datasets'))
    dataset = minari.load_dataset(DATASET_ID)
    assert dataset.total_episodes == 3 and dataset.total_steps == sum(lengths)
    assert dataset.storage.metadata['awopt_policy_ids'] == POLICY_IDS
    for k, got in enumerate(dataset.iterate_episodes()):
        ep, n = eps[k], lengths[k]
        np.testing.assert_array_equal(got.observations['image'], ep['image'])
        np.testing.assert_array_equal(got.observations['proprio'], ep['proprio'])
        np.testing.assert_array_equal(got.actions, ep['action'])
        expected_reward = np.zeros(n)
        expected_reward[-1] = float(success[k])
        np.testing.assert_array_equal(got.rewards, expected_reward)
        last = np.zeros(n, dtype=bool)
        last[-1] = True
        np.testing.assert_array_equal(got.terminations, last & success[k])
        np.testing.assert_array_equal(got.truncations, last & (not success[k]))
        np.testing.assert_array_equal(got.infos['success_probability'], ep['p'])
        np.testing.assert_array_equal(got.infos['stamp_s'], ep['stamp'])
        np.testing.assert_array_equal(got.infos['policy'], np.full(n + 1, k))

    loaded = load_episodes(tmp_path, DATASET_ID)
    assert [e['episode'] for e in loaded] == [0, 1, 2]
    assert [e['seed'] for e in loaded] == [1000, 1001, 1002]
    np.testing.assert_array_equal(loaded[2]['image'], eps[2]['image'])
    np.testing.assert_array_equal(loaded[1]['actions'], eps[1]['action'])


def test_append_to_existing_dataset_after_restart(tmp_path):
    rng = np.random.default_rng(1)
    _record(EpisodeRecorder(tmp_path, DATASET_ID), 0, _episode(rng, 2), True)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)  # a new process on the same run directory
    ep = _episode(rng, 4)
    assert _record(rec, 1, ep, False)['index'] == 1
    loaded = load_episodes(tmp_path, DATASET_ID)
    assert [len(e['actions']) for e in loaded] == [2, 4]
    np.testing.assert_array_equal(loaded[1]['proprio'], ep['proprio'])
    meta = json.loads((tmp_path / 'datasets' / DATASET_ID / 'data' / 'metadata.json')
                      .read_text())
    assert meta['total_episodes'] == 2 and meta['total_steps'] == 6
    rec32 = EpisodeRecorder(tmp_path, DATASET_ID, image_size=32)  # spaces differ
    rec32.begin(2)
    rec32.add_step(np.zeros((32, 32, 3), np.uint8), np.zeros(6), np.zeros(7), 0, 0, 0)
    with pytest.raises(ValueError, match='observation space'):
        rec32.end(False, False, True, np.zeros((32, 32, 3), np.uint8), np.zeros(6))
    assert len(load_episodes(tmp_path, DATASET_ID)) == 2


def test_actions_clipped_and_empty_episode_skipped(tmp_path, caplog):
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    rec.begin(0)
    summary = rec.end(False, False, True, None, None)
    assert not summary['written'] and summary['steps'] == 0
    assert 'no actions' in caplog.text
    assert not (tmp_path / 'datasets' / DATASET_ID).exists()
    img = np.zeros((64, 64, 3), np.uint8)
    rec.begin(1, 7)
    rec.add_step(img, np.zeros(6), [0.5, -0.5, 0.01, 3.0, 2.0, -1.0, 0.7], 0.2, 0, 1.5)
    rec.end(False, True, False, img, np.zeros(6))
    (ep,) = load_episodes(tmp_path, DATASET_ID)
    np.testing.assert_array_equal(ep['actions'][0], np.array(
        [0.03, -0.03, 0.01, 0.2, 1.0, 0.0, 0.7], dtype=np.float32))
    np.testing.assert_array_equal(ep['success_probability'], np.float32([0.2, 0.2]))
    np.testing.assert_array_equal(ep['stamp_s'], [1.5, 1.5])
    assert ep['grasp_goal'].shape == (2, 4) and np.isnan(ep['grasp_goal']).all()  # none given
    assert ep['terminations'].tolist() == [True] and ep['rewards'].tolist() == [0.0]
    # a demonstrator's grasp goal per step, the final observation repeating the last one
    rec.begin(2, 8)
    rec.add_step(img, np.zeros(6), np.zeros(7), 0.0, 0, 2.0, grasp_goal=[0.6, 0.1, 0.03, 0.5])
    rec.add_step(img, np.zeros(6), np.zeros(7), 0.0, 0, 2.1)
    rec.add_step(img, np.zeros(6), np.zeros(7), 0.0, 0, 2.2, grasp_goal=[0.61, 0.1, 0.03, 0.4])
    rec.truncate(2)
    rec.end(False, True, False, img, np.zeros(6))
    goals = load_episodes(tmp_path, DATASET_ID)[1]['grasp_goal']
    np.testing.assert_allclose(goals[0], [0.6, 0.1, 0.03, 0.5], rtol=1e-6)
    assert goals.shape == (3, 4) and np.isnan(goals[1:]).all()
    assert ep['noise_free_action'].shape == (2, 7) and np.isnan(ep['noise_free_action']).all()
    # an actor's noise-free action per step (NaN where none, e.g. a CEM step)
    clean = np.float32([0.01, -0.02, -0.03, 0.1, 0.0, 1.0, 0.0])
    rec.begin(3, 9)
    rec.add_step(img, np.zeros(6), np.zeros(7), 0.0, 1, 3.0, noise_free_action=clean)
    rec.add_step(img, np.zeros(6), np.zeros(7), 0.0, 2, 3.1)
    rec.end(False, True, False, img, np.zeros(6))
    stored = load_episodes(tmp_path, DATASET_ID)[2]['noise_free_action']
    np.testing.assert_array_equal(stored[0], clean)
    assert stored.shape == (3, 7) and np.isnan(stored[1:]).all()


def test_bad_input(tmp_path):
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(RuntimeError, match='no episode'):
        rec.add_step(img, np.zeros(6), np.zeros(7), 0, 0, 0)
    with pytest.raises(RuntimeError, match='no episode'):
        rec.end(False, False, True, img, np.zeros(6))
    rec.begin(0)
    with pytest.raises(ValueError, match='image'):
        rec.add_step(np.zeros((64, 64, 3), np.float32), np.zeros(6), np.zeros(7), 0, 0, 0)
    with pytest.raises(ValueError, match='image'):
        rec.add_step(np.zeros((32, 32, 3), np.uint8), np.zeros(6), np.zeros(7), 0, 0, 0)
    with pytest.raises(ValueError, match='proprio'):
        rec.add_step(img, np.zeros(5), np.zeros(7), 0, 0, 0)
    with pytest.raises(ValueError, match='non-finite'):
        rec.add_step(img, np.zeros(6), [np.nan] * 7, 0, 0, 0)
    with pytest.raises(ValueError, match='action'):
        rec.add_step(img, np.zeros(6), np.zeros(6), 0, 0, 0)
    with pytest.raises(ValueError, match='grasp_goal'):
        rec.add_step(img, np.zeros(6), np.zeros(7), 0, 0, 0, grasp_goal=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match='noise_free_action'):
        rec.add_step(img, np.zeros(6), np.zeros(7), 0, 0, 0, noise_free_action=np.zeros(4))
    assert rec.steps == 0
    with pytest.raises(ValueError, match='episode'):
        rec.begin(-1)
    with pytest.raises(ValueError, match='Minari dataset id'):
        EpisodeRecorder(tmp_path, 'awopt/bad name')
    assert dataset_id_for('kuka-grasp') == DATASET_ID
    assert dataset_id_for('awopt/kuka-grasp/sim-v2') == 'awopt/kuka-grasp/sim-v2'
    assert [policy_id(k) for k in ('scripted', 'actor', 'cem', 'bc')] == [0, 1, 2, 3]


def test_truncate_keeps_first_steps_and_returns_the_next_observation(tmp_path):
    rng = np.random.default_rng(4)
    ep = _episode(rng, 4)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    with pytest.raises(RuntimeError, match='no episode'):
        rec.truncate(1)
    rec.begin(0)
    for t in range(4):
        rec.add_step(ep['image'][t], ep['proprio'][t], ep['action'][t], ep['p'][t], 1,
                     ep['stamp'][t])
    assert rec.truncate(4) is None and rec.steps == 4
    with pytest.raises(ValueError, match='steps'):
        rec.truncate(-1)
    nxt = rec.truncate(2)
    assert rec.steps == 2
    np.testing.assert_array_equal(nxt['image'], ep['image'][2])
    np.testing.assert_array_equal(nxt['proprio'], ep['proprio'][2])
    assert nxt['stamp_s'] == ep['stamp'][2]


def _hold_open(path, seconds):
    """Start a process that keeps ``path`` open (HDF5 read lock) for ``seconds``."""
    import subprocess
    import sys
    code = ('import h5py, sys, time\n'
            'f = h5py.File(sys.argv[1], "r")\n'
            'print("open", flush=True)\n'
            'time.sleep(float(sys.argv[2]))\n')
    proc = subprocess.Popen([sys.executable, '-c', code, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, HDF5_USE_FILE_LOCKING='TRUE'))
    assert proc.stdout.readline().strip() == 'open'
    return proc


def test_append_waits_for_a_reader_and_keeps_episodes_pending_while_locked(tmp_path,
                                                                             monkeypatch):
    """A reader holding the file (e.g. a training script) delays appends, never loses one."""
    import time
    monkeypatch.delenv('MINARI_DATASETS_PATH', raising=False)
    monkeypatch.delenv('HDF5_USE_FILE_LOCKING', raising=False)
    rng = np.random.default_rng(3)
    rec = EpisodeRecorder(tmp_path, DATASET_ID, lock_retry_s=10.0)
    _record(rec, 1, _episode(rng, 3), True)
    h5 = next((tmp_path / 'datasets').rglob('*.hdf5'))
    holder = _hold_open(h5, 1.0)
    t0 = time.monotonic()
    summary = _record(rec, 2, _episode(rng, 4), False)       # waits for the reader
    assert summary['written'] and summary['index'] == 1
    assert time.monotonic() - t0 > 0.5 and rec.lock_retries > 0
    holder.wait()

    rec.lock_retry_s = 0.3
    holder = _hold_open(h5, 3.0)
    with pytest.raises(OSError, match='kept pending'):
        _record(rec, 3, _episode(rng, 5), True)
    assert rec.pending_episodes == 1
    holder.wait()
    summary = _record(rec, 4, _episode(rng, 2), False)       # writes 3, then 4
    assert rec.pending_episodes == 0 and summary['index'] == 3
    episodes = load_episodes(tmp_path, DATASET_ID)
    assert [e['episode'] for e in episodes] == [1, 2, 3, 4]
    assert [len(e['actions']) for e in episodes] == [3, 4, 5, 2]


def test_a_write_error_mid_append_keeps_earlier_episodes_and_drops_only_that_one(
        tmp_path, monkeypatch):
    """ENOSPC in the middle of writing an episode (simulated: the HDF5 file is left half
    written, as a full disk leaves it) loses that episode only; the next append works."""
    import errno
    import shutil
    from collections import namedtuple

    from minari.dataset._storages.hdf5_storage import HDF5Storage

    rng = np.random.default_rng(5)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    for k in range(2):
        _record(rec, k, _episode(rng, 6), True)
    # Little free space: the append goes to a copy of the dataset.
    usage = namedtuple('usage', 'total used free')
    monkeypatch.setattr(shutil, 'disk_usage',
                        lambda p: usage(10**9, 10**9 - 8 * 2**20, 8 * 2**20))
    real = HDF5Storage.update_episodes

    def full_disk(self, episodes):
        real(self, episodes)
        path = self.data_path / 'main_data.hdf5'
        with path.open('r+b') as f:   # what a write that ran out of space leaves behind
            f.truncate(path.stat().st_size // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(HDF5Storage, 'update_episodes', full_disk)
    with pytest.raises(OSError) as info:
        _record(rec, 2, _episode(rng, 6), True)
    assert info.value.errno == errno.ENOSPC
    assert not rec.in_episode and rec.pending_episodes == 0
    assert [e['episode'] for e in load_episodes(tmp_path, DATASET_ID)] == [0, 1]
    assert not (rec.dataset_path / 'data.staging').exists()
    monkeypatch.setattr(HDF5Storage, 'update_episodes', real)
    assert _record(rec, 3, _episode(rng, 6), True)['index'] == 2
    assert [e['episode'] for e in load_episodes(tmp_path, DATASET_ID)] == [0, 1, 3]
    # Too little space for the episode at all: refused before any file is touched.
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: usage(10**9, 10**9, 1000))
    before = (rec.dataset_path / 'data' / 'main_data.hdf5').read_bytes()
    with pytest.raises(OSError, match='No space left on device') as info:
        _record(rec, 4, _episode(rng, 6), True)
    assert info.value.errno == errno.ENOSPC
    assert (rec.dataset_path / 'data' / 'main_data.hdf5').read_bytes() == before
    # A swap a crash interrupted (data renamed away, staging not yet in place) is undone.
    monkeypatch.undo()
    (rec.dataset_path / 'data').rename(rec.dataset_path / 'data.old')
    (rec.dataset_path / 'data.staging').mkdir()
    rec2 = EpisodeRecorder(tmp_path, DATASET_ID)
    assert _record(rec2, 5, _episode(rng, 6), True)['index'] == 3
    assert [e['episode'] for e in load_episodes(tmp_path, DATASET_ID)] == [0, 1, 3, 5]
    assert sorted(p.name for p in rec.dataset_path.iterdir()) == ['data']


_FILL_DISK = """
import errno, sys
import numpy as np
from awopt_ros.core.dataset import EpisodeRecorder
rec = EpisodeRecorder(sys.argv[1], 'awopt/kuka-grasp-v0', 64)
rng = np.random.default_rng(0)
for k in range(30):
    rec.begin(k, k)
    for i in range(20):
        rec.add_step(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), np.zeros(6),
                     np.zeros(7), 0.5, 1, i)
    try:
        s = rec.end(True, True, False, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                    np.zeros(6))
        print('written', k, s['index'], flush=True)
    except OSError as exc:
        print('error', k, exc.errno, flush=True)
"""


def test_a_real_full_disk_never_crashes_and_keeps_every_written_episode(tmp_path):
    """4 MB tmpfs: episodes are written until the disk is full, then refused with ENOSPC;
    the process never crashes and every episode reported written loads."""
    import subprocess
    import sys

    from tmpfs_util import small_tmpfs
    with small_tmpfs(tmp_path / 'disk', 4096) as disk:
        proc = subprocess.run([sys.executable, '-c', _FILL_DISK, str(disk / 'run')],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = [line.split() for line in proc.stdout.splitlines()]
        written = [int(k) for kind, k, *_ in lines if kind == 'written']
        errors = [(int(k), int(e)) for kind, k, e in (x for x in lines if x[0] == 'error')]
        assert written and errors, proc.stdout
        assert {e for _, e in errors} == {28}
        assert written == list(range(len(written)))   # every episode before the disk filled
        assert [e['episode'] for e in load_episodes(disk / 'run', DATASET_ID)] == written


def test_too_little_room_for_a_copy_appends_in_place_instead_of_refusing(tmp_path, monkeypatch):
    """Free space between the episode's size and the episode plus a copy of the dataset: the
    episode is appended in place (it fits), not refused with ENOSPC."""
    import shutil
    from collections import namedtuple

    from awopt_ros.core import dataset as ds

    rng = np.random.default_rng(11)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    for k in range(2):
        _record(rec, k, _episode(rng, 6), True)
    size = sum(f.stat().st_size for f in (rec.dataset_path / 'data').iterdir())
    need = 2**20
    monkeypatch.setattr(ds, 'episode_bytes', lambda buffer: need)
    usage = namedtuple('usage', 'total used free')
    free = need + size // 2          # the episode fits, a copy of the dataset does not
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: usage(10**9, 10**9 - free, free))
    assert _record(rec, 2, _episode(rng, 6), True)['index'] == 2
    assert [e['episode'] for e in load_episodes(tmp_path, DATASET_ID)] == [0, 1, 2]
    assert sorted(p.name for p in rec.dataset_path.iterdir()) == ['data']
    # Too little for the episode itself: a NoRoomError (ENOSPC), nothing written.
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: usage(10**9, 10**9, need - 1))
    with pytest.raises(ds.NoRoomError) as info:
        _record(rec, 3, _episode(rng, 6), True)
    assert info.value.errno == 28
    assert rec.pending_episodes == 0


def test_a_failed_flush_names_the_pending_episode_that_was_dropped(tmp_path, monkeypatch):
    """An episode left pending by a lock, then a non-lock error: the error names the OLD
    episode (the one dropped); the episode just appended stays pending and is written next."""
    import errno

    rng = np.random.default_rng(12)
    rec = EpisodeRecorder(tmp_path, DATASET_ID, lock_retry_s=0.0)
    fail_appends(monkeypatch, [BlockingIOError(errno.EAGAIN, 'unable to lock file'),
              OSError(errno.EIO, os.strerror(errno.EIO))])
    with pytest.raises(OSError, match='still locked'):
        _record(rec, 0, _episode(rng, 3), True)
    assert rec.pending_episodes == 1
    with pytest.raises(OSError) as info:
        _record(rec, 1, _episode(rng, 4), True)
    assert info.value.errno == errno.EIO
    assert info.value.episode_summary['episode'] == 0
    assert rec.pending_episodes == 1
    assert rec.flush_pending()['episode'] == 1
    assert [e['episode'] for e in load_episodes(tmp_path, DATASET_ID)] == [1]
