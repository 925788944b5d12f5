"""``awopt replay BAG_OR_RUN...``: play recorded episodes back on their topics.

Republishes every message of the bags (a bag directory, its ``.mcap``, a ``bags/`` directory or
a run directory) on its recorded topic with the recorded QoS (the bag's offered QoS, else the
logger's preset for the topic; ``/episode/event`` and ``/policy/model_info`` latched) and the
recorded timing scaled by ``--rate``, with ``/clock`` at the recorded time for nodes that run
with ``use_sim_time: true`` (:mod:`awopt_ros.core.replay` decides, the node
:mod:`awopt_ros.ros.bag_player` publishes). Bags of older versions (per-message zstd) play too.

Control: ``--start-paused``; the services ``/awopt_replay/pause`` (std_srvs/SetBool) and
``/awopt_replay/step`` (std_srvs/Trigger: one message while paused); on a terminal the keys
space (pause / resume), s (step) and q (quit).

``--nodes camera_pipeline,policy,success_detector`` starts those stack nodes as processes
(``robot_state`` too: the robot model and TF for rviz; :mod:`awopt_ros.launcher`; params
from ``--config`` and ``--set``, ``use_sim_time: true``)
and replays the recorded messages they publish on ``/recorded/<topic>`` (``/policy/image`` ->
``/recorded/policy/image``), so that their fresh output can be compared with the recorded one
(rviz, ``ros2 topic echo``, a test). The replay starts once they have subscribed. Their
``max_frame_age_s`` (and the policy's ``max_joint_state_age_s``) are raised above the
recording's own lag (:func:`awopt_ros.core.replay.input_ages_s`) plus a margin for the
replay's own jitter (:data:`AGE_MARGIN_S`) unless ``--set`` gives them.

Safety: no arm interface or simulator is ever started, the recorded controller commands go out
on ``/recorded/...`` (unless a ``--remap`` names them), and the replay refuses to run on a ROS
domain where an awopt stack runs (its lock, or its nodes on the graph): a policy acting on
replayed frames moves nothing.
"""
import sys
import threading
import time
from pathlib import Path

from awopt_ros.cli_args import UsageError, count, nonnegative_float, usage_error

PROG = 'awopt replay'
#: Seconds to wait for the started nodes to subscribe before giving up.
DEFAULT_READY_TIMEOUT_S = 90.0
#: Added to a recording's lag when raising the started nodes' age limits (s of recorded time,
#: times the rate when faster than 1): a replayed frame waits in a busy node's queue while
#: ``/clock`` goes on (no lockstep here), which the live run's lockstep never let happen.
AGE_MARGIN_S = 1.0
#: Longest extra wait (s) after ``--delay`` for subscribers already on the graph (rviz, a
#: test) to connect to the replay's publishers.
CONNECT_WAIT_S = 3.0
#: Longest wait (s) for each started node's first ``/diagnostics`` status once ``/clock`` is
#: at the recording's start (their 1 s timers fire on that jump of their clock): it says that
#: the node spins and has heard from the replay, and on a loaded host its DDS readers may still
#: be accepting the replay's writers before that (a best-effort frame sent then is lost).
DIAGNOSTICS_WAIT_S = 10.0
#: The age limits' defaults as the nodes declare them (s; used when the params file does not
#: set them; 0 = no limit).
AGE_DEFAULTS = {
    'camera_pipeline': {'max_frame_age_s': 0.2},
    'policy': {'max_frame_age_s': 0.2, 'max_joint_state_age_s': 0.2},
    'success_detector': {'max_frame_age_s': 0.5},
}


