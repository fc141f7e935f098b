"""DreamerPro's representation loss: prototypes, SwAV and a temporal assignment loss.

Deng, Jang and Ahn, "DreamerPro", ICML 2022 (arXiv 2110.14565). The world model hands this module the augmented batch, its embedding and
posterior features; it returns the unweighted terms `swav`, `temp` and `norm`.

Layouts: Sinkhorn works on scores [K, N] (prototypes x samples); every loss function takes
log-probabilities and targets as [N, K] (samples x prototypes), summing over K and averaging
over N.
"""

import tensorflow as tf
import tf_keras as keras

from dreamer_core.config import ConfigError
from dreamer_core.variant import RepresentationLoss


def sinkhorn(scores, eps, iters):
    """Balanced soft assignments of N samples to K prototypes from scores [K, N].

    Log-domain Sinkhorn-Knopp: each row (prototype) is normalised to total 1/K, then each column
    (sample) to total 1/N; the result is scaled by N so every column sums to 1.
    """
    scores = tf.convert_to_tensor(scores, tf.float32)
    if scores.shape.rank != 2:
        raise ValueError(f'sinkhorn: scores must be [K, N], got shape {scores.shape}')
    if eps <= 0 or iters < 0:
        raise ValueError(f'sinkhorn: need eps > 0 and iters >= 0, got eps={eps}, iters={iters}')
    shape = tf.shape(scores)
    log_k = tf.math.log(tf.cast(shape[0], tf.float32))
    log_n = tf.math.log(tf.cast(shape[1], tf.float32))
    flat = tf.reshape(scores / eps, [-1])
    log_q = tf.reshape(tf.nn.log_softmax(flat), shape)
    for _ in range(iters):
        log_q -= tf.reduce_logsumexp(log_q, axis=1, keepdims=True) + log_k
        log_q -= tf.reduce_logsumexp(log_q, axis=0, keepdims=True) + log_n
    return tf.stop_gradient(tf.exp(log_q + log_n))


def translate(images, shifts, interpolation='BILINEAR'):
    """Moves image content by (dx, dy) pixels (right, down); outside pixels repeat the edge.

    images: [N, H, W, C] float; shifts: [N, 2] float (dx, dy). Returns images' dtype.

    The same numbers as TensorFlow's ImageProjectiveTransformV3 with fill_mode NEAREST (a test
    compares them): output pixel (x, y) reads the input at (x - dx, y - dy), clamped into the
    image, bilinearly or at the nearest pixel. Written as two gathers along width and height,
    which XLA compiles (the transform op has no XLA kernel), so the update can run under XLA.
    """
    images = tf.convert_to_tensor(images)
    shifts = tf.convert_to_tensor(shifts, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f'translate: images must be [N, H, W, C], got shape {images.shape}')
    if shifts.shape.rank != 2 or shifts.shape[-1] != 2:
        raise ValueError(f'translate: shifts must be [N, 2] (dx, dy), got shape {shifts.shape}')
    if interpolation not in ('BILINEAR', 'NEAREST'):
        raise ValueError(
            f'translate: interpolation must be BILINEAR or NEAREST, got {interpolation}'
        )
    out = tf.cast(images, tf.float32)
    shape = tf.shape(out)
    for axis, shift in ((2, shifts[:, 0]), (1, shifts[:, 1])):
        size = shape[axis]
        last = tf.cast(size - 1, tf.float32)
        coords = tf.range(tf.cast(size, tf.float32))[None] - shift[:, None]  # [N, size]
        coords = tf.clip_by_value(coords, 0.0, last)
        if interpolation == 'NEAREST':
            index = tf.cast(tf.floor(coords + 0.5), tf.int32)  # round half up; coords >= 0
            out = tf.gather(out, index, axis=axis, batch_dims=1)
            continue
        low = tf.floor(coords)
        # The transform op's weights: (low + 1 - x) for the pixel below, (x - low) above.
        w_low, w_high = (low + 1) - coords, coords - low
        expand = (lambda w: w[:, None, :, None]) if axis == 2 else (lambda w: w[:, :, None, None])
        low = tf.cast(low, tf.int32)
        high = tf.minimum(low + 1, size - 1)  # clamped only where x = size - 1: weight 0
        below = tf.gather(out, low, axis=axis, batch_dims=1)
        above = tf.gather(out, high, axis=axis, batch_dims=1)
        out = expand(w_low) * below + expand(w_high) * above
    return tf.cast(out, images.dtype)


def draw_shifts(generator, draws, max_delta, bilinear):
    """[draws, 2] shifts (dx, dy): uniform in [-d, d], or a uniform integer in [-d, d]."""
    if bilinear:
        return generator.uniform([draws, 2], -max_delta, max_delta, tf.float32)
    # As the original: floor(U(-d, d + 1)) gives every integer of [-d, d] the same chance
    # (rounding U(-d, d) would draw the two end points half as often).
    return tf.floor(generator.uniform([draws, 2], -max_delta, max_delta + 1, tf.float32))


