"""Operator interventions: teleoperation that overrides the policy, ROS-free (issue 25).

An operator takes over the arm for a while (HIL-SERL's human corrections) by publishing
``geometry_msgs/TwistStamped`` on ``/operator/twist`` (:data:`TWIST_TOPIC`, frame
``base_link`` or empty; linear m/s, ``angular.z`` rad/s; ``angular.x``/``angular.y`` are
ignored: the action space has only the vertical yaw) and ``std_msgs/Bool`` on
``/operator/gripper`` (:data:`GRIPPER_TOPIC`, true close, false open). Any source will do:
``awopt teleop`` (keyboard, :class:`TeleopKeys`), a spacemouse driver remapped to the topic.

The arm interface keeps an :class:`OperatorOverride`: the intervention is active while the
newest operator message (either topic) is younger than ``intervention_timeout_s``, measured
on a steady clock at reception (a person's timing is wall time, also while the stack runs
on simulated time), and was received after the arm's latest enable (``/arm/enable true``, at
each episode start, ends an intervention: a command held to the end of one episode does not
drive the first steps of the next; a message after the enable starts a new one). While
active, every policy action the arm interface would execute is replaced by
:func:`operator_action` (the twist times the control period, clipped to the action bounds
``core.spec.ACTION_LOW``/``ACTION_HIGH``; gripper bits from the newest gripper message of this
intervention, none: no gripper change; terminate 0), which then goes through the same safety
filter, IK, joint limits and watchdogs as a policy action. The executed operator action
is published on ``/arm/intervention`` (:data:`INTERVENTION_TOPIC`, sensor_msgs/JointState
named ``spec.ACTION_NAMES``, header stamp = the replaced policy action's stamp).

The logger matches those stamps to its dataset steps (:func:`apply_interventions`): such a step
records the operator's action (with the policy action's terminate bit: the episode manager
ends the episode on it), info ``intervention`` 1, policy id 'operator' and the policy's own
action in info ``policy_action``. The learner scales the actor loss of intervention steps
by ``intervention_weight`` (:func:`intervention_weights`).
"""
import math
from dataclasses import dataclass

import numpy as np

from awopt_ros.core import spec

TWIST_TOPIC = '/operator/twist'
GRIPPER_TOPIC = '/operator/gripper'
INTERVENTION_TOPIC = '/arm/intervention'
#: The frame operator twists must be given in (an empty frame_id counts as this one).
BASE_FRAME = 'base_link'
#: Default ``intervention_timeout_s`` (s): longer than a few periods of a 20 Hz source.
DEFAULT_TIMEOUT_S = 0.3
#: Default keyboard teleop speeds: 0.1 m/s (1 cm per 0.1 s control step), 0.5 rad/s.
DEFAULT_SPEED_M_S = 0.1
DEFAULT_YAW_SPEED_RAD_S = 0.5
#: Default publish rate of ``awopt teleop`` (Hz).
DEFAULT_RATE_HZ = 20.0
#: A key counts as held this long after its last press (s): terminals send no key release,
#: a held key repeats (after about 0.25..0.6 s, then about every 0.03 s).
DEFAULT_HOLD_S = 0.6


def check_twist_frame(frame_id):
    """Return None when a twist in ``frame_id`` is accepted (:data:`BASE_FRAME` or empty),
    else why it is rejected (str)."""
    frame = str(frame_id).lstrip('/')
    if frame in ('', BASE_FRAME):
        return None
    return (f'operator twist in frame {frame_id!r} rejected: give it in {BASE_FRAME!r} (the '
            'action frame), e.g. remap a spacemouse driver whose frame is base_link')


