"""awopt demo through the real node processes (lockstep, 2 episodes): the report lands in
--run-dir, counts camera frames during episodes with none lost, and has no warnings."""
import json
from pathlib import Path

from awopt_ros import cli

REPO = Path(__file__).resolve().parents[1]


def test_demo_report_in_run_dir_counts_frames_during_episodes(tmp_path, capsys):
    default_report = REPO / 'runs' / 'demo' / 'report.json'
    before = default_report.stat().st_mtime_ns if default_report.exists() else None
    run_dir = tmp_path / 'demo'
    code = cli.main(['demo', '--episodes', '2', '--lockstep', '--seed', '5100',
                     '--run-dir', str(run_dir)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((run_dir / 'report.json').read_text())
    after = default_report.stat().st_mtime_ns if default_report.exists() else None
    assert after == before, 'the report went to runs/demo/report.json, not into --run-dir'
    assert report['episodes'] == 2 and report['seeds'] == [5101, 5102]
    steps = sum(e['steps'] for e in report['episode_results'])
    # Each step acts on a frame of its episode; the whole run's count (resets and the frames
    # before the first episode) and the bags' (the logger's end grace) are larger.
    assert report['frames_published_in_episodes'] >= steps > 0
    assert report['frames_logged_in_episodes'] == report['frames_published_in_episodes']
    assert report['frames_lost'] == 0 and report['unreadable_bags'] == []
    assert report['frames_published'] > report['frames_published_in_episodes']
    assert report['frames_logged'] >= report['frames_logged_in_episodes']
    assert report['warnings'] == []       # lockstep: simulated-time latency 0; 2 episodes
    assert 'lost 0' in printed and 'WARNING' not in printed