def augment(data, max_delta, same_across_time, bilinear, generator):
    """Duplicates every key along the batch (B -> 2B) and randomly shifts each sequence's images."""
    if 'image' not in data:
        raise KeyError(f'augment: data needs an "image" key, got keys {sorted(data)}')
    image = data['image']
    if image.shape.rank != 5:
        raise ValueError(f'augment: image must be [B, T, H, W, C], got shape {image.shape}')
    out = {key: tf.concat([value, value], 0) for key, value in data.items()}
    shape = tf.shape(out['image'])
    batch, time = shape[0], shape[1]
    draws = batch if same_across_time else batch * time
    shifts = draw_shifts(generator, draws, max_delta, bilinear)
    if same_across_time:
        shifts = tf.repeat(shifts, time, axis=0)  # Frames are flattened batch-major below.
    frames = tf.reshape(out['image'], tf.concat([[-1], shape[2:]], 0))
    moved = translate(frames, shifts, 'BILINEAR' if bilinear else 'NEAREST')
    out['image'] = tf.reshape(moved, shape)
    return out


def swav_loss(logp1, logp2, q1, q2):
    """Each view predicts the other's targets; all inputs [N, K]."""
    cross = lambda q, logp: tf.reduce_mean(tf.reduce_sum(q * logp, -1))
    return -0.5 * cross(q2, logp1) - 0.5 * cross(q1, logp2)


def temporal_loss(feat_logp, q):
    """The latent state predicts its own observation's assignment; inputs [N, K]."""
    return -tf.reduce_mean(tf.reduce_sum(q * feat_logp, -1))


def norm_loss(obs_norm, feat_norm):
    """Keeps the raw projections near unit length (any shape)."""
    return tf.reduce_mean(tf.square(obs_norm - 1.0)) + tf.reduce_mean(tf.square(feat_norm - 1.0))


def _non_trainable(next_creator, **kwargs):
    kwargs['trainable'] = False
    return next_creator(**kwargs)


def _project(layer, x):
    """Dense projection in float32; returns (unit vectors, norms)."""
    raw = layer(tf.cast(x, tf.float32))
    return tf.math.l2_normalize(raw, -1), tf.norm(raw, axis=-1)


def _check_sequence(name, x, batch, time):
    """x must be [batch, time, D]; compares static sizes when they are known."""
    shape = x.shape
    if shape.rank != 3:
        raise ValueError(f'ProtoLoss: {name} must be [2B, T, D], got shape {shape}')
    for axis, want, label in ((0, batch, '2B'), (1, time, 'T')):
        if shape[axis] is not None and want is not None and shape[axis] != want:
            raise ValueError(
                f'ProtoLoss: {name} has {label}={shape[axis]} but the images have {label}={want}'
            )


