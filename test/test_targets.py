"""Camera projection (core.camera), hindsight grasp targets (learning.targets) and the actor's
'target' pooling trained with them (learning.bc): ROS-free, seconds."""
import argparse
import json

import numpy as np
import pytest
import torch

from awopt_ros.core import spec
from awopt_ros.core.camera import PinholeCamera
from awopt_ros.core.onnx_policy import OnnxActor, expected_contract
from awopt_ros.learning.bc import BCConfig, bc_loss, train_bc
from awopt_ros.learning.export import export_actor
from awopt_ros.learning.networks import (GRASP_POS_OFFSET_M, GRASP_POS_SCALE_M, GRASP_POSE_DIM,
                                         Actor, ActorConfig)
from awopt_ros.learning.targets import (commanded_closed, episode_labels, expert_action_arrays,
                                        expert_actions, expert_label_count, grasp_pose_targets,
                                        grasp_targets, miss_mask, recorded_goal,
                                        recorded_noise_free_action, reopen_actions,
                                        target_arrays)

CROP = (80, 0, 480, 480)


def test_look_at_camera_projects_target_to_centre_and_axes_right_down():
    cam = PinholeCamera.look_at((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), 90.0, 640, 480,
                                up=(0.0, 1.0, 0.0))
    np.testing.assert_allclose(cam.project([0.0, 0.0, 0.0]), [[320.0, 240.0]], atol=1e-9)
    # fy = 240 / tan(45 deg) = 240 px; a point 0.5 m off-axis at 1 m depth is 120 px off.
    # Looking down -z with base y up in the image, base x is image right.
    np.testing.assert_allclose(cam.project([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]),
                               [[440.0, 240.0], [320.0, 120.0]], atol=1e-9)
    uv = cam.to_policy_image([[0.0, 0.0, 0.0]], (80, 0, 480, 480))
    np.testing.assert_allclose(uv, [[0.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match='behind'):
        cam.project([0.0, 0.0, 2.0])
    with pytest.raises(ValueError, match='parallel'):
        PinholeCamera.look_at((0, 0, 1), (0, 0, 0), 60.0, 64, 64)
    with pytest.raises(ValueError, match='fovy'):
        PinholeCamera.look_at((0, 0, 1), (1, 0, 0), 180.0, 64, 64)


def test_shoulder_camera_matches_mujoco_camera_and_rendered_object():
    """The model agrees with MuJoCo's own camera pose and puts an object where it renders."""
    import mujoco

    from awopt_ros.core.paths import resolve
    from awopt_ros.sim.scene import CAMERA_NAME, GraspSim, shoulder_camera
    sim = GraspSim(resolve('urdf/iiwa14_gripper.urdf'), num_objects=1)
    try:
        sim.reset(3)
        cam = shoulder_camera(640, 480)
        cid = sim.model.camera(CAMERA_NAME).id
        np.testing.assert_allclose(cam.position_m, sim.data.cam_xpos[cid], atol=1e-6)
        # MuJoCo camera axes: x right, y up, z backward; the optical frame is x, -y, -z.
        xmat = sim.data.cam_xmat[cid].reshape(3, 3)
        np.testing.assert_allclose(cam.rotation, xmat * [1.0, -1.0, -1.0], atol=1e-6)
        np.testing.assert_allclose(cam.K, sim.camera_matrix(), atol=1e-9)
        frame = sim.render()
        obj = sim.object_poses()[0, :3]
        u, v = cam.project(obj)[0]
        seg = mujoco.Renderer(sim.model, height=480, width=640)
        seg.enable_segmentation_rendering()
        seg.update_scene(sim.data, camera=cid)
        ids = seg.render()[..., 0]
        seg.close()
        geom = sim.model.body_geomadr[sim.model.body(sim.objects[0]['name']).id]
        assert ids[int(v), int(u)] == geom, 'projected object centre is not on the object'
        assert frame.shape == (480, 640, 3)
    finally:
        sim.close()


def _episode(steps, close_at, success=True, image_size=16):
    proprio = np.zeros((steps + 1, spec.PROPRIO_DIM), np.float32)
    proprio[:, 0] = 0.6 + 0.01 * np.arange(steps + 1)
    proprio[:, 2] = 0.05
    actions = np.zeros((steps, spec.ACTION_DIM), np.float32)
    if close_at is not None:
        actions[close_at:, spec.IDX_CLOSE] = 1.0
    rewards = np.zeros(steps)
    rewards[-1] = float(success)
    return {'observations': {'image': np.zeros((steps + 1, image_size, image_size, 3),
                                               np.uint8), 'proprio': proprio},
            'actions': actions, 'rewards': rewards}


def test_grasp_targets_label_the_close_point_up_to_the_close():
    from awopt_ros.sim.scene import shoulder_camera
    cam = shoulder_camera()
    ep = _episode(10, close_at=6)
    xy, mask = grasp_targets(ep, cam, CROP)
    expected = cam.to_policy_image([0.66, 0.0, 0.05], CROP)[0]
    np.testing.assert_allclose(xy, np.tile(expected, (10, 1)), atol=1e-6)
    assert mask.tolist() == [True] * 7 + [False] * 3
    assert np.all(np.abs(expected) < 1.0)            # the bin is in the policy crop
    xy0, mask0 = grasp_targets(_episode(5, close_at=None), cam, CROP)
    assert not mask0.any() and not xy0.any()
    eps = [_episode(4, 2), _episode(3, 1, success=False), _episode(5, 3)]
    all_xy, all_mask = target_arrays(eps, cam, CROP)
    assert all_xy.shape == (9, 2) and all_mask.sum() == 3 + 4
    assert target_arrays(eps, cam, CROP, successful_only=False)[1].shape == (12,)


def blob_pairs(n, size=24, seed=0):
    """Two blobs per image, a red target and a green distractor; action = target position.

    Regression without the target label averages nothing here (the colour says which), but
    the score map must learn to find the red blob from the labels.
    """
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 3), 40, np.uint8)
    xy = np.zeros((n, 2), np.float32)
    for i in range(n):
        r, c = rng.integers(0, size - 3, 2)
        images[i, r:r + 3, c:c + 3] = (230, 30, 30)
        r2, c2 = rng.integers(0, size - 3, 2)
        images[i, r2:r2 + 3, c2:c2 + 3] = (30, 230, 30)
        images[i, r:r + 3, c:c + 3] = (230, 30, 30)
        xy[i] = ((c + 1.5) / size * 2 - 1, (r + 1.5) / size * 2 - 1)
    actions = np.zeros((n, 7), np.float32)
    actions[:, 0] = 0.03 * xy[:, 0]
    actions[:, 1] = -0.03 * xy[:, 1]
    actions[:, spec.IDX_OPEN] = 1.0
    proprios = np.zeros((n, 6), np.float32)
    return images, proprios, actions, xy


