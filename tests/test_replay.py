import importlib
import os
import re
import stat
import warnings

import numpy as np
import pytest

from dreamer_core import replay as replay_module
from dreamer_core.replay import Replay, load_episode


def make_episode(length, start=0, image_size=4, action_dim=2, seed=0):
    """An episode of `length` steps (length + 1 rows) with a `step` counter starting at `start`."""
    rng = np.random.default_rng(seed)
    rows = length + 1
    return {
        'image': rng.integers(0, 256, (rows, image_size, image_size, 3), dtype=np.uint8),
        'action': rng.normal(size=(rows, action_dim)).astype(np.float32),
        'reward': rng.normal(size=rows).astype(np.float32),
        'discount': np.ones(rows, np.float32),
        'reset': np.arange(rows) == 0,
        'done': np.arange(rows) == rows - 1,
        'step': np.arange(start, start + rows, dtype=np.int64),
    }


@pytest.fixture
def clock(monkeypatch):
    """Distinct, increasing file-name timestamps (real ones repeat within one second)."""
    times = iter(f'20240101T{h:02d}{m:02d}00' for h in range(24) for m in range(60))
    monkeypatch.setattr(replay_module, '_timestamp', lambda: next(times))


def in_memory_step_starts(replay):
    return sorted(int(ep['step'][0]) for ep in replay._episodes)


def test_add_then_reload_gives_identical_arrays(tmp_path):
    episode = make_episode(5)
    path = Replay(tmp_path / 'a' / 'b').add(episode)
    loaded = Replay(tmp_path / 'a' / 'b')._episodes
    assert len(loaded) == 1
    assert set(loaded[0]) == set(episode)
    for key, value in episode.items():
        assert loaded[0][key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[0][key], value)
        np.testing.assert_array_equal(load_episode(path)[key], value)


def test_file_name_pattern_and_length(tmp_path):
    path = Replay(tmp_path).add(make_episode(7))
    assert re.fullmatch(r'\d{8}T\d{6}-[0-9a-f]{32}-7\.npz', path.name)
    assert path.parent == tmp_path


