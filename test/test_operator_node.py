"""The operator node in a running stack (real node processes): /operator/label,
/operator/discard and /operator/note reach the dataset's annotations journal, and
core.dataset.load_episodes shows them, while the logger writes the same dataset.

One lockstep stack (the bringup's nodes, the operator among them, as ``awopt demo`` starts
them), two short episodes:
- before any episode ended, a label is refused (``success`` false, the reason in the answer);
- a note published while episode 1 runs, a failure label right after its end (before or
  after the logger has written it: the race is not controlled, both ways must land);
- episode 2 labelled success right after its end, then discarded once the logger saved it.
"""
import json
import os
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.context import Context
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from awopt_ros.core.annotations import journal_path, read_journal
from awopt_ros.core.dataset import load_episodes
from awopt_ros.launcher import Stack, ros_environment
from awopt_ros.ros import convert, qos
from awopt_ros.ros.episode_client import EpisodeClient
from awopt_ros.ros.runner import stack_overrides

MAX_STEPS = 6
CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'awopt_ros_kuka_grasp.yaml'


def _custom_config(tmp_path):
    """The shipped grasp params file with the logger writing elsewhere (no operator section)."""
    doc = yaml.safe_load(CONFIG.read_text())
    assert 'operator' not in doc
    doc['logger']['ros__parameters'].update(output_dir='runs/custom', dataset_name='my-set')
    path = tmp_path / 'custom.yaml'
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_the_operator_follows_the_logger_in_awopt_bringup(tmp_path):
    config = _custom_config(tmp_path)
    stack = Stack(config=config, log_dir=tmp_path)
    assert 'operator' in [n for n, _ in stack.node_specs()]
    assert stack.overrides['operator'] == {'output_dir': 'runs/custom', 'dataset_name': 'my-set'}
    run_dir = str(tmp_path / 'run')          # awopt demo --run-dir: the logger's override
    stack = Stack(config=config, log_dir=tmp_path, overrides={'logger': {'output_dir': run_dir}})
    assert stack.overrides['operator'] == {'output_dir': run_dir, 'dataset_name': 'my-set'}
    with pytest.raises(ValueError, match=r"'output_dir'.*operator.output_dir=elsewhere"):
        Stack(config=config, log_dir=tmp_path, overrides={'operator': {'output_dir': 'elsewhere'}})


def test_the_operator_follows_the_logger_in_the_launch_file(monkeypatch, tmp_path):
    from test_launcher import _launch_nodes, _load_launch_file
    config = _custom_config(tmp_path)
    module = _load_launch_file(monkeypatch, str(tmp_path))
    module.check_stack_params(config, 'actor')      # no disagreement without a section
    nodes = {n.kwargs['name']: n.kwargs for n in _launch_nodes(module, config=config)}
    assert nodes['operator']['executable'] == 'awopt_operator'
    assert {'output_dir': 'runs/custom', 'dataset_name': 'my-set'} in \
        nodes['operator']['parameters']


def _call(client, service, request, timeout_s=20.0):
    assert client.spin_until(service.service_is_ready, timeout_s), 'service not available'
    future = service.call_async(request)
    assert client.spin_until(future.done, timeout_s), 'no answer'
    return future.result()


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('operator')
    overrides = stack_overrides(out, seed=300, lockstep=True,
                                extra={'episode_manager': {'max_steps': MAX_STEPS}})
    stack = Stack(policy='actor', log_dir=out / 'logs', overrides=overrides,
                  env=ros_environment(domain_id=os.environ['ROS_DOMAIN_ID']))
    ctx = Context()
    rclpy.init(context=ctx)
    client = EpisodeClient(context=ctx)
    annotations = []
    client.create_subscription(String, '/operator/annotation',
                               lambda m: annotations.append(json.loads(m.data)), qos.LATCHED)
    label = client.create_client(SetBool, '/operator/label')
    discard = client.create_client(Trigger, '/operator/discard')
    note = client.create_publisher(String, '/operator/note', qos.COMMAND)
    actions = []
    client.create_subscription(JointState, '/policy/action', actions.append, qos.COMMAND)
    answers = {}
    stack.start()
    try:
        alive = lambda: not stack.dead()  # noqa: E731
        assert client.wait_ready(180.0, alive=alive), [n.log_tail() for n in stack.dead()]
        answers['early'] = _call(client, label, SetBool.Request(data=True))
        # episode 1: a note while it runs, a failure label once it ended
        k1 = client.start_episode(timeout_s=60.0, alive=alive)
        assert client.spin_until(lambda: note.get_subscription_count() > 0, 20.0)
        # an action of episode 1 seen here: the episode runs (the operator may not have had
        # its start event yet under load: a note before any episode is held for it, 2 s)
        assert client.spin_until(lambda: any(e.get('episode') == k1 and e['event'] == 'start'
                                             for e in client.events), 30.0)
        t_start = next(e['stamp_s'] for e in client.events if e.get('episode') == k1)
        assert client.spin_until(lambda: any(convert.stamp_to_s(m.header.stamp) >= t_start
                                             for m in actions), 30.0)
        note.publish(String(data='gripper camera fogged'))
        end1 = client.wait_end(k1, 90.0, alive=alive)
        assert end1 is not None and end1['event'] == 'end'
        answers['label1'] = _call(client, label, SetBool.Request(data=False))
        assert client.wait_saved(k1, 60.0) is not None
        # episode 2: success label at once, discard after the logger saved it
        k2 = client.start_episode(timeout_s=60.0, alive=alive)
        assert client.wait_end(k2, 90.0, alive=alive) is not None
        answers['label2'] = _call(client, label, SetBool.Request(data=True))
        assert client.wait_saved(k2, 60.0) is not None
        answers['discard2'] = _call(client, discard, Trigger.Request())
        assert client.spin_until(lambda: len(annotations) >= 4, 20.0), annotations
    finally:
        codes = stack.stop()
        client.destroy_node()
        rclpy.try_shutdown(context=ctx)
    return dict(out=out, k1=k1, k2=k2, answers=answers, annotations=annotations, codes=codes,
                saved=dict(client.saved))


