"""Tests of ``awopt train`` (learning.train_cli): BC default, learner presets, resume, exports.

A tiny synthetic dataset (16 px images, 6 episodes) written with core.dataset.EpisodeRecorder;
tiny networks (4 channels), one torch thread, a few gradient steps per run.
"""
import json
import math
import os

import numpy as np
import pytest
import torch

from awopt_ros import cli
from awopt_ros.core import spec
from awopt_ros.core.dataset import EpisodeRecorder
from awopt_ros.core.onnx_critic import OnnxCritic
from awopt_ros.core.onnx_policy import OnnxActor, read_contract
from awopt_ros.learning import train_cli

torch.set_num_threads(1)
SIZE = 16
DATASET_ID = 'awopt/tiny-grasp-v0'
#: Options making the learner tiny and single-threaded (shared with test_finetune).
TINY_NET = ['--batch-size', '8', '--channels', '4', '--hidden', '16', '--critic-channels', '4',
            '--critic-hidden', '8', '--threads', '1', '--set', 'actor.num_conv=2',
            '--set', 'critic.num_conv=2', '--set', 'critic.num_strided=2',
            '--set', 'critic.head_conv=1',
            '--set', 'target_cem={"iterations": 2, "samples": 8, "elites": 2}']
TINY = TINY_NET + ['--no-progress', '--eval-every', '2']


def write_dataset(root, episodes=6, seed=0, dataset_id=DATASET_ID):
    """Append ``episodes`` random 16 px episodes (every other one successful) to a dataset."""
    rng = np.random.default_rng(seed)
    rec = EpisodeRecorder(root, dataset_id, image_size=SIZE)
    for k in range(episodes):
        steps = 3 + k % 3
        success = k % 2 == 0
        rec.begin(k, 100 + k)
        for t in range(steps):
            action = rng.uniform(spec.ACTION_LOW, spec.ACTION_HIGH).astype(np.float32)
            action[spec.DISCRETE] = np.round(action[spec.DISCRETE])
            rec.add_step(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                         rng.normal(0.0, 0.3, 6), action, 0.5, 1, 0.1 * t)
        rec.end(success, success, not success,
                rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), rng.normal(0.0, 0.3, 6))
    return root


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """Run directory holding the tiny dataset (shared, read-only)."""
    return write_dataset(tmp_path_factory.mktemp('run'))


def train(dataset, *args):
    return cli.main(['train', '--dataset-root', str(dataset), '--dataset-id', DATASET_ID,
                     *[str(a) for a in args]])


def no_temp_files(directory):
    return [p.name for p in directory.iterdir() if '.tmp-' in p.name] == []


def test_awopt_preset_writes_actor_critic_checkpoint_plot_summary(dataset, tmp_path, capsys):
    out = tmp_path / 'models' / 'grasp_awopt.onnx'
    assert train(dataset, '--preset', 'awopt', '--out', out, '--steps', 4, *TINY) == 0
    d = out.parent
    enc, head = d / 'grasp_awopt_critic_encoder.onnx', d / 'grasp_awopt_critic_head.onnx'
    for p in (out, enc, head, d / 'grasp_awopt_loss.png', d / 'grasp_awopt_summary.json',
              d / 'grasp_awopt_checkpoint.pt'):
        assert p.is_file() and p.stat().st_size > 0, p
    assert no_temp_files(d)

    contract = read_contract(out)
    assert contract['algorithm'] == 'awopt' and contract['dataset'] == DATASET_ID
    assert contract['image_size'] == [SIZE, SIZE]
    actor = OnnxActor(out)
    action = actor.act(np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros(6, np.float32))
    assert np.asarray(action).reshape(-1).shape == (7,)
    critic = OnnxCritic(enc, head)          # checks roles and the shared pair_id
    for c in (critic.encoder_contract, critic.head_contract):
        assert c['algorithm'] == 'awopt' and c['dataset'] == DATASET_ID

    summary = json.loads((d / 'grasp_awopt_summary.json').read_text())
    assert summary['preset'] == 'awopt' and summary['config']['name'] == 'awopt'
    assert summary['data']['episodes'] == 6 and summary['data']['successful'] == 3
    assert summary['start_step'] == 0 and summary['end_step'] == 4
    assert summary['steps_per_s'] > 0
    for key in ('critic_loss', 'actor_loss'):
        assert math.isfinite(summary['final_losses'][key])
    assert summary['history']['step'] == [2, 4]
    assert 'wrote' in capsys.readouterr().out