def operator_action(linear_m_s, yaw_rate_rad_s, gripper_closed, period_s):
    """Return the 7-D action (``spec.ACTION_NAMES``) of an operator command.

    Args:
        linear_m_s: (3,) tool velocity in base_link (m/s).
        yaw_rate_rad_s: rotation rate about the vertical (rad/s).
        gripper_closed: True close, False open, None no gripper change (both bits 0).
        period_s: the control period (s, > 0): the step is velocity x period.

    Returns:
        float32 (7,): dx, dy, dz (m), dyaw (rad) clipped to ``spec.ACTION_LOW``..``HIGH``,
        open, close in {0, 1}, terminate 0.

    Raises:
        ValueError: non-finite values, ``linear_m_s`` not 3 values, or ``period_s`` <= 0.
    """
    lin = np.asarray(linear_m_s, dtype=np.float64).reshape(-1)
    if lin.shape != (3,):
        raise ValueError(f'linear velocity needs 3 values (m/s), got shape {lin.shape}')
    period = float(period_s)
    if not (math.isfinite(period) and period > 0.0):
        raise ValueError(f'period_s must be a finite value > 0, got {period_s}')
    yaw = float(yaw_rate_rad_s)
    if not (np.all(np.isfinite(lin)) and math.isfinite(yaw)):
        raise ValueError(f'non-finite operator command: linear {lin.tolist()}, yaw {yaw}')
    action = np.zeros(spec.ACTION_DIM, dtype=np.float64)
    action[:3] = lin * period
    action[3] = yaw * period
    if gripper_closed is not None:
        action[spec.IDX_CLOSE if gripper_closed else spec.IDX_OPEN] = 1.0
    return np.clip(action, spec.ACTION_LOW, spec.ACTION_HIGH).astype(np.float32)


class OperatorOverride:
    """Whether an operator intervenes now, and with what command.

    Times are steady-clock seconds (e.g. ``time.monotonic()``) of the messages' reception.
    An intervention starts with an operator message and lasts while the newest one is younger
    than ``timeout_s``; its twist is the newest twist received during it (zero until one
    comes), its gripper the newest gripper message received during it (None until one comes:
    a gripper command of an earlier intervention is not repeated). :meth:`end` (the arm's
    enable, at each episode start) ends it at once: messages received before it do not count,
    and the next intervention starts only with a message received after it.

    Args:
        timeout_s: ``intervention_timeout_s`` (s, finite, > 0).

    Raises:
        ValueError: a bad timeout.
    """

    def __init__(self, timeout_s=DEFAULT_TIMEOUT_S):
        self.timeout_s = DEFAULT_TIMEOUT_S
        self.set_timeout(timeout_s)
        self._last_s = None
        self._linear = np.zeros(3)
        self._yaw = 0.0
        self._gripper = None

    def set_timeout(self, timeout_s):
        """Change the timeout (s, finite, > 0). Raises ValueError otherwise."""
        t = float(timeout_s)
        if not (math.isfinite(t) and t > 0.0):
            raise ValueError(f'intervention_timeout_s must be a finite value > 0, got '
                             f'{timeout_s}')
        self.timeout_s = t

    def active(self, now_s):
        """True while the newest operator message is younger than the timeout."""
        return self._last_s is not None and now_s - self._last_s < self.timeout_s

    def end(self):
        """End the running intervention, if any (the arm was enabled: a new episode).

        The operator messages received until now no longer count, also those younger than the
        timeout (a key held to the end of the last episode): :meth:`active` is False until the
        next :meth:`on_twist` / :meth:`on_gripper`, which starts a new intervention with
        nothing of this one (zero twist until one comes, no gripper command).
        """
        self._last_s = None
        self._linear = np.zeros(3)
        self._yaw = 0.0
        self._gripper = None

    def _touch(self, now_s):
        if not self.active(now_s):     # a new intervention: nothing of the last one carries
            self._linear = np.zeros(3)
            self._yaw = 0.0
            self._gripper = None
        self._last_s = float(now_s)

    def on_twist(self, now_s, linear_m_s, yaw_rate_rad_s):
        """Take a twist (m/s (3,), rad/s) received at ``now_s``.

        Raises:
            ValueError: non-finite values or not 3 linear values (the twist is ignored).
        """
        lin = np.asarray(linear_m_s, dtype=np.float64).reshape(-1)
        yaw = float(yaw_rate_rad_s)
        if lin.shape != (3,) or not (np.all(np.isfinite(lin)) and math.isfinite(yaw)):
            raise ValueError(f'operator twist must be finite (3 linear m/s, yaw rad/s), got '
                             f'{lin.tolist()}, {yaw}')
        self._touch(now_s)
        self._linear, self._yaw = lin, yaw

    def on_gripper(self, now_s, closed):
        """Take a gripper command (True close, False open) received at ``now_s``."""
        self._touch(now_s)
        self._gripper = bool(closed)

    def action(self, now_s, period_s):
        """Return the operator's action (:func:`operator_action`) while active, else None."""
        if not self.active(now_s):
            return None
        return operator_action(self._linear, self._yaw, self._gripper, period_s)


