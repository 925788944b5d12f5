"""Bring up the stack as separate node processes in a plain venv (no ``ros2 launch`` needed).

The node list and parameter handling here mirror ``launch/awopt_grasp.launch.py``: both start one
process per node with ``--ros-args --params-file CONFIG`` and the same environment (DDS kept
on this machine, shared-memory transport for camera frames). ROS-free at import: it builds
command lines and manages subprocesses; only :meth:`Stack.start`'s check for another stack on
the same ROS domain imports rclpy (:mod:`awopt_ros.ros.stack_guard`).

Node processes die with the awopt process that started them, whatever kills it
(``PR_SET_PDEATHSIG``), and one ROS domain holds one stack at a time (a per-domain file lock
held for the stack's life, and a look at the ROS graph for a stack started otherwise).
"""
import ctypes
import errno
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from awopt_ros.core import camera_pose, robot_names, spec
from awopt_ros.core.param_schema import ParameterError, check_params_file
from awopt_ros.core.paths import resolve

#: Device nodes: the source of camera frames and joint states. Each starts when the params
#: file has a section for it: ``sim_robot`` in the simulated and fake-hardware bringups,
#: ``realsense_camera`` on hardware with our camera node. A hardware bringup whose driver and
#: camera the user starts (ros2_control, realsense-ros) has neither.
DEVICE_NODES = (
    ('sim_robot', 'awopt_ros.nodes.sim_robot'),
    ('realsense_camera', 'awopt_ros.nodes.realsense_camera'),
)
#: Nodes every bringup starts, in start order (the policy node goes after the pipeline).
CORE_NODES = (
    ('camera_pipeline', 'awopt_ros.nodes.camera_pipeline'),
    ('arm_interface', 'awopt_ros.nodes.arm_interface'),
    ('episode_manager', 'awopt_ros.nodes.episode_manager'),
    ('logger', 'awopt_ros.nodes.logger'),
    ('operator', 'awopt_ros.nodes.operator'),
    ('robot_state', 'awopt_ros.nodes.robot_state'),
)
#: Optional nodes: each starts, right after the policy node, when the params file has a section
#: for it. ``success_detector`` (the camera success classifier) runs wherever the params file
#: has a ``success_detector`` section (the grasp configs and the simulated insertion config),
#: where the episode manager's ``success_source: classifier`` ends episodes on its decision
#: and the logger records its score next to the simulator's ground truth.
OPTIONAL_NODES = (
    ('success_detector', 'awopt_ros.nodes.success_detector'),
)
#: The simulated bringup's nodes without the policy, in start order.
STACK_NODES = DEVICE_NODES[:1] + CORE_NODES
#: The node that publishes ``/policy/action``, by ``--policy``: the ONNX actor and the scripted
#: demonstrator of the grasp task, and the insertion task's residual controller (a
#: P-controller toward the observed goal plus the ONNX residual, or the P-controller alone).
POLICY_NODES = {'actor': ('policy', 'awopt_ros.nodes.policy'),
                'scripted': ('scripted_policy', 'awopt_ros.nodes.scripted_policy'),
                'residual': ('residual_controller', 'awopt_ros.nodes.residual_controller')}
#: Every node a stack may run, {node name: python module}, either policy included.
ALL_NODE_MODULES = dict([*DEVICE_NODES, *CORE_NODES, *POLICY_NODES.values(),
                         *OPTIONAL_NODES])
#: The node names the graph check looks for: every node a stack may run but the camera
#: driver, which a user may well start alone before the stack (hardware bringup).
STACK_NODE_NAMES = tuple(sorted(set(ALL_NODE_MODULES) - {'realsense_camera'}))
DEFAULT_CONFIG = 'config/awopt_ros_kuka_grasp.yaml'
#: The Sawyer peg insertion bringup (``awopt demo --task insertion``).
INSERTION_CONFIG = 'config/awopt_ros_sawyer_insertion.yaml'
DDS_PROFILE = 'config/fastdds_localhost_shm.xml'
#: Parameters that several nodes must agree on: {param: (node defaults, nodes)}. The camera
#: pipeline makes the policy image, the policy node checks it against the model's contract and
#: the logger stores it; a mismatch would drop every image (and every dataset step).
_JOINT_READERS = ('sim_robot', 'arm_interface', 'policy', 'scripted_policy',
                  'residual_controller', 'episode_manager', 'logger', 'robot_state')
