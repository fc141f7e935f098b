"""One run per logdir (dreamer_core/runlock.py) and a logdir keeps its identity
(dreamer_core/identity.py): unit tests with plain processes, then the real train.py."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from dreamer_core import identity, registry, runlock
from dreamer_core.config import ConfigError, load, save_run
from tests.e2e import REPO
from tests.test_config import VARIANTS

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
import pathlib
from dreamer_core import runlock
runlock.acquire(pathlib.Path({logdir!r}))
print('locked', flush=True)
time.sleep(60)
"""


def hold_lock(logdir):
    """A process that holds logdir's lock until killed; returns once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, '-c', HOLD.format(repo=str(REPO), logdir=str(logdir))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == 'locked'
    return proc


def try_lock(logdir):
    code = (
        f'import sys, pathlib; sys.path.insert(0, {str(REPO)!r}); '
        'from dreamer_core import runlock\n'
        'try:\n'
        f'    runlock.acquire(pathlib.Path({str(logdir)!r}))\n'
        'except runlock.LockError as e:\n'
        '    print(e); sys.exit(2)\n'
    )
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)


def test_second_process_is_refused_naming_host_and_pid(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        result = try_lock(tmp_path)
        assert result.returncode == 2, result.stderr
        line = result.stdout.strip()
        assert '\n' not in line
        assert f'in use by another run: PID {holder.pid} on host {socket.gethostname()}' in line
        assert 'choose another --logdir' in line
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock, and its record is stale: the next run starts.
    result = try_lock(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / runlock.LOCK_NAME).read_text() or 'null') is None  # cleared


def dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def write_record(logdir, **holder):
    record = {'host': socket.gethostname(), 'since': '2026-01-01T00:00:00', **holder}
    (logdir / runlock.LOCK_NAME).write_text(json.dumps(record))


def test_record_of_a_dead_process_on_this_host_is_stale(tmp_path):
    write_record(tmp_path, pid=dead_pid(), start=1)
    assert try_lock(tmp_path).returncode == 0


def test_live_holder_recorded_on_this_host_blocks_even_without_os_lock(tmp_path):
    # What a network filesystem that grants every OS lock looks like: only the record is left.
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        write_record(tmp_path, pid=sleeper.pid, start=runlock._start_time(sleeper.pid))
        result = try_lock(tmp_path)
        assert result.returncode == 2 and f'PID {sleeper.pid} on host' in result.stdout
        # The same PID with another start time is a reused PID: the record is stale.
        write_record(tmp_path, pid=sleeper.pid, start=runlock._start_time(sleeper.pid) + 1)
        assert try_lock(tmp_path).returncode == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_record_from_another_host_trusts_the_free_os_lock(tmp_path):
    write_record(tmp_path, host='some-other-node', pid=os.getpid(), start=None)
    assert try_lock(tmp_path).returncode == 0


# --- Identity ----------------------------------------------------------------------------------

FLAGS = ['--configs', 'defaults', 'dmc']


def started(tmp_path, *flags, variant='Dreamer'):
    config = load([*FLAGS, '--logdir', str(tmp_path), *flags], VARIANTS[variant])
    save_run(config, tmp_path / 'config.yaml', registry.get(variant).name)
    return config


def check(tmp_path, *flags, variant='Dreamer'):
    config = load([*FLAGS, '--logdir', str(tmp_path), *flags], VARIANTS[variant])
    return identity.check(config, registry.get(variant).name, tmp_path)


def test_config_yaml_records_variant_and_blocks(tmp_path):
    started(tmp_path)
    text = (tmp_path / 'config.yaml').read_text()
    assert text.startswith('variant: dreamer\nconfigs: [defaults, dmc]\n')


@pytest.mark.parametrize(
    'flags',
    [
        ['--steps', '2000'],
        ['--eval_every', '500'],
        ['--log_every', '100'],
        ['--eval_eps', '3'],
        ['--model_opt.lr', '1e-3'],
        ['--dataset.batch', '4'],
        ['--jit', 'False'],
    ],
)
def test_keys_that_may_change_on_resume(tmp_path, flags):
    started(tmp_path)
    assert check(tmp_path, *flags) == {}


@pytest.mark.parametrize(
    'flags,key,old,new',
    [
        (['--task', 'dmc_walker_run'], 'task', "'dmc_walker_walk'", "'dmc_walker_run'"),
        (['--seed', '3'], 'seed', '0', '3'),
        (['--precision', '32'], 'precision', '16', '32'),
        (['--action_repeat', '4'], 'action_repeat', '2', '4'),
        (['--rssm.deter', '64'], 'rssm.deter', '200', '64'),
        (['--decoder.depth', '8'], 'decoder.depth', '48', '8'),
        (['--actor.units', '8'], 'actor.units', '400', '8'),
        (['--grayscale', 'True'], 'grayscale', 'False', 'True'),
    ],
)
def test_keys_that_define_a_run_are_refused_naming_old_and_new(tmp_path, flags, key, old, new):
    started(tmp_path)
    with pytest.raises(ConfigError) as info:
        check(tmp_path, *flags)
    message = str(info.value)
    assert '\n' not in message and f'{key}: ' in message
    assert old in message.split(' then, ')[0] and new in message.split(' then, ')[1]
    assert '--allow_changed_config True' in message and 'new --logdir' in message
    changed = check(tmp_path, *flags, '--allow_changed_config', 'True')
    assert list(changed) == [key]


def test_another_variant_is_refused(tmp_path):
    started(tmp_path, variant='TPC')
    with pytest.raises(ConfigError) as info:
        check(tmp_path)
    message = str(info.value)
    assert "variant: 'tpc' then, 'dreamer' now" in message
    assert "rssm.posterior_std: 'prior' then, 'learned' now" in message
    assert "rssm.warm_up: 1 then, absent now" in message
    assert "decoder.depth: absent then, 48 now" in message


def test_unreadable_config_yaml_is_refused_unless_allowed(tmp_path):
    (tmp_path / 'config.yaml').write_bytes(b'\x00\xff[unclosed: {')
    with pytest.raises(ConfigError, match='config.yaml records which run this logdir holds'):
        check(tmp_path)
    assert check(tmp_path, '--allow_changed_config', 'True') == {}


# --- The real train.py -------------------------------------------------------------------------


def test_train_py_one_run_per_logdir_and_identity(tmp_path):
    from tests.test_robustness import command, output, snapshot, train

    logdir = tmp_path / 'run'
    first = subprocess.Popen(
        command(logdir, '--steps', '400'),
        cwd=REPO / 'Dreamer',
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED='1'),
    )
    try:
        for line in first.stdout:
            if line.startswith('Prefill dataset'):  # config.yaml written, lock held
                break
        second = train(logdir, '--steps', '400')
        assert second.returncode == 2, output(second)
        assert second.stderr.count('\n') == 1, output(second)
        assert f'in use by another run: PID {first.pid} on host {socket.gethostname()}' in (
            second.stderr
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    before = snapshot(logdir)
    other_task = train(logdir, '--steps', '400', '--task', 'dmc_walker_run')
    assert other_task.returncode == 2, output(other_task)
    assert other_task.stderr.count('\n') == 1, output(other_task)
    assert "task: 'dmc_walker_walk' then, 'dmc_walker_run' now" in other_task.stderr
    assert snapshot(logdir) == before  # refused before anything was written

    # The killed run's lock is stale, and --steps may change: the same logdir resumes.
    resumed = train(logdir, '--steps', '40')
    assert resumed.returncode == 0, output(resumed)
    assert 'Finished 40 frames.' in resumed.stdout, output(resumed)
