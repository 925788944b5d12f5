"""Plot the weak-start finetuning runs of docs/experiments.md (docs/finetune_weak_s15.png and,
with the stack run in lockstep added as one more LABEL=STACK_DIR, docs/finetune_weak_s16.png).

Usage: python docs/plot_finetune_weak.py OUT CONTROL ONLINE3 ONLINE10 LABEL=STACK_DIR ...

CONTROL, ONLINE3, ONLINE10: ``*_finetune_history.json`` of the in-process runs (``awopt
finetune --in-process``: demonstrations-only control, 3 and 10 gradient steps per episode);
LABEL=STACK_DIR: a stack run's legend label and directory (``ft_finetune_history.json`` and one
``report_<r>.json`` per round of ``awopt demo``; its ``eval.json``, if present, holds
in-process noise-free evaluations of its exports, ``[E, ...]`` with
``E = {"learner_step": S, "successes": K, "episodes": N}``).
Left: noise-free success on the fixed evaluation scenes vs gradient steps after the start.
Right: success of each round of 100 noisy exploration episodes.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def main(out, control, online3, online10, *stacks):
    runs = [('demonstrations only (control)', control, 'C7'),
            ('in process, 3 steps / episode', online3, 'C0'),
            ('in process, 10 steps / episode', online10, 'C1')]
    fig, (ax_e, ax_r) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for label, path, color in runs:
        h = json.loads(Path(path).read_text())
        start = h['learner_step_start']
        ev = h['evaluations']
        ax_e.plot([e['learner_step'] - start for e in ev],
                  [100 * e['success_rate'] for e in ev], 'o-', color=color, label=label)
        eps = h['episodes']
        if eps:
            per = [100 * sum(e['success'] for e in eps[i:i + 100]) / len(eps[i:i + 100])
                   for i in range(0, len(eps), 100)]
            ax_r.plot(range(1, len(per) + 1), per, 'o-', color=color, label=label)
    for k, item in enumerate(stacks):
        label, stack_dir = item.split('=', 1)
        stack_dir, color = Path(stack_dir), f'C{3 + k}'
        reports = sorted(stack_dir.glob('report_*.json'),
                         key=lambda p: int(p.stem.split('_')[1]))
        per = [100 * json.loads(p.read_text())['success_rate'] for p in reports]
        ax_r.plot(range(1, len(per) + 1), per, 's-', color=color, linewidth=2, label=label)
        ev_path = stack_dir / 'eval.json'
        if ev_path.is_file():
            ev = json.loads(ev_path.read_text())
            start = json.loads((stack_dir / 'ft_finetune_history.json').read_text())[
                'learner_step_start']
            ax_e.plot([e['learner_step'] - start for e in ev],
                      [100 * e['successes'] / e['episodes'] for e in ev], 's--', color=color,
                      linewidth=2, label=label + ' (its exports)')
    ax_e.set_xlabel('gradient steps after the weak start')
    ax_e.set_ylabel('noise-free success, scenes 6001-6100 (%)')
    ax_e.set_title('evaluation (in process, 100 fixed scenes)')
    ax_r.set_xlabel('round (100 exploration episodes, actor noise 0.1)')
    ax_r.set_ylabel('success in the round (%)')
    ax_r.set_title('exploration episodes, new scenes each round')
    for ax in (ax_e, ax_r):
        ax.set_ylim(25, 70)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc='upper left')
    fig.suptitle('AW-Opt finetuning from a weak start (40 demonstrations, 1,500 steps)')
    fig.tight_layout()
    fig.savefig(out)
    print(f'wrote {out}')


if __name__ == '__main__':
    main(*sys.argv[1:])
