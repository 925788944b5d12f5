"""The paper's comparison (awopt_ros.learning.compare): pure helpers and the smoke run."""
import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault('MUJOCO_GL', 'egl')

from awopt_ros.learning.compare import (CompareConfig, aggregate, claim_verdicts,  # noqa: E402
                                        collapsed, compare_means, load_episodes,
                                        named_config, run_compare, save_episodes)


# -- pure helpers ---------------------------------------------------------------------------------

def test_aggregate_mean_and_sample_std():
    a = aggregate([0.2, 0.4, 0.6])
    assert a['mean'] == pytest.approx(0.4) and a['std'] == pytest.approx(0.2)
    assert a['n'] == 3 and a['values'] == [0.2, 0.4, 0.6]
    one = aggregate([0.3])
    assert one['mean'] == 0.3 and one['std'] == 0.0
    empty = aggregate([])
    assert empty['n'] == 0 and math.isnan(empty['mean']) and math.isnan(empty['std'])


def test_compare_means_and_collapse():
    assert compare_means(0.5, 0.4) == 'greater'
    assert compare_means(0.3, 0.4) == 'less'
    assert compare_means(0.45, 0.4) == 'tie'
    assert collapsed(0.44, 0.0) is True
    assert collapsed(0.44, 0.30) is False          # fell 14 points but not to half
    assert collapsed(0.44, 0.40) is False
    assert collapsed(0.05, 0.0) is None            # nothing to collapse from


def _agg(x):
    return aggregate([x, x, x])


def _online(start, final, auc):
    return {'start': _agg(start), 'final': _agg(final), 'auc': _agg(auc)}


def _summary(a, b, c, d):
    return {'a': {p: _agg(v) for p, v in a.items()}, 'b': {p: _agg(v) for p, v in b.items()},
            'c': {p: _online(*v) for p, v in c.items()},
            'd': {p: _online(*v) for p, v in d.items()}}


def test_verdicts_follow_the_numbers():
    paper = _summary(
        a={'qtopt': 0.0, 'awac': 0.44, 'awopt': 0.53},
        b={'qtopt': 0.61, 'awac': 0.0, 'awopt': 0.58},
        c={'qtopt': (0.0, 0.0, 0.0), 'awac': (0.44, 0.0, 0.1), 'awopt': (0.53, 0.8, 0.7)},
        d={'awopt': (0.53, 0.8, 0.7), 'awopt_no_pf': (0.53, 0.0, 0.1),
           'awopt_no_elrs': (0.53, 0.3, 0.3)})
    verdicts = claim_verdicts(paper)
    assert len(verdicts) == 7
    assert [v['verdict'] for v in verdicts] == ['reproduced'] * 7, verdicts
    assert '44.0%' in verdicts[1]['ours'] and all(v['paper'] for v in verdicts)

    opposite = _summary(
        a={'qtopt': 0.5, 'awac': 0.2, 'awopt': 0.0},
        b={'qtopt': 0.5, 'awac': 0.4, 'awopt': 0.0},
        c={'qtopt': (0.5, 0.9, 0.8), 'awac': (0.2, 0.5, 0.4), 'awopt': (0.0, 0.0, 0.0)},
        d={'awopt': (0.0, 0.0, 0.0), 'awopt_no_pf': (0.3, 0.5, 0.4)})
    got = {v['claim']: v['verdict'] for v in claim_verdicts(opposite)}
    assert set(got.values()) <= {'not reproduced', 'inconclusive'}
    assert got['QT-Opt learns nothing from successful episodes only'] == 'not reproduced'
    assert got['AWAC collapses when failures are added'] == 'not reproduced'
    assert got['Every ablation ends below full AW-Opt'] == 'not reproduced'

    nothing = _summary(a={'qtopt': 0.0, 'awac': 0.0, 'awopt': 0.0},
                       b={'qtopt': 0.0, 'awac': 0.0, 'awopt': 0.0}, c={}, d={})
    got = claim_verdicts(nothing)
    assert got[0]['verdict'] == 'inconclusive' and got[1]['verdict'] == 'inconclusive'
    assert got[2]['verdict'] == 'not reproduced'
    assert all(v['verdict'] == 'n/a' for v in got[3:])


def test_config_validation_names_the_field():
    cases = [(dict(seeds=0), 'seeds'), (dict(presets=('sac',)), 'presets'),
             (dict(presets=('qtopt', 'awac')), 'awopt'),
             (dict(eval_seed_start=0), 'eval_seed_start'),
             (dict(rollout={'max_steps': 0}), 'rollout'),
             (dict(rollout={'image_size': 32}), 'image_size'),
             (dict(learner={'seed': 3}), 'learner'),
             (dict(learner={'batch_size': 0}), 'learner'),
             (dict(scripted_slip_probability=1.5), 'scripted_slip_probability')]
    for kw, word in cases:
        with pytest.raises(ValueError, match=word):
            named_config('smoke', **kw)
    with pytest.raises(ValueError, match='unknown comparison config'):
        named_config('huge')
    with pytest.raises(ValueError, match='unknown CompareConfig fields'):
        named_config('smoke', steps=3)
    full = named_config('full')
    assert full.seeds >= 3 and full.eval_episodes >= 50
    assert CompareConfig(**full.to_dict()) == full


