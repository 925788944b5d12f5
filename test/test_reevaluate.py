"""``awopt reevaluate``: a model on recorded episodes as the live policy node runs it.

The recorded episodes are the session's ``recorded_demo_run`` (2 lockstep demo episodes of the
shipped actor). Exact re-evaluation needs the proprio the policy acted on (``/policy/proprio``,
``publish_proprio``); when the shared run was recorded without it, this module records its own
2 episodes with it (``proprio_run``).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from awopt_ros.cli import main
from awopt_ros.core import spec
from awopt_ros.core.bag import default_typestore, read_messages
from awopt_ros.core.image_ops import crop_resize
from awopt_ros.learning import reevaluate as rv
from awopt_ros.ros import convert

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / 'models' / 'grasp_awopt.onnx'
BC = ROOT / 'models' / 'grasp_bc.onnx'
CRITIC = ['--critic-encoder', str(ROOT / 'models' / 'grasp_awopt_critic_encoder.onnx'),
          '--critic-head', str(ROOT / 'models' / 'grasp_awopt_critic_head.onnx')]
DATASET = 'awopt/kuka-grasp-v0'


def _bags(run):
    return sorted((Path(run) / 'bags').glob('episode_*'))


@pytest.fixture(scope='module')
def proprio_run(recorded_demo_run, tmp_path_factory):
    """A recorded run whose bags hold ``/policy/proprio``: the shared one if it does, else 2
    episodes recorded here with ``policy:publish_proprio=true``."""
    if all(rv.PROPRIO_TOPIC in rv.bag_topics(b) for b in _bags(recorded_demo_run)):
        return recorded_demo_run
    from recorded_run import record_demo
    return record_demo(tmp_path_factory.mktemp('reevaluate') / 'run',
                       extra=['--set', 'policy:publish_proprio=true'])


def _run(argv, capsys):
    rc = main(['reevaluate', *[str(a) for a in argv], '--no-progress'])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _summary(out_dir):
    return json.loads((Path(out_dir) / 'summary.json').read_text())


# -- done-when: the shipped model on its own episodes; another model ----------------------------


@pytest.mark.parametrize('from_bags', [False, True], ids=['dataset', 'bags'])
def test_shipped_model_reproduces_its_own_episodes(proprio_run, tmp_path, capsys, from_bags):
    out = tmp_path / 'out'
    argv = [SHIPPED, proprio_run, '--out', out, *CRITIC] + (['--from-bags'] if from_bags else [])
    rc, stdout, err = _run(argv, capsys)
    assert rc == 0, err
    doc = _summary(out)
    summary = doc['summary']
    assert summary['episodes'] == 2
    assert summary['deterministic_steps'] == summary['steps'] > 0
    assert summary['verdict'] == 'identical'
    assert summary['diverging_steps'] == 0 and summary['diverged_episodes'] == []
    # Not merely within the tolerance: the same bits (same runtime, same inputs, batch 1).
    for name in rv.CONTINUOUS_NAMES:
        assert summary['continuous'][name]['max_abs'] == 0.0
        assert summary['continuous'][name]['beyond_atol'] == 0.0
    assert all(v == 1.0 for v in summary['decisions'].values())
    for ep in doc['episodes']:
        assert ep['proprio_source'] == 'policy'
        assert ep['first_diverging_step'] is None
        assert ep['new_sources'] == {'actor': ep['steps']}
        assert ep['per_step']['q_logged'] == ep['per_step']['q_new']   # same actions, same Q
        assert all(0.0 <= q <= 1.0 for q in ep['per_step']['q_new'])
        if from_bags:   # every step's preprocessed frame is the recorded /policy/image
            assert ep['policy_images_compared'] == ep['steps']
            assert ep['policy_image_mismatches'] == 0
        assert (out / f'{ep["name"]}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'identical: 0 of' in stdout


def test_another_model_diverges(proprio_run, tmp_path, capsys):
    out = tmp_path / 'out'
    rc, stdout, err = _run([BC, proprio_run, '--out', out, *CRITIC], capsys)
    assert rc == 0, err
    doc = _summary(out)
    summary = doc['summary']
    assert summary['verdict'] == 'diverges'
    assert summary['diverging_steps'] > 0
    assert summary['diverged_episodes']
    assert max(summary['continuous'][n]['max_abs'] for n in rv.CONTINUOUS_NAMES) > 1e-3
    for ep in doc['episodes']:
        if ep['diverged']:
            first = ep['first_diverging_step']
            assert ep['per_step']['diverging'][first]
            assert not any(ep['per_step']['diverging'][:first])
        assert len(ep['per_step']['q_new']) == ep['steps']
    assert 'diverges:' in stdout
    # A deployment gate: the same with --fail-on-divergence exits 1.
    rc, _, _ = _run([BC, proprio_run, '--out', tmp_path / 'gate', '--fail-on-divergence'],
                    capsys)
    assert rc == 1


@pytest.fixture(scope='module')
def switch_run(tmp_path_factory):
    """2 short episodes in mode 'switch' over the shipped actor and critic (the policy's seed
    0 draws a CEM episode, then an actor episode), with exploration noise on the actor and
    the proprio the policy acted on recorded."""
    from recorded_run import record_demo
    return record_demo(tmp_path_factory.mktemp('switch') / 'run', episodes=2, max_steps=5,
                       extra=['--set', 'policy:mode=switch',
                              '--set', 'policy:cem_episode_prob=0.5',
                              '--set', f'policy:critic_encoder_path={CRITIC[1]}',
                              '--set', f'policy:critic_head_path={CRITIC[3]}',
                              '--set', 'policy:actor_noise_std=0.2',
                              '--set', 'policy:publish_proprio=true'])


@pytest.fixture(scope='module')
def switch_report(switch_run, tmp_path_factory):
    """``awopt reevaluate`` of the shipped actor (and critic) on ``switch_run``: the summary
    JSON, by episode policy ('actor' / 'cem')."""
    out = tmp_path_factory.mktemp('switch_out') / 'out'
    assert main(['reevaluate', str(SHIPPED), str(switch_run), '--out', str(out), *CRITIC,
                 '--no-progress', '--fail-on-divergence']) == 0
    doc = _summary(out)
    by_policy = {}
    for ep in doc['episodes']:
        ids = set(ep['per_step']['policy'])
        assert len(ids) == 1, ids
        by_policy[{v: k for k, v in rv.POLICY_IDS.items()}[ids.pop()]] = ep
    assert set(by_policy) == {'actor', 'cem'}, 'the switch drew no episode of each policy'
    return doc, by_policy


def test_exploration_noise_is_not_a_divergence(switch_run, switch_report):
    """With exploration noise the robot got noisy actions; the comparison is with the actor's
    recorded noise-free action, so the same model still reproduces every actor step."""
    from awopt_ros.core.dataset import load_episodes
    doc, by_policy = switch_report
    actor = by_policy['actor']
    ep, = [e for e in load_episodes(switch_run, DATASET) if e['episode'] == actor['episode']]
    t = len(ep['actions'])
    noisy = np.any(ep['actions'][:, spec.CONTINUOUS]
                   != ep['noise_free_action'][:t, spec.CONTINUOUS], axis=1)
    assert noisy.sum() >= t // 2           # the noise was there
    assert actor['deterministic_steps'] == t
    assert actor['diverging_steps'] == 0 and not actor['diverged']
    assert actor['all_steps']['continuous']['dx']['max_abs'] == 0.0
    assert doc['summary']['verdict'] == 'identical'
    assert doc['summary']['deterministic_steps'] == t


def test_cem_steps_are_not_counted_and_the_critic_scores_as_live(switch_run, switch_report):
    """A CEM episode: no deterministic step (its differences are in ``all_steps``), and the
    critic's Q(s, a_logged) is the Q the live CEM reported for the action it chose."""
    _, by_policy = switch_report
    cem = by_policy['cem']
    assert cem['deterministic_steps'] == 0 and cem['steps'] > 0
    assert cem['diverging_steps'] == 0 and cem['all_steps']['diverging_steps'] > 0
    typestore = default_typestore()
    live_q = {}
    for topic, msgtype, _, data in read_messages(switch_run / 'bags' / cem['name']):
        if topic == rv.DECISION_TOPIC:
            decision = json.loads(typestore.deserialize_cdr(data, msgtype).data)
            stamp = decision['stamp']
            live_q[round(stamp['sec'] + stamp['nanosec'] * 1e-9, 6)] = decision.get('q')
    episode, = [e for e in rv.dataset_episodes(switch_run, DATASET)[0]
                if e.number == cem['episode']]
    expected = [live_q[round(s, 6)] for s in episode.stamp_s]
    np.testing.assert_allclose(cem['per_step']['q_logged'], expected, atol=1e-6)


