"""Spin a node with the shutdown behaviour of ros2/examples (exit 0 on Ctrl-C / shutdown)."""
import ctypes
import faulthandler
import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException

from awopt_ros.core.heap import keep_large_buffers
from awopt_ros.ros.params import check_overrides


#: How long a node process's ROS teardown (destroying its publishers, subscriptions and node,
#: shutting rclpy down) may take after the node's own ``close()`` has run (s); see
#: :func:`teardown_deadline`.
TEARDOWN_TIMEOUT_S = 5.0


class _SigEvent(ctypes.Structure):
    """glibc ``struct sigevent`` (64 bytes) with the ``SIGEV_THREAD`` members."""
    _fields_ = [('sigev_value', ctypes.c_void_p), ('sigev_signo', ctypes.c_int),
                ('sigev_notify', ctypes.c_int), ('sigev_notify_function', ctypes.c_void_p),
                ('sigev_notify_attributes', ctypes.c_void_p), ('_pad', ctypes.c_byte * 32)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [('interval_sec', ctypes.c_long), ('interval_nsec', ctypes.c_long),
                ('value_sec', ctypes.c_long), ('value_nsec', ctypes.c_long)]


def _is_node_process():
    """Whether this process runs a node module as ``__main__`` (``python -m
    awopt_ros.nodes.X``, what the launcher and the launch files start): never in a test
    process or a CLI, where ending the process would end more than the node."""
    spec = getattr(sys.modules.get('__main__'), '__spec__', None)
    return spec is not None and str(spec.name).startswith('awopt_ros.nodes.')


def teardown_deadline(timeout_s, code):
    """End this process with exit code ``code`` if it is still running ``timeout_s`` from now.

    For the ROS teardown of a node process after its ``close()`` has saved its work: Fast DDS
    can deadlock while deleting a writer or a node, holding the GIL (seen in this project's
    test suite: a node still in ``destroy_node`` 15 s after SIGINT, then killed; a known class
    of Fast DDS teardown deadlock, eProsima/Fast-DDS#6193). No Python thread or signal handler
    could run then, so the deadline is a POSIX timer whose ``SIGEV_THREAD`` notification calls
    libc ``_exit(code)`` on a thread of its own. Half a second before it, faulthandler writes
    every thread's Python stack to stderr (the node's log): where the teardown hung.

    Returns a function that cancels the deadline, or None where it cannot be set (not
    Linux/glibc, or not a node process: see :func:`_is_node_process`).
    """
    if not sys.platform.startswith('linux') or not _is_node_process():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        exit_fn = ctypes.cast(libc._exit, ctypes.c_void_p).value
        timer = ctypes.c_void_p()
        event = _SigEvent(sigev_value=int(code) & 0xFF, sigev_notify=2,   # SIGEV_THREAD
                          sigev_notify_function=exit_fn)
        if libc.timer_create(1, ctypes.byref(event), ctypes.byref(timer)) != 0:  # MONOTONIC
            return None
        whole, frac = divmod(float(timeout_s), 1.0)
        spec = _ITimerSpec(value_sec=int(whole), value_nsec=int(frac * 1e9))
        if libc.timer_settime(timer, 0, ctypes.byref(spec), None) != 0:
            libc.timer_delete(timer)
            return None
    except (OSError, AttributeError):
        return None
    faulthandler.dump_traceback_later(max(0.1, timeout_s - 0.5), exit=False)

    def cancel():
        faulthandler.cancel_dump_traceback_later()
        libc.timer_delete(timer)
    return cancel


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
        cancel = None
        if node is not None:
            close = getattr(node, 'close', None)
            if close is not None:
                close()
            sys.stdout.flush()
            sys.stderr.flush()
            cancel = teardown_deadline(TEARDOWN_TIMEOUT_S, code)
            node.destroy_node()
        rclpy.try_shutdown()
        if cancel is not None:
            cancel()
        signal.signal(signal.SIGINT, previous)
    return code
