"""Which required nodes are silent or refuse episodes (ROS-free; used by the episode manager).

The episode manager hears from every node an episode needs through one signal each, on a wall
clock (a dead simulator stops the simulated clock, and with it any check on that clock):

================  ==============================================  ============================
node              signal                                          silent after
================  ==============================================  ============================
camera            ``<camera_ns>/color/camera_info`` (each frame)  ``node_timeout_s``
joint_states      ``joint_states_topic`` with every arm joint     ``node_timeout_s``
camera_pipeline   its ``/diagnostics`` status (1 Hz)              ``camera_pipeline_timeout_s``
success_detector  its ``/diagnostics`` status (1 Hz); only with   ``success_detector_timeout_s``
                  ``success_source`` 'classifier'
policy            ``/policy/action`` (in an episode: its steps)   ``node_timeout_s``
logger            its ``/diagnostics`` status (1 Hz)              ``logger_timeout_s``
================  ==============================================  ============================

(The driver names are the episode manager's parameters, ``core.robot_names``: the simulator's
``/camera/color/camera_info`` and ``/joint_states``; lbr-stack with realsense-ros
``/camera/camera/color/camera_info`` and ``/lbr/joint_states`` with joints ``lbr_A1``..``lbr_A7``.)

(The camera pipeline is not heard from through ``/policy/image``: one more reader of it would
be served on every frame of the frame -> command path.) A status comes from a timer on the
node's clock, which is simulated time under
``use_sim_time``: with the simulator slower than real time (``real_time_factor`` < 1, or
lockstep between episodes) it comes less often than once a wall second. Such a node is
``clock_paced``: it counts as silent only once its timeout has passed on the wall clock AND on
the node clock (a dead simulator stops the node clock, but then the camera is silent). A node
clock that went back (a restarted simulator starts again at 0) says nothing about a silence
that began before: only the wall clock counts then, until the node is heard from again.

A node may also say it does not accept episodes (the logger, when its disk is nearly full or a
write failed): :meth:`NodeMonitor.set_refusing`, as a plain refusal (no new episode; a running
one goes on) or a fault (the node cannot do its job now, e.g. the logger's write failed: a
running episode ends too). A plain refusal does not say whether the running episode is
recorded: the logger goes on recording an episode it had started when its disk got low, but
one that started just as it stopped accepting (the manager had not yet heard its refusal) it
does not record at all; that episode still runs to its end here, and the logger reports it
on ``/logger/episode_saved`` with ``bag`` null and its reason in ``write_error`` (run
reports list it as unrecorded: :func:`awopt_ros.core.report.frame_accounting`).
:meth:`NodeMonitor.start_refusal` tells whether an episode may start;
:meth:`NodeMonitor.episode_problem` whether a running one must end (``node_lost`` for a silent
node, ``failed`` for a faulty one).

A node may also be heard from yet report that it does not do its work (the success detector
with ``success_source`` 'classifier': its status is ERROR once it has scored no frame for its
``input_timeout_s``): :meth:`NodeMonitor.set_stalled`. Such a node refuses the start, and ends
a running episode as ``node_lost`` like a silent one, unless the report came during the grace
given at the episode's start (:meth:`NodeMonitor.grace`): a report sent before the node saw
the start describes the time before the episode.
"""
from dataclasses import dataclass

SILENT, REFUSING, FAULT, STALLED = 'silent', 'refusing', 'fault', 'stalled'


@dataclass(frozen=True)
class Problem:
    """One node that an episode cannot run without, and why.

    Attributes:
        node: the node's name (a key of the monitor's timeouts).
        kind: :data:`SILENT` (nothing heard for longer than its timeout, or never),
            :data:`REFUSING` (it reports that it does not accept episodes) or :data:`FAULT`
            (it does not accept episodes because it failed, e.g. a write error) or
            :data:`STALLED` (heard from, but it reports that it does not do its work, e.g. the
            success detector scoring no frame).
        detail: human-readable reason, e.g. ``'no /policy/action for 3.1 s'``.
    """

    node: str
    kind: str
    detail: str


