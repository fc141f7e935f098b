"""Pure functions of the shared core against plain Python/NumPy references (tier 1)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from dreamer_core import agent as agent_lib
from dreamer_core import dists, nets, scan, schedules

tfd = tfp.distributions


def loop_lambda_return(reward, value, pcont, bootstrap, lam):
    """R_t = r_t + d_t ((1 - lam) v_{t+1} + lam R_{t+1}), R_H = bootstrap, one step at a time."""
    horizon, batch = reward.shape
    out = np.zeros((horizon, batch))
    for n in range(batch):
        following = bootstrap[n]
        for t in reversed(range(horizon)):
            next_value = value[t + 1, n] if t + 1 < horizon else bootstrap[n]
            following = reward[t, n] + pcont[t, n] * ((1 - lam) * next_value + lam * following)
            out[t, n] = following
    return out


def random_return_inputs(seed, horizon, batch):
    rng = np.random.default_rng(seed)
    reward = rng.normal(size=(horizon, batch)).astype(np.float32)
    value = rng.normal(size=(horizon, batch)).astype(np.float32)
    pcont = rng.uniform(0.5, 1.0, size=(horizon, batch)).astype(np.float32)
    bootstrap = rng.normal(size=(batch,)).astype(np.float32)
    return reward, value, pcont, bootstrap


def tf_lambda_return(reward, value, pcont, bootstrap, lam):
    pcont = pcont if isinstance(pcont, float) else tf.constant(pcont)
    return scan.lambda_return(
        tf.constant(reward), tf.constant(value), pcont, tf.constant(bootstrap), lam
    ).numpy()


@pytest.mark.parametrize('lam', [0.0, 0.95, 1.0])
@pytest.mark.parametrize('horizon,batch', [(1, 3), (4, 2), (9, 5)])
def test_lambda_return_matches_loop(lam, horizon, batch):
    reward, value, pcont, bootstrap = random_return_inputs(horizon * 10 + batch, horizon, batch)
    got = tf_lambda_return(reward, value, pcont, bootstrap, lam)
    want = loop_lambda_return(reward, value, pcont, bootstrap, lam)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lambda_return_scalar_discount():
    reward, value, _, bootstrap = random_return_inputs(1, 6, 3)
    got = tf_lambda_return(reward, value, 0.9, bootstrap, 0.7)
    want = loop_lambda_return(reward, value, np.full_like(reward, 0.9), bootstrap, 0.7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lambda_one_is_discounted_monte_carlo():
    reward, value, pcont, bootstrap = random_return_inputs(2, 7, 4)
    got = tf_lambda_return(reward, value, pcont, bootstrap, 1.0)
    horizon = reward.shape[0]
    for t in range(horizon):
        discount = np.ones(reward.shape[1])
        want = np.zeros(reward.shape[1])
        for k in range(t, horizon):
            want += discount * reward[k]
            discount = discount * pcont[k]
        want += discount * bootstrap
        np.testing.assert_allclose(got[t], want, rtol=1e-5, atol=1e-5)


def test_lambda_zero_is_one_step_target():
    reward, value, pcont, bootstrap = random_return_inputs(3, 5, 4)
    got = tf_lambda_return(reward, value, pcont, bootstrap, 0.0)
    next_value = np.concatenate([value[1:], bootstrap[None]], 0)
    np.testing.assert_allclose(got, reward + pcont * next_value, rtol=1e-5, atol=1e-5)


def continuous_states(seed, batch=(3, 4), stoch=5):
    rng = np.random.default_rng(seed)
    make = lambda: {
        'mean': tf.Variable(rng.normal(size=(*batch, stoch)).astype(np.float32)),
        'std': tf.Variable(rng.uniform(0.2, 2.0, size=(*batch, stoch)).astype(np.float32)),
    }
    return make(), make()


def discrete_states(seed, batch=(3, 4), stoch=3, classes=4):
    rng = np.random.default_rng(seed)
    make = lambda: {
        'logit': tf.Variable(2 * rng.normal(size=(*batch, stoch, classes)).astype(np.float32))
    }
    return make(), make()


def rssm_for(discrete):
    return nets.RSSM(
        stoch=5 if not discrete else 3, deter=8, hidden=8, discrete=4 if discrete else False
    )


def plain_kl(rssm, post, prior):
    return tfd.kl_divergence(rssm.get_dist(post), rssm.get_dist(prior))


def variables_of(post, prior):
    return list(post.values()) + list(prior.values())


LATENTS = [('continuous', continuous_states, False), ('discrete', discrete_states, True)]


@pytest.mark.parametrize('name,make_states,discrete', LATENTS)
def test_kl_balancing_value_and_gradients(name, make_states, discrete):
    rssm = rssm_for(discrete)
    post, prior = make_states(0)
    sg = lambda state: {k: tf.stop_gradient(v) for k, v in state.items()}
    with tf.GradientTape(persistent=True) as tape:
        loss, value = rssm.kl_loss(post, prior, forward=False, balance=0.8, free=0.0, free_avg=True)
        lhs = tf.reduce_mean(tfd.kl_divergence(rssm.get_dist(post), rssm.get_dist(sg(prior))))
        rhs = tf.reduce_mean(tfd.kl_divergence(rssm.get_dist(sg(post)), rssm.get_dist(prior)))
        reference = 0.2 * lhs + 0.8 * rhs
        plain = tf.reduce_mean(plain_kl(rssm, post, prior))
    np.testing.assert_allclose(loss.numpy(), reference.numpy(), rtol=1e-5)
    np.testing.assert_allclose(value.numpy(), plain_kl(rssm, post, prior).numpy(), rtol=1e-5)
    grads = tape.gradient(loss, variables_of(post, prior))
    plain_grads = tape.gradient(plain, variables_of(post, prior))
    count = len(post)
    for got, want in zip(grads[:count], plain_grads[:count]):
        assert np.abs(want.numpy()).max() > 1e-4
        np.testing.assert_allclose(got.numpy(), 0.2 * want.numpy(), rtol=1e-4, atol=1e-7)
    for got, want in zip(grads[count:], plain_grads[count:]):
        assert np.abs(want.numpy()).max() > 1e-4
        np.testing.assert_allclose(got.numpy(), 0.8 * want.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('name,make_states,discrete', LATENTS)
def test_kl_forward_swaps_the_sides(name, make_states, discrete):
    rssm = rssm_for(discrete)
    post, prior = make_states(1)
    loss, value = rssm.kl_loss(post, prior, forward=True, balance=0.8, free=0.0, free_avg=True)
    reverse = tf.reduce_mean(plain_kl(rssm, prior, post))
    np.testing.assert_allclose(loss.numpy(), reverse.numpy(), rtol=1e-5)
    np.testing.assert_allclose(value.numpy(), plain_kl(rssm, prior, post).numpy(), rtol=1e-5)


@pytest.mark.parametrize('name,make_states,discrete', LATENTS)
def test_kl_balance_half_is_plain_kl(name, make_states, discrete):
    rssm = rssm_for(discrete)
    post, prior = make_states(2)
    with tf.GradientTape(persistent=True) as tape:
        loss, _ = rssm.kl_loss(post, prior, forward=False, balance=0.5, free=0.0, free_avg=True)
        plain = tf.reduce_mean(plain_kl(rssm, post, prior))
    np.testing.assert_allclose(loss.numpy(), plain.numpy(), rtol=1e-5)
    grads = tape.gradient(loss, variables_of(post, prior))
    plain_grads = tape.gradient(plain, variables_of(post, prior))
    for got, want in zip(grads, plain_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-7)


def free_between_min_and_mean(kl):
    # A threshold between the smallest element and the mean: clipping per element raises the
    # average, clipping the average does not, so the two modes must differ.
    free = float(0.5 * (kl.min() + kl.mean()))
    assert kl.min() < free < kl.mean()
    return free


@pytest.mark.parametrize('name,make_states,discrete', LATENTS)
def test_kl_free_nats_average_versus_elementwise(name, make_states, discrete):
    rssm = rssm_for(discrete)
    post, prior = make_states(3)
    kl = plain_kl(rssm, post, prior).numpy()
    free = free_between_min_and_mean(kl)
    balance = 0.8
    avg, _ = rssm.kl_loss(post, prior, forward=False, balance=balance, free=free, free_avg=True)
    each, _ = rssm.kl_loss(post, prior, forward=False, balance=balance, free=free, free_avg=False)
    np.testing.assert_allclose(avg.numpy(), max(kl.mean(), free), rtol=1e-5)
    np.testing.assert_allclose(each.numpy(), np.maximum(kl, free).mean(), rtol=1e-5)
    assert each.numpy() > avg.numpy() + 1e-3
    # Above the mean, free_avg clamps the whole term to the constant `free`.
    high = float(kl.mean() + 1.0)
    clamped, _ = rssm.kl_loss(post, prior, forward=False, balance=balance, free=high, free_avg=True)
    np.testing.assert_allclose(clamped.numpy(), high, rtol=1e-6)


@pytest.mark.parametrize('name,make_states,discrete', LATENTS)
@pytest.mark.parametrize('free_avg', [True, False])
def test_kl_balance_half_ignores_free_avg(name, make_states, discrete, free_avg):
    # The original's balance == 0.5 branch always clips per element before the mean.
    rssm = rssm_for(discrete)
    post, prior = make_states(3)
    kl = plain_kl(rssm, post, prior).numpy()
    free = free_between_min_and_mean(kl)
    loss, _ = rssm.kl_loss(post, prior, forward=False, balance=0.5, free=free, free_avg=free_avg)
    np.testing.assert_allclose(loss.numpy(), np.maximum(kl, free).mean(), rtol=1e-5)
    assert loss.numpy() > max(kl.mean(), free) + 1e-3


@pytest.mark.parametrize(
    'text,step,want',
    [
        ('0.3', 123, 0.3),
        ('linear(1.0,0.0,100)', 0, 1.0),
        ('linear(1.0,0.0,100)', 50, 0.5),
        ('linear(1.0,0.0,100)', 100, 0.0),
        ('linear(1.0,0.0,100)', 200, 0.0),
        ('linear(0.2,0.6,40)', 10, 0.3),
        ('warmup(100,2.0)', 0, 0.0),
        ('warmup(100,2.0)', 25, 0.5),
        ('warmup(100,2.0)', 300, 2.0),
        ('exp(1.0,0.2,50)', 0, 1.0),
        ('exp(1.0,0.2,50)', 50, 0.6),
        ('exp(1.0,0.2,50)', 100, 0.4),
        ('horizon(10,100,1000)', 0, 1 - 1 / 10),
        ('horizon(10,100,1000)', 500, 1 - 1 / 55),
        ('horizon(10,100,1000)', 5000, 1 - 1 / 100),
    ],
)
def test_schedule(text, step, want):
    got = schedules.schedule(text, tf.constant(step, tf.int64))
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-7)


def test_schedule_bad_string_names_it():
    with pytest.raises(ValueError, match=r'lineer\(1,0,10\)'):
        schedules.schedule('lineer(1,0,10)', 0)


def reference_every(every, steps):
    """True at a step when at least `every` steps passed since the last True step's slot."""
    out, last = [], None
    for step in steps:
        if not every:
            out.append(False)
        elif last is None:
            last = step
            out.append(True)
        elif step >= last + every:
            while last + every <= step:
                last += every
            out.append(True)
        else:
            out.append(False)
    return out