_CONTROLLER_USERS = ('sim_robot', 'arm_interface', 'logger')
SHARED_PARAMS = {
    'image_size': (spec.POLICY_IMAGE_SIZE, ('camera_pipeline', 'policy', 'logger',
                                            'success_detector')),
    'crop_xywh': (list(spec.POLICY_CROP_XYWH), ('camera_pipeline', 'policy',
                                                'success_detector')),
    # the camera's frame size: both crop the same frames (the policy itself, the pipeline for
    # /policy/image); the success detector checks its model was trained on that frame size
    'source_width': (spec.SOURCE_SIZE[0], ('camera_pipeline', 'policy', 'success_detector')),
    'source_height': (spec.SOURCE_SIZE[1], ('camera_pipeline', 'policy', 'success_detector')),
    # a driver's names (core.robot_names): every node that reads joint states or the camera
    'joint_names': (list(spec.ARM_JOINTS), _JOINT_READERS),
    'gripper_joint': (spec.GRIPPER_JOINT, _JOINT_READERS),
    'joint_states_topic': (robot_names.DEFAULT_JOINT_STATES_TOPIC, _JOINT_READERS),
    'camera_ns': (robot_names.DEFAULT_CAMERA_NS, ('sim_robot', 'camera_pipeline', 'policy',
                                                  'arm_interface', 'episode_manager',
                                                  'logger')),
    # the hand-eye result: robot_state publishes it, the policy compares it with its models'
    'camera_pose_xyz_rpy': (list(camera_pose.SIM_CAMERA_POSE_XYZ_RPY), ('robot_state',
                                                                      'policy')),
    # the controllers that arm_interface commands, the simulator serves (fake hardware) and the
    # logger records
    'arm_controller': ('/arm_controller', _CONTROLLER_USERS),
    'forward_controller': ('/forward_position_controller', _CONTROLLER_USERS),
    'gripper_controller': ('/gripper_controller', _CONTROLLER_USERS),
    # the operator node writes its annotations beside the dataset the logger writes
    'output_dir': ('runs/latest', ('logger', 'operator')),
    'dataset_name': ('kuka-grasp', ('logger', 'operator')),
}
#: Parameters the operator node takes from the logger (it writes beside the logger's dataset).
OPERATOR_FOLLOWS_LOGGER = ('output_dir', 'dataset_name')


def with_operator_overrides(config, overrides=None):
    """Return a copy of ``overrides`` ({node: {param: value}}) in which the operator node gets
    the logger's :data:`OPERATOR_FOLLOWS_LOGGER` values as the logger will run with them (params
    file ``config``, then the logger's overrides, e.g. ``awopt demo --run-dir``), except those
    the operator is given in ``overrides`` itself (an operator that then disagrees with the
    logger is refused by :func:`check_shared_params`). A params file needs no operator section.

    Raises:
        ValueError: ``config`` is not a node-keyed mapping.
    """
    out = {node: dict(params) for node, params in (overrides or {}).items()}
    logger = effective_params(config, 'logger', out.get('logger'))
    follow = {k: logger[k] for k in OPERATOR_FOLLOWS_LOGGER if k in logger}
    if follow:
        out['operator'] = dict(follow, **out.get('operator', {}))
    return out


class StackError(RuntimeError):
    """A node of the stack died or never came up, or the stack cannot start (the message
    names the node, or the reason)."""


class DomainBusyError(StackError):
    """Another awopt stack is live on the ROS domain this stack would use."""


def domain_id_of(env=None):
    """Return the ROS domain (int) that processes with environment ``env`` (default: this
    process's) join: ``ROS_DOMAIN_ID``, 0 when unset or empty.

    Raises:
        StackError: ``ROS_DOMAIN_ID`` is not an integer in 0..232.
    """
    raw = str((os.environ if env is None else env).get('ROS_DOMAIN_ID', '')).strip()
    try:
        domain = int(raw) if raw else 0
    except ValueError:
        domain = -1
    if not 0 <= domain <= 232:
        raise StackError(f'ROS_DOMAIN_ID must be an integer from 0 to 232, got {raw!r}')
    return domain


def domain_lock_path(domain_id):
    """Return the lock file that a stack on ROS domain ``domain_id`` holds (in the temp dir)."""
    return Path(tempfile.gettempdir()) / f'awopt_stack_domain_{int(domain_id)}.lock'


def busy_message(domain_id, holder):
    """Return the one-line refusal for a stack on ``domain_id`` held by ``holder`` (text)."""
    return (f'another awopt stack is running on ROS_DOMAIN_ID={domain_id} ({holder}): stop '
            'it or set ROS_DOMAIN_ID to a free domain')


