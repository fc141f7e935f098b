"""Behaviour learning in imagination: actor, critic, slow target critic."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import tensorflow as tf

from dreamer_core import nets, optim, scan, schedules
from dreamer_core.config import Config, ConfigError

if TYPE_CHECKING:
    from dreamer_core.variant import Tensors
    from dreamer_core.world_model import WorldModel

    # reward(feat, state, action) of imagined time-major trajectories [H, N, ...] -> [H, N].
    RewardFn = Callable[[tf.Tensor, Tensors, tf.Tensor], tf.Tensor]


TASK = 'task_behavior'  # the module name of the task behaviour (the exploration one differs)


class ActorCritic(tf.Module):
    def __init__(
        self, config: Config, act_dim: int, discrete: bool, step: tf.Variable, name: str = TASK
    ) -> None:
        super().__init__(name=name)
        self.config = config
        self.step = step
        actor = dict(config.actor)
        if discrete and actor['dist'] not in ('onehot',):
            raise ConfigError(f'Discrete actions need actor.dist onehot, not {actor["dist"]!r}.')
        if not discrete and actor['dist'] == 'onehot':
            raise ConfigError(
                'Continuous actions need actor.dist tanh_normal or trunc_normal, not onehot.'
            )
        if config.actor_grad not in ('dynamics', 'reinforce', 'both'):
            raise ConfigError(
                f'actor_grad is {config.actor_grad!r}: use dynamics, reinforce or both.'
            )
        self.actor = nets.MLP(act_dim, **actor)
        self.critic = nets.MLP([], **config.critic)
        self._target_critic = nets.MLP([], **config.critic) if config.slow_target else self.critic
        self._updates = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.actor_opt = optim.Optimizer('actor', **config.actor_opt)
        self.critic_opt = optim.Optimizer('critic', **config.critic_opt)

    def train(self, world_model: WorldModel, start: Tensors, reward_fn: RewardFn) -> Tensors:
        hor = self.config.imag_horizon
        with tf.GradientTape() as actor_tape:
            feat, state, action, disc = world_model.imagine(self.actor, start, hor)
            reward = reward_fn(feat, state, action)
            target, weight, metrics = self.target(feat, reward, disc)
            actor_loss, mets = self.actor_loss(feat, action, target, weight)
        metrics.update(mets)
        with tf.GradientTape() as critic_tape:
            critic_loss, mets = self.critic_loss(feat, target, weight)
        metrics.update(mets)
        metrics.update(self.actor_opt(actor_tape, actor_loss, self.actor))
        metrics.update(self.critic_opt(critic_tape, critic_loss, self.critic))
        self.update_slow_target()
        return metrics

    def actor_loss(
        self, feat: tf.Tensor, action: tf.Tensor, target: tf.Tensor, weight: tf.Tensor
    ) -> tuple[tf.Tensor, Tensors]:
        # As the original: the policy of all H imagined steps (the entropy metric averages
        # them), the objective on the first H-1.
        policy = self.actor(tf.stop_gradient(feat))
        metrics = {}
        if self.config.actor_grad == 'dynamics':
            objective = target
        else:
            baseline = self.critic(feat[:-1]).mode()
            advantage = tf.stop_gradient(target - baseline)
            # The imagined action keeps its gradient here, as in the original: log_prob also
            # differentiates through the (straight-through or reparameterized) sample.
            objective = policy.log_prob(action)[:-1] * advantage
            if self.config.actor_grad == 'both':
                mix = schedules.schedule(str(self.config.actor_grad_mix), self.step)
                objective = mix * target + (1 - mix) * objective
                metrics['actor_grad_mix'] = mix
        ent = policy.entropy()
        ent_scale = schedules.schedule(str(self.config.actor_ent), self.step)
        objective += ent_scale * ent[:-1]
        actor_loss = -tf.reduce_mean(weight[:-1] * objective)
        metrics.update(actor_ent=tf.reduce_mean(ent), actor_ent_scale=ent_scale)
        return actor_loss, metrics

    def critic_loss(
        self, feat: tf.Tensor, target: tf.Tensor, weight: tf.Tensor
    ) -> tuple[tf.Tensor, Tensors]:
        dist = self.critic(tf.stop_gradient(feat[:-1]))
        like = dist.log_prob(tf.stop_gradient(target))
        critic_loss = -tf.reduce_mean(like * weight[:-1])
        return critic_loss, {'critic': tf.reduce_mean(dist.mode())}

    def target(
        self, feat: tf.Tensor, reward: tf.Tensor, disc: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, Tensors]:
        """Lambda returns for steps 0..H-2 and their weights (cumulative discounts)."""
        reward = tf.cast(reward, tf.float32)
        disc = tf.cast(disc, tf.float32)
        value = self._target_critic(feat).mode()
        target = scan.lambda_return(
            reward[:-1],
            value[:-1],
            disc[:-1],
            bootstrap=value[-1],
            lambda_=self.config.discount_lambda,
        )
        weight = tf.stop_gradient(
            tf.math.cumprod(tf.concat([tf.ones_like(disc[:1]), disc[:-1]], 0), 0)
        )
        metrics = {
            'reward_mean': tf.reduce_mean(reward),
            'reward_std': tf.math.reduce_std(reward),
            'critic_slow': tf.reduce_mean(value),
            'critic_target': tf.reduce_mean(target),
        }
        return target, weight, metrics

    def update_slow_target(self) -> None:
        if not self.config.slow_target:
            return
        fraction = float(self.config.slow_target_fraction)

        def mix_in():
            mix = tf.where(self._updates == 0, 1.0, fraction)  # the first update copies
            for src, dst in zip(self.critic.variables, self._target_critic.variables):
                dst.assign(mix * src + (1 - mix) * dst)
            return tf.constant(True)

        # tf.cond written out: the update is traced without AutoGraph (agent.py).
        every = self.config.slow_target_update
        tf.cond(self._updates % every == 0, mix_in, lambda: tf.constant(False))
        self._updates.assign_add(1)
