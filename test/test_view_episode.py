"""``awopt view``: an episode of a recorded run as a Rerun .rrd, read back and compared with the
dataset and the bag; operator labels, notes and interventions; state (insertion) episodes; the
command's one-line errors; no file overwritten without --force; nothing leaves the host."""
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from awopt_ros.learning import view_episode

ROOT = Path(__file__).resolve().parents[1]
AWOPT = Path(sys.prefix) / 'bin' / 'awopt'
DATASET_ID = 'awopt/kuka-grasp-v0'


def read_rrd(path):
    """Return ``(rows, recordings, blueprints)`` of an .rrd: rows = {entity path: [dict of
    'step', 'ros_time_ns' and the component columns (python values)]} of the non-static
    chunks, sorted by step then ros_time; static rows under the key ('static', path)."""
    import pyarrow as pa
    from rerun.chunk import RrdReader
    reader = RrdReader(path)
    rows = defaultdict(list)
    for chunk in reader.stream().to_chunks():
        batch = chunk.to_record_batch()
        names = batch.schema.names
        data = {}
        for name in names:
            if name == 'rerun.controls.RowId':
                continue
            column = batch.column(name)
            if name == 'ros_time':
                column = column.cast(pa.int64())
                name = 'ros_time_ns'
            data[name] = column.to_pylist()
        key = ('static', chunk.entity_path) if chunk.is_static else chunk.entity_path
        for i in range(batch.num_rows):
            rows[key].append({name: values[i] for name, values in data.items()})
    for key, value in rows.items():
        value.sort(key=lambda r: (r.get('step') is not None, r.get('step') or 0,
                                  r.get('ros_time_ns') or 0))
    return rows, reader.recordings(), reader.blueprints()


def scalars(rows, path):
    return np.array([r['Scalars:scalars'] for r in rows[path]], dtype=np.float64)


def texts(rows, path):
    return [r['TextLog:text'][0] for r in rows[path]]


