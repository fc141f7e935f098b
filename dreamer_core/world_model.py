"""World model: encoder + RSSM + heads, trained with a variant's representation loss."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from dreamer_core import dists, nets, optim, rng
from dreamer_core.config import Config, ConfigError

if TYPE_CHECKING:
    from dreamer_core.variant import RepresentationLoss, Tensors

CLIP_REWARDS = {'identity': tf.identity, 'tanh': tf.tanh, 'sign': tf.sign}


class WorldModel(tf.Module):
    """Shared DreamerV2 world model; `repr_loss` is the variant's `RepresentationLoss` class."""

    def __init__(
        self,
        config: Config,
        obs_shape: Sequence[int],
        act_dim: int,
        repr_loss: type[RepresentationLoss],
    ) -> None:
        super().__init__(name='wm')
        self.config = config
        self.obs_shape = tuple(obs_shape)
        if config.clip_rewards not in CLIP_REWARDS:
            raise ConfigError(
                f'clip_rewards is {config.clip_rewards!r}: use one of {sorted(CLIP_REWARDS)}.'
            )
        self.repr = repr_loss(config, self.obs_shape)
        self.encoder = nets.ConvEncoder(**config.encoder)
        self.rssm = nets.RSSM(**rssm_settings(config.rssm, self.repr.rssm_keys))
        self.heads = {'reward': nets.MLP([], **config.reward_head)}
        if config.pred_discount:
            self.heads['discount'] = nets.MLP([], **config.discount_head)
        for name, head in self.repr.make_heads(config).items():
            if name in self.heads:
                raise ValueError(f'The variant head {name!r} would replace a core head.')
            self.heads[name] = head
        self._check_names()
        self.model_opt = optim.Optimizer('model', **config.model_opt)

    def _check_names(self):
        config = self.config
        for name in config.grad_heads:
            if name not in self.heads:
                raise ConfigError(
                    f'grad_heads names {name!r}, but this agent has the heads {sorted(self.heads)}: '
                    f'set --grad_heads to a subset, e.g. --grad_heads {",".join(sorted(self.heads))}.'
                )
        scales = set(config.loss_scales)
        terms = set(self.heads) | set(self.repr.terms) | ({'kl'} if self.repr.uses_kl else set())
        missing = terms - scales
        if missing:
            raise ConfigError(
                f'Loss terms {sorted(missing)} have no entry in loss_scales {sorted(scales)}.'
            )
        unused = scales - terms - ({'discount'} if not config.pred_discount else set())
        if unused:
            raise ConfigError(
                f'loss_scales has {sorted(unused)}, which this agent does not compute '
                f'(its terms: {sorted(terms)}). Check the spelling in configs.yaml or the flag.'
            )

    @property
    def modules(self) -> list[tf.Module]:
        return [self.encoder, self.rssm, *self.heads.values(), self.repr]

    def train(
        self, data: Tensors, state: Tensors | None = None
    ) -> tuple[Tensors, dict[str, Any], Tensors]:
        with tf.GradientTape() as tape:
            model_loss, state, outputs, metrics = self.loss(data, state)
        metrics.update(self.model_opt(tape, model_loss, self.modules))
        self.repr.after_update(self.encoder)
        return state, outputs, metrics

    def loss(
        self, data: Tensors, state: Tensors | None = None
    ) -> tuple[tf.Tensor, Tensors, dict[str, Any], Tensors]:
        data = self.repr.preprocess(self.preprocess(data))
        embed = self.encoder(data)
        post, prior = self.rssm.observe(embed, data['action'], state)
        feat = self.rssm.get_feat(post)
        losses, metrics = self.repr(data, embed, post, prior, feat)
        losses = dict(losses)
        if self.repr.uses_kl:
            losses['kl'], kl_value = self.rssm.kl_loss(post, prior, **self.config.kl)
            metrics['model_kl'] = tf.reduce_mean(kl_value)
        for name, head in self.heads.items():
            inp = feat if name in self.config.grad_heads else tf.stop_gradient(feat)
            like = tf.cast(head(inp).log_prob(tf.cast(data[name], tf.float32)), tf.float32)
            losses[name] = -tf.reduce_mean(like)
        scales = self.config.loss_scales
        model_loss = sum(
            scales[name] * tf.cast(value, tf.float32) for name, value in losses.items()
        )
        metrics.update({f'{name}_loss': value for name, value in losses.items()})
        metrics['prior_ent'] = tf.reduce_mean(self.rssm.get_dist(prior).entropy())
        metrics['post_ent'] = tf.reduce_mean(self.rssm.get_dist(post).entropy())
        last_state = {k: v[:, -1] for k, v in post.items()}
        outputs = dict(embed=embed, feat=feat, post=post, prior=prior, data=data)
        return model_loss, last_state, outputs, metrics

    def preprocess(self, obs: Mapping[str, tf.Tensor]) -> Tensors:
        obs = dict(obs)
        obs['image'] = tf.cast(obs['image'], dists.compute_dtype()) / 255.0 - 0.5
        if 'reward' in obs:
            obs['reward'] = CLIP_REWARDS[self.config.clip_rewards](
                tf.cast(obs['reward'], tf.float32)
            )
        if 'discount' in obs:
            obs['discount'] = tf.cast(obs['discount'], tf.float32) * self.config.discount
        if 'action' in obs:
            obs['action'] = tf.cast(obs['action'], dists.compute_dtype())
        return obs

    def imagine(
        self,
        policy: Callable[[tf.Tensor], dists.tfd.Distribution],
        start: Tensors,
        horizon: int,
    ) -> tuple[tf.Tensor, Tensors, tf.Tensor, tf.Tensor]:
        """Roll out `horizon` steps from every start state; time-major outputs [H, N, ...]."""
        flatten = lambda x: tf.reshape(x, [-1, *x.shape[2:]])
        state = {k: flatten(v) for k, v in start.items()}
        states, feats, actions = [], [], []
        for _ in range(horizon):
            feat = self.rssm.get_feat(state)
            action = policy(tf.stop_gradient(feat)).sample(seed=rng.seed())
            states.append(state)
            feats.append(feat)
            actions.append(action)
            state = self.rssm.img_step(state, action)
        feats, actions = tf.stack(feats), tf.stack(actions)
        states = {k: tf.stack([s[k] for s in states]) for k in states[0]}
        if 'discount' in self.heads:
            disc = self.heads['discount'](feats).mean()
        else:
            disc = self.config.discount * tf.ones(tf.shape(feats)[:-1], tf.float32)
        return feats, states, actions, disc

    def report(self, data: Tensors) -> Tensors:
        return self.repr.report(self.preprocess(data), self)


def rssm_settings(rssm: Mapping[str, Any], variant_keys: Iterable[str]) -> dict[str, Any]:
    """The RSSM's keyword arguments: the config's `rssm` block without the variant's keys."""
    known = set(inspect.signature(nets.RSSM.__init__).parameters) - {'self'}
    settings = {k: v for k, v in rssm.items() if k not in variant_keys}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f'rssm.{unknown[0]} is neither an RSSM setting ({", ".join(sorted(known))}) nor one '
            "of this variant's (its loss lists them in rssm_keys): remove it or fix the name."
        )
    return settings
