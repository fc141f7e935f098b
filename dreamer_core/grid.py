"""A grid of training runs (variant x task x seed): their commands, their state, one run's process.

The one implementation behind `launch.py` (the grid on Ray) and `benchmarks/learning.py` (runs
one at a time). A run's state is read from its logdir alone, so it can be shown while nothing
runs, from any machine that sees the logdirs:

  done     its last evaluation (eval_returns.jsonl) is at the requested frames
  running  the status file says a process runs it (and, on this host, that process is alive)
  failed   the failure marker written when train.py exited non-zero (exit code, log tail)
  partial  it has a checkpoint or replay episodes, but is not done: starting it again resumes
  new      nothing yet

No Ray here: the launcher wraps `execute` in a Ray task.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from dreamer_core import registry
from dreamer_core.errors import UserError
from dreamer_core.fileio import atomic_write

LOG = 'train.log'
STATUS = 'launch.json'
FAILED = 'failed.json'
CHECKPOINT = 'variables.npz'
TAIL_LINES = 30

# The paper's two grids (DreamerPro, ICML 2022): six tasks each; each agent's blocks on them
# are its registry entry's `standard` or `natural` list.
PRESETS = {
    'standard_dmc': (
        'dmc_cartpole_swingup_sparse',
        'dmc_cheetah_run',
        'dmc_cup_catch',
        'dmc_finger_spin',
        'dmc_reacher_easy',
        'dmc_walker_run',
    ),
    'natural_dmc': (
        'nat_cartpole_swingup',
        'nat_cheetah_run',
        'nat_cup_catch',
        'nat_finger_spin',
        'nat_reacher_easy',
        'nat_walker_run',
    ),
}


class GridError(UserError):
    """A grid that cannot be built (unknown preset, bad seed)."""


def split_blocks(spec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A registry entry's `standard`/`natural` list: (blocks, flags); flags start at `--`."""
    spec = tuple(spec)
    for i, item in enumerate(spec):
        if item.startswith('--'):
            return spec[:i], spec[i:]
    return spec, ()


def flag_value(flags, name):
    """The value of the last `--name value` in `flags`, or None."""
    value = None
    for i, item in enumerate(flags[:-1]):
        if item == f'--{name}':
            value = flags[i + 1]
    return value


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: the variant's own train.py in `{root}/{task}/{method}/{seed}`."""

    variant: str  # registry name
    task: str
    seed: int
    root: str  # absolute: the same path on every machine of a cluster
    blocks: tuple[str, ...]
    flags: tuple[str, ...] = ()

    @property
    def spec(self) -> registry.Variant:
        return registry.get(self.variant)

    @property
    def logdir(self) -> pathlib.Path:
        return pathlib.Path(self.root) / self.task / self.spec.method / str(self.seed)

    @property
    def name(self) -> str:
        return f'{self.task}/{self.spec.method}/{self.seed}'

    def argv(self) -> list[str]:
        """The train.py flags (the seed and task first, so that later flags cannot hide them)."""
        head = ['--logdir', str(self.logdir), '--task', self.task, '--seed', str(self.seed)]
        return head + ['--configs', *self.blocks, *self.flags]

    def command(self, python: str | None = None) -> list[str]:
        """The full command, started in the variant's folder (`cwd`)."""
        return [python or sys.executable, str(self.spec.entry), *self.argv()]

    @property
    def cwd(self) -> pathlib.Path:
        return self.spec.root

    def shell(self, base=None) -> str:
        """The command as one line a user can paste; paths relative to `base` if given."""
        import shlex

        argv = self.argv()
        cwd = str(self.cwd)
        if base is not None:
            argv[1] = os.path.relpath(argv[1], self.cwd)
            cwd = os.path.relpath(cwd, base)
        words = ['python', str(self.spec.entry.relative_to(self.cwd)), *argv]
        return f'cd {shlex.quote(cwd)} && ' + ' '.join(shlex.quote(w) for w in words)

    def total_frames(self) -> int | None:
        """The requested `--steps` in frames (from the flags or the blocks); None if the
        config does not load (train.py then fails with the reason, in the run's log)."""
        steps = flag_value(self.flags, 'steps')
        if steps is None:
            from dreamer_core import config as config_lib

            try:
                return int(config_lib.load(self.argv(), self.spec.dir).steps)
            except UserError:
                return None
        try:
            return int(float(steps))
        except ValueError:
            return None


def setting_of(task: str) -> str:
    """Which of the registry's published block lists a task uses: `natural` for nat_ tasks."""
    return 'natural' if task.startswith('nat_') else 'standard'


