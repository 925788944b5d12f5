"""MuJoCo peg-in-hole cell on a simulated Rethink Sawyer (ROS-free).

The model is built with ``mujoco.MjSpec`` from ``urdf/sawyer.urdf`` (the arm holding a square
peg rigidly from the start) plus:

- a socket fixture made of box primitives (a mesh hole would collide as its convex hull): four
  walls around a square bore ``peg_side + clearance`` wide and ``hole_depth`` deep, a floor
  under it, and at the bore's top edge a 45 degree chamfer ``chamfer_m`` wide built from boxes
  turned 45 degrees (each wall's inner top corner is a diamond whose upper-inner face is the
  chamfer surface). The socket is a mocap body, so its pose can change per episode without
  recompiling;
- stiff contacts (FACTS, Insertion): 1 ms step, ``implicitfast``, Newton, elliptic cone,
  impratio 10, solref (0.002, 1), solimp (0.95, 0.99, 0.0005), margin 0; with them the peg
  penetrates a wall by well under 0.1 mm, so it cannot enter a hole it geometrically misses;
- a Cartesian impedance controller below the joint-target interface: six position actuators
  with a site transmission from the peg tip (site ``tcp_site``) to a reference site on a mocap
  body placed at the forward kinematics of the commanded joint target, i.e. the joint torques
  are ``J^T (K e - D v)`` in the target's frame (translational stiffness ``stiffness_n_m``,
  rotational ``rot_stiffness_nm_rad``, damping from the tip's effective mass at
  ``damping_ratio``), evaluated by MuJoCo at every physics step; gravity compensation on
  every robot body; a joint spring toward the joint target projected into the dynamically
  consistent nullspace of the tip Jacobian (Khatib 1987), updated every
  ``NULLSPACE_UPDATE_STEPS`` physics steps, holds the redundant (elbow) motion without
  pushing the tip;
- a wrist force/torque sensor (MuJoCo force and torque sensors at site ``ft_site`` between the
  hand's sensor body and the peg holder);
- a camera ``socket_camera`` looking at the socket.

Frames: MuJoCo's world frame is ``base_link`` (z up, metres). The tool frame is the peg tip
``tcp``: z along the peg (down at home), x = -base x, y = base y at home. The wrench
(:meth:`InsertionSim.wrench`) is the force and torque the environment exerts on the peg, at
the tip in tcp axes, zeroed at reset: pressing the peg down gives fz < 0; a peg jammed with
one edge on the socket's top face shows a torque of about 5 mm x fz about the other axis.

Measured (``test/test_insertion_sim.py``): 2000 N/m at the tip within 1%; a 70 N push beside
the bore sinks the peg < 0.05 mm into the top face and never inserts it (with MuJoCo's
default contact settings a 0.8 mm error went in, penetrating the chamfer by 1 mm).
"""
import dataclasses
import math
from dataclasses import dataclass

import mujoco
import numpy as np

from awopt_ros.core import paths, sawyer

CAMERA_NAME = 'socket_camera'
#: frame_id of the wrench (the tool frame at the peg tip).
WRENCH_FRAME = sawyer.TCP_FRAME
#: Camera pose relative to the socket's top centre (m): in front of and above the socket,
#: on the side away from the robot, looking at the bore.
CAMERA_OFFSET_M = (0.22, -0.12, 0.16)
CAMERA_FOVY_DEG = 30.0
#: Lateral tolerance (m) added to clearance/2 in the "inside the bore" test: contact
#: penetration and a slight tilt let the tip sit that much further out.
BORE_TOLERANCE_M = 0.0002
WALL_THICKNESS_M = 0.02
FLOOR_THICKNESS_M = 0.01
SETTLE_STEPS = 20
#: Joint-space spring toward the commanded joints (N m/rad, N m s/rad), projected into the
#: nullspace of the tip Jacobian: it holds the arm's redundant (self-motion) direction only.
NULLSPACE_KP = 10.0
NULLSPACE_KV = 2.0
#: The nullspace torque is recomputed every this many physics steps (held in between).
NULLSPACE_UPDATE_STEPS = 10
_CONTACT_SOLREF = (0.002, 1.0)
_CONTACT_SOLIMP = (0.95, 0.99, 0.0005, 0.5, 2.0)
_VARIANTS = {'default': (0.0004, 0.0005), 'hard': (0.0001, 0.0)}


