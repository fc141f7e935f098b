"""Fetch Kinetics-400 clips of one label as natural-video backgrounds for the `nat_` tasks.

    python download_videos.py            # "driving car" -> kinetics400/videos/{train,test}

Annotations are the official Kinetics-400 CSVs (label, youtube_id, time_start, time_end, split)
from the DeepMind archive ANNOTATIONS_URL (cached in <out>/annotations), or `--annotations DIR`
holding train.csv, validate.csv and test.csv. Our `train` split is train.csv. Our `test` split is
test.csv when it carries labels, else validate.csv: the original DreamerPro used Kinetics train
clips for training backgrounds and test clips for evaluation, and validate.csv is the labelled
held-out set closest to that when test.csv has no labels.

Each clip is downloaded with yt-dlp (360p mp4 preferred), cut to [time_start, time_end], and saved
as `{youtube_id}_{start:06d}_{end:06d}.mp4`. Runs are resumable: a clip already present and
readable is skipped, downloads land under a temporary name (`*.download`, never a video
extension) and are renamed only when complete and readable. `--from-dir DIR` imports videos you
already have instead of downloading. Many Kinetics videos are gone from YouTube: every failure
is listed with its reason in the summary and in <out>/report.json. Exit code 0 when every
requested split ends with at least one video, else 1 (also when the run could not start:
missing yt-dlp, annotations or label).
"""

import argparse
import csv
import difflib
import json
import os
import pathlib
import shutil
import sys
import tarfile
import time
import typing
import urllib.request

import imageio.v3 as iio

from dreamer_core import fileio
from dreamer_core.backgrounds import VIDEO_EXTENSIONS, describe_error

ROOT = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / 'kinetics400' / 'videos'
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
    """One annotation row: a [start, end] second range of a YouTube video."""

    youtube_id: str
    start: int
    end: int

    @property
    def stem(self):
        return f'{self.youtube_id}_{self.start:06d}_{self.end:06d}'


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Download Kinetics-400 clips of one label into <out>/train and <out>/test. '
        'Our test split is test.csv if it carries labels, else validate.csv.'
    )
    parser.add_argument('--label', default='driving car', help='Kinetics-400 label to fetch.')
    parser.add_argument('--split', choices=('train', 'test', 'both'), default='both')
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


def select_clips(source, label):
    """Clips of `label` in a CSV, in file order, without duplicates."""
    rows = read_annotations(source)
    wanted = label.strip().lower()
    clips, seen = [], set()
    for row in rows:
        if (row.get('label') or '').strip().lower() != wanted:
            continue
        clip = Clip(
            row['youtube_id'].strip(), int(float(row['time_start'])), int(float(row['time_end']))
        )
        if clip.stem not in seen:
            seen.add(clip.stem)
            clips.append(clip)
    if not clips:
        labels = sorted({(row.get('label') or '').strip() for row in rows} - {''})
        close = difflib.get_close_matches(label, labels, n=3)
        raise SetupError(
            f'No rows with label "{label}" in {source}'
            + (f'; close labels: {close}.' if close else '.')
        )
    return clips


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


def make_ytdlp_downloader():
    """The default downloader: yt-dlp, 360p mp4 preferred, cut to the clip's seconds."""
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
            'This yt-dlp cannot cut clips (no download_ranges): whole videos are kept. '
            '`pip install -U yt-dlp` to cut them to the annotated seconds.',
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
        if range_func is not None:
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
    """A bar on a terminal, one line per clip otherwise."""

    def __init__(self, total, stream=None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.counts = {}

    def update(self, split, name, status, detail=''):
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        if self.tty:
            filled = int(30 * self.done / max(self.total, 1))
            counts = '  '.join(f'{key} {value}' for key, value in sorted(self.counts.items()))
            self.stream.write(
                f'\r[{"#" * filled}{"." * (30 - filled)}] {self.done}/{self.total}  {counts}'
            )
            if self.done == self.total:
                self.stream.write('\n')
        else:
            suffix = f': {detail}' if detail else ''
            self.stream.write(f'[{self.done}/{self.total}] {split} {name} {status}{suffix}\n')
        self.stream.flush()

    def close(self):
        if self.tty and 0 < self.done < self.total:
            self.stream.write('\n')


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
    try:
        with_retries(
            lambda: downloader(clip.youtube_id, clip.start, clip.end, tmp),
            args.retries,
            args.backoff,
        )
        if not tmp.exists():
            raise RuntimeError('the downloader reported success but wrote no file')
        finalize(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return 'downloaded'


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
    job() returns 'downloaded' / 'imported' / 'skipped' or raises."""
    folder = args.out / split
    if args.any_names:
        jobs = [(path.name, _import_job(path, folder / path.name)) for path in files]
        return f'--from-dir {args.from_dir}', jobs, 0
    source = split_source(annotations, split)
    clips = select_clips(source, args.label)
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


def main(argv=None, downloader=None):
    """Run the CLI; `downloader(video_id, start, end, dest_tmp_path)` replaces yt-dlp (tests).
    Returns the exit code: 0 if every requested split has at least one video."""
    args = parse_args(argv)
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


def _lazy(factory):
    cache = []

    def get():
        if not cache:
            cache.append(factory())
        return cache[0]

    return get


def _run(args, splits, report, get_downloader):
    annotations = None if args.any_names else annotation_dir(args)
    files = user_videos(args.from_dir) if args.from_dir is not None else []
    plans = {}
    for split in splits:
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale(folder)
        source, jobs, unmatched = plan_split(args, split, annotations, files, get_downloader)
        plans[split] = jobs
        report['splits'][split] = new_split_report(folder, source)
        report['splits'][split].update(candidates=len(jobs), unmatched=unmatched)
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
    if empty:
        print(f'No video present for split(s) {", ".join(empty)}. {NO_VIDEO_HINT}', file=sys.stderr)
    return 0 if report['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