def add_replay_args(parser):
    """Add the ``replay`` options to ``parser``."""
    from awopt_ros.core.replay import TIMINGS
    from awopt_ros.launcher import DEFAULT_CONFIG
    parser.add_argument('paths', nargs='+', metavar='BAG_OR_RUN',
                        help='a bag directory (bags/episode_0003), its .mcap file, a bags/ '
                             'directory or a run directory (its bags/, in order)')
    parser.add_argument('--rate', type=count(0.001, float), default=1.0,
                        help='playback speed factor (0.5: half speed)')
    parser.add_argument('--timing', choices=TIMINGS, default='log',
                        help='log: each message at its log time (when the logger got it, as '
                             'ros2 bag play); stamp: stamped messages (camera frames, joint '
                             'states, actions) at their header stamps, the time they were '
                             'made, which in a lockstep recording the logger got a few '
                             'frames late and together (the policy then acts on every frame)')
    parser.add_argument('--loop', action='store_true',
                        help='start again after the last bag, until q or Ctrl-C')
    parser.add_argument('--start-paused', action='store_true',
                        help='begin paused (space or /awopt_replay/pause data:false resumes, '
                             's or /awopt_replay/step publishes one message)')
    parser.add_argument('--topics', nargs='+', default=[], metavar='T',
                        help='replay only these recorded topics (default: all)')
    parser.add_argument('--exclude', nargs='+', default=[], metavar='T',
                        help='recorded topics not to replay')
    parser.add_argument('--remap', nargs='+', default=[], metavar='FROM:=TO',
                        help='publish recorded topic FROM on TO; wins over the /recorded/ '
                             'remaps of --nodes and of the controller commands')
    parser.add_argument('--no-clock', dest='clock', action='store_false',
                        help='do not publish /clock (consumers then need use_sim_time false '
                             'and see the recorded stamps as old)')
    parser.add_argument('--clock-hz', type=count(1.0, float), default=100.0,
                        help='/clock messages per second between recorded messages')
    parser.add_argument('--delay', type=nonnegative_float, default=1.0,
                        help='seconds between the publishers (and started nodes) being ready '
                             'and the first message, for late subscribers to connect (then '
                             f'up to {CONNECT_WAIT_S:g} s more while subscribers on the graph '
                             'are still connecting)')
    parser.add_argument('--nodes', default='', metavar='N1,N2',
                        help='start these stack nodes against the replay (camera_pipeline, '
                             'policy, success_detector; robot_state for the robot in rviz) '
                             'and replay their recorded output on /recorded/<topic>')
    from awopt_ros.cli import _add_set_arg, _params_file
    parser.add_argument('--config', type=_params_file, default=DEFAULT_CONFIG,
                        help='params YAML of the --nodes')
    _add_set_arg(parser)
    parser.add_argument('--log-dir', default='runs/replay/logs',
                        help="the --nodes' log files")
    parser.add_argument('--linger', type=nonnegative_float, default=2.0,
                        help='--nodes: seconds they keep running after the last message, to '
                             'finish their work on it')
    parser.add_argument('--ready-timeout-s', type=count(1.0, float),
                        default=DEFAULT_READY_TIMEOUT_S,
                        help='longest wait for the --nodes to subscribe')


def node_overrides(nodes, user, ages_s, config, rate=1.0):
    """Return ``{node: {param: value}}`` for the started ``nodes``: ``use_sim_time`` true,
    ``max_frame_age_s`` (and the policy's ``max_joint_state_age_s``) at least the
    recording's ``ages_s`` (frame, joint state) plus :data:`AGE_MARGIN_S` (times ``rate``
    when above 1) unless the configured value is larger or ``user`` ({node: {param: value}},
    from ``--set``) sets it; then ``user`` on top. Second value: lines saying what was
    raised."""
    from awopt_ros.launcher import effective_params
    frame_s, joints_s = ages_s
    out, notes = {}, []
    for node in nodes:
        params = {'use_sim_time': True}
        given = user.get(node, {})
        current = effective_params(config, node, given)
        limits = {'max_frame_age_s': frame_s} if node in AGE_DEFAULTS else {}
        if node == 'policy':
            limits['max_joint_state_age_s'] = joints_s
        for param, age in limits.items():
            if param in given:
                continue
            wanted = round(age + AGE_MARGIN_S * max(1.0, float(rate)), 3)
            configured = float(current.get(param, AGE_DEFAULTS[node].get(param, 0.0)))
            if configured <= 0.0 or configured >= wanted:   # 0: no limit (success_detector)
                continue
            params[param] = wanted
            notes.append(f'{node}: {param} {configured:g} -> {wanted:g} s (the recording '
                         f'reaches {age:.3f} s; --set {node}:{param}=X to choose)')
        params.update(given)
        out[node] = params
    return out, notes


def _start_nodes(nodes, config, overrides, log_dir, env):
    """Start ``nodes`` as processes (a :class:`launcher.Stack` of just those nodes; it holds
    the domain lock and refuses a live stack). Returns the started stack."""
    from dataclasses import dataclass

    from awopt_ros.launcher import ALL_NODE_MODULES, Stack

    @dataclass
    class _Nodes(Stack):
        names: tuple = ()

        def node_specs(self):
            return [(n, ALL_NODE_MODULES[n]) for n in self.names]

    stack = _Nodes(config=config, log_dir=Path(log_dir), overrides=overrides, env=env,
                   graph_check_s=1.0, names=tuple(nodes))
    return stack.start()