@dataclass
class InsertionConfig:
    """Scene and controller settings. ``None`` fields take the ``variant``'s values.

    Attributes:
        variant: 'default' (clearance 0.4 mm, 0.5 mm chamfer) or 'hard' (0.1 mm, none).
        clearance_m: diametral clearance between peg and bore (bore side = peg + clearance).
        chamfer_m: width of the 45 degree chamfer at the bore's top edge (0 = sharp edge).
        peg_side_m: side of the square peg (m).
        hole_depth_m: bore depth (m); the goal is the peg tip at the bore's bottom.
        goal_noise_m: half-range of the uniform per-episode error of the observed goal in x
            and y (m; the perception error).
        start_height_m: (min, max) start height of the peg tip above the socket top (m).
        start_jitter_m: half-range of the uniform start offset in x and y (m).
        socket_jitter_m: half-range of the uniform socket position offset in x, y (m).
        physics_dt_s: MuJoCo time step (s).
        stiffness_n_m: translational Cartesian stiffness at the peg tip (N/m).
        rot_stiffness_nm_rad: rotational Cartesian stiffness (N m/rad). The 2000 N/m default
            is SERL's real peg-insertion impedance (FACTS, Insertion); 150 N m/rad is a
            choice (60 gave the same P-controller success under goal noise).
        damping_ratio: Cartesian damping as a fraction of critical (per axis, from the tip's
            effective mass at the home pose).
        friction: sliding friction coefficient between peg and socket.
        control_period_s: one control period (s); ``steps_per_control`` physics steps.
        image_size: camera (width, height) px.
        render: False disables :meth:`InsertionSim.render` (no GL context is ever made).

    Raises:
        ValueError: (at construction) an unknown variant or out-of-range values.
    """

    variant: str = 'default'
    clearance_m: float = None
    chamfer_m: float = None
    peg_side_m: float = 0.01
    hole_depth_m: float = 0.02
    goal_noise_m: float = 0.001
    start_height_m: tuple = (0.03, 0.05)
    start_jitter_m: float = 0.002
    socket_jitter_m: float = 0.0
    physics_dt_s: float = 0.001
    stiffness_n_m: float = 2000.0
    rot_stiffness_nm_rad: float = 150.0
    damping_ratio: float = 1.0
    friction: float = 0.3
    control_period_s: float = 0.1
    image_size: tuple = (640, 480)
    render: bool = True

    def __post_init__(self):
        if self.variant not in _VARIANTS:
            raise ValueError(f'variant must be one of {sorted(_VARIANTS)}, got {self.variant!r}')
        clearance, chamfer = _VARIANTS[self.variant]
        if self.clearance_m is None:
            self.clearance_m = clearance
        if self.chamfer_m is None:
            self.chamfer_m = chamfer
        self.start_height_m = tuple(float(h) for h in self.start_height_m)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        checks = {
            'clearance_m in (0, 0.005]': 0.0 < self.clearance_m <= 0.005,
            'chamfer_m in [0, 0.005]': 0.0 <= self.chamfer_m <= 0.005,
            'peg_side_m in [0.002, 0.03]': 0.002 <= self.peg_side_m <= 0.03,
            'hole_depth_m in [0.002, 0.04]': 0.002 <= self.hole_depth_m <= 0.04,
            'goal_noise_m in [0, 0.01]': 0.0 <= self.goal_noise_m <= 0.01,
            'start_height_m = (min, max) with 0 < min <= max <= 0.15':
                len(self.start_height_m) == 2
                and 0.0 < self.start_height_m[0] <= self.start_height_m[1] <= 0.15,
            'start_jitter_m in [0, 0.02]': 0.0 <= self.start_jitter_m <= 0.02,
            'socket_jitter_m in [0, 0.05]': 0.0 <= self.socket_jitter_m <= 0.05,
            'physics_dt_s in (0, 0.005]': 0.0 < self.physics_dt_s <= 0.005,
            'stiffness_n_m in [100, 20000]': 100.0 <= self.stiffness_n_m <= 20000.0,
            'rot_stiffness_nm_rad in [1, 1000]': 1.0 <= self.rot_stiffness_nm_rad <= 1000.0,
            'damping_ratio in [0.1, 3]': 0.1 <= self.damping_ratio <= 3.0,
            'friction in [0, 2]': 0.0 <= self.friction <= 2.0,
            'control_period_s >= physics_dt_s':
                self.control_period_s >= self.physics_dt_s > 0.0,
            'image_size positive': min(self.image_size) > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f'bad InsertionConfig: need {", ".join(bad)} ({self})')

    def replace(self, **changes):
        """Return a copy with ``changes``. A changed ``variant`` takes that variant's
        clearance and chamfer unless ``changes`` gives them (``dataclasses.replace`` would
        keep the old variant's values)."""
        if changes.get('variant', self.variant) != self.variant:
            changes.setdefault('clearance_m', None)
            changes.setdefault('chamfer_m', None)
        return dataclasses.replace(self, **changes)


