"""Memory and disk of a long run against its frames, from a soak record (benchmarks/soak.py).

Usage:
  python plots/plot_soak.py benchmarks/results/soak/soak_dreamerpro.json [--out figure.png]

Left: the run's resident memory (and its anonymous part) and the replays' own memory, in GB.
Right: the logdir's disk use by kind, in GB. A marker at the last frame shows the resumed run's
memory once it trained again.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from plots.plot_curves import frames_text, save_png  # noqa: E402

DISK_LABELS = {
    'train_replay': 'train replay',
    'eval_replay': 'eval replay',
    'tensorboard': 'TensorBoard events',
    'metrics': 'metrics',
    'checkpoint': 'checkpoint',
    'other': 'other',
}


def figure(record):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    samples = sorted(record['samples'], key=lambda s: s['frames'])
    frames = np.array([s['frames'] for s in samples])
    fig, (memory, disk) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=80, layout='constrained')
    gb = lambda values: np.array([np.nan if v is None else v for v in values], float) / 1024
    for key, text in (('rss', 'resident (VmRSS)'), ('rss_anon', 'anonymous (RssAnon)')):
        memory.plot(frames, gb([s['memory_mb'].get(key) for s in samples]), '.-', label=text)
    memory.plot(frames, gb([s.get('replay_memory_mb') for s in samples]), '.-', label='replays')
    resume = record.get('resume')
    if resume and resume.get('memory_mb_training'):
        memory.plot(
            [resume['frames']],
            [resume['memory_mb_training']['rss'] / 1024],
            'k*',
            markersize=10,
            label='resident after resume',
        )
    memory.set_ylabel('memory (GB)')
    memory.set_title('memory of the run')
    kinds = [k for k in DISK_LABELS if any(s['disk'][k]['bytes'] for s in samples)]
    for kind in kinds:
        values = np.array([s['disk'][kind]['bytes'] for s in samples]) / 1e9
        disk.plot(frames, values, '.-', label=DISK_LABELS[kind])
    total = np.array([sum(v['bytes'] for v in s['disk'].values()) for s in samples]) / 1e9
    disk.plot(frames, total, 'k--', label='all')
    disk.set_ylabel('disk (GB)')
    disk.set_title('disk use of the logdir')
    for ax in (memory, disk):
        ax.set_xlabel('environment frames')
        ax.set_xlim(0, max(frames.max(), (resume or {}).get('frames', 0), 1) * 1.02)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_formatter(lambda x, _: frames_text(int(x)) if x else '0')
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small')
    return fig


def plot(record, out):
    """Write the figure of `record` to `out` (a palette PNG); returns the path."""
    fig = figure(record)
    import matplotlib.pyplot as plt

    out = pathlib.Path(out)
    fig.canvas.draw()
    save_png(np.asarray(fig.canvas.buffer_rgba())[..., :3], out)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('record', help='a soak record, benchmarks/results/soak/soak_<variant>.json')
    parser.add_argument('--out', help='the figure (default: the record with .png)')
    args = parser.parse_args(argv)
    path = pathlib.Path(args.record)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f'error: cannot read the soak record {path}: {error}', file=sys.stderr)
        return 2
    if not record.get('samples'):
        print(f'error: {path} has no samples yet: run benchmarks/soak.py first.', file=sys.stderr)
        return 2
    print(f'Wrote {plot(record, args.out or path.with_suffix(".png"))}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
