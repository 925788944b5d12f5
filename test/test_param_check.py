"""Typos in node or parameter names stop a stack before any node starts (``awopt bringup``,
``awopt demo``, the launch file), and a node given a parameter it does not declare refuses to
start; the static schema matches what each node declares at runtime."""
import importlib
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from awopt_ros.core import param_schema
from awopt_ros.core.paths import resolve
from awopt_ros.launcher import (ALL_NODE_MODULES, DEFAULT_CONFIG, Stack, ros_environment)

ROOT = Path(__file__).resolve().parents[1]
ALL_NODES = ALL_NODE_MODULES
NODE_CLASSES = {'sim_robot': 'SimRobotNode', 'camera_pipeline': 'CameraPipelineNode',
                'policy': 'PolicyNode', 'scripted_policy': 'ScriptedPolicyNode',
                'arm_interface': 'ArmInterfaceNode', 'episode_manager': 'EpisodeManagerNode',
                'logger': 'LoggerNode'}
YAML_TYPO = "arm_interface has no parameter 'reopen_empty_griper' (did you mean " \
            "'reopen_empty_gripper'?)"
PARAM_TYPO = "--set policy:actor_noise_sdt: policy has no parameter 'actor_noise_sdt' " \
             "(did you mean 'actor_noise_std'"
NODE_TYPO = "--set polcy:mode: no node 'polcy' in the stack (did you mean 'policy'?)"


def _typo_config(tmp_path):
    doc = yaml.safe_load(resolve(DEFAULT_CONFIG).read_text())
    arm = doc['arm_interface']['ros__parameters']
    arm['reopen_empty_griper'] = arm.pop('reopen_empty_gripper')
    path = tmp_path / 'typo.yaml'
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize('node', sorted(NODE_CLASSES))
def test_static_schema_is_what_the_node_declares_at_runtime(node, ros_context, tmp_path):
    module = importlib.import_module(ALL_NODES[node])
    overrides = []
    if node == 'logger':
        from rclpy.parameter import Parameter
        overrides = [Parameter('output_dir', value=str(tmp_path / 'run'))]
    instance = getattr(module, NODE_CLASSES[node])(context=ros_context,
                                                   parameter_overrides=overrides)
    try:
        runtime = {n for n in instance.list_parameters([], 0).names
                   if not param_schema.is_builtin(n)}
    finally:
        getattr(instance, 'close', lambda: None)()
        instance.destroy_node()
    assert runtime and runtime == param_schema.declared_parameters(ALL_NODES[node])


def test_stack_with_a_typo_raises_before_any_node_starts(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(subprocess, 'Popen', lambda *a, **k: started.append(a))
    with pytest.raises(ValueError, match=NODE_TYPO.replace('(', r'\(').replace('?)', r'\?\)')):
        Stack(log_dir=tmp_path / 'logs', overrides={'polcy': {'mode': 'cem'}}).start()
    with pytest.raises(ValueError, match=YAML_TYPO.replace('(', r'\(').replace('?)', r'\?\)')):
        Stack(config=_typo_config(tmp_path), log_dir=tmp_path / 'logs')
    assert not started and not (tmp_path / 'logs').exists()
    Stack(log_dir=tmp_path / 'logs', overrides={'policy': {'actor_noise_std': 0.1}})


def _cli(argv, monkeypatch, capsys):
    """Run ``awopt ARGV`` in process with node starts recorded instead of made; return
    (exit code, stdout + stderr, started argvs). An error must not escape ``main`` (it would
    be a traceback for the user)."""
    from awopt_ros import cli
    started = []

    def popen(*args, **kwargs):
        started.append(args)
        raise AssertionError('a node process was started')
    monkeypatch.setattr(subprocess, 'Popen', popen)
    # run_episodes exports the ROS environment into os.environ: restore it afterwards
    for key in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'FASTDDS_DEFAULT_PROFILES_FILE',
                'RMW_IMPLEMENTATION', 'AMENT_PREFIX_PATH'):
        monkeypatch.setenv(key, os.environ.get(key, ''))
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err, started


