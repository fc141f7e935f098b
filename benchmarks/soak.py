"""A 1M-frame soak of the real training loop: memory, disk and resume of a long run.

Usage:
  python benchmarks/soak.py [--variant dreamerpro] [--frames 1000000] [--every 50000] \\
      [--logdir ~/.cache/dreamer-soak/dreamerpro] [--out benchmarks/results/soak]

It starts the variant's own train.py with its published standard-DMC blocks on `synth_shapes`
(dreamer_core/synthetic.py: procedural 64x64 frames with moving squares, 1000-frame episodes, no
MuJoCo rendering) with the soak settings below, and keeps every published setting that decides
memory and disk: replay_size, action repeat, time limit, evaluation (10 episodes every 10k
frames), logging every 10k frames, videos, and a checkpoint after every evaluation interval.

Soak settings (SOAK_FLAGS): the tests' tiny model (dreamer_core/build.py TINY_MODEL), float32,
and `train_every` 1000 agent steps instead of 5, so that a million frames take about an hour on
2 cores; the published batch (50 x 50) is kept, so the replay is sampled as in a real run.

Every `--every` frames it records the run's resident memory (VmRSS, with its anonymous and
file-backed parts), the replays' memory (the run's own `memory_replay_mb` metric), and the
logdir's disk use and file counts by kind (train and eval replay, TensorBoard events, metrics,
checkpoint, other). At `--frames` it stops the run with SIGTERM (time to exit), measures the
replay's loading time and the sampler's batches per second (50 x 51 windows, page cache warm and,
as root, dropped), resumes the run with the same command (time until it is ready to train, memory
after reloading), and stops it again. Last it builds the published-size agent in a separate
process (RSS after a few updates on this CPU, checkpoint size) to extrapolate a published run.

Writes `{out}/soak_{variant}.json` after every record (atomically; a rerun continues the run and
keeps what is recorded) and the figure `{out}/soak_{variant}.png` with plots/plot_soak.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamer_core import build, fileio, grid, hardware, registry  # noqa: E402
from dreamer_core.errors import UserError  # noqa: E402

TASK = 'synth_shapes'
SOAK_FLAGS = ['--precision', '32', '--train_every', '1000']
SAMPLE_SHAPE = (50, 51)  # batch x rows of the sampler measurement
DISK_KINDS = ('train_replay', 'eval_replay', 'tensorboard', 'metrics', 'checkpoint', 'other')


def parse(argv):
    parser = argparse.ArgumentParser(prog='soak.py', description=__doc__.split('\n')[0])
    parser.add_argument('--variant', default='dreamerpro', choices=sorted(registry.VARIANTS))
    parser.add_argument('--frames', type=int, default=1_000_000)
    parser.add_argument('--every', type=int, default=50_000, help='frames between records')
    parser.add_argument('--logdir', help='the run (default ~/.cache/dreamer-soak/<variant>)')
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'soak'))
    parser.add_argument('--sample-batches', type=int, default=40)
    parser.add_argument(
        '--no-published', action='store_true', help='skip the published-size agent probe'
    )
    parser.add_argument(
        '--no-drop-caches',
        action='store_true',
        help='measure the sampler with a warm page cache only (dropping it needs root)',
    )
    parser.add_argument(
        '--settle', type=float, default=20.0, help='seconds the resumed run trains before its stop'
    )
    parser.add_argument('--probe-published', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--flags', nargs=argparse.REMAINDER, default=[], help='more train.py flags')
    args = parser.parse_args(argv)
    if args.frames <= 0 or args.every <= 0:
        parser.error('--frames and --every must be positive.')
    return args


def train_command(variant, logdir, frames, extra=()):
    """The variant's train.py on the soak task; `--steps` a little past `frames` so that the
    resumed run has work left."""
    variant = registry.get(variant)
    return [
        sys.executable,
        str(variant.entry),
        '--logdir',
        str(logdir),
        '--task',
        TASK,
        '--configs',
        *variant.standard,
        '--steps',
        str(frames + 20_000),
        *SOAK_FLAGS,
        *build.tiny_model(variant),
        *extra,
    ]


def disk_kind(relative):
    parts = relative.parts
    if parts[0] in ('train_replay', 'eval_replay'):
        return parts[0]
    name = parts[-1]
    if name.startswith('events.out.tfevents'):
        return 'tensorboard'
    if name in ('metrics.jsonl', 'eval_returns.jsonl'):
        return 'metrics'
    if name == 'variables.npz':
        return 'checkpoint'
    return 'other'


def disk_use(logdir):
    """{kind: {'bytes', 'files'}} of every file under `logdir`."""
    logdir = pathlib.Path(logdir)
    use = {kind: {'bytes': 0, 'files': 0} for kind in DISK_KINDS}
    for kind in ('train_replay', 'eval_replay'):
        use[kind]['steps'] = 0
    for root, _, files in os.walk(logdir):
        for name in files:
            path = pathlib.Path(root) / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # replaced while we looked
                continue
            kind = use[disk_kind(path.relative_to(logdir))]
            kind['bytes'] += size
            kind['files'] += 1
            if 'steps' in kind:
                kind['steps'] += file_steps(name) or 0
    return use


def file_steps(name):
    """The steps of an episode file from its name (`...-<steps>.npz`), or None."""
    match = re.search(r'-(\d+)\.npz$', name)
    return int(match.group(1)) if match else None


def replay_frames(logdir, action_repeat):
    """Training frames so far, from the train replay's file names."""
    names = (path.name for path in (pathlib.Path(logdir) / 'train_replay').glob('*.npz'))
    return sum(file_steps(name) or 0 for name in names) * action_repeat


