"""Faults a long run meets (issue 17), at tiny size on the real Dreamer train.py: unreadable and
foreign files in a fresh logdir, and a full disk at the first write of each kind that comes
before the first save. Every case of tests/faultcases.py, signals at each phase included, runs in
benchmarks/faults.py, which prints the table of the README's reliability section."""

import json

import numpy as np

from dreamer_core.replay import Replay, load_episode
from tests import faultcases
from tests.faultcases import CASES, disk_state, last_line, train
from tests.test_replay import bad_files


def output(result):
    return f'--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}'


def real_episode(steps=10):
    rows = steps + 1
    rng = np.random.default_rng(0)
    return {
        'image': rng.integers(0, 256, (rows, 64, 64, 3), dtype=np.uint8),
        'action': rng.uniform(-1, 1, (rows, 6)).astype(np.float32),
        'reward': rng.uniform(0, 1, rows).astype(np.float32),
        'discount': np.ones(rows, np.float32),
        'reset': np.arange(rows) == 0,
        'done': np.arange(rows) == steps,
    }


def test_unreadable_and_foreign_files_in_a_fresh_logdir(tmp_path):
    logdir = tmp_path / 'run'
    # A crash while copying replay files: one whole episode, and bad files named like episodes.
    good = Replay(logdir / 'train_replay').add(real_episode())
    bad = bad_files(logdir / 'train_replay', good)  # their names claim 5 steps each
    (logdir / 'eval_replay').mkdir()
    (logdir / 'eval_replay' / f'20200101T000000-{"e" * 32}-10.npz').write_bytes(b'\0' * 100)
    foreign = {
        logdir / 'notes.txt': b'my notes',
        logdir / 'old' / 'metrics.jsonl': b'{"step": 1}\n',
        logdir / 'train_replay' / 'README': b'episodes',
        logdir / 'variables.npz.tmp': b'half a checkpoint',
    }
    for path, data in foreign.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)

    result = train(logdir, '--pretrain', '1', '--eval_eps', '0')
    assert result.returncode == 0, output(result)
    # Only the good episode counts: the prefill collects the other 10 of its 20 steps.
    assert 'Prefill dataset (10 steps, 20 frames).' in result.stdout, output(result)
    assert f'Finished {faultcases.STEPS} frames.' in result.stdout
    for path in [*bad.values(), *(logdir / 'eval_replay').glob('*.npz')]:
        warned = [line for line in result.stderr.splitlines() if 'Skipping' in line]
        assert sum(path.name in line for line in warned) == 1, path
    assert 'Traceback' not in result.stderr
    for path, data in foreign.items():
        if path.name != 'variables.npz.tmp':  # a stale save is replaced by the next one
            assert path.read_bytes() == data, path
    # eval_eps 0: no evaluation at all, and metrics.jsonl stays strict JSON.
    assert 'Start evaluation.' not in result.stdout
    assert faultcases.metrics_valid(logdir)
    rows = [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]
    assert rows and not any('eval_return' in row for row in rows)
    assert len(list((logdir / 'eval_replay').glob('*.npz'))) == 1  # only the bad file
    state = disk_state(logdir, foreign=[*bad.values(), *(logdir / 'eval_replay').glob('*.npz')])
    assert all(state.values()), state
    assert faultcases.checkpoint_loads(logdir)


DISK_FULL_CI = ['disk full: config.yaml', 'disk full: replay episode', 'disk full: checkpoint']


def test_disk_full_at_each_write_before_the_first_save_then_resume(tmp_path):
    logdir = tmp_path / 'run'
    cases = {case.name: case for case in CASES}
    for name in DISK_FULL_CI:  # one logdir: each run resumes what the previous one left
        case = cases[name]
        result = train(logdir, *case.args, env=case.env)
        assert result.returncode == 1, f'{name}\n' + output(result)
        assert last_line(result.stderr).startswith(f'error: {faultcases.DISK_FULL}'), output(result)
        assert result.stderr.count('error:') == 1 and 'Traceback' not in result.stderr
        assert 'Free space there, then run the same command to resume' in result.stderr
        state = disk_state(logdir)
        assert all(state.values()), (name, state)
        if name == 'disk full: config.yaml':
            assert not (logdir / 'config.yaml').exists()
            assert not list((logdir / 'train_replay').glob('*'))
        if name == 'disk full: replay episode':
            # The first prefill episode was stored, the second failed and is not there.
            assert len(list((logdir / 'train_replay').glob('*.npz'))) == 1
            assert (logdir / 'config.yaml').exists()
        if name == 'disk full: checkpoint':
            assert 'Saved checkpoint' not in result.stdout
            assert not (logdir / 'variables.npz').exists()
    # A broken checkpoint left by hand (e.g. a partial copy) is refused with the way out.
    (logdir / 'variables.npz').write_bytes(b'PK\x03\x04 not a whole archive')
    refused = train(logdir, '--pretrain', '1')
    assert refused.returncode == 2, output(refused)
    assert last_line(refused.stderr).startswith('error: Cannot read checkpoint'), output(refused)
    assert 'Delete it to start the agent from scratch (replay is kept)' in refused.stderr
    (logdir / 'variables.npz').unlink()
    resumed = train(logdir, '--pretrain', '1')
    assert resumed.returncode == 0, output(resumed)
    assert f'Finished {faultcases.STEPS} frames.' in resumed.stdout
    assert faultcases.checkpoint_loads(logdir) and all(disk_state(logdir).values())
    for path in (logdir / 'train_replay').glob('*.npz'):
        load_episode(path)