def test_proprio_source_is_reported(recorded_demo_run, tmp_path, capsys):
    """The shared run: 'policy' where its bags hold /policy/proprio, else 'joint_states' and a
    note saying how to record it."""
    rc, stdout, err = _run([SHIPPED, recorded_demo_run, '--out', tmp_path / 'o'], capsys)
    assert rc == 0, err
    has = [rv.PROPRIO_TOPIC in rv.bag_topics(b) for b in _bags(recorded_demo_run)]
    sources = {ep['proprio_source'] for ep in _summary(tmp_path / 'o')['episodes']}
    if all(has):
        assert sources == {'policy'}
    else:
        assert sources == {'joint_states'}
        assert 'publish_proprio=true' in stdout


# -- preprocessing: the bag's camera frames through crop_resize are the live policy images ----


def test_bag_frames_through_preprocessing_equal_recorded_policy_images(recorded_demo_run):
    typestore = default_typestore()
    crop, size = list(spec.POLICY_CROP_XYWH), spec.POLICY_IMAGE_SIZE
    checked = 0
    for bag in _bags(recorded_demo_run):
        frames, policy_images = {}, {}
        for topic, msgtype, _, data in read_messages(bag):
            if topic in (rv.CAMERA_TOPIC, rv.POLICY_IMAGE_TOPIC):
                msg = typestore.deserialize_cdr(data, msgtype)
                stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
                (frames if topic == rv.CAMERA_TOPIC else policy_images)[stamp] = msg
        assert policy_images
        for stamp, recorded in policy_images.items():
            assert stamp in frames, f'{bag}: no camera frame for the policy image at {stamp}'
            ours = crop_resize(convert.image_view(frames[stamp]), crop, size)
            live = convert.image_view(recorded)
            assert ours.dtype == live.dtype and ours.shape == live.shape
            assert np.array_equal(ours, live), f'{bag}: policy image at {stamp} differs'
            checked += 1
        # bag_episode does the same for every step and counts mismatches
        ep = rv.bag_episode(bag, crop, size)
        assert ep.policy_images_compared == ep.steps > 0
        assert ep.policy_image_mismatches == 0
    assert checked >= 2 * 12


