"""A procedural pixel task with no physics engine, fast enough to push a full training loop
through a million frames in about an hour (benchmarks/soak.py): `synth_shapes`.

Each episode has a background gradient, a target square and two distractor squares moving and
bouncing off the walls, and a square the agent moves with its two-dimensional action. Each frame
is rewarded with 1 - distance(agent, target) / diagonal, so the return of a 1000-frame episode is
between 0 and 1000 (the DMC scale). Episodes end only at the time limit, as in DMC.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TASKS = ('shapes',)
SPEED = 0.04  # of the frame's side per frame at full action
SQUARE = 0.12  # side of each square, of the frame's side


class Shapes:
    """`synth_shapes`: continuous actions in [-1, 1]^2, rewards summed over the action repeat.

    get_state() saves the random generator, the background and the squares.
    """

    def __init__(self, action_repeat: int = 1, size: Sequence[int] = (64, 64), seed: int = 0):
        from dreamer_core.envs import Space

        self._repeat = action_repeat
        self._size = tuple(size)
        self._rng = np.random.default_rng(seed)
        self.act_space = Space((2,), -1.0, 1.0)
        height, width = self._size
        rows = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        cols = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        self._grid = rows, cols
        self._background = None
        self._state = None

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self._size + (3,)

    def reset(self) -> dict[str, Any]:
        rng = self._rng
        top, bottom = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        rows, cols = self._grid
        shade = 0.5 * (rows + cols)
        self._background = (top + (bottom - top) * shade).astype(np.uint8)
        self._state = {
            'agent': rng.uniform(0, 1 - SQUARE, 2),
            'target': rng.uniform(0, 1 - SQUARE, 2),
            'movers': rng.uniform(0, 1 - SQUARE, (2, 2)),
            'velocity': rng.uniform(-0.02, 0.02, (2, 2)),
            'colors': rng.integers(0, 256, (4, 3), dtype=np.uint8),
        }
        return self._obs(0.0, reset=True)

    def step(self, action: np.ndarray) -> dict[str, Any]:
        state = self._state
        action = np.clip(np.asarray(action, np.float64).reshape(2), -1, 1)
        reward = 0.0
        for _ in range(self._repeat):
            state['agent'] = np.clip(state['agent'] + SPEED * action, 0, 1 - SQUARE)
            movers = state['movers'] + state['velocity']
            bounced = (movers < 0) | (movers > 1 - SQUARE)
            state['velocity'] = np.where(bounced, -state['velocity'], state['velocity'])
            state['movers'] = np.clip(movers, 0, 1 - SQUARE)
            distance = np.linalg.norm(state['agent'] - state['target'])
            reward += 1.0 - distance / np.sqrt(2)
        return self._obs(reward)

    def get_state(self) -> dict[str, Any]:
        return {
            'rng': self._rng.bit_generator.state,
            'background': None if self._background is None else self._background.copy(),
            'state': None if self._state is None else _copy(self._state),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state['rng']
        self._background = None if state['background'] is None else state['background'].copy()
        self._state = None if state['state'] is None else _copy(state['state'])

    def render(self) -> np.ndarray:
        image = self._background.copy()
        height, width = self._size
        side = max(1, round(SQUARE * height)), max(1, round(SQUARE * width))
        state = self._state
        places = [state['target'], *state['movers'], state['agent']]  # the agent on top
        for (y, x), color in zip(places, state['colors']):
            top, left = int(y * height), int(x * width)
            image[top : top + side[0], left : left + side[1]] = color
        return image

    def _obs(self, reward, reset=False):
        return {
            'image': self.render(),
            'reward': np.float32(reward),
            'discount': np.float32(1.0),
            'reset': reset,
            'done': False,
        }

    def close(self) -> None:
        pass


def _copy(arrays):
    return {key: np.array(value) for key, value in arrays.items()}
