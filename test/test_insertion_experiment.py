"""The insertion experiment (learning.insertion) end to end at toy size: P-controller, our
residual (project learner) and SB3 SAC on the same scenes -> results JSON, docs, plot, ONNX."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import stable_baselines3  # noqa: F401  (in requirements.txt: a broken install must fail)

from awopt_ros.learning import insertion as ins

REPO = Path(__file__).resolve().parents[1]

TINY = dict(seeds=(0,), episodes_per_seed=2, env_steps=120, offline_episodes=2,
            pretrain_steps=4, critic_warmup_steps=2, batch_size=16, hidden=16, layers=1,
            sb3_learning_starts=30)


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('insertion')
    cfg = ins.ExperimentConfig(**TINY)
    results = ins.run_compare(cfg, work_dir=root / 'work', docs_dir=root / 'docs',
                              progress=False, command='awopt insertion-compare (test)')
    return cfg, root, results


def test_results_json_has_the_issue_keys(tiny_run):
    cfg, root, results = tiny_run
    saved = json.loads((root / 'docs' / 'insertion_results.json').read_text())
    assert saved == json.loads(json.dumps(results))
    for key in ('goal_noise_m', 'episodes_per_seed', 'seeds', 'p_controller_success_rate',
                'residual_success_rate', 'sb3_sac_residual_success_rate', 'env_steps'):
        assert key in saved, key
    assert saved['goal_noise_m'] == 0.001
    assert saved['episodes_per_seed'] == 2 and saved['seeds'] == 1
    for m in ins.METHODS:
        assert 0.0 <= saved[f'{m}_success_rate'] <= 1.0
        assert saved['success_rate_std'][m] == 0.0        # one seed
    # the same env-step budget for both learners; the P-controller does not train
    assert saved['env_steps']['p_controller'] == 0
    assert saved['env_steps']['residual'] >= cfg.env_steps
    assert saved['env_steps']['sb3_sac_residual'] == cfg.env_steps
    assert saved['commands'] == ['awopt insertion-compare (test)']
    assert (root / 'docs' / 'insertion.md').read_text().count('| our residual') == 1
    assert (root / 'docs' / 'insertion_curves.png').stat().st_size > 1000


def test_every_method_ran_the_same_scenes(tiny_run):
    cfg, root, _ = tiny_run
    scenes = ins.eval_scene_seeds(0, cfg.episodes_per_seed)
    for m in ins.METHODS:
        unit = json.loads((root / 'work' / f'{m}_seed0.json').read_text())
        assert unit['eval_scene_seeds'] == [scenes[0], scenes[-1]]
        assert len(unit['successes']) == cfg.episodes_per_seed


def test_exported_residual_loads_with_its_contract(tiny_run):
    from awopt_ros.core.onnx_policy import OnnxStateActor
    _, root, _ = tiny_run
    path = root / 'work' / 'insertion_residual_seed0.onnx'
    actor = OnnxStateActor(str(path), expected_task='insertion')
    assert actor.contract['task'] == 'insertion'
    assert actor.contract['residual_alpha_m'] == pytest.approx(0.002)
    assert actor.contract['kp'] == [1.0, 1.0, 0.3]
    out = actor.act(np.zeros(15, np.float32))
    assert out.shape == (3,) and np.all(np.abs(out) <= 1.0)
    assert 'insertion' in path.with_suffix('.md').read_text()


def test_resume_reuses_finished_units(tiny_run):
    cfg, root, results = tiny_run
    again = ins.run_compare(cfg, work_dir=root / 'work', docs_dir=root / 'docs2',
                            progress=False, command='awopt insertion-compare (test)')
    for m in ins.METHODS:
        assert again[f'{m}_success_rate'] == results[f'{m}_success_rate']
    other = ins.ExperimentConfig(**dict(TINY, env_steps=130))
    with pytest.raises(ValueError, match='another configuration'):
        ins.run_compare(other, work_dir=root / 'work', docs_dir=root / 'docs3', progress=False)


def test_ship_never_overwrites_without_force(tmp_path):
    src = tmp_path / 'a.onnx'
    src.write_bytes(b'new')
    src.with_suffix('.md').write_text('card')
    dst = tmp_path / 'models' / 'insertion_residual.onnx'
    ins.ship_model(src, dst)
    assert dst.read_bytes() == b'new' and dst.with_suffix('.md').read_text() == 'card'
    dst.write_bytes(b'old')
    with pytest.raises(FileExistsError, match='--force'):
        ins.ship_model(src, dst)
    assert dst.read_bytes() == b'old'
    ins.ship_model(src, dst, force=True)
    assert dst.read_bytes() == b'new'


def test_eval_scenes_differ_between_seeds():
    a, b = ins.eval_scene_seeds(0, 100), ins.eval_scene_seeds(1, 100)
    assert len(set(a)) == 100 and not set(a) & set(b)


def test_cli_train_task_insertion_writes_a_model_and_never_overwrites(tmp_path, capsys):
    from awopt_ros.cli import main
    out = tmp_path / 'res.onnx'
    argv = ['train', '--task', 'insertion', '--seeds', '3', '--episodes', '1', '--env-steps',
            '60', '--offline-episodes', '1', '--pretrain-steps', '2', '--critic-warmup-steps',
            '1', '--batch-size', '8', '--hidden', '8', '--layers', '1', '--out', str(out)]
    assert main(argv) == 0
    assert out.is_file() and out.with_suffix('.md').is_file()
    first = out.read_bytes()
    assert main(argv) == 2                        # exists: refused without --force
    assert 'exists' in capsys.readouterr().err
    assert out.read_bytes() == first
    assert main(argv + ['--force']) == 0


def test_cli_train_grasp_keeps_its_options():
    from awopt_ros.cli import build_parser
    args = build_parser().parse_args(['train', '--dataset-root', 'x', '--dataset-id', 'y'])
    assert args.task == 'grasp' and args.dataset_root == 'x'


def test_scripted_corrector_waits_for_contact_then_pushes_toward_the_bore():
    cfg = ins.ExperimentConfig()
    env = ins.make_env(cfg)
    pushed = 0
    try:
        policy = ins.scripted_policy(env, np.random.default_rng(0), random_prob=0.0)
        for scene in ins.eval_scene_seeds(0, 6):
            obs, _ = env.reset(seed=scene)
            np.testing.assert_array_equal(policy(obs), 0.0)     # no contact at the start
            for _ in range(50):
                a = policy(obs)
                if np.any(a != 0.0):
                    err = env.sim.socket_pose()[:2] - env.sim.tool_pose()[0][:2]
                    big = np.abs(err) > 1e-4
                    assert np.all(np.sign(a[:2])[big] == np.sign(err)[big])
                    assert a[2] == 1.0 and np.linalg.norm(obs[6:9]) >= ins.SCRIPT_CONTACT_N
                    pushed += 1
                obs, _, term, trunc, _ = env.step(a)
                if term or trunc:
                    break
    finally:
        env.close()
    assert pushed > 0       # some of these scenes jam the P-controller (about half do)


def test_rewriting_the_docs_keeps_the_hand_written_notes(tiny_run, tmp_path):
    cfg, _, results = tiny_run
    ins.write_docs(cfg, results, tmp_path)
    md = tmp_path / 'insertion.md'
    md.write_text(md.read_text() + '\nOur notes.\n')
    ins.write_docs(cfg, results, tmp_path)
    text = md.read_text()
    assert text.count(ins.NOTES_MARKER) == 1 and text.endswith('\nOur notes.\n')


# -- configuration checks -------------------------------------------------------------------

@pytest.mark.parametrize('field, value', [
    ('variant', 'foo'), ('sb3_ent_coef', 'abc'), ('sb3_ent_coef', 'auto_x'),
    ('sb3_ent_coef', 'auto_-1'), ('sb3_ent_coef', '-0.1'), ('sb3_ent_coef', 'nan'),
    ('preset', 'nope'), ('goal_noise_m', 0.5), ('goal_noise_m', -0.001), ('lr', -1.0),
    ('lr', 0.0), ('lr', float('nan')), ('init_std', -1.0), ('init_std', 0.0),
    ('updates_per_step', 0), ('awac_lambda', 0.0), ('offline_noise_std', -0.1),
    ('seeds', (0, 0)), ('scripted_share', 1.5),
])
def test_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ins.ExperimentConfig(**{field: value})


def test_config_refuses_a_critic_warmup_longer_than_pretraining():
    with pytest.raises(ValueError, match='critic_warmup_steps'):
        ins.ExperimentConfig(pretrain_steps=10, critic_warmup_steps=11)
    ins.ExperimentConfig(pretrain_steps=10, critic_warmup_steps=10)


@pytest.mark.parametrize('value', ['auto', 'auto_0.1', '0.001', '0', 0.01])
def test_config_accepts_the_ent_coefs_sb3_accepts(value):
    cfg = ins.ExperimentConfig(sb3_ent_coef=value)
    assert cfg.sb3_ent_coef == str(value)       # recorded as a string either way


def test_dense_reward_is_refused_for_our_learner_but_not_for_sac():
    """Our learner's critic targets are success probabilities clamped to [0, 1]: with the
    (negative) dense reward every target would be 0, so nothing would be learned."""
    cfg = ins.ExperimentConfig(**dict(TINY, reward='dense'))
    with pytest.raises(ValueError, match=r"reward 'dense'.*success probabilities in \[0, 1\]"):
        cfg.check_method('residual')
    with pytest.raises(ValueError, match=r"reward 'dense'"):
        ins.train_residual(cfg, 0)
    cfg.check_method('sb3_sac_residual')                # SAC and the env take it
    cfg.check_method('p_controller')
    env = ins.make_env(cfg)
    try:
        assert env.reward_kind == 'dense'
    finally:
        env.close()


def test_compare_refuses_dense_for_our_residual_before_any_work(tmp_path):
    cfg = ins.ExperimentConfig(**dict(TINY, reward='dense'))
    with pytest.raises(ValueError, match=r"reward 'dense'"):
        ins.run_compare(cfg, work_dir=tmp_path / 'work', docs_dir=tmp_path / 'docs',
                        progress=False)
    assert not list((tmp_path / 'work').glob('*_seed*.json'))


def test_cli_train_refuses_dense_and_several_seeds(tmp_path, capsys):
    from awopt_ros.cli import _insertion_train_args, main
    out = tmp_path / 'res.onnx'
    base = ['train', '--task', 'insertion', '--out', str(out), '--episodes', '1',
            '--env-steps', '60', '--offline-episodes', '1', '--pretrain-steps', '2',
            '--critic-warmup-steps', '1', '--batch-size', '8', '--hidden', '8', '--layers', '1']
    assert main(base + ['--reward', 'dense']) == 2
    assert "reward 'dense'" in capsys.readouterr().err
    assert main(base + ['--seeds', '0', '1', '2']) == 2
    err = capsys.readouterr().err
    assert 'one seed' in err and 'insertion-compare' in err
    assert main(base + ['--sb3-ent-coef', 'abc']) == 2
    assert 'sb3_ent_coef' in capsys.readouterr().err
    assert not out.exists()
    assert _insertion_train_args(['train', '--task', 'insertion']).seeds == [0]


# -- docs directory ---------------------------------------------------------------------------

P_ONLY = ['insertion-compare', '--methods', 'p_controller', '--seeds', '0', '--episodes', '1']


def test_compare_docs_default_to_the_work_dir_and_never_overwrite_without_force(
        tmp_path, monkeypatch, capsys):
    from awopt_ros.cli import main
    monkeypatch.chdir(tmp_path)
    work = tmp_path / 'work'
    assert main(P_ONLY + ['--work-dir', str(work)]) == 0
    assert (work / 'docs' / 'insertion_results.json').is_file()
    assert (work / 'docs' / 'insertion.md').is_file()
    assert not (tmp_path / 'docs').exists()          # not the repository's docs/
    capsys.readouterr()
    # a docs dir holding results: refused without --force, before any unit runs
    published = tmp_path / 'published'
    published.mkdir()
    (published / 'insertion_results.json').write_text('{"published": true}\n')
    other = tmp_path / 'other_work'
    assert main(P_ONLY + ['--work-dir', str(other), '--docs-dir', str(published)]) == 2
    assert '--force' in capsys.readouterr().err
    assert (published / 'insertion_results.json').read_text() == '{"published": true}\n'
    assert not list(other.glob('*_seed*.json'))
    # rerunning into the work dir's own docs (they exist now) needs --force too
    assert main(P_ONLY + ['--work-dir', str(work)]) == 2
    assert main(P_ONLY + ['--work-dir', str(work), '--force']) == 0
    assert main(P_ONLY + ['--work-dir', str(other), '--docs-dir', str(published),
                          '--force']) == 0
    assert 'p_controller_success_rate' in (published / 'insertion_results.json').read_text()


def test_the_documented_command_still_parses_onto_the_published_docs():
    from awopt_ros.cli import build_parser
    text = (REPO / 'docs' / 'insertion.md').read_text()
    cmd = re.search(r'```\n(awopt insertion-compare [^\n]*)\n```', text).group(1)
    args = build_parser().parse_args(cmd.split()[1:])
    assert args.docs_dir == 'docs' and args.force and args.ship
    cfg = ins.config_from_args(args)
    assert cfg.seeds == (0, 1, 2) and cfg.reward == 'sparse'


# -- texts true to the scene ------------------------------------------------------------------

def test_model_card_and_docs_give_the_scene_of_the_variant(tiny_run, tmp_path):
    _, _, results = tiny_run
    hard = ins.ExperimentConfig(**dict(TINY, variant='hard'))
    unit = {'seed': 0, 'env_steps': 1, 'success_rate': 0.5}
    card = ins.model_card(hard, unit, 'cmd')
    assert 'clearance 0.1 mm, no chamfer' in card and '0.4 mm' not in card
    ins.write_docs(hard, results, tmp_path)
    md = (tmp_path / 'insertion.md').read_text()
    assert 'clearance 0.1 mm, no chamfer' in md and '0.4 mm' not in md
    default = ins.model_card(ins.ExperimentConfig(**TINY), unit, 'cmd')
    assert 'clearance 0.4 mm, 0.5 mm chamfer' in default
