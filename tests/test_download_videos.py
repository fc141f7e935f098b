"""download_videos.py with a fake downloader: selection, resume, failures, import, exit code."""

import csv
import io
import json
import sys
import tarfile

import imageio.v2 as imageio
import numpy as np
import pytest

import download_videos as dv
from dreamer_core import backgrounds
from tests import fixtures_video as fx

HEADER = ['label', 'youtube_id', 'time_start', 'time_end', 'split']
TRAIN_ROWS = [
    ('driving car', 'trainAAAAA1', 10, 20),
    ('archery', 'archeryAAA1', 0, 10),
    ('driving car', 'train-BBB_2', 5, 15),
    ('Driving Car', 'trainCCCCC3', 30, 40),
    ('driving car', 'trainDDDDD4', 1, 11),
]
VAL_ROWS = [('driving car', 'valAAAAAAA1', 3, 13), ('archery', 'valBBBBBBB2', 0, 10)]
TEST_ROWS = [('driving car', 'testAAAAAA1', 7, 17), ('driving car', 'testBBBBBB2', 8, 18)]
TRAIN_CAR = [row for row in TRAIN_ROWS if row[0].lower() == 'driving car']


def write_csv(path, rows, split, labelled=True):
    with open(path, 'w', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(HEADER if labelled else HEADER[1:])
        for label, vid, start, end in rows:
            writer.writerow([label, vid, start, end, split][0 if labelled else 1 :])


def name(row):
    return f'{row[1]}_{row[2]:06d}_{row[3]:06d}.mp4'


@pytest.fixture
def annotations(tmp_path):
    folder = tmp_path / 'ann'
    folder.mkdir()
    write_csv(folder / 'train.csv', TRAIN_ROWS, 'train')
    write_csv(folder / 'validate.csv', VAL_ROWS, 'val')
    write_csv(folder / 'test.csv', TEST_ROWS, 'test')
    return folder


@pytest.fixture(scope='module')
def clip_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp('clip') / 'clip.mp4'
    fx.write_video(path, 0, num_frames=5, size=(10, 12))
    return path.read_bytes()


class FakeDownloader:
    """Writes a real small mp4 to the temp path, or fails as told: {id: error or
    (failures before success, error)}."""

    def __init__(self, data, fail=None, partial=False):
        self.data, self.fail, self.partial = data, dict(fail or {}), partial
        self.calls = []

    def __call__(self, video_id, start, end, dest):
        self.calls.append((video_id, start, end, dest.name))
        assert not dest.name.endswith(('.mp4', '.mkv', '.avi', '.webm'))
        plan = self.fail.get(video_id)
        if isinstance(plan, tuple):
            remaining, error = plan
            if remaining > 0:
                self.fail[video_id] = (remaining - 1, error)
                raise error
        elif plan is not None:
            if self.partial:
                dest.write_bytes(self.data[:100])  # a half-written file, then the failure
            raise plan
        dest.write_bytes(self.data)


@pytest.fixture(autouse=True)
def no_committed_list(tmp_path, monkeypatch):
    """Tests read their own annotation CSVs unless they write a committed list here."""
    monkeypatch.setattr(dv, 'CLIP_LIST', tmp_path / 'committed' / 'driving_car.csv')


def run(tmp_path, annotations, *extra, downloader=None, clip='annotated'):
    """The CLI on `annotations`; the older tests keep the annotated 10 s clips."""
    out = tmp_path / 'videos'
    argv = ['--out', str(out), '--annotations', str(annotations), '--backoff', '0', *extra]
    return dv.main([*argv, '--clip', clip], downloader=downloader), out


def report_of(out):
    return json.loads((out / 'report.json').read_text())


def test_label_and_split_select_the_right_rows(tmp_path, annotations, clip_bytes, capsys):
    fake = FakeDownloader(clip_bytes)
    code, out = run(tmp_path, annotations, '--split', 'train', downloader=fake)
    assert code == 0
    assert [(vid, s, e) for vid, s, e, _ in fake.calls] == [row[1:] for row in TRAIN_CAR]
    assert sorted(p.name for p in (out / 'train').iterdir()) == sorted(map(name, TRAIN_CAR))
    assert not (out / 'test').exists()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('[')]
    assert len(lines) == len(TRAIN_CAR) and lines[0].startswith(f'[1/{len(TRAIN_CAR)}] train')
    part = report_of(out)['splits']['train']
    assert part['source'] == 'train.csv' and part['downloaded'] == [
        n[:-4] for n in map(name, TRAIN_CAR)
    ]


