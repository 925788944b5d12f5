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