def test_bag_episode_finds_another_camera_namespace(recorded_demo_run, monkeypatch):
    """A bag of a bringup with another camera_ns (e.g. /lbr/camera): its only
    */color/image_raw topic is used, and the episode says so."""
    from awopt_ros.core import bag as bag_module
    original = bag_module.read_messages
    renamed = '/lbr/camera/color/image_raw'

    def read(path):
        return [((renamed if m[0] == rv.CAMERA_TOPIC else m[0]),) + tuple(m[1:])
                for m in original(path)]

    monkeypatch.setattr(bag_module, 'read_messages', read)
    bag = _bags(recorded_demo_run)[0]
    ep = rv.bag_episode(bag, list(spec.POLICY_CROP_XYWH), spec.POLICY_IMAGE_SIZE)
    assert ep.steps > 0 and ep.policy_image_mismatches == 0
    assert any(renamed in note for note in ep.notes)
    # two camera streams and neither is the one asked for: refused, naming the option
    monkeypatch.setattr(bag_module, 'read_messages', lambda path: read(path) + [
        ('/wrist/color/image_raw',) + tuple(m[1:]) for m in original(path)
        if m[0] == rv.CAMERA_TOPIC])
    with pytest.raises(rv.ReevaluateError, match='--camera-topic'):
        rv.bag_episode(bag, list(spec.POLICY_CROP_XYWH), spec.POLICY_IMAGE_SIZE)


def test_bag_episode_steps_match_the_dataset(proprio_run):
    """The steps read from a bag are the dataset's steps: same stamps, images, proprio,
    actions, noise-free actions and policy ids."""
    from awopt_ros.core.dataset import load_episodes
    episodes = {ep['episode']: ep for ep in load_episodes(proprio_run, DATASET)}
    for bag in _bags(proprio_run):
        ep = rv.bag_episode(bag, list(spec.POLICY_CROP_XYWH), spec.POLICY_IMAGE_SIZE)
        ds = episodes[ep.number]
        t = len(ds['actions'])
        assert ep.steps == t
        np.testing.assert_allclose(ep.stamp_s, ds['stamp_s'][:t], atol=1e-9)
        assert np.array_equal(ep.image, ds['image'][:t])
        assert np.array_equal(ep.proprio, ds['proprio'][:t])
        assert np.array_equal(ep.actions, ds['actions'])
        assert np.array_equal(ep.noise_free, ds['noise_free_action'][:t], equal_nan=True)
        assert np.array_equal(ep.policy, ds['policy'][:t])


