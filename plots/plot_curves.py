"""Evaluation-return curves of your runs next to the published per-seed curves.

Usage:
  python plots/plot_curves.py DreamerPro/log TPC/log Dreamer/log --out plots/mine.png
  python plots/plot_curves.py --setting standard --out plots/standard_dmc/published.png

A run is a folder <root>/<task>/<method>/<seed>/ holding metrics.jsonl (the layout of the
README's commands, e.g. DreamerPro/log/dmc_walker_run/dreamer_pro/1). Each task gets a panel
with, per method, the mean over seeds of our runs (solid, shaded +- one std) and of the
published runs (dashed, shaded +- one std); `--per-seed` adds each of our seeds' own
evaluations (dotted, not binned). The x axis ends at the last frame of our runs
(`--full`: the whole published 1M frames). It writes <out>.png, <out>.pdf and <out>.md, a
table of mean +- std over seeds at the frames of `--at`, also printed.

Frames: the published curves hold the mean return of 10 evaluation episodes every 10k
environment frames, 10k to 990k; their 990k point is the "1M" value of the papers' tables.
Our evaluations fall elsewhere (after prefill, then every eval_every), so every curve is
binned on the same 10k grid by one rule, `value_at`: the value at grid frame g is the last
evaluation from g - 10k to g (both included), or none. An evaluation is never credited with
frames the agent had not seen yet, and the published 990k point is the value at 1M. In the
table, one of our runs has no value at frames past its last evaluation: a run stopped at 15k
frames is not reported at 20k (the figure still draws its 15k point in the 20k bin).
"""

import argparse
import collections
import json
import math
import pathlib
import sys
import warnings

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root, for dreamer_core

from dreamer_core import registry
from dreamer_core.errors import UserError

GRID = 10_000  # frames between two published evaluations
PUBLISHED = {
    'standard': HERE / 'standard_dmc' / 'runs.json',
    'natural': HERE / 'natural_background_dmc' / 'runs.json',
}
DEFAULT_AT = (100_000, 500_000, 1_000_000)


def method_key(method):
    """A registry variant name for a known method folder or published method, else the name."""
    variant = registry.by_method(method)
    return variant.name if variant else method


def label(key):
    return registry.VARIANTS[key].label if key in registry.VARIANTS else key


def value_at(frames, values, at, width=GRID):
    """The last value whose frame lies in [at - width, at]; NaN when there is none."""
    frames, values = np.asarray(frames, float), np.asarray(values, float)
    inside = np.flatnonzero((frames <= at) & (frames >= at - width))
    return values[inside[np.argmax(frames[inside])]] if len(inside) else math.nan


def load_published(settings=('standard', 'natural')):
    """{(task, method key): [(frames, returns) per seed]} from the published runs.json files."""
    curves = collections.defaultdict(list)
    for setting in settings:
        for row in json.loads(PUBLISHED[setting].read_text()):
            curves[(row['task'], method_key(row['method']))].append(
                (np.array(row['xs'], float), np.array(row['ys'], float))
            )
    return dict(curves)


def published_tasks(setting):
    return sorted({task for task, _ in load_published([setting])})


def read_run(path):
    """(frames, eval_return) arrays of one run's metrics.jsonl; unreadable lines are skipped."""
    points = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a killed run
        if isinstance(row, dict) and 'eval_return' in row and 'step' in row:
            points.append((row['step'], row['eval_return']))
    points.sort()
    return np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)


def collect(roots):
    """{(task, method key): [(frames, returns) per seed]} from metrics files under the roots."""
    runs = collections.defaultdict(list)
    for root in roots:
        for path in sorted(pathlib.Path(root).glob('*/*/*/metrics.jsonl')):
            task, method = path.parts[-4], path.parts[-3]
            frames, returns = read_run(path)
            if len(frames):
                runs[(task, method_key(method))].append((frames, returns))
    return dict(runs)


def binned(seeds, grid, reached=False):
    """[seeds, len(grid)] values on the grid (NaN where a seed has no evaluation there;
    `reached`: also NaN at frames past a seed's last evaluation, for runs that stopped early)."""
    return np.array(
        [
            [math.nan if reached and g > f.max() else value_at(f, r, g) for g in grid]
            for f, r in seeds
        ]
    ).reshape(len(seeds), len(grid))