def target_config(steps, **kw):
    return BCConfig(steps=steps, batch_size=64, lr=3e-3, eval_every=50, shift_px=0,
                    holdout_fraction=0.15,
                    actor=ActorConfig(image_size=24, channels=16, num_conv=4, hidden=64,
                                      pooling='target'), **kw)


def test_target_pooling_learns_the_labelled_blob_and_exports(tmp_path):
    torch.manual_seed(0)
    images, proprios, actions, xy = blob_pairs(600)
    mask = np.ones(len(xy), bool)
    actor, hist = train_bc(images, proprios, actions, target_config(400), progress=False,
                           targets=(xy, mask))
    assert 'target' in hist['heldout_parts']
    test_img, test_pro, test_act, test_xy = blob_pairs(200, seed=1)
    with torch.no_grad():
        scores, _ = actor.target_maps(torch.from_numpy(test_img))
        best = actor.target_grid[scores.argmax(-1)].numpy()
    cell = 2.0 / actor.map_side
    assert np.mean(np.abs(best - test_xy).max(1) <= 1.5 * cell) > 0.9
    path = tmp_path / 'target.onnx'
    result = export_actor(actor, path, CROP)
    assert set(result['parity']) == {1, 64}
    pred = OnnxActor(path, expected_contract(24, CROP)).act(test_img, test_pro)
    err = np.abs(pred[:, :2] - test_act[:, :2])
    # a constant predictor has mean error ~0.015 m
    assert err.mean() < 0.005, err.mean()


def test_target_pooling_needs_labels_and_no_shift():
    images, proprios, actions, xy = blob_pairs(20)
    mask = np.ones(20, bool)
    with pytest.raises(ValueError, match='needs targets'):
        train_bc(images, proprios, actions, target_config(2), progress=False)
    with pytest.raises(ValueError, match='targets must be'):
        train_bc(images, proprios, actions, target_config(2), progress=False,
                 targets=(xy[:5], mask[:5]))
    with pytest.raises(ValueError, match="need an actor with pooling 'target'"):
        train_bc(images, proprios, actions, BCConfig(
            steps=2, actor=ActorConfig(image_size=24, channels=4, num_conv=2, hidden=8)),
            progress=False, targets=(xy, mask))
    with pytest.raises(ValueError, match='shift_px must be 0'):
        BCConfig(shift_px=2, actor=ActorConfig(pooling='target'))
    with pytest.raises(ValueError, match='pose_weight'):
        BCConfig(pose_weight=-1.0)
    from awopt_ros.learning.awopt import LearnerConfig
    assert LearnerConfig(actor={'pooling': 'target'}).grasp_target     # labels from the buffer
    with pytest.raises(ValueError, match='pose_weight'):
        LearnerConfig(pose_weight=-1.0)


