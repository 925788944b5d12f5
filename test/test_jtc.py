"""core.jtc and core.gripper_action: what the controllers accept, and how their goals end."""
import math

import pytest

from awopt_ros.core import gripper_action, jtc
from awopt_ros.core.jtc import GoalTolerances, Point

JOINTS = tuple(f'lbr_A{i}' for i in range(1, 8))
Q = tuple(0.1 * i for i in range(7))


def check(names=JOINTS, points=None, start_s=0.0, now_s=100.0):
    points = [Point(positions=Q, time_from_start_s=0.1)] if points is None else points
    return jtc.check_trajectory(JOINTS, names, points, start_s, now_s)


def test_a_well_formed_trajectory_is_accepted_in_any_joint_order():
    assert check() is None
    names = tuple(reversed(JOINTS))
    assert check(names, [Point(positions=tuple(reversed(Q)), time_from_start_s=0.1)]) is None
    assert jtc.in_controller_order(JOINTS, names, tuple(reversed(Q))) == Q
    # Several points, velocities and accelerations given in full, zero at the end.
    points = [Point(Q, (0.1,) * 7, (0.0,) * 7, (), 0.05), Point(Q, (0.0,) * 7, (), (), 0.1)]
    assert check(points=points) is None
    # A stamp: the trajectory may end exactly now (float seconds: within a microsecond);
    # a stamp in the future is fine.
    assert check(start_s=99.9, now_s=100.0) is None
    assert check(JOINTS, [Point(Q, time_from_start_s=0.0)], 100.0, 100.0 + 2e-7) is None
    assert check(start_s=200.0, now_s=100.0) is None


@pytest.mark.parametrize('names, code', [
    (JOINTS[:6], jtc.INVALID_JOINTS),                          # a joint missing
    (JOINTS + ('gripper_finger_joint',), jtc.INVALID_JOINTS),  # an extra joint
    (('lbr_A1',) * 7, jtc.INVALID_JOINTS),                     # repeated: the others missing
    (JOINTS[:6] + ('iiwa_joint_7',), jtc.INVALID_JOINTS),      # another driver's name
    ((), jtc.INVALID_JOINTS),
])
def test_joints_other_than_the_controllers_are_rejected(names, code):
    points = [Point(positions=Q[:len(names)] + (0.0,) * (len(names) - 7),
                    time_from_start_s=0.1)]
    rejection = check(names, points)
    assert rejection is not None and rejection.error_code == code, rejection


def test_every_malformed_trajectory_rule_rejects_with_invalid_goal():
    cases = {
        'no points': [],
        'positions short': [Point(Q[:6], time_from_start_s=0.1)],
        'positions empty': [Point((), time_from_start_s=0.1)],
        'velocities wrong length': [Point(Q, (0.0,) * 3, time_from_start_s=0.1)],
        'accelerations wrong length': [Point(Q, (), (0.0,) * 8, time_from_start_s=0.1)],
        'effort': [Point(Q, effort=(0.0,) * 7, time_from_start_s=0.1)],
        'final velocity': [Point(Q, (0.0,) * 6 + (1e-3,), time_from_start_s=0.1)],
        'equal times': [Point(Q, time_from_start_s=0.1), Point(Q, time_from_start_s=0.1)],
        'decreasing times': [Point(Q, time_from_start_s=0.2), Point(Q, time_from_start_s=0.1)],
        'nan position': [Point(Q[:6] + (math.nan,), time_from_start_s=0.1)],
        'second point bad': [Point(Q, time_from_start_s=0.1), Point(Q[:3], time_from_start_s=0.2)],
    }
    for what, points in cases.items():
        rejection = check(points=points)
        assert rejection is not None and rejection.error_code == jtc.INVALID_GOAL, what
        assert rejection.message, what


def test_velocity_at_the_last_point_only_counts_and_float_noise_is_zero():
    moving = [Point(Q, (0.5,) * 7, time_from_start_s=0.05), Point(Q, (1e-9,) * 7, (), (), 0.1)]
    assert check(points=moving) is None


def test_a_stamped_trajectory_that_ended_before_now_is_rejected_stamp_zero_starts_now():
    points = [Point(Q, time_from_start_s=0.1)]
    rejection = check(points=points, start_s=50.0, now_s=100.0)
    assert rejection.error_code == jtc.OLD_HEADER_TIMESTAMP
    assert check(points=points, start_s=0.0, now_s=100.0) is None
    assert jtc.end_time_s(0.0, points, 100.0) == (100.0, pytest.approx(100.1))
    assert jtc.end_time_s(99.95, points, 100.0) == (99.95, pytest.approx(100.05))


def test_in_controller_order_refuses_what_cannot_be_mapped():
    with pytest.raises(ValueError, match='missing'):
        jtc.in_controller_order(JOINTS, JOINTS[:6] + ('x',), Q)
    with pytest.raises(ValueError, match='values'):
        jtc.in_controller_order(JOINTS, JOINTS, Q[:3])


