"""A fourth variant, written with the public contract only, trains through the same entry point.

It lives in a temporary folder: a loss module (a small latent-prediction loss), a config block
with its own loss scale and setting, and a train.py that registers it at run time. Nothing in
dreamer_core changes for it.
"""

import json
import subprocess
import sys
import textwrap

from tests.e2e import REPO, TINY

LOSS = '''
import tensorflow as tf
import tf_keras as keras

from dreamer_core.config import ConfigError
from dreamer_core.variant import RepresentationLoss


class LatentLoss(RepresentationLoss):
    """The posterior feature at t predicts the (stopped) image embedding at t + 1."""

    terms = ('latent',)

    def __init__(self, config, obs_shape):
        super().__init__(config, obs_shape, name='latent_loss')
        if config.latent.units < 1:
            raise ConfigError(f'latent.units is {config.latent.units}: use 1 or more.')
        self.hidden = keras.layers.Dense(config.latent.units, activation='elu')
        self.out = None

    def __call__(self, data, embed, post, prior, feat):
        target = tf.stop_gradient(tf.cast(embed[:, 1:], tf.float32))
        if self.out is None:
            self.out = keras.layers.Dense(target.shape[-1])
        pred = self.out(self.hidden(tf.cast(feat[:, :-1], tf.float32)))
        loss = tf.reduce_mean(tf.square(pred - target))
        return {'latent': loss}, {'latent_target_std': tf.math.reduce_std(target)}
'''

CONFIGS = '''
defaults:
  grad_heads: [reward, discount]
  loss_scales: {latent: 1.0, kl: 1.0, reward: 1.0, discount: 1.0}
  latent: {units: 32}
dmc:
  grad_heads: [reward]
'''

ENTRY = '''
import pathlib
import sys

sys.path.insert(0, {repo!r})

from dreamer_core import checks, registry, train

HERE = pathlib.Path(__file__).resolve().parent
registry.register(
    registry.Variant(
        'latent',
        str(HERE.parent),
        'latent_loss:LatentLoss',
        'latent',
        'Latent',
        rules=(('latent.units', checks.Number(int, 1)),),
    )
)

if __name__ == '__main__':
    sys.exit(train.main(sys.argv[1:], 'latent'))
'''


def write_variant(root):
    folder = root / 'Latent' / 'dreamerv2'
    folder.mkdir(parents=True)
    (folder / 'latent_loss.py').write_text(textwrap.dedent(LOSS))
    (folder / 'configs.yaml').write_text(textwrap.dedent(CONFIGS))
    (folder / 'train.py').write_text(textwrap.dedent(ENTRY).format(repo=str(REPO)))
    return folder.parent


def test_fourth_variant_trains_end_to_end_through_the_entry_point(tmp_path):
    root = write_variant(tmp_path / 'variants')
    logdir = tmp_path / 'log'
    cmd = [sys.executable, 'dreamerv2/train.py', '--logdir', str(logdir)]
    cmd += ['--configs', 'defaults', 'dmc', *TINY, '--latent.units', '8']
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]
    latent = [row['latent_loss'] for row in rows if 'latent_loss' in row]
    assert latent and all(value > 0 for value in latent)
    assert any('model_kl' in row for row in rows)  # uses_kl defaults to on
    assert rows[-1]['step'] == 240 and 'eval_return' in rows[-1]
    assert (logdir / 'config.yaml').read_text().startswith('variant: latent\n')
    assert (logdir / 'variables.npz').exists()


def test_fourth_variant_config_error_is_one_line(tmp_path):
    root = write_variant(tmp_path / 'variants')
    cmd = [sys.executable, 'dreamerv2/train.py', '--logdir', str(tmp_path / 'log')]
    cmd += ['--configs', 'defaults', 'dmc', *TINY, '--latent.units', '0']
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: latent.units is 0 (out of range)')
    assert not (tmp_path / 'log').exists()  # refused before anything is written
