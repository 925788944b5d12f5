"""The grasping task's action and observation spec (AW-Opt task 1, Lu et al. 2021, Sec. 5).

Action, 7-D float32: end-effector translation ``dx, dy, dz`` (m, in ``base_link``), rotation
about the vertical ``dyaw`` (rad), and three discrete entries ``open``, ``close``,
``terminate`` that count as set when > 0.5 (``close`` wins over ``open``).
Proprioception, 6-D float32: ``tcp`` position (m, ``base_link``), sin/cos of its yaw, and the
gripper closedness in [0, 1].
"""
import numpy as np

ACTION_NAMES = ('dx', 'dy', 'dz', 'dyaw', 'open', 'close', 'terminate')
ACTION_UNITS = ('m', 'm', 'm', 'rad', 'bool', 'bool', 'bool')
ACTION_LOW = np.array([-0.03, -0.03, -0.03, -0.2, 0.0, 0.0, 0.0], dtype=np.float32)
ACTION_HIGH = np.array([0.03, 0.03, 0.03, 0.2, 1.0, 1.0, 1.0], dtype=np.float32)
CONTINUOUS = slice(0, 4)
DISCRETE = slice(4, 7)
IDX_OPEN, IDX_CLOSE, IDX_TERMINATE = 4, 5, 6
ACTION_DIM = len(ACTION_NAMES)

PROPRIO_NAMES = ('ee_x', 'ee_y', 'ee_z', 'sin_yaw', 'cos_yaw', 'gripper_closed')
PROPRIO_DIM = len(PROPRIO_NAMES)
#: Fixed proprio normalisation used inside the networks: (proprio - OFFSET) / SCALE maps the
#: tool position over the bin workspace (x 0.35..0.85, y -0.3..0.3, z 0.02..0.5 m) to about
#: [-1, 1]; sin/cos yaw and gripper closedness are already O(1).
PROPRIO_OFFSET = (0.6, 0.0, 0.25, 0.0, 0.0, 0.5)
PROPRIO_SCALE = (0.25, 0.3, 0.25, 1.0, 1.0, 0.5)

#: Gripper closedness (proprio ``gripper_closed``, 0 open .. 1 fully closed) from which the
#: fingers count as closed on something: the scripted demonstrator lifts once it reads this
#: after its close command, and actors may get the thresholded value as an input.
GRIPPER_ENGAGED_CLOSEDNESS = 0.05
#: Gripper closedness at or above which the fingers hold nothing (closed on air: a missed
#: grasp). Between GRIPPER_ENGAGED_CLOSEDNESS and this they hold an object, and only there
#: does an action with both the open and the close bit set keep the gripper closed
#: (``core.arm.gripper_target``).
GRIPPER_EMPTY_CLOSEDNESS = 0.95

ARM_JOINTS = tuple(f'iiwa_joint_{i}' for i in range(1, 8))
GRIPPER_JOINT = 'gripper_finger_joint'
GRIPPER_CLOSED_M = 0.04
SOURCE_SIZE = (640, 480)  # camera width, height (px)
#: Default policy image of the stack: crop (x, y, w, h) of the SOURCE frame, resized to a
#: square of POLICY_IMAGE_SIZE px (camera_pipeline, policy and logger defaults; the params
#: YAML sets them for every bringup).
POLICY_CROP_XYWH = (80, 0, 480, 480)
POLICY_IMAGE_SIZE = 64
#: The only camera image encoding the stack takes (3 bytes per pixel, R, G, B): the camera
#: pipeline's frame check, ``ros.convert``'s image conversions.
RGB8 = 'rgb8'
#: Stamps this close (s) count as equal: float seconds resolve about 0.24 us at wall-clock
#: epochs, and a stamp and the same time sent as float seconds (JSON) may differ by that
#: (``ros.convert.not_after``, ``core.report.stamps_in_window``).
STAMP_TOLERANCE_S = 1e-6


def gripper_closedness(finger_m):
    """Return the gripper closedness in [0, 1] (proprio ``gripper_closed``) of a measured
    finger position ``finger_m`` (m; 0 open, ``GRIPPER_CLOSED_M`` fully closed)."""
    return float(np.clip(float(finger_m) / GRIPPER_CLOSED_M, 0.0, 1.0))


def is_set(value):
    """Return True where a discrete action entry counts as set (> 0.5)."""
    return np.asarray(value) > 0.5


def validate_action(action):
    """Return ``action`` as a float32 (7,) array.

    Raises:
        ValueError: wrong shape, or any entry NaN or infinite.
    """
    a = np.asarray(action, dtype=np.float32).reshape(-1)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f'action must have {ACTION_DIM} entries {ACTION_NAMES}, got {a.shape}')
    if not np.all(np.isfinite(a)):
        raise ValueError(f'action has non-finite entries: {a.tolist()}')
    return a
