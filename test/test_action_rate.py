"""Tests of awopt_ros.core.action_rate (which frames a policy acts on)."""
import numpy as np
import pytest

from awopt_ros.core.action_rate import ActionGrid


def _acted(grid, stamps_s):
    """Feed the stamps; act on each due one; return the stamps acted on."""
    acted = []
    for s in stamps_s:
        if grid.due(s):
            grid.acted(s)
            acted.append(s)
    return acted


def _step(grid, stamp_s):
    """One frame: act when due; return whether it was."""
    return bool(_acted(grid, [stamp_s]))


def test_30hz_frames_are_acted_on_every_third_at_10hz():
    stamps = [k / 30.0 for k in range(90)]     # 3 s of a 30 Hz camera
    grid = ActionGrid(10.0)
    acted = _acted(grid, stamps)
    assert len(acted) == 30
    np.testing.assert_allclose(np.diff(acted), 0.1, atol=1e-9)
    assert grid.counters() == {'frames_acted': 30, 'frames_skipped_rate': 60,
                               'frames_out_of_order': 0, 'action_grid_restarts': 0}


def test_10hz_frames_are_all_acted_on_at_10hz_despite_jitter():
    rng = np.random.default_rng(0)
    stamps = np.arange(100) * 0.1 + rng.uniform(-0.01, 0.01, 100)
    grid = ActionGrid(10.0)
    assert len(_acted(grid, stamps)) == 100


def test_jittered_30hz_stream_keeps_10hz_on_average_and_steps_near_100ms():
    rng = np.random.default_rng(1)
    stamps = np.arange(900) / 30.0 + rng.uniform(-0.004, 0.004, 900)
    acted = _acted(ActionGrid(10.0), stamps)
    assert len(acted) == 300
    gaps = np.diff(acted)
    assert gaps.min() > 0.09 and gaps.max() < 0.11


def test_faster_camera_than_the_grid_tolerance_keeps_the_average_rate():
    stamps = [k / 60.0 for k in range(600)]     # 10 s at 60 Hz
    acted = _acted(ActionGrid(10.0), stamps)
    # The second frame acted on is the first within the tolerance of 0.1 s (0.083), and
    # the grid goes on from 0.1: one step a tolerance early, then 0.1 s steps.
    assert len(acted) == 101
    np.testing.assert_allclose(np.diff(acted)[1:], 0.1, atol=1e-9)


def test_a_late_frame_does_not_shift_the_grid_and_a_gap_restarts_it():
    grid = ActionGrid(10.0)
    assert _step(grid, 0.0)
    assert not _step(grid, 1 / 30)
    assert _step(grid, 0.13)          # the frame at 0.1 was lost: the next one acts ...
    assert _step(grid, 0.2)           # ... and the grid stays on 0.1 s multiples
    assert _step(grid, 0.55)          # 0.3 and 0.4 passed without a frame: restart at 0.55
    assert grid.restarts == 1
    assert not _step(grid, 0.6)
    assert _step(grid, 0.65)


def test_out_of_order_and_repeated_stamps_are_skipped():
    grid = ActionGrid(10.0)
    assert _step(grid, 1.0)
    assert not _step(grid, 1.0)
    assert not _step(grid, 0.5)
    assert grid.out_of_order == 2


def test_rate_zero_acts_on_every_frame():
    grid = ActionGrid(0.0)
    assert _acted(grid, [0.0, 0.001, 0.002, 0.002]) == [0.0, 0.001, 0.002, 0.002]
    assert grid.acted_count == 4


def test_a_due_frame_not_acted_on_leaves_the_next_frame_due():
    grid = ActionGrid(10.0)
    assert _step(grid, 0.0)
    assert grid.due(0.1)             # due, but no action went out (no joint state yet)
    assert grid.due(0.1)             # the same frame again is still due
    assert _step(grid, 0.1 + 1 / 30)  # and so is the next one, on which the action goes out
    assert not grid.due(0.2 - 1 / 30)   # the grid stayed on 0.1 s multiples
    assert _step(grid, 0.2)


def test_restart_acts_on_the_next_frame():
    grid = ActionGrid(10.0)
    assert _step(grid, 0.0)
    assert not _step(grid, 0.04)
    grid.restart()
    assert _step(grid, 0.05)
    assert not _step(grid, 0.1)
    assert _step(grid, 0.15)


def test_restart_after_a_stamp_waits_for_a_newer_frame():
    grid = ActionGrid(10.0)
    assert _step(grid, 0.0)
    grid.restart(after_s=0.05)
    assert not _step(grid, 1 / 30)      # stamped before the restart's time (an old frame)
    assert _step(grid, 2 / 30)          # the first one after it acts at once ...
    assert not _step(grid, 3 / 30)
    assert _step(grid, 2 / 30 + 0.1)    # ... and the grid goes on from it


@pytest.mark.parametrize('rate, tol', [(-1.0, 0.25), (float('nan'), 0.25),
                                       (float('inf'), 0.25), (10.0, 0.5), (10.0, -0.1)])
def test_bad_arguments_raise(rate, tol):
    with pytest.raises(ValueError):
        ActionGrid(rate, tol)
