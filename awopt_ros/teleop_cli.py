"""``awopt teleop``: keyboard teleoperation that overrides the policy (operator interventions).

Run it in a terminal beside a running stack (``make demo``, ``awopt demo``, ``awopt
bringup``). While a key is held it publishes ``geometry_msgs/TwistStamped`` on
``/operator/twist`` (frame ``base_link``; linear m/s, ``angular.z`` rad/s) and, once ``c`` or
``o`` was pressed, ``std_msgs/Bool`` on ``/operator/gripper`` (true close), at ``--rate-hz``
(20 Hz); the arm interface then executes the operator's command instead of each policy
action, through the same safety filter, workspace box, joint limits, heartbeat and stop as
the policy's (``awopt_ros.core.intervention``, ``nodes.arm_interface``). When the keys are
released it sends one zero twist (the arm holds still) and goes quiet: the policy takes over
once the arm interface's ``intervention_timeout_s`` has passed.

Keys (:data:`awopt_ros.core.intervention.HELP`): w/s +-x, a/d +-y, r/f +-z, q/e yaw, c/o
close/open the gripper, space stop (zero twist while held), Ctrl-C quit. A terminal sends no
key releases: a key counts as held until ``--hold-s`` after its last repeat. Keys count as
typed (lowercase; Caps Lock's uppercase letters are ignored); arrow, function and other keys
that send escape sequences are ignored whole (``core.intervention.KeyStream``).

The terminal is put in cbreak mode (keys arrive one by one, not echoed; restored at exit);
without a terminal on stdin the command refuses to run (exit 2). Its ROS context is
initialised without the command line (no ROS arguments: the topics are options).
"""
import os
import select
import sys
import time

from awopt_ros.cli_args import count, usage_error

PROG = 'awopt teleop'
#: Largest accepted --speed (m/s) and --yaw-speed (rad/s): far beyond what one control step
#: may move (the action bounds clip the step anyway).
MAX_SPEED_M_S = 1.0
MAX_YAW_SPEED_RAD_S = 5.0
#: The control period the stack runs at (s): for the warning about clipped speeds.
CONTROL_PERIOD_S = 0.1


def add_teleop_args(parser):
    """Add the ``teleop`` options to ``parser``."""
    from awopt_ros.core import intervention as iv
    parser.add_argument('--speed', type=count(0.0, float), default=iv.DEFAULT_SPEED_M_S,
                        help='tool speed of the motion keys (m/s; x the control period 0.1 s '
                             'gives the step, clipped to 0.03 m)')
    parser.add_argument('--yaw-speed', type=count(0.0, float),
                        default=iv.DEFAULT_YAW_SPEED_RAD_S,
                        help='yaw rate of q/e (rad/s; the step is clipped to 0.2 rad)')
    parser.add_argument('--rate-hz', type=count(1.0, float), default=iv.DEFAULT_RATE_HZ,
                        help='publish rate while a key is held (Hz)')
    parser.add_argument('--hold-s', type=count(0.0, float), default=iv.DEFAULT_HOLD_S,
                        help='a key counts as held this long after its last press or repeat '
                             '(s; terminals send no key release)')
    parser.add_argument('--twist-topic', default=iv.TWIST_TOPIC,
                        help="TwistStamped topic (the arm interface's operator_twist_topic)")
    parser.add_argument('--gripper-topic', default=iv.GRIPPER_TOPIC,
                        help="Bool topic (the arm interface's operator_gripper_topic)")


def _check(args):
    """Return an error text for bad options, else None."""
    from awopt_ros.core.robot_names import check_topic_ns
    if not 0.0 < args.speed <= MAX_SPEED_M_S:
        return f'argument --speed: must be in (0, {MAX_SPEED_M_S}] m/s, got {args.speed}'
    if not 0.0 < args.yaw_speed <= MAX_YAW_SPEED_RAD_S:
        return (f'argument --yaw-speed: must be in (0, {MAX_YAW_SPEED_RAD_S}] rad/s, got '
                f'{args.yaw_speed}')
    if not args.hold_s > 0.0:
        return f'argument --hold-s: must be > 0 s, got {args.hold_s}'
    for option, topic in (('--twist-topic', args.twist_topic),
                          ('--gripper-topic', args.gripper_topic)):
        try:
            check_topic_ns(topic, option)
        except ValueError as exc:
            return f'argument {exc}'
    return None


