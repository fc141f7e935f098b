"""World-model loss, its gradients and two full updates of a tiny agent, saved for comparison.

`python -m tests.levers_probe OUT.npz VARIANT[,VARIANT...] [config flags]`, run from the repository root in a
fresh process, so that settings read when TensorFlow loads (TF_ENABLE_ONEDNN_OPTS) apply. The
speed-lever tests run it with a lever on and off and compare the files.
"""

import sys

import numpy as np

from dreamer_core.build import synthetic_batch
from tests import tiny


def probe(variant, flags):
    import tensorflow as tf

    flags = ['--dataset.batch', '3', '--dataset.length', '9', '--seed', '0', *flags]
    agent, config = tiny.tiny_agent(variant, flags)
    batch = {k: tf.constant(v) for k, v in synthetic_batch(config, act_dim=6, seed=0).items()}
    wm = agent.wm
    agent.train(batch)  # builds every variable, as the first update of a run does
    variables = [v for m in wm.modules for v in m.trainable_variables]

    @tf.function
    def loss_and_grads(data):
        with tf.GradientTape() as tape:
            loss, _, _, metrics = wm.loss(data)
        return loss, metrics, tape.gradient(loss, variables)

    loss, metrics, grads = loss_and_grads(batch)
    out = {'wm/model_loss': loss.numpy()}
    out.update({f'wm/{k}': np.asarray(v) for k, v in metrics.items()})
    # By position: the encoder's last layer is another class (same variables) without oneDNN.
    out.update({f'grad/{i:03d}': g.numpy() for i, g in enumerate(grads) if g is not None})
    for update in range(2):
        metrics = agent.train(batch)
        out.update({f'update{update}/{k}': np.asarray(v) for k, v in metrics.items()})
    return out


if __name__ == '__main__':
    path, variants, *flags = sys.argv[1:]
    arrays = {}
    for variant in variants.split(','):
        arrays.update({f'{variant}/{k}': v for k, v in probe(variant, flags).items()})
    np.savez(path, **arrays)
