"""The ``awopt`` command: demo, collect, train, finetune, bringup, bench, compare.

- ``awopt demo --episodes N --report FILE``: bring up every node as its own process, run N
  episodes with the shipped model, print each outcome and a summary, write a JSON report;
  ``--new-model-every N`` waits after every N episodes for the policy to hot-swap a newer
  model (rounds beside ``awopt finetune``).
- ``awopt collect --episodes N --out DIR``: the same loop with the noisy scripted policy,
  faster than real time; the logger writes bags and the Minari dataset under DIR.
- ``awopt train ...``: behaviour cloning (default) or a learner preset (``--preset awopt``,
  ``awac``, ``qtopt``, ablations) on a collected dataset, exported to ONNX.
- ``awopt finetune ...``: learner process beside a running stack: trains on the episodes the
  logger appends and atomically re-exports the models the policy node loads.
- ``awopt bringup [CONFIG]``: start the nodes and keep them running (Ctrl-C stops them); the
  plain-venv twin of ``ros2 launch awopt_ros awopt_grasp.launch.py``.
- ``awopt bench``: frame-to-command latency while the logger records, into
  ``bench/results.json``.
- ``awopt compare --config smoke|full``: the AW-Opt paper's comparison (QT-Opt, AWAC, AW-Opt
  offline and online, AW-Opt's ablations) with in-process rollouts, resumable; tables and
  learning curves into ``docs/`` (:mod:`awopt_ros.learning.compare`).
- ``awopt train --task insertion``, ``awopt insertion-compare``: the residual of the
  insertion P-controller learned in process, and its comparison with the P-controller alone
  and SB3 SAC into ``docs/insertion.md`` (:mod:`awopt_ros.learning.insertion`).
- ``awopt collect-success-frames --episodes N --shapes box,cylinder,sphere --out F.npz``:
  labelled frames (ground truth, hard negatives) for the camera success classifier, or with
  ``--from-run RUN --label operator --labels L.json`` the frames of recorded (real) episodes
  (:mod:`awopt_ros.learning.success_data`).
- ``awopt train-classifier``, ``awopt evaluate-classifier``: the camera success classifier
  (:mod:`awopt_ros.learning.success_train`).
- ``awopt plot-episode RUN --episode N``: one recorded episode as a PNG
  (:mod:`awopt_ros.learning.plot_episode`).
- ``awopt bag-repair PATH...``: rebuild bags that a crash cut short (no footer, no
  metadata.yaml) from what can be read, marked as cut (:mod:`awopt_ros.bag_cli`).
- ``awopt view RUN --episode N [--spawn]``: one recorded episode (camera and policy images,
  actions, proprioception, success, rewards, labels) as a Rerun ``.rrd`` to open with
  ``rerun FILE`` (:mod:`awopt_ros.view_cli`).
- ``awopt replay BAG_OR_RUN...``: recorded episodes back on their topics with their QoS,
  timing (``--rate``) and ``/clock``; ``--nodes`` runs stack nodes against them
  (:mod:`awopt_ros.replay_cli`).
- ``awopt reevaluate MODEL RUN_DIR|BAG...``: a model on recorded episodes as the live policy
  node runs it, compared with the logged actions (:mod:`awopt_ros.reevaluate_cli`).
- ``awopt label|discard|note RUN --episode N ...``: the operator's label, discard and notes of
  a recorded episode (:mod:`awopt_ros.operator_cli`).
- ``awopt teleop``: keyboard teleoperation (in a terminal) that overrides the policy while
  keys are held: operator interventions, recorded in the dataset (:mod:`awopt_ros.teleop_cli`).
"""
import argparse
import json
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

from awopt_ros.cli_args import UsageError, count, positive_int, usage_error
from awopt_ros.core.param_schema import ParameterError
from awopt_ros.launcher import (DEFAULT_CONFIG, INSERTION_CONFIG, POLICY_NODES, Stack,
                                StackError, ros_environment)