@pytest.mark.parametrize('every', [0, 1, 3, 5])
def test_every(every):
    steps = [0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 20, 21, 35]
    every_fn = schedules.Every(every)
    got = [every_fn(step) for step in steps]
    assert got == reference_every(every, steps)
    if every == 3:
        assert got[:7] == [True, False, False, True, False, False, True]


def test_action_noise_continuous():
    tf.random.set_seed(0)
    action = tf.constant(np.random.default_rng(0).uniform(-1, 1, (2000, 3)).astype(np.float32))
    assert agent_lib.action_noise(action, 0, False) is action
    noisy = agent_lib.action_noise(action, 0.3, False).numpy()
    assert noisy.shape == action.shape
    assert noisy.min() >= -1 and noisy.max() <= 1
    assert np.any(noisy == 1.0) and np.any(noisy == -1.0)  # clipped, not squashed
    inside = np.abs(noisy) < 1
    std = np.std((noisy - action.numpy())[inside])
    assert 0.2 < std < 0.35


def test_action_noise_discrete():
    tf.random.set_seed(1)
    classes, rows, amount = 4, 4000, 0.4
    action = tf.one_hot(np.random.default_rng(1).integers(0, classes, rows), classes)
    assert agent_lib.action_noise(action, 0, True) is action
    noisy = agent_lib.action_noise(action, amount, True).numpy()
    assert set(np.unique(noisy)) == {0.0, 1.0}
    np.testing.assert_array_equal(noisy.sum(-1), np.ones(rows))
    kept = np.mean(np.argmax(noisy, -1) == np.argmax(action.numpy(), -1))
    # Kept with probability (1 - amount) + amount / classes.
    np.testing.assert_allclose(kept, 1 - amount + amount / classes, atol=0.03)