@pytest.fixture(scope='module')
def repeated_run(recorded_demo_run, tmp_path_factory):
    """A copy of the shared run with a second recording of 1 episode into it: its episode is
    numbered 1 again (bag ``episode_0001_1``, dataset index 2). Scene seed 7 with room for 25
    steps: the grasp succeeds before the limit (the shared run's episodes end by the limit),
    so the policy answers the frame the episode ended on."""
    from recorded_run import record_demo
    run = tmp_path_factory.mktemp('reevaluate_repeated') / 'run'
    shutil.copytree(recorded_demo_run, run)
    return record_demo(run, episodes=1, max_steps=25, seed=7)


def _events(bag):
    typestore = default_typestore()
    events = {}
    for topic, msgtype, _, data in read_messages(bag):
        if topic == rv.EVENT_TOPIC:
            payload = json.loads(typestore.deserialize_cdr(data, msgtype).data)
            events[payload.get('event')] = payload
    return events


def _restamped(message, stamp_s, typestore):
    """A bag message tuple with its header stamp set to ``stamp_s``."""
    from dataclasses import replace
    topic, msgtype, log_ns, data = message
    msg = typestore.deserialize_cdr(data, msgtype)
    sec, nanosec = divmod(int(round(stamp_s * 1e9)), 1_000_000_000)
    msg = replace(msg, header=replace(msg.header, stamp=replace(msg.header.stamp, sec=sec,
                                                                nanosec=nanosec)))
    return (topic, msgtype, log_ns, typestore.serialize_cdr(msg, msgtype))


def test_bag_steps_are_the_executed_actions(recorded_demo_run, repeated_run, tmp_path,
                                            capsys, monkeypatch):
    """From bags, an episode has the dataset's (and the episode manager's) step count: the
    action the policy computed on the frame the episode ended on (stamped at the end event,
    logged when it arrives before the bag closes) was never executed and is no step."""
    from awopt_ros.core import bag as bag_module
    from awopt_ros.core.dataset import load_episodes
    typestore = default_typestore()
    episodes = {ep['episode']: ep for ep in load_episodes(recorded_demo_run, DATASET)}
    original = bag_module.read_messages

    def with_answer_to_last_frame(path):
        """The bag, plus a camera frame and an action stamped at the end event (as the
        lockstep policy answers the frame the episode ended on)."""
        messages = original(path)
        end = _events(path)['end']['stamp_s']
        last = {m[0]: m for m in messages}
        return messages + [_restamped(last[topic], end, typestore)
                           for topic in (rv.CAMERA_TOPIC, rv.ACTION_TOPIC)]

    monkeypatch.setattr(bag_module, 'read_messages', with_answer_to_last_frame)
    for bag in _bags(recorded_demo_run):
        ep = rv.bag_episode(bag, list(spec.POLICY_CROP_XYWH), spec.POLICY_IMAGE_SIZE)
        ds = episodes[ep.number]
        t = len(ds['actions'])
        assert _events(bag)['end']['steps'] == t
        assert ep.steps == t
        np.testing.assert_allclose(ep.stamp_s, ds['stamp_s'][:t], atol=1e-9)
        assert np.array_equal(ep.actions, ds['actions'])
    monkeypatch.setattr(bag_module, 'read_messages', original)
    # a whole run from its bags (its second recording's episode succeeds before the step
    # limit): every episode's steps are the dataset's
    episodes = load_episodes(repeated_run, DATASET)
    out = tmp_path / 'o'
    rc, _, err = _run([SHIPPED, repeated_run, '--from-bags', '--out', out], capsys)
    assert rc == 0, err
    steps = {ep['index']: ep['steps'] for ep in _summary(out)['episodes']}
    assert steps == {i: len(ep['actions']) for i, ep in enumerate(episodes)}


