"""What a ros2_control action's answer means for the arm interface (ROS-free).

control_msgs/action/FollowJointTrajectory results carry ``error_code`` (0 successful, -1
INVALID_GOAL, -2 INVALID_JOINTS, -3 OLD_HEADER_TIMESTAMP, -4 PATH_TOLERANCE_VIOLATED, -5
GOAL_TOLERANCE_VIOLATED) and ``error_string``; the action's final status is one of
action_msgs/GoalStatus SUCCEEDED (4), CANCELED (5), ABORTED (6). The arm interface sends one
goal per control step, each replacing the previous: joint_trajectory_controller ends the
replaced goal with INVALID_GOAL, as CANCELED ("Current goal cancelled due to new incoming
action.") or, in Kilted since ros2_controllers PR 2422, ABORTED ("Current goal preempted by
new incoming action."). That is a preemption, not a fault; every other non-success is one.
"""

# control_msgs FollowJointTrajectory result codes: one definition (core.jtc)
from awopt_ros.core.jtc import (GOAL_TOLERANCE_VIOLATED, INVALID_GOAL, INVALID_JOINTS,
                                OLD_HEADER_TIMESTAMP, PATH_TOLERANCE_VIOLATED, SUCCESSFUL)

ERROR_NAMES = {SUCCESSFUL: 'SUCCESSFUL', INVALID_GOAL: 'INVALID_GOAL',
               INVALID_JOINTS: 'INVALID_JOINTS', OLD_HEADER_TIMESTAMP: 'OLD_HEADER_TIMESTAMP',
               PATH_TOLERANCE_VIOLATED: 'PATH_TOLERANCE_VIOLATED',
               GOAL_TOLERANCE_VIOLATED: 'GOAL_TOLERANCE_VIOLATED'}

#: action_msgs/GoalStatus values of a finished goal.
STATUS_SUCCEEDED = 4
STATUS_CANCELED = 5
STATUS_ABORTED = 6
STATUS_NAMES = {0: 'UNKNOWN', 1: 'ACCEPTED', 2: 'EXECUTING', 3: 'CANCELING',
                STATUS_SUCCEEDED: 'SUCCEEDED', STATUS_CANCELED: 'CANCELED',
                STATUS_ABORTED: 'ABORTED'}

SUCCEEDED, PREEMPTED, FAILED = 'succeeded', 'preempted', 'failed'


def error_name(code):
    """Return the FollowJointTrajectory result name of ``code`` (int), e.g.
    'GOAL_TOLERANCE_VIOLATED', or 'error_code N' for a code the action does not define."""
    return ERROR_NAMES.get(int(code), f'error_code {int(code)}')


def classify_result(status, error_code, superseded):
    """Return SUCCEEDED, PREEMPTED or FAILED for one finished FollowJointTrajectory goal.

    Args:
        status: the goal's final action_msgs/GoalStatus value (int).
        error_code: the result's ``error_code`` (int).
        superseded: True when a newer goal was sent after this one.

    PREEMPTED: status CANCELED (the controller replaced it), or INVALID_GOAL on a goal that a
    newer one superseded (how joint_trajectory_controller words a replaced goal, whatever
    the status). SUCCEEDED: status SUCCEEDED with error_code 0. FAILED: anything else, e.g.
    ABORTED with PATH_TOLERANCE_VIOLATED or GOAL_TOLERANCE_VIOLATED, even when superseded
    (a tolerance violation is the robot failing to follow, whatever came next).
    """
    status, error_code = int(status), int(error_code)
    if status == STATUS_CANCELED or (superseded and error_code == INVALID_GOAL):
        return PREEMPTED
    if status == STATUS_SUCCEEDED and error_code == SUCCESSFUL:
        return SUCCEEDED
    return FAILED


def describe_failure(status, error_code, error_string):
    """Return a one-line description of a failed goal, e.g. 'ABORTED
    GOAL_TOLERANCE_VIOLATED: Aborting because goal tolerance was violated'."""
    text = f'{STATUS_NAMES.get(int(status), f"status {int(status)}")} {error_name(error_code)}'
    return f'{text}: {error_string}' if error_string else text
