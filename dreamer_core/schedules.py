"""Schedules: values that change with the training step, and every-N-steps triggers."""

from __future__ import annotations

import re

import tensorflow as tf

from dreamer_core.config import ConfigError


def schedule(string: str, step: int | tf.Tensor) -> float | tf.Tensor:
    """A constant or `linear(a,b,n)`, `warmup(n,v)`, `exp(a,b,halflife)`, `horizon(a,b,n)` of step."""
    try:
        return float(string)
    except ValueError:
        pass
    step = tf.cast(step, tf.float32)
    match = re.fullmatch(r'linear\((.+),(.+),(.+)\)', string)
    if match:
        initial, final, duration = [float(group) for group in match.groups()]
        mix = tf.clip_by_value(step / duration, 0, 1)
        return (1 - mix) * initial + mix * final
    match = re.fullmatch(r'warmup\((.+),(.+)\)', string)
    if match:
        warmup, value = [float(group) for group in match.groups()]
        scale = tf.clip_by_value(step / warmup, 0, 1)
        return scale * value
    match = re.fullmatch(r'exp\((.+),(.+),(.+)\)', string)
    if match:
        initial, final, halflife = [float(group) for group in match.groups()]
        return (initial - final) * 0.5 ** (step / halflife) + final
    match = re.fullmatch(r'horizon\((.+),(.+),(.+)\)', string)
    if match:
        initial, final, duration = [float(group) for group in match.groups()]
        mix = tf.clip_by_value(step / duration, 0, 1)
        horizon = (1 - mix) * initial + mix * final
        return 1 - 1 / horizon
    raise ConfigError(
        f'Unknown schedule {string!r}: use a number, linear(a,b,n), warmup(n,v), '
        'exp(a,b,halflife) or horizon(a,b,n).'
    )


class Every:
    """True once every `every` steps (never when every is 0)."""

    def __init__(self, every: int) -> None:
        self._every = every
        self._last = None

    def __call__(self, step: int) -> bool:
        step = int(step)
        if not self._every:
            return False
        if self._last is None:
            self._last = step
            return True
        if step >= self._last + self._every:
            self._last += self._every * ((step - self._last) // self._every)
            return True
        return False
