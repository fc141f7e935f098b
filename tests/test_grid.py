"""The grid logic (dreamer_core/grid.py) on synthetic logdirs, and the launchers' dry runs."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from dreamer_core import config as config_lib
from dreamer_core import grid, registry

REPO = pathlib.Path(__file__).resolve().parents[1]


def write_evals(logdir, evals):
    logdir.mkdir(parents=True, exist_ok=True)
    with open(logdir / 'eval_returns.jsonl', 'w') as f:
        for step, returns in evals:
            f.write(json.dumps({'step': step, 'returns': returns}) + '\n')


def write_metrics(logdir, steps, cut=False):
    logdir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({'step': s, 'model_loss': 1.0}) for s in steps]
    text = '\n'.join(lines) + '\n' + ('{"step": 99999, "mod' if cut else '')
    (logdir / 'metrics.jsonl').write_text(text)


def test_expand_layout_blocks_and_flags(tmp_path):
    runs = grid.expand(
        ['dreamer', 'dreamerpro'],
        ['dmc_walker_run', 'nat_walker_run'],
        [1, 2],
        tmp_path,
        flags=['--steps', '5000'],
    )
    assert len(runs) == 8
    by_name = {run.name: run for run in runs}
    pro = by_name['dmc_walker_run/dreamer_pro/2']
    assert pro.logdir == tmp_path / 'dmc_walker_run' / 'dreamer_pro' / '2'
    assert pro.blocks == ('defaults', 'dmc', 'norm_off')
    assert by_name['nat_walker_run/dreamer_pro/1'].blocks == ('defaults', 'dmc', 'reward_1000')
    nat = by_name['nat_walker_run/dreamer/1']
    assert nat.flags == ('--precision', '32', '--steps', '5000')  # the user's flags come last
    command = nat.command('python')
    assert command[1] == str(registry.get('dreamer').entry) and nat.cwd == REPO / 'Dreamer'
    assert command[2:10] == [
        '--logdir',
        str(nat.logdir),
        '--task',
        'nat_walker_run',
        '--seed',
        '1',
        '--configs',
        'defaults',
    ]
    # --configs replaces the blocks, not the published flags.
    (run,) = grid.expand(['dreamer'], ['nat_cup_catch'], [3], tmp_path, blocks=['defaults'])
    assert run.blocks == ('defaults',) and run.flags == ('--precision', '32')


def test_total_frames_from_flags_blocks_or_none(tmp_path):
    (run,) = grid.expand(['tpc'], ['dmc_cup_catch'], [1], tmp_path, flags=['--steps', '2.5e4'])
    assert run.total_frames() == 25000
    (run,) = grid.expand(['tpc'], ['dmc_cup_catch'], [1], tmp_path)
    assert run.total_frames() == 1_000_000  # `steps` of dreamer_core/configs.yaml
    (run,) = grid.expand(['tpc'], ['dmc_cup_catch'], [1], tmp_path, flags=['--nosuch', '1'])
    assert run.total_frames() is None  # train.py reports the bad flag in the run's log


def test_unknown_preset_and_negative_seed(tmp_path):
    with pytest.raises(grid.GridError, match='standard_dmc'):
        grid.preset('standard')
    with pytest.raises(grid.GridError, match='negative'):
        grid.expand(['tpc'], ['dmc_cup_catch'], [-1], tmp_path)
    assert len(grid.preset('natural_dmc')) == 6
    assert all(task.startswith('nat_') for task in grid.preset('natural_dmc'))


def test_state_new_partial_done_failed_running(tmp_path):
    new = tmp_path / 'new'
    new.mkdir()
    assert grid.read_state(new, total=100).state == 'new'

    replay_only = tmp_path / 'replay'
    (replay_only / 'train_replay').mkdir(parents=True)
    (replay_only / 'train_replay' / 'a-b-20.npz').write_bytes(b'')
    assert grid.read_state(replay_only, total=100).state == 'partial'

    partial = tmp_path / 'partial'
    write_evals(partial, [(0, [1.0]), (40, [2.0, 4.0])])
    write_metrics(partial, [20, 40, 60], cut=True)  # a last line cut short by a crash
    (partial / 'variables.npz').write_bytes(b'')
    state = grid.read_state(partial, total=100)
    assert (state.state, state.frames, state.total, state.last_return) == ('partial', 60, 100, 3.0)

    done = tmp_path / 'done'
    write_evals(done, [(50, [1.0]), (100, [5.0, 7.0])])
    assert grid.read_state(done, total=100).state == 'done'
    assert grid.read_state(done, total=200).state == 'new'  # asked for more: not done

    failed = tmp_path / 'failed'
    (failed / 'variables.npz').parent.mkdir()
    (failed / 'variables.npz').write_bytes(b'')
    grid.write_json(failed / grid.FAILED, {'exit_code': 2, 'attempt': 1, 'tail': 'error: x'})
    state = grid.read_state(failed, total=100)
    assert (state.state, state.exit_code, state.tail) == ('failed', 2, 'error: x')

    running = tmp_path / 'running'
    running.mkdir()
    status = {'state': 'running', 'host': os.uname().nodename, 'pid': os.getpid()}
    grid.write_json(running / grid.STATUS, status)
    assert grid.read_state(running, total=100).state == 'running'
    dead = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'], text=True, capture_output=True
    ).stdout
    grid.write_json(running / grid.STATUS, {**status, 'pid': int(dead)})
    assert grid.read_state(running, total=100).state == 'new'  # a stale status is ignored


def test_state_total_from_config_yaml(tmp_path):
    logdir = tmp_path / 'run'
    write_evals(logdir, [(300, [1.0])])
    (logdir / 'config.yaml').write_text('variant: tpc\nconfigs: [defaults]\nsteps: 300\n')
    assert grid.read_state(logdir).state == 'done'
    (logdir / 'config.yaml').write_text('variant: tpc\nconfigs: [defaults]\nsteps: 400\n')
    assert grid.read_state(logdir).state == 'new'


def test_status_table(tmp_path):
    done = tmp_path / 'dmc_cup_catch' / 'tpc' / '1'
    write_evals(done, [(100, [10.0, 20.0])])
    write_metrics(done, [100])
    (done / 'config.yaml').write_text('variant: tpc\nconfigs: [defaults]\nsteps: 100\n')
    grid.write_json(done / grid.STATUS, {'state': 'exited', 'wall_s': 3725.0})
    failed = tmp_path / 'dmc_cup_catch' / 'dreamer' / '2'
    failed.mkdir(parents=True)
    grid.write_json(failed / grid.FAILED, {'exit_code': 1, 'tail': 'Traceback: boom'})
    (tmp_path / 'stray').mkdir()  # not a run folder
    lines = grid.status_table(tmp_path).splitlines()
    assert lines[0].split()[:2] == ['run', 'state']
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows['dmc_cup_catch/tpc/1'][1:] == ['done', '100', '/', '100', '15.0', '1:02:05']
    assert rows['dmc_cup_catch/dreamer/2'][1:4] == ['failed', '(exit', '1)']
    assert '1 failed, 1 done' in lines or '1 done, 1 failed' in lines
    assert 'Traceback: boom' in lines


def test_results_record_schema_and_replace(tmp_path):
    (run,) = grid.expand(['tpc'], ['dmc_cup_catch'], [2], tmp_path, flags=['--steps', '200'])
    write_evals(run.logdir, [(100, [1.0]), (200, [30.0, 50.0])])
    with pytest.raises(grid.GridError, match='not finished'):
        grid.result_record(
            grid.expand(['tpc'], ['dmc_cup_catch'], [2], tmp_path, flags=['--steps', '300'])[0],
            5.0,
        )
    grid.write_json(run.logdir / grid.STATUS, {'state': 'exited', 'wall_s': 12.5})
    path = tmp_path / 'learning.json'
    record = grid.result_record(run, 20.0)
    grid.add_result(path, record)
    grid.add_result(path, {**record, 'seed': 3})
    grid.add_result(path, {**record, 'final_return': 41.0})  # the same run again: replaced
    data = json.loads(path.read_text())
    assert [r['seed'] for r in data] == [3, 2] and data[1]['final_return'] == 41.0
    assert list(data[0]) == list(grid.RESULT_KEYS)
    assert record['final_return'] == 40.0 and record['random_return'] == 20.0
    assert (record['variant'], record['task'], record['frames'], record['wall_s']) == (
        'tpc',
        'dmc_cup_catch',
        200,
        12.5,
    )
    assert record['command'].startswith('cd TPC && python dreamerv2/train.py --logdir ')
    assert isinstance(record['git_commit'], str) and isinstance(record['cpu_model'], str)
    assert grid.find_result(data, run, 200) is not None
    assert grid.find_result(data, run, 300) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ['dmc_cup_catch', 'learning.json']
    # The same run continued to more frames: both budgets' records stay, as do other runs.
    grid.add_result(path, {**record, 'frames': 400, 'final_return': 60.0})
    data = json.loads(path.read_text())
    assert [(r['seed'], r['frames']) for r in data] == [(3, 200), (2, 200), (2, 400)]
    assert grid.find_result(data, run, 200)['final_return'] == 41.0
    path.write_text('{"not": "a list"}')
    with pytest.raises(grid.GridError, match='not a list'):
        grid.read_results(path)


def test_results_command_is_relative_to_the_checkout_that_holds_the_logdir(tmp_path):
    """A run written into another checkout (e.g. a second worktree running the jobs) is recorded
    with the command a user types in any clone; a logdir outside every checkout keeps its path."""
    other = tmp_path / 'other_clone'
    (other / 'dreamer_core').mkdir(parents=True)
    (other / 'dreamer_core' / 'registry.py').write_text('')
    records = []
    for root in (other / 'benchmarks' / 'results', tmp_path / 'elsewhere'):
        (run,) = grid.expand(['tpc'], ['dmc_cup_catch'], [2], root, flags=['--steps', '200'])
        write_evals(run.logdir, [(200, [30.0])])
        grid.write_json(run.logdir / grid.STATUS, {'state': 'exited', 'wall_s': 1.0})
        records.append(grid.result_record(run, 1.0))
    inside, outside = records
    assert grid.checkout_root(other / 'benchmarks' / 'results') == other
    assert inside['command'] == (
        'cd TPC && python dreamerv2/train.py --logdir ../benchmarks/results/dmc_cup_catch/tpc/2'
        ' --task dmc_cup_catch --seed 2 --configs defaults dmc --steps 200'
    )
    logdir = outside['command'].split('--logdir ')[1].split()[0]
    assert (grid.registry.REPO / 'TPC' / logdir).resolve() == (
        tmp_path / 'elsewhere' / 'dmc_cup_catch' / 'tpc' / '2'
    ).resolve()


def run_script(*args):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_launch_dry_run_and_skip(tmp_path):
    done = tmp_path / 'dmc_cup_catch' / 'dreamer_pro' / '1'
    write_evals(done, [(500, [1.0])])
    out = run_script(
        'launch.py',
        *('--preset standard_dmc --variants dreamerpro --seeds 1 2 --cpus-per-run 3'.split()),
        *('--root', str(tmp_path), '--dry-run', '--', '--steps', '500'),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 12  # 6 tasks x 2 seeds
    skipped = [line for line in lines if line.startswith('#')]
    assert len(skipped) == 1 and f'--logdir {done} ' in skipped[0]
    assert all(' --configs defaults dmc norm_off --steps 500 --threads 3' in x for x in lines)
    assert all(x.split('# done, skipped: ')[-1].startswith('cd ') for x in lines)
    assert not (tmp_path / 'dmc_walker_run').exists()  # a dry run writes nothing


def test_learning_dry_run(tmp_path):
    out = run_script(
        'benchmarks/learning.py',
        *('--variants dreamerpro tpc --tasks dmc_cartpole_swingup --seeds 1 --frames 3000'.split()),
        *('--out', str(tmp_path), '--dry-run'),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert f'--logdir {tmp_path}/dmc_cartpole_swingup/dreamer_pro/1 ' in lines[0]
    small = 'small' in config_lib.load_blocks(registry.get('dreamerpro').dir)
    blocks = 'defaults dmc norm_off' + (' small' if small else '')
    assert f'--configs {blocks} --steps 3000' in lines[0] and lines[0].endswith('--steps 3000')
    assert lines[1].startswith('cd ') and '/TPC && python dreamerv2/train.py' in lines[1]


def test_wall_time_from_files_without_status(tmp_path):
    logdir = tmp_path / 'run'
    write_evals(logdir, [(100, [1.0])])
    (logdir / 'train_replay').mkdir()
    first = logdir / 'train_replay' / 'a-b-20.npz'
    first.write_bytes(b'')
    os.utime(first, (1000.0, 1000.0))
    os.utime(logdir / 'eval_returns.jsonl', (1250.0, 1250.0))
    assert grid.wall_seconds(logdir) == 250.0
    grid.write_json(logdir / grid.STATUS, {'state': 'exited', 'wall_s': 7.0})
    assert grid.wall_seconds(logdir) == 7.0


# A stand-in for train.py: saves on SIGINT (after a grandchild that ignores it has started).
FAKE_TRAIN = '''
import signal, subprocess, sys, time
if sys.argv[1] == 'fail':
    print('error: something is wrong', flush=True)
    sys.exit(3)
if sys.argv[1] == 'stopped':  # as when train.py itself got SIGTERM early: saved, exit 0
    print('SIGTERM received; saved.', flush=True)
    sys.exit(0)
subprocess.Popen([sys.executable, '-c', 'import signal, time; '
                  'signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(300)'])
def stop(*_):
    print('SIGINT received; saved.', flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
print('training', flush=True)
time.sleep(300)
'''


def fake_run(tmp_path, monkeypatch, mode):
    (run,) = grid.expand(['tpc'], ['dmc_cup_catch'], [1], tmp_path, flags=['--steps', '100'])
    script = tmp_path / 'fake_train.py'
    script.write_text(FAKE_TRAIN)
    monkeypatch.setattr(grid.Run, 'command', lambda self: [sys.executable, str(script), mode])
    return run


def test_execute_failure_writes_marker(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, 'fail')
    assert grid.execute(run, attempt=2) == 3
    failed = json.loads((run.logdir / grid.FAILED).read_text())
    assert failed['exit_code'] == 3 and failed['attempt'] == 2
    assert failed['tail'].endswith('error: something is wrong')
    assert grid.read_state(run.logdir, total=100).state == 'failed'


def test_execute_interrupt_stops_the_whole_group(tmp_path, monkeypatch):
    import _thread
    import signal
    import threading

    run = fake_run(tmp_path, monkeypatch, 'train')
    log = run.logdir / grid.LOG

    def interrupt():  # as Ray's cancel does: a KeyboardInterrupt in the running task
        while 'training' not in (log.read_text() if log.exists() else ''):
            threading.Event().wait(0.1)
        _thread.interrupt_main()

    # Python's own handler, whatever an earlier test in this process installed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt, daemon=True).start()
    # A Ray worker blocks SIGINT and a child inherits the mask: train.py must still see it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with pytest.raises(KeyboardInterrupt):
            grid.execute(run, stop_timeout=5, poll=0.1)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)
    assert 'SIGINT received; saved.' in log.read_text()
    status = json.loads((run.logdir / grid.STATUS).read_text())
    assert status['state'] == 'stopped' and status['exit_code'] == 0
    assert not any(
        str(run.logdir) in p.read_text() or 'time.sleep(300)' in p.read_text()
        for p in pathlib.Path('/proc').glob('[0-9]*/cmdline')
        if p.exists() and _readable(p)
    ), 'a process of the run outlived it'


def _readable(path):
    try:
        path.read_text()
        return True
    except OSError:
        return False


def test_the_record_names_the_code_of_every_start(tmp_path, monkeypatch):
    run = fake_run(tmp_path, monkeypatch, 'fail')
    for commit in ('aaa', 'aaa', 'bbb'):  # started twice on one commit, resumed on another
        monkeypatch.setattr(grid, 'git_commit', lambda commit=commit: commit)
        grid.execute(run)
    assert json.loads((run.logdir / grid.STATUS).read_text())['git_commits'] == ['aaa', 'bbb']
    assert grid.run_commits(run.logdir) == 'aaa then bbb'
    headers = [line for line in (run.logdir / grid.LOG).read_text().splitlines() if '===' in line]
    assert [h.split(', code ')[1].split(':')[0] for h in headers] == ['aaa', 'aaa', 'bbb']
    monkeypatch.setattr(grid, 'git_commit', lambda: 'ccc')
    assert grid.run_commits(tmp_path / 'by_hand') == 'ccc'  # no launcher status: the current code


def test_learning_says_a_run_stopped_early_and_records_nothing(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location('learning', REPO / 'benchmarks' / 'learning.py')
    learning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(learning)
    fake_run(tmp_path, monkeypatch, 'stopped')
    monkeypatch.setattr(learning, 'random_return', lambda *_: 40.0)
    argv = '--variants tpc --tasks dmc_cup_catch --seeds 1 --frames 100 --out'.split()
    assert learning.main([*argv, str(tmp_path)]) == 130
    out = capsys.readouterr().out
    assert 'dmc_cup_catch/tpc/1 stopped at frame 0 of 100' in out
    assert 'Run the same command again to resume.' in out
    assert not (tmp_path / learning.RESULTS).exists()
