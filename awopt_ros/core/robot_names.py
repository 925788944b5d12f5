"""Names of a robot driver's joints, topics and camera, as one bringup's params file gives them
(ROS-free).

The stack computes with the model's joint order (``core.spec.ARM_JOINTS``, the iiwa 14 joints
A1..A7 of ``urdf/iiwa14_gripper.urdf``). A driver names the same joints its own way: lbr-stack
``lbr_A1``..``lbr_A7``, the ICube iiwa_ros2 driver ``joint_a1``..``joint_a7`` (../FACTS,
Hardware). :class:`JointNames` maps between the two, so that only names change between the
simulated, fake-hardware and hardware bringups.

Camera topics follow realsense-ros 4.x: ``<camera_ns>/color/image_raw`` and
``<camera_ns>/color/camera_info`` with ``camera_ns`` = ``/<camera_namespace>/<camera_name>``
(``/camera/camera`` for the driver's defaults; the simulator's default is ``/camera``).
"""
import re
from dataclasses import dataclass

from awopt_ros.core import spec

#: Default camera namespace of the simulated cell (topics /camera/color/...).
DEFAULT_CAMERA_NS = '/camera'
#: Default joint state topic (joint_state_broadcaster).
DEFAULT_JOINT_STATES_TOPIC = '/joint_states'
_TOKEN = r'[A-Za-z_][A-Za-z0-9_]*'
_NAME = re.compile(rf'^{_TOKEN}$')
_TOPIC = re.compile(rf'^(/{_TOKEN})+$')


def check_name_token(value, what):
    """Return ``value`` (str) when it is one ROS name token (letters, digits, ``_``; not
    starting with a digit), e.g. a camera name.

    Raises:
        ValueError: naming ``what`` and the value.
    """
    text = str(value)
    if not _NAME.match(text):
        raise ValueError(f'{what} must be a ROS name (letters, digits, _; not starting with '
                         f'a digit), got {text!r}')
    return text


def check_topic_ns(value, what):
    """Return ``value`` (str) when it is an absolute ROS name (``/a/b``, no trailing slash).

    Raises:
        ValueError: naming ``what`` and the value.
    """
    text = str(value)
    if not _TOPIC.match(text):
        raise ValueError(f'{what} must be an absolute ROS name like /camera/camera (letters, '
                         f'digits, _; no trailing /), got {text!r}')
    return text


def camera_topics(camera_ns):
    """Return ``(image topic, camera_info topic)`` of the colour stream under ``camera_ns``.

    Raises:
        ValueError: ``camera_ns`` is not an absolute ROS name.
    """
    ns = check_topic_ns(camera_ns, 'camera_ns')
    return f'{ns}/color/image_raw', f'{ns}/color/camera_info'


@dataclass(frozen=True)
class JointNames:
    """A driver's joint names for the model's arm joints and the gripper joint.

    Attributes:
        arm: 7 driver joint names, in the order of ``core.spec.ARM_JOINTS`` (A1..A7).
        gripper: the driver's name of the gripper finger joint (position in m, 0 open).

    Raises:
        ValueError: not 7 arm names, empty or repeated names, or the gripper among the arm.
    """

    arm: tuple = spec.ARM_JOINTS
    gripper: str = spec.GRIPPER_JOINT

    def __post_init__(self):
        arm = tuple(str(n) for n in self.arm)
        gripper = str(self.gripper)
        if len(arm) != len(spec.ARM_JOINTS):
            raise ValueError(f'joint_names needs {len(spec.ARM_JOINTS)} names (A1..A7 in '
                             f'order), got {len(arm)}: {list(arm)}')
        if any(not n.strip() for n in arm + (gripper,)):
            raise ValueError(f'joint names must not be empty: {list(arm)}, {gripper!r}')
        if len(set(arm)) != len(arm):
            raise ValueError(f'joint_names repeats a name: {list(arm)}')
        if gripper in arm:
            raise ValueError(f'gripper_joint {gripper!r} is also an arm joint')
        object.__setattr__(self, 'arm', arm)
        object.__setattr__(self, 'gripper', gripper)

    @property
    def to_model(self):
        """{driver name: model name} for the arm joints and the gripper."""
        out = dict(zip(self.arm, spec.ARM_JOINTS))
        out[self.gripper] = spec.GRIPPER_JOINT
        return out

    @property
    def to_driver(self):
        """{model name: driver name} for the arm joints and the gripper."""
        return {m: d for d, m in self.to_model.items()}

    @property
    def all(self):
        """The 7 arm names then the gripper name (driver names), a tuple of 8."""
        return self.arm + (self.gripper,)


DEFAULT_JOINT_NAMES = JointNames()
