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


def logger_refusal(values, message=''):
    """Return why the logger does not accept episodes, or None when it does.

    Args:
        values: the logger's diagnostics values (dict of str, as from :func:`parse_values`):
            ``accepting_episodes`` ('true'/'false'; absent: accepting, a logger without the
            check), ``free_disk_mb`` and ``min_free_disk_mb`` (float text, MB) and
            ``write_errors`` (int text).
        message: the status message, which gives the reason when it does not accept (e.g.
            ``'only 3.2 MB free on /x/runs (min_free_disk_mb 50)'`` or ``'write error: ...'``).

    Returns:
        str | None: the reason (the message, else one built from the values).
    """
    if str(values.get('accepting_episodes', 'true')).strip().lower() not in (
            'false', '0', 'no'):
        return None
    if message:
        return message
    parts = []
    free, low = values.get('free_disk_mb'), values.get('min_free_disk_mb')
    if free is not None:
        parts.append(f'{free} MB free' + (f' (min_free_disk_mb {low})' if low is not None
                                          else ''))
    if values.get('write_errors') not in (None, '0', 0):
        parts.append(f'{values["write_errors"]} write errors')
    return ', '.join(parts) or 'the logger reports accepting_episodes false'


def logger_write_failed(values):
    """Return True when the logger's diagnostics ``values`` count a write error
    (``write_errors`` > 0): it records nothing more until restarted."""
    try:
        return int(values.get('write_errors', 0)) > 0
    except (TypeError, ValueError):
        return False
