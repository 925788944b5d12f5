"""In-process: a note that reaches the operator node before it knows of any episode (the first
start event and the note race on separate topics) goes to the episode that starts within
``EARLY_NOTE_HOLD_S``; without a start in that time it is refused and nothing is recorded."""
import json
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from std_msgs.msg import String

from awopt_ros.nodes import operator as operator_node
from awopt_ros.ros import qos


def _rig(ctx, tmp_path):
    node = operator_node.OperatorNode(context=ctx, parameter_overrides=[
        Parameter('output_dir', value=str(tmp_path / 'run')),
        Parameter('flush_period_s', value=0.1)])
    tester = rclpy.create_node('tester', context=ctx)
    records = []
    tester.create_subscription(String, operator_node.ANNOTATION,
                               lambda m: records.append(json.loads(m.data)), qos.LATCHED)
    events = tester.create_publisher(String, operator_node.EVENT, qos.LATCHED)
    note = tester.create_publisher(String, '/operator/note', qos.COMMAND)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(tester)
    return node, tester, ex, records, events, note


def _spin(ex, cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.02)
    return cond()


def _start(events, episode):
    events.publish(String(data=json.dumps({'event': 'start', 'episode': episode, 'seed': 7,
                                           'stamp_s': 100.0})))


def test_a_note_before_the_first_start_goes_to_that_episode(ros_context, tmp_path):
    node, tester, ex, records, events, note = _rig(ros_context, tmp_path)
    try:
        assert _spin(ex, lambda: note.get_subscription_count() > 0)
        note.publish(String(data='gripper camera fogged'))
        assert _spin(ex, lambda: node._early_notes)
        assert records == []                     # held, not refused, not yet recorded
        _start(events, 1)
        assert _spin(ex, lambda: records)
        assert [(r['episode'], r['note']) for r in records] == [(1, 'gripper camera fogged')]
        assert node._early_notes == []
    finally:
        ex.shutdown()
        node.destroy_node()
        tester.destroy_node()


def test_a_note_with_no_start_in_time_is_refused(ros_context, tmp_path, monkeypatch):
    monkeypatch.setattr(operator_node, 'EARLY_NOTE_HOLD_S', 0.3)
    node, tester, ex, records, events, note = _rig(ros_context, tmp_path)
    try:
        assert _spin(ex, lambda: note.get_subscription_count() > 0)
        note.publish(String(data='too early'))
        assert _spin(ex, lambda: node._early_notes)
        assert _spin(ex, lambda: not node._early_notes, 3.0)   # dropped by the flush timer
        _start(events, 1)
        _spin(ex, lambda: records, 0.5)
        assert records == []
    finally:
        ex.shutdown()
        node.destroy_node()
        tester.destroy_node()