@pytest.fixture
def run_copy(recorded_demo_run, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(recorded_demo_run, run)
    return run


@pytest.fixture
def no_analytics_env(monkeypatch):
    """run_view sets CI and drops the analytics variables in os.environ: restore them after."""
    monkeypatch.setenv('CI', os.environ.get('CI', '1'))
    for name in view_episode.ANALYTICS_ON_VARS:
        monkeypatch.delenv(name, raising=False)


def awopt_view(*args, strace_out=None):
    cmd = [str(AWOPT), 'view', *map(str, args)]
    if strace_out is not None:
        from test_no_offhost_traffic import STRACE
        cmd = [STRACE, '-f', '-e', 'trace=connect,sendto,sendmsg', '-o', str(strace_out),
               *cmd]
    env = dict(os.environ, FORCE_RERUN_ANALYTICS='1')      # the viewer must switch it off
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def load_episode(run, number):
    from awopt_ros.core.dataset import load_episodes
    return [ep for ep in load_episodes(run, DATASET_ID) if ep['episode'] == number][-1]


def test_view_writes_the_episode_as_recorded(run_copy):
    episode = load_episode(run_copy, 2)
    proc = awopt_view(run_copy, '--episode', 2)
    assert proc.returncode == 0, proc.stderr
    out = run_copy / 'viewer' / 'episode_0002.rrd'
    assert f'wrote {out}' in proc.stdout
    rows, recordings, blueprints = read_rrd(out)
    assert len(recordings) == 1 and len(blueprints) == 1
    steps = len(episode['actions'])
    assert steps >= 2

    # dataset: policy images bitwise, actions, success, reward, proprio, over the step timeline
    images = rows['/policy/image']
    assert [r['step'] for r in images] == list(range(steps + 1))
    for k, r in enumerate(images):
        assert bytes(r['Image:buffer'][0]) == episode['image'][k].tobytes()
        assert r['Image:format'][0]['width'] == episode['image'].shape[2]
    stamps_ns = [r['ros_time_ns'] for r in images]
    assert np.allclose(np.array(stamps_ns) * 1e-9, episode['stamp_s'], atol=1e-6)
    assert [r['step'] for r in rows['/action/continuous']] == list(range(steps))
    assert np.array_equal(scalars(rows, '/action/continuous'),
                          episode['actions'][:, 0:4].astype(np.float64))
    assert np.array_equal(scalars(rows, '/action/discrete'),
                          episode['actions'][:, 4:7].astype(np.float64))
    assert np.array_equal(scalars(rows, '/action/noise_free/continuous'),
                          episode['noise_free_action'][:, 0:4].astype(np.float64))
    assert np.array_equal(scalars(rows, '/success/ground_truth')[:, 0],
                          episode['success_probability'].astype(np.float64))
    assert np.array_equal(scalars(rows, '/reward')[:, 0], episode['rewards'])
    assert np.array_equal(scalars(rows, '/proprio/position'),
                          episode['proprio'][:, 0:3].astype(np.float64))
    finite = np.isfinite(episode['success_classifier_probability'])
    assert len(rows['/success/classifier']) == int(finite.sum())
    assert rows[('static', '/action/continuous')][0]['SeriesLines:names'] == [
        'dx', 'dy', 'dz', 'dyaw']

    # bag: every camera frame and joint state of the episode's bag, on both timelines
    from awopt_ros.core.bag import read_messages
    messages = read_messages(run_copy / 'bags' / 'episode_0002')
    camera = [m for m in messages if m[0] == '/camera/color/image_raw']
    joints = [m for m in messages if m[0] == '/joint_states']
    assert len(rows['/camera/image']) == len(camera) >= steps
    assert rows['/camera/image'][0]['EncodedImage:media_type'] == ['image/jpeg']
    assert len(rows['/joints/position']) == len(joints)
    stepped = [r['step'] for r in rows['/camera/image'] if r.get('step') is not None]
    assert set(range(steps + 1)) <= set(stepped)
    summary = rows[('static', '/summary')][0]['TextDocument:text'][0]
    assert 'Episode 2' in summary and f'seed: {episode["seed"]}' in summary
    log = texts(rows, '/log/episode')
    assert any(t.startswith('recorded outcome:') for t in log)
    assert any('"event": "start"' in t for t in texts(rows, '/log/events'))

    # same output again: refused without --force, the file kept; --force replaces it
    before = out.stat().st_mtime_ns
    proc = awopt_view(run_copy, '--episode', 2)
    assert proc.returncode == 2
    assert proc.stderr.strip().count('\n') == 0 and 'would be overwritten' in proc.stderr
    assert out.stat().st_mtime_ns == before
    proc = awopt_view(run_copy, '--episode', 2, '--force', '--jpeg-quality', 0, '--out',
                      run_copy / 'lossless.rrd')
    assert proc.returncode == 0, proc.stderr
    rows, _, _ = read_rrd(run_copy / 'lossless.rrd')
    for r, message in zip(rows['/camera/image'], camera):
        assert len(r['Image:buffer'][0]) == 640 * 480 * 3
    from awopt_ros.core.bag import default_typestore
    first = default_typestore().deserialize_cdr(camera[0][3], camera[0][1])
    assert bytes(rows['/camera/image'][0]['Image:buffer'][0]) == \
        view_episode.image_array(first).tobytes()


def test_view_shows_labels_notes_and_interventions(recorded_demo_run, tmp_path):
    episode = dict(load_episode(recorded_demo_run, 1))
    steps = len(episode['actions'])
    inter = np.zeros(steps + 1, np.int8)
    inter[2:4] = 1
    policy = episode['policy'].copy()
    policy[2:4] = 6
    own = np.full((steps + 1, 7), np.nan, np.float32)
    own[2:4] = np.arange(14).reshape(2, 7) / 100
    episode.update(label='failure', discarded=True, notes=['gripper slipped', 'discarded: x'],
                   intervention=inter, policy=policy, policy_action=own)
    counts = view_episode.write_episode(episode, tmp_path / 'ep.rrd', dataset_id=DATASET_ID)
    assert counts['camera_frames'] == 0 and counts['policy_images'] == steps + 1
    assert not (tmp_path / 'ep.rrd.partial').exists()
    rows, _, blueprints = read_rrd(tmp_path / 'ep.rrd')
    assert len(blueprints) == 1 and '/camera/image' not in rows
    log = texts(rows, '/log/episode')
    assert 'operator label: failure' in log
    assert any(t.startswith('discarded by the operator') for t in log)
    assert 'note: gripper slipped' in log
    assert 'step 2: operator intervention starts' in log
    assert 'step 4: operator intervention ends' in log
    assert 'step 2: policy operator' in log
    assert np.array_equal(scalars(rows, '/intervention')[:, 0], inter.astype(float))
    assert [r['step'] for r in rows['/action/policy/continuous']] == [2, 3]
    assert np.array_equal(scalars(rows, '/action/policy/discrete'), own[2:4, 4:7].astype(float))
    summary = rows[('static', '/summary')][0]['TextDocument:text'][0]
    assert 'operator label: failure' in summary and '**discarded**' in summary
    assert 'intervention steps: 2 of' in summary and '- gripper slipped' in summary


def test_view_older_dataset_without_the_new_keys(recorded_demo_run, tmp_path):
    episode = dict(load_episode(recorded_demo_run, 1))
    for key in ('label', 'discarded', 'notes', 'intervention', 'policy_action',
                'noise_free_action', 'success_classifier_probability', 'reward_source',
                'ground_truth_success'):
        episode.pop(key, None)
    view_episode.write_episode(episode, tmp_path / 'old.rrd')
    rows, _, _ = read_rrd(tmp_path / 'old.rrd')
    assert '/intervention' not in rows and '/action/noise_free/continuous' not in rows
    assert '/success/classifier' not in rows
    assert len(rows['/policy/image']) == len(episode['actions']) + 1


def test_view_state_episode(tmp_path):
    from awopt_ros.core.task import INSERTION_STATE_NAMES
    rng = np.random.default_rng(0)
    steps = 5
    episode = {'id': 0, 'seed': 3, 'episode': 1, 'reward_source': 'ground_truth',
               'ground_truth_success': True,
               'state': rng.normal(size=(steps + 1, len(INSERTION_STATE_NAMES))).astype(
                   np.float32),
               'actions': rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
               'rewards': np.r_[np.zeros(steps - 1), 1.0],
               'terminations': np.r_[np.zeros(steps - 1, bool), True],
               'truncations': np.zeros(steps, bool),
               'success_probability': np.linspace(0, 1, steps + 1).astype(np.float32),
               'policy': np.full(steps + 1, 4), 'stamp_s': 1.7e9 + 0.1 * np.arange(steps + 1),
               'command_m': rng.normal(size=(steps + 1, 3)).astype(np.float32)}
    bag = {'camera_topic': None, 'camera': [], 'joints': [], 'events': [], 'diagnostics': [],
           'wrench': [(1.7e9 + 0.05, np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3]))],
           'skipped': []}
    view_episode.write_episode(episode, tmp_path / 'ins.rrd', bag=bag,
                               dataset_id='awopt/sawyer-insertion-v0')
    rows, _, _ = read_rrd(tmp_path / 'ins.rrd')
    assert np.array_equal(scalars(rows, '/state/force'), episode['state'][:, 6:9].astype(float))
    assert np.array_equal(scalars(rows, '/state/rel'), episode['state'][:, 0:3].astype(float))
    assert np.array_equal(scalars(rows, '/action/residual'), episode['actions'].astype(float))
    assert np.array_equal(scalars(rows, '/command'), episode['command_m'].astype(float))
    assert np.array_equal(scalars(rows, '/wrench/force'), [[1.0, 2.0, 3.0]])
    assert rows['/wrench/force'][0]['step'] == 0
    assert rows[('static', '/state/force')][0]['SeriesLines:names'] == [
        'force_x', 'force_y', 'force_z']
    # wall-clock stamps: a timestamp timeline (ns since the epoch)
    assert abs(rows['/action/residual'][0]['ros_time_ns'] * 1e-9 - 1.7e9) < 1e-3
    assert 'recorded outcome: success after 5 steps (return 1)' in texts(rows, '/log/episode')


