"""robot_state: ``/robot_description``, ``/tf``, ``/tf_static`` and rviz markers of the cell.

What robot_state_publisher does, for a plain venv (on a ROS install the launch file may start
robot_state_publisher instead, with the ``/robot_description`` text this node publishes):

* ``/robot_description`` (std_msgs/String, reliable, transient local, depth 1): the URDF at
  ``urdf_path`` with its joints renamed to the driver's names (``joint_names``,
  ``gripper_joint``: :func:`awopt_ros.core.robot_tf.rename_joints`), so that rviz's
  RobotModel and a robot_state_publisher match the driver's ``/joint_states``;
* ``/tf`` (tf2_msgs/TFMessage, reliable, depth 100): for each joint state on
  ``joint_states_topic`` (at most ``publish_frequency_hz`` per second of joint state stamps),
  one transform per moving URDF joint the message names (mimic joints follow their master),
  parent link -> child link, stamped with the joint state's stamp
  (:class:`awopt_ros.core.robot_tf.RobotTF`, pinocchio FK of the full model);
* ``/tf_static`` (tf2_msgs/TFMessage, reliable, transient local, depth 1), once: the fixed
  URDF joints, the camera ``<root link> -> camera_frame`` at ``camera_pose_xyz_rpy`` (the
  hand-eye calibration result; :mod:`awopt_ros.core.camera_pose`) and, with
  ``publish_camera_optical_frame`` (turn it off when a realsense-ros driver publishes its own
  frames), ``camera_frame -> camera_optical_frame``;
* ``/awopt/markers`` (visualization_msgs/MarkerArray, reliable, every 0.2 s): the tcp
  workspace box (``workspace_min_m`` .. ``workspace_max_m``, as arm_interface's), the latest
  ``/policy/action`` as an arrow from the tcp (``/arm/ee_pose``; before the first one, the
  tcp of the latest joint state) along ``action_arrow_scale`` x (dx, dy, dz), removed when
  no action came for 1 s, and ``/success/probability`` (std_msgs/Float32) as text above the
  box;
* ``/diagnostics``: counts of joint states, TF messages and joint names the URDF lacks.

With ``publish_robot_tf`` false (a robot_state_publisher runs beside it, fed the same renamed
URDF), only the camera transforms go to ``/tf_static``, and the markers are published.
"""
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PoseStamped, TransformStamped
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32, String
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from awopt_ros.core import camera_pose, robot, robot_tf, viz
from awopt_ros.ros import qos
from awopt_ros.ros.convert import msg_to_action, stamp_to_ns
from awopt_ros.ros.diagnostics import OK, WARN, diagnostic_array
from awopt_ros.ros.params import declare
from awopt_ros.ros.robot_params import declare_joint_names
from awopt_ros.ros.run import StartupError, spin_node

DESCRIPTION_TOPIC = '/robot_description'
MARKERS_TOPIC = '/awopt/markers'
#: robot_state_publisher's QoS (FACTS, Hardware): description and static TF latched, depth 1.
LATCHED_ONE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    history=HistoryPolicy.KEEP_LAST)
MARKER_PERIOD_S = 0.2
ACTION_SHOW_S = 1.0
DIAGNOSTICS_PERIOD_S = 1.0


def _transform_msg(t, stamp):
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = t.parent
    msg.child_frame_id = t.child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(v) for v in t.translation)
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in t.rotation_xyzw)
    return msg


def _point(xyz):
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


