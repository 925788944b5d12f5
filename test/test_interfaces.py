"""control_msgs / tf2_msgs / vision_msgs as built by `make setup` (tools/build_interfaces.py).

The RIHS01 type hashes (REP 2011) pinned here are those of the official ROS 2 Kilted packages
(control_msgs 6.x, where FollowJointTrajectory feedback has `index` and `multi_dof_index`;
tf2_msgs). A controller or tool built against the official packages matches our endpoints only
when these hashes agree. Where the values come from:
- All of them: the official definition files (github.com/ros-controls/control_msgs tag 6.8.0;
  these six files are unchanged from 6.3.0 to the master branch that Kilted releases from, as
  of February 2026; tf2_msgs/msg/TFMessage.msg from github.com/ros2/geometry2) were run through
  rosidl_generator_type_description 4.9.5 (the generator the Kilted wheels carry), next to our
  own definitions in interfaces/: all 58 hashes in the resulting type descriptions (every
  type, every action sub-type, every referenced type) were equal.
  Comments, blank lines and default values do not enter the hash; names, types, constants and
  field order do.
- Cross-checks in public generated code: TFMessage e369d0f0... is the hash `ros2 topic info -v
  /tf` reports on Jazzy/Kilted nodes; the GripperCommand action hash e17c0e64... appears in
  generated control_msgs headers; FollowJointTrajectory Goal 8a906070... and Result 8002e99e...
  appear in a generated control_msgs 5.x build (whose Feedback, without `index`, differs).
"""
import json
import threading
import time
from pathlib import Path

import pytest

import rclpy
from ament_index_python.packages import get_package_share_directory
# Not skipped when missing: `make setup` builds them (or a ROS install provides them).
from control_msgs.action import FollowJointTrajectory, GripperCommand, ParallelGripperCommand
from control_msgs.msg import JointComponentTolerance, JointTolerance
from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import JointTrajectoryPoint
from vision_msgs.msg import Classification, ObjectHypothesis

# Official ROS 2 Kilted RIHS01 hashes (see the module docstring for their source).
KILTED_HASHES = {
    'control_msgs/action/FollowJointTrajectory':
        'RIHS01_ff29901b2693f5deb847e96084a1c2cdb26e70b7c847be21859b70a55fb29cf0',
    'control_msgs/action/FollowJointTrajectory_Goal':
        'RIHS01_8a9060704b269608f5a340934cc26e66869dd14bdac29e2e7fd9ec8b9882d205',
    'control_msgs/action/FollowJointTrajectory_Result':
        'RIHS01_8002e99ed2c14c6faa522f2a93c26d744c5982f254f9e98ff9c6f19789bdb220',
    'control_msgs/action/FollowJointTrajectory_Feedback':
        'RIHS01_0bb018d181bdc6384dd75365480967bd1d6eaee4ef3dd597c64cd0b8bdc10867',
    'control_msgs/action/FollowJointTrajectory_FeedbackMessage':
        'RIHS01_95618cc73912d99b9acaa17d2da5e832cb0bfdeede7534fa8ec600feca2a6c4b',
    'control_msgs/action/FollowJointTrajectory_SendGoal_Request':
        'RIHS01_179c93691f1f6d1d115881ff88c3917b7cc6eac2ba4bf56766cc7c4389e19ef1',
    'control_msgs/action/GripperCommand':
        'RIHS01_e17c0e644eccf14bea84a0a93e0977182872c2eb7873ca6694900059b46dbc84',
    'control_msgs/action/GripperCommand_Goal':
        'RIHS01_607d9f41eb241e1922e90f02125e87ae6bfb78f7f64a71dc92630263d01f8b6d',
    'control_msgs/action/GripperCommand_Result':
        'RIHS01_bf512d5aa6a0e4fe4d8be22b2ec4a1973c3d250fa1f65e47450322c25c45c0a0',
    'control_msgs/action/GripperCommand_Feedback':
        'RIHS01_8f7c520077bab528bb9161ee3b83c81eee1f8aecadb8922ce82c79d667a819c4',
    'control_msgs/action/ParallelGripperCommand':
        'RIHS01_adfd3c1ebe8abc38ebcc0e454b6423d291d4010dd5697d14eca5b9be4726ae18',
    'control_msgs/action/ParallelGripperCommand_Goal':
        'RIHS01_412807b6b6acf2bf406fb0cf3b5c8f84286cd4e4d425734155aa1ff41caa0063',
    'control_msgs/action/ParallelGripperCommand_Result':
        'RIHS01_51acbcd62aa44097d3877c506eab1146856fa8768628ffbe102c1699152d2afa',
    'control_msgs/action/ParallelGripperCommand_Feedback':
        'RIHS01_ed6f7c4e5aea7f960432663c0e762e001a0a1f5cc0130d126e60041412d0543c',
    'control_msgs/msg/GripperCommand':
        'RIHS01_57eb8f326c9889ca8bb34ead82cc94cc09bf6bc5c3b6c09546dca3a00b589890',
    'control_msgs/msg/JointTolerance':
        'RIHS01_c254f9cece0f3b733017b6990fd46d1326e25242d6b8844398c97d9a88e7d648',
    'control_msgs/msg/JointComponentTolerance':
        'RIHS01_739ea7566931944d33830fa10f1bf5e7a7fbdc3172bce7a7eaac642bd6e3ffa4',
    'tf2_msgs/msg/TFMessage':
        'RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087',
}