@pytest.mark.parametrize('command', ['bringup', 'demo'])
def test_cli_refuses_typos_before_starting_nodes(command, tmp_path, monkeypatch, capsys):
    where = (['--log-dir', str(tmp_path / 'logs')] if command == 'bringup'
             else ['--run-dir', str(tmp_path / 'run'), '--episodes', '1'])
    config = [_typo_config(tmp_path)] if command == 'bringup' else [
        '--config', _typo_config(tmp_path)]           # bringup takes it as an argument
    cases = [(config, YAML_TYPO),
             (['--set', 'policy:actor_noise_sdt=0.1'], PARAM_TYPO),
             (['--set', 'polcy:mode=cem'], NODE_TYPO)]
    for extra, message in cases:
        code, text, started = _cli([command, *where, *extra], monkeypatch, capsys)
        assert code == 2 and message in text and not started, (extra, code, text)
        assert text.startswith(f'awopt {command}: error: '), text


@pytest.mark.parametrize('command', ['bringup', 'demo'])
def test_cli_bad_set_and_disagreeing_nodes_are_one_line_errors(command, tmp_path,
                                                               monkeypatch, capsys):
    where = (['--log-dir', str(tmp_path / 'logs')] if command == 'bringup'
             else ['--run-dir', str(tmp_path / 'run'), '--episodes', '1'])
    cases = [(['--set', 'bad'], 'argument --set: expects NODE:PARAM=VALUE'),
             (['--set', 'policy:mode=['], 'VALUE is not valid YAML'),
             (['--set', 'logger:image_size=96'], "nodes disagree on 'image_size'")]
    for extra, message in cases:
        code, text, started = _cli([command, *where, *extra], monkeypatch, capsys)
        assert code == 2 and message in text and not started, (extra, code, text)
        assert text.startswith(f'awopt {command}: error: ') and 'Traceback' not in text


