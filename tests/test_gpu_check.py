"""benchmarks/gpu_check.py: its answer without a GPU, its plumbing on a tiny CPU run, and the
check of a float16 run's losses and loss scale on hand-made metric rows."""

import json
import math
import subprocess
import sys

import pytest
import tensorflow as tf

from benchmarks import gpu_check
from tests.e2e import REPO

SCRIPT = str(REPO / 'benchmarks' / 'gpu_check.py')
NO_GPU = not tf.config.list_physical_devices('GPU')


@pytest.mark.skipif(not NO_GPU, reason='a GPU is visible')
def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path):
    out = tmp_path / 'check.json'
    cmd = [sys.executable, SCRIPT, '--json', str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [gpu_check.NO_GPU]
    assert 'no GPU visible' in result.stderr and result.stdout == ''
    assert not out.exists()


def test_allow_cpu_needs_tiny():
    with pytest.raises(SystemExit):
        gpu_check.parse(['--allow-cpu'])
    assert gpu_check.parse(['--allow-cpu', '--tiny']).allow_cpu


@pytest.mark.skipif(not NO_GPU, reason='a GPU is visible')
def test_tiny_cpu_run_writes_every_stage_with_sensible_numbers(tmp_path):
    out = tmp_path / 'check.json'
    cmd = [sys.executable, SCRIPT, '--allow-cpu', '--tiny', '--variants', 'dreamer']
    cmd += ['--xla', 'off', '--json', str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith('Device: no GPU, running on the CPU')
    report = json.loads(out.read_text())
    assert report['tiny'] and report['device']['gpus'] == [] and report['device']['cpu_model']
    stages = report['stages']
    assert list(stages) == ['tests', 'train', 'render', 'updates']
    assert all(stage['status'] == 'ok' and stage['seconds'] > 0 for stage in stages.values())

    tests = stages['tests']
    assert tests['passed'] == tests['tests'] == 3 and tests['failed'] == tests['errors'] == 0

    train = stages['train']
    # Float32 on a CPU (the precision recorded is the one used): no loss scale to settle.
    assert (train['precision'], train['policy'], train['frames']) == ('32', 'float32', 200)
    assert train['loss_rows'] >= 2 and train['non_finite'] == [] and train['loss_scale'] == {}

    render = stages['render']
    assert render['frames'] == 40 and render['env_fps'] > 0 and render['renders_per_s'] > 0

    settings = stages['updates']['settings']
    assert [(s['precision'], s['xla']) for s in settings] == [('16', 'off'), ('32', 'off')]
    for setting in settings:
        # Precision 16 without a GPU runs as float32, and the result says so.
        assert setting['policy'] == 'float32' and setting['peak_gpu_mb'] is None
        assert 0 < setting['min_s_per_update'] <= setting['median_s_per_update']
        assert setting['compile_s'] > setting['median_s_per_update']
        assert len(setting['times_s']) == 5 and math.isfinite(setting['last_model_loss'])
    assert '| dreamer | 16 (float32) | off |' in result.stdout


def test_a_child_out_of_time_is_killed_and_recorded_as_a_timeout():
    status, seconds, _, _ = gpu_check.run([sys.executable, '-c', 'import time; time.sleep(60)'], 2)
    assert status == 'timeout' and 1.5 < seconds < 30
    assert gpu_check.run([sys.executable, '-c', 'pass'], 0.5)[0] == 'timeout'  # no time left
    assert gpu_check.run([sys.executable, '-c', 'raise SystemExit(3)'], 30)[0] == 'failed'


def test_update_settings_run_every_xla_off_setting_first():
    args = gpu_check.parse(['--variants', 'dreamer', 'tpc'])
    settings = gpu_check.update_settings(args)
    assert len(settings) == len(set(settings)) == 8
    assert [xla for _, _, xla in settings] == ['off'] * 4 + ['on'] * 4


def rows(scales, loss=1.0):
    """metrics.jsonl rows of a float16 run: one log line per loss-scale value."""
    return [
        {'step': 3000 + 500 * i, 'model_loss': loss, 'actor_loss': -0.5, 'model_loss_scale': s}
        for i, s in enumerate(scales)
    ]


@pytest.mark.parametrize(
    'scales, settled, why',
    [
        ([2.0**15, 2.0**14, 2.0**13, 2.0**13, 2.0**12], True, 'within'),
        ([2.0**15, 2.0**15, 2.0**15], True, 'within'),
        ([2.0**15, 2.0**12, 2.0**9, 2.0**6, 2.0**3], False, 'still falling'),
        ([8.0, 2.0, 1.0, 1.0, 1.0], False, 'floor'),
        ([2.0**15, 2.0**14], False, 'fewer than 3'),
        ([2.0**15, float('nan'), 2.0**14], False, 'non-finite'),
    ],
)
def test_loss_scale_settles(scales, settled, why):
    got, reason = gpu_check.loss_scale_settles(scales)
    assert got is settled and why in reason
    check = gpu_check.check_metrics(rows(scales), mixed=True)
    assert check['ok'] is settled and check['loss_scale']['model_loss_scale']['settled'] is settled


def test_a_non_finite_loss_fails_the_check_even_with_a_settled_scale():
    metrics = rows([2.0**13] * 4)
    metrics[2]['model_loss'] = float('inf')
    metrics.insert(0, {'step': 2500, 'train_return': 30.0})  # rows without losses are ignored
    check = gpu_check.check_metrics(metrics, mixed=True)
    assert not check['ok'] and check['non_finite'] == [[4000, 'model_loss']]
    assert check['loss_rows'] == 4 and check['loss_scale']['model_loss_scale']['settled']


def test_mixed_float16_without_a_logged_loss_scale_fails_and_float32_needs_none():
    metrics = [{'step': 3000, 'model_loss': 1.0}, {'step': 3500, 'model_loss': 0.9}]
    assert gpu_check.check_metrics(metrics, mixed=False)['ok']
    check = gpu_check.check_metrics(metrics, mixed=True)
    assert not check['ok'] and 'no loss scale' in check['loss_scale']['missing']['why']
    assert not gpu_check.check_metrics([], mixed=False)['ok']  # no losses logged at all
