"""Does each agent learn? Runs variant x task x seed one at a time and records the final returns.

Usage:
  python benchmarks/learning.py --variants dreamer dreamerpro tpc --tasks dmc_walker_walk \\
      --seeds 1 2 --frames 50000 --out benchmarks/results/ [--configs-extra small] \\
      [--blocks defaults dmc] [--random-episodes 10] [--dry-run] [-- extra train.py flags]

Each run is the variant's own train.py with its published blocks (registry `standard`/`natural`,
e.g. `norm_off` for DreamerPro on standard DMC) plus the `--configs-extra` blocks it defines
(default `small`), in `{out}/{task}/{method}/{seed}` (the plotter's layout), started in the
foreground one after the other through the same grid code as launch.py. First it measures the
random policy's return on each task (the evaluation protocol: `--random-episodes` episodes of
the eval env), once per task (cached in `{out}/random_returns.json`). After each finished run it
adds a record to `{out}/learning.json` (atomically): variant, task, seed, frames, wall_s,
final_return (mean over the final evaluation's episodes), random_return, command, git_commit,
cpu_model. Runs already recorded are skipped; an interrupted run (Ctrl-C or SIGTERM, to this
script or to its train.py) saves, and resumes when the same command runs again. The same
command with a larger `--frames` continues finished runs from their checkpoints (where their
logdirs still hold them) and adds a record at the new budget beside the old one.

The default task is walker walk, not cartpole swingup: holding the cart at either end of the rail
returns about 75 there, twice the random policy, and actors whose actions saturate at a bound
stay on that plateau (`constant_actions.py` measures it; the README's Results section has the
runs). On walker walk a constant action earns less than the random policy.
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamer_core import grid, registry  # noqa: E402
from dreamer_core.errors import UserError  # noqa: E402

RESULTS = 'learning.json'
RANDOM = 'random_returns.json'


def parse(argv):
    extra = []
    if '--' in argv:
        i = argv.index('--')
        argv, extra = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(prog='learning.py', description=__doc__.split('\n')[0])
    parser.add_argument('--variants', nargs='+', default=list(registry.VARIANTS))
    parser.add_argument('--tasks', nargs='+', default=['dmc_walker_walk'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[1, 2])
    parser.add_argument('--frames', type=int, required=True, help='environment frames per run')
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results'))
    parser.add_argument('--blocks', nargs='+', help='replace each variant\'s published blocks')
    parser.add_argument(
        '--configs-extra',
        nargs='*',
        default=['small'],
        help='blocks added after the published ones, where the variant defines them',
    )
    parser.add_argument('--random-episodes', type=int, default=10)
    parser.add_argument('--dry-run', action='store_true', help='print the commands only')
    args = parser.parse_args(argv)
    args.extra = extra
    return args


def random_return(run: grid.Run, episodes: int, cache_path) -> float:
    """The random policy's mean return on the run's task, with the run's eval env settings."""
    import numpy as np

    from dreamer_core import config as config_lib
    from dreamer_core import envs
    from dreamer_core.agent_random import RandomAgent
    from dreamer_core.driver import Driver

    variant = registry.get(run.variant)
    config = config_lib.load(run.argv(), variant.dir)
    setting = {'action_repeat': config.action_repeat, 'time_limit': config.time_limit}
    cache = grid.read_json(cache_path) or {}
    entry = cache.get(run.task)
    if entry and entry.get('episodes') == episodes and entry.get('setting') == setting:
        return entry['return']
    print(f'Measuring the random policy on {run.task} ({episodes} evaluation episodes).')
    env = envs.make_env(config, 'eval', variant.root, seed=0)
    try:
        eps = Driver([env])(RandomAgent(env.act_space, seed=0), episodes=episodes)
    finally:
        env.close()
    returns = [float(ep['reward'].astype(np.float64).sum()) for ep in eps]
    mean = float(np.mean(returns))
    cache[run.task] = {'return': mean, 'returns': returns, 'episodes': episodes, 'setting': setting}
    grid.write_json(cache_path, cache)
    return mean


def print_table(records):
    head = ('variant', 'task', 'seed', 'frames', 'final return', 'random', 'ratio', 'wall time')
    rows = []
    for r in records:
        ratio = r['final_return'] / r['random_return'] if r['random_return'] else float('nan')
        wall = grid._format_wall(r['wall_s'])
        rows.append(
            (r['variant'], r['task'], r['seed'], f'{r["frames"]:,}', f'{r["final_return"]:.1f}')
            + (f'{r["random_return"]:.1f}', f'{ratio:.2f}', wall)
        )
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print('  '.join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def main(argv):
    args = parse(argv)
    out = pathlib.Path(args.out)
    flags = ['--steps', str(args.frames), *args.extra]
    try:
        runs = grid.expand(
            args.variants, args.tasks, args.seeds, out, args.blocks, flags, args.configs_extra
        )
        results = grid.read_results(out / RESULTS)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    todo = [run for run in runs if not grid.find_result(results, run, args.frames)]
    if args.dry_run:
        for run in runs:
            print(('' if run in todo else '# recorded, skipped: ') + run.shell())
        return 0
    print(f'{len(runs)} runs: {len(todo)} to do, {len(runs) - len(todo)} already recorded.')
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    try:
        for run in todo:
            random = random_return(run, args.random_episodes, out / RANDOM)
            if grid.run_state(run).state != 'done':
                print(f'Training {run.name} (log: {run.logdir / grid.LOG}).', flush=True)
                if grid.execute(run) != 0:
                    failed.append(run)
                    print(f'{run.name} failed:\n{grid.log_tail(run.logdir / grid.LOG)}')
                    continue
                state = grid.run_state(run)
                if state.state != 'done':  # exit 0 before the end: a signal stopped train.py
                    print(
                        f'{run.name} stopped at frame {state.frames:,} of {args.frames:,} '
                        '(train.py saved and exited: it was sent a signal). '
                        'Run the same command again to resume.',
                        flush=True,
                    )
                    return 130
            results = grid.add_result(out / RESULTS, grid.result_record(run, random))
            print(f'{run.name}: final return {results[-1]["final_return"]:.1f}.', flush=True)
    except KeyboardInterrupt:
        print('\nStopped; the current run saved its checkpoint. Run again to resume.')
        return 130
    print_table([r for r in grid.read_results(out / RESULTS) if r['frames'] == args.frames])
    return 1 if failed else 0


if __name__ == '__main__':
    # Ctrl-C and SIGTERM stop the run cleanly (train.py saves), even when started with `&`.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main(sys.argv[1:]))
