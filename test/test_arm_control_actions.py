"""Tests for awopt_ros.core.control_actions (what a FollowJointTrajectory answer means)."""
import pytest

from awopt_ros.core import control_actions as ca


@pytest.mark.parametrize('status, code, superseded, verdict', [
    (ca.STATUS_SUCCEEDED, ca.SUCCESSFUL, False, ca.SUCCEEDED),
    (ca.STATUS_SUCCEEDED, ca.SUCCESSFUL, True, ca.SUCCEEDED),
    # joint_trajectory_controller's preemption: CANCELED + INVALID_GOAL
    (ca.STATUS_CANCELED, ca.INVALID_GOAL, True, ca.PREEMPTED),
    (ca.STATUS_CANCELED, ca.SUCCESSFUL, False, ca.PREEMPTED),
    (ca.STATUS_ABORTED, ca.INVALID_GOAL, True, ca.PREEMPTED),
    # faults
    (ca.STATUS_ABORTED, ca.INVALID_GOAL, False, ca.FAILED),
    (ca.STATUS_ABORTED, ca.GOAL_TOLERANCE_VIOLATED, False, ca.FAILED),
    (ca.STATUS_ABORTED, ca.PATH_TOLERANCE_VIOLATED, True, ca.FAILED),
    (ca.STATUS_ABORTED, ca.SUCCESSFUL, False, ca.FAILED),
    (ca.STATUS_SUCCEEDED, ca.INVALID_JOINTS, False, ca.FAILED),
    (ca.STATUS_ABORTED, ca.OLD_HEADER_TIMESTAMP, False, ca.FAILED),
    (0, ca.SUCCESSFUL, False, ca.FAILED),
])
def test_classify_result(status, code, superseded, verdict):
    assert ca.classify_result(status, code, superseded) == verdict


def test_names_and_description():
    assert [ca.error_name(c) for c in range(0, -6, -1)] == [
        'SUCCESSFUL', 'INVALID_GOAL', 'INVALID_JOINTS', 'OLD_HEADER_TIMESTAMP',
        'PATH_TOLERANCE_VIOLATED', 'GOAL_TOLERANCE_VIOLATED']
    assert ca.error_name(-42) == 'error_code -42'
    assert ca.describe_failure(6, -5, 'joint lbr_A4 off by 0.2') == \
        'ABORTED GOAL_TOLERANCE_VIOLATED: joint lbr_A4 off by 0.2'
    assert ca.describe_failure(9, -4, '') == 'status 9 PATH_TOLERANCE_VIOLATED'
