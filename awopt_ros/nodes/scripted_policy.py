"""scripted_policy: the noisy scripted grasping policy as a policy node (simulation only).

It acts where the learned policy node acts: on the newest ``/policy/image`` at
``action_rate_hz`` (10, the task's control rate, whatever the camera's rate:
:class:`awopt_ros.core.action_rate.ActionGrid`, restarted at each episode's start), publishing
``/policy/action`` stamped with that image's stamp. It reads the object poses from the
simulator (``/sim/objects`` markers: pose and size, privileged information), so it exists
to collect demonstrations, not to run on hardware. Before each action it publishes the grasp
pose it aims for without its deliberate noise (``/scripted_policy/grasp_goal``,
``geometry_msgs/PoseStamped`` in base_link, the action's stamp; announced in
``/policy/model_info`` as ``grasp_goal_topic``), which the logger stores per step as a training
label (``grasp_goal`` info), and the proprioception it acted on (``/policy/proprio``, as the
policy node), which the logger records with the step. The joint states come on
``joint_states_topic`` under the driver's names (``joint_names``, ``gripper_joint``:
``ros.robot_params``); one that lacks a configured joint is not used, and a throttled error
names the joints missing.
Logic: :class:`awopt_ros.sim.scripted.ScriptedGraspPolicy`.
"""
import json

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from awopt_ros.core.action_rate import ActionGrid
from awopt_ros.core.kinematics import Kinematics
from awopt_ros.ros import convert, qos
from awopt_ros.ros.convert import PROPRIO_TOPIC as PROPRIO, proprio_publisher
from awopt_ros.ros.params import declare
from awopt_ros.ros.robot_params import declare_joint_names
from awopt_ros.ros.run import StartupError, spin_node
from awopt_ros.sim.scripted import ScriptedGraspPolicy

GRASP_GOAL = '/scripted_policy/grasp_goal'


class ScriptedPolicyNode(Node):
    """Publishes the scripted policy's action for every policy image."""

    def __init__(self, **kwargs):
        super().__init__('scripted_policy', **kwargs)
        try:
            self.joint_names, self.joints_topic = declare_joint_names(self)
        except ValueError as exc:
            raise StartupError(f'scripted_policy: {exc}') from exc
        noise = declare(self, 'noise_std_m', 0.004, 'Per-step motion noise (m).', low=0.0,
                        high=0.05, read_only=True)
        slip = declare(self, 'slip_probability', 0.35, 'Probability of a large per-episode '
                       'grasp-point error (makes failures).', low=0.0, high=1.0, read_only=True)
        seed = declare(self, 'seed', 0, 'Noise seed.', low=0, high=2**31 - 1, read_only=True)
        urdf = declare(self, 'urdf_path', 'urdf/iiwa14_gripper.urdf', 'Robot URDF.',
                       read_only=True)
        lift_rule = declare(self, 'lift_rule', 'closed', "When the close ends: 'closed' (once "
                            "the proprio shows the fingers closed) or 'count' (after a fixed "
                            'number of close steps, as in datasets collected before the '
                            "'closed' rule).",
                            read_only=True)
        rate_hz = declare(self, 'action_rate_hz', 10.0,
                          "Actions per second, on the newest policy image (the task's control "
                          'rate); 0 = an action on every image.', low=0.0, high=1000.0,
                          read_only=True)
        self.grid = ActionGrid(rate_hz)
        if lift_rule not in ScriptedGraspPolicy.LIFT_RULES:
            raise StartupError(f'scripted_policy: lift_rule must be one of '
                               f'{ScriptedGraspPolicy.LIFT_RULES}, got {lift_rule!r}')
        self.policy = ScriptedGraspPolicy(seed=seed, noise_std_m=noise, slip_probability=slip,
                                          lift_rule=lift_rule)
        self.kin = Kinematics(urdf)
        self.joints = None
        self.poses = None
        self.extents = None
        self.actions = 0
        self.pub = self.create_publisher(JointState, '/policy/action', qos.COMMAND)
        self.goal_pub = self.create_publisher(PoseStamped, GRASP_GOAL, qos.COMMAND)
        self.proprio_pub = proprio_publisher(self)
        info = self.create_publisher(String, '/policy/model_info', qos.LATCHED)
        # model_version: the field every /policy/model_info carries (the learned policy counts
        # its hot swaps in it); a scripted policy never swaps, so it stays 0.
        info.publish(String(data=json.dumps({'kind': 'scripted', 'model_version': 0,
                                             'noise_std_m': noise,
                                             'slip_probability': slip, 'seed': seed,
                                             'lift_rule': self.policy.lift_rule,
                                             'grasp_goal_topic': GRASP_GOAL,
                                             'proprio_topic': (None if self.proprio_pub is None
                                                               else PROPRIO)})))
        self.create_subscription(Image, '/policy/image', self._on_image, qos.SENSOR)
        self.create_subscription(JointState, self.joints_topic, self._on_joints, qos.SENSOR)
        self.create_subscription(MarkerArray, '/sim/objects', self._on_objects, qos.COMMAND)
        self.create_subscription(String, '/episode/event', self._on_event, qos.LATCHED)

    def _on_joints(self, msg):
        try:
            # the driver's names -> positions in the model's order (A1..A7, finger)
            self.joints = convert.joint_positions(msg, self.joint_names.all)
        except KeyError as exc:
            self.get_logger().error(f'{self.joints_topic}: {exc.args[0]} (parameters '
                                    f'joint_names, gripper_joint); it names {list(msg.name)}',
                                    throttle_duration_sec=5.0)
        except ValueError as exc:
            self.get_logger().error(f'bad joint state: {exc}', throttle_duration_sec=5.0)

    def _on_objects(self, msg):
        poses = [m.pose for m in msg.markers]
        self.poses = np.array([[p.position.x, p.position.y, p.position.z, p.orientation.w,
                                p.orientation.x, p.orientation.y, p.orientation.z]
                               for p in poses])
        self.extents = np.array([[m.scale.x, m.scale.y, m.scale.z] for m in msg.markers]) / 2

    def _on_event(self, msg):
        try:
            event = json.loads(msg.data)
            if event.get('event') == 'start':
                self.policy.reset()
                self.grid.restart(event.get('stamp_s'))
        except ValueError:
            self.get_logger().warning(f'unreadable episode event {msg.data!r}')

    def _on_image(self, msg):
        if self.joints is None or self.poses is None or len(self.poses) == 0:
            return
        stamp_s = convert.stamp_to_s(msg.header.stamp)
        if not self.grid.due(stamp_s):
            return
        proprio = self.kin.proprio(self.joints[:7], self.joints[7])
        action = self.policy.act(proprio, self.poses, self.extents)
        self.goal_pub.publish(convert.grasp_goal_to_msg(self.policy.grasp_goal,
                                                        msg.header.stamp))
        self.pub.publish(convert.action_to_msg(action, msg.header.stamp))
        if self.proprio_pub is not None:
            self.proprio_pub.publish(convert.proprio_to_msg(proprio, msg.header.stamp))
        self.grid.acted(stamp_s)
        self.actions += 1


def main(args=None):
    return spin_node(ScriptedPolicyNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
