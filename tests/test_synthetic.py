"""The synthetic pixel task of the soak benchmark, `synth_shapes`."""

import numpy as np
import pytest

from dreamer_core import build, envs
from dreamer_core.synthetic import Shapes


def make(seed=0, task='synth_shapes'):
    config = build.load_config('dreamer', ['--configs', 'defaults', 'dmc', '--task', task])
    return envs.make_env(config, 'train', '.', seed=seed)


def rollout(env, actions):
    obs = [env.reset()]
    for action in actions:
        obs.append(env.step(action))
    return obs


def test_a_dmc_shaped_task_with_1000_frame_episodes():
    env = make()
    assert env.obs_shape == (64, 64, 3) and env.act_space.shape == (2,)
    obs = rollout(env, np.zeros((500, 2), np.float32))
    assert obs[0]['reset'] and not any(o['done'] for o in obs[:-1]) and obs[-1]['done']
    assert all(o['image'].shape == (64, 64, 3) and o['image'].dtype == np.uint8 for o in obs)
    rewards = np.array([o['reward'] for o in obs[1:]])
    assert ((0 <= rewards) & (rewards <= 2)).all()  # two frames per step, each in [0, 1]
    assert len({o['image'].tobytes() for o in obs}) > 100  # the distractors move


def test_the_same_seed_gives_the_same_episode_and_another_seed_another():
    actions = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    first, again, other = (rollout(make(seed), actions) for seed in (1, 1, 2))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a['image'], b['image'])
        assert a['reward'] == b['reward']
    assert any((a['image'] != b['image']).any() for a, b in zip(first, other))


def test_moving_toward_the_target_earns_more_than_moving_away():
    direction = lambda state: np.clip(10 * (state['target'] - state['agent']), -1, 1)
    toward, away = Shapes(action_repeat=2, seed=3), Shapes(action_repeat=2, seed=3)
    toward.reset(), away.reset()
    near = [toward.step(direction(toward._state))['reward'] for _ in range(40)]
    far = [away.step(-direction(away._state))['reward'] for _ in range(40)]
    assert sum(near) > sum(far)
    assert near[-1] > 1.9  # at the target, each of the two frames earns nearly 1


def test_an_unknown_synthetic_task_names_the_known_ones():
    with pytest.raises(envs.TaskError, match="Unknown task 'synth_circles'.*synth_shapes"):
        envs.validate_task('synth_circles')
