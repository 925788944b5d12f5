"""Tests for awopt_ros.core.safety (action filter, limits, watchdog, joint-space safety,
command gate)."""
import numpy as np
import pytest

from awopt_ros.core.kinematics import joint_limits
from awopt_ros.core.safety import (IIWA14_MAX_VELOCITY_RAD_S, CommandGate, JointSafety,
                                   SafetyLimits, Watchdog, filter_action, limit_joint_target,
                                   start_jump_rad)

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


# ---------------------------------------------------------------- joint-space safety

URDF = joint_limits()
SAFE = JointSafety(URDF.lower_rad, URDF.upper_rad, 0.05, IIWA14_MAX_VELOCITY_RAD_S, 0.25,
                   velocity_cap_rad_s=URDF.velocity_rad_s)
Q0 = np.array([0.0, 0.4443, 0.0, -1.5197, 0.0, 1.1777, 0.0])


def test_iiwa14_datasheet_velocities_and_urdf():
    np.testing.assert_allclose(np.rad2deg(IIWA14_MAX_VELOCITY_RAD_S),
                               [85, 85, 100, 75, 130, 135, 135])
    # The URDF carries the same values (rounded): the default passes the URDF cap.
    np.testing.assert_allclose(URDF.velocity_rad_s, IIWA14_MAX_VELOCITY_RAD_S, atol=1e-6)


def test_small_step_passes_unchanged():
    target = Q0 + 0.01
    q, flags = limit_joint_target(Q0, target, SAFE, 0.1)
    np.testing.assert_allclose(q, target)
    assert flags.clamped_joints == 0 and flags.velocity_scale == 1.0
    assert not flags.velocity_limited


def test_velocity_limit_scales_the_whole_step():
    """A step that would move A4 at 3 rad/s (limit 75 deg/s = 1.309) is shortened, every
    joint by the same factor, so that no joint exceeds its limit over the period."""
    step = np.array([0.05, 0.0, 0.1, 0.3, 0.0, 0.0, -0.2])
    for dt in (0.1, 1 / 30):
        q, flags = limit_joint_target(Q0, Q0 + step * dt / 0.1, SAFE, dt)
        speed = np.abs(q - Q0) / dt
        assert np.all(speed <= np.asarray(IIWA14_MAX_VELOCITY_RAD_S) + 1e-9)
        assert speed[3] == pytest.approx(np.deg2rad(75))       # the limiting joint at its max
        assert flags.velocity_limited and flags.velocity_scale < 1.0
        np.testing.assert_allclose((q - Q0) / np.linalg.norm(q - Q0),
                                   step / np.linalg.norm(step))   # same direction


def test_lowered_velocity_limits_apply():
    slow = JointSafety(URDF.lower_rad, URDF.upper_rad, 0.05, [0.1] * 7, 0.25)
    q, flags = limit_joint_target(Q0, Q0 + 0.5, slow, 0.1)
    np.testing.assert_allclose(q - Q0, 0.01)
    assert flags.velocity_scale == pytest.approx(0.02)


def test_position_margin_clips_targets():
    lo, hi = np.asarray(URDF.lower_rad), np.asarray(URDF.upper_rad)
    q_meas = hi - 0.06                              # inside the band, near the upper limits
    q, flags = limit_joint_target(q_meas, hi + 1.0, SAFE, 10.0)
    np.testing.assert_allclose(q, hi - 0.05)
    assert flags.clamped_joints == 7
    q, flags = limit_joint_target(lo + 0.06, lo - 1.0, SAFE, 10.0)
    np.testing.assert_allclose(q, lo + 0.05)
    assert flags.clamped_joints == 7
    # Measured outside the band (within the margin): moved back toward it, never further out.
    q_out = Q0.copy()
    q_out[1] = hi[1] - 0.01
    target = q_out.copy()
    target[1] = hi[1]
    q, flags = limit_joint_target(q_out, target, SAFE, 0.01)
    assert flags.clamped_joints == 1 and q[1] < q_out[1]
    assert q_out[1] - q[1] <= IIWA14_MAX_VELOCITY_RAD_S[1] * 0.01 + 1e-12


