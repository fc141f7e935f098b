"""Finished episodes stored as compressed .npz files, reloaded on restart, sampled as windows."""

import collections
import datetime
import pathlib
import threading
import uuid
import warnings
import zipfile

import numpy as np

from dreamer_core import fileio
from dreamer_core.errors import UserError


def load_episode(path):
    """Read every array of one .npz episode into memory (so corruption surfaces here)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def inspect_episode(path):
    """{key: (dtype, rows, per-step shape)} of an .npz episode, read from the array headers
    only (cheap: nothing is decompressed beyond each header)."""
    spec = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith('.npy'):
                raise ValueError(f'the archive holds {name!r}, which is not an array')
            with archive.open(name) as member:
                version = np.lib.format.read_magic(member)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(member)
            if not shape:
                raise ValueError(f'array {name[:-4]!r} is a scalar, not one row per step')
            spec[name[:-4]] = (dtype, shape[0], tuple(shape[1:]))
    return spec


def _validate_spec(spec):
    """The same rules as _validate, on the headers of inspect_episode."""
    if 'action' not in spec:
        raise ValueError(f'the episode has no "action" array (arrays: {sorted(spec)}).')
    rows = {key: value[1] for key, value in spec.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f'the arrays have different numbers of rows: {rows}.')
    if rows['action'] < 2:
        raise ValueError(
            f'an episode needs at least 2 rows (reset + one step), got {rows["action"]}.'
        )
    objects = [key for key, value in spec.items() if value[0].hasobject]
    if objects:
        raise ValueError(f'arrays {objects} hold Python objects, not numbers.')
    return spec


def _signature(spec):
    """What all episodes of one replay share: keys, dtypes and per-step shapes."""
    return tuple(sorted((key, np.dtype(d).str, shape) for key, (d, _, shape) in spec.items()))


def _describe(signature):
    return '{' + ', '.join(f'{k}: {np.dtype(d).name}{list(s)}' for k, d, s in signature) + '}'


def _warn(message):
    warnings.warn(message, RuntimeWarning, stacklevel=4)


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
        self._reference = None  # the keys, dtypes and step shapes every episode must have
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
        usable = self._usable_files(sorted(self._directory.glob('*.npz'), reverse=True))
        # Only files that pass every check count: a skipped file holds no steps, so prefill
        # and the resumed step counter never rely on it.
        loaded = []
        for path, length in usable:  # newest first
            if self._capacity and loaded and self.num_steps + length > self._capacity:
                self._count(length)  # on disk and checked, beyond what memory keeps
                continue
            episode = self._read(path)
            if episode is None:
                continue
            loaded.append(episode)
            self.num_steps += length
            self._count(length)
        self._episodes = loaded[::-1]

    def _count(self, length):
        self.total_steps += length
        self.total_episodes += 1

    def _usable_files(self, paths):
        """(path, length) of every file whose array headers make a usable episode.

        Unreadable files and files unlike the others (another image shape, dtype or set of keys)
        are skipped with a warning; when no file fits the config's observations at all, the
        logdir belongs to another config and that is a ReplayError.
        """
        specs, refused = {}, []
        for path in paths:
            spec = self._inspect(path)
            if spec is None:
                continue
            problem = self._obs_problem(spec, f'Replay file {path}')
            if problem:
                refused.append(problem)
            else:
                specs[path] = spec
        if refused and not specs:
            raise ReplayError(refused[0])
        for problem in refused:
            _warn(f'Skipping replay file: {problem}')
        common = collections.Counter(_signature(s) for s in specs.values()).most_common(1)
        self._reference = common[0][0] if common else None
        usable = []
        for path, spec in specs.items():
            if _signature(spec) != self._reference:
                _warn(
                    f'Skipping replay file {path}: its arrays {_describe(_signature(spec))} '
                    f'differ from those of the other episodes, {_describe(self._reference)}.'
                )
                continue
            usable.append((path, spec['action'][1] - 1))
        return usable

    def _inspect(self, path):
        """The file's {key: (dtype, rows, step shape)} from its headers, or None with a warning."""
        try:
            return _validate_spec(inspect_episode(path))
        except Exception as error:  # any unreadable file: keep it for inspection, go on
            _warn(f'Skipping unreadable replay file {path}: {type(error).__name__}: {error}')
            return None

    def _read(self, path):
        """One episode from disk, or None (with a warning) when the file cannot be used."""
        try:
            episode = _validate(load_episode(path), str(path))
        except Exception as error:  # e.g. a corrupt block the headers did not show
            _warn(f'Skipping unreadable replay file {path}: {type(error).__name__}: {error}')
            return None
        return episode

    def _obs_problem(self, spec, source):
        """Why the observations of `spec` do not fit the config, or None."""
        for key, expected in self._obs_shapes.items():
            if key not in spec:
                return (
                    f'{source} has no "{key}" array (keys: {sorted(spec)}); '
                    f'the config expects observations {self._obs_shapes}.'
                )
            dtype, _, found = spec[key]
            if found != expected:
                return (
                    f'{source} stores "{key}" with per-step shape {found}, but the config '
                    f'expects {expected}. The config probably changed since this logdir was '
                    f'written (e.g. image_size or grayscale); use a new logdir.'
                )
            if dtype != np.uint8:
                return f'{source} stores "{key}" as {dtype}; observations are uint8 images.'
        return None

    def _check_shapes(self, episode, source):
        spec = {key: (value.dtype, len(value), value.shape[1:]) for key, value in episode.items()}
        problem = self._obs_problem(spec, source)
        if problem:
            raise ReplayError(problem)
        signature = _signature(spec)
        if self._reference is not None and signature != self._reference:
            raise ReplayError(
                f'{source} has arrays {_describe(signature)}, but this replay holds '
                f'{_describe(self._reference)}; one logdir must hold one kind of episode.'
            )
        self._reference = signature

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
