"""Where an update's time goes: each part timed on its own, with its FLOPs and achieved FLOP/s.

Usage:
  python benchmarks/breakdown.py --variant dreamer [--configs defaults dmc small] \\
      [--precision 32|bf16] [--repeats 3] [--json PATH] [-- extra config flags]

Builds the variant's agent (published standard-DMC blocks and batch by default, float32) on one
fixed synthetic batch, runs one full update, then times each part as its own tf.function, forward
and backward as in the update:
  encoder           images -> embeddings, gradients of the encoder's variables
  rssm observe      embeddings + actions -> posterior and prior over the sequence, gradients of
                    the RSSM's variables and of the embeddings
  representation    the variant's loss (decoder, prototypes or contrastive terms), the reward (and
                    discount) heads and the KL, gradients of their variables and inputs
  imagination+actor imagined rollouts of the horizon from every posterior state, lambda returns,
                    actor loss, gradients of the actor's variables
  critic            the critic's loss on the imagined features, gradients of its variables
  optimizers        applying all three Adam updates (clipping, weight decay) to given gradients
and the whole update (`agent.train`). `other` is the whole minus the parts: what only the whole
update does (metrics, EMA and slow-target updates, the second optimizer pass over shared work).
FLOPs come from TensorFlow's graph profiler (ops with registered statistics: convolutions and
their gradients, matmuls, elementwise ops); peak FLOP/s is cores x clock x FLOPs per cycle for
the CPU's vector units (AVX2+FMA: 32 fp32 per cycle per core, AVX-512: 64; native bf16 doubles
AVX-512's, AMX reaches 1024). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamer_core import build, hardware, registry  # noqa: E402
from dreamer_core.fileio import atomic_write  # noqa: E402

ACT_DIM = 6


def cpu_clock_ghz(path='/proc/cpuinfo') -> float | None:
    try:
        for line in pathlib.Path(path).read_text().splitlines():
            key, _, value = line.partition(':')
            if key.strip() == 'cpu MHz':
                return float(value) / 1000.0
    except (OSError, ValueError):
        pass
    return None


def peak_flops(flags, cores, ghz) -> dict:
    """Theoretical peak FLOP/s of the CPU's vector units: {'fp32': ..., 'bf16': ... or None}."""
    if not ghz:
        return {'fp32': None, 'bf16': None}
    fp32 = 64 if 'avx512f' in flags else 32 if 'fma' in flags else 16
    bf16 = 1024 if 'amx_bf16' in flags else 2 * fp32 if 'avx512_bf16' in flags else None
    scale = cores * ghz * 1e9
    return {'fp32': fp32 * scale, 'bf16': bf16 * scale if bf16 else None}


