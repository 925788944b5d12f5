"""Tests for awopt_ros.core.safety (action filter, limits, watchdog)."""
import numpy as np
import pytest

from awopt_ros.core.safety import SafetyLimits, Watchdog, filter_action

LIMITS = SafetyLimits(0.03, 0.2, (0.35, -0.3, 0.02), (0.85, 0.3, 0.5))
CENTER = np.array([0.6, 0.0, 0.3])


def test_pass_through_inside_limits():
    a = np.array([0.01, -0.02, 0.005, 0.1, 1.0, 0.0, 0.0])
    out, flags = filter_action(a, CENTER, LIMITS)
    assert out.dtype == np.float32 and out.shape == (7,)
    np.testing.assert_allclose(out, a, atol=1e-7)
    assert not (flags.rejected or flags.clipped or flags.clamped)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(bad):
    a = np.zeros(7)
    a[2] = bad
    out, flags = filter_action(a, CENTER, LIMITS)
    assert flags.rejected
    np.testing.assert_array_equal(out, np.zeros(7))
    _, flags = filter_action(np.zeros(7), [0.6, bad, 0.3], LIMITS)
    assert flags.rejected


def test_step_and_yaw_clipped_per_axis():
    a = np.array([0.1, -0.05, 0.02, -0.5, 0.0, 1.0, 1.0])
    out, flags = filter_action(a, CENTER, LIMITS)
    np.testing.assert_allclose(out, [0.03, -0.03, 0.02, -0.2, 0.0, 1.0, 1.0], atol=1e-7)
    assert flags.clipped and not flags.clamped and not flags.rejected


def test_workspace_clamp():
    tcp = np.array([0.84, 0.29, 0.03])
    out, flags = filter_action([0.03, 0.03, -0.03, 0, 0, 0, 0], tcp, LIMITS)
    np.testing.assert_allclose(tcp + out[:3], [0.85, 0.3, 0.02], atol=1e-6)
    assert flags.clamped and not flags.clipped
    # Outside the box: the step brings the target back onto the box.
    out, flags = filter_action([0.0, 0.0, 0.0, 0, 0, 0, 0], [0.9, 0.0, 0.3], LIMITS)
    np.testing.assert_allclose(out[:3], [-0.05, 0.0, 0.0], atol=1e-6)
    assert flags.clamped


def test_filter_bad_shapes():
    with pytest.raises(ValueError, match='action'):
        filter_action(np.zeros(6), CENTER, LIMITS)
    with pytest.raises(ValueError, match='tcp_pos'):
        filter_action(np.zeros(7), [0.0, 0.0], LIMITS)


@pytest.mark.parametrize('kwargs', [
    dict(max_step_m=0.0), dict(max_step_m=-0.01), dict(max_yaw_step_rad=0.0),
    dict(max_step_m=float('nan')), dict(workspace_min_m=(0.9, -0.3, 0.02)),
    dict(workspace_max_m=(0.85, 0.3, 0.02)), dict(workspace_min_m=(0.35, -0.3)),
])
def test_bad_config_raises(kwargs):
    base = dict(max_step_m=0.03, max_yaw_step_rad=0.2, workspace_min_m=(0.35, -0.3, 0.02),
                workspace_max_m=(0.85, 0.3, 0.5))
    base.update(kwargs)
    with pytest.raises(ValueError):
        SafetyLimits(**base)


def test_watchdog():
    dog = Watchdog({'camera': 0.5, 'joints': 0.2})
    assert dog.stale(0.0) == ['camera', 'joints']      # never received = stale
    dog.feed('camera', 1.0)
    assert dog.stale(1.1) == ['joints']
    dog.feed('joints', 1.05)
    assert dog.stale(1.2) == []
    assert dog.stale(1.3) == ['joints']                 # 0.25 s > 0.2 s
    assert dog.stale(1.6) == ['camera', 'joints']
    assert dog.age_s('camera', 1.6) == pytest.approx(0.6)
    dog.set_timeout('joints', 1.0)
    assert dog.stale(1.3) == []
    dog.reset('camera')
    assert dog.stale(1.3) == ['camera']
    with pytest.raises(KeyError):
        dog.feed('lidar', 0.0)
    with pytest.raises(ValueError):
        dog.set_timeout('camera', 0.0)


@pytest.mark.parametrize('timeouts', [{}, {'a': 0.0}, {'a': -1.0}, {'a': float('inf')}])
def test_watchdog_bad_config(timeouts):
    with pytest.raises(ValueError):
        Watchdog(timeouts)


def test_gripper_target_closes_on_conflicting_bits_only_when_holding():
    from awopt_ros.core import spec
    from awopt_ros.core.arm import gripper_target
    a = np.zeros(7)
    assert gripper_target(a) is None and gripper_target(a, 1.0) is None
    a[spec.IDX_OPEN] = 1.0
    assert gripper_target(a, 0.5) == 0.0
    a[spec.IDX_CLOSE] = 1.0                        # both bits
    assert gripper_target(a) == spec.GRIPPER_CLOSED_M           # unknown: close wins
    assert gripper_target(a, 0.6) == spec.GRIPPER_CLOSED_M      # holding: stays closed
    assert gripper_target(a, spec.GRIPPER_EMPTY_CLOSEDNESS) == 0.0   # closed on air: reopen
    assert gripper_target(a, 0.0) == 0.0                         # open: stays open (no flap)
    a[spec.IDX_OPEN] = 0.0
    assert gripper_target(a, 1.0) == spec.GRIPPER_CLOSED_M
    assert [spec.gripper_closedness(m) for m in (-0.001, 0.02, 0.05)] == [0.0, 0.5, 1.0]
