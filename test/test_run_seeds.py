"""Collecting into a run folder again continues after its last scene seed (core.run_seeds,
awopt collect), and awopt collect runs in lockstep unless told otherwise."""
import json

import numpy as np
import pytest

from awopt_ros import cli
from awopt_ros.core.dataset import EpisodeRecorder
from awopt_ros.core.run_seeds import config_seed, continue_seed, used_seeds


def _dataset_with_seeds(root, seeds, dataset_id='awopt/kuka-grasp-v0'):
    rec = EpisodeRecorder(root, dataset_id)
    rng = np.random.default_rng(0)
    for k, seed in enumerate(seeds, start=1):
        rec.begin(k, seed)
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        rec.add_step(image, np.zeros(6, np.float32), np.zeros(7, np.float32), 0.0, 0, 1.0 * k)
        rec.end(False, False, True, image, np.zeros(6, np.float32))


def test_used_seeds_come_from_every_dataset_and_the_report(tmp_path):
    assert used_seeds(tmp_path / 'none') == []
    _dataset_with_seeds(tmp_path, [3, 1, 2])
    _dataset_with_seeds(tmp_path, [7], dataset_id='awopt/kuka-grasp-actor-v0')
    assert used_seeds(tmp_path) == [1, 2, 3, 7]
    (tmp_path / 'report.json').write_text(json.dumps({'seeds': [9, None]}))
    assert used_seeds(tmp_path) == [1, 2, 3, 7, 9]
    (tmp_path / 'report.json').write_text('{not json')
    with pytest.raises(ValueError, match='report.json'):
        used_seeds(tmp_path)


def test_continue_seed_keeps_new_seeds_and_moves_past_used_ones():
    assert continue_seed([], 0, 5) == (0, None)
    assert continue_seed([1, 2, 3], 3, 5) == (3, None)          # 4..8: all new
    base, note = continue_seed([1, 2, 3, 4, 5], 0, 5)           # 1..5 again
    assert base == 5 and 'continuing with seeds 6..10' in note and '1..5' in note
    assert continue_seed([10, 20], 15, 10)[0] == 20             # 16..25 would repeat 20


def test_config_seed_reads_the_set_override_or_the_params_file(tmp_path):
    params = tmp_path / 'p.yaml'
    params.write_text('sim_robot:\n  ros__parameters:\n    seed: 1000\n')
    assert config_seed(params) == 1000
    assert config_seed(params, {'sim_robot': {'seed': 7}}) == 7
    params.write_text('logger:\n  ros__parameters: {}\n')
    assert config_seed(params) == 0


def _fake_run(calls):
    def run_episodes(episodes, **kw):
        calls.append(dict(kw, episodes=episodes))
        return {'error': None}
    return run_episodes


@pytest.fixture
def fake_runner(monkeypatch):
    from awopt_ros.ros import runner
    calls = []
    monkeypatch.setattr(runner, 'run_episodes', _fake_run(calls))
    monkeypatch.setattr(runner, 'print_summary', lambda report, out=print: None)
    return calls


def test_collect_defaults_to_lockstep(fake_runner, tmp_path):
    assert cli.main(['collect', '--episodes', '2', '--run-dir', str(tmp_path / 'a')]) == 0
    assert cli.main(['collect', '--episodes', '2', '--run-dir', str(tmp_path / 'b'),
                     '--no-lockstep']) == 0
    assert cli.main(['collect', '--episodes', '2', '--run-dir', str(tmp_path / 'c'),
                     '--real-time']) == 0
    assert [c['lockstep'] for c in fake_runner] == [True, False, False]
    assert fake_runner[0]['report_path'] == str(tmp_path / 'a' / 'report.json')


def test_collect_into_a_used_run_dir_continues_after_its_last_seed(fake_runner, tmp_path,
                                                                    capsys):
    _dataset_with_seeds(tmp_path, [1, 2, 3])
    assert cli.main(['collect', '--episodes', '4', '--seed', '0', '--run-dir',
                     str(tmp_path), '--set', 'sim_robot:seed=0']) == 0
    assert fake_runner[-1]['seed'] == 3                       # next episodes: seeds 4..7
    assert 'sim_robot' not in fake_runner[-1]['extra_overrides']
    assert 'continuing with seeds 4..7' in capsys.readouterr().out
    assert cli.main(['collect', '--episodes', '2', '--seed', '100', '--run-dir',
                     str(tmp_path)]) == 0
    assert fake_runner[-1]['seed'] == 100                     # 101, 102: new scenes
    assert cli.main(['collect', '--episodes', '2', '--run-dir', str(tmp_path)]) == 0
    assert fake_runner[-1]['seed'] == 1000                    # the config's: 1001, 1002 new


def test_demo_writes_its_report_into_its_run_dir(fake_runner, tmp_path):
    assert cli.main(['demo', '--episodes', '1', '--run-dir', str(tmp_path / 'x')]) == 0
    assert fake_runner[-1]['report_path'] == str(tmp_path / 'x' / 'report.json')
    assert cli.main(['demo', '--episodes', '1', '--run-dir', str(tmp_path / 'x'),
                     '--report', str(tmp_path / 'r.json')]) == 0
    assert fake_runner[-1]['report_path'] == str(tmp_path / 'r.json')
