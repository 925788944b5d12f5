"""camera_pipeline: camera frame -> policy-sized image, dropping (and counting) bad frames.

Subscribes ``<camera_ns>/color/image_raw`` (rgb8, sensor-data QoS; ``camera_ns``:
:func:`awopt_ros.ros.robot_params.declare_camera_ns`) and publishes ``/policy/image``
(``image_size`` x ``image_size`` rgb8) with the SOURCE frame's stamp, so that downstream nodes
can match actions to frames. The crop and resize are
:func:`awopt_ros.core.image_ops.crop_resize`, on a view of the message's data (no copy of
the frame). The policy node crops the camera frames itself by default (``image_source``
'camera', the low-latency path); this node's images are then what the logger records and
rviz shows (the same function on the same frames), and what a policy with ``image_source``
'camera_pipeline' acts on.

A frame is used only when it has the configured source layout (rgb8, ``source_width`` x
``source_height``, step >= 3 * width, exactly step * height bytes:
:class:`awopt_ros.core.image_ops.FrameLayoutCheck`; counted in ``dropped_bad_size`` /
``dropped_bad_encoding``) and is fresh and newer than the last one
(:class:`awopt_ros.core.image_ops.FrameGate`; ``dropped_stale`` / ``dropped_out_of_order``).
``<camera_ns>/color/camera_info`` of another size is counted (``camera_info_mismatch``) and
warned about: the crop and the model refer to the configured source size. It is read only until
the first one of the configured size: then its subscription is destroyed, so that no
CameraInfo is deserialized per frame on this single-threaded node's frame -> command path (the
frame's own size is checked on every frame anyway).
"""
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from awopt_ros.core.image_ops import FrameGate, FrameLayoutCheck, check_crop, crop_resize
from awopt_ros.core.spec import POLICY_CROP_XYWH, POLICY_IMAGE_SIZE, SOURCE_SIZE
from awopt_ros.ros import convert, diagnostics, qos
from awopt_ros.ros.params import declare
from awopt_ros.ros.robot_params import declare_camera_ns
from awopt_ros.ros.run import spin_node


class CameraPipelineNode(Node):
    """Crop + resize camera frames for the policy; drop frames of another layout than the
    configured source size, and frames older than ``max_frame_age_s``."""

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
        source_wh = (declare(self, 'source_width', SOURCE_SIZE[0],
                             'Camera frame width (px); frames of another size are dropped.',
                             low=16, high=8192, read_only=True),
                     declare(self, 'source_height', SOURCE_SIZE[1],
                             'Camera frame height (px); frames of another size are dropped.',
                             low=16, high=8192, read_only=True))
        image_topic, info_topic = declare_camera_ns(self)
        check_crop(self.crop_xywh, *source_wh)  # fail at start-up, not on the first frame
        self.layout = FrameLayoutCheck(source_wh)
        self.gate = FrameGate(max_age_s)
        self.camera_info_mismatch = 0
        self.pub = self.create_publisher(Image, '/policy/image', qos.SENSOR)
        self.diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(Image, image_topic, self._on_image, qos.SENSOR)
        # Until the first camera_info of the configured size (None after it).
        self.info_sub = self.create_subscription(CameraInfo, info_topic,
                                                 self._on_camera_info, qos.SENSOR)
        self.create_timer(1.0, self._publish_diagnostics)

    def _on_camera_info(self, msg):
        wh = (int(msg.width), int(msg.height))
        if wh == self.layout.expected_wh:
            if self.info_sub is not None:   # the camera agrees: stop reading camera_info
                self.destroy_subscription(self.info_sub)
                self.info_sub = None
        else:
            self.camera_info_mismatch += 1
            w, h = self.layout.expected_wh
            self.get_logger().warning(
                f'camera_info says {wh[0]}x{wh[1]}, configured source size is {w}x{h} '
                '(source_width/source_height): frames of another size are dropped',
                throttle_duration_sec=5.0)

    def _on_image(self, msg):
        if not convert.frame_layout_ok(self, self.layout, msg):
            return
        now_s = self.get_clock().now().nanoseconds * 1e-9
        if not self.gate.accept(now_s, convert.stamp_to_s(msg.header.stamp)):
            return
        # Neither raises now: the layout check took the frame (rgb8, the source size, step
        # and length consistent), and the crop was checked against that size at start-up.
        small = crop_resize(convert.image_view(msg), self.crop_xywh, self.image_size)
        self.pub.publish(convert.numpy_to_image(small, msg.header.stamp, msg.header.frame_id))

    def _publish_diagnostics(self):
        dropped = self.gate.dropped + self.layout.dropped
        bad = self.gate.dropped_stale + self.layout.dropped + self.camera_info_mismatch
        self.diag.publish(diagnostics.diagnostic_array(
            self, 'camera_pipeline', dict(self.gate.counters(), **self.layout.counters(),
                                          camera_info_mismatch=self.camera_info_mismatch),
            message=f'{self.gate.accepted} frames, {dropped} dropped',
            level=diagnostics.OK if bad == 0 else diagnostics.WARN, hardware_id='camera'))


def main(args=None):
    return spin_node(CameraPipelineNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