def acquire_domain_lock(domain_id):
    """Take the exclusive per-domain stack lock; return its open file descriptor.

    The lock (``flock`` on :func:`domain_lock_path`) lasts until the descriptor is closed or
    the process ends, however it ends; the file holds the owner's PID for the message.

    Raises:
        DomainBusyError: another process (or another Stack here) holds it.
    """
    path = domain_lock_path(domain_id)
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    except PermissionError:       # made by another user: locking needs no write access
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        try:
            owner = path.read_text().strip()
        except OSError:
            owner = ''
        if not owner.isdigit():
            holder = f'lock {path}'
        elif Path(f'/proc/{owner}').exists():
            holder = f'awopt process {owner}'
        else:       # the nodes inherit the lock: they outlived the process that started them
            holder = f'nodes of awopt process {owner}, which has exited'
        raise DomainBusyError(busy_message(domain_id, holder)) from None
    try:
        os.fchmod(fd, 0o666)      # another user's stack may lock it too
    except OSError:
        pass
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
    except OSError:
        pass
    return fd


def refuse_stack_on_graph(domain_id, wait_s=2.0, env=None):
    """Raise :class:`DomainBusyError` when stack nodes answer on ROS domain ``domain_id``
    within ``wait_s`` seconds (:func:`awopt_ros.ros.stack_guard.live_stack_nodes`; imports
    rclpy); ``wait_s`` <= 0 skips the look."""
    if wait_s > 0:
        from awopt_ros.ros.stack_guard import live_stack_nodes
        found = live_stack_nodes(domain_id, wait_s, env)
        if found:
            raise DomainBusyError(busy_message(domain_id, 'nodes: ' + ', '.join(found)))


def check_domain_free(env=None, graph_check_s=2.0):
    """Raise :class:`DomainBusyError` when an awopt stack is live on the ROS domain of
    ``env`` (default: this process's environment): its domain lock is held, or stack nodes
    answer on the graph. Holds nothing afterwards (for ``ros2 launch``, whose nodes outlive
    this check; :meth:`Stack.start` holds the lock instead)."""
    domain = domain_id_of(env)
    os.close(acquire_domain_lock(domain))
    refuse_stack_on_graph(domain, graph_check_s, env)


PR_SET_PDEATHSIG = 1


def parent_death_signal(signum=signal.SIGTERM):
    """Return a ``preexec_fn`` that makes the child get ``signum`` when this process dies.

    Linux ``prctl(PR_SET_PDEATHSIG)``: the kernel signals the child when the thread that
    started it exits, whatever ends it (``kill -9`` included), so start nodes from a thread
    that lives as long as the stack (the main thread). SIGTERM gives the node a clean
    shutdown (rclpy's handler; the logger closes its files). A parent that died before the
    ``prctl`` call is caught by comparing the parent PID. Returns None off Linux.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl   # resolved here, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec():
        prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(int(signum)), ctypes.c_ulong(0),
              ctypes.c_ulong(0), ctypes.c_ulong(0))
        if os.getppid() != parent:    # the parent died before prctl: no signal would come
            os.kill(os.getpid(), int(signum))
    return preexec


def ros_environment(base=None, domain_id=None):
    """Return the environment every awopt_ros process runs with (a new dict).

    Forces ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (no discovery traffic leaves the machine;
    Kilted ignores ROS_LOCALHOST_ONLY) and the Fast DDS profile with shared memory for large
    messages and UDP on 127.0.0.1 only, and ``ORT_DISABLE_TELEMETRY=1`` (onnxruntime's
    telemetry would look up a host off this machine). ``domain_id`` overrides ``ROS_DOMAIN_ID``.
    """
    env = dict(os.environ if base is None else base)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    env.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(resolve(DDS_PROFILE)))
    env.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    env.setdefault('MUJOCO_GL', 'egl')
    env.setdefault('PYTHONUNBUFFERED', '1')
    env['ORT_DISABLE_TELEMETRY'] = '1'   # onnxruntime sends telemetry (DNS) otherwise
    if domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(int(domain_id))
    return env


def format_param(value):
    """Return ``value`` as text for ``-p name:=value`` (YAML syntax)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(format_param(v) for v in value) + ']'
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _load_params_file(config):
    """Return the params YAML ``config`` as a dict (ValueError if it is not a mapping)."""
    import yaml
    with open(resolve(config), encoding='utf-8') as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ParameterError(f'params file {config} is not a mapping of node names')
    return doc


def _node_params(doc, node_name, overrides=None):
    params = {}
    for key in ('/**', node_name, '/' + node_name):
        params.update((doc.get(key) or {}).get('ros__parameters') or {})
    params.update(overrides or {})
    return params


