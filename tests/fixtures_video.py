"""Tiny test videos whose every frame says which video and which frame it is.

Layout of frame t of video v (any size): the top 40% of rows is a flat gray of level
`frame_level(t)`, the bottom 40% a flat colour `VIDEO_COLOURS[v]`, and the middle rows a bar
that moves one column per frame. Encoded near-losslessly (x264 qp 0, yuv444p) so a frame read
back, even resized, is identified by `identify` with a wide tolerance.
"""

import pathlib

import imageio.v2 as imageio
import numpy as np

MAX_FRAMES = 60
VIDEO_COLOURS = np.array(
    [
        (200, 40, 40),
        (40, 200, 40),
        (40, 40, 200),
        (200, 200, 40),
        (200, 40, 200),
        (40, 200, 200),
        (240, 140, 20),
        (110, 50, 170),
        (240, 240, 240),
        (20, 20, 20),
    ],
    np.int64,
)


def frame_level(t):
    """Gray level that encodes frame index t (4 levels apart, so codec noise cannot blur it)."""
    if not 0 <= t < MAX_FRAMES:
        raise ValueError(f'frame index {t} outside [0, {MAX_FRAMES})')
    return 16 + 4 * t


def make_frames(video, num_frames, size):
    """Frames [N, H, W, 3] of `video` (index into VIDEO_COLOURS) at size (H, W)."""
    height, width = size
    top, bottom = int(0.4 * height), height - int(0.4 * height)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t, :top] = frame_level(t)
        frames[t, bottom:] = VIDEO_COLOURS[video]
        frames[t, top:bottom, t % width] = 255
    return frames


def write_video(path, video, num_frames=20, size=(10, 12), grayscale=False):
    """Write one test video and return its frames as written (before encoding)."""
    frames = make_frames(video, num_frames, size)
    if grayscale:
        frames = frames.mean(-1).round().astype(np.uint8)
    return write_frames(path, frames, fps=10)


def write_frames(path, frames, fps):
    """Encode `frames` losslessly (H.264 at qp 0, 4:4:4) to `path`; returns them."""
    writer = imageio.get_writer(
        str(path),
        format='FFMPEG',
        fps=fps,
        codec='libx264',
        pixelformat='yuv444p',
        output_params=['-qp', '0'],
        macro_block_size=2,
        ffmpeg_log_level='error',
    )
    with writer:
        for frame in frames:
            writer.append_data(frame)
    return frames


def write_long_video(path, num_frames, size=(8, 8)):
    """A video of many frames (more than MAX_FRAMES allows for `write_video`), no two alike
    up to 1792 frames: red steps by 7, green counts the wraps of red, a blue bar moves."""
    height, width = size
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = (7 * t) % 256
        frames[t, ..., 1] = 30 * (t // 256)
        frames[t, :, t % width, 2] = 255
    return write_frames(path, frames, fps=30)


def write_garbage(path, num_bytes=4096, seed=0):
    """A file of random bytes: a name that looks like a video, content that is not."""
    data = np.random.default_rng(seed).integers(0, 256, num_bytes, dtype=np.uint8)
    pathlib.Path(path).write_bytes(data.tobytes())


def write_empty(path):
    pathlib.Path(path).write_bytes(b'')


def identify(frame, tolerance=12):
    """(video, t) that a frame came from, read from the flat regions; raises if it matches no
    colour or level within `tolerance`."""
    frame = np.asarray(frame, np.int64)
    rows = max(1, int(0.2 * frame.shape[0]))
    level = np.median(frame[:rows].reshape(-1, 3), 0)
    colour = np.median(frame[-rows:].reshape(-1, 3), 0)
    distances = np.abs(VIDEO_COLOURS - colour).max(-1)
    video = int(distances.argmin())
    t = int(round((level.mean() - 16) / 4))
    if distances[video] > tolerance or not 0 <= t < MAX_FRAMES:
        raise AssertionError(f'frame matches no test video: colour {colour}, level {level}')
    if np.abs(level - frame_level(t)).max() > 1.5:
        raise AssertionError(f'top level {level} is not a frame level (noise too large)')
    return video, t


def make_video_dir(directory, specs):
    """Write videos named by `specs`: {file name: (video, num_frames, size)}; returns the dir."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, (video, num_frames, size) in specs.items():
        write_video(directory / name, video, num_frames, size)
    return directory
