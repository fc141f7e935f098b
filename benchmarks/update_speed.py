"""Seconds per agent update (world model + behaviour) of one variant on a fixed synthetic batch.

Usage:
  python benchmarks/update_speed.py --variant dreamerpro [--configs defaults dmc norm_off]
      [--precision 32|16|bf16] [--xla on|off] [--updates 3] [--warmup 1] [--tiny] [--threads N]
      [--json PATH] [-- extra config flags]

Defaults measure the plain path: the variant's published standard-DMC blocks and batch x length,
float32 and XLA off (not the config's precision 16). It times the first update (tracing and
compilation included), `--warmup` untimed updates, then `--updates` timed ones; prints a table
and writes JSON (median and min seconds per update, compile seconds, peak RSS, batch, length,
precision, xla, CPU model and the CPU's bf16/AMX/AVX-512 flags; where a GPU is visible, its peak
memory). Run it alone on the machine.
../shared/original/bench_side_by_side.py calls this command for the project side.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamer_core import build, hardware, registry  # noqa: E402
from dreamer_core.fileio import atomic_write  # noqa: E402

# The same tiny sizes as the side-by-side harness: a check that the script works, not a speed.
TINY = (
    '--rssm.hidden 32 --rssm.deter 32 --rssm.stoch 8 --encoder.depth 4 --reward_head.units 32 '
    '--actor.units 32 --critic.units 32 --dataset.batch 4 --dataset.length 8 --imag_horizon 5'
).split()
TINY_VARIANT = {
    'dreamer': ['--decoder.depth', '4'],
    'dreamerpro': ['--rssm.num_prototypes', '16', '--rssm.proto', '8'],
}
ACT_DIM = 6


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variant', required=True, choices=list(registry.VARIANTS))
    parser.add_argument('--configs', nargs='+', help='blocks (default: the published ones)')
    parser.add_argument('--precision', default='32', choices=['32', '16', 'bf16'])
    parser.add_argument('--xla', default='off', choices=['on', 'off'])
    parser.add_argument('--updates', type=int, default=3, help='timed updates')
    parser.add_argument('--warmup', type=int, default=1, help='untimed updates after the first')
    parser.add_argument('--tiny', action='store_true', help='tiny sizes: checks the script only')
    parser.add_argument('--threads', type=int, default=0, help='TensorFlow threads (0: default)')
    parser.add_argument('--json', type=pathlib.Path, help='write the result here')
    parser.add_argument('flags', nargs='*', help='extra config flags, after --')
    args = parser.parse_args(argv)
    if args.updates < 1 or args.warmup < 0:
        parser.error('--updates must be >= 1 and --warmup >= 0')
    return args


def config_argv(args, variant):
    argv = ['--configs', *(args.configs or variant.standard), '--precision', args.precision]
    argv += ['--xla', str(args.xla == 'on')]
    if args.tiny:
        argv += TINY + TINY_VARIANT.get(variant.name, [])
    return argv + list(args.flags)


def measure(args) -> dict:
    variant = registry.get(args.variant)
    config = build.load_config(variant, config_argv(args, variant))
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    agent = build.build_agent(variant, config, (*config.image_size, 3), ACT_DIM)
    batch = {k: tf.constant(v) for k, v in build.synthetic_batch(config, ACT_DIM).items()}
    update = lambda: float(agent.train(batch)['model_loss'])  # float() waits for the step
    start = time.perf_counter()
    variables_s = trace_s = 0.0
    if config.jit:
        agent.create_variables(batch)  # so that the update is traced once, as in training
        variables_s = time.perf_counter() - start
        agent._train.get_concrete_function(batch)  # Python building the graph
        trace_s = time.perf_counter() - start - variables_s
    update()
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        update()
    times = []
    for _ in range(args.updates):
        start = time.perf_counter()
        loss = update()
        times.append(time.perf_counter() - start)
    model, flags = hardware.cpu_info()
    import tf_keras as keras

    result = {
        'variant': variant.name,
        'configs': list(config.configs),
        'batch': int(config.dataset.batch),
        'length': int(config.dataset.length),
        'precision': args.precision,
        'policy': keras.mixed_precision.global_policy().name,
        'onednn': hardware.onednn_enabled(),
        'xla': args.xla,
        'deterministic': bool(config.deterministic),
        'tiny': args.tiny,
        'compile_s': compile_s,
        'trace_s': trace_s,
        'variables_s': variables_s,
        'median_s_per_update': statistics.median(times),
        'min_s_per_update': min(times),
        'times_s': times,
        'last_model_loss': loss,
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        'cpu_model': model,
        'cpu_flags': flags,
    }
    if tf.config.list_physical_devices('GPU'):  # only there: the CPU result keeps its fields
        result['peak_gpu_mb'] = tf.config.experimental.get_memory_info('GPU:0')['peak'] / 2**20
    return result


def main(argv=None):
    args = parse(argv)
    result = measure(args)
    print(f'CPU: {result["cpu_model"]} (flags: {" ".join(result["cpu_flags"]) or "none"})')
    print(
        '| variant | batch x length | precision | xla | compile s (making variables, tracing) '
        '| median s/update | min s |'
    )
    print('|---|---|---|---|---|---|---|')
    print(
        f'| {result["variant"]} | {result["batch"]} x {result["length"]} | {result["precision"]} '
        f'| {result["xla"]} | {result["compile_s"]:.1f} '
        f'({result["variables_s"]:.1f}, {result["trace_s"]:.1f}) '
        f'| {result["median_s_per_update"]:.2f} '
        f'| {result["min_s_per_update"]:.2f} |'
    )
    if args.json:
        text = json.dumps(result, indent=1)
        atomic_write(args.json, lambda file: file.write(text), mode='w')
    return result


if __name__ == '__main__':
    main()
