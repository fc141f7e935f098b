"""DreamerPro's prototype loss: pure functions against NumPy, the module on a fake world model."""

import pathlib
import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from dreamer_core import registry
from dreamer_core.config import Config

REPO = pathlib.Path(__file__).resolve().parents[1]
pl = registry.get('dreamerpro').load_module()

try:
    from dreamer_core.nets import ConvEncoder
except ImportError:  # The shared core is written in parallel; a stand-in keeps these tests useful.

    class ConvEncoder(tf.Module):
        """Same call signature as nets.ConvEncoder: data['image'] [B, T, H, W, C] -> [B, T, E]."""

        def __init__(self, depth=2, act='elu', kernels=(4, 4, 4, 4), keys=('image',)):
            super().__init__()
            self.conv = keras.layers.Conv2D(depth, kernels[0], 4, activation=act)

        def __call__(self, data):
            image = data['image']
            x = self.conv(tf.reshape(image, [-1, *image.shape[-3:]]))
            x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
            return tf.reshape(x, tf.concat([tf.shape(image)[:-3], [x.shape[-1]]], 0))


def np_logsumexp(x, axis=None, keepdims=False):
    top = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top
    return out if keepdims else np.squeeze(out, axis=axis)


def np_log_softmax(x, axis=-1):
    return x - np_logsumexp(x, axis, keepdims=True)


def np_sinkhorn(scores, eps, iters):
    k, n = scores.shape
    log_q = (scores / eps) - np_logsumexp(scores / eps)
    for _ in range(iters):
        log_q = log_q - np_logsumexp(log_q, 1, keepdims=True) - np.log(k)
        log_q = log_q - np_logsumexp(log_q, 0, keepdims=True) - np.log(n)
    return np.exp(log_q + np.log(n))


@pytest.mark.parametrize('eps,iters', [(0.05, 3), (0.0125, 3), (0.5, 1), (1.0, 0)])
def test_sinkhorn_matches_numpy(eps, iters):
    scores = np.random.default_rng(iters).uniform(-1, 1, (5, 7)).astype(np.float32)
    got = pl.sinkhorn(tf.constant(scores), eps, iters).numpy()
    want = np_sinkhorn(scores.astype(np.float64), eps, iters)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_sinkhorn_marginals_and_no_gradient():
    scores = tf.constant(np.random.default_rng(0).normal(size=(4, 10)), tf.float32)
    q3 = pl.sinkhorn(scores, 0.5, 3).numpy()
    np.testing.assert_allclose(q3.sum(0), np.ones(10), rtol=1e-5)
    q50 = pl.sinkhorn(scores, 0.5, 50).numpy()
    np.testing.assert_allclose(q50.sum(0), np.ones(10), rtol=1e-5)
    np.testing.assert_allclose(q50.sum(1), np.full(4, 10 / 4), rtol=1e-4)
    with tf.GradientTape() as tape:
        tape.watch(scores)
        total = tf.reduce_sum(pl.sinkhorn(scores, 0.5, 3) * scores)
    grad = tape.gradient(total, scores).numpy()
    np.testing.assert_allclose(grad, q3, rtol=1e-5)  # Only the explicit factor carries gradient.


def test_sinkhorn_rejects_bad_input():
    with pytest.raises(ValueError, match='K, N'):
        pl.sinkhorn(tf.zeros([3]), 0.05, 3)
    with pytest.raises(ValueError, match='eps'):
        pl.sinkhorn(tf.zeros([3, 2]), 0.0, 3)


def test_losses_match_numpy():
    rng = np.random.default_rng(1)
    n, k = 6, 5
    logp1, logp2 = (np_log_softmax(rng.normal(size=(n, k))) for _ in range(2))
    q1, q2 = (np.exp(np_log_softmax(rng.normal(size=(n, k)))) for _ in range(2))
    swav = pl.swav_loss(*(tf.constant(x, tf.float32) for x in (logp1, logp2, q1, q2)))
    want = 0.0
    for i in range(n):
        want -= 0.5 * sum(q2[i, j] * logp1[i, j] for j in range(k)) / n
        want -= 0.5 * sum(q1[i, j] * logp2[i, j] for j in range(k)) / n
    np.testing.assert_allclose(float(swav), want, rtol=1e-5)
    temp = pl.temporal_loss(tf.constant(logp1, tf.float32), tf.constant(q2, tf.float32))
    np.testing.assert_allclose(float(temp), -np.mean(np.sum(q2 * logp1, 1)), rtol=1e-5)
    obs_norm, feat_norm = rng.uniform(0, 2, (3, 4)), rng.uniform(0, 2, (3, 4))
    norm = pl.norm_loss(tf.constant(obs_norm, tf.float32), tf.constant(feat_norm, tf.float32))
    want = np.mean((obs_norm - 1) ** 2) + np.mean((feat_norm - 1) ** 2)
    np.testing.assert_allclose(float(norm), want, rtol=1e-5)


