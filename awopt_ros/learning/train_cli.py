"""``awopt train``: behaviour cloning on a logged dataset -> ONNX actor + loss curve + summary.

Usage (wired into ``awopt_ros/cli.py`` by ``add_train_args`` / ``run_train``)::

    awopt train --dataset-root runs/latest --dataset-id awopt/kuka-grasp/kuka-grasp-v0 \
        --out models/grasp_bc.onnx --steps 3000 --batch-size 64 --seed 0

Writes ``<out>`` (ONNX with ``awopt_contract``), ``<out stem>_loss.png`` and
``<out stem>_summary.json`` next to it.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

from awopt_ros.core import spec
from awopt_ros.core.image_ops import check_crop


def add_train_args(parser):
    """Add the ``awopt train`` options to ``parser`` (an ``argparse.ArgumentParser``)."""
    parser.add_argument('--dataset-root', required=True,
                        help='run directory holding datasets/ (MINARI_DATASETS_PATH parent)')
    parser.add_argument('--dataset-id', required=True,
                        help='Minari dataset id, e.g. awopt/kuka-grasp/kuka-grasp-v0')
    parser.add_argument('--out', default='models/grasp_bc.onnx', help='output ONNX path')
    parser.add_argument('--steps', type=int, default=3000, help='gradient steps')
    parser.add_argument('--batch-size', type=int, default=64, help='transitions per step')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--lr', type=float, default=3e-4, help='Adam learning rate')
    parser.add_argument('--crop-xywh', type=int, nargs=4, default=[80, 0, 480, 480],
                        metavar=('X', 'Y', 'W', 'H'),
                        help='camera crop the dataset images were made with (source px)')
    parser.add_argument('--image-size', type=int, default=64, help='policy image side (px)')
    parser.add_argument('--channels', type=int, default=32, help='conv channels')
    parser.add_argument('--hidden', type=int, default=256, help='MLP hidden units')
    parser.add_argument('--shift-px', type=int, default=4, help='random-shift augmentation')
    parser.add_argument('--eval-every', type=int, default=100,
                        help='steps between held-out evaluations')
    parser.add_argument('--all-episodes', action='store_true',
                        help='train on failed episodes too (default: successful only)')
    parser.add_argument('--no-progress', action='store_true', help='no tqdm progress bar')
    return parser


def plot_losses(history, png_path, title=''):
    """Write the train / held-out loss curves of ``history`` to ``png_path`` (matplotlib Agg)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(history['step'], history['train_loss'], label='train (running mean)')
    ax.plot(history['step'], history['heldout_loss'], label='held-out')
    ax.set_xlabel('gradient step')
    ax.set_ylabel('BC loss (weighted MSE + BCE)')
    ax.set_yscale('log')
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(png_path))
    plt.close(fig)


def _json_safe(value):
    """Return ``value`` with NaN/inf floats replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_train(args):
    """Run ``awopt train`` with parsed ``args``; return the exit code (0 ok, 1 error)."""
    from awopt_ros.learning.bc import BCConfig, train_bc
    from awopt_ros.learning.data import load_bc_data
    from awopt_ros.learning.export import export_actor
    from awopt_ros.learning.networks import ActorConfig
    try:
        check_crop(args.crop_xywh, *spec.SOURCE_SIZE)
        images, proprios, actions, stats = load_bc_data(
            args.dataset_root, args.dataset_id, successful_only=not args.all_episodes)
    except (FileNotFoundError, ValueError) as exc:
        print(f'awopt train: {exc}', file=sys.stderr)
        return 1
    if images.shape[1:3] != (args.image_size, args.image_size):
        print(f'awopt train: dataset images are {images.shape[1]}x{images.shape[2]} but '
              f'--image-size is {args.image_size}', file=sys.stderr)
        return 1
    print(f'dataset {args.dataset_id}: {stats["episodes"]} episodes, {stats["successful"]} '
          f'successful, training on {stats["transitions"]} transitions from '
          f'{stats["used_episodes"]} episodes')
    config = BCConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      shift_px=args.shift_px, eval_every=args.eval_every,
                      actor=ActorConfig(image_size=args.image_size, channels=args.channels,
                                        hidden=args.hidden))
    t0 = time.perf_counter()
    actor, history = train_bc(images, proprios, actions, config,
                              progress=not args.no_progress,
                              log=print if args.no_progress else None)
    train_s = time.perf_counter() - t0
    out = Path(args.out)
    card = (f'awopt_ros grasping actor, behaviour cloning (AW-Opt actor loss, task-1 weights '
            f'{list(config.weights)}) on {args.dataset_id} ({stats["transitions"]} transitions '
            f'from {stats["used_episodes"]} successful episodes), {args.steps} steps, batch '
            f'{args.batch_size}, seed {args.seed}. Inputs image uint8 (N,{args.image_size},'
            f'{args.image_size},3) cropped {list(args.crop_xywh)} from 640x480, proprio '
            f'float32 (N,6) {list(spec.PROPRIO_NAMES)}; output action float32 (N,7) '
            f'{list(spec.ACTION_NAMES)}. Simulation only.')
    try:
        result = export_actor(actor, out, args.crop_xywh, dataset=args.dataset_id,
                              algorithm='bc', model_card=card)
    except ValueError as exc:
        print(f'awopt train: export failed: {exc}', file=sys.stderr)
        return 1
    png = out.with_name(out.stem + '_loss.png')
    plot_losses(history, png, title=f'BC on {args.dataset_id}')
    summary = {
        'model': str(out), 'dataset_root': str(args.dataset_root),
        'dataset_id': args.dataset_id, 'data': stats, 'config': config.to_dict(),
        'train_s': round(train_s, 2), 'history': history,
        'final_train_loss': history['train_loss'][-1],
        'final_heldout_loss': history['heldout_loss'][-1],
        'parity_max_abs_diff': {str(k): v[0] for k, v in result['parity'].items()},
        'contract': result['contract'], 'loss_png': str(png),
    }
    summary_path = out.with_name(out.stem + '_summary.json')
    summary_path.write_text(json.dumps(_json_safe(summary), indent=2))
    print(f'trained {args.steps} steps in {train_s:.1f} s: train loss '
          f'{summary["final_train_loss"]:.4f}, held-out {summary["final_heldout_loss"]:.4f}')
    print(f'wrote {out}, {png}, {summary_path}')
    return 0


def main(argv=None):
    """Stand-alone entry point (``python -m awopt_ros.learning.train_cli``)."""
    parser = add_train_args(argparse.ArgumentParser(prog='awopt train', description=__doc__))
    return run_train(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