# ---------------------------------------------------------------------------------------------
# Recording: which dataset steps were interventions
# ---------------------------------------------------------------------------------------------

def match_stamps(query_s, stamps_s, tolerance_s=spec.STAMP_TOLERANCE_S):
    """Return int64 (N,): for each query stamp the index of the stamp in ``stamps_s`` equal
    to it within ``tolerance_s`` (the nearest one), -1 where none is."""
    query = np.asarray(query_s, dtype=np.float64).reshape(-1)
    stamps = np.asarray(stamps_s, dtype=np.float64).reshape(-1)
    out = np.full(query.shape, -1, dtype=np.int64)
    if stamps.size == 0 or query.size == 0:
        return out
    order = np.argsort(stamps, kind='stable')
    sorted_s = stamps[order]
    pos = np.searchsorted(sorted_s, query)
    for i, (q, p) in enumerate(zip(query, pos)):
        best, best_d = -1, tolerance_s
        for j in (p - 1, p):
            if 0 <= j < sorted_s.size and abs(sorted_s[j] - q) <= best_d:
                best, best_d = int(order[j]), abs(sorted_s[j] - q)
        out[i] = best
    return out


def apply_interventions(actions, step_stamps_s, stamps_s, operator_actions):
    """Put the operator's actions into an episode's steps whose stamps have one.

    Args:
        actions: (T, 7) the policy actions of the steps.
        step_stamps_s: (T,) the steps' stamps (s): the policy action's stamp.
        stamps_s: (M,) stamps of the ``/arm/intervention`` messages (s).
        operator_actions: (M, 7) their actions.

    The terminate bit of such a step stays the policy's: the episode manager ends the
    episode on the policy action's terminate (it reads ``/policy/action``), an episode-level
    decision that no arm executes, so the recorded action of the terminal step says terminate
    1 also while the operator drove (the operator's own action always has terminate 0).

    Returns:
        ``(actions (T, 7) float32, intervention (T,) bool, policy_action (T, 7) float32)``:
        the operator's action (clipped to the action bounds) with the policy's terminate bit
        where a step had one, the flags, and the policy's own action on those steps (NaN on
        the others).

    Raises:
        ValueError: shapes that do not match.
    """
    acts = np.array(actions, dtype=np.float32).reshape(-1, spec.ACTION_DIM)
    step_s = np.asarray(step_stamps_s, dtype=np.float64).reshape(-1)
    if step_s.shape[0] != acts.shape[0]:
        raise ValueError(f'{acts.shape[0]} actions but {step_s.shape[0]} step stamps')
    ops = np.asarray(operator_actions, dtype=np.float32).reshape(-1, spec.ACTION_DIM)
    if ops.shape[0] != np.asarray(stamps_s).reshape(-1).shape[0]:
        raise ValueError(f'{ops.shape[0]} operator actions but '
                         f'{np.asarray(stamps_s).size} stamps')
    idx = match_stamps(step_s, stamps_s)
    flags = idx >= 0
    policy_action = np.full(acts.shape, np.nan, dtype=np.float32)
    policy_action[flags] = acts[flags]
    acts[flags] = np.clip(ops[idx[flags]], spec.ACTION_LOW, spec.ACTION_HIGH)
    acts[flags, spec.IDX_TERMINATE] = policy_action[flags, spec.IDX_TERMINATE]
    return acts, flags, policy_action


