"""Metrics to the terminal, logdir/metrics.jsonl and TensorBoard, counted in environment frames."""

import io
import json
import pathlib
import sys
import time

import numpy as np

from dreamer_core import faults

OUTPUTS = ('terminal', 'jsonl', 'tensorboard')
VIDEO_FPS = 20


def _format(value):
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f'{value:.4g}'


def _to_uint8(frames, name):
    frames = np.asarray(frames)
    if np.issubdtype(frames.dtype, np.floating):
        return (np.clip(frames, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if frames.dtype != np.uint8:
        raise TypeError(f'Video "{name}" must be uint8 or float in [0, 1], got {frames.dtype}.')
    return frames


def _video_frames(frames, name):
    """uint8 [T, H, W, C] from [T, H, W, C] or [B, T, H, W, C] (B tiled side by side)."""
    frames = _to_uint8(frames, name)
    if frames.ndim == 5:
        batch, steps, height, width, channels = frames.shape
        frames = frames.transpose(1, 2, 0, 3, 4).reshape(steps, height, batch * width, channels)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or not frames.shape[0]:
        raise ValueError(
            f'Video "{name}" must be [T, H, W, C] or [B, T, H, W, C] with C 1 or 3 '
            f'and T >= 1, got shape {frames.shape}.'
        )
    return frames


def encode_gif(frames, fps=VIDEO_FPS):
    """GIF bytes of uint8 [T, H, W, C] frames, looping forever."""
    from PIL import Image

    mode = 'L' if frames.shape[-1] == 1 else 'RGB'
    images = [Image.fromarray(frame[..., 0] if mode == 'L' else frame, mode) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format='GIF',
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    return buffer.getvalue()


class Logger:
    """Buffers scalars and videos and writes them together at one step.

    Steps passed in are agent steps; everything written is in environment frames
    (agent step * multiplier, the action repeat).
    """

    def __init__(self, logdir, multiplier=1, outputs=OUTPUTS):
        unknown = set(outputs) - set(OUTPUTS)
        if unknown:
            raise ValueError(f'Unknown logger outputs {sorted(unknown)}; choose from {OUTPUTS}.')
        self._logdir = pathlib.Path(logdir).expanduser()
        self._logdir.mkdir(parents=True, exist_ok=True)
        self._multiplier = multiplier
        self._outputs = tuple(outputs)
        self._scalars = {}
        self._videos = {}
        self._writer = None
        self._last_fps = None  # (frames, time) of the previous write(fps=True)

    def scalar(self, name, value):
        value = np.asarray(value)
        if value.ndim != 0:
            raise ValueError(f'Scalar "{name}" must be 0-d, got shape {value.shape}.')
        self._scalars[name] = float(value)

    def video(self, name, frames):
        self._videos[name] = _video_frames(frames, name)

    def add(self, mapping, prefix=None):
        for name, value in mapping.items():
            name = f'{prefix}/{name}' if prefix else name
            value = np.asarray(value)
            if value.ndim == 0:
                self.scalar(name, value)
            elif value.ndim in (4, 5):
                self.video(name, value)
            else:
                raise ValueError(
                    f'Logger.add: "{name}" has shape {value.shape}; expected a '
                    f'scalar (0-d) or a video (4-d or 5-d).'
                )

    def write(self, step, fps=False):
        frames = int(step * self._multiplier)
        if fps:
            self._log_fps(frames)
        if not self._scalars and not self._videos:
            return
        if 'terminal' in self._outputs:
            self._write_terminal(frames)
        if 'jsonl' in self._outputs:
            self._write_jsonl(frames)
        if 'tensorboard' in self._outputs:
            self._write_tensorboard(frames)
        self._scalars.clear()
        self._videos.clear()

    def _log_fps(self, frames):
        now = time.perf_counter()
        if self._last_fps is not None:
            previous_frames, previous_time = self._last_fps
            self.scalar('fps', (frames - previous_frames) / max(now - previous_time, 1e-9))
        self._last_fps = (frames, now)

    def _write_terminal(self, frames):
        if self._scalars:
            items = ' / '.join(f'{k} {_format(v)}' for k, v in self._scalars.items())
            print(f'[{frames}] {items}', flush=True)

    def _write_jsonl(self, frames):
        if self._scalars:
            faults.fail_point('metrics', self._logdir / 'metrics.jsonl')
            with (self._logdir / 'metrics.jsonl').open('a') as file:
                file.write(json.dumps({'step': frames, **self._scalars}) + '\n')

    def _write_tensorboard(self, frames):
        import tensorflow as tf  # lazily: terminal and jsonl logging work without TensorFlow

        faults.fail_point('tensorboard', self._logdir)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self._logdir), max_queue=1000)
        with self._writer.as_default():
            for name, value in self._scalars.items():
                tf.summary.scalar(name, value, step=frames)
            for name, video in self._videos.items():
                tf.summary.experimental.write_raw_pb(_gif_summary(tf, name, video), step=frames)
        self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _gif_summary(tf, name, video):
    """A serialized Summary holding the video as an animated GIF image (TensorBoard animates it)."""
    _, height, width, channels = video.shape
    image = tf.compat.v1.Summary.Image(
        height=height, width=width, colorspace=channels, encoded_image_string=encode_gif(video)
    )
    summary = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag=name, image=image)])
    return summary.SerializeToString()


def _clock(seconds):
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class _Lines(io.TextIOBase):
    """A stream for tqdm that turns each in-place redraw into one plain line (for log files)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        line = text.replace('\r', '').replace('\x1b[A', '').strip()
        if line:
            self._stream.write(line + '\n')
            self._stream.flush()
        return len(text)

    def flush(self):
        self._stream.flush()


def progress(total, desc, unit, stream=None, min_interval=10.0):
    """A tqdm progress bar: redrawn in place on a terminal, throttled plain lines otherwise."""
    from tqdm import tqdm

    stream = sys.stdout if stream is None else stream
    tty = bool(getattr(stream, 'isatty', lambda: False)())
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=stream if tty else _Lines(stream),
        mininterval=0.5 if tty else min_interval,
        maxinterval=float('inf') if not tty else 10.0,
        dynamic_ncols=tty,
        ncols=None if tty else 80,
        leave=True,
    )
