"""The plotting script on synthetic runs: what it averages, prints and draws."""

import json

import numpy as np
from PIL import Image

from plots import plot_curves


def write_run(root, task, agent, seed, points, junk=False):
    folder = root / task / agent / str(seed)
    folder.mkdir(parents=True)
    lines = [json.dumps({'step': s, 'eval_return': r}) for s, r in points]
    lines.insert(1, json.dumps({'step': 5, 'train_return': 99.0}))  # not an evaluation
    if junk:
        lines.append('{"step": 40, "eval_ret')  # a line cut by a killed run
    (folder / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')


def test_means_over_seeds_at_common_frames_and_published_values(tmp_path, capsys):
    write_run(tmp_path, 'dmc_cup_catch', 'dreamer_pro', 1, [(10, 100.0), (20, 300.0), (30, 500.0)])
    write_run(tmp_path, 'dmc_cup_catch', 'dreamer_pro', 2, [(10, 200.0), (20, 500.0)], junk=True)
    write_run(tmp_path, 'nat_walker_run', 'tpc', 1, [(10, 7.0)])
    runs = plot_curves.collect([tmp_path])
    frames, mean, low, high = plot_curves.aggregate(runs[('dmc_cup_catch', 'dreamer_pro')])
    assert frames.tolist() == [10, 20]  # frame 30 was reached by one seed only
    np.testing.assert_allclose(mean, [150.0, 400.0])
    np.testing.assert_allclose(low, [100.0, 300.0])
    np.testing.assert_allclose(high, [200.0, 500.0])
    out = tmp_path / 'curves.png'
    assert plot_curves.main([str(tmp_path), '--out', str(out)]) == 0
    table = capsys.readouterr().out
    assert '| dmc_cup_catch | DreamerPro | 2 | 20 | 400.0 | 961 |' in table
    assert '| nat_walker_run | TPC | 1 | 10 | 7.0 | 161 |' in table
    with Image.open(out) as image:
        assert image.size[0] > 400 and image.size[1] > 200


def test_no_runs_is_an_error(tmp_path, capsys):
    assert plot_curves.main([str(tmp_path)]) == 1
    assert 'no <task>/<agent>/<seed>/metrics.jsonl' in capsys.readouterr().err
