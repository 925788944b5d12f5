"""``awopt evaluate``: noise-free success of ONNX actors on fixed scenes, compared scene by scene.

Each model acts alone (actor mode, no exploration noise, thresholded gripper bits) for one
episode per scene seed in the in-process rollout (:mod:`awopt_ros.sim.rollout`: the stack's
simulator, crop, safety filter, IK and gripper rule, without message timing; the stack in
lockstep gives the same episodes, docs/experiments.md). Every model sees the same scenes, so
two models are compared on the scenes where exactly one of them succeeded: the exact
McNemar test (a two-sided binomial sign test on those discordant scenes; McNemar 1947),
which is far more sensitive than comparing the two success rates as independent samples.

The image size and crop of the rollout come from the first model's ONNX contract; every
model must share them (:class:`~awopt_ros.core.onnx_policy.ModelContractError` otherwise).
"""
import json
import math
import sys
from pathlib import Path

import numpy as np


def mcnemar_exact(reference, other):
    """Compare two models' per-scene outcomes on the same scenes.

    Args:
        reference, other: sequences of bool (or 0/1), one per scene, same length.

    Returns:
        ``(gained, lost, p)``: scenes ``other`` succeeded on and ``reference`` did not, the
        reverse, and the two-sided exact p value of the binomial sign test on the
        ``gained + lost`` discordant scenes (1.0 when there are none).

    Raises:
        ValueError: the sequences differ in length.
    """
    a = np.asarray(reference, dtype=bool).reshape(-1)
    b = np.asarray(other, dtype=bool).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f'outcomes differ in length: {a.size} vs {b.size}')
    gained, lost = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    n = gained + lost
    if n == 0:
        return gained, lost, 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2.0 ** n
    return gained, lost, min(1.0, 2.0 * tail)


def rollout_config_for(path, config_path=None):
    """Return the :class:`~awopt_ros.sim.rollout.RolloutConfig` of the stack's parameter file
    (default ``config/awopt_ros_kuka_grasp.yaml``) with the image size and crop of the actor
    at ``path`` (its ONNX contract)."""
    from awopt_ros.core.onnx_policy import read_contract
    from awopt_ros.sim import rollout
    contract = read_contract(path)
    overrides = {'image_size': int(contract['image_size'][0]),
                 'crop_xywh': tuple(int(v) for v in contract['crop_xywh'])}
    if config_path is None:
        return rollout.RolloutConfig.from_yaml(**overrides)
    return rollout.RolloutConfig.from_yaml(config_path, **overrides)


def _check_same_contract(paths, config):
    """Raise ``ModelContractError`` for the first model whose contract does not match the
    rollout's image size and crop (or the spec's names and bounds)."""
    from awopt_ros.core.onnx_policy import (ModelContractError, check_contract,
                                            expected_contract, read_contract)
    expected = expected_contract(config.image_size, config.crop_xywh)
    for path in paths:
        problems = check_contract(read_contract(path), expected)
        if problems:
            raise ModelContractError(path, problems)


def evaluate_models(paths, seeds, config=None, processes=2, progress=True, log=print):
    """Run every actor at ``paths`` noise-free on every scene of ``seeds``.

    Args:
        paths: ONNX actor files (str or Path).
        seeds: scene seeds (ints), the same for every model.
        config: ``RolloutConfig`` (default: :func:`rollout_config_for` the first model).
        processes: rollout worker processes.
        progress: a tqdm bar per model.
        log: callable(str) for one line per model.

    Returns:
        list of ``(path (str), outcomes)`` in the order of ``paths`` (a path may repeat), with
        ``outcomes`` a list of bool, one per seed.

    Raises:
        FileNotFoundError: a model file is missing.
        ModelContractError: a model's contract does not match the rollout's image and crop.
    """
    from awopt_ros.learning.sim_finetune import ActorRuntimeFactory
    from awopt_ros.sim import rollout
    paths = [str(p) for p in paths]
    seeds = [int(s) for s in seeds]
    config = config if config is not None else rollout_config_for(paths[0])
    _check_same_contract(paths, config)
    outcomes = []
    for path in paths:
        episodes = rollout.collect(seeds, ActorRuntimeFactory(path, 0.0), config,
                                   processes=processes, progress=progress, record=False)
        got = [bool(e['success']) for e in episodes]
        log(f'{path}: {sum(got)}/{len(seeds)}')
        outcomes.append((path, got))
    return outcomes


