"""Exploration behaviours: random, plan2explore (ensemble disagreement), model_loss."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tensorflow as tf

from dreamer_core import dists, nets, optim
from dreamer_core.actor_critic import ActorCritic
from dreamer_core.config import Config, ConfigError

if TYPE_CHECKING:
    from dreamer_core.actor_critic import RewardFn
    from dreamer_core.variant import Tensors
    from dreamer_core.world_model import WorldModel

tfd = dists.tfd


class Random(tf.Module):
    """Uniformly random actions; learns nothing."""

    def __init__(self, config: Config, act_dim: int, discrete: bool, *_: Any) -> None:
        super().__init__(name='random')
        self._act_dim, self._discrete = act_dim, discrete

    def actor(self, feat: tf.Tensor) -> tfd.Distribution:
        shape = tf.concat([tf.shape(feat)[:-1], [self._act_dim]], 0)
        if self._discrete:
            return dists.OneHotDist(tf.zeros(shape))
        return tfd.Independent(tfd.Uniform(-tf.ones(shape), tf.ones(shape)), 1)

    def train(self, start: Tensors, outputs: dict[str, Any], data: Tensors) -> Tensors:
        return {}


class Intrinsic(tf.Module):
    """An actor-critic trained in imagination on an intrinsic reward (plus a scaled task reward).

    Subclasses build their reward model in `_build`, fit it in `_fit`, and score imagined states
    in `_intrinsic`.
    """

    NAME = 'intrinsic'

    def __init__(
        self,
        config: Config,
        act_dim: int,
        discrete: bool,
        step: tf.Variable,
        wm: WorldModel,
        reward: RewardFn,
    ) -> None:
        super().__init__(name=self.NAME)
        self.config, self.wm, self.reward = config, wm, reward
        self._build(config)
        self.ac = ActorCritic(config, act_dim, discrete, step, name='expl_behavior')
        self.actor = self.ac.actor
        self._make_model(config)
        self.opt = optim.Optimizer('expl', **config.expl_opt)

    def train(self, start: Tensors, outputs: dict[str, Any], data: Tensors) -> Tensors:
        metrics = self._fit(outputs, data)
        metrics.update(self.ac.train(self.wm, start, self._reward))
        return metrics

    def _reward(self, feat, state, action):
        reward = self.config.expl_intr_scale * self._intrinsic(feat, action)
        if self.config.expl_extr_scale:
            reward += self.config.expl_extr_scale * self.reward(feat, state, action)
        return reward

    def _build(self, config):
        """Checks of the behaviour's settings, before anything is built."""

    def _make_model(self, config):
        raise NotImplementedError

    def _fit(self, outputs, data):
        raise NotImplementedError

    def _intrinsic(self, feat, action):
        raise NotImplementedError


class Plan2Explore(Intrinsic):
    """Intrinsic reward = log std of an ensemble predicting the next latent (disagreement)."""

    NAME = 'plan2explore'

    def _build(self, config):
        rssm = config.rssm
        stoch = rssm.stoch * (rssm.discrete or 1)
        self._sizes = {'stoch': stoch, 'deter': rssm.deter, 'feat': stoch + rssm.deter}
        if config.disag_target not in self._sizes:
            raise ConfigError(
                f'disag_target is {config.disag_target!r}: use one of {sorted(self._sizes)}.'
            )

    def _make_model(self, config):
        self._networks = [
            nets.MLP(self._sizes[config.disag_target], **config.expl_head)
            for _ in range(config.disag_models)
        ]

    def _fit(self, outputs, data):
        targets = {
            'stoch': self.wm.rssm.flat_stoch(outputs['post']['stoch']),
            'deter': outputs['post']['deter'],
            'feat': outputs['feat'],
        }[self.config.disag_target]
        inputs = outputs['feat']
        if self.config.disag_action_cond:
            inputs = tf.concat([inputs, tf.cast(data['action'], inputs.dtype)], -1)
        offset = self.config.disag_offset
        if offset:
            # Each ensemble member predicts the target `offset` steps ahead from (feat, next action).
            targets = targets[:, offset:]
            inputs = inputs[:, :-offset]
        targets = tf.stop_gradient(tf.cast(targets, tf.float32))
        inputs = tf.stop_gradient(inputs)
        with tf.GradientTape() as tape:
            loss = -sum(tf.reduce_mean(head(inputs).log_prob(targets)) for head in self._networks)
        return self.opt(tape, loss, self._networks)

    def _intrinsic(self, feat, action):
        inputs = feat
        if self.config.disag_action_cond:
            inputs = tf.concat([feat, tf.cast(action, feat.dtype)], -1)
        # The predicted mean, as the original (it differs from the mode for binary heads).
        preds = tf.stack([head(inputs).mean() for head in self._networks])
        disag = tf.reduce_mean(tf.math.reduce_std(preds, 0), -1)
        return tf.math.log(disag) if self.config.disag_log else disag


class ModelLoss(Intrinsic):
    """Intrinsic reward = an MLP's prediction of the world model's KL at that state."""

    NAME = 'model_loss'

    def _build(self, config):
        if config.expl_model_loss != 'kl':
            raise ConfigError(
                f'expl_model_loss is {config.expl_model_loss!r}: only kl is supported.'
            )

    def _make_model(self, config):
        self.head = nets.MLP([], **config.expl_head)

    def _fit(self, outputs, data):
        post, prior = outputs['post'], outputs['prior']
        kl = tfd.kl_divergence(self.wm.rssm.get_dist(post), self.wm.rssm.get_dist(prior))
        target = tf.stop_gradient(tf.cast(kl, tf.float32))
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(self.head(tf.stop_gradient(outputs['feat'])).log_prob(target))
        return self.opt(tape, loss, self.head)

    def _intrinsic(self, feat, action):
        return self.head(feat).mode()


BEHAVIORS = {'random': Random, 'plan2explore': Plan2Explore, 'model_loss': ModelLoss}