def np_shift_nearest(image, dx, dy):
    """Integer shift: out[y, x] = image[clip(y - dy), clip(x - dx)]."""
    h, w = image.shape[:2]
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return image[ys][:, xs]


def np_shift_bilinear(image, dx, dy):
    """Bilinear sample of image at (y - dy, x - dx), coordinates clamped to the image."""
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            sy, sx = np.clip(y - dy, 0, h - 1), np.clip(x - dx, 0, w - 1)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
            bottom = (1 - fx) * image[y1, x0] + fx * image[y1, x1]
            out[y, x] = (1 - fy) * top + fy * bottom
    return out


def test_translate_integer_shift_moves_right_and_down():
    images = np.arange(2 * 6 * 7 * 2, dtype=np.float32).reshape(2, 6, 7, 2)
    shifts = [(2, 1), (-3, -2)]
    got = pl.translate(tf.constant(images), tf.constant(shifts, tf.float32)).numpy()
    for i, (dx, dy) in enumerate(shifts):
        np.testing.assert_array_equal(got[i], np_shift_nearest(images[i], dx, dy))
    # Content at (y, x) lands at (y + dy, x + dx); the left columns repeat the old edge.
    np.testing.assert_array_equal(got[0, 3, 4], images[0, 2, 2])
    np.testing.assert_array_equal(got[0, 3, 0], images[0, 2, 0])


def test_translate_zero_shift_is_identity():
    images = np.random.default_rng(2).uniform(-0.5, 0.5, (3, 5, 6, 3)).astype(np.float32)
    got = pl.translate(tf.constant(images), tf.zeros([3, 2])).numpy()
    np.testing.assert_array_equal(got, images)


def test_translate_subpixel_is_bilinear_blend():
    image = np.random.default_rng(3).uniform(-0.5, 0.5, (6, 7, 1)).astype(np.float32)
    dx, dy = 0.25, -1.5
    got = pl.translate(tf.constant(image[None]), tf.constant([[dx, dy]]))[0].numpy()
    np.testing.assert_allclose(got, np_shift_bilinear(image, dx, dy), atol=1e-5)
    # Interior pixel by hand: (y, x) = (2, 3) reads (3.5, 2.75).
    want = (
        0.25 * 0.5 * image[3, 2]
        + 0.75 * 0.5 * image[3, 3]
        + 0.25 * 0.5 * image[4, 2]
        + 0.75 * 0.5 * image[4, 3]
    )
    np.testing.assert_allclose(got[2, 3], want, atol=1e-5)


def make_batch(b=3, t=4, size=8, seed=4):
    rng = np.random.default_rng(seed)
    return {
        'image': tf.constant(rng.uniform(-0.5, 0.5, (b, t, size, size, 3)), tf.float32),
        'action': tf.constant(rng.normal(size=(b, t, 2)), tf.float32),
        'reward': tf.constant(rng.normal(size=(b, t)), tf.float32),
    }


def test_augment_doubles_batch_and_follows_generator():
    data = make_batch()
    out = pl.augment(data, 3.0, True, True, tf.random.Generator.from_seed(7))
    for key in ('action', 'reward'):
        np.testing.assert_array_equal(out[key].numpy(), np.concatenate([data[key]] * 2, 0))
    assert out['image'].shape == (6, 4, 8, 8, 3)
    shifts = tf.random.Generator.from_seed(7).uniform([6, 2], -3.0, 3.0).numpy()
    assert np.all(np.abs(shifts) <= 3.0) and len(np.unique(shifts[:, 0])) == 6
    images = np.concatenate([data['image']] * 2, 0)
    for i in range(6):
        for t in range(4):
            want = np_shift_bilinear(images[i, t], shifts[i, 0], shifts[i, 1])
            np.testing.assert_allclose(out['image'][i, t].numpy(), want, atol=1e-5)


