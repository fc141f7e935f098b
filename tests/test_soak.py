"""benchmarks/soak.py and plots/plot_soak.py: the plumbing of the 1M-frame soak, on a tiny run."""

import json
import subprocess
import sys

import numpy as np

from benchmarks import soak
from plots import plot_soak
from tests.e2e import REPO

# A tiny schedule: 200-frame episodes, a record every 1000 frames, one evaluation episode.
TINY_FLAGS = (
    '--time_limit 200 --prefill 400 --pretrain 1 --eval_every 1000 --log_every 1000 '
    '--eval_eps 1 --dataset.batch 3 --dataset.length 8 --jit False'
).split()


def test_disk_use_sorts_the_files_of_a_logdir_by_kind(tmp_path):
    files = {
        'train_replay/20240101T000000-aa-500.npz': 7,
        'train_replay/20240101T000001-bb-250.npz': 5,
        'eval_replay/20240101T000000-cc-500.npz': 3,
        'events.out.tfevents.1.host.2.v2': 11,
        'metrics.jsonl': 13,
        'eval_returns.jsonl': 17,
        'variables.npz': 19,
        'config.yaml': 23,
    }
    for name, size in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b'x' * size)
    use = soak.disk_use(tmp_path)
    assert use['train_replay'] == {'bytes': 12, 'files': 2, 'steps': 750}
    assert use['eval_replay'] == {'bytes': 3, 'files': 1, 'steps': 500}
    assert use['tensorboard'] == {'bytes': 11, 'files': 1}
    assert use['metrics'] == {'bytes': 30, 'files': 2}
    assert use['checkpoint'] == {'bytes': 19, 'files': 1}
    assert use['other'] == {'bytes': 23, 'files': 1}
    assert soak.replay_frames(tmp_path, 2) == 1500


def sample(frames, rss, train_steps):
    disk = {kind: {'bytes': 100, 'files': 1} for kind in soak.DISK_KINDS}
    disk['train_replay'] = {'bytes': 10**6, 'files': 2, 'steps': train_steps}
    disk['eval_replay'] = {'bytes': 10, 'files': 2, 'steps': train_steps // 10}
    return {'frames': frames, 'memory_mb': {'rss': rss}, 'disk': disk, 'replay_memory_mb': 1.0}


def test_the_published_estimate_adds_the_soak_runs_growth_to_the_published_agent():
    record = {
        'samples': [sample(50_000, 2000.0, 25_000), sample(100_000, 2010.0, 50_000)]
        + [sample(1_000_000, 2100.0, 500_000)],
        'published': {
            'rss_mb': {'built': 700.0, 'update_3': 5000.0},
            'checkpoint_bytes': 5 * 10**7,
            'dmc_episode_bytes': {'steps': 500, 'stored': 6 * 10**6, 'compressed': 1.5 * 10**6},
        },
    }
    estimate = soak.estimate(record)
    assert estimate['rss_mb_at_100k'] == 5010.0 and estimate['rss_mb_at_end'] == 5100.0
    assert estimate['rss_end_over_100k'] == round(5100 / 5010, 3)
    # Real frames: 12 kB a step in the training replay, 3 kB compressed in the evaluation one.
    assert estimate['disk_gb_at_end']['train_replay'] == 6.0
    assert estimate['disk_gb_at_end']['eval_replay'] == 0.15
    assert estimate['disk_gb_at_end']['checkpoint'] == 0.05


def test_the_figure_and_its_bad_input(tmp_path, capsys):
    record = {'samples': [sample(f, 2000.0 + f / 1e4, f // 2) for f in (50_000, 100_000, 150_000)]}
    record['resume'] = {'frames': 150_000, 'memory_mb_training': {'rss': 1900.0}}
    path = tmp_path / 'soak.json'
    path.write_text(json.dumps(record))
    assert plot_soak.main([str(path)]) == 0
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / 'soak.png').convert('RGB'))
    assert image.shape[0] > 200 and image.shape[1] > 600 and image.std() > 10
    path.write_text(json.dumps({'samples': []}))
    assert plot_soak.main([str(path)]) == 2
    assert capsys.readouterr().err.count('\n') == 1


def test_a_tiny_soak_records_stops_resumes_and_writes_its_figure(tmp_path):
    out, logdir = tmp_path / 'out', tmp_path / 'run'
    command = [sys.executable, str(REPO / 'benchmarks' / 'soak.py'), '--variant', 'dreamer']
    command += ['--frames', '2000', '--every', '1000', '--logdir', str(logdir), '--out', str(out)]
    command += ['--no-published', '--no-drop-caches', '--settle', '1', '--sample-batches', '3']
    done = subprocess.run(command + ['--flags', *TINY_FLAGS], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((out / 'soak_dreamer.json').read_text())
    assert record['complete'] and (out / 'soak_dreamer.png').exists()
    marks = [s['frames'] // 1000 * 1000 for s in record['samples']]
    assert marks == [1000, 2000]
    for s in record['samples']:
        assert s['memory_mb']['rss'] > 100 and s['disk']['train_replay']['files'] >= 5
        assert s['disk']['checkpoint']['files'] <= 1
    assert record['stop']['exit_code'] == 0 and record['stop']['frames'] >= 2000
    sampler = record['sampler'][0]
    assert sampler['batches_per_s'] > 0 and sampler['steps'] >= 1000
    resume = record['resume']
    assert resume['exit_code'] == 0 and 0 < resume['ready_to_train_s'] <= resume['training_s']
    assert resume['frames'] >= record['stop']['frames']
    log = (out / 'soak_dreamer.log').read_text()
    assert 'Resumed agent from' in log and log.count('Stopped at frame') == 2
    # A second call finds the record complete and starts nothing.
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0 and 'is complete' in again.stdout
