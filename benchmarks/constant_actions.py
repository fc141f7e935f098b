"""What a constant action earns on a task, beside the random policy: is there a trap at a bound?

Usage:
  python benchmarks/constant_actions.py --tasks dmc_cartpole_swingup dmc_walker_walk \\
      [--values -1 0 1] [--episodes 10] [--json benchmarks/results/constant_actions.json]

An actor whose actions saturate at a bound of their range plays one constant action. This plays
each constant action (every action dimension at `value`, in the normalised range [-1, 1]) for
whole episodes on the same episodes as `learning.py`'s random-policy measurement: the evaluation
env of the `dmc` config (action repeat 2, 1000 frames), seeded 0, episodes one after the other.
Rewards do not depend on the pixels, so nothing is rendered. It prints a table (mean return per
value, and the random policy's from `--random` where that file has the task) and writes JSON:
{task: {value: {"return": mean, "returns": [...]}}}.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamer_core import config as config_lib  # noqa: E402
from dreamer_core import envs, grid, registry  # noqa: E402
from dreamer_core.driver import Driver  # noqa: E402
from dreamer_core.errors import UserError  # noqa: E402


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tasks', nargs='+', default=['dmc_cartpole_swingup', 'dmc_walker_walk'])
    parser.add_argument('--values', nargs='+', type=float, default=[-1.0, 0.0, 1.0])
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--json', type=pathlib.Path)
    parser.add_argument(
        '--random',
        type=pathlib.Path,
        default=REPO / 'benchmarks' / 'results' / 'random_returns.json',
        help="learning.py's random-policy returns, shown beside",
    )
    return parser.parse_args(argv)


def task_config(task: str):
    """The `dmc` config of `task` (its evaluation env is the random-policy measurement's)."""
    if not task.startswith(('dmc_', 'nat_')):
        raise UserError(f'{task} is not a DMC task: constant actions need a continuous task.')
    variant = registry.get('dreamer')
    return config_lib.load(['--task', task, '--configs', *variant.standard], variant.dir)


def constant_returns(config, value: float, episodes: int) -> list[float]:
    """Returns of `episodes` episodes holding every action dimension at `value`, played by the
    project's Driver as learning.py plays the random policy."""
    env = envs.make_env(config, 'eval', registry.get('dreamer').root, seed=0, images=False)
    action = np.full((1, *env.act_space.shape), value, np.float32)
    try:
        eps = Driver([env])(lambda obs, state: ({'action': action}, state), episodes=episodes)
    finally:
        env.close()
    return [float(ep['reward'].astype(np.float64).sum()) for ep in eps]


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    bad = [v for v in args.values if not -1.0 <= v <= 1.0]
    if bad or args.episodes < 1:
        problem = (
            f'--values {bad[0]:g} is outside the action range [-1, 1]'
            if bad
            else (f'--episodes is {args.episodes}, fewer than 1')
        )
        print(
            f'error: {problem}. Fix: give values in [-1, 1] and at least 1 episode.',
            file=sys.stderr,
        )
        return 2
    randoms = grid.read_json(args.random) or {}
    results = {}
    try:
        for task in args.tasks:
            config = task_config(task)
            results[task] = {}
            for value in args.values:
                returns = constant_returns(config, value, args.episodes)
                results[task][f'{value:g}'] = {
                    'return': float(np.mean(returns)),
                    'returns': returns,
                }
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    head = ['task', *(f'action {v:g}' for v in args.values), 'random policy']
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for task, by_value in results.items():
        cells = [f'{entry["return"]:.1f}' for entry in by_value.values()]
        random = randoms.get(task, {}).get('return')
        cells.append('' if random is None else f'{random:.1f}')
        print(f'| {task} | ' + ' | '.join(cells) + ' |')
    if args.json:
        grid.write_json(args.json, results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
