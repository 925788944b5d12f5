"""Look at a ROS domain's graph for a running awopt stack before starting another one.

The per-domain file lock of :class:`awopt_ros.launcher.Stack` stops a second ``awopt`` stack;
a stack that ``ros2 launch`` started holds no such lock, so :meth:`Stack.start` also listens
to the graph for a moment (:func:`live_stack_nodes`) and refuses when stack nodes answer.
"""
import os
import time

import rclpy
from rclpy.context import Context

from awopt_ros.launcher import STACK_NODE_NAMES, ros_environment

#: Environment keys that decide where DDS discovery goes (kept on this machine).
_DISCOVERY_KEYS = ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'RMW_IMPLEMENTATION',
                   'FASTDDS_DEFAULT_PROFILES_FILE', 'AMENT_PREFIX_PATH')
#: Stack node names that other ROS software may well use too: one of them alone is no stack.
GENERIC_NAMES = frozenset({'logger', 'policy', 'robot_state'})


def looks_like_stack(found):
    """Return True when the node names ``found`` (iterable of str) are an awopt stack's: one
    name of the stack that is not in :data:`GENERIC_NAMES`, or two or more of its names."""
    found = set(found)
    return len(found) >= 2 or bool(found - GENERIC_NAMES)


def live_stack_nodes(domain_id, wait_s=2.0, env=None, names=STACK_NODE_NAMES):
    """Return the stack node names (sorted list) that are live on ROS domain ``domain_id``.

    Joins the domain with a private rclpy Context (no signal handlers, its own participant,
    discovery on this machine only: the discovery settings of ``env``, default
    :func:`ros_environment`, are put into this process's environment first) and watches the
    graph for up to ``wait_s`` seconds (DDS discovery on one host takes a fraction of that),
    returning as soon as the nodes named in ``names`` that show up in the root namespace
    :func:`looks_like_stack`. An empty list means no stack answered within ``wait_s`` (a lone
    node called ``logger`` or ``policy`` from other software is not taken for one).
    """
    env = ros_environment(env)
    os.environ.update({k: env[k] for k in _DISCOVERY_KEYS if k in env})
    context = Context()
    rclpy.init(context=context, domain_id=int(domain_id))
    node = None
    try:
        node = rclpy.create_node(f'awopt_stack_check_{os.getpid()}', context=context,
                                 start_parameter_services=False, enable_rosout=False)
        deadline = time.monotonic() + wait_s
        while True:
            found = sorted({name for name, ns in node.get_node_names_and_namespaces()
                            if ns == '/' and name in names})
            if looks_like_stack(found):
                return found
            if time.monotonic() >= deadline:
                return []
            time.sleep(0.05)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
