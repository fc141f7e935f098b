"""Fetch Kinetics-400 videos of one label as natural-video backgrounds for the `nat_` tasks.

    python download_videos.py            # "driving car" -> kinetics400/videos/{train,test}
    python download_videos.py --verify   # are the videos here the ones manifest.json lists?

Which videos: the test split of "driving car" is the 78 clips the original DreamerPro used,
committed in kinetics400/driving_car.csv (label, youtube_id, time_start, time_end, split). Every
other split and label comes from the official Kinetics-400 CSVs, from the DeepMind archive
ANNOTATIONS_URL (cached in <out>/annotations) or `--annotations DIR` holding train.csv,
validate.csv and test.csv: our `train` split is train.csv, our `test` split test.csv when it
carries labels, else validate.csv. A row whose YouTube id is not 11 characters of
[A-Za-z0-9_-] is reported and skipped, so file names never leave the output folder.

What is kept: by default (`--clip start`) each video from its start, as the original (which
downloaded whole videos and played their first 1000 frames): yt-dlp fetches the first
ceil(1000 / fps) + 3 seconds without re-encoding, and the file is cut to its first 1000 frames
when a stream copy keeps them exact; saved as `{youtube_id}.mp4`. `--clip annotated` keeps only
the annotated 10 seconds (re-encoded at the cuts), saved as
`{youtube_id}_{start:06d}_{end:06d}.mp4`.

Runs are resumable: a video already present and readable is skipped, downloads land under a
temporary name (`*.download`, never a video extension) and are renamed only when complete and
readable. `--from-dir DIR` imports videos you already have instead of downloading. Many
Kinetics videos are gone from YouTube: every failure is listed with its reason in the summary
and in <out>/report.json. <out>/manifest.json lists every video present (id, split, frames,
fps, size, and a SHA-256 of the decoded frames the env reads) and the resolved clip lists;
`--verify [MANIFEST]` decodes the folder again and reports missing, changed and extra videos.
Exit code 0 when every requested split ends with at least one video (with --verify: when the
folder matches), else 1 (also when the run could not start: missing yt-dlp, annotations or
label).
"""

import argparse
import csv
import difflib
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import time
import typing
import urllib.request

import imageio.v3 as iio

from dreamer_core import fileio
from dreamer_core.backgrounds import (
    MAX_FRAMES,
    VIDEO_EXTENSIONS,
    describe_error,
    frames_fingerprint,
)

ROOT = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / 'kinetics400' / 'videos'
CLIP_LIST = ROOT / 'kinetics400' / 'driving_car.csv'  # the original's test clips
MANIFEST = 'manifest.json'
SPLITS = ('train', 'test')
YOUTUBE_ID = re.compile(r'[A-Za-z0-9_-]{11}')
FETCH_MARGIN_SECONDS = 3  # fetched beyond the 1000th frame, cut off again afterwards
ASSUMED_FPS = 24  # when YouTube does not say; Kinetics videos run at 24-30 fps
ANNOTATIONS_URL = 'https://storage.googleapis.com/deepmind-media/Datasets/kinetics400.tar.gz'
ANNOTATION_FILES = ('train.csv', 'validate.csv', 'test.csv')
COLUMNS = ('label', 'youtube_id', 'time_start', 'time_end')
YOUTUBE_URL = 'https://www.youtube.com/watch?v={}'
FORMAT = 'best[height<=360][ext=mp4]/best[height<=360]/worst[height>=360]/best'
TMP_SUFFIX = '.download'
SCRATCH_SUFFIX = TMP_SUFFIX + '.d'  # yt-dlp works in <name>.download.d/
# yt-dlp messages of videos that are gone for good: retrying them only wastes time.
PERMANENT_MARKERS = (
    'Video unavailable',
    'Private video',
    'has been removed',
    'account associated with this video',
    'copyright',
    'confirm your age',
)
NO_VIDEO_HINT = (
    'Try: `pip install -U yt-dlp` (YouTube changes often), a larger --max or another --label, '
    'or --from-dir DIR with Kinetics clips you already have.'
)