def test_limit_joint_target_bad_input():
    with pytest.raises(ValueError, match='q_target'):
        limit_joint_target(Q0, np.zeros(6), SAFE, 0.1)
    with pytest.raises(ValueError, match='q_meas'):
        limit_joint_target([np.nan] * 7, Q0, SAFE, 0.1)
    with pytest.raises(ValueError, match='dt_s'):
        limit_joint_target(Q0, Q0, SAFE, 0.0)


@pytest.mark.parametrize('kwargs, match', [
    (dict(margin_rad=-0.1), 'margin'),
    (dict(margin_rad=2.2), 'no room'),
    (dict(max_velocity_rad_s=[1.0] * 6), 'max_joint_velocity_rad_s'),
    (dict(max_velocity_rad_s=[1.0] * 6 + [0.0]), '> 0'),
    (dict(max_velocity_rad_s=[1.0] * 6 + [np.inf]), 'finite'),
    (dict(max_velocity_rad_s=[2.0] * 7), 'exceeds the robot velocity limits'),
    (dict(max_start_jump_rad=0.0), 'max_start_jump_rad'),
    (dict(lower_rad=URDF.upper_rad), 'lower limits'),
])
def test_joint_safety_bad_config(kwargs, match):
    base = dict(lower_rad=URDF.lower_rad, upper_rad=URDF.upper_rad, margin_rad=0.05,
                max_velocity_rad_s=IIWA14_MAX_VELOCITY_RAD_S, max_start_jump_rad=0.25,
                velocity_cap_rad_s=URDF.velocity_rad_s)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        JointSafety(**base)


def test_command_gate_stop_latches_until_enable():
    gate = CommandGate()
    assert not gate.active
    gate.enable()
    assert gate.active
    gate.stop('/arm/stop')
    assert not gate.active and gate.stopped and gate.stop_reason == '/arm/stop'
    gate.disable()
    assert gate.stopped                      # a disable does not clear the stop
    gate.enable()
    assert gate.active and not gate.stopped and gate.stop_reason == ''


def test_command_gate_clear_stop_leaves_the_arm_disabled():
    gate = CommandGate()
    gate.enable()
    gate.stop('/arm/stop')
    assert gate.clear_stop() is True
    assert not gate.stopped and not gate.enabled and not gate.active   # nothing armed
    assert gate.clear_stop() is False
    gate.enable()
    assert gate.active


def test_command_gate_continuity_of_the_first_command():
    gate = CommandGate()
    gate.enable()
    far = Q0 + np.array([0, 0, 0, 0, 0, 0, 0.3])
    assert 'jump 0.300 rad' in gate.check_start(Q0, far, 0.25)
    assert gate.check_start(Q0, Q0 + 0.1, 0.25) is None
    gate.commanded()
    assert gate.check_start(Q0, far, 0.25) is None      # later commands are not checked
    gate.hold()
    assert gate.check_start(Q0, far, 0.25) is not None  # after a hold: checked again
    gate.commanded()
    gate.stop('x')
    gate.enable()
    assert gate.check_start(Q0, far, 0.25) is not None  # after an enable: checked again
    assert start_jump_rad(Q0, far) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        start_jump_rad(Q0, Q0[:3])


def test_arm_command_applies_joint_safety_only_when_given():
    """The node passes its JointSafety to core.arm.arm_command; without one (the in-process
    rollout's default) the IK target is unchanged."""
    from awopt_ros.core.arm import arm_command
    from awopt_ros.core.kinematics import default_kinematics
    kin = default_kinematics()
    action = np.array([0.03, 0.03, -0.03, 0.2, 0.0, 0.0, 0.0])
    plain = arm_command(kin, Q0, action, LIMITS, 0.1)
    np.testing.assert_allclose(plain.q_target, kin.ik_step(Q0, action[:3], 0.2, 0.1), atol=1e-6)
    assert plain.joint_flags.clamped_joints == 0 and not plain.joint_flags.velocity_limited
    slow = JointSafety(URDF.lower_rad, URDF.upper_rad, 0.05, [0.2] * 7, 0.25)
    cmd = arm_command(kin, Q0, action, LIMITS, 0.1, joint_safety=slow)
    assert np.abs(cmd.q_target - Q0).max() == pytest.approx(0.02)
    assert cmd.joint_flags.velocity_limited
    rejected = arm_command(kin, Q0, np.full(7, np.nan), LIMITS, 0.1, joint_safety=slow)
    assert rejected.q_target is None and rejected.flags.rejected