def stats(seeds, grid, reached=False):
    """Mean, std (over seeds, ddof 0) and seed count at each grid frame; NaN where n is 0."""
    table = binned(seeds, grid, reached)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # a grid frame that no seed reached
        return np.nanmean(table, 0), np.nanstd(table, 0), np.sum(~np.isnan(table), 0)


def grid_until(last):
    return np.arange(GRID, math.ceil(last / GRID) * GRID + 1, GRID, dtype=float)


def table_rows(tasks, runs, published, at):
    """(task, label, ours, published) per task and method present; ours and published are
    lists of (mean, std, n seeds) at the frames of `at`, or None without runs."""
    grid = np.array(at, float)
    rows = []
    for task in tasks:
        for key in method_order(runs, published):
            ours = at_frames(runs.get((task, key)), grid, reached=True)
            paper = at_frames(published.get((task, key)), grid)  # their 990k point is the 1M one
            if ours or paper:
                rows.append((task, label(key), ours, paper))
    return rows


def at_frames(seeds, grid, reached=False):
    """[(mean, std, n) at each grid frame] of a method's seeds; None without seeds."""
    if not seeds:
        return None
    mean, std, n = stats(seeds, grid, reached)
    return [(float(m), float(s), int(k)) for m, s, k in zip(mean, std, n)]


def method_order(runs, published):
    """Registry variants first (fixed colours across figures), then other names sorted."""
    keys = {key for _, key in list(runs) + list(published)}
    known = [name for name in registry.VARIANTS if name in keys]
    return known + sorted(keys - set(known))


def cell(value):
    if not value or value[2] == 0:
        return '–'
    mean, std, n = value
    return f'{mean:.1f} ± {std:.1f} ({n})'


def markdown(rows, at, with_ours=True):
    """One row per task and method: mean ± std (n seeds) of ours and published at each frame."""
    sources = ('ours', 'published') if with_ours else ('published',)
    head = [f'{source} {frames_text(f)}' for f in at for source in sources]
    lines = ['| task | method | ' + ' | '.join(head) + ' |', '|---|---|' + '---|' * len(head)]
    for task, name, ours, paper in rows:
        values = {'ours': ours, 'published': paper}
        cells = [cell(values[s] and values[s][i]) for i in range(len(at)) for s in sources]
        lines.append(f'| {task} | {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def frames_text(frames):
    """100000 -> '100k', 1000000 -> '1M'."""
    if frames % 1_000_000 == 0:
        return f'{frames // 1_000_000}M'
    return f'{frames / 1000:g}k'


def x_limit(runs, full):
    """The last frame shown: that of our longest run, or the published 1M."""
    ends = [f.max() for seeds in runs.values() for f, _ in seeds]
    return 1_000_000 if full or not ends else max(ends)


def plot(tasks, runs, published, out, xmax, per_seed=False):
    fig = figure(tasks, runs, published, xmax, per_seed)  # selects the Agg backend first
    import matplotlib.pyplot as plt

    paths = [out.with_suffix('.png'), out.with_suffix('.pdf')]
    fig.savefig(paths[1])
    fig.canvas.draw()
    save_png(np.asarray(fig.canvas.buffer_rgba())[..., :3], paths[0])
    plt.close(fig)
    return paths


def figure(tasks, runs, published, xmax, per_seed=False):
    """The matplotlib figure: one panel per task; `per_seed` adds each of our seeds' evaluations."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(max(4.2 * cols, 6.0), 3.2 * rows + 0.6),  # one panel: room for the legend
        squeeze=False,
        dpi=80,
        layout='constrained',
    )
    colors = {key: f'C{i}' for i, key in enumerate(method_order(runs, published))}
    grid = grid_until(xmax)
    for ax, task in zip(axes.flat, tasks):
        for key, color in colors.items():
            for source, style in ((published, '--'), (runs, '-')):
                if (task, key) in source:
                    draw(ax, grid, source[(task, key)], color, style, label(key), source is runs)
            if per_seed and (task, key) in runs:
                draw_seeds(ax, runs[(task, key)], color, label(key))
        ax.set_title(task)
        ax.set_xlim(0, grid[-1])
        ax.set_xlabel('environment frames')
        ax.set_ylabel('eval return')
        ax.xaxis.set_major_formatter(lambda x, _: frames_text(int(x)) if x else '0')
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis('off')
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    # As many legend columns as fit the figure's width (long labels need fewer per row).
    renderer = fig.canvas.get_renderer()
    for ncol in range(max(1, min(len(handles), 2 * cols)), 0, -1):
        legend = fig.legend(handles.values(), handles.keys(), loc='outside lower center', ncol=ncol)
        if ncol == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            break
        legend.remove()
    return fig


def save_png(pixels, path):
    """A palette PNG: a few times smaller than matplotlib's RGBA one, fit to commit."""
    from PIL import Image

    Image.fromarray(pixels).quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(
        path, optimize=True
    )


def draw(ax, grid, seeds, color, style, name, ours):
    mean, std, n = stats(seeds, grid)
    # The binning carries a last evaluation one grid step on; a curve stops at its last frame.
    last = max(frames.max() for frames, _ in seeds)
    shown = (n > 0) & (grid < last + GRID)
    if not shown.any():
        return
    x, mean, std = grid[shown], mean[shown], std[shown]
    text = f'{name} ({"ours" if ours else "published"})'
    ax.plot(x, mean, style, color=color, label=text, linewidth=1.5 if ours else 1.0)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2 if ours else 0.1)