class SetupError(RuntimeError):
    """A problem that stops the whole run (not one clip): missing tool or annotations."""


class PermanentDownloadError(RuntimeError):
    """The video is gone (removed, private, ...): do not retry."""


class Clip(typing.NamedTuple):
    """One annotation row: a YouTube video, its annotated [start, end] seconds, and whether we
    keep the video from its start (the original's frames) or only the annotated range."""

    youtube_id: str
    start: int
    end: int
    from_start: bool = True

    @property
    def stem(self):
        if self.from_start:
            return self.youtube_id
        return f'{self.youtube_id}_{self.start:06d}_{self.end:06d}'

    def row(self, label, split):
        return {
            'label': label,
            'youtube_id': self.youtube_id,
            'time_start': self.start,
            'time_end': self.end,
            'split': split,
        }


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Download Kinetics-400 clips of one label into <out>/train and <out>/test. '
        'Our test split is test.csv if it carries labels, else validate.csv.'
    )
    parser.add_argument('--label', default='driving car', help='Kinetics-400 label to fetch.')
    parser.add_argument('--split', choices=('train', 'test', 'both'), default='both')
    parser.add_argument(
        '--clip',
        choices=('start', 'annotated'),
        default='start',
        help='start: each video from its start, its first 1000 frames (what the original '
        'played); annotated: only the annotated 10 seconds.',
    )
    parser.add_argument(
        '--verify',
        nargs='?',
        type=pathlib.Path,
        const=True,
        default=None,
        metavar='MANIFEST',
        help='Download nothing: check the videos in --out against MANIFEST (default '
        '<out>/manifest.json) and report missing, changed and extra videos.',
    )
    parser.add_argument(
        '--max',
        type=int,
        default=None,
        help='Stop a split once this many of its clips are present.',
    )
    parser.add_argument(
        '--out',
        type=pathlib.Path,
        default=DEFAULT_OUT,
        help='Folder that receives train/, test/ and report.json '
        '(default: kinetics400/videos next to this script).',
    )
    parser.add_argument(
        '--annotations',
        type=pathlib.Path,
        default=None,
        help='Folder with train.csv, validate.csv, test.csv (default: download '
        f'{ANNOTATIONS_URL} into <out>/annotations).',
    )
    parser.add_argument(
        '--retries', type=int, default=3, help='Extra attempts per clip after a failed download.'
    )
    parser.add_argument(
        '--backoff',
        type=float,
        default=2.0,
        help='Seconds before the first retry; doubled for each further one.',
    )
    parser.add_argument(
        '--from-dir',
        type=pathlib.Path,
        default=None,
        help='Import videos from this folder (matched to the annotations by '
        'YouTube id in the file name) instead of downloading.',
    )
    parser.add_argument(
        '--any-names',
        action='store_true',
        help='With --from-dir: take every video file, whatever its name '
        '(needs --split train or --split test).',
    )
    args = parser.parse_args(argv)
    if args.max is not None and args.max < 1:
        parser.error(f'--max must be >= 1, got {args.max}.')
    if args.retries < 0 or args.backoff < 0:
        parser.error('--retries and --backoff must be >= 0.')
    if args.any_names and (args.from_dir is None or args.split == 'both'):
        parser.error(
            '--any-names needs --from-dir and --split train or --split test '
            '(the same videos in both splits would leak test backgrounds into training).'
        )
    return args


def read_annotations(path):
    """Rows of one Kinetics CSV as dicts; checks the columns this script needs."""
    with open(path, newline='', encoding='utf-8') as file:
        reader = csv.DictReader(file)
        missing = [name for name in COLUMNS[1:] if name not in (reader.fieldnames or ())]
        if missing:
            raise SetupError(
                f'{path} lacks the columns {missing} (has {reader.fieldnames}); '
                'expected the official Kinetics-400 CSVs.'
            )
        return list(reader)


def has_labels(rows):
    return any((row.get('label') or '').strip() for row in rows)