DEFAULT_MODEL = 'models/grasp_awopt.onnx'
#: ``awopt demo --task insertion``: the residual model of the Sawyer insertion bringup
#: (``launcher.INSERTION_CONFIG``).
INSERTION_MODEL = 'models/insertion_residual.onnx'


def _params_file(text):
    """argparse type: a readable params YAML mapping; returns ``text`` (ArgumentTypeError
    naming the file otherwise)."""
    from awopt_ros.core.paths import resolve
    from awopt_ros.launcher import _load_params_file
    path = resolve(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f'params file not found: {path}')
    try:
        _load_params_file(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f'cannot read params file {path}: {exc.strerror or exc}') from None
    except Exception as exc:  # noqa: BLE001 - YAML syntax or not a node mapping
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise argparse.ArgumentTypeError(f'params file {path} is not valid: {first}') from None
    return text


def _model_file(text):
    """argparse type: an existing ONNX file (relative paths as the runner resolves them);
    returns ``text``."""
    from awopt_ros.core.paths import resolve
    if not resolve(text).is_file():
        raise argparse.ArgumentTypeError(f'model file not found: {resolve(text)}')
    return text


def _add_run_args(p, policy='actor', rtf=None, run_dir='runs/demo', lockstep=True):
    p.add_argument('--episodes', type=positive_int, default=10,
                   help='episodes to run, at least 1 (default %(default)s)')
    p.add_argument('--config', type=_params_file, default=DEFAULT_CONFIG,
                   help='params YAML for every node (default %(default)s)')
    p.add_argument('--policy', choices=sorted(POLICY_NODES), default=policy,
                   help='policy node: the learned actor (ONNX), the scripted demonstrator or '
                        '(--task insertion) the residual controller')
    p.add_argument('--model', type=_model_file, default=None,
                   help=f'ONNX actor for --policy actor (default: the config, {DEFAULT_MODEL})')
    p.add_argument('--seed', type=int, default=None, help='simulator base seed')
    p.add_argument('--real-time-factor', type=count(0.01, float), default=rtf,
                   help='> 1 runs the simulation faster than real time on /clock (unused in '
                        'lockstep, which collect uses unless --no-lockstep)')
    if lockstep:
        p.add_argument('--lockstep', action='store_true',
                       help='hold the simulator after each frame until the arm has its '
                            'command (simulated time on /clock): the arm then moves as in the '
                            'in-process rollout whatever the CPU load, and episodes run as '
                            'fast as the policy answers (--real-time-factor is then unused)')
    p.add_argument('--run-dir', default=run_dir,
                   help='bags, dataset and logs go here' + (
                       f' (default {run_dir})' if run_dir else ' (default runs/demo/<time>)'))
    _add_set_arg(p)


def _add_set_arg(parser):
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='NODE:PARAM=VALUE',
                        help='parameter override on top of the params file, repeatable, e.g. '
                             '--set policy:mode=cem --set policy:critic_encoder_path=m.onnx '
                             '(VALUE is read as YAML: 2, 0.5, true, [1, 2], text)')


def parse_overrides(items):
    """Return ``{node: {param: value}}`` from ``['node:param=value', ...]``.

    Values are parsed as YAML scalars or lists (``2`` -> int, ``0.5`` -> float, ``true`` ->
    bool, ``[1, 2]`` -> list, anything else -> str).

    Raises:
        UsageError: (option ``--set``) an item not of the form ``node:param=value``, or a
            VALUE that is not valid YAML.
    """
    import yaml
    out = {}
    for item in items:
        key, sep, raw = str(item).partition('=')
        node, colon, param = key.partition(':')
        if not (sep and colon and node.strip() and param.strip()):
            raise UsageError('--set', f'expects NODE:PARAM=VALUE, got {item!r}')
        try:
            value = yaml.safe_load(raw) if raw else ''
        except yaml.YAMLError as exc:
            raise UsageError('--set', f'{item!r}: VALUE is not valid YAML '
                                      f'({getattr(exc, "problem", None) or exc})') from None
        out.setdefault(node.strip(), {})[param.strip()] = value
    return out


