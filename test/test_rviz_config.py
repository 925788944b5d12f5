"""config/awopt.rviz: every topic its displays name is published by the simulated stack, with
the message type the display takes and QoS the display's subscription accepts.

rviz does not run here. The config is read (:mod:`awopt_ros.core.rviz_config`), the stack runs
as node processes (:class:`awopt_ros.launcher.Stack`, ``robot_state`` among them), and this
process subscribes to each display topic with the display's own QoS: a message must arrive on
each, the graph must show the display's type, every frame the images and markers are stamped
in must connect to the fixed frame through /tf and /tf_static, and the RobotModel's joints
must be the ones /joint_states names.
"""
import importlib
import os
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from awopt_ros.core import robot_names, robot_tf, rviz_config
from awopt_ros.launcher import DEFAULT_CONFIG, Stack, effective_params, ros_environment
from awopt_ros.ros import qos

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'config' / 'awopt.rviz'
HARDWARE = ROOT / 'config' / 'awopt_hardware.rviz'
FAKE_HARDWARE = 'config/awopt_ros_kuka_fake_hardware.yaml'
#: (rviz config, params file of the stack it shows): the hardware view against the simulator
#: under lbr-stack names once that bringup exists.
PAIRS = [(CONFIG, DEFAULT_CONFIG)] + (
    [(HARDWARE, FAKE_HARDWARE)] if (ROOT / FAKE_HARDWARE).is_file() else [])
WAIT_S = 180.0

_RELIABILITY = {'Reliable': ReliabilityPolicy.RELIABLE,
                'Best Effort': ReliabilityPolicy.BEST_EFFORT}
_DURABILITY = {'Volatile': DurabilityPolicy.VOLATILE,
               'Transient Local': DurabilityPolicy.TRANSIENT_LOCAL}


def get_message(msg_type):
    """The message class of 'pkg/msg/Type'."""
    pkg, _, name = msg_type.split('/')
    return getattr(importlib.import_module(f'{pkg}.msg'), name)


def _qos(t):
    return QoSProfile(depth=max(1, t.depth), history=HistoryPolicy.KEEP_LAST,
                      reliability=_RELIABILITY[t.reliability],
                      durability=_DURABILITY[t.durability])


# ------------------------------------------------------------------ the config itself (no ROS)
def test_config_shows_the_cell():
    doc = rviz_config.load(CONFIG)
    assert rviz_config.fixed_frame(doc) == 'base_link'
    topics = rviz_config.display_topics(doc)
    by_class = {}
    for t in topics:
        by_class.setdefault(t.display_class.split('/')[-1], set()).add(t.topic)
    image_topic, _ = robot_names.camera_topics(robot_names.DEFAULT_CAMERA_NS)
    assert by_class['RobotModel'] == {'/robot_description'}
    assert by_class['TF'] == {'/tf', '/tf_static'}
    assert by_class['Image'] == {image_topic, '/policy/image'}
    assert by_class['MarkerArray'] == {'/awopt/markers', '/sim/objects'}
    # the camera and the camera pipeline publish sensor-data QoS (best effort): a reliable
    # display would show nothing; the description is latched (late rviz gets it)
    for t in topics:
        if t.msg_type == 'sensor_msgs/msg/Image':
            assert t.reliability == 'Best Effort', t
    description = next(t for t in topics if t.topic == '/robot_description')
    assert description.durability == 'Transient Local'


def test_hardware_view_is_the_sim_view_on_the_realsense_topics():
    sim = rviz_config.display_topics(rviz_config.load(CONFIG))
    hw = rviz_config.display_topics(rviz_config.load(HARDWARE))
    image, info = robot_names.camera_topics(robot_names.DEFAULT_CAMERA_NS)
    hw_image, hw_info = robot_names.camera_topics('/camera/camera')
    rename = {image: hw_image, info: hw_info}
    expected = [t.__class__(**dict(t.__dict__, topic=rename.get(t.topic, t.topic)))
                for t in sim if t.topic != '/sim/objects']
    assert hw == expected
    assert rviz_config.fixed_frame(rviz_config.load(HARDWARE)) == 'base_link'


def test_display_topics_refuses_an_unknown_display_or_a_missing_topic():
    doc = {'Visualization Manager': {'Displays': [{'Class': 'someone/Plot', 'Name': 'p'}]}}
    with pytest.raises(ValueError, match='DISPLAY_TOPICS'):
        rviz_config.display_topics(doc)
    doc = {'Visualization Manager': {'Displays': [
        {'Class': 'rviz_default_plugins/Image', 'Name': 'i', 'Topic': {'Depth': 1}}]}}
    with pytest.raises(ValueError, match='names no topic'):
        rviz_config.display_topics(doc)
    group = {'Visualization Manager': {'Displays': [{'Class': 'rviz_common/Group', 'Displays': [
        {'Class': 'rviz_default_plugins/Image', 'Name': 'i', 'Topic': {'Value': '/a/image'}}]}]}}
    assert [t.topic for t in rviz_config.display_topics(group)] == ['/a/image']


