"""Shared pieces of the benchmark scripts: build a variant's agent and a synthetic batch."""

import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    'Dreamer': ('recon_loss', 'ReconLoss', 'dreamer', ['defaults', 'dmc']),
    'DreamerPro': ('proto_loss', 'ProtoLoss', 'dreamer_pro', ['defaults', 'dmc', 'norm_off']),
    'TPC': ('tpc_loss', 'TPCLoss', 'tpc', ['defaults', 'dmc']),
}


def load_loss(variant):
    from dreamer_core.train import load_loss as load

    module, cls, _, _ = VARIANTS[variant]
    return load(REPO / variant / 'dreamerv2', f'{module}:{cls}')


def build_agent(variant, flags=(), act_dim=6, blocks=()):
    """Agent of `variant` with its published DMC config, `blocks` and `flags`; (agent, config)."""
    from dreamer_core import config as config_lib
    from dreamer_core.agent import Agent
    from dreamer_core.train import setup_tensorflow

    _, _, name, configs = VARIANTS[variant]
    argv = ['--configs', *configs, *blocks, '--precision', '32', *flags]
    config = config_lib.load(argv, REPO / variant / 'dreamerv2')
    setup_tensorflow(config)
    obs_shape = tuple(config.image_size) + (3,)
    return Agent(config, obs_shape, act_dim, False, load_loss(variant), name), config


def synthetic_batch(config, act_dim=6, seed=0):
    """A fixed batch shaped like replay output: [batch, length, ...]."""
    rng = np.random.default_rng(seed)
    batch, length = config.dataset.batch, config.dataset.length
    image = rng.integers(0, 256, (batch, length, *config.image_size, 3), dtype=np.uint8)
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
