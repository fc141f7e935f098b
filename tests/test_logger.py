import io
import json
import re
import time

import numpy as np
import pytest

from dreamer_core.logger import Logger, progress


def read_jsonl(logdir):
    return [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]


def load_events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # TF2 tf.summary.scalar stores scalars as tensor summaries (the Scalars dashboard reads them).
    events = EventAccumulator(str(logdir), size_guidance={'images': 0, 'scalars': 0, 'tensors': 0})
    events.Reload()
    return events


def test_jsonl_steps_are_env_frames(tmp_path):
    logger = Logger(tmp_path, multiplier=4, outputs=('jsonl',))
    logger.scalar('loss', np.float32(0.25))
    logger.add({'return': 12.5, 'length': np.int64(7)}, prefix='train')
    logger.write(step=10)
    logger.scalar('loss', 0.5)
    logger.write(step=15)
    logger.write(step=20)  # nothing buffered: no line
    lines = read_jsonl(tmp_path)
    assert lines == [
        {'step': 40, 'loss': 0.25, 'train/return': 12.5, 'train/length': 7.0},
        {'step': 60, 'loss': 0.5},
    ]


def test_terminal_line(tmp_path, capsys):
    logger = Logger(tmp_path, multiplier=2, outputs=('terminal',))
    logger.add({'a': 1.23456789, 'b': 3.0})
    logger.video('policy', np.zeros((2, 4, 4, 3), np.uint8))
    logger.write(step=50)
    out = capsys.readouterr().out.strip()
    assert out == '[100] a 1.235 / b 3'
    assert not (tmp_path / 'metrics.jsonl').exists()


def test_add_rejects_other_ranks(tmp_path):
    logger = Logger(tmp_path, outputs=('jsonl',))
    with pytest.raises(ValueError, match='bad'):
        logger.add({'bad': np.zeros(3)})
    with pytest.raises(ValueError, match='outputs'):
        Logger(tmp_path, outputs=('wandb',))


def test_tensorboard_scalar_and_gif_video(tmp_path):
    import tensorflow as tf
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 5, 6, 8, 3), dtype=np.uint8)  # B, T, H, W, C
    logger = Logger(tmp_path, multiplier=3, outputs=('tensorboard',))
    logger.scalar('train/loss', 1.75)
    logger.add({'policy': frames}, prefix='eval')
    logger.write(step=7)
    logger.close()
    events = load_events(tmp_path)
    (scalar,) = events.Tensors('train/loss')
    assert scalar.step == 21
    assert float(tf.make_ndarray(scalar.tensor_proto)) == 1.75
    (image,) = events.Images('eval/policy')
    assert image.step == 21
    assert (image.height, image.width) == (6, 16)
    gif = Image.open(io.BytesIO(image.encoded_image_string))
    assert gif.format == 'GIF'
    assert gif.n_frames == 5
    assert gif.size == (16, 6)


def test_gif_tiles_batch_side_by_side_and_keeps_grayscale(tmp_path):
    from PIL import Image

    # Grayscale float frames: left sequence dark, right sequence bright, brightness rising in T.
    left = np.linspace(0.0, 0.3, 3)[:, None, None, None] * np.ones((3, 4, 5, 1))
    right = np.linspace(0.7, 1.0, 3)[:, None, None, None] * np.ones((3, 4, 5, 1))
    logger = Logger(tmp_path, outputs=('tensorboard',))
    logger.video('gray', np.stack([left, right]))
    logger.write(step=1)
    logger.close()
    (image,) = load_events(tmp_path).Images('gray')
    gif = Image.open(io.BytesIO(image.encoded_image_string))
    for t in range(3):
        gif.seek(t)
        pixels = np.asarray(gif.convert('L'), np.float32)
        assert pixels.shape == (4, 10)
        np.testing.assert_allclose(pixels[:, :5], round(255 * left[t, 0, 0, 0]), atol=2)
        np.testing.assert_allclose(pixels[:, 5:], round(255 * right[t, 0, 0, 0]), atol=2)


def test_fps_is_env_frames_per_second(tmp_path):
    logger = Logger(tmp_path, multiplier=2, outputs=('jsonl',))
    before = time.perf_counter()
    logger.scalar('x', 1.0)
    logger.write(step=100, fps=True)  # the first fps write only starts the clock
    after_first = time.perf_counter()
    time.sleep(0.05)
    before_second = time.perf_counter()
    logger.write(step=300, fps=True)
    after = time.perf_counter()
    first, second = read_jsonl(tmp_path)
    assert 'fps' not in first
    frames = (300 - 100) * 2
    assert frames / (after - before) <= second['fps'] <= frames / (before_second - after_first)
    assert second['step'] == 600


def test_progress_plain_lines_for_non_tty_and_throttled():
    stream = io.StringIO()
    bar = progress(total=200, desc='prefill', unit='frames', stream=stream, min_interval=10.0)
    bar.update(10)
    bar.update(10)  # too soon after the first line
    assert '\r' not in stream.getvalue()
    assert len(stream.getvalue().splitlines()) == 1  # the opening line only
    bar.update(180)
    bar.close()  # completion is always shown, once
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.match(r'prefill: 100%.* 200/200 ', lines[1]) and 'frames/s' in lines[1]


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_in_place_on_tty():
    stream = FakeTTY()
    bar = progress(total=4, desc='eval', unit='episodes', stream=stream)
    bar.update(1)
    bar.update(3)
    bar.close()
    text = stream.getvalue()
    assert text.count('\r') >= 2
    assert text.endswith('\n') and text.count('\n') == 1
    assert 'eval: 100%' in text and '4/4' in text
