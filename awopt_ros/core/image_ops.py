"""Image operations for the policy input: crop + resize, a frame-layout check, a frame-age gate.

The policy image is a square crop of the camera frame (``crop_xywh`` in source pixels) resized
to ``size`` x ``size`` with ``cv2.INTER_AREA`` (pixel-area resampling, the OpenCV choice for
down-scaling), see docs/INTERFACES.md "Policy image".
"""
import cv2
import numpy as np

from awopt_ros.core.spec import RGB8


def _check_rgb(rgb):
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f'image must be a numpy array, got {type(rgb).__name__}')
    if rgb.dtype != np.uint8:
        raise ValueError(f'image must be uint8, got dtype {rgb.dtype}')
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'image must have shape (H, W, 3), got {rgb.shape}')
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f'image is empty: shape {rgb.shape}')


def check_crop(crop_xywh, width, height):
    """Return ``crop_xywh`` as a tuple of 4 ints after checking it lies inside the image.

    Args:
        crop_xywh: (x, y, w, h) in source pixels; x, y is the top-left corner.
        width, height: source image size (px).

    Raises:
        ValueError: not 4 integers, non-positive width/height, or the crop leaves the image.
    """
    vals = list(crop_xywh)
    if len(vals) != 4:
        raise ValueError(f'crop_xywh must have 4 entries (x, y, w, h), got {len(vals)}')
    if any(float(v) != int(v) for v in vals):
        raise ValueError(f'crop_xywh must be integers, got {vals}')
    x, y, w, h = (int(v) for v in vals)
    if w <= 0 or h <= 0:
        raise ValueError(f'crop_xywh width and height must be > 0, got w={w} h={h}')
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f'crop_xywh {[x, y, w, h]} lies outside the {width}x{height} image')
    return x, y, w, h


def crop_resize(rgb, crop_xywh, size):
    """Crop ``rgb`` to ``crop_xywh`` and resize it to ``size`` x ``size`` (INTER_AREA).

    The crop is a view: ``cv2.resize`` reads it in place (row stride of the source), without
    copying it first; the result is the same as resizing a contiguous copy.

    Args:
        rgb: uint8 array (H, W, 3), RGB; a strided view (e.g. of a message's data with row
            padding, :func:`awopt_ros.ros.convert.image_view`) is fine.
        crop_xywh: (x, y, w, h) source pixels, must lie inside the image.
        size: output side length (px), > 0.

    Returns:
        uint8 array (size, size, 3), C-contiguous, owned by the caller.

    Raises:
        ValueError: wrong dtype or shape, bad ``size``, or a crop outside the image.
    """
    _check_rgb(rgb)
    if int(size) != size or size <= 0:
        raise ValueError(f'size must be a positive integer, got {size}')
    size = int(size)
    x, y, w, h = check_crop(crop_xywh, rgb.shape[1], rgb.shape[0])
    patch = rgb[y:y + h, x:x + w]
    if (w, h) == (size, size):
        return np.array(patch, order='C')
    if patch.strides[1:] != (3, 1):      # pixels not packed (a transposed view ...): copy
        patch = np.ascontiguousarray(patch)
    out = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out, dtype=np.uint8)


def frame_layout_error(encoding, width, height, step, data_len, expected_wh):
    """Return why a camera frame does not have the expected layout, or None when it does.

    A frame is used only when it is ``rgb8``, exactly ``expected_wh`` (the configured source
    size, which ``camera_info`` and the crop refer to), with a row ``step`` (bytes) of at least
    3 * width (row padding is allowed) and exactly ``step * height`` bytes of data (a longer
    buffer is a sender that disagrees with its own header).

    Args:
        encoding: ``sensor_msgs/Image.encoding`` (str).
        width, height: the frame's size (px).
        step: bytes per row.
        data_len: number of data bytes.
        expected_wh: (width, height) the pipeline is configured for (px).

    Returns:
        None, or a tuple ``(kind, text)``: ``kind`` 'encoding' or 'size' (the counter the
        frame goes to), ``text`` naming the expected and the received layout.
    """
    ew, eh = (int(v) for v in expected_wh)
    if encoding != RGB8:
        return 'encoding', f'encoding {encoding!r}, expected {RGB8!r}'
    w, h, step, n = int(width), int(height), int(step), int(data_len)
    if (w, h) != (ew, eh):
        return 'size', f'frame {w}x{h}, expected {ew}x{eh} (source size)'
    if step < 3 * w:
        return 'size', f'row step {step} bytes < 3 * width = {3 * w} ({w}x{h} rgb8)'
    if n != step * h:
        return 'size', (f'{n} data bytes, expected step * height = {step} * {h} = {step * h} '
                        f'({w}x{h} rgb8)')
    return None


