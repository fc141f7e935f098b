"""evaluate.py on one tiny trained Dreamer run: episodes, JSON, video, and a run left untouched."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

import evaluate
from tests.e2e import REPO, run_variant

STEPS = 20  # agent steps per episode: --time_limit 40 frames at action repeat 2


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A finished tiny run: prefill, two pretraining updates, checkpoint (about 20 s)."""
    logdir = tmp_path_factory.mktemp('run') / 'dmc_walker_walk' / 'dreamer' / '1'
    result = run_variant('Dreamer', logdir, '--steps', '80')
    assert result.returncode == 0, result.stderr[-2000:]
    assert (logdir / 'config.yaml').read_text().startswith('variant: dreamer\n')
    return logdir


def snapshot(folder):
    """{relative path: sha256} of every file under `folder`."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob('*'))
        if path.is_file()
    }


def test_episodes_json_and_video_leave_the_run_unchanged(run, tmp_path):
    before = snapshot(run)
    video, out = tmp_path / 'first.mp4', tmp_path / 'returns.json'
    command = [sys.executable, 'evaluate.py', '--logdir', str(run), '--episodes', '3']
    result = subprocess.run(
        [*command, '--video', str(video), '--json', str(out)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONUNBUFFERED='1'),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert snapshot(run) == before  # same files, same bytes, nothing added or removed
    data = json.loads(out.read_text())
    assert data['episodes'] == len(data['returns']) == 3
    assert data['variant'] == 'dreamer' and data['task'] == 'dmc_walker_walk'
    assert data['lengths'] == [2 * STEPS] * 3  # in frames
    assert data['mean'] == pytest.approx(np.mean(data['returns']))
    assert data['std'] == pytest.approx(np.std(data['returns']))
    for i, score in enumerate(data['returns']):
        assert f'Episode {i + 1}: return {score:.1f} ({STEPS} steps).' in result.stdout
    assert f'Mean return {data["mean"]:.1f} ± {data["std"]:.1f} over 3 episodes.' in result.stdout
    with imageio.get_reader(video) as reader:
        frames = [frame for frame in reader]  # its len() is inf: no list()
    assert len(frames) == STEPS + 1  # the reset observation, then one per step
    assert frames[0].shape == (256, 512, 3)
    assert frames[0].std() > 5  # a rendered scene, not a blank frame
    assert sorted(p.name for p in tmp_path.iterdir()) == ['first.mp4', 'returns.json']


def copy_run(run, tmp_path, checkpoint=True, edit=None):
    """A copy of the run's config (edited) and checkpoint, without replay."""
    logdir = tmp_path / 'copy'
    logdir.mkdir()
    text = (run / 'config.yaml').read_text()
    (logdir / 'config.yaml').write_text(edit(text) if edit else text)
    if checkpoint:
        shutil.copy(run / 'variables.npz', logdir)
    return logdir


def drop_variant(text):
    return ''.join(line for line in text.splitlines(True) if not line.startswith('variant:'))


@pytest.mark.parametrize(
    'case, message',
    [
        ('no checkpoint', 'has no checkpoint (variables.npz) yet'),
        ('no variant', 'names no variant'),
        ('unknown variant', "Unknown variant 'dreamr'"),
        ('other version', 'written by another version of this code (missing keys: none; '),
        ('video in run', 'is inside the run folder'),
        ('not a run', 'is not a run folder (no config.yaml)'),
        ('unknown task', "dmc_walker_wlak"),
    ],
)
def test_bad_runs_are_one_line_errors(run, tmp_path, capsys, case, message):
    edits = {
        'no variant': drop_variant,
        'unknown variant': lambda text: 'variant: dreamr\n' + drop_variant(text),
        'other version': lambda text: text + 'new_option: 3\n',
    }
    logdir = copy_run(run, tmp_path, case != 'no checkpoint', edits.get(case))
    before = snapshot(logdir)
    args = ['--logdir', str(logdir if case != 'not a run' else tmp_path)]
    if case == 'video in run':
        args += ['--video', str(logdir / 'video.mp4')]
    if case == 'unknown task':
        args += ['--task', 'dmc_walker_wlak']
    assert evaluate.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and err.count('\n') == 1, err
    assert snapshot(logdir) == before


def test_checkpoint_of_another_model_size_is_a_one_line_error(run, tmp_path, capsys):
    logdir = copy_run(run, tmp_path, edit=lambda text: text.replace('deter: 16', 'deter: 24'))
    assert evaluate.main(['--logdir', str(logdir)]) == 2
    err = capsys.readouterr().err
    assert 'written by another agent or model size' in err and err.count('\n') == 1, err


def test_task_with_other_actions_is_a_one_line_error(run, capsys):
    assert evaluate.main(['--logdir', str(run), '--task', 'dmc_cartpole_swingup']) == 2
    err = capsys.readouterr().err
    assert '--task dmc_cartpole_swingup does not fit the agent' in err and err.count('\n') == 1


def test_the_agent_holds_the_checkpoint_not_the_synthetic_update(run):
    name, config = evaluate.read_run_config(run)
    variant = evaluate.registry.get(name)
    env = evaluate.make_env(config, variant)
    try:
        agent = evaluate.build_agent(config, variant, env, run / 'variables.npz')
    finally:
        env.close()
    with np.load(run / 'variables.npz') as saved:
        names = json.loads(str(saved['meta']))['names']
        pairs = agent.checkpoint_variables()
        assert [n for n, _ in pairs] == names
        for i, (_, variable) in enumerate(pairs):
            np.testing.assert_array_equal(variable.numpy(), saved[f'v{i:05d}'])
    assert len(names) > 20  # optimizer states included