def intervention_weights(flags, weight):
    """Return float32 per-sample weights: ``weight`` where ``flags`` (intervention steps),
    1 elsewhere. Raises ValueError for a weight that is not finite and >= 0."""
    w = float(weight)
    if not (math.isfinite(w) and w >= 0.0):
        raise ValueError(f'intervention_weight must be a finite value >= 0, got {weight}')
    return np.where(np.asarray(flags, dtype=bool), np.float32(w), np.float32(1.0)).astype(
        np.float32)


# ---------------------------------------------------------------------------------------------
# Keyboard teleoperation (awopt teleop)
# ---------------------------------------------------------------------------------------------

#: key -> (axis, sign): axis 0..2 = x, y, z (base_link), 3 = yaw.
MOTION_KEYS = {'w': (0, 1.0), 's': (0, -1.0), 'a': (1, 1.0), 'd': (1, -1.0),
               'r': (2, 1.0), 'f': (2, -1.0), 'q': (3, 1.0), 'e': (3, -1.0)}
CLOSE_KEY, OPEN_KEY, STOP_KEY = 'c', 'o', ' '
QUIT_KEYS = ('\x03', '\x04')      # Ctrl-C, Ctrl-D (raw mode delivers them as characters)
HELP = ('keys (hold to move; release and the policy takes over again):\n'
        '  w / s  +x / -x (away from / toward the robot base)\n'
        '  a / d  +y / -y\n'
        '  r / f  +z / -z (up / down)\n'
        '  q / e  yaw + / - (about the vertical)\n'
        '  c / o  close / open the gripper\n'
        '  space  stop: the arm holds still (hold space to keep it still)\n'
        '  Ctrl-C quit')


#: A pending escape sequence is dropped when its next byte comes later than this (s): a
#: terminal writes a sequence at once, so a lone Esc press does not swallow the next key.
ESCAPE_TIMEOUT_S = 0.05
_ESC = '\x1b'
#: Longest escape sequence consumed (characters after Esc); a longer one is given up.
_MAX_ESCAPE_LEN = 32


class KeyStream:
    """Terminal input -> single keys, without the terminal's escape sequences.

    Arrow, function and editing keys (and Alt+key) arrive as escape sequences: Esc ``[``
    parameters and a final byte (CSI, e.g. ``ESC [ A`` Up, ``ESC [ 1 5 ~`` F5), Esc ``O`` and
    one byte (SS3, e.g. ``ESC O P`` F1), or Esc and one character (Alt+key). Fed byte by byte
    to :meth:`TeleopKeys.press` their characters would read as command keys (``A``, ``P``,
    ``[``...); :meth:`feed` consumes each sequence whole, also one split across reads, and
    returns only the keys typed. The quit keys (Ctrl-C, Ctrl-D) always come through, also
    inside a sequence.
    """

    def __init__(self):
        self._state = None     # None, 'esc', 'csi' or 'ss3'
        self._length = 0       # characters of the pending sequence after Esc
        self._last_s = None    # when the last character came (s)

    def feed(self, text, now_s):
        """Return the keys (list of 1-character str) in ``text`` received at ``now_s`` (s,
        steady clock), escape sequences left out."""
        if self._state is not None and (self._last_s is None
                                        or now_s - self._last_s > ESCAPE_TIMEOUT_S):
            self._state = None   # a lone Esc some time ago: not the start of this text
        self._last_s = float(now_s)
        keys = []
        for ch in text:
            if ch in QUIT_KEYS:
                self._state = None
                keys.append(ch)
            elif ch == _ESC:
                self._state, self._length = 'esc', 0
            elif self._state is None:
                keys.append(ch)
            elif self._state == 'esc':
                self._state = {'[': 'csi', 'O': 'ss3'}.get(ch)   # else Alt+key: dropped
            elif self._state == 'ss3':
                self._state = None                               # its final byte
            else:                                                # CSI
                self._length += 1
                final = '\x40' <= ch <= '\x7e'
                if final or not '\x20' <= ch <= '\x3f' or self._length > _MAX_ESCAPE_LEN:
                    self._state = None
        return keys


