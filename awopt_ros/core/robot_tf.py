"""Link transforms of a URDF robot from joint positions, as robot_state_publisher makes them
(ROS-free; pinocchio forward kinematics of the full model, gripper fingers included).

robot_state_publisher publishes one transform per URDF joint, from the joint's parent link to
its child link: moving joints (revolute, continuous, prismatic) on ``/tf`` for each
``/joint_states`` message, with the message's stamp, for the joints the message names (a
``<mimic>`` joint follows its master: position = multiplier * master + offset); fixed joints
once on ``/tf_static``. :class:`RobotTF` computes the same transforms; :func:`rename_joints`
gives the URDF the driver's joint names for ``/robot_description``, so that rviz and a
robot_state_publisher on a ROS install match the driver's ``/joint_states``.

A transform here is a :class:`Transform`: parent and child frame names, translation (3,) m
and rotation quaternion (x, y, z, w) of the child frame in the parent frame.
"""
import xml.etree.ElementTree as ET
from collections import namedtuple
from dataclasses import dataclass

import numpy as np
import pinocchio as pin

from awopt_ros.core import camera_pose, paths

#: URDF joint types that move (have a position in /joint_states).
MOVING_TYPES = ('revolute', 'continuous', 'prismatic')
#: URDF joint types robot_state_publisher publishes on /tf_static.
FIXED_TYPES = ('fixed',)

Transform = namedtuple('Transform', ['parent', 'child', 'translation', 'rotation_xyzw'])
Transform.__doc__ = ('A child frame in its parent frame: names (str), translation float64 (3,) '
                     'm, rotation unit quaternion float64 (4,) x, y, z, w.')


@dataclass(frozen=True)
class UrdfJoint:
    """One URDF joint: ``name``, ``type``, ``parent`` and ``child`` link names, and for a mimic
    joint ``mimic`` = (master joint name, multiplier, offset), else None."""

    name: str
    type: str
    parent: str
    child: str
    mimic: tuple = None


def parse_joints(urdf_text):
    """Return the URDF's joints (list of :class:`UrdfJoint`, document order).

    Raises:
        ValueError: not URDF XML (no ``<robot>`` root, a joint without name, type, parent or
            child, a mimic without a joint, or unparsable XML).
    """
    root = _parse(urdf_text)
    out = []
    for elem in root.findall('joint'):
        name, kind = elem.get('name'), elem.get('type')
        parent, child = elem.find('parent'), elem.find('child')
        if not name or not kind or parent is None or child is None or \
                not parent.get('link') or not child.get('link'):
            raise ValueError(f'URDF joint {name!r} lacks a name, type, parent or child link')
        mimic = elem.find('mimic')
        if mimic is not None:
            if not mimic.get('joint'):
                raise ValueError(f'URDF joint {name!r}: <mimic> names no joint')
            mimic = (mimic.get('joint'), float(mimic.get('multiplier', 1.0)),
                     float(mimic.get('offset', 0.0)))
        out.append(UrdfJoint(name, kind, parent.get('link'), child.get('link'), mimic))
    return out


def _parse(urdf_text):
    try:
        root = ET.fromstring(urdf_text)
    except ET.ParseError as exc:
        raise ValueError(f'URDF is not valid XML: {exc}') from exc
    if root.tag != 'robot':
        raise ValueError(f'URDF root element must be <robot>, got <{root.tag}>')
    return root


def rename_joints(urdf_text, mapping):
    """Return ``urdf_text`` with its joints renamed per ``mapping`` ({URDF name: new name}):
    each ``<joint name>`` anywhere in the document (joints, transmissions, ros2_control
    blocks) and each ``<mimic joint>`` reference. Links and everything else are kept.

    Entries that map a name to itself are allowed; an empty mapping returns the text as it is.

    Raises:
        ValueError: a mapped name that is not a joint of the URDF, or a new name that another
            joint already has (two joints would share a name); or not URDF XML.
    """
    mapping = {str(k): str(v) for k, v in dict(mapping).items() if str(k) != str(v)}
    if not mapping:
        _parse(urdf_text)
        return urdf_text
    root = _parse(urdf_text)
    names = [j.get('name') for j in root.findall('joint')]
    missing = sorted(set(mapping) - set(names))
    if missing:
        raise ValueError(f'cannot rename joints {missing}: not in the URDF (joints: {names})')
    renamed = [mapping.get(n, n) for n in names]
    if len(set(renamed)) != len(renamed):
        dup = sorted({n for n in renamed if renamed.count(n) > 1})
        raise ValueError(f'renaming the URDF joints {mapping} gives two joints the name(s) {dup}')
    for elem in root.iter('joint'):
        if elem.get('name') in mapping:
            elem.set('name', mapping[elem.get('name')])
    for elem in root.iter('mimic'):
        if elem.get('joint') in mapping:
            elem.set('joint', mapping[elem.get('joint')])
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding='unicode') + '\n'