def test_target_loss_only_counts_masked_steps_and_teacher_forcing_moves_window():
    torch.manual_seed(0)
    actor = Actor(ActorConfig(image_size=16, channels=4, num_conv=3, hidden=8,
                              pooling='target'))
    images, proprios, actions, xy = blob_pairs(4, size=16)
    t = [torch.from_numpy(a) for a in (images, proprios, actions)]
    far = torch.full((4, 2), 0.9)
    none = torch.zeros(4, dtype=torch.bool)
    _, parts = bc_loss(actor, *t, (1.0,) * 7, (far, none))
    assert parts['target'] == 0.0
    some = torch.tensor([True, False, False, False])
    _, p1 = bc_loss(actor, *t, (1.0,) * 7, (torch.from_numpy(xy), some))
    assert p1['target'] > 0.0
    a = actor.normalised(t[0], t[1], target_xy=torch.full((4, 2), -0.9))
    b = actor.normalised(t[0], t[1], target_xy=torch.full((4, 2), 0.9))
    assert not torch.allclose(a[0], b[0])
    # without a label the window sits on the best-scoring cell
    with torch.no_grad():
        scores, _ = actor.target_maps(t[0])
        best = actor.target_grid[scores.argmax(-1)]
        np.testing.assert_allclose(actor.normalised(t[0], t[1])[0],
                                   actor.normalised(t[0], t[1], target_xy=best)[0])


def test_train_cli_pooling_target_labels_with_the_sim_camera(tmp_path, monkeypatch, capsys):
    from test_bc import SIZE, _episode, _write_minari

    from awopt_ros.learning.train_cli import add_train_args, run_train
    eps = [_episode(30, True, 0), _episode(20, False, 1), _episode(25, True, 2)]
    dataset_id = 'awopt/kuka-grasp/target-v0'
    _write_minari(tmp_path, dataset_id, eps, monkeypatch)
    monkeypatch.delenv('MINARI_DATASETS_PATH')
    out = tmp_path / 'm.onnx'
    base = ['--dataset-root', str(tmp_path), '--dataset-id', dataset_id, '--out', str(out),
            '--steps', '20', '--batch-size', '16', '--channels', '4', '--hidden', '16',
            '--eval-every', '10', '--no-progress', '--pooling', 'target', '--num-conv', '3',
            '--force']
    parser = add_train_args(argparse.ArgumentParser())
    assert run_train(parser.parse_args(base + ['--lr-schedule', 'cosine'])) == 0
    summary = json.loads((tmp_path / 'm_summary.json').read_text())
    assert summary['config']['actor']['pooling'] == 'target'
    assert summary['config']['shift_px'] == 0 and summary['config']['lr_schedule'] == 'cosine'
    assert 'target' in summary['history']['heldout_parts']
    assert 'grasp-target labels on' in capsys.readouterr().out
    OnnxActor(out, expected_contract(SIZE, CROP))         # contract accepted
    import onnxruntime as ort
    card = ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map['model_card']
    assert "pooling 'target'" in card
    assert run_train(parser.parse_args(base + ['--shift-px', '2'])) == 2
    assert 'shift_px must be 0' in capsys.readouterr().err
    assert run_train(parser.parse_args(base + ['--max-episodes', '1'])) == 0
    summary = json.loads((tmp_path / 'm_summary.json').read_text())
    assert summary['data']['episodes'] == 1 and summary['data']['transitions'] == 30
    with pytest.raises(SystemExit) as exited:            # a count below 1: a usage error
        parser.parse_args(base + ['--max-episodes', '0'])
    assert exited.value.code == 2
    assert run_train(parser.parse_args(base + ['--grasp-pose', '--stem-stride', '3'])) == 0
    summary = json.loads((tmp_path / 'm_summary.json').read_text())
    assert summary['config']['actor']['grasp_pose'] is True
    assert summary['config']['actor']['stem_stride'] == 3
    assert 'pose' in summary['history']['heldout_parts']
    OnnxActor(out, expected_contract(SIZE, CROP))
    # expert labels need the demonstrator's recorded goals: none in this dataset
    assert run_train(parser.parse_args(base + ['--grasp-pose', '--grasp-label', 'expert'])) == 2
    assert 'no episode recorded a grasp_goal' in capsys.readouterr().err
    for ep in eps:
        ep['infos'] = {'grasp_goal': np.tile(np.float32([0.6, 0.0, 0.03, 0.2]),
                                             (len(ep['actions']) + 1, 1))}
        ep['actions'][5:, spec.IDX_CLOSE] = 1.0
    _write_minari(tmp_path, 'awopt/kuka-grasp/goals-v0', eps, monkeypatch)
    monkeypatch.delenv('MINARI_DATASETS_PATH')
    with_goals = base + ['--grasp-pose', '--grasp-label', 'expert', '--dataset-id',
                         'awopt/kuka-grasp/goals-v0']
    assert run_train(parser.parse_args(with_goals)) == 0
    assert 'expert grasp labels: 2 of 2 episodes' in capsys.readouterr().out
    assert json.loads((tmp_path / 'm_summary.json').read_text())['grasp_label'] == 'expert'
    assert run_train(parser.parse_args(with_goals + ['--action-label', 'expert'])) == 0
    assert 'expert action labels: x, y of 55 of 55 transitions' in capsys.readouterr().out
    assert json.loads((tmp_path / 'm_summary.json').read_text())['action_label'] == 'expert'
    assert run_train(parser.parse_args(base + ['--action-label', 'expert'])) == 2
    assert 'argument --action-label: expert: no episode recorded' in capsys.readouterr().err