def variant_blocks(variant, task, blocks=None, extra_blocks=()):
    """(blocks, flags) of a variant on a task: its published ones (registry `standard` or
    `natural`), the blocks replaced by `blocks` if given, then those of `extra_blocks` that it
    defines (e.g. `small`)."""
    variant = registry.get(variant)
    base, flags = split_blocks(variant.blocks(setting_of(task)))
    if blocks is not None:
        base = tuple(blocks)  # the published flags (Dreamer's --precision 32) stay
    if extra_blocks:
        from dreamer_core import config as config_lib

        known = config_lib.load_blocks(variant.dir)
        base += tuple(b for b in extra_blocks if b in known and b not in base)
    return base, flags


def expand(variants, tasks, seeds, root, blocks=None, flags=(), extra_blocks=()):
    """The runs of variants x tasks x seeds, in that order; `flags` follow each variant's own
    published flags, so they win."""
    root = str(pathlib.Path(root).expanduser().resolve())
    runs = []
    for name in variants:
        variant = registry.get(name)
        for task in tasks:
            own_blocks, own_flags = variant_blocks(variant, task, blocks, extra_blocks)
            for seed in seeds:
                if int(seed) < 0:
                    raise GridError(f'Seed {seed} is negative: use seeds 0, 1, 2, ...')
                all_flags = tuple(own_flags) + tuple(flags)
                runs.append(Run(variant.name, task, int(seed), root, own_blocks, all_flags))
    return runs


def preset(name):
    """The tasks of a preset."""
    if name not in PRESETS:
        raise GridError(f'Unknown preset {name!r}: use one of {", ".join(PRESETS)}.')
    return PRESETS[name]


@dataclasses.dataclass
class State:
    """What a logdir says about its run."""

    name: str
    state: str
    frames: int = 0
    total: int | None = None
    last_return: float | None = None
    wall_s: float | None = None
    exit_code: int | None = None
    tail: str = ''


def read_evals(logdir) -> list[tuple[int, list[float]]]:
    """(frame, returns) of every evaluation in eval_returns.jsonl; a line cut short is skipped."""
    path = pathlib.Path(logdir) / 'eval_returns.jsonl'
    evals = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                evals.append((int(row['step']), [float(x) for x in row['returns']]))
            except (ValueError, KeyError, TypeError):
                continue
    return evals


def last_metric_step(logdir, chunk=65536) -> int:
    """The largest `step` among the last rows of metrics.jsonl (read from its end: runs of
    millions of frames have long files)."""
    path = pathlib.Path(logdir) / 'metrics.jsonl'
    try:
        with open(path, 'rb') as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - chunk))
            lines = f.read().decode('utf-8', 'replace').splitlines()
    except OSError:
        return 0
    steps = []
    for line in lines:
        try:
            steps.append(int(json.loads(line)['step']))
        except (ValueError, KeyError, TypeError):
            continue
    return max(steps, default=0)


def read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path, data):
    text = json.dumps(data, indent=1) + '\n'
    atomic_write(path, lambda f: f.write(text), mode='w')


def saved_total(logdir) -> int | None:
    """The `steps` of the run's config.yaml (frames), if it has one."""
    path = pathlib.Path(logdir) / 'config.yaml'
    if not path.exists():
        return None
    from dreamer_core import config as config_lib

    try:
        return int(config_lib.load_saved(path)[1].steps)
    except (UserError, KeyError, TypeError, ValueError):
        return None


def wall_seconds(logdir, status=None) -> float | None:
    """The run's wall time: from the launcher's status file, else (a run started by hand)
    approximated from its files, first training episode to last evaluation."""
    logdir = pathlib.Path(logdir)
    status = read_json(logdir / STATUS) if status is None else status
    if status and status.get('wall_s') is not None:
        return float(status['wall_s'])
    try:
        first = min(p.stat().st_mtime for p in (logdir / 'train_replay').glob('*.npz'))
        return max(0.0, (logdir / 'eval_returns.jsonl').stat().st_mtime - first)
    except (OSError, ValueError):
        return None


def _alive(status) -> bool:
    """Whether the process of a `running` status is alive; trusted as is on another host."""
    if status.get('host') != socket.gethostname():
        return True
    try:
        os.kill(int(status['pid']), 0)
    except (ProcessLookupError, KeyError, TypeError, ValueError):
        return False
    except PermissionError:
        pass
    return True


def read_state(logdir, total=None, name=None) -> State:
    """The state of the run in `logdir`; `total` is the requested frames (default: its
    config.yaml's `steps`)."""
    logdir = pathlib.Path(logdir)
    total = saved_total(logdir) if total is None else total
    evals = read_evals(logdir)
    status = read_json(logdir / STATUS) or {}
    failed = read_json(logdir / FAILED)
    state = State(name or str(logdir), 'new', total=total, wall_s=wall_seconds(logdir, status))
    if evals:
        state.last_return = sum(evals[-1][1]) / max(len(evals[-1][1]), 1)
    state.frames = max(last_metric_step(logdir), evals[-1][0] if evals else 0)
    if status.get('state') == 'running' and _alive(status):
        state.state = 'running'
    elif total is not None and evals and evals[-1][0] >= total:
        state.state = 'done'
    elif failed is not None:
        state.state = 'failed'
        state.exit_code, state.tail = failed.get('exit_code'), failed.get('tail', '')
    elif (logdir / CHECKPOINT).exists() or any((logdir / 'train_replay').glob('*.npz')):
        state.state = 'partial'
    return state


