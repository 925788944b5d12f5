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


def live_stack_nodes(domain_id, wait_s=2.0, env=None, names=STACK_NODE_NAMES):
    """Return the stack node names (sorted list) that are live on ROS domain ``domain_id``.

    Joins the domain with a private rclpy Context (no signal handlers, its own participant,
    discovery on this machine only: the discovery settings of ``env``, default
    :func:`ros_environment`, are put into this process's environment first) and watches the
    graph for up to ``wait_s`` seconds (DDS discovery on one host takes a fraction of that),
    returning as soon as any node named in ``names`` shows up in the root namespace.
    An empty list means none answered within ``wait_s``.
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
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