def test_services_answer_and_name_the_episode(run):
    early = run['answers']['early']
    assert not early.success and 'no episode has ended' in early.message
    assert run['answers']['label1'].success
    assert f'episode {run["k1"]} labelled failure' in run['answers']['label1'].message
    assert run['answers']['label2'].success
    assert f'episode {run["k2"]} labelled success' in run['answers']['label2'].message
    discard = run['answers']['discard2']
    # 'dataset index 1' once the operator has the logger's report, which this test process
    # may hear first
    assert discard.success and f'episode {run["k2"]} discarded (' in discard.message
    assert all(code == 0 for code in run['codes'].values()), run['codes']


def test_load_episodes_shows_the_operator_annotations(run):
    saved = run['saved'][run['k2']]
    assert saved['dataset_root'] == str(run['out'])
    episodes = load_episodes(run['out'], saved['dataset_id'])
    assert [e['episode'] for e in episodes] == [run['k1'], run['k2']]
    ep1, ep2 = episodes
    assert (ep1['label'], ep1['discarded'], ep1['notes']) == (
        'failure', False, ['gripper camera fogged'])
    assert (ep2['label'], ep2['discarded'], ep2['notes']) == ('success', True, [])
    records = read_journal(journal_path(run['out'], saved['dataset_id']))
    assert len(records) == 4 and {r['source'] for r in records} == {'operator'}
    assert records[-1] == dict(records[-1], episode=run['k2'], discarded=True)


def test_each_record_is_published(run):
    published = run['annotations']
    assert [(a['episode'], a.get('label'), a.get('discarded'), a.get('note'))
            for a in published] == [
        (run['k1'], None, None, 'gripper camera fogged'), (run['k1'], 'failure', None, None),
        (run['k2'], 'success', None, None), (run['k2'], None, True, None)]
    assert all(a['dataset_root'] == str(run['out']) for a in published)
    # episode 1's records came before the logger created the dataset (queued, written later);
    # episode 2's after
    assert [a['written'] for a in published[2:]] == [True, True]


# -- the node's answers, in-process (no stack) ------------------------------------------------
def _operator_node(ctx, out):
    from rclpy.parameter import Parameter

    from awopt_ros.nodes.operator import OperatorNode
    node = OperatorNode(context=ctx, parameter_overrides=[
        Parameter('output_dir', value=str(out)), Parameter('dataset_name', value='kuka-grasp'),
        Parameter('flush_period_s', value=60.0)])
    published = []
    node.annotation_pub.publish = lambda msg: published.append(json.loads(msg.data))
    for event in ({'event': 'start', 'episode': 1, 'seed': 4, 'stamp_s': 10.0},
                  {'event': 'end', 'episode': 1, 'stamp_s': 20.0}):
        node._on_event(String(data=json.dumps(event)))
    return node, published


def test_a_failed_journal_write_is_answered_as_queued_and_written_once(ros_context, tmp_path):
    """The answer matches what happens: the record stays queued after a failed write and is
    written later, so the answer is success (queued, with the reason), never a failure that
    the operator would answer by sending it again."""
    node, _ = _operator_node(ros_context, tmp_path)
    try:
        journal = journal_path(tmp_path, 'awopt/kuka-grasp-v0')
        journal.mkdir(parents=True)          # a journal that cannot be written
        answer = node._on_label(SetBool.Request(data=False), SetBool.Response())
        assert answer.success, answer.message
        assert 'queued: journal write failed' in answer.message
        assert 'not in the dataset yet' in answer.message
        journal.rmdir()
        node._flush()
        assert [r['label'] for r in read_journal(journal)] == ['failure']
        assert not node.session.pending
    finally:
        node.destroy_node()


def test_a_record_of_an_episode_not_written_is_cancelled_and_published(ros_context, tmp_path):
    node, published = _operator_node(ros_context, tmp_path)
    try:
        journal = journal_path(tmp_path, 'awopt/kuka-grasp-v0')
        journal.parent.mkdir(parents=True)
        answer = node._on_discard(Trigger.Request(), Trigger.Response())
        assert answer.success and 'not in the dataset yet' in answer.message
        record = published[-1]
        assert (record['after_index'], record['seed'], record['start_stamp_s'],
                record['end_stamp_s']) == (0, 4, 10.0, 20.0)
        node._on_saved(String(data=json.dumps({
            'episode': 1, 'dataset_written': False, 'dataset_index': None, 'steps': 0,
            'dataset_root': str(tmp_path), 'dataset_id': 'awopt/kuka-grasp-v0',
            'write_error': 'no steps'})))
        assert published[-1]['cancels'] == [record['id']]
        assert read_journal(journal)[-1]['cancels'] == [record['id']]
        answer = node._on_label(SetBool.Request(data=True), SetBool.Response())
        assert not answer.success and 'not in the dataset' in answer.message
    finally:
        node.destroy_node()
