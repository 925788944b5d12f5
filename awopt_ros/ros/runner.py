"""Run N episodes through the real node processes and report them (demo, collect, bench).

:func:`run_episodes` brings the stack up with :class:`awopt_ros.launcher.Stack`, drives it with
:class:`awopt_ros.ros.episode_client.EpisodeClient`, prints each episode's outcome, stops the
processes cleanly and returns the report dict (also written as JSON when ``report_path``).
"""
import json
import os
import signal
import time
from pathlib import Path

import rclpy
from rclpy.context import Context

from awopt_ros.core.paths import resolve
from awopt_ros.core.report import (agreement_line, bag_frame_stamps_ns, episode_seeds,
                                   episode_windows, frame_accounting, latency_summary,
                                   run_warnings, stack_agreement, summarize_episodes,
                                   unrecorded_episodes)
from awopt_ros.core.robot_names import DEFAULT_CAMERA_NS, camera_topics
from awopt_ros.launcher import Stack, StackError, effective_params, ros_environment
from awopt_ros.ros.episode_client import EpisodeClient

__all__ = ['StackError', 'print_summary', 'run_episodes', 'stack_overrides',
           'wrench_to_command']


def _exit_text(code):
    """Return ``code`` as text, with the signal's name for a negative (killed) code."""
    if code is not None and code < 0:
        try:
            return f'{code}, {signal.Signals(-code).name}'
        except ValueError:
            pass
    return str(code)


def _dead_nodes_message(stack, during=''):
    """Return '' when every node runs, else one paragraph per dead node: its name, exit code
    and the last lines of its log (``during``, e.g. 'during episode 3', says when)."""
    parts = []
    for node in stack.dead():
        parts.append(f'node {node.name} died{" " + during if during else ""} (exit code '
                     f'{_exit_text(node.process.returncode)}); last log lines '
                     f'({node.log_path}):\n{node.log_tail()}')
    return '\n'.join(parts)


def _next_round_model(client, round_version, done, timeout_s, startup_timeout_s, stack,
                      waits_s, out):
    """Before a round of on-policy episodes: after ``done`` > 0 episodes wait until the policy
    runs a model newer than ``round_version`` (else only until it reports one); return the
    version the new round starts with.

    Raises:
        StackError: no (newer) model within the timeout, or a node died meanwhile.
    """
    alive = lambda: not stack.dead()  # noqa: E731
    if done == 0:
        if client.wait_model_newer(None, startup_timeout_s, alive) is None:
            raise StackError(_dead_nodes_message(stack, 'while waiting for the model')
                             or 'the policy node never published /policy/model_info')
        return client.model_version
    out(f'{done} episodes done: waiting up to {timeout_s:.0f} s for the policy to '
        f'swap in a model newer than version {round_version} ...')
    t = time.monotonic()
    info = client.wait_model_newer(round_version, timeout_s, alive)
    if info is None:
        raise StackError(_dead_nodes_message(stack, 'while waiting for a new model') or (
            f'no new model within {timeout_s:.0f} s after {done} episodes (the policy still '
            f'runs version {client.model_version}): is a finetuner (awopt finetune) exporting '
            "to the policy's model file?"))
    waits_s.append(round(time.monotonic() - t, 1))
    out(f'policy runs model version {info["model_version"]} (waited {waits_s[-1]:.0f} s)')
    return int(info['model_version'])


def stack_overrides(run_dir, *, seed=None, real_time_factor=None, lockstep=False,
                    model_path=None, extra=None, policy='actor'):
    """Return the ``{node: {param: value}}`` overrides a run through the stack starts with.

    The logger writes under ``run_dir``; ``seed`` sets the simulator's base seed;
    ``real_time_factor`` != 1 or ``lockstep`` put the simulator on ``/clock`` and every node
    on simulated time (``lockstep`` also sets sim_robot ``lockstep``); ``model_path`` is the
    policy's actor (``policy`` 'residual': the residual controller's residual model);
    ``extra`` ({node: {param: value}}) goes on top.
    """
    overrides = {'logger': {'output_dir': str(run_dir)}}
    sim = overrides.setdefault('sim_robot', {})
    if seed is not None:
        sim['seed'] = int(seed)
    if real_time_factor is not None:
        sim['real_time_factor'] = float(real_time_factor)
    if lockstep:
        sim['lockstep'] = True
    if lockstep or (real_time_factor is not None and real_time_factor != 1.0):
        sim['publish_clock'] = True
        for name in ('sim_robot', 'camera_pipeline', 'policy', 'scripted_policy',
                     'residual_controller', 'success_detector', 'arm_interface',
                     'episode_manager', 'logger', 'robot_state'):
            overrides.setdefault(name, {})['use_sim_time'] = True
    if model_path is not None:
        node = 'residual_controller' if policy == 'residual' else 'policy'
        overrides.setdefault(node, {})['model_path'] = str(resolve(model_path))
    for node, params in (extra or {}).items():
        overrides.setdefault(node, {}).update(params)
    return overrides