def test_critic_only_and_actor_only_presets(dataset, tmp_path):
    out = tmp_path / 'q.onnx'
    prefix = tmp_path / 'critics' / 'qt'
    assert train(dataset, '--preset', 'qtopt', '--out', out, '--critic-out-prefix', prefix,
                 '--steps', 2, *TINY) == 0
    assert not out.exists()                  # QT-Opt has no actor
    critic = OnnxCritic(f'{prefix}_encoder.onnx', f'{prefix}_head.onnx')
    assert critic.head_contract['algorithm'] == 'qtopt'

    out = tmp_path / 'b.onnx'
    assert train(dataset, '--preset', 'bc-learner', '--out', out, '--steps', 2, *TINY) == 0
    assert read_contract(out)['algorithm'] == 'bc'
    assert not (tmp_path / 'b_critic_encoder.onnx').exists()


def test_default_bc_path_unchanged(dataset, tmp_path):
    out = tmp_path / 'grasp_bc.onnx'
    assert train(dataset, '--out', out, '--steps', 4, '--batch-size', 8, '--lr', '1e-3',
                 '--seed', 0, '--channels', 4, '--hidden', 16, '--eval-every', 2,
                 '--threads', 1, '--no-progress') == 0
    summary = json.loads((tmp_path / 'grasp_bc_summary.json').read_text())
    assert summary['data']['used_episodes'] == 3       # successful episodes only
    assert summary['config']['lr'] == 1e-3 and summary['config']['steps'] == 4
    assert summary['history']['step'] == [2, 4]
    assert math.isfinite(summary['final_train_loss'])
    assert read_contract(out)['algorithm'] == 'bc'
    assert (tmp_path / 'grasp_bc_loss.png').stat().st_size > 0
    assert not (tmp_path / 'grasp_bc_checkpoint.pt').exists()
    assert no_temp_files(tmp_path)


def test_resume_continues_from_checkpoint_step(dataset, tmp_path, capsys):
    out, ckpt = tmp_path / 'a.onnx', tmp_path / 'state' / 'a.pt'
    assert train(dataset, '--preset', 'awac', '--out', out, '--checkpoint', ckpt,
                 '--steps', 3, *TINY) == 0
    state = train_cli.load_checkpoint(ckpt)
    assert state['step'] == 3 and state[train_cli.META_KEY]['preset'] == 'awac'
    first = read_contract(out)

    assert train(dataset, '--preset', 'awac', '--out', out, '--checkpoint', ckpt,
                 '--steps', 5, '--resume', *TINY) == 0
    summary = json.loads((tmp_path / 'a_summary.json').read_text())
    assert (summary['start_step'], summary['end_step'], summary['steps_trained']) == (3, 5, 2)
    assert summary['history']['step'] == [2, 3, 5]      # the first run's points are kept
    assert train_cli.load_checkpoint(ckpt)['step'] == 5
    assert read_contract(out) == first
    assert 'resuming awac' in capsys.readouterr().out

    assert train(dataset, '--preset', 'awopt', '--out', out, '--checkpoint', ckpt,
                 '--steps', 6, '--resume', *TINY) == 2
    assert "is preset 'awac', not 'awopt'" in capsys.readouterr().err
    assert train(dataset, '--preset', 'awac', '--out', out, '--checkpoint',
                 tmp_path / 'missing.pt', '--steps', 6, '--resume', *TINY) == 2
    err = capsys.readouterr().err
    assert 'argument --checkpoint: checkpoint not found' in err and len(err.splitlines()) == 1
    assert train(dataset, '--preset', 'awac', '--steps', 6, '--resume', *TINY) == 2
    assert 'argument --resume: needs --out' in capsys.readouterr().err


def test_clear_errors(dataset, tmp_path, capsys):
    assert train(dataset, '--preset', 'sac', '--out', tmp_path / 'x.onnx') == 2
    err = capsys.readouterr().err
    assert err.startswith('awopt train: error: argument --preset:')
    assert "unknown preset 'sac'" in err and 'awopt_no_pf' in err and 'bc-learner' in err
    assert train(dataset, '--preset', 'awopt', '--image-size', 64, '--out',
                 tmp_path / 'x.onnx', '--steps', 1, *TINY) == 2
    assert 'argument --image-size: dataset images are 16x16' in capsys.readouterr().err
    assert cli.main(['train', '--dataset-root', str(tmp_path), '--dataset-id',
                     'awopt/none-v0', '--preset', 'awopt', '--out', str(tmp_path / 'x.onnx'),
                     *TINY]) == 2
    assert capsys.readouterr().err.startswith('awopt train: error: argument --dataset-id:')
    assert train(dataset, '--preset', 'awopt', '--out', tmp_path / 'x.onnx', '--steps', 1,
                 *TINY, '--set', 'gamma=7') == 2
    assert 'LearnerConfig.gamma' in capsys.readouterr().err
    assert train(dataset, '--preset', 'awopt', '--out', tmp_path / 'x.onnx', '--steps', 1,
                 *TINY, '--set', 'gamma') == 2
    assert 'argument --set: --set needs FIELD=VALUE' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()