def last_metric(logdir, name):
    """The last logged value of `name` in metrics.jsonl, or None."""
    path = pathlib.Path(logdir) / 'metrics.jsonl'
    value = None
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if name in row:
                value = row[name]
    return value


class Child:
    """train.py as a subprocess, its output copied to a log file; notes when lines appear."""

    def __init__(self, command, cwd, log):
        self.start = time.perf_counter()
        self.seen = {}
        self._log = open(log, 'a')
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self._log.write(line)
            self._log.flush()
            for key in ('Resumed agent', 'Stopped at frame', 'Start training', 'Finished'):
                if line.startswith(key) and key not in self.seen:
                    self.seen[key] = time.perf_counter() - self.start

    def wait_for(self, key, timeout):
        end = time.perf_counter() + timeout
        while key not in self.seen:
            if self.process.poll() is not None or time.perf_counter() > end:
                return None
            time.sleep(0.2)
        return self.seen[key]

    def stop(self):
        """SIGTERM; (seconds to exit, exit code)."""
        sent = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait()
        self._reader.join(timeout=10)
        self._log.close()
        return time.perf_counter() - sent, code


def save(path, record):
    fileio.atomic_write(path, lambda f: f.write(json.dumps(record, indent=1) + '\n'), mode='w')


def measure_sampler(logdir, obs_shape, batches, cold):
    """Load the train replay as train.py does, then time `batches` samples of SAMPLE_SHAPE."""
    from dreamer_core.replay import Replay

    if cold:
        subprocess.run(['sync'], check=False)
        pathlib.Path('/proc/sys/vm/drop_caches').write_text('3\n')
    before = hardware.resident_memory()
    start = time.perf_counter()
    replay = Replay(pathlib.Path(logdir) / 'train_replay', 2_000_000, 0, {'image': obs_shape})
    loaded = time.perf_counter() - start
    replay.sample(*SAMPLE_SHAPE, False)  # first read
    start = time.perf_counter()
    for _ in range(batches):
        replay.sample(*SAMPLE_SHAPE, False)
    seconds = time.perf_counter() - start
    return {
        'page_cache': 'dropped' if cold else 'warm',
        'load_s': round(loaded, 2),
        'episodes': replay.num_episodes,
        'steps': replay.num_steps,
        'replay_memory_mb': round(replay.memory_bytes / 2**20, 2),
        'process_memory_growth_mb': round((hardware.resident_memory() - before) / 2**20, 1),
        'batch': list(SAMPLE_SHAPE),
        'batches_per_s': round(batches / seconds, 2),
    }


