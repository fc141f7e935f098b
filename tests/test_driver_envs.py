"""The Driver and the env wrappers on a fake env, task validation, and one real DMC check."""

import numpy as np
import pytest

from dreamer_core import driver as driver_lib
from dreamer_core import envs
from tests.fakes import FakeEnv

KEYS = {'image', 'reward', 'discount', 'reset', 'done', 'action'}


class ScriptedPolicy:
    """Random actions; records every batch and state it is given and every action it returns."""

    def __init__(self, act_dim=2, seed=0):
        self._act_dim = act_dim
        self._rng = np.random.default_rng(seed)
        self.batches, self.states, self.actions = [], [], []

    def __call__(self, obs, state):
        self.batches.append({k: np.array(v) for k, v in obs.items()})
        self.states.append(state)
        action = self._rng.uniform(-1, 1, (len(obs['reset']), self._act_dim)).astype(np.float32)
        self.actions.append(action)
        return {'action': action}, (0 if state is None else state + 1)


class Recorder:
    """on_step and on_episode callbacks that keep what they were given."""

    def __init__(self, driver):
        self.steps, self.episodes = [], []
        driver.on_step(lambda transition, index: self.steps.append((transition, index)))
        driver.on_episode(self.episodes.append)


def test_episode_rows_single_env():
    env = FakeEnv(length=7, act_dim=2, seed=1)
    driver = driver_lib.Driver([env])
    record = Recorder(driver)
    policy = ScriptedPolicy()
    driver(policy, episodes=1)
    assert len(record.steps) == 7 and [i for _, i in record.steps] == [0] * 7
    assert len(record.episodes) == 1
    episode = record.episodes[0]
    assert set(episode) == KEYS
    assert all(len(value) == 8 for value in episode.values())
    assert episode['image'].shape == (8, 64, 64, 3) and episode['image'].dtype == np.uint8
    assert episode['reset'].tolist() == [True] + [False] * 7
    assert episode['done'].tolist() == [False] * 7 + [True]
    np.testing.assert_array_equal(episode['action'][0], np.zeros(2, np.float32))
    assert episode['reward'][0] == 0 and episode['discount'][0] == 1
    returned = np.stack([a[0] for a in policy.actions])
    np.testing.assert_array_equal(episode['action'][1:], returned)
    np.testing.assert_array_equal(np.stack(env.actions), returned)
    want_reward = returned.sum(-1) + 0.1 * np.arange(1, 8)
    np.testing.assert_allclose(episode['reward'][1:], want_reward, rtol=1e-6)
    assert episode['reward'].dtype == np.float32 and episode['action'].dtype == np.float32
    # The policy saw each row's observation before acting on it.
    np.testing.assert_array_equal(
        np.stack([b['image'][0] for b in policy.batches]), episode['image'][:7]
    )
    for (transition, _), row in zip(record.steps, range(1, 8)):
        np.testing.assert_array_equal(transition['image'], episode['image'][row])
        np.testing.assert_array_equal(transition['action'], episode['action'][row])


def test_steps_stop_and_episode_continues_across_calls():
    env = FakeEnv(length=7, seed=2)
    driver = driver_lib.Driver([env])
    record = Recorder(driver)
    policy = ScriptedPolicy()
    driver(policy, steps=5)
    assert len(record.steps) == 5 and not record.episodes
    driver(policy, steps=4)
    assert len(record.steps) == 9 and len(record.episodes) == 1 and env.resets == 2
    episode = record.episodes[0]
    assert len(episode['action']) == 8
    np.testing.assert_array_equal(
        episode['action'][1:], np.stack([a[0] for a in policy.actions[:7]])
    )


def test_episodes_stop_condition():
    env = FakeEnv(length=3, seed=3)
    driver = driver_lib.Driver([env])
    record = Recorder(driver)
    driver(ScriptedPolicy(), episodes=2)
    assert len(record.episodes) == 2 and len(record.steps) == 6 and env.resets == 2
    assert [len(ep['reward']) for ep in record.episodes] == [4, 4]
    assert not np.array_equal(record.episodes[0]['image'], record.episodes[1]['image'])


def test_two_envs_at_once():
    short, long = FakeEnv(length=3, seed=4), FakeEnv(length=5, seed=5)
    driver = driver_lib.Driver([short, long])
    record = Recorder(driver)
    policy = ScriptedPolicy()
    driver(policy, episodes=2)
    # Both envs step in every round; the short one finishes (round 3) and restarts, the long one
    # finishes in round 5, the second episode.
    assert len(policy.actions) == 5 and all(a.shape == (2, 2) for a in policy.actions)
    assert [i for _, i in record.steps] == [0, 1] * 5
    assert [len(ep['reward']) for ep in record.episodes] == [4, 6]
    returned = np.stack(policy.actions)  # [round, env, act]
    np.testing.assert_array_equal(record.episodes[0]['action'][1:], returned[:3, 0])
    np.testing.assert_array_equal(record.episodes[1]['action'][1:], returned[:, 1])
    np.testing.assert_array_equal(np.stack(short.actions), returned[:, 0])
    assert [b['reset'].tolist() for b in policy.batches] == [
        [True, True],
        [False, False],
        [False, False],
        [True, False],
        [False, False],
    ]


def test_policy_state_is_passed_back():
    driver = driver_lib.Driver([FakeEnv(length=4, seed=6)])
    policy = ScriptedPolicy()
    driver(policy, steps=6)
    assert policy.states == [None, 0, 1, 2, 3, 4]
    driver(policy, steps=1)
    assert policy.states[-1] == 5
    driver.reset()
    driver(policy, steps=1)
    assert policy.states[-1] is None