def test_helpers():
    assert train_cli.resolve_preset('bc') == ('bc', None)
    assert train_cli.resolve_preset('bc-learner') == ('learner', 'bc')
    assert train_cli.resolve_preset('AWOPT-no-pf') == ('learner', 'awopt_no_pf')
    assert train_cli.parse_overrides(['gamma=0.95', 'critic.num_conv=3', 'name=x y']) == {
        'gamma': 0.95, 'critic': {'num_conv': 3}, 'name': 'x y'}
    with pytest.raises(ValueError, match='FIELD=VALUE'):
        train_cli.parse_overrides(['gamma'])
    h = train_cli.LossHistory(every=2)
    for step, loss in ((1, 1.0), (2, 3.0), (3, float('nan')), (4, float('nan')), (5, 5.0)):
        h.add({'step': float(step), 'critic_loss': loss})
    h.flush()
    d = h.to_dict()
    assert d['step'] == [2, 4, 5] and d['critic_loss'][0] == 2.0
    assert math.isnan(d['critic_loss'][1]) and d['critic_loss'][2] == 5.0
    assert h.last() == {'critic_loss': 5.0}


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / 'm.onnx'
    path.write_text('old')

    def fail(tmp):
        tmp.write_text('half')
        raise ValueError('parity')
    with pytest.raises(ValueError, match='parity'):
        train_cli.atomic_write(path, fail)
    assert path.read_text() == 'old' and os.listdir(tmp_path) == ['m.onnx']
    train_cli.atomic_write(path, lambda tmp: tmp.write_text('new'))
    assert path.read_text() == 'new' and os.listdir(tmp_path) == ['m.onnx']
    assert not train_cli.temp_path(path).name.endswith('.onnx')


# -- outputs: nothing shipped is overwritten (issue 21, defect 6) ------------------------------

def _files(folder):
    """Return {relative path: bytes} of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A stand-in package share dir with the shipped models' names, made the cwd: the README's
    commands run as a user would in the source tree, without touching the real models/."""
    from awopt_ros.core import paths
    from conftest import ROOT
    share = tmp_path / 'share'
    (share / 'models').mkdir(parents=True)
    for name in sorted(p.name for p in (ROOT / 'models').iterdir() if p.is_file()):
        (share / 'models' / name).write_bytes(b'shipped ' + name.encode())
    monkeypatch.setattr(paths, 'share_dir', lambda: share)
    monkeypatch.chdir(share)
    real = _files(ROOT / 'models')
    yield share
    assert _files(ROOT / 'models') == real        # the repository's models are untouched


def test_readme_train_commands_leave_shipped_models_alone(dataset, shipped, capsys):
    before = _files(shipped / 'models')
    # README: awopt train --dataset-root runs/collect --dataset-id ID --out models/grasp_bc.onnx
    bc = ['--dataset-root', str(dataset), '--dataset-id', DATASET_ID, '--steps', '2',
          '--batch-size', '8', '--channels', '4', '--hidden', '16', '--threads', '1',
          '--eval-every', '1', '--no-progress']
    assert cli.main(['train', *bc, '--out', 'models/grasp_bc.onnx']) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [err.strip()] and 'Traceback' not in err
    assert err.startswith('awopt train: error: argument --out: models/grasp_bc.onnx would be '
                          'overwritten (a shipped model file); pass --force')
    # README: awopt train --preset awopt --dataset-root R --dataset-id ID --steps 10000
    assert train(dataset, '--preset', 'awopt', '--steps', 2, *TINY) == 0
    assert _files(shipped / 'models') == before
    runs = list((shipped / 'runs' / 'train').iterdir())
    assert len(runs) == 1 and runs[0].name.startswith('awopt-')
    assert {p.name for p in runs[0].iterdir()} == {
        'grasp_awopt.onnx', 'grasp_awopt_critic_encoder.onnx', 'grasp_awopt_critic_head.onnx',
        'grasp_awopt_checkpoint.pt', 'grasp_awopt_loss.png', 'grasp_awopt_summary.json'}
    assert cli.main(['train', *bc]) == 0                    # bc default: a run folder too
    assert _files(shipped / 'models') == before
    assert sorted(p.name.split('-')[0] for p in (shipped / 'runs' / 'train').iterdir()) == [
        'awopt', 'bc']

    # --out into models/ for the preset: refused, naming the first file that exists
    assert train(dataset, '--preset', 'awopt', '--out', 'models/grasp_awopt.onnx',
                 '--steps', 2, *TINY) == 2
    assert 'argument --out: models/grasp_awopt.onnx would be overwritten' in \
        capsys.readouterr().err
    assert train(dataset, '--preset', 'awopt', '--out', 'models/new.onnx', '--checkpoint',
                 'models/grasp_awopt_checkpoint.pt', '--steps', 2, *TINY) == 2
    assert 'argument --checkpoint: models/grasp_awopt_checkpoint.pt' in capsys.readouterr().err
    assert _files(shipped / 'models') == before

    # --force writes over the shipped model
    assert cli.main(['train', *bc, '--out', 'models/grasp_bc.onnx', '--force']) == 0
    assert read_contract(shipped / 'models' / 'grasp_bc.onnx')['algorithm'] == 'bc'
    assert json.loads((shipped / 'models' / 'grasp_bc_summary.json').read_text())['model'] \
        == 'models/grasp_bc.onnx'


