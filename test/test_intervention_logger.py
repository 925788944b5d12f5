"""The logger with operator interventions (in process, the test_logger_node harness): the
operator topics of best-effort sources reach the bag, and the recorded action of an
intervention step keeps the policy's terminate bit (the episode manager ended on it)."""
import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float32
from test_logger_node import _bag_messages, harness  # noqa: F401 (fixture)

from awopt_ros.core import spec
from awopt_ros.core.dataset import POLICY_IDS, load_episodes
from awopt_ros.ros import convert, qos


def _run_steps(h, rng, steps, t0_s):
    """Publish ``steps`` (joints, policy image, success, action) rounds 0.1 s apart; the
    policy's last action terminates. Returns the actions (steps, 7)."""
    actions = np.tile(np.float32([0.01, -0.02, 0.005, 0.1, 0.0, 0.0, 0.0]), (steps, 1))
    actions[-1, spec.IDX_TERMINATE] = 1.0
    for i in range(steps):
        stamp = convert.s_to_stamp(t0_s + 0.1 * i)
        js = JointState(name=h.joint_names, position=rng.uniform(-1, 1, 8).tolist())
        js.header.stamp = convert.s_to_stamp(t0_s + 0.1 * i - 0.005)
        h.pub['joints'].publish(js)
        h.pub['pimage'].publish(convert.numpy_to_image(
            rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), stamp,
            'camera_color_optical_frame'))
        h.pub['success'].publish(Float32(data=0.0))
        h.spin_until(lambda: h.logger._success_p == 0.0)
        h.pub['action'].publish(convert.action_to_msg(actions[i], stamp))
        h.spin_until(lambda: h.logger.recorder.steps == i + 1)
    return actions


def test_best_effort_operator_sources_are_recorded_and_terminate_is_the_policys(
        harness, tmp_path):  # noqa: F811
    h, rng = harness, np.random.default_rng(5)
    n = h.node
    # a spacemouse-like driver: best effort (the arm interface accepts it)
    twist_pub = n.create_publisher(TwistStamped, '/operator/twist', qos.SENSOR)
    gripper_pub = n.create_publisher(Bool, '/operator/gripper', qos.SENSOR)
    iv_pub = n.create_publisher(JointState, '/arm/intervention', qos.COMMAND)
    h.spin_until(lambda: twist_pub.get_subscription_count() > 0
                 and gripper_pub.get_subscription_count() > 0
                 and iv_pub.get_subscription_count() > 0)
    h.announce_actor()
    h.start(3, 1003)
    for k in range(3):
        twist = TwistStamped()
        twist.header.stamp = convert.s_to_stamp(49.9 + 0.01 * k)
        twist.header.frame_id = 'base_link'
        twist.twist.linear.y = 0.1
        twist_pub.publish(twist)
        gripper_pub.publish(Bool(data=True))
        h.executor.spin_once(timeout_sec=0.05)
    # six steps from 50.0 s; the policy's last action terminates. The operator drove steps 4
    # and 5: the arm interface executed its action (terminate 0) in place of those.
    operator = np.float32([0.0, 0.01, 0.0, 0.0, 0.0, 1.0, 0.0])
    for t in (4, 5):
        msg = JointState(name=list(spec.ACTION_NAMES), position=operator.tolist())
        msg.header.stamp = convert.s_to_stamp(50.0 + 0.1 * t)
        iv_pub.publish(msg)
    sent = _run_steps(h, rng, 6, 50.0)
    h.event(event='end', episode=3, outcome='terminate', steps=6, success=False,
            terminated=True, truncated=False)
    h.spin_until(lambda: h.saved)
    msgs = _bag_messages(tmp_path / 'run' / 'bags' / 'episode_0003')
    twists = [deserialize_message(r, TwistStamped) for r in msgs.get('/operator/twist', [])]
    assert len(twists) == 3 and twists[0].twist.linear.y == 0.1
    assert [deserialize_message(r, Bool).data
            for r in msgs.get('/operator/gripper', [])] == [True] * 3
    assert len(msgs['/arm/intervention']) == 2
    (ep,) = load_episodes(tmp_path / 'run', 'awopt/kuka-grasp-v0')
    np.testing.assert_array_equal(ep['intervention'][:6], [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ep['policy'][4:6], [POLICY_IDS['operator']] * 2)
    np.testing.assert_allclose(ep['actions'][4], operator)
    # the terminal step: the operator's motion and gripper, the policy's terminate
    np.testing.assert_allclose(ep['actions'][5], [0.0, 0.01, 0.0, 0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(ep['policy_action'][5], sent[5])
    assert ep['terminations'][5]
