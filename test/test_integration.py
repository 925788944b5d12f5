"""Integration: two short episodes through real node processes; bag and dataset vs. the wire.

Starts every node of the stack as its own process (the shipped ONNX actor as the policy), runs
two episodes through ``/episode/start``, and records, in this test process, every camera frame
and every action that was published. Then checks that
- each episode's bag (read back with the independent ``rosbags`` reader) holds every camera
  frame published while the episode ran, byte for byte, and the episode's actions;
- the Minari dataset (read with minari's own loader) holds each episode with the actions that
  were published, one step per action, and flags that match the manager's end event;
- a policy process killed in the middle of a third episode ends that episode as truncated
  (``node_lost``) and the dataset still loads with every episode, the cut one included.
"""
import hashlib
import json
import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from sensor_msgs.msg import Image, JointState

from awopt_ros.core.dataset import load_episodes
from awopt_ros.core.report import bag_frame_stamps_ns, episode_windows, frame_accounting
from awopt_ros.launcher import Stack, ros_environment
from awopt_ros.ros import convert, qos
from awopt_ros.ros.episode_client import EpisodeClient

MODEL = Path(__file__).resolve().parents[1] / 'models' / 'grasp_bc.onnx'
MAX_STEPS = 15


def _cdr_stamp_s(raw):
    """Header stamp (s) of a serialized message: 4-byte CDR header, then sec, nanosec."""
    sec, nanosec = struct.unpack_from('<iI', raw, 4)
    return sec + nanosec * 1e-9


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('integration')
    overrides = {'logger': {'output_dir': str(out)},
                 'episode_manager': {'max_steps': MAX_STEPS},
                 'sim_robot': {'seed': 4242}}
    stack = Stack(policy='actor', log_dir=out / 'logs', overrides=overrides,
                  env=ros_environment(domain_id=os.environ['ROS_DOMAIN_ID']))
    ctx = Context()
    rclpy.init(context=ctx)
    client = EpisodeClient(context=ctx)
    frames, actions = {}, []
    client.create_subscription(   # raw CDR bytes: cheap here, and compared byte for byte
        Image, '/camera/color/image_raw',
        lambda raw: frames.__setitem__(_cdr_stamp_s(raw), hashlib.sha1(raw).hexdigest()),
        qos.RECORD_SENSOR, raw=True)
    client.create_subscription(JointState, '/policy/action', actions.append, qos.COMMAND)
    stack.start()
    try:
        alive = lambda: not stack.dead()  # noqa: E731
        assert client.wait_ready(120.0, alive=alive), [n.log_tail() for n in stack.dead()]
        ends = []
        for _ in range(2):
            k = client.start_episode(timeout_s=60.0, alive=alive)
            ends.append(client.wait_end(k, 60.0, alive=alive))
            assert ends[-1] is not None and ends[-1]['event'] == 'end', \
                [n.log_tail() for n in stack.nodes]
        for end in ends:
            assert client.wait_saved(end['episode'], 30.0) is not None, \
                stack.nodes[-1].log_tail()
        # Third episode: the policy process dies mid-episode.
        k = client.start_episode(timeout_s=60.0, alive=alive)
        policy = next(n for n in stack.nodes if n.name == 'policy')
        assert client.spin_until(lambda: any(e.get('episode') == k for e in client.events), 30)
        t_start = next(e['stamp_s'] for e in client.events if e.get('episode') == k)
        # Two actions of this episode seen here: the logger (a peer subscriber) has its first.
        assert client.spin_until(lambda: sum(
            convert.stamp_to_s(m.header.stamp) >= t_start for m in actions) >= 2, 30)
        policy.process.send_signal(signal.SIGKILL)
        lost = client.wait_end(k, 30.0)
        assert lost is not None, 'the episode with a dead policy did not end'
        assert client.wait_saved(k, 30.0) is not None
        client.spin_until(lambda: False, 0.5)
    finally:
        codes = stack.stop()
    starts = [e for e in client.events if e['event'] == 'start']
    result = dict(ends=ends, lost=lost, starts=starts, frames=frames, actions=actions,
                  saved=dict(client.saved), codes=codes, out=out,
                  logger=next(n for n in stack.nodes if n.name == 'logger'),
                  camera_stamps_ns=list(client.camera_stamps_ns))
    client.destroy_node()
    rclpy.try_shutdown(context=ctx)
    return result