@pytest.mark.parametrize('labelled', [True, False])
def test_test_split_is_test_csv_if_labelled_else_validate(
    tmp_path, annotations, clip_bytes, labelled
):
    write_csv(annotations / 'test.csv', TEST_ROWS, 'test', labelled=labelled)
    fake = FakeDownloader(clip_bytes)
    code, out = run(tmp_path, annotations, '--split', 'test', downloader=fake)
    rows = [r for r in (TEST_ROWS if labelled else VAL_ROWS) if r[0] == 'driving car']
    assert code == 0
    assert [call[0] for call in fake.calls] == [row[1] for row in rows]
    assert report_of(out)['splits']['test']['source'] == (
        'test.csv' if labelled else 'validate.csv'
    )


def test_unknown_label_is_an_error_with_close_matches(tmp_path, annotations, clip_bytes, capsys):
    fake = FakeDownloader(clip_bytes)
    code, out = run(tmp_path, annotations, '--label', 'drivng car', downloader=fake)
    assert code == 1 and not fake.calls
    err = capsys.readouterr().err
    assert 'drivng car' in err and "'driving car'" in err
    assert 'drivng car' in report_of(out)['error']


def test_resume_skips_readable_and_refetches_corrupt(tmp_path, annotations, clip_bytes):
    code, out = run(
        tmp_path, annotations, '--split', 'train', downloader=FakeDownloader(clip_bytes)
    )
    assert code == 0
    corrupt = out / 'train' / name(TRAIN_CAR[1])
    fx.write_garbage(corrupt)
    fake = FakeDownloader(clip_bytes)
    code, out = run(tmp_path, annotations, '--split', 'train', downloader=fake)
    assert code == 0
    assert [call[0] for call in fake.calls] == [TRAIN_CAR[1][1]]
    assert corrupt.read_bytes() == clip_bytes
    part = report_of(out)['splits']['train']
    assert part['downloaded'] == [name(TRAIN_CAR[1])[:-4]]
    assert len(part['skipped']) == len(TRAIN_CAR) - 1


def test_failures_are_reported_with_reasons_and_retried(tmp_path, annotations, clip_bytes):
    gone, flaky, busy = TRAIN_CAR[0][1], TRAIN_CAR[1][1], TRAIN_CAR[2][1]
    fake = FakeDownloader(
        clip_bytes,
        fail={
            gone: dv.PermanentDownloadError('Video unavailable'),
            flaky: (2, ConnectionError('reset by peer')),
            busy: (5, ConnectionError('HTTP Error 429')),
        },
    )
    code, out = run(tmp_path, annotations, '--split', 'train', '--retries', '2', downloader=fake)
    calls = [call[0] for call in fake.calls]
    assert calls.count(gone) == 1 and calls.count(flaky) == 3 and calls.count(busy) == 3
    failed = {f['name']: f['error'] for f in report_of(out)['splits']['train']['failed']}
    assert failed == {
        name(TRAIN_CAR[0])[:-4]: 'PermanentDownloadError: Video unavailable',
        name(TRAIN_CAR[2])[:-4]: 'ConnectionError: HTTP Error 429',
    }
    assert code == 0  # the flaky and the last clip made it
    assert (out / 'train' / name(TRAIN_CAR[1])).exists()