def socket_boxes(peg_side_m, clearance_m, chamfer_m, hole_depth_m,
                 wall_m=WALL_THICKNESS_M, floor_m=FLOOR_THICKNESS_M):
    """Return the socket's box pieces as ``[(name, centre (3,), half sizes (3,), quat wxyz)]``.

    Coordinates relative to the socket's top centre (z up, the top face at z = 0). The bore is
    the square ``|x|, |y| < a`` (a = (peg_side + clearance) / 2) down to z = -depth. With a
    chamfer c > 0 each wall's inner top corner is cut at 45 degrees from (a, -c) to (a + c, 0):
    the wall is a main block up to z = -c, an upper block set back by c, and a box turned
    45 degrees about the wall's length axis whose face lies on the chamfer plane (all its
    other points lie inside the wall, so the union is exactly the chamfered wall).
    """
    a = 0.5 * (peg_side_m + clearance_m)
    c, d, w = float(chamfer_m), float(hole_depth_m), float(wall_m)
    outer = a + w
    ident = (1.0, 0.0, 0.0, 0.0)
    boxes = []
    top = -c   # the main blocks' top
    for sign, tag in ((1.0, 'px'), (-1.0, 'nx')):
        # Walls across x span the full outer width in y.
        boxes.append((f'wall_{tag}', (sign * (a + w / 2), 0.0, (top - d) / 2),
                      (w / 2, outer, (d + top) / 2), ident))
    for sign, tag in ((1.0, 'py'), (-1.0, 'ny')):
        boxes.append((f'wall_{tag}', (0.0, sign * (a + w / 2), (top - d) / 2),
                      (a, w / 2, (d + top) / 2), ident))
    if c > 0.0:
        h = c / math.sqrt(2.0)
        s45, c45 = math.sin(math.pi / 8), math.cos(math.pi / 8)
        for sign, tag in ((1.0, 'px'), (-1.0, 'nx')):
            boxes.append((f'upper_{tag}', (sign * (a + c + (w - c) / 2), 0.0, -c / 2),
                          ((w - c) / 2, outer, c / 2), ident))
            boxes.append((f'chamfer_{tag}', (sign * (a + c), 0.0, -c), (h, outer, h),
                          (c45, 0.0, s45, 0.0)))
        for sign, tag in ((1.0, 'py'), (-1.0, 'ny')):
            boxes.append((f'upper_{tag}', (0.0, sign * (a + c + (w - c) / 2), -c / 2),
                          (a + c, (w - c) / 2, c / 2), ident))
            boxes.append((f'chamfer_{tag}', (0.0, sign * (a + c), -c), (outer, h, h),
                          (c45, s45, 0.0, 0.0)))
    boxes.append(('floor', (0.0, 0.0, -d - floor_m / 2), (outer, outer, floor_m / 2), ident))
    return boxes


def _look_at_quat(pos, target):
    """Return the wxyz quaternion of a MuJoCo camera at ``pos`` looking at ``target``."""
    from awopt_ros.core.camera import look_at_rotation
    rot = look_at_rotation(pos, target) * np.array([1.0, -1.0, -1.0])   # MuJoCo: -z forward
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    return quat


