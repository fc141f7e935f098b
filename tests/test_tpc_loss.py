"""TPC's loss terms against plain NumPy loops, and the TPCLoss module's interface."""

import math
import pathlib
import types

import numpy as np
import pytest
import tensorflow as tf

from dreamer_core import registry

REPO = pathlib.Path(__file__).resolve().parents[1]
tpc_loss_mod = registry.get('tpc').load_module()

NOISE_STD = 0.2
SHAPES = [(4, 3, 3), (5, 4, 4), (6, 5, 3)]


def np_log_prob(x, mean, std):
    """Sum over dimensions of the scalar Gaussian log density, one dimension at a time."""
    total = 0.0
    for xi, mi, si in zip(x, mean, std):
        total += -0.5 * ((xi - mi) / si) ** 2 - math.log(si) - 0.5 * math.log(2 * math.pi)
    return total


def np_xent_own_label(logits, label):
    top = max(logits)
    log_norm = top + math.log(sum(math.exp(v - top) for v in logits))
    return log_norm - logits[label]


def np_tpc(s, prior_mean, prior_std, noise, perturb, warm_up):
    sample = s + NOISE_STD * noise if perturb else s
    batch, steps, _ = s.shape
    terms = []
    for b in range(batch):
        for t in range(warm_up, steps):
            logits = [
                np_log_prob(sample[b, t], prior_mean[c, t], prior_std[c, t]) for c in range(batch)
            ]
            terms.append(np_xent_own_label(logits, b))
    return np.mean(terms)


def np_csc(s, prior_mean, prior_std, noise, perturb, warm_up):
    sample = s + NOISE_STD * noise if perturb else s
    batch, steps, _ = s.shape
    terms = [
        np_log_prob(sample[b, t], prior_mean[b, t], prior_std[b, t])
        for b in range(batch)
        for t in range(warm_up, steps)
    ]
    return -np.mean(terms)


def np_spc(s, noise, perturb):
    sample = s + NOISE_STD * noise if perturb else s
    batch, steps, size = s.shape
    std = np.full(size, NOISE_STD)
    terms = []
    for b in range(batch):
        for t in range(steps):
            logits = [np_log_prob(sample[b, t], s[c, t], std) for c in range(batch)]
            terms.append(np_xent_own_label(logits, b))
    return np.mean(terms)


def random_inputs(shape, seed):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=shape)
    # Prior means near the posterior means so the softmax is neither flat nor saturated.
    prior_mean = s + 0.5 * rng.normal(size=shape)
    prior_std = 0.1 + rng.uniform(0.2, 1.0, size=shape)
    noise = rng.normal(size=shape)
    return s, prior_mean, prior_std, noise


def make_config(**rssm):
    options = dict(
        discrete=False,
        warm_up=1,
        perturb_std=NOISE_STD,
        perturb_tpc=True,
        perturb_csc=False,
        perturb_spc=True,
        posterior_input='embed',
        posterior_std='prior',
    )
    options.update(rssm)
    return types.SimpleNamespace(seed=0, rssm=types.SimpleNamespace(**options))


def states(s, prior_mean, prior_std, dtype=tf.float32):
    post = {'mean': tf.constant(s, dtype), 'std': tf.constant(prior_std, dtype)}
    prior = {'mean': tf.constant(prior_mean, dtype), 'std': tf.constant(prior_std, dtype)}
    return post, prior


