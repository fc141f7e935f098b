"""A fake environment speaking the protocol of dreamer_core/envs.py, for fast component tests."""

import numpy as np

from dreamer_core import envs


class FakeEnv:
    """Episodes of `length` steps with seeded random images; records the actions it receives.

    reset()/step() return dicts with `image` (uint8 `image_shape`), `reward` (float32: the sum of
    the action plus 0.1 * the step index, so tests can recompute it), `discount` (float32: 1, or 0
    on the last step when `terminal`), `reset` (True only from reset()) and `done`. `low`/`high`
    set the bounds of the continuous action space (scalars or per-dimension lists).
    """

    def __init__(
        self,
        length=7,
        act_dim=2,
        image_shape=(64, 64, 3),
        seed=0,
        low=-1.0,
        high=1.0,
        discrete=False,
        terminal=False,
    ):
        if length < 1:
            raise ValueError(f'FakeEnv length is {length}: episodes need at least one step.')
        self.length, self.act_dim, self.discrete = length, act_dim, discrete
        self._image_shape, self._terminal = tuple(image_shape), terminal
        self._rng = np.random.default_rng(seed)
        low, high = (0, 1) if discrete else (low, high)
        self.act_space = envs.Space((act_dim,), low, high, discrete=discrete)
        self.actions = []  # every action step() received, across episodes
        self.resets = 0
        self.closed = False
        self._step = None

    @property
    def obs_shape(self):
        return self._image_shape

    def reset(self):
        self._step = 0
        self.resets += 1
        return self._obs(0.0, reset=True, done=False)

    def step(self, action):
        if self._step is None:
            raise RuntimeError('FakeEnv.step() before reset() or after the episode ended.')
        action = np.asarray(action, np.float32)
        if action.shape != (self.act_dim,):
            raise ValueError(
                f'FakeEnv action has shape {action.shape}, expected ({self.act_dim},).'
            )
        self.actions.append(action.copy())
        self._step += 1
        reward = float(action.sum()) + 0.1 * self._step
        done = self._step >= self.length
        discount = 0.0 if (done and self._terminal) else 1.0
        obs = self._obs(reward, reset=False, done=done, discount=discount)
        if done:
            self._step = None
        return obs

    def get_state(self):
        return {'rng': self._rng.bit_generator.state, 'step': self._step}

    def set_state(self, state):
        self._rng.bit_generator.state = state['rng']
        self._step = state['step']

    def close(self):
        self.closed = True

    def _obs(self, reward, reset, done, discount=1.0):
        image = self._rng.integers(0, 256, self._image_shape, dtype=np.uint8)
        return {
            'image': image,
            'reward': np.float32(reward),
            'discount': np.float32(discount),
            'reset': reset,
            'done': done,
        }
