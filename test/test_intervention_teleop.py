"""``awopt teleop`` (run_teleop) on a pseudo terminal: its ROS context is its own, not
initialised from the command line of the ``awopt`` process."""
import argparse
import os
import sys
import threading
import tty

import rclpy

from awopt_ros import teleop_cli


def test_teleop_ros_init_does_not_parse_the_command_line(monkeypatch):
    """Arguments of the awopt command line that look like ROS arguments (a remap, a node
    name remap after --ros-args) reach neither rcl's argument parser nor the teleop node."""
    parser = argparse.ArgumentParser()
    teleop_cli.add_teleop_args(parser)
    args = parser.parse_args([])
    monkeypatch.setattr(sys, 'argv', ['awopt', 'teleop', 'a:=b', '--ros-args', '-r',
                                      '__node:=hijacked'])
    inits, names = [], []
    real_init, real_create_node = rclpy.init, rclpy.create_node

    def init(**kwargs):
        inits.append(kwargs.get('args'))
        return real_init(**kwargs)

    def create_node(*a, **kwargs):
        node = real_create_node(*a, **kwargs)
        names.append(node.get_name())
        return node
    monkeypatch.setattr(rclpy, 'init', init)
    monkeypatch.setattr(rclpy, 'create_node', create_node)
    master, slave = os.openpty()
    tty.setraw(slave)                      # Ctrl-C arrives as a character, no signal
    tty_in = os.fdopen(slave, 'r')
    done = threading.Event()

    def press_quit():                      # until read: entering cbreak mode flushes input
        while not done.wait(0.1):
            os.write(master, b'\x03')
    typist = threading.Thread(target=press_quit, daemon=True)
    try:
        monkeypatch.setattr(sys, 'stdin', tty_in)
        typist.start()
        assert teleop_cli.run_teleop(args, out=lambda *_: None) == 0
    finally:
        done.set()
        typist.join(timeout=5.0)
        tty_in.close()
        os.close(master)
    assert names == ['awopt_teleop']                 # not renamed by the command line
    assert len(inits) == 1 and inits[0] is not None  # None: rcl would parse sys.argv
    assert not set(inits[0]) & {'a:=b', '--ros-args', '__node:=hijacked'}
