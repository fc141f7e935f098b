"""How to read image windows from a large replay: the measurements behind dreamer_core/replay.py.

Usage:
  python benchmarks/replay_read.py ~/.cache/dreamer-soak/dreamerpro/train_replay \\
      [--batches 40] [--dmc-episodes 4] [--json benchmarks/results/soak/replay_read.json]

On the episode files of a training replay (uncompressed .npz, as train.py writes them), it draws
the same 50 x 51 windows three ways and prints batches per second and how much the process's
resident memory grew:
  - pread:  the replay's own sampler (one read per window into the batch; page cache only),
  - mmap:   every episode's image array memory-mapped for the run, windows copied from the maps
            (file pages the process touched count in its resident memory, RssFile),
  - zlib:   images compressed in memory in chunks of 16 rows (zlib level 1) and the chunks a
            window needs decompressed; on `--dmc-episodes` rendered walker episodes, since
            synthetic frames compress far better than real ones,
and the bytes per step each keeps in memory and on disk.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import zlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.soak import dmc_episode  # noqa: E402
from dreamer_core import hardware  # noqa: E402
from dreamer_core.replay import Replay  # noqa: E402

BATCH, ROWS, CHUNK = 50, 51, 16


def memory_mb():
    memory = hardware.process_memory()
    return {key: round(value / 2**20, 1) for key, value in memory.items()}


def timed(draw, batches):
    draw()  # the first one opens what it needs
    start = time.perf_counter()
    for _ in range(batches):
        draw()
    return batches / (time.perf_counter() - start)


def windows(replay, rng):
    """(episode, start) of one batch, drawn as the sampler does (oversample_ends off)."""
    picks = []
    for _ in range(BATCH):
        episode = replay._episodes[rng.integers(len(replay._episodes))]
        picks.append((episode, int(rng.integers(episode.rows - ROWS + 1))))
    return picks


def measure(directory, batches, dmc_episodes):
    results = {}
    replay = Replay(directory)
    steps = replay.num_steps
    step_bytes = int(np.prod(replay._episodes[0].step_shape('image')))
    before = memory_mb()
    rate = timed(lambda: replay.sample(BATCH, ROWS, False), batches)
    results['pread'] = {
        'batches_per_s': round(rate, 2),
        'rss_growth_mb': round(memory_mb()['rss'] - before['rss'], 1),
        'memory_bytes_per_step': round(replay.memory_bytes / steps, 1),
        'disk_bytes_per_step': step_bytes,
    }

    rng = np.random.default_rng(0)
    maps = {}
    for episode in replay._episodes:
        offset, dtype, shape = episode.disk['image']
        maps[episode.path] = np.memmap(
            episode.path, dtype, 'r', offset=offset, shape=(episode.rows, *shape)
        )
    out = np.empty((BATCH, ROWS, *replay._episodes[0].step_shape('image')), np.uint8)

    def draw_mmap():
        for i, (episode, start) in enumerate(windows(replay, rng)):
            out[i] = maps[episode.path][start : start + ROWS]

    before = memory_mb()
    rate = timed(draw_mmap, batches)
    after = memory_mb()
    results['mmap'] = {
        'batches_per_s': round(rate, 2),
        'rss_growth_mb': round(after['rss'] - before['rss'], 1),
        'rss_file_growth_mb': round(after.get('rss_file', 0) - before.get('rss_file', 0), 1),
        'note': f'after {batches + 1} batches; grows with every new page touched',
    }
    maps.clear()

    subset = [dmc_episode('dreamerpro', seed=seed) for seed in range(dmc_episodes)]
    start = time.perf_counter()
    chunks, raw = [], 0
    for episode in subset:
        images = episode['image']
        raw += images.nbytes
        chunks.append(
            [
                zlib.compress(images[i : i + CHUNK].tobytes(), 1)
                for i in range(0, len(images), CHUNK)
            ]
        )
    compress_s = time.perf_counter() - start
    kept = sum(len(c) for parts in chunks for c in parts)
    shape = subset[0]['image'].shape[1:]
    rows_of = [len(episode['image']) for episode in subset]

    def draw_zlib():
        for i in range(BATCH):
            index = int(rng.integers(len(subset)))
            begin = int(rng.integers(rows_of[index] - ROWS + 1))
            first, last = begin // CHUNK, (begin + ROWS - 1) // CHUNK
            data = b''.join(zlib.decompress(c) for c in chunks[index][first : last + 1])
            rows = np.frombuffer(data, np.uint8).reshape(-1, *shape)
            out[i] = rows[begin - first * CHUNK : begin - first * CHUNK + ROWS]

    results['zlib'] = {
        'batches_per_s': round(timed(draw_zlib, batches), 2),
        'compression_ratio': round(raw / kept, 2),
        'compress_mb_per_s': round(raw / compress_s / 1e6, 1),
        'memory_bytes_per_step': round(kept / sum(rows_of), 1),
        'dmc_episodes': len(subset),
    }
    model, flags = hardware.cpu_info()
    return {
        'replay': str(directory),
        'steps': steps,
        'episodes': replay.num_episodes,
        'batch': [BATCH, ROWS],
        'cpu_model': model,
        'cpu_flags': flags,
        'methods': results,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('directory', help='a train_replay folder written by train.py')
    parser.add_argument('--batches', type=int, default=40)
    parser.add_argument('--dmc-episodes', type=int, default=4)
    parser.add_argument('--json', help='also write the numbers here')
    args = parser.parse_args(argv)
    record = measure(pathlib.Path(args.directory).expanduser(), args.batches, args.dmc_episodes)
    print(f'{record["episodes"]} episodes, {record["steps"]} steps; {record["cpu_model"]}')
    print('| method | batches/s (50 x 51) | memory |')
    print('|---|---|---|')
    for name, values in record['methods'].items():
        extra = {k: v for k, v in values.items() if k != 'batches_per_s'}
        print(f'| {name} | {values["batches_per_s"]} | {extra} |')
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(record, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
