"""awopt evaluate: paired (scene-by-scene) comparison of actors in process."""
import json

import pytest

from awopt_ros.cli import main
from awopt_ros.learning.evaluate import format_table, mcnemar_exact, summary


def test_mcnemar_exact_counts_discordant_scenes_and_gives_the_sign_test_p():
    a = [1] * 22 + [0] * 44 + [1] * 50 + [0] * 84
    b = [0] * 22 + [1] * 44 + [1] * 50 + [0] * 84
    gained, lost, p = mcnemar_exact(a, b)
    assert (gained, lost) == (44, 22)
    assert p == pytest.approx(0.00920, abs=5e-5)        # exact binomial, two-sided
    assert mcnemar_exact(b, a)[2] == pytest.approx(p)  # symmetric
    assert mcnemar_exact([1, 0], [1, 0]) == (0, 0, 1.0)
    assert mcnemar_exact([1, 0, 0], [0, 1, 0]) == (1, 1, 1.0)
    assert mcnemar_exact([0] * 5, [1] * 5)[2] == pytest.approx(2 / 32)
    with pytest.raises(ValueError, match='length'):
        mcnemar_exact([1, 0], [1])


def test_summary_compares_every_model_with_the_first():
    result = summary([('a.onnx', [True, False, False, True]),
                      ('b.onnx', [True, True, True, False])], range(10, 14))
    assert result['seeds'] == [10, 11, 12, 13]
    first, second = result['models']
    assert first['successes'] == 2 and 'vs_first' not in first
    assert first['se'] == pytest.approx(0.25)
    assert second['outcomes'] == [1, 1, 1, 0] and second['success_rate'] == 0.75
    assert second['vs_first'] == {'gained': 2, 'lost': 1, 'p': 1.0}
    table = format_table(result)
    assert 'b.onnx' in table and '3/4' in table and '(reference)' in table


def test_evaluate_cli_runs_the_shipped_actor_twice_alike(tmp_path, capsys):
    out = tmp_path / 'eval.json'
    assert main(['evaluate', 'models/grasp_bc.onnx', 'models/grasp_bc.onnx', '--episodes', '2',
                 '--first-seed', '6001', '--processes', '1', '--no-progress',
                 '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    one, two = result['models']
    assert result['seeds'] == [6001, 6002] and one['episodes'] == 2
    assert one['outcomes'] == two['outcomes']              # noise-free: the same episodes
    assert two['vs_first'] == {'gained': 0, 'lost': 0, 'p': 1.0}
    assert 'wrote' in capsys.readouterr().out


def test_evaluate_cli_rejects_a_missing_model_and_no_episodes(capsys):
    assert main(['evaluate', 'runs/none.onnx', '--no-progress']) == 2
    err = capsys.readouterr().err
    assert err.startswith('awopt evaluate: error: argument models: ') and 'not found' in err
    with pytest.raises(SystemExit) as exc:
        main(['evaluate', 'models/grasp_bc.onnx', '--episodes', '0'])
    assert exc.value.code == 2
    assert 'argument --episodes: must be >= 1' in capsys.readouterr().err