class RobotStateNode(Node):
    """The robot state node (see module docstring). ``kwargs`` go to ``rclpy.node.Node``."""

    def __init__(self, **kwargs):
        super().__init__('robot_state', **kwargs)
        urdf_path = declare(self, 'urdf_path', robot.URDF_PATH,
                            'URDF of the arm and gripper (relative: package share directory); '
                            'published with the driver joint names on /robot_description',
                            read_only=True)
        self.names, joint_topic = declare_joint_names(self)
        urdf_joints = [str(n) for n in declare(
            self, 'urdf_joint_names', [''],
            "The URDF's names of the 7 arm joints (in joint_names order) for an arm other than "
            "the iiwa 14 (the Sawyer: right_j0..right_j6); [''] = the iiwa model's",
            read_only=True) if str(n)]
        pose = declare(self, 'camera_pose_xyz_rpy', list(camera_pose.SIM_CAMERA_POSE_XYZ_RPY),
                       'Hand-eye calibration result: pose of camera_link in base_link, x y z '
                       '(m) roll pitch yaw (rad, fixed axes); camera_link as in realsense-ros '
                       '(x forward, z up). Default: the simulated camera', read_only=True)
        self.publish_robot_tf = declare(
            self, 'publish_robot_tf', True,
            'Publish /robot_description, the joints on /tf and the fixed joints on /tf_static; '
            'false where a robot_state_publisher does (then only the camera frames and the '
            'markers come from here)', read_only=True)
        self.publish_optical = declare(
            self, 'publish_camera_optical_frame', True,
            'Publish camera_frame -> camera_optical_frame on /tf_static (turn off when a '
            'realsense-ros driver publishes its own camera frames)', read_only=True)
        camera_frame = declare(self, 'camera_frame', 'camera_link',
                               'Camera body frame whose pose camera_pose_xyz_rpy gives '
                               '(realsense-ros: <camera_name>_link)', read_only=True)
        optical_frame = declare(self, 'camera_optical_frame', 'camera_color_optical_frame',
                                'Colour optical frame (x right, y down, z forward) of the '
                                'camera images', read_only=True)
        self.period_ns = 0
        rate_hz = declare(self, 'publish_frequency_hz', 20.0,
                          'Largest /tf rate per second of joint state stamps (0: one /tf '
                          "message per joint state), as robot_state_publisher's "
                          'publish_frequency', low=0.0, high=1000.0, read_only=True)
        if rate_hz > 0.0:
            self.period_ns = int(round(1e9 / rate_hz))
        low = declare(self, 'workspace_min_m', [0.35, -0.3, 0.02],
                      'Lower corner x, y, z of the tcp workspace box drawn on /awopt/markers '
                      "(base_link, m; arm_interface's workspace_min_m)", read_only=True)
        high = declare(self, 'workspace_max_m', [0.85, 0.3, 0.5],
                       'Upper corner x, y, z of the tcp workspace box drawn on /awopt/markers '
                       "(base_link, m; arm_interface's workspace_max_m)", read_only=True)
        self.arrow_scale = declare(self, 'action_arrow_scale', 5.0,
                                   'The action arrow on /awopt/markers is (dx, dy, dz) times '
                                   'this long (actions move at most 3 cm)', low=0.1,
                                   high=100.0, read_only=True)
        try:
            self.rtf = robot_tf.RobotTF(urdf_path)
            if urdf_joints and len(urdf_joints) != len(self.names.arm):
                raise ValueError(f'urdf_joint_names needs {len(self.names.arm)} names, got '
                                 f'{urdf_joints}')
            # {driver name: URDF name}
            self.to_model = (dict(zip(self.names.arm, urdf_joints)) if urdf_joints
                             else self.names.to_model)
            description = robot_tf.rename_joints(
                self.rtf.urdf_text, {m: d for d, m in self.to_model.items()})
            static = robot_tf.camera_transforms(pose, self.rtf.root_link, camera_frame,
                                                optical_frame, self.publish_optical)
            if self.publish_robot_tf:
                static = self.rtf.static_transforms() + static
            self.box = viz.box_edges(low, high)
        except (FileNotFoundError, ValueError) as exc:
            raise StartupError(str(exc)) from exc
        self.frame = self.rtf.root_link
        self.box_top = (0.5 * (np.asarray(low) + np.asarray(high)), float(high[2]))
        self.counts = dict(joint_states=0, tf_published=0, unknown_joints=0)
        self.unknown = set()
        self._last_tf_ns = None
        self._q = {}                # model joint name -> latest position
        self._ee = None             # latest tcp position from /arm/ee_pose (3,)
        self._action = None         # (action (7,), node-clock ns it arrived)
        self._success = None

        if self.publish_robot_tf:
            self.description_pub = self.create_publisher(String, DESCRIPTION_TOPIC, LATCHED_ONE)
            self.tf_pub = self.create_publisher(TFMessage, '/tf', TF_QOS)
            self.description_pub.publish(String(data=description))
        self.static_pub = self.create_publisher(TFMessage, '/tf_static', LATCHED_ONE)
        self.marker_pub = self.create_publisher(MarkerArray, MARKERS_TOPIC, qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        now = self.get_clock().now().to_msg()
        self.static_pub.publish(TFMessage(transforms=[_transform_msg(t, now) for t in static]))
        self.create_subscription(JointState, joint_topic, self._on_joint_state, qos.SENSOR)
        self.create_subscription(JointState, '/policy/action', self._on_action, qos.COMMAND)
        self.create_subscription(PoseStamped, '/arm/ee_pose', self._on_ee_pose, 10)
        self.create_subscription(Float32, '/success/probability', self._on_success,
                                 qos.COMMAND)
        self.create_timer(MARKER_PERIOD_S, self._publish_markers)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.get_logger().info(
            f'robot_state: {len(self.rtf.moving)} moving and {len(self.rtf.fixed)} fixed joints '
            f'from {urdf_path}, joint states on {joint_topic}, camera {camera_frame} at '
            f'{[round(float(v), 4) for v in pose]} in {self.frame}')

    # ---------------------------------------------------------------- callbacks
    def _on_joint_state(self, msg):
        self.counts['joint_states'] += 1
        positions = {}
        for name, value in zip(msg.name, msg.position):
            model = self.to_model.get(name, name)
            if model in self.rtf.joints:
                positions[model] = value
            elif name not in self.unknown:
                self.unknown.add(name)
                self.counts['unknown_joints'] = len(self.unknown)
                self.get_logger().warning(f'joint state names {name!r}, which the URDF lacks '
                                          '(check joint_names / gripper_joint)')
        self._q.update(positions)
        if not self.publish_robot_tf:
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        stamp = msg.header.stamp
        if stamp_ns == 0:       # an unstamped joint state: now
            stamp = self.get_clock().now().to_msg()
            stamp_ns = stamp_to_ns(stamp)
        last = self._last_tf_ns
        if last is not None and last <= stamp_ns < last + self.period_ns:
            return              # throttled; a stamp that went back (restart) publishes
        try:
            tfs = self.rtf.transforms(positions)
        except ValueError as exc:
            self.get_logger().warning(f'joint state skipped: {exc}', throttle_duration_sec=5.0)
            return
        if not tfs:
            return
        self._last_tf_ns = stamp_ns
        self.tf_pub.publish(TFMessage(transforms=[_transform_msg(t, stamp) for t in tfs]))
        self.counts['tf_published'] += 1

    def _on_action(self, msg):
        try:
            action = msg_to_action(msg)
        except ValueError as exc:
            self.get_logger().warning(f'action ignored: {exc}', throttle_duration_sec=5.0)
            return
        if np.all(np.isfinite(action)):
            self._action = (action, self.get_clock().now().nanoseconds)

    def _on_ee_pose(self, msg):
        p = msg.pose.position
        self._ee = np.array([p.x, p.y, p.z])

    def _on_success(self, msg):
        self._success = float(msg.data)

    # ---------------------------------------------------------------- markers
    def _marker(self, ns, kind, colour):
        m = Marker()
        m.header.frame_id = self.frame      # stamp 0: the latest transform
        m.ns, m.id, m.type, m.action = ns, 0, kind, Marker.ADD
        m.pose.orientation.w = 1.0
        m.color.r, m.color.g, m.color.b, m.color.a = (float(v) for v in colour)
        return m

    def _tcp(self):
        if self._ee is not None:
            return self._ee
        if not self._q:
            return None
        return self.rtf.link_pose(self._q, robot.TCP_FRAME)[0]

    def markers(self):
        """Return the MarkerArray of the workspace box, the latest action and the success
        probability (what the marker timer publishes)."""
        box = self._marker('workspace', Marker.LINE_LIST, (0.3, 0.8, 1.0, 0.8))
        box.scale.x = 0.004
        box.points = [_point(p) for p in self.box]
        centre, top = self.box_top
        text = self._marker('success', Marker.TEXT_VIEW_FACING,
                            viz.success_colour(self._success))
        text.pose.position = _point((centre[0], centre[1], top + 0.12))
        text.scale.z = 0.06
        text.text = viz.success_text(self._success)
        out = [box, text]
        arrow = self._marker('action', Marker.ARROW, (1.0, 0.55, 0.0, 1.0))
        bits = self._marker('action_bits', Marker.TEXT_VIEW_FACING, (1.0, 0.55, 0.0, 1.0))
        now_ns = self.get_clock().now().nanoseconds
        tcp = self._tcp()
        fresh = (self._action is not None
                 and now_ns - self._action[1] <= ACTION_SHOW_S * 1e9 and tcp is not None)
        if fresh:
            start, end = viz.action_arrow(tcp, self._action[0], self.arrow_scale)
            arrow.points = [_point(start), _point(end)]
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.01, 0.02, 0.02
            bits.pose.position = _point(end + np.array([0.0, 0.0, 0.05]))
            bits.scale.z = 0.04
            bits.text = viz.action_text(self._action[0]) or ' '
        else:
            arrow.action = bits.action = Marker.DELETE
        arrow.lifetime = bits.lifetime = Duration(seconds=2.0 * ACTION_SHOW_S).to_msg()
        return MarkerArray(markers=out + [arrow, bits])

    def _publish_markers(self):
        self.marker_pub.publish(self.markers())

    def _publish_diagnostics(self):
        level = WARN if self.unknown or not self.counts['joint_states'] else OK
        message = (f'joint names the URDF lacks: {sorted(self.unknown)}' if self.unknown
                   else 'no joint states yet' if not self.counts['joint_states']
                   else f"{self.counts['tf_published']} /tf messages")
        self.diag_pub.publish(diagnostic_array(self, 'robot_state', self.counts, message,
                                               level))


def main(args=None):
    return spin_node(RobotStateNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
