"""Tests of the image / joint-state pairing (core.sync)."""
import pytest

from awopt_ros.core.sync import StampedHistory


def test_at_returns_the_latest_entry_at_or_before_the_stamp():
    h = StampedHistory(3)
    assert h.at(10) is None and len(h) == 0
    for stamp, value in ((10, 'a'), (20, 'b'), (30, 'c')):
        h.append(stamp, value)
    assert h.at(20) == (20, 'b')          # exact stamp
    assert h.at(29) == (20, 'b')          # between: the earlier one
    assert h.at(99) == (30, 'c')
    assert h.at(5) == (10, 'a')           # all newer: the oldest
    h.append(40, 'd')                     # full: 'a' drops
    assert len(h) == 3 and h.at(15) == (20, 'b')
    with pytest.raises(ValueError, match='maxlen'):
        StampedHistory(0)
