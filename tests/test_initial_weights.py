"""Every layer of every variant starts from the original's distribution, at the published sizes.

The original (fdeng18/dreamer-pro, three copies of common/nets.py and dreamerv2/agent.py) builds
every layer with Keras's defaults: Dense, Conv2D and Conv2DTranspose kernels glorot_uniform,
biases zeros, LayerNormalization gamma ones and beta zeros. DreamerPro's prototypes are
RandomNormal(0, 1), not normalised until the first update normalises them before use. Its EMA
encoder and EMA projection, and every variant's slow target critic, are layers of their own
(independent glorot draws) until the first update copies the online weights into them (mix 1 at
update 0, after that update's optimizer step).

glorot_uniform draws U(-limit, limit) with limit = sqrt(6 / (fan_in + fan_out)), so its std is
sqrt(2 / (fan_in + fan_out)); Keras takes the fans from the kernel as stored, [..., in, out],
times the receptive field (kh * kw). A Conv2DTranspose kernel is stored [kh, kw, out, in], which
swaps the two fans; the sum, and so glorot's distribution, is the same.

The expected layers below are written from the original's code at the published standard-DMC
sizes (`defaults dmc`, DreamerPro `defaults dmc norm_off`), not read from our config, and every
agent variable (optimizer state aside) must be one of them with the expected shape.
"""

import math
import re

import numpy as np
import pytest

from dreamer_core import build, registry

# Published standard-DMC sizes: rssm {hidden 200, deter 200, stoch 32, discrete False}, encoder
# and decoder depth 48, heads and actor-critic 4 x 400, prototypes 2500 x 32.
DEPTH, HIDDEN, DETER, STOCH, UNITS, LAYERS = 48, 200, 200, 32, 400, 4
PROTOTYPES, PROTO = 2500, 32
ACT = 6  # the action size of every test
EMBED = 2 * 2 * 8 * DEPTH  # four VALID stride-2 convolutions of a 64x64 image: 2x2x(8 depth)
FEAT = STOCH + DETER
# Small batches change no layer shape; jit False builds without tracing.
FLAGS = ['--precision', '32', '--jit', 'False', '--dataset.batch', '2', '--dataset.length', '4']

# The original's initialisers (Keras defaults unless named) and the counters' start.
GLOROT, ZEROS, ONES = 'glorot_uniform', 'zeros', 'ones'
NORMAL = 'normal(0, 1)'  # DreamerPro's prototypes: RandomNormal(0, 1), not normalised
COUNTER = 'zero count'  # the agent step and the update counters of a fresh run
SIGMAS = 5  # tolerances in standard errors of the estimate
FLOOR = 0.005  # relative slack for the approximations behind the standard errors


def dense(name, fan_in, units):
    return {f'{name}/kernel': ((fan_in, units), GLOROT), f'{name}/bias': ((units,), ZEROS)}


def mlp(name, fan_in, outs=('out',), size=1):
    """common.MLP: `LAYERS` Dense of `UNITS`, then DistLayer's Dense (and its std Dense)."""
    layers = {}
    for i in range(LAYERS):
        layers.update(dense(f'{name}/dense{i}', fan_in if i == 0 else UNITS, UNITS))
    for out in outs:
        layers.update(dense(f'{name}/{out}', UNITS, size))
    return layers


def encoder(name):
    """common.ConvEncoder: Conv2D(2^i depth, 4, stride 2) over 3, d, 2d, 4d channels."""
    layers, channels = {}, 3
    for i in range(4):
        depth = 2**i * DEPTH
        layers[f'{name}/conv{i}/kernel'] = ((4, 4, channels, depth), GLOROT)
        layers[f'{name}/conv{i}/bias'] = ((depth,), ZEROS)
        channels = depth
    return layers


