"""End to end on natural-video backgrounds: each variant's real train.py on nat_cartpole_swingup.

The stored episodes must show the fixture clips of the right folder (train replay: train folder,
eval replay: test folder) where the plain render has its blue sky and floor, one frame per step.
"""

import numpy as np
import pytest

from dreamer_core.replay import load_episode
from tests import fixtures_video as fx
from tests.e2e import metrics, run_variant

# file name -> (video index, number of frames, source size (H, W)); colours not blue-dominant.
TRAIN = {'red.mp4': (0, 15, (24, 32)), 'orange.mkv': (6, 17, (20, 20))}
TEST = {'yellow.mp4': (3, 13, (24, 24)), 'white.mp4': (8, 19, (16, 28))}
LENGTHS = {video: num for video, num, _ in [*TRAIN.values(), *TEST.values()]}


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('nat_videos')
    return fx.make_video_dir(root / 'train', TRAIN), fx.make_video_dir(root / 'test', TEST)


def blue_fraction(images):
    """Share of pixels whose blue exceeds red and green: the DMC sky and floor that nat_ masks."""
    red, green, blue = (images[..., c].astype(np.int64) for c in range(3))
    return ((blue > red) & (blue > green)).mean()


def check_replay(directory, specs):
    """Every stored episode shows one clip of `specs` in its top and bottom rows (mostly sky and
    floor in cartpole), advancing one frame per step; returns how many episodes there were."""
    files = sorted(directory.glob('*.npz'))
    assert files, f'no episodes in {directory}'
    allowed = {spec[0] for spec in specs.values()}
    for path in files:
        images = load_episode(path)['image']
        assert images.shape[1:] == (64, 64, 3) and images.dtype == np.uint8
        # A plain cartpole render is ~98% blue-dominant; composited, almost nothing is.
        assert blue_fraction(images) < 0.02, path.name
        shown = [fx.identify(image) for image in images]
        video, start = shown[0]
        assert video in allowed, f'{path.name} shows video {video}, not one of {sorted(allowed)}'
        want = [(video, (start + k) % LENGTHS[video]) for k in range(len(images))]
        assert shown == want, path.name
    return len(files)


@pytest.mark.parametrize('variant', ['Dreamer', 'DreamerPro', 'TPC'])
def test_train_on_natural_backgrounds(tmp_path, folders, variant):
    logdir = tmp_path / 'run'
    train, test = folders
    result = run_variant(
        variant,
        logdir,
        '--task',
        'nat_cartpole_swingup',
        '--bg_path_train',
        str(train),
        '--bg_path_test',
        str(test),
        '--steps',
        '160',
        '--eval_eps',
        '1',
        configs=('defaults', 'dmc', 'reward_1000'),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # 160 frames of 40-frame episodes: 4 training episodes; 1 random evaluation episode, then
    # one at frame 80 and one in the final evaluation at frame 160.
    assert check_replay(logdir / 'train_replay', TRAIN) == 4
    assert check_replay(logdir / 'eval_replay', TEST) == 3
    evals = [row for row in metrics(logdir) if 'eval_return' in row]
    assert evals and all(np.isfinite(row['eval_return']) for row in evals)
