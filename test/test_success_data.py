"""Labelled frames for the success classifier (learning.success_data) and the scene's shapes
option (sim.scene)."""
import os

import numpy as np
import pytest

from awopt_ros.learning.success_data import (HARD_NEGATIVE_KINDS, TRAIN_SHAPES, FrameSet,
                                             _scenario_of, collect_grasp_frames,
                                             frames_from_dataset, split_by_episode,
                                             split_by_group)

os.environ.setdefault('MUJOCO_GL', 'egl')

#: One seed per scenario: grasped_not_lifted, normal (a success), dropped, closed_on_air.
SEEDS = (0, 1, 6, 21)


def _urdf():
    from awopt_ros.core import robot
    from awopt_ros.core.paths import resolve
    return str(resolve(robot.URDF_PATH))


def _frames(n_episodes, length=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    n = n_episodes * length
    return FrameSet(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                    rng.integers(0, 2, n), np.repeat(np.arange(n_episodes), length),
                    np.tile(np.arange(length), n_episodes),
                    np.repeat(['box', 'capsule'] * n_episodes, length)[:n],
                    np.full(n, 'normal'), 'grasp', {'seeds': list(range(n_episodes))})


# -- scene shapes ---------------------------------------------------------------------------------

def test_shapes_none_draws_the_scenes_of_before():
    """Pinned from the scene code before the shapes option existed: seed 0's objects."""
    from awopt_ros.sim.scene import build_spec
    s, objects = build_spec(_urdf(), 0)
    assert [o['shape'] for o in objects] == ['capsule', 'sphere', 'box', 'capsule', 'capsule']
    np.testing.assert_allclose(objects[3]['half_extents_m'], [0.049712, 0.029951, 0.029951],
                               atol=1e-6)
    np.testing.assert_allclose(
        [s.body(o['name']).pos for o in objects],
        [[0.452271, 0.127049, 0.020221], [0.689157, -0.190089, 0.031864],
         [0.46036, -0.148802, 0.022897], [0.65197, 0.057189, 0.032951],
         [0.718459, 0.175415, 0.020929]], atol=1e-6)
    s2, again = build_spec(_urdf(), 0, shapes=None)
    assert again == objects and s2.to_xml() == s.to_xml()


def test_shapes_option_makes_scenes_of_those_kinds_only():
    from awopt_ros.sim.rollout import RolloutConfig
    from awopt_ros.sim.scene import GraspSim, build_spec
    for seed in range(5):
        _, objects = build_spec(_urdf(), seed, shapes=('capsule',))
        assert {o['shape'] for o in objects} == {'capsule'}
        _, objects = build_spec(_urdf(), seed, num_objects=8, shapes=TRAIN_SHAPES)
        assert {o['shape'] for o in objects} <= set(TRAIN_SHAPES)
    sim = GraspSim(_urdf(), shapes=['sphere'])
    try:
        sim.reset(3)
        assert {o['shape'] for o in sim.objects} == {'sphere'}
    finally:
        sim.close()
    assert RolloutConfig().shapes is None
    assert RolloutConfig(shapes=['box']).shapes == ('box',)
    for bad in ((), ('box', 'cone'), 'cone'):
        with pytest.raises(ValueError, match='shapes'):
            build_spec(_urdf(), 0, shapes=bad)
        with pytest.raises(ValueError, match='shapes'):
            RolloutConfig(shapes=bad)


# -- collection -----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def grasp_frames():
    return collect_grasp_frames(SEEDS, shapes=TRAIN_SHAPES, processes=1, progress=False)


def test_seeds_cover_every_scenario():
    assert [_scenario_of(s, True) for s in SEEDS] == [
        'grasped_not_lifted', 'normal', 'dropped', 'closed_on_air']
    assert {_scenario_of(s, False) for s in range(20)} == {'normal'}


def test_every_label_is_the_ground_truth_of_its_own_frame(monkeypatch):
    """Spy on the env: each observation's image and ``object_lifted`` at that moment."""
    from awopt_ros.learning.success_data import run_grasp_frame_episode
    from awopt_ros.sim.rollout import RolloutConfig, RolloutEnv
    with RolloutEnv(RolloutConfig(shapes=TRAIN_SHAPES)) as env:
        seen = []
        real_observe = env.observe

        def observe():
            obs = real_observe()
            seen.append((obs['image'].copy(), env.sim.object_lifted()))
            return obs
        monkeypatch.setattr(env, 'observe', observe)
        for seed, scenario in ((1, 'normal'), (6, 'dropped')):
            seen.clear()
            ep = run_grasp_frame_episode(env, seed, scenario)
            assert len(ep['labels']) == len(seen) == ep['steps'] + 1
            np.testing.assert_array_equal(ep['images'], np.stack([s[0] for s in seen]))
            np.testing.assert_array_equal(ep['labels'], [int(s[1]) for s in seen])
            assert ep['labels'].any() and not ep['labels'][0]


def test_collected_frames_episodes_kinds_and_balance(grasp_frames):
    f = grasp_frames
    assert f.task == 'grasp' and f.images.shape[1:] == (64, 64, 3)
    assert f.meta['seeds'] == list(SEEDS) and f.meta['shapes'] == list(TRAIN_SHAPES)
    assert f.meta['scenarios'] == ['grasped_not_lifted', 'normal', 'dropped', 'closed_on_air']
    # episodes contiguous, in the order of the seeds, steps 0..n-1
    assert list(f.episodes()) == [0, 1, 2, 3]
    for e in range(4):
        idx = np.flatnonzero(f.episode == e)
        assert np.all(np.diff(idx) == 1)
        np.testing.assert_array_equal(f.step[idx], np.arange(len(idx)))
    assert set(f.group.tolist()) <= set(TRAIN_SHAPES)
    assert len(set(f.group[f.episode == 0].tolist())) == 1
    # hard negatives present, all labelled 0, in their own scenario's episode
    for e, kind in enumerate(['grasped_not_lifted', None, 'dropped', 'closed_on_air']):
        kinds = set(f.kind[f.episode == e].tolist())
        assert kinds == ({'normal'} if kind is None else {'normal', kind})
    assert set(f.kind.tolist()) == {'normal', *HARD_NEGATIVE_KINDS}
    assert not f.labels[f.kind != 'normal'].any()
    # the success episode keeps going after the lift: many positive frames
    assert f.labels[f.episode == 1].sum() >= 15
    assert f.labels[f.episode == 2].any()            # dropped: lifted first...
    assert f.labels[f.episode == 2][-1] == 0          # ...then it falls
    assert not f.labels[f.episode == 3].any()         # closed on air: never a success
    assert not f.labels[f.episode == 0].any()         # held below the success height
    # the label is the lifted height against the success height, frame by frame
    height = f.extras['lift_height_m']
    np.testing.assert_array_equal(f.labels, height > f.meta['success_height_m'])
    # hard negatives keep clear of the success height; the held object is carried well above
    assert height[f.kind == 'grasped_not_lifted'].max() < 0.10
    s = f.summary()
    assert s['frames'] == len(f) and s['positives'] == int(f.labels.sum())
    assert s['positive_episodes'] == 2
    assert sum(c['frames'] for c in s['kind'].values()) == len(f)


def test_collection_is_deterministic_for_any_process_count(grasp_frames):
    again = collect_grasp_frames(SEEDS[2:], shapes=TRAIN_SHAPES, processes=2, progress=False)
    part = grasp_frames.subset(grasp_frames.episode >= 2)
    np.testing.assert_array_equal(again.images, part.images)
    np.testing.assert_array_equal(again.labels, part.labels)
    np.testing.assert_array_equal(again.kind, part.kind)
    np.testing.assert_array_equal(again.episode + 2, part.episode)


# -- the FrameSet ---------------------------------------------------------------------------------

def test_save_load_round_trip_and_summary(tmp_path, grasp_frames):
    path = grasp_frames.save(tmp_path / 'sub' / 'frames.npz')
    back = FrameSet.load(path)
    for name in ('images', 'labels', 'episode', 'step', 'group', 'kind'):
        a, b = getattr(grasp_frames, name), getattr(back, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b)
    assert set(back.extras) == {'lift_height_m'}
    np.testing.assert_array_equal(back.extras['lift_height_m'],
                                  grasp_frames.extras['lift_height_m'])
    assert back.task == 'grasp' and back.meta == grasp_frames.meta
    assert back.summary() == grasp_frames.summary()
    np.savez(tmp_path / 'other.npz', x=np.zeros(3))
    with pytest.raises(ValueError, match='not a FrameSet'):
        FrameSet.load(tmp_path / 'other.npz')


def test_frameset_validates_its_arrays():
    f = _frames(2)
    with pytest.raises(ValueError, match='labels'):
        FrameSet(f.images, np.full(len(f), 2), f.episode, f.step, f.group, f.kind)
    with pytest.raises(ValueError, match='entries'):
        FrameSet(f.images, f.labels[:-1], f.episode, f.step, f.group, f.kind)
    with pytest.raises(ValueError, match='images'):
        FrameSet(f.images[..., 0], f.labels, f.episode, f.step, f.group, f.kind)


def test_subset_and_concat():
    a, b = _frames(3), _frames(2, seed=1)
    both = FrameSet.concat([a, b])      # episode ids 0..2 and 0..1 clash: renumbered
    assert len(both) == len(a) + len(b) and both.meta['renumbered']
    assert list(both.episodes()) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(both.images[len(a):], b.images)
    b.episode = b.episode + 10
    kept = FrameSet.concat([a, b])
    assert not kept.meta['renumbered'] and list(kept.episodes()) == [0, 1, 2, 10, 11]
    assert kept.meta['parts'][0] == a.meta
    sub = kept.subset(kept.episode == 10)
    assert len(sub) == 6 and list(sub.step) == list(range(6))
    a.extras = {'h': np.arange(len(a)), 'x': np.zeros(len(a))}
    b.extras = {'h': -np.arange(len(b))}
    both = FrameSet.concat([a, b])              # only extras every part has
    assert set(both.extras) == {'h'} and list(both.extras['h'][-2:]) == [-10, -11]
    np.testing.assert_array_equal(both.subset([1, 20]).extras['h'], [1, -2])
    with pytest.raises(ValueError, match='extras'):
        FrameSet(a.images, a.labels, a.episode, a.step, a.group, a.kind, extras={'h': [1]})
    assert len(kept.subset(np.array([5, 1]))) == 2
    with pytest.raises(ValueError, match='tasks'):
        FrameSet.concat([a, FrameSet(a.images, a.labels, a.episode, a.step, a.group, a.kind,
                                     'insertion')])


def test_concat_keeps_the_camera_crop_of_its_parts():
    a, b = _frames(2), _frames(2, seed=1)
    crop = {'crop_xywh': [40, 0, 240, 240], 'camera_size': [320, 240]}
    a.meta, b.meta = dict(crop, seed=0), dict(crop, seed=1)
    both = FrameSet.concat([a, b])
    assert both.meta['crop_xywh'] == [40, 0, 240, 240] and both.meta['camera_size'] == [320, 240]
    b.meta = {}                                  # a part that does not say: the others decide
    assert FrameSet.concat([a, b]).meta['crop_xywh'] == [40, 0, 240, 240]
    b.meta = {'crop_xywh': [80, 0, 480, 480]}    # parts of different crops do not mix
    with pytest.raises(ValueError, match='crop_xywh'):
        FrameSet.concat([a, b])


def test_split_by_episode_never_splits_an_episode():
    f = _frames(20)
    train, val = split_by_episode(f, 0.25, seed=3)
    assert len(train) + len(val) == len(f)
    assert len(val.episodes()) == 5 and len(train.episodes()) == 15
    assert not set(train.episode.tolist()) & set(val.episode.tolist())
    for part in (train, val):
        for e in part.episodes():
            np.testing.assert_array_equal(part.step[part.episode == e], np.arange(6))
    again, _ = split_by_episode(f, 0.25, seed=3)
    np.testing.assert_array_equal(again.episode, train.episode)
    other, _ = split_by_episode(f, 0.25, seed=4)
    assert set(other.episodes()) != set(train.episodes())
    assert len(split_by_episode(_frames(2), 0.01, 0)[1].episodes()) == 1
    assert len(split_by_episode(f, 0.0, 0)[1]) == 0
    with pytest.raises(ValueError):
        split_by_episode(f, 1.5, 0)
    rest, held = split_by_group(f, ['capsule'])
    assert set(held.group.tolist()) == {'capsule'} and 'capsule' not in set(rest.group.tolist())


# -- the logger's datasets ------------------------------------------------------------------------

def _dataset(tmp_path):
    """Three episodes written by core.dataset's recorder: success, failure, success."""
    from awopt_ros.core.dataset import EpisodeRecorder
    rng = np.random.default_rng(0)
    rec = EpisodeRecorder(tmp_path, 'awopt/kuka-grasp-v0')
    probs = [[np.nan, 0.0, 0.0, 0.2, 1.0, 1.0],
             [np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
             [0.0, 0.0, 0.7, 1.0]]
    images = []
    for k, (p, success) in enumerate(zip(probs, (True, False, True))):
        img = rng.integers(0, 256, (len(p), 64, 64, 3), dtype=np.uint8)
        images.append(img)
        rec.begin(10 + k, 1000 + k)
        for t in range(len(p) - 1):
            rec.add_step(img[t], np.zeros(6, np.float32), np.zeros(7, np.float32), p[t], 0,
                         0.1 * t)
        rec.end(success, success, not success, img[-1], np.zeros(6, np.float32),
                final_success_probability=p[-1], final_stamp_s=0.1 * len(p))
    return rec.dataset_path, probs, images


def test_frames_from_dataset_ground_truth_labels_every_frame(tmp_path):
    path, probs, images = _dataset(tmp_path)
    f = frames_from_dataset(path)
    assert f.meta['dataset_id'] == 'awopt/kuka-grasp-v0' and set(f.group) == {f.meta[
        'dataset_id']}
    for e, (p, img) in enumerate(zip(probs, images)):
        p = np.asarray(p)
        keep = np.isfinite(p)                        # no detector sample yet: dropped
        np.testing.assert_array_equal(f.labels[f.episode == e], (p[keep] >= 0.5))
        np.testing.assert_array_equal(f.images[f.episode == e], img[keep])
        np.testing.assert_array_equal(f.step[f.episode == e], np.flatnonzero(keep))
    assert set(f.kind) == {'normal'}
    same = frames_from_dataset(tmp_path)          # the run folder that holds it
    np.testing.assert_array_equal(same.labels, f.labels)
    by_id = frames_from_dataset('awopt/kuka-grasp-v0', dataset_root=tmp_path, group='lab')
    np.testing.assert_array_equal(by_id.labels, f.labels)
    assert set(by_id.group) == {'lab'}
    with pytest.raises(FileNotFoundError):
        frames_from_dataset(tmp_path / 'nothing')


def test_frames_from_dataset_operator_labels_the_last_k_frames(tmp_path):
    path, probs, images = _dataset(tmp_path)
    f = frames_from_dataset(path, label='operator', last_k=3)     # the recorded outcomes
    assert list(f.episodes()) == [0, 1, 2]
    for e, (verdict, img) in enumerate(zip((1, 0, 1), images)):
        np.testing.assert_array_equal(f.labels[f.episode == e], [verdict] * 3)
        np.testing.assert_array_equal(f.images[f.episode == e], img[-3:])
        np.testing.assert_array_equal(f.step[f.episode == e], np.arange(len(img) - 3,
                                                                        len(img)))
    # an operator's verdicts, keyed by the episode manager's episode number; 11 unlabelled
    g = frames_from_dataset(path, label='operator', last_k=10,
                            operator_labels={10: False, 12: True})
    assert list(g.episodes()) == [0, 2] and g.meta['skipped_unlabelled_episodes'] == 1
    assert not g.labels[g.episode == 0].any() and len(g.labels[g.episode == 0]) == 6
    assert g.labels[g.episode == 2].all() and len(g.labels[g.episode == 2]) == 4
    with pytest.raises(ValueError, match='last_k'):
        frames_from_dataset(path, label='operator', last_k=0)
    with pytest.raises(ValueError, match='label'):
        frames_from_dataset(path, label='guess')


# -- command line ---------------------------------------------------------------------------------

def test_cli_collects_frames_into_a_file(tmp_path, capsys):
    from awopt_ros.cli import main
    out = tmp_path / 'f.npz'
    assert main(['collect-success-frames', '--episodes', '1', '--seed', '21', '--shapes',
                 'capsule', '--processes', '1', '--out', str(out)]) == 0
    f = FrameSet.load(out)
    assert set(f.group.tolist()) == {'capsule'} and f.meta['seeds'] == [21]
    assert 'closed_on_air' in capsys.readouterr().out


def test_cli_crop_and_image_size_options_set_the_frames_crop(tmp_path, monkeypatch, capsys):
    from awopt_ros.cli import main
    from awopt_ros.learning import success_data as sd
    seen = {}

    def fake_collect(seeds, shapes=None, hard_negatives=True, processes=2, progress=True,
                     config=None, max_steps=None):
        seen['config'] = config
        return FrameSet(np.zeros((1, config.image_size, config.image_size, 3), np.uint8),
                        np.zeros(1), np.zeros(1), np.zeros(1), np.array(['capsule']),
                        np.array(['normal']), 'grasp',
                        {'crop_xywh': list(config.crop_xywh), 'wall_s': 0.0})
    monkeypatch.setattr(sd, 'collect_grasp_frames', fake_collect)
    out = tmp_path / 'f.npz'
    assert main(['collect-success-frames', '--episodes', '1', '--shapes', 'capsule',
                 '--image-size', '96', '--crop-xywh', '160,0,320,320', '--out', str(out)]) == 0
    assert seen['config'].crop_xywh == (160, 0, 320, 320) and seen['config'].image_size == 96
    assert FrameSet.load(out).meta['crop_xywh'] == [160, 0, 320, 320]
    assert main(['collect-success-frames', '--episodes', '1', '--shapes', 'capsule',
                 '--out', str(out), '--force']) == 0
    from awopt_ros.core import spec
    assert seen['config'].crop_xywh == tuple(spec.POLICY_CROP_XYWH)       # default unchanged
    for bad in ('1,2,3', 'a,b,c,d', '400,0,480,480'):
        assert main(['collect-success-frames', '--crop-xywh', bad, '--out', str(out)]) == 2
    assert 'argument --crop-xywh' in capsys.readouterr().err


# -- insertion ------------------------------------------------------------------------------------

def test_insertion_frames_label_success_and_mark_the_peg_on_the_rim(monkeypatch):
    from awopt_ros.learning import success_data as sd
    from awopt_ros.sim.insertion import InsertionSim
    assert [sd._insertion_scenario_of(s, True) for s in (0, 4, 7)] == [
        'normal', 'peg_on_rim', 'goal_noise']
    truth, frames = [], []
    real = InsertionSim.render

    def spy(self):      # the ground truth at the moment each frame is rendered
        frame = real(self)
        truth.append(self.success())
        frames.append(frame)
        return frame
    monkeypatch.setattr(InsertionSim, 'render', spy)
    f = sd.collect_insertion_frames([0, 4], processes=1, progress=False)
    assert f.task == 'insertion' and f.images.shape[1:] == (64, 64, 3)
    assert frames[0].shape == (240, 320, 3)
    np.testing.assert_array_equal(f.labels, truth)
    from awopt_ros.core.image_ops import crop_resize
    np.testing.assert_array_equal(f.images[5], crop_resize(frames[5], (40, 0, 240, 240), 64))
    assert f.meta['scenarios'] == ['normal', 'peg_on_rim'] and set(f.group) == {'default'}
    inserted, rim = f.labels[f.episode == 0], f.subset(f.episode == 1)
    assert not inserted[0] and inserted[-1] and inserted.sum() >= 10   # held in after success
    assert not rim.labels.any() and len(rim) == sd.INSERTION_MAX_STEPS + 1
    depth = f.extras['insertion_depth_m']
    assert np.all(depth[f.labels == 1] >= 0.9 * 0.02)       # inserted >= 90 % of 20 mm
    assert rim.extras['insertion_depth_m'].max() < 0.001     # never into the bore
    assert (rim.kind == 'peg_on_rim').sum() >= 20 and set(f.kind[f.episode == 0]) == {'normal'}


# -- the logger's bags -----------------------------------------------------------------------

def _write_bag(path, episode, images, probs, success, events=True, bgr=False):
    """One episode bag as the logger writes it: /policy/image frames 100 ms apart, a
    /success/probability sample just before each (None: no sample), start/end events."""
    import json

    from awopt_ros.core.bag import BagWriter, default_typestore
    store = default_typestore()
    t = store.types
    topics = {'/policy/image': 'sensor_msgs/msg/Image',
              '/success/probability': 'std_msgs/msg/Float32',
              '/episode/event': 'std_msgs/msg/String'}
    writer = BagWriter(path, topics)

    def put(topic, msg, stamp):
        writer.write(topic, store.serialize_cdr(msg, topics[topic]), stamp)
    base = 10**9
    if events:
        put('/episode/event', t['std_msgs/msg/String'](
            data=json.dumps({'event': 'start', 'episode': episode})), base)
    for k, (img, p) in enumerate(zip(images, probs)):
        stamp = base + (k + 1) * 10**8
        if p is not None:
            put('/success/probability', t['std_msgs/msg/Float32'](data=p), stamp - 10**6)
        header = t['std_msgs/msg/Header'](
            stamp=t['builtin_interfaces/msg/Time'](sec=stamp // 10**9,
                                                   nanosec=stamp % 10**9), frame_id='c')
        data = img[..., ::-1] if bgr else img
        put('/policy/image', t['sensor_msgs/msg/Image'](
            header=header, height=img.shape[0], width=img.shape[1],
            encoding='bgr8' if bgr else 'rgb8', is_bigendian=0, step=img.shape[1] * 3,
            data=np.ascontiguousarray(data).reshape(-1)), stamp)
    end = base + (len(images) + 1) * 10**8 - 10**7
    if events:
        put('/episode/event', t['std_msgs/msg/String'](
            data=json.dumps({'event': 'end', 'episode': episode, 'success': success})), end)
        # a frame that arrived after the end (the logger keeps recording a little longer)
        put('/policy/image', t['sensor_msgs/msg/Image'](
            header=header, height=8, width=8, encoding='rgb8', is_bigendian=0, step=24,
            data=np.zeros(192, np.uint8)), end + 10**7)
    writer.close()


def test_frames_from_bags_ground_truth_and_operator_labels(tmp_path):
    from awopt_ros.learning.success_data import frames_from_bags
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8) for n in (5, 4, 3)]
    _write_bag(tmp_path / 'bags' / 'episode_0007', 7, imgs[0], [None, 0.0, 0.2, 1.0, 1.0],
               True)
    _write_bag(tmp_path / 'bags' / 'episode_0008', 8, imgs[1], [0.0] * 4, False, bgr=True)
    _write_bag(tmp_path / 'bags' / 'episode_0009', 9, imgs[2], [0.0, 1.0, 1.0], None,
               events=False)
    f = frames_from_bags(tmp_path, task='insertion', group='cell')
    assert f.task == 'insertion' and set(f.group) == {'cell'}
    assert list(f.episodes()) == [7, 8, 9]       # episode numbers; 9 from the folder name
    np.testing.assert_array_equal(f.labels[f.episode == 7], [0, 0, 1, 1])   # 1st: no sample
    np.testing.assert_array_equal(f.images[f.episode == 7], imgs[0][1:])
    np.testing.assert_array_equal(f.step[f.episode == 7], [1, 2, 3, 4])
    np.testing.assert_array_equal(f.images[f.episode == 8], imgs[1])         # bgr8 -> RGB
    np.testing.assert_array_equal(f.labels[f.episode == 9], [0, 1, 1])
    # operator: the end event's verdict on the last k frames; a bag without one is skipped
    g = frames_from_bags(tmp_path / 'bags', label='operator', last_k=2)
    assert list(g.episodes()) == [7, 8] and len(g.meta['skipped_bags']) == 1
    np.testing.assert_array_equal(g.labels, [1, 1, 0, 0])
    np.testing.assert_array_equal(g.images[g.episode == 8], imgs[1][-2:])
    h = frames_from_bags([tmp_path / 'bags' / 'episode_0009'], label='operator', last_k=9,
                         operator_labels={9: True})
    assert h.labels.tolist() == [1, 1, 1]
    with pytest.raises(FileNotFoundError):
        frames_from_bags(tmp_path / 'nothing')


