"""The plotter on synthetic runs and the published curves: what it bins, averages and writes."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from dreamer_core import registry
from plots import plot_curves

REPO = plot_curves.HERE.parent
AT = (50_000, 100_000, 1_000_000)


def write_run(root, task, method, seed, points, junk=False):
    folder = root / task / method / str(seed)
    folder.mkdir(parents=True)
    lines = [json.dumps({'step': s, 'eval_return': r}) for s, r in points]
    lines.insert(1, json.dumps({'step': 5, 'train_return': 99.0}))  # not an evaluation
    if junk:
        lines.append('{"step": 40, "eval_ret')  # a line cut by a killed run
    (folder / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
    return np.array(points, float)


def reference(seeds, at, ours=True):
    """Plain NumPy: each seed's last evaluation in [at - 10k, at], then mean, std, n over seeds;
    one of our seeds whose last evaluation is before `at` has none there (it stopped earlier)."""
    picked = []
    for points in seeds:
        if ours and points[:, 0].max() < at:
            continue
        inside = points[(points[:, 0] <= at) & (points[:, 0] >= at - 10_000)]
        if len(inside):
            picked.append(inside[np.argmax(inside[:, 0]), 1])
    if not picked:
        return '–'
    return f'{np.mean(picked):.1f} ± {np.std(picked):.1f} ({len(picked)})'


def published_reference(task, method, at):
    rows = json.loads((REPO / 'plots/standard_dmc/runs.json').read_text())
    seeds = [
        np.stack([r['xs'], r['ys']], 1) for r in rows if (r['task'], r['method']) == (task, method)
    ]
    return reference(seeds, at, ours=False)


def table_cells(text):
    """{(task, method): {column: cell}} from the markdown table."""
    lines = [line.strip('|').split(' | ') for line in text.strip().splitlines()]
    head = [c.strip() for c in lines[0]]
    return {
        (r[0].strip(), r[1].strip()): dict(zip(head, (c.strip() for c in r))) for r in lines[2:]
    }


def test_value_at_takes_the_last_evaluation_of_the_10k_before_each_frame():
    frames, values = [5_000, 15_000, 25_000], [1.0, 2.0, 3.0]
    assert plot_curves.value_at(frames, values, 10_000) == 1.0
    assert plot_curves.value_at(frames, values, 20_000) == 2.0
    assert plot_curves.value_at(frames, values, 35_000) == 3.0  # 25k is still inside
    assert np.isnan(plot_curves.value_at(frames, values, 40_000))  # nothing in [30k, 40k]
    assert plot_curves.value_at([990_000.0], [7.0], 1_000_000) == 7.0  # published "1M"
    assert plot_curves.value_at([0, 10_000], [1.0, 2.0], 10_000) == 2.0


def test_table_equals_numpy_on_ragged_runs_and_files_are_written(tmp_path, capsys):
    dreamer_pro = registry.get('dreamerpro').method
    rng = np.random.default_rng(0)
    ragged = [
        [5_000, *range(15_000, 106_000, 10_000)],  # after a 5k prefill, then every 10k
        list(range(10_000, 61_000, 10_000)),  # stopped at 60k
        [0, 7_000, 12_000, 47_000, 52_000, 98_000, 1_000_000],  # gaps, and a final one at 1M
    ]
    seeds = [
        write_run(
            tmp_path,
            'dmc_cup_catch',
            dreamer_pro,
            i + 1,
            [(f, rng.uniform(0, 1000)) for f in frames],
            junk=i == 1,
        )
        for i, frames in enumerate(ragged)
    ]
    one_seed = write_run(tmp_path, 'dmc_cup_catch', 'my_idea', 1, [(40_000, 5.0), (50_000, 9.0)])
    no_paper = write_run(tmp_path, 'dmc_hopper_hop', 'tpc', 1, [(100_000, 3.0)])
    write_run(tmp_path, 'dmc_cup_catch', 'stopped', 1, [(40_000, 4.0), (45_000, 6.0)])
    out = tmp_path / 'fig' / 'curves.png'
    args = [str(tmp_path), '--out', str(out), '--at', *map(str, AT)]
    assert plot_curves.main(args) == 0
    text = out.with_suffix('.md').read_text()
    assert capsys.readouterr().out.startswith(text)
    cells = table_cells(text)
    label = registry.get('dreamerpro').label
    for at, name in zip(AT, ('50k', '100k', '1M')):
        assert cells[('dmc_cup_catch', label)][f'ours {name}'] == reference(seeds, at)
        published = published_reference('dmc_cup_catch', 'dreamer_pro_v2_freeze_10k_norm_off', at)
        assert cells[('dmc_cup_catch', label)][f'published {name}'] == published
        assert cells[('dmc_cup_catch', 'my_idea')][f'ours {name}'] == reference([one_seed], at)
        assert cells[('dmc_cup_catch', 'my_idea')][f'published {name}'] == '–'
        assert cells[('dmc_hopper_hop', 'TPC')][f'ours {name}'] == reference([no_paper], at)
    assert cells[('dmc_cup_catch', 'my_idea')]['ours 50k'] == '9.0 ± 0.0 (1)'
    # A run that stopped at 45k frames has no value at 50k, though 45k is in the 50k bin.
    assert [cells[('dmc_cup_catch', 'stopped')][f'ours {n}'] for n in ('50k', '100k')] == ['–'] * 2
    assert not any(task == 'dmc_hopper_hop' and name != 'TPC' for task, name in cells)
    with Image.open(out) as image:
        assert image.size[0] > 600 and image.size[1] > 200
    assert out.with_suffix('.pdf').read_bytes().startswith(b'%PDF')


def test_x_axis_ends_at_our_last_frame_unless_full(tmp_path):
    write_run(tmp_path, 'dmc_cup_catch', 'dreamer', 1, [(20_000, 1.0), (45_000, 2.0)])
    runs = plot_curves.collect([tmp_path])
    assert plot_curves.x_limit(runs, full=False) == 45_000
    assert plot_curves.x_limit(runs, full=True) == 1_000_000
    assert plot_curves.x_limit({}, full=False) == 1_000_000


def readme_tables():
    """{(task, label): value} from the README's 'Published results' tables."""
    text = (REPO / 'README.md').read_text().split('## Published results', 1)[1]
    prefix = iter(['dmc_', 'nat_'])
    values = {}
    for block in re.findall(r'\| task \|.*?\n\n', text, re.DOTALL):
        rows = [line.strip('|').split('|') for line in block.strip().splitlines()]
        labels = [c.strip() for c in rows[0][1:]]
        task_prefix = next(prefix)
        for row in rows[2:]:
            for name, value in zip(labels, row[1:]):
                values[(task_prefix + row[0].strip(), name)] = int(value)
    return values


