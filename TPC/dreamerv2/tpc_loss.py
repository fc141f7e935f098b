"""TPC's representation loss: temporal, consistency and self predictive coding.

Nguyen et al., "Temporal Predictive Coding for Model-Based Planning in Latent Space", ICML
2021 (arXiv 2106.07156).

With s the posterior mean and s~ = s + perturb_std * eps, eps ~ N(0, I):
  tpc: the prior of sequence b at time t must pick s~[b, t] out of the batch (B-way
       softmax over the priors of all sequences at that time step), t >= warm_up;
  csc: -log p_prior(b, t)(s[b, t]) (s~ if perturb_csc), t >= warm_up;
  spc: s~[b, t] must pick its own clean mean s[b, t] out of the batch under an isotropic
       Normal of std perturb_std, all t.

One noise draw per update is shared by every perturbed term, as in the original code, so
s~ is the same point wherever it appears. Everything is computed in float32 whatever the
compute precision. Logits are laid out time-major [T, B, B'] internally; row b of a time
step scores sample b against all B' candidates and its label is b.
"""

import math

import tensorflow as tf

from dreamer_core.config import ConfigError
from dreamer_core.variant import RepresentationLoss

_LOG_2PI = math.log(2.0 * math.pi)
# Salt for the perturbation stream: a generator seeded with the bare config.seed elsewhere
# (e.g. the RSSM's sampling) would otherwise draw the very same normals and correlate them.
_NOISE_STREAM = 0x7C0


def diag_normal_log_prob(x, mean, std):
    """log N(x; mean, diag(std^2)) summed over the last axis.

    The leading axes broadcast (that is how the B x B score matrices are formed); std must
    carry the full last axis S, since its log is summed before broadcasting.
    """
    x, mean, std = (tf.cast(v, tf.float32) for v in (x, mean, std))
    z = (x - mean) / std
    size = tf.cast(tf.shape(z)[-1], tf.float32)
    log_std = tf.reduce_sum(tf.math.log(std), -1)
    return -0.5 * tf.reduce_sum(tf.square(z), -1) - log_std - 0.5 * size * _LOG_2PI


def pairwise_log_prob(x, mean, std):
    """[T, B, B'] with entry (t, i, j) = log N(x[t, i]; mean[t, j], diag(std[t, j]^2)).

    Equal to diag_normal_log_prob(x[:, :, None], mean[:, None], std[:, None]) but as matrix
    products: the square (x - m)^2 / s^2 expands into x^2 / s^2 - 2 x m / s^2 + m^2 / s^2, so
    no [T, B, B', S] tensor is formed (144 MB at TPC's 150 x 50, and as much again for the
    gradient). Both points are first centred on the batch mean of their time step, which keeps
    the three terms small where they cancel.
    """
    x, mean, std = (tf.cast(v, tf.float32) for v in (x, mean, std))
    centre = tf.reduce_mean(mean, 1, keepdims=True)
    x, mean = x - centre, mean - centre
    inv_var = 1.0 / tf.square(std)
    cross = tf.matmul(x, mean * inv_var, transpose_b=True)
    square = tf.matmul(tf.square(x), inv_var, transpose_b=True)
    own = tf.reduce_sum(tf.square(mean) * inv_var, -1)[:, None, :]
    size = tf.cast(tf.shape(x)[-1], tf.float32)
    log_std = tf.reduce_sum(tf.math.log(std), -1)[:, None, :]
    return -0.5 * (square - 2.0 * cross + own) - log_std - 0.5 * size * _LOG_2PI


def tpc_loss(post_mean, prior_mean, prior_std, noise_std, perturb, warm_up, noise):
    """Temporal predictive coding: softmax cross-entropy of each sample against all priors."""
    return _tpc_terms(post_mean, prior_mean, prior_std, noise_std, perturb, warm_up, noise)[0]


def csc_loss(post_mean, prior_mean, prior_std, noise_std, perturb, warm_up, noise):
    """Consistency: negative log-likelihood of each sample under its own prior, t >= warm_up."""
    _check_states(
        warm_up, post_mean=post_mean, prior_mean=prior_mean, prior_std=prior_std, noise=noise
    )
    sample = _perturb(post_mean, noise_std, perturb, noise)
    log_prob = diag_normal_log_prob(sample, prior_mean, prior_std)
    return -tf.reduce_mean(log_prob[:, warm_up:])


def spc_loss(post_mean, noise_std, perturb, noise):
    """Self predictive coding: each perturbed sample must identify its own clean mean."""
    return _spc_terms(post_mean, noise_std, perturb, noise)[0]


def _tpc_terms(post_mean, prior_mean, prior_std, noise_std, perturb, warm_up, noise):
    """(loss, accuracy) of TPC; both averaged over b and t >= warm_up."""
    _check_states(
        warm_up, post_mean=post_mean, prior_mean=prior_mean, prior_std=prior_std, noise=noise
    )
    sample = _time_major(_perturb(post_mean, noise_std, perturb, noise))
    mean, std = _time_major(prior_mean), _time_major(prior_std)
    logits = pairwise_log_prob(sample[warm_up:], mean[warm_up:], std[warm_up:])
    return tf.reduce_mean(_own_index_xent(logits)), _own_index_acc(logits)


def _spc_terms(post_mean, noise_std, perturb, noise):
    """(loss, accuracy) of SPC; no warm-up, the posterior needs no history."""
    _check_states(0, post_mean=post_mean, noise=noise)
    clean = _time_major(tf.cast(post_mean, tf.float32))
    sample = _time_major(_perturb(post_mean, noise_std, perturb, noise))
    std = tf.fill(tf.shape(clean), tf.constant(noise_std, tf.float32))
    logits = pairwise_log_prob(sample, clean, std)
    return tf.reduce_mean(_own_index_xent(logits)), _own_index_acc(logits)