def test_diag_normal_log_prob_matches_formula():
    s, mean, std, _ = random_inputs((3, 2, 4), seed=0)
    got = tpc_loss_mod.diag_normal_log_prob(s, mean, std).numpy()
    want = np.array(
        [[np_log_prob(s[i, j], mean[i, j], std[i, j]) for j in range(2)] for i in range(3)]
    )
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('perturb', [False, True])
@pytest.mark.parametrize('warm_up', [0, 1])
def test_tpc_and_csc_match_loops(shape, perturb, warm_up):
    s, prior_mean, prior_std, noise = random_inputs(shape, seed=sum(shape) + warm_up)
    args = [tf.constant(v, tf.float32) for v in (s, prior_mean, prior_std)]
    noise_tf = tf.constant(noise, tf.float32)
    tpc = tpc_loss_mod.tpc_loss(*args, NOISE_STD, perturb, warm_up, noise_tf).numpy()
    csc = tpc_loss_mod.csc_loss(*args, NOISE_STD, perturb, warm_up, noise_tf).numpy()
    np.testing.assert_allclose(
        tpc, np_tpc(s, prior_mean, prior_std, noise, perturb, warm_up), rtol=1e-4
    )
    np.testing.assert_allclose(
        csc, np_csc(s, prior_mean, prior_std, noise, perturb, warm_up), rtol=1e-4
    )


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('perturb', [False, True])
def test_spc_matches_loop(shape, perturb):
    s, _, _, noise = random_inputs(shape, seed=sum(shape))
    s = 0.3 * s  # Close means make the B-way choice hard, so the loss is far from zero.
    got = tpc_loss_mod.spc_loss(
        tf.constant(s, tf.float32), NOISE_STD, perturb, tf.constant(noise, tf.float32)
    ).numpy()
    want = np_spc(s, noise, perturb)
    assert want > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_warm_up_drops_the_first_steps():
    s, prior_mean, prior_std, noise = random_inputs((4, 3, 3), seed=7)
    # A hopeless first prior: only warm_up = 1 hides it.
    prior_mean[:, 0] += 50.0
    args = [tf.constant(v, tf.float32) for v in (s, prior_mean, prior_std, noise)]
    csc0 = tpc_loss_mod.csc_loss(*args[:3], NOISE_STD, False, 0, args[3]).numpy()
    csc1 = tpc_loss_mod.csc_loss(*args[:3], NOISE_STD, False, 1, args[3]).numpy()
    assert csc0 > csc1 + 100.0


