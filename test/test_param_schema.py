"""The params check without ROS: parameter names read from node source, and a params YAML or
``--set`` override with an unknown node or parameter refused with the closest names."""
import textwrap

import pytest
import yaml

from awopt_ros.core import param_schema
from awopt_ros.core.param_schema import (SchemaError, UnknownParameterError,
                                         check_known_parameters, check_params_file,
                                         declared_parameters, flatten, node_schemas,
                                         unknown_parameter_errors)
from awopt_ros.core.paths import resolve
from awopt_ros.launcher import ALL_NODE_MODULES, DEFAULT_CONFIG

ALL_NODES = ALL_NODE_MODULES
#: A few names each node is known to take (the schema must hold at least these).
KNOWN = {
    'sim_robot': {'seed', 'lockstep', 'publish_clock', 'real_time_factor', 'image_width'},
    'camera_pipeline': {'image_size', 'crop_xywh', 'max_frame_age_s'},
    'policy': {'mode', 'model_path', 'actor_noise_std', 'publish_proprio', 'seed'},
    'scripted_policy': {'noise_std_m', 'lift_rule', 'publish_proprio'},
    'residual_controller': {'residual', 'model_path', 'alpha_m', 'force_limit_n'},
    'arm_interface': {'reopen_empty_gripper', 'max_step_m', 'workspace_min_m'},
    'episode_manager': {'max_steps', 'timeout_s', 'node_timeout_s'},
    'logger': {'output_dir', 'image_size', 'bag_compression'},
    'realsense_camera': {'camera_namespace', 'camera_name', 'serial_no', 'rosbag_filename'},
    'robot_state': {'urdf_path', 'camera_pose_xyz_rpy', 'joint_names'},
    'success_detector': {'model_path', 'on_threshold', 'off_threshold', 'debounce_frames',
                         'image_topic'},
    'operator': {'output_dir', 'dataset_name', 'flush_period_s'},
}


def _config(tmp_path, edit):
    """Write the shipped params YAML with ``edit(doc)`` applied; return its path (str)."""
    doc = yaml.safe_load(resolve(DEFAULT_CONFIG).read_text())
    edit(doc)
    path = tmp_path / 'x.yaml'
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_every_node_schema_is_read_from_source_and_holds_its_known_names():
    schema = node_schemas(ALL_NODES)
    assert set(schema) == set(KNOWN)
    for node, names in KNOWN.items():
        assert names <= schema[node], (node, names - schema[node])
    # rclpy's own parameters are not part of a node's schema; they are accepted separately
    assert not any(param_schema.is_builtin(n) for s in schema.values() for n in s)


def test_shipped_config_passes_the_check():
    check_params_file(DEFAULT_CONFIG, ALL_NODES)
    check_params_file(DEFAULT_CONFIG, ALL_NODES, {'policy': {'mode': 'cem'},
                                                  'sim_robot': {'use_sim_time': True}})


def test_yaml_typo_names_file_node_key_and_closest_name(tmp_path):
    def typo(doc):
        arm = doc['arm_interface']['ros__parameters']
        arm['reopen_empty_griper'] = arm.pop('reopen_empty_gripper')
    cfg = _config(tmp_path, typo)
    with pytest.raises(UnknownParameterError) as err:
        check_params_file(cfg, ALL_NODES)
    assert str(err.value) == (f"{cfg}: arm_interface has no parameter 'reopen_empty_griper' "
                              "(did you mean 'reopen_empty_gripper'?)")
    assert isinstance(err.value, ValueError)


def test_set_typos_in_parameter_and_node_are_refused():
    schema = node_schemas(ALL_NODES)
    errors = unknown_parameter_errors({}, schema, source='p.yaml', overrides={
        'policy': {'actor_noise_sdt': 0.1, 'mode': 'cem'}, 'polcy': {'mode': 'cem'}})
    assert errors[0].startswith('--set policy:actor_noise_sdt: policy has no parameter '
                                "'actor_noise_sdt' (did you mean 'actor_noise_std'")
    assert errors[1] == "--set polcy:mode: no node 'polcy' in the stack (did you mean 'policy'?)"
    assert len(errors) == 2