def _transform(parent, child, se3):
    return Transform(parent, child, np.array(se3.translation, dtype=np.float64),
                     np.asarray(pin.Quaternion(se3.rotation).coeffs(), dtype=np.float64).copy())


class RobotTF:
    """Forward kinematics of every link of a URDF, joint by joint (robot_state_publisher's
    transforms).

    Args:
        urdf_path: URDF file (relative: against the package share directory).

    Attributes:
        urdf_text: the file's text (str).
        joints: the URDF's joints ({name: :class:`UrdfJoint`}).
        root_link: the URDF's root link (the frame every link's pose is given in).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a URDF pinocchio can build, or a joint type robot_state_publisher
            does not handle (floating, planar), or a mimic of a joint that does not move.
    """

    def __init__(self, urdf_path):
        path = paths.resolve(urdf_path)
        if not path.is_file():
            raise FileNotFoundError(f'URDF not found: {path}')
        self.urdf_text = path.read_text(encoding='utf-8')
        self.joints = {j.name: j for j in parse_joints(self.urdf_text)}
        bad = [j.name for j in self.joints.values()
               if j.type not in MOVING_TYPES + FIXED_TYPES]
        if bad:
            raise ValueError(f'URDF {path}: joints {bad} have a type other than '
                             f'{MOVING_TYPES + FIXED_TYPES}')
        for j in self.joints.values():
            if j.mimic and (j.mimic[0] not in self.joints
                            or self.joints[j.mimic[0]].type not in MOVING_TYPES):
                raise ValueError(f'URDF {path}: joint {j.name} mimics {j.mimic[0]!r}, which '
                                 'is not a moving joint')
        try:
            self.model = pin.buildModelFromUrdf(str(path))
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f'pinocchio cannot build {path}: {exc}') from exc
        self.data = self.model.createData()
        children = {j.child for j in self.joints.values()}
        roots = sorted({j.parent for j in self.joints.values()} - children)
        if len(roots) != 1:
            raise ValueError(f'URDF {path} must have one root link, found {roots}')
        self.root_link = roots[0]
        self._frame = {}      # link name -> pinocchio BODY frame id
        for link in children | {self.root_link}:
            if not self.model.existFrame(link, pin.BODY):
                raise ValueError(f'pinocchio model of {path} has no frame for link {link!r}')
            self._frame[link] = self.model.getFrameId(link, pin.BODY)
        self._q_index = {}    # moving joint name -> (idx_q, nq)
        for jid in range(1, self.model.njoints):
            self._q_index[self.model.names[jid]] = (self.model.idx_qs[jid],
                                                    self.model.nqs[jid])
        missing = [n for n, j in self.joints.items()
                   if j.type in MOVING_TYPES and n not in self._q_index]
        if missing:
            raise ValueError(f'pinocchio model of {path} lacks joints {missing}')
        self.moving = tuple(n for n, j in self.joints.items() if j.type in MOVING_TYPES)
        self.fixed = tuple(n for n, j in self.joints.items() if j.type in FIXED_TYPES)
        self._mimics = {n: j.mimic for n, j in self.joints.items()
                        if j.mimic and j.type in MOVING_TYPES}

    def _configuration(self, positions):
        """Return (q, names of the moving joints set from ``positions`` or their master)."""
        q = pin.neutral(self.model)
        given = []
        values = {}
        for name, value in positions.items():
            if name in self._q_index and name not in self._mimics:
                v = float(value)
                if not np.isfinite(v):
                    raise ValueError(f'joint {name} position is not finite: {value}')
                values[name] = v
        for name, (master, mult, offset) in self._mimics.items():
            if master in values:
                values[name] = mult * values[master] + offset
        for name, v in values.items():
            idx, nq = self._q_index[name]
            if nq == 2:     # continuous joint: pinocchio stores (cos, sin)
                q[idx:idx + 2] = (np.cos(v), np.sin(v))
            else:
                q[idx] = v
            given.append(name)
        return q, given

    def _placements(self, q):
        pin.forwardKinematics(self.model, self.data, q)
        pin.updateFramePlacements(self.model, self.data)
        return self.data.oMf

    def transforms(self, positions):
        """Return the moving joints' transforms (list of :class:`Transform`, URDF order).

        Args:
            positions: {URDF joint name: position (rad or m)}; names that are not moving
                joints of the URDF are ignored, as are given positions of mimic joints (they
                follow their master). Only joints given (or whose master is given) appear.

        Raises:
            ValueError: a position of a known joint that is not finite.
        """
        q, given = self._configuration(positions)
        omf = self._placements(q)
        given = set(given)
        out = []
        for name in self.moving:
            if name in given:
                j = self.joints[name]
                rel = omf[self._frame[j.parent]].actInv(omf[self._frame[j.child]])
                out.append(_transform(j.parent, j.child, rel))
        return out

    def static_transforms(self):
        """Return the fixed joints' transforms (list of :class:`Transform`, URDF order)."""
        omf = self._placements(pin.neutral(self.model))
        out = []
        for name in self.fixed:
            j = self.joints[name]
            rel = omf[self._frame[j.parent]].actInv(omf[self._frame[j.child]])
            out.append(_transform(j.parent, j.child, rel))
        return out

    def link_pose(self, positions, link):
        """Return ``(position (3,) m, rotation (3, 3))`` of ``link`` in the root link for
        joint ``positions`` ({URDF joint name: value}; joints not given at 0).

        Raises:
            KeyError: no such link. ValueError: a position that is not finite.
        """
        if link not in self._frame:
            raise KeyError(f'no link {link!r} in the URDF (links: {sorted(self._frame)})')
        q, _ = self._configuration(positions)
        oMf = self._placements(q)[self._frame[link]]
        return np.array(oMf.translation), np.array(oMf.rotation)


