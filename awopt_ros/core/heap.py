"""Keep large message buffers on the heap: no page faults per camera frame.

A 640x480 rgb8 frame is 0.9 MB, and every process that publishes or takes one allocates a
few buffers of that size per frame (numpy array, ``array.array`` of the message, CDR copy).
glibc serves blocks above its mmap threshold with fresh ``mmap`` pages and gives freed heap
space back above its trim threshold: each frame then costs hundreds of page faults, which in
a virtual machine are slow. Measured here (2 shared cores, a 30 Hz 640x480 publisher and a
subscriber in two processes): publisher ``numpy_to_image`` 1.3 -> 0.2 ms, publish end ->
subscriber callback 3.6 -> 1.7 ms, frame stamp -> callback p50 5.1 -> 2.0 ms.

:func:`keep_large_buffers` raises both thresholds with ``mallopt`` (glibc only; elsewhere it
does nothing). The same can be set for a process from outside with the environment
variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``. Memory freed stays with
the process (up to ``trim_threshold_bytes`` above what it uses), which is what makes the next
frame's allocation free.
"""
import ctypes
import ctypes.util

#: glibc ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Largest mmap threshold glibc accepts on 64-bit (HEAP_MAX / 2 = 32 MiB).
MAX_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024


def keep_large_buffers(mmap_threshold_bytes=MAX_MMAP_THRESHOLD_BYTES,
                       trim_threshold_bytes=128 * 1024 * 1024):
    """Raise the calling process's glibc mmap and trim thresholds; return whether it did.

    Args:
        mmap_threshold_bytes: blocks up to this size come from the heap (at most 32 MiB).
        trim_threshold_bytes: free heap space kept before it is returned to the system.

    Returns:
        True when both ``mallopt`` calls succeeded, False where there is no glibc or it
        refused (nothing changes then).

    Raises:
        ValueError: a threshold <= 0 or ``mmap_threshold_bytes`` above 32 MiB.
    """
    if not 0 < int(mmap_threshold_bytes) <= MAX_MMAP_THRESHOLD_BYTES:
        raise ValueError(f'mmap_threshold_bytes must be in (0, {MAX_MMAP_THRESHOLD_BYTES}], '
                         f'got {mmap_threshold_bytes}')
    if int(trim_threshold_bytes) <= 0:
        raise ValueError(f'trim_threshold_bytes must be > 0, got {trim_threshold_bytes}')
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold_bytes)) == 1
    return mallopt(M_TRIM_THRESHOLD, int(trim_threshold_bytes)) == 1 and ok