def test_atomic_write_leaves_no_temp_and_temp_is_not_npz(tmp_path, monkeypatch):
    seen = []
    original = os.replace

    def spy(src, dst):
        seen.append((str(src), str(dst)))
        return original(src, dst)

    monkeypatch.setattr(os, 'replace', spy)
    path = Replay(tmp_path).add(make_episode(3))
    assert len(seen) == 1
    source, target = seen[0]
    assert target == str(path)
    assert not source.endswith('.npz')
    assert os.path.dirname(source) == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_failed_write_removes_temp_file(tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', fail)
    with pytest.raises(OSError, match='disk full'):
        Replay(tmp_path).add(make_episode(3))
    assert os.listdir(tmp_path) == []


def test_total_steps_resume_from_file_names(tmp_path):
    replay = Replay(tmp_path)
    for length in (3, 4, 6):
        replay.add(make_episode(length))
    assert (replay.total_steps, replay.total_episodes) == (13, 3)
    restarted = Replay(tmp_path)
    assert (restarted.total_steps, restarted.total_episodes) == (13, 3)
    assert (restarted.num_steps, restarted.num_episodes) == (13, 3)


def test_capacity_drops_oldest_from_memory_but_keeps_files(tmp_path, clock):
    replay = Replay(tmp_path, capacity=10)
    for i in range(4):
        replay.add(make_episode(4, start=100 * i))
    assert in_memory_step_starts(replay) == [200, 300]
    assert (replay.num_steps, replay.num_episodes) == (8, 2)
    assert (replay.total_steps, replay.total_episodes) == (16, 4)
    assert len(list(tmp_path.glob('*.npz'))) == 4


def test_capacity_always_keeps_newest_episode(tmp_path):
    replay = Replay(tmp_path, capacity=3)
    replay.add(make_episode(2, start=0))
    replay.add(make_episode(9, start=100))
    assert in_memory_step_starts(replay) == [100]
    assert replay.num_steps == 9


def test_reload_newest_first_under_capacity(tmp_path, clock):
    writer = Replay(tmp_path)
    for i in range(5):
        writer.add(make_episode(4, start=100 * i))
    restarted = Replay(tmp_path, capacity=9)
    assert in_memory_step_starts(restarted) == [300, 400]
    assert restarted.num_steps == 8
    assert restarted.total_steps == 20
    # Memory stays ordered oldest first, so the next add drops episode 300 first.
    restarted.add(make_episode(4, start=500))
    assert in_memory_step_starts(restarted) == [400, 500]


def test_corrupt_files_are_skipped_with_warning_and_kept(tmp_path, clock):
    replay = Replay(tmp_path)
    good = replay.add(make_episode(4, start=0))
    truncated = replay.add(make_episode(4, start=100))
    truncated.write_bytes(truncated.read_bytes()[: len(truncated.read_bytes()) // 2])
    garbage = tmp_path / '20240101T235900-deadbeef-5.npz'
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.warns(RuntimeWarning) as record:
        restarted = Replay(tmp_path)
    messages = ' '.join(str(w.message) for w in record)
    assert truncated.name in messages and garbage.name in messages
    assert good.name not in messages
    assert in_memory_step_starts(restarted) == [0]
    assert garbage.exists() and truncated.exists()


def test_obs_shapes_mismatch_names_file_and_shapes(tmp_path):
    path = Replay(tmp_path).add(make_episode(3, image_size=4))
    with pytest.raises(ValueError) as info:
        Replay(tmp_path, obs_shapes={'image': (8, 8, 3)})
    message = str(info.value)
    assert path.name in message
    assert '(4, 4, 3)' in message and '(8, 8, 3)' in message
    assert 'new logdir' in message
    assert Replay(tmp_path, obs_shapes={'image': (4, 4, 3)}).num_episodes == 1


@pytest.mark.parametrize(
    'bad, match',
    [
        ([1, 2], 'dict'),
        ({'action': np.zeros((1, 2))}, 'at least 2 rows'),
        ({'action': np.zeros((3, 2)), 'reward': np.zeros(4)}, 'same first dimension'),
    ],
)
def test_add_rejects_bad_episodes(tmp_path, bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Replay(tmp_path).add(bad)
    assert os.listdir(tmp_path) == []


def test_sampled_windows_are_contiguous_slices(tmp_path):
    replay = Replay(tmp_path, seed=3)
    episodes = {}
    for i, length in enumerate((5, 9, 14)):
        episodes[100 * i] = make_episode(length, start=100 * i, seed=i)
        replay.add(episodes[100 * i])
    batch = replay.sample(batch=32, length=6, oversample_ends=True)
    assert batch['image'].shape == (32, 6, 4, 4, 3)
    assert batch['action'].shape == (32, 6, 2)
    for b in range(32):
        steps = batch['step'][b]
        np.testing.assert_array_equal(np.diff(steps), 1)
        source = episodes[int(steps[0]) // 100 * 100]
        index = int(steps[0]) % 100
        for key, value in source.items():
            np.testing.assert_array_equal(batch[key][b], value[index : index + 6])


def test_sampling_is_reproducible_with_seed(tmp_path):
    Replay(tmp_path).add(make_episode(20))
    first = Replay(tmp_path, seed=7).sample(4, 5, True)['step']
    second = Replay(tmp_path, seed=7).sample(4, 5, True)['step']
    np.testing.assert_array_equal(first, second)


def start_index_frequencies(tmp_path, total, length, oversample_ends, draws=20000):
    replay = Replay(tmp_path, seed=0)
    replay.add(make_episode(total - 1))
    starts = replay.sample(draws, length, oversample_ends)['step'][:, 0]
    return np.bincount(starts, minlength=total - length + 1) / draws


def test_start_index_uniform_without_oversampling(tmp_path):
    total, length = 10, 4
    freq = start_index_frequencies(tmp_path, total, length, oversample_ends=False)
    assert len(freq) == total - length + 1
    np.testing.assert_allclose(freq, 1 / (total - length + 1), atol=0.02)


def test_oversample_ends_puts_extra_mass_on_last_start(tmp_path):
    # The original clamps a draw over all `total` rows: the last start gets length / total.
    total, length = 10, 4
    freq = start_index_frequencies(tmp_path, total, length, oversample_ends=True)
    assert len(freq) == total - length + 1
    assert freq[-1] == pytest.approx(length / total, abs=0.015)
    np.testing.assert_allclose(freq[:-1], 1 / total, atol=0.015)


def original_window_probabilities(rows, length, oversample_ends):
    """P(episode, start) of the original's sampler, by enumerating its draws.

    Its loop: pick an episode uniformly, skip it unless it has more than `length` rows, then
    start = min(randint(0, total), total - length) with oversampling, else
    randint(0, total - length + 1).
    """
    eligible = [i for i, total in enumerate(rows) if total - length >= 1]
    probs = {}
    for i in eligible:
        available = rows[i] - length
        draws = range(rows[i]) if oversample_ends else range(available + 1)
        for draw in draws:
            key = (i, min(draw, available))
            probs[key] = probs.get(key, 0.0) + 1 / (len(eligible) * len(draws))
    return probs


@pytest.mark.parametrize('oversample_ends', [True, False])
def test_window_distribution_matches_the_original(tmp_path, oversample_ends):
    length, draws = 4, 30000
    steps = (3, 6, 9)  # 4 rows (== length: never sampled), 7 and 10 rows
    replay = Replay(tmp_path, seed=1)
    for i, count in enumerate(steps):
        replay.add(make_episode(count, start=100 * i, seed=i))
    first = replay.sample(draws, length, oversample_ends)['step'][:, 0]
    keys, counts = np.unique(np.stack([first // 100, first % 100], 1), axis=0, return_counts=True)
    got = {tuple(int(v) for v in key): count for key, count in zip(keys, counts)}
    want = original_window_probabilities([s + 1 for s in steps], length, oversample_ends)
    assert set(got) == set(want)  # no window of the 4-row episode, none outside the reference
    for key, p in want.items():
        sigma = np.sqrt(draws * p * (1 - p))
        assert abs(got[key] - draws * p) < 5 * sigma, (key, got[key], draws * p)


def test_short_episodes_are_skipped(tmp_path):
    replay = Replay(tmp_path)
    replay.add(make_episode(2, start=0))
    replay.add(make_episode(4, start=50))  # exactly `length` rows: the original skips it too
    replay.add(make_episode(10, start=100))
    starts = replay.sample(50, 5, False)['step'][:, 0]
    assert np.all(starts >= 100)


@pytest.mark.parametrize('length', [10, 4])
def test_all_episodes_too_short_error(tmp_path, length):
    replay = Replay(tmp_path)
    replay.add(make_episode(3))  # 4 rows
    with pytest.raises(ValueError, match=f'too short for dataset.length {length}'):
        replay.sample(2, length, True)


def test_dataset_shapes_and_dtypes(tmp_path):
    import tensorflow as tf

    replay = Replay(tmp_path)
    episode = make_episode(8)
    replay.add(episode)
    batch = next(iter(replay.dataset(batch=3, length=5, oversample_ends=False)))
    assert set(batch) == set(episode)
    for key, value in episode.items():
        assert batch[key].shape == (3, 5) + value.shape[1:]
        assert batch[key].dtype == tf.as_dtype(value.dtype)
    steps = batch['step'].numpy()
    np.testing.assert_array_equal(np.diff(steps, axis=1), 1)


def test_dataset_on_empty_replay_errors(tmp_path):
    with pytest.raises(ValueError, match='empty'):
        Replay(tmp_path).dataset(2, 3, True)


def test_no_warnings_on_clean_reload(tmp_path):
    Replay(tmp_path).add(make_episode(3))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert Replay(tmp_path).num_episodes == 1


def bad_files(folder, good):
    """One file of each kind a crash or a stray copy leaves, all named like real episodes."""
    episode = load_episode(good)
    name = lambda tag: folder / f'20200101T0000{tag}-{"f" * 32}-5.npz'
    data = good.read_bytes()
    files = {
        'wrong keys': name('01'),
        'truncated': name('02'),
        'zero bytes': name('03'),
        'directory': name('04'),
        'wrong dtype': name('05'),
        'other image shape': name('06'),
        'not an archive': name('07'),
        'action as float64': name('08'),
    }
    np.savez_compressed(files['wrong keys'], frames=np.zeros((6, 4)))
    files['truncated'].write_bytes(data[: len(data) // 2])
    files['zero bytes'].write_bytes(b'')
    files['directory'].mkdir()
    np.savez_compressed(files['wrong dtype'], **{**episode, 'image': episode['image'] / 255})
    np.savez_compressed(files['other image shape'], **make_episode(5, image_size=8))
    files['not an archive'].write_text('episode copied by hand\n')
    action = episode['action'].astype(np.float64)
    np.savez_compressed(files['action as float64'], **{**episode, 'action': action})
    return files


def test_every_kind_of_bad_file_is_skipped_and_counts_for_nothing(tmp_path, clock):
    writer = Replay(tmp_path)
    good = [writer.add(make_episode(4, start=100 * i)) for i in range(3)]
    files = bad_files(tmp_path, good[0])
    with pytest.warns(RuntimeWarning) as record:
        restarted = Replay(tmp_path, obs_shapes={'image': (4, 4, 3)})
    messages = [str(w.message) for w in record]
    for kind, path in files.items():
        assert sum(path.name in m for m in messages) == 1, (kind, messages)
    assert not any(path.name in m for path in good for m in messages)
    # Only the three good episodes count: the bad files' names claim 5 steps each.
    assert (restarted.total_steps, restarted.total_episodes) == (12, 3)
    assert (restarted.num_steps, restarted.num_episodes) == (12, 3)
    assert in_memory_step_starts(restarted) == [0, 100, 200]
    assert all(path.exists() for path in files.values())  # kept for inspection
    # The episodes sampled and added afterwards are the good kind.
    assert restarted.sample(2, 3, False)['image'].dtype == np.uint8
    restarted.add(make_episode(4, start=300))
    with pytest.raises(ValueError, match='one kind of episode'):
        restarted.add({**make_episode(4), 'action': np.zeros((5, 2), np.float64)})


def test_bad_files_beyond_capacity_are_checked_too(tmp_path, clock):
    writer = Replay(tmp_path)
    good = [writer.add(make_episode(4, start=100 * i)) for i in range(3)]
    bad = tmp_path / f'20200101T000000-{"f" * 32}-5.npz'  # oldest: not kept in memory
    bad.write_bytes(good[0].read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match='Skipping unreadable replay file'):
        restarted = Replay(tmp_path, capacity=4)
    assert (restarted.total_steps, restarted.total_episodes) == (12, 3)
    assert restarted.num_steps == 4


def test_corrupt_data_behind_good_headers_counts_for_nothing(tmp_path, clock):
    writer = Replay(tmp_path)
    good = writer.add(make_episode(4, start=0))
    damaged = writer.add(make_episode(6, start=100))
    data = bytearray(damaged.read_bytes())
    # Flip bytes in the middle of the compressed image data; the zip directory stays intact.
    data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)
    damaged.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=damaged.name):
        restarted = Replay(tmp_path)
    assert (restarted.total_steps, restarted.total_episodes) == (4, 1)
    assert in_memory_step_starts(restarted) == [0]
    assert good.exists()


def test_all_files_of_another_image_shape_are_refused(tmp_path, clock):
    writer = Replay(tmp_path)
    for i in range(2):
        writer.add(make_episode(4, start=100 * i, image_size=8))
    with pytest.raises(replay_module.ReplayError, match=r'per-step shape \(8, 8, 3\).*\(4, 4, 3\)'):
        Replay(tmp_path, obs_shapes={'image': (4, 4, 3)})


def test_atomic_write_gives_new_files_the_umask_mode_and_keeps_an_existing_mode(tmp_path):
    # mkstemp's temporary files are 0600; the renamed result must not stay owner-only.
    from dreamer_core import fileio

    mask = os.umask(0o022)
    try:
        importlib.reload(fileio)
        fresh = tmp_path / 'config.yaml'
        fileio.atomic_write(fresh, lambda f: f.write(b'a: 1\n'))
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        kept = tmp_path / 'results.json'
        kept.write_bytes(b'{}')
        kept.chmod(0o640)
        fileio.atomic_write(kept, lambda f: f.write(b'[]'))
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
        assert kept.read_bytes() == b'[]'
    finally:
        os.umask(mask)
        importlib.reload(fileio)


def add_all(replay, episodes):
    for episode in episodes:
        replay.add(episode)
    return replay


def test_disk_replay_samples_the_same_batches_as_the_in_memory_one(tmp_path, clock):
    # The windows read from the files equal the plain slices of episodes held in memory: the
    # same draws from the same seed pick the same (episode, start) and give the same arrays.
    episodes = [
        make_episode(n, start=100 * i, image_size=6, seed=i) for i, n in enumerate((9, 4, 13))
    ]
    disk = add_all(Replay(tmp_path / 'disk', seed=3), episodes)
    memory = add_all(Replay(tmp_path / 'memory', seed=3, in_memory=True), episodes)
    for batch, length, ends in [(5, 4, False), (7, 3, True), (1, 1, False), (4, 9, True)]:
        got, want = disk.sample(batch, length, ends), memory.sample(batch, length, ends)
        assert set(got) == set(want) == set(episodes[0])
        for key in want:
            assert got[key].dtype == want[key].dtype
            np.testing.assert_array_equal(got[key], want[key])
    # And reloaded from its files, under the same seed, it draws those batches again.
    again = Replay(tmp_path / 'disk', seed=3)
    fresh = Replay(tmp_path / 'memory', seed=3, in_memory=True)
    np.testing.assert_array_equal(
        again.sample(6, 5, False)['image'], fresh.sample(6, 5, False)['image']
    )


def test_a_training_replay_holds_only_the_vector_arrays_in_memory(tmp_path):
    episodes = [make_episode(30, image_size=16, seed=i) for i in range(4)]
    replay = add_all(Replay(tmp_path), episodes)
    vectors = sum(v.nbytes for ep in episodes for k, v in ep.items() if k != 'image')
    images = sum(ep['image'].nbytes for ep in episodes)
    assert replay.memory_bytes == vectors < images
    assert all('image' in ep.disk and 'image' not in ep.memory for ep in replay._episodes)
    assert Replay(tmp_path).memory_bytes == vectors  # the same after reloading
    # Files are stored uncompressed: each image array is one contiguous run of bytes.
    for path in sorted(tmp_path.glob('*.npz')):
        offset = replay_module.stored_offsets(path)['image']
        data = path.read_bytes()
        image = load_episode(path)['image']
        assert data[offset : offset + image.nbytes] == image.tobytes()


def test_in_memory_replay_stays_bounded_over_many_episodes(tmp_path):
    # The evaluation replay of train.py: capacity time_limit (1000 for DMC), episodes of 500
    # steps: it never holds more than two, however many evaluations a run makes.
    replay = Replay(tmp_path, capacity=1000, in_memory=True)
    sizes = []
    for i in range(12):
        replay.add(make_episode(500, image_size=4, seed=i))
        sizes.append(replay.memory_bytes)
    one = sum(v.nbytes for v in make_episode(500, image_size=4).values())
    assert replay.num_episodes == 2 and replay.total_episodes == 12
    assert max(sizes) == 2 * one
    assert len(list(tmp_path.glob('*.npz'))) == 12  # every episode stays on disk


def test_compressed_files_of_earlier_versions_are_converted_once(tmp_path, clock, capsys):
    episodes = [make_episode(n, start=100 * i, image_size=5, seed=i) for i, n in enumerate((6, 8))]
    paths = []
    for i, episode in enumerate(episodes):  # the format every earlier version wrote
        paths.append(tmp_path / f'20230101T00000{i}-{"a" * 32}-{len(episode["action"]) - 1}.npz')
        np.savez_compressed(paths[-1], **episode)
    assert 'image' not in replay_module.stored_offsets(paths[0])
    replay = Replay(tmp_path, seed=1)
    assert 'Converted 2 replay files' in capsys.readouterr().out
    assert (replay.total_steps, replay.num_episodes, replay.converted) == (14, 2, 2)
    assert sorted(tmp_path.glob('*.npz')) == sorted(paths)  # the same names, no other files
    for path, episode in zip(paths, episodes):
        assert 'image' in replay_module.stored_offsets(path)
        for key, value in load_episode(path).items():
            np.testing.assert_array_equal(value, episode[key])
    reference = add_all(Replay(tmp_path / 'ref', seed=1, in_memory=True), episodes)
    got = replay.sample(8, 5, True)
    for key, value in reference.sample(8, 5, True).items():
        np.testing.assert_array_equal(got[key], value)
    assert Replay(tmp_path).converted == 0
    assert 'Converted' not in capsys.readouterr().out


def test_an_episode_file_cut_short_is_skipped_on_load_and_named_when_sampled(tmp_path, clock):
    replay = Replay(tmp_path)
    kept = replay.add(make_episode(20, image_size=8))
    cut = replay.add(make_episode(20, start=100, image_size=8, seed=1))
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) - 500])  # the image array's last rows are gone
    with pytest.warns(RuntimeWarning, match=f'Skipping unreadable replay file {cut}'):
        reloaded = Replay(tmp_path)
    assert (reloaded.total_steps, in_memory_step_starts(reloaded)) == (20, [0])
    # A file cut short after it was loaded: the sampler names it and says what to do.
    with pytest.raises(replay_module.ReplayError, match=f'{kept.name} ended .* bytes early'):
        offset = replay_module.stored_offsets(kept)['image']
        kept.write_bytes(kept.read_bytes()[: offset + 10 * 8 * 8 * 3])  # rows 10 on are gone
        for _ in range(20):
            reloaded.sample(4, 20, True)  # windows that reach the lost rows


def test_a_compressed_file_that_cannot_be_rewritten_stops_with_the_fix(tmp_path, monkeypatch):
    path = tmp_path / f'20230101T000000-{"a" * 32}-6.npz'
    np.savez_compressed(path, **make_episode(6))
    before = path.read_bytes()

    def refuse(self, target, episode):
        raise PermissionError(13, 'Permission denied', str(target))

    monkeypatch.setattr(Replay, '_write', refuse)
    with pytest.raises(replay_module.ReplayError, match=f'{path.name} is compressed.*writable'):
        Replay(tmp_path)
    assert path.read_bytes() == before  # nothing lost