def run_state(run: Run) -> State:
    return read_state(run.logdir, run.total_frames(), run.name)


def find_logdirs(root) -> list[pathlib.Path]:
    """The run folders `{root}/{task}/{method}/{seed}` under `root` that hold any run file."""
    marks = ('config.yaml', STATUS, FAILED, LOG, 'metrics.jsonl')
    root = pathlib.Path(root)
    found = [p for p in root.glob('*/*/*') if p.is_dir() and any((p / m).exists() for m in marks)]
    return sorted(found)


def _format_frames(state):
    total = '?' if state.total is None else f'{state.total:,}'
    return f'{state.frames:,} / {total}'


def _format_wall(seconds):
    if seconds is None:
        return '-'
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def table(states, tails=True) -> str:
    """A text table of run states; failed runs are followed by the tail of their log."""
    head = ('run', 'state', 'frames done / total', 'last eval return', 'wall time')
    rows = [
        (
            s.name,
            s.state if s.exit_code is None else f'{s.state} (exit {s.exit_code})',
            _format_frames(s),
            '-' if s.last_return is None else f'{s.last_return:.1f}',
            _format_wall(s.wall_s),
        )
        for s in states
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    counts = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(', '.join(f'{n} {k}' for k, n in counts.items()) or 'no runs')
    for s in states:
        if tails and s.state == 'failed' and s.tail:
            lines += ['', f'--- {s.name}: last lines of its {LOG}', s.tail.rstrip()]
    return '\n'.join(lines)


def status_table(root) -> str:
    root = pathlib.Path(root)
    return table([read_state(p, name=str(p.relative_to(root))) for p in find_logdirs(root)])


def log_tail(path, lines=TAIL_LINES, chunk=16384) -> str:
    try:
        with open(path, 'rb') as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - chunk))
            text = f.read().decode('utf-8', 'replace')
    except OSError:
        return ''
    return '\n'.join(text.splitlines()[-lines:])


def _die_with_parent():
    """In the child, before train.py starts: unblock every signal (a Ray worker blocks SIGINT,
    and children inherit the mask, so train.py would never see the stop request), and get
    SIGTERM when the process that started it dies (Linux), so that a killed launcher or Ray
    worker leaves no train.py behind; SIGTERM makes train.py save and exit."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _load_prctl():
    if not sys.platform.startswith('linux'):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def stop(proc, timeout):
    """SIGINT to the run's process group (train.py saves and exits 0); SIGKILL after `timeout`
    seconds; then nothing of the group is left."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything train.py started
    except ProcessLookupError:
        pass