def _run(args, report_path):
    from awopt_ros.ros.runner import print_summary, run_episodes
    report = run_episodes(args.episodes, config=args.config, policy=args.policy,
                          run_dir=args.run_dir, model_path=args.model, seed=args.seed,
                          real_time_factor=args.real_time_factor, report_path=report_path,
                          lockstep=args.lockstep,
                          extra_overrides=parse_overrides(args.overrides),
                          new_model_every=getattr(args, 'new_model_every', 0),
                          model_wait_timeout_s=getattr(args, 'model_wait_timeout_s', 3600.0))
    print_summary(report)
    if report_path:
        print(f'report written to {report_path}')
    return 1 if report.get('error') else 0


def _run_insertion(args, report_path):
    """``awopt demo --task insertion``: run the residual controller's stack once per
    ``--residual`` setting (``both``: the P-controller alone, then with the residual model),
    on the same scene seeds, each into ``<run-dir>/<p_controller|residual>/``; print and
    write the comparison (:func:`awopt_ros.core.report.insertion_comparison`)."""
    from awopt_ros.core.report import INSERTION_RUNS, insertion_comparison
    from awopt_ros.ros.runner import print_summary, run_episodes
    names = [n for n, mode in INSERTION_RUNS.items()
             if args.residual in ('both', mode)]
    # Lockstep unless a real-time factor is asked for: the P-controller and the residual must
    # meet the same scenes whatever the load on the machine.
    lockstep = args.lockstep or args.real_time_factor is None
    reports = {}
    for name in names:
        overrides = parse_overrides(args.overrides)
        overrides.setdefault('residual_controller', {})['residual'] = INSERTION_RUNS[name]
        run_dir = Path(args.run_dir) / name
        print(f'--- {name} (residual_controller residual: {INSERTION_RUNS[name]}) ---')
        try:
            report = run_episodes(args.episodes, config=args.config, policy='residual',
                                  run_dir=run_dir, model_path=args.model, seed=args.seed,
                                  real_time_factor=args.real_time_factor,
                                  report_path=run_dir / 'report.json', lockstep=lockstep,
                                  extra_overrides=overrides)
        except StackError as exc:      # e.g. no model file: the other run still counts
            report = {'episodes': 0, 'successes': 0, 'success_rate': 0.0, 'outcomes': {},
                      'seeds': [], 'error': str(exc)}
        else:
            print_summary(report)
        reports[name] = report
    summary = insertion_comparison(reports)
    for name in names:
        print(f"{name}: {summary[f'{name}_successes']}/{summary[f'{name}_episodes']} "
              'successes' + (f' (error: {summary["errors"][name]})'
                             if name in summary['errors'] else ''))
    if summary['same_seeds'] is not None:
        print(f"same scene seeds: {summary['same_seeds']}")
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(json.dumps(summary, indent=2))
    print(f'report written to {report_path}')
    return 1 if summary['errors'] else 0


