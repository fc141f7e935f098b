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
        self._on_steps, self._on_episodes, self._on_befores = [], [], []
        self.reset()

    def on_before_step(self, callback: Callable[[], None]) -> None:
        """callback() at the start of every round, after all callbacks of the previous round.

        An exception raised there stops the driver where get_state() can save it.
        """
        self._on_befores.append(callback)

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

    def get_state(self, convert: Callable[[Any], Any]) -> dict[str, Any]:
        """The last observation, unfinished episode and env state of every env, and the policy
        state mapped by `convert` (e.g. tensors to numpy); picklable if `convert`'s result is."""
        saved = []
        for env, obs, episode in zip(self._envs, self._obs, self._eps):
            running = obs is not None and not obs['done']
            saved.append(
                {'obs': obs, 'episode': list(episode) if running else None, 'env': env.get_state()}
            )
        return {'envs': saved, 'policy': None if self._state is None else convert(self._state)}

    def set_state(self, state: dict[str, Any], convert_back: Callable[[Any], Any]) -> None:
        """Continue from `get_state()`: an env whose state is None (one that cannot save itself)
        restarts with a new episode; its unfinished one is dropped."""
        if len(state['envs']) != len(self._envs):
            raise ValueError(
                f'The saved driver state has {len(state["envs"])} envs, this driver '
                f'{len(self._envs)}.'
            )
        for i, (env, saved) in enumerate(zip(self._envs, state['envs'])):
            self._obs[i], self._eps[i] = None, None
            if saved['env'] is not None:
                env.set_state(saved['env'])
                self._obs[i] = saved['obs']
                self._eps[i] = None if saved['episode'] is None else list(saved['episode'])
        policy = state['policy']
        self._state = None if policy is None else convert_back(policy)

    def __call__(self, policy: Policy, steps: int = 0, episodes: int = 0) -> list[Arrays]:
        """Step until `steps` env steps and `episodes` episodes are done; returns the episodes
        that ended during this call."""
        step, done = 0, []
        while step < steps or len(done) < episodes:
            for callback in self._on_befores:
                callback()
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