def summary(outcomes, seeds):
    """Return the JSON-ready summary of :func:`evaluate_models`' outcomes (a list of
    ``(path, outcomes)``): per model its
    ``successes``, ``episodes``, ``success_rate``, standard error ``se`` and per-scene
    ``outcomes`` (0/1); for every model after the first, ``vs_first``: ``gained``, ``lost``
    and the exact McNemar ``p`` against the first model."""
    first = outcomes[0][1]
    models = []
    for index, (path, got) in enumerate(outcomes):
        n = len(got)
        rate = sum(got) / n if n else 0.0
        entry = {'model': path, 'successes': int(sum(got)), 'episodes': n,
                 'success_rate': rate, 'se': math.sqrt(rate * (1 - rate) / n) if n else 0.0,
                 'outcomes': [int(v) for v in got]}
        if index > 0:
            gained, lost, p = mcnemar_exact(first, got)
            entry['vs_first'] = {'gained': gained, 'lost': lost, 'p': p}
        models.append(entry)
    return {'seeds': [int(s) for s in seeds], 'models': models}


def format_table(result):
    """Return a plain-text table of :func:`summary`'s result."""
    lines = [f'{"model":<48} {"success":>12} {"vs first: +/-":>15} {"p":>8}']
    for m in result['models']:
        rate = f'{m["successes"]}/{m["episodes"]}'
        cmp_ = m.get('vs_first')
        extra = (f'{cmp_["gained"]:>7} /{cmp_["lost"]:>5} {cmp_["p"]:>9.4f}' if cmp_
                 else f'{"(reference)":>15}')
        lines.append(f'{m["model"][-48:]:<48} {rate:>12} {extra}')
    return '\n'.join(lines)


def add_evaluate_args(parser):
    """Add ``awopt evaluate``'s arguments to ``parser``."""
    from awopt_ros.cli_args import nonnegative_int, positive_int
    parser.add_argument('models', nargs='+', help='ONNX actors; the first is the reference '
                        'of the scene-by-scene comparison')
    parser.add_argument('--first-seed', type=nonnegative_int, default=6001,
                        help='first scene seed (default 6001, the validation scenes)')
    parser.add_argument('--episodes', type=positive_int, default=100,
                        help='scenes per model (default 100)')
    parser.add_argument('--processes', type=positive_int, default=2,
                        help='rollout worker processes')
    parser.add_argument('--config', default=None,
                        help='stack parameter file (default config/awopt_ros_kuka_grasp.yaml)')
    parser.add_argument('--out', default=None,
                        help='write the JSON summary here (default: none, table only)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite an existing --out file')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


PROG = 'awopt evaluate'


def run_evaluate_cli(args):
    """Run ``awopt evaluate``; returns the exit code (0; 2 on a bad argument or model, with
    one line naming it: ``awopt evaluate: error: argument models: ...``). An existing
    ``--out`` is not overwritten without ``--force`` (checked before any episode)."""
    from awopt_ros.cli_args import UsageError, check_outputs, require_file, usage_error
    from awopt_ros.sim.rollout import RolloutError
    from awopt_ros.core.onnx_policy import ModelContractError
    from awopt_ros.core.paths import resolve
    try:
        if args.out:
            check_outputs([('--out', args.out)], force=args.force)
        if args.config is not None:   # found as the rollout finds it (cwd, then the package)
            require_file('--config', resolve(args.config), 'parameter file')
    except UsageError as exc:
        return usage_error(PROG, exc)
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    try:
        config = rollout_config_for(args.models[0], args.config)
        outcomes = evaluate_models(args.models, seeds, config, processes=args.processes,
                                   progress=not args.no_progress)
    except (FileNotFoundError, ModelContractError) as exc:
        return usage_error(PROG, UsageError('models', exc))
    except RolloutError as exc:     # the simulation itself failed (e.g. no OpenGL): say so
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return 1
    result = summary(outcomes, seeds)
    print(format_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f'wrote {args.out}')
    return 0
