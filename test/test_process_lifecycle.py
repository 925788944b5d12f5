"""Node processes live and die with their stack; one stack per ROS domain; clear run errors.

- ``kill -9`` of the process that started the stack takes every node with it
  (``PR_SET_PDEATHSIG``), checked by PID.
- A second stack on the same ``ROS_DOMAIN_ID`` is refused with a message naming the domain:
  by the per-domain lock (two ``awopt bringup`` started at the same moment) and by a look at
  the ROS graph (a stack that holds no lock, e.g. from ``ros2 launch``); the lock is free
  again after the stack stops.
- A node that dies during a run stops the run at once with an error naming that node.
- Bad ``--episodes`` / ``--config`` values are one-line argparse errors (exit 2).
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from awopt_ros import launcher
from awopt_ros.launcher import (DomainBusyError, Stack, StackError, acquire_domain_lock,
                                domain_id_of, ros_environment)

DOMAIN = domain_id_of()     # the test run's own domain (conftest claims a free one)
NODE_NAMES = {'sim_robot', 'camera_pipeline', 'policy', 'success_detector', 'arm_interface',
              'episode_manager', 'logger', 'operator', 'robot_state'}


def _children(pid):
    """PIDs of the live (not zombie) processes whose parent is ``pid``."""
    out = []
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / 'stat').read_text().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != 'Z':
                out.append(int(entry.name))
    return out


def _running(pid):
    """True while process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError:
        return False
    return state != 'Z'