def graph_flops(function, *args) -> int:
    """FLOPs of one call of a tf.function, from the profiler's per-op statistics."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = function.get_concrete_function(*args).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options['output'] = 'none'
    return int(model_analyzer.profile(graph=graph, options=options).total_float_ops)


def parts(agent, batch):
    """{name: (tf.function, args)} for every part of the update, inputs precomputed once."""
    import tensorflow as tf

    wm, behavior = agent.wm, agent._task_behavior
    data = wm.repr.preprocess(wm.preprocess(batch))
    embed = wm.encoder(data)
    post, prior = wm.rssm.observe(embed, data['action'])
    feat = wm.rssm.get_feat(post)
    start = post  # imagine() flattens batch x time
    if agent.config.pred_discount:  # as the update: the last step could be terminal
        start = {k: v[:, :-1] for k, v in post.items()}
    imagined, _, _, disc = wm.imagine(behavior.actor, start, agent.config.imag_horizon)
    reward = agent._reward(imagined, None, None)
    target, weight, _ = behavior.target(imagined, reward, disc)

    def grads(loss, variables, inputs=()):
        return [g for g in tf.gradients(loss, [*variables, *inputs]) if g is not None]

    @tf.function
    def encoder(data):
        embed = wm.encoder(data)
        return grads(tf.reduce_sum(embed), wm.encoder.trainable_variables)

    @tf.function
    def rssm_observe(embed, action):
        post, prior = wm.rssm.observe(embed, action)
        loss = tf.reduce_sum(wm.rssm.get_feat(post)) + tf.reduce_sum(wm.rssm.get_feat(prior))
        return grads(loss, wm.rssm.trainable_variables, [embed])

    @tf.function
    def representation(data, embed, post, prior, feat):
        losses, _ = wm.repr(data, embed, post, prior, feat)
        total = sum(tf.cast(v, tf.float32) for v in losses.values())
        if wm.repr.uses_kl:
            kl, _ = wm.rssm.kl_loss(post, prior, **agent.config.kl)
            total += kl
        for name, head in wm.heads.items():
            total -= tf.reduce_mean(head(feat).log_prob(tf.cast(data[name], tf.float32)))
        variables = [v for m in [wm.repr, *wm.heads.values()] for v in m.trainable_variables]
        return grads(total, variables, [embed, feat, *post.values()])

    @tf.function
    def imagination_actor(start):
        feat, state, action, disc = wm.imagine(behavior.actor, start, agent.config.imag_horizon)
        reward = agent._reward(feat, state, action)
        target, weight, _ = behavior.target(feat, reward, disc)
        loss, _ = behavior.actor_loss(feat, action, target, weight)
        return grads(loss, behavior.actor.trainable_variables)

    @tf.function
    def critic(feat, target, weight):
        loss, _ = behavior.critic_loss(feat, target, weight)
        return grads(loss, behavior.critic.trainable_variables)

    pairs = [
        (wm.model_opt, [v for m in wm.modules for v in m.trainable_variables]),
        (behavior.actor_opt, behavior.actor.trainable_variables),
        (behavior.critic_opt, behavior.critic.trainable_variables),
    ]
    fixed = [[tf.ones_like(v) * 1e-3 for v in variables] for _, variables in pairs]

    @tf.function
    def optimizers():
        for (opt, variables), gs in zip(pairs, fixed):
            gs, _ = tf.clip_by_global_norm(gs, 100.0)
            opt._opt.apply_gradients(zip(gs, variables))
        return tf.constant(0.0)

    return {
        'encoder': (encoder, (data,)),
        'rssm observe': (rssm_observe, (embed, data['action'])),
        'representation': (representation, (data, embed, post, prior, feat)),
        'imagination+actor': (imagination_actor, (start,)),
        'critic': (critic, (imagined, target, weight)),
        'optimizers': (optimizers, ()),
    }


def timed(call, repeats):
    import numpy as np
    import tensorflow as tf

    def once():
        out = call()
        tf.nest.map_structure(np.asarray, out)  # waits for every result

    once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(args) -> dict:
    import tensorflow as tf

    variant = registry.get(args.variant)
    argv = ['--configs', *(args.configs or variant.standard), '--precision', args.precision]
    config = build.load_config(variant, argv + list(args.flags))
    agent = build.build_agent(variant, config, (*config.image_size, 3), ACT_DIM)
    batch = {k: tf.constant(v) for k, v in build.synthetic_batch(config, ACT_DIM).items()}
    agent.train(batch)  # builds every variable
    rows = []
    for name, (function, inputs) in parts(agent, batch).items():
        seconds = timed(lambda: function(*inputs), args.repeats)
        rows.append({'part': name, 'seconds': seconds, 'flops': graph_flops(function, *inputs)})
    whole = timed(lambda: agent.train(batch), args.repeats)
    train = agent._train if hasattr(agent._train, 'get_concrete_function') else None
    total_flops = graph_flops(train, batch) if train else None
    rows.append(
        {'part': 'other', 'seconds': whole - sum(r['seconds'] for r in rows), 'flops': None}
    )
    rows.append({'part': 'whole update', 'seconds': whole, 'flops': total_flops})
    model, flags = hardware.cpu_info()
    cores = len(os.sched_getaffinity(0))
    ghz = cpu_clock_ghz()
    return {
        'variant': variant.name,
        'configs': list(config.configs),
        'batch': int(config.dataset.batch),
        'length': int(config.dataset.length),
        'precision': args.precision,
        'onednn': hardware.onednn_enabled(),
        'repeats': args.repeats,
        'rows': rows,
        'cores': cores,
        'clock_ghz': ghz,
        'peak_flops': peak_flops(flags, cores, ghz),
        'cpu_model': model,
        'cpu_flags': flags,
    }


def print_table(result):
    peak = result['peak_flops']['bf16' if result['precision'] == 'bf16' else 'fp32']
    print(
        f'CPU: {result["cpu_model"]} (flags: {" ".join(result["cpu_flags"]) or "none"}), '
        f'{result["cores"]} cores at {result["clock_ghz"] or 0:.2f} GHz; oneDNN '
        f'{"on" if result["onednn"] else "off"}'
    )
    print(
        f'{result["variant"]}, {" ".join(result["configs"])}, batch {result["batch"]} x '
        f'{result["length"]}, precision {result["precision"]}; median of {result["repeats"]}'
    )
    whole = result['rows'][-1]['seconds']
    print('| part | s | share | GFLOP | GFLOP/s | of peak |')
    print('|---|---|---|---|---|---|')
    for row in result['rows']:
        flops, seconds = row['flops'], row['seconds']
        rate = flops / seconds if flops and seconds > 0 else None
        cells = [
            row['part'],
            f'{seconds:.3f}',
            f'{seconds / whole:.0%}',
            f'{flops / 1e9:.1f}' if flops else '',
            f'{rate / 1e9:.1f}' if rate else '',
            f'{rate / peak:.0%}' if rate and peak else '',
        ]
        print('| ' + ' | '.join(cells) + ' |')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if '--' in argv:
        i = argv.index('--')
        argv, extra = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variant', required=True, choices=list(registry.VARIANTS))
    parser.add_argument('--configs', nargs='+', help='blocks (default: the published ones)')
    parser.add_argument('--precision', default='32', choices=['32', 'bf16'])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--json', type=pathlib.Path)
    args = parser.parse_args(argv)
    args.flags = extra
    result = measure(args)
    print_table(result)
    if args.json:
        text = json.dumps(result, indent=1)
        atomic_write(args.json, lambda file: file.write(text), mode='w')
    return 0


if __name__ == '__main__':
    sys.exit(main())