def probe_published(variant):
    """Printed JSON: resident memory of the published-size agent after a few updates on this
    machine, and the size of its checkpoint."""
    import tempfile

    from benchmarks import common

    record = {'rss_mb': {}}
    record['rss_mb']['start'] = hardware.resident_memory() / 2**20
    agent, config = common.build_agent(variant, act_dim=6)
    record['rss_mb']['built'] = hardware.resident_memory() / 2**20
    batch = common.synthetic_batch(config, act_dim=6)
    # One step of the policy first: what a run holds apart from an update's working set (its
    # activations and gradients, which live in the GPU's memory on a GPU).
    obs = {'image': batch['image'][:1, 0], 'reset': batch['reset'][:1, 0]}
    agent.policy(obs, None, mode='train')
    record['rss_mb']['policy'] = hardware.resident_memory() / 2**20
    seconds = []
    for i in range(3):
        start = time.perf_counter()
        agent.train(batch)
        seconds.append(time.perf_counter() - start)
        record['rss_mb'][f'update_{i + 1}'] = hardware.resident_memory() / 2**20
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / 'variables.npz'
        agent.save(path)
        record['checkpoint_bytes'] = path.stat().st_size
    record['update_s'] = [round(s, 2) for s in seconds]
    record['batch'] = [config.dataset.batch, config.dataset.length]
    record['dmc_episode_bytes'] = dmc_episode_bytes(variant)
    print(json.dumps(record))


def dmc_episode(variant, task='dmc_walker_walk', seed=0):
    """One rendered DMC episode with random actions, as the driver stores it."""
    import numpy as np

    from dreamer_core import envs

    variant = registry.get(variant)
    config = build.load_config(variant, ['--configs', *variant.standard, '--task', task])
    env = envs.make_env(config, 'eval', variant.root, seed=seed)
    rng = np.random.default_rng(seed)
    actions = [np.zeros(env.act_space.shape, np.float32)]
    rows = [env.reset()]
    while not rows[-1]['done']:
        actions.append(rng.uniform(-1, 1, env.act_space.shape).astype(np.float32))
        rows.append(env.step(actions[-1]))
    env.close()
    episode = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    episode['action'] = np.array(actions)
    return episode


def dmc_episode_bytes(variant, task='dmc_walker_walk'):
    """Bytes of one rendered DMC episode as the training replay stores it (uncompressed) and as
    the evaluation replay does (compressed): the synthetic frames compress far better than real
    ones, so disk estimates use these."""
    import io

    import numpy as np

    episode = dmc_episode(variant, task)
    sizes = {'task': task, 'steps': len(episode['action']) - 1}
    for name, save in (('stored', np.savez), ('compressed', np.savez_compressed)):
        buffer = io.BytesIO()
        save(buffer, **episode)
        sizes[name] = buffer.getbuffer().nbytes
    return sizes


def machine():
    model, flags = hardware.cpu_info()
    return {'cpu_model': model, 'cpu_flags': flags, 'cores': os.cpu_count()}


