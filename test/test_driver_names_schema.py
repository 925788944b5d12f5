"""The driver-naming parameters (ros.robot_params) are in the parameter schema of the nodes
that read the driver's joint states or camera (plain pytest, from the source)."""
import pytest

from awopt_ros.core.param_schema import node_schemas
from awopt_ros.launcher import ALL_NODE_MODULES

JOINTS = {'joint_names', 'gripper_joint', 'joint_states_topic'}


@pytest.mark.parametrize('node, names', [
    ('logger', JOINTS | {'camera_ns'}),
    ('episode_manager', JOINTS | {'camera_ns'}),
    ('scripted_policy', JOINTS),
])
def test_nodes_that_read_the_driver_declare_its_names(node, names):
    schema = node_schemas({node: ALL_NODE_MODULES[node]})[node]
    assert names <= schema, names - schema


def test_the_scripted_policy_reads_no_camera():
    assert 'camera_ns' not in node_schemas(
        {'scripted_policy': ALL_NODE_MODULES['scripted_policy']})['scripted_policy']
