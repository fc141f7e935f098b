"""make_env for nat_ tasks: folders per mode, the mask leaves the robot alone, frame order, paths.

Every nat env is compared against a plain dmc env built with the same seed and stepped with the
same actions: pixels that are not blue-dominant in the plain render must be unchanged, and the
blue-dominant ones must equal a frame of a fixture video (decoded here independently).
"""

import pathlib
import re

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from dreamer_core import config as config_lib
from dreamer_core import envs
from dreamer_core.backgrounds import BackgroundError
from tests import fixtures_video as fx

REPO = pathlib.Path(__file__).resolve().parents[1]
VARIANT_ROOT = REPO / 'Dreamer'
SIZE = (64, 64)
EDGE = 12  # rows read at the top (frame level) and bottom (video colour), clear of resize blur
# file name -> (video index, number of frames, source size (H, W)). Colours are not
# blue-dominant, so a composited pixel can never pass for the plain sky. Short clips: wrap.
TRAIN = {
    'red.mp4': (0, 9, (24, 32)),
    'green.mkv': (1, 11, (30, 20)),
    'orange.avi': (6, 8, (16, 16)),
}
TEST = {'yellow.mp4': (3, 7, (24, 24)), 'white.mp4': (8, 13, (20, 28))}
SEED = 3
STEPS = 14  # per episode; longer than every clip so the wrap-around is exercised


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('nat')
    return fx.make_video_dir(root / 'a', TRAIN), fx.make_video_dir(root / 'b', TEST)


def load_config(task, *flags):
    return config_lib.load(
        ['--task', task, '--configs', 'defaults', 'dmc', *flags], VARIANT_ROOT / 'dreamerv2'
    )


def nat_config(train, test):
    return load_config(
        'nat_cartpole_swingup', '--bg_path_train', str(train), '--bg_path_test', str(test)
    )


def reference_frames(path):
    """All frames of a video at SIZE: imageio's ffmpeg reader, then Pillow bilinear resize."""
    with imageio.get_reader(str(path), 'ffmpeg') as reader:
        return np.stack(
            [
                np.asarray(Image.fromarray(frame).resize(SIZE[::-1], Image.BILINEAR))
                for frame in reader
            ]
        )


def blue_mask(image):
    red, green, blue = (image[..., c].astype(np.int64) for c in range(3))
    return (blue > red) & (blue > green)


def rollout(env, actions, episodes=2):
    """Images of `episodes` episodes (reset + one per action each), as [E, T+1, H, W, 3]."""
    result = []
    for _ in range(episodes):
        images = [env.reset()['image']]
        images += [env.step(action)['image'] for action in actions]
        result.append(np.stack(images))
    return np.stack(result)


def identify_masked(image, mask):
    """(video, frame) read off the masked pixels: gray level on top, video colour at the bottom."""
    top, bottom = image[:EDGE][mask[:EDGE]], image[-EDGE:][mask[-EDGE:]]
    assert len(top) > 50 and len(bottom) > 50, 'the plain render should show sky and floor'
    level = np.median(top.astype(np.int64), 0)
    colour = np.median(bottom.astype(np.int64), 0)
    distances = np.abs(fx.VIDEO_COLOURS - colour).max(-1)
    video, t = int(distances.argmin()), int(round((level.mean() - 16) / 4))
    assert distances[video] <= 12, f'bottom colour {colour} is no fixture video colour'
    assert np.abs(level - fx.frame_level(t)).max() <= 1.5, f'top {level} is no frame level'
    return video, t