def test_episodes_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    eps = []
    for i, t in enumerate((3, 5)):
        eps.append({'observations': {'image': rng.integers(0, 255, (t + 1, 8, 8, 3), np.uint8),
                                     'proprio': rng.random((t + 1, 6)).astype(np.float32)},
                    'actions': rng.random((t, 7)).astype(np.float32),
                    'rewards': np.r_[np.zeros(t - 1), float(i)],
                    'terminations': np.r_[np.zeros(t - 1, bool), True],
                    'truncations': np.zeros(t, bool), 'seed': 10 + i, 'success': bool(i)})
    save_episodes(tmp_path / 'e.npz', eps)
    back = load_episodes(tmp_path / 'e.npz')
    assert [ep['steps'] for ep in back] == [3, 5] and [ep['seed'] for ep in back] == [10, 11]
    for a, b in zip(eps, back):
        np.testing.assert_array_equal(a['observations']['image'], b['observations']['image'])
        np.testing.assert_array_equal(a['actions'], b['actions'])
        assert a['success'] == b['success']
    assert not list(tmp_path.glob('.*tmp*'))


def test_cli_parses_compare():
    from awopt_ros.cli import build_parser, main
    args = build_parser().parse_args(['compare', '--config', 'smoke', '--seeds', '2'])
    assert args.config == 'smoke' and args.seeds == 2 and args.processes == 2
    for bad in (['--seeds', '0'], ['--processes', '0']):   # argparse's usage error, exit 2
        with pytest.raises(SystemExit) as exited:
            main(['compare', '--config', 'smoke'] + bad)
        assert exited.value.code == 2


# -- smoke run ------------------------------------------------------------------------------------

def test_smoke_run_writes_report_and_resumes(tmp_path):
    config = named_config('smoke')
    work, docs = tmp_path / 'work', tmp_path / 'docs'
    lines = []
    out = run_compare(config, work, docs, processes=1, progress=False, log=lines.append,
                      command='awopt compare --config smoke')
    n_cells = (2 * len(config.presets) + len(config.presets) + len(config.ablations)) \
        * config.seeds
    assert out['cells_run'] == n_cells and out['cells_skipped'] == 0
    assert out['gradient_steps'] > 0
    cells = sorted((work / 'cells').rglob('seed*.json'))
    assert len(cells) == n_cells
    md = (docs / 'comparison.md').read_text()
    for heading in ('## (a)', '## (b)', '## (c)', '## (d)', '## Paper claim vs ours',
                    'awopt compare --config smoke', 'awopt_no_pf'):
        assert heading in md
    for png in ('comparison_online.png', 'comparison_ablations.png'):
        assert (docs / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert len(out['verdicts']) == 7
    cell = json.loads((work / 'cells' / 'online' / 'awopt' / 'seed0.json').read_text())
    assert [p['episodes'] for p in cell['curve']] == [0, 1, 2]
    assert cell['start_success_rate'] == json.loads(
        (work / 'cells' / 'pos' / 'awopt' / 'seed0.json').read_text())['success_rate']
    assert any('(c) awopt' in line for line in lines)

    # Second invocation: everything cached, nothing trained or rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    again = run_compare(config, work, docs, processes=1, progress=False, log=lines.append)
    assert again['cells_run'] == 0 and again['cells_skipped'] == n_cells
    assert again['gradient_steps'] == 0
    assert {p: p.stat().st_mtime_ns for p in cells} == stamps

    # Interrupted online cell (after round 1 of 2) and a finished offline training whose
    # evaluation was lost: only the missing round trains, the offline cell only evaluates.
    online = work / 'online' / 'ablation_awopt_no_pf_seed1'
    progress = json.loads((online / 'progress.json').read_text())
    before = progress['rounds'][1]['train_stats']
    progress['rounds'] = progress['rounds'][:1]
    (online / 'progress.json').write_text(json.dumps(progress))
    (work / 'cells' / 'ablation' / 'awopt_no_pf' / 'seed1.json').unlink()
    (work / 'cells' / 'all' / 'awac' / 'seed0.json').unlink()
    third = run_compare(config, work, docs, processes=1, progress=False, log=lines.append)
    assert third['cells_run'] == 2
    assert third['gradient_steps'] == config.online_steps_per_round
    after = json.loads((online / 'progress.json').read_text())['rounds'][1]['train_stats']
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == pytest.approx(before[key], rel=1e-5, abs=1e-6), key

    with pytest.raises(ValueError, match='different config'):
        run_compare(named_config('smoke', offline_steps=3), work, docs, processes=1,
                    progress=False, log=lines.append)
