"""A uniform-random policy for prefill (needs no TensorFlow)."""

import numpy as np


class RandomAgent:
    def __init__(self, act_space, seed=0):
        self._space = act_space
        self._rng = np.random.default_rng(seed)

    def __call__(self, obs, state=None):
        batch = len(obs['reset'])
        dim = self._space.shape[0]
        if self._space.discrete:
            action = np.eye(dim, dtype=np.float32)[self._rng.integers(dim, size=batch)]
        else:
            action = self._rng.uniform(-1, 1, (batch, dim)).astype(np.float32)
        return {'action': action}, None