def split_source(annotations, split):
    """The CSV behind one of our splits: train.csv; test.csv if labelled, else validate.csv."""
    if split == 'train':
        return annotations / 'train.csv'
    test = annotations / 'test.csv'
    if test.exists() and has_labels(read_annotations(test)):
        return test
    return annotations / 'validate.csv'


def same_label(row, label):
    return (row.get('label') or '').strip().lower() == label.strip().lower()


def parse_clip(row, from_start):
    """A Clip from an annotation row; ValueError naming the problem for a bad row."""
    video_id = (row.get('youtube_id') or '').strip()
    if not YOUTUBE_ID.fullmatch(video_id):
        raise ValueError(f'youtube_id {video_id!r} is not 11 characters of [A-Za-z0-9_-]')
    try:
        start, end = int(float(row['time_start'])), int(float(row['time_end']))
    except (TypeError, ValueError):
        raise ValueError(
            f'time_start/time_end {row.get("time_start")!r}/{row.get("time_end")!r} are not numbers'
        ) from None
    return Clip(video_id, start, end, from_start)


def select_clips(source, label, from_start=True, split=None):
    """(clips, bad rows) of `label` (and `split`, if given) in a CSV, in file order, without
    duplicates; a bad row is described as 'file line N: reason' and left out."""
    rows = read_annotations(source)
    clips, bad, seen = [], [], set()
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if not same_label(row, label) or split not in (None, (row.get('split') or '').strip()):
            continue
        try:
            clip = parse_clip(row, from_start)
        except ValueError as error:
            bad.append(f'{source.name} line {line}: {error}')
            continue
        if clip.stem not in seen:
            seen.add(clip.stem)
            clips.append(clip)
    if not clips and not bad:
        labels = sorted({(row.get('label') or '').strip() for row in rows} - {''})
        close = difflib.get_close_matches(label, labels, n=3)
        raise SetupError(
            f'No rows with label "{label}" in {source}'
            + (f'; close labels: {close}.' if close else '.')
        )
    return clips, bad


def committed_split(label, split):
    """True if the committed clip list holds rows of this label and split (the original's)."""
    if not CLIP_LIST.exists():
        return False
    rows = read_annotations(CLIP_LIST)
    return any(same_label(r, label) and (r.get('split') or '').strip() == split for r in rows)


def write_atomic(path, data):
    """Bytes to `path` through a temp file in the same folder, fsync, rename."""
    fileio.atomic_write(path, lambda file: file.write(data))


def fetch_annotations(directory, url=None):
    """Download the Kinetics-400 archive and keep its three CSVs in `directory`."""
    url = url or ANNOTATIONS_URL
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / ('kinetics400.tar.gz' + TMP_SUFFIX)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, 'wb') as file:
            shutil.copyfileobj(response, file)
        with tarfile.open(archive, 'r:gz') as tar:
            members = {
                pathlib.PurePosixPath(m.name).name: m for m in tar.getmembers() if m.isfile()
            }
            missing = [name for name in ANNOTATION_FILES if name not in members]
            if missing:
                raise SetupError(f'{url} has no {missing}; it holds {sorted(members)}.')
            for name in ANNOTATION_FILES:  # read members ourselves: no paths from the archive
                write_atomic(directory / name, tar.extractfile(members[name]).read())
    except (OSError, tarfile.TarError) as error:
        raise SetupError(
            f'Could not get the Kinetics-400 annotations from {url} '
            f'({type(error).__name__}: {error}). Download and unpack it by hand and '
            'pass --annotations DIR (the folder with train.csv, validate.csv, '
            'test.csv).'
        ) from error
    finally:
        archive.unlink(missing_ok=True)


