"""Parameter declaration with descriptors (description, range, read_only)."""
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor)


def declare(node, name, default, description, *, low=None, high=None, read_only=False):
    """Declare parameter ``name`` on ``node`` with a descriptor and return its value.

    ``low``/``high`` give an inclusive range for int and float parameters (enforced by rclpy
    when the parameter is set).
    """
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if low is not None and high is not None:
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
        elif isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                            to_value=float(high), step=0.0)]
    return node.declare_parameter(name, default, desc).value
