"""Episode bookkeeping for the episode manager (ROS-free).

An episode runs from a reset to one of these outcomes:

============  ==============================================  ==========  =========
outcome       cause                                           terminated  truncated
============  ==============================================  ==========  =========
success       the success source says success (see below)     yes         no
terminate     the policy's ``terminate`` action entry is set   yes         no
timeout       ``max_steps`` actions or ``timeout_s`` elapsed   no          yes
operator      an operator stopped the episode                  no          yes
node_lost     a required node went silent (dead node)          no          yes
failed        a required node reports a fault (e.g. the        no          yes
              logger cannot write)
============  ==============================================  ==========  =========

``terminated``/``truncated`` follow Gymnasium's meaning (an MDP terminal state vs. a cut-off),
which is what offline-RL datasets (Minari) store. Which nodes are silent or refuse episodes is
decided by :mod:`awopt_ros.core.liveness`.

Success comes from one of :data:`SUCCESS_SOURCES` (``EpisodeConfig.success_source``):

- ``ground_truth`` (the simulator): ``success_debounce`` consecutive ``/success/probability``
  samples at or above ``success_threshold`` (:meth:`Episode.on_success_probability`);
- ``classifier`` (hardware, or the simulator checking the classifier): the success detector's
  debounced decision (``/success_detector/success``) turning true
  (:meth:`Episode.on_classifier_success`); the detector has debounced it already.

Either way the ground-truth samples that come are followed with the same threshold and
debounce, and the result says whether they reached success at some point of the episode
(``ground_truth_success``: True/False; None when no sample came, i.e. on hardware): run
reports compare it with the outcome (``core.report.stack_agreement``). A classifier success
while the latest ground-truth sample is at or above the threshold counts as a ground-truth
success too: the end cut the ground truth's debounce short, the object is up. The result then
says so (``ground_truth_cut_short``: True only in that case, where the ground truth's success
was not debounced), so that reports can tell how often the rule decided.
"""
from dataclasses import dataclass

from awopt_ros.core import spec

OUTCOMES = ('success', 'terminate', 'timeout', 'operator', 'node_lost', 'failed')
TERMINAL_OUTCOMES = ('success', 'terminate')
#: Where an episode's success comes from (see the module docstring).
SUCCESS_SOURCES = ('ground_truth', 'classifier')


def check_success_source(source):
    """Return ``source`` if it is one of :data:`SUCCESS_SOURCES`; ValueError otherwise."""
    if source not in SUCCESS_SOURCES:
        raise ValueError(f'success_source must be one of {SUCCESS_SOURCES}, got {source!r}')
    return source


@dataclass
class EpisodeConfig:
    """Limits of one episode.

    Attributes:
        max_steps: actions after which the episode times out (>= 1).
        timeout_s: time after which the episode times out (s, > 0), on the node clock.
        success_threshold: success probability that counts as success (0..1].
        success_debounce: consecutive samples at or above the threshold needed (>= 1).
        node_timeout_s: a required node silent for longer than this ends the episode (s, > 0;
            the episode manager's liveness watch, :mod:`awopt_ros.core.liveness`).
        success_source: one of :data:`SUCCESS_SOURCES`: what ends an episode as a success
            (``success_threshold`` and ``success_debounce`` apply to the ground-truth samples
            either way, for ``ground_truth_success``).
    """

    max_steps: int = 40
    timeout_s: float = 30.0
    success_threshold: float = 0.5
    success_debounce: int = 2
    node_timeout_s: float = 2.0
    success_source: str = 'ground_truth'

    def __post_init__(self):
        check_success_source(self.success_source)
        if self.max_steps < 1:
            raise ValueError(f'max_steps must be >= 1, got {self.max_steps}')
        if not self.timeout_s > 0:
            raise ValueError(f'timeout_s must be > 0, got {self.timeout_s}')
        if not 0.0 < self.success_threshold <= 1.0:
            raise ValueError(f'success_threshold must be in (0, 1], got {self.success_threshold}')
        if self.success_debounce < 1:
            raise ValueError(f'success_debounce must be >= 1, got {self.success_debounce}')
        if not self.node_timeout_s > 0:
            raise ValueError(f'node_timeout_s must be > 0, got {self.node_timeout_s}')


