"""The tiny model the tests build: the same algorithms with a few units per layer."""

from dreamer_core import build, registry

TINY_MODEL = build.TINY_MODEL
VARIANT_MODEL = build.TINY_VARIANT_MODEL


def variant_model(variant):
    """The tiny-model flags of a variant given by registry name or folder ('DreamerPro')."""
    return VARIANT_MODEL.get(registry.get(variant).name, [])


def tiny_agent(
    variant,
    flags=(),
    act_dim=6,
    blocks=(),
    obs_shape=(64, 64, 3),
    discrete=False,
    base=None,
    precision='32',
):
    """(agent, config) of `variant`, tiny, float32 unless `precision` says otherwise: its
    published standard-DMC blocks (or the blocks `base`) followed by `blocks`."""
    variant = registry.get(variant)
    base = variant.standard if base is None else base
    argv = ['--configs', *base, *blocks, '--precision', precision]
    config = build.load_config(variant, argv + TINY_MODEL + variant_model(variant) + list(flags))
    return build.build_agent(variant, config, obs_shape, act_dim, discrete), config
