"""Small pure helpers shared by the world model, the actor-critic and the loop."""

import re

import tensorflow as tf


def static_scan(fn, inputs, start, reverse=False):
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


def lambda_return(reward, value, pcont, bootstrap, lambda_):
    """R_t = r_t + d_t * ((1 - lambda) v_{t+1} + lambda R_{t+1}), time-major, R_H = bootstrap."""
    assert reward.shape.ndims == value.shape.ndims, (reward.shape, value.shape)
    if isinstance(pcont, (int, float)):
        pcont = pcont * tf.ones_like(reward)
    next_values = tf.concat([value[1:], bootstrap[None]], 0)
    inputs = reward + pcont * next_values * (1 - lambda_)
    return static_scan(
        lambda agg, cur: cur[0] + cur[1] * lambda_ * agg, (inputs, pcont), bootstrap, reverse=True
    )


def schedule(string, step):
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
    raise ValueError(
        f'Unknown schedule {string!r}: use a number, linear(a,b,n), warmup(n,v), '
        'exp(a,b,halflife) or horizon(a,b,n).'
    )


def action_noise(action, amount, discrete):
    """Epsilon-random one-hot actions, or Gaussian noise clipped to [-1, 1]."""
    if amount == 0:
        return action
    amount = tf.cast(amount, action.dtype)
    if discrete:
        probs = amount / action.shape[-1] + (1 - amount) * action
        return tf.one_hot(
            tf.random.categorical(tf.math.log(probs), 1)[:, 0], action.shape[-1], dtype=action.dtype
        )
    return tf.clip_by_value(tf.random.normal(tf.shape(action), action, amount), -1, 1)


class Every:
    """True once every `every` steps (never when every is 0)."""

    def __init__(self, every):
        self._every = every
        self._last = None

    def __call__(self, step):
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


def flat_names(module):
    """Deterministic (path, variable) pairs of a tf.Module, each variable once."""
    seen, pairs = set(), []
    for path, var in module._flatten(
        predicate=lambda v: isinstance(v, tf.Variable), with_path=True
    ):
        if id(var) in seen:
            continue
        seen.add(id(var))
        pairs.append(('/'.join(str(p) for p in path), var))
    return pairs
