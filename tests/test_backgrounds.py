"""Natural-video backgrounds: the mask rule, frame order, seeding, caching, bad files."""

import warnings

import imageio.v2 as imageio
import numpy as np
import pytest

from dreamer_core import backgrounds
from dreamer_core.backgrounds import BackgroundError, VideoBackground, mask_and_composite
from tests import fixtures_video as fx

SIZE = (16, 16)
# file name -> (video index, number of frames, source size (H, W))
TRAIN = {
    'a.mp4': (0, 20, (10, 12)),
    'b.mp4': (1, 33, (32, 40)),
    'c.mkv': (2, 25, (16, 16)),
    'd.avi': (3, 41, (24, 20)),
}
TEST = {'e.mp4': (4, 22, (12, 14)), 'f.mp4': (5, 30, (20, 16)), 'g.mkv': (6, 27, (10, 10))}
FRAMES = {video: num for video, num, _ in [*TRAIN.values(), *TEST.values()]}


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('videos')
    train = fx.make_video_dir(root / 'train', TRAIN)
    (train / 'notes.txt').write_text('not a video')
    test = fx.make_video_dir(root / 'test', TEST)
    return train, test


def sky(value=200):
    """A render that is all 'sky' (blue above red and green): every pixel is masked."""
    image = np.zeros((*SIZE, 3), np.uint8)
    image[..., 2] = value
    return image


def shown(bg):
    """(video, frame) that the next apply shows, read off the composite of an all-sky render."""
    return fx.identify(bg.apply(sky()))


def test_mask_and_composite_matches_a_pixel_loop():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4, (6, 7, 3)).astype(np.uint8)  # few values: many ties
    background = rng.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    result = mask_and_composite(image, background)
    expected = image.copy()
    for i in range(6):
        for j in range(7):
            red, green, blue = (int(c) for c in image[i, j])
            if blue > red and blue > green:
                expected[i, j] = background[i, j]
    np.testing.assert_array_equal(result, expected)
    assert result is not image and result.dtype == np.uint8
    assert 0 < (result != image).any(-1).sum() < 42  # both cases really occur


def test_mask_and_composite_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match='background'):
        mask_and_composite(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match='uint8'):
        mask_and_composite(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint8))


def test_masked_pixels_come_from_the_video_and_the_rest_from_the_render(folders):
    bg = VideoBackground(folders[0], SIZE, seed=1)
    bg.reset()
    render = np.zeros((*SIZE, 3), np.uint8)
    render[:, :8] = (30, 60, 180)  # sky: masked
    render[:, 8:12] = (100, 90, 80)  # body: kept
    render[:, 12:] = (50, 120, 120)  # blue ties green: kept
    background = bg.frame().copy()
    result = bg.apply(render)
    np.testing.assert_array_equal(result[:, :8], background[:, :8])
    np.testing.assert_array_equal(result[:, 8:], render[:, 8:])
    assert not np.array_equal(background[:, 8:], render[:, 8:])


def test_frames_advance_by_one_and_wrap_around(folders):
    bg = VideoBackground(folders[0], SIZE, seed=2)
    bg.reset()
    video, start = fx.identify(bg.frame())
    length = FRAMES[video]
    for step in range(length + 5):  # crosses the end of the clip
        assert shown(bg) == (video, (start + step) % length)


def test_max_frames_limits_the_clip_that_is_cycled(folders):
    bg = VideoBackground(folders[0], SIZE, seed=2, max_frames=5)
    bg.reset()
    video, start = fx.identify(bg.frame())
    assert start < 5
    assert [shown(bg) for _ in range(7)] == [(video, (start + k) % 5) for k in range(7)]


def test_random_bg_jumps_within_the_current_video(folders):
    bg = VideoBackground(folders[0], SIZE, seed=3, random_bg=True)
    bg.reset()
    video, _ = fx.identify(bg.frame())
    seen = [shown(bg) for _ in range(40)]
    assert {v for v, _ in seen} == {video}
    frames = [t for _, t in seen]
    in_order = sum((b - a) % FRAMES[video] == 1 for a, b in zip(frames, frames[1:]))
    assert in_order < 5
    assert len(set(frames)) > FRAMES[video] // 3


def test_seeds_differ_and_repeat(folders):
    def run(seed):
        bg = VideoBackground(folders[0], SIZE, seed=seed)
        out = []
        for _ in range(4):
            bg.reset()
            out += [shown(bg) for _ in range(2)]
        return out

    runs = {seed: run(seed) for seed in range(6)}
    assert len({tuple(r[:1]) for r in runs.values()}) > 1  # first (video, start) varies
    assert run(4) == runs[4]


def test_max_videos_cuts_the_list(folders):
    bg = VideoBackground(folders[0], SIZE, seed=5, max_videos=2)
    assert len(bg.files) == 2 and set(bg.files) <= set(folders[0].iterdir())
    allowed = {TRAIN[path.name][0] for path in bg.files}
    seen = set()
    for _ in range(20):
        bg.reset()
        seen.add(fx.identify(bg.frame())[0])
    assert seen == allowed


def test_only_video_files_are_listed(folders):
    bg = VideoBackground(folders[0], SIZE)
    assert sorted(path.name for path in bg.files) == sorted(TRAIN)


