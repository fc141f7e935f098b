"""A resume is a continuation, and one seed is one run (with --deterministic True).

On the real DreamerPro train.py at tiny size on walker walk: a run stopped by SIGTERM while
prefilling, while pretraining and in the middle of an episode while training, and resumed each
time with the same command, writes the same metrics, evaluations, episodes and final weights as
the same run never stopped; its frames never go backwards. Another seed gives another run.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dreamer_core import runstate
from dreamer_core.replay import load_episode
from tests.e2e import REPO, metrics, run_variant

VARIANT, TASK = 'DreamerPro', 'dmc_walker_walk'
FLAGS = ('--task', TASK, '--deterministic', 'True')
CONFIGS = ('defaults', 'dmc', 'norm_off')
# Wall-clock and machine readings: they differ between any two runs.
UNTIMED = ('time_', 'fps', 'memory_')
# Stops, in order: 30 steps into prefill (of 40), after the first pretraining update (of 2), and
# after the 7th update of the process that resumed (an update every 10 steps: mid-episode,
# between two saves).
STOPS = ('prefill:30:SIGTERM', 'pretrain:1:SIGTERM', 'train:7:SIGTERM')


def run(logdir, *args, env=None):
    result = run_variant(VARIANT, logdir, *FLAGS, *args, configs=CONFIGS, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def timeless(rows):
    return [{k: v for k, v in row.items() if not k.startswith(UNTIMED)} for row in rows]


def episodes(logdir, kind):
    # File names hold the time of writing; their order is the order of the episodes.
    return [load_episode(path) for path in sorted((logdir / kind).glob('*.npz'))]


def weights(logdir):
    with np.load(logdir / 'variables.npz') as data:
        return {key: data[key] for key in data.files if key != 'meta'}


@pytest.fixture(scope='module')
def never_stopped(tmp_path_factory):
    logdir = tmp_path_factory.mktemp('whole') / 'run'
    run(logdir)
    return logdir


def test_a_run_stopped_three_times_and_resumed_is_the_run_never_stopped(tmp_path, never_stopped):
    logdir = tmp_path / 'run'
    outputs = [run(logdir, env={'DREAMER_KILL_AT': stop}).stdout for stop in STOPS]
    outputs.append(run(logdir).stdout)
    for stop, out in zip(STOPS, outputs):
        assert 'received: finishing the current step' in out, stop
    assert 'Stopped at frame 60; run state and replay saved.' in outputs[0]  # 30 steps
    assert 'checkpoint, run state and replay saved' in outputs[1]
    assert 'Resuming at frame 60 (prefill), where the run stopped.' in outputs[1]
    assert 'Resuming at frame 80 (pretrain), where the run stopped.' in outputs[2]
    assert 'Pretrain agent (1 more updates).' in outputs[2]
    # Stopped mid-episode: the unfinished episode came back with the environment's state.
    stopped_at = int(outputs[2].split('Stopped at frame ')[1].split(';')[0])
    assert stopped_at % 40 and f'Resuming at frame {stopped_at} (train)' in outputs[3]

    rows, whole = metrics(logdir), metrics(never_stopped)
    steps = [row['step'] for row in rows]
    assert steps == sorted(steps) and steps == [row['step'] for row in whole]
    assert timeless(rows) == timeless(whole)
    assert (logdir / 'eval_returns.jsonl').read_text() == (
        never_stopped / 'eval_returns.jsonl'
    ).read_text()
    for kind in ('train_replay', 'eval_replay'):
        ours, theirs = episodes(logdir, kind), episodes(never_stopped, kind)
        assert len(ours) == len(theirs) > 3
        for a, b in zip(ours, theirs):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f'{kind} {key}')
    ours, theirs = weights(logdir), weights(never_stopped)
    assert ours.keys() == theirs.keys() and len(ours) > 50
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_another_seed_is_another_run(tmp_path, never_stopped):
    logdir = tmp_path / 'run'
    run(logdir, '--seed', '1', '--steps', '120')
    for key in ('train_return', 'model_loss'):  # the first prefill episode, the first log line
        other = next(row for row in metrics(logdir) if key in row)
        this = next(row for row in metrics(never_stopped) if key in row)
        assert other['step'] == this['step'] and other[key] != this[key], key


def test_a_killed_run_resumes_without_going_back(tmp_path):
    """SIGKILL leaves no run state for the stop: the run resumes from its last save and its
    stored episodes, and frames never go backwards or repeat."""
    logdir = tmp_path / 'run'
    killed = run_variant(
        VARIANT, logdir, *FLAGS, configs=CONFIGS, env={'DREAMER_KILL_AT': 'train:9'}
    )
    assert killed.returncode == -9
    assert runstate.load(logdir) is not None  # of the save at frame 160, before the kill
    logged = [row['step'] for row in metrics(logdir)]
    out = run(logdir).stdout
    assert 'older than its stored episodes' in out
    steps = [row['step'] for row in metrics(logdir)]
    assert steps[: len(logged)] == logged and steps == sorted(steps) and steps[-1] == 240
    # No value is logged twice for a frame: each key's frames strictly increase.
    rows = metrics(logdir)
    for key in {key for row in rows for key in row} - {'step'}:
        frames = [row['step'] for row in rows if key in row]
        assert all(b > a for a, b in zip(frames, frames[1:])), key
    evals = [json.loads(line)['step'] for line in (logdir / 'eval_returns.jsonl').open()]
    assert evals == sorted(set(evals)) and evals[-1] == 240


# Each variant at tiny size, compiled as in training, with op determinism: two agents built with
# one seed make the same first updates on the same batch, bit for bit; another seed does not.
FIRST_UPDATES = textwrap.dedent("""
    import json, sys
    import numpy as np
    from dreamer_core import build, registry
    from tests import tiny

    out = {}
    for variant in registry.VARIANTS:
        runs = []
        for seed in (0, 0, 1):
            flags = ['--seed', str(seed), '--deterministic', 'True', '--jit', 'True']
            flags += ['--dataset.batch', '3', '--dataset.length', '9']
            agent, config = tiny.tiny_agent(variant, flags)
            batch = build.synthetic_batch(config, act_dim=6, seed=5)
            runs.append([{k: float(v) for k, v in agent.train(batch).items()} for _ in range(3)])
        out[variant] = runs
    json.dump(out, sys.stdout)
""")


def test_one_seed_gives_the_same_first_updates_and_another_seed_others():
    result = subprocess.run(
        [sys.executable, '-c', FIRST_UPDATES], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(runs) == {'dreamer', 'dreamerpro', 'tpc'}
    for variant, (first, again, other) in runs.items():
        assert len(first) == 3 and len(first[0]) > 10
        assert first == again, variant  # every metric of every update, exactly
        for update, (a, b) in enumerate(zip(first, other)):
            assert a['model_loss'] != b['model_loss'], (variant, update)
