"""MuJoCo stand-in for the Kuka iiwa 14 bin-grasping cell (ROS-free).

The scene is built with ``mujoco.MjSpec`` from ``urdf/iiwa14_gripper.urdf``: a floor, an open
bin centred at :data:`awopt_ros.core.robot.BIN_CENTER_M`, ``num_objects`` procedurally
generated objects (box, cylinder, sphere or capsule; random sizes, colours, positions and
yaws per seed), stiff position actuators with gravity compensation on the 7 arm joints, a
force-limited position actuator on ``gripper_finger_joint`` (the right finger mirrors it
through the URDF mimic equality) and an over-the-shoulder camera ``shoulder_camera``.

Frames: MuJoCo's world frame is ``base_link`` (z up, metres). Every object body's local x axis
is its longest horizontal extent, so a grasp closes across local y (the scripted policy uses
this to align the gripper yaw).
"""
import math

import mujoco
import numpy as np

from awopt_ros.core import robot, spec

ARM_ACTUATORS = tuple(f'act_{j}' for j in spec.ARM_JOINTS)
GRIPPER_ACTUATOR = 'act_gripper'
CAMERA_NAME = 'shoulder_camera'
BIN_INNER_M = (0.4, 0.5)          # inner size along x, y
BIN_WALL_HEIGHT_M = 0.1
BIN_WALL_THICKNESS_M = 0.01
OBJECT_WIDTH_M = (0.025, 0.06)    # graspable extent (across the fingers)
OBJECT_LENGTH_M = (0.025, 0.08)   # longest horizontal extent
OBJECT_HEIGHT_M = (0.025, 0.06)
OBJECT_DENSITY_KG_M3 = 400.0
SHAPES = ('box', 'cylinder', 'sphere', 'capsule')
FINGER_FORCE_N = 25.0
SETTLE_S = 0.4
#: Default start-pose randomisation (see :class:`GraspSim`): none, every episode starts at
#: HOME_Q as the episode manager's reset does on hardware.
START_JITTER_M = (0.0, 0.0, 0.0)
START_JITTER_RAD = 0.0
# Camera above the robot's left shoulder looking down at the bin: the bin fills the central
# 480x480 crop and the gripper stays in view while it works in the bin.
CAMERA_POS_M = (0.0, 0.6, 1.2)
CAMERA_LOOKAT_M = (0.6, 0.0, 0.03)
CAMERA_FOVY_DEG = 28.0
# Arm servo: stiffness (Nm/rad) and damping (Nms/rad) per joint; forces limited to the URDF
# effort limits.
_ARM_KP = (3000.0, 3000.0, 1500.0, 1500.0, 600.0, 300.0, 300.0)
_ARM_KV = (150.0, 150.0, 75.0, 75.0, 20.0, 10.0, 10.0)
_ARM_EFFORT_NM = (320.0, 320.0, 176.0, 176.0, 110.0, 40.0, 40.0)


def fovy_intrinsics(fovy_deg, width_px, height_px):
    """Return the (3, 3) float64 pinhole intrinsics K (px) of a MuJoCo camera with vertical
    field of view ``fovy_deg`` (deg) rendering ``width_px`` x ``height_px`` (square pixels,
    principal point at the image centre)."""
    fy = 0.5 * height_px / math.tan(math.radians(float(fovy_deg)) / 2)
    return np.array([[fy, 0.0, width_px / 2.0], [0.0, fy, height_px / 2.0], [0.0, 0.0, 1.0]])


def shoulder_camera(width=640, height=480):
    """Return the shoulder camera as a :class:`awopt_ros.core.camera.PinholeCamera`.

    The same pose, fov and image size as the rendered camera (base frame = MuJoCo world).
    """
    from awopt_ros.core.camera import PinholeCamera
    return PinholeCamera.look_at(CAMERA_POS_M, CAMERA_LOOKAT_M, CAMERA_FOVY_DEG, width, height)


def _look_at_quat(pos, target, up=(0.0, 0.0, 1.0)):
    """Return the wxyz quaternion of a MuJoCo camera at ``pos`` looking at ``target``.

    MuJoCo cameras look along their local -z with y up: the optical frame (x right, y down,
    z forward) of :func:`awopt_ros.core.camera.look_at_rotation` with y and z negated.
    """
    from awopt_ros.core.camera import look_at_rotation
    rot = look_at_rotation(pos, target, up) * np.array([1.0, -1.0, -1.0])   # camera x, y, z
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    return quat


