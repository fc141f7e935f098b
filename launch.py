"""Run a grid of training runs (variant x task x seed) as Ray tasks, here or on a Ray cluster.

  python launch.py --variants dreamer dreamerpro tpc --tasks dmc_walker_run dmc_cup_catch \\
      --seeds 1 2 3 --root log [--configs defaults dmc] [--address ray://HEAD:10001] \\
      [--cpus-per-run N] [--gpus-per-run F] [--retries K] [--dry-run] [-- extra train.py flags]
  python launch.py --preset standard_dmc --seeds 1 2 3 --root log     # the paper's grids
  python launch.py status log                                          # no Ray needed

Each run is the variant's own `dreamerv2/train.py` in `{root}/{task}/{method}/{seed}`, its
output appended to `train.log` there. Finished runs are skipped, interrupted ones resume from
their checkpoint; Ctrl-C stops every run cleanly (each saves, as train.py does on its own).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from dreamer_core import grid, registry  # noqa: E402
from dreamer_core.errors import UserError  # noqa: E402


def parse(argv):
    argv, extra = _split_extra(argv)
    parser = argparse.ArgumentParser(
        prog='launch.py',
        description='Run variant x task x seed training runs as Ray tasks; '
        '`launch.py status ROOT` prints their state. Flags after `--` go to every train.py.',
    )
    parser.add_argument('--variants', nargs='+', default=list(registry.VARIANTS))
    parser.add_argument('--tasks', nargs='+', help='default: the preset\'s tasks')
    parser.add_argument('--seeds', nargs='+', type=int, default=[1, 2, 3])
    parser.add_argument(
        '--configs',
        nargs='+',
        help='blocks for every run (default: each agent\'s published blocks for the task)',
    )
    parser.add_argument('--preset', choices=sorted(grid.PRESETS))
    parser.add_argument('--root', default='log', help='where the logdirs go (default: log)')
    parser.add_argument('--address', help='an existing Ray cluster (ray://HOST:10001 or auto)')
    parser.add_argument('--num-cpus', type=int, help='CPUs of the local Ray (default: all)')
    parser.add_argument('--cpus-per-run', type=int, default=1, help='also train.py --threads')
    parser.add_argument('--gpus-per-run', type=float, default=0.0, help='may be a fraction')
    parser.add_argument('--retries', type=int, default=0, help='restarts of a failed run')
    parser.add_argument(
        '--stop-timeout',
        type=float,
        default=120.0,
        help='seconds a run gets to save after Ctrl-C before it is killed',
    )
    parser.add_argument('--dry-run', action='store_true', help='print the commands only')
    args = parser.parse_args(argv)
    if not args.tasks and not args.preset:
        parser.error('give --tasks or --preset (standard_dmc, natural_dmc).')
    if args.cpus_per_run < 1 or args.gpus_per_run < 0 or args.retries < 0:
        parser.error('--cpus-per-run must be at least 1; --gpus-per-run and --retries at least 0.')
    args.extra = extra
    return args


def _split_extra(argv):
    if '--' in argv:
        i = argv.index('--')
        return argv[:i], argv[i + 1 :]
    return argv, []


def build_runs(args):
    tasks = args.tasks or grid.preset(args.preset)
    flags = list(args.extra)
    if grid.flag_value(flags, 'threads') is None:
        flags += ['--threads', str(args.cpus_per_run)]
    return grid.expand(args.variants, tasks, args.seeds, args.root, args.configs, flags)


def main(argv):
    if argv[:1] == ['status']:
        if len(argv) != 2:
            print('usage: python launch.py status ROOT', file=sys.stderr)
            return 2
        if not pathlib.Path(argv[1]).is_dir():
            print(f'error: {argv[1]} is not a folder: give the --root of a grid.', file=sys.stderr)
            return 2
        print(grid.status_table(argv[1]))
        return 0
    args = parse(argv)
    # Ctrl-C and SIGTERM stop the grid cleanly, even when started with SIGINT ignored (`&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        runs = build_runs(args)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    states = {run: grid.run_state(run) for run in runs}
    todo = [run for run in runs if states[run].state not in ('done', 'running')]
    if args.dry_run:
        for run in runs:
            note = '' if run in todo else f'# {states[run].state}, skipped: '
            print(note + run.shell())
        return 0
    skipped = len(runs) - len(todo)
    print(f'{len(runs)} runs: {len(todo)} to start, {skipped} done or running elsewhere.')
    if todo:
        try:
            code = run_grid(todo, args)
        except KeyboardInterrupt:  # while Ray was starting: nothing runs yet
            code = 130
        except UserError as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
        if code == 130:
            return code
    final = [grid.run_state(run) for run in runs]
    print(grid.table(final))
    return 0 if all(s.state == 'done' for s in final) else 1


def start_ray(args):
    try:
        import ray
    except ImportError:
        raise UserError(
            'Ray is not installed: pip install -r requirements-ray.txt (or use --dry-run and '
            'start the printed commands yourself).'
        ) from None

    env = {'env_vars': {'PYTHONPATH': str(REPO)}}
    if args.address:
        ray.init(address=args.address, runtime_env=env, logging_level='WARNING')
    else:
        num_cpus = args.num_cpus or os.cpu_count()
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            runtime_env=env,
            logging_level='WARNING',
        )
    return ray


def run_grid(runs, args):
    """Submit every run, wait, retry failures; Ctrl-C stops them all cleanly (exit code 130)."""
    ray = start_ray(args)
    pending, finished = {}, 0
    try:
        options = dict(num_cpus=args.cpus_per_run, num_gpus=args.gpus_per_run, max_retries=0)
        task = ray.remote(**options)(grid.execute)
        submit = lambda run, attempt: task.remote(run, attempt, args.stop_timeout)
        for run in runs:
            pending[submit(run, 1)] = (run, 1)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                run, attempt = pending.pop(ref)
                code = _result(ray, ref, run, attempt)
                state = grid.run_state(run)
                # Exit 0 before the end: train.py was stopped by a signal (e.g. pre-emption).
                if state.state != 'done' and attempt <= args.retries:
                    print(f'{run.name} exited with {code}: retry {attempt} of {args.retries}.')
                    pending[submit(run, attempt + 1)] = (run, attempt + 1)
                    continue
                finished += 1
                word = 'finished' if state.state == 'done' else f'failed (exit {code})'
                if code == 0 and state.state != 'done':
                    word = f'stopped at frame {state.frames} (exit 0); start again to resume'
                print(f'[{finished}/{len(runs)}] {run.name} {word}.', flush=True)
    except KeyboardInterrupt:
        _stop_all(ray, pending, args.stop_timeout)
        return 130
    finally:
        ray.shutdown()
    return 0


def _result(ray, ref, run, attempt):
    """The exit code of a finished Ray task; a task that Ray itself lost counts as failed."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        grid.mark_failed(run, -1, attempt, reason=f'Ray: {type(e).__name__}: {e}')
        return -1


def _running(run):
    return (grid.read_json(run.logdir / grid.STATUS) or {}).get('state') == 'running'


def _stop_all(ray, pending, timeout):
    """Cancel every task: each running one stops its train.py (SIGINT, which saves) and waits
    for it; further Ctrl-C is ignored until they have."""
    signal.signal(signal.SIGINT, lambda *_: print('Still stopping the runs; wait.', flush=True))
    print(f'\nStopping {len(pending)} runs: each saves its checkpoint and exits.', flush=True)
    for ref in pending:
        ray.cancel(ref)
    deadline = time.time() + timeout + 30
    refs = list(pending)
    # Ray may count a cancelled task as done before its worker has stopped train.py: the run's
    # status file says when it has (the worker writes it after train.py exits).
    runs = [run for run, _ in pending.values()]
    while time.time() < deadline and (refs or any(map(_running, runs))):
        if refs:
            _, refs = ray.wait(refs, num_returns=len(refs), timeout=1.0)
        else:
            time.sleep(0.5)
    names = ' '.join(run.name for run, _ in pending.values())
    print(f'Stopped. Start the same command again to resume: {names}', flush=True)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
