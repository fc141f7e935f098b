"""What a GPU machine does with this code, in one command of about 10 minutes.

Usage:
  python benchmarks/gpu_check.py [--json PATH] [--budget 600] [--variants dreamer dreamerpro tpc]
      [--precisions 16 32] [--xla off on]
  python benchmarks/gpu_check.py --allow-cpu --tiny [...]   # the plumbing on a CPU, tiny sizes

Prints the device (GPU name and compute capability, driver, the CUDA and cuDNN TensorFlow was built
with, the CPU), then runs, each stage in child processes with its own timeout:
- tests: the tests of the paths only a GPU takes (mixed float16 with loss scaling, XLA), which
  simulate a GPU on a CPU; pass, fail, error and skip counts.
- train: 5k frames of DreamerPro on dmc_walker_walk with --precision 16: every logged loss finite
  and the loss scale settled (`loss_scale_settles`).
- render: bench_envs.py's random-action episodes at 64x64 (environment frames/s) and the 64x64
  render alone (renders/s).
- updates: benchmarks/update_speed.py at the published sizes for each variant, precision 16 and
  32, XLA off and on, each setting in its own process (precision policy and XLA are global to a
  process): compile s, median of 5 updates after one warm-up, peak GPU memory.
Writes one JSON (default benchmarks/results/gpu_check/<hostname>-<date>.json) after each stage.
The time left is shared among the stages still to run by weight (STAGE_WEIGHTS), so the check
never runs past --budget; a stage or setting out of time is recorded as "timeout". Exit code 0
when every stage passed, 1 otherwise; without a GPU one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamer_core import build, hardware, provenance, registry  # noqa: E402
from dreamer_core.fileio import atomic_write  # noqa: E402

BENCH = REPO / 'benchmarks'
NO_GPU = (
    "gpu_check: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty); "
    'nothing measured.'
)
# The tests of what a GPU runs and a CPU does not: float16 with loss scaling and XLA-compiled
# updates. On a CPU they simulate the GPU; here they run on its kernels.
GPU_TESTS = (
    'tests/test_agent_modes.py::test_mixed_precision_update_is_finite',
    'tests/test_agent_modes.py::test_mixed_float16_under_xla_is_finite_on_a_gpu',
    'tests/test_speed_levers.py::test_xla_compiles_the_same_deterministic_math',
    'tests/test_proto_loss.py::test_mixed_precision_losses_are_float32',
    'tests/test_proto_loss.py::test_translate_equals_the_image_transform_op',
    'tests/test_robustness.py::test_mixed_precision_skips_non_finite_update_without_decay',
)
TINY_TESTS = GPU_TESTS[3:5]  # 3 tests, seconds on a CPU
TRAIN = (
    '--task dmc_walker_walk --configs defaults dmc norm_off --precision 16 --steps 5000 '
    '--prefill 2500 --eval_every 2500 --eval_eps 1 --log_every 500 --pretrain 10'
).split()
# Tiny: float32, as float16 on a CPU is 20-35x slower (the run would use float32 anyway).
TINY_TRAIN = (
    '--task dmc_walker_walk --configs defaults dmc norm_off --precision 32 --steps 200 '
    '--prefill 80 --time_limit 40 --eval_every 100 --eval_eps 1 --log_every 40 --pretrain 2 '
    '--train_every 10 --dataset.batch 3 --dataset.length 9'
).split()
RENDER_TASK = 'walker_walk'
# Shares of the time left, in the order the stages run (cheap and short ones first, so that the
# update settings, each measured on its own, get whatever the others leave). Guesses: never
# measured on a GPU.
STAGE_WEIGHTS = {'tests': 1.5, 'train': 2.5, 'render': 0.3, 'updates': 6.0}
XLA_WEIGHT = {'off': 1.0, 'on': 2.5}  # XLA compiles the whole update before its first step
# The loss scale has settled when the last SETTLE_LAST logged values are above 1 and within a
# factor SETTLE_FACTOR of each other (see loss_scale_settles).
SETTLE_LAST = 3
SETTLE_FACTOR = 4.0


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--json', type=pathlib.Path, help='default: results/gpu_check/<host>-<date>'
    )
    parser.add_argument('--budget', type=float, default=600.0, help='seconds for the whole check')
    parser.add_argument('--variants', nargs='+', default=list(registry.VARIANTS))
    parser.add_argument('--precisions', nargs='+', default=['16', '32'], choices=['16', '32'])
    parser.add_argument('--xla', nargs='+', default=['off', 'on'], choices=['off', 'on'])
    parser.add_argument('--tiny', action='store_true', help='tiny sizes: checks the plumbing')
    parser.add_argument('--allow-cpu', action='store_true', help='run on a CPU (needs --tiny)')
    args = parser.parse_args(argv)
    if args.allow_cpu and not args.tiny:
        parser.error('--allow-cpu needs --tiny: the published sizes take hours on a CPU.')
    for name in args.variants:
        registry.get(name)  # an unknown name stops here, with the close matches
    return args


class Budget:
    """Seconds left of the check, shared by weight among what is still to run: what one part
    does not use goes to the later ones, and the parts together never run past the end."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def share(self, weight, weights_left):
        return self.left() * weight / weights_left


