"""Natural-video backgrounds for DMC renders (the `nat_` tasks).

Every pixel of a render whose blue channel exceeds both red and green (the DMC sky and floor)
is replaced by the pixel of the current frame of a background video. One video per episode,
from a random start frame; each render advances one frame, wrapping around the clip's real
frames. (The original padded clips shorter than 1000 frames with black frames; we wrap.)
"""

import collections
import hashlib
import pathlib
import warnings

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from dreamer_core.config import ConfigError
from dreamer_core.errors import UserError

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm')
MAX_FRAMES = 1000  # the original read the first 1000 frames of each video
CACHE_BUDGET_BYTES = 2 * 10**9

_HOW_TO_GET_VIDEOS = (
    'Get the Kinetics-400 "driving car" clips with `python download_videos.py` from the '
    'repository root (it fills kinetics400/videos/train and kinetics400/videos/test), or point '
    '--bg_path_train / --bg_path_test at folders of your own videos '
    f'({", ".join(VIDEO_EXTENSIONS)}).'
)


class BackgroundError(UserError, FileNotFoundError):
    """No usable background video: the message says which folder and how to fill it."""


def mask_and_composite(image, background):
    """Pixels of `image` with blue > red and blue > green taken from `background`, the rest
    from `image`; both uint8 [H, W, 3]. Returns a new array."""
    image, background = np.asarray(image), np.asarray(background)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image must be uint8 [H, W, 3], got {image.dtype} {image.shape}.')
    if background.shape != image.shape or background.dtype != np.uint8:
        raise ValueError(
            f'background must be uint8 {image.shape} like the image, '
            f'got {background.dtype} {background.shape}.'
        )
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    mask = (blue > red) & (blue > green)
    return np.where(mask[..., None], background, image)


def describe_error(error, limit=300):
    """`Type: message` on one line; a long ffmpeg stderr dump is cut to its last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = ' ... '.join(lines[:1] + lines[-1:] if len(lines) > 1 else lines)
    text = f'{type(error).__name__}: {text}'
    return text if len(text) <= limit else text[: limit - 3] + '...'


def list_videos(directory):
    """Video files directly in `directory`, sorted by name."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise BackgroundError(
            f'Background video folder {directory} does not exist. {_HOW_TO_GET_VIDEOS}'
        )
    files = sorted(
        path
        for path in directory.iterdir()
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS
    )
    if not files:
        raise BackgroundError(
            f'Background video folder {directory} holds no video files. {_HOW_TO_GET_VIDEOS}'
        )
    return files