def compose(transforms, root, frame):
    """Return the 4x4 pose of ``frame`` in ``root`` by chaining ``transforms`` (an iterable of
    :class:`Transform`, each child with one parent), as a tf2 buffer would.

    Raises:
        KeyError: ``frame`` is not connected to ``root`` through ``transforms``.
    """
    by_child = {t.child: t for t in transforms}
    out = np.eye(4)
    name = frame
    seen = set()
    while name != root:
        if name not in by_child or name in seen:
            raise KeyError(f'no transform chain from {root!r} to {frame!r}')
        seen.add(name)
        t = by_child[name]
        step = np.eye(4)
        step[:3, :3] = quat_matrix(t.rotation_xyzw)
        step[:3, 3] = t.translation
        out = step @ out
        name = t.parent
    return out


def quat_matrix(xyzw):
    """Return the (3, 3) rotation matrix of the unit quaternion ``xyzw`` (x, y, z, w)."""
    x, y, z, w = (float(v) for v in xyzw)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def camera_transforms(pose_xyz_rpy, parent='base_link', camera_frame='camera_link',
                      optical_frame='camera_color_optical_frame', with_optical=True):
    """Return the camera's static transforms: ``parent -> camera_frame`` at ``pose_xyz_rpy``
    (:mod:`awopt_ros.core.camera_pose`) and, with ``with_optical``, ``camera_frame ->
    optical_frame`` (same origin, :data:`camera_pose.LINK_TO_OPTICAL_RPY`).

    Raises:
        ValueError: not a valid pose, or an empty or repeated frame name.
    """
    names = [parent, camera_frame] + ([optical_frame] if with_optical else [])
    if any(not str(n).strip() for n in names) or len(set(names)) != len(names):
        raise ValueError(f'camera frame names must be non-empty and distinct, got {names}')
    pose = camera_pose.as_pose(pose_xyz_rpy)
    out = [Transform(parent, camera_frame, pose[:3].copy(),
                     camera_pose.quat_xyzw(camera_pose.rpy_to_matrix(pose[3:])))]
    if with_optical:
        out.append(Transform(camera_frame, optical_frame, np.zeros(3),
                             camera_pose.quat_xyzw(camera_pose.LINK_TO_OPTICAL)))
    return out
