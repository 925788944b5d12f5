"""Bringup command lines and environment (awopt_ros.launcher), and the params YAML."""
import os
import sys
from pathlib import Path

import pytest
import yaml

from awopt_ros.core.paths import resolve
from awopt_ros.launcher import (DEFAULT_CONFIG, Stack, effective_params, format_param,
                                node_command, ros_environment)


def test_environment_keeps_dds_on_this_machine():
    env = ros_environment({'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET', 'PATH': '/bin',
                           'ORT_DISABLE_TELEMETRY': '0'}, domain_id=17)
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert env['ORT_DISABLE_TELEMETRY'] == '1'      # no onnxruntime telemetry from any node
    assert env['ROS_DOMAIN_ID'] == '17'
    profile = env['FASTDDS_DEFAULT_PROFILES_FILE']
    assert os.path.isfile(profile)
    text = open(profile).read()
    assert '<type>SHM</type>' in text and '16777216' in text and '127.0.0.1' in text
    assert '<useBuiltinTransports>false</useBuiltinTransports>' in text


def test_node_command_uses_params_file_and_overrides():
    argv = node_command('awopt_ros.nodes.logger', 'logger', DEFAULT_CONFIG,
                        {'output_dir': "/tmp/it's", 'use_sim_time': True, 'crop': [1, 2]})
    assert argv[1:4] == ['-m', 'awopt_ros.nodes.logger', '--ros-args']
    assert '__node:=logger' in argv
    assert str(resolve(DEFAULT_CONFIG)) in argv
    assert "logger:output_dir:='/tmp/it''s'" in argv
    assert 'logger:use_sim_time:=true' in argv and 'logger:crop:=[1, 2]' in argv
    assert format_param(0.5) == '0.5'


def test_stack_nodes_and_bad_arguments(tmp_path):
    stack = Stack(policy='scripted', log_dir=tmp_path)
    names = [n for n, _ in stack.node_specs()]
    assert names == ['sim_robot', 'camera_pipeline', 'scripted_policy', 'success_detector',
                     'arm_interface', 'episode_manager', 'logger', 'operator', 'robot_state']
    with pytest.raises(ValueError, match='policy'):
        Stack(policy='telepathy')
    with pytest.raises(FileNotFoundError, match='params file'):
        Stack(config=str(tmp_path / 'missing.yaml'))


def test_device_nodes_follow_the_params_file_sections(tmp_path):
    """A params file without a sim_robot section starts no simulator (hardware bringup); one
    with a realsense_camera section starts our camera node first."""
    doc = yaml.safe_load(resolve(DEFAULT_CONFIG).read_text())
    del doc['sim_robot']
    hw = tmp_path / 'hardware.yaml'
    hw.write_text(yaml.safe_dump(doc))
    names = [n for n, _ in Stack(config=str(hw), policy='actor', log_dir=tmp_path).node_specs()]
    assert names == ['camera_pipeline', 'policy', 'success_detector', 'arm_interface',
                     'episode_manager', 'logger', 'operator', 'robot_state']
    # the optional success_detector follows its section too
    del doc['success_detector']
    hw.write_text(yaml.safe_dump(doc))
    names = [n for n, _ in Stack(config=str(hw), policy='actor', log_dir=tmp_path).node_specs()]
    assert 'success_detector' not in names and names[:2] == ['camera_pipeline', 'policy']
    doc['realsense_camera'] = {'ros__parameters': {'serial_no': ''}}
    hw.write_text(yaml.safe_dump(doc))
    names = [n for n, _ in Stack(config=str(hw), policy='actor', log_dir=tmp_path).node_specs()]
    assert names[:2] == ['realsense_camera', 'camera_pipeline'] and 'sim_robot' not in names