def test_no_temp_or_partial_video_is_left_after_failures(tmp_path, annotations, clip_bytes):
    fake = FakeDownloader(
        clip_bytes, partial=True, fail={TRAIN_CAR[0][1]: RuntimeError('connection dropped')}
    )

    def downloader(video_id, start, end, dest):
        if video_id == TRAIN_CAR[1][1]:
            dest.write_bytes(b'not a video')  # claims success, writes junk
            return
        fake(video_id, start, end, dest)

    code, out = run(
        tmp_path, annotations, '--split', 'train', '--retries', '0', downloader=downloader
    )
    names = sorted(p.name for p in (out / 'train').iterdir())
    assert names == sorted(map(name, TRAIN_CAR[2:]))
    failed = {f['name']: f['error'] for f in report_of(out)['splits']['train']['failed']}
    assert 'cannot be read' in failed[name(TRAIN_CAR[1])[:-4]]
    assert failed[name(TRAIN_CAR[0])[:-4]] == 'RuntimeError: connection dropped'


def test_stale_temp_files_are_removed_at_start(tmp_path, annotations, clip_bytes):
    folder = tmp_path / 'videos' / 'train'
    folder.mkdir(parents=True)
    (folder / ('old.mp4' + dv.TMP_SUFFIX)).write_bytes(b'half')
    (folder / ('old.mp4' + dv.SCRATCH_SUFFIX)).mkdir()
    (folder / ('old.mp4' + dv.SCRATCH_SUFFIX) / 'clip.mp4.part').write_bytes(b'x')
    (folder / 'keep.txt').write_text('user file')
    run(tmp_path, annotations, '--split', 'train', downloader=FakeDownloader(clip_bytes))
    left = {p.name for p in folder.iterdir()}
    assert left == {'keep.txt', *map(name, TRAIN_CAR)}


def test_max_stops_once_enough_clips_are_present(tmp_path, annotations, clip_bytes):
    fake = FakeDownloader(clip_bytes, fail={TRAIN_CAR[0][1]: RuntimeError('gone')})
    code, out = run(
        tmp_path, annotations, '--split', 'train', '--max', '2', '--retries', '0', downloader=fake
    )
    assert code == 0
    assert [call[0] for call in fake.calls] == [row[1] for row in TRAIN_CAR[:3]]
    part = report_of(out)['splits']['train']
    assert len(part['downloaded']) == 2 and part['not_attempted'] == len(TRAIN_CAR) - 3


def test_exit_code_1_when_a_split_gets_nothing(tmp_path, annotations, clip_bytes, capsys):
    fail = {row[1]: RuntimeError('gone') for row in TRAIN_ROWS + TEST_ROWS}
    fail.pop(TRAIN_CAR[0][1])  # train gets one clip, test none
    code, out = run(
        tmp_path, annotations, '--retries', '0', downloader=FakeDownloader(clip_bytes, fail=fail)
    )
    assert code == 1
    err = capsys.readouterr().err
    assert 'test' in err and '--from-dir' in err
    report = report_of(out)
    assert report['ok'] is False and len(report['splits']['test']['failed']) == 2
    assert report['splits']['train']['videos_in_folder'] == 1


def test_from_dir_imports_matching_files_without_downloading(tmp_path, annotations, clip_bytes):
    mine = tmp_path / 'mine'
    (mine / 'sub').mkdir(parents=True)
    (mine / f'{TRAIN_CAR[0][1]}.mp4').write_bytes(clip_bytes)
    (mine / 'sub' / f'{TRAIN_CAR[2][1]}_{TRAIN_CAR[2][2]:06d}_x.mkv').write_bytes(clip_bytes)
    (mine / 'unrelated.mp4').write_bytes(clip_bytes)
    fake = FakeDownloader(clip_bytes)
    args = ['--split', 'train', '--from-dir', str(mine)]
    code, out = run(tmp_path, annotations, *args, downloader=fake)
    assert code == 0 and not fake.calls
    expected = {name(TRAIN_CAR[0]), name(TRAIN_CAR[2])[:-4] + '.mkv'}
    assert {p.name for p in (out / 'train').iterdir()} == expected
    part = report_of(out)['splits']['train']
    assert len(part['imported']) == 2 and part['unmatched'] == len(TRAIN_CAR) - 2
    code, out = run(tmp_path, annotations, *args, downloader=fake)
    assert len(report_of(out)['splits']['train']['skipped']) == 2


