"""core.homing: the move home's duration, profile and points, the home-pose check, and when a
homing has arrived or timed out (no ROS)."""
import numpy as np
import pytest

from awopt_ros.core import homing
from awopt_ros.core.homing import (HOME, MIN_JERK_PEAK, MOVING, TIMED_OUT, Homing, HomingPlan,
                                   at_home, check_home_pose, home_duration_s, max_error_rad,
                                   min_jerk)
from awopt_ros.core.kinematics import joint_limits
from awopt_ros.core.robot import HOME_Q
from awopt_ros.core.safety import IIWA14_MAX_VELOCITY_RAD_S, JointSafety

VMAX = np.array(IIWA14_MAX_VELOCITY_RAD_S)


def test_min_jerk_profile():
    assert min_jerk(0.0) == 0.0 and min_jerk(1.0) == pytest.approx(1.0)
    assert min_jerk(0.5) == pytest.approx(0.5)
    assert min_jerk(-1.0) == 0.0 and min_jerk(2.0) == pytest.approx(1.0)
    u = np.linspace(0.0, 1.0, 100001)
    s = np.array([min_jerk(x) for x in u])
    assert np.all(np.diff(s) >= 0.0)
    # the steepest slope is MIN_JERK_PEAK, at mid-way
    assert np.max(np.diff(s) / np.diff(u)) == pytest.approx(MIN_JERK_PEAK, rel=1e-6)


def test_duration_bounds_every_joint_by_the_scaled_limit():
    q0 = HOME_Q + np.array([0.5, -0.2, 0.0, 0.3, 1.0, 0.0, -0.4])
    t = home_duration_s(q0, HOME_Q, VMAX, 0.2)
    # the slowest joint relative to its limit sets it: A5 moves 1.0 rad at 0.2 x 130 deg/s
    assert t == pytest.approx(MIN_JERK_PEAK * 1.0 / (0.2 * VMAX[4]))
    plan = HomingPlan(tuple(q0), tuple(HOME_Q), t)
    peak = plan.peak_speed_rad_s()
    assert np.all(peak <= 0.2 * VMAX + 1e-12) and peak[4] == pytest.approx(0.2 * VMAX[4])
    # a scale of 1 is 5 times faster; no motion takes the floor
    assert home_duration_s(q0, HOME_Q, VMAX, 1.0) == pytest.approx(t / 5)
    assert home_duration_s(HOME_Q, HOME_Q, VMAX, 0.2, min_duration_s=0.1) == 0.1


@pytest.mark.parametrize('kwargs, match', [
    (dict(velocity_scale=0.0), 'velocity_scale'),
    (dict(velocity_scale=1.5), 'velocity_scale'),
    (dict(max_velocity_rad_s=[1.0] * 6), '7 values'),
    (dict(max_velocity_rad_s=[0.0] * 7), '> 0'),
    (dict(q_start=[np.nan] * 7), 'finite'),
    (dict(min_duration_s=-1.0), 'min_duration_s'),
])
def test_duration_refuses_bad_input(kwargs, match):
    args = dict(q_start=HOME_Q + 0.1, q_home=HOME_Q, max_velocity_rad_s=VMAX,
                velocity_scale=0.2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        home_duration_s(**args)


def test_waypoints_sample_the_profile_and_end_at_home():
    q0 = HOME_Q + np.array([0.3, 0.1, -0.2, 0.0, 0.0, 0.1, 0.6])
    plan = HomingPlan.make(q0, HOME_Q, VMAX, 0.2, min_duration_s=0.1)
    times, points = plan.waypoints()
    assert times[-1] == pytest.approx(plan.duration_s) and times[0] > 0.0
    assert np.all(np.diff(times) > 0.0) and np.max(np.diff(times)) <= homing.WAYPOINT_PERIOD_S
    np.testing.assert_array_equal(points[-1], HOME_Q)
    # linear interpolation between the points (from q0 at t = 0) stays under the limits
    all_t = np.concatenate([[0.0], times])
    all_q = np.vstack([q0, points])
    speed = np.abs(np.diff(all_q, axis=0)) / np.diff(all_t)[:, None]
    assert np.all(speed <= 0.2 * VMAX + 1e-9)
    np.testing.assert_allclose(plan.position_at(plan.duration_s / 2), (q0 + HOME_Q) / 2)
    np.testing.assert_array_equal(plan.position_at(-1.0), q0)
    # a long plan is capped at MAX_WAYPOINTS points; a tiny one has one point
    long = HomingPlan(tuple(q0), tuple(HOME_Q), 100.0)
    assert len(long.waypoints()[0]) == homing.MAX_WAYPOINTS
    assert len(HomingPlan(tuple(q0), tuple(HOME_Q), 0.05).waypoints()[0]) == 1
    with pytest.raises(ValueError, match='min_duration_s'):
        HomingPlan.make(q0, HOME_Q, VMAX, 0.2, min_duration_s=0.0)


def test_home_pose_check_uses_the_margin_band():
    lim = joint_limits()
    safety = JointSafety(lim.lower_rad, lim.upper_rad, 0.05)
    np.testing.assert_array_equal(check_home_pose(HOME_Q, safety.lo, safety.hi), HOME_Q)
    q = HOME_Q.copy()
    q[3] = lim.upper_rad[3] - 0.01          # inside the URDF limits, not the margin band
    with pytest.raises(ValueError, match=r'A4 .* not in'):
        check_home_pose(q, safety.lo, safety.hi)
    with pytest.raises(ValueError, match='7 values'):
        check_home_pose(HOME_Q[:6], safety.lo, safety.hi)
    with pytest.raises(ValueError, match='finite'):
        check_home_pose([np.inf] * 7, safety.lo, safety.hi)


def test_reached_and_timed_out():
    assert at_home(HOME_Q + 0.019, HOME_Q, 0.02)
    assert not at_home(HOME_Q + np.array([0, 0, 0, 0, 0, 0, 0.021]), HOME_Q, 0.02)
    assert max_error_rad(HOME_Q - 0.3, HOME_Q) == pytest.approx(0.3)
    plan = HomingPlan(tuple(HOME_Q + 0.5), tuple(HOME_Q), 4.0)
    run = Homing(plan, start_s=100.0, timeout_s=10.0, tolerance_rad=0.02)
    assert run.status(101.0, HOME_Q + 0.5) == MOVING
    assert run.status(103.0, HOME_Q) == MOVING        # at home before the plan's end: wait
    assert run.status(104.0, HOME_Q + 0.01) == HOME
    assert run.status(104.0, None) == MOVING
    assert run.status(109.9, HOME_Q + 0.05) == MOVING
    assert run.status(110.0, HOME_Q + 0.05) == TIMED_OUT
    assert run.status(110.0, HOME_Q) == HOME          # arrived at the last moment
    with pytest.raises(ValueError, match='timeout_s'):
        Homing(plan, 0.0, 0.0, 0.02)
    with pytest.raises(ValueError, match='tolerance_rad'):
        Homing(plan, 0.0, 1.0, float('nan'))