def annotation_dir(args):
    """Folder holding the CSVs: --annotations as given, else a cache filled on first use."""
    if args.annotations is not None:
        missing = [name for name in ANNOTATION_FILES[:2] if not (args.annotations / name).exists()]
        if missing:
            raise SetupError(
                f'--annotations {args.annotations} lacks {missing}; it needs the '
                'Kinetics-400 train.csv, validate.csv (and test.csv if labelled).'
            )
        return args.annotations
    cache = args.out / 'annotations'
    if not all((cache / name).exists() for name in ANNOTATION_FILES):
        print(f'Fetching Kinetics-400 annotations from {ANNOTATIONS_URL}', flush=True)
        fetch_annotations(cache)
    return cache


def is_video_name(path):
    return path.suffix.lower() in VIDEO_EXTENSIONS


def readable(path):
    """(True, '') if imageio can decode at least one frame, else (False, reason)."""
    try:  # the extension hint lets imageio open temp names; ffmpeg probes the content anyway
        with iio.imopen(str(path), 'r', plugin='FFMPEG', extension='.mp4') as file:
            if next(iter(file.iter()), None) is None:
                return False, 'the video has no frames'
        return True, ''
    except Exception as error:  # the reason goes into the report
        return False, describe_error(error)


def remove_stale(folder):
    """Delete temp files and scratch folders a killed run left behind."""
    for path in folder.iterdir():
        if path.name.endswith(SCRATCH_SUFFIX) and path.is_dir():
            shutil.rmtree(path)
        elif path.name.endswith(TMP_SUFFIX) and path.is_file():
            path.unlink()


def present_copy(folder, stem):
    """A readable video named `stem` with any video extension; corrupt ones are deleted."""
    for extension in VIDEO_EXTENSIONS:
        path = folder / (stem + extension)
        if path.exists():
            if readable(path)[0]:
                return path
            path.unlink()  # a corrupt leftover: fetch it again
    return None


def finalize(tmp, final):
    """Check a finished temp file decodes, make it durable, give it its video name."""
    ok, reason = readable(tmp)
    if not ok:
        raise ValueError(f'the fetched file cannot be read as a video ({reason})')
    with open(tmp, 'rb') as file:
        os.fsync(file.fileno())
    os.replace(tmp, final)


def with_retries(action, retries, backoff, sleep=time.sleep):
    """Call `action()`, retrying failures `retries` times with doubling waits."""
    for attempt in range(retries + 1):
        try:
            return action()
        except PermanentDownloadError:
            raise
        except Exception:
            if attempt == retries:
                raise
            sleep(backoff * 2**attempt)


def first_frames_range(info, ydl=None):
    """yt-dlp download_ranges callback: from 0 s to enough seconds for MAX_FRAMES frames at the
    lowest frame rate among the video's formats, plus a margin."""
    rates = [f.get('fps') for f in info.get('formats') or () if f.get('fps')]
    fps = min(rates) if rates else (info.get('fps') or ASSUMED_FPS)
    return [{'start_time': 0, 'end_time': math.ceil(MAX_FRAMES / fps) + FETCH_MARGIN_SECONDS}]


def make_ytdlp_downloader():
    """The default downloader: yt-dlp, 360p mp4 preferred; end None: the video's first
    MAX_FRAMES frames by stream copy, else cut to the clip's seconds."""
    try:
        import yt_dlp
    except ImportError as error:
        raise SetupError(
            'yt-dlp is not installed: `pip install yt-dlp` (or import videos you '
            'already have with --from-dir DIR).'
        ) from error
    range_func = getattr(getattr(yt_dlp, 'utils', None), 'download_range_func', None)
    if range_func is None:
        print(
            'This yt-dlp has no download_ranges: whole videos are fetched (--clip annotated '
            'keeps them whole). `pip install -U yt-dlp` to fetch only what is kept.',
            flush=True,
        )
    ffmpeg = shutil.which('ffmpeg') or _bundled_ffmpeg()

    def download(video_id, start, end, dest):
        scratch = pathlib.Path(str(dest) + '.d')  # <name>.download.d: removed if stale
        scratch.mkdir(exist_ok=True)
        options = {
            'format': FORMAT,
            'outtmpl': str(scratch / 'clip.%(ext)s'),
            'quiet': True,
            'no_warnings': True,
            'noprogress': True,
            'noplaylist': True,
        }
        if ffmpeg:
            options['ffmpeg_location'] = ffmpeg
        if end is None:  # a cut at 0 s needs no re-encoding: the frames stay the original's
            options['download_ranges'] = first_frames_range
        elif range_func is not None:
            options['download_ranges'] = range_func(None, [(start, end)])
            options['force_keyframes_at_cuts'] = True
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                ydl.download([YOUTUBE_URL.format(video_id)])
            _move_single_output(scratch, dest)
        except yt_dlp.utils.DownloadError as error:
            if any(marker in str(error) for marker in PERMANENT_MARKERS):
                raise PermanentDownloadError(str(error)) from error
            raise
        finally:
            shutil.rmtree(scratch)

    return download