class NodeMonitor:
    """When each required node was last heard from, and whether it accepts episodes.

    Args:
        timeouts_s: {node name: seconds of silence after which the node counts as dead (> 0)},
            in data-flow order (a node before those it feeds): messages list silent nodes in
            this order, so the first one listed is where to look.
        signals: optional {node name: what is heard from it, e.g. a topic}, for messages.
        clock_paced: names whose signal is paced by the node clock (see the module doc); their
            silence must exceed the timeout on both clocks (``clock_s`` arguments).

    Raises:
        ValueError: no nodes, an empty name or a timeout that is not > 0.
    """

    def __init__(self, timeouts_s, signals=None, clock_paced=()):
        if not timeouts_s:
            raise ValueError('NodeMonitor needs at least one node to watch')
        for name, timeout_s in timeouts_s.items():
            if not name:
                raise ValueError('node names must not be empty')
            if not float(timeout_s) > 0.0:
                raise ValueError(f'timeout for {name} must be > 0 s, got {timeout_s}')
        self.timeouts_s = {name: float(t) for name, t in timeouts_s.items()}
        self.signals = dict(signals or {})
        self.clock_paced = frozenset(clock_paced) & set(self.timeouts_s)
        self._last = dict.fromkeys(self.timeouts_s)     # wall s, None: never heard from
        self._last_clock = {}    # node clock s of the latest message, clock-paced nodes
        self._refusing = {}                              # node -> (reason, kind)
        self._stalled = {}                               # node -> (reason, wall s reported)
        self._grace_until = {}                           # node -> wall s

    @property
    def nodes(self):
        """The watched node names, in the order given."""
        return tuple(self.timeouts_s)

    def seen(self, name, wall_s, clock_s=None):
        """Record a message from ``name`` at wall time ``wall_s`` (s) and node-clock time
        ``clock_s`` (s; needed for ``clock_paced`` nodes); other names are ignored. The node
        clock is taken as it is, even when it went back (a restarted simulator)."""
        if name in self._last:
            last = self._last[name]
            self._last[name] = wall_s if last is None else max(last, wall_s)
            if clock_s is not None and name in self.clock_paced:
                self._last_clock[name] = clock_s

    def expect_from(self, names, wall_s):
        """Count ``names`` as heard from at ``wall_s``, unless heard from later.

        For inputs that pause for a known reason (the simulator's reset between the start
        request and the episode's start): each then has its full timeout from ``wall_s``.
        """
        for name in names:
            if name in self._last:
                self.seen(name, wall_s)

    def set_refusing(self, name, reason, fault=False):
        """Record whether ``name`` refuses episodes: ``reason`` (str) when it does, None when
        it accepts them again; ``fault``: it refuses because it failed (a running episode
        ends too). Unknown names are ignored."""
        if name not in self._last:
            return
        if reason is None:
            self._refusing.pop(name, None)
        else:
            self._refusing[name] = (str(reason) or 'no reason given', FAULT if fault else REFUSING)

    def set_stalled(self, name, reason, wall_s):
        """Record whether ``name``, though heard from, reports that it does not do its work.

        Args:
            name: a watched node (unknown names are ignored).
            reason: str when it does not work (e.g. its status message), None when it works
                again.
            wall_s: when the report came (wall s): one that came before the node's grace
                ended (:meth:`grace`) does not end a running episode.
        """
        if name not in self._last:
            return
        if reason is None:
            self._stalled.pop(name, None)
        else:
            self._stalled[name] = (str(reason) or 'no reason given', float(wall_s))

    def grace(self, name, until_wall_s):
        """Let stall reports of ``name`` that came before ``until_wall_s`` (wall s) not end
        a running episode (they still refuse a start). Given at an episode's start: the
        report in hand, or one still on its way, may describe the time before the start
        (the success detector idle between episodes). Unknown names are ignored."""
        if name in self._last:
            self._grace_until[name] = float(until_wall_s)

    def _stalls(self, dead, after_grace=False):
        """Return a :data:`STALLED` :class:`Problem` for each stalled node not in ``dead``;
        ``after_grace``: only those reported after their grace ended."""
        out = []
        for name, (reason, reported_s) in self._stalled.items():
            if name in dead or (after_grace
                                and reported_s < self._grace_until.get(name, float('-inf'))):
                continue
            out.append(Problem(name, STALLED, reason))
        return out

    def age_s(self, name, wall_s):
        """Seconds since ``name`` was last heard from at ``wall_s``; None if never."""
        last = self._last[name]
        return None if last is None else wall_s - last

    def _signal(self, name):
        return self.signals.get(name, 'data')

    def silent(self, wall_s, clock_s=None):
        """Return a :class:`Problem` for each node silent for longer than its timeout (or never
        heard from), in the order of ``timeouts_s``. ``clock_s``: the node clock now (s), for
        ``clock_paced`` nodes (None: wall clock only)."""
        out = []
        for name, timeout_s in self.timeouts_s.items():
            age = self.age_s(name, wall_s)
            if age is None:
                out.append(Problem(name, SILENT, f'nothing received on {self._signal(name)}'))
            elif age > timeout_s and not self._clock_recent(name, clock_s, timeout_s):
                out.append(Problem(name, SILENT, f'no {self._signal(name)} for {age:.1f} s'))
        return out

    def _clock_recent(self, name, clock_s, timeout_s):
        """True if clock-paced ``name`` was heard from within ``timeout_s`` on the node clock
        (a simulated clock slower than the wall clock). False when that clock is now behind
        the node's last message (it went back: a restarted simulator)."""
        last = self._last_clock.get(name)
        return (name in self.clock_paced and clock_s is not None and last is not None
                and 0.0 <= clock_s - last <= timeout_s)

    def problems(self, wall_s, clock_s=None):
        """Return every :class:`Problem`: silent nodes, then nodes (not silent) that report
        they do not work (stalled, grace or not), then those that refuse episodes (a silent
        node's last word is stale)."""
        silent = self.silent(wall_s, clock_s)
        dead = {p.node for p in silent}
        return silent + self._stalls(dead) + [
            Problem(name, kind, reason)
            for name, (reason, kind) in self._refusing.items() if name not in dead]

    def start_refusal(self, wall_s, clock_s=None):
        """Return why an episode may not start now, or None when every node is live and none
        refuses.

        Returns:
            dict | None: JSON-ready ``{'error': text, 'nodes': [names], 'kind': kind}``
            (kind :data:`SILENT`, :data:`STALLED`, :data:`REFUSING` or :data:`FAULT`). For
            silent nodes the text says ``'<nodes> not available: ...'`` (a client may ask
            again: a node can be silent for a moment while the stack starts); for a stalled
            node ``'<node> is not working: <reason>'``; for a refusing node
            ``'<node> does not accept episodes: <reason>'`` (asking again does not help until
            the cause is fixed, e.g. disk space freed).
        """
        problems = self.problems(wall_s, clock_s)
        if not problems:
            return None
        silent = [p for p in problems if p.kind == SILENT]
        if silent:
            names = ', '.join(p.node for p in silent)
            reasons = '; '.join(f'{p.node}: {p.detail}' for p in silent)
            hint = ('is it running?' if len(silent) == 1 else
                    'a node without input stops sending too: look at the first one')
            return {'error': f'{names} not available ({reasons}): {hint}',
                    'nodes': [p.node for p in silent], 'kind': SILENT}
        p = problems[0]
        what = 'is not working' if p.kind == STALLED else 'does not accept episodes'
        return {'error': f'{p.node} {what}: {p.detail}', 'nodes': [p.node], 'kind': p.kind}

    def episode_problem(self, wall_s, clock_s=None):
        """Return why a running episode must end now, or None.

        Returns:
            tuple | None: ``('node_lost', detail)`` when nodes went silent (detail
            ``'no data from: <node> (<reason>), ...'``) or report, after their grace, that
            they do not work (``'not working: <node> (<reason>), ...'``), or
            ``('failed', '<node>: <reason>')`` when a node reports a fault (e.g. the logger
            after a write error). A plain refusal (e.g. the logger's disk below
            ``min_free_disk_mb``) does not end the episode.
        """
        problems = self.problems(wall_s, clock_s)
        silent = [p for p in problems if p.kind == SILENT]
        if silent:
            return 'node_lost', 'no data from: ' + ', '.join(
                f'{p.node} ({p.detail})' for p in silent)
        stalled = self._stalls({p.node for p in silent}, after_grace=True)
        if stalled:
            return 'node_lost', 'not working: ' + ', '.join(
                f'{p.node} ({p.detail})' for p in stalled)
        faults = [p for p in problems if p.kind == FAULT]
        if faults:
            return 'failed', f'{faults[0].node}: {faults[0].detail}'
        return None
