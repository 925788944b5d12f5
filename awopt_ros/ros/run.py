"""Spin a node with the shutdown behaviour of ros2/examples (exit 0 on Ctrl-C / shutdown)."""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException


def spin_node(node_cls, args=None):
    """Create ``node_cls()``, spin it until shutdown, and clean up. Returns the exit code."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = node_cls()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, 'close', None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