def _describe(cmd):
    """One status line of a command (None: idle)."""
    if cmd is None:
        return 'idle: the policy drives'
    names = ('x', 'y', 'z')
    parts = [f'{"+" if v > 0 else "-"}{n} {abs(v):.2f} m/s'
             for n, v in zip(names, cmd.linear_m_s) if v]
    if cmd.yaw_rate_rad_s:
        parts.append(f'yaw {cmd.yaw_rate_rad_s:+.2f} rad/s')
    if cmd.gripper_closed is not None:
        parts.append('gripper close' if cmd.gripper_closed else 'gripper open')
    return 'operator: ' + (', '.join(parts) if parts else 'hold still')


def run_teleop(args, out=print):
    """Run the keyboard teleop until Ctrl-C; return the exit code (0, or 2 for bad options or
    no terminal)."""
    error = _check(args)
    if error is not None:
        return usage_error(PROG, error)
    if not sys.stdin.isatty():
        return usage_error(PROG, 'needs a terminal: stdin is not a tty (run it in an '
                                 'interactive shell beside the stack; any other source can '
                                 'publish geometry_msgs/TwistStamped on /operator/twist)')
    from awopt_ros.core import intervention as iv
    from awopt_ros.core.spec import ACTION_HIGH
    if args.speed * CONTROL_PERIOD_S > ACTION_HIGH[0] or \
            args.yaw_speed * CONTROL_PERIOD_S > ACTION_HIGH[3]:
        out(f'note: steps beyond {ACTION_HIGH[0]} m / {ACTION_HIGH[3]} rad per '
            f'{CONTROL_PERIOD_S} s control step are clipped by the arm interface')
    from awopt_ros.launcher import ros_environment
    env = ros_environment()
    os.environ.update({k: env[k] for k in ('ROS_AUTOMATIC_DISCOVERY_RANGE',
                                           'FASTDDS_DEFAULT_PROFILES_FILE', 'RMW_IMPLEMENTATION',
                                           'AMENT_PREFIX_PATH')})
    import termios
    import tty

    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.context import Context
    from std_msgs.msg import Bool

    from awopt_ros.ros import qos
    keys = iv.TeleopKeys(args.speed, args.yaw_speed, args.hold_s)
    stream = iv.KeyStream()       # arrow / function keys' escape sequences are left out
    context = Context()
    # args=[]: without it rcl parses sys.argv, the awopt command line (its options are not
    # ROS arguments; one that looks like a remap would warn or rename the node).
    rclpy.init(args=[], context=context)
    node = rclpy.create_node('awopt_teleop', context=context)
    twist_pub = node.create_publisher(TwistStamped, args.twist_topic, qos.COMMAND)
    gripper_pub = node.create_publisher(Bool, args.gripper_topic, qos.COMMAND)

    def publish(cmd):
        msg = TwistStamped()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = iv.BASE_FRAME
        (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z) = cmd.linear_m_s
        msg.twist.angular.z = float(cmd.yaw_rate_rad_s)
        twist_pub.publish(msg)
        if cmd.gripper_closed is not None:
            gripper_pub.publish(Bool(data=bool(cmd.gripper_closed)))

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    out(f'{PROG}: publishing on {args.twist_topic} and {args.gripper_topic} at '
        f'{args.rate_hz:g} Hz while a key is held\n{iv.HELP}')
    period = 1.0 / args.rate_hz
    shown, was_active = None, False
    try:
        tty.setcbreak(fd)
        next_s = time.monotonic()
        while True:
            timeout = max(0.0, next_s - time.monotonic())
            ready, _, _ = select.select([fd], [], [], timeout)
            if ready:
                data = os.read(fd, 64)
                if not data:              # end of input (the terminal went away)
                    break
                now = time.monotonic()
                typed = stream.feed(data.decode(errors='ignore'), now)
                if any(keys.press(ch, now) == 'quit' for ch in typed):
                    break
                continue
            now = time.monotonic()
            next_s = now + period
            cmd = keys.command(now)
            if cmd is not None:
                publish(cmd)
            elif was_active:              # released: stop now, then the policy takes over
                publish(iv.TeleopCommand((0.0, 0.0, 0.0), 0.0, None))
            was_active = cmd is not None
            line = _describe(cmd)
            if line != shown:
                print(f'\r\033[K{line}', end='', file=sys.stderr, flush=True)
                shown = line
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if was_active:
            publish(iv.TeleopCommand((0.0, 0.0, 0.0), 0.0, None))
        print(file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return 0