def test_augment_same_shift_across_time_only_when_asked():
    data = make_batch(b=2, t=3)
    still = np.repeat(data['image'][:, :1].numpy(), 3, axis=1)  # Each sequence repeats one frame.
    data['image'] = tf.constant(still)
    same = pl.augment(data, 3.0, True, True, tf.random.Generator.from_seed(0))['image'].numpy()
    per_step = pl.augment(data, 3.0, False, True, tf.random.Generator.from_seed(0))['image'].numpy()
    for i in range(4):
        np.testing.assert_array_equal(same[i, 0], same[i, 1])
        np.testing.assert_array_equal(same[i, 0], same[i, 2])
        assert not np.allclose(per_step[i, 0], per_step[i, 1])
    assert not np.allclose(same[0], same[2])  # The two copies of a sequence get different shifts.


def test_augment_without_bilinear_shifts_whole_pixels():
    data = make_batch(b=2, t=2)
    out = pl.augment(data, 3.0, False, False, tf.random.Generator.from_seed(5))['image'].numpy()
    shifts = np.floor(tf.random.Generator.from_seed(5).uniform([8, 2], -3.0, 4.0).numpy())
    images = np.concatenate([data['image']] * 2, 0).reshape(8, 8, 8, 3)
    for i, (dx, dy) in enumerate(shifts.astype(int)):
        np.testing.assert_array_equal(
            out.reshape(8, 8, 8, 3)[i], np_shift_nearest(images[i], dx, dy)
        )


def test_integer_shifts_are_uniform_over_minus_d_to_d():
    # The original's floor(U(-d, d + 1)): each of the 2d + 1 integers has chance 1 / (2d + 1).
    draws, delta = 35000, 3
    shifts = pl.draw_shifts(tf.random.Generator.from_seed(9), draws, float(delta), False).numpy()
    assert np.all(shifts == np.round(shifts))
    values, counts = np.unique(shifts, return_counts=True)
    np.testing.assert_array_equal(values, np.arange(-delta, delta + 1))
    expected = 2 * draws / (2 * delta + 1)
    sigma = np.sqrt(expected * (1 - 1 / (2 * delta + 1)))
    # Rounding U(-3, 3) would give the end points 1/12 instead of 1/7: 45 sigma away here.
    assert np.all(np.abs(counts - expected) < 5 * sigma), counts


def make_config(**overrides):
    values = dict(
        seed=0,
        freeze_prototypes_iters=2,
        ema_update_every=1,
        ema_update_fraction=0.05,
        rssm=dict(
            num_prototypes=6,
            proto=4,
            temperature=0.1,
            sinkhorn_eps=0.05,
            sinkhorn_iters=3,
            warm_up=1,
        ),
        aug=dict(max_delta=3.0, same_across_time=True, bilinear=True),
        encoder=dict(depth=2, act='elu', kernels=[4, 4, 4, 4], keys=['image']),
    )
    values.update(overrides)
    return Config(values)


class FakeRSSM:
    def get_feat(self, post):
        return post['feat']


def make_setup(**overrides):
    """ProtoLoss on a fake world model whose 'posterior feature' is a Dense of the embedding."""
    config = make_config(**overrides)
    wm = types.SimpleNamespace(encoder=ConvEncoder(**config.encoder), rssm=FakeRSSM())
    feat_layer = keras.layers.Dense(5)
    module = pl.ProtoLoss(config, (8, 8, 3))
    rng = np.random.default_rng(6)
    data = {
        'image': tf.constant(rng.uniform(-0.5, 0.5, (2, 3, 64, 64, 3)), tf.float32),
        'action': tf.zeros([2, 3, 2]),
    }

    def forward(batch):
        aug = module.preprocess(batch)
        embed = wm.encoder(aug)
        feat = feat_layer(embed)
        post = {'feat': feat}
        losses, metrics = module(aug, embed, post, post, wm.rssm.get_feat(post))
        return aug, embed, feat, losses, metrics

    return types.SimpleNamespace(
        config=config, wm=wm, module=module, feat_layer=feat_layer, data=data, forward=forward
    )


def dense_np(layer, x):
    return x @ layer.kernel.numpy() + layer.bias.numpy()