def default_cache_videos(num_videos, image_size, max_frames, budget=CACHE_BUDGET_BYTES):
    """How many decoded videos fit the memory budget (at least one, at most all)."""
    height, width = image_size
    per_video = max_frames * height * width * 3
    return max(1, min(num_videos, budget // per_video))


def prepare_frame(frame, image_size):
    """One decoded frame -> uint8 RGB [H, W, 3] at image_size (H, W), Pillow bilinear."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.stack([frame] * 3, -1)
    elif frame.ndim == 3 and frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, -1)
    elif frame.ndim == 3 and frame.shape[-1] == 4:
        frame = frame[..., :3]
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f'unexpected video frame shape {frame.shape}.')
    height, width = image_size
    if frame.shape[:2] == (height, width):
        return frame.astype(np.uint8)
    resized = Image.fromarray(frame.astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, np.uint8)


def read_frames(path, max_frames=MAX_FRAMES):
    """The first `max_frames` decoded frames of a video at its own size, one at a time."""
    with imageio.get_reader(str(path), 'ffmpeg') as reader:
        for index, frame in enumerate(reader):
            yield frame
            if index + 1 >= max_frames:
                return


def decode_video(path, image_size, max_frames=MAX_FRAMES):
    """The first `max_frames` frames of a video as uint8 [N, H, W, 3]; raises on 0 frames."""
    frames = [prepare_frame(frame, image_size) for frame in read_frames(path, max_frames)]
    if not frames:
        raise ValueError('the video has no frames')
    return np.stack(frames)


def frames_fingerprint(path, max_frames=MAX_FRAMES):
    """What the env gets from a video: {'frames', 'fps', 'width', 'height', 'sha256'}, the hash
    over the decoded frames (shape and pixels) before resizing; raises on 0 frames.

    Two downloads of one video differ in their bytes (container, metadata) but decode to the
    same frames, so the hash tells whether two folders give the same backgrounds.
    """
    digest, count, shape = hashlib.sha256(), 0, None
    for frame in read_frames(path, max_frames):
        frame = np.ascontiguousarray(frame, np.uint8)
        shape = shape or frame.shape
        digest.update(repr(frame.shape).encode())
        digest.update(frame.tobytes())
        count += 1
    if not count:
        raise ValueError('the video has no frames')
    with imageio.get_reader(str(path), 'ffmpeg') as reader:
        fps = float(reader.get_meta_data().get('fps') or 0.0)
    return {
        'frames': count,
        'fps': fps,
        'width': shape[1],
        'height': shape[0],
        'sha256': digest.hexdigest(),
    }


class VideoBackground:
    """Replaces the blue pixels of each render with frames of a random background video.

    get_state() saves the random generator, the video list (file names in `directory`: the seed
    shuffled it), the files found unreadable, and the current video and frame index; the frames
    themselves are decoded again (or taken from the cache) by set_state().
    """

    def __init__(
        self,
        directory,
        image_size=(64, 64),
        max_videos=100,
        random_bg=False,
        seed=0,
        max_frames=MAX_FRAMES,
        cache_videos=None,
    ):
        image_size = tuple(int(size) for size in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ConfigError(f'image_size must be two positive ints (H, W), got {image_size}.')
        if max_videos < 1 or max_frames < 1:
            raise ConfigError(
                f'max_videos and max_frames must be >= 1, got {max_videos} and {max_frames}.'
            )
        self.directory = pathlib.Path(directory)
        self.image_size = image_size
        self.random_bg = bool(random_bg)
        self.max_frames = int(max_frames)
        self._rng = np.random.default_rng(seed)
        files = list_videos(self.directory)
        order = self._rng.permutation(len(files))
        self.files = [files[index] for index in order[:max_videos]]
        if cache_videos is None:
            cache_videos = default_cache_videos(len(self.files), image_size, self.max_frames)
        if cache_videos < 1:
            raise ConfigError(f'cache_videos must be >= 1, got {cache_videos}.')
        self.cache_videos = int(cache_videos)
        self.unreadable = set()
        self.decode_counts = collections.Counter()
        self._cache = collections.OrderedDict()
        self._frames = None
        self._path = None
        self._index = 0

    @property
    def cached(self):
        """Paths of the videos currently held decoded in memory."""
        return list(self._cache)

    def reset(self):
        """Pick a random readable video and a random start frame in it."""
        while True:
            candidates = [path for path in self.files if path not in self.unreadable]
            if not candidates:
                raise BackgroundError(
                    f'None of the {len(self.files)} video files tried in {self.directory} could '
                    f'be read (see the warnings above). {_HOW_TO_GET_VIDEOS}'
                )
            path = candidates[self._rng.integers(len(candidates))]
            frames = self._load(path)
            if frames is not None:
                break
        self._frames, self._path = frames, path
        self._index = int(self._rng.integers(len(frames)))

    def frame(self):
        """The current background frame, uint8 [H, W, 3]."""
        if self._frames is None:
            raise RuntimeError('VideoBackground: call reset() before frame() or apply().')
        return self._frames[self._index]

    def apply(self, image):
        """Composite the render over the current frame, then move to the next frame."""
        expected = (*self.image_size, 3)
        if np.shape(image) != expected:
            raise ValueError(
                f'render shape {np.shape(image)} does not match the background '
                f'size {expected}; pass the env image_size to VideoBackground.'
            )
        result = mask_and_composite(image, self.frame())
        if self.random_bg:
            self._index = int(self._rng.integers(len(self._frames)))
        else:
            self._index = (self._index + 1) % len(self._frames)
        return result

    def get_state(self):
        return {
            'rng': self._rng.bit_generator.state,
            'files': [path.name for path in self.files],
            'unreadable': sorted(path.name for path in self.unreadable),
            'video': None if self._path is None else self._path.name,
            'index': self._index,
        }

    def set_state(self, state):
        self._rng.bit_generator.state = state['rng']
        self.files = [self.directory / name for name in state['files']]
        self.unreadable = {self.directory / name for name in state['unreadable']}
        self._path, self._frames = None, None
        if state['video'] is not None:
            path = self.directory / state['video']
            frames = self._load(path)
            if frames is None:
                raise BackgroundError(f'The background video {path} of the saved state is gone.')
            self._path, self._frames = path, frames
        self._index = state['index']

    def _load(self, path):
        """Decoded frames from the LRU cache, decoding on a miss; None if unreadable."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        try:
            frames = decode_video(path, self.image_size, self.max_frames)
        except Exception as error:  # any decoder failure means: skip this file for good
            warnings.warn(
                f'Skipping background video {path}: it cannot be read ({describe_error(error)}).',
                RuntimeWarning,
                stacklevel=3,
            )
            self.unreadable.add(path)
            return None
        self.decode_counts[path] += 1
        self._cache[path] = frames
        while len(self._cache) > self.cache_videos:
            self._cache.popitem(last=False)
        return frames