def run(cmd, timeout, cwd=REPO):
    """(status ok | failed | timeout, seconds, stdout, stderr) of a child process. On a timeout
    its process group is killed, so nothing it started keeps running."""
    if timeout < 1:
        return 'timeout', 0.0, '', 'no time left in the budget'
    start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    pipe = subprocess.PIPE
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=pipe,
        stderr=pipe,
        text=True,
        errors='replace',
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        status = 'ok' if proc.returncode == 0 else 'failed'
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        status = 'timeout'
    except BaseException:  # Ctrl-C reaches the check only: the child has its own session
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return status, time.perf_counter() - start, out, err


def tail(text, chars=2000):
    return text[-chars:]


def nvidia_driver():
    """The NVIDIA driver version from nvidia-smi (TensorFlow does not report it), or None."""
    if not shutil.which('nvidia-smi'):
        return None
    cmd = ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader']
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def device_info(tf):
    """The GPUs, the CUDA and cuDNN TensorFlow was built with, the driver and the CPU."""
    gpus = []
    for gpu in tf.config.list_physical_devices('GPU'):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get('compute_capability')
        gpus.append(
            {
                'name': details.get('device_name', gpu.name),
                'compute_capability': list(capability) if capability else None,
            }
        )
    built = dict(tf.sysconfig.get_build_info())
    model, flags = hardware.cpu_info()
    return {
        'gpus': gpus,
        'tensorflow': tf.__version__,
        'cuda_build': bool(built.get('is_cuda_build')),
        'cuda_version': built.get('cuda_version'),
        'cudnn_version': built.get('cudnn_version'),
        'driver': nvidia_driver() if gpus else None,
        'cpu_model': model,
        'cpu_flags': flags,
    }


def device_line(device):
    cpu = f'CPU {device["cpu_model"]} (flags: {" ".join(device["cpu_flags"]) or "none"})'
    tf_line = f'TensorFlow {device["tensorflow"]}'
    if not device['gpus']:
        return f'Device: no GPU, running on the CPU (--allow-cpu); {cpu}; {tf_line}'
    names = ', '.join(
        f'{gpu["name"]} (compute capability {".".join(map(str, gpu["compute_capability"] or ["?"]))})'
        for gpu in device['gpus']
    )
    cuda = f'CUDA {device["cuda_version"]}, cuDNN {device["cudnn_version"]}'
    return f'Device: {names}; driver {device["driver"]}; {tf_line} built with {cuda}; {cpu}'