def test_module_losses_match_numpy_pipeline():
    s = make_setup()
    aug, embed, feat, losses, metrics = s.forward(s.data)
    assert set(losses) == set(pl.ProtoLoss.terms) == {'swav', 'temp', 'norm'}
    assert all(v.shape == () and v.dtype == tf.float32 for v in losses.values())
    assert aug['image'].shape[0] == 4
    m = s.module
    protos = m.prototypes.numpy()
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), np.ones(6), rtol=1e-5)
    obs_raw = dense_np(m.obs_proj, embed.numpy())
    feat_raw = dense_np(m.feat_proj, feat.numpy())
    ema_raw = dense_np(m._ema_obs_proj, m._ema_encoder(aug).numpy())
    unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True))[:, 1:].reshape(-1, 4)
    logp = np_log_softmax(unit(obs_raw) @ protos.T / 0.1)
    feat_logp = np_log_softmax(unit(feat_raw) @ protos.T / 0.1)
    ema_scores = unit(ema_raw) @ protos.T  # [2B * (T - warm_up), K], first view first.
    q1, q2 = (np_sinkhorn(v.T, 0.05, 3).T for v in np.split(ema_scores, 2))
    l1, l2 = np.split(logp, 2)
    want_swav = -0.5 * np.mean(np.sum(q2 * l1, 1)) - 0.5 * np.mean(np.sum(q1 * l2, 1))
    want_temp = -np.mean(np.sum(np.concatenate([q1, q2]) * feat_logp, 1))
    want_norm = np.mean((np.linalg.norm(obs_raw, axis=-1) - 1) ** 2) + np.mean(
        (np.linalg.norm(feat_raw, axis=-1) - 1) ** 2
    )
    np.testing.assert_allclose(float(losses['swav']), want_swav, rtol=1e-3)
    np.testing.assert_allclose(float(losses['temp']), want_temp, rtol=1e-3)
    np.testing.assert_allclose(float(losses['norm']), want_norm, rtol=1e-4)
    assert float(metrics['proto_frozen']) == 1.0
    assert 0.0 < float(metrics['proto_target_usage']) <= 1.0


def test_target_usage_is_the_share_of_prototypes_that_are_some_top_target():
    module = make_setup().module
    count = module.prototypes.shape[0]
    top = np.array([0, 3, 3, 1, 0, 3, 1])  # 3 distinct prototypes of `count`
    q = np.full((len(top), count), 0.1, np.float32)
    q[np.arange(len(top)), top] = 0.5
    logp = tf.math.log(tf.constant(q))
    norms = tf.ones([len(top)])
    metrics = module._metrics(logp, tf.constant(q), norms, norms, tf.constant(True))
    np.testing.assert_allclose(float(metrics['proto_target_usage']), 3 / count, rtol=1e-6)


def test_ema_copies_then_mixes_and_stays_untrainable():
    s = make_setup()
    s.forward(s.data)
    m = s.module
    ema = list(m._ema_encoder.variables) + list(m._ema_obs_proj.variables)
    online = list(s.wm.encoder.variables) + list(m.obs_proj.variables)
    assert len(ema) == len(online) > 2
    trainable = {id(v) for v in m.trainable_variables}
    assert not trainable & {id(v) for v in ema}
    assert {
        id(m.prototypes),
        *map(id, m.obs_proj.variables),
        *map(id, m.feat_proj.variables),
    } <= trainable
    assert not any(v.trainable for v in ema)
    m.after_update(s.wm.encoder)
    for o, e in zip(online, ema):
        np.testing.assert_array_equal(e.numpy(), o.numpy())
    before = [e.numpy() for e in ema]
    rng = np.random.default_rng(8)
    for o in online:
        o.assign(o + rng.normal(size=o.shape).astype(np.float32))
    m.after_update(s.wm.encoder)
    for o, e, old in zip(online, ema, before):
        np.testing.assert_allclose(e.numpy(), 0.05 * o.numpy() + 0.95 * old, rtol=1e-5, atol=1e-6)
    assert int(m.updates) == 2


def test_ema_updates_only_every_n_steps():
    s = make_setup(ema_update_every=2)
    s.forward(s.data)
    m = s.module
    ema = list(m._ema_encoder.variables)
    online = list(s.wm.encoder.variables)
    m.after_update(s.wm.encoder)  # Update 0 copies.
    for o in online:
        o.assign(o * 2.0 + 1.0)
    copied = [e.numpy() for e in ema]
    m.after_update(s.wm.encoder)  # Update 1 is off schedule.
    for e, old in zip(ema, copied):
        np.testing.assert_array_equal(e.numpy(), old)
    m.after_update(s.wm.encoder)  # Update 2 mixes.
    for o, e, old in zip(online, ema, copied):
        np.testing.assert_allclose(e.numpy(), 0.05 * o.numpy() + 0.95 * old, rtol=1e-5, atol=1e-6)


def test_after_update_before_loss_is_a_clear_error():
    s = make_setup()
    with pytest.raises(RuntimeError, match='before after_update'):
        s.module.after_update(s.wm.encoder)


