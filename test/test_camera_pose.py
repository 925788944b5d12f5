"""core.camera_pose: the simulated camera's pose as camera_link (realsense-ros convention), the
rpy maths, and the deployed-vs-trained pose check (plain pytest, no ROS)."""
import math

import numpy as np
import pytest

from awopt_ros.core import camera_pose as cp
from awopt_ros.core import robot_tf
from awopt_ros.core.camera import PinholeCamera, look_at_rotation


def _sim_optical_from_mujoco():
    """The shoulder camera's optical frame as MuJoCo places it: (position, rotation)."""
    import mujoco

    from awopt_ros.core import robot
    from awopt_ros.core.paths import resolve
    from awopt_ros.sim import scene
    spec, _ = scene.build_spec(resolve(robot.URDF_PATH), seed=0, num_objects=1)
    model = spec.compile()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cam = model.camera(scene.CAMERA_NAME).id
    # MuJoCo cameras look along their -z with y up: optical x, y, z = cam x, -y, -z.
    rot = data.cam_xmat[cam].reshape(3, 3) * np.array([1.0, -1.0, -1.0])
    return data.cam_xpos[cam].copy(), rot


def test_sim_pose_matches_scene_constants():
    from awopt_ros.sim import scene
    pos, rot = cp.optical_frame(cp.SIM_CAMERA_POSE_XYZ_RPY)
    np.testing.assert_allclose(pos, scene.CAMERA_POS_M, atol=1e-12)
    np.testing.assert_allclose(rot, look_at_rotation(scene.CAMERA_POS_M, scene.CAMERA_LOOKAT_M),
                               atol=1e-12)


def test_tf_chain_reproduces_the_mujoco_camera_optical_axis():
    """base_link -> camera_link -> camera_color_optical_frame, chained like tf2, lands on the
    rendered camera: same centre, optical z = its viewing direction, x = image right."""
    pos_mj, rot_mj = _sim_optical_from_mujoco()
    tfs = robot_tf.camera_transforms(cp.SIM_CAMERA_POSE_XYZ_RPY)
    pose = robot_tf.compose(tfs, 'base_link', 'camera_color_optical_frame')
    np.testing.assert_allclose(pose[:3, 3], pos_mj, atol=1e-6)
    np.testing.assert_allclose(pose[:3, :3], rot_mj, atol=1e-6)
    # camera_link: x forward (the optical z), z up-ish (the optical -y), y left (optical -x)
    link = robot_tf.compose(tfs, 'base_link', 'camera_link')
    np.testing.assert_allclose(link[:3, 0], rot_mj[:, 2], atol=1e-6)
    np.testing.assert_allclose(link[:3, 2], -rot_mj[:, 1], atol=1e-6)
    assert link[2, 2] > 0.5           # z up: the camera looks down with little tilt sideways
    assert link[2, 0] < -0.7          # x forward points down into the bin


def test_sim_pose_projects_like_the_sim_camera():
    from awopt_ros.core import robot
    from awopt_ros.sim import scene
    pos, rot = cp.optical_frame(cp.SIM_CAMERA_POSE_XYZ_RPY)
    ref = scene.shoulder_camera()
    cam = PinholeCamera(ref.K, pos, rot, ref.width, ref.height)
    points = np.array([robot.BIN_CENTER_M, [0.5, 0.2, 0.05], [0.75, -0.2, 0.0]])
    np.testing.assert_allclose(cam.project(points), ref.project(points), atol=1e-6)
    np.testing.assert_allclose(cam.project(scene.CAMERA_LOOKAT_M)[0], [320.0, 240.0], atol=1e-6)


def test_link_to_optical_is_the_realsense_rotation():
    np.testing.assert_allclose(cp.rpy_to_matrix(cp.LINK_TO_OPTICAL_RPY), cp.LINK_TO_OPTICAL,
                               atol=1e-15)
    # optical z (forward) = camera_link x, optical y (down) = -camera_link z
    np.testing.assert_allclose(cp.LINK_TO_OPTICAL[:, 2], [1, 0, 0])
    np.testing.assert_allclose(cp.LINK_TO_OPTICAL[:, 1], [0, 0, -1])


@pytest.mark.parametrize('rpy', [(0.1, -0.4, 2.5), (-3.0, 1.2, -0.3), (0.0, 0.0, 0.0),
                                 (0.3, -1.5, 0.2)])
def test_rpy_round_trip_and_quaternion(rpy):
    rot = cp.rpy_to_matrix(rpy)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(cp.rpy_to_matrix(cp.matrix_to_rpy(rot)), rot, atol=1e-9)
    np.testing.assert_allclose(robot_tf.quat_matrix(cp.quat_xyzw(rot)), rot, atol=1e-9)
    # fixed axes x, y, z: R = Rz(yaw) Ry(pitch) Rx(roll)
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    np.testing.assert_allclose(rot, rz @ ry @ rx, atol=1e-12)


def test_matrix_to_rpy_at_gimbal_lock():
    rot = cp.rpy_to_matrix((0.4, math.pi / 2, 0.1))
    np.testing.assert_allclose(cp.rpy_to_matrix(cp.matrix_to_rpy(rot)), rot, atol=1e-9)