def _kill_left(pids):
    """SIGKILL every process of ``pids`` still running (never leave strays); return them."""
    left = [pid for pid in pids if _running(pid)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _wait_for_graph(names, timeout_s):
    """Wait until every node of ``names`` is in this domain's ROS graph; return those seen."""
    import rclpy
    from rclpy.context import Context
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    node = rclpy.create_node('lifecycle_test_watch', context=context, enable_rosout=False,
                             start_parameter_services=False)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            seen = {n for n, _ in node.get_node_names_and_namespaces()} & set(names)
            if seen == set(names) or time.monotonic() > deadline:
                return seen
            time.sleep(0.1)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _bringup(tmp_path, tag):
    """Start ``awopt bringup`` (actor policy) as a child process of this test."""
    env = ros_environment(domain_id=DOMAIN)
    return subprocess.Popen([sys.executable, '-m', 'awopt_ros.cli', 'bringup', '--log-dir',
                             str(tmp_path / tag)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def test_kill_9_of_the_parent_takes_every_node_with_it(tmp_path):
    proc = _bringup(tmp_path, 'logs')
    nodes = []
    try:
        line = proc.stdout.readline()
        assert line.startswith('started '), (line, proc.stderr.read())
        nodes = _children(proc.pid)
        assert len(nodes) == len(NODE_NAMES), nodes
        assert _wait_for_graph(NODE_NAMES, 60.0) == NODE_NAMES   # every node is up
        os.kill(proc.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        proc.wait(timeout=10.0)
        deadline = t_kill + 15.0
        while any(_running(pid) for pid in nodes) and time.monotonic() < deadline:
            time.sleep(0.02)
        gone_s = time.monotonic() - t_kill
        print(f'all {len(nodes)} node processes gone {gone_s:.2f} s after kill -9 of the parent')
    finally:
        nodes += [pid for pid in _children(proc.pid) if pid not in nodes]
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = _kill_left(nodes)
    assert not left, f'node processes outlived their killed parent: {left}'
    assert gone_s < 10.0, gone_s


def test_two_stacks_started_at_once_on_one_domain_one_is_refused(tmp_path):
    first, second = _bringup(tmp_path, 'a'), _bringup(tmp_path, 'b')
    procs, nodes = [first, second], []
    try:
        # One of them says 'started', the other exits 1 at once with a one-line error.
        deadline = time.monotonic() + 60.0
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = next(p for p in procs if p.poll() is not None)
        running = first if refused is second else second
        err = refused.stderr.read()
        assert refused.returncode == 1, err
        assert len(err.strip().splitlines()) == 1, err
        assert f'another awopt stack is running on ROS_DOMAIN_ID={DOMAIN}' in err, err
        assert 'Traceback' not in err
        assert running.stdout.readline().startswith('started ')
        nodes = _children(running.pid)
        assert len(nodes) == len(NODE_NAMES)
        running.send_signal(signal.SIGINT)
        assert running.wait(timeout=60.0) == 0, running.stderr.read()
        # Stopped: the domain is free again.
        os.close(acquire_domain_lock(DOMAIN))
    finally:
        nodes += [pid for p in procs for pid in _children(p.pid) if pid not in nodes]
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        left = _kill_left(nodes)
    assert not left


@pytest.fixture
def sleeper_nodes(monkeypatch):
    """Make Stack start a sleeping python process per node instead of the real nodes."""
    def command(module, node_name, config, params=None, python=sys.executable):
        return [python, '-c', 'import time; time.sleep(120)']
    monkeypatch.setattr(launcher, 'node_command', command)


def test_a_stack_holds_its_domain_until_it_stops(tmp_path, sleeper_nodes):
    first = Stack(policy='scripted', log_dir=tmp_path / 'a', graph_check_s=0).start()
    try:
        with pytest.raises(DomainBusyError, match=(
                rf'another awopt stack is running on ROS_DOMAIN_ID={DOMAIN} \(awopt process '
                rf'{os.getpid()}\): stop it or set ROS_DOMAIN_ID')):
            Stack(policy='scripted', log_dir=tmp_path / 'b', graph_check_s=0).start()
        # The nodes hold the lock too: a node that outlived its stack keeps the domain busy.
        assert all(n.alive() for n in first.nodes)
    finally:
        first.stop(timeout_s=5.0)
    second = Stack(policy='scripted', log_dir=tmp_path / 'b', graph_check_s=0).start()
    second.stop(timeout_s=5.0)
    assert issubclass(DomainBusyError, StackError)


def test_a_node_that_cannot_start_stops_the_ones_started_before_it(tmp_path, monkeypatch):
    """No half stack: the nodes started before the failing one are stopped, the domain is
    free again."""
    def command(module, node_name, config, params=None, python=sys.executable):
        if node_name == 'arm_interface':
            return [str(tmp_path / 'no_such_program')]
        return [python, '-c', 'import time; time.sleep(120)']
    monkeypatch.setattr(launcher, 'node_command', command)
    stack = Stack(policy='scripted', log_dir=tmp_path / 'logs', graph_check_s=0)
    with pytest.raises(FileNotFoundError):
        stack.start()
    started = [n.process.pid for n in stack.nodes]
    try:
        # sim_robot, camera_pipeline, scripted_policy, success_detector
        assert len(started) == 4
        assert not [pid for pid in started if _running(pid)]
        os.close(acquire_domain_lock(DOMAIN))      # the lock was let go
    finally:
        _kill_left(started)


def test_the_refusal_says_when_only_orphaned_nodes_hold_the_domain(tmp_path):
    gone = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True).stdout.strip()
    fd = acquire_domain_lock(DOMAIN)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, gone.encode(), 0)      # as if the holder were killed, its nodes not
        with pytest.raises(DomainBusyError, match=f'nodes of awopt process {gone}, which has '
                                                  'exited'):
            acquire_domain_lock(DOMAIN)
    finally:
        os.close(fd)


@pytest.mark.parametrize('value, domain', [('', 0), (' 7 ', 7), ('232', 232)])
def test_domain_id_of_reads_ros_domain_id(value, domain):
    assert domain_id_of({'ROS_DOMAIN_ID': value}) == domain
    assert domain_id_of({}) == 0


@pytest.mark.parametrize('value', ['abc', '-1', '233', '1.5'])
def test_a_bad_ros_domain_id_is_a_stack_error(value):
    with pytest.raises(StackError, match=f"ROS_DOMAIN_ID must be an integer from 0 to 232, "
                                         f"got '{value}'"):
        domain_id_of({'ROS_DOMAIN_ID': value})


def test_a_stack_on_the_ros_graph_is_refused_even_without_the_lock(tmp_path, sleeper_nodes):
    """A stack from ``ros2 launch`` holds no lock file: its nodes on the graph are enough."""
    import rclpy
    from rclpy.context import Context
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    stray = [rclpy.create_node(name, context=context) for name in ('logger', 'policy')]
    try:
        stack = Stack(policy='scripted', log_dir=tmp_path, graph_check_s=20.0)
        t = time.monotonic()
        with pytest.raises(DomainBusyError, match=(
                rf'ROS_DOMAIN_ID={DOMAIN} \(nodes: (logger|policy)')):
            stack.start()
        assert time.monotonic() - t < 15.0      # returns as soon as it sees one
        assert stack.nodes == []                # nothing started
    finally:
        for node in stray:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    os.close(acquire_domain_lock(DOMAIN))       # the refused stack let go of the lock


def test_a_lone_generic_node_name_is_not_taken_for_a_stack():
    from awopt_ros.ros.stack_guard import looks_like_stack
    assert not looks_like_stack([]) and not looks_like_stack(['logger'])
    assert not looks_like_stack(['policy'])
    assert looks_like_stack(['episode_manager']) and looks_like_stack(['logger', 'policy'])


def test_a_node_death_mid_run_stops_the_run_at_once_naming_the_node(tmp_path, monkeypatch):
    from awopt_ros.ros import runner
    stacks, killed = [], {}

    class SpyStack(Stack):
        def start(self):
            stacks.append(self)
            return super().start()

        def stop(self, timeout_s=15.0):
            killed.setdefault('stop', time.monotonic())
            return super().stop(timeout_s)

    def kill_camera_pipeline():
        node = next(n for n in stacks[0].nodes if n.name == 'camera_pipeline')
        killed['t'] = time.monotonic()
        os.kill(node.process.pid, signal.SIGKILL)

    def out(line):
        if line.startswith('episode ') and 't' not in killed and 'timer' not in killed:
            # Episode 1 is done and episode 2 is being asked for: kill the camera pipeline
            # in the middle of episode 2.
            killed['timer'] = threading.Timer(1.0, kill_camera_pipeline)
            killed['timer'].start()
    monkeypatch.setattr(runner, 'Stack', SpyStack)
    report = runner.run_episodes(
        20, policy='scripted', run_dir=tmp_path / 'run', seed=100, lockstep=True,
        extra_overrides={'episode_manager': {'max_steps': 40}}, out=out)
    error_s = time.monotonic() - killed['t']
    # The runner spins 1.2 s for last diagnostics between its error and Stack.stop.
    print(f'kill -9 of camera_pipeline -> runner error '
          f'{killed["stop"] - killed["t"] - 1.2:.2f} s, -> run_episodes returned {error_s:.2f} s '
          f'(clean stop of the other nodes included); error: {report["error"].splitlines()[0]}')
    assert report['error'].startswith('node camera_pipeline died'), report['error']
    assert 'exit code -9, SIGKILL' in report['error']
    assert 'did not end within' not in report['error']
    assert report['episodes'] < 20
    assert report['node_exit_codes']['camera_pipeline'] == -9
    assert error_s < 20.0, error_s    # the clean stop of the other nodes included


@pytest.mark.parametrize('argv, option, message', [
    (['demo', '--episodes', '0'], '--episodes', 'must be >= 1, got 0'),
    (['collect', '--episodes', '-1'], '--episodes', 'must be >= 1, got -1'),
    (['bench', '--episodes', 'ten'], '--episodes', "expected an integer, got 'ten'"),
    (['demo', '--model', '/nonexistent/actor.onnx'], '--model',
     'model file not found: /nonexistent/actor.onnx'),
    (['demo', '--new-model-every', '-1'], '--new-model-every',
     'must be >= 0 and needs --policy actor, got -1'),
    (['demo', '--new-model-every', '2', '--policy', 'scripted'], '--new-model-every',
     'got 2 with --policy scripted'),
    (['demo', '--config', '/nonexistent/params.yaml'], '--config',
     'params file not found: /nonexistent/params.yaml'),
    (['collect', '--config', '{bad}'], '--config', 'is not valid'),
    (['bench', '--config', '{list}'], '--config', 'is not valid'),
])
def test_bad_run_options_are_one_line_errors(tmp_path, capsys, argv, option, message):
    from awopt_ros.cli import main
    (tmp_path / 'bad.yaml').write_text('policy: [unclosed\n')
    (tmp_path / 'list.yaml').write_text('- a\n- b\n')
    argv = [a.replace('{bad}', str(tmp_path / 'bad.yaml'))
            .replace('{list}', str(tmp_path / 'list.yaml')) for a in argv]
    try:
        code = main(argv)           # a check in the command: it returns 2
    except SystemExit as exc:       # argparse's own check (option type) exits 2
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]      # argparse: usage line, then the error line
    assert last.startswith(f'awopt {argv[0]}: error: argument {option}: '), err
    assert message in last and 'Traceback' not in err


def test_bringup_with_a_missing_config_is_a_one_line_error(tmp_path, capsys):
    from awopt_ros.cli import main
    assert main(['bringup', str(tmp_path / 'none.yaml'), '--log-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f'awopt bringup: error: argument config: params file not found: '
                           f'{tmp_path / "none.yaml"}')


def test_cli_refuses_a_busy_domain_in_one_line(tmp_path, capsys):
    from awopt_ros.cli import main
    fd = acquire_domain_lock(DOMAIN)      # as if another awopt stack held the domain
    try:
        assert main(['bringup', '--log-dir', str(tmp_path / 'logs')]) == 1
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert err.strip() == (f'awopt bringup: error: another awopt stack is running on '
                           f'ROS_DOMAIN_ID={DOMAIN} (awopt process {os.getpid()}): stop it or '
                           'set ROS_DOMAIN_ID to a free domain')
    assert not (tmp_path / 'logs').exists()     # no node was started
