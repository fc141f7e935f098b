"""Environments: DeepMind Control (plain and natural-video backgrounds), Atari; wrappers.

Every env here speaks one small protocol: `reset() -> obs`, `step(action) -> obs`, where obs is a
dict of numpy values with `image` (uint8 HxWxC), `reward`, `discount`, `reset` (True on the first
step) and `done`; plus `obs_shape`, `act_dim` and `discrete`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import difflib
import os
import pathlib
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamer_core.config import Config, agent_steps
from dreamer_core.errors import UserError

if TYPE_CHECKING:
    from dreamer_core.backgrounds import VideoBackground

SPARSE_TASKS = {('cheetah', 'run_sparse'): 'run', ('walker', 'run_sparse'): 'run'}
SPARSE_THRESHOLD = 0.25
DOMAIN_ALIASES = {'cup': 'ball_in_cup'}
# Float model arrays a task never changes and that can be large (the dog's meshes are 30 MB):
# left out of DMC.get_state.
CONSTANT_MODEL_PREFIXES = ('bvh_', 'mesh_', 'skin_', 'flex_', 'tex_', 'oct_')


class TaskError(UserError, ValueError):
    pass


def setup_rendering() -> str:
    """Pick a headless MuJoCo backend before dm_control loads; respects MUJOCO_GL when set.

    EGL when an NVIDIA GPU is visible, OSMesa otherwise. TensorFlow ships its own LLVM, which
    clashes with Mesa's in the same process and segfaults, in either import order (importing
    dm_control already loads Mesa). So TensorFlow is loaded first, then OSMesa with
    RTLD_DEEPBIND, which makes Mesa resolve its own symbols.
    """
    if 'MUJOCO_GL' not in os.environ:
        gpu = os.path.exists('/dev/nvidia0') or shutil.which('nvidia-smi')
        os.environ['MUJOCO_GL'] = 'egl' if gpu else 'osmesa'
    backend = os.environ['MUJOCO_GL']
    if backend in ('osmesa', 'egl'):
        os.environ.setdefault('PYOPENGL_PLATFORM', backend)
    if backend == 'osmesa':
        import tensorflow  # noqa: F401

        _preload('OSMesa', 'libosmesa6')
    return backend


def _preload(name, package):
    for candidate in (f'lib{name}.so.8', f'lib{name}.so.6', ctypes.util.find_library(name)):
        if not candidate:
            continue
        try:
            ctypes.CDLL(candidate, mode=os.RTLD_DEEPBIND | ctypes.RTLD_GLOBAL)
            return
        except OSError:
            continue
    raise OSError(
        f'Headless rendering needs lib{name}, which is not installed. Install it with '
        f'`sudo apt-get install {package}` (or set MUJOCO_GL=egl on a machine with a GPU).'
    )


def dmc_tasks() -> set[str]:
    setup_rendering()  # dm_control picks its renderer when first imported
    from dm_control import suite

    tasks = {f'{d}_{t}' for d, t in suite.ALL_TASKS}
    tasks |= {f'{d}_{t}' for d, t in SPARSE_TASKS}
    tasks |= {f'cup_{t}' for d, t in suite.ALL_TASKS if d == 'ball_in_cup'}
    return tasks


def validate_task(task: str) -> None:
    """Raise TaskError naming the task and close matches unless it can be built."""
    suite, _, name = task.partition('_')
    if suite in ('dmc', 'nat'):
        known = dmc_tasks()
        if name not in known:
            raise TaskError(
                f'Unknown task {task!r}: {name!r} is not a DeepMind Control task.'
                + _dmc_hint(suite, name, known)
            )
        return
    if suite == 'atari':
        _atari_rom(name)
        return
    if suite == 'synth':
        from dreamer_core import synthetic

        if name not in synthetic.TASKS:
            raise TaskError(
                f'Unknown task {task!r}: the synthetic tasks are '
                f'{", ".join("synth_" + t for t in synthetic.TASKS)}.'
            )
        return
    raise TaskError(
        f'Unknown task suite in {task!r}: tasks are dmc_<domain>_<task>, '
        'nat_<domain>_<task>, atari_<game> or synth_shapes (e.g. dmc_walker_walk).'
    )


def _dmc_hint(suite, name, known):
    """Close task names, or else the domains to choose from (an unknown domain has no match)."""
    close = difflib.get_close_matches(name, sorted(known), n=3)
    if close:
        return f' Did you mean {", ".join(f"{suite}_{c}" for c in close)}?'
    from dm_control import suite as dmc_suite

    domains = sorted({domain for domain, _ in dmc_suite.ALL_TASKS} | set(DOMAIN_ALIASES))
    return (
        f' Tasks are {suite}_<domain>_<task> with a domain from: {", ".join(domains)} '
        f'(e.g. {suite}_walker_walk).'
    )


class Space:
    def __init__(
        self,
        shape: Sequence[int],
        low: float | np.ndarray = -1.0,
        high: float | np.ndarray = 1.0,
        discrete: bool = False,
    ) -> None:
        self.shape, self.low, self.high, self.discrete = tuple(shape), low, high, discrete


class DMC:
    """A dm_control suite task rendered to images; action repeat sums rewards.

    get_state() saves MuJoCo's integration state (time, qpos, qvel, act, controls, applied
    forces, mocap, warm start), every float array of the model but the large constant ones (the
    tasks move targets and resize sites at reset: reacher, finger, fish, swimmer, manipulator,
    stacker, point_mass, quadruped_escape's terrain), the dm_control Environment's step count and
    reset flag, the task's RandomState and the background's state.
    """

    def __init__(
        self,
        name: str,
        action_repeat: int = 1,
        size: Sequence[int] = (64, 64),
        camera: int | None = None,
        seed: int = 0,
        background: VideoBackground | None = None,
        images: bool = True,
    ) -> None:
        # images=False: observations carry a black image instead of a render (for measuring
        # returns only; the rewards do not depend on the pixels).
        setup_rendering()
        from dm_control import suite

        domain, task = name.split('_', 1)
        domain = DOMAIN_ALIASES.get(domain, domain)
        self._sparse = (domain, task) in SPARSE_TASKS
        task = SPARSE_TASKS.get((domain, task), task)
        self._env = suite.load(domain, task, task_kwargs={'random': seed})
        self._repeat = action_repeat
        self._size = tuple(size)
        self._camera = camera if camera is not None else (2 if domain == 'quadruped' else 0)
        self._background = background
        self._images = images
        spec = self._env.action_spec()
        self._low, self._high = spec.minimum, spec.maximum
        self.act_space = Space(spec.shape, spec.minimum, spec.maximum)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self._size + (3,)

    def reset(self) -> dict[str, Any]:
        time_step = self._env.reset()
        if self._background is not None:
            self._background.reset()
        return self._obs(time_step, 0.0, reset=True)

    def step(self, action: np.ndarray) -> dict[str, Any]:
        reward = 0.0
        for _ in range(self._repeat):
            time_step = self._env.step(action)
            frame_reward = time_step.reward or 0.0
            if self._sparse and frame_reward < SPARSE_THRESHOLD:
                frame_reward = 0.0
            reward += frame_reward
            if time_step.last():
                break
        return self._obs(time_step, reward)

    def get_state(self) -> dict[str, Any]:
        import mujoco

        physics = self._env.physics
        model, data = physics.model.ptr, physics.data.ptr
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        integration = np.empty(mujoco.mj_stateSize(model, spec), np.float64)
        mujoco.mj_getState(model, data, integration, spec)
        return {
            'integration': integration,
            'model': {name: np.array(getattr(model, name)) for name in _mutable_fields(model)},
            'step_count': int(self._env._step_count),
            'reset_next_step': bool(self._env._reset_next_step),
            'random': self._env.task.random.get_state(),
            'background': None if self._background is None else self._background.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        import mujoco

        physics = self._env.physics
        model, data = physics.model.ptr, physics.data.ptr
        for name, value in state['model'].items():
            getattr(model, name)[...] = value
        if model.nhfield and self._images:  # the renderer holds its own copy of the terrain
            with physics.contexts.gl.make_current() as context:
                for index in range(model.nhfield):
                    context.call(mujoco.mjr_uploadHField, model, physics.contexts.mujoco.ptr, index)
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(model, data, state['integration'], spec)
        # Every dm_control step ends with mj_step1 and the next one starts with mj_step2, which
        # reads what mj_step1 computed from the state (Physics.step); so does the render.
        mujoco.mj_step1(model, data)
        self._env._step_count = state['step_count']
        self._env._reset_next_step = state['reset_next_step']
        self._env.task.random.set_state(state['random'])
        if self._background is not None:
            self._background.set_state(state['background'])

    def render(self) -> np.ndarray:
        image = self._env.physics.render(*self._size, camera_id=self._camera)
        if self._background is not None:
            image = self._background.apply(image)
        return image

    def render_view(self, size: Sequence[int]) -> np.ndarray:
        """A larger picture of the scene, for videos (without the natural-video background,
        which exists only at the observation size)."""
        return self._env.physics.render(*size, camera_id=self._camera)

    def _obs(self, time_step, reward, reset=False):
        discount = 1.0 if time_step.discount is None else float(time_step.discount)
        return {
            'image': self.render() if self._images else np.zeros(self.obs_shape, np.uint8),
            'reward': np.float32(reward),
            'discount': np.float32(discount),
            'reset': reset,
            'done': time_step.last(),
        }

    def close(self) -> None:
        # Free the rendering contexts now: freed at interpreter exit, they race dm_control's
        # render thread shutting down and print spurious tracebacks.
        self._env.physics.free()


class Atari:
    """ALE with sticky actions, full action space, no-op starts, max-pooled action repeat.

    get_state() saves the ALE state with its random generator (sticky actions; serialized
    bytes), the no-op generator and the last max-pooled screen.
    """

    def __init__(
        self,
        game: str,
        action_repeat: int = 4,
        size: Sequence[int] = (64, 64),
        grayscale: bool = True,
        noops: int = 30,
        sticky: float = 0.25,
        seed: int = 0,
    ) -> None:
        ale_py, _ = _import_ale()
        rom = _atari_rom(game)
        self._ale = ale_py.ALEInterface()
        self._ale.setInt('random_seed', int(seed))
        self._ale.setFloat('repeat_action_probability', sticky)
        self._ale.setLoggerMode(ale_py.LoggerMode.Error)
        self._ale.loadROM(str(rom))
        self._actions = self._ale.getLegalActionSet()  # the full action space
        self._repeat, self._size, self._gray, self._noops = (
            action_repeat,
            tuple(size),
            grayscale,
            noops,
        )
        self._rng = np.random.default_rng(seed)
        self.act_space = Space((len(self._actions),), 0, 1, discrete=True)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self._size + ((1,) if self._gray else (3,))

    def reset(self) -> dict[str, Any]:
        self._ale.reset_game()
        for _ in range(self._rng.integers(1, self._noops + 1)):
            self._ale.act(self._actions[0])
            if self._ale.game_over():
                self._ale.reset_game()
        return self._obs(0.0, reset=True, done=False)

    def step(self, action: np.ndarray) -> dict[str, Any]:
        index = int(np.argmax(action))
        reward, frames = 0.0, []
        for _ in range(self._repeat):
            reward += self._ale.act(self._actions[index])
            frames.append(self._screen())
            if self._ale.game_over():
                break
        self._last = np.max(np.stack(frames[-2:]), 0)
        return self._obs(reward, reset=False, done=self._ale.game_over())

    def get_state(self) -> dict[str, Any]:
        return {
            'ale': self._ale.cloneState(include_rng=True).serialize(),
            'rng': self._rng.bit_generator.state,
            'last': getattr(self, '_last', None),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        ale_py, _ = _import_ale()
        self._ale.restoreState(ale_py.ALEState(state['ale']))
        self._rng.bit_generator.state = state['rng']
        self._last = state['last']

    def _screen(self):
        return self._ale.getScreenGrayscale() if self._gray else self._ale.getScreenRGB()

    def _obs(self, reward, reset, done):
        if reset:
            self._last = self._screen()
        from PIL import Image

        image = Image.fromarray(np.squeeze(self._last)).resize(self._size[::-1], Image.BILINEAR)
        image = np.asarray(image)
        if self._gray:
            image = image[..., None]
        return {
            'image': image,
            'reward': np.float32(reward),
            'discount': np.float32(1 - done),
            'reset': reset,
            'done': done,
        }

    def close(self) -> None:
        pass


def _mutable_fields(model):
    """Names of the float arrays of a MuJoCo model that a task may change."""
    return [
        name
        for name in dir(model)
        if not name.startswith(('_', *CONSTANT_MODEL_PREFIXES))
        and isinstance(getattr(model, name), np.ndarray)
        and getattr(model, name).dtype.kind == 'f'
    ]


def _import_ale():
    try:
        import ale_py
        import ale_py.roms
    except ImportError as e:
        raise TaskError(
            'Atari tasks need ale-py (it ships the ROMs): pip install ale-py==0.12.1'
        ) from e
    return ale_py, ale_py.roms


class NormalizeAction:
    """Expose actions in [-1, 1] for bounded continuous action spaces.

    Stateless: get_state/set_state are the env's (forwarded by __getattr__).
    """

    def __init__(self, env: DMC) -> None:
        self._env = env
        space = env.act_space
        self._low, self._high = np.asarray(space.low), np.asarray(space.high)
        self.act_space = Space(space.shape, -1.0, 1.0)

    def __getattr__(self, name):
        return getattr(self._env, name)

    def step(self, action: np.ndarray) -> dict[str, Any]:
        action = np.clip(action, -1, 1)
        return self._env.step(self._low + (action + 1) / 2 * (self._high - self._low))


class TimeLimit:
    """End episodes after `duration` agent steps (discount stays 1: a cut, not a terminal).

    get_state() saves the step counter around the env's state; None when the env has none.
    """

    def __init__(self, env: DMC | Atari | NormalizeAction, duration: int) -> None:
        self._env, self._duration, self._step = env, duration, None

    def __getattr__(self, name):
        return getattr(self._env, name)

    def reset(self) -> dict[str, Any]:
        self._step = 0
        return self._env.reset()

    def step(self, action: np.ndarray) -> dict[str, Any]:
        assert self._step is not None, 'Reset the environment first.'
        obs = self._env.step(action)
        self._step += 1
        if self._duration and self._step >= self._duration:
            obs['done'] = True
        if obs['done']:
            self._step = None
        return obs

    def get_state(self) -> dict[str, Any] | None:
        inner = self._env.get_state()
        return None if inner is None else {'step': self._step, 'env': inner}

    def set_state(self, state: dict[str, Any]) -> None:
        self._env.set_state(state['env'])
        self._step = state['step']


def resolve_bg_path(path: str | pathlib.Path, variant_root: str | pathlib.Path) -> pathlib.Path:
    """Background folders are relative to the variant folder (e.g. DreamerPro/)."""
    path = pathlib.Path(os.path.expanduser(path))
    return path if path.is_absolute() else (pathlib.Path(variant_root) / path).resolve()


def obs_shape(config: Config) -> tuple[int, int, int]:
    """The image shape the env of `config` produces (replay checks stored episodes against it)."""
    gray = config.task.startswith('atari_') and config.grayscale
    return tuple(config.image_size) + ((1,) if gray else (3,))


def make_env(
    config: Config,
    mode: str,
    variant_root: str | pathlib.Path,
    seed: int | None = None,
    images: bool = True,
) -> TimeLimit:
    """Build the env of `config.task` for mode 'train' or 'eval' (`images=False`: DMC tasks
    skip rendering and observe black images)."""
    suite, _, name = config.task.partition('_')
    seed = config.seed if seed is None else seed
    if suite in ('dmc', 'nat'):
        background = None
        if suite == 'nat':
            from dreamer_core.backgrounds import VideoBackground

            folder = config.bg_path_train if mode == 'train' else config.bg_path_test
            background = VideoBackground(
                resolve_bg_path(folder, variant_root),
                tuple(config.image_size),
                max_videos=config.max_videos,
                random_bg=config.random_bg,
                seed=seed,
            )
        env = DMC(
            name,
            config.action_repeat,
            config.image_size,
            seed=seed,
            background=background,
            images=images,
        )
        env = NormalizeAction(env)
    elif suite == 'atari':
        env = Atari(name, config.action_repeat, config.image_size, config.grayscale, seed=seed)
    elif suite == 'synth':
        from dreamer_core.synthetic import Shapes

        validate_task(config.task)
        env = Shapes(config.action_repeat, config.image_size, seed=seed)
    else:
        validate_task(config.task)
    return TimeLimit(env, agent_steps(config).time_limit)


def _atari_rom(game):
    """The ROM path of an Atari game; an unknown game is a TaskError naming close matches."""
    _, roms = _import_ale()
    if game not in roms.get_all_rom_ids():
        close = difflib.get_close_matches(game, roms.get_all_rom_ids(), n=3)
        hint = f' Did you mean {", ".join("atari_" + c for c in close)}?' if close else ''
        raise TaskError(f'Unknown task {"atari_" + game!r}: {game!r} is not an Atari game.{hint}')
    return roms.get_rom_path(game)
