"""awopt plot-episode: one recorded episode of a run as a PNG."""
import numpy as np
from PIL import Image

from awopt_ros import cli
from awopt_ros.core.dataset import EpisodeRecorder, StateEpisodeRecorder


def _grasp_run(run):
    rng = np.random.default_rng(0)
    rec = EpisodeRecorder(run, 'awopt/kuka-grasp-v0')
    for k, success in ((3, False), (4, True)):
        rec.begin(k, 100 + k)
        for t in range(6):
            action = np.zeros(7, np.float32)
            action[0] = 0.01 * t
            rec.add_step(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                         np.full(6, 0.1 * t, np.float32), action, float(t > 3), 0, 0.1 * t)
        rec.end(success, success, not success, np.zeros((64, 64, 3), np.uint8),
                np.zeros(6, np.float32), final_success_probability=1.0, final_stamp_s=0.6)


def test_plots_the_named_episode_and_refuses_to_overwrite(tmp_path, capsys):
    run = tmp_path / 'run'
    _grasp_run(run)
    assert cli.main(['plot-episode', str(run), '--episode', '3']) == 0
    out = run / 'plots' / 'episode_0003.png'
    width, height = Image.open(out).size
    assert width > 600 and height > 600
    assert 'wrote' in capsys.readouterr().out
    assert cli.main(['plot-episode', str(run), '--episode', '3']) == 2      # exists
    assert 'would be overwritten' in capsys.readouterr().err
    assert cli.main(['plot-episode', str(run), '--episode', '3', '--force']) == 0
    last = tmp_path / 'last.png'
    assert cli.main(['plot-episode', str(run), '--out', str(last)]) == 0    # the last episode
    assert last.is_file()


def test_plots_a_state_episode(tmp_path):
    run = tmp_path / 'ins'
    rec = StateEpisodeRecorder(run, 'awopt/sawyer-insertion-v0')
    rec.begin(7)
    for t in range(4):
        rec.add_step(np.full(15, 0.001 * t, np.float32), np.zeros(3, np.float32), 0.0, 5,
                     0.1 * t)
    rec.end(True, True, False, np.zeros(15, np.float32))
    assert cli.main(['plot-episode', str(run)]) == 0
    assert (run / 'plots' / 'episode_0007.png').is_file()


def test_bad_input_is_one_line(tmp_path, capsys):
    run = tmp_path / 'run'
    _grasp_run(run)
    for argv, what in (([str(tmp_path / 'none')], 'no run directory'),
                       ([str(run), '--episode', '9'], 'no episode 9'),
                       ([str(run), '--dataset-id', 'awopt/x-v0'], "no dataset 'awopt/x-v0'")):
        assert cli.main(['plot-episode', *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert what in err and len(err.splitlines()) == 1
