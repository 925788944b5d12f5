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