def socket_camera(socket_m=sawyer.SOCKET_M, width=640, height=480):
    """Return the socket camera as a :class:`awopt_ros.core.camera.PinholeCamera`.

    The same pose, fov and image size as the rendered camera for a socket at ``socket_m``.
    """
    from awopt_ros.core.camera import PinholeCamera
    pos = np.asarray(socket_m, dtype=float) + CAMERA_OFFSET_M
    return PinholeCamera.look_at(pos, socket_m, CAMERA_FOVY_DEG, width, height)


def build_spec(config, urdf_path=sawyer.URDF_PATH):
    """Return the ``mujoco.MjSpec`` of the insertion cell for ``config`` (socket at nominal)."""
    s = mujoco.MjSpec.from_file(str(paths.resolve(urdf_path)))
    opt = s.option
    opt.timestep = config.physics_dt_s
    opt.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
    opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    opt.impratio = 10.0
    s.visual.quality.shadowsize = 0
    s.visual.global_.offwidth = max(config.image_size[0], 640)
    s.visual.global_.offheight = max(config.image_size[1], 480)
    s.visual.headlight.ambient = [0.35, 0.35, 0.35]
    s.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    friction = [config.friction, 0.005, 0.0001]

    for body in s.bodies:
        if body.name and body.name != 'world':
            body.gravcomp = 1.0
    peg_geom = None
    for geom in s.geoms:
        geom.contype = 0
        geom.conaffinity = 0
        if geom.parent.name == 'peg' and geom.group == 0 and peg_geom is None:
            peg_geom = geom
    if peg_geom is None:
        raise ValueError(f'URDF {urdf_path} has no collision geometry on link "peg"')
    half = 0.5 * config.peg_side_m
    peg_geom.size = [half, half, peg_geom.size[2]]
    peg_geom.name = 'peg_geom'
    peg_geom.contype = 1
    _contact(peg_geom, friction)
    s.body('peg_holder').add_site(name='ft_site', pos=[0.0, 0.0, 0.0], group=3)
    s.body('tcp').add_site(name='tcp_site', pos=[0.0, 0.0, 0.0], size=[0.002, 0.0, 0.0],
                           group=3)
    s.add_sensor(name='ft_force', type=mujoco.mjtSensor.mjSENS_FORCE,
                 objtype=mujoco.mjtObj.mjOBJ_SITE, objname='ft_site')
    s.add_sensor(name='ft_torque', type=mujoco.mjtSensor.mjSENS_TORQUE,
                 objtype=mujoco.mjtObj.mjOBJ_SITE, objname='ft_site')

    world = s.worldbody
    target = world.add_body(name='impedance_target', mocap=True)
    target.add_site(name='impedance_ref', size=[0.003, 0.003, 0.003], rgba=[0, 1, 0, 0.3],
                    group=3)
    # Cartesian impedance: force along/about the reference site's axes = -k e - d e_dot.
    for k in range(6):
        gear = [0.0] * 6
        gear[k] = 1.0
        act = s.add_actuator(name=f'impedance_{"xyz"[k % 3]}{"" if k < 3 else "_rot"}',
                             target='tcp_site', trntype=mujoco.mjtTrn.mjTRN_SITE,
                             refsite='impedance_ref', gear=gear)
        act.set_to_position(kp=config.stiffness_n_m if k < 3 else config.rot_stiffness_nm_rad,
                            kv=0.0)
    for joint in sawyer.ARM_JOINTS:
        # Damping comes from the impedance (Cartesian) and the nullspace term only: joint
        # damping would push the tip sideways whenever the arm moves.
        s.joint(joint).armature = 0.05
        s.joint(joint).damping = [0.0, 0.0, 0.0]

    world.add_light(name='key', pos=[0.6, 0.0, 1.5], dir=[0.0, 0.0, -1.0], castshadow=False,
                    diffuse=[0.6, 0.6, 0.6])
    top = sawyer.SOCKET_M
    table_z = top[2] - config.hole_depth_m - FLOOR_THICKNESS_M
    world.add_geom(name='table', type=mujoco.mjtGeom.mjGEOM_BOX,
                   pos=[top[0], top[1], table_z - 0.01], size=[0.8, 0.8, 0.01],
                   rgba=[0.55, 0.5, 0.45, 1.0], contype=0, conaffinity=0)
    sock = world.add_body(name='socket', mocap=True, pos=list(top))
    for name, centre, size, quat in socket_boxes(config.peg_side_m, config.clearance_m,
                                                 config.chamfer_m, config.hole_depth_m):
        g = sock.add_geom(name=f'socket_{name}', type=mujoco.mjtGeom.mjGEOM_BOX,
                          pos=list(centre), size=list(size), quat=list(quat),
                          rgba=[0.3, 0.45, 0.7, 1.0], contype=0, conaffinity=1)
        _contact(g, friction)
    cam_pos = top + np.asarray(CAMERA_OFFSET_M)
    sock.add_camera(name=CAMERA_NAME, pos=list(CAMERA_OFFSET_M),
                    quat=list(_look_at_quat(cam_pos, top)), fovy=CAMERA_FOVY_DEG,
                    resolution=list(config.image_size))
    return s


