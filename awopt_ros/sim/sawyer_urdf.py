"""Write the URDF of a Rethink Robotics Sawyer arm holding a square peg.

Kinematics and limits from the published Sawyer description (``sawyer_description``):
joints ``right_j0`` .. ``right_j6``, all revolute about their local z axis, with the joint
origins (xyz m / rpy rad) j0 0 0 0.08; j1 0.081 0.05 0.237 / (-pi/2, pi/2, 0); j2 0 -0.14
0.1425 / (pi/2, 0, 0); j3 0 -0.042 0.26 / (-pi/2, 0, 0); j4 0 -0.125 -0.1265 / (pi/2, 0, 0);
j5 0 0.031 0.275 / (-pi/2, 0, 0); j6 0 -0.11 0.1053 / (-pi/2, -0.17453, pi); the hand flange
``right_hand`` 0.0245 m along j6's z, yawed by pi/2. Position limits (rad) j0 +-3.0503,
j1 -3.8095..2.2736, j2 +-3.0426, j3 +-3.0439, j4 +-2.9761, j5 +-2.9761, j6 +-4.7124; velocity
limits 1.74, 1.328, 1.957, 1.957, 3.485, 3.485, 4.545 rad/s; torques 80, 80, 40, 40, 9, 9, 9
N m. Link masses approximate the published ~19 kg arm. Geometry is primitive shapes (no meshes
are shipped): a cylinder along each joint axis and one to the next joint.

The tool is rigid: a peg holder (a wrist force/torque sensor body ``ft_sensor`` and a holder
block ``peg_holder``) and a square peg (``PEG_SIDE_M`` side, ``PEG_LENGTH_M`` long) on the
flange. Frame ``tcp`` lies at the peg tip, its z axis along the peg, pointing away from the
hand (straight down when inserting); its x, y axes are the peg's faces' normals.

Run ``python -m awopt_ros.sim.sawyer_urdf urdf/sawyer.urdf`` to regenerate the file.
"""
import math
import sys

PI = math.pi
ARM_JOINTS = tuple(f'right_j{i}' for i in range(7))
# (joint origin xyz (m), rpy (rad), lower, upper (rad), velocity (rad/s), effort (N m),
#  child link mass (kg), child link radius (m))
_JOINTS = [
    ((0.0, 0.0, 0.08), (0.0, 0.0, 0.0), -3.0503, 3.0503, 1.74, 80.0, 5.32, 0.075),
    ((0.081, 0.05, 0.237), (-PI / 2, PI / 2, 0.0), -3.8095, 2.2736, 1.328, 80.0, 4.51, 0.07),
    ((0.0, -0.14, 0.1425), (PI / 2, 0.0, 0.0), -3.0426, 3.0426, 1.957, 40.0, 1.75, 0.06),
    ((0.0, -0.042, 0.26), (-PI / 2, 0.0, 0.0), -3.0439, 3.0439, 1.957, 40.0, 2.51, 0.06),
    ((0.0, -0.125, -0.1265), (PI / 2, 0.0, 0.0), -2.9761, 2.9761, 3.485, 9.0, 1.11, 0.05),
    ((0.0, 0.031, 0.275), (-PI / 2, 0.0, 0.0), -2.9761, 2.9761, 3.485, 9.0, 1.56, 0.05),
    ((0.0, -0.11, 0.1053), (-PI / 2, -0.17453, PI), -4.7124, 4.7124, 4.545, 9.0, 0.33, 0.04),
]
HAND_XYZ = (0.0, 0.0, 0.0245)
HAND_RPY = (0.0, 0.0, PI / 2)
FT_SENSOR_LENGTH_M = 0.03      # force/torque sensor body between flange and peg holder
HOLDER_LENGTH_M = 0.03         # peg holder block
PEG_SIDE_M = 0.01              # square peg cross-section
PEG_LENGTH_M = 0.05            # peg length below the holder
#: tcp (peg tip) distance from the hand flange along the flange z axis (m).
TCP_FROM_HAND_M = FT_SENSOR_LENGTH_M + HOLDER_LENGTH_M + PEG_LENGTH_M
BASE_MASS_KG = 2.07
HAND_MASS_KG = 0.2
FT_SENSOR_MASS_KG = 0.25
HOLDER_MASS_KG = 0.15
PEG_MASS_KG = 0.0135           # aluminium 10 x 10 x 50 mm


