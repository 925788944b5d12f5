"""Nothing leaves the host: the policy node, and a whole stack, open no socket off the host.

The policy node alone, then ``awopt bringup`` (every node), run under ``strace -f -e
trace=connect,sendto,sendmsg`` for 15 s after the policy loaded its model: long enough for
onnxruntime's telemetry uploader to start (its first DNS query, to the host's resolver, comes
about 9 s after the runtime initialises). Every IPv4/IPv6 address connected or sent to must
be loopback; Unix sockets (DDS shared memory, nscd) are fine.
"""
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import export_tiny_actor

from awopt_ros.core import ort_session

ROOT = Path(__file__).resolve().parents[1]
STRACE = shutil.which('strace') or '/usr/bin/strace'
#: Seconds the node keeps running after its model is loaded (telemetry starts after ~9 s).
RUN_AFTER_LOAD_S = 15.0
_IPV4 = re.compile(r'inet_addr\("([^"]+)"\)')
_IPV6 = re.compile(r'inet_pton\(AF_INET6, "([^"]+)"')


def off_host_addresses(trace):
    """Return the strace lines (list of str) that connect or send to a non-loopback address.

    ``trace``: text of ``strace -e trace=connect,sendto,sendmsg``. IPv4 ``inet_addr("a")``
    and IPv6 ``inet_pton(AF_INET6, "a", ...)`` addresses count; loopback (127/8, ::1,
    ::ffff:127.x) and the unspecified address (0.0.0.0, ::) are on the host.
    """
    out = []
    for line in trace.splitlines():
        for addr in _IPV4.findall(line) + _IPV6.findall(line):
            ip = ipaddress.ip_address(addr)
            mapped = getattr(ip, 'ipv4_mapped', None)
            ip = mapped or ip
            if not (ip.is_loopback or ip.is_unspecified):
                out.append(line.strip())
                break
    return out


def test_off_host_addresses_parser():
    trace = '\n'.join([
        '12 connect(8, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1',
        '12 connect(8, {sa_family=AF_INET, sin_port=htons(53), '
        'sin_addr=inet_addr("10.255.255.53")}, 16) = 0',
        '13 sendto(9, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(7400), '
        'sin_addr=inet_addr("127.0.0.1")}, 16) = 1',
        '14 connect(3, {sa_family=AF_INET6, sin6_port=htons(443), '
        'inet_pton(AF_INET6, "2603:1030::1", &sin6_addr)}, 28) = 0',
        '15 connect(3, {sa_family=AF_INET6, sin6_port=htons(443), '
        'inet_pton(AF_INET6, "::1", &sin6_addr)}, 28) = 0',
    ])
    bad = off_host_addresses(trace)
    assert len(bad) == 2 and '10.255.255.53' in bad[0] and '2603:1030::1' in bad[1]


@pytest.fixture
def tiny_actor(tmp_path):
    path = tmp_path / 'tiny.onnx'
    export_tiny_actor(path, seed=0, image_size=16)
    return path


def run_traced(tmp_path, args, ready_log, ready_text='loaded model version'):
    """Run ``python args`` under strace until ``ready_text`` appears in the file
    ``ready_log``, then :data:`RUN_AFTER_LOAD_S` more, stop it with SIGINT; return the strace
    output (str). The process and its children run in their own process group, which is
    stopped (SIGINT, then SIGKILL after 30 s) whatever happens."""
    if not os.access(STRACE, os.X_OK):
        pytest.skip(f'strace not found at {STRACE}')
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED='1',
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    env.pop(ort_session.TELEMETRY_ENV, None)     # the code must turn telemetry off itself
    trace_path, out_path = tmp_path / 'strace.txt', tmp_path / 'out.log'
    cmd = [STRACE, '-f', '--seccomp-bpf', '-e', 'trace=connect,sendto,sendmsg',
           '-o', str(trace_path), sys.executable] + list(args)
    with open(out_path, 'w') as out:
        # own process group: SIGINT reaches the Python process itself (strace ignores it)
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline and proc.poll() is None:
            if ready_log.exists() and ready_text in ready_log.read_text():
                break
            time.sleep(0.2)
        text = out_path.read_text()
        if 'ptrace' in text and 'Operation not permitted' in text:
            pytest.skip(f'strace cannot trace here: {text.strip()[:200]}')
        assert proc.poll() is None and ready_log.exists() and \
            ready_text in ready_log.read_text(), text[-2000:]
        time.sleep(RUN_AFTER_LOAD_S)
        assert proc.poll() is None, out_path.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    trace = trace_path.read_text()
    assert 'connect(' in trace or 'sendto(' in trace or 'sendmsg(' in trace  # strace worked
    return trace


def _assert_on_host(trace):
    bad = off_host_addresses(trace)
    assert not bad, f'{len(bad)} connect/send calls to non-loopback addresses:\n' + \
        '\n'.join(bad[:10])


def test_policy_node_opens_no_socket_off_the_host(tiny_actor, tmp_path):
    trace = run_traced(tmp_path, ['-m', 'awopt_ros.nodes.policy', '--ros-args',
                                  '-p', f'model_path:={tiny_actor}', '-p', 'image_size:=16'],
                       tmp_path / 'out.log')
    _assert_on_host(trace)


def test_stack_opens_no_socket_off_the_host(tmp_path):
    """``awopt bringup`` (every node of the stack, shipped models, free-running simulator)."""
    logs = tmp_path / 'logs'
    trace = run_traced(tmp_path, ['-m', 'awopt_ros.cli', 'bringup', '--log-dir', str(logs),
                                  '--set', f'logger:output_dir={tmp_path / "run"}'],
                       logs / 'policy.log')
    _assert_on_host(trace)


@pytest.mark.parametrize('module', ['awopt_ros.core.onnx_critic',
                                    'awopt_ros.core.policy_runtime',
                                    'awopt_ros.learning.critic'])
def test_modules_that_run_onnxruntime_turn_its_telemetry_off_first(module):
    """Importing a module that creates sessions sets ORT_DISABLE_TELEMETRY=1 before anything
    imports onnxruntime (which reads it once, when it initialises)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(ort_session.TELEMETRY_ENV, None)
    code = (f'import os, sys, {module}; '
            "print(os.environ.get('ORT_DISABLE_TELEMETRY'), 'onnxruntime' in sys.modules)")
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == '1'


def test_warns_when_onnxruntime_was_imported_too_early():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(ort_session.TELEMETRY_ENV, None)
    code = ('import onnxruntime\n'
            'from awopt_ros.core import ort_session\n'
            'ort_session.onnxruntime()\n')
    proc = subprocess.run([sys.executable, '-W', 'always', '-c', code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'RuntimeWarning' in proc.stderr and 'imported before ORT_DISABLE_TELEMETRY' \
        in proc.stderr