def _bundled_ffmpeg():
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None


def _move_single_output(scratch, dest):
    outputs = [
        path
        for path in scratch.iterdir()
        if path.is_file() and not path.name.endswith(('.part', '.ytdl'))
    ]
    if len(outputs) != 1:
        raise RuntimeError(
            f'yt-dlp left {sorted(p.name for p in outputs)} instead of one video file'
        )
    os.replace(outputs[0], dest)


class Progress:
    """A tqdm bar with the status counts on a terminal, one line per clip otherwise."""

    def __init__(self, total, stream=None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stdout
        self.counts = {}
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=self.stream, unit='clip', dynamic_ncols=True)

    def update(self, split, name, status, detail=''):
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        if self.bar is not None:
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(1)
            return
        suffix = f': {detail}' if detail else ''
        self.stream.write(f'[{self.done}/{self.total}] {split} {name} {status}{suffix}\n')
        self.stream.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def new_split_report(folder, source):
    return {
        'folder': str(folder),
        'source': source,
        'candidates': 0,
        'downloaded': [],
        'imported': [],
        'skipped': [],
        'failed': [],
        'unmatched': 0,
        'not_attempted': 0,
        'videos_in_folder': 0,
    }


def download_clip(clip, folder, get_downloader, args):
    """'skipped' if a readable copy is present, else download it: 'downloaded'; raises."""
    if present_copy(folder, clip.stem):
        return 'skipped'
    downloader = get_downloader()  # only now: a complete folder needs no yt-dlp
    final = folder / (clip.stem + '.mp4')
    tmp = folder / (final.name + TMP_SUFFIX)
    # From the start: end None asks for as much as the env reads (MAX_FRAMES frames).
    start, end = (0, None) if clip.from_start else (clip.start, clip.end)
    try:
        with_retries(
            lambda: downloader(clip.youtube_id, start, end, tmp), args.retries, args.backoff
        )
        if not tmp.exists():
            raise RuntimeError('the downloader reported success but wrote no file')
        finalize(tmp, final)
        if clip.from_start:
            keep_first_frames(final, MAX_FRAMES)
    finally:
        tmp.unlink(missing_ok=True)
    return 'downloaded'


def keep_first_frames(path, count):
    """Cut a video in place to its first `count` frames by stream copy (no re-encoding), only
    if the cut file decodes to exactly those frames; True if it was cut."""
    ffmpeg = shutil.which('ffmpeg') or _bundled_ffmpeg()
    before = frames_fingerprint(path, count)
    if ffmpeg is None or before['frames'] < count:
        return False
    scratch = path.with_name(path.name + SCRATCH_SUFFIX)  # removed at start if stale
    scratch.mkdir(exist_ok=True)
    cut = scratch / path.name
    command = [ffmpeg, '-v', 'error', '-y', '-i', str(path), '-map', '0:v:0', '-c', 'copy']
    command += ['-frames:v', str(count), '-f', 'mp4', str(cut)]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=600)
        after = frames_fingerprint(cut, count + 1)
        if after['frames'] == count and after['sha256'] == before['sha256']:
            with open(cut, 'rb') as file:
                os.fsync(file.fileno())
            os.replace(cut, path)
            return True
    except (OSError, ValueError, subprocess.SubprocessError):
        pass  # keep the uncut file: the env reads its first `count` frames all the same
    finally:
        shutil.rmtree(scratch)
    return False