def test_awopt_bringup_with_a_node_typo_exits_non_zero_with_the_message(tmp_path):
    proc = subprocess.Popen([sys.executable, '-m', 'awopt_ros.cli', 'bringup', '--log-dir',
                             str(tmp_path / 'logs'), '--set', 'polcy:mode=cem'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ros_environment(domain_id=os.environ['ROS_DOMAIN_ID']))
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:     # it started the stack: SIGTERM stops its nodes too
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and NODE_TYPO in err, (out, err)
    assert 'Traceback' not in err and err.startswith('awopt bringup: error: '), err
    assert 'started' not in out and not (tmp_path / 'logs').exists()


def _launch_module(monkeypatch, share):
    """Import launch/awopt_grasp.launch.py with stand-ins for the ROS launch API (no wheels
    of launch / launch_ros here)."""
    import importlib.util

    class Configuration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context.launch_configurations[self.name]

    def action(*args, **kwargs):
        return types.SimpleNamespace(args=args, kwargs=kwargs)
    stubs = {
        'launch': {'LaunchDescription': list},
        'launch.actions': {'DeclareLaunchArgument': action, 'OpaqueFunction': action,
                           'SetEnvironmentVariable': action},
        'launch.conditions': {'LaunchConfigurationEquals': action},
        'launch.substitutions': {'LaunchConfiguration': Configuration},
        'launch_ros': {}, 'launch_ros.actions': {'Node': action},
        'ament_index_python.packages': {'get_package_share_directory': lambda pkg: share},
    }
    for name, attrs in stubs.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    spec = importlib.util.spec_from_file_location('awopt_grasp_launch_params',
                                                  ROOT / 'launch' / 'awopt_grasp.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_check_refuses_typos_before_its_nodes(monkeypatch, tmp_path):
    module = _launch_module(monkeypatch, str(tmp_path))
    actions = module.generate_launch_description()
    functions = [a for a in actions if a.kwargs.get('function') is not None]
    check = functions[0]
    # runs before the function that starts the nodes
    assert [f.kwargs['function'].__name__ for f in functions] == [
        'check_params', 'check_domain', 'stack_nodes']
    shipped = str(resolve(DEFAULT_CONFIG))
    for policy in ('actor', 'scripted'):
        ctx = types.SimpleNamespace(launch_configurations={'config': shipped,
                                                           'policy': policy})
        assert check.kwargs['function'](ctx) == []
    bad = _typo_config(tmp_path)
    ctx = types.SimpleNamespace(launch_configurations={'config': bad, 'policy': 'actor'})
    with pytest.raises(ValueError) as err:
        check.kwargs['function'](ctx)
    assert str(err.value) == f'{bad}: {YAML_TYPO}'
    with pytest.raises(ValueError, match='reopen_empty_griper'):
        module.check_stack_params(bad, 'scripted')


def test_node_given_an_undeclared_parameter_refuses_to_start(ros_context):
    from rclpy.parameter import Parameter

    from awopt_ros.nodes.camera_pipeline import CameraPipelineNode
    from awopt_ros.ros.params import check_overrides, undeclared_overrides
    from awopt_ros.ros.run import StartupError
    node = CameraPipelineNode(context=ros_context, parameter_overrides=[
        Parameter('max_frame_age_sx', value=0.1), Parameter('image_size', value=64),
        Parameter('use_sim_time', value=False), Parameter('output_dir', value='x'),
        Parameter('qos_overrides./policy/image.publisher.depth', value=2)])
    try:
        # output_dir is the logger's: a params file's '/**' section may hand it to every node
        assert undeclared_overrides(node, frozenset({'output_dir'})) == ['max_frame_age_sx']
        with pytest.raises(StartupError, match=r'camera_pipeline has no parameter '
                                               r"'max_frame_age_sx' \(did you mean "
                                               r"'max_frame_age_s'\?\)"):
            check_overrides(node)
    finally:
        node.destroy_node()
    from awopt_ros.nodes.episode_manager import EpisodeManagerNode
    node = EpisodeManagerNode(context=ros_context, parameter_overrides=[
        Parameter('image_size', value=64), Parameter('max_steps', value=3)])
    try:
        check_overrides(node)      # another node's parameter, as from '/**': accepted
    finally:
        node.destroy_node()


def test_float_parameter_given_as_an_integer_is_taken_as_that_float(ros_context):
    """``--set logger:bag_flush_period_s=60`` (YAML reads 60 as an integer) used to kill the
    node with rclpy's InvalidParameterTypeException."""
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from awopt_ros.ros.params import declare
    node = Node('float_param_test', context=ros_context, parameter_overrides=[
        Parameter('period_s', value=60), Parameter('count', value=3)])
    try:
        value = declare(node, 'period_s', 1.0, 'a period', low=0.05, high=60.0)
        assert value == 60.0 and isinstance(value, float)
        assert node.get_parameter('period_s').type_ == Parameter.Type.DOUBLE
        assert declare(node, 'count', 1, 'a count', low=1, high=10) == 3   # ints stay ints
    finally:
        node.destroy_node()


def test_node_process_with_a_parameter_typo_exits_1_naming_it(tmp_path):
    env = ros_environment(domain_id=os.environ['ROS_DOMAIN_ID'])
    proc = subprocess.Popen([sys.executable, '-m', 'awopt_ros.nodes.episode_manager',
                             '--ros-args', '-r', '__node:=episode_manager',
                             '--params-file', str(resolve(DEFAULT_CONFIG)),
                             '-p', 'episode_manager:max_stpes:=3'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        text, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:     # it took the typo and kept running
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, text
    assert "episode_manager has no parameter 'max_stpes' (did you mean 'max_steps'?)" in text
