"""Steps a list of environments with a policy and reports steps and episodes to callbacks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]
# policy(obs_batch, state) -> ({'action': [N, A]}, state)
Policy = Callable[[Arrays, Any], tuple[Arrays, Any]]


class Driver:
    """`policy(obs_batch, state) -> ({'action': [N, A]}, state)`; episodes are dicts of arrays.

    Row t of an episode holds the observation at t and the action that led to it (zeros on the
    first row), so row 0 is the reset observation with reward 0 and discount 1.
    """

    def __init__(self, envs: Sequence[Any]) -> None:
        self._envs = envs
        self._on_steps, self._on_episodes = [], []
        self.reset()

    def on_step(self, callback: Callable[[dict[str, Any], int], None]) -> None:
        """callback(transition, env_index) after every env step."""
        self._on_steps.append(callback)

    def on_episode(self, callback: Callable[[Arrays], None]) -> None:
        """callback(episode) when an episode ends."""
        self._on_episodes.append(callback)

    def reset(self) -> None:
        self._obs = [None] * len(self._envs)
        self._eps = [None] * len(self._envs)
        self._state = None

    def __call__(self, policy: Policy, steps: int = 0, episodes: int = 0) -> list[Arrays]:
        """Step until `steps` env steps and `episodes` episodes are done; returns the episodes
        that ended during this call."""
        step, done = 0, []
        while step < steps or len(done) < episodes:
            for i, env in enumerate(self._envs):
                if self._obs[i] is None or self._obs[i]['done']:
                    obs = env.reset()
                    zeros = np.zeros(env.act_space.shape, np.float32)
                    self._obs[i] = obs
                    self._eps[i] = [{**obs, 'action': zeros}]
            batch = {k: np.stack([o[k] for o in self._obs]) for k in self._obs[0]}
            outputs, self._state = policy(batch, self._state)
            for i, env in enumerate(self._envs):
                action = np.asarray(outputs['action'][i], np.float32)
                obs = env.step(action)
                transition = {**obs, 'action': action}
                self._obs[i] = obs
                self._eps[i].append(transition)
                step += 1
                for callback in self._on_steps:
                    callback(transition, i)
                if obs['done']:
                    ep = {k: np.stack([t[k] for t in self._eps[i]]) for k in self._eps[i][0]}
                    ep = {k: convert(v) for k, v in ep.items()}
                    done.append(ep)
                    for callback in self._on_episodes:
                        callback(ep)
        return done


def convert(value: Any) -> np.ndarray:
    value = np.asarray(value)
    if np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float32)
    if np.issubdtype(value.dtype, np.signedinteger):
        return value.astype(np.int32)
    return value