def _point_latest(run_dir):
    """Create ``run_dir`` and point the symlink ``latest`` beside it at it (replaced
    atomically), so that commands can name the newest demo run ``runs/demo/latest``. A real
    file or folder named ``latest`` is left alone (a warning)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    link = run_dir.parent / 'latest'
    if link.exists() and not link.is_symlink():
        print(f'warning: {link} is not a symlink; not pointing it at {run_dir.name}',
              file=sys.stderr)
        return
    tmp = run_dir.parent / f'.latest.{os.getpid()}'
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, link)


def cmd_demo(args):
    """Run the demo (learned policy by default) and write the report."""
    if args.task == 'insertion':
        # The grasp defaults make no sense here: the insertion bringup and its controller.
        if args.config == DEFAULT_CONFIG:
            args.config = INSERTION_CONFIG
        if args.policy != 'residual' and args.policy != 'actor':
            return usage_error('awopt demo', f'argument --policy: --task insertion runs the '
                               f'residual controller, got --policy {args.policy}')
        if args.new_model_every:
            return usage_error('awopt demo', 'argument --new-model-every: not with --task '
                               'insertion')
        if args.run_dir is None:
            args.run_dir = str(Path('runs/demo') / ('insertion-' + time.strftime('%Y%m%d-%H%M%S')))
            _point_latest(args.run_dir)
        return _run_insertion(args, args.report or str(Path(args.run_dir) / 'report.json'))
    if args.policy == 'residual':
        return usage_error('awopt demo', 'argument --policy: residual needs --task insertion')
    if args.new_model_every < 0 or (args.new_model_every and args.policy != 'actor'):
        return usage_error('awopt demo', f'argument --new-model-every: must be >= 0 and needs '
                           f'--policy actor, got {args.new_model_every} with --policy '
                           f'{args.policy}')
    if args.run_dir is None:   # a fresh folder per demo, so bags and dataset are this run's
        args.run_dir = str(Path('runs/demo') / time.strftime('%Y%m%d-%H%M%S'))
        _point_latest(args.run_dir)
    return _run(args, args.report or str(Path(args.run_dir) / 'report.json'))


def cmd_collect(args):
    """Collect episodes with the scripted policy into a Minari dataset (lockstep unless
    ``--no-lockstep``); into a run folder that already holds episodes it continues after the
    last scene seed used (:mod:`awopt_ros.core.run_seeds`), never repeating a scene."""
    from awopt_ros.core.run_seeds import config_seed, continue_seed, used_seeds
    try:
        used = used_seeds(args.run_dir)
    except ValueError as exc:
        print(f'awopt collect: error: argument --run-dir: {exc}', file=sys.stderr)
        return 2
    if used:
        base = args.seed
        if base is None:
            base = config_seed(args.config, parse_overrides(args.overrides))
        args.seed, note = continue_seed(used, base, args.episodes)
        if note:   # --seed now rules: drop a --set sim_robot:seed that would override it
            print(f'{args.run_dir}: {note}')
            args.overrides = [o for o in args.overrides
                              if not o.replace(' ', '').startswith('sim_robot:seed=')]
    return _run(args, str(Path(args.run_dir) / 'report.json'))


def cmd_train(args):
    """Train on a dataset (BC or a learner preset) and export the model(s) to ONNX."""
    from awopt_ros.learning.train_cli import run_train
    return run_train(args) or 0


def cmd_train_classifier(args):
    """Train the camera success classifier on a FrameSet -> ONNX, card, metrics, plots."""
    from awopt_ros.learning.success_train import run_train_classifier
    return run_train_classifier(args)


def cmd_evaluate_classifier(args):
    """Frame and episode metrics of a success classifier on FrameSets / a dataset."""
    from awopt_ros.learning.success_train import run_evaluate_classifier
    return run_evaluate_classifier(args)


def cmd_plot_episode(args):
    """One recorded episode as a PNG: images, actions, proprioception, success, reward."""
    from awopt_ros.learning.plot_episode import run_plot_episode
    return run_plot_episode(args)


def cmd_insertion_compare(args):
    """P-controller vs our residual vs SB3 SAC on the same scenes (resumable); docs/ files."""
    from awopt_ros.learning.insertion import run_compare_cli
    return run_compare_cli(args) or 0


def _insertion_train_args(argv):
    """Return the parsed ``awopt train --task insertion`` options, or None for other argv."""
    if argv[:1] != ['train']:
        return None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--task', default='grasp')
    known, _ = pre.parse_known_args(argv[1:])
    if known.task != 'insertion':
        return None
    from awopt_ros.learning.insertion import add_train_args, run_train_cli
    from awopt_ros.cli_args import HelpFormatter
    parser = argparse.ArgumentParser(prog='awopt train --task insertion',
                                     formatter_class=HelpFormatter,
                                     description='our residual for insertion, in process: '
                                     'offline episodes (scripted corrector, noisy '
                                     'P-controller), then online')
    add_train_args(parser)
    parser.add_argument('--task', choices=('insertion',), default='insertion')
    args = parser.parse_args(argv[1:])
    args.command, args.func = 'train', run_train_cli
    return args


def cmd_finetune(args):
    """Finetune a learner on the episodes a running stack appends; export periodically."""
    from awopt_ros.learning.finetune import run_finetune
    return run_finetune(args) or 0


def cmd_bringup(args):
    """Start every node and keep them running until Ctrl-C or a node exits."""
    try:
        _params_file(args.config)
    except argparse.ArgumentTypeError as exc:
        print(f'awopt bringup: error: argument config: {exc}', file=sys.stderr)
        return 2
    from awopt_ros.launcher import default_policy
    policy = args.policy or default_policy(args.config)
    stack = Stack(config=args.config, policy=policy, log_dir=Path(args.log_dir),
                  env=ros_environment(), overrides=parse_overrides(args.overrides))
    code = 0
    try:    # a Ctrl-C at any point after start() began still stops what it started
        stack.start()
        print(f'started {", ".join(n.name for n in stack.nodes)}; logs in {args.log_dir}; '
              'Ctrl-C stops')
        while not stack.dead():
            time.sleep(0.5)
        for node in stack.dead():
            print(f'node {node.name} exited with {node.process.returncode}:\n{node.log_tail()}')
        code = 1
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return code


def cmd_bench(args):
    """Measure frame-to-command latency with the logger recording; merge into results JSON."""
    from awopt_ros.ros.runner import print_summary, run_episodes
    load_before = os.getloadavg()[0]
    report = run_episodes(args.episodes, config=args.config, policy='actor',
                          run_dir=args.run_dir, model_path=args.model, seed=args.seed,
                          report_path=Path(args.run_dir) / 'report.json', warmup_episodes=1,
                          extra_overrides=parse_overrides(args.overrides))
    print_summary(report)
    # Latency on a shared host depends on what else runs: the 1-minute load average before
    # and after the latency run, and the CPUs, go with the figures.
    latency_host = {'load_avg_1min_before': round(load_before, 2),
                    'load_avg_1min_after': round(os.getloadavg()[0], 2),
                    'cpu_count': os.cpu_count()}
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.update({k: report[k] for k in (
        'frame_to_command_ms_p50', 'frame_to_command_ms_p99', 'camera_frame_period_ms',
        'frames_published', 'frames_logged', 'frames_published_in_episodes',
        'frames_logged_in_episodes', 'frames_lost', 'warnings')}, latency_host=latency_host)
    p99 = report['frame_to_command_ms_p99']
    results['frame_to_command_p99_under_third_of_period'] = (
        p99 is not None and p99 < report['camera_frame_period_ms'] / 3.0)
    results['no_frames_lost'] = (report['frames_lost'] == 0
                                 and report['frames_published_in_episodes'] > 0)
    print(f'frame-to-command p99 {p99} ms vs period/3 = '
          f"{report['camera_frame_period_ms'] / 3.0:.1f} ms")
    targets = ['frame_to_command_p99_under_third_of_period', 'no_frames_lost']
    insertion_error = None
    if args.insertion:
        from awopt_ros.ros.runner import wrench_to_command
        latency = wrench_to_command(3, run_dir=Path(args.run_dir) / 'insertion', seed=args.seed)
        insertion_error = latency.pop('wrench_to_command_error')
        results.update(latency)
        print(f"wrench-to-command p50/p99 {latency['wrench_to_command_ms_p50']} / "
              f"{latency['wrench_to_command_ms_p99']} ms (residual "
              f"{latency['wrench_to_command_residual']})")
    if args.learning:
        from awopt_ros.learning.bench import run_learning_bench
        learning = run_learning_bench(quick=False, progress=True)
        results.update(learning)
        targets += [k for k, v in learning.items() if isinstance(v, bool)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    failed = [k for k in targets if not results[k]]
    print(f'bench results written to {out}; targets missed: {failed or "none"}')
    if insertion_error:
        print(f'insertion latency run failed: {insertion_error}')
    return 1 if report.get('error') or failed or insertion_error else 0


def cmd_compare(args):
    """Run (or resume) the paper's comparison; write docs/comparison.md and the curves."""
    from awopt_ros.learning.compare import run_compare_cli
    return run_compare_cli(args) or 0


