"""Finished episodes stored as compressed .npz files, reloaded on restart, sampled as windows."""

import datetime
import pathlib
import threading
import uuid
import warnings

import numpy as np

from dreamer_core import fileio
from dreamer_core.errors import UserError


def load_episode(path):
    """Read every array of one .npz episode into memory (so corruption surfaces here)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def episode_length(episode):
    """Steps of an episode: its rows minus the first (reset) row."""
    return len(episode['action']) - 1


def _validate(episode, source):
    if not isinstance(episode, dict) or not episode:
        raise TypeError(
            f'{source}: an episode must be a non-empty dict of arrays, '
            f'got {type(episode).__name__}.'
        )
    episode = {key: np.asarray(value) for key, value in episode.items()}
    if 'action' not in episode:
        raise ValueError(f'{source}: the episode has no "action" key (keys: {sorted(episode)}).')
    rows = {key: (value.shape[0] if value.ndim else None) for key, value in episode.items()}
    if len(set(rows.values())) != 1 or None in rows.values():
        raise ValueError(
            f'{source}: all arrays need the same first dimension (one row per step), '
            f'got rows {rows}.'
        )
    if rows['action'] < 2:
        raise ValueError(
            f'{source}: an episode needs at least 2 rows (reset + one step), got {rows["action"]}.'
        )
    return episode


def _length_from_name(path):
    """The step count encoded as the last '-' field of `{timestamp}-{uuid}-{length}.npz`."""
    try:
        return int(pathlib.Path(path).stem.rsplit('-', 1)[-1])
    except ValueError:
        return None


def _timestamp():
    return datetime.datetime.now().strftime('%Y%m%dT%H%M%S')


class ReplayError(UserError, ValueError):
    """Replay on disk does not fit this run's config."""


