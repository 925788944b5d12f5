"""Tests of behaviour cloning, data loading and the train CLI (tiny networks, seconds)."""
import argparse
import json

import numpy as np
import pytest
import torch

from awopt_ros.core import spec
from awopt_ros.core.onnx_policy import OnnxActor, expected_contract
from awopt_ros.learning.bc import (TASK1_WEIGHTS, BCConfig, bc_loss, random_shift,
                                   split_holdout, train_bc)
from awopt_ros.learning.data import bc_arrays, load_bc_data
from awopt_ros.learning.export import export_actor
from awopt_ros.learning.networks import Actor, ActorConfig

SIZE = 24
CROP = [80, 0, 480, 480]


def blob_dataset(n, size=SIZE, seed=0):
    """Images with a red 4x4 blob at a random place; action = function of the blob position.

    dx = 0.03 * u, dy = -0.03 * v (u, v the blob centre in [-1, 1]), dz = -0.01 + 0.01 * u,
    dyaw = 0.1 * v, close = 1 when the blob is in the left half, open = not close,
    terminate = 0.
    """
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 3), 40, np.uint8)
    actions = np.zeros((n, 7), np.float32)
    r = rng.integers(0, size - 4, (n, 2))
    for i, (row, col) in enumerate(r):
        images[i, row:row + 4, col:col + 4] = (230, 30, 30)
    u = (r[:, 1] + 2) / size * 2 - 1
    v = (r[:, 0] + 2) / size * 2 - 1
    actions[:, 0] = 0.03 * u
    actions[:, 1] = -0.03 * v
    actions[:, 2] = -0.01 + 0.01 * u
    actions[:, 3] = 0.1 * v
    actions[:, 5] = (u < 0).astype(np.float32)
    actions[:, 4] = 1.0 - actions[:, 5]
    proprios = rng.normal(0, 0.1, (n, 6)).astype(np.float32)
    return images, proprios, actions


def tiny_config(steps, **kw):
    return BCConfig(steps=steps, batch_size=64, lr=3e-3, eval_every=50, shift_px=1,
                    holdout_fraction=0.15,
                    actor=ActorConfig(image_size=SIZE, channels=8, num_conv=3, hidden=64), **kw)


def test_bc_learns_blob_and_onnx_predicts_it(tmp_path):
    images, proprios, actions = blob_dataset(600)
    actor, hist = train_bc(images, proprios, actions, tiny_config(400), progress=False)
    assert hist['step'][-1] == 400 and len(hist['heldout_loss']) == 8
    first, last = hist['heldout_loss'][0], hist['heldout_loss'][-1]
    assert last < 0.25 * first, hist['heldout_loss']
    path = tmp_path / 'blob.onnx'
    export_actor(actor, path, CROP)
    test_img, test_pro, test_act = blob_dataset(200, seed=1)
    pred = OnnxActor(path, expected_contract(SIZE, CROP)).act(test_img, test_pro)
    err = np.abs(pred[:, :2] - test_act[:, :2])
    # a constant predictor has mean error ~0.015 m; the clone must do much better
    assert err.mean() < 0.005, err.mean()
    assert np.mean(pred[:, 5] == test_act[:, 5]) > 0.9
    assert np.mean(pred[:, 4] == test_act[:, 4]) > 0.9
    assert np.all(pred[:, 6] == 0.0)


def test_bc_loss_matches_hand_computation():
    class Fixed(torch.nn.Module):
        def normalised(self, image, proprio):
            n = image.shape[0]
            return torch.zeros(n, 4), torch.zeros(n, 3)   # mean 0, p = 0.5

    act = torch.tensor([[0.03, -0.015, 0.0, 0.1, 1.0, 0.0, 0.0]])
    total, parts = bc_loss(Fixed(), torch.zeros(1, 8, 8, 3, dtype=torch.uint8),
                           torch.zeros(1, 6), act, TASK1_WEIGHTS)
    mse = np.array([1.0, 0.25, 0.0, 0.25])            # normalised by the bounds
    bce = np.log(2.0) * np.ones(3)
    expected = (np.array(TASK1_WEIGHTS[:4]) * mse).sum() + bce.sum()
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert parts['dx'] == pytest.approx(1.0) and parts['close'] == pytest.approx(np.log(2))


def test_random_shift_moves_content_and_keeps_dtype():
    img = torch.zeros(50, 10, 10, 3, dtype=torch.uint8)
    img[:, 5, 5] = 255
    gen = torch.Generator().manual_seed(0)
    out = random_shift(img, 2, gen)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    pos = [tuple(np.argwhere(o[..., 0].numpy() == 255)[0]) for o in out]
    assert all(3 <= r <= 7 and 3 <= c <= 7 for r, c in pos)
    assert len(set(pos)) > 5
    assert random_shift(img, 0) is img