def test_nodes_exit_cleanly_and_episodes_end_properly(run):
    codes = dict(run['codes'])
    assert codes.pop('policy') == -signal.SIGKILL
    assert all(code == 0 for code in codes.values()), codes
    for end in run['ends']:
        assert end['outcome'] in ('success', 'terminate', 'timeout')
        assert 1 <= end['steps'] <= MAX_STEPS
    # Reset k of the simulator uses its base seed + k.
    assert [s['seed'] for s in run['starts']] == [4243, 4244, 4245]


def test_dead_policy_ends_episode_truncated_and_dataset_still_loads(run):
    lost = run['lost']
    assert lost['outcome'] == 'node_lost' and 'policy' in lost['detail']
    assert lost['truncated'] and not lost['terminated']
    saved = run['saved'][lost['episode']]
    episodes = load_episodes(saved['dataset_root'], saved['dataset_id'])
    assert [e['episode'] for e in episodes] == [e['episode'] for e in run['ends']] + [
        lost['episode']]
    assert episodes[-1]['truncations'][-1] and not episodes[-1]['terminations'].any()


def _bag_messages(bag_dir):
    """Read a bag with rosbags: {topic: [(raw CDR bytes, deserialized message)]}."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    out = {}
    with AnyReader([Path(bag_dir)], default_typestore=get_typestore(Stores.LATEST)) as reader:
        assert any(p.suffix == '.mcap' for p in Path(bag_dir).iterdir())
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(
                (raw, reader.deserialize(raw, conn.msgtype)))
    return out


def _window(run, k):
    start = next(s for s in run['starts'] if s['episode'] == k)
    end = next(e for e in run['ends'] if e['episode'] == k)
    return start['stamp_s'], end['stamp_s']


def test_bags_hold_every_published_frame_and_action(run):
    # The control period. The camera runs at 30 Hz, but a simulator slowed down by a loaded
    # host publishes fewer frames: the gaps are bounded by the control period here, and every
    # frame that was published is checked against the bag below.
    period_s = 0.1
    for end in run['ends']:
        k = end['episode']
        saved = run['saved'][k]
        msgs = _bag_messages(saved['bag'])
        bag_frames = {_cdr_stamp_s(raw): hashlib.sha1(raw).hexdigest()
                      for raw, _ in msgs.get('/camera/color/image_raw', [])}
        t0, t1 = _window(run, k)
        stamps = sorted(t for t in bag_frames if t0 < t < t1)
        # The bag covers the episode with no gap of a control period. At the edges
        # two periods: on a loaded 2-core host the first frame came 151 ms after the start
        # once (clean-clone run; the frames lost are checked below, against this observer).
        assert stamps and stamps[0] - t0 < 2 * period_s and t1 - stamps[-1] < 2 * period_s
        assert np.max(np.diff(stamps)) < 1.5 * period_s, 'a camera frame is missing'
        # Every frame this process saw during the episode is in the bag, byte for byte (this
        # process is only an observer: under load it may see fewer frames than were sent).
        seen = {t: h for t, h in run['frames'].items() if t0 + 0.05 < t < t1 - 0.05}
        assert not sorted(set(seen) - set(bag_frames)), 'published frames missing from bag'
        assert all(bag_frames[t] == h for t, h in seen.items())
        assert saved['frames_logged'] == len(bag_frames)
        for topic in ('/joint_states', '/policy/image', '/policy/action',
                      '/camera/color/camera_info'):
            assert msgs.get(topic), f'{topic} missing from {saved["bag"]}'
        img = msgs['/camera/color/image_raw'][0][1]
        assert (img.width, img.height, img.encoding) == (640, 480, 'rgb8')


def test_no_camera_frame_published_during_an_episode_is_lost(run):
    # The report's frames_lost: frames stamped inside an episode (seen published here, on
    # camera_info, or in the bag) that the episode's bag lacks; the cut third episode too.
    episodes = [e['episode'] for e in run['ends']] + [run['lost']['episode']]
    windows = episode_windows(run['starts'] + run['ends'] + [run['lost']], episodes)
    assert sorted(windows) == episodes
    logged = {k: bag_frame_stamps_ns(run['saved'][k]['bag']) for k in episodes}
    out = frame_accounting(run['camera_stamps_ns'], logged, windows)
    assert out['frames_lost'] == 0 and out['unreadable_bags'] == [], out
    assert out['frames_published_in_episodes'] >= sum(e['steps'] for e in run['ends'])
    # Not a count of the bags alone: this process saw most of those frames published.
    assert out['frames_observed_in_episodes'] >= 0.5 * out['frames_published_in_episodes']


def test_dataset_matches_published_actions_and_outcomes(run):
    saved = run['saved'][run['ends'][-1]['episode']]
    episodes = load_episodes(saved['dataset_root'], saved['dataset_id'])
    assert len(episodes) == 3
    for ep, end in zip(episodes, run['ends']):
        t0, t1 = _window(run, end['episode'])
        bag = _bag_messages(run['saved'][end['episode']]['bag'])
        logged = np.array([convert.msg_to_action(m) for _, m in bag['/policy/action']
                           if t0 <= convert.stamp_to_s(m.header.stamp) <= t1], np.float32)
        steps = len(ep['actions'])
        assert steps == end['steps']                 # logger and episode manager agree
        np.testing.assert_allclose(ep['actions'], logged[:steps], atol=1e-6)
        # Up to the episode's last step: an end by success or timeout is stamped when the
        # manager decides, and an action on a slightly older frame may still be in flight then
        # (it is not a step of the episode; under load this happens).
        last_s = ep['stamp_s'][steps - 1] if steps else t0
        seen = {convert.stamp_to_s(m.header.stamp): convert.msg_to_action(m)
                for m in run['actions'] if t0 <= convert.stamp_to_s(m.header.stamp) <= last_s}
        stamps = np.asarray(ep['stamp_s'][:-1])
        for t, a in seen.items():   # what this process saw on the wire is in the dataset
            # Matched within a microsecond: the dataset's float seconds come from integer
            # nanoseconds, the wire's from sec + nanosec (they may differ by one float step).
            k = int(np.argmin(np.abs(stamps - t))) if len(stamps) else -1
            assert k >= 0 and abs(stamps[k] - t) < 1e-6, (
                f'episode {end["episode"]}: action stamped {t:.6f} s (start {t0:.6f}) seen '
                f'published but not in the dataset; logger log:\n'
                + run['logger'].log_tail(30))
            np.testing.assert_allclose(ep['actions'][k], a, atol=1e-6)
        assert ep['image'].shape == (steps + 1, 64, 64, 3) and ep['image'].dtype == np.uint8
        assert ep['proprio'].shape == (steps + 1, 6)
        # The tool starts at the home pose, above the bin.
        np.testing.assert_allclose(ep['proprio'][0, :3], [0.55, 0.0, 0.35], atol=0.02)
        assert bool(ep['terminations'][-1]) == end['terminated']
        assert bool(ep['truncations'][-1]) == end['truncated']
        assert ep['rewards'].sum() == (1.0 if end['success'] else 0.0)
        assert not ep['terminations'][:-1].any() and not ep['truncations'][:-1].any()
    assert json.loads(json.dumps(saved))['dataset_id'].startswith('awopt/')