def execute(run: Run, attempt=1, stop_timeout=120.0, poll=0.5) -> int:
    """Run `run` to its end as a subprocess in its own process group, appending to its log;
    returns the exit code. Any exception here, e.g. the KeyboardInterrupt of Ray's cancel or
    of Ctrl-C, first stops train.py (it saves) and then propagates."""
    logdir = run.logdir
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / FAILED).unlink(missing_ok=True)
    status = read_json(logdir / STATUS) or {}
    before = float(status.get('wall_s') or 0.0)
    # The code each start ran: a run resumed after a change of code says so in its record.
    commits = list(status.get('git_commits') or [])
    commit = git_commit()
    if not commits or commits[-1] != commit:
        commits.append(commit)
    command = run.command()
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    start = time.time()
    with open(logdir / LOG, 'ab') as log:
        stamp = time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(start))
        host = socket.gethostname()
        header = f'=== {stamp} UTC on {host}, attempt {attempt}, code {commit}: {run.shell()}\n'
        log.write(header.encode())
        log.flush()
        proc = subprocess.Popen(
            command,
            cwd=run.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        _write_status(logdir, 'running', proc.pid, before, start, attempt, command, commits=commits)
        try:
            while proc.poll() is None:  # a sleep, not wait(): a signal's exception gets in
                time.sleep(poll)
        except BaseException:
            stop(proc, stop_timeout)
            _write_status(
                logdir, 'stopped', proc.pid, before, start, attempt, command, proc, commits
            )
            raise
    code = proc.returncode
    _write_status(logdir, 'exited', proc.pid, before, start, attempt, command, proc, commits)
    if code != 0:
        mark_failed(run, code, attempt)
    return code


def _write_status(logdir, state, pid, before, start, attempt, command, proc=None, commits=()):
    status = {
        'state': state,
        'host': socket.gethostname(),
        'pid': pid,
        'attempt': attempt,
        'started': start,
        'wall_s': before + (time.time() - start if state != 'running' else 0.0),
        'command': command,
        'git_commits': list(commits),
    }
    if proc is not None:
        status['exit_code'] = proc.returncode
    write_json(logdir / STATUS, status)


def mark_failed(run: Run, code, attempt, reason=''):
    """The failure marker: exit code, attempt and the tail of the run's log (or `reason`)."""
    run.logdir.mkdir(parents=True, exist_ok=True)
    tail = reason or log_tail(run.logdir / LOG)
    write_json(run.logdir / FAILED, {'exit_code': code, 'attempt': attempt, 'tail': tail})


def final_return(logdir, frames) -> float | None:
    """The mean return of the evaluation at `frames` (the final one), if there is one."""
    evals = [returns for step, returns in read_evals(logdir) if step == frames]
    if not evals or not evals[-1]:
        return None
    return sum(evals[-1]) / len(evals[-1])


# The learning benchmark's results (benchmarks/learning.py): one record per finished run.
RESULT_KEYS = (
    'variant',
    'task',
    'seed',
    'frames',
    'wall_s',
    'final_return',
    'random_return',
    'command',
    'git_commit',
    'cpu_model',
)


def cpu_model() -> str:
    from dreamer_core import hardware

    return hardware.cpu_info()[0]


def git_commit() -> str:
    """The commit of the code, with `-dirty` when files differ from it."""
    git = lambda *a: subprocess.run(
        ['git', *a], cwd=registry.REPO, capture_output=True, text=True
    ).stdout.strip()
    commit = git('rev-parse', 'HEAD') or 'unknown'
    return commit + ('-dirty' if git('status', '--porcelain', '--untracked-files=no') else '')


def result_record(run: Run, random_return: float) -> dict:
    """The results record of a finished run (its final evaluation at the requested frames)."""
    frames = run.total_frames()
    final = final_return(run.logdir, frames)
    if final is None:
        raise GridError(f'{run.name} has no evaluation at frame {frames}: it is not finished.')
    record = {
        'variant': run.variant,
        'task': run.task,
        'seed': run.seed,
        'frames': frames,
        'wall_s': wall_seconds(run.logdir),
        'final_return': final,
        'random_return': random_return,
        'command': record_command(run),
        'git_commit': run_commits(run.logdir),
        'cpu_model': cpu_model(),
    }
    return {key: record[key] for key in RESULT_KEYS}


def checkout_root(path) -> pathlib.Path | None:
    """The nearest folder above `path` that is a checkout of this project (it holds
    dreamer_core/registry.py), or None."""
    for folder in pathlib.Path(path).resolve().parents:
        if (folder / 'dreamer_core' / 'registry.py').is_file():
            return folder
    return None


def record_command(run: Run) -> str:
    """The run's command as a user would type it in a clone of the repository: when the logdir
    lies in a checkout of the project (this one, or another worktree of it that ran the run),
    its path is taken relative to that checkout, so the same command works from any clone."""
    root = checkout_root(run.logdir)
    if root is not None and root != registry.REPO.resolve():
        relative = pathlib.Path(run.root).resolve().relative_to(root)
        run = dataclasses.replace(run, root=str(registry.REPO / relative))
    return run.shell(base=registry.REPO)


def run_commits(logdir) -> str:
    """The commit(s) of the code a run ran, from its starts ('A then B' when it was resumed on
    other code); the current one for a run started by hand."""
    commits = (read_json(pathlib.Path(logdir) / STATUS) or {}).get('git_commits')
    return ' then '.join(commits) if commits else git_commit()


def read_results(path) -> list[dict]:
    data = read_json(path)
    if data is None:
        return []
    if not isinstance(data, list):
        raise GridError(f'{path} is not a list of runs: move it away to start new results.')
    return data


def find_result(results, run: Run, frames) -> dict | None:
    for record in results:
        key = (record.get('variant'), record.get('task'), record.get('seed'), record.get('frames'))
        if key == (run.variant, run.task, run.seed, frames):
            return record
    return None


def add_result(path, record: dict) -> list[dict]:
    """Add (or replace) the record of one run at one frame budget in the results file,
    atomically. A run continued in the same logdir to a larger budget keeps the record of the
    smaller one: its evaluation at that budget stays in the run's files, so both budgets can be
    compared across variants."""
    key = (record['variant'], record['task'], record['seed'], record['frames'])
    results = [
        r
        for r in read_results(path)
        if (r.get('variant'), r.get('task'), r.get('seed'), r.get('frames')) != key
    ]
    results.append(record)
    write_json(path, results)
    return results
