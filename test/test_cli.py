"""The ``awopt`` command line: help, version, and one-line errors for bad input to the learning
commands (finetune, dagger, evaluate): exit 2, the option named, no traceback, nothing
overwritten. Training itself is covered in test_train_cli.py."""
import argparse
import re

import pytest

from awopt_ros import __version__, cli
from conftest import ROOT


def run(argv):
    """Return ``cli.main(argv)``'s exit code, also where argparse exits (SystemExit)."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def one_line_error(err, prog, option):
    """Assert that ``err`` ends with one argparse-style error line naming ``option``."""
    assert 'Traceback' not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f'{prog}: error: argument {option}: '), err
    return last


def subcommands(parser=None):
    parser = parser or cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action


# -- help and version -------------------------------------------------------------------------

def test_help_lists_every_command_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv('COLUMNS', '80')
    assert run(['--help']) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    names = list(subcommands().choices)
    assert {'demo', 'collect', 'train', 'finetune', 'dagger', 'evaluate', 'bringup', 'bench',
            'compare'} <= set(names)
    for name in names:
        index = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        assert len(lines[index].split()) > 1, f'{name} has no help line'
        following = lines[index + 1] if index + 1 < len(lines) else ''
        assert following.split()[:1] in ([], *[[n] for n in names]), \
            f'help of {name} runs over one line: {following!r}'


def test_every_option_of_every_command_has_help_and_shows_its_default():
    sub = subcommands()
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, parser in sub.choices.items():
        assert helps.get(name), f'{name} has no one-line help'
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f'awopt {name} {"/".join(action.option_strings) or action.dest}'
            assert action.help and action.help.strip(), f'{where} has no help'
            shown = formatter._get_help_string(action)
            if action.nargs != 0 and not action.required:     # flags are off by default
                assert re.search(r'\bdefault\b', shown, re.IGNORECASE), \
                    f'{where} does not show its default'
        assert 'default' in parser.format_help()


def test_version_is_the_package_version(capsys):
    assert run(['--version']) == 0
    assert capsys.readouterr().out.strip() == f'awopt {__version__}'
    setup = (ROOT / 'setup.py').read_text()
    assert re.search(r"version='([^']+)'", setup).group(1) == __version__
    package = (ROOT / 'package.xml').read_text()
    assert f'<version>{__version__}</version>' in package


# -- awopt finetune ---------------------------------------------------------------------------

@pytest.mark.parametrize('option, value', [('--export-every', '0'), ('--max-steps', '-1'),
                                           ('--rounds', '0'), ('--capacity', '0'),
                                           ('--episodes-per-round', '-1'),
                                           ('--poll-s', '-0.5')])
def test_finetune_rejects_bad_counts(option, value, capsys):
    assert run(['finetune', '--in-process', option, value]) == 2
    one_line_error(capsys.readouterr().err, 'awopt finetune', option)


def test_finetune_names_a_missing_checkpoint_and_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / 'none.pt'
    assert run(['finetune', '--in-process', '--init-checkpoint', missing]) == 2
    line = one_line_error(capsys.readouterr().err, 'awopt finetune', '--init-checkpoint')
    assert str(missing) in line
    assert run(['finetune', '--dataset-id', 'awopt/x-v0']) == 2
    one_line_error(capsys.readouterr().err, 'awopt finetune', '--dataset-root')
    assert run(['finetune', '--dataset-root', tmp_path, '--dataset-id', 'not an id']) == 2
    one_line_error(capsys.readouterr().err, 'awopt finetune', '--dataset-id')
    assert run(['finetune', '--in-process', '--fresh-weights']) == 2
    one_line_error(capsys.readouterr().err, 'awopt finetune', '--fresh-weights')
    assert not (tmp_path / 'runs').exists()


def test_finetune_lists_the_offline_datasets_that_exist(tmp_path, monkeypatch, capsys):
    from test_train_cli import DATASET_ID, TINY_NET, write_dataset
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / 'offline', episodes=2)
    assert run(['finetune', '--in-process', '--offline-dataset-root', tmp_path / 'offline',
                '--offline-dataset-id', 'awopt/kuka-grasp-v0', '--image-size', 16,
                *TINY_NET]) == 2
    line = one_line_error(capsys.readouterr().err, 'awopt finetune', '--offline-dataset-id')
    assert f'datasets under {tmp_path / "offline"}: {DATASET_ID}' in line
    assert 'download' not in line


def test_finetune_replaces_no_shipped_model_without_force(tmp_path, monkeypatch, capsys):
    """Its default output is a fresh run folder; hot swap replaces an existing --out, but a
    shipped file (models/) only with --force."""
    from awopt_ros.core import paths
    monkeypatch.setattr(paths, 'share_dir', lambda: tmp_path)
    (tmp_path / 'models').mkdir()
    model = tmp_path / 'models' / 'grasp_awopt.onnx'
    model.write_bytes(b'shipped')
    monkeypatch.chdir(tmp_path)
    assert run(['finetune', '--in-process', '--out', 'models/grasp_awopt.onnx']) == 2
    line = one_line_error(capsys.readouterr().err, 'awopt finetune', '--out')
    assert 'models/grasp_awopt.onnx would be overwritten (a shipped model file)' in line
    assert model.read_bytes() == b'shipped'
    parser = cli.build_parser()
    args = parser.parse_args(['finetune', '--in-process'])
    assert args.out is None and '--force' in parser.format_help() + \
        subcommands(parser).choices['finetune'].format_help()


# -- awopt dagger -----------------------------------------------------------------------------

def test_dagger_errors_name_the_option(tmp_path, monkeypatch, capsys):
    from test_train_cli import DATASET_ID, write_dataset
    monkeypatch.chdir(tmp_path)
    root = write_dataset(tmp_path / 'run', episodes=2)
    base = ['dagger', '--dataset-root', root, '--work-dir', tmp_path / 'work']
    assert run([*base, '--dataset-id', 'awopt/kuka-grasp-v0']) == 2
    line = one_line_error(capsys.readouterr().err, 'awopt dagger', '--dataset-id')
    assert f'datasets under {root}: {DATASET_ID}' in line and 'download' not in line
    assert run([*base, '--dataset-id', DATASET_ID, '--init', tmp_path / 'none.onnx']) == 2
    assert 'ONNX actor not found' in one_line_error(capsys.readouterr().err, 'awopt dagger',
                                                    '--init')
    assert run([*base, '--dataset-id', DATASET_ID, '--episodes-per-iteration', '0']) == 2
    one_line_error(capsys.readouterr().err, 'awopt dagger', '--episodes-per-iteration')
    assert run([*base, '--dataset-id', DATASET_ID, '--betas', '1.5']) == 2
    one_line_error(capsys.readouterr().err, 'awopt dagger', '--betas')


def test_dagger_writes_into_its_work_dir_and_overwrites_nothing(tmp_path, monkeypatch,
                                                                capsys):
    from test_train_cli import DATASET_ID, write_dataset
    monkeypatch.chdir(tmp_path)
    root = write_dataset(tmp_path / 'run', episodes=2)
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'grasp_dagger_summary.json').write_text('{"mine": 1}')
    assert run(['dagger', '--dataset-root', root, '--dataset-id', DATASET_ID,
                '--work-dir', work]) == 2
    line = one_line_error(capsys.readouterr().err, 'awopt dagger', '--out')
    assert f'{work / "grasp_dagger_summary.json"} would be overwritten' in line
    assert (work / 'grasp_dagger_summary.json').read_text() == '{"mine": 1}'
    assert not (tmp_path / 'models').exists()


# -- awopt evaluate ---------------------------------------------------------------------------

def test_evaluate_errors_name_the_option(tmp_path, capsys):
    assert run(['evaluate', tmp_path / 'none.onnx', '--no-progress']) == 2
    one_line_error(capsys.readouterr().err, 'awopt evaluate', 'models')
    for option, value in (('--episodes', '0'), ('--episodes', '-1'), ('--processes', '0')):
        assert run(['evaluate', 'models/grasp_bc.onnx', option, value]) == 2
        one_line_error(capsys.readouterr().err, 'awopt evaluate', option)
    out = tmp_path / 'eval.json'
    out.write_text('{"earlier": true}')
    assert run(['evaluate', 'models/grasp_bc.onnx', '--episodes', '1', '--out', out]) == 2
    one_line_error(capsys.readouterr().err, 'awopt evaluate', '--out')
    assert out.read_text() == '{"earlier": true}'
    assert run(['evaluate', 'models/grasp_bc.onnx', '--config', tmp_path / 'none.yaml']) == 2
    one_line_error(capsys.readouterr().err, 'awopt evaluate', '--config')