def check_shapes(shapes):
    """Return ``shapes`` as a tuple of :data:`SHAPES` names, or None for None (every shape).

    Raises:
        ValueError: empty, or a name not in :data:`SHAPES`.
    """
    if shapes is None:
        return None
    if isinstance(shapes, str):
        shapes = (shapes,)
    out = tuple(str(name) for name in shapes)
    unknown = [name for name in out if name not in SHAPES]
    if not out or unknown:
        raise ValueError(f'shapes must be a non-empty subset of {SHAPES}, got {shapes!r}')
    return out


def _sample_object(rng, shapes=None):
    """Return (shape, geom size, geom quat in body, half extents (hx, hy, hz)) for one object.

    ``shapes`` None draws from :data:`SHAPES` (the scenes of every seed stay as they were);
    a tuple draws from those shapes only.
    """
    choices = SHAPES if shapes is None else shapes
    shape = choices[int(rng.integers(len(choices)))]
    width = rng.uniform(*OBJECT_WIDTH_M)
    if shape == 'sphere':
        r = width / 2
        return shape, [r, 0, 0], [1, 0, 0, 0], (r, r, r)
    if shape == 'box':
        length = rng.uniform(max(width, OBJECT_LENGTH_M[0]), OBJECT_LENGTH_M[1])
        height = rng.uniform(*OBJECT_HEIGHT_M)
        half = (length / 2, width / 2, height / 2)
        return shape, list(half), [1, 0, 0, 0], half
    r = width / 2
    if shape == 'cylinder' and rng.uniform() < 0.5:   # upright cylinder
        h = rng.uniform(*OBJECT_HEIGHT_M) / 2
        return shape, [r, h, 0], [1, 0, 0, 0], (r, r, h)
    # Lying cylinder or capsule: axis along body x.
    length = rng.uniform(max(2 * r + 0.01, OBJECT_LENGTH_M[0]), OBJECT_LENGTH_M[1] + 0.02)
    half_len = length / 2 - (r if shape == 'capsule' else 0.0)
    half_len = max(half_len, 0.005)
    quat = [math.cos(math.pi / 4), 0, math.sin(math.pi / 4), 0]  # geom z -> body x
    total = half_len + (r if shape == 'capsule' else 0.0)
    return shape, [r, half_len, 0], quat, (total, r, r)


