"""The insertion task through the stack: real node processes, lockstep.

``awopt demo --task insertion`` brings up sim_robot's insertion scene (Sawyer, peg, socket,
wrist F/T, noisy goal), the residual controller, the arm interface with the Sawyer's URDF,
the episode manager, the logger and robot_state, and runs the P-controller alone and then
with a residual model (here one with a zero output layer, built in the test) on the same
scene seeds. Checks that
- both runs meet the same scenes and, in lockstep, end each scene as the in-process
  environment (``sim.insertion_env``) does with the P-controller;
- the bags hold the wrench (tool frame) and the episode's goal, which is the simulator's
  observed (noisy) goal for that scene;
- the residual run acts through its model (the decisions say 'residual');
- each run's insertion dataset holds every episode: the 15-D states the controller saw, the
  residual as the action, reward 1 on a success.
Plus, ROS-free and in process: the shipped insertion bringup passes the start-up checks with
the Sawyer's names, and a fault on the episode manager's ``fault_topic`` ends an episode as
failed.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from awopt_ros.core import sawyer
from awopt_ros.core.param_schema import check_params_file
from awopt_ros.core.report import insertion_comparison
from awopt_ros.launcher import (ALL_NODE_MODULES, check_shared_params, effective_params,
                                stack_node_specs)

CONFIG = 'config/awopt_ros_sawyer_insertion.yaml'
BRIDGE = 'config/awopt_ros_sawyer_bridge.yaml'
#: Scenes 1003..1005: the P-controller inserts the first and jams on the two others
#: (in-process, checked below), so the comparison sees both outcomes.
BASE_SEED = 1002
EPISODES = 3
WRENCH = '/force_torque_sensor_broadcaster/wrench'
GOAL = '/insertion/goal'
#: Sawyer datasheet velocities (rad/s), right_j0..6 (../FACTS, Hardware interfaces).
SAWYER_VELOCITY_RAD_S = (1.74, 1.328, 1.957, 1.957, 3.485, 3.485, 4.545)


# -- ROS-free --------------------------------------------------------------------------------
def test_insertion_bringup_passes_the_start_up_checks_with_the_sawyer_names():
    check_params_file(CONFIG, ALL_NODE_MODULES)
    nodes = [n for n, _ in stack_node_specs(CONFIG, 'residual')]
    check_shared_params(CONFIG, nodes)
    assert nodes == ['sim_robot', 'camera_pipeline', 'residual_controller', 'success_detector',
                     'arm_interface', 'episode_manager', 'logger', 'operator', 'robot_state']
    sim = effective_params(CONFIG, 'sim_robot')
    arm = effective_params(CONFIG, 'arm_interface')
    assert sim['scene'] == 'insertion' and sim['physics_dt_s'] == 0.001
    assert arm['joint_names'] == list(sawyer.ARM_JOINTS) == arm['urdf_joint_names']
    assert arm['urdf_path'] == sawyer.URDF_PATH and arm['gripper_interface'] == 'none'
    assert np.allclose(arm['home_joint_positions_rad'], sawyer.HOME_Q, atol=1e-5)
    assert arm['max_joint_velocity_rad_s'] == list(SAWYER_VELOCITY_RAD_S)
    assert arm['max_step_m'] == effective_params(CONFIG, 'residual_controller').get(
        'max_step_m', 0.01)
    manager = effective_params(CONFIG, 'episode_manager')
    assert manager['max_steps'] == 50 and manager['fault_topic'] == '/residual/fault'
    # robot_state places the camera where the simulator renders from
    from awopt_ros.core.camera_pose import optical_frame
    from awopt_ros.sim.insertion import socket_camera
    position, rotation = optical_frame(effective_params(CONFIG, 'robot_state')[
        'camera_pose_xyz_rpy'])
    camera = socket_camera(sawyer.SOCKET_M)
    assert np.allclose(position, camera.position_m) and np.allclose(rotation, camera.rotation)
    # the workspace box holds the socket and the start poses above it
    top = sawyer.SOCKET_M
    assert np.all(np.asarray(arm['workspace_min_m']) < top - [0.05, 0.05, 0.02])
    assert np.all(np.asarray(arm['workspace_max_m']) > top + [0.05, 0.05, 0.06])


def test_bridge_hardware_config_speaks_intera_names_with_every_safety_on():
    """config/awopt_ros_sawyer_bridge.yaml: a real Sawyer through ros1_bridge, no simulator,
    half the datasheet velocities, deadman on, homing as the reset, the P-controller first."""
    import math

    import yaml

    from awopt_ros.core.paths import resolve
    check_params_file(BRIDGE, ALL_NODE_MODULES)
    nodes = [n for n, _ in stack_node_specs(BRIDGE, 'residual')]
    check_shared_params(BRIDGE, nodes)
    assert nodes[0] == 'realsense_camera' and 'residual_controller' in nodes
    assert 'sim_robot' not in yaml.safe_load(resolve(BRIDGE).read_text())
    arm = effective_params(BRIDGE, 'arm_interface')
    assert arm['joint_names'] == list(sawyer.ARM_JOINTS) == arm['urdf_joint_names']
    assert arm['joint_states_topic'] == '/robot/joint_states'
    assert arm['command_interface'] == 'follow_joint_trajectory'
    assert f"{arm['arm_controller']}/follow_joint_trajectory" == \
        '/robot/limb/right/follow_joint_trajectory'
    assert arm['heartbeat_timeout_s'] > 0 and arm['joint_limit_margin_rad'] >= 0.1
    for v, datasheet in zip(arm['max_joint_velocity_rad_s'], SAWYER_VELOCITY_RAD_S):
        assert 0 < v <= 0.5 * datasheet + 1e-9
    assert arm['max_start_jump_rad'] >= max(arm['max_joint_velocity_rad_s']) * \
        arm['control_period_s']
    assert arm['camera_timeout_s'] <= 0.5 and arm['joint_state_timeout_s'] <= 0.2
    assert arm['gripper_interface'] == 'none' and arm['max_step_m'] <= 0.01
    assert effective_params(BRIDGE, 'episode_manager')['reset_service'] == '/arm/home'
    assert effective_params(BRIDGE, 'residual_controller')['residual'] == 'off'
    assert effective_params(BRIDGE, 'logger')['task'] == 'insertion'
    camera = effective_params(BRIDGE, 'realsense_camera')
    assert f"/{camera['camera_namespace']}/{camera['camera_name']}" == arm['camera_ns']
    assert not effective_params(BRIDGE, 'residual_controller')['use_sim_time']
    assert math.isclose(effective_params(BRIDGE, 'residual_controller')['force_limit_n'], 30.0)


def test_insertion_launch_file_starts_the_stack_the_params_file_names(monkeypatch):
    import types

    from test_launcher import _load_launch_file

    from awopt_ros.launcher import Stack
    root = Path(__file__).resolve().parents[1]
    module = _load_launch_file(monkeypatch, str(root), 'awopt_sawyer_insertion.launch.py')
    actions = module.generate_launch_description()
    defaults = {a.args[0]: a.kwargs for a in actions if a.args}
    assert defaults['config']['default_value'].endswith(CONFIG)
    assert defaults['policy'] == {'default_value': 'residual', 'choices': ['residual']}
    functions = {a.kwargs['function'].__name__: a.kwargs['function'] for a in actions
                 if a.kwargs.get('function') is not None}
    assert list(functions) == ['check_params', 'check_domain', 'stack_nodes']
    args = {'policy': 'residual', 'use_sim_time': 'false', 'robot_state_publisher': 'false',
            'rviz': 'false', 'rviz_config': ''}
    for config in (CONFIG, BRIDGE):
        ctx = types.SimpleNamespace(launch_configurations=dict(args, config=str(root / config)))
        assert functions['check_params'](ctx) == []
        names = [n.kwargs['name'] for n in functions['stack_nodes'](ctx)]
        assert names == [n for n, _ in Stack(config=str(root / config),
                                              policy='residual').node_specs()]
        assert 'residual_controller' in names


def test_the_insertion_bringups_run_the_residual_controller_by_default():
    from awopt_ros.launcher import DEFAULT_CONFIG, default_policy
    assert default_policy(CONFIG) == default_policy(BRIDGE) == 'residual'
    assert default_policy(DEFAULT_CONFIG) == 'actor'
    assert default_policy('config/awopt_ros_kuka_lbr.yaml') == 'actor'


@pytest.mark.parametrize('argv,words', [
    (['--task', 'insertion', '--policy', 'scripted'], 'runs the residual controller'),
    (['--policy', 'residual'], 'residual needs --task insertion'),
    (['--task', 'insertion', '--new-model-every', '2'], 'not with --task insertion')])
def test_demo_refuses_a_policy_the_task_does_not_run(argv, words, capsys):
    from awopt_ros.cli import main
    assert main(['demo', *argv]) == 2
    assert words in capsys.readouterr().err


def test_insertion_comparison_says_whether_the_runs_met_the_same_scenes():
    p = {'episodes': 4, 'successes': 2, 'success_rate': 0.5, 'outcomes': {'success': 2},
         'seeds': [1, 2, 3, 4], 'error': None}
    r = dict(p, successes=3, success_rate=0.75)
    out = insertion_comparison({'p_controller': p, 'residual': r})
    assert out['same_seeds'] is True and out['seeds'] == [1, 2, 3, 4]
    assert out['residual_minus_p_controller'] == 25.0 and out['errors'] == {}
    assert out['p_controller_successes'] == 2 and out['residual_success_rate'] == 0.75
    other = insertion_comparison({'p_controller': p, 'residual': dict(r, seeds=[1, 2, 3, 5])})
    assert other['same_seeds'] is False
    failed = insertion_comparison({'p_controller': p, 'residual': dict(r, error='no model')})
    assert failed['errors'] == {'residual': 'no model'}
    assert failed['residual_minus_p_controller'] is None
    alone = insertion_comparison({'p_controller': p})
    assert alone['same_seeds'] is None and alone['residual_minus_p_controller'] is None


def test_state_dataset_round_trip_and_bad_input(tmp_path):
    from awopt_ros.core.dataset import POLICY_IDS, StateEpisodeRecorder, load_episodes
    rec = StateEpisodeRecorder(tmp_path, 'awopt/sawyer-insertion-v0', 'insertion')
    rec.begin(1, seed=7)
    with pytest.raises(ValueError, match='state must have 15'):
        rec.add_step(np.zeros(6), np.zeros(3), 0.0, 5, 0.1)
    with pytest.raises(ValueError, match='action must be 3 finite'):
        rec.add_step(np.zeros(15), [0.0, np.nan, 0.0], 0.0, 5, 0.1)
    for k in range(3):
        rec.add_step(np.full(15, k, np.float32), [2.0, -0.5, 0.0], 0.0,
                     POLICY_IDS['residual'], 0.1 * k, command_m=[0.001, 0.0, -0.01])
    extra = rec.truncate(2)
    assert extra['state'][0] == 2.0
    out = rec.end(True, True, False, extra['state'])
    assert out['written'] and out['steps'] == 2
    rec.begin(2, seed=8)
    rec.add_step(np.ones(15), np.zeros(3), 0.0, POLICY_IDS['p_controller'], 0.0)
    assert rec.end(False, False, True)['written']      # final state: the last one repeated
    eps = load_episodes(tmp_path, 'awopt/sawyer-insertion-v0')
    assert [e['seed'] for e in eps] == [7, 8] and [e['episode'] for e in eps] == [1, 2]
    first, second = eps
    assert first['state'].shape == (3, 15) and first['actions'].shape == (2, 3)
    assert first['actions'][0].tolist() == [1.0, -0.5, 0.0]     # clipped to the bounds
    assert first['rewards'].tolist() == [0.0, 1.0] and first['terminations'][-1]
    assert first['command_m'].shape == (3, 3) and first['policy'][0] == POLICY_IDS['residual']
    assert second['state'].shape == (2, 15) and second['truncations'][-1]
    assert np.isnan(second['command_m']).all()
    with pytest.raises(ValueError, match='image'):
        StateEpisodeRecorder(tmp_path, 'awopt/x-v0', 'grasp')


# -- sim_robot's insertion scene in process ------------------------------------------------------
def test_sim_robot_insertion_scene_publishes_wrench_goal_and_no_gripper(ros_context):
    from geometry_msgs.msg import PoseStamped, WrenchStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import Trigger
    from test_sim_node import setup, spin

    from awopt_ros.ros import qos
    from awopt_ros.sim.insertion import InsertionConfig, InsertionSim
    from awopt_ros.sim.messages import goal_qos
    sim, peer, ex = setup(ros_context, scene='insertion', seed=21, physics_dt_s=0.001,
                          image_width=160, image_height=120, camera_rate_hz=10.0,
                          joint_names=list(sawyer.ARM_JOINTS))
    wrenches, goals, joints = [], [], []
    peer.node.create_subscription(WrenchStamped, WRENCH, wrenches.append, qos.SENSOR)
    peer.node.create_subscription(JointState, '/joint_states', joints.append, qos.SENSOR)
    # subscribed after the goal went out: transient local delivers it (depth 1)
    peer.node.create_subscription(PoseStamped, GOAL, goals.append, goal_qos())
    gripper = peer.node.create_publisher(Float64MultiArray, '/gripper_controller/commands',
                                         qos.COMMAND)
    assert spin(ex, lambda: len(wrenches) >= 5 and goals and len(peer.success) >= 1)
    assert list(joints[-1].name) == list(sawyer.ARM_JOINTS)     # no gripper joint
    assert {w.header.frame_id for w in wrenches} == {'tcp'}
    reference = InsertionSim(InsertionConfig(render=False))
    try:
        reference.reset(21)
        first = reference.goal_observed()
        reference.reset(22)
        second = reference.goal_observed()
    finally:
        reference.close()
    p = goals[0].pose.position
    assert goals[0].header.frame_id == 'base_link'
    assert np.allclose([p.x, p.y, p.z], first, atol=1e-12)
    assert peer.success[-1].data == 0.0                  # 3-5 cm above the socket
    gripper.publish(Float64MultiArray(data=[0.01]))
    assert spin(ex, lambda: sim.commands['rejected'] == 1)
    future = peer.reset.call_async(Trigger.Request())
    assert spin(ex, lambda: future.done() and len(goals) == 2)
    assert json.loads(future.result().message) == {'seed': 22}
    p = goals[1].pose.position
    assert np.allclose([p.x, p.y, p.z], second, atol=1e-12)
    sim.close()
    sim.destroy_node()


def test_lockstep_reset_publishes_the_new_scene_at_the_reset_and_holds(ros_context):
    """In lockstep the first frame, joint state and wrench of a new scene carry the reset's
    own stamp, before any physics step: the arm's enable has that stamp too, so the first
    step acts one period later, every episode (it was one physics step after the reset, and
    the episode's first step depended on which came first)."""
    from geometry_msgs.msg import WrenchStamped
    from std_srvs.srv import Trigger
    from test_sim_node import setup, spin

    from awopt_ros.ros import convert, qos
    sim, peer, ex = setup(ros_context, scene='insertion', seed=21, physics_dt_s=0.001,
                          image_width=160, image_height=120, lockstep=True,
                          publish_clock=True, lockstep_timeout_s=0.05,
                          joint_names=list(sawyer.ARM_JOINTS))
    wrenches = []
    peer.node.create_subscription(WrenchStamped, WRENCH, wrenches.append, qos.SENSOR)
    assert spin(ex, lambda: len(peer.infos) >= 3)
    future = peer.reset.call_async(Trigger.Request())
    assert spin(ex, future.done)
    reset_s = sim.reset_stamp_s
    assert spin(ex, lambda: any(convert.stamp_to_s(i.header.stamp) > reset_s + 0.05
                                for i in peer.infos))
    # (the old scene's last frame, held at the reset, has the reset's stamp too)
    after = sorted({convert.stamp_to_s(i.header.stamp) for i in peer.infos
                    if convert.stamp_to_s(i.header.stamp) >= reset_s - 1e-9})
    assert after[0] == pytest.approx(reset_s, abs=1e-9)          # the new scene at once
    assert after[1] == pytest.approx(reset_s + 0.1, abs=1e-6)    # then one period later
    assert any(convert.stamp_to_s(w.header.stamp) == pytest.approx(reset_s, abs=1e-9)
               for w in wrenches)
    sim.close()
    sim.destroy_node()


# -- arm interface in process: an action waits for the joint state of its instant ------------
@pytest.mark.parametrize('sync_s', [0.005, 0.0])
def test_arm_interface_acts_from_the_joint_state_of_the_actions_instant(ros_context, sync_s):
    """With joint_state_sync_s an action newer than the arm's newest joint state waits for
    the joint state of its instant, and its IK step starts from those joints (in lockstep
    that joint state can arrive after the action computed from it; the step then started from
    the joints of 10 ms before, and episodes left the in-process environment's). 0 (the
    grasp bringups): the action acts at once from the newest joints, as before."""
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from test_arm_interface_node import Harness

    from awopt_ros.core.arm import arm_command
    from awopt_ros.core.robot import HOME_Q
    from awopt_ros.ros import convert
    h = Harness(ros_context, [Parameter('joint_state_sync_s', value=sync_s)])
    try:
        h.enable(True)
        h.feed_joints = False
        now_s = h.peer.get_clock().now().nanoseconds * 1e-9

        def joints(q, stamp_s):
            msg = JointState(name=[*h.joint_names, h.gripper_joint],
                             position=[*np.asarray(q).tolist(), 0.0])
            msg.header.stamp = convert.s_to_stamp(stamp_s)
            h.js_pub.publish(msg)
        old_q, new_q = HOME_Q.copy(), HOME_Q + np.array([0.02, 0, 0, 0, 0, 0, 0])
        joints(old_q, now_s - 0.01)
        assert h.spin_until(lambda: np.allclose(h.arm._q_meas, old_q), 2.0)
        sent = len(h.got['traj'])
        action = np.array([0.01, 0.0, -0.01, 0.0, 0.0, 0.0, 0.0])
        h.action_pub.publish(convert.action_to_msg(action, convert.s_to_stamp(now_s)))
        if sync_s > 0.0:
            assert h.spin_until(
                lambda: h.arm.counts()['deferred_for_joint_state'] == 1, 2.0)
            assert len(h.got['traj']) == sent           # waits for its joint state
            joints(new_q, now_s)
            base = new_q
        else:
            base = old_q
        assert h.spin_until(lambda: len(h.got['traj']) == sent + 1, 2.0)
        arm = h.arm
        expected = arm_command(arm._kin, base, action, arm._limits, arm._period_s, None,
                               arm._joint_safety).q_target
        assert np.allclose(h.got['traj'][-1].points[-1].positions, expected, atol=1e-9)
    finally:
        h.close()


# -- episode manager in process: a controller's fault fails the episode -----------------------
def test_fault_on_the_fault_topic_ends_the_episode_as_failed(ros_context):
    from std_msgs.msg import String
    from test_episode_manager_node import call, events_of, setup, spin

    from awopt_ros.ros import qos
    manager, cell, ex = setup(ros_context, fault_topic='/residual/fault')
    fault = cell.node.create_publisher(String, '/residual/fault', qos.COMMAND)
    call(ex, cell.start, cell)
    assert spin(ex, lambda: events_of(cell, 'start'), cell=cell)
    cell.send_action()
    fault.publish(String(data=json.dumps({'reason': 'force_limit', 'force_n': 55.0})))
    cell.send_action(terminate=1.0)     # the controller's terminate after its back-off
    assert spin(ex, lambda: events_of(cell, 'end'), cell=cell)
    end = events_of(cell, 'end')[0]
    assert end['outcome'] == 'failed' and end['truncated'] and not end['success']
    assert 'force_limit' in end['detail']
    # between episodes a fault changes nothing
    fault.publish(String(data='late'))
    spin(ex, lambda: False, timeout_s=0.2, cell=cell)
    assert len(events_of(cell, 'end')) == 1
    manager.destroy_node()


# -- the stack ----------------------------------------------------------------------------------
def _zero_residual_model(path):
    """Export an insertion state actor whose output layer is zero (residual 0 everywhere)."""
    from awopt_ros.core import residual
    from awopt_ros.learning.export import export_state_actor
    from awopt_ros.learning.networks import StateActor, StateActorConfig
    actor = StateActor('insertion', StateActorConfig(hidden=16, layers=1, zero_init_output=True))
    export_state_actor(actor, path, 'test', extra={'residual_alpha_m': 0.002,
                                                   'kp': list(residual.KP)})
    return path


def _in_process_p_controller(seeds):
    """Return {seed: (success, sim goal_observed (3,))} of the P-controller in process."""
    from awopt_ros.sim.insertion_env import InsertionResidualEnv
    env = InsertionResidualEnv(residual=False)
    out = {}
    try:
        for seed in seeds:
            env.reset(seed=seed)
            goal = env.sim.goal_observed().copy()
            for _ in range(env.max_steps):
                _, _, terminated, truncated, info = env.step(np.zeros(3))
                if terminated or truncated:
                    break
            out[seed] = (bool(info['success']), goal)
    finally:
        env.sim.close()
    return out


def _bag_messages(bag, topic, cls):
    from rclpy.serialization import deserialize_message

    from awopt_ros.core.bag import read_messages
    return [deserialize_message(data, cls) for t, _, _, data in read_messages(bag) if t == topic]


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    from awopt_ros.cli import main
    out = tmp_path_factory.mktemp('insertion_stack')
    model = _zero_residual_model(out / 'zero_residual.onnx')
    code = main(['demo', '--task', 'insertion', '--episodes', str(EPISODES),
                 '--seed', str(BASE_SEED), '--run-dir', str(out / 'run'), '--model', str(model),
                 # a loaded host must not turn a held step into one without its action (longer:
                 # between episodes the camera would go silent for the episode manager)
                 '--set', 'sim_robot:lockstep_timeout_s=1.0'])
    report = json.loads((out / 'run' / 'report.json').read_text())
    return code, report, out / 'run'


def test_p_controller_and_residual_meet_the_same_scenes_as_in_process(demo):
    code, report, _ = demo
    assert code == 0, report['errors']
    seeds = [BASE_SEED + k for k in range(1, EPISODES + 1)]
    assert report['same_seeds'] is True and report['seeds'] == seeds
    expected = _in_process_p_controller(seeds)
    for name in ('p_controller', 'residual'):
        run = report['runs'][name]
        assert run['episodes'] == EPISODES and run['frames_lost'] == 0, run['warnings']
        ok = [e['success'] for e in run['episode_results']]
        assert ok == [expected[s][0] for s in seeds], (name, run['outcomes'])
        # lockstep: the controller acts on the state of each step's start
        assert run['frame_to_command_ms_p99'] == pytest.approx(0.0, abs=1e-6)
    # a zero residual changes nothing
    assert report['residual_minus_p_controller'] == 0.0


def test_each_step_is_the_in_process_environments(demo):
    """Lockstep makes the stack's steps the environment's: the state the P-controller saw at
    every step of every episode (its decisions, in the bags) and the arm command it led to
    equal the in-process ones after the same reset (the reset's frame, stamped at the arm's
    enable, is no step). (A learned residual amplifies the 1e-16 m differences of the two
    forward kinematics once the peg jams; its outcomes still agree.)"""
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from awopt_ros.sim.insertion_env import InsertionResidualEnv
    _, report, _ = demo
    run = report['runs']['p_controller']
    env = InsertionResidualEnv(residual=False)
    try:
        for k, (seed, bag) in enumerate(zip(run['seeds'], run['bags'])):
            events = [json.loads(m.data) for m in _bag_messages(bag, '/episode/event', String)]
            start_s = next(e['stamp_s'] for e in events
                           if e['event'] == 'start' and e['episode'] == k + 1)

            def after_start(stamp):
                return stamp.sec + stamp.nanosec * 1e-9 > start_s + 1e-6
            seen = [json.loads(m.data) for m in _bag_messages(bag, '/policy/decision', String)]
            seen = [d for d in seen if d['phase'] == 'control'
                    and after_start(convert_stamp(d['stamp']))]
            commands = [m for m in _bag_messages(bag, '/arm_controller/joint_trajectory',
                                                 JointTrajectory) if after_start(m.header.stamp)]
            obs, _ = env.reset(seed=seed)
            steps = run['episode_results'][k]['steps']
            assert len(seen) >= steps and len(commands) >= steps
            for t in range(steps):
                np.testing.assert_allclose(seen[t]['observation'], obs, atol=2e-5,
                                           err_msg=f'scene {seed} step {t}')
                obs, _, terminated, truncated, _ = env.step(np.zeros(3))
                # The last action of an episode races the episode's end: the episode manager
                # disables the arm once it has counted that step, and the arm may hold
                # instead of applying it (seen under load: scene 1004, step 49 of 50).
                if t < steps - 1:
                    np.testing.assert_allclose(commands[t].points[-1].positions,
                                               env.sim.arm_target(), atol=1e-6,
                                               err_msg=f'scene {seed} step {t}')
                if terminated or truncated:
                    break
    finally:
        env.sim.close()


def convert_stamp(stamp):
    """A decision's JSON stamp {sec, nanosec} as a builtin_interfaces Time."""
    from builtin_interfaces.msg import Time
    return Time(sec=int(stamp['sec']), nanosec=int(stamp['nanosec']))


def test_bags_hold_the_wrench_and_the_scenes_noisy_goal(demo):
    from geometry_msgs.msg import PoseStamped, WrenchStamped
    _, report, _ = demo
    run = report['runs']['p_controller']
    expected = _in_process_p_controller(report['seeds'])
    for seed, bag in zip(report['seeds'], run['bags']):
        wrenches = _bag_messages(bag, WRENCH, WrenchStamped)
        steps = next(e for e in run['episode_results'] if e['episode'] == run['seeds'].index(
            seed) + 1)['steps']
        assert len(wrenches) >= steps and {w.header.frame_id for w in wrenches} == {'tcp'}
        # the episode's goal, and only it (not the next reset's, published while the bag
        # closes)
        goals = _bag_messages(bag, GOAL, PoseStamped)
        assert goals and {g.header.frame_id for g in goals} == {'base_link'}
        for g in goals:
            p = g.pose.position
            assert np.allclose([p.x, p.y, p.z], expected[seed][1], atol=1e-9), seed


def test_residual_run_acts_through_its_model(demo):
    from std_msgs.msg import String
    _, report, run_dir = demo
    bag = report['runs']['residual']['bags'][0]
    decisions = [json.loads(m.data) for m in _bag_messages(bag, '/policy/decision', String)]
    assert decisions and {d['source'] for d in decisions} == {'residual'}
    assert all(d['residual'] == [0.0, 0.0, 0.0] for d in decisions)
    assert Path(run_dir / 'p_controller' / 'report.json').is_file()


def test_each_run_appends_its_episodes_to_an_insertion_dataset(demo):
    from awopt_ros.core.dataset import POLICY_IDS, load_episodes
    _, report, run_dir = demo
    for name, source in (('p_controller', 'p_controller'), ('residual', 'residual')):
        run = report['runs'][name]
        assert run['dataset']['id'] == 'awopt/sawyer-insertion-v0'
        eps = load_episodes(run_dir / name, run['dataset']['id'])
        assert [e['seed'] for e in eps] == report['seeds']
        for ep, end in zip(eps, run['episode_results']):
            steps = end['steps']
            assert ep['actions'].shape == (steps, 3) and ep['state'].shape == (steps + 1, 15)
            assert ep['rewards'][-1] == (1.0 if end['success'] else 0.0)
            assert np.all(ep['actions'] == 0.0)          # off, or a zero residual
            assert np.all(ep['policy'] == POLICY_IDS[source])
            # the state starts 3-5 cm above the observed goal's insertion depth + bore depth
            assert 0.03 < ep['state'][0, 2] < 0.08


def test_force_above_the_limit_fails_the_episode_through_the_stack(tmp_path):
    """The residual controller's fault reaches the episode manager across processes: with a
    3 N limit the first contact ends the episode as failed, and the bag holds the fault."""
    from std_msgs.msg import String

    from awopt_ros.ros.runner import run_episodes
    report = run_episodes(1, config=CONFIG, policy='residual', run_dir=tmp_path, seed=BASE_SEED,
                          lockstep=True, out=lambda *a: None,
                          extra_overrides={'residual_controller': {'residual': 'off',
                                                                   'force_limit_n': 3.0},
                                           'sim_robot': {'lockstep_timeout_s': 1.0}})
    assert report['error'] is None
    end = report['episode_results'][0]
    assert end['outcome'] == 'failed' and 'force_limit' in end['detail'], end
    faults = [json.loads(m.data) for m in _bag_messages(report['bags'][0], '/residual/fault',
                                                        String)]
    assert len(faults) == 1 and faults[0]['force_n'] > 3.0
