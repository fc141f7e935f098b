"""The committed learning results are well formed and agree with the run files committed beside
them: every final return is the mean of that run's evaluation at its frame budget. This covers
the published configs' runs (benchmarks/results/) and each ablation
(benchmarks/ablations/{name}/), which keeps its own learning.json so that its runs are never
mixed with the published configs'."""

import json
import math
import pathlib
import re

import pytest

from dreamer_core import grid, registry

REPO = pathlib.Path(__file__).resolve().parents[1]
DIRS = [REPO / 'benchmarks' / 'results'] + sorted(
    p.parent for p in (REPO / 'benchmarks' / 'ablations').glob('*/learning.json')
)
RECORDS = [
    (folder, record)
    for folder in DIRS
    for record in json.loads((folder / 'learning.json').read_text())
]


def _run_key(record):
    return record['variant'], record['task'], record['seed']


def _id(item):
    folder, record = item
    return '-'.join(map(str, (folder.name, *_run_key(record), record['frames'])))


def test_the_published_configs_have_results():
    assert any(folder.name == 'results' for folder, _ in RECORDS)


@pytest.mark.parametrize('folder', DIRS, ids=lambda p: p.name)
def test_learning_json_is_a_list_of_complete_records(folder):
    records = json.loads((folder / 'learning.json').read_text())
    assert isinstance(records, list) and records
    keys = set()
    for record in records:
        assert list(record) == list(grid.RESULT_KEYS)
        assert record['variant'] in registry.VARIANTS
        assert isinstance(record['seed'], int) and isinstance(record['frames'], int)
        assert record['frames'] > 0 and record['wall_s'] > 0
        assert math.isfinite(record['final_return']) and math.isfinite(record['random_return'])
        assert re.fullmatch(
            r'[0-9a-f]{40}(-dirty)?( then [0-9a-f]{40}(-dirty)?)*', record['git_commit']
        )
        assert record['cpu_model']
        assert f'--steps {record["frames"]}' in record['command']
        assert f'--seed {record["seed"]}' in record['command']
        # The command works from a fresh clone: its logdir is this folder, relative to the
        # variant's folder.
        method = registry.get(record['variant']).method
        logdir = folder.relative_to(REPO) / record['task'] / method / str(record['seed'])
        assert f'--logdir ../{logdir.as_posix()} ' in record['command']
        keys.add((record['variant'], record['task'], record['seed'], record['frames']))
    assert len(keys) == len(records)  # no run recorded twice


@pytest.mark.parametrize('item', RECORDS, ids=_id)
def test_each_record_matches_its_committed_run_files(item):
    folder, record = item
    randoms = json.loads((folder / 'random_returns.json').read_text())
    method = registry.get(record['variant']).method
    logdir = folder / record['task'] / method / str(record['seed'])
    for name in ('metrics.jsonl', 'eval_returns.jsonl', 'config.yaml'):
        assert (logdir / name).is_file(), f'{logdir / name} is not committed'
    assert grid.final_return(logdir, record['frames']) == pytest.approx(record['final_return'])
    evals = [json.loads(line) for line in (logdir / 'eval_returns.jsonl').read_text().splitlines()]
    at_frames = [e for e in evals if e['step'] == record['frames']]
    assert at_frames and len(at_frames[-1]['returns']) == 10
    # A run continued to a larger budget keeps the record of each budget; the committed files
    # end at the largest one recorded (no evaluation of an unrecorded continuation is committed).
    budgets = [r['frames'] for f, r in RECORDS if f == folder and _run_key(r) == _run_key(record)]
    assert evals[-1]['step'] == max(budgets)
    assert randoms[record['task']]['return'] == pytest.approx(record['random_return'])
    assert len(randoms[record['task']]['returns']) == 10
