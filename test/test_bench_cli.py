"""awopt bench's latency part: the figures merge into the results file with the host load."""
import argparse
import json

from awopt_ros import cli
from awopt_ros.ros import runner


def _report(p99):
    return {'frame_to_command_ms_p50': 5.0, 'frame_to_command_ms_p99': p99,
            'camera_frame_period_ms': 1000.0 / 30.0, 'frames_published': 100,
            'frames_logged': 90, 'frames_published_in_episodes': 90,
            'frames_logged_in_episodes': 90, 'frames_lost': 0, 'warnings': [], 'error': None,
            'latency_samples': 40, 'successes': 2, 'episodes': 3}


def _bench(tmp_path, monkeypatch, p99, insertion=False):
    calls = []

    def run_episodes(*a, **k):
        calls.append(k)
        return _report(p99)
    monkeypatch.setattr(runner, 'run_episodes', run_episodes)
    monkeypatch.setattr(runner, 'print_summary', lambda report: None)
    out = tmp_path / 'results.json'
    out.write_text(json.dumps({'actor_ms_p50': 0.2}))
    args = argparse.Namespace(episodes=1, config='config/awopt_ros_kuka_grasp.yaml',
                              run_dir=str(tmp_path / 'run'), model=None, seed=None,
                              overrides=[], out=str(out), learning=False,
                              insertion=insertion)
    code = cli.cmd_bench(args)
    if insertion:
        return code, json.loads(out.read_text()), calls
    return code, json.loads(out.read_text())


def test_latency_figures_merge_with_the_host_load_and_keep_other_keys(tmp_path, monkeypatch):
    code, results = _bench(tmp_path, monkeypatch, 10.0)
    assert code == 0
    assert results['actor_ms_p50'] == 0.2
    assert results['frame_to_command_p99_under_third_of_period'] is True
    assert abs(results['camera_frame_period_ms'] - 33.333) < 0.01
    host = results['latency_host']
    assert set(host) == {'load_avg_1min_before', 'load_avg_1min_after', 'cpu_count'}
    assert host['cpu_count'] >= 1 and host['load_avg_1min_before'] >= 0.0


def test_p99_above_a_third_of_the_frame_period_fails_the_bench(tmp_path, monkeypatch):
    code, results = _bench(tmp_path, monkeypatch, 11.2)
    assert code == 1 and results['frame_to_command_p99_under_third_of_period'] is False


def test_insertion_latency_runs_the_residual_stack_in_real_time(tmp_path, monkeypatch):
    code, results, calls = _bench(tmp_path, monkeypatch, 10.0, insertion=True)
    assert code == 0
    grasp, insertion = calls
    assert insertion['policy'] == 'residual' and not insertion.get('lockstep')
    assert insertion['config'] == 'config/awopt_ros_sawyer_insertion.yaml'
    assert insertion['warmup_episodes'] == 1
    mode = insertion['extra_overrides']['residual_controller']['residual']
    assert mode in ('model', 'off') and results['wrench_to_command_residual'] == mode
    assert results['wrench_to_command_ms_p99'] == 10.0
    assert results['wrench_to_command_samples'] == 40
    assert 'wrench_to_command_error' not in results