def run_episodes(episodes=10, *, config='config/awopt_ros_kuka_grasp.yaml', policy='actor',
                 run_dir='runs/demo', model_path=None, seed=None, real_time_factor=None,
                 report_path=None, episode_timeout_s=120.0, startup_timeout_s=90.0,
                 extra_overrides=None, warmup_episodes=0, new_model_every=0,
                 model_wait_timeout_s=3600.0, lockstep=False, out=print):
    """Run ``episodes`` episodes through the stack; return the report (dict).

    Args:
        episodes: number of episodes (>= 1).
        config: params YAML for every node.
        policy: 'actor' (ONNX model, ``model_path`` or the config's) or 'scripted'.
        run_dir: output folder: ``logs/`` per node, ``bags/``, ``datasets/`` (Minari).
        seed: simulator base seed (the k-th reset, warm-ups included, uses seed + k); None
            keeps the config's.
        real_time_factor: > 1 runs the simulator faster than real time on ``/clock`` (every node
            then uses simulated time); None or 1.0 runs in real time on the wall clock.
        lockstep: hold the simulator after each frame until the arm's command arrives
            (sim_robot ``lockstep``, on ``/clock``; every node then uses simulated time): the
            arm moves as in the in-process rollout whatever the load on the CPUs, and
            episodes run as fast as the policy answers. ``real_time_factor`` is then unused.
        report_path: where to write the JSON report (None: not written).
        episode_timeout_s: wall-clock limit for one episode before the run is abandoned.
        extra_overrides: {node: {param: value}} on top of the ones this function sets.
        warmup_episodes: episodes run first and left out of the report (first-call costs in
            every process: lazy imports, allocator and transport warm-up); for benchmarks.
        new_model_every: with ``policy`` 'actor', after every this many episodes wait until
            the policy node has hot-swapped a newer model (``/policy/model_info``
            ``model_version`` above the one the round started with) before the next
            episode: rounds of on-policy episodes beside a finetuner (``awopt finetune``)
            that trains slower than the robot collects; 0 (default) never waits. The report
            gets ``model_waits_s`` and each episode result its ``model_version``.
        model_wait_timeout_s: how long one such wait may last before the run stops with an
            error (no finetuner exporting to the policy's model file?).
        out: where progress lines go (``print`` by default).

    Raises:
        ValueError: ``episodes`` < 1, or ``new_model_every`` < 0 or without ``policy``
            'actor'.
        StackError: a node died or the stack did not come up; the message names the node.
    """
    if episodes < 1:
        raise ValueError(f'episodes must be >= 1, got {episodes}')
    if new_model_every < 0 or (new_model_every and policy != 'actor'):
        raise ValueError(f"new_model_every must be >= 0 and needs policy 'actor' (got "
                         f'{new_model_every}, policy {policy!r})')
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = stack_overrides(run_dir, seed=seed, real_time_factor=real_time_factor,
                                lockstep=lockstep, model_path=model_path,
                                extra=extra_overrides, policy=policy)

    env = ros_environment()
    os.environ.update({k: env[k] for k in ('ROS_AUTOMATIC_DISCOVERY_RANGE',
                                           'FASTDDS_DEFAULT_PROFILES_FILE', 'RMW_IMPLEMENTATION',
                                           'AMENT_PREFIX_PATH')})
    stack = Stack(config=config, policy=policy, log_dir=run_dir / 'logs', overrides=overrides,
                  env=env)
    # This bringup's camera (realsense-ros: /camera/camera): its camera_info counts the frames
    # published, its image topic is what the bags record. ValueError before anything starts.
    camera_ns = effective_params(config, 'camera_pipeline', overrides.get('camera_pipeline')
                                 ).get('camera_ns', DEFAULT_CAMERA_NS)
    image_topic, _ = camera_topics(camera_ns)
    context = Context()
    rclpy.init(context=context)
    client = EpisodeClient(camera_ns=camera_ns, context=context)
    t0 = time.monotonic()
    ends = []
    waits_s = []
    round_version = None
    error = None
    try:
        stack.start()     # DomainBusyError: another stack on this domain; nothing started
    except BaseException:
        client.destroy_node()
        rclpy.try_shutdown(context=context)
        raise
    # Every wait below returns as soon as a node process exits (``alive``), and the error
    # then names that node: a dead node never passes for a slow episode.
    alive = lambda: not stack.dead()  # noqa: E731
    try:
        out(f'bringing up {len(stack.nodes)} nodes (logs in {run_dir / "logs"}) ...')
        if not client.wait_ready(startup_timeout_s, alive=alive):
            raise StackError(_dead_nodes_message(stack, 'while the stack came up') or (
                f'the stack did not come up within {startup_timeout_s:.0f} s: /episode/start '
                'never appeared, or the logger never reported camera frames'))
        for i in range(warmup_episodes + episodes):
            warmup = i < warmup_episodes
            if new_model_every and not warmup and len(ends) % new_model_every == 0:
                round_version = _next_round_model(client, round_version, len(ends),
                                                  model_wait_timeout_s, startup_timeout_s,
                                                  stack, waits_s, out)
            client.recording = not warmup
            version_at_start = client.model_version
            try:
                k = client.start_episode(timeout_s=startup_timeout_s, alive=alive)
            except RuntimeError as exc:     # no answer (or a refusal) from /episode/start
                raise StackError(_dead_nodes_message(stack, 'while an episode started')
                                 or f'episode {i + 1} could not start: {exc}') from None
            event = client.wait_end(k, episode_timeout_s, alive=alive)
            client.recording = False
            if stack.dead():
                raise StackError(_dead_nodes_message(stack, f'during episode {k}'))
            if event is None:
                raise StackError(f'episode {k} did not end within {episode_timeout_s:.0f} s '
                                 '(every node still runs)')
            if event['event'] == 'start_failed':
                raise StackError(f'episode {k} could not start: {event.get("detail")}')
            if warmup:
                out(f'warm-up episode {k}: {event["outcome"]} (not counted)')
                continue
            if new_model_every:
                event = dict(event, model_version=version_at_start)
            ends.append(event)
            start = next((e for e in client.events
                          if e.get('episode') == k and e.get('event') == 'start'), {})
            out(f'episode {k:3d} seed {start.get("seed")}: {event["outcome"]:<9} '
                f'after {event["steps"]:2d} steps ({event.get("duration_s", 0.0):.1f} s) '
                f'[{sum(e["success"] for e in ends)}/{len(ends)} successes]')
            if stack.dead():
                raise StackError(_dead_nodes_message(stack, f'after episode {k}'))
        if ends:
            last = ends[-1]['episode']
            client.spin_until(lambda: last in client.saved, 30.0, alive)
            if stack.dead():
                raise StackError(_dead_nodes_message(stack, f'before episode {last} was saved'))
    except StackError as exc:
        error = str(exc)
    finally:
        try:
            client.spin_until(lambda: False, 1.2)  # last diagnostics
        finally:
            codes = stack.stop()
        client.destroy_node()
        rclpy.try_shutdown(context=context)

    report = summarize_episodes(ends)
    report.update(stack_agreement(ends))     # outcome vs the simulator's ground truth
    report.update(latency_summary(client.latencies_ms))
    sim_counters = client.counters.get('sim_robot', {})
    camera_rate_hz = float(sim_counters.get('camera_rate_hz', 10.0))
    saved = [client.saved[e['episode']] for e in ends if e['episode'] in client.saved]
    report.update({
        'latency_clock': ('simulated' if overrides['sim_robot'].get('publish_clock')
                          else 'wall'),
        'policy': policy,
        'model_path': str(resolve(model_path)) if model_path else None,
        'camera_frame_period_ms': 1000.0 / camera_rate_hz,
        'frames_published': int(sim_counters.get('frames_published', 0)),
        'frames_logged': sum(int(s.get('frames_logged', 0)) for s in saved),
        'bags': [s.get('bag') for s in saved],
        'dataset': {'root': saved[-1].get('dataset_root'), 'id': saved[-1].get('dataset_id')}
        if saved else None,
        'episode_results': ends,
        'node_exit_codes': codes,
        'model_waits_s': waits_s,
        'wall_s': round(time.monotonic() - t0, 2),
        'error': error,
    })
    counted = [e['episode'] for e in ends]   # frames, seeds and warnings of counted episodes
    report.update(frame_accounting(
        client.camera_stamps_ns,
        {s['episode']: bag_frame_stamps_ns(s['bag'], image_topic)
         for s in saved if s.get('bag')},
        episode_windows(client.events, counted), unrecorded=unrecorded_episodes(saved)))
    report['seeds'] = episode_seeds(client.events, counted)
    report['warnings'] = run_warnings(report)
    if report_path is not None:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=2))
    return report