def test_view_command_errors(run_copy, tmp_path, capsys, monkeypatch, no_analytics_env):
    import argparse

    from awopt_ros.view_cli import add_view_args, run_view

    def run(*argv):
        parser = argparse.ArgumentParser()
        add_view_args(parser)
        code = run_view(parser.parse_args([str(a) for a in argv]))
        err = capsys.readouterr().err.strip()
        return code, err

    code, err = run(run_copy, '--episode', 7)
    assert code == 2 and err.count('\n') == 0
    assert err.startswith('awopt view: error: argument --episode: no episode 7') and '1..2' in err
    code, err = run(tmp_path / 'missing')
    assert code == 2 and 'no run directory' in err
    (tmp_path / 'empty').mkdir()
    code, err = run(tmp_path / 'empty')
    assert code == 2 and 'is not a run directory' in err
    code, err = run(run_copy, '--episode', 1, '--out', tmp_path / 'x.png')
    assert code == 2 and 'must end with .rrd' in err
    code, err = run(run_copy, '--index', 9)
    assert code == 2 and 'argument --index: no index 9' in err
    (tmp_path / 'insertion' / 'residual').mkdir(parents=True)
    shutil.copytree(run_copy / 'datasets', tmp_path / 'insertion' / 'residual' / 'datasets')
    code, err = run(tmp_path / 'insertion')
    assert code == 2 and 'holds the run directories residual: name one' in err
    code, err = run(run_copy, '--episode', 1, '--camera-topic', '/nope/color/image_raw')
    assert code == 2 and 'argument --camera-topic' in err
    assert not (run_copy / 'viewer').exists()
    # --spawn without a desktop: the file is written, the viewer not started, exit status 1
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    code, err = run(run_copy, '--episode', 1, '--out', tmp_path / 'spawn.rrd', '--spawn')
    assert code == 1 and 'no desktop here' in err and (tmp_path / 'spawn.rrd').is_file()
    # default: the last episode; a bag that is missing leaves the dataset part
    shutil.rmtree(run_copy / 'bags' / 'episode_0002')
    code, err = run(run_copy, '--out', tmp_path / 'last.rrd')
    assert code == 0 and 'no bag at' in err
    rows, _, _ = read_rrd(tmp_path / 'last.rrd')
    assert '/camera/image' not in rows and len(rows['/policy/image']) > 0
    assert 'Episode 2' in rows[('static', '/summary')][0]['TextDocument:text'][0]