def test_grasp_pose_labels_are_the_tool_pose_at_the_close():
    ep = _episode(8, close_at=5)
    yaw = np.linspace(0.0, 1.4, 9)
    pro = ep['observations']['proprio']
    pro[:, 3], pro[:, 4] = np.sin(yaw), np.cos(yaw)
    pro[:, 2] = np.linspace(0.2, 0.04, 9)
    pose = grasp_pose_targets(ep)
    pos = (pro[5, :3] - np.array(GRASP_POS_OFFSET_M)) / np.array(GRASP_POS_SCALE_M)
    expected = np.concatenate([pos, [np.cos(2 * yaw[5]), np.sin(2 * yaw[5])]])
    np.testing.assert_allclose(pose, np.tile(expected, (8, 1)), atol=1e-5)
    assert not grasp_pose_targets(_episode(4, close_at=None)).any()
    from awopt_ros.sim.scene import shoulder_camera
    eps = [_episode(4, 2), _episode(3, 1, success=False), _episode(5, 3)]
    xy, mask, poses = target_arrays(eps, shoulder_camera(), CROP, with_pose=True)
    assert poses.shape == (9, GRASP_POSE_DIM) and xy.shape == (9, 2) and mask.shape == (9,)


def test_expert_labels_use_the_recorded_goal_at_the_close_else_hindsight():
    from awopt_ros.sim.scene import shoulder_camera
    cam = shoulder_camera()
    ep = _episode(8, close_at=5)
    goals = np.full((9, 4), np.nan, np.float32)
    goals[:, :] = [0.63, -0.02, 0.03, 0.4]
    goals[2] = [0.50, 0.10, 0.03, 0.0]           # an earlier goal (target re-chosen): unused
    ep['grasp_goal'] = goals                     # a loaded (Minari) episode's layout
    pose = grasp_pose_targets(ep, label='expert')
    pos = (np.array([0.63, -0.02, 0.03]) - GRASP_POS_OFFSET_M) / GRASP_POS_SCALE_M
    np.testing.assert_allclose(pose, np.tile(np.r_[pos, np.cos(0.8), np.sin(0.8)], (8, 1)),
                               atol=1e-5)
    xy, mask = grasp_targets(ep, cam, CROP, label='expert')
    np.testing.assert_allclose(xy[0], cam.to_policy_image([0.63, -0.02, 0.03], CROP)[0],
                               atol=1e-5)
    assert mask.tolist() == [True] * 6 + [False] * 2
    # hindsight ignores the goal; an in-process episode keeps it under infos
    np.testing.assert_allclose(grasp_pose_targets(ep), grasp_pose_targets(_episode(8, 5)))
    inproc = dict(_episode(8, close_at=5), infos={'grasp_goal': goals})
    np.testing.assert_allclose(grasp_pose_targets(inproc, label='expert'), pose)
    # no goal at the close step (NaN, none recorded, old dataset): the hindsight label
    nan = dict(_episode(8, close_at=5), grasp_goal=np.full((9, 4), np.nan, np.float32))
    assert recorded_goal(nan, 5) is None and recorded_goal(_episode(8, 5), 5) is None
    np.testing.assert_allclose(grasp_pose_targets(nan, label='expert'),
                               grasp_pose_targets(_episode(8, 5)))
    n_goal, n_close = expert_label_count([ep, nan, _episode(4, None), _episode(4, 2, False)])
    assert (n_goal, n_close) == (1, 2)
    _, _, poses = target_arrays([ep, nan], cam, CROP, with_pose=True, label='expert')
    np.testing.assert_allclose(poses[:8], pose)
    with pytest.raises(ValueError, match='label'):
        target_arrays([ep], cam, CROP, label='oracle')


