"""Tests of awopt_ros.core.heap (large buffers stay on the heap)."""
import json
import subprocess
import sys

import pytest

from awopt_ros.core import heap

#: Allocate and free 0.9 MB buffers as a camera subscriber does per frame (two live at a
#: time: the message's array and a copy); print the minor page faults this cost.
_FRAMES = """
import json, resource, sys
import numpy as np
from awopt_ros.core.heap import keep_large_buffers
applied = keep_large_buffers() if sys.argv[1] == 'on' else None
frame = np.zeros((480, 640, 3), np.uint8)
for _ in range(20):
    frame.tobytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    a = frame.tobytes()
    b = bytearray(a)
    del a, b
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({'applied': applied, 'faults': faults}))
"""


def _faults(mode):
    out = subprocess.run([sys.executable, '-c', _FRAMES, mode], capture_output=True, text=True,
                         check=True, env={'PATH': '/usr/bin:/bin'})
    return json.loads(out.stdout)


def test_frame_sized_buffers_cost_no_page_faults_once_kept():
    off, on = _faults('off'), _faults('on')
    assert on['applied'] is True
    # Without it every frame maps fresh pages (about 2 x 225 faults per frame here).
    assert off['faults'] > 200 * 100
    assert on['faults'] < 2 * 240, off   # the first frame's pages, then none


@pytest.mark.parametrize('mmap, trim', [(0, 1), (heap.MAX_MMAP_THRESHOLD_BYTES + 1, 1),
                                        (1024, 0)])
def test_bad_thresholds_raise(mmap, trim):
    with pytest.raises(ValueError):
        heap.keep_large_buffers(mmap, trim)
