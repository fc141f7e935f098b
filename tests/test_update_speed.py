"""benchmarks/update_speed.py at tiny size: the JSON the side-by-side harness reads."""

import json
import subprocess
import sys

from tests import e2e


def test_tiny_run_writes_the_fields_and_splits_the_first_update(tmp_path):
    out = tmp_path / 'speed.json'
    cmd = [sys.executable, 'benchmarks/update_speed.py', '--variant', 'tpc', '--tiny']
    cmd += ['--updates', '2', '--warmup', '0', '--json', str(out)]
    result = subprocess.run(cmd, cwd=e2e.REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert (data['variant'], data['batch'], data['length']) == ('tpc', 4, 8)
    assert (data['precision'], data['xla']) == ('32', 'off')
    assert len(data['times_s']) == 2 and data['min_s_per_update'] <= data['median_s_per_update']
    # The first update = making the variables + tracing once + running it.
    assert 0 < data['variables_s'] and 0 < data['trace_s']
    assert data['variables_s'] + data['trace_s'] < data['compile_s']
    assert data['peak_rss_mb'] > 100 and data['cpu_model']
    assert '| tpc | 4 x 8 | 32 | off |' in result.stdout