def test_expert_actions_steer_to_the_goal_before_the_close_and_hold_xy_after():
    ep = _episode(8, close_at=5)
    ep['actions'][:, :4] = [0.004, -0.005, -0.02, 0.1]          # noisy logged commands
    goals = np.tile(np.float32([0.63, -0.02, 0.03, 0.4]), (9, 1))
    goals[1] = [0.70, 0.10, 0.03, 0.4]                          # far: clipped to the bounds
    goals[3] = np.nan                                           # not recorded: kept as logged
    ep['grasp_goal'] = goals
    actions, count = expert_actions(ep)
    tool_x = 0.6 + 0.01 * np.arange(8)                          # _episode's proprio x
    np.testing.assert_allclose(actions[[0, 2, 4], 0], 0.63 - tool_x[[0, 2, 4]], atol=1e-6)
    np.testing.assert_allclose(actions[[0, 2, 4], 1], -0.02, atol=1e-6)
    np.testing.assert_allclose(actions[1, :2], [0.03, 0.03])
    np.testing.assert_allclose(actions[3, :2], [0.004, -0.005])
    assert not actions[5:, :2].any() and count == 7
    np.testing.assert_array_equal(actions[:, 2:], ep['actions'][:, 2:])   # z, yaw, bits kept
    plain, n = expert_actions(_episode(8, close_at=5))                    # no goals recorded
    assert n == 0 and np.array_equal(plain, _episode(8, 5)['actions'])
    all_actions, n_all = expert_action_arrays([ep, _episode(3, 1, success=False), _episode(4, 2)])
    assert all_actions.shape == (12, spec.ACTION_DIM) and n_all == 7
    np.testing.assert_allclose(all_actions[:8], actions)
    empty, n_empty = expert_action_arrays([_episode(3, 1, success=False)])
    assert empty.shape == (0, spec.ACTION_DIM) and n_empty == 0


def test_hindsight_action_labels_steer_to_where_the_episode_closed():
    own = _episode(8, close_at=5)                                 # no goal recorded
    own['actions'][:, :4] = [0.004, -0.005, -0.02, 0.1]           # noisy logged commands
    own['observations']['proprio'][:, 1] = 0.01 * np.arange(9)   # tool y drifts
    actions, count = expert_actions(own, hindsight_goal=True)
    tool = own['observations']['proprio'][:8, :2].astype(np.float64)
    close_xy = tool[5]                                            # tool x, y at the first close
    np.testing.assert_allclose(actions[:5, :2], np.clip(close_xy - tool[:5], -0.03, 0.03),
                               atol=1e-6)
    assert np.allclose(actions[0, :2], 0.03) and np.allclose(actions[4, :2], 0.01)
    assert not actions[5:, :2].any() and count == 8
    np.testing.assert_array_equal(actions[:, 2:], own['actions'][:, 2:])
    with_goal = _episode(8, close_at=5)
    with_goal['grasp_goal'] = np.tile(np.float32([0.63, -0.02, 0.03, 0.4]), (9, 1))
    np.testing.assert_array_equal(expert_actions(with_goal, hindsight_goal=True)[0],
                                  expert_actions(with_goal)[0])   # a recorded goal wins
    never = _episode(6, close_at=None)
    assert expert_actions(never, hindsight_goal=True)[1] == 0     # no close: kept as logged
    labels = episode_labels(own, None, CROP, grasp_label=None, action_label='hindsight')
    np.testing.assert_array_equal(labels['actor_action'], actions)
    with pytest.raises(ValueError, match='action_label'):
        episode_labels(own, None, CROP, grasp_label=None, action_label='oracle')


def test_own_episodes_z_yaw_labels_are_the_recorded_noise_free_actions():
    """DART-style: where the actor's noise-free action was recorded (its own noisy steps), the
    hindsight labels take its z and yaw; x, y still steer to the close, the bits stay as
    executed, and steps without one (NaN: CEM, scripted) keep their logged z, yaw."""
    own = _episode(8, close_at=5)
    own['actions'][:, :4] = [0.004, -0.005, -0.02, 0.1]           # noisy logged commands
    clean = np.full((9, spec.ACTION_DIM), np.nan, np.float32)
    clean[:6] = [0.01, 0.01, -0.03, 0.05, 0.0, 0.0, 0.0]          # steps 6, 7: CEM (NaN)
    clean[5, spec.IDX_CLOSE] = 1.0
    own['noise_free_action'] = clean
    plain, _ = expert_actions(own, hindsight_goal=True)
    actions, _ = expert_actions(own, hindsight_goal=True, noise_free=True)
    np.testing.assert_allclose(actions[:6, 2:4], np.tile([-0.03, 0.05], (6, 1)), atol=1e-7)
    np.testing.assert_array_equal(actions[6:, 2:4], own['actions'][6:, 2:4])
    np.testing.assert_array_equal(actions[:, :2], plain[:, :2])
    np.testing.assert_array_equal(actions[:, 4:], own['actions'][:, 4:])
    assert recorded_noise_free_action(own, 6) is None
    inproc = dict(_episode(8, close_at=5), infos={'noise_free_action': clean})
    np.testing.assert_allclose(recorded_noise_free_action(inproc, 0), clean[0])
    labels = episode_labels(own, None, CROP, grasp_label=None, action_label='hindsight')
    np.testing.assert_array_equal(labels['actor_action'], actions)
    demo = episode_labels(own, None, CROP, grasp_label=None, action_label='expert')
    np.testing.assert_array_equal(demo['actor_action'][:, 2:4], own['actions'][:, 2:4])