def _contact(geom, friction):
    geom.friction = friction
    geom.condim = 4
    geom.solref = list(_CONTACT_SOLREF)
    geom.solimp = list(_CONTACT_SOLIMP)
    geom.margin = 0.0
    geom.gap = 0.0


class InsertionSim:
    """The simulated Sawyer peg-in-hole cell: physics, joint-target commands, state, camera.

    Args:
        config: :class:`InsertionConfig` (None = defaults).
        urdf_path: the Sawyer URDF (default ``core.sawyer.URDF_PATH``).

    ``reset(seed)`` draws the episode (socket offset, start pose, goal noise) from ``seed``;
    the constructor resets to seed 0. ``set_arm_target(q7)`` then ``step(steps_per_control)``
    is one control period.
    """

    joint_names = sawyer.ARM_JOINTS

    def __init__(self, config=None, urdf_path=sawyer.URDF_PATH):
        self.config = InsertionConfig() if config is None else config
        if not isinstance(self.config, InsertionConfig):
            raise TypeError(f'config must be an InsertionConfig, got {type(config).__name__}')
        self.urdf_path = str(urdf_path)
        from awopt_ros.core.kinematics import Kinematics
        self.kinematics = Kinematics(self.urdf_path, joint_names=sawyer.ARM_JOINTS,
                                     tcp_frame=sawyer.TCP_FRAME, home_q=sawyer.HOME_Q)
        self.model = build_spec(self.config).compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.steps_per_control = max(1, int(round(self.config.control_period_s
                                                  / self.config.physics_dt_s)))
        self._qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in sawyer.ARM_JOINTS])
        self._dadr = np.array([m.jnt_dofadr[m.joint(j).id] for j in sawyer.ARM_JOINTS])
        self._lo, self._hi = m.jnt_range[[m.joint(j).id for j in sawyer.ARM_JOINTS]].T.copy()
        self._steps = 0
        self._jac = np.zeros((6, m.nv))
        self._mass = np.zeros((m.nv, m.nv))
        self._tcp_site = m.site('tcp_site').id
        self._ft_site = m.site('ft_site').id
        self._target_mocap = m.body_mocapid[m.body('impedance_target').id]
        self._socket_mocap = m.body_mocapid[m.body('socket').id]
        self._force_adr = m.sensor_adr[m.sensor('ft_force').id]
        self._torque_adr = m.sensor_adr[m.sensor('ft_torque').id]
        self._camera_id = m.camera(CAMERA_NAME).id
        self._renderer = None
        self._set_damping()
        self.seed = None
        self._dirty = True
        self._ft_offset = np.zeros(6)
        self._socket = np.asarray(sawyer.SOCKET_M, dtype=float).copy()
        self._noise = np.zeros(3)
        self._q_target = np.asarray(sawyer.HOME_Q, dtype=float).copy()
        self.reset(0)

    def _set_damping(self):
        """Set the impedance damping to ``damping_ratio`` x critical for the tip's effective
        (operational-space) mass at the home pose, per axis."""
        m, d = self.model, self.data
        d.qpos[self._qadr] = sawyer.HOME_Q
        mujoco.mj_forward(m, d)
        jac_p, jac_r = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        mujoco.mj_jacSite(m, d, jac_p, jac_r, self._tcp_site)
        jac = np.vstack([jac_p, jac_r])
        mass = np.zeros((m.nv, m.nv))
        mujoco.mj_fullM(m, d, mass)
        lam = np.linalg.inv(jac @ np.linalg.solve(mass, jac.T))    # (6, 6) kg, kg m^2
        rot = d.site_xmat[self._tcp_site].reshape(3, 3)           # target frame ~ tcp frame
        lam_t = rot.T @ lam[:3, :3] @ rot
        lam_r = rot.T @ lam[3:, 3:] @ rot
        masses = np.concatenate([np.diag(lam_t), np.diag(lam_r)])
        self.effective_mass = masses
        for k in range(6):
            a = m.actuator(f'impedance_{"xyz"[k % 3]}{"" if k < 3 else "_rot"}').id
            kp = -m.actuator_biasprm[a, 1]
            kv = 2.0 * self.config.damping_ratio * math.sqrt(kp * masses[k])
            m.actuator_biasprm[a, 2] = -kv
        mujoco.mj_resetData(m, d)

    # -- episode -------------------------------------------------------------------------------
    def reset(self, seed):
        """Start the episode of ``seed``: socket pose, goal noise, start pose; F/T zeroed.

        Draws (uniform, from ``numpy.random.default_rng(seed)``): the socket offset (x, y)
        within +-``socket_jitter_m``, the start tip offset (x, y) within +-``start_jitter_m``
        and height in ``start_height_m`` above the socket top, and the observed goal's error
        (x, y) within +-``goal_noise_m`` (each entry is the same unit draw times its range, so
        a seed gives the same scene at every range). The arm starts at rest at the IK solution
        of the start pose (peg pointing down), the impedance target at that pose; the wrench
        is zeroed after a short settle; ``time_s`` restarts at 0.
        """
        cfg = self.config
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        u_socket = rng.uniform(-1.0, 1.0, 2)
        u_start = rng.uniform(-1.0, 1.0, 2)
        u_height = rng.uniform(0.0, 1.0)
        u_noise = rng.uniform(-1.0, 1.0, 2)
        self._socket = np.asarray(sawyer.SOCKET_M, dtype=float).copy()
        self._socket[:2] += cfg.socket_jitter_m * u_socket
        self._noise = np.array([*(cfg.goal_noise_m * u_noise), 0.0])
        lo, hi = cfg.start_height_m
        start = self._socket + np.array([*(cfg.start_jitter_m * u_start),
                                         lo + (hi - lo) * u_height])
        q = self.start_joints(start)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.mocap_pos[self._socket_mocap] = self._socket
        d.qpos[self._qadr] = q
        self.set_arm_target(q)
        mujoco.mj_forward(m, d)
        self._steps = 0
        self.step(SETTLE_STEPS)
        self._steps = 0
        self._dirty = True
        self._ft_offset = np.zeros(6)
        self._ft_offset = self._raw_wrench()
        d.time = 0.0

    def start_joints(self, tip_m):
        """Return joints (7,) rad putting the peg tip at ``tip_m`` (3,), pointing down, yaw as
        at home (IK from ``HOME_Q``)."""
        kin = self.kinematics
        q = np.asarray(sawyer.HOME_Q, dtype=float).copy()
        goal = np.asarray(tip_m, dtype=float)
        for _ in range(8):
            pos, _ = kin.fk(q)
            err = goal - pos
            if err @ err < 1e-14:
                break
            q = kin.ik_step(q, err, 0.0, dt_s=10.0)
        return q

    @property
    def time_s(self):
        """Simulated time (s) since the last reset."""
        return float(self.data.time)

    def step(self, n=1):
        """Advance the physics by ``n`` time steps of ``physics_dt_s``.

        The nullspace torque is refreshed at every ``NULLSPACE_UPDATE_STEPS``-th physics step
        since the reset, so ``step(100)`` and a hundred ``step(1)`` give the same motion.
        """
        n = int(n)
        m, d = self.model, self.data
        while n > 0:
            phase = self._steps % NULLSPACE_UPDATE_STEPS
            if phase == 0:
                self._update_nullspace()
            chunk = min(n, NULLSPACE_UPDATE_STEPS - phase)
            mujoco.mj_step(m, d, nstep=chunk)
            self._steps += chunk
            n -= chunk
            self._dirty = True

    def _update_nullspace(self):
        """Set ``qfrc_applied`` to the joint spring-damper toward the target, projected with
        N^T = I - J^T Lambda J M^-1 (J the 6-D tip Jacobian, Lambda = (J M^-1 J^T)^-1), so it
        exerts no force or torque at the tip."""
        m, d = self.model, self.data
        self._sync()
        jac = self._jac
        mujoco.mj_jacSite(m, d, jac[:3], jac[3:], self._tcp_site)
        mujoco.mj_fullM(m, d, self._mass)
        dadr = self._dadr
        q = d.qpos[self._qadr]
        tau0 = NULLSPACE_KP * (self._q_target - q) - NULLSPACE_KV * d.qvel[dadr]
        jm = jac[:, dadr]
        minv_jt = np.linalg.solve(self._mass[np.ix_(dadr, dadr)], jm.T)     # (7, 6)
        lam = np.linalg.inv(jm @ minv_jt)                                  # (6, 6)
        # N^T tau0 = tau0 - J^T Lambda J M^-1 tau0 = tau0 - J^T Lambda (M^-1 J^T)^T tau0
        d.qfrc_applied[dadr] = tau0 - jm.T @ (lam @ (minv_jt.T @ tau0))

    def _sync(self):
        # Poses and velocities of the current state (mj_step leaves those of the state before
        # its last integration). Touches no solver state, so queries never change the physics.
        if self._dirty:
            m, d = self.model, self.data
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            mujoco.mj_comVel(m, d)
            self._dirty = False

    # -- commands ------------------------------------------------------------------------------
    def set_arm_target(self, q7):
        """Command joint positions ``q7`` (7,) rad, clipped to the joint limits.

        The Cartesian impedance then pulls the peg tip toward the forward-kinematics pose of
        ``q7`` (position and orientation), a weak joint spring toward ``q7`` itself.

        Raises:
            ValueError: not 7 finite values.
        """
        q = np.asarray(q7, dtype=float).reshape(-1)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f'arm target must be 7 finite joint positions (rad), got {q7!r}')
        q = np.clip(q, self._lo, self._hi)
        pos, rot = self.kinematics.fk(q)
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, rot.reshape(-1))
        d = self.data
        d.mocap_pos[self._target_mocap] = pos
        d.mocap_quat[self._target_mocap] = quat
        self._q_target = q

    def arm_target(self):
        """Return the commanded joint positions (7,) rad."""
        return self._q_target.copy()

    def target_pose(self):
        """Return the impedance target ``(pos (3,) m, quat_xyzw (4,))`` in base_link."""
        d = self.data
        w, x, y, z = d.mocap_quat[self._target_mocap]
        return d.mocap_pos[self._target_mocap].copy(), np.array([x, y, z, w])

    # -- state ---------------------------------------------------------------------------------
    def joint_positions(self):
        """Return the arm joint positions (7,) float64 rad (``joint_names`` order)."""
        return self.data.qpos[self._qadr].copy()

    def joint_velocities(self):
        """Return the arm joint velocities (7,) float64 rad/s."""
        return self.data.qvel[self._dadr].copy()

    def tool_pose(self):
        """Return the peg tip pose ``(pos (3,) m, quat_xyzw (4,))`` in base_link."""
        self._sync()
        d = self.data
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[self._tcp_site])
        return d.site_xpos[self._tcp_site].copy(), np.array([*quat[1:], quat[0]])

    def tool_rotation(self):
        """Return the tool frame's rotation (3, 3) (columns = tcp axes in base_link)."""
        self._sync()
        return self.data.site_xmat[self._tcp_site].reshape(3, 3).copy()

    def tool_velocity(self):
        """Return the peg tip's linear velocity (3,) m/s in base_link."""
        self._sync()
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_SITE,
                                 self._tcp_site, vel, 0)
        return vel[3:].copy()

    def _raw_wrench(self):
        """External wrench on the peg (incl. its weight) at the tip, tcp axes (6,)."""
        d = self.data
        # MuJoCo's sensors give the force/torque the hand side exerts on the peg holder
        # subtree, at ft_site in its axes (= tcp axes); the external load on the peg is its
        # negative (statically). Shift the torque from ft_site to the tip.
        f = -d.sensordata[self._force_adr:self._force_adr + 3]
        t = -d.sensordata[self._torque_adr:self._torque_adr + 3]
        self._sync()
        rot = d.site_xmat[self._tcp_site].reshape(3, 3)
        r = rot.T @ (d.site_xpos[self._ft_site] - d.site_xpos[self._tcp_site])
        return np.concatenate([f, t + np.cross(r, f)])

    def wrench(self):
        """Return the wrist wrench (6,) float64: force (N) then torque (N m) that the
        environment exerts on the peg, at the peg tip in the tool (tcp) axes, zeroed at reset
        (so the peg's own weight reads 0). Pushing the peg down onto a surface gives fz < 0
        (tcp z points along the peg, down). MuJoCo evaluates the sensor at the start of the
        last physics step (1 physics step old)."""
        return self._raw_wrench() - self._ft_offset

    def socket_pose(self):
        """Return the socket's top centre (3,) m in base_link (the bore's axis is vertical)."""
        return self._socket.copy()

    def goal_true(self):
        """Return the peg-tip position (3,) m when fully inserted (centre of the bore bottom)."""
        return self._socket - np.array([0.0, 0.0, self.config.hole_depth_m])

    def goal_observed(self):
        """Return ``goal_true()`` plus this episode's uniform x, y error (3,) m."""
        return self.goal_true() + self._noise

    def insertion_depth_m(self):
        """Return how far (m) the peg tip is below the socket's top face (< 0 above it)."""
        pos, _ = self.tool_pose()
        return float(self._socket[2] - pos[2])

    def lateral_error_m(self):
        """Return the peg tip's horizontal distance (m) from the bore axis."""
        pos, _ = self.tool_pose()
        return float(np.hypot(*(pos[:2] - self._socket[:2])))

    def inside_bore(self):
        """Return True when the tip's x and y offsets from the bore axis are both at most
        clearance / 2 + ``BORE_TOLERANCE_M``."""
        pos, _ = self.tool_pose()
        err = np.abs(pos[:2] - self._socket[:2])
        return bool(np.all(err <= 0.5 * self.config.clearance_m + BORE_TOLERANCE_M))

    def success(self):
        """Return True when the peg is inserted to >= 90% of the depth and inside the bore."""
        return (self.insertion_depth_m() >= 0.9 * self.config.hole_depth_m
                and self.inside_bore())

    def contact_penetration_m(self):
        """Return the deepest peg-socket contact penetration (m) now (0 without contact)."""
        d = self.data
        if d.ncon == 0:
            return 0.0
        return float(max(0.0, -float(np.min(d.contact.dist[:d.ncon]))))

    # -- camera --------------------------------------------------------------------------------
    def render(self):
        """Return the socket camera frame, uint8 (height, width, 3) RGB.

        Raises:
            RuntimeError: the config has ``render=False``.
        """
        if not self.config.render:
            raise RuntimeError('rendering is off (InsertionConfig.render=False)')
        self._sync()
        if self._renderer is None:
            w, h = self.config.image_size
            self._renderer = mujoco.Renderer(self.model, height=h, width=w)
        self._renderer.update_scene(self.data, camera=self._camera_id)
        return self._renderer.render()

    def camera_matrix(self):
        """Return the (3, 3) pinhole intrinsics K (px) of the camera from its vertical fov."""
        from awopt_ros.sim.scene import fovy_intrinsics
        return fovy_intrinsics(self.model.cam_fovy[self._camera_id], *self.config.image_size)

    def close(self):
        """Release the renderer (its GL context)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
