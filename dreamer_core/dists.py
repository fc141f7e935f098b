"""Distributions used by the heads and the RSSM (float32 parameters)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from dreamer_core import rng
from dreamer_core.config import ConfigError

tfd = tfp.distributions
tfb = tfp.bijectors


def compute_dtype() -> str:
    return keras.mixed_precision.global_policy().compute_dtype


class SampleDist:
    """Mean, mode and entropy of a distribution estimated from samples (for tanh-normal)."""

    def __init__(self, dist: tfd.Distribution, samples: int = 100) -> None:
        self._dist = dist
        self._samples = samples

    @property
    def name(self) -> str:
        return 'SampleDist'

    def __getattr__(self, name):
        return getattr(self._dist, name)

    def mean(self) -> tf.Tensor:
        return tf.reduce_mean(self._dist.sample(self._samples, seed=rng.seed()), 0)

    def _sample_and_log_prob(self):
        # Log-probabilities from the pre-tanh samples (TFP's sample_and_log_prob), as the
        # original's bijector cache gave: inverting a saturated float32 action would cap them.
        return self._dist.experimental_sample_and_log_prob(self._samples, seed=rng.seed())

    def mode(self) -> tf.Tensor:
        # Per batch element, the sample of highest log-probability.
        sample, logprob = self._sample_and_log_prob()
        best = tf.argmax(logprob, 0)
        sample = tf.experimental.numpy.moveaxis(sample, 0, -1 - len(self._dist.event_shape))
        batch_dims = len(logprob.shape) - 1
        return tf.gather(sample, best, axis=batch_dims, batch_dims=batch_dims)

    def entropy(self) -> tf.Tensor:
        _, logprob = self._sample_and_log_prob()
        return -tf.reduce_mean(logprob, 0)


class OneHotDist(tfd.OneHotCategorical):
    """One-hot categorical whose samples carry straight-through gradients."""

    def __init__(
        self,
        logits: tf.Tensor | None = None,
        probs: tf.Tensor | None = None,
        dtype: tf.DType | str | None = None,
    ) -> None:
        self._sample_dtype = dtype or compute_dtype()
        super().__init__(logits=logits, probs=probs)

    def mode(self) -> tf.Tensor:
        return tf.cast(super().mode(), self._sample_dtype)

    def sample(
        self, sample_shape: int | Sequence[int] | tf.Tensor = (), seed: Any = None
    ) -> tf.Tensor:
        sample = tf.cast(super().sample(sample_shape, seed), self._sample_dtype)
        probs = self.probs_parameter()
        while len(probs.shape) < len(sample.shape):
            probs = probs[None]
        return sample + tf.cast(probs - tf.stop_gradient(probs), self._sample_dtype)


class TruncNormalDist(tfd.TruncatedNormal):
    """Truncated normal whose samples stay strictly inside the bounds."""

    def __init__(
        self,
        loc: tf.Tensor,
        scale: tf.Tensor,
        low: float | tf.Tensor,
        high: float | tf.Tensor,
        clip: float = 1e-6,
    ) -> None:
        super().__init__(loc, scale, low, high)
        self._clip = clip

    def sample(self, *args: Any, **kwargs: Any) -> tf.Tensor:
        event = super().sample(*args, **kwargs)
        clipped = tf.clip_by_value(event, self.low + self._clip, self.high - self._clip)
        return event - tf.stop_gradient(event) + tf.stop_gradient(clipped)


class ClippedTanh(tfb.Tanh):
    """Tanh whose inverse stays finite for actions at exactly +-1.

    Only for the log-probability of an action given from outside (replay, the actor loss);
    SampleDist scores its own samples from their pre-tanh values instead.
    """

    def _inverse(self, y):
        y = tf.clip_by_value(y, -0.99999997, 0.99999997)
        return tf.atanh(y)

    def _inverse_log_det_jacobian(self, y):
        y = tf.clip_by_value(y, -0.99999997, 0.99999997)
        return -tf.math.log1p(-tf.square(y))


def make(
    kind: str,
    out: tf.Tensor | None,
    std: tf.Tensor | None = None,
    min_std: float = 0.1,
    event_dims: int = 1,
) -> tfd.Distribution | SampleDist:
    """Distribution over `out` (float32) of the named kind."""
    if kind == 'mse':
        return tfd.Independent(tfd.Normal(out, 1.0), event_dims)
    if kind == 'binary':
        return tfd.Independent(tfd.Bernoulli(logits=out, dtype=tf.float32), event_dims)
    if kind == 'normal':
        return tfd.Independent(tfd.Normal(out, tf.nn.softplus(std) + min_std), event_dims)
    if kind == 'tanh_normal':
        mean = 5 * tf.tanh(out / 5)
        std = tf.nn.softplus(std) + min_std
        dist = tfd.TransformedDistribution(tfd.Normal(mean, std), ClippedTanh())
        return SampleDist(tfd.Independent(dist, event_dims))
    if kind == 'trunc_normal':
        std = 2 * tf.nn.sigmoid(std / 2) + min_std
        return tfd.Independent(TruncNormalDist(tf.tanh(out), std, -1, 1), event_dims)
    if kind == 'onehot':
        return OneHotDist(out)
    raise ConfigError(
        f'Unknown distribution {kind!r}: use mse, binary, normal, tanh_normal, '
        'trunc_normal or onehot.'
    )


NEEDS_STD = ('normal', 'tanh_normal', 'trunc_normal')