def test_an_episode_that_missed_and_grasped_again_is_labelled_with_its_last_close():
    """A robot episode closes on nothing (steps 3-5), reopens, and grasps at step 8: the
    hindsight labels are the tool pose at step 8, and the approach x, y steers there."""
    from awopt_ros.sim.scene import shoulder_camera
    cam = shoulder_camera()
    ep = _episode(12, close_at=8)
    ep['actions'][3:6, spec.IDX_CLOSE] = 1.0                      # the miss
    ep['actions'][6:8, spec.IDX_OPEN] = 1.0                       # reopen
    ep['observations']['proprio'][:, 1] = 0.005 * np.arange(13)  # tool y drifts
    xy, mask = grasp_targets(ep, cam, CROP, label='hindsight')
    grasp = ep['observations']['proprio'][8, :3]
    np.testing.assert_allclose(xy[0], cam.to_policy_image(grasp, CROP)[0], atol=1e-6)
    assert mask.tolist() == [True] * 9 + [False] * 3
    pose = grasp_pose_targets(ep, label='hindsight')[0]
    np.testing.assert_allclose(pose[:3], (grasp - GRASP_POS_OFFSET_M) / GRASP_POS_SCALE_M,
                               atol=1e-6)
    actions, _ = expert_actions(ep, hindsight_goal=True)
    tool = ep['observations']['proprio'][:12, :2]
    np.testing.assert_allclose(actions[:8, :2], np.clip(tool[8] - tool[:8], -0.03, 0.03),
                               atol=1e-6)
    assert not actions[8:, :2].any()
    np.testing.assert_array_equal(actions[:, 2:], ep['actions'][:, 2:])   # bits as logged
    # The actor does not train on the miss (close on nothing, empty lift); the reopening
    # and the new approach stay.
    labels = episode_labels(ep, cam, CROP, action_label='hindsight')
    assert labels['actor_mask'].tolist() == [True] * 3 + [False] * 3 + [True] * 6
    np.testing.assert_array_equal(miss_mask(ep['actions']), labels['actor_mask'])
    # ... or ('reopen') trains on the miss relabelled: no close at step 3, then stop and open
    reopen = episode_labels(ep, cam, CROP, action_label='hindsight', miss_label='reopen')
    got = reopen['actor_action']
    assert reopen['actor_mask'].all()
    assert got[3, 4:].tolist() == [0.0, 0.0, 0.0]                 # not closing yet
    np.testing.assert_array_equal(got[3, :4], actions[3, :4])     # its motion kept
    assert got[4:6, 4:].tolist() == [[1.0, 0.0, 0.0]] * 2 and not got[4:6, 2:4].any()
    np.testing.assert_array_equal(got[4:6, :2], actions[4:6, :2])  # steer to the grasp
    np.testing.assert_array_equal(np.delete(got, [3, 4, 5], 0),
                                  np.delete(labels['actor_action'], [3, 4, 5], 0))
    assert not (commanded_closed(got)[:8]).any()                 # no close before the grasp
    one = _episode(8, close_at=5)                                 # one close: unchanged
    np.testing.assert_array_equal(reopen_actions(one['actions']), one['actions'])
    with pytest.raises(ValueError, match='miss_label'):
        episode_labels(ep, cam, CROP, action_label='hindsight', miss_label='drop')


def test_a_left_out_close_bit_does_not_split_the_grasp():
    """Sampled bits: a step with neither open nor close keeps the gripper closed (the arm
    holds the command), so the grasp close stays the first close and nothing is a miss;
    an open bit with the close bit set is no reopening either (close wins on a held
    object)."""
    ep = _episode(10, close_at=4)
    ep['observations']['proprio'][5:, 5] = 0.4                   # fingers stopped on it
    ep['actions'][6, spec.IDX_CLOSE] = 0.0                       # neither bit: hold
    ep['actions'][8, spec.IDX_OPEN] = 1.0                        # open and close: close wins
    assert miss_mask(ep['actions']).all()
    pose = grasp_pose_targets(ep, label='hindsight')
    grasp = ep['observations']['proprio'][4, :3]
    np.testing.assert_allclose(pose[0, :3], (grasp - GRASP_POS_OFFSET_M) / GRASP_POS_SCALE_M,
                               atol=1e-6)
    ep['actions'][6, spec.IDX_OPEN] = 1.0                        # a real reopening at step 6
    assert miss_mask(ep['actions']).tolist() == [True] * 4 + [False] * 2 + [True] * 4