def test_split_and_config_validation():
    tr, ho = split_holdout(100, 0.1, 0)
    assert len(ho) == 10 and len(tr) == 90 and not set(tr) & set(ho)
    with pytest.raises(ValueError, match='weights'):
        BCConfig(weights=(1.0,))
    with pytest.raises(ValueError, match='steps'):
        BCConfig(steps=0)
    with pytest.raises(ValueError, match='image_size'):
        ActorConfig(image_size=4)


def test_ema_decay_returns_the_moving_average_of_the_iterates():
    images, proprios, actions = blob_dataset(80)
    iterates = [train_bc(images, proprios, actions, tiny_config(k), progress=False)[0]
                .state_dict() for k in (1, 2, 3)]
    averaged, _ = train_bc(images, proprios, actions, tiny_config(3, ema_decay=0.5),
                           progress=False)
    for name, value in averaged.state_dict().items():
        # AveragedModel starts from the first iterate, then theta <- 0.5 theta + 0.5 new
        expected = 0.25 * iterates[0][name] + 0.25 * iterates[1][name] + 0.5 * iterates[2][name]
        assert torch.allclose(value, expected, atol=1e-6), name
    assert not torch.allclose(averaged.state_dict()['mlp.0.weight'],
                              iterates[2]['mlp.0.weight'])
    with pytest.raises(ValueError, match='ema_decay'):
        BCConfig(ema_decay=1.0)


def test_train_bc_bad_input():
    images, proprios, actions = blob_dataset(10)
    with pytest.raises(ValueError, match='uint8'):
        train_bc(images.astype(np.float32), proprios, actions, tiny_config(1), progress=False)
    with pytest.raises(ValueError, match='actions'):
        train_bc(images, proprios, actions[:, :6], tiny_config(1), progress=False)
    with pytest.raises(ValueError, match='actor expects'):
        train_bc(images[:, :16, :16], proprios, actions, tiny_config(1), progress=False)


def test_actor_output_bounds():
    actor = Actor(ActorConfig(image_size=16, channels=4, num_conv=2, hidden=8))
    with torch.no_grad():
        for p in actor.mlp[-1].parameters():
            p.fill_(100.0)
        mean, logits = actor(torch.full((3, 16, 16, 3), 255, dtype=torch.uint8),
                             torch.ones(3, 6))
    np.testing.assert_allclose(mean.numpy(), np.tile(spec.ACTION_HIGH[:4], (3, 1)), rtol=1e-6)
    assert logits.shape == (3, 3)


def _episode(n_steps, success, seed):
    images, proprios, actions = blob_dataset(n_steps + 1, seed=seed)
    rewards = np.zeros(n_steps)
    if success:
        rewards[-1] = 1.0
    return {'observations': {'image': images, 'proprio': proprios}, 'actions': actions[:-1],
            'rewards': rewards, 'terminations': rewards > 0,
            'truncations': np.zeros(n_steps, bool)}


def test_bc_arrays_keeps_successful_episodes():
    eps = [_episode(5, True, 0), _episode(7, False, 1), _episode(3, True, 2)]
    images, proprios, actions, stats = bc_arrays(eps)
    assert images.shape == (8, SIZE, SIZE, 3) and proprios.shape == (8, 6)
    np.testing.assert_array_equal(actions[:5], eps[0]['actions'])
    np.testing.assert_array_equal(images[5:], eps[2]['observations']['image'][:3])
    assert stats == {'episodes': 3, 'successful': 2, 'used_episodes': 2, 'transitions': 8}
    assert bc_arrays(eps, successful_only=False)[3]['transitions'] == 15
    with pytest.raises(ValueError, match='no transitions'):
        bc_arrays([_episode(4, False, 3)])


def _write_minari(root, dataset_id, episodes, monkeypatch):
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer
    monkeypatch.setenv('MINARI_DATASETS_PATH', str(root / 'datasets'))
    buffers = []
    for i, ep in enumerate(episodes):
        buffers.append(EpisodeBuffer(
            id=i, observations=ep['observations'], actions=ep['actions'],
            rewards=list(ep['rewards']), terminations=list(ep['terminations']),
            truncations=list(ep['truncations']),
            infos=ep.get('infos', {})))
    obs_space = gym.spaces.Dict({
        'image': gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
        'proprio': gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)})
    act_space = gym.spaces.Box(spec.ACTION_LOW, spec.ACTION_HIGH, dtype=np.float32)
    minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=obs_space,
                                       action_space=act_space, algorithm_name='test',
                                       jpeg_encoding=False)