def test_pose_from_optical_inverts_optical_frame():
    pose = (0.3, -0.2, 0.9, 0.2, 0.7, -2.0)
    pos, rot = cp.optical_frame(pose)
    back = cp.pose_from_optical(pos, rot)
    np.testing.assert_allclose(cp.pose_to_matrix(back), cp.pose_to_matrix(pose), atol=1e-9)
    with pytest.raises(ValueError, match='rotation'):
        cp.pose_from_optical(pos, 2.0 * rot)
    # a driver whose optical frame sits 15 mm along camera_link's -y (the colour imager)
    offset = np.eye(4)
    offset[:3, :3] = cp.LINK_TO_OPTICAL
    offset[:3, 3] = [0.0, -0.015, 0.0]
    link = cp.pose_to_matrix(cp.pose_from_optical(pos, rot, offset))
    np.testing.assert_allclose((link @ offset)[:3, 3], pos, atol=1e-9)
    np.testing.assert_allclose((link @ offset)[:3, :3], rot, atol=1e-9)
    with pytest.raises(ValueError, match='4, 4'):
        cp.pose_from_optical(pos, rot, np.eye(3))
    with pytest.raises(ValueError):
        cp.pose_from_optical([0, 0], rot)


@pytest.mark.parametrize('bad', [[0, 0, 1], [0, 0, 1, 0, 0, float('nan')], 'abc', None,
                                 [0] * 7])
def test_as_pose_refuses_bad_input(bad):
    with pytest.raises(ValueError, match='camera_pose_xyz_rpy'):
        cp.as_pose(bad)


def test_pose_difference():
    a = (0.0, 0.6, 1.2, 0.0, 0.9, -0.8)
    assert cp.pose_difference(a, a) == pytest.approx((0.0, 0.0), abs=1e-7)
    b = (0.03, 0.64, 1.2, 0.0, 0.9, -0.8)
    assert cp.pose_difference(a, b) == pytest.approx((0.05, 0.0), abs=1e-7)
    c = (0.0, 0.6, 1.2, 0.0, 0.9, -0.8 + 0.1)
    assert cp.pose_difference(a, c)[1] == pytest.approx(0.1, abs=1e-9)
    # the same rotation written two ways (yaw +pi and -pi) is no difference
    assert cp.pose_difference((0, 0, 0, 0, 0, math.pi), (0, 0, 0, 0, 0, -math.pi))[1] == \
        pytest.approx(0.0, abs=1e-7)


def test_pose_mismatch_within_tolerance_or_no_recorded_pose_is_none():
    sim = cp.SIM_CAMERA_POSE_XYZ_RPY
    near = list(sim)
    near[0] += 0.01
    near[5] += 0.02
    assert cp.pose_mismatch(near, sim, 0.02, 0.035) is None
    assert cp.pose_mismatch(sim, None, 0.02, 0.035) is None


def test_pose_mismatch_names_both_differences():
    sim = cp.SIM_CAMERA_POSE_XYZ_RPY
    moved = list(sim)
    moved[2] += 0.10                      # 10 cm higher
    msg = cp.pose_mismatch(moved, sim, 0.02, 0.035)
    assert msg is not None and '0.100 m' in msg and 'tolerance 0.020 m' in msg
    turned = list(sim)
    turned[5] += math.radians(5.0)        # 5 deg more yaw
    msg = cp.pose_mismatch(turned, sim, 0.02, 0.035)
    assert msg is not None and '5.0 deg' in msg and '0.000 m' in msg


def test_pose_mismatch_refuses_bad_input():
    sim = cp.SIM_CAMERA_POSE_XYZ_RPY
    with pytest.raises(ValueError, match='>= 0'):
        cp.pose_mismatch(sim, sim, -0.1, 0.1)
    with pytest.raises(ValueError, match='deployed'):
        cp.pose_mismatch([1, 2, 3], sim, 0.1, 0.1)
    with pytest.raises(ValueError, match="model's"):
        cp.pose_mismatch(sim, [1, 'x'], 0.1, 0.1)


def test_check_models():
    sim = list(cp.SIM_CAMERA_POSE_XYZ_RPY)
    moved = sim[:2] + [sim[2] + 0.2] + sim[3:]
    status, lines = cp.check_models(sim, {'actor': {cp.CONTRACT_FIELD: sim}}, 0.02, 0.035)
    assert status == cp.POSE_OK and len(lines) == 1 and 'actor' in lines[0]
    status, lines = cp.check_models(sim, {'actor': {'image_size': [64, 64]}, 'critic': None},
                                    0.02, 0.035)
    assert status == cp.POSE_NOT_RECORDED and len(lines) == 2
    status, lines = cp.check_models(moved, {'actor': {cp.CONTRACT_FIELD: sim}, 'critic': {}},
                                    0.02, 0.035)
    assert status == cp.POSE_MISMATCH and len(lines) == 1
    assert lines[0].startswith('actor model: the camera sits 0.200 m')
    status, lines = cp.check_models(sim, {'actor': {cp.CONTRACT_FIELD: [1, 2]}}, 0.02, 0.035)
    assert status == cp.POSE_MISMATCH and 'unreadable' in lines[0]
    assert cp.check_models(sim, {}, 0.02, 0.035) == (cp.POSE_OK, [])
    with pytest.raises(ValueError, match='deployed'):
        cp.check_models([0, 0, 0], {}, 0.02, 0.035)
    with pytest.raises(ValueError, match='>= 0'):
        cp.check_models(sim, {'actor': {cp.CONTRACT_FIELD: sim}}, -1.0, 0.035)