# vision_msgs subset (Classification, ObjectHypothesis): the fields and names of the official
# vision_msgs 4.1.1 (github.com/ros-perception/vision_msgs, branch ros2). RIHS01 covers only type
# names, field names and types (no comments), so these values, from our own build, are those
# of an official build too; they pin the definitions against accidental edits.
VISION_HASHES = {
    'vision_msgs/msg/Classification':
        'RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143',
    'vision_msgs/msg/ObjectHypothesis':
        'RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90',
}


def _installed_hashes(package, kind, name):
    """{type name: RIHS01 string} from the installed type description <share>/<kind>/<name>.json.

    rosidl_generator_type_description writes it at build time; the C type support compiles in
    the same values (checked on live endpoints in the round-trip tests).
    """
    path = Path(get_package_share_directory(package)) / kind / f'{name}.json'
    return {h['type_name']: h['hash_string'] for h in json.loads(path.read_text())['type_hashes']}


@pytest.mark.parametrize('package, kind, name', [
    ('control_msgs', 'action', 'FollowJointTrajectory'),
    ('control_msgs', 'action', 'GripperCommand'),
    ('control_msgs', 'action', 'ParallelGripperCommand'),
    ('tf2_msgs', 'msg', 'TFMessage'),
])
def test_type_hashes_equal_kilted(package, kind, name):
    installed = _installed_hashes(package, kind, name)
    pinned = {k: v for k, v in KILTED_HASHES.items()
              if k == f'{package}/{kind}/{name}' or k.startswith(f'{package}/{kind}/{name}_')
              or k in installed}
    assert f'{package}/{kind}/{name}' in pinned
    assert {k: installed.get(k) for k in pinned} == pinned


def test_kilted_fields_and_constants():
    """The fields a controller reads (and the Kilted-only feedback indices) exist with the
    documented defaults; the result and tolerance constants have their documented values."""
    goal = FollowJointTrajectory.Goal()
    assert list(goal.get_fields_and_field_types()) == [
        'trajectory', 'multi_dof_trajectory', 'path_tolerance', 'component_path_tolerance',
        'goal_tolerance', 'component_goal_tolerance', 'goal_time_tolerance']
    feedback_fields = FollowJointTrajectory.Feedback.get_fields_and_field_types()
    assert feedback_fields['index'] == 'int32' and feedback_fields['multi_dof_index'] == 'int32'
    R = FollowJointTrajectory.Result
    assert (R.SUCCESSFUL, R.INVALID_GOAL, R.INVALID_JOINTS, R.OLD_HEADER_TIMESTAMP,
            R.PATH_TOLERANCE_VIOLATED, R.GOAL_TOLERANCE_VIOLATED) == (0, -1, -2, -3, -4, -5)
    assert (JointComponentTolerance.X_AXIS, JointComponentTolerance.ROTATION) == (1, 5)
    assert JointTolerance(name='a', position=0.1).velocity == 0.0
    assert GripperCommand.Goal().command.get_fields_and_field_types() == {
        'position': 'double', 'max_effort': 'double'}
    assert ParallelGripperCommand.Goal.get_fields_and_field_types() == {
        'command': 'sensor_msgs/JointState'}