def test_load_bc_data_from_minari_and_train_cli(tmp_path, monkeypatch):
    from awopt_ros.learning.train_cli import add_train_args, run_train
    eps = [_episode(30, True, 0), _episode(20, False, 1), _episode(25, True, 2)]
    dataset_id = 'awopt/kuka-grasp/test-v0'
    _write_minari(tmp_path, dataset_id, eps, monkeypatch)
    monkeypatch.delenv('MINARI_DATASETS_PATH')
    images, proprios, actions, stats = load_bc_data(tmp_path, dataset_id)
    assert stats['transitions'] == 55 and stats['successful'] == 2
    np.testing.assert_array_equal(images[:30], eps[0]['observations']['image'][:30])
    np.testing.assert_allclose(actions[30:], eps[2]['actions'], rtol=1e-6)
    with pytest.raises(FileNotFoundError, match='not found'):
        load_bc_data(tmp_path, 'awopt/kuka-grasp/missing-v0')

    out = tmp_path / 'models' / 'm.onnx'
    args = add_train_args(argparse.ArgumentParser()).parse_args([
        '--dataset-root', str(tmp_path), '--dataset-id', dataset_id, '--out', str(out),
        '--steps', '20', '--batch-size', '16', '--image-size', str(SIZE), '--channels', '4',
        '--hidden', '16', '--eval-every', '10', '--no-progress',
        '--crop-xywh', '80', '0', '480', '480'])
    assert run_train(args) == 0
    summary = json.loads((tmp_path / 'models' / 'm_summary.json').read_text())
    assert summary['data']['transitions'] == 55 and summary['history']['step'] == [10, 20]
    assert (tmp_path / 'models' / 'm_loss.png').stat().st_size > 1000
    actor = OnnxActor(out, expected_contract(SIZE, CROP))
    assert actor.contract['dataset'] == dataset_id and actor.contract['algorithm'] == 'bc'
    bad = add_train_args(argparse.ArgumentParser()).parse_args([
        '--dataset-root', str(tmp_path), '--dataset-id', 'nope/x-v0', '--out', str(out)])
    assert run_train(bad) == 2            # bad input: one line naming --dataset-id


@pytest.mark.parametrize('pooling', ['flatten', 'spatial_softmax'])
def test_actor_poolings_and_coord_channels(pooling):
    torch.manual_seed(0)
    cfg = ActorConfig(image_size=32, channels=8, num_conv=3, hidden=16, pooling=pooling)
    actor = Actor(cfg)
    assert actor.coords.shape == (1, 3, 32, 32)          # x, y, r CoordConv channels
    assert float(actor.coords[0, 2].min()) >= 0.0       # r = distance from the centre
    image = torch.randint(0, 255, (5, 32, 32, 3), dtype=torch.uint8)
    mean, logits = actor(image, torch.zeros(5, spec.PROPRIO_DIM))
    assert mean.shape == (5, 4) and logits.shape == (5, 3)
    with pytest.raises(ValueError, match='pooling'):
        ActorConfig(pooling='max')


def test_stem_stride_sets_the_score_map_side():
    # 96 px with a stride-3 stem keeps the 32-cell map of 64 px (same cells, more detail each)
    for size, stride, side in ((64, 2, 32), (96, 3, 32), (96, 2, 48)):
        actor = Actor(ActorConfig(image_size=size, channels=4, num_conv=2, hidden=8,
                                  pooling='target', stem_stride=stride))
        assert actor.map_side == side
        scores, feats = actor.target_maps(torch.zeros(2, size, size, 3, dtype=torch.uint8))
        assert scores.shape == (2, side * side) and feats.shape == (2, 4, side * side)
    with pytest.raises(ValueError, match='stem_stride'):
        ActorConfig(stem_stride=4)


def test_engaged_input_is_the_thresholded_closedness_and_exports(tmp_path):
    torch.manual_seed(0)
    actor = Actor(ActorConfig(image_size=16, channels=4, num_conv=2, hidden=8,
                              pooling='target', grasp_pose=True, engaged_input=True)).eval()
    plain = Actor(ActorConfig(image_size=16, channels=4, num_conv=2, hidden=8,
                              pooling='target', grasp_pose=True))
    first = actor.mlp[0]
    assert first.in_features == plain.mlp[0].in_features + 1
    with torch.no_grad():   # keep only the engaged input's column: the output depends on it alone
        first.weight.zero_()
        first.bias.zero_()
        first.weight[:, -1 - spec.PROPRIO_DIM] = 1.0
    images = torch.zeros(4, 16, 16, 3, dtype=torch.uint8)
    proprio = torch.zeros(4, spec.PROPRIO_DIM)
    proprio[:, 5] = torch.tensor([0.0, spec.GRIPPER_ENGAGED_CLOSEDNESS, 0.3, 0.9])
    with torch.no_grad():
        mean, logits = actor(images, proprio)
    out = torch.cat([mean, logits], 1)
    assert not torch.allclose(out[0], out[1])            # open vs closed on something
    torch.testing.assert_close(out[1], out[2])           # a wide object reads as closed
    torch.testing.assert_close(out[2], out[3])           # as a narrow one does
    result = export_actor(actor, tmp_path / 'engaged.onnx', [80, 0, 480, 480])
    assert all(diff < 1e-4 for diff, _ in result['parity'].values())