class FrameLayoutCheck:
    """Count and reject camera frames whose encoding or layout is not the expected one.

    ``check(encoding, width, height, step, data_len)`` returns None for a frame to use, else
    the reason (str); rejected frames are counted in ``dropped_bad_encoding`` and
    ``dropped_bad_size`` (:func:`frame_layout_error`).
    """

    def __init__(self, expected_wh):
        """Create a check for frames of ``expected_wh`` = (width, height) px, both > 0."""
        w, h = (int(v) for v in expected_wh)
        if w <= 0 or h <= 0:
            raise ValueError(f'expected frame size must be positive, got {w}x{h}')
        self.expected_wh = (w, h)
        self.dropped_bad_encoding = 0
        self.dropped_bad_size = 0

    @property
    def dropped(self):
        """Total number of rejected frames."""
        return self.dropped_bad_encoding + self.dropped_bad_size

    def check(self, encoding, width, height, step, data_len):
        """Return None to use the frame, else why it is dropped (it is then counted)."""
        error = frame_layout_error(encoding, width, height, step, data_len, self.expected_wh)
        if error is None:
            return None
        kind, text = error
        if kind == 'encoding':
            self.dropped_bad_encoding += 1
        else:
            self.dropped_bad_size += 1
        return text

    def counters(self):
        """Return the counters as a dict of ints (for /diagnostics)."""
        return {'dropped_bad_encoding': self.dropped_bad_encoding,
                'dropped_bad_size': self.dropped_bad_size}


def frame_age_s(now_s, stamp_s):
    """Return the age of a frame (s): ``now_s - stamp_s``, both in the same clock (s)."""
    return float(now_s) - float(stamp_s)


class FrameGate:
    """Decide whether to process a frame: drop it when too old or not newer than the last one.

    ``accept(now_s, stamp_s)`` returns True for a frame to process. Dropped frames are counted
    in ``dropped_stale`` (age > ``max_age_s``) and ``dropped_out_of_order`` (stamp not newer
    than the last accepted one); ``accepted`` counts the rest.
    """

    def __init__(self, max_age_s):
        """Create a gate; ``max_age_s`` (s, > 0) is the oldest frame age still accepted."""
        if not max_age_s > 0:
            raise ValueError(f'max_age_s must be > 0, got {max_age_s}')
        self.max_age_s = float(max_age_s)
        self.last_stamp_s = None
        self.accepted = 0
        self.dropped_stale = 0
        self.dropped_out_of_order = 0

    @property
    def dropped(self):
        """Total number of dropped frames."""
        return self.dropped_stale + self.dropped_out_of_order

    def accept(self, now_s, stamp_s):
        """Return True to process the frame stamped ``stamp_s`` at time ``now_s`` (s)."""
        if frame_age_s(now_s, stamp_s) > self.max_age_s:
            self.dropped_stale += 1
            return False
        if self.last_stamp_s is not None and stamp_s <= self.last_stamp_s:
            self.dropped_out_of_order += 1
            return False
        self.last_stamp_s = float(stamp_s)
        self.accepted += 1
        return True

    def counters(self):
        """Return the counters as a dict of ints (for /diagnostics)."""
        return {'accepted': self.accepted, 'dropped_stale': self.dropped_stale,
                'dropped_out_of_order': self.dropped_out_of_order}


#: Alias kept for callers that think of it as a counter of stale frames.
StaleFrameCounter = FrameGate