def test_from_dir_any_names_takes_every_video(tmp_path, annotations, clip_bytes):
    mine = tmp_path / 'mine'
    mine.mkdir()
    for file in ('a.mp4', 'b.webm'):
        (mine / file).write_bytes(clip_bytes)
    (mine / 'notes.txt').write_text('x')
    code, out = run(
        tmp_path, annotations, '--split', 'test', '--from-dir', str(mine), '--any-names'
    )
    assert code == 0
    assert {p.name for p in (out / 'test').iterdir()} == {'a.mp4', 'b.webm'}
    with pytest.raises(SystemExit):
        run(tmp_path, annotations, '--from-dir', str(mine), '--any-names')


def test_missing_yt_dlp_is_a_clear_error(tmp_path, annotations, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'yt_dlp', None)  # makes `import yt_dlp` fail
    code, out = run(tmp_path, annotations, '--split', 'train')
    assert code == 1
    assert 'pip install yt-dlp' in capsys.readouterr().err
    assert 'pip install yt-dlp' in report_of(out)['error']


def test_retries_wait_with_doubling_backoff():
    waits, attempts = [], []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError('transient')
        return 'ok'

    assert dv.with_retries(flaky, retries=3, backoff=0.5, sleep=waits.append) == 'ok'
    assert waits == [0.5, 1.0]
    waits.clear()
    with pytest.raises(OSError, match='always'):
        dv.with_retries(lambda: (_ for _ in ()).throw(OSError('always')), 3, 1.0, waits.append)
    assert waits == [1.0, 2.0, 4.0]


def archive_id(member):
    """A valid YouTube id that names the archive member it came from: train.csv -> trainAAAAAA."""
    return member.split('.')[0].ljust(11, 'A')[:11]


def make_archive(path, names):
    with tarfile.open(path, 'w:gz') as tar:
        for member in names:
            row = f'x,{archive_id(member)},0,1,s'
            data = f'label,youtube_id,time_start,time_end,split\n{row}\n'.encode()
            info = tarfile.TarInfo(f'kinetics400/{member}')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_annotations_are_fetched_from_the_archive(tmp_path, monkeypatch, clip_bytes):
    archive = tmp_path / 'k400.tar.gz'
    make_archive(archive, ['train.csv', 'validate.csv', 'test.csv', 'train.json'])
    monkeypatch.setattr(dv, 'ANNOTATIONS_URL', archive.as_uri())
    out = tmp_path / 'videos'
    dv.main(
        ['--out', str(out), '--split', 'train', '--label', 'x'],
        downloader=FakeDownloader(clip_bytes),
    )
    cache = out / 'annotations'
    assert sorted(p.name for p in cache.iterdir()) == ['test.csv', 'train.csv', 'validate.csv']
    assert 'x,trainAAAAAA,0,1' in (cache / 'train.csv').read_text()
    assert (out / 'train' / 'trainAAAAAA.mp4').exists()  # default: the video from its start


def test_bad_archive_or_url_says_what_to_do(tmp_path):
    archive = tmp_path / 'k400.tar.gz'
    make_archive(archive, ['train.csv'])
    with pytest.raises(dv.SetupError, match='validate.csv'):
        dv.fetch_annotations(tmp_path / 'a', url=archive.as_uri())
    with pytest.raises(dv.SetupError, match='--annotations'):
        dv.fetch_annotations(tmp_path / 'b', url=(tmp_path / 'none.tar.gz').as_uri())
    assert not any(p.name.endswith(dv.TMP_SUFFIX) for p in (tmp_path / 'a').iterdir())


COMMITTED_TEST = [('driving car', 'listAAAAAA1', 4, 14), ('driving car', 'list-BBB_22', 9, 19)]


@pytest.fixture(scope='module')
def long_bytes(tmp_path_factory):
    """A fetched 'video from its start': 1010 frames, more than the env reads."""
    path = tmp_path_factory.mktemp('long') / 'long.mp4'
    fx.write_long_video(path, 1010, size=(8, 8))
    return path.read_bytes()