def test_time_limit_cuts_without_changing_discount():
    env = envs.TimeLimit(FakeEnv(length=7, seed=7), 3)
    env.reset()
    steps = [env.step(np.zeros(2)) for _ in range(3)]
    assert [s['done'] for s in steps] == [False, False, True]
    assert [float(s['discount']) for s in steps] == [1.0, 1.0, 1.0]
    with pytest.raises(AssertionError, match='Reset'):
        env.step(np.zeros(2))
    env.reset()
    assert not env.step(np.zeros(2))['done']  # the counter restarts with the episode


def test_time_limit_keeps_a_natural_end():
    env = envs.TimeLimit(FakeEnv(length=2, seed=8, terminal=True), 5)
    env.reset()
    steps = [env.step(np.zeros(2)) for _ in range(2)]
    assert [s['done'] for s in steps] == [False, True]
    assert float(steps[-1]['discount']) == 0.0
    unlimited = envs.TimeLimit(FakeEnv(length=6, seed=9), 0)
    unlimited.reset()
    assert [unlimited.step(np.zeros(2))['done'] for _ in range(6)] == [False] * 5 + [True]


def test_normalize_action_maps_to_bounds():
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 10.0])
    fake = FakeEnv(length=50, seed=10, low=low, high=high)
    env = envs.NormalizeAction(fake)
    assert env.act_space.low == -1.0 and env.act_space.high == 1.0 and env.act_space.shape == (2,)
    env.reset()
    actions = [[-1, 1], [0, 0], [0.5, -0.5], [3, -3]]
    for action in actions:
        env.step(np.array(action, np.float32))
    want = [[-2, 10], [0, 5], [1, 2.5], [2, 0]]  # the last one clipped to the bounds first
    np.testing.assert_allclose(np.stack(fake.actions), want, rtol=1e-6)
    rng = np.random.default_rng(0)
    random = rng.uniform(-1, 1, (10, 2)).astype(np.float32)
    for action in random:
        env.step(action)
    np.testing.assert_allclose(
        np.stack(fake.actions[4:]), low + (random + 1) / 2 * (high - low), rtol=1e-5
    )


@pytest.mark.parametrize(
    'task', ['dmc_walker_walk', 'nat_cheetah_run', 'dmc_cup_catch', 'dmc_cheetah_run_sparse']
)
def test_validate_task_accepts(task):
    envs.validate_task(task)


def test_validate_task_suggests_close_match():
    with pytest.raises(envs.TaskError, match='dmc_walker_walk'):
        envs.validate_task('dmc_walker_wlak')


def test_validate_task_names_the_suites():
    with pytest.raises(envs.TaskError) as info:
        envs.validate_task('foo_bar')
    message = str(info.value)
    assert 'foo_bar' in message
    assert all(suite in message for suite in ('dmc_', 'nat_', 'atari_'))


@pytest.fixture
def closing():
    """Collects envs and closes them at the end of the test, also when it fails."""
    opened = []
    yield opened.append
    for env in opened:
        env.close()


def test_dmc_cup_catch_images(closing):
    env = envs.DMC('cup_catch', action_repeat=2, size=(64, 64))
    closing(env)
    assert type(env._env.task).__module__.endswith('ball_in_cup')
    assert env.obs_shape == (64, 64, 3)
    obs = env.reset()
    assert obs['reset'] and not obs['done'] and obs['reward'] == 0
    images = [obs['image']]
    for _ in range(3):
        obs = env.step(np.zeros(env.act_space.shape))
        assert not obs['reset']
        images.append(obs['image'])
    for image in images:
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert all(not np.array_equal(a, b) for a, b in zip(images[:-1], images[1:]))  # the ball falls


def test_dmc_quadruped_uses_camera_two(closing):
    quadruped = envs.DMC('quadruped_walk', size=(64, 64))
    walker = envs.DMC('walker_walk', size=(64, 64))
    closing(quadruped)
    closing(walker)
    assert quadruped._camera == 2 and walker._camera == 0
    quadruped.reset()
    front = quadruped._env.physics.render(64, 64, camera_id=0)
    np.testing.assert_array_equal(
        quadruped.render(), quadruped._env.physics.render(64, 64, camera_id=2)
    )
    assert not np.array_equal(quadruped.render(), front)


def test_dmc_sparse_rewards_threshold_dense(closing):
    dense = envs.DMC('walker_run', action_repeat=1, size=(64, 64), seed=3)
    sparse = envs.DMC('walker_run_sparse', action_repeat=1, size=(64, 64), seed=3)
    closing(dense)
    closing(sparse)
    dense.reset()
    sparse.reset()
    np.testing.assert_array_equal(dense._env.physics.data.qpos, sparse._env.physics.data.qpos)
    rng = np.random.default_rng(0)
    dense_rewards, sparse_rewards = [], []
    for i in range(16):
        # Random actions never make the walker fast enough to earn 0.25 per frame, so both envs
        # get the same growing forward speed; the rewards then cross the threshold.
        for env in (dense, sparse):
            env._env.physics.named.data.qvel['rootx'] = 0.4 * i
        action = rng.uniform(-1, 1, dense.act_space.shape)
        dense_rewards.append(dense.step(action)['reward'])
        sparse_rewards.append(sparse.step(action)['reward'])
    dense_rewards, sparse_rewards = np.array(dense_rewards), np.array(sparse_rewards)
    above = dense_rewards >= envs.SPARSE_THRESHOLD
    assert 3 <= above.sum() <= 13 and np.all(dense_rewards[~above] > 0)  # both sides are covered
    assert np.all((sparse_rewards == 0) | (sparse_rewards >= 0.25))
    np.testing.assert_array_equal(sparse_rewards[above], dense_rewards[above])
    np.testing.assert_array_equal(sparse_rewards[~above], 0)
