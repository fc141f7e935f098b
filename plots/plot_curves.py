"""Evaluation-return curves of many runs, next to the published results.

Usage: python plots/plot_curves.py DreamerPro/log TPC/log Dreamer/log [--out plots/curves.png]

Each run is a folder <root>/<task>/<agent>/<seed>/ holding metrics.jsonl (the layout of the
README's commands, e.g. DreamerPro/log/dmc_walker_run/dreamer_pro/1). Every task gets a panel
with each agent's mean evaluation return over seeds (shaded: min to max) against environment
frames, and the published 1M-frame result as a dashed line. A table of the last common
evaluation of each task and agent is printed as well.
"""

import argparse
import collections
import json
import pathlib
import sys

import numpy as np

AGENTS = {'dreamer_pro': 'DreamerPro', 'tpc': 'TPC', 'dreamer': 'DreamerV2'}
# Published mean returns at 1M frames (3 seeds): SPEC.md section 9.
PUBLISHED = {
    'dmc_cartpole_swingup_sparse': (813, 770, 820),
    'dmc_cheetah_run': (897, 782, 840),
    'dmc_cup_catch': (961, 948, 967),
    'dmc_finger_spin': (811, 524, 559),
    'dmc_reacher_easy': (873, 503, 721),
    'dmc_walker_run': (784, 222, 737),
    'nat_cartpole_swingup': (671, 521, 126),
    'nat_cheetah_run': (349, 444, 30),
    'nat_cup_catch': (493, 477, 88),
    'nat_finger_spin': (826, 655, 10),
    'nat_reacher_easy': (641, 462, 82),
    'nat_walker_run': (394, 161, 35),
}


def published(task, agent):
    values = PUBLISHED.get(task)
    return None if values is None else dict(zip(AGENTS, values)).get(agent)


def read_run(path):
    """(frames, eval_return) arrays of one run's metrics.jsonl; unreadable lines are skipped."""
    points = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a killed run
        if 'eval_return' in row:
            points.append((row['step'], row['eval_return']))
    points.sort()
    return np.array([p[0] for p in points]), np.array([p[1] for p in points], float)


def collect(roots):
    """{(task, agent): [(frames, returns) per seed]} from metrics files under the roots."""
    runs = collections.defaultdict(list)
    for root in roots:
        for path in sorted(pathlib.Path(root).glob('*/*/*/metrics.jsonl')):
            task, agent = path.parts[-4], path.parts[-3]
            frames, returns = read_run(path)
            if len(frames):
                runs[(task, agent)].append((frames, returns))
    return runs


def aggregate(seeds):
    """Mean, min and max over seeds at the evaluation frames all seeds reached."""
    common = sorted(set.intersection(*(set(frames.tolist()) for frames, _ in seeds)))
    table = np.array([[dict(zip(f.tolist(), r))[x] for x in common] for f, r in seeds])
    return np.array(common), table.mean(0), table.min(0), table.max(0)


def summary(runs):
    rows = []
    for (task, agent), seeds in sorted(runs.items()):
        frames, mean, low, high = aggregate(seeds)
        if not len(frames):
            continue
        rows.append(
            (
                task,
                AGENTS.get(agent, agent),
                len(seeds),
                int(frames[-1]),
                mean[-1],
                published(task, agent),
            )
        )
    return rows


def plot(runs, out):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    tasks = sorted({task for task, _ in runs})
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for index, agent in enumerate(AGENTS):
            seeds = runs.get((task, agent))
            color = f'C{index}'
            if seeds:
                frames, mean, low, high = aggregate(seeds)
                ax.plot(frames, mean, color=color, label=f'{AGENTS[agent]} ({len(seeds)})')
                ax.fill_between(frames, low, high, color=color, alpha=0.2)
            paper = published(task, agent)
            if paper is not None:
                ax.axhline(paper, color=color, linestyle='--', linewidth=1)
        ax.set_title(task)
        ax.set_xlabel('environment frames')
        ax.set_ylabel('eval return')
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis('off')
    fig.tight_layout()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('roots', nargs='+', help='folders holding <task>/<agent>/<seed>/ runs')
    parser.add_argument('--out', default='plots/curves.png')
    args = parser.parse_args(argv)
    runs = collect(args.roots)
    if not runs:
        print(
            f'error: no <task>/<agent>/<seed>/metrics.jsonl with eval_return under {args.roots}.',
            file=sys.stderr,
        )
        return 1
    print('| task | agent | seeds | frames | eval return (mean) | published at 1M |')
    print('|---|---|---|---|---|---|')
    for task, agent, seeds, frames, mean, paper in summary(runs):
        paper = '' if paper is None else paper
        print(f'| {task} | {agent} | {seeds} | {frames} | {mean:.1f} | {paper} |')
    print(f'Wrote {plot(runs, args.out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