def decoder(name):
    """common.ConvDecoder: Dense(32 d), then Conv2DTranspose kernels [k, k, out, in]."""
    layers = dense(f'{name}/dense', FEAT, 32 * DEPTH)
    sizes = [(5, 4 * DEPTH), (5, 2 * DEPTH), (6, DEPTH), (6, 3)]
    channels = 32 * DEPTH
    for i, (kernel, depth) in enumerate(sizes):
        layers[f'{name}/convt{i}/kernel'] = ((kernel, kernel, depth, channels), GLOROT)
        layers[f'{name}/convt{i}/bias'] = ((depth,), ZEROS)
        channels = depth
    return layers


def expected_layers(variant):
    """{layer variable: (shape, initialiser)} of the original's agent for `variant`."""
    tpc = variant == 'tpc'
    layers = {'step': ((), COUNTER), 'task/_updates': ((), COUNTER)}
    layers.update(encoder('wm/encoder'))
    layers.update(dense('wm/rssm/img_in', STOCH + ACT, HIDDEN))
    layers.update(dense('wm/rssm/_cell/dense', HIDDEN + DETER, 3 * DETER))
    layers['wm/rssm/_cell/norm/gamma'] = ((3 * DETER,), ONES)
    layers['wm/rssm/_cell/norm/beta'] = ((3 * DETER,), ZEROS)
    layers.update(dense('wm/rssm/img_out', DETER, HIDDEN))
    layers.update(dense('wm/rssm/img_dist', HIDDEN, 2 * STOCH))
    # TPC's posterior reads the embedding alone and outputs only the mean (std = prior's).
    layers.update(dense('wm/rssm/obs_out', EMBED if tpc else DETER + EMBED, HIDDEN))
    layers.update(dense('wm/rssm/obs_dist', HIDDEN, STOCH if tpc else 2 * STOCH))
    layers.update(mlp('wm/heads/reward', FEAT))  # pred_discount False: no discount head
    layers.update(mlp('task/actor', FEAT, ('out', 'std'), ACT))  # tanh_normal: mean and std
    layers.update(mlp('task/critic', FEAT))
    layers.update(mlp('task/_target_critic', FEAT))
    if variant == 'dreamer':
        layers.update(decoder('wm/heads/image'))
    if variant == 'dreamerpro':
        layers['wm/repr/prototypes'] = ((PROTOTYPES, PROTO), NORMAL)
        layers.update(dense('wm/repr/obs_proj', EMBED, PROTO))
        layers.update(dense('wm/repr/feat_proj', FEAT, PROTO))
        layers.update(dense('wm/repr/_ema_obs_proj', EMBED, PROTO))
        layers.update(encoder('wm/repr/_ema_encoder'))
        layers['wm/repr/_updates'] = ((), COUNTER)
    return layers


def layer_key(path, var):
    """'wm/encoder/_parts/conv0/_trainable_weights/0' -> 'wm/encoder/conv0/kernel'."""
    match = re.fullmatch(r'(.*)/_(?:non_)?trainable_weights/\d+', path)
    key = f'{match[1]}/{var.name.split("/")[-1].split(":")[0]}' if match else path
    key = key.replace('/_parts/', '/')
    # With expl_behavior greedy the task behaviour is also the exploration one.
    return re.sub(r'^_(?:task|expl)_behavior/', 'task/', key)


def glorot_limit(shape):
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    return math.sqrt(6.0 / (fan_in + fan_out))