@pytest.fixture
def committed(tmp_path):
    """The committed clip list (test rows only, as kinetics400/driving_car.csv)."""
    dv.CLIP_LIST.parent.mkdir(parents=True)
    write_csv(dv.CLIP_LIST, COMMITTED_TEST, 'test')
    return dv.CLIP_LIST


def decoded(path, limit=None):
    with imageio.get_reader(str(path), 'ffmpeg') as reader:
        frames = [frame for _, frame in zip(range(limit or 10**9), reader)]
    return np.stack(frames)


def test_default_keeps_each_video_from_its_start_cut_to_1000_frames(
    tmp_path, annotations, committed, long_bytes
):
    fake = FakeDownloader(long_bytes)
    code, out = run(tmp_path, annotations, downloader=fake, clip='start')
    assert code == 0
    train_ids, test_ids = [row[1] for row in TRAIN_CAR], [row[1] for row in COMMITTED_TEST]
    # From second 0, as much as the env reads (end None); test clips from the committed list.
    assert [call[:3] for call in fake.calls] == [(vid, 0, None) for vid in train_ids + test_ids]
    assert sorted(p.name for p in (out / 'test').iterdir()) == sorted(f'{v}.mp4' for v in test_ids)
    report = report_of(out)['splits']
    assert report['test']['source'] == 'driving_car.csv'
    assert report['train']['source'] == 'train.csv'
    source = tmp_path / 'fetched.mp4'
    source.write_bytes(long_bytes)
    kept = decoded(out / 'train' / f'{train_ids[0]}.mp4')
    np.testing.assert_array_equal(kept, decoded(source, 1000))  # exactly the first 1000
    manifest = dv.read_manifest(out / dv.MANIFEST)
    want = backgrounds.frames_fingerprint(source)  # the bytes differ, the frames do not
    assert (out / 'train' / f'{train_ids[0]}.mp4').read_bytes() != long_bytes
    for entry in manifest['videos']:
        assert entry['id'] in train_ids + test_ids and entry['file'].startswith(entry['split'])
        assert {key: entry[key] for key in want} == want
    assert len(manifest['videos']) == len(train_ids + test_ids)
    assert [row['youtube_id'] for row in manifest['clips']['test']] == test_ids
    assert manifest['clips']['train'][0] == {
        'label': 'driving car',
        'youtube_id': train_ids[0],
        'time_start': TRAIN_CAR[0][2],
        'time_end': TRAIN_CAR[0][3],
        'split': 'train',
    }


def test_manifest_round_trips_and_verify_accepts_the_folder(
    tmp_path, annotations, clip_bytes, capsys
):
    code, out = run(tmp_path, annotations, downloader=FakeDownloader(clip_bytes), clip='start')
    assert code == 0
    text = (out / dv.MANIFEST).read_text()
    first = json.loads(text)
    assert len(first['videos']) == len(TRAIN_CAR) + 2 and first['frames_read'] == 1000
    entry = first['videos'][0]
    assert set(entry) >= {'id', 'split', 'frames', 'fps', 'width', 'height', 'sha256'}
    assert (entry['frames'], entry['width'], entry['height']) == (5, 12, 10)
    assert dv.update_manifest(out, 'driving car', 'start', {}) == out / dv.MANIFEST
    assert (out / dv.MANIFEST).read_text() == text  # rewritten from itself: unchanged
    capsys.readouterr()
    assert dv.main(['--out', str(out), '--verify']) == 0
    assert 'OK' in capsys.readouterr().out