@dataclass
class TeleopCommand:
    """What ``awopt teleop`` publishes now: ``linear_m_s`` (3,) and ``yaw_rate_rad_s`` (the
    TwistStamped), ``gripper_closed`` (the Bool, or None: not published)."""

    linear_m_s: tuple
    yaw_rate_rad_s: float
    gripper_closed: object = None


class TeleopKeys:
    """Keyboard -> operator command, for a terminal in raw mode (no key-release events).

    A motion key (:data:`MOTION_KEYS`) moves along its axis at ``speed_m_s`` (yaw:
    ``yaw_speed_rad_s``) while it is held: until ``hold_s`` after its last press (a held key
    repeats); another motion key replaces it. ``c``/``o`` close/open the gripper: the gripper
    command is sent from then on until the keyboard goes idle. Space stops the motion: a zero
    twist while held. Idle (nothing held): nothing is sent, and the policy takes over once the
    arm interface's ``intervention_timeout_s`` has passed.

    Args:
        speed_m_s: tool speed of a motion key (m/s, > 0).
        yaw_speed_rad_s: yaw rate of ``q``/``e`` (rad/s, > 0).
        hold_s: how long a key counts as held after its last press (s, > 0).

    Raises:
        ValueError: a speed or hold time that is not finite and > 0.
    """

    def __init__(self, speed_m_s=DEFAULT_SPEED_M_S, yaw_speed_rad_s=DEFAULT_YAW_SPEED_RAD_S,
                 hold_s=DEFAULT_HOLD_S):
        for name, v in (('speed_m_s', speed_m_s), ('yaw_speed_rad_s', yaw_speed_rad_s),
                        ('hold_s', hold_s)):
            if not (math.isfinite(float(v)) and float(v) > 0.0):
                raise ValueError(f'{name} must be a finite value > 0, got {v}')
        self.speed_m_s = float(speed_m_s)
        self.yaw_speed_rad_s = float(yaw_speed_rad_s)
        self.hold_s = float(hold_s)
        self._twist = None        # (axis, sign) of the held motion key, or 'stop'
        self._last_s = None       # time of the last key press (s)
        self._gripper = None

    def press(self, key, now_s):
        """Take one key (a 1-character str) pressed at ``now_s`` (s, steady clock).

        Keys are taken as typed: only the lowercase command keys count (an uppercase ``W``,
        e.g. with Caps Lock, is ignored like any key that is not mapped). Feed keys through
        :class:`KeyStream` so that arrow and function keys' escape sequences are left out.

        Returns:
            'quit' for a quit key, True when the key is a command, False when it is not
            (ignored).
        """
        if key in QUIT_KEYS:
            return 'quit'
        if not self.active(now_s):
            self._gripper = None        # a new intervention: no gripper command yet
            self._twist = None
        if key in MOTION_KEYS:
            self._twist = MOTION_KEYS[key]
        elif key == STOP_KEY:
            self._twist = 'stop'
        elif key in (CLOSE_KEY, OPEN_KEY):
            self._gripper = key == CLOSE_KEY
        else:
            return False
        self._last_s = float(now_s)
        return True

    def active(self, now_s):
        """True while a key counts as held."""
        return self._last_s is not None and now_s - self._last_s < self.hold_s

    def command(self, now_s):
        """Return the :class:`TeleopCommand` to publish now, or None when idle."""
        if not self.active(now_s):
            return None
        linear, yaw = [0.0, 0.0, 0.0], 0.0
        if self._twist not in (None, 'stop'):
            axis, sign = self._twist
            if axis == 3:
                yaw = sign * self.yaw_speed_rad_s
            else:
                linear[axis] = sign * self.speed_m_s
        return TeleopCommand(tuple(linear), yaw, self._gripper)