def build_spec(urdf_path, seed, num_objects=5, physics_dt_s=0.002, image_size=(640, 480),
               shapes=None):
    """Return ``(MjSpec, objects)``: the cell with a random scene drawn from ``seed``.

    ``objects`` is a list of dicts (name, shape, half_extents_m). ``shapes``: None (every
    shape of :data:`SHAPES`, the default) or a tuple of the shapes the objects are drawn from
    (e.g. ``('capsule',)`` for scenes of held-out objects). Raises ValueError on bad
    arguments.
    """
    shapes = check_shapes(shapes)
    if num_objects < 1:
        raise ValueError(f'num_objects must be >= 1, got {num_objects}')
    if physics_dt_s <= 0:
        raise ValueError(f'physics_dt_s must be > 0, got {physics_dt_s}')
    width_px, height_px = int(image_size[0]), int(image_size[1])
    if width_px <= 0 or height_px <= 0:
        raise ValueError(f'image_size must be positive (width, height), got {image_size}')
    rng = np.random.default_rng(seed)
    s = mujoco.MjSpec.from_file(str(urdf_path))
    s.option.timestep = physics_dt_s
    s.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    s.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    s.option.impratio = 10.0
    s.visual.quality.shadowsize = 0
    s.visual.global_.offwidth = max(width_px, 640)
    s.visual.global_.offheight = max(height_px, 480)
    s.visual.headlight.ambient = [0.35, 0.35, 0.35]
    s.visual.headlight.diffuse = [0.5, 0.5, 0.5]

    # Robot: gravity compensation, finger contact properties, stiff mimic equality.
    for body in s.bodies:
        if body.name and body.name != 'world':
            body.gravcomp = 1.0
    for geom in s.geoms:
        geom.friction = [1.5, 0.02, 0.002]
        geom.condim = 4
    for eq in s.equalities:
        eq.solref = [0.004, 1.0]
    for joint, kp, kv, eff in zip(spec.ARM_JOINTS, _ARM_KP, _ARM_KV, _ARM_EFFORT_NM):
        act = s.add_actuator(name=f'act_{joint}', target=joint,
                             trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=kp, kv=kv)
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-eff, eff]
        s.joint(joint).armature = 0.1
    act = s.add_actuator(name=GRIPPER_ACTUATOR, target=spec.GRIPPER_JOINT,
                         trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_position(kp=2000.0, kv=40.0)
    act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    act.forcerange = [-FINGER_FORCE_N, FINGER_FORCE_N]
    act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    act.ctrlrange = [0.0, spec.GRIPPER_CLOSED_M]
    for name in (spec.GRIPPER_JOINT, 'gripper_right_finger_joint'):
        s.joint(name).armature = 0.05
        s.joint(name).damping = [5.0, 0.0, 0.0]

    world = s.worldbody
    world.add_light(name='key', pos=[0.3, 0.0, 2.0], dir=[0.1, 0.0, -1.0], castshadow=False,
                    diffuse=[0.6, 0.6, 0.6])
    world.add_geom(name='floor', type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2.0, 2.0, 0.1],
                   rgba=[0.55, 0.55, 0.5, 1.0], friction=[1.0, 0.02, 0.002], condim=4)
    # Bin: open box (four walls on the floor) with a slightly darker floor patch.
    cx, cy, _ = robot.BIN_CENTER_M
    ix, iy = BIN_INNER_M[0] / 2, BIN_INNER_M[1] / 2
    t, h = BIN_WALL_THICKNESS_M / 2, BIN_WALL_HEIGHT_M / 2
    bin_rgba = [0.2, 0.35, 0.6, 1.0]
    walls = {'bin_wall_front': ([cx + ix + t, cy, h], [t, iy + 2 * t, h]),
             'bin_wall_back': ([cx - ix - t, cy, h], [t, iy + 2 * t, h]),
             'bin_wall_left': ([cx, cy + iy + t, h], [ix, t, h]),
             'bin_wall_right': ([cx, cy - iy - t, h], [ix, t, h])}
    for name, (pos, size) in walls.items():
        world.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, pos=pos, size=size,
                       rgba=bin_rgba, friction=[1.0, 0.02, 0.002])
    world.add_geom(name='bin_floor', type=mujoco.mjtGeom.mjGEOM_BOX, pos=[cx, cy, 0.0005],
                   size=[ix, iy, 0.0005], rgba=[0.75, 0.75, 0.7, 1.0],
                   contype=0, conaffinity=0)

    geom_types = {'box': mujoco.mjtGeom.mjGEOM_BOX, 'cylinder': mujoco.mjtGeom.mjGEOM_CYLINDER,
                  'sphere': mujoco.mjtGeom.mjGEOM_SPHERE,
                  'capsule': mujoco.mjtGeom.mjGEOM_CAPSULE}
    objects, placed = [], []
    margin = 0.03
    for i in range(num_objects):
        shape, size, gquat, half = _sample_object(rng, shapes)
        radius_xy = math.hypot(half[0], half[1])
        for _ in range(200):   # rejection sampling: inside the bin, not overlapping
            x = rng.uniform(cx - ix + margin + half[1], cx + ix - margin - half[1])
            y = rng.uniform(cy - iy + margin + half[1], cy + iy - margin - half[1])
            if all(math.hypot(x - px, y - py) > radius_xy + pr + 0.01 for px, py, pr in placed):
                break
        placed.append((x, y, radius_xy))
        yaw = rng.uniform(-math.pi, math.pi)
        name = f'object_{i}'
        body = world.add_body(name=name, pos=[x, y, half[2] + 0.003],
                              quat=[math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)])
        body.add_freejoint(name=f'{name}_free')
        colour = rng.uniform(0.15, 0.95, size=3)
        body.add_geom(name=f'{name}_geom', type=geom_types[shape], size=size, quat=gquat,
                      rgba=[*colour, 1.0], density=OBJECT_DENSITY_KG_M3,
                      friction=[1.2, 0.02, 0.002], condim=4, solref=[0.004, 1.0])
        objects.append({'name': name, 'shape': shape, 'half_extents_m': half})

    world.add_camera(name=CAMERA_NAME, pos=list(CAMERA_POS_M),
                     quat=list(_look_at_quat(CAMERA_POS_M, CAMERA_LOOKAT_M)),
                     fovy=CAMERA_FOVY_DEG, resolution=[width_px, height_px])
    return s, objects