def wrench_to_command(episodes=3, *, run_dir='runs/bench/insertion', seed=None,
                      model_path='models/insertion_residual.onnx', config=None, out=print):
    """Measure the insertion stack's latency from a wrench message to the arm command.

    Runs ``episodes`` insertion episodes (after one warm-up) in real time on the wall clock
    (no lockstep) with the residual controller, which acts on the wrench messages and stamps
    each action with its wrench's stamp, so the arm interface's ``/arm/frame_to_command_ms``
    is the wrench -> arm command latency. Residual ``model`` with ``model_path`` when that
    file exists, else ``off`` (the P-controller: the same path without the ONNX run).

    Returns:
        dict: ``wrench_to_command_ms_p50``, ``wrench_to_command_ms_p99`` (ms, None without
        samples), ``wrench_to_command_samples``, ``wrench_to_command_residual`` ('model' or
        'off'), ``wrench_to_command_successes`` ('k/n') and ``wrench_to_command_error`` (the
        run's error text, or None).
    """
    from awopt_ros.launcher import INSERTION_CONFIG
    has_model = model_path is not None and resolve(model_path).is_file()
    residual = 'model' if has_model else 'off'
    run_dir = Path(run_dir)
    try:
        report = run_episodes(episodes, config=config or INSERTION_CONFIG, policy='residual',
                              run_dir=run_dir, model_path=model_path if has_model else None,
                              seed=seed, report_path=run_dir / 'report.json',
                              warmup_episodes=1, out=out,
                              extra_overrides={'residual_controller': {'residual': residual}})
    except StackError as exc:
        report = {'frame_to_command_ms_p50': None, 'frame_to_command_ms_p99': None,
                  'latency_samples': 0, 'successes': 0, 'episodes': 0, 'error': str(exc)}
    return {'wrench_to_command_ms_p50': report['frame_to_command_ms_p50'],
            'wrench_to_command_ms_p99': report['frame_to_command_ms_p99'],
            'wrench_to_command_samples': report['latency_samples'],
            'wrench_to_command_residual': residual,
            'wrench_to_command_successes': f"{report['successes']}/{report['episodes']}",
            'wrench_to_command_error': report.get('error')}


def print_summary(report, out=print):
    """Print the report's headline numbers."""
    p50, p99 = report['frame_to_command_ms_p50'], report['frame_to_command_ms_p99']
    lat = f'{p50:.1f} / {p99:.1f} ms' if p50 is not None else 'n/a'
    out(f"success {report['successes']}/{report['episodes']} "
        f"({100 * report['success_rate']:.0f}%), outcomes {report['outcomes']}")
    if agreement_line(report):
        out(agreement_line(report))
    clock = '' if report.get('latency_clock') == 'wall' else ' (simulated-time ms)'
    out(f"frame-to-command latency p50/p99 {lat}{clock} "
        f"(camera period {report['camera_frame_period_ms']:.0f} ms, "
        f"{report['latency_samples']} commands)")
    out(f"camera frames during episodes: published {report['frames_published_in_episodes']}, "
        f"logged {report['frames_logged_in_episodes']}, lost {report['frames_lost']} "
        f"(whole run, resets included: published {report['frames_published']}; in the bags, "
        f"end grace included: {report['frames_logged']}); dataset {report['dataset']}")
    for warning in report.get('warnings', []):
        out('WARNING: ' + warning)
    if report.get('error'):
        out('ERROR: ' + report['error'])