def test_verify_reports_changed_missing_and_extra_videos(tmp_path, annotations, clip_bytes, capsys):
    code, out = run(tmp_path, annotations, downloader=FakeDownloader(clip_bytes), clip='start')
    manifest = tmp_path / 'theirs.json'  # another lab's manifest, kept elsewhere
    manifest.write_bytes((out / dv.MANIFEST).read_bytes())
    changed, missing = TRAIN_CAR[0][1], TRAIN_CAR[1][1]
    fx.write_video(out / 'train' / f'{changed}.mp4', 3, num_frames=5, size=(10, 12))
    (out / 'train' / f'{missing}.mp4').unlink()
    fx.write_video(out / 'test' / 'newAAAAAAA1.mp4', 1, num_frames=5, size=(10, 12))
    capsys.readouterr()
    assert dv.main(['--out', str(out), '--verify', str(manifest)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f'  changed train/{changed}.mp4: different frames' in '\n'.join(lines)
    assert f'  missing train/{missing}.mp4: missing' in lines
    assert '  extra test/newAAAAAAA1.mp4: not in the manifest' in lines
    assert lines[-1].endswith('1 missing, 1 changed, 1 extra: MISMATCH')


def test_bad_youtube_ids_are_reported_and_skipped(tmp_path, annotations, clip_bytes, capsys):
    rows = [
        ('driving car', '../../../x1', 1, 2),
        ('driving car', 'short', 1, 2),
        ('driving car', 'okAAAAAAAA1', 1, 2),
        ('driving car', 'has space 1', 1, 2),
        ('driving car', 'okAAAAAAAA2', 'soon', 2),
    ]
    write_csv(annotations / 'train.csv', rows, 'train')
    fake = FakeDownloader(clip_bytes)
    code, out = run(tmp_path, annotations, '--split', 'train', downloader=fake, clip='start')
    assert code == 0
    assert [call[0] for call in fake.calls] == ['okAAAAAAAA1']
    bad = report_of(out)['splits']['train']['bad_rows']
    assert bad == [
        "train.csv line 2: youtube_id '../../../x1' is not 11 characters of [A-Za-z0-9_-]",
        "train.csv line 3: youtube_id 'short' is not 11 characters of [A-Za-z0-9_-]",
        "train.csv line 5: youtube_id 'has space 1' is not 11 characters of [A-Za-z0-9_-]",
        "train.csv line 6: time_start/time_end 'soon'/'2' are not numbers",
    ]
    assert 'Skipping a bad annotation row: train.csv line 2' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ann', 'videos']


def test_committed_clip_list_is_the_original_test_split():
    with open(dv.ROOT / 'kinetics400' / 'driving_car.csv', newline='') as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == HEADER
    assert len(rows) == 78 and {row['split'] for row in rows} == {'test'}
    assert {row['label'] for row in rows} == {'driving car'}
    assert all(dv.YOUTUBE_ID.fullmatch(row['youtube_id']) for row in rows)
    assert len({row['youtube_id'] for row in rows}) == 78


@pytest.mark.parametrize(
    'formats,seconds',
    [([{'fps': 30}, {'fps': 25}, {'fps': None}], 43), ([{'fps': 60}], 20), ([{}], 45)],
)
def test_fetch_range_covers_1000_frames_at_the_lowest_frame_rate(formats, seconds):
    # ceil(1000 / fps) + 3 s of margin; 24 fps when YouTube gives none.
    ranges = dv.first_frames_range({'formats': formats})
    assert ranges == [{'start_time': 0, 'end_time': seconds}]


def test_verify_without_a_manifest_says_what_to_do(tmp_path, capsys):
    assert dv.main(['--out', str(tmp_path), '--verify']) == 1
    assert 'run download_videos.py first or pass --verify PATH' in capsys.readouterr().err


class _TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_tqdm_bar_on_a_terminal_and_lines_otherwise():
    plain = io.StringIO()
    progress = dv.Progress(2, plain)
    progress.update('test', 'a.mp4', 'downloaded')
    progress.update('test', 'b.mp4', 'failed', 'gone')
    progress.close()
    assert plain.getvalue() == '[1/2] test a.mp4 downloaded\n[2/2] test b.mp4 failed: gone\n'
    tty = _TTY()
    progress = dv.Progress(2, tty)
    progress.update('test', 'a.mp4', 'downloaded')
    progress.update('test', 'b.mp4', 'failed', 'gone')
    progress.close()
    text = tty.getvalue()
    assert '\r' in text and '2/2' in text and 'failed=1' in text and 'downloaded=1' in text