@pytest.fixture
def context():
    """A private rclpy Context (no global init), shut down after the test."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


def _spin_until(executor, predicate, timeout_s=10.0):
    """Spin `executor` until `predicate()` is true; False on timeout (s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def test_follow_joint_trajectory_round_trip(context):
    """An action server and client in one process exchange a goal, feedback and a result;
    the feedback topic's endpoint carries the Kilted FeedbackMessage hash."""
    from rclpy.action import ActionClient, ActionServer
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node('test_interfaces_fjt', context=context)
    received = {}

    def execute(goal_handle):
        received['goal'] = goal_handle.request
        feedback = FollowJointTrajectory.Feedback(joint_names=['lbr_A1'], index=1)
        goal_handle.publish_feedback(feedback)
        goal_handle.succeed()
        return FollowJointTrajectory.Result(error_code=FollowJointTrajectory.Result.SUCCESSFUL,
                                            error_string='done')

    server = ActionServer(node, FollowJointTrajectory, 'arm/follow_joint_trajectory', execute)
    client = ActionClient(node, FollowJointTrajectory, 'arm/follow_joint_trajectory')
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        assert _spin_until(executor, client.server_is_ready)
        goal = FollowJointTrajectory.Goal()
        goal.trajectory.joint_names = ['lbr_A1', 'lbr_A2']
        point = JointTrajectoryPoint(positions=[0.1, -0.2])
        point.time_from_start.nanosec = 100_000_000
        goal.trajectory.points = [point]
        goal.goal_tolerance = [JointTolerance(name='lbr_A1', position=0.01)]
        feedback = []
        send = client.send_goal_async(goal, feedback_callback=feedback.append)
        assert _spin_until(executor, send.done)
        handle = send.result()
        assert handle.accepted
        result = handle.get_result_async()
        assert _spin_until(executor, result.done)
        assert result.result().result.error_code == FollowJointTrajectory.Result.SUCCESSFUL
        assert result.result().result.error_string == 'done'
        assert list(received['goal'].trajectory.joint_names) == ['lbr_A1', 'lbr_A2']
        assert list(received['goal'].trajectory.points[0].positions) == [0.1, -0.2]
        assert received['goal'].goal_tolerance[0].position == 0.01
        assert _spin_until(executor, lambda: bool(feedback))
        assert feedback[0].feedback.index == 1
        infos = node.get_publishers_info_by_topic(
            '/arm/follow_joint_trajectory/_action/feedback')
        assert [str(i.topic_type_hash) for i in infos] == [
            KILTED_HASHES['control_msgs/action/FollowJointTrajectory_FeedbackMessage']]
    finally:
        executor.shutdown()
        client.destroy()
        server.destroy()
        node.destroy_node()


def test_tf_message_publish_subscribe(context):
    """A TFMessage published on a topic arrives intact; the endpoint carries the Kilted hash."""
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node('test_interfaces_tf', context=context)
    got = []
    done = threading.Event()
    sub = node.create_subscription(TFMessage, 'tf_test', lambda m: (got.append(m), done.set()),
                                   10)
    pub = node.create_publisher(TFMessage, 'tf_test', 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        t = TransformStamped()
        t.header.frame_id = 'base_link'
        t.child_frame_id = 'camera_link'
        t.transform.translation.x = 0.5
        t.transform.rotation.w = 1.0
        msg = TFMessage(transforms=[t])
        assert _spin_until(executor, lambda: pub.get_subscription_count() > 0)
        deadline = time.monotonic() + 10.0
        while not done.is_set() and time.monotonic() < deadline:
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
        assert got, 'no TFMessage received'
        out = got[0].transforms[0]
        assert (out.header.frame_id, out.child_frame_id) == ('base_link', 'camera_link')
        assert out.transform.translation.x == 0.5 and out.transform.rotation.w == 1.0
        infos = node.get_publishers_info_by_topic('/tf_test')
        assert [str(i.topic_type_hash) for i in infos] == [KILTED_HASHES['tf2_msgs/msg/TFMessage']]
    finally:
        executor.shutdown()
        node.destroy_subscription(sub)
        node.destroy_publisher(pub)
        node.destroy_node()


def test_vision_msgs_classification_fields_and_hashes():
    """The vision_msgs subset has the official fields (what a vision_msgs consumer reads) and
    its installed type descriptions carry the pinned hashes."""
    assert Classification.get_fields_and_field_types() == {
        'header': 'std_msgs/Header', 'results': 'sequence<vision_msgs/ObjectHypothesis>'}
    assert ObjectHypothesis.get_fields_and_field_types() == {
        'class_id': 'string', 'score': 'double'}
    for name in ('Classification', 'ObjectHypothesis'):
        installed = _installed_hashes('vision_msgs', 'msg', name)
        key = f'vision_msgs/msg/{name}'
        assert installed[key] == VISION_HASHES[key]
    msg = Classification(results=[ObjectHypothesis(class_id='success', score=0.75)])
    msg.header.frame_id = 'camera'
    assert (msg.results[0].class_id, msg.results[0].score) == ('success', 0.75)