# -- collect-success-frames --from-run (recorded runs, e.g. a real robot) ------------------------

def _collect(argv, capsys):
    """Run ``awopt collect-success-frames ARGV``; return (exit code, stdout, stderr)."""
    from awopt_ros.cli import main
    rc = main(['collect-success-frames', *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return rc, out, err


def _hardware_run(run, outcomes=(True, False, True), lengths=(6, 8, 4)):
    """A run recorded without ground truth (a real robot): no /success/probability samples,
    episodes numbered 10, 11, ...; returns the images per episode."""
    from awopt_ros.core.dataset import EpisodeRecorder
    rng = np.random.default_rng(1)
    rec = EpisodeRecorder(run, 'awopt/kuka-grasp-v0')
    images = []
    for k, (n, success) in enumerate(zip(lengths, outcomes)):
        img = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
        images.append(img)
        rec.begin(10 + k)
        for t in range(n - 1):
            rec.add_step(img[t], np.zeros(6, np.float32), np.zeros(7, np.float32), np.nan, 0,
                         0.1 * t)
        rec.end(success, success, not success, img[-1], np.zeros(6, np.float32),
                final_stamp_s=0.1 * n)
    return images


def test_from_run_ground_truth_labels_the_frames_of_a_simulated_run(tmp_path, capsys):
    run = tmp_path / 'sim'
    path, probs, images = _dataset(run)
    out = tmp_path / 'f.npz'
    rc, text, _ = _collect(['--from-run', run, '--out', out], capsys)   # ground truth: default
    assert rc == 0
    f, ref = FrameSet.load(out), frames_from_dataset(path)
    np.testing.assert_array_equal(f.labels, ref.labels)
    np.testing.assert_array_equal(f.images, ref.images)
    np.testing.assert_array_equal(f.step, ref.step)
    assert set(f.group) == {'sim'} and f.task == 'grasp' and f.meta['runs'] == [str(run)]
    assert f'{len(ref)} frames' in text and 'sim 10 ground_truth: 5, 2' in text
    # the same --out again: refused without --force, nothing rewritten
    before = out.stat().st_mtime_ns
    rc, _, err = _collect(['--from-run', run, '--out', out], capsys)
    assert rc == 2 and 'argument --out' in err and '--force' in err and len(
        err.strip().splitlines()) == 1
    assert out.stat().st_mtime_ns == before
    rc, _, _ = _collect(['--from-run', run, '--out', out, '--force', '--label', 'operator',
                         '--last-k', '2'], capsys)
    assert rc == 0
    g = FrameSet.load(out)          # the recorded outcomes (success, failure, success)
    assert g.labels.tolist() == [1, 1, 0, 0, 1, 1] and g.step.tolist() == [4, 5, 6, 7, 2, 3]


def test_from_run_without_ground_truth_needs_operator_labels(tmp_path, capsys):
    run = tmp_path / 'kuka'
    images = _hardware_run(run)
    out = tmp_path / 'f.npz'
    rc, _, err = _collect(['--from-run', run, '--out', out], capsys)
    assert rc == 2 and '--label operator' in err and len(err.strip().splitlines()) == 1
    rc, _, err = _collect(['--from-run', run, '--label', 'ground_truth', '--out', out], capsys)
    assert rc == 2 and '--label operator' in err and not out.exists()
    rc, text, _ = _collect(['--from-run', run, '--label', 'operator', '--out', out], capsys)
    assert rc == 0 and 'kuka 11 recorded: 5, 0' in text
    f = FrameSet.load(out)            # default last k = 5 frames (episode 12 has only 4)
    for e, (img, verdict) in enumerate(zip(images, (1, 0, 1))):
        np.testing.assert_array_equal(f.images[f.episode == e], img[-5:])
        assert f.labels[f.episode == e].tolist() == [verdict] * len(img[-5:])


def test_from_run_labels_file_overrides_the_recorded_outcome(tmp_path, capsys):
    run = tmp_path / 'kuka'
    _hardware_run(run)
    labels = tmp_path / 'labels.json'
    labels.write_text('{"10": false, "11": true}')      # the operator disagrees with both
    out = tmp_path / 'f.npz'
    rc, text, _ = _collect(['--from-run', run, '--labels', labels, '--last-k', '3',
                            '--out', out], capsys)       # --labels implies --label operator
    assert rc == 0
    f = FrameSet.load(out)
    assert f.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]   # 12: not named, recorded success
    assert 'kuka 10 operator: 3, 0' in text and 'kuka 11 operator: 3, 3' in text
    assert 'kuka 12 recorded: 3, 3' in text
    rc, _, _ = _collect(['--from-run', run, '--labels', labels, '--last-k', '3',
                         '--only-labelled', '--out', out, '--force'], capsys)
    assert rc == 0
    g = FrameSet.load(out)
    assert g.labels.tolist() == [0, 0, 0, 1, 1, 1] and len(g.episodes()) == 2


def test_from_run_takes_bag_frames_when_the_dataset_has_no_images(tmp_path, capsys):
    from awopt_ros.core.dataset import StateEpisodeRecorder
    run = tmp_path / 'cell'
    rec = StateEpisodeRecorder(run, 'awopt/sawyer-insertion-v0')   # states only, no images
    rec.begin(7)
    rec.add_step(np.zeros(15, np.float32), np.zeros(3, np.float32), 0.0, 5, 0.1)
    rec.end(True, True, False, np.zeros(15, np.float32))
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8) for n in (5, 4)]
    _write_bag(run / 'bags' / 'episode_0007', 7, imgs[0], [None, 0.0, 0.2, 1.0, 1.0], True)
    _write_bag(run / 'bags' / 'episode_0008', 8, imgs[1], [0.0] * 4, False)
    out = tmp_path / 'f.npz'
    rc, text, _ = _collect(['--from-run', run, '--out', out], capsys)
    assert rc == 0 and 'cell 7 ground_truth: 4, 2' in text
    f = FrameSet.load(out)
    assert f.task == 'insertion' and f.labels.tolist() == [0, 0, 1, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(f.images[f.episode == 8], imgs[1])
    labels = tmp_path / 'labels.json'
    labels.write_text('{"8": true}')
    rc, _, _ = _collect(['--from-run', run, '--labels', labels, '--last-k', '2', '--out', out,
                         '--force'], capsys)
    assert rc == 0
    assert FrameSet.load(out).labels.tolist() == [1, 1, 1, 1]    # 7 recorded, 8 the operator


def test_from_run_several_runs_and_episode_numbers_that_clash(tmp_path, capsys):
    for name in ('a', 'b'):
        _hardware_run(tmp_path / name)                     # both number episodes 10, 11, 12
    labels = tmp_path / 'labels.json'
    labels.write_text('{"11": true}')
    out = tmp_path / 'f.npz'
    base = ['--from-run', tmp_path / 'a', '--from-run', tmp_path / 'b', '--labels', labels,
            '--last-k', '1', '--out', out]
    rc, _, err = _collect(base, capsys)
    assert rc == 2 and 'several runs' in err and 'a/11 or b/11' in err
    labels.write_text('{"b/11": true, "a/10": false}')
    rc, _, _ = _collect(base, capsys)
    assert rc == 0
    f = FrameSet.load(out)
    assert f.labels.tolist() == [0, 0, 1, 1, 1, 1] and sorted(set(f.group)) == ['a', 'b']
    assert len(f.episodes()) == 6 and out.parent == tmp_path


@pytest.mark.parametrize('extra, text, option', [
    (['--episodes', '3'], 'does not apply to --from-run', '--episodes'),
    (['--seed', '3'], 'does not apply to --from-run', '--seed'),
    (['--shapes', 'box'], 'does not apply to --from-run', '--shapes'),
    (['--label', 'ground_truth', '--last-k', '3'], 'operator only', '--last-k'),
    (['--only-labelled'], 'needs --labels', '--only-labelled'),
    (['--labels', 'NOFILE'], 'not found', '--labels'),
    (['--labels', 'BAD'], 'is not JSON', '--labels'),
    (['--labels', 'LIST'], 'JSON object', '--labels'),
    (['--labels', 'VALUE'], 'true or false', '--labels'),
    (['--labels', 'UNKNOWN'], 'not in the run(s): 99', '--labels'),
])
def test_from_run_errors_are_one_line(tmp_path, capsys, extra, text, option):
    run = tmp_path / 'kuka'
    _hardware_run(run, outcomes=(True,), lengths=(3,))
    files = {'BAD': '{"10": tru', 'LIST': '[10]', 'VALUE': '{"10": 1}',
             'UNKNOWN': '{"10": true, "99": false}'}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    extra = [str(tmp_path / e) if e in (*files, 'NOFILE') else e for e in extra]
    out = tmp_path / 'f.npz'
    rc, _, err = _collect(['--from-run', run, '--out', out, *extra], capsys)
    assert rc == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and text in err and f'argument {option}' in err


def test_from_run_errors_for_missing_and_empty_runs_and_sim_only_use(tmp_path, capsys):
    out = tmp_path / 'f.npz'
    rc, _, err = _collect(['--from-run', tmp_path / 'nothing', '--out', out], capsys)
    assert rc == 2 and 'no run folder' in err and len(err.strip().splitlines()) == 1
    (tmp_path / 'empty' / 'bags').mkdir(parents=True)
    for run in (tmp_path / 'empty', tmp_path / 'empty' / 'bags'):
        rc, _, err = _collect(['--from-run', run, '--out', out], capsys)
        assert rc == 2 and 'no episodes' in err and len(err.strip().splitlines()) == 1
    for extra in (['--label', 'operator'], ['--last-k', '2'], ['--only-labelled']):
        rc, _, err = _collect(['--episodes', '1', '--out', out, *extra], capsys)
        assert rc == 2 and '--from-run' in err and not out.exists()


def test_from_run_help_names_the_options(capsys):
    from awopt_ros.cli import main
    with pytest.raises(SystemExit):
        main(['collect-success-frames', '--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for option in ('--from-run RUN_DIR', '--label {ground_truth,operator}', '--last-k',
                   '--labels FILE.json', '--only-labelled', '--force'):
        assert option in text
    assert 'default 400' in text and 'runs/success/' in text


def test_simulated_collection_never_overwrites_an_existing_out(tmp_path, monkeypatch, capsys):
    from awopt_ros.learning import success_data as sd

    def fake_collect(*args, **kwargs):
        raise AssertionError('collected although --out exists')
    monkeypatch.setattr(sd, 'collect_grasp_frames', fake_collect)
    out = tmp_path / 'f.npz'
    out.write_bytes(b'earlier work')
    rc, _, err = _collect(['--episodes', '1', '--out', out], capsys)
    assert rc == 2 and 'argument --out' in err and out.read_bytes() == b'earlier work'


# -- CLI checks of the review ---------------------------------------------------------------------

def test_from_run_records_the_runs_camera_crop(tmp_path, capsys):
    run = tmp_path / 'kuka'
    _hardware_run(run, outcomes=(True,), lengths=(4,))
    out = tmp_path / 'f.npz'
    rc, _, err = _collect(['--from-run', run, '--out', out, '--label', 'operator',
                           '--crop-xywh', '80,0,480,480', '--source-size', '640,480'], capsys)
    assert rc == 0, err
    meta = FrameSet.load(out).meta
    assert meta['crop_xywh'] == [80, 0, 480, 480] and meta['camera_size'] == [640, 480]
    # one without the other, or a crop outside the frame: one-line errors, nothing written
    for extra, option in ((['--crop-xywh', '80,0,480,480'], '--source-size'),
                          (['--source-size', '640,480'], '--crop-xywh'),
                          (['--crop-xywh', '80,0,480,480', '--source-size', '320,240'],
                           '--crop-xywh'),
                          (['--crop-xywh', '80,0,480,480', '--source-size', '640'],
                           '--source-size')):
        rc, _, err = _collect(['--from-run', run, '--out', tmp_path / 'g.npz', '--label',
                               'operator', *extra], capsys)
        assert rc == 2 and f'argument {option}' in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / 'g.npz').exists()
    # --source-size is for recorded runs only
    rc, _, err = _collect(['--episodes', '1', '--source-size', '640,480', '--out',
                           tmp_path / 'g.npz'], capsys)
    assert rc == 2 and 'argument --source-size' in err and '--from-run' in err


def test_collect_unknown_shape_is_a_one_line_error(tmp_path, capsys):
    rc, _, err = _collect(['--episodes', '1', '--shapes', 'cube', '--out', tmp_path / 'f.npz'],
                          capsys)
    assert rc == 2 and 'argument --shapes' in err and "'cube'" in err
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err


def test_collect_insertion_default_out_and_grasp_only_options(tmp_path, monkeypatch, capsys):
    from awopt_ros.learning import success_data as sd
    seen = {}

    def fake_insertion(seeds, variant='default', hard_negatives=True, processes=2,
                       image_size=64, **kw):
        seen['seeds'] = list(seeds)
        return FrameSet(np.zeros((1, 64, 64, 3), np.uint8), np.zeros(1), np.zeros(1),
                        np.zeros(1), np.array([variant]), np.array(['normal']), 'insertion',
                        {'wall_s': 0.0})
    monkeypatch.setattr(sd, 'collect_insertion_frames', fake_insertion)
    monkeypatch.chdir(tmp_path)
    rc, text, err = _collect(['--task', 'insertion', '--episodes', '2'], capsys)
    assert rc == 0, err
    assert (tmp_path / 'runs' / 'success' / 'insertion_frames.npz').is_file()
    assert not (tmp_path / 'runs' / 'success' / 'grasp_frames.npz').exists()
    for extra, option in ((['--shapes', 'box'], '--shapes'),
                          (['--crop-xywh', '40,0,240,240'], '--crop-xywh')):
        rc, _, err = _collect(['--task', 'insertion', '--episodes', '1', '--out', 'x.npz',
                               *extra], capsys)
        assert rc == 2 and f'argument {option}' in err and 'insertion' in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / 'x.npz').exists()
