"""launch.py end to end on a local Ray: a tiny grid, a failing run, Ctrl-C mid-grid, resume."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e import REPO
from tests.tiny import TINY_MODEL

pytest.importorskip('ray')

FRAMES = 160
# Flags valid for both Dreamer and TPC (Dreamer keeps its default decoder): prefill 80 frames,
# evaluations at 80 and 160, each run's one training chunk in between.
TINY = [
    *f'--precision 32 --jit False --time_limit 40 --prefill 80 --steps {FRAMES}'.split(),
    *'--eval_every 80 --eval_eps 1 --log_every 80 --pretrain 1 --train_every 10'.split(),
    *'--dataset.batch 3 --dataset.length 8'.split(),
    *TINY_MODEL,
]
GOOD = ['dmc_cartpole_swingup/dreamer/1', 'dmc_cartpole_swingup/dreamer/2']
GOOD += ['dmc_cartpole_swingup/tpc/1', 'dmc_cartpole_swingup/tpc/2']


def launch_cmd(root, tasks, *extra):
    return [
        sys.executable,
        str(REPO / 'launch.py'),
        *('--variants dreamer tpc --seeds 1 2 --num-cpus 2 --cpus-per-run 1'.split()),
        *('--stop-timeout', '60', '--root', str(root), '--tasks', *tasks, *extra),
        '--',
        *TINY,
    ]


def launch(root, tasks, *extra, timeout=900):
    return subprocess.run(
        launch_cmd(root, tasks, *extra), capture_output=True, text=True, timeout=timeout
    )


def processes_under(root):
    """Pids of processes whose command line mentions `root` (train.py of this grid)."""
    pids = []
    for proc in pathlib.Path('/proc').iterdir():
        try:
            if proc.name.isdigit() and str(root) in (proc / 'cmdline').read_text():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f'timed out waiting for {what}')


def log(root, name):
    path = root / name / 'train.log'
    return path.read_text() if path.exists() else ''


def test_grid_interrupt_resume_fail_and_status(tmp_path):
    root = tmp_path / 'log'
    # First session: interrupted (SIGINT, as Ctrl-C) once two runs have started training.
    first = subprocess.Popen(
        launch_cmd(root, ['dmc_cartpole_swingup']),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        started = lambda: [n for n in GOOD if 'Start training.' in log(root, n)]
        wait_for(lambda: len(started()) >= 2, 600, 'two runs to start training')
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=200)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 130, out
    assert processes_under(root) == [], 'a train.py outlived the launcher'
    status = subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), 'status', str(root)],
        capture_output=True,
        text=True,
    )
    rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[1:]}
    interrupted = [name for name in GOOD if rows.get(name) == 'partial']
    assert interrupted, status.stdout  # the runs that were training when Ctrl-C came
    assert all(rows.get(name) != 'running' for name in GOOD), status.stdout
    for name in interrupted:
        text = log(root, name)
        assert 'Stopped at frame' in text, text[-2000:]  # train.py's own clean stop
        assert (root / name / 'variables.npz').exists()

    # Second session: the grid plus a task that fails (an unknown suite), retried once.
    second = launch(root, ['dmc_cartpole_swingup', 'bad_task'], '--retries', '1')
    assert second.returncode == 1, second.stdout + second.stderr
    assert processes_under(root) == []
    for name in GOOD:
        text = log(root, name)
        assert text.count('Prefill dataset') == 1, text  # never restarted from zero
        assert name not in interrupted or 'Resumed agent' in text, text
        rows = [json.loads(line) for line in (root / name / 'metrics.jsonl').open()]
        assert max(row['step'] for row in rows) == FRAMES
        evals = [json.loads(line) for line in (root / name / 'eval_returns.jsonl').open()]
        assert [row['step'] for row in evals] == [80, FRAMES]
    for seed in (1, 2):
        bad = json.loads((root / f'bad_task/tpc/{seed}/failed.json').read_text())
        assert bad['exit_code'] == 2 and bad['attempt'] == 2
        assert 'Unknown task suite' in bad['tail']
    status = subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), 'status', str(root)],
        capture_output=True,
        text=True,
    )
    table = {line.split()[0]: line.split()[1:] for line in status.stdout.splitlines()[1:9]}
    for name in GOOD:
        assert table[name][:4] == ['done', f'{FRAMES}', '/', f'{FRAMES}'], status.stdout
    assert table['bad_task/dreamer/1'][:3] == ['failed', '(exit', '2)'], status.stdout
    summary = status.stdout.splitlines()[9].split(', ')
    assert sorted(summary) == ['4 done', '4 failed'], status.stdout
    assert 'Unknown task suite' in status.stdout  # the tail of the failed runs' logs

    # Third session: everything done, so nothing starts (and Ray is not even started).
    logs = {name: log(root, name) for name in GOOD}
    third = launch(root, ['dmc_cartpole_swingup'], timeout=120)
    assert third.returncode == 0, third.stdout + third.stderr
    assert '4 runs: 0 to start' in third.stdout
    assert {name: log(root, name) for name in GOOD} == logs