def test_unknown_yaml_sections_and_misspelt_ros_parameters_are_refused():
    schema = node_schemas(ALL_NODES)
    doc = {'polcy': {'ros__parameters': {'mode': 'cem'}},
           'logger': {'ros_parameters': {'output_dir': 'x'}},
           'camera_pipeline': {'ros__parameters': 3}}
    errors = unknown_parameter_errors(doc, schema, source='c.yaml')
    assert errors[0] == "c.yaml: no node 'polcy' in the stack (did you mean 'policy'?)"
    assert "c.yaml: logger must hold only 'ros__parameters:' (found 'ros_parameters')" \
        == errors[1]
    assert 'ros__parameters must be a mapping' in errors[2]
    assert unknown_parameter_errors([1, 2], schema, source='c.yaml') == [
        'c.yaml: not a mapping of node names to ros__parameters']
    # a name nothing is close to lists what exists
    errors = unknown_parameter_errors({}, schema, source='c.yaml',
                                      overrides={'logger': {'zzz': 1}})
    assert errors == ["--set logger:zzz: logger has no parameter 'zzz' (its parameters: "
                      + ', '.join(sorted(schema['logger'])) + ')']


def test_ros_builtins_wildcard_section_and_slashed_node_names_are_accepted():
    schema = node_schemas(ALL_NODES)
    doc = {'/**': {'ros__parameters': {'use_sim_time': True, 'image_size': 64}},
           '/policy': {'ros__parameters': {
               'mode': 'actor', 'start_type_description_service': False,
               'qos_overrides': {'/policy/action': {'publisher': {'depth': 5}}}}},
           'logger': None}
    check_known_parameters(doc, schema, source='c.yaml', overrides={
        'sim_robot': {'use_sim_time': True, 'qos_overrides./clock.publisher.depth': 1}})
    # a '/**' key no node declares is a typo too
    errors = unknown_parameter_errors({'/**': {'ros__parameters': {'use_sim_tim': True}}},
                                      schema, source='c.yaml')
    assert errors == ["c.yaml: '/**' sets 'use_sim_tim', which no node declares (parameters: "
                      + ', '.join(sorted(frozenset().union(*schema.values()))) + ')']


def test_flatten_joins_nested_keys_with_dots():
    assert flatten({'a': {'b': {'c': 1}, 'd': [1]}, 'e': {}}) == {'a.b.c': 1, 'a.d': [1],
                                                                  'e': {}}


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A stand-in awopt_ros source tree under tmp_path; returns a writer of its modules."""
    monkeypatch.setattr(param_schema, '_PACKAGE_DIR', tmp_path / 'awopt_ros')
    param_schema._parse.cache_clear()
    declared_parameters.cache_clear()
    yield lambda rel, text: ((tmp_path / 'awopt_ros' / rel).parent.mkdir(
        parents=True, exist_ok=True), (tmp_path / 'awopt_ros' / rel).write_text(
        textwrap.dedent(text)))
    param_schema._parse.cache_clear()
    declared_parameters.cache_clear()


def test_static_reading_follows_helpers_and_refuses_what_it_cannot_see(fake_package):
    fake_package('ros/params.py', """
        def declare(node, name, default, description):
            return node.declare_parameter(name, default).value
        """)
    fake_package('ros/helpers.py', """
        from awopt_ros.ros.params import declare as d

        def inner(node):
            node.declare_parameter('from_inner', 1)

        def extra(node):
            inner(node)
            return d(node, name='from_helper', default=1, description='x')
        """)
    fake_package('nodes/good.py', """
        from awopt_ros.ros import params
        from awopt_ros.ros import helpers
        from awopt_ros.ros.helpers import extra

        class N:
            def __init__(self):
                params.declare(self, 'a', 1, 'A.')
                self.declare_parameter('b', 2)
                extra(self)
                helpers.extra(self)
        """)
    assert declared_parameters('awopt_ros.nodes.good') == {'a', 'b', 'from_helper',
                                                           'from_inner'}
    fake_package('nodes/dynamic.py', """
        from awopt_ros.ros.params import declare

        def setup(node, names):
            for name in names:
                declare(node, name, 0, 'x')
        """)
    with pytest.raises(SchemaError, match=r'dynamic.py:6: declare\(\) with a parameter name '
                                          'that is not a string literal'):
        declared_parameters('awopt_ros.nodes.dynamic')
    fake_package('nodes/many.py', """
        def setup(node):
            node.declare_parameters('', [('a', 1)])
        """)
    with pytest.raises(SchemaError, match='declare_parameters'):
        declared_parameters('awopt_ros.nodes.many')
    with pytest.raises(SchemaError, match='no source file'):
        declared_parameters('awopt_ros.nodes.missing')
    with pytest.raises(SchemaError, match='not an awopt_ros module'):
        declared_parameters('os.path')