def _wait_ready(player, stack, nodes, timeout_s):
    """Wait until every started node has subscribed (the policy and the success detector:
    ``/episode/event``, created last) and every replay publisher a started node subscribes
    is matched with it. Raises StackError (a node died, or the timeout)."""
    from awopt_ros.core.replay import NODE_INPUTS
    from awopt_ros.launcher import StackError
    deadline = time.monotonic() + timeout_s
    wanted_last = {'policy': '/episode/event', 'success_detector': '/episode/event'}
    waiting = 'nodes'
    while time.monotonic() < deadline:
        dead = stack.dead()
        if dead:
            node = dead[0]
            raise StackError(f'node {node.name} exited with {node.process.returncode} before '
                             f'the replay began:\n{node.log_tail()}')
        subs = {n: player.subscriptions_of(n) for n in nodes}
        ready = [n for n in nodes if subs[n] and (wanted_last.get(n) is None
                                                  or wanted_last[n] in subs[n])]
        if len(ready) == len(nodes):
            counts = {'/clock': len(nodes)} if player.clock_pub is not None else {}
            for n in nodes:
                for topic in subs[n] & set(player.pubs):
                    counts[topic] = counts.get(topic, 0) + 1
            missing = player.unmatched(counts)
            if not missing:
                return
            waiting = 'connections on ' + ', '.join(missing)
        else:
            waiting = ', '.join(n for n in nodes if n not in ready)
        time.sleep(0.05)
    raise StackError(f'the started nodes were not ready after {timeout_s:.0f} s (waiting for '
                     f'{waiting}); see their logs in {stack.log_dir}; inputs expected: '
                     f'{ {n: NODE_INPUTS[n] for n in nodes} }')