def _cyl_inertia(m, r, h):
    ixx = m * (3 * r * r + h * h) / 12.0
    return ixx, ixx, 0.5 * m * r * r


def _box_inertia(m, x, y, z):
    return m * (y * y + z * z) / 12, m * (x * x + z * z) / 12, m * (x * x + y * y) / 12


def _fmt(v):
    return ' '.join(f'{x:.6g}' for x in v)


def _segment_rpy(p):
    """Return (rpy, length) of a cylinder from the origin to point ``p`` (its z along p)."""
    length = math.sqrt(sum(x * x for x in p))
    pitch = math.atan2(math.hypot(p[0], p[1]), p[2])
    yaw = math.atan2(p[1], p[0])
    return (0.0, pitch, yaw), length


def _inertial(m, inertia, xyz=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0)):
    ixx, iyy, izz = inertia
    return (f'    <inertial><origin xyz="{_fmt(xyz)}" rpy="{_fmt(rpy)}"/><mass value="{m}"/>'
            f'<inertia ixx="{ixx:.6g}" ixy="0" ixz="0" iyy="{iyy:.6g}" iyz="0" izz="{izz:.6g}"/>'
            '</inertial>\n')


def _shape(kind, name, xyz, rpy, geometry, rgba):
    origin = f'<origin xyz="{_fmt(xyz)}" rpy="{_fmt(rpy)}"/>'
    body = f'{origin}<geometry>{geometry}</geometry>'
    if kind == 'visual':
        return (f'    <visual>{body}<material name="{name}"><color rgba="{rgba}"/></material>'
                '</visual>\n')
    return f'    <collision>{body}</collision>\n'


def _arm_link(name, mass, radius, next_xyz, rgba):
    """A link: a housing cylinder along the joint axis and a cylinder to the next joint."""
    housing = f'<cylinder radius="{radius:.4g}" length="{2 * radius:.4g}"/>'
    parts = [((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), housing)]
    inertial = _inertial(mass, _cyl_inertia(mass, radius, 2 * radius))
    if next_xyz is not None:
        rpy, length = _segment_rpy(next_xyz)
        if length > 1e-6:
            mid = tuple(0.5 * x for x in next_xyz)
            r = 0.8 * radius
            parts.append((mid, rpy, f'<cylinder radius="{r:.4g}" length="{length:.4g}"/>'))
            inertial = _inertial(mass, _cyl_inertia(mass, radius, length), mid, rpy)
    out = [f'  <link name="{name}">\n', inertial]
    for kind in ('visual', 'collision'):
        for k, (xyz, rpy, geo) in enumerate(parts):
            out.append(_shape(kind, f'{name}_mat{k}', xyz, rpy, geo, rgba))
    out.append('  </link>\n')
    return ''.join(out)


def _box_link(name, mass, size, z, rgba):
    geo = f'<box size="{_fmt(size)}"/>'
    return (f'  <link name="{name}">\n'
            + _inertial(mass, _box_inertia(mass, *size), (0.0, 0.0, z))
            + _shape('visual', f'{name}_mat', (0.0, 0.0, z), (0.0, 0.0, 0.0), geo, rgba)
            + _shape('collision', '', (0.0, 0.0, z), (0.0, 0.0, 0.0), geo, rgba)
            + '  </link>\n')


def _cyl_link(name, mass, radius, length, rgba):
    geo = f'<cylinder radius="{radius}" length="{length}"/>'
    z = length / 2
    return (f'  <link name="{name}">\n'
            + _inertial(mass, _cyl_inertia(mass, radius, length), (0.0, 0.0, z))
            + _shape('visual', f'{name}_mat', (0.0, 0.0, z), (0.0, 0.0, 0.0), geo, rgba)
            + _shape('collision', '', (0.0, 0.0, z), (0.0, 0.0, 0.0), geo, rgba)
            + '  </link>\n')


