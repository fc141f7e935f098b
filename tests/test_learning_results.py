"""The committed learning results (benchmarks/results/) are well formed and agree with the run
files committed beside them: every final return is the mean of that run's last evaluation."""

import json
import math
import pathlib
import re

import pytest

from dreamer_core import grid, registry

RESULTS = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'results'
RECORDS = json.loads((RESULTS / 'learning.json').read_text())
RANDOM = json.loads((RESULTS / 'random_returns.json').read_text())


def test_learning_json_is_a_list_of_complete_records():
    assert isinstance(RECORDS, list) and RECORDS
    keys = set()
    for record in RECORDS:
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
        keys.add((record['variant'], record['task'], record['seed'], record['frames']))
    assert len(keys) == len(RECORDS)  # no run recorded twice


@pytest.mark.parametrize('record', RECORDS, ids=lambda r: f'{r["variant"]}-{r["seed"]}')
def test_each_record_matches_its_committed_run_files(record):
    method = registry.get(record['variant']).method
    logdir = RESULTS / record['task'] / method / str(record['seed'])
    for name in ('metrics.jsonl', 'eval_returns.jsonl', 'config.yaml'):
        assert (logdir / name).is_file(), f'{logdir / name} is not committed'
    assert grid.final_return(logdir, record['frames']) == pytest.approx(record['final_return'])
    last = json.loads((logdir / 'eval_returns.jsonl').read_text().splitlines()[-1])
    assert last['step'] == record['frames'] and len(last['returns']) == 10
    assert RANDOM[record['task']]['return'] == pytest.approx(record['random_return'])
    assert len(RANDOM[record['task']]['returns']) == 10
