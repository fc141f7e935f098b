"""Faults a long run meets, injected into the real Dreamer train.py at tiny size.

Shared by tests/test_faults.py (the cases fast enough for CI) and benchmarks/faults.py (every
case, printed as a table). A case runs the train.py command once with a fault, checks what the
user saw and what is on disk, then runs the same command again without the fault and checks
that it resumes and finishes. Faults come from dreamer_core/faults.py: DREAMER_FAIL_AT makes a
write fail with ENOSPC, DREAMER_KILL_AT sends a signal at a phase of the run.
"""

import dataclasses
import json
import pathlib

import numpy as np

from dreamer_core.replay import load_episode
from tests.e2e import run_variant

# 10-step episodes (20 frames at action repeat 2), a 20-step prefill, one evaluation episode.
FAST = '--time_limit 20 --prefill 40 --eval_every 40 --eval_eps 1 --log_every 1000'.split()
STEPS = 80
REPLAY_DIRS = ('train_replay', 'eval_replay')


def train(logdir, *args, env=None):
    """The tiny run's command (later flags win, so `args` may change --steps)."""
    return run_variant('Dreamer', logdir, *FAST, '--steps', str(STEPS), *args, env=env)


@dataclasses.dataclass
class Case:
    name: str
    env: dict
    code: int  # the exit code the user sees
    line: str  # text of the last stderr line ('' when the run ends normally)
    args: tuple = ('--pretrain', '1')

    @property
    def steps(self):
        flags = dict(zip(self.args[::2], self.args[1::2]))
        return int(flags.get('--steps', STEPS))


DISK_FULL = 'No space left on device while writing'
STOPPED = 'Stopped at frame'
CASES = [
    Case('disk full: config.yaml', {'DREAMER_FAIL_AT': 'config:1'}, 1, DISK_FULL),
    Case('disk full: replay episode', {'DREAMER_FAIL_AT': 'episode:2'}, 1, DISK_FULL),
    Case('disk full: metrics.jsonl', {'DREAMER_FAIL_AT': 'metrics:2'}, 1, DISK_FULL),
    Case('disk full: TensorBoard', {'DREAMER_FAIL_AT': 'tensorboard:2'}, 1, DISK_FULL),
    Case('disk full: checkpoint', {'DREAMER_FAIL_AT': 'checkpoint:1'}, 1, DISK_FULL),
    Case('SIGKILL in pretrain', {'DREAMER_KILL_AT': 'pretrain:1'}, -9, '', ('--pretrain', '3')),
    Case('SIGKILL in evaluation', {'DREAMER_KILL_AT': 'eval:1'}, -9, ''),
    Case('SIGTERM in prefill', {'DREAMER_KILL_AT': 'prefill:5:SIGTERM'}, 0, ''),
    Case(
        'SIGINT in pretrain', {'DREAMER_KILL_AT': 'pretrain:1:SIGINT'}, 0, '', ('--pretrain', '3')
    ),
    Case('SIGTERM in evaluation', {'DREAMER_KILL_AT': 'eval:1:SIGTERM'}, 0, ''),
    # Update 1 builds the agent, update 2 is the pretraining one: update 3 is in training.
    Case('SIGINT in training', {'DREAMER_KILL_AT': 'train:3:SIGINT'}, 0, ''),
    # The first save (at 80 frames) must not be the last, or the run just finishes.
    Case(
        'SIGTERM while saving',
        {'DREAMER_KILL_AT': 'checkpoint:1:SIGTERM'},
        0,
        '',
        ('--pretrain', '1', '--steps', '120'),
    ),
]


def last_line(text):
    return (text.strip().splitlines() or [''])[-1]


def leftovers(logdir):
    """Temporary files a write left behind, anywhere in the logdir."""
    return sorted(str(p.relative_to(logdir)) for p in logdir.rglob('*') if p.name.endswith('.tmp'))


def checkpoint_loads(logdir):
    """None without a checkpoint, else whether every array of it reads."""
    path = logdir / 'variables.npz'
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data['meta']))
        return all(data[key] is not None for key in data.files) and bool(meta['names'])


def replay_readable(logdir, foreign=()):
    """Every stored episode loads completely (the file name's length matches its rows);
    `foreign` files, put there by the test, are left out."""
    for name in REPLAY_DIRS:
        for path in set((logdir / name).glob('*.npz')) - set(foreign):
            episode = load_episode(path)
            if not path.stem.endswith(f'-{len(episode["action"]) - 1}'):
                return False
    return True


def metrics_valid(logdir):
    """metrics.jsonl is strict JSON, one object per line (NaN or a half line would fail)."""
    path = logdir / 'metrics.jsonl'
    if not path.exists():
        return True

    def refuse(constant):
        raise ValueError(f'{constant} is not JSON')

    try:
        rows = [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]
    except ValueError:
        return False
    return all(isinstance(row, dict) and 'step' in row for row in rows)


@dataclasses.dataclass
class Outcome:
    case: Case
    first: object  # CompletedProcess of the faulty run
    resumed: object  # CompletedProcess of the same command, without the fault
    after_fault: dict  # disk state after the faulty run

    def problems(self):
        """What differs from the case's promise; empty when the case holds."""
        found = []
        first, case = self.first, self.case
        if first.returncode != case.code:
            found.append(f'exit {first.returncode}, expected {case.code}')
        if case.line:
            if not last_line(first.stderr).startswith(f'error: {case.line}'):
                found.append(f'last line {last_line(first.stderr)!r}')
            if first.stderr.count('error:') != 1:
                found.append('not exactly one error line')
        if case.code == 0 and STOPPED not in first.stdout:
            found.append('no "Stopped at frame" line')
        if 'Traceback' in first.stderr:
            found.append('traceback')
        for key, ok in self.after_fault.items():
            if not ok:
                found.append(f'after the fault: {key}')
        finished = f'Finished {case.steps} frames.' in self.resumed.stdout
        if self.resumed.returncode != 0 or not finished:
            found.append(
                f'resume: exit {self.resumed.returncode}, {last_line(self.resumed.stderr)}'
            )
        return found


def disk_state(logdir, foreign=()):
    return {
        'no temporary files': not leftovers(logdir),
        'checkpoint loads (or none yet)': checkpoint_loads(logdir) is not False,
        'replay readable': replay_readable(logdir, foreign),
        'metrics.jsonl valid': metrics_valid(logdir),
    }


def run_case(case, logdir):
    logdir = pathlib.Path(logdir)
    first = train(logdir, *case.args, env=case.env)
    after = disk_state(logdir)
    resumed = train(logdir, *case.args)
    return Outcome(case, first, resumed, after)
