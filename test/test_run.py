"""spin_node: the exit code contract of every node process (0 on Ctrl-C / shutdown)."""
import signal

import pytest
from rclpy.node import Node

from awopt_ros.ros.run import spin_node


def _node_raising(make_exc):
    class Raiser(Node):
        def __init__(self):
            super().__init__('raiser')
            self.create_timer(0.01, self._fire)

        def _fire(self):
            raise make_exc()
    return Raiser


def test_ctrl_c_is_a_clean_exit():
    assert spin_node(_node_raising(KeyboardInterrupt), args=[]) == 0


def test_ctrl_c_inside_deserialisation_is_a_clean_exit():
    """A Ctrl-C inside a message's C deserialisation reaches Python as a TypeError raised
    while handling the KeyboardInterrupt (seen in the integration test at shutdown)."""
    def chained():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise TypeError('Unable to convert function return value to a Python type!')
    Raiser = _node_raising(lambda: None)
    Raiser._fire = lambda self: chained()
    assert spin_node(Raiser, args=[]) == 0


def test_a_real_type_error_still_fails_the_node():
    with pytest.raises(TypeError, match='a bug'):
        spin_node(_node_raising(lambda: TypeError('a bug')), args=[])


def test_ctrl_c_swallowed_by_a_c_call_is_a_clean_exit():
    """A SIGINT whose KeyboardInterrupt pybind11 turns into a RuntimeError with no link to it
    ('Unable to convert call argument', seen when the episode manager shut down while taking
    a message) is still a clean exit; the same RuntimeError without SIGINT fails the node."""
    def swallowed():
        # The Python-level SIGINT handler runs (KeyboardInterrupt) before rclpy's signal
        # thread has shut the context down: call it as the interpreter would.
        try:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass                     # what the C++ call does with it
        raise RuntimeError("Unable to convert call argument '0' to Python object")
    Raiser = _node_raising(lambda: None)
    Raiser._fire = lambda self: swallowed()
    with pytest.raises(RuntimeError, match='Unable to convert'):
        spin_node(_node_raising(lambda: RuntimeError("Unable to convert call argument '0'")),
                  args=[])
    before = signal.getsignal(signal.SIGINT)
    assert spin_node(Raiser, args=[]) == 0
    assert signal.getsignal(signal.SIGINT) is before          # handler restored


_HANGING_TEARDOWN = """
import ctypes, sys, types
sys.modules['__main__'].__spec__ = types.SimpleNamespace(name='awopt_ros.nodes.probe')
import rclpy
from rclpy.node import Node
from awopt_ros.ros import run
run.TEARDOWN_TIMEOUT_S = 1.5


class Probe(Node):
    def __init__(self):
        super().__init__('teardown_probe')
        self.create_timer(0.05, self._stop)

    def _stop(self):
        raise KeyboardInterrupt   # as Ctrl-C would, inside spin

    def close(self):
        print('closed', flush=True)

    def destroy_node(self):
        # stands in for a Fast DDS deadlock in the teardown: C code holding the GIL
        ctypes.PyDLL(None).sleep(60)


run.spin_node(Probe, args=[])
print('not reached', flush=True)
"""


def test_a_node_process_whose_ros_teardown_hangs_exits_0_at_the_deadline(tmp_path):
    """After the node's close() ran, a teardown stuck past TEARDOWN_TIMEOUT_S ends the process
    with the node's exit code (0), with every thread's Python stack in its output."""
    import subprocess
    import sys
    import time
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, '-c', _HANGING_TEARDOWN], capture_output=True,
                          text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert 'closed' in proc.stdout and 'not reached' not in proc.stdout
    assert 'destroy_node' in proc.stderr   # faulthandler's dump: where it hung
    assert elapsed < 30.0


def test_no_teardown_deadline_outside_a_node_process():
    from awopt_ros.ros import run
    assert run.teardown_deadline(0.1, 0) is None   # a test process: never ended from under it