def effective_params(config, node_name, overrides=None):
    """Return the parameters ``node_name`` gets from the params file ``config`` (its
    ``/**`` section, then its own section) and ``overrides`` ({param: value}), as a dict.

    Raises:
        ValueError: the file is not a node-keyed ``ros__parameters`` YAML mapping.
    """
    return _node_params(_load_params_file(config), node_name, overrides)


def check_shared_params(config, nodes, overrides=None):
    """Check that the ``nodes`` that take a :data:`SHARED_PARAMS` entry get the same value.

    Args:
        config: params YAML; nodes: node names started; overrides: {node: {param: value}}.

    Raises:
        ValueError: naming the parameter and each node's value, e.g. a camera pipeline
            making 96 px images for a logger that expects 64 px.
    """
    overrides = with_operator_overrides(config, overrides)   # the operator follows the logger
    doc = _load_params_file(config)
    per_node = {n: _node_params(doc, n, overrides.get(n)) for n in nodes}
    for param, (default, takers) in SHARED_PARAMS.items():
        values = {n: per_node[n].get(param, default) for n in takers if n in per_node}
        if len({repr(v) for v in values.values()}) > 1:
            listed = ', '.join(f'{n}.{param}={v}' for n, v in values.items())
            raise ParameterError(f'nodes disagree on {param!r}: {listed}; set the same value for '
                             f'each (params file {config} or --set NODE:{param}=VALUE)')


def device_nodes(config):
    """Return the device nodes [(name, module)] that the params file ``config`` starts: those
    of :data:`DEVICE_NODES` with a section (``name:`` or ``/name:``) in it.

    Raises:
        ParameterError: the file is not a node-keyed mapping.
    """
    return _with_section(config, DEVICE_NODES)


def optional_nodes(config):
    """Return the optional nodes [(name, module)] that the params file ``config`` starts:
    those of :data:`OPTIONAL_NODES` with a section (``name:`` or ``/name:``) in it.

    Raises:
        ParameterError: the file is not a node-keyed mapping.
    """
    return _with_section(config, OPTIONAL_NODES)


def _with_section(config, specs):
    """Return the entries of ``specs`` [(name, module)] whose node has a section in ``config``."""
    doc = _load_params_file(config)
    return [(name, module) for name, module in specs if name in doc or '/' + name in doc]


def default_policy(config):
    """Return the policy a stack from the params file ``config`` runs when none is asked for:
    'residual' when the file configures the residual controller (a ``residual_controller``
    section) and no ``policy`` one (the insertion bringups), else 'actor'.

    Raises:
        ParameterError: the file is not a node-keyed mapping.
    """
    doc = _load_params_file(config)
    has = lambda name: name in doc or '/' + name in doc  # noqa: E731
    return 'residual' if has('residual_controller') and not has('policy') else 'actor'


def stack_node_specs(config, policy):
    """Return [(node name, module)] in start order for a stack from the params file ``config``
    with ``policy`` ('actor', 'scripted' or 'residual'): its device nodes
    (:func:`device_nodes`), the camera pipeline, the policy node, its optional nodes
    (:func:`optional_nodes`), then the other core nodes.

    Raises:
        ValueError: an unknown policy, or a params file that is not a node-keyed mapping.
    """
    if policy not in POLICY_NODES:
        raise ValueError(f'policy must be one of {sorted(POLICY_NODES)}, got {policy!r}')
    specs = device_nodes(config) + list(CORE_NODES)
    at = len(specs) - len(CORE_NODES) + 1
    specs[at:at] = [POLICY_NODES[policy], *optional_nodes(config)]
    return specs


def node_command(module, node_name, config, params=None, python=sys.executable):
    """Return the argv that starts ``module`` as node ``node_name`` with the params file.

    ``params`` override the file. They are given as ``-p NODE:NAME:=VALUE``: a plain
    ``-p NAME:=VALUE`` is a wildcard override, which loses to the file's node-keyed entries.
    """
    argv = [python, '-m', module, '--ros-args', '-r', f'__node:={node_name}',
            '--params-file', str(resolve(config))]
    for key, value in (params or {}).items():
        argv += ['-p', f'{node_name}:{key}:={format_param(value)}']
    return argv


@dataclass
class NodeProcess:
    """One running node: its name, command, process and log file."""

    name: str
    argv: list
    log_path: Path
    process: subprocess.Popen = None

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines=20):
        """Return the last ``lines`` lines of the node's log (str)."""
        try:
            text = self.log_path.read_text(errors='replace')
        except OSError:
            return ''
        return '\n'.join(text.splitlines()[-lines:])


