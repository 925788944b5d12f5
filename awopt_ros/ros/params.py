"""Parameter declaration with descriptors (description, range, read_only), and the start-up
check that a node was given no parameter it does not declare."""
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor)
from rclpy.parameter import Parameter

from awopt_ros.core import param_schema


def declare(node, name, default, description, *, low=None, high=None, read_only=False):
    """Declare parameter ``name`` on ``node`` with a descriptor and return its value.

    ``low``/``high`` give an inclusive range for int and float parameters (enforced by rclpy
    when the parameter is set). A float parameter given as an integer (``rate_hz: 10`` in the
    params file, ``--set node:timeout_s=60``) takes that value as a float instead of failing
    rclpy's type check.
    """
    if isinstance(default, float):
        _integer_override_as_float(node, name)
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


def _integer_override_as_float(node, name):
    """Turn an INTEGER override of parameter ``name`` into the equal DOUBLE (in place)."""
    overrides = getattr(node, '_parameter_overrides', None)   # rclpy keeps no public copy
    given = overrides.get(name) if overrides else None
    if given is not None and given.type_ == Parameter.Type.INTEGER:
        overrides[name] = Parameter(name, Parameter.Type.DOUBLE, float(given.value))


def stack_parameter_names():
    """Return the names of the parameters any node of the stack declares (frozenset), read
    from the node modules' source (:mod:`awopt_ros.core.param_schema`)."""
    from awopt_ros.launcher import ALL_NODE_MODULES
    schemas = param_schema.node_schemas(ALL_NODE_MODULES)
    return frozenset().union(*schemas.values())


def undeclared_overrides(node, shared=frozenset()):
    """Return the sorted names of the parameter overrides (params file, ``-p``, constructor
    ``parameter_overrides``) that ``node`` was given but has not declared.

    rclpy's own parameters (``use_sim_time``, ``qos_overrides.*`` ...) and the names in
    ``shared`` (parameters of other nodes, which a params file's ``/**`` section gives every
    node) are left out. Call it after the node declared all its parameters.
    """
    given = getattr(node, '_parameter_overrides', None) or {}   # rclpy keeps no public copy
    return sorted(name for name in given if not node.has_parameter(name)
                  and not param_schema.is_builtin(name) and name not in shared)


def check_overrides(node, shared=None):
    """Raise ``StartupError`` when ``node`` was given parameters it does not declare (a typo
    in the params file or in ``-p``), naming each with the closest declared names.

    Args:
        node: an rclpy Node whose ``__init__`` has run.
        shared: names to accept although the node does not declare them (default: every
            parameter of the stack's nodes, :func:`stack_parameter_names`, as the ``/**``
            section of a params file hands those to every node).
    """
    from awopt_ros.ros.run import StartupError
    bad = undeclared_overrides(node)
    if bad:     # read the stack's schema only then (it parses every node module's source)
        shared = stack_parameter_names() if shared is None else frozenset(shared)
        bad = [name for name in bad if name not in shared]
    if bad:
        declared = [name for name in node.list_parameters([], 0).names
                    if not param_schema.is_builtin(name)]
        raise StartupError('; '.join(
            param_schema.unknown_param_message('params file or -p', node.get_name(), name,
                                               declared) for name in bad))
