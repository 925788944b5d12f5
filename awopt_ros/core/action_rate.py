"""Which camera frames a policy acts on: the control rate apart from the camera rate.

The task's dynamics are one action per control period (0.1 s: the in-process rollout, the
datasets the models were trained on, ``arm_interface`` ``control_period_s`` and the episode's
``max_steps`` all count 10 Hz steps). A camera may stream faster (a RealSense D435: 30 Hz).
Acting on every 30 Hz frame would apply each step three times as often and change what the
learned policy does (measured: 0 of 5 episodes succeeded, 40 steps in 1.4 s instead of 4 s).
So a policy acts at ``action_rate_hz`` on the newest frame, and its frame-to-command latency
is measured from that frame: a faster camera shortens the wait for a fresh frame, not the step.

:class:`ActionGrid` picks the frames: it keeps a grid of due times ``period_s`` apart and
acts on the first frame stamped at or after the next due time, less a tolerance (a quarter of
the period by default) that absorbs stamp jitter. The grid advances by whole periods, so the
actions stay ``period_s`` apart on average whatever the camera's rate and phase; after a gap
(dropped frames, a paused camera, the first frame) it restarts at the frame that ends it.
"""


class ActionGrid:
    """Decide per frame stamp whether to act, ``rate_hz`` times a second at most.

    ``due(stamp_s)`` says whether the frame stamped ``stamp_s`` is to be acted on; once an
    action went out on it, ``acted(stamp_s)`` advances the grid. A frame that is due but
    could not be acted on (no joint state yet, a bad input) leaves the grid as it was, so the
    next frame is due in its place. ``rate_hz`` 0 acts on every frame (nothing is counted or
    checked then). Stamps are seconds in one clock; with ``rate_hz`` > 0 a stamp not newer
    than the last acted one is not due (``out_of_order``).

    Counters: ``acted_count``, ``skipped`` (frames between two due times), ``out_of_order``,
    ``restarts`` (gaps longer than a period after which the grid restarted).
    """

    def __init__(self, rate_hz, tolerance=0.25):
        """Create a grid.

        Args:
            rate_hz: actions per second (> 0), or 0 to act on every frame.
            tolerance: fraction of the period (0 <= tolerance < 0.5) by which a frame may
                come before its due time and still be acted on (stamp jitter).

        Raises:
            ValueError: ``rate_hz`` < 0 or not finite, or ``tolerance`` outside [0, 0.5).
        """
        rate_hz = float(rate_hz)
        if not rate_hz >= 0.0 or rate_hz == float('inf'):
            raise ValueError(f'rate_hz must be >= 0 and finite, got {rate_hz}')
        if not 0.0 <= float(tolerance) < 0.5:
            raise ValueError(f'tolerance must be in [0, 0.5), got {tolerance}')
        self.rate_hz = rate_hz
        self.period_s = 1.0 / rate_hz if rate_hz > 0.0 else 0.0
        self.tolerance_s = float(tolerance) * self.period_s
        self.next_due_s = None       # the grid's next due time (s), None: the next frame is due
        self.not_before_s = None     # after restart(after_s): frames up to this stamp skipped
        self.last_acted_s = None     # stamp of the last frame acted on (s)
        self.acted_count = 0
        self.skipped = 0
        self.out_of_order = 0
        self.restarts = 0

    def restart(self, after_s=None):
        """Make the next frame stamped after ``after_s`` (s; None: the next frame) due and
        restart the grid there: e.g. when an episode begins, so that its first step acts on
        the first frame the arm takes (stamped after its enable) without waiting for the
        old grid's due time. ``after_s`` that is not a number (an episode event without a
        stamp) counts as None."""
        self.next_due_s = None
        self.not_before_s = float(after_s) if isinstance(after_s, (int, float)) else None

    def due(self, stamp_s):
        """Return True when the frame stamped ``stamp_s`` (s) is to be acted on, else False
        (counted in ``skipped`` or ``out_of_order``)."""
        if self.period_s == 0.0:
            return True
        stamp_s = float(stamp_s)
        if self.last_acted_s is not None and stamp_s <= self.last_acted_s:
            self.out_of_order += 1
            return False
        if self.next_due_s is None:
            if self.not_before_s is not None and stamp_s <= self.not_before_s:
                self.skipped += 1
                return False
            return True
        if stamp_s < self.next_due_s - self.tolerance_s:
            self.skipped += 1
            return False
        return True

    def acted(self, stamp_s):
        """Record that an action went out on the (due) frame stamped ``stamp_s`` (s): the
        next due time is one period after its grid time, or after ``stamp_s`` when the grid
        starts or restarts there (the first frame, or a due time passed without a frame)."""
        self.acted_count += 1
        if self.period_s == 0.0:
            return
        stamp_s = float(stamp_s)
        grid_s = self.next_due_s
        if grid_s is None or stamp_s >= grid_s + self.period_s - self.tolerance_s:
            if grid_s is not None:
                self.restarts += 1          # a whole due time went by without a frame
            grid_s = stamp_s
        self.last_acted_s = stamp_s
        self.not_before_s = None
        self.next_due_s = grid_s + self.period_s

    def counters(self):
        """Return the counters as a dict of ints (for /diagnostics)."""
        return {'frames_acted': self.acted_count, 'frames_skipped_rate': self.skipped,
                'frames_out_of_order': self.out_of_order,
                'action_grid_restarts': self.restarts}
