"""policy: run the exported actor (ONNX) on each policy image -> ``/policy/action``.

Subscribes ``/policy/image`` (rgb8, ``image_size`` square, sensor-data QoS) and
``/joint_states`` (sensor-data QoS). For each image: proprioception from the latest joint state
(:func:`awopt_ros.core.kinematics` FK), then :class:`awopt_ros.core.onnx_policy.OnnxActor`,
then a ``sensor_msgs/JointState`` action on ``/policy/action`` (reliable) stamped with the
image's (= source camera frame's) stamp. Images are skipped and counted when the joint state is
missing or older than ``max_joint_state_age_s``; non-finite model outputs are not published.
At start-up the model's ``awopt_contract`` is checked against this node's parameters; a
missing file or a mismatch is logged and the process exits with code 1. ``/policy/model_info``
(latched std_msgs/String JSON) says which model runs.
"""
import json

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from awopt_ros.core import paths, robot
from awopt_ros.core.onnx_policy import ModelContractError, OnnxActor, expected_contract
from awopt_ros.core.spec import ARM_JOINTS, GRIPPER_JOINT
from awopt_ros.ros import convert, diagnostics, qos
from awopt_ros.ros.params import declare
from awopt_ros.ros.run import StartupError, spin_node

COUNTERS = ('images', 'actions_published', 'skipped_no_joint_state',
            'skipped_stale_joint_state', 'invalid_outputs', 'bad_inputs')


class PolicyNode(Node):
    """Learned actor in the loop: policy image + joint state -> action."""

    def __init__(self, **kwargs):
        super().__init__('policy', **kwargs)
        model_path = declare(self, 'model_path', 'models/grasp_bc.onnx',
                             'ONNX actor; relative paths resolve against the package share '
                             'directory.', read_only=True)
        self.image_size = declare(self, 'image_size', 64, 'Policy image side (px).',
                                  low=8, high=1024, read_only=True)
        self.crop_xywh = [int(v) for v in declare(
            self, 'crop_xywh', [80, 0, 480, 480],
            'Camera crop (x, y, w, h; source px) the images are made with; must match the '
            "model's contract.", read_only=True)]
        self.max_joint_state_age_s = declare(
            self, 'max_joint_state_age_s', 0.2,
            'Skip an image when the latest joint state is older than this (s, node clock).',
            low=0.001, high=10.0)
        threads = declare(self, 'intra_op_threads', 1, 'onnxruntime intra-op threads.',
                          low=1, high=64, read_only=True)
        urdf_path = declare(self, 'urdf_path', robot.URDF_PATH,
                            'Robot URDF used for forward kinematics (proprioception).',
                            read_only=True)
        self.model_path = str(paths.resolve(model_path))
        try:
            self.actor = OnnxActor(self.model_path,
                                   expected_contract(self.image_size, self.crop_xywh),
                                   intra_op_threads=threads)
        except (FileNotFoundError, ModelContractError) as exc:
            self.get_logger().error(str(exc))
            raise StartupError(str(exc)) from exc
        try:
            from awopt_ros.core.kinematics import Kinematics
            self._kin = Kinematics(urdf_path)
        except (FileNotFoundError, ValueError) as exc:
            self.get_logger().error(f'cannot load kinematics: {exc}')
            raise StartupError(f'cannot load kinematics: {exc}') from exc
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._joint_state = None          # latest sensor_msgs/JointState
        self._joint_state_rx_s = None     # node-clock time it arrived (s)

        self.info_pub = self.create_publisher(String, '/policy/model_info', qos.LATCHED)
        self.action_pub = self.create_publisher(JointState, '/policy/action', qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(JointState, '/joint_states', self._on_joint_state, qos.SENSOR)
        self.create_subscription(Image, '/policy/image', self._on_image, qos.SENSOR)
        self.create_timer(1.0, self._publish_diagnostics)
        self.info_pub.publish(String(data=json.dumps(
            {'kind': 'actor', 'model_path': self.model_path, 'contract': self.actor.contract})))
        self.get_logger().info(f'loaded actor {self.model_path} '
                               f"(algorithm {self.actor.contract.get('algorithm')!r}, "
                               f"dataset {self.actor.contract.get('dataset')!r})")

    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg):
        self._joint_state = msg
        self._joint_state_rx_s = self._now_s()

    def _joint_state_age_s(self):
        """Age of the latest joint state: node clock now minus its stamp (arrival if unset)."""
        stamp_s = convert.stamp_to_s(self._joint_state.header.stamp)
        ref_s = stamp_s if stamp_s > 0.0 else self._joint_state_rx_s
        return self._now_s() - ref_s

    def _on_image(self, msg):
        self.counts['images'] += 1
        if self._joint_state is None:
            self.counts['skipped_no_joint_state'] += 1
            self.get_logger().warning('no joint state yet: image skipped',
                                   throttle_duration_sec=5.0)
            return
        age_s = self._joint_state_age_s()
        if age_s > self.max_joint_state_age_s:
            self.counts['skipped_stale_joint_state'] += 1
            self.get_logger().warning(f'joint state is {age_s:.3f} s old (> '
                                   f'{self.max_joint_state_age_s} s): image skipped',
                                   throttle_duration_sec=5.0)
            return
        try:
            image = convert.image_to_numpy(msg)
            if image.shape[:2] != (self.image_size, self.image_size):
                raise ValueError(f'policy image is {image.shape[1]}x{image.shape[0]}, '
                                 f'expected {self.image_size}x{self.image_size}')
            q = convert.joint_positions(self._joint_state, ARM_JOINTS + (GRIPPER_JOINT,))
            proprio = self._kin.proprio(q[:7], q[7])
        except (KeyError, ValueError) as exc:
            self.counts['bad_inputs'] += 1
            self.get_logger().error(f'bad input, image skipped: {exc}',
                                    throttle_duration_sec=5.0)
            return
        try:
            action = self.actor.act(image, proprio)
        except ValueError as exc:
            self.counts['invalid_outputs'] += 1
            self.get_logger().error(f'no action published: {exc}', throttle_duration_sec=5.0)
            return
        self.action_pub.publish(convert.action_to_msg(action, msg.header.stamp))
        self.counts['actions_published'] += 1

    def _publish_diagnostics(self):
        bad = self.counts['invalid_outputs'] + self.counts['bad_inputs']
        skipped = self.counts['skipped_no_joint_state'] + self.counts['skipped_stale_joint_state']
        level = diagnostics.ERROR if bad else (diagnostics.WARN if skipped else diagnostics.OK)
        self.diag_pub.publish(diagnostics.diagnostic_array(
            self, 'policy', self.counts,
            message=f"{self.counts['actions_published']} actions, {skipped} skipped, {bad} bad",
            level=level, hardware_id='onnx'))


def main(args=None):
    """Run the policy node; return the exit code (1 when the model cannot be loaded)."""
    return spin_node(PolicyNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