def test_stack_refuses_nodes_that_disagree_on_the_policy_image(tmp_path):
    # The shipped params agree; an override of one node's image size is refused up front
    # (it would make the logger drop every policy image, i.e. every dataset step).
    Stack(policy='actor', log_dir=tmp_path)
    with pytest.raises(ValueError, match=r"'image_size'.*camera_pipeline.image_size=32.*"
                                         r'logger.image_size='):
        Stack(policy='scripted', log_dir=tmp_path,
              overrides={'camera_pipeline': {'image_size': 32}})
    with pytest.raises(ValueError, match=r"'crop_xywh'.*policy.crop_xywh=\[0, 0, 480, 480\]"):
        Stack(policy='actor', log_dir=tmp_path,
              overrides={'policy': {'crop_xywh': [0, 0, 480, 480]}})
    # A '/**' section reaches every node; a node section wins over it.
    cfg = tmp_path / 'p.yaml'
    cfg.write_text('/**:\n  ros__parameters:\n    image_size: 96\n'
                   'logger:\n  ros__parameters:\n    image_size: 96\n')
    Stack(config=str(cfg), policy='actor', log_dir=tmp_path)
    assert effective_params(cfg, 'camera_pipeline')['image_size'] == 96
    assert effective_params(cfg, 'logger', {'image_size': 48})['image_size'] == 48


def test_params_yaml_is_keyed_by_node_name():
    cfg = yaml.safe_load(resolve(DEFAULT_CONFIG).read_text())
    for name in ('sim_robot', 'camera_pipeline', 'policy', 'scripted_policy', 'arm_interface',
                 'episode_manager', 'logger'):
        assert 'ros__parameters' in cfg[name], name
    assert cfg['/**']['ros__parameters']['use_sim_time'] is False


def test_cli_set_overrides_parse_yaml_values_and_reject_malformed():
    from awopt_ros.cli import build_parser, parse_overrides
    args = build_parser().parse_args(
        ['demo', '--set', 'policy:mode=cem', '--set', 'policy:cem_samples=32',
         '--set', 'sim_robot:real_time_factor=2.5', '--set', 'logger:topics=[/a, /b]'])
    assert parse_overrides(args.overrides) == {
        'policy': {'mode': 'cem', 'cem_samples': 32},
        'sim_robot': {'real_time_factor': 2.5}, 'logger': {'topics': ['/a', '/b']}}
    assert build_parser().parse_args(['bringup']).overrides == []
    for bad in ('policy=cem', 'mode=cem', ':mode=cem', 'policy:=cem'):
        with pytest.raises(ValueError, match='NODE:PARAM=VALUE'):
            parse_overrides([bad])


STUCK_NODE = """
import signal, time
from rclpy.node import Node
from awopt_ros.ros.run import spin_node

class StuckNode(Node):
    def __init__(self):
        super().__init__('stuck')
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # deaf to the launcher's SIGINT
        print('stuck node up', flush=True)
        while True:
            time.sleep(0.02)

spin_node(StuckNode, args=[])
"""


def test_stop_dumps_the_stacks_of_a_node_that_does_not_stop_then_kills_it(tmp_path):
    import subprocess
    import time

    from awopt_ros.launcher import NodeProcess, Stack, ros_environment
    log_path = tmp_path / 'stuck.log'
    stack = Stack(log_dir=tmp_path)
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen([sys.executable, '-c', STUCK_NODE], stdout=log,
                                stderr=subprocess.STDOUT, env=ros_environment(domain_id=97))
    stack.nodes.append(NodeProcess('stuck', [], log_path, proc))
    deadline = time.monotonic() + 30
    while 'stuck node up' not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    codes = stack.stop(timeout_s=1.0)
    assert codes == {'stuck': -9}
    text = log_path.read_text()
    assert 'most recent call first' in text          # faulthandler's dump, in the node's log
    assert 'in __init__' in text                      # where it hung: StuckNode.__init__