def test_find_bag_matches_seed_and_order(recorded_demo_run, tmp_path):
    """Two recordings into one run directory: bags episode_0001 and episode_0001_1; each
    dataset episode gets the bag with its seed, in recording order."""
    from awopt_ros.learning.view_episode import find_bag
    run = tmp_path / 'run'
    (run / 'bags').mkdir(parents=True)
    source = recorded_demo_run / 'bags' / 'episode_0001'
    seed = view_episode.bag_metadata(source)['awopt_seed']
    for name, bag_seed in (('episode_0001', seed), ('episode_0001_1', '77'),
                           ('episode_0001_2', seed)):
        shutil.copytree(source, run / 'bags' / name)
        meta = run / 'bags' / name / 'metadata.yaml'
        meta.write_text(meta.read_text().replace(f"awopt_seed: '{seed}'",
                                                 f"awopt_seed: '{bag_seed}'"))
    episodes = [{'id': 0, 'episode': 1, 'seed': int(seed)}, {'id': 3, 'episode': 1, 'seed': 77},
                {'id': 4, 'episode': 1, 'seed': int(seed)}, {'id': 5, 'episode': 1, 'seed': 5},
                {'id': 6, 'episode': 2, 'seed': 1}]
    assert find_bag(run, episodes[0], episodes)[0].name == 'episode_0001'
    assert find_bag(run, episodes[1], episodes)[0].name == 'episode_0001_1'
    assert find_bag(run, episodes[2], episodes)[0].name == 'episode_0001_2'
    bag, note = find_bag(run, episodes[3], episodes)
    assert bag is None and 'hold other episodes' in note
    bag, note = find_bag(run, episodes[4], episodes)
    assert bag is None and note.startswith('no bag at')


