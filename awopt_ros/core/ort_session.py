"""onnxruntime sessions with telemetry off: the one place the project creates them.

Official onnxruntime builds for Linux (1.32 among them) carry Microsoft's 1DS telemetry
client: about 9 s after the runtime initialises, a thread resolves
``mobile.events.data.microsoft.com`` (DNS queries to the host's resolver) and tries to
upload usage events over HTTPS, retrying every few seconds; events are also kept in
``~/.cache/Microsoft/DeveloperTools/.onnxruntime``. awopt_ros sends nothing off the host, so:

* importing this module sets ``ORT_DISABLE_TELEMETRY=1`` in the process environment, which
  onnxruntime reads once, when ``import onnxruntime`` initialises the runtime; it stops the
  uploader, the events and the device identifier for the process's life, and child
  processes inherit it. Modules that create sessions import this module at their top, so
  the variable is set before any onnxruntime import in an awopt process;
* :func:`onnxruntime` also calls ``onnxruntime.disable_telemetry_events()`` (alone it does
  NOT stop the upload attempts of 1.32: the start-up event is sent anyway), and warns once
  when onnxruntime was imported before the variable was set (then it is too late for this
  process: import ``awopt_ros.core.ort_session`` first).

Create sessions with :func:`session`; do not call ``onnxruntime.InferenceSession`` directly.
"""
import os
import sys
import warnings

#: Environment variable that turns onnxruntime's 1DS telemetry off when set to ``1`` before
#: onnxruntime initialises (onnxruntime's Privacy.md, "Disabling Telemetry").
TELEMETRY_ENV = 'ORT_DISABLE_TELEMETRY'

#: True when onnxruntime was already imported without the variable when this module loaded.
IMPORTED_TOO_EARLY = 'onnxruntime' in sys.modules and os.environ.get(TELEMETRY_ENV) != '1'
os.environ[TELEMETRY_ENV] = '1'

_state = {'ready': False}


def onnxruntime():
    """Return the ``onnxruntime`` module with its telemetry turned off (see module doc)."""
    import onnxruntime as ort
    if not _state['ready']:
        _state['ready'] = True
        if IMPORTED_TOO_EARLY:
            warnings.warn(f'onnxruntime was imported before {TELEMETRY_ENV}=1 was set: its '
                          'telemetry may try to reach the network in this process; import '
                          'awopt_ros.core.ort_session first or set the variable in the '
                          'environment', RuntimeWarning, stacklevel=2)
        ort.disable_telemetry_events()
    return ort


def session(path, intra_op_threads=1, inter_op_threads=1):
    """Return a CPU ``onnxruntime.InferenceSession`` for the ONNX file at ``path``.

    Args:
        path: ONNX file (str or Path).
        intra_op_threads: intra-op threads (>= 1).
        inter_op_threads: inter-op threads (>= 1).

    Raises:
        ValueError: a thread count < 1.
        onnxruntime errors (``onnxruntime.capi.onnxruntime_pybind11_state.*``, subclasses of
        ``Exception``) for files onnxruntime cannot load.
    """
    if int(intra_op_threads) < 1 or int(inter_op_threads) < 1:
        raise ValueError(f'thread counts must be >= 1, got intra_op_threads='
                         f'{intra_op_threads}, inter_op_threads={inter_op_threads}')
    ort = onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(intra_op_threads)
    opts.inter_op_num_threads = int(inter_op_threads)
    # Fatal messages only: a failing run would print its error to stderr on every call (the
    # exception carries it; callers log it, throttled). Set here, not as RunOptions per call:
    # passing RunOptions made run_with_iobinding (the CEM head) about 45 % slower.
    opts.log_severity_level = 4
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=['CPUExecutionProvider'])
