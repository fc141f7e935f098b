"""The `small` block of the learning runs: published algorithms and train ratio, smaller cost."""

import numpy as np
import pytest

from dreamer_core import build, registry
from dreamer_core.config import agent_steps

KEEP = ('train_every', 'train_steps', 'imag_horizon', 'pretrain', 'kl', 'loss_scales', 'discount')
KEEP += ('model_opt', 'actor_opt', 'critic_opt', 'actor_grad', 'actor_ent', 'eval_eps', 'rssm')


@pytest.mark.parametrize('name', list(registry.VARIANTS))
def test_small_keeps_the_algorithm_and_shrinks_the_cost(name):
    variant = registry.get(name)
    published = build.load_config(variant, ['--configs', *variant.standard])
    small = build.load_config(variant, ['--configs', *variant.standard, 'small'])
    for key in KEEP:
        if key == 'rssm':  # only the number of prototypes may change (DreamerPro)
            strip = lambda c: {k: v for k, v in c.rssm.items() if k != 'num_prototypes'}
            assert strip(small) == strip(published)
        else:
            assert small[key] == published[key], key
    assert agent_steps(small).eval_every == agent_steps(published).eval_every
    assert small.dataset.batch * small.dataset.length < published.dataset.batch * 50
    assert small.encoder.depth < published.encoder.depth
    assert small.actor.units * small.actor.layers < published.actor.units * published.actor.layers


@pytest.mark.parametrize('name', list(registry.VARIANTS))
def test_small_agent_update_is_finite(name):
    """A smoke run of the block: one update of the real-size small agent on a synthetic batch."""
    variant = registry.get(name)
    argv = ['--configs', *variant.standard, 'small', '--precision', '32', '--jit', 'False']
    config = build.load_config(variant, argv + ['--dataset.length', '12'])
    agent = build.build_agent(variant, config, (64, 64, 3), act_dim=1)
    metrics = agent.train(build.synthetic_batch(config, act_dim=1))
    assert np.isfinite(metrics['model_loss']) and np.isfinite(metrics['actor_loss'])
