"""Make background videos locally, for `nat_` runs on a machine that cannot reach YouTube.

Usage:
  python benchmarks/make_videos.py --out kinetics400/videos [--train 20] [--test 10] \\
      [--frames 1000] [--size 96] [--seed 0]

Writes `{out}/train/local_XXX.mp4` and `{out}/test/local_XXX.mp4`: procedural clips that share
what makes the Kinetics backgrounds hard for a pixel world model (structure at every scale,
colour, motion that never repeats inside an episode, nothing to do with the task), without
being camera footage. Each frame is a coloured texture of smoothed noise that drifts and slowly
changes, with a few bright blobs that move across it. Train and test clips come from disjoint
seeds, so evaluation sees backgrounds that training never saw, as with the original's split.
Results on these clips are not comparable to the paper's Kinetics numbers: say which videos a
run used (the README's natural-background results do).

A clip is written to a temporary name and renamed when complete; clips already present are
kept, so an interrupted call can be repeated.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A [size, size, 3] float field in [0, 1]: random values on a cells x cells torus grid,
    bilinearly interpolated, so the texture tiles and can drift without seams."""
    grid = rng.random((cells, cells, 3))
    coords = np.arange(size) * cells / size
    low = np.floor(coords).astype(int)
    frac = (coords - low)[:, None]
    high = (low + 1) % cells
    rows = grid[low] * (1 - frac[..., None]) + grid[high] * frac[..., None]
    cols = rows[:, low] * (1 - frac[None, :, :]) + rows[:, high] * frac[None, :, :]
    return cols


def clip_frames(seed: int, frames: int, size: int):
    """The frames of clip `seed` (uint8 [size, size, 3]), one at a time; the same for a seed."""
    rng = np.random.default_rng(seed)
    layers = [_smooth_noise(rng, size, cells) for cells in (3, 7, 15)]
    weights = rng.dirichlet(np.ones(3))
    velocity = rng.uniform(-1.5, 1.5, (3, 2))  # pixels per frame, per layer
    palette = rng.uniform(0.2, 1.0, (2, 3))  # colours mixed by the texture's brightness
    blobs = rng.integers(2, 5)
    centre = rng.uniform(0, size, (blobs, 2))
    speed = rng.uniform(-2.0, 2.0, (blobs, 2))
    radius = rng.uniform(size / 16, size / 6, blobs)
    colour = rng.uniform(0, 1, (blobs, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for t in range(frames):
        field = np.zeros((size, size, 3))
        for layer, weight, (vy, vx) in zip(layers, weights, velocity):
            shift = (int(round(vy * t)) % size, int(round(vx * t)) % size)
            field += weight * np.roll(layer, shift, axis=(0, 1))
        phase = 0.5 + 0.5 * np.sin(2 * np.pi * t / 400 + np.arange(3))
        image = field.mean(-1, keepdims=True) * palette[0] + (1 - field) * palette[1] * phase
        for (cy, cx), (sy, sx), r, c in zip(centre, speed, radius, colour):
            y, x = (cy + sy * t) % size, (cx + sx * t) % size
            inside = (yy - y) ** 2 + (xx - x) ** 2 < r**2
            image[inside] = c
        yield (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def write_clip(path: pathlib.Path, seed: int, frames: int, size: int) -> bool:
    """Write one clip unless `path` exists; returns whether it was written."""
    import imageio.v2 as imageio

    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f'.{path.stem}.partial.mp4')
    writer = imageio.get_writer(
        str(partial),
        format='FFMPEG',
        fps=30,
        codec='libx264',
        quality=8,
        macro_block_size=16 if size % 16 == 0 else 2,
        ffmpeg_log_level='error',
    )
    try:
        with writer:
            for frame in clip_frames(seed, frames, size):
                writer.append_data(frame)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return True


def plan(out: pathlib.Path, train: int, test: int, seed: int):
    """(path, clip seed) of every clip: train seeds and test seeds never overlap."""
    base = 1_000_003 * seed
    for split, count, offset in (('train', train, 0), ('test', test, 500_000)):
        for index in range(count):
            yield out / split / f'local_{index:03d}.mp4', base + offset + index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='make_videos.py', description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, help='folder that gets train/ and test/')
    parser.add_argument('--train', type=int, default=20)
    parser.add_argument('--test', type=int, default=10)
    parser.add_argument('--frames', type=int, default=1000)
    parser.add_argument('--size', type=int, default=96, help='frame height and width')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    for name, minimum in (('train', 0), ('test', 0), ('frames', 1), ('size', 16)):
        if getattr(args, name) < minimum:
            print(f'--{name} must be at least {minimum}, got {getattr(args, name)}.')
            return 2
    written = kept = 0
    for path, clip_seed in plan(pathlib.Path(args.out), args.train, args.test, args.seed):
        if write_clip(path, clip_seed, args.frames, args.size):
            written += 1
        else:
            kept += 1
    print(f'{written} clips written, {kept} already present, in {args.out}/train and /test.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
