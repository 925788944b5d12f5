"""Nothing leaves the host: a running policy node opens no socket to a non-loopback address.

The node runs under ``strace -f -e trace=connect,sendto,sendmsg`` long enough for
onnxruntime's telemetry uploader to start (its first DNS query comes about 9 s after the
runtime initialises), then every IPv4/IPv6 address it connected or sent to must be loopback.
Unix sockets (DDS shared memory, nscd) are fine.
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


def test_policy_node_opens_no_socket_off_the_host(tiny_actor, tmp_path):
    if not os.access(STRACE, os.X_OK):
        pytest.skip(f'strace not found at {STRACE}')
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED='1',
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    env.pop(ort_session.TELEMETRY_ENV, None)     # the node must turn telemetry off itself
    trace_path, log_path = tmp_path / 'strace.txt', tmp_path / 'node.log'
    cmd = [STRACE, '-f', '--seccomp-bpf', '-e', 'trace=connect,sendto,sendmsg',
           '-o', str(trace_path), sys.executable, '-m', 'awopt_ros.nodes.policy', '--ros-args',
           '-p', f'model_path:={tiny_actor}', '-p', 'image_size:=16']
    with open(log_path, 'w') as log:
        # own process group: SIGINT reaches the node itself (strace alone ignores it)
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline and proc.poll() is None:
            if 'loaded model version' in log_path.read_text():
                break
            time.sleep(0.2)
        text = log_path.read_text()
        if 'ptrace' in text and 'Operation not permitted' in text:
            pytest.skip(f'strace cannot trace here: {text.strip()[:200]}')
        assert proc.poll() is None and 'loaded model version' in text, text[-2000:]
        time.sleep(RUN_AFTER_LOAD_S)
        assert proc.poll() is None, log_path.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    trace = trace_path.read_text()
    assert 'connect(' in trace or 'sendto(' in trace or 'sendmsg(' in trace  # strace worked
    bad = off_host_addresses(trace)
    assert not bad, f'{len(bad)} connect/send calls to non-loopback addresses:\n' + \
        '\n'.join(bad[:10])
