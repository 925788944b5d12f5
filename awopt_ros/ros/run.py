"""Spin a node with the shutdown behaviour of ros2/examples (exit 0 on Ctrl-C / shutdown)."""
import faulthandler
import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException

from awopt_ros.core.heap import keep_large_buffers
from awopt_ros.ros.params import check_overrides


class StartupError(RuntimeError):
    """A node cannot start (missing model, contract mismatch ...); the message says why.

    Raised from a node's ``__init__``; :func:`spin_node` logs it and returns exit code 1.
    """


def spin_node(node_cls, args=None):
    """Create ``node_cls()``, spin it until shutdown, and clean up. Returns the exit code.

    0 on shutdown / Ctrl-C; 1 when the node raised :class:`StartupError` while starting.
    Large buffers stay on the heap (:func:`awopt_ros.core.heap.keep_large_buffers`).
    SIGUSR1 writes every thread's Python stack to stderr (the node's log), without stopping
    the node: the launcher sends it to a node that does not stop after SIGINT before killing
    it, so a hang leaves its place in the log.
    """
    if hasattr(signal, 'SIGUSR1'):
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    # camera frames (0.9 MB) pass through most nodes: no page faults per frame (core.heap)
    keep_large_buffers()
    # Remember that SIGINT arrived: a KeyboardInterrupt raised inside a pybind11 call (e.g.
    # while rclpy converts a message argument) comes out as a RuntimeError that no longer
    # carries it, and the context may still be ok at that moment.
    sigints = []
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        sigints.append(signum)
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, on_sigint)
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    code = 0
    try:
        node = node_cls()
        check_overrides(node)   # a parameter it was given but does not declare: StartupError
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        rclpy.logging.get_logger(getattr(node_cls, '__name__', 'node')).fatal(
            f'startup failed: {exc}')
        code = 1
    except (RuntimeError, TypeError) as exc:
        # rclpy can fail to take a message that arrives while SIGINT shuts the context down,
        # and a Ctrl-C that lands inside a message's C deserialisation surfaces as a TypeError
        # chained to the KeyboardInterrupt: both are still a clean shutdown.
        interrupted = bool(sigints) or isinstance(exc.__cause__ or exc.__context__,
                                                  KeyboardInterrupt)
        if node is None or (node.context.ok() and not interrupted):
            raise
        rclpy.logging.get_logger(node.get_name()).debug(f'error during shutdown: {exc}')
    finally:
        if node is not None:
            close = getattr(node, 'close', None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
        signal.signal(signal.SIGINT, previous)
    return code