def junit_counts(path):
    """{tests, passed, failed, errors, skipped} from pytest's JUnit XML."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == 'testsuite' else list(root.iter('testsuite'))
    count = lambda key: sum(int(suite.get(key, 0)) for suite in suites)
    tests, failed, errors, skipped = (count(k) for k in ('tests', 'failures', 'errors', 'skipped'))
    passed = tests - failed - errors - skipped
    return {
        'tests': tests,
        'passed': passed,
        'failed': failed,
        'errors': errors,
        'skipped': skipped,
    }


def stage_tests(args, timeout, scratch):
    nodes = TINY_TESTS if args.tiny else GPU_TESTS
    xml = scratch / 'tests.xml'
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', f'--junitxml={xml}']
    status, seconds, out, err = run([*cmd, *nodes], timeout)
    result = {'status': status, 'seconds': seconds, 'timeout_s': timeout, 'nodes': list(nodes)}
    result.update(junit_counts(xml) if xml.exists() else {})
    if status != 'ok':
        result['output'] = tail(out + err)
    return result


def loss_scale_settles(values, last=SETTLE_LAST, factor=SETTLE_FACTOR):
    """(settled, why) for the logged means of one optimizer's dynamic loss scale.

    Keras's scale starts at 2**15, halves on every step with non-finite gradients (which is
    then skipped), never drops below 1 and doubles only after 2,000 finite steps in a row, more
    than the ~260 updates of the 5k-frame run: in it the scale can only fall. Settled means
    it stopped falling: the last `last` values (each the mean over a log period of ~50 updates)
    lie within `factor` = 4 of each other, at most two halvings over ~150 updates, the odd
    overflow a float16 run has; and all are above 1, since a scale at 1 overflows unscaled.
    """
    if len(values) < last:
        return False, f'{len(values)} logged values, fewer than {last}'
    recent = [float(v) for v in values[-last:]]
    if not all(math.isfinite(v) for v in recent):
        return False, f'non-finite values {recent}'
    if min(recent) <= 1:
        return False, f'at the floor of 1: float16 overflows even unscaled ({recent})'
    if max(recent) / min(recent) > factor:
        return False, f'still falling: the last {last} span more than {factor:g}x ({recent})'
    return True, f'the last {last} within {factor:g}x of each other, all above 1'


def check_metrics(rows, mixed):
    """Every `*_loss` in the rows of metrics.jsonl finite, and (when `mixed`, mixed float16) the
    loss scale of each optimizer settled; {'ok', 'loss_rows', 'non_finite', 'loss_scale'}."""
    loss_rows = [row for row in rows if any(key.endswith('_loss') for key in row)]
    non_finite = [
        [row.get('step'), key]
        for row in loss_rows
        for key, value in row.items()
        if key.endswith('_loss') and not math.isfinite(value)
    ]
    keys = sorted({key for row in rows for key in row if key.endswith('_loss_scale')})
    scales = {}
    for key in keys:
        values = [row[key] for row in rows if key in row]
        settled, why = loss_scale_settles(values)
        scales[key] = {'last': values[-SETTLE_LAST:], 'settled': settled, 'why': why}
    ok = bool(loss_rows) and not non_finite and all(s['settled'] for s in scales.values())
    if mixed and not scales:
        ok = False
        scales['missing'] = {'settled': False, 'why': 'no loss scale logged under mixed_float16'}
    return {'ok': ok, 'loss_rows': len(loss_rows), 'non_finite': non_finite, 'loss_scale': scales}


def read_jsonl(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_policy(logdir):
    """The precision policy the run chose for this machine (config.yaml's `run:`), or None."""
    import yaml

    path = logdir / 'config.yaml'
    if not path.exists():
        return None
    return (yaml.safe_load(path.read_text()).get('run') or {}).get('precision_policy')


def stage_train(args, timeout, scratch):
    variant = registry.get('dreamerpro')
    flags = TINY_TRAIN + build.tiny_model(variant) if args.tiny else TRAIN
    logdir = scratch / 'train'
    cmd = [sys.executable, str(variant.entry), '--logdir', str(logdir), *flags]
    status, seconds, out, err = run(cmd, timeout, cwd=variant.root)
    policy = run_policy(logdir)
    rows = read_jsonl(logdir / 'metrics.jsonl')
    check = check_metrics(rows, mixed=policy == 'mixed_float16')
    frames = max((row.get('step', 0) for row in rows), default=0)
    result = {'status': status, 'seconds': seconds, 'timeout_s': timeout, 'command': cmd}
    result.update(precision=flags[flags.index('--precision') + 1], policy=policy, frames=frames)
    result.update(check)
    if status == 'ok' and not check['ok']:
        result['status'] = 'failed'
    if status != 'ok':
        result['output'] = tail(err or out)
    return result


def render_rate(task, episodes, renders, steps=None):
    """Run in a child: environment frames/s over `episodes` random-action episodes of
    bench_envs.py (1,000 frames or `steps` agent steps, action repeat 2, 64x64 renders) and
    renders/s of the 64x64 image alone."""
    import bench_envs
    import numpy as np

    from dreamer_core import envs

    env, _ = bench_envs.make(task, None, seed=0)
    env = envs.TimeLimit(env, steps) if steps else env
    try:
        timings, rng = [], np.random.default_rng(0)
        for _ in range(episodes):
            bench_envs.episode(env, rng, timings)
        env_fps, first_reset, _ = bench_envs.summary(timings)
        start = time.perf_counter()
        for _ in range(renders):
            env.render()
        renders_per_s = renders / (time.perf_counter() - start)
    finally:
        env.close()
    return {
        'task': task,
        'size': list(bench_envs.SIZE),
        'action_repeat': bench_envs.REPEAT,
        'frames': int(sum(frames for _, _, frames in timings)),
        'env_fps': float(env_fps),
        'first_reset_s': float(first_reset),
        'renders': renders,
        'renders_per_s': renders_per_s,
        'mujoco_gl': os.environ.get('MUJOCO_GL'),
    }


def stage_render(args, timeout, scratch):
    # Tiny: OSMesa renders 30-300 frames/s on a CPU, so 40 frames and 10 renders.
    episodes, renders, steps = (1, 10, 20) if args.tiny else (2, 500, None)
    call = f'render_rate({RENDER_TASK!r}, {episodes}, {renders}, {steps})'
    code = (
        f'import json, sys; sys.path.insert(0, {str(BENCH)!r}); import gpu_check; '
        f'print(json.dumps(gpu_check.{call}))'
    )
    status, seconds, out, err = run([sys.executable, '-c', code], timeout)
    result = {'status': status, 'seconds': seconds, 'timeout_s': timeout}
    if status == 'ok':
        result.update(json.loads(out.strip().splitlines()[-1]))
    else:
        result['output'] = tail(err or out)
    return result


UPDATE_HEADER = (
    '| variant | precision (policy) | xla | compile s | median s/update | min s | peak GPU MB '
    '| wall s | status |\n|---|---|---|---|---|---|---|---|---|'
)


def update_settings(args):
    """(variant, precision, xla) in the order they run: every XLA-off setting first, as they
    are the quicker ones and leave their spare time to the XLA compiles."""
    return [(v, p, x) for x in args.xla for p in args.precisions for v in args.variants]


def measure_update(args, setting, timeout, scratch):
    variant, precision, xla = setting
    path = scratch / f'update_{variant}_{precision}_{xla}.json'
    cmd = [sys.executable, str(BENCH / 'update_speed.py'), '--variant', variant]
    cmd += ['--precision', precision, '--xla', xla, '--updates', '5', '--warmup', '1']
    cmd += ['--json', str(path)] + (['--tiny'] if args.tiny else [])
    status, seconds, out, err = run(cmd, timeout)
    result = {'variant': variant, 'precision': precision, 'xla': xla, 'status': status}
    result.update(seconds=seconds, timeout_s=timeout)
    if status == 'ok':
        data = json.loads(path.read_text())
        keep = ('policy', 'batch', 'length', 'compile_s', 'median_s_per_update')
        keep += ('min_s_per_update', 'times_s', 'last_model_loss', 'peak_rss_mb', 'peak_gpu_mb')
        result.update({key: data.get(key) for key in keep})
    else:
        result['output'] = tail(err or out)
    return result


def stage_updates(args, timeout, scratch):
    settings = update_settings(args)
    budget, results = Budget(timeout), []
    print(UPDATE_HEADER)
    for index, setting in enumerate(settings):
        weights_left = sum(XLA_WEIGHT[xla] for _, _, xla in settings[index:])
        slot = budget.share(XLA_WEIGHT[setting[2]], weights_left)
        results.append(measure_update(args, setting, slot, scratch))
        print(update_row(results[-1]), flush=True)
    status = 'ok' if all(r['status'] == 'ok' for r in results) else 'failed'
    if any(r['status'] == 'timeout' for r in results):
        status = 'timeout'
    seconds = sum(r['seconds'] for r in results)
    return {'status': status, 'seconds': seconds, 'timeout_s': timeout, 'settings': results}


def number(value, digits=2):
    return '-' if value is None else f'{value:.{digits}f}'


def update_row(r):
    return (
        f'| {r["variant"]} | {r["precision"]} ({r.get("policy") or "-"}) | {r["xla"]} '
        f'| {number(r.get("compile_s"), 1)} | {number(r.get("median_s_per_update"), 3)} '
        f'| {number(r.get("min_s_per_update"), 3)} | {number(r.get("peak_gpu_mb"), 0)} '
        f'| {r["seconds"]:.0f} | {r["status"]} |'
    )


def table_tests(r):
    counts = ' | '.join(str(r.get(key, '-')) for key in ('passed', 'failed', 'errors', 'skipped'))
    print('| GPU-path tests | passed | failed | errors | skipped | s | status |')
    print('|---|---|---|---|---|---|---|')
    print(f'| {len(r["nodes"])} node ids | {counts} | {r["seconds"]:.0f} | {r["status"]} |')


def table_train(r):
    scales = '; '.join(
        f'{key}: {" ".join(f"{v:g}" for v in s.get("last", []))} ({s["why"]})'
        for key, s in r['loss_scale'].items()
    )
    finite = 'yes' if r['loss_rows'] and not r['non_finite'] else 'NO'
    print('| DreamerPro frames | precision (policy) | loss rows | losses finite | loss scale | s |')
    print('|---|---|---|---|---|---|')
    print(
        f'| {r["frames"]} | {r["precision"]} ({r["policy"]}) | {r["loss_rows"]} | {finite} '
        f'| {scales or "none logged (float32)"} | {r["seconds"]:.0f} |'
    )
    print(f'train: {r["status"]}')


def table_render(r):
    print('| task | env frames/s (repeat 2) | 64x64 renders/s | MUJOCO_GL | s | status |')
    print('|---|---|---|---|---|---|')
    print(
        f'| {RENDER_TASK} | {number(r.get("env_fps"), 0)} | {number(r.get("renders_per_s"), 0)} '
        f'| {r.get("mujoco_gl", "-")} | {r["seconds"]:.0f} | {r["status"]} |'
    )


def table_updates(r):
    print(f'updates: {r["status"]} in {r["seconds"]:.0f} s')


# name -> (run the stage, print its table); the order of STAGE_WEIGHTS is the order they run.
STAGES = {
    'tests': (stage_tests, table_tests),
    'train': (stage_train, table_train),
    'render': (stage_render, table_render),
    'updates': (stage_updates, table_updates),
}


def default_json():
    date = datetime.date.today().isoformat()
    return REPO / 'benchmarks' / 'results' / 'gpu_check' / f'{socket.gethostname()}-{date}.json'


def write_json(path, report):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1)
    atomic_write(path, lambda file: file.write(text), mode='w')


