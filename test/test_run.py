"""spin_node: the exit code contract of every node process (0 on Ctrl-C / shutdown)."""
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
