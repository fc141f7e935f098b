"""Adam with global-norm clipping, decoupled weight decay and a dynamic loss scale."""

from __future__ import annotations

import re
from collections.abc import Sequence

import tensorflow as tf
import tf_keras as keras

from dreamer_core import dists
from dreamer_core.config import ConfigError


class Optimizer(tf.Module):
    def __init__(
        self,
        name: str,
        lr: float,
        eps: float = 1e-4,
        clip: float | None = None,
        wd: float | None = None,
        opt: str = 'adam',
        wd_pattern: str = r'.*',
    ) -> None:
        super().__init__(name=name)
        if opt != 'adam':
            raise ConfigError(f'{name}_opt.opt is {opt!r}: only adam is supported.')
        self._name = name
        self._clip, self._wd, self._wd_pattern = clip, wd, wd_pattern
        self._opt = keras.optimizers.Adam(lr, epsilon=eps)
        self._mixed = dists.compute_dtype() == tf.float16
        if self._mixed:
            self._opt = keras.mixed_precision.LossScaleOptimizer(self._opt, dynamic=True)

    @property
    def variables_list(self) -> list[tf.Variable]:
        """The optimizer's own state (step, moments, loss scale) in creation order."""
        return list(self._opt.variables())

    def __call__(
        self, tape: tf.GradientTape, loss: tf.Tensor, modules: tf.Module | Sequence[tf.Module]
    ) -> dict[str, tf.Tensor]:
        """Minimise `loss` over the trainable variables of `modules`; returns metrics."""
        assert loss.dtype is tf.float32, (self._name, loss.dtype)
        assert len(loss.shape) == 0, (self._name, loss.shape)
        modules = modules if isinstance(modules, (list, tuple)) else [modules]
        varibs = []
        for module in modules:
            varibs += [v for v in module.trainable_variables if all(v is not w for w in varibs)]
        metrics = {f'{self._name}_loss': loss}
        if not self._mixed:
            # Under float32 a non-finite loss is a bug or a divergence: fail with its name. The
            # checked tensor is returned as a metric so the check always runs.
            metrics[f'{self._name}_loss'] = tf.debugging.check_numerics(loss, f'{self._name}_loss')
        if self._mixed:
            with tape:
                scaled = self._opt.get_scaled_loss(loss)
            grads = self._opt.get_unscaled_gradients(tape.gradient(scaled, varibs))
            metrics[f'{self._name}_loss_scale'] = self._opt.loss_scale
        else:
            grads = tape.gradient(loss, varibs)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, varibs)]
        norm = tf.linalg.global_norm(grads)
        if not self._mixed:
            norm = tf.debugging.check_numerics(norm, f'{self._name}_grad_norm')
        metrics[f'{self._name}_grad_norm'] = norm
        if self._clip:
            grads, _ = tf.clip_by_global_norm(grads, self._clip, norm)
        if self._mixed:
            # The loss-scale optimizer skips non-finite steps; decay must skip them too.
            finite = tf.math.is_finite(norm)
            metrics[f'{self._name}_skipped'] = 1.0 - tf.cast(finite, tf.float32)
        else:
            finite = True
        if self._wd:
            self._apply_weight_decay(varibs, finite)
        self._opt.apply_gradients(zip(grads, varibs))
        return metrics

    def _apply_weight_decay(self, varibs, finite):
        for var in varibs:
            if re.search(self._wd_pattern, self._name + '/' + var.name):
                decayed = (1 - self._wd) * var
                var.assign(tf.where(finite, decayed, var) if finite is not True else decayed)