def test_conflicting_bits_on_an_empty_gripper_reopen_in_the_labels_as_on_the_arm():
    """Open and close set together on a gripper closed on nothing (closedness >= 0.95) is a
    reopening, as ``core.arm.gripper_target`` executes it (closing only on a held object):
    the first close was a miss, the grasp close is the later one, and the miss's steps are
    masked out of the actor's batch."""
    from awopt_ros.sim.scene import shoulder_camera
    ep = _episode(12, close_at=3)
    ep['actions'][6:8, spec.IDX_OPEN] = 1.0            # both bits: the actor is torn
    ep['actions'][8, spec.IDX_CLOSE] = 0.0             # neither: lowered with the gripper open
    ep['observations']['proprio'][4:8, 5] = 1.0        # closed on nothing after the close
    closedness = ep['observations']['proprio'][:12, 5]
    assert commanded_closed(ep['actions']).tolist() == [False] * 3 + [True] * 9
    assert commanded_closed(ep['actions'], closedness).tolist() == \
        [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3
    assert miss_mask(ep['actions'], closedness).tolist() == \
        [True] * 3 + [False] * 3 + [True] * 6
    labels = episode_labels(ep, shoulder_camera(), CROP, action_label='hindsight')
    np.testing.assert_array_equal(labels['actor_mask'], miss_mask(ep['actions'], closedness))
    grasp = ep['observations']['proprio'][9, :3]
    pose = grasp_pose_targets(ep, label='hindsight')[0]
    np.testing.assert_allclose(pose[:3], (grasp - GRASP_POS_OFFSET_M) / GRASP_POS_SCALE_M,
                               atol=1e-6)
    ep['observations']['proprio'][4:8, 5] = 0.4        # holding something: close wins
    assert miss_mask(ep['actions'], ep['observations']['proprio'][:12, 5]).all()


def test_grasp_pose_inputs_are_relative_to_the_tool_and_symmetric_under_a_half_turn():
    """A parallel gripper at yaw and yaw + 180 deg is the same grasp: same MLP inputs."""
    torch.manual_seed(0)
    actor = Actor(ActorConfig(image_size=16, channels=4, num_conv=3, hidden=8,
                              pooling='target', grasp_pose=True))
    feats = torch.randn(5, 2 + 4)
    proprio = torch.zeros(5, 6)
    proprio[:, :3] = torch.tensor([0.55, 0.05, 0.1])
    yaw = torch.linspace(-1.0, 1.0, 5)
    proprio[:, 3], proprio[:, 4] = torch.sin(yaw), torch.cos(yaw)
    turned = proprio.clone()
    turned[:, 3], turned[:, 4] = torch.sin(yaw + np.pi), torch.cos(yaw + np.pi)
    with torch.no_grad():
        a = actor._pose_inputs(feats, proprio)
        b = actor._pose_inputs(feats, turned)
        pose = actor.grasp_pose(feats)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # relative doubled yaw: the angle of (cos, sin) minus twice the tool yaw
    rel = torch.atan2(a[:, 4], a[:, 3])
    expected = torch.atan2(pose[:, 4], pose[:, 3]) - 2 * yaw
    torch.testing.assert_close(torch.cos(rel), torch.cos(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.sin(rel), torch.sin(expected), atol=1e-5, rtol=0)
    # position: predicted minus the tool's, in GRASP_POS_SCALE_M units
    tool_raw = (torch.tensor([0.55, 0.05, 0.1]) - torch.tensor(GRASP_POS_OFFSET_M)) / \
        torch.tensor(GRASP_POS_SCALE_M)
    torch.testing.assert_close(a[:, :3], pose[:, :3] - tool_raw)
    torch.testing.assert_close(a[:, 5:], pose)
    with pytest.raises(ValueError, match="grasp_pose needs pooling 'target'"):
        ActorConfig(grasp_pose=True)
    with pytest.raises(ValueError, match='grasp_pose needs an actor'):
        Actor(ActorConfig(image_size=16, channels=4, num_conv=3, pooling='target')).grasp_pose(
            feats)


def test_grasp_pose_head_learns_the_labelled_pose_and_exports(tmp_path):
    """The blob's position gives x, y; its blue channel codes height and yaw."""
    torch.manual_seed(0)
    images, proprios, actions, xy = blob_pairs(600)
    rng = np.random.default_rng(0)
    level = rng.uniform(0, 1, 600)
    for i in range(600):
        c, r = ((xy[i] + 1) / 2 * 24 - 1.5).round().astype(int)
        images[i, r:r + 3, c:c + 3, 2] = int(40 + 200 * level[i])
    pose = np.stack([xy[:, 0], -xy[:, 1], 2 * level - 1, np.cos(3 * level), np.sin(3 * level)],
                    1).astype(np.float32)
    mask = np.ones(600, bool)
    config = target_config(400)
    config.actor = ActorConfig(image_size=24, channels=16, num_conv=4, hidden=64,
                               pooling='target', grasp_pose=True)
    with pytest.raises(ValueError, match='pose labels'):
        train_bc(images, proprios, actions, config, progress=False, targets=(xy, mask))
    actor, hist = train_bc(images, proprios, actions, config, progress=False,
                           targets=(xy, mask, pose))
    # a constant predictor's error is about 2 * var(x) + var(2u - 1) + 2 * ~0.5 = 1.9
    assert hist['heldout_parts']['pose'] < 0.2, hist['heldout_parts']
    result = export_actor(actor, tmp_path / 'pose.onnx', CROP)
    assert set(result['parity']) == {1, 64}


def test_episode_labels_for_the_replay_buffer():
    from awopt_ros.sim.scene import shoulder_camera
    cam = shoulder_camera()
    ep = _episode(8, close_at=5)
    ep['grasp_goal'] = np.tile(np.float32([0.63, -0.02, 0.03, 0.4]), (9, 1))
    labels = episode_labels(ep, cam, CROP, 'expert', with_pose=True, action_label='expert')
    assert sorted(labels) == ['actor_action', 'actor_mask', 'target_mask', 'target_pose',
                              'target_xy']
    assert labels['actor_mask'].dtype == bool and labels['actor_mask'].all()   # one close
    xy, mask = grasp_targets(ep, cam, CROP, label='expert')
    np.testing.assert_array_equal(labels['target_xy'], xy)
    np.testing.assert_array_equal(labels['target_mask'], mask)
    np.testing.assert_array_equal(labels['target_pose'], grasp_pose_targets(ep, 'expert'))
    np.testing.assert_array_equal(labels['actor_action'], expert_actions(ep)[0])
    only_actions = episode_labels(ep, None, None, None, action_label='expert')
    assert sorted(only_actions) == ['actor_action', 'actor_mask']   # no grasp label asked
    np.testing.assert_array_equal(only_actions['actor_action'], labels['actor_action'])
    failed = episode_labels(_episode(4, None, success=False), cam, CROP)
    assert sorted(failed) == ['target_mask', 'target_xy'] and not failed['target_mask'].any()
    with pytest.raises(ValueError, match='action_label'):
        episode_labels(ep, cam, CROP, action_label='oracle')


def test_train_cli_awopt_preset_with_the_grasp_target_actor(tmp_path, monkeypatch, capsys):
    from test_bc import SIZE, _episode as bc_episode, _write_minari

    from awopt_ros.core.onnx_critic import OnnxCritic
    from awopt_ros.learning.train_cli import add_train_args, run_train
    eps = [bc_episode(30, True, 0), bc_episode(20, False, 1), bc_episode(25, True, 2)]
    for ep in eps:
        ep['infos'] = {'grasp_goal': np.tile(np.float32([0.6, 0.0, 0.03, 0.2]),
                                             (len(ep['actions']) + 1, 1))}
        ep['actions'][5:, spec.IDX_CLOSE] = 1.0
    dataset_id = 'awopt/kuka-grasp/awopt-target-v0'
    _write_minari(tmp_path, dataset_id, eps, monkeypatch)
    monkeypatch.delenv('MINARI_DATASETS_PATH')
    out = tmp_path / 'aw.onnx'
    args = ['--preset', 'awopt', '--dataset-root', str(tmp_path), '--dataset-id', dataset_id,
            '--out', str(out), '--steps', '6', '--batch-size', '8', '--channels', '4',
            '--hidden', '16', '--critic-channels', '4', '--critic-hidden', '8',
            '--eval-every', '2', '--no-progress', '--pooling', 'target', '--num-conv', '3',
            '--grasp-pose', '--pose-weight', '5', '--grasp-label', 'expert',
            '--action-label', 'expert', '--ema-decay', '0.9', '--engaged-input']
    parser = add_train_args(argparse.ArgumentParser())
    assert run_train(parser.parse_args(args)) == 0
    printed = capsys.readouterr().out
    assert ('actor labels: grasp point (expert), pose, expert x, y actions on 3 episodes'
            in printed)
    summary = json.loads((tmp_path / 'aw_summary.json').read_text())
    actor = summary['config']['actor']
    assert actor['pooling'] == 'target' and actor['grasp_pose'] and actor['engaged_input']
    assert actor['num_conv'] == 3 and summary['config']['actor_ema_decay'] == 0.9
    assert summary['config']['pose_weight'] == 5.0
    assert {'target_loss', 'pose_loss'} <= set(summary['history'])
    OnnxActor(out, expected_contract(SIZE, CROP))
    OnnxCritic(tmp_path / 'aw_critic_encoder.onnx', tmp_path / 'aw_critic_head.onnx',
               expected_contract(SIZE, CROP))
