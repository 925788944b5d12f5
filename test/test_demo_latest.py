"""``awopt demo`` without --run-dir points ``runs/demo/latest`` at its fresh run folder."""
import os

from awopt_ros import cli


def test_latest_points_at_the_newest_run(tmp_path):
    first, second = tmp_path / 'demo' / '20261207-010000', tmp_path / 'demo' / '20261207-020000'
    cli._point_latest(first)
    assert first.is_dir() and os.readlink(tmp_path / 'demo' / 'latest') == first.name
    cli._point_latest(second)
    assert os.readlink(tmp_path / 'demo' / 'latest') == second.name
    assert (tmp_path / 'demo' / 'latest').resolve() == second.resolve()
    assert first.is_dir()   # the older run is untouched


def test_a_real_latest_folder_is_left_alone(tmp_path, capsys):
    (tmp_path / 'demo' / 'latest').mkdir(parents=True)
    (tmp_path / 'demo' / 'latest' / 'mine.txt').write_text('user data')
    cli._point_latest(tmp_path / 'demo' / '20261207-010000')
    assert (tmp_path / 'demo' / 'latest' / 'mine.txt').read_text() == 'user data'
    assert 'not a symlink' in capsys.readouterr().err