def import_file(source, final, present):
    """Copy a user's video into place atomically: 'skipped' if present, else 'imported'."""
    if present:
        return 'skipped'
    tmp = final.parent / (final.name + TMP_SUFFIX)
    try:
        shutil.copyfile(source, tmp)
        finalize(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return 'imported'


def user_videos(directory):
    """Video files anywhere under `directory`, sorted."""
    if not directory.is_dir():
        raise SetupError(f'--from-dir {directory} is not a folder.')
    return sorted(path for path in directory.rglob('*') if path.is_file() and is_video_name(path))


def match_files(clips, files):
    """{clip stem: file} by YouTube id in the file name; a file whose name also has the start
    second wins, and each file serves one clip."""
    matches, used = {}, set()
    for clip in clips:
        named = [path for path in files if clip.youtube_id in path.stem and path not in used]
        exact = [path for path in named if f'{clip.start:06d}' in path.stem]
        choice = (exact or named or [None])[0]
        if choice is not None:
            matches[clip.stem] = choice
            used.add(choice)
    return matches


def plan_split(args, split, annotations, files, get_downloader):
    """(source name, [(clip name, job)], annotated clips without a file in --from-dir);
    job() returns 'downloaded' / 'imported' / 'skipped' or raises. `annotations()` gives the
    folder of the official CSVs (fetched on first use)."""
    folder = args.out / split
    if args.any_names:
        jobs = [(path.name, _import_job(path, folder / path.name)) for path in files]
        return f'--from-dir {args.from_dir}', jobs, 0
    if committed_split(args.label, split):
        source, only = CLIP_LIST, split
    else:
        source, only = split_source(annotations(), split), None
    clips, bad = select_clips(source, args.label, args.clip == 'start', only)
    args.resolved[split] = [clip.row(args.label, split) for clip in clips]
    args.bad_rows[split] = bad
    for problem in bad:
        print(f'Skipping a bad annotation row: {problem}', file=sys.stderr)
    if args.from_dir is None:
        jobs = [(clip.stem, _download_job(clip, folder, get_downloader, args)) for clip in clips]
        return source.name, jobs, 0
    matches = match_files(clips, files)
    jobs = [
        (
            clip.stem,
            _import_job(
                matches[clip.stem],
                folder / (clip.stem + matches[clip.stem].suffix.lower()),
                stem=clip.stem,
            ),
        )
        for clip in clips
        if clip.stem in matches
    ]
    return source.name, jobs, len(clips) - len(jobs)


def _download_job(clip, folder, get_downloader, args):
    return lambda: download_clip(clip, folder, get_downloader, args)


def _import_job(source, final, stem=None):
    def job():
        if stem is None:
            present = final.exists() and readable(final)[0]
        else:
            present = present_copy(final.parent, stem) is not None
        return import_file(source, final, present)

    return job


def run_split(split, jobs, args, report, progress):
    """Run the jobs of one split until --max clips are present; fill its report."""
    present = 0
    for index, (name, job) in enumerate(jobs):
        if args.max is not None and present >= args.max:
            report['not_attempted'] = len(jobs) - index
            break
        try:
            status = job()
        except SetupError:
            raise
        except Exception as error:  # one clip failed: record why and go on
            reason = describe_error(error, limit=1000)
            report['failed'].append({'name': name, 'error': reason})
            progress.update(split, name, 'failed', reason)
            continue
        report[status].append(name)
        present += 1
        progress.update(split, name, status)


def count_videos(folder):
    return sum(1 for path in folder.iterdir() if path.is_file() and is_video_name(path))


def summarize(report, splits, stream):
    print(f'\nSummary (label "{report["label"]}"):', file=stream)
    for split in splits:
        part = report['splits'].get(split)
        if part is None:
            continue
        added = 'imported' if part['imported'] else 'downloaded'
        print(
            f'  {split} ({part["source"]}): {len(part[added])} {added}, '
            f'{len(part["skipped"])} skipped (already present), {len(part["failed"])} '
            f'failed; {part["videos_in_folder"]} videos in {part["folder"]}',
            file=stream,
        )
        if part['not_attempted']:
            print(f'    {part["not_attempted"]} clips not attempted (--max reached)', file=stream)
        if part['unmatched']:
            print(f'    {part["unmatched"]} annotated clips had no file in --from-dir', file=stream)
        for failure in part['failed']:
            print(f'    failed {failure["name"]}: {failure["error"]}', file=stream)
        for problem in part.get('bad_rows', []):
            print(f'    bad annotation row skipped: {problem}', file=stream)


def main(argv=None, downloader=None):
    """Run the CLI; `downloader(video_id, start, end, dest_tmp_path)` replaces yt-dlp (tests).
    Returns the exit code: 0 if every requested split has at least one video."""
    args = parse_args(argv)
    if args.verify is not None:
        manifest = args.out / MANIFEST if args.verify is True else args.verify
        return verify(args.out, manifest)
    args.resolved, args.bad_rows = {}, {}
    splits = ['train', 'test'] if args.split == 'both' else [args.split]
    get_downloader = _lazy(make_ytdlp_downloader if downloader is None else lambda: downloader)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {'label': args.label, 'out': str(args.out), 'splits': {}, 'error': None}
    try:
        _run(args, splits, report, get_downloader)
    except SetupError as error:
        report['error'] = str(error)
        print(f'\nError: {error}', file=sys.stderr)
    except KeyboardInterrupt:
        report['error'] = 'interrupted (KeyboardInterrupt)'
        _finish(args, splits, report)
        raise
    return _finish(args, splits, report)


def youtube_id_of(stem):
    """The YouTube id in a file name of ours ({id} or {id}_{start}_{end}), else None."""
    match = re.fullmatch(r'([A-Za-z0-9_-]{11})(_\d{6}_\d{6})?', stem)
    return match.group(1) if match else None


def folder_videos(out):
    """{'split/file name': path} of the videos in out/train and out/test."""
    return {
        f'{split}/{path.name}': path
        for split in SPLITS
        if (out / split).is_dir()
        for path in sorted((out / split).iterdir())
        if path.is_file() and is_video_name(path)
    }


def video_entry(key, path):
    """The manifest entry of one video file: what the env reads from it."""
    split, name = key.split('/', 1)
    entry = {'file': key, 'id': youtube_id_of(pathlib.Path(name).stem), 'split': split}
    entry.update(frames_fingerprint(path, MAX_FRAMES))
    entry.update(bytes=path.stat().st_size, mtime_ns=path.stat().st_mtime_ns)
    return entry


def read_manifest(path):
    with open(path, encoding='utf-8') as file:
        return json.load(file)


def update_manifest(out, label, clip, resolved):
    """Write <out>/manifest.json atomically: every video present (entries of unchanged files,
    same size and mtime, are reused rather than decoded again) and the resolved clip lists."""
    path = out / MANIFEST
    try:
        old = read_manifest(path) if path.exists() else {}
    except (OSError, ValueError):  # unreadable: written anew from the folder
        old = {}
    known = {entry['file']: entry for entry in old.get('videos', [])}
    videos = []
    for key, video in folder_videos(out).items():
        entry, stat = known.get(key), video.stat()
        if not entry or (entry.get('bytes'), entry.get('mtime_ns')) != (
            stat.st_size,
            stat.st_mtime_ns,
        ):
            try:
                entry = video_entry(key, video)
            except Exception as error:  # unreadable: listed so that --verify flags it
                entry = {'file': key, 'split': key.split('/')[0], 'error': describe_error(error)}
        videos.append(entry)
    clips = dict(old.get('clips', {}))
    clips.update(resolved)  # splits not fetched this time keep their earlier list
    manifest = {
        'label': label,
        'clip': clip,
        'frames_read': MAX_FRAMES,
        'clips': clips,
        'videos': videos,
    }
    write_atomic(path, (json.dumps(manifest, indent=1) + '\n').encode())
    return path


def compare_video(entry, path, frames_read):
    """None if the file decodes to the frames `entry` lists, else what differs."""
    try:
        now = frames_fingerprint(path, frames_read)
    except Exception as error:
        return f'cannot be read ({describe_error(error)})'
    if 'sha256' not in entry:
        return 'was unreadable when the manifest was written'
    if now['frames'] != entry['frames'] or (now['width'], now['height']) != (
        entry['width'],
        entry['height'],
    ):
        return (
            f'{now["frames"]} frames of {now["width"]}x{now["height"]}, manifest: '
            f'{entry["frames"]} of {entry["width"]}x{entry["height"]}'
        )
    if now['sha256'] != entry['sha256']:
        return 'different frames (SHA-256 of the decoded frames differs)'
    return None


def verify(out, manifest_path):
    """Check the videos in `out` against a manifest; print and return the exit code."""
    try:
        manifest = read_manifest(manifest_path)
    except (OSError, ValueError) as error:
        print(
            f'Error: cannot read the manifest {manifest_path} ({describe_error(error)}); '
            'run download_videos.py first or pass --verify PATH.',
            file=sys.stderr,
        )
        return 1
    present = folder_videos(out)
    problems = []
    for entry in manifest.get('videos', []):
        path = present.pop(entry['file'], None)
        frames_read = manifest.get('frames_read', MAX_FRAMES)
        reason = 'missing' if path is None else compare_video(entry, path, frames_read)
        if reason:
            problems.append(('missing' if path is None else 'changed', entry['file'], reason))
    problems += [('extra', key, 'not in the manifest') for key in present]
    total = len(manifest.get('videos', []))
    for kind, key, reason in problems:
        print(f'  {kind} {key}: {reason}')
    counts = {kind: sum(p[0] == kind for p in problems) for kind in ('missing', 'changed', 'extra')}
    summary = ', '.join(f'{n} {kind}' for kind, n in counts.items())
    verdict = 'MISMATCH' if problems else 'OK'
    print(f'Verify {out} against {manifest_path}: {total} videos listed; {summary}: {verdict}')
    return 1 if problems else 0


def _lazy(factory):
    cache = []

    def get():
        if not cache:
            cache.append(factory())
        return cache[0]

    return get


def _run(args, splits, report, get_downloader):
    annotations = _lazy(lambda: annotation_dir(args))  # not needed for committed lists
    files = user_videos(args.from_dir) if args.from_dir is not None else []
    plans = {}
    for split in splits:
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale(folder)
        source, jobs, unmatched = plan_split(args, split, annotations, files, get_downloader)
        plans[split] = jobs
        report['splits'][split] = new_split_report(folder, source)
        report['splits'][split].update(
            candidates=len(jobs), unmatched=unmatched, bad_rows=args.bad_rows.get(split, [])
        )
    progress = Progress(sum(len(jobs) for jobs in plans.values()))
    try:
        for split in splits:
            run_split(split, plans[split], args, report['splits'][split], progress)
    finally:
        progress.close()


def _finish(args, splits, report):
    """Count what is present, print the summary, write report.json; the exit code."""
    empty = []
    for split in splits:
        folder = args.out / split
        count = count_videos(folder) if folder.is_dir() else 0
        if split in report['splits']:
            report['splits'][split]['videos_in_folder'] = count
        if count == 0:
            empty.append(split)
    report['ok'] = not empty and report['error'] is None
    summarize(report, splits, sys.stdout)
    path = args.out / 'report.json'
    write_atomic(path, (json.dumps(report, indent=2) + '\n').encode())
    print(f'Report: {path}')
    if report['error'] is None:
        path = update_manifest(args.out, args.label, args.clip, args.resolved)
        print(f'Manifest: {path}')
    if empty:
        print(f'No video present for split(s) {", ".join(empty)}. {NO_VIDEO_HINT}', file=sys.stderr)
    return 0 if report['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