def test_load_refuses_what_is_not_an_rviz_config(tmp_path):
    path = tmp_path / 'x.rviz'
    path.write_text('Panels: []\n')
    with pytest.raises(ValueError, match='rviz2 config'):
        rviz_config.load(path)


# ------------------------------------------------------------------ against a running stack
@pytest.fixture(scope='module', params=PAIRS, ids=lambda p: Path(p[0]).name)
def seen(request, tmp_path_factory):
    """Run the simulated stack under a params file; return the rviz config's topics and what
    arrived on each and on the joint state topic."""
    rviz, params = request.param
    out = tmp_path_factory.mktemp('rviz')
    env = ros_environment(domain_id=os.environ['ROS_DOMAIN_ID'])
    stack = Stack(config=params, policy='scripted', log_dir=out / 'logs',
                  overrides={'logger': {'output_dir': str(out / 'runs')}}, env=env)
    topics = rviz_config.display_topics(rviz_config.load(rviz))
    joint_topic = effective_params(params, 'robot_state').get(
        'joint_states_topic', robot_names.DEFAULT_JOINT_STATES_TOPIC)
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node('rviz_config_check', context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    got = {}
    for t in topics:
        if t.topic not in got:
            got[t.topic] = []
            node.create_subscription(get_message(t.msg_type), t.topic, got[t.topic].append,
                                     _qos(t))
    joints = []
    node.create_subscription(JointState, joint_topic, joints.append, qos.SENSOR)
    assert 'robot_state' in dict(stack.node_specs())
    stack.start()
    try:
        deadline = time.monotonic() + WAIT_S

        def done():
            return all(len(v) >= 2 or (v and k in ('/robot_description', '/tf_static'))
                       for k, v in got.items())
        while not done() and time.monotonic() < deadline and not stack.dead():
            executor.spin_once(timeout_sec=0.1)
        # a joint state too, if it comes (not needed: the bag has them, see below)
        deadline = time.monotonic() + 5.0
        while not joints and time.monotonic() < deadline and not stack.dead():
            executor.spin_once(timeout_sec=0.1)
        types = dict(node.get_topic_names_and_types())
        logs = {n.name: n.log_tail() for n in stack.nodes}
    finally:
        codes = stack.stop()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    return dict(topics=topics, got=got, types=types, joints=joints, logs=logs, codes=codes,
                fixed=rviz_config.fixed_frame(rviz_config.load(rviz)))


def test_every_display_topic_is_published_with_its_type(seen):
    missing = sorted(k for k, v in seen['got'].items() if not v)
    assert not missing, (missing, seen['logs'])
    for t in seen['topics']:
        assert seen['types'].get(t.topic) == [t.msg_type], (t, seen['types'].get(t.topic))
    assert all(code == 0 for code in seen['codes'].values()), (seen['codes'], seen['logs'])


def _frames_of(msgs):
    for msg in msgs:
        if hasattr(msg, 'markers'):
            yield from (m.header.frame_id for m in msg.markers)
        elif hasattr(msg, 'header'):
            yield msg.header.frame_id


def test_every_shown_frame_connects_to_the_fixed_frame(seen):
    got = seen['got']
    tfs = [t for msg in got['/tf'] + got['/tf_static'] for t in msg.transforms]
    parent = {t.child_frame_id: t.header.frame_id for t in tfs}
    fixed = seen['fixed']
    frames = {f for t in seen['topics'] if t.msg_type != rviz_config.TF_TYPE
              for f in _frames_of(got[t.topic])} - {''}
    assert 'camera_color_optical_frame' in frames        # the camera images' frame
    for frame in frames | set(parent):
        chain, name = [frame], frame
        while name != fixed:
            assert name in parent, f'{frame}: no TF chain to {fixed} (stops at {chain})'
            name = parent[name]
            chain.append(name)
            assert len(chain) < 50
    urdf = got['/robot_description'][-1].data
    links = {j.child for j in robot_tf.parse_joints(urdf)}
    assert links <= set(parent), sorted(links - set(parent))


def test_robot_model_joints_are_the_joint_state_names(seen):
    """The RobotModel's moving joints are the names the driver publishes: the joint states
    received here, or (when none reached this process) those the transforms on /tf were
    computed from, which robot_state publishes only for joints the joint states name."""
    urdf = seen['got']['/robot_description'][-1].data
    joints = robot_tf.parse_joints(urdf)
    moving = {j.name for j in joints if j.type in robot_tf.MOVING_TYPES and j.mimic is None}
    if seen['joints']:
        named = set(seen['joints'][-1].name)
    else:
        children = {t.child_frame_id for msg in seen['got']['/tf'] for t in msg.transforms}
        named = {j.name for j in joints if j.child in children
                 and j.type in robot_tf.MOVING_TYPES and j.mimic is None}
    assert moving == named, (moving, named)
