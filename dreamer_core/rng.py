"""Where the agent's random draws come from: one generator whose state is checkpointed.

TensorFlow's stateful random ops (and TFP's `sample()` without a seed) keep their state inside
the op's kernel, where no checkpoint can reach it: a resumed run would start those streams
again from the global seed. Inside `using(generator)` every draw of the agent (the RSSM's
samples, the actor's samples and their sample-based mode and entropy, the action noise) takes a
stateless seed from `generator` instead, so the whole stream is one variable the checkpoint
saves. Outside it (unit tests calling a distribution directly), `seed()` is None and TFP draws
as usual.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

_stack: list[tf.random.Generator] = []


@contextlib.contextmanager
def using(generator: tf.random.Generator | None):
    """Draws inside this block (also while a tf.function traces) come from `generator`; None
    keeps TensorFlow's global stream (the draws of the code before this module, which
    tests/test_first_updates.py compares against)."""
    _stack.append(generator)
    try:
        yield generator
    finally:
        _stack.pop()


def seed() -> tf.Tensor | None:
    """A fresh stateless seed (int32 [2]) from the active generator, or None without one."""
    if not _stack or _stack[-1] is None:
        return None
    return _stack[-1].uniform_full_int([2], tf.int32)


def normal(shape, mean, stddev) -> tf.Tensor:
    """Gaussian draws from the active generator (TensorFlow's global stream outside `using`)."""
    key = seed()
    if key is None:
        return tf.random.normal(shape, mean, stddev)
    return tf.random.stateless_normal(shape, key, mean, stddev)


def categorical(logits, samples: int) -> tf.Tensor:
    """Categorical draws from the active generator (the global stream outside `using`)."""
    key = seed()
    if key is None:
        return tf.random.categorical(logits, samples)
    return tf.random.stateless_categorical(logits, samples, key)