def distribution_errors(values, init):
    """What is wrong with `values` as a draw of `init` at its shape ([] if nothing)."""
    values = np.asarray(values, np.float64)
    if init in (ZEROS, COUNTER):
        return [] if np.all(values == 0) else [f'not all zero (max |x| {np.abs(values).max():g})']
    if init == ONES:
        return (
            []
            if np.all(values == 1)
            else [f'not all one (range {values.min():g}..{values.max():g})']
        )
    n = values.size
    if init == GLOROT:
        limit = glorot_limit(values.shape)
        std = limit / math.sqrt(3)
    else:
        limit, std = None, 1.0
    errors = []
    mean_tol = SIGMAS * std / math.sqrt(n)
    if abs(values.mean()) > mean_tol:
        errors.append(f'mean {values.mean():.3g} beyond +-{mean_tol:.3g}')
    # The relative standard error of a std estimate is about 1 / sqrt(2 n).
    ratio, ratio_tol = values.std() / std, SIGMAS / math.sqrt(2 * n) + FLOOR
    if abs(ratio - 1) > ratio_tol:
        errors.append(
            f'std {values.std():.4g} is {ratio:.3f} x the expected {std:.4g} (tol {ratio_tol:.3f})'
        )
    if init == GLOROT:
        # U(-limit, limit): nothing beyond the limit, and n draws come within limit * 20 / n of
        # it but with probability (1 - 20 / n)^n ~ e^-20.
        peak = np.abs(values).max()
        if not limit * (1 - 20 / n) <= peak <= limit * (1 + 1e-6):
            errors.append(f'max |x| {peak:.5g}, the uniform limit is {limit:.5g}')
    else:
        # A normal's excess kurtosis is 0 (standard error sqrt(24 / n)); a uniform's is -1.2.
        kurtosis = np.mean(((values - values.mean()) / values.std()) ** 4) - 3
        if abs(kurtosis) > SIGMAS * math.sqrt(24 / n):
            errors.append(f'excess kurtosis {kurtosis:.3f}, a normal has 0')
    return errors


@pytest.fixture(scope='module', params=list(registry.VARIANTS))
def fresh(request):
    """(variant, agent, config, {layer: (variable, initial value)}) of a published-size agent
    whose variables exist and have had no update."""
    variant = registry.get(request.param)
    config = build.load_config(variant, ['--configs', *variant.standard, *FLAGS])
    agent = build.build_agent(variant, config, (64, 64, 3), ACT)
    agent.create_variables(build.synthetic_batch(config, ACT))
    layers = {}
    for path, var in agent.checkpoint_variables():
        if path.startswith('optimizer'):
            continue  # the optimizers' own state (Adam's moments), not a layer
        key = layer_key(path, var)
        assert key not in layers, f'two variables map to {key}'
        layers[key] = (var, var.numpy())
    return variant.name, agent, config, layers


def test_every_layer_starts_from_the_originals_distribution(fresh):
    variant, _, _, layers = fresh
    expected = expected_layers(variant)
    unmatched = sorted(set(layers) - set(expected))
    assert not unmatched, f'{variant}: variables the original has no layer for: {unmatched}'
    missing = sorted(set(expected) - set(layers))
    assert not missing, f'{variant}: layers of the original this agent lacks: {missing}'
    problems = []
    for key, (shape, init) in sorted(expected.items()):
        value = layers[key][1]
        if value.shape != shape:
            problems.append(f'{key}: shape {value.shape}, the original has {shape}')
        else:
            problems += [f'{key} ({init}, {shape}): {e}' for e in distribution_errors(value, init)]
    assert not problems, f'{variant}:\n' + '\n'.join(problems)


def test_layers_of_one_shape_are_independent_draws(fresh):
    """No two randomly initialised variables start equal (e.g. a reused seed), the slow
    target critic and the EMA nets included: the original copies into them only at the end of
    the first update."""
    variant, _, _, layers = fresh
    random = [
        k for k, (shape, init) in expected_layers(variant).items() if init in (GLOROT, NORMAL)
    ]
    for i, a in enumerate(random):
        for b in random[i + 1 :]:
            va, vb = layers[a][1], layers[b][1]
            if va.shape == vb.shape:
                assert not np.array_equal(va, vb), f'{variant}: {a} starts equal to {b}'


def copies(variant):
    """(copy, source) layer prefixes that the first update sets equal."""
    pairs = [('task/_target_critic/', 'task/critic/')]
    if variant == 'dreamerpro':
        pairs += [
            ('wm/repr/_ema_encoder/', 'wm/encoder/'),
            ('wm/repr/_ema_obs_proj/', 'wm/repr/obs_proj/'),
        ]
    return pairs