def test_published_curves_load_and_their_1m_means_are_the_readme_tables():
    curves = plot_curves.load_published()
    assert len(curves) == 36  # 2 settings x 6 tasks x 3 methods
    for (task, key), seeds in curves.items():
        assert key in registry.VARIANTS, key  # every published method maps to a variant
        assert len(seeds) == 3
        for frames, returns in seeds:
            np.testing.assert_array_equal(frames, np.arange(10_000, 1_000_000, 10_000))
    table = readme_tables()
    assert len(table) == 36
    for (task, key), seeds in curves.items():
        last = np.mean([returns[-1] for _, returns in seeds])  # at 990k frames
        assert round(last) == table[(task, registry.VARIANTS[key].label)], (task, key)


def test_published_only_figure(tmp_path):
    out = tmp_path / 'published.png'
    assert plot_curves.main(['--setting', 'natural', '--out', str(out), '--at', '1000000']) == 0
    cells = table_cells(out.with_suffix('.md').read_text())
    assert {task for task, _ in cells} == set(plot_curves.published_tasks('natural'))
    assert list(cells[('nat_walker_run', 'DreamerPro')]) == ['task', 'method', 'published 1M']
    assert out.exists() and out.with_suffix('.pdf').exists()


@pytest.mark.parametrize(
    'args, message',
    [
        ([], 'no <task>/<method>/<seed>/metrics.jsonl'),
        (['--tasks', 'dmc_nope'], 'task dmc_nope has no runs'),
        (['--setting', 'standard', '--at', '0'], '--at 0: frames must be positive'),
        (['missing'], 'missing is not a folder'),
    ],
)
def test_nothing_to_draw_is_an_error(tmp_path, capsys, args, message):
    args = [str(tmp_path / a) if a == 'missing' else a for a in args]
    assert plot_curves.main([str(tmp_path), *args, '--out', str(tmp_path / 'x.png')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and err.count('\n') == 1
    assert not (tmp_path / 'x.png').exists()


def test_per_seed_adds_each_of_our_seeds_unbinned_and_only_ours(tmp_path):
    first = write_run(tmp_path, 'dmc_cup_catch', 'dreamer', 1, [(2_500, 75.0), (12_500, 74.0)])
    second = write_run(tmp_path, 'dmc_cup_catch', 'dreamer', 2, [(2_500, 74.0), (14_000, 190.0)])
    runs = plot_curves.collect([tmp_path])
    published = plot_curves.load_published()

    def dotted(per_seed):
        fig = plot_curves.figure(['dmc_cup_catch'], runs, published, 20_000, per_seed)
        lines = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == ':']
        legend = [text.get_text() for text in fig.legends[0].get_texts()]
        import matplotlib.pyplot as plt  # after figure() chose the Agg backend

        plt.close(fig)
        return [np.stack([line.get_xdata(), line.get_ydata()], 1) for line in lines], legend

    seeds, legend = dotted(per_seed=True)
    assert len(seeds) == 2  # ours only: the published Dreamer curves stay a mean
    for drawn, points in zip(seeds, (first, second)):
        np.testing.assert_array_equal(drawn, points)  # the evaluations themselves, not binned
    assert legend.count('DreamerV2 (ours, each seed)') == 1
    assert dotted(per_seed=False) == ([], [n for n in legend if 'each seed' not in n])


def test_legend_fits_inside_a_two_panel_figure(tmp_path):
    """Long labels (ours, each seed, published) on two panels: the legend takes fewer columns
    rather than running off both edges of the figure."""
    for task in ('dmc_cup_catch', 'nat_cartpole_swingup'):
        for method in ('dreamer', 'dreamer_pro', 'tpc'):
            write_run(tmp_path, task, method, 1, [(2_500, 75.0), (12_500, 80.0)])
    runs = plot_curves.collect([tmp_path])
    tasks = ['dmc_cup_catch', 'nat_cartpole_swingup']
    fig = plot_curves.figure(tasks, runs, plot_curves.load_published(), 30_000, True)
    import matplotlib.pyplot as plt  # after figure() chose the Agg backend

    fig.canvas.draw()
    box = fig.legends[0].get_window_extent()
    texts = [text.get_text() for text in fig.legends[0].get_texts()]
    plt.close(fig)
    assert 'TPC (ours, each seed)' in texts and 'TPC (published)' in texts
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width
