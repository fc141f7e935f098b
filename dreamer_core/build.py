"""Build a variant's config and agent outside the training loop (evaluation, tests, benchmarks)."""

from __future__ import annotations

import numpy as np

from dreamer_core import config as config_lib
from dreamer_core import registry

# The tiny model of the tests and the soak benchmark: the same algorithms with a few units per
# layer, and what each variant adds (by registry name): Dreamer's decoder, DreamerPro's prototypes.
TINY_MODEL = (
    '--rssm.hidden 16 --rssm.deter 16 --rssm.stoch 4 --encoder.depth 2 '
    '--reward_head.units 16 --reward_head.layers 1 --actor.units 16 --actor.layers 1 '
    '--critic.units 16 --critic.layers 1 --imag_horizon 3'
).split()
TINY_VARIANT_MODEL = {
    'dreamer': '--decoder.depth 2'.split(),
    'dreamerpro': '--rssm.num_prototypes 12 --rssm.proto 6'.split(),
    'tpc': [],
}


def tiny_model(variant) -> list[str]:
    """The flags of the tiny model of `variant` (registry name or folder)."""
    return TINY_MODEL + TINY_VARIANT_MODEL.get(registry.get(variant).name, [])


def load_config(variant: str | registry.Variant, argv=()) -> config_lib.Config:
    """The config of `variant` (registry name, folder or entry) from command-line style flags."""
    variant = registry.get(variant)
    return config_lib.load(list(argv), variant.dir)


def build_agent(variant, config, obs_shape, act_dim: int, discrete: bool = False):
    """The agent of `variant` for `config`, after TensorFlow is set up for it."""
    from dreamer_core.agent import Agent
    from dreamer_core.train import setup_tensorflow

    variant = registry.get(variant)
    setup_tensorflow(config)
    return Agent(config, tuple(obs_shape), act_dim, discrete, variant.load_loss(), variant.name)


def synthetic_batch(config, act_dim: int = 6, seed: int = 0, channels: int = 3):
    """A fixed batch shaped like replay output: [batch, length, ...]."""
    rng = np.random.default_rng(seed)
    batch, length = config.dataset.batch, config.dataset.length
    image = rng.integers(0, 256, (batch, length, *config.image_size, channels), dtype=np.uint8)
    reset = np.zeros((batch, length), bool)
    reset[:, 0] = True
    return {
        'image': image,
        'action': rng.uniform(-1, 1, (batch, length, act_dim)).astype(np.float32),
        'reward': rng.uniform(0, 1, (batch, length)).astype(np.float32),
        'discount': np.ones((batch, length), np.float32),
        'reset': reset,
        'done': np.zeros((batch, length), bool),
    }