def test_prototypes_frozen_then_trained_under_tf_function():
    s = make_setup(freeze_prototypes_iters=2)
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def train_step(batch):
        with tf.GradientTape() as tape:
            losses = s.forward(batch)[3]
            total = tf.add_n(list(losses.values()))
        variables = (
            s.module.trainable_variables
            + s.wm.encoder.trainable_variables
            + tuple(s.feat_layer.trainable_variables)
        )
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(grads, variables))
        s.module.after_update(s.wm.encoder)
        return grads[list(map(id, variables)).index(id(s.module.prototypes))]

    direction = lambda: (
        s.module.prototypes.numpy()
        / np.linalg.norm(s.module.prototypes.numpy(), axis=1, keepdims=True)
    )
    start = direction()
    for _ in range(2):
        grad = train_step(s.data)
        assert not np.any(grad.numpy())
        np.testing.assert_allclose(direction(), start, atol=1e-6)
    grad = train_step(s.data)
    assert np.any(grad.numpy())
    assert np.max(np.abs(direction() - start)) > 1e-4
    assert int(s.module.updates) == 3


def test_seed_fixes_prototypes_projections_and_shifts():
    a, b, other = make_setup(), make_setup(), make_setup(seed=1)
    np.testing.assert_array_equal(a.module.prototypes.numpy(), b.module.prototypes.numpy())
    assert not np.allclose(a.module.prototypes.numpy(), other.module.prototypes.numpy())
    images = [s.module.preprocess(s.data)['image'].numpy() for s in (a, b, other)]
    np.testing.assert_array_equal(images[0], images[1])
    assert not np.allclose(images[0], images[2])
    for s in (a, b):
        s.forward(s.data)  # Builds the projections.
    np.testing.assert_array_equal(
        a.module.obs_proj.kernel.numpy(), b.module.obs_proj.kernel.numpy()
    )
    np.testing.assert_array_equal(
        a.module.feat_proj.kernel.numpy(), b.module.feat_proj.kernel.numpy()
    )


def test_shape_errors_name_the_problem():
    s = make_setup()
    aug = s.module.preprocess(s.data)
    embed = s.wm.encoder(aug)
    with pytest.raises(ValueError, match='feat has 2B=2'):
        s.module(aug, embed, {}, {}, tf.zeros([2, 3, 5]))
    short = {k: v[:, :1] for k, v in aug.items()}
    with pytest.raises(ValueError, match='warm_up'):
        s.module(short, embed[:, :1], {}, {}, tf.zeros([4, 1, 5]))


def test_mixed_precision_losses_are_float32():
    keras.mixed_precision.set_global_policy('mixed_float16')
    try:
        s = make_setup()
        losses, metrics = tf.function(lambda batch: s.forward(batch)[3:])(s.data)
    finally:
        keras.mixed_precision.set_global_policy('float32')
    for value in list(losses.values()) + list(metrics.values()):
        assert value.dtype == tf.float32 and np.isfinite(value.numpy())


@pytest.mark.parametrize('interpolation', ['BILINEAR', 'NEAREST'])
def test_translate_equals_the_image_transform_op(interpolation):
    """translate is written with gathers so that XLA compiles it; it must give what TensorFlow's
    ImageProjectiveTransformV3 (edge fill) gives, also for shifts beyond the image."""
    rng = np.random.default_rng(5)
    images = rng.uniform(-0.5, 0.5, (40, 9, 11, 3)).astype(np.float32)
    shifts = rng.uniform(-4, 4, (40, 2)).astype(np.float32)
    shifts[:4] = [[12.5, 0], [0, -10.25], [-3, 3], [0, 0]]
    if interpolation == 'NEAREST':
        shifts = np.floor(shifts)
    dx, dy = shifts[:, 0], shifts[:, 1]
    one, zero = np.ones_like(dx), np.zeros_like(dx)
    want = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.constant(images),
        transforms=tf.constant(np.stack([one, zero, -dx, zero, one, -dy, zero, zero], 1)),
        output_shape=tf.constant([9, 11]),
        interpolation=interpolation,
        fill_mode='NEAREST',
        fill_value=0.0,
    ).numpy()
    got = pl.translate(tf.constant(images), tf.constant(shifts), interpolation).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    compiled = tf.function(pl.translate, jit_compile=True)
    xla = compiled(tf.constant(images), tf.constant(shifts), interpolation).numpy()
    np.testing.assert_allclose(xla, want, rtol=0, atol=1e-6)
