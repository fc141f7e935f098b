"""Saving and restoring env and driver states: a restored env (or driver) built with another seed
continues exactly like the one that saved the state, through an episode end and the next reset.

Envs are built by make_env, with the wrappers training uses (NormalizeAction, TimeLimit).
"""

import pickle

import numpy as np
import pytest

from dreamer_core import build, envs
from dreamer_core.driver import Driver
from tests import fixtures_video as fx

SEED, OTHER = 1, 7
KEYS = ('image', 'reward', 'discount', 'reset', 'done')


def make(opened, task, seed, blocks=('dmc',), time_limit=24, flags=()):
    argv = ['--configs', 'defaults', *blocks, '--task', task, '--time_limit', str(time_limit)]
    config = build.load_config('dreamer', argv + list(flags))
    env = envs.make_env(config, 'train', '.', seed=seed)
    opened.append(env)
    return env


def random_actions(env, count, seed):
    rng = np.random.default_rng(seed)
    if env.act_space.discrete:
        return np.eye(env.act_space.shape[0], dtype=np.float32)[rng.integers(18, size=count)]
    return rng.uniform(-1, 1, (count, *env.act_space.shape)).astype(np.float32)


def run_on(env, actions):
    """Step `actions` through the episode end and the reset after it (then two more steps);
    returns the observations and the states at the episode end and at the last step."""
    obs, actions = [], list(actions)
    while not (obs and obs[-1]['done']):
        obs.append(env.step(actions.pop(0)))
    states = [env.get_state()]
    obs.append(env.reset())
    obs += [env.step(action) for action in actions[:2]]
    return obs, states + [env.get_state()]


def assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        for key in KEYS:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def same_state(first, second):
    """Whether nested dicts, lists and tuples of arrays, numbers, strings, bytes are equal."""
    if isinstance(first, dict):
        return sorted(first) == sorted(second) and all(
            same_state(first[key], second[key]) for key in first
        )
    if isinstance(first, (list, tuple)):
        return len(first) == len(second) and all(map(same_state, first, second))
    return np.array_equal(first, second)


def check_restore(saver, loader, steps=5, after=20, distinct_resets=True):
    """`saver` steps `steps` actions and saves; `loader` (another seed) already ran an episode
    start of its own, loads, and both continue alike, down to their saved states."""
    actions = random_actions(saver, steps + after, seed=0)
    first = saver.reset()
    for action in actions[:steps]:
        saver.step(action)
    other = loader.reset()
    if distinct_resets:  # the seeds differ (Pong starts on the same screen whatever the seed)
        assert not np.array_equal(first['image'], other['image'])
    for action in random_actions(loader, 2, seed=1):
        loader.step(action)
    state = saver.get_state()
    assert not same_state(state, loader.get_state())
    loader.set_state(pickle.loads(pickle.dumps(state, protocol=5)))
    continued, saver_states = run_on(saver, actions[steps:])
    restored, loader_states = run_on(loader, actions[steps:])
    assert sum(o['reset'] for o in continued) == 1 and continued[-4]['done']
    assert_same(continued, restored)
    assert same_state(saver_states, loader_states)
    return continued


@pytest.mark.parametrize('task', ['dmc_walker_walk', 'dmc_reacher_easy'])
def test_dmc_restores_physics_model_and_task(opened, task):
    saver, loader = make(opened, task, SEED), make(opened, task, OTHER)
    continued = check_restore(saver, loader)
    assert len(continued) == 12 - 5 + 3  # 24 frames at action repeat 2, cut by the TimeLimit


def test_dmc_restore_without_the_model_arrays_differs(opened):
    """The reacher's target is in the model, not in MuJoCo's state: leaving it out shows."""
    saver = make(opened, 'dmc_reacher_easy', SEED)
    loader = make(opened, 'dmc_reacher_easy', OTHER)
    saver.reset()
    loader.reset()
    state = saver.get_state()
    state['env']['model'] = {}
    loader.set_state(state)
    action = np.zeros(saver.act_space.shape, np.float32)
    assert not np.array_equal(saver.step(action)['image'], loader.step(action)['image'])


def test_synthetic_shapes(opened):
    saver, loader = make(opened, 'synth_shapes', SEED), make(opened, 'synth_shapes', OTHER)
    check_restore(saver, loader)