class ProtoLoss(RepresentationLoss):
    """Prototype representation loss plus the EMA target encoder it needs."""

    terms = ('swav', 'temp', 'norm')
    rssm_keys = (
        'warm_up',
        'num_prototypes',
        'proto',
        'temperature',
        'sinkhorn_eps',
        'sinkhorn_iters',
    )

    def __init__(self, config, obs_shape, make_encoder=None):
        super().__init__(config, obs_shape, name='proto_loss')
        rssm = config.rssm
        self._num = int(rssm.num_prototypes)
        self._temperature = float(rssm.temperature)
        self._eps = float(rssm.sinkhorn_eps)
        self._iters = int(rssm.sinkhorn_iters)
        self._warm_up = int(rssm.warm_up)
        aug = config.aug
        self._aug = (float(aug.max_delta), bool(aug.same_across_time), bool(aug.bilinear))
        self._freeze_iters = int(config.freeze_prototypes_iters)
        self._ema_every = int(config.ema_update_every)
        self._ema_fraction = float(config.ema_update_fraction)
        if self._ema_every < 1 or not 0.0 < self._ema_fraction <= 1.0:
            raise ConfigError(
                f'ProtoLoss: need ema_update_every >= 1 and 0 < ema_update_fraction <= 1, got '
                f'{self._ema_every} and {self._ema_fraction}'
            )
        seed = int(config.seed)
        init = tf.random.stateless_normal([self._num, int(rssm.proto)], seed=[seed, 0])
        self.prototypes = tf.Variable(init, name='prototypes')
        dense = lambda offset: keras.layers.Dense(
            int(rssm.proto),
            dtype='float32',
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + offset),
        )
        self.obs_proj = dense(1)
        self.feat_proj = dense(2)
        self._ema_obs_proj = dense(3)
        self._ema_obs_proj.trainable = False
        if make_encoder is None:
            from dreamer_core import nets

            make_encoder = nets.ConvEncoder
        self._ema_encoder = make_encoder(**config.encoder)
        self._updates = tf.Variable(0, dtype=tf.int64, trainable=False, name='proto_updates')
        self._generator = tf.random.Generator.from_seed(seed)

    def preprocess(self, data):
        """Two randomly shifted views of the batch (2B sequences); images float in [-0.5, 0.5]."""
        return augment(data, *self._aug, self._generator)

    def __call__(self, data, embed, post, prior, feat):
        """Losses on the augmented 2B batch; `post`/`prior` are unused (feat is the posterior's)."""
        del post, prior
        image = data['image']
        if image.shape.rank != 5:
            raise ValueError(f'ProtoLoss: image must be [2B, T, H, W, C], got shape {image.shape}')
        batch, time = image.shape[0], image.shape[1]
        _check_sequence('embed', embed, batch, time)
        _check_sequence('feat', feat, batch, time)
        if batch is not None and batch % 2:
            raise ValueError(
                f'ProtoLoss: the batch must hold two views (2B), got {batch} sequences'
            )
        if time is not None and time <= self._warm_up:
            raise ConfigError(
                f'ProtoLoss: sequence length T={time} must exceed warm_up={self._warm_up}'
            )
        protos, frozen = self._prototypes()
        obs, obs_norm = _project(self.obs_proj, embed)
        target = tf.stop_gradient(self._ema_projection(data))
        logp = self._log_probs(obs, protos)
        q1, q2 = self._targets(target, tf.stop_gradient(protos))
        logp1, logp2 = tf.split(logp, 2, 0)
        feat_unit, feat_norm = _project(self.feat_proj, feat)
        feat_logp = self._log_probs(feat_unit, protos)
        q = tf.concat([q1, q2], 0)
        losses = {
            'swav': swav_loss(logp1, logp2, q1, q2),
            'temp': temporal_loss(feat_logp, q),
            'norm': norm_loss(obs_norm, feat_norm),
        }
        return losses, self._metrics(logp, q, obs_norm, feat_norm, frozen)

    def after_update(self, encoder):
        """EMA step for the target encoder and projection; the first call copies."""
        pairs = self._ema_pairs(encoder)
        step = self._updates
        mix = tf.where(step == 0, 1.0, self._ema_fraction)
        # Off-schedule updates use mix 0, which leaves the EMA weights exactly as they are.
        mix = tf.where(step % self._ema_every == 0, mix, 0.0)
        for online, ema in pairs:
            m = tf.cast(mix, ema.dtype)
            ema.assign(m * tf.cast(online, ema.dtype) + (1 - m) * ema)
        self._updates.assign_add(1)

    @property
    def updates(self):
        return self._updates

    def _prototypes(self):
        """Normalises the prototypes in place; their gradient is zero while frozen."""
        self.prototypes.assign(tf.math.l2_normalize(self.prototypes, -1))
        protos = tf.convert_to_tensor(self.prototypes)
        frozen = self._updates < self._freeze_iters
        return tf.where(frozen, tf.stop_gradient(protos), protos), frozen

    def _ema_projection(self, data):
        # Variables the EMA nets create on their first call must never reach the optimizer.
        with tf.variable_creator_scope(_non_trainable):
            embed = self._ema_encoder(data)
            unit, _ = _project(self._ema_obs_proj, embed)
        return unit

    def _log_probs(self, unit, protos):
        """[2B, T, P] unit vectors -> [2B * (T - warm_up), K] log-probabilities over prototypes."""
        scores = self._scores(unit, protos)
        return tf.nn.log_softmax(scores / self._temperature, -1)

    def _scores(self, unit, protos):
        unit = unit[:, self._warm_up :]
        flat = tf.reshape(unit, [-1, unit.shape[-1]])
        return tf.matmul(flat, protos, transpose_b=True)

    def _targets(self, unit, protos):
        """Sinkhorn targets per view (first B sequences vs second B), each [B * T', K]."""
        scores = self._scores(unit, protos)
        views = tf.split(scores, 2, 0)
        return [tf.transpose(sinkhorn(tf.transpose(s), self._eps, self._iters)) for s in views]

    def _ema_pairs(self, encoder):
        online = list(encoder.variables) + list(self.obs_proj.variables)
        ema = list(self._ema_encoder.variables) + list(self._ema_obs_proj.variables)
        if not ema or len(online) != len(ema):
            raise RuntimeError(
                f'ProtoLoss.after_update: {len(online)} online vs {len(ema)} EMA variables; call the '
                'loss (which builds the EMA nets) before after_update, with the same encoder config'
            )
        for a, b in zip(online, ema):
            if a.shape != b.shape:
                raise RuntimeError(
                    f'ProtoLoss: online {a.name} {a.shape} does not match EMA {b.name} {b.shape}'
                )
        return list(zip(online, ema))

    def _metrics(self, logp, q, obs_norm, feat_norm, frozen):
        probs = tf.exp(logp)
        # Which prototypes are some sample's top target (one-hot max: XLA has no bincount).
        used = tf.reduce_max(tf.one_hot(tf.argmax(q, -1), self._num, dtype=tf.float32), 0)
        return {
            'proto_obs_ent': -tf.reduce_mean(tf.reduce_sum(probs * logp, -1)),
            'proto_target_usage': tf.reduce_mean(used),
            'proto_obs_norm': tf.reduce_mean(obs_norm),
            'proto_feat_norm': tf.reduce_mean(feat_norm),
            'proto_frozen': tf.cast(frozen, tf.float32),
        }