def soak(args):
    variant = registry.get(args.variant)
    logdir = pathlib.Path(args.logdir or f'~/.cache/dreamer-soak/{variant.name}').expanduser()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f'soak_{variant.name}.json'
    record = json.loads(json_path.read_text()) if json_path.exists() else {}
    command = train_command(variant, logdir, args.frames, args.flags)
    if record.get('complete'):
        print(f'{json_path} is complete; remove it to run the soak again.')
        return 0
    record.setdefault('command', ' '.join(['python', *sys.argv]))
    record.setdefault('train_command', ' '.join(command[1:]))
    record.setdefault('git_commit', grid.git_commit())
    record.setdefault('machine', machine())
    record.setdefault('frames', args.frames)
    record.setdefault('samples', [])
    record.setdefault('wall_s', 0.0)
    config = build.load_config(variant, command[2:])
    repeat = config.action_repeat
    obs_shape = tuple(config.image_size) + (3,)
    logdir.mkdir(parents=True, exist_ok=True)
    log = out / f'soak_{variant.name}.log'

    done = {s['frames'] for s in record['samples']}
    if replay_frames(logdir, repeat) < args.frames:
        child = Child(command, variant.root, log)
        started = time.perf_counter()
        try:
            while True:
                frames = replay_frames(logdir, repeat)
                mark = frames // args.every * args.every
                if mark and mark not in done and child.process.poll() is None:
                    sample = {
                        'frames': frames,
                        'wall_s': round(record['wall_s'] + time.perf_counter() - started, 1),
                        'memory_mb': {
                            k: round(v / 2**20, 1)
                            for k, v in hardware.process_memory(child.process.pid).items()
                        },
                        'replay_memory_mb': last_metric(logdir, 'memory_replay_mb'),
                        'disk': disk_use(logdir),
                    }
                    record['samples'].append(sample)
                    done.add(mark)
                    save(json_path, record)
                    print(f'{frames} frames: {sample["memory_mb"]} ', flush=True)
                if frames >= args.frames or child.process.poll() is not None:
                    break
                time.sleep(1.0)
        finally:
            if child.process.poll() is None:
                stop_s, code = child.stop()
            else:
                stop_s, code = None, child.process.returncode
            record['wall_s'] = round(record['wall_s'] + time.perf_counter() - started, 1)
            save(json_path, record)
        if code not in (0, None) or replay_frames(logdir, repeat) < args.frames:
            raise UserError(f'the run ended early with exit code {code}; its log is {log}.')
        record['stop'] = {
            'frames': replay_frames(logdir, repeat),
            'signal_to_exit_s': round(stop_s, 1),
            'exit_code': code,
            'data_share': last_metric(logdir, 'time_data_share'),
            'update_share': last_metric(logdir, 'time_update_share'),
        }
        save(json_path, record)

    if 'sampler' not in record:
        record['sampler'] = [measure_sampler(logdir, obs_shape, args.sample_batches, False)]
        if not args.no_drop_caches and os.access('/proc/sys/vm/drop_caches', os.W_OK):
            record['sampler'].append(measure_sampler(logdir, obs_shape, 10, True))
        save(json_path, record)
        print(f'Sampler: {record["sampler"]}', flush=True)

    if 'resume' not in record:
        child = Child(command, variant.root, log)
        ready = child.wait_for('Resumed agent', timeout=600)
        memory = hardware.process_memory(child.process.pid)
        trained = child.wait_for('Start training', timeout=600)
        time.sleep(args.settle)
        after = hardware.process_memory(child.process.pid)
        stop_s, code = child.stop()
        record['resume'] = {
            'frames': replay_frames(logdir, repeat),
            'ready_to_train_s': None if ready is None else round(ready, 1),
            'training_s': None if trained is None else round(trained, 1),
            'memory_mb_ready': {k: round(v / 2**20, 1) for k, v in memory.items()},
            'memory_mb_training': {k: round(v / 2**20, 1) for k, v in after.items()},
            'signal_to_exit_s': round(stop_s, 1),
            'exit_code': code,
        }
        save(json_path, record)
        print(f'Resume: {record["resume"]}', flush=True)

    if 'published' not in record and not args.no_published:
        result = subprocess.run(
            [sys.executable, __file__, '--variant', variant.name, '--probe-published'],
            capture_output=True,
            text=True,
            check=True,
        )
        record['published'] = json.loads(result.stdout.strip().splitlines()[-1])
        save(json_path, record)
    record['estimate'] = estimate(record)
    record['complete'] = True
    save(json_path, record)
    from plots import plot_soak

    print(f'Wrote {json_path} and {plot_soak.plot(record, out / f"soak_{variant.name}.png")}.')
    return 0


def estimate(record):
    """A published-size run at 100k and at the last sample, extrapolated: the published agent's
    resident memory after its updates, plus what the soak run's memory grew by since its first
    sample; and disk with the published checkpoint in place of the tiny one."""
    samples = {s['frames']: s for s in record['samples']}
    first, last = samples[min(samples)], samples[max(samples)]
    near_100k = samples[min(samples, key=lambda f: abs(f - 100_000))]
    out = {'frames': last['frames']}
    published = record.get('published')
    if published:
        base = max(published['rss_mb'].values())
        grow = lambda s: s['memory_mb']['rss'] - first['memory_mb']['rss']
        out['rss_mb_at_100k'] = round(base + grow(near_100k), 1)
        out['rss_mb_at_end'] = round(base + grow(last), 1)
        out['rss_end_over_100k'] = round(out['rss_mb_at_end'] / out['rss_mb_at_100k'], 3)
        disk = {kind: value['bytes'] for kind, value in last['disk'].items()}
        disk['checkpoint'] = published['checkpoint_bytes']
        real = published.get('dmc_episode_bytes')
        if real:  # real frames in place of the synthetic ones, which compress far better
            per_step = lambda kind: real[kind] / real['steps']
            steps = lambda kind: last['disk'][kind]['steps']
            disk['train_replay'] = round(per_step('stored') * steps('train_replay'))
            disk['eval_replay'] = round(per_step('compressed') * steps('eval_replay'))
        out['disk_gb_at_end'] = {k: round(v / 1e9, 3) for k, v in disk.items()}
        out['disk_gb_total_at_end'] = round(sum(disk.values()) / 1e9, 2)
    return out


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.probe_published:
        probe_published(args.variant)
        return 0
    try:
        return soak(args)
    except UserError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