def _fixed(name, parent, child, xyz=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0)):
    return (f'  <joint name="{name}" type="fixed"><parent link="{parent}"/>'
            f'<child link="{child}"/><origin xyz="{_fmt(xyz)}" rpy="{_fmt(rpy)}"/></joint>\n')


def urdf_text():
    """Return the URDF (str) of the Sawyer with its peg."""
    out = ['<?xml version="1.0"?>\n',
           '<!-- Generated by awopt_ros.sim.sawyer_urdf from the Rethink Sawyer published '
           'kinematics and limits. Do not edit by hand. -->\n',
           '<robot name="sawyer_peg">\n',
           '  <mujoco><compiler discardvisual="false" fusestatic="false" '
           'balanceinertia="true"/></mujoco>\n',
           _cyl_link('base_link', BASE_MASS_KG, 0.09, 0.08, '0.3 0.3 0.3 1')]
    parent = 'base_link'
    for i, (xyz, rpy, lo, hi, vel, eff, mass, radius) in enumerate(_JOINTS):
        child = f'right_l{i}'
        nxt = _JOINTS[i + 1][0] if i + 1 < len(_JOINTS) else HAND_XYZ
        out.append(_arm_link(child, mass, radius, nxt,
                             '0.75 0.1 0.1 1' if i % 2 == 0 else '0.2 0.2 0.2 1'))
        out.append(
            f'  <joint name="right_j{i}" type="revolute">\n'
            f'    <parent link="{parent}"/><child link="{child}"/>\n'
            f'    <origin xyz="{_fmt(xyz)}" rpy="{_fmt(rpy)}"/><axis xyz="0 0 1"/>\n'
            f'    <limit lower="{lo}" upper="{hi}" effort="{eff}" velocity="{vel}"/>\n'
            '    <dynamics damping="0.5"/>\n  </joint>\n')
        parent = child
    out.append(_cyl_link('right_hand', HAND_MASS_KG, 0.04, 0.01, '0.2 0.2 0.2 1'))
    out.append(_fixed('right_hand', parent, 'right_hand', HAND_XYZ, HAND_RPY))
    # Wrist force/torque sensor: its body's frame is the sensing frame (same axes as tcp).
    out.append(_cyl_link('ft_sensor', FT_SENSOR_MASS_KG, 0.035, FT_SENSOR_LENGTH_M,
                         '0.6 0.6 0.65 1'))
    out.append(_fixed('ft_sensor_mount', 'right_hand', 'ft_sensor'))
    out.append(_box_link('peg_holder', HOLDER_MASS_KG, (0.04, 0.04, HOLDER_LENGTH_M),
                         HOLDER_LENGTH_M / 2, '0.25 0.25 0.3 1'))
    out.append(_fixed('peg_holder_mount', 'ft_sensor', 'peg_holder',
                      (0.0, 0.0, FT_SENSOR_LENGTH_M)))
    out.append(_box_link('peg', PEG_MASS_KG, (PEG_SIDE_M, PEG_SIDE_M, PEG_LENGTH_M),
                         PEG_LENGTH_M / 2, '0.85 0.7 0.2 1'))
    out.append(_fixed('peg_mount', 'peg_holder', 'peg', (0.0, 0.0, HOLDER_LENGTH_M)))
    out.append('  <link name="tcp"/>\n')
    out.append(_fixed('tcp_joint', 'peg', 'tcp', (0.0, 0.0, PEG_LENGTH_M)))
    out.append('</robot>\n')
    return ''.join(out)


def main(argv=None):
    """Write the URDF to the path given as the first argument (stdout when none)."""
    from awopt_ros.sim.iiwa_urdf import write_text
    return write_text(urdf_text(), argv)


if __name__ == '__main__':
    sys.exit(main())
