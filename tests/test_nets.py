"""Components of the shared core: RSSM, GRU, encoder/decoder, heads, world model, optimizer,
actor-critic and agent checkpoints (tier 2), on tiny sizes."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from dreamer_core import agent as agent_lib
from dreamer_core import config as config_lib
from dreamer_core import dists, nets, optim, registry
from dreamer_core.actor_critic import ActorCritic
from tests.tiny import TINY_MODEL, VARIANT_MODEL

REPO = pathlib.Path(__file__).resolve().parents[1]
DREAMER_DIR = REPO / 'Dreamer' / 'dreamerv2'
ReconLoss = registry.get('dreamer').load_loss()

TINY = [
    *'--configs defaults dmc debug --precision 32'.split(),
    *TINY_MODEL,
    *VARIANT_MODEL['dreamer'],
]
B, T, ACT = 2, 5, 2
tfd = tfp.distributions


@pytest.fixture(autouse=True)
def seeded():
    tf.random.set_seed(0)


def make_config(*flags, **replace):
    """The tiny Dreamer config; `flags` override values, `replace` swaps whole top-level keys."""
    flags = list(flags)
    tiny = list(TINY)
    for i in range(0, len(flags), 2):  # A flag given here wins over the same flag in TINY.
        if flags[i] in tiny:
            j = tiny.index(flags[i])
            del tiny[j : j + 2]
    config = config_lib.load(tiny + flags, DREAMER_DIR)
    return config.replace(**replace) if replace else config


def make_agent(config=None):
    config = config if config is not None else make_config()
    return agent_lib.Agent(
        config,
        (64, 64, 3),
        act_dim=ACT,
        discrete=False,
        repr_loss=ReconLoss,
        variant='dreamer',
    )


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        'image': rng.integers(0, 256, (B, T, 64, 64, 3)).astype(np.uint8),
        'action': rng.uniform(-1, 1, (B, T, ACT)).astype(np.float32),
        'reward': rng.normal(size=(B, T)).astype(np.float32),
        'discount': np.ones((B, T), np.float32),
    }


def assert_all_nonzero(grads, variables, what):
    for grad, var in zip(grads, variables):
        assert grad is not None, f'{what}: no gradient reaches {var.name}'
        assert np.abs(tf.convert_to_tensor(grad).numpy()).max() > 0, (
            f'{what}: zero gradient for {var.name}'
        )


def rssm_inputs(seed, act=ACT, embed=6):
    rng = np.random.default_rng(seed)
    return (
        tf.constant(rng.normal(size=(B, T, embed)).astype(np.float32)),
        tf.constant(rng.uniform(-1, 1, (B, T, act)).astype(np.float32)),
    )


@pytest.mark.parametrize('discrete', [False, 4])
def test_rssm_observe_imagine_shapes(discrete):
    rssm = nets.RSSM(stoch=3, deter=8, hidden=8, discrete=discrete)
    embed, action = rssm_inputs(0)
    post, prior = rssm.observe(embed, action)
    stoch_shape = (B, T, 3, 4) if discrete else (B, T, 3)
    stats = {'logit': stoch_shape} if discrete else {'mean': stoch_shape, 'std': stoch_shape}
    want = {'stoch': stoch_shape, 'deter': (B, T, 8), **stats}
    for state in (post, prior):
        assert {k: tuple(v.shape) for k, v in state.items()} == want
    np.testing.assert_array_equal(post['deter'].numpy(), prior['deter'].numpy())
    feat = rssm.get_feat(post)
    assert tuple(feat.shape) == (B, T, (12 if discrete else 3) + 8)
    start = {k: v[:, -1] for k, v in post.items()}
    imagined = rssm.imagine(action, start)
    assert {k: tuple(v.shape) for k, v in imagined.items()} == want
    if discrete:
        values = post['stoch'].numpy()
        assert set(np.unique(values)) <= {0.0, 1.0}
        np.testing.assert_array_equal(values.sum(-1), np.ones((B, T, 3)))


@pytest.mark.parametrize('discrete', [False, 4])
def test_obs_step_without_sampling_is_deterministic(discrete):
    rssm = nets.RSSM(stoch=3, deter=8, hidden=8, discrete=discrete)
    embed, action = rssm_inputs(1)
    state = rssm.initial(B)
    first, _ = rssm.obs_step(state, action[:, 0], embed[:, 0], sample=False)
    second, _ = rssm.obs_step(state, action[:, 0], embed[:, 0], sample=False)
    for key in first:
        np.testing.assert_array_equal(first[key].numpy(), second[key].numpy())
    if discrete:
        want = tf.one_hot(tf.argmax(first['logit'], -1), 4).numpy()
    else:
        want = first['mean'].numpy()
    np.testing.assert_array_equal(first['stoch'].numpy(), want)
    sampled, _ = rssm.obs_step(state, action[:, 0], embed[:, 0], sample=True)
    assert not np.array_equal(sampled['stoch'].numpy(), first['stoch'].numpy())


def tpc_rssm():
    return nets.RSSM(
        stoch=3, deter=8, hidden=8, discrete=False, posterior_input='embed', posterior_std='prior'
    )


def test_tpc_posterior_reads_only_the_embedding():
    rssm = tpc_rssm()
    rng = np.random.default_rng(2)
    embed = tf.constant(rng.normal(size=(B, 6)).astype(np.float32))
    action = tf.constant(rng.uniform(-1, 1, (B, ACT)).astype(np.float32))
    state = rssm.initial(B)
    state['stoch'] = tf.constant(rng.normal(size=(B, 3)).astype(np.float32))
    other = dict(state, deter=tf.constant(rng.normal(size=(B, 8)).astype(np.float32)))
    post_a, prior_a = rssm.obs_step(state, action, embed)
    post_b, prior_b = rssm.obs_step(other, action, embed)
    assert not np.allclose(prior_a['mean'].numpy(), prior_b['mean'].numpy())
    np.testing.assert_array_equal(post_a['mean'].numpy(), post_b['mean'].numpy())
    np.testing.assert_array_equal(post_a['std'].numpy(), prior_a['std'].numpy())
    np.testing.assert_array_equal(post_b['std'].numpy(), prior_b['std'].numpy())
    post_c, _ = rssm.obs_step(state, action, embed + 1.0)
    assert not np.allclose(post_c['mean'].numpy(), post_a['mean'].numpy())


def test_tpc_posterior_std_passes_no_gradient_to_the_prior():
    rssm = tpc_rssm()
    embed, action = rssm_inputs(3)
    rssm.obs_step(rssm.initial(B), action[:, 0], embed[:, 0])  # build the layers
    prior_vars = (
        rssm._parts['img_dist'].trainable_variables + rssm._parts['img_out'].trainable_variables
    )
    with tf.GradientTape(persistent=True) as tape:
        post, prior = rssm.obs_step(rssm.initial(B), action[:, 0], embed[:, 0])
        post_std, post_stoch = tf.reduce_sum(post['std']), tf.reduce_sum(post['stoch'])
        prior_std = tf.reduce_sum(prior['std'])
    assert all(g is None for g in tape.gradient(post_std, prior_vars))
    assert all(g is None for g in tape.gradient(post_stoch, prior_vars))
    assert_all_nonzero(tape.gradient(prior_std, prior_vars), prior_vars, 'prior std')


def test_tpc_posterior_std_needs_continuous_latents():
    with pytest.raises(ValueError, match='discrete'):
        nets.RSSM(stoch=3, deter=8, hidden=8, discrete=4, posterior_std='prior')


def numpy_gru(inputs, state, kernel, bias, gamma, beta, epsilon):
    parts = np.concatenate([inputs, state], -1).astype(np.float64) @ kernel + bias
    mean = parts.mean(-1, keepdims=True)
    var = parts.var(-1, keepdims=True)
    parts = (parts - mean) / np.sqrt(var + epsilon) * gamma + beta
    reset, cand, update = np.split(parts, 3, -1)
    reset = 1 / (1 + np.exp(-reset))
    cand = np.tanh(reset * cand)
    update = 1 / (1 + np.exp(-(update - 1)))
    return update * cand + (1 - update) * state


def test_gru_cell_matches_numpy():
    rng = np.random.default_rng(4)
    cell = nets.GRUCell(5)
    inputs = rng.normal(size=(3, 4)).astype(np.float32)
    state = rng.normal(size=(3, 5)).astype(np.float32)
    cell(tf.constant(inputs), tf.constant(state))
    dense, norm = cell._parts['dense'], cell._parts['norm']
    # Non-trivial bias, scale and offset, so that each one is checked.
    dense.bias.assign(rng.normal(size=15).astype(np.float32))
    norm.gamma.assign(rng.uniform(0.5, 1.5, 15).astype(np.float32))
    norm.beta.assign(rng.normal(size=15).astype(np.float32))
    got = cell(tf.constant(inputs), tf.constant(state)).numpy()
    want = numpy_gru(
        inputs,
        state,
        dense.kernel.numpy(),
        dense.bias.numpy(),
        norm.gamma.numpy(),
        norm.beta.numpy(),
        norm.epsilon,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_encoder_and_decoder_shapes():
    images = tf.random.uniform((B, T, 64, 64, 3), -0.5, 0.5)
    embed = nets.ConvEncoder(depth=2)({'image': images})
    assert tuple(embed.shape) == (B, T, 2 * 2 * 8 * 2)
    features = tf.random.normal((B, T, 20))
    dist = nets.ConvDecoder((64, 64, 3), depth=2)(features)
    assert tuple(dist.event_shape) == (64, 64, 3)
    assert tuple(dist.batch_shape) == (B, T)
    assert tuple(dist.log_prob(tf.zeros((B, T, 64, 64, 3))).shape) == (B, T)
    with pytest.raises(ValueError, match='64x64'):
        nets.ConvDecoder((32, 32, 3), depth=2)(features)


@pytest.mark.parametrize(
    'dist,shape,event',
    [('mse', [], ()), ('binary', [], ()), ('tanh_normal', 2, (2,)), ('onehot', 4, (4,))],
)
def test_mlp_head_event_shapes(dist, shape, event):
    head = nets.MLP(shape, layers=1, units=8, dist=dist)
    out = head(tf.random.normal((B, T, 20)))
    assert tuple(out.event_shape) == event
    assert tuple(out.batch_shape) == (B, T)
    assert tuple(out.sample().shape) == (B, T, *event)
    assert tuple(out.mode().shape) == (B, T, *event)


@pytest.fixture(scope='module')
def trained_agent():
    """One agent, trained one step (variables built), without free nats so the KL has gradients."""
    tf.random.set_seed(0)
    agent = make_agent(make_config('--kl.free', '0'))
    agent.train(make_batch())
    return agent


def test_world_model_loss_reaches_encoder_rssm_and_decoder(trained_agent):
    wm = trained_agent.wm
    modules = {'encoder': wm.encoder, 'rssm': wm.rssm, 'decoder': wm.heads['image']}
    with tf.GradientTape(persistent=True) as tape:
        loss, _, _, _ = wm.loss(make_batch(1))
    for name, module in modules.items():
        variables = module.trainable_variables
        assert len(variables) >= 4, name
        assert_all_nonzero(tape.gradient(loss, variables), variables, name)


@pytest.mark.parametrize('grad_heads,reaches', [('image', False), ('image,reward', True)])
def test_reward_gradient_into_features_only_when_named(grad_heads, reaches):
    agent = make_agent(make_config('--grad_heads', grad_heads))
    wm = agent.wm
    with tf.GradientTape(persistent=True) as tape:
        _, _, _, metrics = wm.loss(make_batch(2))
    variables = wm.encoder.trainable_variables
    grads = tape.gradient(metrics['reward_loss'], variables)
    if reaches:
        assert_all_nonzero(grads, variables, 'reward loss')
    else:
        assert all(g is None for g in grads)
    head_vars = wm.heads['reward'].trainable_variables
    assert_all_nonzero(tape.gradient(metrics['reward_loss'], head_vars), head_vars, 'reward head')


def test_dynamics_backprop_through_imagination(trained_agent):
    agent = trained_agent
    wm, ac = agent.wm, agent._task_behavior
    assert agent.config.actor_grad == 'dynamics'
    _, _, outputs, _ = wm.loss(make_batch(3))
    parts = wm.rssm._parts
    img_step_layers = [
        parts['img_in'],
        *wm.rssm._cell._parts.values(),
        parts['img_out'],
        parts['img_dist'],
    ]
    rssm_vars = [v for layer in img_step_layers for v in layer.trainable_variables]
    assert len(rssm_vars) == 10  # img_in, GRU dense and norm, img_out, img_dist
    with tf.GradientTape(persistent=True) as tape:
        feat, state, action, disc = wm.imagine(ac.actor, outputs['post'], agent.config.imag_horizon)
        reward = agent._reward(feat, state, action)
        target, weight, _ = ac.target(feat, reward, disc)
        actor_loss, _ = ac.actor_loss(feat, action, target, weight)
    assert tuple(feat.shape[:2]) == (agent.config.imag_horizon, B * T)
    actor_vars = ac.actor.trainable_variables
    assert_all_nonzero(tape.gradient(actor_loss, actor_vars), actor_vars, 'actor loss')
    assert_all_nonzero(tape.gradient(target, rssm_vars), rssm_vars, 'lambda return')
    # The return depends on the actor only through the imagined actions fed to img_step.
    assert_all_nonzero(tape.gradient(target, actor_vars), actor_vars, 'lambda return')


def test_grad_heads_naming_a_missing_head_raises():
    with pytest.raises(ValueError, match="'discount'"):
        make_agent(make_config('--grad_heads', 'image,discount'))


def test_loss_scales_typo_raises():
    config = make_config()
    typo = dict(config.loss_scales, imgae=1.0)
    with pytest.raises(ValueError, match='imgae'):
        make_agent(config.replace(loss_scales=typo))
    missing = {k: v for k, v in config.loss_scales.items() if k != 'image'}
    with pytest.raises(ValueError, match="'image'"):
        make_agent(config.replace(loss_scales=missing))


def holder_of(*values):
    module = tf.Module()
    module.vars = [tf.Variable(v) for v in values]
    return module


def test_weight_decay_before_adam_step():
    rng = np.random.default_rng(5)
    init = rng.normal(size=(4, 3)).astype(np.float32)
    coef = rng.normal(size=(4, 3)).astype(np.float32)
    lr, wd = 0.1, 0.01
    module = holder_of(init)
    opt = optim.Optimizer('model', lr=lr, eps=1e-5, clip=None, wd=wd)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(coef * module.vars[0] ** 2)
    opt(tape, loss, module)
    grad = 2 * coef * init
    decayed = tf.Variable((1 - wd) * init)
    keras.optimizers.Adam(lr, epsilon=1e-5).apply_gradients([(tf.constant(grad), decayed)])
    np.testing.assert_allclose(module.vars[0].numpy(), decayed.numpy(), rtol=1e-6, atol=1e-7)
    stepped = tf.Variable(init)
    keras.optimizers.Adam(lr, epsilon=1e-5).apply_gradients([(tf.constant(grad), stepped)])
    decay_after = (1 - wd) * stepped.numpy()
    assert np.abs(decay_after - module.vars[0].numpy()).max() > 5e-4


def test_gradients_clipped_to_global_norm():
    rng = np.random.default_rng(6)
    inits = [rng.normal(size=(3,)).astype(np.float32), rng.normal(size=(2, 2)).astype(np.float32)]
    coefs = [10 * rng.normal(size=x.shape).astype(np.float32) for x in inits]
    # A large epsilon makes Adam's first step depend on the gradient's scale, not just its sign.
    lr, eps, clip = 0.1, 1.0, 1.0
    module = holder_of(*inits)
    opt = optim.Optimizer('model', lr=lr, eps=eps, clip=clip, wd=None)
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_sum(c * v) for c, v in zip(coefs, module.vars))
    metrics = opt(tape, loss, module)
    norm = np.sqrt(sum((c.astype(np.float64) ** 2).sum() for c in coefs))
    assert norm > 5 * clip
    np.testing.assert_allclose(metrics['model_grad_norm'].numpy(), norm, rtol=1e-5)

    def adam(grads):
        variables = [tf.Variable(x) for x in inits]
        keras.optimizers.Adam(lr, epsilon=eps).apply_gradients(
            [(tf.constant(g, tf.float32), v) for g, v in zip(grads, variables)]
        )
        return [v.numpy() for v in variables]

    clipped = adam([c * clip / norm for c in coefs])
    for got, want in zip(module.vars, clipped):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    unclipped = adam(coefs)
    assert np.abs(unclipped[0] - clipped[0]).max() > 1e-3


def test_nan_loss_fails_with_the_loss_name():
    module = holder_of(np.ones(3, np.float32))
    opt = optim.Optimizer('model', lr=0.1, eps=1e-5, clip=100.0, wd=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(module.vars[0]) * float('nan')
    with pytest.raises(tf.errors.InvalidArgumentError, match='model_loss'):
        opt(tape, loss, module)
    np.testing.assert_array_equal(module.vars[0].numpy(), np.ones(3))


def values_of(module):
    return [v.numpy().copy() for v in module.variables]


def test_slow_target_critic_copies_every_n_updates():
    agent = make_agent(make_config('--slow_target_update', '3'))
    wm, ac = agent.wm, agent._task_behavior
    _, _, outputs, _ = wm.loss(make_batch(4))
    start = outputs['post']
    targets, critics = [], []
    for _ in range(5):
        ac.train(wm, start, agent._reward)
        targets.append(values_of(ac._target_critic))
        critics.append(values_of(ac.critic))
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len(targets[0]) == len(critics[0]) > 0
    assert same(targets[0], critics[0])  # the first update copies
    for i in (1, 2):  # then it holds still while the critic learns
        assert same(targets[i], critics[0])
        assert not same(targets[i], critics[i])
    assert same(targets[3], critics[3])  # the next multiple of slow_target_update copies again
    assert not same(targets[3], critics[0])
    assert same(targets[4], critics[3])


def checkpoint_values(agent):
    return [(name, var.numpy().copy()) for name, var in agent.checkpoint_variables()]


def test_checkpoint_roundtrip_restores_all_variables(tmp_path):
    config = make_config()
    first, second = make_agent(config), make_agent(config)
    batch = make_batch(5)
    first.train(batch)
    second.train(batch)
    path = tmp_path / 'variables.npz'
    first.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['variables.npz']
    before = checkpoint_values(second)
    want = checkpoint_values(first)
    assert [n for n, _ in before] == [n for n, _ in want]
    assert any(n.startswith('optimizer') and '/model/' in n for n, _ in want)
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(before, want))
    second.load(path)
    for (name, got), (_, expected) in zip(checkpoint_values(second), want):
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_checkpoint_of_another_size_is_refused(tmp_path):
    path = tmp_path / 'variables.npz'
    make_agent(make_config()).save(path)
    other = make_agent(make_config('--rssm.deter', '24'))
    with pytest.raises(agent_lib.CheckpointError) as info:
        other.load(path)
    assert "'deter': 16" in str(info.value) and "'deter': 24" in str(info.value)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    agent = make_agent()
    agent.train(make_batch(6))
    path = tmp_path / 'variables.npz'
    agent.save(path)
    good = path.read_bytes()
    agent.train(make_batch(7))  # the variables change, so a new save would differ

    def broken_savez(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(np, 'savez', broken_savez)
    with pytest.raises(OSError, match='disk full'):
        agent.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    fresh = make_agent()
    fresh.train(make_batch(6))
    fresh.load(path)
    saved = np.load(path)
    for i, (name, var) in enumerate(fresh.checkpoint_variables()):
        np.testing.assert_array_equal(var.numpy(), saved[f'v{i:05d}'], err_msg=name)


@pytest.mark.parametrize(
    'fast_layer,keras_layer,shape,kwargs',
    [
        # The decoder's first layer (1x1 input) and the encoder's last layer (tiny output).
        (
            nets.ConvTransposeFrom1x1,
            keras.layers.Conv2DTranspose,
            [7, 1, 1, 12],
            {'activation': 'elu'},
        ),
        (nets.PatchConv2D, keras.layers.Conv2D, [3, 6, 6, 5], {}),
        (nets.PatchConv2D, keras.layers.Conv2D, [3, 9, 9, 3], {}),
    ],
)
def test_fast_layers_equal_the_keras_layers(fast_layer, keras_layer, shape, kwargs):
    """The CPU-friendly layers have the same variables and outputs as the Keras ones."""
    x = tf.random.normal(shape, seed=1)
    fast, plain = fast_layer(5, 4, 2, **kwargs), keras_layer(5, 4, 2, **kwargs)
    fast(x), plain(x)
    assert [v.shape for v in fast.weights] == [v.shape for v in plain.weights]
    plain.kernel.assign(tf.random.normal(plain.kernel.shape, seed=2))
    plain.bias.assign(tf.random.normal(plain.bias.shape, seed=3))
    fast.kernel.assign(plain.kernel)
    fast.bias.assign(plain.bias)
    np.testing.assert_allclose(fast(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)


class FixedPolicy:
    """Stands in for the actor: the same head output whatever the input."""

    def __init__(self, kind, out, std=None):
        self.kind, self.out, self.std = kind, out, std

    def __call__(self, feat):
        return dists.make(self.kind, self.out, self.std, 0.1, 1)


def zero_critic(feat):
    return tfd.Deterministic(tf.zeros(tf.shape(feat)[:-1]))


def np_log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def actor_critic_with(policy, act_dim, *flags):
    config = make_config('--actor.dist', policy.kind, '--actor_ent', '0', *flags)
    ac = ActorCritic(config, act_dim, policy.kind == 'onehot', tf.Variable(0, dtype=tf.int64))
    ac.actor, ac.critic = policy, zero_critic
    return ac


@pytest.mark.parametrize('grad,mix,share', [('reinforce', '0', 1.0), ('both', '0.3', 0.7)])
def test_reinforce_differentiates_through_the_imagined_action(grad, mix, share):
    # As the original, log_prob(action) keeps the gradient of the reparameterized action
    # y = tanh(m + s * eps). Per dimension, log p(y) = log N(x; m, s) - log(1 - y^2) with
    # x = m + s * eps, so d/dm = 2y and d/ds = 2 y eps - 1/s; with the action's gradient
    # stopped they would be eps/s and (eps^2 - 1)/s.
    rng = np.random.default_rng(0)
    hor, n, dim = 4, 3, 2
    out = tf.Variable(rng.normal(0, 1, (hor, n, dim)).astype(np.float32))
    raw = tf.Variable(rng.normal(-1, 0.3, (hor, n, dim)).astype(np.float32))
    eps = rng.normal(size=(hor, n, dim)).astype(np.float32)
    adv = rng.normal(size=(hor - 1, n)).astype(np.float32)
    policy = FixedPolicy('tanh_normal', out, raw)
    ac = actor_critic_with(policy, dim, '--actor_grad', grad, '--actor_grad_mix', mix)
    with tf.GradientTape() as tape:
        mean, std = 5 * tf.tanh(out / 5), tf.nn.softplus(raw) + 0.1
        action = tf.tanh(mean + std * eps)  # the reparameterized sample of imagine()
        loss, mets = ac.actor_loss(tf.zeros([hor, n, 8]), action, adv, tf.ones([hor, n]))
    got_out, got_raw = [g.numpy() for g in tape.gradient(loss, [out, raw])]
    m, s = 5 * np.tanh(out.numpy() / 5), np.log1p(np.exp(raw.numpy())) + 0.1
    y = np.tanh(m + s * eps)
    scale = -share * adv[..., None] / ((hor - 1) * n)
    dm_dout, ds_draw = 1 - np.tanh(out.numpy() / 5) ** 2, 1 / (1 + np.exp(-raw.numpy()))
    want_out, want_raw = np.zeros_like(got_out), np.zeros_like(got_raw)
    want_out[:-1] = (scale * 2 * y[:-1]) * dm_dout[:-1]
    want_raw[:-1] = (scale * (2 * y * eps - 1 / s)[:-1]) * ds_draw[:-1]
    np.testing.assert_allclose(got_out, want_out, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_raw, want_raw, rtol=1e-4, atol=1e-6)
    stopped_out = (scale * (eps / s)[:-1]) * dm_dout[:-1]
    assert np.abs(got_out[:-1] - stopped_out).max() > 1e-2
    assert ('actor_grad_mix' in mets) == (grad == 'both')


def test_actor_entropy_metric_averages_all_imagined_steps():
    rng = np.random.default_rng(1)
    hor, n = 4, 3
    logits = rng.normal(size=(hor, n, 5)).astype(np.float32)
    logits[-1] *= 10  # a near-deterministic last step, far below the others' entropy
    ac = actor_critic_with(FixedPolicy('onehot', tf.constant(logits)), 5)
    action = dists.OneHotDist(tf.constant(logits), dtype=tf.float32).sample()
    _, mets = ac.actor_loss(
        tf.zeros([hor, n, 2]), action, tf.zeros([hor - 1, n]), tf.ones([hor, n])
    )
    logp = np_log_softmax(logits.astype(np.float64))
    ent = -(np.exp(logp) * logp).sum(-1)
    np.testing.assert_allclose(mets['actor_ent'], ent.mean(), rtol=1e-5)
    assert abs(ent.mean() - ent[:-1].mean()) > 0.1