def test_existing_outputs_need_force_and_resume_keeps_only_its_own(dataset, tmp_path, capsys,
                                                                   shipped):
    out = tmp_path / 'run' / 'grasp_bc.onnx'
    args = ['--out', out, '--steps', 2, '--batch-size', 8, '--channels', 4, '--hidden', 16,
            '--threads', 1, '--eval-every', 1, '--no-progress']
    assert train(dataset, *args) == 0
    written = _files(out.parent)
    assert train(dataset, *args) == 2                  # a second run: refused before training
    assert f'argument --out: {out} would be overwritten (it exists)' in capsys.readouterr().err
    assert _files(out.parent) == written
    for name in ('grasp_bc.onnx', 'grasp_bc_loss.png'):
        (out.parent / name).unlink()                   # the summary alone still stops it
    assert train(dataset, *args) == 2
    assert 'grasp_bc_summary.json would be overwritten' in capsys.readouterr().err
    assert train(dataset, *args, '--force') == 0

    # --resume replaces its own run's files, but never a shipped checkpoint without --force
    ck = tmp_path / 'ck' / 'a.onnx'
    assert train(dataset, '--preset', 'awac', '--out', ck, '--steps', 2, *TINY) == 0
    assert train(dataset, '--preset', 'awac', '--out', ck, '--steps', 3, *TINY) == 2
    assert train(dataset, '--preset', 'awac', '--out', ck, '--steps', 3, '--resume',
                 *TINY) == 0
    shipped_ckpt = shipped / 'models' / 'a_checkpoint.pt'
    shipped_ckpt.write_bytes((ck.parent / 'a_checkpoint.pt').read_bytes())
    assert train(dataset, '--preset', 'awac', '--out', 'models/a.onnx', '--steps', 4,
                 '--resume', *TINY) == 2
    assert 'argument --out: models/a_checkpoint.pt would be overwritten (a shipped model ' \
        'file)' in capsys.readouterr().err


def test_default_out_is_a_fresh_run_folder():
    assert train_cli.default_out('bc', None, stamp='20260101-000000') == \
        'runs/train/bc-20260101-000000/grasp_bc.onnx'
    assert train_cli.default_out('learner', 'awopt', stamp='x') == \
        'runs/train/awopt-x/grasp_awopt.onnx'


@pytest.mark.parametrize('option, value', [('--steps', '0'), ('--steps', '-1'),
                                           ('--max-episodes', '0'), ('--batch-size', '-3'),
                                           ('--eval-every', '0'), ('--threads', 'two')])
def test_bad_counts_are_one_line_errors_naming_the_option(dataset, option, value, capsys):
    with pytest.raises(SystemExit) as exc:
        train(dataset, option, value)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f'awopt train: error: argument {option}: ')
    assert 'Traceback' not in err


def test_wrong_dataset_lists_the_ids_under_the_root(dataset, tmp_path, capsys):
    assert train(dataset, '--dataset-id', 'awopt/kuka-grasp-v0') == 2    # later one wins
    err = capsys.readouterr().err
    assert err.splitlines() == [err.strip()]
    assert err.startswith("awopt train: error: argument --dataset-id: dataset "
                          "'awopt/kuka-grasp-v0' not found under ")
    assert f'datasets under {dataset}: {DATASET_ID}' in err and 'download' not in err
    missing = tmp_path / 'nowhere'
    assert cli.main(['train', '--dataset-root', str(missing), '--dataset-id', DATASET_ID]) == 2
    assert f'argument --dataset-root: {missing} is not a folder' in capsys.readouterr().err
    assert not missing.exists()                          # nothing created on the way
    assert cli.main(['train', '--dataset-root', str(tmp_path), '--dataset-id', DATASET_ID]) \
        == 2
    assert 'there is no dataset under' in capsys.readouterr().err