def main(argv=None):
    args = parse(argv)
    budget, start = Budget(args.budget), time.perf_counter()  # from the start: TF loads slowly
    import tensorflow as tf

    device = device_info(tf)
    if not device['gpus'] and not args.allow_cpu:
        print(NO_GPU, file=sys.stderr)
        return 2
    print(device_line(device), flush=True)
    path = args.json or default_json()
    report = {
        'started': datetime.datetime.now().isoformat(timespec='seconds'),
        'host': socket.gethostname(),
        'command': [sys.executable, *sys.argv],
        'tiny': args.tiny,
        'budget_s': args.budget,
        'stage_weights': STAGE_WEIGHTS,
        'device': device,
        'code': provenance.code_version(),
        'versions': provenance.versions(),
        'stages': {},
    }
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as scratch:
        names = list(STAGE_WEIGHTS)
        for index, name in enumerate(names):
            weights_left = sum(STAGE_WEIGHTS[n] for n in names[index:])
            timeout = budget.share(STAGE_WEIGHTS[name], weights_left)
            print(f'\n{name} (at most {timeout:.0f} s)', flush=True)
            stage, table = STAGES[name]
            result = stage(args, timeout, pathlib.Path(scratch))
            report['stages'][name] = result
            report['wall_s'] = time.perf_counter() - start
            write_json(path, report)
            table(result)
    ok = all(stage['status'] == 'ok' for stage in report['stages'].values())
    print(f'\n{"All stages passed" if ok else "Not every stage passed"}; wrote {path}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