def test_feedback_index_counts_the_points_already_due():
    times = (0.1, 0.2, 0.3)
    assert [jtc.point_index(times, 10.0, t) for t in (10.0, 10.1, 10.25, 10.3, 11.0)] == \
        [0, 1, 2, 3, 3]


def test_goal_tolerances_resolve_like_the_controller():
    defaults = GoalTolerances.uniform(7, 0.01, 0.02, 0.5)
    same = jtc.goal_tolerances(JOINTS, defaults, [], 0.0)
    assert same == defaults
    got = jtc.goal_tolerances(JOINTS, defaults, [('lbr_A2', 0.05, -1.0), ('lbr_A3', 0.0, 0.3)],
                              1.5)
    assert got.position == (0.01, 0.05, 0.01, 0.01, 0.01, 0.01, 0.01)
    assert got.velocity == (0.02, 0.0, 0.3, 0.02, 0.02, 0.02, 0.02)
    assert got.goal_time_s == 1.5
    assert jtc.goal_tolerances(JOINTS, defaults, [], -1.0).goal_time_s == 0.0
    # An unknown joint or an illegal value: all defaults, as the controller does.
    assert jtc.goal_tolerances(JOINTS, defaults, [('nope', 0.05, 0.0)], 1.5) == defaults
    assert jtc.goal_tolerances(JOINTS, defaults, [('lbr_A1', -0.5, 0.0)], 1.5) == defaults
    assert jtc.goal_tolerances(JOINTS, defaults, [], -2.0) == defaults
    with pytest.raises(ValueError):
        jtc.resolve_tolerance(0.1, math.nan)
    with pytest.raises(ValueError):
        GoalTolerances((0.1,) * 7, (0.1,) * 6)
    with pytest.raises(ValueError):
        GoalTolerances((-0.1,) * 7, (0.1,) * 7)


def test_goal_outcome_waits_for_the_end_then_the_tolerances():
    tol = GoalTolerances.uniform(7, 0.01, 0.01, 0.2)
    still, near = (0.0,) * 7, (0.005,) * 7
    assert jtc.goal_outcome(9.99, 10.0, near, still, tol) == jtc.EXECUTING
    done = jtc.goal_outcome(10.0, 10.0, near, still, tol)
    assert done.status == 'succeeded' and done.error_code == jtc.SUCCESSFUL
    far = (0.0,) * 6 + (0.05,)
    assert jtc.goal_outcome(10.1, 10.0, far, still, tol) == jtc.EXECUTING   # within goal time
    late = jtc.goal_outcome(10.25, 10.0, far, still, tol)
    assert late.status == 'aborted' and late.error_code == jtc.GOAL_TOLERANCE_VIOLATED
    moving = (0.0,) * 6 + (0.1,)                 # still moving: outside the stopped velocity
    assert jtc.goal_outcome(10.1, 10.0, near, moving, tol) == jtc.EXECUTING
    assert jtc.goal_outcome(10.3, 10.0, near, moving, tol).error_code == \
        jtc.GOAL_TOLERANCE_VIOLATED
    # Zero tolerances are not checked; a zero goal time waits without limit.
    unchecked = GoalTolerances.uniform(7, 0.0, 0.0, 0.0)
    assert jtc.goal_outcome(10.0, 10.0, far, moving, unchecked).status == 'succeeded'
    no_limit = GoalTolerances.uniform(7, 0.01, 0.0, 0.0)
    assert jtc.goal_outcome(1e6, 10.0, far, still, no_limit) == jtc.EXECUTING


def test_gripper_command_check():
    assert gripper_action.check_command([0.02]) is None
    for bad in ([], [0.01, 0.02], [math.nan], [math.inf]):
        assert gripper_action.check_command(bad), bad


def test_gripper_goal_reaches_or_stalls():
    goal = gripper_action.GripperGoal(0.04, 1.0, 0.002, 0.3, allow_stalling=True)
    assert goal.update(1.1, 0.01, 0.05) is None                  # closing
    assert goal.update(1.2, 0.0395, 0.0) == (True, True, False)   # reached
    # Closed on an object: stands still short of the target for stall_timeout_s.
    goal = gripper_action.GripperGoal(0.04, 1.0, 0.002, 0.3, allow_stalling=True)
    assert goal.update(1.1, 0.02, 0.05) is None
    assert goal.update(1.2, 0.025, 0.0) is None
    assert goal.update(1.39, 0.025, 0.0) is None
    assert goal.update(1.41, 0.025, 0.0) == (True, False, True)
    strict = gripper_action.GripperGoal(0.04, 1.0, 0.002, 0.3, allow_stalling=False)
    assert strict.update(1.31, 0.025, 0.0) == (False, False, True)
    with pytest.raises(ValueError):
        gripper_action.GripperGoal(math.nan, 1.0, 0.002, 0.3)
    with pytest.raises(ValueError):
        gripper_action.GripperGoal(0.01, 1.0, 0.0, 0.3)