def test_analytics_off_env_and_spawn(monkeypatch, tmp_path):
    env = view_episode.analytics_off_env({'FORCE_RERUN_ANALYTICS': '1', 'TELEMETRY_ENABLED':
                                          'true', 'PATH': '/bin', 'HOME': '/h'})
    assert env == {'CI': '1', 'PATH': '/bin', 'HOME': '/h'}
    assert view_episode.analytics_off_env({'CI': 'true'})['CI'] == 'true'
    calls = []

    def popen(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return SimpleNamespace(pid=1)

    monkeypatch.setenv('TMPDIR', str(tmp_path))
    monkeypatch.setenv('FORCE_RERUN_ANALYTICS', '1')
    import tempfile
    monkeypatch.setattr(tempfile, 'tempdir', None)
    proc, log = view_episode.spawn_viewer(Path('/x/episode_0001.rrd'), popen=popen)
    (cmd, kwargs), = calls
    assert proc.pid == 1 and log.name == 'viewer.log' and kwargs['stdout'].name == str(log)
    assert cmd[-1] == '/x/episode_0001.rrd' and cmd[1:3] == ['-m', 'rerun_cli']
    assert cmd[cmd.index('--bind') + 1] == '127.0.0.1'
    env = kwargs['env']
    assert env['CI'] and 'FORCE_RERUN_ANALYTICS' not in env
    assert kwargs['start_new_session']
    state = Path(env['XDG_DATA_HOME'])
    assert state.parent == tmp_path and log.parent == state
    assert 'check_for_updates_on_startup:false' in (state / 'rerun' / 'app.ron').read_text()


def test_image_array_encodings():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), np.uint8)
    padded[:, :9] = rgb[..., ::-1].reshape(2, 9)
    msg = SimpleNamespace(encoding='bgr8', height=2, width=3, step=12, data=padded.reshape(-1))
    assert np.array_equal(view_episode.image_array(msg), rgb)
    mono = SimpleNamespace(encoding='mono8', height=2, width=2, step=2,
                           data=np.array([1, 2, 3, 4], np.uint8))
    assert view_episode.image_array(mono)[1, 0].tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match='16UC1'):
        view_episode.image_array(SimpleNamespace(encoding='16UC1', height=1, width=1, step=2,
                                                 data=np.zeros(2, np.uint8)))


def test_bag_topics_are_the_loggers():
    from awopt_ros.nodes import logger
    assert view_episode.JOINTS_TOPIC == logger.JOINTS
    assert view_episode.WRENCH_TOPIC == logger.WRENCH
    assert view_episode.EVENT_TOPIC == logger.EVENT
    assert view_episode.DIAGNOSTICS_TOPIC in logger.STACK_TOPICS
    assert view_episode.camera_topic_of({logger.CAMERA: 'sensor_msgs/msg/Image'}) == \
        logger.CAMERA