class FixedSamples:
    """Delegates to a distribution but returns the same pre-drawn samples every time."""

    def __init__(self, dist, samples):
        self._dist, self._samples = dist, samples
        self.event_shape = dist.event_shape

    def sample(self, count, seed=None):
        assert count == self._samples.shape[0]
        return self._samples

    def log_prob(self, value):
        return self._dist.log_prob(value)

    def experimental_sample_and_log_prob(self, count, seed=None):
        return self.sample(count), self.log_prob(self._samples)


def manual_mode(base, samples):
    logprob = base.log_prob(samples).numpy()  # [S, *batch]
    best = np.argmax(logprob, 0)
    samples = samples.numpy()
    out = np.zeros(samples.shape[1:], samples.dtype)
    for index in np.ndindex(best.shape):
        out[index] = samples[(best[index], *index)]
    return out


def test_sample_dist_mode_is_highest_log_prob_sample():
    rng = np.random.default_rng(0)
    out = tf.constant(rng.normal(size=(2, 3, 4)).astype(np.float32))
    std = tf.constant(rng.normal(size=(2, 3, 4)).astype(np.float32))
    base = dists.make('tanh_normal', out, std, 0.1, 1)._dist
    samples = base.sample(100, seed=3)
    dist = dists.SampleDist(FixedSamples(base, samples), samples=100)
    got = dist.mode().numpy()
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, manual_mode(base, samples))
    # The mode must not simply be one fixed sample index for every batch element.
    best = np.argmax(base.log_prob(samples).numpy(), 0)
    assert len(np.unique(best)) > 1


