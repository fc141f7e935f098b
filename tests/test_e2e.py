"""End to end: each variant's real train.py on a tiny config, then resumed in the same logdir."""

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from dreamer_core import config as config_lib
from dreamer_core import provenance
from dreamer_core.replay import load_episode
from tests.e2e import metrics, run_variant


def load_events(logdir):
    acc = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={'images': 0, 'tensors': 0, 'scalars': 0}
    )
    acc.Reload()
    return acc


@pytest.mark.parametrize(
    'variant,task,configs',
    [
        ('Dreamer', 'dmc_walker_walk', ('defaults', 'dmc')),
        ('DreamerPro', 'dmc_cup_catch', ('defaults', 'dmc', 'norm_off')),
        ('TPC', 'dmc_cartpole_swingup', ('defaults', 'dmc')),
    ],
)
def test_train_and_resume(tmp_path, variant, task, configs):
    logdir = tmp_path / 'run'
    first = run_variant(variant, logdir, '--task', task, configs=configs)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert 'Prefill dataset (40 steps, 80 frames)' in first.stdout
    assert (logdir / 'variables.npz').exists()
    run_info = config_lib.load_run_info(logdir)  # what ran: --precision 32 --jit False
    assert run_info['precision_policy'] == 'float32' and run_info['xla'] is False
    assert run_info['versions']['tensorflow'] == provenance.versions()['tensorflow']
    train_files = sorted((logdir / 'train_replay').glob('*.npz'))
    eval_files = sorted((logdir / 'eval_replay').glob('*.npz'))
    # 240 frames of 40-frame episodes: 6 training episodes; 1 random + 3 evaluations of 2 each
    # (at 80, 160 and the final one at 240).
    assert len(train_files) == 6 and len(eval_files) == 7
    for path in train_files + eval_files:
        episode = load_episode(path)
        assert episode['image'].shape == (21, 64, 64, 3) and episode['image'].dtype == np.uint8
        assert path.name.endswith('-20.npz')
        assert episode['reset'][0] and not episode['reset'][1:].any()
    rows = metrics(logdir)
    evals = [row for row in rows if 'eval_return' in row]
    assert [row['step'] for row in evals] == [80, 160, 240]
    assert all(np.isfinite(row['eval_return']) for row in evals)
    losses = [row for row in rows if 'model_loss' in row]
    assert losses and all(np.isfinite(row['model_loss']) for row in losses)
    events = load_events(logdir)
    tags = events.Tags()
    assert {'eval_return', 'train_return', 'model_loss'} <= set(tags['tensors'])
    assert 'train_policy' in tags['images'] and 'eval_policy' in tags['images']
    if variant == 'Dreamer':
        assert 'train/openl' in tags['images']
    first_steps = [row['step'] for row in rows]
    # The replays' memory: the training replay holds the vector arrays of its episodes, the
    # evaluation replay (capacity time_limit, 40 steps here) at most its two latest episodes.
    vectors = sum(
        value.nbytes
        for path in train_files
        for key, value in load_episode(path).items()
        if key != 'image'
    )
    eval_episode = sum(value.nbytes for value in load_episode(eval_files[-1]).values())
    held = [row['memory_replay_mb'] for row in rows if 'memory_replay_mb' in row][-1] * 2**20
    assert 2 * eval_episode <= held + 1 <= vectors + 2 * eval_episode + 1
    resident = [row['memory_resident_mb'] for row in rows if 'memory_resident_mb' in row]
    assert resident and all(100 < mb < 20_000 for mb in resident)
    # Replay files as every earlier version wrote them (compressed) are converted on resume.
    for path in train_files:
        np.savez_compressed(path, **load_episode(path))

    second = run_variant(variant, logdir, '--task', task, '--steps', '320', configs=configs)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert 'Prefill' not in second.stdout
    assert 'Pretrain' not in second.stdout
    assert 'Resumed agent' in second.stdout and 'at frame 240' in second.stdout
    assert 'Converted 6 replay files' in second.stdout
    rows = metrics(logdir)
    new_steps = [row['step'] for row in rows[len(first_steps) :]]
    assert new_steps and min(new_steps) >= 240 and max(new_steps) >= 280
    assert len(list((logdir / 'train_replay').glob('*.npz'))) == 8
