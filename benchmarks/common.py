"""Shared pieces of the benchmark scripts: a variant's agent at its published DMC config."""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamer_core import build, registry  # noqa: E402
from dreamer_core.build import synthetic_batch  # noqa: E402, F401

VARIANTS = list(registry.VARIANTS)


def build_agent(variant, flags=(), act_dim=6, blocks=()):
    """Agent of `variant` with its published DMC blocks, `blocks` and `flags`; (agent, config)."""
    variant = registry.get(variant)
    argv = ['--configs', *variant.standard, *blocks, '--precision', '32', *flags]
    config = build.load_config(variant, argv)
    obs_shape = tuple(config.image_size) + (3,)
    return build.build_agent(variant, config, obs_shape, act_dim), config