def check_episode(nat, plain, folder, specs):
    """One nat episode against the plain one: robot untouched, sky from one clip frame by frame."""
    masks = blue_mask(plain)
    assert masks.mean() > 0.5  # cartpole's render is mostly sky and floor
    np.testing.assert_array_equal(nat[~masks], plain[~masks])
    video, start = identify_masked(nat[0], masks[0])
    names = [name for name, spec in specs.items() if spec[0] == video]
    assert len(names) == 1, f'video {video} is not in {folder}'
    length = specs[names[0]][1]
    frames = reference_frames(folder / names[0])
    assert len(frames) == length
    for k, (image, mask) in enumerate(zip(nat, masks)):
        # One frame per render, the reset render included, wrapping around the real frames.
        assert identify_masked(image, mask) == (video, (start + k) % length)
        np.testing.assert_array_equal(image[mask], frames[(start + k) % length][mask])
    return video, start


def test_train_and_eval_envs_show_their_folders_and_leave_the_robot_alone(folders, opened):
    train_folder, test_folder = folders
    actions = np.random.default_rng(0).uniform(-1, 1, (STEPS, 1)).astype(np.float32)
    plain_env = envs.make_env(load_config('dmc_cartpole_swingup'), 'train', VARIANT_ROOT, SEED)
    opened.append(plain_env)
    plain = rollout(plain_env, actions)
    assert not np.array_equal(plain[0, 0], plain[0, -1])  # the cart really moves
    config = nat_config(*folders)
    seen = {}
    for mode, folder, specs in (('train', train_folder, TRAIN), ('eval', test_folder, TEST)):
        env = envs.make_env(config, mode, VARIANT_ROOT, SEED)
        opened.append(env)
        assert env.obs_shape == (*SIZE, 3)
        nat = rollout(env, actions)
        assert nat.shape == plain.shape and nat.dtype == np.uint8
        seen[mode] = [check_episode(n, p, folder, specs) for n, p in zip(nat, plain)]
    train_videos = {spec[0] for spec in TRAIN.values()}
    test_videos = {spec[0] for spec in TEST.values()}
    assert {video for video, _ in seen['train']} <= train_videos
    assert {video for video, _ in seen['eval']} <= test_videos
    # Each reset draws a new clip and start rather than carrying on where the last episode ended.
    lengths = {video: length for video, length, _ in [*TRAIN.values(), *TEST.values()]}
    carried_on = [
        (video, (start + STEPS + 1) % lengths[video])
        for episodes in seen.values()
        for video, start in episodes[:-1]
    ]
    fresh = [episode for episodes in seen.values() for episode in episodes[1:]]
    assert carried_on != fresh


def test_relative_bg_paths_resolve_against_the_variant_folder(folders, opened):
    variant_root = folders[0].parent / 'MyVariant'  # a sibling of the video folders a/ and b/
    (variant_root / 'dreamerv2').mkdir(parents=True, exist_ok=True)
    config = nat_config('../a', '../b')
    # The pole hangs down at reset, so the top and bottom rows are all sky and floor.
    edges = np.ones(SIZE, bool)
    for mode, specs in (('train', TRAIN), ('eval', TEST)):
        env = envs.make_env(config, mode, variant_root, SEED)
        opened.append(env)
        video, _ = identify_masked(env.reset()['image'], edges)
        assert video in {spec[0] for spec in specs.values()}
    # Resolved against the variant folder, not the working directory or dreamerv2/.
    missing = re.escape(str((folders[0] / 'x').resolve()))
    with pytest.raises(BackgroundError, match=missing):
        envs.make_env(nat_config('../a/x', '../b'), 'train', variant_root)


def test_resolve_bg_path():
    default = load_config('nat_cartpole_swingup')
    assert envs.resolve_bg_path(default.bg_path_train, VARIANT_ROOT) == (
        REPO / 'kinetics400' / 'videos' / 'train'
    )
    assert envs.resolve_bg_path(default.bg_path_test, REPO / 'TPC') == (
        REPO / 'kinetics400' / 'videos' / 'test'
    )
    assert envs.resolve_bg_path('/abs/videos', VARIANT_ROOT) == pathlib.Path('/abs/videos')
    assert envs.resolve_bg_path('~/videos', VARIANT_ROOT) == pathlib.Path.home() / 'videos'
