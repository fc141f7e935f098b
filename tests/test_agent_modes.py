"""The agent under each exploration behaviour, under mixed precision, and in each variant."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from dreamer_core import hardware
from dreamer_core.build import synthetic_batch
from dreamer_core.registry import VARIANTS
from tests import tiny

TINY = [
    *'--expl_head.units 16 --expl_head.layers 1 --disag_models 3'.split(),
    *'--dataset.batch 3 --dataset.length 6'.split(),
]
ACT = 6
tfd = tfp.distributions


def tiny_agent(variant, *flags):
    return tiny.tiny_agent(variant, TINY + list(flags), ACT, blocks=['debug'])


def policy_obs(batch=2, reset=True):
    rng = np.random.default_rng(0)
    return {
        'image': rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8),
        'reset': np.full(batch, reset),
    }


@pytest.mark.parametrize('behavior', ['random', 'plan2explore', 'model_loss'])
def test_exploration_behaviours_train_and_act(behavior):
    agent, config = tiny_agent('Dreamer', '--expl_behavior', behavior, '--expl_until', '100')
    mets = agent.train(synthetic_batch(config, ACT))
    assert all(np.isfinite(v) for v in mets.values())
    if behavior != 'random':
        assert 'expl_expl_loss' in mets and 'expl_actor_loss' in mets
    # Before expl_until the train-mode policy acts with the exploration actor.
    agent.step.assign(0)
    out, state = agent.policy(policy_obs(), mode='train')
    assert out['action'].shape == (2, ACT) and np.all(np.abs(out['action']) <= 1)
    if behavior == 'random':
        # A uniform policy ignores the latent: two calls from the same state differ.
        again, _ = agent.policy(policy_obs(), mode='train')
        assert not np.allclose(out['action'], again['action'])


def test_reset_observation_clears_the_carried_state():
    agent, config = tiny_agent('Dreamer')
    agent.train(synthetic_batch(config, ACT))
    _, fresh = agent.policy(policy_obs(), mode='eval')
    _, state = agent.policy(policy_obs(reset=False), fresh, mode='eval')
    # The deterministic state after a step from the zero state does not depend on sampling.
    _, after_reset = agent.policy(policy_obs(reset=True), state, mode='eval')
    _, continued = agent.policy(policy_obs(reset=False), state, mode='eval')
    deter = lambda s: s[0]['deter'].numpy()
    assert np.allclose(deter(after_reset), deter(fresh), atol=1e-6)
    assert not np.allclose(deter(continued), deter(fresh), atol=1e-3)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_mixed_precision_update_is_finite(variant, monkeypatch):
    """Mixed float16 (the GPU path) runs every variant's update with finite float32 losses."""
    # Precision 16 as on a GPU: the run's own set-up picks mixed float16 with loss scaling.
    choose = hardware.choose_precision
    gpu = lambda precision, gpus, flags: choose(precision, [(8, 0)], flags)
    monkeypatch.setattr(hardware, 'choose_precision', gpu)
    try:
        flags = [*TINY, '--rssm.discrete', '0']
        agent, config = tiny.tiny_agent(variant, flags, ACT, blocks=['debug'], precision='16')
        assert keras.mixed_precision.global_policy().name == 'mixed_float16'
        assert agent.wm.model_opt._mixed
        mets = agent.train(synthetic_batch(config, ACT))
        assert mets['model_skipped'] in (0.0, 1.0)
        assert np.isfinite(mets['model_loss']) and mets['model_loss_scale'] > 0
        out, _ = agent.policy(policy_obs(), mode='train')
        assert out['action'].dtype == np.float32 and np.all(np.isfinite(out['action']))
    finally:
        keras.mixed_precision.set_global_policy('float32')


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_mixed_float16_under_xla_is_finite_on_a_gpu(variant, monkeypatch):
    """What a GPU runs with precision 16 and --xla auto: mixed float16 with loss scaling in an
    update compiled by XLA, simulated here by reporting a GPU to the set-up. Each variant:
    their updates hold different ops, and XLA has no kernel for some TensorFlow ops."""
    monkeypatch.setattr(hardware, 'gpu_capabilities', lambda tf: [(8, 0)])
    try:
        flags = [*TINY, '--rssm.discrete', '0']
        flags += ['--xla', 'auto']
        agent, config = tiny.tiny_agent(variant, flags, ACT, precision='16')
        assert config.xla == 'auto' and agent._train._jit_compile is True
        assert keras.mixed_precision.global_policy().name == 'mixed_float16'
        mets = agent.train(synthetic_batch(config, ACT))
        assert np.isfinite(mets['model_loss']) and mets['model_loss_scale'] > 0
        assert np.isfinite(mets['actor_loss']) and np.isfinite(mets['critic_loss'])
    finally:
        keras.mixed_precision.set_global_policy('float32')


def test_checkpoint_includes_the_exploration_optimizers(tmp_path):
    agent, config = tiny_agent('Dreamer', '--expl_behavior', 'plan2explore')
    data = synthetic_batch(config, ACT)
    agent.train(data)
    names = [name for name, _ in agent.checkpoint_variables()]
    assert any('/expl/' in name for name in names if name.startswith('optimizer'))
    assert len(names) == len(set(names))
    agent.save(tmp_path / 'variables.npz')
    fresh, _ = tiny_agent('Dreamer', '--expl_behavior', 'plan2explore', '--seed', '1')
    fresh.train(data)
    fresh.load(tmp_path / 'variables.npz')
    for (name, a), (_, b) in zip(agent.checkpoint_variables(), fresh.checkpoint_variables()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


class ConstantActor:
    """Stands in for the exploration behaviour: every action is 0.5, so its use is visible."""

    def actor(self, feat):
        return tfd.Deterministic(tf.fill([tf.shape(feat)[0], ACT], 0.5))


@pytest.mark.parametrize(
    'expl_until,step,explores',
    [('0', 0, True), ('0', 10**6, True), ('100', 0, True), ('100', 10**6, False)],
)
def test_expl_until_zero_explores_for_the_whole_run(expl_until, step, explores):
    # The original's Until(0) is always true: 0 means "no end", not "never".
    flags = ['--expl_behavior', 'random', '--expl_until', expl_until, '--expl_noise', '0']
    agent, _ = tiny_agent('Dreamer', *flags)
    agent._expl_behavior = ConstantActor()
    agent.step.assign(step)
    out, _ = agent.policy(policy_obs(), mode='train')
    assert np.all(out['action'] == 0.5) == explores


def test_plan2explore_disagreement_uses_the_predicted_means():
    # With a binary expl_head the mean (a probability) and the mode (0 or 1) differ; the
    # original's disagreement is the ensemble std of the means, averaged over the target.
    flags = '--expl_behavior plan2explore --expl_head.dist binary --disag_log False'.split()
    agent, config = tiny_agent('Dreamer', *flags)
    behavior = agent._expl_behavior
    rng = np.random.default_rng(3)
    feat = tf.constant(rng.normal(size=(5, 4, 16 + 4)).astype(np.float32))
    action = tf.constant(rng.uniform(-1, 1, (5, 4, ACT)).astype(np.float32))
    reward = behavior._reward(feat, None, action).numpy()
    inputs = tf.concat([feat, action], -1)
    logits = np.stack([head(inputs).distribution.logits.numpy() for head in behavior._networks])
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(reward, probs.std(0).mean(-1), rtol=1e-4)