def draw_seeds(ax, seeds, color, name):
    """Each seed's own evaluations, unbinned, as thin dotted lines: a mean hides a seed that
    learns next to one that does not."""
    for i, (frames, returns) in enumerate(seeds):
        text = f'{name} (ours, each seed)' if i == 0 else None
        ax.plot(frames, returns, ':', marker='.', color=color, label=text, linewidth=0.8, alpha=0.8)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('roots', nargs='*', help='folders holding <task>/<method>/<seed>/ runs')
    parser.add_argument('--out', default='plots/curves.png', help='figure path; .pdf, .md beside')
    parser.add_argument(
        '--setting',
        choices=sorted(PUBLISHED),
        help='also draw every task of this published setting (alone: a published-only figure)',
    )
    parser.add_argument('--tasks', nargs='+', help='only these tasks')
    parser.add_argument('--full', action='store_true', help='x axis to 1M frames')
    parser.add_argument('--at', nargs='+', type=int, default=DEFAULT_AT, help='table frames')
    parser.add_argument(
        '--per-seed', action='store_true', help='also draw each of our seeds, not only their mean'
    )
    return parser.parse_args(argv)


class PlotError(UserError):
    """Nothing to draw, or a bad flag; the message says which."""


def main(argv=None):
    args = parse(argv)
    try:
        runs = collect(check_roots(args.roots))
        published = load_published()
        tasks = select_tasks(args, runs, published)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(table_rows(tasks, runs, published, args.at), args.at, bool(runs))
    print(text, end='')
    out.with_suffix('.md').write_text(text)
    paths = plot(tasks, runs, published, out, x_limit(runs, args.full), args.per_seed)
    print('Wrote ' + ', '.join(str(p) for p in [*paths, out.with_suffix('.md')]))
    return 0


def check_roots(roots):
    for root in roots:
        if not pathlib.Path(root).is_dir():
            raise PlotError(
                f'{root} is not a folder: give folders holding <task>/<method>/<seed>/.'
            )
    return roots


def select_tasks(args, runs, published):
    """The panels: --tasks, else the tasks of the runs and of --setting."""
    if any(frames <= 0 for frames in args.at):
        raise PlotError(f'--at {" ".join(map(str, args.at))}: frames must be positive.')
    setting = published_tasks(args.setting) if args.setting else []
    tasks = args.tasks or sorted({task for task, _ in runs} | set(setting))
    if not tasks:
        where = ', '.join(args.roots) or 'no folder given'
        raise PlotError(
            f'no <task>/<method>/<seed>/metrics.jsonl with eval_return under {where}; '
            'give run folders or --setting standard|natural for the published curves alone.'
        )
    known = {task for task, _ in [*runs, *published]}
    for task in tasks:
        if task not in known:
            raise PlotError(f'task {task} has no runs and no published curves.')
    return tasks


if __name__ == '__main__':
    sys.exit(main())