def cmd_dagger(args):
    """DAgger on the logged demonstrations: the actor drives, the scripted expert labels."""
    from awopt_ros.learning.dagger import run_dagger_cli
    return run_dagger_cli(args) or 0


def cmd_evaluate(args):
    """Noise-free success of ONNX actors on fixed scenes, compared scene by scene."""
    from awopt_ros.learning.evaluate import run_evaluate_cli
    return run_evaluate_cli(args)


def build_parser():
    """Return the ``awopt`` argument parser."""
    from awopt_ros import __version__
    from awopt_ros.cli_args import HelpFormatter
    parser = argparse.ArgumentParser(
        prog='awopt', formatter_class=HelpFormatter,
        description='Learned grasping (AW-Opt) on a Kuka iiwa and residual-RL peg insertion on '
                    'a Sawyer, with ROS 2. '
                    "`awopt COMMAND -h` shows a command's options and their defaults.")
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND',
                                title='commands')

    p = sub.add_parser('demo', help='run episodes with the shipped model, report them')
    _add_run_args(p, run_dir=None)
    p.add_argument('--task', choices=('grasp', 'insertion'), default='grasp',
                   help='grasp: the Kuka bin-grasping stack; insertion: the Sawyer peg '
                        f'insertion stack ({INSERTION_CONFIG}, the residual controller with '
                        f'{INSERTION_MODEL}; lockstep unless --real-time-factor is given)')
    p.add_argument('--residual', choices=('both', 'off', 'model'), default='both',
                   help='--task insertion: off = the P-controller alone, model = with the '
                        'residual model, both = the two one after the other on the same '
                        'scene seeds, into <run-dir>/p_controller and <run-dir>/residual')
    p.add_argument('--report', default=None,
                   help='JSON report path (default <run-dir>/report.json)')
    p.add_argument('--new-model-every', type=int, default=0, metavar='N',
                   help='after every N episodes wait until the policy node has hot-swapped a '
                        'newer model (from awopt finetune beside the stack) before going on: '
                        'rounds of on-policy episodes when the learner trains slower than '
                        'the robot collects (default 0: never wait; needs --policy actor)')
    p.add_argument('--model-wait-timeout-s', type=float, default=3600.0,
                   help='longest wait for a new model before the run stops with an error '
                        '(default 3600)')
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser('collect', help='collect scripted-policy episodes into a dataset')
    _add_run_args(p, policy='scripted', rtf=2.0, run_dir='runs/collect')
    p.add_argument('--no-lockstep', '--real-time', dest='lockstep', action='store_false',
                   help='collect runs in lockstep by default (exact whatever the CPU load); '
                        'this runs the simulator on its own clock (--real-time-factor) '
                        'instead: on a loaded host the arm then acts on old frames')
    p.set_defaults(func=cmd_collect, lockstep=True)

    p = sub.add_parser('train', help='train BC or a learner preset on a dataset -> ONNX',
                       usage='%(prog)s --dataset-root DIR --dataset-id ID [options]\n'
                             '       %(prog)s --task insertion [options] (in process; '
                             '--task insertion --help lists them)')
    from awopt_ros.learning.train_cli import add_train_args
    add_train_args(p)
    p.add_argument('--task', choices=('grasp', 'insertion'), default='grasp',
                   help='grasp: the options above on a dataset; insertion: the residual of '
                        'the P-controller learned in process (learning.insertion), other '
                        'options')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('train-classifier',
                       help='train the camera success classifier -> ONNX',
                       usage='%(prog)s --task grasp --frames TRAIN.npz [--heldout X.npz] '
                             '[options]')
    from awopt_ros.learning.success_train import (add_evaluate_classifier_args,
                                                  add_train_classifier_args)
    add_train_classifier_args(p)
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser('evaluate-classifier',
                       help='frame and episode metrics of a success classifier',
                       usage='%(prog)s MODEL.onnx [--frames X.npz] [--heldout X.npz] '
                             '[--stack-report REPORT.json] [options]')
    add_evaluate_classifier_args(p)
    p.set_defaults(func=cmd_evaluate_classifier)

    from awopt_ros.learning.plot_episode import add_plot_episode_args
    p = sub.add_parser('plot-episode', help='one recorded episode as a PNG')
    add_plot_episode_args(p)
    p.set_defaults(func=cmd_plot_episode)

    p = sub.add_parser('insertion-compare',
                       help='insertion: P-controller vs residual vs SB3 SAC')
    from awopt_ros.learning.insertion import add_compare_args as add_insertion_compare_args
    add_insertion_compare_args(p)
    p.set_defaults(func=cmd_insertion_compare)

    p = sub.add_parser('dagger', help='DAgger in process: actor drives, expert labels',
                       usage='%(prog)s --dataset-root DIR --dataset-id ID [options]')
    from awopt_ros.learning.dagger import add_dagger_args
    add_dagger_args(p)
    p.set_defaults(func=cmd_dagger)

    p = sub.add_parser('evaluate', help='success of ONNX actors on the same scenes',
                       usage='%(prog)s MODEL.onnx [MODEL.onnx ...] [options]')
    from awopt_ros.learning.evaluate import add_evaluate_args
    add_evaluate_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('finetune', help='keep training on new episodes, hot-swap exports',
                       usage='%(prog)s (--dataset-root DIR --dataset-id ID | --in-process) '
                             '[options]')
    from awopt_ros.learning.finetune import add_finetune_args
    add_finetune_args(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser('bringup', help='start the nodes and keep them running')
    p.add_argument('config', nargs='?', default=DEFAULT_CONFIG, help='params YAML for every node')
    p.add_argument('--policy', choices=sorted(POLICY_NODES), default=None,
                   help='policy node: the learned actor (ONNX), the scripted demonstrator or '
                        "the insertion task's residual controller (default: residual for a "
                        'params file with a residual_controller section and no policy one, '
                        'else actor)')
    p.add_argument('--log-dir', default='runs/bringup/logs', help="the nodes' log files")
    _add_set_arg(p)
    p.set_defaults(func=cmd_bringup)

    p = sub.add_parser('bench', help='frame-to-command latency while logging')
    _add_run_args(p, run_dir='runs/bench', lockstep=False)   # latency needs the wall clock
    p.set_defaults(episodes=5)
    p.add_argument('--out', default='bench/results.json',
                   help='results JSON, updated in place (its other keys are kept)')
    p.add_argument('--no-learning', dest='learning', action='store_false',
                   help='skip the learning benchmarks (actor vs CEM latency, onnxruntime vs '
                        'torch, training throughput vs d3rlpy)')
    p.add_argument('--no-insertion', dest='insertion', action='store_false',
                   help='skip the insertion stack latency (wrench message -> arm command, '
                        'real time, 3 episodes after a warm-up)')
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('compare', help="the AW-Opt paper's comparison into docs/")
    from awopt_ros.learning.compare import add_compare_args
    add_compare_args(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser('collect-success-frames',
                       help='labelled frames for the success classifier')
    from awopt_ros.learning.success_data import add_collect_args, run_collect_cli
    add_collect_args(p)
    p.set_defaults(func=run_collect_cli)

    p = sub.add_parser('bag-repair', help='make bags cut short by a crash readable again',
                       usage='%(prog)s PATH [PATH ...] [options]')
    from awopt_ros.bag_cli import add_bag_repair_args, run_bag_repair_cli
    add_bag_repair_args(p)
    p.set_defaults(func=run_bag_repair_cli)

    p = sub.add_parser('view', help='one recorded episode as a Rerun recording (.rrd)',
                       usage='%(prog)s RUN_DIR [--episode N] [options]')
    from awopt_ros.view_cli import add_view_args, run_view
    add_view_args(p)
    p.set_defaults(func=run_view)

    p = sub.add_parser('replay', help='play recorded episodes back on their topics',
                       usage='%(prog)s BAG_OR_RUN [BAG_OR_RUN ...] [options]')
    from awopt_ros.replay_cli import add_replay_args, run_replay
    add_replay_args(p)
    p.set_defaults(func=run_replay)

    p = sub.add_parser('reevaluate', help='a model on recorded episodes vs the logged actions',
                       usage='%(prog)s MODEL [RUN_DIR|BAG ...] [--dataset-root R --dataset-id '
                             'I] [options]')
    from awopt_ros.reevaluate_cli import add_reevaluate_args, run_reevaluate
    add_reevaluate_args(p)
    p.set_defaults(func=run_reevaluate)

    from awopt_ros import operator_cli
    for name, help_text, add, run in (
            ('label', 'label a recorded episode success or failure', operator_cli.add_label_args,
             operator_cli.run_label),
            ('discard', 'leave a recorded episode out of training (--undo)',
             operator_cli.add_discard_args, operator_cli.run_discard),
            ('note', 'add a note to a recorded episode', operator_cli.add_note_args,
             operator_cli.run_note)):
        p = sub.add_parser(name, help=help_text)
        add(p)
        p.set_defaults(func=run)
    p = sub.add_parser('teleop', help='keyboard teleoperation that overrides the policy',
                       usage='%(prog)s [--speed M_S] [--yaw-speed RAD_S] [options]')
    from awopt_ros.teleop_cli import add_teleop_args, run_teleop
    add_teleop_args(p)
    p.set_defaults(func=run_teleop)

    for action in sub._choices_actions:      # every command: defaults in its help
        command = sub.choices[action.dest]
        command.formatter_class = HelpFormatter
        if command.description is None:
            command.description = action.help
    return parser


class _Stopped(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every command's cleanup runs."""


def _raise_stopped(signum, frame):
    raise _Stopped(f'signal {signum}')


def main(argv=None):
    """Entry point of the ``awopt`` console script; returns the exit code (130 after Ctrl-C
    and 143 after SIGTERM where the command does not handle the interrupt itself; bringup then
    returns 0, finetune 130).

    SIGTERM (``kill``, ``timeout``, systemd, ``docker stop``) and SIGINT, also where a
    background job inherited it as ignored, both stop a command as Ctrl-C does: the node
    processes it started run in their own sessions and are stopped by its cleanup, so that
    no simulator, arm interface or logger outlives it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _insertion_train_args(argv) or build_parser().parse_args(argv)
    import os
    if not os.environ.get('MUJOCO_GL'):        # in-process rollouts render off-screen too
        os.environ['MUJOCO_GL'] = 'egl'
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = (signal.signal(signal.SIGTERM, _raise_stopped),
                    signal.signal(signal.SIGINT, signal.default_int_handler))
    try:
        return args.func(args)
    except StackError as exc:   # e.g. another stack on this ROS domain: one line, no traceback
        print(f'awopt {args.command}: error: {exc}', file=sys.stderr)
        return 1
    except ParameterError as exc:   # a misspelt or conflicting parameter: nothing started
        print(f'awopt {args.command}: error: {exc}', file=sys.stderr)   # a line per name
        return 2
    except UsageError as exc:       # e.g. a malformed --set
        return usage_error(f'awopt {args.command}', exc)
    except _Stopped:
        return 143
    except KeyboardInterrupt:
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


if __name__ == '__main__':
    sys.exit(main())
