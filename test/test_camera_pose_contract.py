"""A model's contract records the camera pose of the cell it was trained in (export), and the
shipped models' contracts, which predate the field, read as 'no pose recorded'."""
import json

import numpy as np
import pytest

from awopt_ros.core import camera_pose
from awopt_ros.core.onnx_policy import read_contract
from awopt_ros.core.paths import models_dir
from conftest import export_tiny_actor


def test_export_records_the_sim_camera_pose_by_default(tmp_path):
    _, result = export_tiny_actor(tmp_path / 'a.onnx', check_parity=False)
    contract = read_contract(tmp_path / 'a.onnx')
    assert contract['camera_pose_xyz_rpy'] == pytest.approx(
        list(camera_pose.SIM_CAMERA_POSE_XYZ_RPY), abs=1e-12)
    assert result['contract']['camera_pose_xyz_rpy'] == contract['camera_pose_xyz_rpy']
    json.dumps(contract)      # plain JSON numbers


def test_export_records_a_given_camera_pose(tmp_path):
    pose = [0.1, -0.5, 1.0, 0.0, 0.7, 1.2]
    export_tiny_actor(tmp_path / 'b.onnx', check_parity=False, camera_pose_xyz_rpy=pose)
    recorded = read_contract(tmp_path / 'b.onnx')['camera_pose_xyz_rpy']
    np.testing.assert_allclose(recorded, pose)
    assert camera_pose.pose_mismatch(pose, recorded, 0.001, 0.001) is None
    assert camera_pose.pose_mismatch(camera_pose.SIM_CAMERA_POSE_XYZ_RPY, recorded, 0.02,
                                     0.035) is not None


def test_export_refuses_a_bad_camera_pose(tmp_path):
    with pytest.raises(ValueError, match='camera_pose_xyz_rpy'):
        export_tiny_actor(tmp_path / 'c.onnx', check_parity=False,
                          camera_pose_xyz_rpy=[0.0, 1.0])
    assert not (tmp_path / 'c.onnx').exists()


def test_critic_contract_records_the_pose_too():
    from awopt_ros.learning.export import make_contract
    contract = make_contract(64, [80, 0, 480, 480], algorithm='awopt-critic')
    assert len(contract['camera_pose_xyz_rpy']) == 6


def test_shipped_models_are_read_without_a_pose():
    """The shipped models were exported before the field: no pose, so no warning (the policy
    node says so in an info line); this test only reads them."""
    for path in sorted(models_dir().glob('*.onnx')):
        recorded = read_contract(path).get('camera_pose_xyz_rpy')
        if recorded is not None:
            camera_pose.as_pose(recorded)
        assert camera_pose.pose_mismatch(camera_pose.SIM_CAMERA_POSE_XYZ_RPY, recorded, 0.02,
                                         0.035) is None
