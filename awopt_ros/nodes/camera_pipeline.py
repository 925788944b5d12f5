"""camera_pipeline: camera frame -> policy-sized image, dropping (and counting) stale frames.

Subscribes ``/camera/color/image_raw`` (rgb8, sensor-data QoS) and publishes ``/policy/image``
(``image_size`` x ``image_size`` rgb8) with the SOURCE frame's stamp, so that downstream nodes
can match actions to frames and measure frame-to-command latency. The crop and resize are
:func:`awopt_ros.core.image_ops.crop_resize`; the age check is
:class:`awopt_ros.core.image_ops.FrameGate`.
"""
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image

from awopt_ros.core.image_ops import FrameGate, check_crop, crop_resize
from awopt_ros.core.spec import POLICY_CROP_XYWH, POLICY_IMAGE_SIZE, SOURCE_SIZE
from awopt_ros.ros import convert, diagnostics, qos
from awopt_ros.ros.params import declare
from awopt_ros.ros.run import spin_node


class CameraPipelineNode(Node):
    """Crop + resize camera frames for the policy; drop frames older than ``max_frame_age_s``."""

    def __init__(self, **kwargs):
        super().__init__('camera_pipeline', **kwargs)
        self.image_size = declare(self, 'image_size', POLICY_IMAGE_SIZE, 'Policy image side (px).',
                                  low=8, high=1024, read_only=True)
        self.crop_xywh = list(declare(self, 'crop_xywh', list(POLICY_CROP_XYWH),
                                      'Crop of the camera frame (x, y, w, h; source px) that '
                                      'is resized to the policy image.', read_only=True))
        max_age_s = declare(self, 'max_frame_age_s', 0.2,
                            'Frames older than this when they arrive are dropped (s).',
                            low=0.001, high=10.0)
        check_crop(self.crop_xywh, *SOURCE_SIZE)  # fail at start-up, not on the first frame
        self.gate = FrameGate(max_age_s)
        self.bad_frames = 0
        self.pub = self.create_publisher(Image, '/policy/image', qos.SENSOR)
        self.diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(Image, '/camera/color/image_raw', self._on_image, qos.SENSOR)
        self.create_timer(1.0, self._publish_diagnostics)

    def _on_image(self, msg):
        now_s = self.get_clock().now().nanoseconds * 1e-9
        if not self.gate.accept(now_s, convert.stamp_to_s(msg.header.stamp)):
            return
        try:
            small = crop_resize(convert.image_to_numpy(msg), self.crop_xywh, self.image_size)
        except ValueError as exc:
            self.bad_frames += 1
            self.get_logger().error(f'bad camera frame dropped: {exc}',
                                    throttle_duration_sec=5.0)
            return
        self.pub.publish(convert.numpy_to_image(small, msg.header.stamp, msg.header.frame_id))

    def _publish_diagnostics(self):
        self.diag.publish(diagnostics.diagnostic_array(
            self, 'camera_pipeline', dict(self.gate.counters(), bad_frames=self.bad_frames),
            message=f'{self.gate.accepted} frames, {self.gate.dropped} dropped',
            level=diagnostics.OK if self.gate.dropped_stale == 0 else diagnostics.WARN,
            hardware_id='camera'))


def main(args=None):
    return spin_node(CameraPipelineNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