@pytest.mark.parametrize('from_bags', [False, True], ids=['dataset', 'bags'])
def test_repeated_episode_numbers_get_unique_names(repeated_run, tmp_path, capsys, from_bags):
    """Two recordings into one run directory both have an episode 1: both are re-evaluated
    under names of their own (their dataset index added, as ``awopt view`` names them), with
    a plot each, the index in the JSON, from bags each from its own bag; ``--index`` picks
    one."""
    extra = ['--from-bags'] if from_bags else []
    out = tmp_path / 'o'
    rc, _, err = _run([SHIPPED, repeated_run, '--episode', '1', '--out', out, *extra], capsys)
    assert rc == 0, err
    assert 'dataset indices [0, 2]' in err and '--index' in err
    doc = _summary(out)
    names = ['episode_0001_index_0', 'episode_0001_index_2']
    assert [(ep['name'], ep['episode'], ep['index']) for ep in doc['episodes']] == [
        (names[0], 1, 0), (names[1], 1, 2)]
    assert doc['plots'] == [f'{n}.png' for n in names]
    assert [ep['plot'] for ep in doc['episodes']] == doc['plots']
    assert all((out / p).is_file() for p in doc['plots'])
    second = doc['episodes'][1]
    if from_bags:
        assert [Path(ep['path']).name for ep in doc['episodes']] == ['episode_0001',
                                                                     'episode_0001_1']
    # --index: that dataset episode alone
    out = tmp_path / 'o2'
    rc, stdout, err = _run([SHIPPED, repeated_run, '--index', '2', '--out', out, *extra],
                           capsys)
    assert rc == 0, err
    ep, = _summary(out)['episodes']
    assert (ep['name'], ep['index'], ep['steps']) == (names[1], 2, second['steps'])
    assert names[1] in stdout
    # --index with --episode must agree; an index the dataset lacks
    rc, _, err = _run([SHIPPED, repeated_run, '--index', '1', '--episode', '1', '--out',
                       tmp_path / 'o3', *extra], capsys)
    _one_line_error(rc, err, '--index', 'episode 2')
    rc, _, err = _run([SHIPPED, repeated_run, '--index', '9', '--out', tmp_path / 'o3',
                       *extra], capsys)
    _one_line_error(rc, err, '--index', '0, 1, 2')


def test_same_episode_of_two_inputs_keeps_both_plots(recorded_demo_run, tmp_path, capsys):
    out = tmp_path / 'o'
    rc, _, err = _run([SHIPPED, recorded_demo_run, recorded_demo_run, '--episode', '2',
                       '--out', out], capsys)
    assert rc == 0, err
    doc = _summary(out)
    assert doc['plots'] == ['episode_0002.png', 'episode_0002_2.png']
    assert all((out / p).is_file() for p in doc['plots'])


# -- CLI: one-line errors, outputs --------------------------------------------------------------


def _one_line_error(rc, err, *words):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('awopt reevaluate: error: ')
    for word in words:
        assert word in lines[0], lines[0]


def test_cli_errors(recorded_demo_run, tmp_path, capsys):
    run = recorded_demo_run
    rc, _, err = _run([tmp_path / 'missing.onnx', run], capsys)
    _one_line_error(rc, err, 'model not found', 'missing.onnx')
    rc, _, err = _run([ROOT / 'models' / 'insertion_residual.onnx', run], capsys)
    _one_line_error(rc, err, "task 'insertion'")
    rc, _, err = _run([ROOT / 'models' / 'grasp_awopt_critic_encoder.onnx', run], capsys)
    _one_line_error(rc, err, 'critic_encoder', 'not an actor')
    rc, _, err = _run([ROOT / 'models' / 'grasp_success.onnx', run], capsys)
    _one_line_error(rc, err, 'success_classifier')
    (tmp_path / 'empty').mkdir()
    rc, _, err = _run([SHIPPED, tmp_path / 'empty'], capsys)
    _one_line_error(rc, err, 'no episodes')
    rc, _, err = _run([SHIPPED], capsys)
    _one_line_error(rc, err, 'give a run directory')
    rc, _, err = _run([SHIPPED, tmp_path / 'nowhere'], capsys)
    _one_line_error(rc, err, 'does not exist')
    rc, _, err = _run([SHIPPED, run, '--episode', '99'], capsys)
    _one_line_error(rc, err, '--episode', '99')
    rc, _, err = _run([SHIPPED, run, '--dataset-id', 'awopt/other-v0'], capsys)
    _one_line_error(rc, err, 'awopt/other-v0')
    rc, _, err = _run([SHIPPED, run, '--critic-encoder', CRITIC[1]], capsys)
    _one_line_error(rc, err, '--critic-head')
    # a model whose contract is another camera crop than the recording's
    from conftest import rewrite_contract
    other = rewrite_contract(SHIPPED, tmp_path / 'other_crop.onnx', crop_xywh=[0, 0, 480, 480])
    rc, _, err = _run([other, run], capsys)
    _one_line_error(rc, err, 'crop_xywh', '--from-bags')
    rc, stdout, err = _run([other, run, '--from-bags', '--out', tmp_path / 'crop'], capsys)
    assert rc == 0, err           # runs on the bags' frames through its own crop
    assert 'differ from the recorded /policy/image' in stdout
    # no overwrite without --force
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('user file')
    rc, _, err = _run([SHIPPED, run, '--out', out], capsys)
    _one_line_error(rc, err, '--force')
    rc, _, err = _run([SHIPPED, run, '--out', out, '--force'], capsys)
    assert rc == 0, err
    assert (out / 'keep.txt').read_text() == 'user file'