@dataclass
class Stack:
    """The stack's node processes; start with :meth:`start`, stop with :meth:`stop`.

    Args:
        config: params YAML (relative paths resolve against the package share dir).
        policy: 'actor' (ONNX policy node), 'scripted' (privileged scripted policy) or
            'residual' (the insertion task's residual controller).
        log_dir: where each node's stdout/stderr goes (``<name>.log``).
        overrides: {node name: {param: value}} applied after the params file.
        env: environment for the processes (default: :func:`ros_environment`); its
            ``ROS_DOMAIN_ID`` (0 when unset) is the domain the stack holds.
        graph_check_s: how long :meth:`start` listens to the ROS graph for a stack that
            another tool started (``ros2 launch``) before starting its own; 0 skips that look.

    Raises:
        ValueError: an unknown policy, or nodes that would disagree on a shared parameter
            (:func:`check_shared_params`), before any process starts.
        FileNotFoundError: no params file at ``config``.
    """

    config: str = DEFAULT_CONFIG
    policy: str = 'actor'
    log_dir: Path = Path('runs/latest/logs')
    overrides: dict = field(default_factory=dict)
    env: dict = None
    nodes: list = field(default_factory=list)
    graph_check_s: float = 2.0
    _lock_fd: int = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.policy not in POLICY_NODES:
            raise ValueError(f'policy must be one of {sorted(POLICY_NODES)}, got {self.policy!r}')
        if not resolve(self.config).is_file():
            raise FileNotFoundError(f'params file not found: {resolve(self.config)}')
        self.log_dir = Path(self.log_dir)
        self.overrides = with_operator_overrides(self.config, self.overrides)
        check_params_file(self.config, ALL_NODE_MODULES,
                          self.overrides)   # unknown nodes / parameters (typos)
        check_shared_params(self.config, [n for n, _ in self.node_specs()], self.overrides)

    def node_specs(self):
        """Return [(node name, module)] in start order (:func:`stack_node_specs`)."""
        return stack_node_specs(self.config, self.policy)

    def start(self):
        """Start every node process (returns self).

        First claims the stack's ROS domain: the per-domain lock (:func:`acquire_domain_lock`,
        held until :meth:`stop` and by every node while it runs, so two stacks started at the
        same moment cannot both start), then a look at the ROS graph for stack nodes started
        otherwise (:func:`refuse_stack_on_graph`, ``graph_check_s``).
        Each node runs in its own session (Ctrl-C in the terminal reaches only this process,
        whose cleanup stops the nodes) and gets SIGTERM when this process dies, however it
        dies (:func:`parent_death_signal`). Call it from the main thread (or one that lives
        as long as the stack).

        Raises:
            DomainBusyError: another awopt stack is live on the domain (the message names
                the domain and the nodes or process found); nothing was started.
            OSError: a node process could not start; the nodes started before it are
                stopped and the domain released.
        """
        env = self.env if self.env is not None else ros_environment()
        domain = domain_id_of(env)
        self._lock_fd = acquire_domain_lock(domain)
        try:
            refuse_stack_on_graph(domain, self.graph_check_s, env)
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self._release_domain()
            raise
        preexec = parent_death_signal()
        try:
            for name, module in self.node_specs():
                argv = node_command(module, name, self.config, self.overrides.get(name))
                proc = NodeProcess(name, argv, self.log_dir / f'{name}.log')
                with open(proc.log_path, 'wb') as log:   # the child keeps its own copy
                    proc.process = subprocess.Popen(
                        argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                        start_new_session=True, preexec_fn=preexec, pass_fds=(self._lock_fd,))
                self.nodes.append(proc)
        except BaseException:   # a node that cannot start, or Ctrl-C meanwhile: no half stack
            self.stop()         # stops the nodes started so far and releases the domain
            raise
        return self

    def _release_domain(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def dead(self):
        """Return the nodes whose process has exited."""
        return [n for n in self.nodes if not n.alive()]

    def stop(self, timeout_s=15.0):
        """Stop all nodes: SIGINT (clean shutdown, the logger closes its files), then kill;
        a node still running after ``timeout_s`` first gets SIGUSR1, which writes its Python
        stacks into its log.

        Returns {node name: exit code}.
        """
        for n in self.nodes:
            if n.alive():
                n.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for n in self.nodes:
            try:
                n.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # Stuck: ask for its Python stacks (ros.run.spin_node registers SIGUSR1 with
                # faulthandler; they land in its log), then kill it.
                n.process.send_signal(signal.SIGUSR1)
                time.sleep(0.5)
                n.process.kill()
                n.process.wait()
        self._release_domain()
        return {n.name: n.process.returncode for n in self.nodes}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