class GraspSim:
    """The simulated grasping cell: physics, commands, state and camera frames.

    Args:
        urdf_path: path of ``urdf/iiwa14_gripper.urdf``.
        num_objects: objects dropped into the bin per scene (>= 1).
        physics_dt_s: MuJoCo time step (s).
        image_size: camera (width, height) in pixels.
        success_height_m: an object counts as lifted when its lowest point is this far above
            the bin floor (m).
        start_jitter_m: (x, y, z) half-ranges (m) of the uniform offset of the episode's start
            tool position from ``robot.HOME_TCP_M``; the start yaw gets +-``start_jitter_rad``.
            Drawn from the scene seed, so a seed always gives the same start. Random starts
            keep the tool position from telling a learned policy how far into the episode it
            is (a shortcut behaviour cloning takes from a fixed start); zeros (the default)
            start every episode at ``robot.HOME_Q``.
        start_jitter_rad: half-range of the start yaw offset (rad).
        shapes: None (objects of every shape, the default) or a tuple of the shapes scenes
            are made of (see :func:`build_spec`).

    Call :meth:`reset` before use (the constructor builds the scene of seed 0).
    """

    def __init__(self, urdf_path, num_objects=5, physics_dt_s=0.002, image_size=(640, 480),
                 success_height_m=0.12, start_jitter_m=START_JITTER_M,
                 start_jitter_rad=START_JITTER_RAD, shapes=None):
        self.shapes = check_shapes(shapes)
        if success_height_m <= 0:
            raise ValueError(f'success_height_m must be > 0, got {success_height_m}')
        jitter = np.asarray(start_jitter_m, dtype=float).reshape(-1)
        if jitter.shape != (3,) or not np.all(np.isfinite(jitter)) or np.any(jitter < 0) \
                or np.any(jitter > 0.15) or not 0.0 <= float(start_jitter_rad) <= 1.0:
            raise ValueError(f'start jitter must be 3 values in [0, 0.15] m and a yaw in [0, 1] '
                             f'rad, got {start_jitter_m!r}, {start_jitter_rad!r}')
        self.start_jitter_m = jitter
        self.start_jitter_rad = float(start_jitter_rad)
        self._kin = None
        self.urdf_path = str(urdf_path)
        self.num_objects = int(num_objects)
        self.physics_dt_s = float(physics_dt_s)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.success_height_m = float(success_height_m)
        self.model = None
        self.data = None
        self.objects = []
        self.seed = None
        self._renderer = None
        self.reset(0)

    # -- scene -------------------------------------------------------------------------------
    def reset(self, seed):
        """Build the scene of ``seed``: arm at its start pose, gripper open, objects settled."""
        s, self.objects = build_spec(self.urdf_path, seed, self.num_objects, self.physics_dt_s,
                                     self.image_size, self.shapes)
        self.model = s.compile()
        self.data = mujoco.MjData(self.model)
        self.seed = int(seed)
        m = self.model
        self._arm_qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in spec.ARM_JOINTS])
        self._arm_dadr = np.array([m.jnt_dofadr[m.joint(j).id] for j in spec.ARM_JOINTS])
        finger = m.joint(spec.GRIPPER_JOINT).id
        right = m.joint('gripper_right_finger_joint').id
        self._finger_qadr, self._finger_dadr = m.jnt_qposadr[finger], m.jnt_dofadr[finger]
        self._right_qadr = m.jnt_qposadr[right]
        self._arm_act = np.array([m.actuator(a).id for a in ARM_ACTUATORS])
        self._grip_act = m.actuator(GRIPPER_ACTUATOR).id
        self._obj_body = np.array([m.body(o['name']).id for o in self.objects])
        self._obj_geom = np.array([m.geom(o['name'] + '_geom').id for o in self.objects])
        self._camera_id = m.camera(CAMERA_NAME).id
        q_start = self.start_joints(seed)
        self.data.qpos[self._arm_qadr] = q_start
        self.set_arm_target(q_start)
        self.set_gripper_target(0.0)
        mujoco.mj_forward(self.model, self.data)
        self.step(int(round(SETTLE_S / self.physics_dt_s)))
        self.data.time = 0.0
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def start_joints(self, seed):
        """Return the (7,) start joint positions (rad) of scene ``seed``.

        ``robot.HOME_Q`` moved by differential IK so that the tool sits at ``HOME_TCP_M`` plus a
        seeded uniform offset within ``start_jitter_m``, pointing down, yaw offset within
        ``start_jitter_rad``.
        """
        if not np.any(self.start_jitter_m) and self.start_jitter_rad == 0.0:
            return np.asarray(robot.HOME_Q, dtype=float)
        if self._kin is None:
            from awopt_ros.core.kinematics import Kinematics
            self._kin = Kinematics(self.urdf_path)
        rng = np.random.default_rng([int(seed), 7])
        offset = rng.uniform(-1.0, 1.0, 3) * self.start_jitter_m
        dyaw = float(rng.uniform(-1.0, 1.0)) * self.start_jitter_rad
        q = np.asarray(robot.HOME_Q, dtype=float)
        goal = np.asarray(robot.HOME_TCP_M, dtype=float) + offset
        for _ in range(4):   # converge: each call is one damped least-squares solve
            pos, _ = self._kin.fk(q)
            q = self._kin.ik_step(q, goal - pos, dyaw, dt_s=10.0)
            dyaw = 0.0
        return q

    @property
    def time_s(self):
        """Simulated time (s) since the last reset."""
        return float(self.data.time)

    def step(self, n=1):
        """Advance the physics by ``n`` time steps of ``physics_dt_s``."""
        mujoco.mj_step(self.model, self.data, nstep=int(n)) if n > 0 else None

    # -- commands ------------------------------------------------------------------------------
    def set_arm_target(self, q7):
        """Set the 7 arm joint position targets (rad), clipped to the joint limits.

        Raises:
            ValueError: not 7 finite values.
        """
        q = np.asarray(q7, dtype=float).reshape(-1)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f'arm target must be 7 finite joint positions (rad), got {q7!r}')
        lo, hi = self.model.jnt_range[[self.model.joint(j).id for j in spec.ARM_JOINTS]].T
        self.data.ctrl[self._arm_act] = np.clip(q, lo, hi)

    def set_gripper_target(self, finger_m):
        """Set the finger target (m): 0.0 = open, 0.04 = closed (clipped to that range).

        Raises:
            ValueError: not finite.
        """
        f = float(finger_m)
        if not math.isfinite(f):
            raise ValueError(f'gripper target must be finite, got {finger_m!r}')
        self.data.ctrl[self._grip_act] = min(max(f, 0.0), spec.GRIPPER_CLOSED_M)

    # -- state ---------------------------------------------------------------------------------
    def joint_positions(self):
        """Return (8,) float64: 7 arm joints (rad) then ``gripper_finger_joint`` (m)."""
        return np.append(self.data.qpos[self._arm_qadr], self.data.qpos[self._finger_qadr])

    def joint_velocities(self):
        """Return (8,) float64: 7 arm joint velocities (rad/s) then the finger's (m/s)."""
        return np.append(self.data.qvel[self._arm_dadr], self.data.qvel[self._finger_dadr])

    def arm_target(self):
        """Return the current (7,) arm position targets (rad)."""
        return self.data.ctrl[self._arm_act].copy()

    def object_poses(self):
        """Return (N, 7) float64 object poses in ``base_link``: x, y, z (m), quat w, x, y, z."""
        return np.concatenate([self.data.xpos[self._obj_body],
                               self.data.xquat[self._obj_body]], axis=1)

    def object_extents(self):
        """Return (N, 3) float64 half extents (m) of each object along its body x, y, z."""
        return np.array([o['half_extents_m'] for o in self.objects], dtype=np.float64)

    def object_lowest_z(self):
        """Return (N,) float64: the lowest point (m, world z) of each object's geometry."""
        m, d = self.model, self.data
        out = np.empty(len(self._obj_geom))
        for k, g in enumerate(self._obj_geom):
            rot = d.geom_xmat[g].reshape(3, 3)
            size = m.geom_size[g]
            z = d.geom_xpos[g][2]
            gtype = m.geom_type[g]
            if gtype == mujoco.mjtGeom.mjGEOM_SPHERE:
                out[k] = z - size[0]
            elif gtype == mujoco.mjtGeom.mjGEOM_BOX:
                out[k] = z - np.abs(rot[2]) @ size
            elif gtype == mujoco.mjtGeom.mjGEOM_CAPSULE:
                out[k] = z - abs(rot[2, 2]) * size[1] - size[0]
            else:   # cylinder: axis extent plus the rim
                c = abs(rot[2, 2])
                out[k] = z - c * size[1] - size[0] * math.sqrt(max(0.0, 1.0 - c * c))
        return out

    def object_lifted(self):
        """Return True when some object's lowest point is ``success_height_m`` above the floor."""
        floor_z = float(robot.BIN_CENTER_M[2])
        return bool(np.any(self.object_lowest_z() - floor_z > self.success_height_m))

    # -- camera --------------------------------------------------------------------------------
    def render(self):
        """Return the shoulder camera frame, uint8 (height, width, 3) RGB."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height=self.image_size[1],
                                             width=self.image_size[0])
        self._renderer.update_scene(self.data, camera=self._camera_id)
        return self._renderer.render()

    def camera_matrix(self):
        """Return the (3, 3) pinhole intrinsics K (px) of the camera from its vertical fov."""
        return fovy_intrinsics(self.model.cam_fovy[self._camera_id], *self.image_size)

    def close(self):
        """Release the renderer (its GL context)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
