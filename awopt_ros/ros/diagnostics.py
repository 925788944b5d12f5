"""Build ``diagnostic_msgs/DiagnosticArray`` messages from plain counters."""
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def diagnostic_array(node, name, values, message='', level=OK, hardware_id=''):
    """Return a DiagnosticArray with one status ``name`` holding ``values`` (dict) as strings.

    ``header.stamp`` is ``node``'s clock now.
    """
    status = DiagnosticStatus(level=level, name=name, hardware_id=hardware_id, message=message,
                              values=[KeyValue(key=str(k), value=str(v))
                                      for k, v in values.items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


def parse_values(status):
    """Return a DiagnosticStatus's key/values as a dict of str."""
    return {kv.key: kv.value for kv in status.values}


#: Logger diagnostics counters that must all be > 0 before an episode may start: every input
#: the dataset needs has matched its publisher (DDS discovery takes a moment per topic after
#: start-up; best-effort messages sent before the match never reach the logger).
LOGGER_READY_KEYS = ('camera_frames_received', 'policy_images_received', 'actions_received',
                     'joint_states_received')


def logger_ready(values):
    """Return True when the logger's diagnostics ``values`` (dict of str or int, as from
    :func:`parse_values`) count at least one message on each of :data:`LOGGER_READY_KEYS`."""
    try:
        return all(int(values.get(key, 0)) > 0 for key in LOGGER_READY_KEYS)
    except (TypeError, ValueError):
        return False
