"""The compiled update's two start-up levers change its start-up time, not its numbers.

- A tf.function whose first call creates variables is traced twice. Agent.create_variables
  makes them first (one eager update on a short slice, then every value put back), so the
  update is traced once.
- The update is traced without AutoGraph (its one tensor condition is a written-out tf.cond).

Compared here with the plain path (AutoGraph on, variables made by tracing): the same
variables in the same checkpoint order with the same initial values, the random generators
untouched, and the same first two updates and variables after them.
"""

import numpy as np
import pytest
import tensorflow as tf

from dreamer_core import registry
from dreamer_core.build import synthetic_batch
from tests import tiny

FLAGS = ['--dataset.batch', '3', '--dataset.length', '6', '--seed', '3', '--jit', 'True']


def state(agent):
    pairs = agent.checkpoint_variables()
    gens = [g.state.numpy() for g in agent._generators()]
    return [n for n, _ in pairs], [v.numpy() for _, v in pairs], gens


@pytest.mark.parametrize('variant', list(registry.VARIANTS))
def test_variables_made_first_are_those_tracing_makes_and_the_update_is_traced_once(variant):
    made, config = tiny.tiny_agent(variant, FLAGS)
    batch = {k: tf.constant(v) for k, v in synthetic_batch(config, act_dim=6, seed=1).items()}
    made.create_variables(batch)
    made_names, made_values, made_gens = state(made)

    plain, _ = tiny.tiny_agent(variant, FLAGS)
    plain._train = tf.function(plain._train.python_function, autograph=True)
    plain._train.get_concrete_function(batch)  # tracing creates and initialises the variables
    plain._variables_created = True  # the plain path from here on
    plain_names, plain_values, plain_gens = state(plain)

    assert made_names == plain_names
    assert len(made_names) > 20
    # Optimizer state is among them (Adam's two moments per weight), and no update was
    # applied: every step count is still 0.
    opts = made._optimizers()
    assert len(opts) >= 3
    for opt in opts:
        assert int(opt._opt.iterations.numpy()) == 0, opt.name
        assert len(opt.variables_list) >= 5, opt.name  # step count, m and v of 2+ weights
    for name, got, want in zip(made_names, made_values, plain_values):
        np.testing.assert_array_equal(got, want, err_msg=name)
    # The agent's own stream (dreamer_core/rng.py), and the representation loss's where it has one.
    assert len(made_gens) == {'dreamer': 1, 'dreamerpro': 2, 'tpc': 2}[variant]
    for got, want in zip(made_gens, plain_gens):
        np.testing.assert_array_equal(got, want)

    for update in range(2):
        got, want = made.train(batch), plain.train(batch)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7, err_msg=key)
    for (name, got), (_, want) in zip(made.checkpoint_variables(), plain.checkpoint_variables()):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
    assert made._train.experimental_get_tracing_count() == 1
    assert plain._train.experimental_get_tracing_count() == 2


def test_making_variables_twice_changes_nothing():
    agent, config = tiny.tiny_agent('dreamer', FLAGS)
    batch = synthetic_batch(config, act_dim=6, seed=1)
    agent.create_variables(batch)
    _, first, _ = state(agent)
    agent.create_variables({k: v[::-1] for k, v in batch.items()})
    _, second, _ = state(agent)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