def test_gradients_reach_post_mean_and_stop_at_sg_prior_std():
    s, prior_mean, prior_std, noise = random_inputs((4, 3, 3), seed=3)
    post_mean, mean, std = (tf.constant(v, tf.float32) for v in (s, prior_mean, prior_std))
    noise = tf.constant(noise, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([post_mean, std])
        stopped = tpc_loss_mod.tpc_loss(
            post_mean, mean, tf.stop_gradient(std), NOISE_STD, True, 1, noise
        )
        flowing = tpc_loss_mod.tpc_loss(post_mean, mean, std, NOISE_STD, True, 1, noise)
    grad_post = tape.gradient(stopped, post_mean)
    assert grad_post is not None and np.abs(grad_post.numpy()).max() > 1e-6
    assert tape.gradient(stopped, std) is None
    # Without the stop-gradient the same std does get a gradient, so None above means sg.
    assert tape.gradient(flowing, std) is not None


def test_module_returns_the_three_losses_and_bounded_accuracies():
    s, prior_mean, prior_std, _ = random_inputs((5, 4, 3), seed=11)
    loss = tpc_loss_mod.TPCLoss(make_config(), (64, 64, 3))
    post, prior = states(s, prior_mean, prior_std)
    losses, metrics = loss({}, None, post, prior, None)
    assert set(losses) == {'tpc', 'csc', 'spc'}
    for value in losses.values():
        assert value.shape == () and value.dtype == tf.float32
        assert np.isfinite(value.numpy())
    for name in ('tpc_acc', 'spc_acc'):
        assert 0.0 <= metrics[name].numpy() <= 1.0
    assert loss.preprocess({'x': 1}) == {'x': 1}
    assert loss.report({}, None) == {}


def test_accuracy_is_fraction_of_rows_picking_themselves():
    # Well separated sequences: every row picks itself, so both accuracies are exactly 1.
    batch, steps, size = 4, 3, 3
    s = np.repeat(np.arange(batch, dtype=np.float64)[:, None, None] * 10.0, steps, 1)
    s = np.repeat(s, size, 2)
    loss = tpc_loss_mod.TPCLoss(make_config(), (64, 64, 3))
    post, prior = states(s, s, np.full(s.shape, 0.5))
    _, metrics = loss({}, None, post, prior, None)
    assert metrics['tpc_acc'].numpy() == 1.0 and metrics['spc_acc'].numpy() == 1.0
    # All priors identical: argmax ties go to index 0, so only row 0 is right (1 in B).
    post, prior = states(s, np.zeros_like(s), np.full(s.shape, 0.5))
    _, metrics = loss({}, None, post, prior, None)
    np.testing.assert_allclose(metrics['tpc_acc'].numpy(), 1.0 / batch)


def test_module_under_tf_function_and_float16_matches_pure_functions():
    config = make_config(perturb_csc=True)
    s, prior_mean, prior_std, _ = random_inputs((4, 5, 3), seed=5)
    post, prior = states(s, prior_mean, prior_std, dtype=tf.float16)
    loss = tpc_loss_mod.TPCLoss(config, (64, 64, 3))
    losses, _ = tf.function(lambda p, q: loss({}, None, p, q, None))(post, prior)
    # A fresh module with the same seed draws the same single noise tensor.
    noise = tpc_loss_mod.TPCLoss(config, (64, 64, 3))._draw_noise(tf.zeros(s.shape))
    args = [tf.cast(v, tf.float32) for v in (post['mean'], prior['mean'], prior['std'])]
    want = {
        'tpc': tpc_loss_mod.tpc_loss(*args, NOISE_STD, True, 1, noise),
        'csc': tpc_loss_mod.csc_loss(*args, NOISE_STD, True, 1, noise),
        'spc': tpc_loss_mod.spc_loss(args[0], NOISE_STD, True, noise),
    }
    for name, value in want.items():
        assert losses[name].dtype == tf.float32
        np.testing.assert_allclose(losses[name].numpy(), value.numpy(), rtol=1e-5)


def test_same_seed_same_losses_other_seed_other_noise():
    s, prior_mean, prior_std, _ = random_inputs((4, 3, 3), seed=2)
    post, prior = states(s, 0.3 * s, prior_std)

    def spc(seed):
        config = make_config()
        config.seed = seed
        return tpc_loss_mod.TPCLoss(config, (64, 64, 3))({}, None, post, prior, None)[0]['spc']

    assert spc(0).numpy() == spc(0).numpy()
    assert spc(0).numpy() != spc(1).numpy()


@pytest.mark.parametrize('discrete', [32, True])
def test_discrete_latents_are_a_clear_error(discrete):
    with pytest.raises(ValueError, match=r'continuous latents.*--rssm\.discrete False'):
        tpc_loss_mod.TPCLoss(make_config(discrete=discrete), (64, 64, 3))


@pytest.mark.parametrize(
    'key,value', [('posterior_input', 'deter_embed'), ('posterior_std', 'learned')]
)
def test_posterior_options_are_checked(key, value):
    with pytest.raises(ValueError, match=rf'config\.rssm\.{key} must be'):
        tpc_loss_mod.TPCLoss(make_config(**{key: value}), (64, 64, 3))


def test_bad_shapes_and_short_sequences_are_named():
    s, prior_mean, prior_std, noise = random_inputs((4, 3, 3), seed=1)
    args = [tf.constant(v, tf.float32) for v in (s, prior_mean, prior_std, noise)]
    with pytest.raises(ValueError, match='prior_std must match post_mean'):
        tpc_loss_mod.tpc_loss(args[0], args[1], args[2][:, :2], NOISE_STD, True, 1, args[3])
    with pytest.raises(ValueError, match=r'T = 3 leaves no step after warm_up = 3'):
        tpc_loss_mod.tpc_loss(*args[:3], NOISE_STD, True, 3, args[3])


@pytest.mark.parametrize('scale', [0.05, 1.0, 30.0])
def test_pairwise_log_prob_equals_the_broadcast_form_and_its_gradient(scale):
    """The matrix-product form against the direct [T, B, B', S] form, values and gradients."""
    rng = np.random.default_rng(3)
    shape = (6, 20, 32)
    x = tf.constant(scale * rng.normal(size=shape), tf.float32)
    mean = tf.constant(scale * rng.normal(size=shape) + x.numpy() * 0.9, tf.float32)
    std = tf.constant(rng.uniform(0.1, 1.5, size=shape), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, mean, std])
        fast = tpc_loss_mod.pairwise_log_prob(x, mean, std)
        slow = tpc_loss_mod.diag_normal_log_prob(x[:, :, None], mean[:, None], std[:, None])
        weights = tf.constant(rng.normal(size=fast.shape), tf.float32)
        fast_total, slow_total = [tf.reduce_sum(weights * v) for v in (fast, slow)]
    assert fast.shape == (6, 20, 20)
    spread = float(tf.reduce_max(tf.abs(slow)))
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=1e-5, atol=2e-6 * spread)
    for a, b in zip(
        tape.gradient(fast_total, [x, mean, std]), tape.gradient(slow_total, [x, mean, std])
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4 * np.abs(b).max())