@dataclass
class EpisodeResult:
    """How an episode ended (what the manager publishes in its ``end`` event).

    Attributes:
        success_source: the source that decided success (:data:`SUCCESS_SOURCES`).
        ground_truth_success: whether the ground-truth samples reached success (debounced)
            at some point of the episode; None when none came (hardware).
        ground_truth_cut_short: True when ``ground_truth_success`` is True only because a
            classifier success ended the episode while the latest ground-truth sample was at
            or above the threshold (its debounce cut short); False otherwise.
    """

    episode: int
    outcome: str
    steps: int
    duration_s: float
    detail: str = ''
    success_source: str = 'ground_truth'
    ground_truth_success: bool = None
    ground_truth_cut_short: bool = False

    @property
    def success(self):
        return self.outcome == 'success'

    @property
    def terminated(self):
        return self.outcome in TERMINAL_OUTCOMES

    @property
    def truncated(self):
        return not self.terminated

    def as_event(self, stamp_s):
        """Return the JSON-ready ``end`` event dict (see docs/INTERFACES.md)."""
        return {'event': 'end', 'episode': self.episode, 'outcome': self.outcome,
                'steps': self.steps, 'success': self.success, 'terminated': self.terminated,
                'truncated': self.truncated, 'duration_s': round(self.duration_s, 4),
                'detail': self.detail, 'success_source': self.success_source,
                'ground_truth_success': self.ground_truth_success,
                'ground_truth_cut_short': self.ground_truth_cut_short, 'stamp_s': stamp_s}


@dataclass
class Episode:
    """State of one running episode; feed it inputs, it says when and how it ends.

    Times are seconds on the manager node's clock (simulated time when ``use_sim_time``). Every
    ``on_*``/``check``/``abort``/``fail``/``stop`` method returns an :class:`EpisodeResult` the
    first time the episode ends and ``None`` otherwise; after the end it ignores further input.
    """

    episode: int
    start_s: float
    config: EpisodeConfig
    steps: int = 0
    result: EpisodeResult = None
    _success_run: int = 0
    #: None until a ground-truth sample came, then whether they reached success (debounced)
    ground_truth_success: bool = None
    #: True once a classifier success made ``ground_truth_success`` True with its debounce
    #: cut short (see the module doc)
    ground_truth_cut_short: bool = False

    @property
    def done(self):
        return self.result is not None

    def _end(self, outcome, now_s, detail=''):
        if self.result is None:
            self.result = EpisodeResult(self.episode, outcome, self.steps,
                                        now_s - self.start_s, detail,
                                        success_source=self.config.success_source,
                                        ground_truth_success=self.ground_truth_success,
                                        ground_truth_cut_short=self.ground_truth_cut_short)
            return self.result
        return None

    def on_action(self, action, now_s):
        """Count one policy action (7-D, see core.spec); end on terminate or step budget.

        A non-finite action still counts as a step (the safety layer holds the arm); it cannot
        terminate the episode.
        """
        if self.done:
            return None
        self.steps += 1
        try:
            a = spec.validate_action(action)
            if spec.is_set(a[spec.IDX_TERMINATE]):
                return self._end('terminate', now_s)
        except ValueError:
            pass
        if self.steps >= self.config.max_steps:
            return self._end('timeout', now_s, 'step budget used')
        return None

    def on_success_probability(self, probability, now_s):
        """Feed one ground-truth success sample (``/success/probability``, 0..1).

        It counts towards ``ground_truth_success`` (``success_debounce`` samples in a row at
        or above ``success_threshold``); with ``success_source`` 'ground_truth' that also ends
        the episode as a success.
        """
        if self.done:
            return None
        if probability >= self.config.success_threshold:
            self._success_run += 1
        else:
            self._success_run = 0
        reached = self._success_run >= self.config.success_debounce
        self.ground_truth_success = bool(self.ground_truth_success) or reached
        if reached and self.config.success_source == 'ground_truth':
            return self._end('success', now_s, f'p={probability:.2f}')
        return None

    def on_classifier_success(self, decision, now_s):
        """Feed one debounced decision of the success detector (``/success_detector/success``).

        With ``success_source`` 'classifier' a true decision ends the episode as a success;
        otherwise (and for a false decision) nothing happens.
        """
        if self.done or not decision or self.config.success_source != 'classifier':
            return None
        if self._success_run > 0 and not self.ground_truth_success:
            # The ground truth shows success right now, but the end cuts its debounce short
            # (the classifier confirmed on the frame the simulator first reported the lift).
            self.ground_truth_success = True
            self.ground_truth_cut_short = True
        return self._end('success', now_s, 'classifier')

    def check(self, now_s):
        """Periodic check: ends the episode once ``timeout_s`` has elapsed (node clock)."""
        if self.done:
            return None
        if now_s - self.start_s >= self.config.timeout_s:
            return self._end('timeout', now_s, f'{self.config.timeout_s:.1f} s')
        return None

    def abort(self, now_s, detail):
        """End the episode because a required node went silent (``node_lost``, truncated)."""
        if self.done:
            return None
        return self._end('node_lost', now_s, detail)

    def fail(self, now_s, detail):
        """End the episode because a required node reports a fault (``failed``, truncated),
        e.g. the logger can no longer write it."""
        if self.done:
            return None
        return self._end('failed', now_s, detail)

    def stop(self, now_s, reason='operator'):
        """End the episode at an operator's request (truncated)."""
        if self.done:
            return None
        return self._end('operator', now_s, reason)
