"""benchmarks/make_videos.py: locally made background clips that the nat_ envs can read."""

import pathlib

import numpy as np

from benchmarks import make_videos
from dreamer_core import backgrounds


def test_a_clip_is_the_same_for_its_seed_moves_and_differs_between_seeds():
    first = np.stack(list(make_videos.clip_frames(7, 12, 32)))
    again = np.stack(list(make_videos.clip_frames(7, 12, 32)))
    other = np.stack(list(make_videos.clip_frames(8, 12, 32)))
    assert first.shape == (12, 32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other).mean() > 10
    # The background moves: consecutive frames differ, and it is not a flat colour.
    assert all(np.abs(first[t + 1].astype(int) - first[t]).mean() > 0.5 for t in range(11))
    assert first[0].std() > 10


def test_train_and_test_clips_never_share_a_seed():
    seeds = {split: [] for split in ('train', 'test')}
    for path, seed in make_videos.plan(pathlib.Path('v'), 300, 300, seed=0):
        seeds[path.parent.name].append(seed)
    assert len(seeds['train']) == len(seeds['test']) == 300
    assert not set(seeds['train']) & set(seeds['test'])


def test_clips_are_written_once_and_read_by_the_backgrounds(tmp_path, capsys):
    out = tmp_path / 'videos'
    args = ['--out', str(out), '--train', '2', '--test', '1', '--frames', '9', '--size', '16']
    assert make_videos.main(args) == 0
    assert '3 clips written, 0 already present' in capsys.readouterr().out
    train = backgrounds.list_videos(out / 'train')
    test = backgrounds.list_videos(out / 'test')
    assert [p.name for p in train] == ['local_000.mp4', 'local_001.mp4']
    assert [p.name for p in test] == ['local_000.mp4']
    frames = backgrounds.decode_video(train[1], (16, 16))
    assert frames.shape == (9, 16, 16, 3)
    expected = np.stack(list(make_videos.clip_frames(1, 9, 16)))
    assert np.abs(frames.astype(int) - expected).mean() < 20  # lossy, but the same clip
    stamps = [p.stat().st_mtime_ns for p in train]
    assert make_videos.main(args) == 0
    assert '0 clips written, 3 already present' in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in train] == stamps
    assert not [p for p in out.rglob('*') if 'partial' in p.name]


def test_bad_sizes_get_one_line_and_write_nothing(tmp_path, capsys):
    for flag, value in (('--frames', '0'), ('--size', '8'), ('--train', '-1')):
        assert make_videos.main(['--out', str(tmp_path / 'v'), flag, value]) == 2
        line = capsys.readouterr().out.strip()
        assert line.startswith(flag) and '\n' not in line
    assert not (tmp_path / 'v').exists()
