"""A short history of stamped values, looked up by stamp (ROS-free).

The logger pairs a dataset step with the joint state at its image's stamp when the acting
policy does not publish the proprioception it used (``/policy/proprio``).
"""
from collections import deque


class StampedHistory:
    """The last ``maxlen`` values with their stamps (int ns, in arrival order).

    Args:
        maxlen: how many entries to keep (>= 1), e.g. 4 s of joint states at 100 Hz = 400.

    Raises:
        ValueError: ``maxlen`` < 1.
    """

    def __init__(self, maxlen):
        if int(maxlen) < 1:
            raise ValueError(f'maxlen must be >= 1, got {maxlen}')
        self._entries = deque(maxlen=int(maxlen))

    def __len__(self):
        return len(self._entries)

    def append(self, stamp_ns, value):
        """Add ``value`` stamped ``stamp_ns`` (int ns); the oldest entry drops when full."""
        self._entries.append((int(stamp_ns), value))

    def at(self, stamp_ns):
        """Return (stamp ns, value) of the newest entry stamped at or before ``stamp_ns``;
        the oldest entry when all are newer; None when empty."""
        for entry in reversed(self._entries):
            if entry[0] <= stamp_ns:
                return entry
        return self._entries[0] if self._entries else None
