"""Scans over time: the unrolled scan of the RSSM and the lambda-returns of the critic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import tensorflow as tf

Nest = TypeVar('Nest')  # a nested structure of tensors (tf.nest)


def static_scan(
    fn: Callable[[Nest, Any], Nest], inputs: Any, start: Nest, reverse: bool = False
) -> Nest:
    """Unrolled scan over the leading axis of `inputs`; returns the stacked carries."""
    last = start
    outputs = [[] for _ in tf.nest.flatten(start)]
    length = tf.nest.flatten(inputs)[0].shape[0]
    indices = reversed(range(length)) if reverse else range(length)
    for index in indices:
        inp = tf.nest.map_structure(lambda x: x[index], inputs)
        last = fn(last, inp)
        for out, value in zip(outputs, tf.nest.flatten(last)):
            out.append(value)
    if reverse:
        outputs = [list(reversed(x)) for x in outputs]
    outputs = [tf.stack(x, 0) for x in outputs]
    return tf.nest.pack_sequence_as(start, outputs)


def lambda_return(
    reward: tf.Tensor,
    value: tf.Tensor,
    pcont: tf.Tensor | float,
    bootstrap: tf.Tensor,
    lambda_: float,
) -> tf.Tensor:
    """R_t = r_t + d_t * ((1 - lambda) v_{t+1} + lambda R_{t+1}), time-major, R_H = bootstrap."""
    assert reward.shape.ndims == value.shape.ndims, (reward.shape, value.shape)
    if isinstance(pcont, (int, float)):
        pcont = pcont * tf.ones_like(reward)
    next_values = tf.concat([value[1:], bootstrap[None]], 0)
    inputs = reward + pcont * next_values * (1 - lambda_)
    return static_scan(
        lambda agg, cur: cur[0] + cur[1] * lambda_ * agg, (inputs, pcont), bootstrap, reverse=True
    )