def test_train_and_test_folders_give_different_videos(folders):
    seen = []
    for folder in folders:
        bg = VideoBackground(folder, SIZE, seed=0)
        videos = set()
        for _ in range(15):
            bg.reset()
            videos.add(fx.identify(bg.frame())[0])
        seen.append(videos)
    assert seen[0] <= {v for v, _, _ in TRAIN.values()}
    assert seen[1] <= {v for v, _, _ in TEST.values()}
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_unreadable_files_are_skipped_with_one_warning_each(tmp_path):
    fx.make_video_dir(tmp_path, {'good1.mp4': (0, 12, (10, 12)), 'good2.mp4': (1, 14, (10, 12))})
    fx.write_garbage(tmp_path / 'garbage.mp4')
    fx.write_empty(tmp_path / 'empty.mp4')
    bg = VideoBackground(tmp_path, SIZE, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(25):
            bg.reset()
            assert fx.identify(bg.frame())[0] in (0, 1)
    assert bg.unreadable == {tmp_path / 'garbage.mp4', tmp_path / 'empty.mp4'}
    messages = [str(w.message) for w in caught]
    for name in ('garbage.mp4', 'empty.mp4'):
        assert sum(name in m for m in messages) == 1


def test_only_unreadable_files_raise_instead_of_looping(tmp_path):
    fx.write_garbage(tmp_path / 'x.mp4')
    fx.write_empty(tmp_path / 'y.mkv')
    bg = VideoBackground(tmp_path, SIZE)
    with pytest.warns(RuntimeWarning), pytest.raises(BackgroundError, match='None of the 2'):
        bg.reset()


@pytest.mark.parametrize('make', ['missing', 'empty'])
def test_missing_or_empty_folder_says_how_to_get_videos(tmp_path, make):
    folder = tmp_path / 'nowhere'
    if make == 'empty':
        folder.mkdir()
        (folder / 'readme.txt').write_text('x')
    with pytest.raises(BackgroundError, match='download_videos.py') as info:
        VideoBackground(folder, SIZE)
    assert isinstance(info.value, FileNotFoundError) and str(folder) in str(info.value)


def test_each_video_is_decoded_once_while_cached(folders):
    bg = VideoBackground(folders[0], SIZE, seed=0)
    assert bg.cache_videos == len(TRAIN)
    for _ in range(30):
        bg.reset()
        bg.apply(sky())
    assert len(bg.decode_counts) == len(TRAIN)
    assert set(bg.decode_counts.values()) == {1}


def test_a_small_cache_stays_bounded_and_redecodes(folders):
    bg = VideoBackground(folders[0], SIZE, seed=0, cache_videos=1)
    for _ in range(12):
        bg.reset()
        assert len(bg.cached) == 1
    assert sum(bg.decode_counts.values()) > len(bg.decode_counts)


def test_default_cache_size_follows_the_memory_budget():
    per_video = 10 * 4 * 5 * 3
    assert backgrounds.default_cache_videos(100, (4, 5), 10, budget=7 * per_video + 1) == 7
    assert backgrounds.default_cache_videos(3, (4, 5), 10, budget=7 * per_video) == 3
    assert backgrounds.default_cache_videos(3, (4, 5), 10, budget=per_video - 1) == 1
    big = backgrounds.default_cache_videos(500, (64, 64), 1000)
    assert 1 < big == backgrounds.CACHE_BUDGET_BYTES // (1000 * 64 * 64 * 3) < 500


def test_grayscale_video_becomes_three_channels(tmp_path):
    written = fx.write_video(tmp_path / 'gray.mp4', 8, num_frames=6, size=(10, 12), grayscale=True)
    frames = backgrounds.decode_video(tmp_path / 'gray.mp4', (10, 12), 1000)
    assert frames.shape == (6, 10, 12, 3) and frames.dtype == np.uint8
    diff = np.abs(frames.astype(int) - written[..., None].astype(int))
    assert diff.max() <= 2


def test_prepare_frame_channels_and_size():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(backgrounds.prepare_frame(gray, (3, 4)), np.stack([gray] * 3, -1))
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 99
    flat = backgrounds.prepare_frame(rgba, (7, 5))
    assert flat.shape == (7, 5, 3)
    assert (flat == np.array([10, 20, 30], np.uint8)).all()


def test_bad_calls_are_clear_errors(folders):
    bg = VideoBackground(folders[0], SIZE)
    with pytest.raises(RuntimeError, match='reset'):
        bg.apply(sky())
    bg.reset()
    with pytest.raises(ValueError, match='image_size'):
        bg.apply(np.zeros((8, 8, 3), np.uint8))


def test_describe_error_keeps_first_and_last_line_and_is_bounded():
    error = OSError('Could not load meta\n=== stderr ===\n\n banner \n Invalid data \n')
    assert backgrounds.describe_error(error) == 'OSError: Could not load meta ... Invalid data'
    assert backgrounds.describe_error(ValueError('short')) == 'ValueError: short'
    long = backgrounds.describe_error(RuntimeError('x' * 1000), limit=50)
    assert len(long) == 50 and long.endswith('...')


def test_a_video_longer_than_1000_frames_gives_exactly_its_first_1000(tmp_path):
    # The original read the first 1000 frames of each video (whole downloads) and cycled them.
    fx.write_long_video(tmp_path / 'long.mp4', 1010, size=(8, 8))
    with imageio.get_reader(str(tmp_path / 'long.mp4'), 'ffmpeg') as reader:
        every = np.stack([frame for frame in reader])
    assert len(every) == 1010 and len(np.unique(every[:1001], axis=0)) == 1001
    bg = VideoBackground(tmp_path, image_size=(8, 8), seed=3)
    assert bg.max_frames == backgrounds.MAX_FRAMES == 1000
    bg.reset()
    sky8 = np.zeros((8, 8, 3), np.uint8)
    sky8[..., 2] = 200
    played = np.stack([bg.apply(sky8) for _ in range(1001)])
    start = int(np.flatnonzero((every[:1000] == played[0]).all(axis=(1, 2, 3)))[0])
    np.testing.assert_array_equal(played[:1000], np.roll(every[:1000], -start, axis=0))
    np.testing.assert_array_equal(played[1000], played[0])  # wraps after frame 999