def test_view_sends_nothing_off_host(run_copy, tmp_path):
    """``awopt view`` (rerun imported, a recording written) under strace: no connect or send
    to an address off the host, even with FORCE_RERUN_ANALYTICS=1 in its environment."""
    from test_no_offhost_traffic import STRACE, off_host_addresses
    if not os.access(STRACE, os.X_OK):
        pytest.skip('strace is not installed')
    trace = tmp_path / 'strace.txt'
    proc = awopt_view(run_copy, '--episode', 1, '--out', tmp_path / 'ep.rrd', strace_out=trace)
    assert proc.returncode == 0, proc.stderr
    assert off_host_addresses(trace.read_text()) == []


def _vulkan_software_renderer():
    return any(Path(d, 'lvp_icd.x86_64.json').is_file()
               for d in ('/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d'))


def test_spawned_viewer_renders_the_recording_on_the_host(run_copy, tmp_path):
    """The viewer ``--spawn`` starts (same command, environment and state directory), on a
    virtual display with Mesa's software Vulkan: it shows the recording (a screenshot with the
    camera image in it) and connects or sends to nothing off the host: no usage analytics, no
    check for a newer release (the default settings ask api.github.com)."""
    from test_no_offhost_traffic import STRACE, off_host_addresses
    xvfb_run = shutil.which('xvfb-run')
    if not (xvfb_run and os.access(STRACE, os.X_OK) and _vulkan_software_renderer()):
        pytest.skip('needs xvfb-run, strace and Mesa lavapipe (apt: xvfb, strace, '
                    'mesa-vulkan-drivers)')
    out = tmp_path / 'ep.rrd'
    proc = awopt_view(run_copy, '--episode', 2, '--out', out)
    assert proc.returncode == 0, proc.stderr
    shot = tmp_path / 'shot.png'
    state = view_episode.viewer_state_dir(tmp_path)
    env = view_episode.viewer_env(state, dict(os.environ, FORCE_RERUN_ANALYTICS='1',
                                              WGPU_BACKEND='vulkan', HOME=str(tmp_path)))
    trace = tmp_path / 'strace.txt'
    cmd = [xvfb_run, '-a', '-s', '-screen 0 1280x800x24', STRACE, '-f', '-e',
           'trace=connect,sendto,sendmsg,sendmmsg', '-o', str(trace),
           *view_episode.viewer_command(out, ['--window-size', '1280x800',
                                              '--screenshot-to', shot])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240,
                          start_new_session=True)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    assert off_host_addresses(trace.read_text()) == []
    from PIL import Image
    pixels = np.asarray(Image.open(shot).convert('RGB'), dtype=np.float64)
    # the camera view (top left): the simulated scene, not an empty dark panel
    assert pixels[:pixels.shape[0] // 3, :pixels.shape[1] // 3].std() > 20


def test_read_bag_of_an_older_message_compressed_bag(recorded_demo_run, tmp_path):
    """Bags of older versions (per-message zstd payloads) give the same frames and joints."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    from awopt_ros.core.bag import default_typestore, read_messages
    source = recorded_demo_run / 'bags' / 'episode_0001'
    old = tmp_path / 'episode_0001'
    store = default_typestore()
    writer = Writer(old, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    writer.open()
    connections = {}
    for topic, msgtype, stamp_ns, data in read_messages(source):
        if topic not in connections:
            connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
        writer.write(connections[topic], stamp_ns, data)
    writer.close()
    assert b'\x28\xb5\x2f\xfd' in next(old.glob('*.mcap')).read_bytes()
    new, older = view_episode.read_bag(source), view_episode.read_bag(old)
    assert older['camera_topic'] == '/camera/color/image_raw' and older['skipped'] == []
    assert len(older['camera']) == len(new['camera']) > 0
    for (s1, a), (s2, b) in zip(new['camera'], older['camera']):
        assert s1 == s2 and np.array_equal(a, b)
    assert len(older['joints']) == len(new['joints']) and older['events'] == new['events']
