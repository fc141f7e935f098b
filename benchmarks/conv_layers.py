"""Forward + backward seconds of the convolution layers whose implementation the code chooses.

Usage:
  python benchmarks/conv_layers.py [--images 2500] [--depth 32] [--repeats 5] [--json PATH]

For each layer of the encoder and decoder (64x64 images; `--images` = batch x length, 2500 for
the published 50 x 50, 512 for the `small` block's 16 x 32; `--depth` as encoder.depth /
decoder.depth) it times one tf.function computing the layer, a squared-sum loss and the gradients
of its variables and input, for each implementation the code can use: Keras's layer and, where one
exists, the matrix-product form in dreamer_core/nets.py. oneDNN is whatever the process has (on
by default; run with TF_ENABLE_ONEDNN_OPTS=0 for TensorFlow's plain kernels). Prints a table and
writes JSON with the CPU model and flags. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamer_core import hardware  # noqa: E402
from dreamer_core.fileio import atomic_write  # noqa: E402


def layers(depth):
    """(name, input shape without batch, {implementation: constructor})."""
    import tf_keras as keras

    from dreamer_core import nets

    d = depth
    return [
        ('encoder conv0', (64, 64, 3), {'keras': lambda: keras.layers.Conv2D(d, 4, 2)}),
        ('encoder conv1', (31, 31, d), {'keras': lambda: keras.layers.Conv2D(2 * d, 4, 2)}),
        ('encoder conv2', (14, 14, 2 * d), {'keras': lambda: keras.layers.Conv2D(4 * d, 4, 2)}),
        (
            'encoder conv3',
            (6, 6, 4 * d),
            {
                'keras': lambda: keras.layers.Conv2D(8 * d, 4, 2),
                'patches': lambda: nets.PatchConv2D(8 * d, 4, 2),
            },
        ),
        (
            'decoder convt0',
            (1, 1, 32 * d),
            {
                'keras': lambda: keras.layers.Conv2DTranspose(4 * d, 5, 2),
                'matmul': lambda: nets.ConvTransposeFrom1x1(4 * d, 5, 2),
            },
        ),
        (
            'decoder convt1',
            (5, 5, 4 * d),
            {'keras': lambda: keras.layers.Conv2DTranspose(2 * d, 5, 2)},
        ),
        (
            'decoder convt2',
            (13, 13, 2 * d),
            {'keras': lambda: keras.layers.Conv2DTranspose(d, 6, 2)},
        ),
        ('decoder convt3', (30, 30, d), {'keras': lambda: keras.layers.Conv2DTranspose(3, 6, 2)}),
    ]


def time_layer(layer, shape, images, repeats):
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(size=(images, *shape)).astype(np.float32))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [*layer.trainable_variables, x])

    float(tf.reduce_sum(step(x)[0]))  # traces and builds
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(tf.reduce_sum(step(x)[0]))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=2500)
    parser.add_argument('--depth', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--json', type=pathlib.Path)
    args = parser.parse_args(argv)
    model, flags = hardware.cpu_info()
    onednn = hardware.onednn_enabled()
    rows = []
    for name, shape, impls in layers(args.depth):
        for impl, ctor in impls.items():
            seconds = time_layer(ctor(), shape, args.images, args.repeats)
            rows.append({'layer': name, 'implementation': impl, 'seconds': seconds})
    print(f'CPU: {model} (flags: {" ".join(flags) or "none"}); oneDNN {"on" if onednn else "off"}')
    print(f'{args.images} images, depth {args.depth}: forward + backward, median of {args.repeats}')
    print('| layer | implementation | s |')
    print('|---|---|---|')
    for row in rows:
        print(f'| {row["layer"]} | {row["implementation"]} | {row["seconds"]:.3f} |')
    if args.json:
        result = dict(images=args.images, depth=args.depth, repeats=args.repeats, onednn=onednn)
        result.update(cpu_model=model, cpu_flags=flags)
        result['rows'] = rows
        text = json.dumps(result, indent=1)
        atomic_write(args.json, lambda file: file.write(text), mode='w')
    return 0


if __name__ == '__main__':
    sys.exit(main())
