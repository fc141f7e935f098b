"""Atari (optional suite): the env protocol, preprocessing and a discrete-action agent update."""

import numpy as np
import pytest

from dreamer_core import envs
from dreamer_core.build import synthetic_batch
from tests import tiny

pytest.importorskip('ale_py')


def test_pong_env_protocol_and_preprocessing():
    env = envs.Atari('pong', action_repeat=4, size=(64, 64), grayscale=True, seed=0)
    obs = env.reset()
    assert obs['reset'] and not obs['done'] and obs['reward'] == 0
    assert obs['image'].shape == (64, 64, 1) and obs['image'].dtype == np.uint8
    assert env.act_space.discrete and env.act_space.shape == (18,)  # the full action space
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(40):
        obs = env.step(np.eye(18)[rng.integers(18)])
        frames.append(obs['image'])
    assert not obs['reset'] and obs['discount'] in (0.0, 1.0)
    assert len({f.tobytes() for f in frames}) > 1  # the screen changes


def test_action_repeat_max_pools_the_last_two_frames():
    env = envs.Atari('pong', action_repeat=4, size=(64, 64), grayscale=True, seed=0, sticky=0.0)
    env.reset()
    screens = []
    original = env._screen
    env._screen = lambda: screens.append(original()) or screens[-1]
    env.step(np.eye(18)[0])
    assert len(screens) == 4
    assert np.array_equal(env._last, np.maximum(screens[-2], screens[-1]))


def test_unknown_game_names_close_matches():
    with pytest.raises(envs.TaskError, match='atari_pong'):
        envs.validate_task('atari_pnog')


def test_discrete_agent_update_and_policy():
    flags = '--rssm.discrete 4 --discount_head.units 16 --dataset.batch 2 --dataset.length 5'
    agent, config = tiny.tiny_agent(
        'dreamer', flags.split(), 18, ['debug'], (64, 64, 1), True, base=['defaults', 'atari']
    )
    assert config.actor.dist == 'onehot' and config.grayscale
    data = synthetic_batch(config, act_dim=18)
    data['image'] = data['image'][..., :1]
    data['action'] = np.eye(18, dtype=np.float32)[
        np.random.default_rng(0).integers(18, size=(2, 5))
    ]
    mets = agent.train(data)
    assert np.isfinite(mets['model_loss']) and 'discount_loss' in mets  # pred_discount in atari
    obs = {'image': data['image'][:, 0], 'reset': np.ones(2, bool)}
    out, _ = agent.policy(obs, mode='train')
    assert out['action'].shape == (2, 18)
    assert np.allclose(out['action'].sum(-1), 1) and set(np.unique(out['action'])) <= {0.0, 1.0}