def test_cli_inputs_and_outputs(recorded_demo_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / 'run'
    shutil.copytree(recorded_demo_run, run)
    # a bag directory, one episode, default output under runs/reevaluate/ of the cwd
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = _run([SHIPPED, run / 'bags' / 'episode_0002'], capsys)
    assert rc == 0, err
    outs = list((tmp_path / 'runs' / 'reevaluate').iterdir())
    assert len(outs) == 1 and outs[0].name.startswith('grasp_awopt_run_episode_0002_')
    rc, _, err = _run([SHIPPED, run / 'bags' / 'episode_0002'], capsys)   # never the same dir
    assert rc == 0, err
    assert len(list((tmp_path / 'runs' / 'reevaluate').iterdir())) == 2
    doc = _summary(outs[0])
    assert [ep['episode'] for ep in doc['episodes']] == [2]
    assert doc['episodes'][0]['source'] == 'bag'
    assert doc['plots'] == ['episode_0002.png']
    # --dataset-root/--dataset-id with --episode
    out = tmp_path / 'o2'
    rc, stdout, err = _run([SHIPPED, '--dataset-root', run, '--dataset-id', DATASET,
                            '--episode', '1', '--out', out], capsys)
    assert rc == 0, err
    doc = _summary(out)
    assert doc['model'] == str(SHIPPED) and doc['critic'] is None
    ep, = doc['episodes']
    assert ep['episode'] == 1 and ep['source'] == 'dataset'
    for key in ('steps', 'deterministic_steps', 'continuous', 'decisions', 'diverging_steps',
                'first_diverging_step', 'q_logged_mean', 'q_new_mean', 'proprio_source',
                'per_step'):
        assert key in ep
    assert set(ep['continuous']) == {'dx', 'dy', 'dz', 'dyaw'}
    assert set(ep['continuous']['dx']) == {'mean_abs', 'max_abs', 'beyond_atol'}
    assert set(ep['decisions']) == {'open', 'close', 'terminate'}
    assert len(ep['per_step']['new']) == ep['steps']
    assert ep['q_logged_mean'] is None
    for key in ('episodes', 'steps', 'deterministic_steps', 'diverging_steps', 'verdict',
                'continuous', 'decisions', 'atol'):
        assert key in doc['summary']
    assert (out / 'episode_0001.png').stat().st_size > 10_000
    assert 'episode_0001' in stdout and 'max|dx|' in stdout


def test_operator_label_and_discard_are_reported(recorded_demo_run, tmp_path, capsys):
    """A discarded episode is still re-evaluated (flagged); labels are carried along."""
    run = tmp_path / 'run'
    shutil.copytree(recorded_demo_run, run)
    assert main(['discard', str(run), '--episode', '1', '--reason', 'camera bumped']) == 0
    assert main(['label', str(run), '--episode', '2', 'failure']) == 0
    capsys.readouterr()
    rc, stdout, err = _run([SHIPPED, run, '--out', tmp_path / 'o'], capsys)
    assert rc == 0, err
    episodes = {ep['episode']: ep for ep in _summary(tmp_path / 'o')['episodes']}
    assert episodes[1]['discarded'] is True and episodes[1]['steps'] > 0
    assert any('discarded' in note for note in episodes[1]['notes'])
    assert episodes[2]['discarded'] is False and episodes[2]['label'] == 'failure'
    assert 'episode_0001: discarded by the operator' in stdout


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['reevaluate', '--help'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert '--atol' in text and f'default: {rv.DEFAULT_ATOL}' in text


# -- plain functions ----------------------------------------------------------------------------


def _episode(policy, noise_free_rows, actions):
    t = len(actions)
    nf = np.full((t, 7), np.nan, np.float32)
    for i, row in noise_free_rows.items():
        nf[i] = row
    return rv.RecordedEpisode(
        name='episode_0001', number=1, source='dataset', path='x',
        image=np.zeros((t, 8, 8, 3), np.uint8), proprio=np.zeros((t, 6), np.float32),
        actions=np.asarray(actions, np.float32), noise_free=nf,
        policy=np.asarray(policy, np.int64), stamp_s=np.arange(t, dtype=np.float64))


def test_deterministic_steps_and_reference():
    a = [0.01, 0.0, -0.01, 0.1, 1.0, 0.0, 0.0]
    noisy = [0.02, 0.0, -0.01, 0.1, 1.0, 0.0, 0.0]
    ep = _episode([1, 1, 2, 0], {0: a, 1: a}, [a, noisy, a, a])
    # actor steps with a noise-free action; CEM (2) and scripted (0) steps are not counted
    assert ep.deterministic().tolist() == [True, True, False, False]
    np.testing.assert_array_equal(ep.reference()[1], np.float32(a))    # noise removed
    # older data without any noise-free action: every actor step counts, the action is logged
    old = _episode([1, 1, 2], {}, [a, noisy, a])
    assert old.deterministic().tolist() == [True, True, False]
    np.testing.assert_array_equal(old.reference()[1], np.float32(noisy))


def test_compare_counts_divergence_and_decisions():
    a = np.array([0.01, 0.0, -0.01, 0.1, 1.0, 0.0, 0.0], np.float32)
    ep = _episode([1, 1, 1, 2], {i: a for i in range(3)}, [a] * 4)
    new = np.stack([a] * 4)
    new[1, 0] += 5e-5                      # within atol 1e-4
    new[2, 4], new[2, 5] = 0.0, 1.0        # open -> close: a decision differs
    new[3, 1] += 0.02                      # a CEM step: compared, not counted
    result = {'new': new, 'source': ['actor'] * 4, 'q_logged': None, 'q_new': None}
    report = rv.compare(ep, result, atol=1e-4)
    assert report['deterministic_steps'] == 3
    assert report['diverging_steps'] == 1 and report['first_diverging_step'] == 2
    assert report['decisions']['open'] == pytest.approx(2 / 3)
    assert report['decisions']['terminate'] == 1.0
    assert report['continuous']['dx']['max_abs'] == pytest.approx(5e-5, rel=1e-3)
    assert report['continuous']['dx']['beyond_atol'] == 0.0
    assert report['continuous']['dy']['max_abs'] == 0.0
    assert report['per_step']['diverging'] == [False, False, True, True]
    # every step, the CEM step included (a model against a demonstrator's episodes)
    assert report['all_steps']['diverging_steps'] == 2
    assert report['all_steps']['continuous']['dy']['max_abs'] == pytest.approx(0.02)
    assert report['all_steps']['decisions']['open'] == pytest.approx(3 / 4)
    strict = rv.compare(ep, result, atol=1e-6)
    assert strict['first_diverging_step'] == 1
    assert strict['continuous']['dx']['beyond_atol'] == pytest.approx(1 / 3)
    summary = rv.summarize([report, strict], 1e-4)
    assert summary['deterministic_steps'] == 6 and summary['diverging_steps'] == 3
    assert summary['verdict'] == 'diverges'
    assert 'episode_0001' in rv.table([report], rv.summarize([report], 1e-4))


def test_check_model_kind_rejects_non_actors(tmp_path):
    assert rv.model_geometry(rv.check_model_kind(SHIPPED)) == (
        spec.POLICY_IMAGE_SIZE, list(spec.POLICY_CROP_XYWH))
    with pytest.raises(rv.ReevaluateError, match='model not found'):
        rv.check_model_kind(tmp_path / 'none.onnx')
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not onnx')
    with pytest.raises(rv.ReevaluateError, match='not a readable ONNX model'):
        rv.check_model_kind(bad)