class Replay:
    """Episodes on disk in `directory`; the newest up to `capacity` steps are kept in memory."""

    def __init__(self, directory, capacity=0, seed=0, obs_shapes=None):
        if capacity < 0 or int(capacity) != capacity:
            raise ValueError(
                f'Replay capacity must be a whole number >= 0 (0 = no limit), got {capacity}.'
            )
        self._directory = pathlib.Path(directory).expanduser()
        self._directory.mkdir(parents=True, exist_ok=True)
        self._capacity = int(capacity)
        self._obs_shapes = {k: tuple(v) for k, v in (obs_shapes or {}).items()}
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._episodes = []  # oldest first
        self._eligible = {}  # window length -> indices of episodes long enough
        self.num_steps = 0
        self.total_steps = 0
        self.total_episodes = 0
        self._load()

    @property
    def directory(self):
        return self._directory

    @property
    def num_episodes(self):
        return len(self._episodes)

    def _load(self):
        for stale in self._directory.glob('.*.tmp'):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)
        paths = sorted(self._directory.glob('*.npz'))
        self.total_episodes = len(paths)
        self.total_steps = sum(_length_from_name(p) or 0 for p in paths)
        loaded = []
        for path in reversed(paths):  # newest first
            episode = self._read(path)
            if episode is None:
                continue
            length = episode_length(episode)
            if self._capacity and loaded and self.num_steps + length > self._capacity:
                break
            if _length_from_name(path) is None:
                self.total_steps += length
            loaded.append(episode)
            self.num_steps += length
        self._episodes = loaded[::-1]

    def _read(self, path):
        """One episode from disk, or None (with a warning) when the file cannot be used."""
        try:
            episode = _validate(load_episode(path), str(path))
        except Exception as error:  # any unreadable file: keep it for inspection, go on
            warnings.warn(
                f'Skipping unreadable replay file {path}: {type(error).__name__}: {error}',
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        self._check_shapes(episode, f'Replay file {path}')
        return episode

    def _check_shapes(self, episode, source):
        for key, expected in self._obs_shapes.items():
            if key not in episode:
                raise ReplayError(
                    f'{source} has no "{key}" array (keys: {sorted(episode)}); '
                    f'the config expects observations {self._obs_shapes}.'
                )
            found = episode[key].shape[1:]
            if found != expected:
                raise ReplayError(
                    f'{source} stores "{key}" with per-step shape {found}, but the config '
                    f'expects {expected}. The config probably changed since this logdir was '
                    f'written (e.g. image_size or grayscale); use a new logdir.'
                )

    def add(self, episode):
        """Write a finished episode to disk atomically, keep it in memory, return its path."""
        episode = _validate(episode, 'Replay.add')
        self._check_shapes(episode, 'The episode given to Replay.add')
        length = episode_length(episode)
        path = self._directory / f'{_timestamp()}-{uuid.uuid4().hex}-{length}.npz'
        # The temporary name is not *.npz, so a crash never leaves a half episode a restart loads.
        fileio.atomic_write(
            path, lambda file: np.savez_compressed(file, **episode), kill_point='episode'
        )
        with self._lock:
            self._episodes.append(episode)
            self.num_steps += length
            self.total_steps += length
            self.total_episodes += 1
            self._enforce_capacity()
            self._eligible.clear()
        return path

    def _enforce_capacity(self):
        while self._capacity and self.num_steps > self._capacity and len(self._episodes) > 1:
            self.num_steps -= episode_length(self._episodes.pop(0))

    def sample(self, batch, length, oversample_ends):
        """`batch` windows of `length` consecutive rows, stacked to [batch, length, ...]."""
        if batch < 1 or length < 1:
            raise ValueError(
                f'Replay.sample needs batch >= 1 and length >= 1, '
                f'got batch={batch}, length={length}.'
            )
        with self._lock:
            windows = [self._window(length, oversample_ends) for _ in range(batch)]
        keys = set(windows[0])
        for window in windows[1:]:
            if set(window) != keys:
                raise ValueError(
                    f'Replay episodes have different keys: {sorted(keys)} vs '
                    f'{sorted(window)}; one logdir must hold one kind of episode.'
                )
        return {key: np.stack([w[key] for w in windows]) for key in windows[0]}

    def _window(self, length, oversample_ends):
        episode = self._episodes[self._rng.choice(self._eligible_indices(length))]
        total = len(episode['action'])
        available = total - length  # the last start index
        if oversample_ends:
            # As the original: a start drawn from all rows, clamped to the last one, which so
            # gets chance length / total (the episode's end is in every such window).
            index = min(int(self._rng.integers(total)), available)
        else:
            index = int(self._rng.integers(available + 1))
        return {key: value[index : index + length] for key, value in episode.items()}

    def _eligible_indices(self, length):
        # As the original, an episode needs more rows than the window (it skips rows == length).
        if length not in self._eligible:
            self._eligible[length] = np.array(
                [i for i, ep in enumerate(self._episodes) if len(ep['action']) > length]
            )
        eligible = self._eligible[length]
        if not len(eligible):
            longest = max((len(ep['action']) for ep in self._episodes), default=0)
            raise ReplayError(
                f'No episode in replay {self._directory} has more than {length} rows: all '
                f'{len(self._episodes)} in-memory episodes are too short for dataset.length '
                f'{length} (longest: {longest} rows). Lower dataset.length or collect longer '
                f'episodes.'
            )
        return eligible

    def dataset(self, batch, length, oversample_ends):
        """An infinite tf.data.Dataset of `sample(...)` dicts, prefetched."""
        import tensorflow as tf  # lazily: replay files are usable without TensorFlow

        with self._lock:
            if not self._episodes:
                raise ReplayError(
                    f'Replay {self._directory} is empty: add or prefill episodes '
                    f'before calling dataset().'
                )
            example = self._episodes[-1]
        signature = {
            key: tf.TensorSpec((batch, length) + value.shape[1:], tf.as_dtype(value.dtype))
            for key, value in example.items()
        }

        def generator():
            while True:
                yield self.sample(batch, length, oversample_ends)

        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        return dataset.prefetch(2)
