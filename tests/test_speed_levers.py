"""Speed levers change speed, not results.

- oneDNN kernels (on by default, see dreamer_core/__init__.py): the same losses and gradients as
  TensorFlow's plain kernels, to float32 round-off.
- bf16 (`--precision bf16`): within a stated tolerance of float32 over the first updates, and a
  short bf16 training run stays finite.
- The choice of numeric policy from the machine (GPU or not, native bf16 or not), which decides
  what precision 16 means where there is no GPU.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from dreamer_core import config as config_lib
from dreamer_core import hardware, registry
from dreamer_core.build import synthetic_batch
from dreamer_core.config import ConfigError
from tests import e2e, tiny

VARIANTS = list(registry.VARIANTS)


def probe(tmp_path, name, env):
    path = tmp_path / f'{name}.npz'
    result = subprocess.run(
        [sys.executable, '-m', 'tests.levers_probe', str(path), ','.join(VARIANTS)],
        cwd=e2e.REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, **env),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(path))


def test_onednn_kernels_give_the_plain_kernels_losses_and_gradients(tmp_path):
    plain = probe(tmp_path, 'plain', {'TF_ENABLE_ONEDNN_OPTS': '0'})
    onednn = probe(tmp_path, 'onednn', {'TF_ENABLE_ONEDNN_OPTS': '1'})
    assert plain.keys() == onednn.keys()
    for variant in VARIANTS:
        grads = [k for k in plain if k.startswith(f'{variant}/grad/')]
        assert len(grads) >= 10, variant
        assert f'{variant}/update1/actor_loss' in plain
    for key, want in plain.items():
        got = onednn[key]
        assert got.shape == want.shape, key
        # Summation order differs between the kernels: float32 round-off, relative to the
        # tensor's largest entry.
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale + 1e-7, err_msg=key)


def test_the_process_runs_with_onednn_unless_told_otherwise():
    code = (
        'import dreamer_core, tensorflow; '
        'from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())'
    )
    env = {k: v for k, v in os.environ.items() if k != 'TF_ENABLE_ONEDNN_OPTS'}
    runs = {
        flag: subprocess.run(
            [sys.executable, '-c', code],
            cwd=e2e.REPO,
            capture_output=True,
            text=True,
            env=dict(env, **({} if flag is None else {'TF_ENABLE_ONEDNN_OPTS': flag})),
        )
        for flag in (None, '0')
    }
    assert runs[None].stdout.strip() == 'True', runs[None].stderr
    assert runs['0'].stdout.strip() == 'False', runs['0'].stderr
    # TensorFlow's notice about oneDNN, printed while it loads, stays off stderr.
    assert 'oneDNN' not in runs[None].stderr


# World-model losses agree to a few percent; the actor's and critic's losses, which sit near 0,
# to 5% plus 0.02.
BF16_LOSSES = {
    'model_loss': (0.05, 0.0),
    'reward_loss': (0.05, 0.0),
    'image_loss': (0.05, 0.0),
    'swav_loss': (0.05, 0.0),
    'tpc_loss': (0.05, 0.0),
    'actor_loss': (0.05, 0.02),
    'critic_loss': (0.05, 0.02),
}


@pytest.mark.parametrize('variant', VARIANTS)
def test_bf16_stays_close_to_float32_over_the_first_updates(variant):
    flags = ['--dataset.batch', '3', '--dataset.length', '9', '--seed', '0', '--jit', 'False']
    runs = {}
    for precision in ('32', 'bf16'):
        agent, config = tiny.tiny_agent(variant, flags, precision=precision)
        batch = synthetic_batch(config, act_dim=6, seed=0)
        runs[precision] = [agent.train(batch) for _ in range(3)]
    assert config.precision == 'bf16'
    compared = 0
    for fp32, bf16 in zip(runs['32'], runs['bf16']):
        for key, (rtol, atol) in BF16_LOSSES.items():
            if key in fp32:
                want, got = float(fp32[key]), float(bf16[key])
                assert math.isfinite(got), key
                assert abs(got - want) <= rtol * abs(want) + atol, (key, want, got)
                compared += 1
    assert compared >= 3 * 4


def test_a_short_bf16_training_run_stays_finite(tmp_path):
    logdir = tmp_path / 'run'
    flags = ['--precision', 'bf16', '--steps', '160', '--eval_eps', '1']
    result = e2e.run_variant('DreamerPro', logdir, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    note = hardware.choose_precision('bf16', [], hardware.cpu_info()[1]).note
    assert note is None or note in result.stdout
    rows = [row for row in e2e.metrics(logdir) if 'model_loss' in row]
    assert rows, 'no training metrics were logged'
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float):
                assert math.isfinite(value), (key, value)
    assert (logdir / 'config.yaml').read_text().count('precision: bf16') == 1


def test_precision_bf16_is_a_config_value():
    variant = registry.get('dreamer')
    assert config_lib.load(['--precision', 'bf16'], variant.dir).precision == 'bf16'
    with pytest.raises(ConfigError, match='precision'):
        config_lib.load(['--precision', 'fp8'], variant.dir)


NO_BF16 = ['avx2', 'fma', 'avx512f']
AMX = ['avx2', 'fma', 'avx512f', 'amx_bf16', 'amx_tile']


@pytest.mark.parametrize(
    'precision, gpus, flags, policy, note',
    [
        (32, [], NO_BF16, 'float32', None),
        (32, [(8, 0)], AMX, 'float32', None),
        (16, [(7, 0)], NO_BF16, 'mixed_float16', None),
        (16, [], AMX, 'float32', '--precision bf16 uses it'),
        (16, [], ['avx512_bf16'], 'float32', '--precision bf16 uses it'),
        (16, [], NO_BF16, 'float32', 'as 32'),
        ('bf16', [(8, 6)], NO_BF16, 'mixed_bfloat16', None),
        ('bf16', [(7, 5)], NO_BF16, 'mixed_bfloat16', '--precision 16 is faster'),
        ('bf16', [], AMX, 'mixed_bfloat16', None),
        ('bf16', [], NO_BF16, 'mixed_bfloat16', '--precision 32 is faster'),
    ],
)
def test_precision_policy_follows_the_hardware(precision, gpus, flags, policy, note):
    choice = hardware.choose_precision(precision, gpus, flags)
    assert choice.policy == policy
    if note is None:
        assert choice.note is None
    else:
        assert note in choice.note and '\n' not in choice.note


def test_cpu_info_reads_model_and_flags(tmp_path):
    path = tmp_path / 'cpuinfo'
    path.write_text(
        'processor\t: 0\nmodel name\t: Example CPU 9000\n'
        'flags\t\t: fpu sse avx2 fma avx512f amx_bf16 amx_tile\n'
    )
    model, flags = hardware.cpu_info(path)
    assert model == 'Example CPU 9000'
    assert flags == ['avx2', 'fma', 'avx512f', 'amx_bf16', 'amx_tile']
    assert hardware.native_bf16(flags) and not hardware.native_bf16(['avx2', 'avx512f'])


def test_xla_compiles_the_same_deterministic_math():
    """`--xla True` compiles the update with XLA. XLA draws its own random numbers, so whole
    updates differ in their samples; the deterministic path (encoder, RSSM posterior means,
    decoder likelihood and their gradients) must agree."""
    import tensorflow as tf

    agent, config = tiny.tiny_agent('dreamer', ['--dataset.batch', '3', '--dataset.length', '9'])
    wm = agent.wm
    data = wm.preprocess({k: tf.constant(v) for k, v in synthetic_batch(config).items()})
    agent.train({k: tf.constant(v) for k, v in synthetic_batch(config).items()})
    variables = [*wm.encoder.trainable_variables, *wm.heads['image'].trainable_variables]
    stoch = config.rssm.stoch * (config.rssm.discrete or 1)

    def loss_and_grads(image):
        with tf.GradientTape() as tape:
            embed = wm.encoder({'image': image})
            feat = tf.tile(embed[..., :1], [1, 1, stoch + config.rssm.deter])
            loss = -tf.reduce_mean(wm.heads['image'](feat).log_prob(image))
        return loss, tape.gradient(loss, variables)

    plain = tf.function(loss_and_grads)(data['image'])
    xla = tf.function(loss_and_grads, jit_compile=True)(data['image'])
    np.testing.assert_allclose(xla[0].numpy(), plain[0].numpy(), rtol=1e-5)
    for got, want in zip(xla[1], plain[1]):
        scale = float(np.max(np.abs(want.numpy())))
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-4 * scale + 1e-7)


@pytest.mark.parametrize(
    'xla, gpus, compiled',
    [('auto', [], False), ('auto', [(8, 0)], True), (True, [], True), (False, [(9, 0)], False)],
)
def test_xla_auto_is_on_with_a_gpu_only(xla, gpus, compiled):
    assert hardware.use_xla(xla, gpus) is compiled


def test_xla_is_auto_true_or_false_in_the_config():
    variant = registry.get('dreamer')
    assert config_lib.load([], variant.dir).xla is False  # as the original
    assert config_lib.load(['--xla', 'auto'], variant.dir).xla == 'auto'
    assert config_lib.load(['--xla', 'True'], variant.dir).xla is True
    assert config_lib.load(['--xla', 'false'], variant.dir).xla is False
    with pytest.raises(ConfigError, match='xla'):
        config_lib.load(['--xla', 'maybe'], variant.dir)


def test_the_default_update_is_not_xla_compiled_without_a_gpu():
    agent, config = tiny.tiny_agent('dreamer')
    assert config.xla is False and agent._train._jit_compile is None