def test_the_first_update_copies_the_critic_and_the_ema_nets(fresh):
    variant, agent, config, layers = fresh
    agent.train(build.synthetic_batch(config, ACT))
    for copy, source in copies(variant):
        keys = [k for k in layers if k.startswith(copy)]
        assert len(keys) >= 2, (copy, keys)  # a kernel and a bias at least
        for key in keys:
            var = layers[key][0]
            online = layers[source + key[len(copy) :]][0]
            np.testing.assert_array_equal(var.numpy(), online.numpy(), err_msg=f'{variant}: {key}')
            # As in the original the copy follows the update's optimizer step: the weights
            # copied are the updated ones.
            source_before = layers[source + key[len(copy) :]][1]
            assert not np.array_equal(online.numpy(), source_before), f'{variant}: {key}'


# Plausible wrong initialisers at published shapes: (layer, its shape, the wrong draw).
def he_normal(shape, rng):  # Keras he_normal: truncated normal, std sqrt(2 / fan_in)
    fan_in = math.prod(shape[:-1])
    return truncated_normal(shape, math.sqrt(2 / fan_in), rng)


def glorot_normal(shape, rng):  # the same std as glorot_uniform, but normal
    return truncated_normal(shape, glorot_limit(shape) / math.sqrt(3), rng)


def truncated_normal(shape, std, rng):
    x = rng.standard_normal(math.prod(shape) * 2)
    x = x[np.abs(x) <= 2][: math.prod(shape)]
    return (x * std / 0.87962566103423978).reshape(shape)


def glorot_without_receptive_field(shape, rng):
    limit = math.sqrt(6 / (shape[-2] + shape[-1]))
    return rng.uniform(-limit, limit, shape)


def he_uniform(shape, rng):
    limit = math.sqrt(6 / math.prod(shape[:-1]))
    return rng.uniform(-limit, limit, shape)


def torch_default(shape, rng):  # nn.Linear / nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    limit = 1 / math.sqrt(math.prod(shape[:-1]))
    return rng.uniform(-limit, limit, shape)


def normalised_normal(shape, rng):  # prototypes normalised at creation
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def uniform_unit_std(shape, rng):
    return rng.uniform(-math.sqrt(3), math.sqrt(3), shape)


WRONG = [
    ('encoder conv1', (4, 4, DEPTH, 2 * DEPTH), GLOROT, he_normal),
    ('encoder conv1', (4, 4, DEPTH, 2 * DEPTH), GLOROT, glorot_without_receptive_field),
    ('decoder convt3', (6, 6, 3, DEPTH), GLOROT, glorot_without_receptive_field),
    ('rssm img_out', (DETER, HIDDEN), GLOROT, glorot_normal),
    ('critic dense1', (UNITS, UNITS), GLOROT, torch_default),
    ('critic dense1', (UNITS, UNITS), GLOROT, he_uniform),
    ('actor out', (UNITS, ACT), GLOROT, he_uniform),
    ('reward out', (UNITS, 1), GLOROT, he_normal),
    ('prototypes', (PROTOTYPES, PROTO), NORMAL, normalised_normal),
    ('prototypes', (PROTOTYPES, PROTO), NORMAL, uniform_unit_std),
]


@pytest.mark.parametrize(
    'layer, shape, init, wrong', WRONG, ids=lambda x: getattr(x, '__name__', None)
)
def test_the_check_rejects_plausible_wrong_initialisers(layer, shape, init, wrong):
    rng = np.random.default_rng(0)
    assert distribution_errors(wrong(shape, rng), init), f'{layer}: {wrong.__name__} passed'
    if init == GLOROT:
        limit = glorot_limit(shape)
        right = rng.uniform(-limit, limit, shape)
    else:
        right = rng.standard_normal(shape)
    assert not distribution_errors(right, init), f'{layer}: a right draw failed'