def test_tanh_normal_samples_inside_and_log_prob_finite_at_bounds():
    rng = np.random.default_rng(1)
    out = tf.constant(rng.normal(size=(64, 2)).astype(np.float32))
    std = tf.constant(rng.normal(size=(64, 2)).astype(np.float32))
    dist = dists.make('tanh_normal', out, std, 0.1, 1)
    samples = dist.sample(50).numpy()
    assert samples.shape == (50, 64, 2)
    # A wide Normal saturates tanh to exactly +-1 in float32, so only the closed bound holds...
    assert np.all(np.abs(samples) <= 1)
    # ...while for moderate stds (pre-tanh values below ~8) samples stay strictly inside.
    moderate = dists.make('tanh_normal', out, 0.5 * std - 1.0, 0.1, 1).sample(200).numpy()
    assert np.all(np.abs(moderate) < 1)
    assert np.abs(moderate).max() > 0.9
    edges = tf.constant(np.tile([[1.0, -1.0], [-1.0, 1.0]], (32, 1)).astype(np.float32))
    logprob = dist.log_prob(edges).numpy()
    assert logprob.shape == (64,)
    assert np.all(np.isfinite(logprob))
    # A plain Tanh bijector gives infinite log-probabilities there: the clip is what saves it.
    plain = tfd.Independent(
        tfd.TransformedDistribution(
            tfd.Normal(5 * tf.tanh(out / 5), tf.nn.softplus(std) + 0.1), tfp.bijectors.Tanh()
        ),
        1,
    )
    assert not np.all(np.isfinite(plain.log_prob(edges).numpy()))


