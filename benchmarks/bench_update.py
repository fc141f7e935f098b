"""Seconds per agent update (world model + actor-critic) at each variant's published DMC config.

Usage: python benchmarks/bench_update.py [--variants Dreamer DreamerPro TPC] [--updates 3]
       [--flags "--dataset.batch 16"]
Prints, per variant: the first update (tracing and compilation included), the mean of the next
updates, and the loss terms of the first updates on a fixed synthetic batch with --seed 0 (to
compare later changes against). Runs in float32 (mixed float16 only pays on a GPU).
"""

import argparse
import shlex
import time

from common import VARIANTS, build_agent, synthetic_batch

LOSS_KEYS = (
    'model_loss',
    'kl_loss',
    'image_loss',
    'reward_loss',
    'swav_loss',
    'temp_loss',
    'norm_loss',
    'tpc_loss',
    'csc_loss',
    'spc_loss',
    'actor_loss',
    'critic_loss',
)


def bench(variant, updates, flags):
    agent, config = build_agent(variant, flags)
    data = synthetic_batch(config)
    times, losses = [], []
    for _ in range(updates + 1):
        start = time.perf_counter()
        mets = agent.train(data)
        times.append(time.perf_counter() - start)
        losses.append({k: float(mets[k]) for k in LOSS_KEYS if k in mets})
    return config, times, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--updates', type=int, default=3, help='timed updates after the first')
    parser.add_argument('--flags', default='', help='extra config flags, e.g. "--jit False"')
    args = parser.parse_args()
    rows = []
    for variant in args.variants:
        config, times, losses = bench(variant, args.updates, shlex.split(args.flags))
        steady = sum(times[1:]) / max(1, len(times) - 1)
        rows.append((variant, config.dataset.batch, config.dataset.length, times[0], steady))
        print(f'\n{variant}: first {len(losses)} updates on the fixed synthetic batch (seed 0):')
        for i, values in enumerate(losses):
            print(f'  update {i + 1}: ' + ', '.join(f'{k} {v:.6g}' for k, v in values.items()))
    print('\n| variant | batch | length | first update (s, incl. compile) | s / update |')
    print('|---|---|---|---|---|')
    for variant, batch, length, first, steady in rows:
        print(f'| {variant} | {batch} | {length} | {first:.1f} | {steady:.2f} |')


if __name__ == '__main__':
    main()
