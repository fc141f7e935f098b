"""A uniform-random policy for prefill (needs no TensorFlow)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dreamer_core.envs import Space


class RandomAgent:
    def __init__(self, act_space: Space, seed: int = 0) -> None:
        self._space = act_space
        self._rng = np.random.default_rng(seed)

    def rng_state(self) -> dict:
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    def __call__(
        self, obs: Mapping[str, np.ndarray], state: Any = None
    ) -> tuple[dict[str, np.ndarray], None]:
        batch = len(obs['reset'])
        dim = self._space.shape[0]
        if self._space.discrete:
            action = np.eye(dim, dtype=np.float32)[self._rng.integers(dim, size=batch)]
        else:
            action = self._rng.uniform(-1, 1, (batch, dim)).astype(np.float32)
        return {'action': action}, None