def np_tanh_normal_entropy(mean, std):
    """H(tanh X) = H(X) + E[log(1 - tanh(X)^2)], X ~ N(mean, std), by quadrature."""
    x = mean + std * np.linspace(-12, 12, 200001)
    density = np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
    log_det = 2 * (np.log(2) - x - np.logaddexp(0, -2 * x))  # stable log(1 - tanh(x)^2)
    return 0.5 * np.log(2 * np.pi * np.e * std**2) + np.trapezoid(density * log_det, x)


def test_tanh_normal_entropy_of_saturated_actions_uses_pre_tanh_samples():
    # Mean ~5 and std ~10: about 40% of the samples round to exactly +-1 in float32. Scoring
    # them from the clipped action would cap each dimension's log-det near -16 nats; the
    # original (TFP's bijector cache) and this code score them from the pre-tanh value.
    tf.random.set_seed(0)
    out, std = tf.fill([3, 2], 30.0), tf.fill([3, 2], 10.0)
    dist = dists.make('tanh_normal', out, std, 0.1, 1)
    samples = dist.sample(1000).numpy()
    assert np.mean(np.abs(samples) == 1.0) > 0.3
    dist._samples = 20000  # a precise Monte Carlo estimate
    mean = 5 * np.tanh(30.0 / 5)
    scale = np.log1p(np.exp(10.0)) + 0.1
    want = 2 * np_tanh_normal_entropy(mean, scale)  # two independent dimensions
    got = dist.entropy().numpy()
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, atol=1.0)
    # From the clipped actions, the estimate would be about 11 nats higher.
    clipped = -tf.reduce_mean(dist._dist.log_prob(dist._dist.sample(20000)), 0).numpy()
    assert np.all(clipped > want + 5)


def test_onehot_sample_is_one_hot_with_straight_through_gradient():
    rng = np.random.default_rng(2)
    logits = tf.Variable(rng.normal(size=(5, 3, 4)).astype(np.float32))
    weights = tf.constant(rng.normal(size=(5, 3, 4)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        dist = dists.OneHotDist(logits, dtype=tf.float32)
        sample = dist.sample()
        loss = tf.reduce_sum(weights * sample)
        probs_loss = tf.reduce_sum(weights * tf.nn.softmax(logits))
    values = sample.numpy()
    assert set(np.unique(values)) <= {0.0, 1.0}
    np.testing.assert_array_equal(values.sum(-1), np.ones((5, 3)))
    grad = tape.gradient(loss, logits).numpy()
    assert np.abs(grad).max() > 1e-3
    # Straight-through: the gradient of the sample is the gradient of the probabilities.
    np.testing.assert_allclose(
        grad, tape.gradient(probs_loss, logits).numpy(), rtol=1e-5, atol=1e-7
    )
    batched = dist.sample(6)
    assert batched.shape == (6, 5, 3, 4)
    np.testing.assert_array_equal(batched.numpy().sum(-1), np.ones((6, 5, 3)))
