"""The shipped bringups (sim, fake hardware, lbr-stack and ICube hardware): each params file
passes the start-up checks, starts the nodes its bringup needs, speaks its driver's names and,
on hardware, has every safety addition on, with limits inside the iiwa 14 datasheet."""
import math

import pytest
import yaml

from awopt_ros.core.kinematics import Kinematics
from awopt_ros.core.param_schema import check_params_file
from awopt_ros.core.paths import resolve
from awopt_ros.launcher import (ALL_NODE_MODULES, check_shared_params, effective_params,
                                stack_node_specs)

SIM = 'config/awopt_ros_kuka_grasp.yaml'
FAKE = 'config/awopt_ros_kuka_fake_hardware.yaml'
LBR = 'config/awopt_ros_kuka_lbr.yaml'
ICUBE = 'config/awopt_ros_kuka_icube.yaml'
HARDWARE = (LBR, ICUBE)
#: iiwa 14 datasheet (../FACTS, Hardware): position limits (deg) and velocities (deg/s), A1..A7.
DATASHEET_LIMIT_DEG = (170, 120, 170, 120, 170, 120, 175)
DATASHEET_VELOCITY_DEG_S = (85, 85, 100, 75, 130, 135, 135)


@pytest.mark.parametrize('config', [SIM, FAKE, LBR, ICUBE])
@pytest.mark.parametrize('policy', ['actor', 'scripted'])
def test_every_shipped_bringup_passes_the_start_up_checks(config, policy):
    check_params_file(config, ALL_NODE_MODULES)
    check_shared_params(config, [n for n, _ in stack_node_specs(config, policy)])


def test_device_nodes_per_bringup():
    names = {c: [n for n, _ in stack_node_specs(c, 'actor')] for c in (SIM, FAKE, *HARDWARE)}
    assert names[SIM][0] == 'sim_robot' and names[FAKE][0] == 'sim_robot'
    for config in HARDWARE:     # no simulator on hardware
        assert 'sim_robot' not in names[config] and names[config][0] == 'realsense_camera'


def test_fake_hardware_speaks_the_lbr_stack_names_and_actions():
    arm = effective_params(FAKE, 'arm_interface')
    sim = effective_params(FAKE, 'sim_robot')
    assert arm['joint_names'] == [f'lbr_A{i}' for i in range(1, 8)]
    assert arm['joint_states_topic'] == '/lbr/joint_states'
    assert arm['camera_ns'] == '/camera/camera'
    assert arm['command_interface'] == 'follow_joint_trajectory'
    assert arm['arm_controller'] == sim['arm_controller'] == '/lbr/joint_trajectory_controller'
    assert arm['gripper_interface'] == sim['gripper_action_type'] == 'gripper_command'
    assert sim['action_servers'] == 'always'
    # the rest of the cell is the simulated bringup's
    shared = ('joint_names', 'gripper_joint', 'joint_states_topic', 'camera_ns',
              'arm_controller', 'gripper_controller')
    assert {k: v for k, v in effective_params(FAKE, 'policy').items() if k not in shared} == \
        effective_params(SIM, 'policy')


@pytest.mark.parametrize('config,joints,controller', [
    (LBR, [f'lbr_A{i}' for i in range(1, 8)], '/lbr/joint_trajectory_controller'),
    (ICUBE, [f'joint_a{i}' for i in range(1, 8)], '/iiwa_arm_controller')])
def test_hardware_configs_name_their_driver_and_turn_every_safety_on(config, joints,
                                                                      controller):
    arm = effective_params(config, 'arm_interface')
    assert arm['joint_names'] == joints and arm['arm_controller'] == controller
    assert arm['command_interface'] == 'follow_joint_trajectory'
    assert arm['heartbeat_timeout_s'] > 0                       # operator deadman on
    assert arm['joint_limit_margin_rad'] > 0 and arm['max_start_jump_rad'] > 0
    assert arm['camera_timeout_s'] <= 0.5 and arm['joint_state_timeout_s'] <= 0.2
    for v, datasheet in zip(arm['max_joint_velocity_rad_s'], DATASHEET_VELOCITY_DEG_S):
        assert 0 < v <= math.radians(datasheet) * 0.5 + 1e-4
    # continuity allows one ordinary step at the configured velocities
    assert arm['max_start_jump_rad'] >= max(arm['max_joint_velocity_rad_s']) * \
        arm['control_period_s']
    manager = effective_params(config, 'episode_manager')
    assert manager['reset_service'] == '/arm/home'
    state = effective_params(config, 'robot_state')
    assert state['publish_camera_optical_frame'] is False      # the camera driver does it
    camera = effective_params(config, 'realsense_camera')
    assert f"/{camera['camera_namespace']}/{camera['camera_name']}" == arm['camera_ns']


def test_model_joint_limits_lie_inside_the_iiwa14_datasheet():
    limits = Kinematics(resolve('urdf/iiwa14_gripper.urdf')).joint_limits()
    for lo, hi, v, deg, vdeg in zip(limits.lower_rad, limits.upper_rad, limits.velocity_rad_s,
                                    DATASHEET_LIMIT_DEG, DATASHEET_VELOCITY_DEG_S):
        assert -math.radians(deg) - 1e-6 <= lo < hi <= math.radians(deg) + 1e-6
        assert v <= math.radians(vdeg) + 1e-6


def test_hardware_configs_hold_no_simulator_parameters():
    for config in HARDWARE:
        doc = yaml.safe_load(resolve(config).read_text())
        assert 'sim_robot' not in doc
        assert effective_params(config, 'policy').get('use_sim_time') is False