def _keys(player, out):
    """Read keys from the terminal (cbreak mode) on a daemon thread: space pauses / resumes,
    s steps, q quits. Returns a callable that restores the terminal, or None off a tty."""
    if not sys.stdin.isatty():
        return None
    import termios
    import tty
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read():
        import os
        while not player.stopped.is_set():
            try:
                key = os.read(fd, 1).decode(errors='replace')
            except OSError:
                return
            if key == ' ':
                out(player.toggle_pause())
            elif key in 'sS':
                out(player.step()[1])
            elif key in 'qQ':
                player.stop()
                return
    threading.Thread(target=read, name='awopt_replay_keys', daemon=True).start()
    return lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_replay(args, out=print):
    """Run ``awopt replay``; return the exit code (0 done or stopped with q / Ctrl-C,
    1 a node failed, 2 bad input)."""
    import os

    from awopt_ros.cli import parse_overrides
    from awopt_ros.core import replay
    from awopt_ros.launcher import (StackError, acquire_domain_lock, domain_id_of,
                                    refuse_stack_on_graph, ros_environment)
    try:
        nodes = replay.parse_nodes(args.nodes)
    except ValueError as exc:
        return usage_error(PROG, UsageError('--nodes', exc))
    try:
        remaps = replay.parse_remaps(args.remap)
    except ValueError as exc:
        return usage_error(PROG, UsageError('--remap', exc))
    user = parse_overrides(args.overrides)
    unknown = sorted(set(user) - set(nodes))
    if unknown:
        return usage_error(PROG, UsageError('--set', f'node(s) {", ".join(unknown)} not '
                                                     f'started (--nodes {args.nodes or "none"})'))
    from awopt_ros.nodes.logger import STACK_TOPICS, INSERTION_TOPICS
    presets = {t: p for t, (_, p) in {**STACK_TOPICS, **INSERTION_TOPICS}.items()}
    try:
        recording = replay.load_recording(
            args.paths, selection=replay.Selection(tuple(args.topics), tuple(args.exclude)),
            remaps=replay.remaps_for(nodes, remaps), presets=presets, timing=args.timing)
    except FileNotFoundError as exc:
        return usage_error(PROG, UsageError('BAG_OR_RUN', exc))
    except ValueError as exc:
        return usage_error(PROG, exc)

    if set(nodes) & set(replay.FRAME_GATED_NODES) \
            and replay.timeline_goes_back(recording, args.loop):
        return usage_error(PROG, UsageError(
            '--nodes', 'the started nodes (camera_pipeline, policy, success_detector) drop '
            'frames not newer than the last they took, and '
            + ('--loop starts again at the first frame' if args.loop else
               'these bags are not in time order (bags of different runs?)')
            + ': replay them without --nodes, or one bag (run) at a time'))
    env = ros_environment()
    os.environ.update({k: env[k] for k in ('ROS_AUTOMATIC_DISCOVERY_RANGE',
                                           'FASTDDS_DEFAULT_PROFILES_FILE', 'RMW_IMPLEMENTATION',
                                           'AMENT_PREFIX_PATH')})
    bags = [s.path for s in recording.segments]
    out(f'replaying {recording.message_count} messages of {len(bags)} bag(s) '
        f'({", ".join(str(b) for b in bags)}) on {len(recording.topics)} topics at rate '
        f'{args.rate:g} by {args.timing} time' + (', looping' if args.loop else '')
        + ('' if args.clock else ', no /clock'))
    for src, dst in sorted(recording.remapped.items()):
        out(f'  {src} -> {dst}')
    stack, lock_fd = None, None
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from awopt_ros.ros.bag_player import BagPlayer
    context = None
    player = None
    restore = None
    code = 0
    try:
        if nodes:
            overrides, notes = node_overrides(nodes, user, replay.input_ages_s(recording),
                                              args.config, args.rate)
            for note in notes:
                out(note)
            stack = _start_nodes(nodes, args.config, overrides, args.log_dir, env)
            out(f'started {", ".join(nodes)} (use_sim_time; logs in {args.log_dir})')
        else:   # never replay into a live stack: its arm interface would act on the replay
            domain = domain_id_of(env)
            lock_fd = acquire_domain_lock(domain)
            refuse_stack_on_graph(domain, 1.0, env)
        context = Context()
        rclpy.init(context=context)
        progress = _Progress(recording, args.loop)
        player = BagPlayer(recording, rate=args.rate, loop=args.loop,
                           start_paused=args.start_paused, publish_clock=args.clock,
                           clock_hz=args.clock_hz, on_message=progress.message,
                           context=context)
        player.spin_in_background(SingleThreadedExecutor(context=context))
        if stack is not None:
            player.watch_diagnostics()
            t0 = time.monotonic()
            _wait_ready(player, stack, nodes, args.ready_timeout_s)
        player.publish_clock(player.playback.clock_ns(time.monotonic()))
        if stack is not None:
            deadline = time.monotonic() + DIAGNOSTICS_WAIT_S
            while not set(nodes) <= player.diagnostics_heard \
                    and time.monotonic() < deadline and not stack.dead():
                time.sleep(0.05)
            player.watch_diagnostics(False)
            silent = sorted(set(nodes) - player.diagnostics_heard)
            out(f'nodes ready after {time.monotonic() - t0:.1f} s'
                + (f' ({", ".join(silent)}: no /diagnostics yet)' if silent else ''))
        time.sleep(args.delay)
        deadline = time.monotonic() + CONNECT_WAIT_S
        while player.unmatched(player.graph_subscriber_counts()) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        restore = _keys(player, progress.write)
        if args.start_paused:
            progress.write('paused: space resumes, s steps, q quits (or the services '
                           '/awopt_replay/pause and /awopt_replay/step)')
        try:
            player.play()
        finally:
            progress.close()
        pb = player.playback
        out(f'published {pb.published} messages'
            + (' (stopped)' if player.stopped.is_set() else '')
            + (f'; the replay fell behind {pb.lag_shifts} time(s), {pb.lag_s:.2f} s in all '
               '(a busy host): it went on from there rather than sending the messages due '
               'at once' if pb.lag_shifts else ''))
        if stack is not None and not player.stopped.is_set():
            time.sleep(args.linger)      # the nodes finish with the last messages
        if stack is not None and stack.dead():
            node = stack.dead()[0]
            out(f'node {node.name} exited with {node.process.returncode}:\n{node.log_tail()}')
            code = 1
    except StackError as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        code = 1
    except ValueError as exc:   # a recorded type that is not installed
        code = usage_error(PROG, exc)
    except KeyboardInterrupt:
        if player is not None:
            player.stop()
        out('stopped')
    finally:
        if restore is not None:
            restore()
        if stack is not None:
            stack.stop()
        if lock_fd is not None:
            os.close(lock_fd)
        if player is not None:
            player.close()
        if context is not None:
            rclpy.try_shutdown(context=context)
    return code


class _Progress:
    """A tqdm bar of published messages (per pass over the bags) on stderr."""

    def __init__(self, recording, loop):
        from tqdm import tqdm
        self.total = recording.message_count
        self.bar = tqdm(total=self.total, unit='msg', desc='replay', leave=False,
                        disable=not sys.stderr.isatty())
        self.loop = loop

    def message(self, msg):
        del msg
        if self.bar.n >= self.total and self.loop:
            self.bar.reset()
        self.bar.update(1)

    def write(self, text):
        self.bar.write(str(text))

    def close(self):
        self.bar.close()