def _perturb(post_mean, noise_std, perturb, noise):
    post_mean = tf.cast(post_mean, tf.float32)
    if not perturb:
        return post_mean
    return post_mean + noise_std * tf.cast(noise, tf.float32)


def _time_major(x):
    return tf.transpose(tf.cast(x, tf.float32), [1, 0, 2])


def _own_index_xent(logits):
    """Cross-entropy [T, B] of logits [T, B, B'] with label b' = b (the sequence itself)."""
    return tf.reduce_logsumexp(logits, -1) - tf.linalg.diag_part(logits)


def _own_index_acc(logits):
    """Fraction of rows whose highest logit is their own index."""
    own = tf.range(tf.shape(logits)[-1], dtype=tf.int64)
    hits = tf.equal(tf.argmax(logits, -1, output_type=tf.int64), own)
    return tf.reduce_mean(tf.cast(hits, tf.float32))


def _check_states(warm_up, post_mean, **others):
    """All tensors [B, T, S] with post_mean's shape, and at least one step after warm-up."""
    shape = post_mean.shape
    if shape.rank != 3:
        raise ValueError(f'post_mean must be [B, T, S], got shape {shape}.')
    for name, value in others.items():
        if not value.shape.is_compatible_with(shape):
            raise ValueError(f'{name} must match post_mean [B, T, S] = {shape}, got {value.shape}.')
    if not isinstance(warm_up, int) or warm_up < 0:
        raise ValueError(f'warm_up must be a non-negative int, got {warm_up!r}.')
    steps = shape[1]
    if steps is not None and steps <= warm_up:
        raise ConfigError(
            f'Sequence length T = {steps} leaves no step after warm_up = '
            f'{warm_up}; use a longer dataset.length.'
        )


class TPCLoss(RepresentationLoss):
    """The TPC variant's loss terms, in the interface the shared world model calls."""

    terms = ('tpc', 'csc', 'spc')
    uses_kl = False  # TPC replaces the KL term by its contrastive terms.
    rssm_keys = ('warm_up', 'perturb_std', 'perturb_tpc', 'perturb_csc', 'perturb_spc')

    def __init__(self, config, obs_shape):
        super().__init__(config, obs_shape, name='tpc_loss')
        rssm = config.rssm
        _check_config(rssm)
        self._warm_up = int(_option(rssm, 'warm_up'))
        self._noise_std = float(_option(rssm, 'perturb_std'))
        self._perturb = {
            name: bool(_option(rssm, f'perturb_{name}')) for name in ('tpc', 'csc', 'spc')
        }
        self._rng = tf.random.Generator.from_seed([int(config.seed), _NOISE_STREAM])

    def __call__(self, data, embed, post, prior, feat):
        del data, embed, feat  # The loss lives entirely in the latent space.
        post_mean = tf.cast(_state(post, 'mean', 'post'), tf.float32)
        prior_mean = tf.cast(_state(prior, 'mean', 'prior'), tf.float32)
        prior_std = tf.cast(_state(prior, 'std', 'prior'), tf.float32)
        noise = self._draw_noise(post_mean)
        args = (post_mean, prior_mean, prior_std, self._noise_std)
        tpc, tpc_acc = _tpc_terms(*args, self._perturb['tpc'], self._warm_up, noise)
        csc = csc_loss(*args, self._perturb['csc'], self._warm_up, noise)
        spc, spc_acc = _spc_terms(post_mean, self._noise_std, self._perturb['spc'], noise)
        losses = {'tpc': tpc, 'csc': csc, 'spc': spc}
        metrics = {'tpc_acc': tpc_acc, 'spc_acc': spc_acc, 'prior_std': tf.reduce_mean(prior_std)}
        return losses, metrics

    def _draw_noise(self, post_mean):
        # One draw for every perturbed term; none at all when nothing is perturbed.
        if not any(self._perturb.values()):
            return tf.zeros_like(post_mean)
        return self._rng.normal(tf.shape(post_mean), dtype=tf.float32)


def _check_config(rssm):
    discrete = _option(rssm, 'discrete')
    if discrete:
        raise ConfigError(
            f'TPC uses continuous latents but config.rssm.discrete = {discrete!r}; '
            'set `--rssm.discrete False` (the dmc block does).'
        )
    expected = {'posterior_input': 'embed', 'posterior_std': 'prior'}
    for key, value in expected.items():
        got = _option(rssm, key)
        if got != value:
            raise ConfigError(
                f"TPC computes the posterior from the embedding alone with std = sg(prior std): "
                f"config.rssm.{key} must be {value!r}, got {got!r}; set it in the rssm "
                f"block of TPC/dreamerv2/configs.yaml."
            )
    if not float(_option(rssm, 'perturb_std')) > 0:
        raise ConfigError(
            'config.rssm.perturb_std must be > 0: it is also the std of the '
            f"SPC likelihood; got {_option(rssm, 'perturb_std')!r}."
        )
    warm_up = _option(rssm, 'warm_up')
    if isinstance(warm_up, bool) or int(warm_up) != warm_up or warm_up < 0:
        raise ConfigError(f'config.rssm.warm_up must be a non-negative int, got {warm_up!r}.')


def _option(rssm, key):
    try:
        return getattr(rssm, key)
    except (AttributeError, KeyError):
        raise ConfigError(
            f'TPC needs config.rssm.{key}; add it to the rssm block of TPC/dreamerv2/configs.yaml.'
        ) from None


def _state(state, key, name):
    if key not in state:
        raise ConfigError(
            f"TPC needs continuous RSSM states: {name} has no '{key}' "
            f'(keys: {sorted(state)}); set `--rssm.discrete False`.'
        )
    return state[key]