def _load_launch_file(monkeypatch, share, launch_file='awopt_grasp.launch.py'):
    """Import launch/awopt_grasp.launch.py with minimal stand-ins for the ROS launch API
    (launch / launch_ros have no wheels here); return the module."""
    import importlib.util
    import types

    class Substitution:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context.launch_configurations[self.name]

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    stubs = {
        'launch': {'LaunchDescription': lambda actions: list(actions)},
        'launch.actions': {'DeclareLaunchArgument': Action, 'OpaqueFunction': Action,
                           'SetEnvironmentVariable': Action},
        'launch.conditions': {'LaunchConfigurationEquals': Action},
        'launch.substitutions': {'LaunchConfiguration': Substitution},
        'launch_ros': {}, 'launch_ros.actions': {'Node': Action},
        'ament_index_python.packages': {'get_package_share_directory': lambda pkg: share},
    }
    for name, attrs in stubs.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    path = Path(__file__).resolve().parents[1] / 'launch' / launch_file
    spec = importlib.util.spec_from_file_location(launch_file.split('.')[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_refuses_nodes_that_disagree_before_starting_them(monkeypatch, tmp_path):
    """The ROS launch file runs awopt bringup's shared-parameter check before any node."""
    import types
    module = _load_launch_file(monkeypatch, str(tmp_path))
    actions = module.generate_launch_description()
    functions = [a.kwargs['function'].__name__ for a in actions
                 if a.kwargs.get('function') is not None]
    # the checks run before the function that makes the nodes
    assert functions == ['check_params', 'check_domain', 'stack_nodes']
    checks = [a for a in actions if a.kwargs.get('function') is not None][:2]
    check = next(c for c in checks if c.kwargs['function'].__name__ == 'check_params')
    check = check.kwargs['function']
    config = Path(__file__).resolve().parents[1] / 'config' / 'awopt_ros_kuka_grasp.yaml'
    for policy in ('actor', 'scripted'):
        ctx = types.SimpleNamespace(launch_configurations={'config': str(config),
                                                           'policy': policy})
        assert check(ctx) == []
    params = yaml.safe_load(config.read_text())
    params['camera_pipeline']['ros__parameters']['image_size'] = 32
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump(params))
    ctx = types.SimpleNamespace(launch_configurations={'config': str(bad), 'policy': 'actor'})
    with pytest.raises(ValueError, match=r"'image_size'.*camera_pipeline.image_size=32"):
        check(ctx)


def _launch_nodes(module, **args):
    import types
    fn = next(a.kwargs['function'] for a in module.generate_launch_description()
              if getattr(a.kwargs.get('function'), '__name__', '') == 'stack_nodes')
    args = {'policy': 'actor', 'use_sim_time': 'false', 'robot_state_publisher': 'false',
            'rviz': 'false', 'rviz_config': '', **args}
    return fn(types.SimpleNamespace(launch_configurations=args))


def test_launch_file_starts_the_nodes_the_params_file_names(monkeypatch, tmp_path):
    """The launch file starts what ``awopt bringup`` starts for the same params file: the
    simulator only with a sim_robot section; robot_state_publisher (fed the URDF renamed to
    the driver's joint names) and rviz2 on request."""
    module = _load_launch_file(monkeypatch, str(tmp_path))
    config = Path(__file__).resolve().parents[1] / 'config' / 'awopt_ros_kuka_grasp.yaml'
    nodes = _launch_nodes(module, config=str(config))
    assert [n.kwargs['name'] for n in nodes] == [
        n for n, _ in Stack(config=str(config), log_dir=tmp_path).node_specs()]
    doc = yaml.safe_load(config.read_text())
    del doc['sim_robot']
    doc['/**']['ros__parameters'].update(
        joint_names=[f'lbr_A{i}' for i in range(1, 8)], joint_states_topic='/lbr/joint_states')
    hw = tmp_path / 'hw.yaml'
    hw.write_text(yaml.safe_dump(doc))
    nodes = _launch_nodes(module, config=str(hw), robot_state_publisher='true', rviz='true')
    names = [n.kwargs.get('name', n.kwargs.get('executable')) for n in nodes]
    assert 'sim_robot' not in names and names[-2:] == ['robot_state_publisher', 'rviz2']
    rsp = nodes[-2].kwargs
    assert '<joint name="lbr_A1"' in rsp['parameters'][0]['robot_description']
    assert rsp['remappings'] == [('joint_states', '/lbr/joint_states')]
    robot_state = next(n for n in nodes if n.kwargs.get('name') == 'robot_state')
    assert {'publish_robot_tf': False} in robot_state.kwargs['parameters']
    assert nodes[-1].kwargs['arguments'][-1].endswith('awopt.rviz')


def test_hardware_launch_file_starts_no_simulator(monkeypatch):
    """awopt_kuka_hardware.launch.py: the lbr-stack params file, robot_state_publisher and
    rviz2 with the hardware rviz config by default; no sim_robot."""
    share = str(Path(__file__).resolve().parents[1])
    module = _load_launch_file(monkeypatch, share, 'awopt_kuka_hardware.launch.py')
    defaults = {a.args[0]: a.kwargs.get('default_value')
                for a in module.generate_launch_description() if a.args}
    assert defaults['config'].endswith('config/awopt_ros_kuka_lbr.yaml')
    assert defaults['robot_state_publisher'] == 'true' and defaults['rviz'] == 'true'
    assert defaults['rviz_config'].endswith('awopt_hardware.rviz')
    grasp = _load_launch_file(monkeypatch, share)
    nodes = _launch_nodes(grasp, config=defaults['config'], robot_state_publisher='true',
                          rviz='true', rviz_config=defaults['rviz_config'])
    names = [n.kwargs.get('name', n.kwargs.get('executable')) for n in nodes]
    assert names[0] == 'realsense_camera' and 'sim_robot' not in names
    assert nodes[-1].kwargs['arguments'] == ['-d', defaults['rviz_config']]


def test_launch_file_refuses_a_domain_that_holds_an_awopt_stack(monkeypatch, tmp_path):
    """``ros2 launch`` beside a running ``awopt demo`` on the same ROS_DOMAIN_ID is refused
    before any node starts (the demo holds the domain's lock)."""
    import awopt_ros.ros.stack_guard  # noqa: F401 - rclpy imported before the launch stand-ins
    from awopt_ros.launcher import DomainBusyError, acquire_domain_lock, domain_id_of
    module = _load_launch_file(monkeypatch, str(tmp_path))
    actions = module.generate_launch_description()
    check = next(a.kwargs['function'] for a in actions
                 if getattr(a.kwargs.get('function'), '__name__', '') == 'check_domain')
    fd = acquire_domain_lock(domain_id_of())      # as an awopt demo holds it
    try:
        with pytest.raises(DomainBusyError, match=f'ROS_DOMAIN_ID={domain_id_of()} '):
            check(None)
    finally:
        os.close(fd)
    assert check(None) == []                      # free: the launch goes on


def _children(pid):
    """PIDs of the processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / 'stat').read_text()
            except OSError:
                continue
            if int(stat.rsplit(')', 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_sigterm_to_bringup_stops_every_node_it_started(tmp_path):
    """The nodes run in their own sessions; SIGTERM to ``awopt bringup`` (systemd, docker
    stop, timeout) must stop them with it instead of leaving them running."""
    import signal
    import subprocess
    import time
    env = ros_environment(domain_id=os.environ.get('ROS_DOMAIN_ID', 0))
    proc = subprocess.Popen([sys.executable, '-m', 'awopt_ros.cli', 'bringup', '--log-dir',
                             str(tmp_path / 'logs')], stdout=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    nodes = []
    try:
        line = proc.stdout.readline()
        assert line.startswith('started '), line
        deadline = time.monotonic() + 30.0
        while len(_children(proc.pid)) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        nodes = _children(proc.pid)
        assert len(nodes) >= 6, nodes
        time.sleep(2.0)                       # let them get into their spin loops
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60.0) == 0   # bringup's clean stop, as after Ctrl-C
    finally:
        if proc.poll() is None:
            proc.kill()
        left = [pid for pid in nodes if Path(f'/proc/{pid}').exists()]
        for pid in left:                      # never leave orphans behind, even on failure
            os.kill(pid, signal.SIGKILL)
    assert not left, f'node processes outlived bringup: {left}'   # Stack.stop reaped them


def test_lockstep_runs_put_every_node_on_the_simulated_clock():
    from awopt_ros.cli import build_parser
    from awopt_ros.ros.runner import stack_overrides
    assert build_parser().parse_args(['demo', '--lockstep']).lockstep
    assert build_parser().parse_args(['collect', '--lockstep']).lockstep
    assert not build_parser().parse_args(['demo']).lockstep
    with pytest.raises(SystemExit):     # latency figures need the wall clock
        build_parser().parse_args(['bench', '--lockstep'])
    o = stack_overrides('/tmp/r', lockstep=True, extra={'sim_robot': {'seed': 3}})
    assert o['sim_robot'] == {'lockstep': True, 'publish_clock': True, 'use_sim_time': True,
                              'seed': 3}
    assert all(o[n]['use_sim_time'] for n in ('camera_pipeline', 'policy', 'scripted_policy',
                                              'arm_interface', 'episode_manager', 'logger'))
    assert stack_overrides('/tmp/r', real_time_factor=1.0) == {
        'logger': {'output_dir': '/tmp/r'}, 'sim_robot': {'real_time_factor': 1.0}}
