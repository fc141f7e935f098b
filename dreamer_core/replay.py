"""Finished episodes stored as .npz files, reloaded on restart, sampled as windows.

A training replay keeps only each episode's small arrays (actions, rewards, ...) in memory and
reads the windows of its images from the episode files when a batch is drawn: the files are
written uncompressed, so an image window is one contiguous read at a known offset (through the
operating system's page cache, which is not part of the process's memory and is given back under
pressure). Its memory so stays a few bytes per step however long the run. An in-memory replay
(the evaluation replay, which keeps only the latest episodes) writes compressed files and holds
whole episodes, as before.
"""

import collections
import datetime
import errno
import os
import pathlib
import struct
import threading
import time
import uuid
import warnings
import zipfile

import numpy as np

from dreamer_core import fileio
from dreamer_core.errors import UserError

# Generator states kept for `rng_state`: more than a prefetching dataset draws ahead.
KEPT_STATES = 16


def load_episode(path):
    """Read every array of one .npz episode into memory (so corruption surfaces here)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _header_reader(version):
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0
    return np.lib.format.read_array_header_2_0


def inspect_episode(path):
    """{key: (dtype, rows, per-step shape)} of an .npz episode, read from the array headers
    only (cheap: nothing is decompressed beyond each header)."""
    spec = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith('.npy'):
                raise ValueError(f'the archive holds {name!r}, which is not an array')
            with archive.open(name) as member:
                shape, _, dtype = _header_reader(np.lib.format.read_magic(member))(member)
            if not shape:
                raise ValueError(f'array {name[:-4]!r} is a scalar, not one row per step')
            spec[name[:-4]] = (dtype, shape[0], tuple(shape[1:]))
    return spec


def stored_offsets(path):
    """{key: byte offset of the array's data in the file} for every array of an .npz episode
    that is stored uncompressed in C order (so that a run of its rows is one contiguous read);
    compressed arrays are left out."""
    offsets = {}
    with open(path, 'rb') as raw, zipfile.ZipFile(raw) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith('.npy'):
                continue
            # The member's data follows its local header (30 bytes, then name and extra field).
            raw.seek(info.header_offset)
            local = raw.read(30)
            if len(local) < 30 or local[:4] != b'PK\x03\x04':
                raise ValueError(f'the local header of {info.filename!r} is damaged')
            name_length, extra_length = struct.unpack('<HH', local[26:30])
            raw.seek(info.header_offset + 30 + name_length + extra_length)
            shape, fortran, _ = _header_reader(np.lib.format.read_magic(raw))(raw)
            if fortran and len(shape) > 1:
                continue
            offsets[info.filename[:-4]] = raw.tell()
    return offsets


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


def _on_disk(step_shape):
    """Arrays with frames as rows (images) are read from the file; vectors stay in memory."""
    return len(step_shape) >= 2


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


class Episode:
    """One stored episode: `memory` holds arrays in memory, `disk` maps the others to
    (byte offset, dtype, per-step shape) in the file `path`. `episode[key]` gives a whole array
    either way; `read_rows` copies a window into a given buffer."""

    __slots__ = ('path', 'rows', 'keys', 'memory', 'disk')

    def __init__(self, path, rows, keys, memory, disk=None):
        self.path, self.rows, self.keys = path, rows, tuple(keys)
        self.memory, self.disk = memory, disk or {}

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)

    def dtype(self, key):
        return self.memory[key].dtype if key in self.memory else self.disk[key][1]

    def step_shape(self, key):
        return self.memory[key].shape[1:] if key in self.memory else self.disk[key][2]

    @property
    def memory_bytes(self):
        return sum(value.nbytes for value in self.memory.values())

    def __getitem__(self, key):
        if key in self.memory:
            return self.memory[key]
        out = np.empty((self.rows,) + self.step_shape(key), self.dtype(key))
        fd = os.open(self.path, os.O_RDONLY)
        try:
            self.read_rows(fd, key, 0, out)
        finally:
            os.close(fd)
        return out

    def read_rows(self, fd, key, start, out):
        """Copy rows start, start+1, ... of the on-disk array `key` into `out` (C-contiguous)."""
        offset, dtype, step_shape = self.disk[key]
        step_bytes = dtype.itemsize * int(np.prod(step_shape, dtype=np.int64))
        view = memoryview(out.reshape(-1).view(np.uint8))
        position, done = offset + start * step_bytes, 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], position + done)
            if got <= 0:
                raise ReplayError(
                    f'Replay file {self.path} ended {len(view) - done} bytes early: it was '
                    'changed or cut short after it was loaded. Restore it or remove it, then '
                    'run the same command to resume.'
                )
            done += got


class Replay:
    """Episodes on disk in `directory`; the newest up to `capacity` steps can be sampled.

    `in_memory=False` (a training replay): episodes are written uncompressed and only their
    vector arrays are held in memory; image windows are read from the files when sampled.
    Compressed files (written by earlier versions) are converted once when loaded.
    `in_memory=True`: episodes are written compressed and held whole in memory.
    """

    def __init__(self, directory, capacity=0, seed=0, obs_shapes=None, in_memory=False):
        if capacity < 0 or int(capacity) != capacity:
            raise ValueError(
                f'Replay capacity must be a whole number >= 0 (0 = no limit), got {capacity}.'
            )
        self._directory = pathlib.Path(directory).expanduser()
        self._directory.mkdir(parents=True, exist_ok=True)
        self._capacity = int(capacity)
        self._in_memory = bool(in_memory)
        self._obs_shapes = {k: tuple(v) for k, v in (obs_shapes or {}).items()}
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        # The generator's state after each batch drawn since `dataset` or `batches` began: a
        # prefetching dataset draws ahead of the updates, and a checkpoint must hold the state
        # after the last batch an update used (`rng_state(used)`).
        self._restart_count()
        self._episodes = []  # oldest first
        self._eligible = {}  # window length -> indices of episodes long enough
        self._reference = None  # the keys, dtypes and step shapes every episode must have
        self.num_steps = 0
        self.total_steps = 0
        self.total_episodes = 0
        self.memory_bytes = 0  # of the arrays held in memory
        self.converted = 0  # compressed files rewritten uncompressed while loading
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
        start = time.perf_counter()
        for path, spec in usable:  # newest first
            length = spec['action'][1] - 1
            if self._capacity and loaded and self.num_steps + length > self._capacity:
                self._count(length)  # on disk and checked, beyond what memory keeps
                continue
            episode = self._read(path, spec)
            if episode is None:
                continue
            loaded.append(episode)
            self.num_steps += length
            self.memory_bytes += episode.memory_bytes
            self._count(length)
        self._episodes = loaded[::-1]
        if self.converted:
            print(
                f'Converted {self.converted} replay files in {self._directory} from compressed '
                f'to uncompressed episodes, which are read from disk instead of held in memory '
                f'(once, {time.perf_counter() - start:.0f} s).'
            )

    def _count(self, length):
        self.total_steps += length
        self.total_episodes += 1

    def _usable_files(self, paths):
        """(path, spec) of every file whose array headers make a usable episode.

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
            usable.append((path, spec))
        return usable

    def _inspect(self, path):
        """The file's {key: (dtype, rows, step shape)} from its headers, or None with a warning."""
        try:
            return _validate_spec(inspect_episode(path))
        except Exception as error:  # any unreadable file: keep it for inspection, go on
            _warn(f'Skipping unreadable replay file {path}: {type(error).__name__}: {error}')
            return None

    def _read(self, path, spec):
        """One Episode from disk (`spec`: its array headers, from inspect_episode), or None
        (with a warning) when the file cannot be used."""
        try:
            if self._in_memory:
                return self._in_memory_episode(path, _validate(load_episode(path), str(path)))
            offsets = stored_offsets(path)
            if any(_on_disk(spec[k][2]) and k not in offsets for k in spec):
                episode = _validate(load_episode(path), str(path))  # checks every CRC
                self._convert(path, episode)
                offsets = stored_offsets(path)
            return self._disk_episode(path, spec, offsets)
        except ReplayError:
            raise
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):  # the run's disk-full message
                raise
            _warn(f'Skipping unreadable replay file {path}: {type(error).__name__}: {error}')
        except Exception as error:  # e.g. a corrupt block the headers did not show
            _warn(f'Skipping unreadable replay file {path}: {type(error).__name__}: {error}')
        return None

    def _convert(self, path, episode):
        """Rewrite an earlier version's compressed file uncompressed, in place (atomically)."""
        try:
            self._write(path, episode)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise ReplayError(
                f'Replay file {path} is compressed (written by an earlier version) and cannot be '
                f'rewritten uncompressed in place ({error.strerror or error}); the training '
                f'replay reads images from uncompressed files. Make {self._directory} writable, '
                'then run the same command to resume.'
            ) from None
        self.converted += 1

    def _in_memory_episode(self, path, episode):
        return Episode(path, len(episode['action']), episode, dict(episode))

    def _disk_episode(self, path, spec, offsets):
        disk = {
            key: (offsets[key], np.dtype(dtype), shape)
            for key, (dtype, _, shape) in spec.items()
            if _on_disk(shape)
        }
        rows = spec['action'][1]
        size = path.stat().st_size
        for key, (offset, dtype, shape) in disk.items():
            end = offset + rows * dtype.itemsize * int(np.prod(shape, dtype=np.int64))
            if end > size:
                raise ValueError(f'array {key!r} needs {end} bytes, the file has {size}')
        with np.load(path, allow_pickle=False) as data:
            memory = {key: data[key] for key in spec if key not in disk}
        return Episode(path, rows, spec, memory, disk)

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
        return spec

    def _write(self, path, episode):
        save = np.savez_compressed if self._in_memory else np.savez
        # The temporary name is not *.npz, so a crash never leaves a half episode a restart loads.
        fileio.atomic_write(path, lambda file: save(file, **episode), kill_point='episode')

    def add(self, episode):
        """Write a finished episode to disk atomically, keep it sampleable, return its path."""
        episode = _validate(episode, 'Replay.add')
        spec = self._check_shapes(episode, 'The episode given to Replay.add')
        length = episode_length(episode)
        path = self._directory / f'{_timestamp()}-{uuid.uuid4().hex}-{length}.npz'
        self._write(path, episode)
        if self._in_memory:
            stored = self._in_memory_episode(path, episode)
        else:
            stored = self._disk_episode(path, spec, stored_offsets(path))
        with self._lock:
            self._episodes.append(stored)
            self.num_steps += length
            self.total_steps += length
            self.total_episodes += 1
            self.memory_bytes += stored.memory_bytes
            self._enforce_capacity()
            self._eligible.clear()
        return path

    def _enforce_capacity(self):
        while self._capacity and self.num_steps > self._capacity and len(self._episodes) > 1:
            dropped = self._episodes.pop(0)
            self.num_steps -= dropped.rows - 1
            self.memory_bytes -= dropped.memory_bytes

    def sample(self, batch, length, oversample_ends):
        """`batch` windows of `length` consecutive rows, stacked to [batch, length, ...]."""
        if batch < 1 or length < 1:
            raise ValueError(
                f'Replay.sample needs batch >= 1 and length >= 1, '
                f'got batch={batch}, length={length}.'
            )
        with self._lock:
            picks = [self._pick(length, oversample_ends) for _ in range(batch)]
            self._drawn += 1
            self._states[self._drawn] = self._rng.bit_generator.state
            while len(self._states) > KEPT_STATES:
                self._states.popitem(last=False)
        return self._gather(picks, length)

    def rng_state(self, used=None):
        """The sampling generator's state after the first `used` batches drawn since the
        dataset began (None: after every batch drawn), for a checkpoint."""
        with self._lock:
            if used is None:
                return self._rng.bit_generator.state
            if used not in self._states:
                raise ValueError(
                    f'The replay keeps the generator state of its last {KEPT_STATES} batches; '
                    f'batch {used} of {self._drawn} is not among them.'
                )
            return self._states[used]

    def set_rng_state(self, state):
        """Continue sampling from a state `rng_state` gave; the batch count starts again."""
        with self._lock:
            self._rng.bit_generator.state = state
            self._restart_count()

    def _restart_count(self):
        self._drawn = 0
        self._states = collections.OrderedDict({0: self._rng.bit_generator.state})

    def _gather(self, picks, length):
        """The windows (episode, start) copied into one array per key; the image rows of an
        episode file are one read each, straight into the batch."""
        first = picks[0][0]
        out = {
            key: np.empty((len(picks), length) + first.step_shape(key), first.dtype(key))
            for key in first.keys
        }
        files = {}
        try:
            for i, (episode, start) in enumerate(picks):
                if set(episode.keys) != set(first.keys):
                    raise ValueError(
                        f'Replay episodes have different keys: {sorted(first.keys)} vs '
                        f'{sorted(episode.keys)}; one logdir must hold one kind of episode.'
                    )
                for key, value in episode.memory.items():
                    out[key][i] = value[start : start + length]
                if episode.disk:
                    fd = files.get(episode.path)
                    if fd is None:
                        fd = files[episode.path] = self._open(episode.path)
                    for key in episode.disk:
                        episode.read_rows(fd, key, start, out[key][i])
        finally:
            for fd in files.values():
                os.close(fd)
        return out

    def _open(self, path):
        try:
            return os.open(path, os.O_RDONLY)
        except OSError as error:
            raise ReplayError(
                f'Replay file {path} cannot be read ({error.strerror}); the replay reads images '
                'from its episode files while it trains, so they must stay in place. Restore '
                'it, then run the same command to resume.'
            ) from None

    def _pick(self, length, oversample_ends):
        episode = self._episodes[self._rng.choice(self._eligible_indices(length))]
        total = episode.rows
        available = total - length  # the last start index
        if oversample_ends:
            # As the original: a start drawn from all rows, clamped to the last one, which so
            # gets chance length / total (the episode's end is in every such window).
            index = min(int(self._rng.integers(total)), available)
        else:
            index = int(self._rng.integers(available + 1))
        return episode, index

    def _eligible_indices(self, length):
        # As the original, an episode needs more rows than the window (it skips rows == length).
        if length not in self._eligible:
            self._eligible[length] = np.array(
                [i for i, ep in enumerate(self._episodes) if ep.rows > length]
            )
        eligible = self._eligible[length]
        if not len(eligible):
            longest = max((ep.rows for ep in self._episodes), default=0)
            raise ReplayError(
                f'No episode in replay {self._directory} has more than {length} rows: all '
                f'{len(self._episodes)} in-memory episodes are too short for dataset.length '
                f'{length} (longest: {longest} rows). Lower dataset.length or collect longer '
                f'episodes.'
            )
        return eligible

    def dataset(self, batch, length, oversample_ends):
        """An infinite tf.data.Dataset of `sample(...)` dicts, prefetched (drawn ahead of
        their use: which episodes a batch can come from depends on thread timing)."""
        import tensorflow as tf  # lazily: replay files are usable without TensorFlow

        with self._lock:
            self._restart_count()
            if not self._episodes:
                raise ReplayError(
                    f'Replay {self._directory} is empty: add or prefill episodes '
                    f'before calling dataset().'
                )
            example = self._episodes[-1]
        signature = {
            key: tf.TensorSpec(
                (batch, length) + tuple(example.step_shape(key)), tf.as_dtype(example.dtype(key))
            )
            for key in example.keys
        }

        def generator():
            while True:
                yield self.sample(batch, length, oversample_ends)

        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        return dataset.prefetch(2)

    def batches(self, batch, length, oversample_ends):
        """An infinite iterator of `sample(...)` dicts as tensors, each drawn when asked for:
        the same draws as `dataset`, but each batch sees exactly the episodes added before it
        was asked for, so a run is reproducible (config deterministic)."""
        import tensorflow as tf

        with self._lock:
            if not self._episodes:
                raise ReplayError(
                    f'Replay {self._directory} is empty: add or prefill episodes '
                    f'before calling batches().'
                )
            self._restart_count()
        while True:
            yield {
                k: tf.convert_to_tensor(v)
                for k, v in self.sample(batch, length, oversample_ends).items()
            }