def test_natural_video_background(opened, tmp_path):
    specs = {
        'red.mp4': (0, 9, (24, 32)),
        'green.mkv': (1, 11, (30, 20)),
        'orange.avi': (6, 8, (16, 16)),
    }
    folder = fx.make_video_dir(tmp_path / 'videos', specs)
    flags = ['--bg_path_train', str(folder), '--bg_path_test', str(folder)]
    saver = make(opened, 'nat_cartpole_swingup', SEED, flags=flags)
    loader = make(opened, 'nat_cartpole_swingup', OTHER, flags=flags)
    files = [env._env._env._background.files for env in opened]
    assert files[0] != files[1]  # the seed shuffles the videos; the state carries the order
    check_restore(saver, loader)


def test_atari(opened):
    pytest.importorskip('ale_py')
    blocks, limit = ('atari',), 4 * 16
    saver = make(opened, 'atari_pong', SEED, blocks, limit)
    loader = make(opened, 'atari_pong', OTHER, blocks, limit)
    check_restore(saver, loader, steps=6, distinct_resets=False)


class Stop(Exception):
    pass


def policy(obs, state):
    """Actions from the image and a per-env step count that restarts with each episode."""
    count = np.zeros(len(obs['reset']), np.int64) if state is None else state['count']
    count = np.where(obs['reset'], 0, count) + 1
    brightness = obs['image'].mean((1, 2, 3)) / 255
    action = np.stack([np.sin(0.7 * count + brightness), np.cos(0.3 * count - brightness)], -1)
    return {'action': action.astype(np.float32)}, {'count': count}


def to_lists(state):
    return {key: value.tolist() for key, value in state.items()}


def to_arrays(state):
    return {key: np.array(value) for key, value in state.items()}


def make_driver(opened, seeds):
    """A Driver over two synth_shapes envs with episodes of 7 and 10 steps, logging callbacks."""
    env_list = [
        make(opened, 'synth_shapes', seed, time_limit=limit) for seed, limit in zip(seeds, (14, 20))
    ]
    driver, log = Driver(env_list), []
    driver.on_before_step(lambda: log.append(('before',)))
    driver.on_step(lambda transition, index: log.append(('step', index, transition)))
    driver.on_episode(lambda episode: log.append(('episode', episode)))
    return driver, log


def assert_same_log(first, second):
    assert [event[:2] if event[0] == 'step' else event[:1] for event in first] == [
        event[:2] if event[0] == 'step' else event[:1] for event in second
    ]
    for a, b in zip(first, second):
        if a[0] != 'before':
            assert same_state(a[-1], b[-1])


def test_driver_stopped_saved_and_restored_continues_like_the_uninterrupted_one(opened):
    rounds, total = 7, 2 * 18  # the stop comes when the 7-step env has just ended an episode
    reference, reference_log = make_driver(opened, (SEED, SEED + 1))
    reference(policy, steps=total)
    stopped, stopped_log = make_driver(opened, (SEED, SEED + 1))

    def stop():
        if stopped_log.count(('before',)) > rounds:
            raise Stop

    stopped.on_before_step(stop)
    with pytest.raises(Stop):
        stopped(policy, steps=total)
    cut = len(stopped_log) - 1  # the last 'before' is the round that did not run
    assert_same_log(stopped_log[:cut], reference_log[:cut])
    assert [e[0] for e in stopped_log[cut - 3 :]] == ['step', 'episode', 'step', 'before']
    state = pickle.loads(pickle.dumps(stopped.get_state(to_lists), protocol=5))
    assert state['envs'][0]['episode'] is None and len(state['envs'][1]['episode']) == 8
    assert state['policy'] == {'count': [7, 7]}

    restored, restored_log = make_driver(opened, (OTHER, OTHER + 1))
    restored.set_state(state, to_arrays)
    episodes = restored(policy, steps=total - 2 * rounds)
    assert_same_log(restored_log, reference_log[cut:])
    assert [len(e['reward']) for e in episodes] == [11, 8]  # the first began before the stop
    np.testing.assert_array_equal(
        episodes[0]['image'][:8], np.stack([o['image'] for o in state['envs'][1]['episode']])
    )


def test_driver_restarts_an_env_without_a_state(opened):
    stopped, _ = make_driver(opened, (SEED, SEED + 1))
    stopped(policy, steps=2 * 3)
    state = stopped.get_state(to_lists)
    state['envs'][1]['env'] = None  # as from an env that cannot save itself
    restored, _ = make_driver(opened, (OTHER, OTHER + 1))
    restored.set_state(state, to_arrays)
    seen = []
    restored(lambda obs, s: seen.append(obs) or policy(obs, s), steps=2)
    assert seen[0]['reset'].tolist() == [False, True]
    np.testing.assert_array_equal(seen[0]['image'][0], state['envs'][0]['obs']['image'])
