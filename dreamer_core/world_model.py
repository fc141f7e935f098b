"""World model: encoder + RSSM + heads, trained with a variant's representation loss."""

import tensorflow as tf

from dreamer_core import dists, nets, optim

CLIP_REWARDS = {'identity': tf.identity, 'tanh': tf.tanh, 'sign': tf.sign}


class WorldModel(tf.Module):
    """Shared DreamerV2 world model.

    `repr_loss(config, wm)` builds the variant's representation loss: it may register extra heads
    in `wm.heads` (Dreamer's image decoder) and declares the loss terms it returns in `terms`.
    """

    def __init__(self, config, obs_shape, act_dim, repr_loss):
        super().__init__(name='wm')
        self.config = config
        self.obs_shape = tuple(obs_shape)
        if config.clip_rewards not in CLIP_REWARDS:
            raise ValueError(
                f'clip_rewards is {config.clip_rewards!r}: use one of {sorted(CLIP_REWARDS)}.'
            )
        self.encoder = nets.ConvEncoder(**config.encoder)
        self.rssm = nets.RSSM.from_config(config.rssm)
        self.heads = {'reward': nets.MLP([], **config.reward_head)}
        if config.pred_discount:
            self.heads['discount'] = nets.MLP([], **config.discount_head)
        self.repr = repr_loss(config, self)
        self._check_names()
        self.model_opt = optim.Optimizer('model', **config.model_opt)

    def _check_names(self):
        config = self.config
        for name in config.grad_heads:
            if name not in self.heads:
                raise ValueError(
                    f'grad_heads names {name!r}, but this agent has the heads {sorted(self.heads)}: '
                    f'set --grad_heads to a subset, e.g. --grad_heads {",".join(sorted(self.heads))}.'
                )
        scales = set(config.loss_scales)
        terms = set(self.heads) | set(self.repr.terms) | ({'kl'} & scales)
        missing = terms - scales
        if missing:
            raise ValueError(
                f'Loss terms {sorted(missing)} have no entry in loss_scales {sorted(scales)}.'
            )
        unused = scales - terms - ({'discount'} if not config.pred_discount else set())
        if unused:
            raise ValueError(
                f'loss_scales has {sorted(unused)}, which this agent does not compute '
                f'(its terms: {sorted(terms)}). Check the spelling in configs.yaml or the flag.'
            )

    @property
    def modules(self):
        return [self.encoder, self.rssm, *self.heads.values(), self.repr]

    def train(self, data, state=None):
        with tf.GradientTape() as tape:
            model_loss, state, outputs, metrics = self.loss(data, state)
        metrics.update(self.model_opt(tape, model_loss, self.modules))
        self.repr.after_update()
        return state, outputs, metrics

    def loss(self, data, state=None):
        data = self.repr.preprocess(self.preprocess(data))
        embed = self.encoder(data)
        post, prior = self.rssm.observe(embed, data['action'], state)
        feat = self.rssm.get_feat(post)
        losses, metrics = self.repr(data, embed, post, prior, feat)
        losses = dict(losses)
        if 'kl' in self.config.loss_scales:
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

    def preprocess(self, obs):
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

    def imagine(self, policy, start, horizon):
        """Roll out `horizon` steps from every start state; time-major outputs [H, N, ...]."""
        flatten = lambda x: tf.reshape(x, [-1, *x.shape[2:]])
        state = {k: flatten(v) for k, v in start.items()}
        states, feats, actions = [], [], []
        for _ in range(horizon):
            feat = self.rssm.get_feat(state)
            action = policy(tf.stop_gradient(feat)).sample()
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

    def report(self, data):
        return self.repr.report(self.preprocess(data))
