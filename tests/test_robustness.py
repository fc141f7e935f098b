"""Robustness: the real Dreamer/dreamerv2/train.py killed, stopped by signals and fed bad input,
and the loop's rules for non-finite updates.

The subprocess runs use tests/e2e.py's tiny model with a shorter schedule (FAST): 10-step
episodes (20 frames, action repeat 2), a 20-step prefill, one evaluation episode and a 20-step
training chunk between saves.
"""

import collections
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import types

import numpy as np
import pytest

from dreamer_core import train as train_lib
from dreamer_core.replay import Replay, load_episode
from tests import e2e
from tests.e2e import REPO, metrics, run_variant

FAST = '--time_limit 20 --prefill 40 --eval_every 40 --eval_eps 1 --log_every 1000 --pretrain 1'.split()
ACTION_REPEAT = 2  # of the dmc block
EPISODE_STEPS = 10
REPLAY_DIRS = ('train_replay', 'eval_replay')


def train(logdir, *args, variant='Dreamer', kill=None, configs=('defaults', 'dmc')):
    env = {'DREAMER_KILL_AT': kill} if kill else None
    return run_variant(variant, logdir, *FAST, *args, configs=configs, env=env)


def command(logdir, *args, variant='Dreamer'):
    """The command run_variant builds, for runs that need Popen."""
    return e2e.command(variant, logdir, *FAST, *args)


def last_line(text):
    return (text.strip().splitlines() or [''])[-1]


def output(result):
    return f'--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}'


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_digest(path):
    """A digest of a checkpoint's variables other than the step counter (what updates
    change; an evaluation moves the step and the random generators' states only)."""
    with np.load(path, allow_pickle=False) as data:
        names = json.loads(str(data['meta']))['names']
        values = [data[f'v{i:05d}'].tobytes() for i, name in enumerate(names) if name != 'step']
    return hashlib.sha256(b''.join(values)).hexdigest()


def checkpoint_frames(logdir):
    """The frame count stored in logdir's checkpoint (its agent `step` times the action repeat);
    reading every array also proves the file is a complete checkpoint."""
    path = logdir / train_lib.CHECKPOINT
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays.pop('meta')))
    generators = [arrays.pop(f'g{i:05d}') for i in range(meta['generators'])]
    assert meta['variant'] == 'dreamer' and len(meta['names']) == len(arrays)
    assert (
        len(generators) == 1
        and meta['step'] * ACTION_REPEAT
        == int(arrays[f'v{meta["names"].index("step"):05d}']) * ACTION_REPEAT
    )
    return int(arrays[f'v{meta["names"].index("step"):05d}']) * ACTION_REPEAT


def replay_files(logdir):
    return {name: sorted((logdir / name).glob('*.npz')) for name in REPLAY_DIRS}


def assert_replay_clean(logdir):
    """Every episode file loads completely; nothing but *.npz is left in the replay folders."""
    for name, paths in replay_files(logdir).items():
        for path in paths:
            episode = load_episode(path)
            assert episode['image'].shape == (EPISODE_STEPS + 1, 64, 64, 3), path
            assert path.name.endswith(f'-{EPISODE_STEPS}.npz'), path
        others = [p.name for p in (logdir / name).iterdir() if p.suffix != '.npz']
        assert not others, f'temporary files left in {name}: {others}'


def resumed_frame(stdout):
    match = re.search(r'Resumed agent from .* at frame (\d+)\.', stdout)
    return int(match.group(1)) if match else None


@pytest.fixture(scope='module')
def good_run(tmp_path_factory):
    """A finished 80-frame run; tests copy it (copy_run) instead of training their own."""
    logdir = tmp_path_factory.mktemp('good') / 'run'
    result = train(logdir, '--steps', '80')
    assert result.returncode == 0, output(result)
    assert checkpoint_frames(logdir) == 80
    return logdir


def copy_run(good_run, tmp_path):
    logdir = tmp_path / 'run'
    shutil.copytree(good_run, logdir)
    return logdir


# --- Kill points -------------------------------------------------------------------------------


def kill_then_resume(logdir, point, steps):
    """SIGKILL a run at `point`, restart it with the same command and check nothing was lost."""
    saved_before = checkpoint_frames(logdir)
    checkpoint = logdir / train_lib.CHECKPOINT
    checkpoint_bytes = digest(checkpoint) if saved_before is not None else None
    killed = train(logdir, '--steps', str(steps), kill=point)
    assert killed.returncode == -signal.SIGKILL, f'{point}: ' + output(killed)
    if checkpoint_bytes is not None:
        # A kill, even during a save, never touches the previous good checkpoint.
        assert digest(checkpoint) == checkpoint_bytes, f"{point}: " + output(killed)
    rows_before = len(metrics(logdir)) if (logdir / 'metrics.jsonl').exists() else 0
    after_kill = {
        'checkpoint_tmp': checkpoint.with_name(checkpoint.name + '.tmp').exists(),
        'episode_tmp': [p for name in REPLAY_DIRS for p in (logdir / name).glob('.*.tmp')],
    }

    resumed = train(logdir, '--steps', str(steps))
    assert resumed.returncode == 0, f'{point}: ' + output(resumed)
    assert_replay_clean(logdir)
    assert f'Finished {steps} frames.' in resumed.stdout, output(resumed)
    assert checkpoint_frames(logdir) is not None  # the final checkpoint loads completely
    if saved_before is not None:
        frame = resumed_frame(resumed.stdout)
        assert frame is not None and frame >= saved_before, output(resumed)
    new_steps = [row['step'] for row in metrics(logdir)[rows_before:]]
    assert min(new_steps, default=steps) >= (saved_before or 0), (point, saved_before, new_steps)
    return killed, resumed, after_kill


def test_sigkill_at_each_kill_point_then_resume_loses_nothing(tmp_path):
    logdir = tmp_path / 'run'

    # Prefill: killed mid-way through the second episode; the first one is kept and the
    # restart collects only the missing 10 steps.
    killed, resumed, _ = kill_then_resume(logdir, 'prefill:15', steps=80)
    assert 'Prefill dataset (20 steps, 40 frames)' in killed.stdout
    assert 'Prefill dataset (10 steps, 20 frames)' in resumed.stdout, output(resumed)
    assert 'Resumed agent' not in resumed.stdout  # there was no checkpoint yet
    assert checkpoint_frames(logdir) == 80
    good = weights_digest(logdir / train_lib.CHECKPOINT)

    # Checkpoint: killed between writing the temporary file and renaming it over the old one.
    killed, resumed, after_kill = kill_then_resume(logdir, 'checkpoint:1', steps=120)
    assert after_kill['checkpoint_tmp']  # the save had really started
    assert 'Saved checkpoint' not in killed.stdout
    assert resumed_frame(resumed.stdout) == 120  # both training episodes were already in replay
    # The killed save left the old checkpoint whole: the resumed run loaded it and only evaluated.
    assert weights_digest(logdir / train_lib.CHECKPOINT) == good

    # Train: killed right after the second update while training (the resumed agent is loaded
    # without an update).
    killed, resumed, _ = kill_then_resume(logdir, 'train:2', steps=160)
    assert resumed_frame(killed.stdout) == 120 and 'Start training.' in killed.stdout
    assert 'Saved checkpoint' in resumed.stdout and checkpoint_frames(logdir) == 160
    # The new save replaced the stale temporary file of the killed checkpoint save.
    assert not (logdir / 'variables.npz.tmp').exists()

    # Episode: killed between writing an episode to its temporary file and renaming it.
    episodes = {name: len(paths) for name, paths in replay_files(logdir).items()}
    killed, resumed, after_kill = kill_then_resume(logdir, 'episode:2', steps=200)
    assert len(after_kill['episode_tmp']) == 1 and after_kill['episode_tmp'][0].suffix == '.tmp'
    # 160 -> 200 frames: the killed run stored the training episode ending at 180 and was killed
    # writing the one ending at 200; the restart went on from 180 (no evaluation there: 160 has
    # it, evaluations stay every 40 frames from the end of prefill), stored the episode ending
    # at 200 and the final evaluation's.
    counts = {name: len(paths) for name, paths in replay_files(logdir).items()}
    assert counts == {
        'train_replay': episodes['train_replay'] + 2,
        'eval_replay': episodes['eval_replay'] + 1,
    }, (episodes, counts)
    assert [json.loads(line)['step'] for line in (logdir / 'eval_returns.jsonl').open()][-2:] == [
        160,
        200,
    ]
    assert checkpoint_frames(logdir) == 200


# --- Signals -----------------------------------------------------------------------------------


def stop_with(logdir, sig, wait_for, steps=400):
    """Start a run, send `sig` once stdout shows `wait_for`; returns (returncode, stdout, stderr)."""
    stderr_path = logdir.parent / f'stderr-{sig.name}.txt'
    with open(stderr_path, 'w') as stderr:
        proc = subprocess.Popen(
            command(logdir, '--steps', str(steps)),
            cwd=REPO / 'Dreamer',
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED='1'),
        )
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith(wait_for):
                    proc.send_signal(sig)
                    break
            lines += proc.stdout.readlines()
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, ''.join(lines), stderr_path.read_text()


def stopped_frame(stdout):
    match = re.search(
        r'Stopped at frame (\d+); checkpoint, run state and replay saved\. '
        r'Resume with the same command \(same --logdir .*\)\.',
        stdout,
    )
    return int(match.group(1)) if match else None


def test_sigterm_and_sigint_save_exit_zero_and_resume(tmp_path):
    logdir = tmp_path / 'run'
    # SIGTERM while training a fresh run: the step finishes, the agent is saved, exit 0.
    code, out, err = stop_with(logdir, signal.SIGTERM, 'Start training.')
    assert code == 0, out + err
    assert 'SIGTERM received' in out
    frame = stopped_frame(out)
    assert frame is not None and 'Saved checkpoint' in out, out
    # The agent was saved after its last full step; the stop came in the env step after it.
    assert frame - ACTION_REPEAT <= checkpoint_frames(logdir) <= frame
    assert_replay_clean(logdir)

    # SIGINT after resuming, again while training.
    code, out, err = stop_with(logdir, signal.SIGINT, 'Start training.')
    assert code == 0, out + err
    assert resumed_frame(out) is not None and 'Prefill' not in out, out
    assert 'SIGINT received' in out
    second = stopped_frame(out)
    assert second is not None and second >= frame, out
    assert second - ACTION_REPEAT <= checkpoint_frames(logdir) <= second

    # The restart after SIGINT resumes too; this time the signal comes during evaluation.
    code, out, err = stop_with(logdir, signal.SIGTERM, 'Resumed agent')
    assert code == 0, out + err
    assert resumed_frame(out) is not None and stopped_frame(out) is not None, out
    assert_replay_clean(logdir)


# --- Non-finite losses -------------------------------------------------------------------------


def test_non_finite_loss_under_precision_32_stops_and_keeps_checkpoint(good_run, tmp_path):
    logdir = copy_run(good_run, tmp_path)
    before = digest(logdir / train_lib.CHECKPOINT)
    # image_loss (~1e4) times 1e38 overflows float32: the model loss is inf in the first update,
    # the one that builds the resumed agent's variables (on a slice) before loading them.
    result = train(logdir, '--steps', '120', '--loss_scales.image', '1e38')
    assert result.returncode == 1, output(result)
    match = re.search(
        r'error: model_loss is not finite \(Inf\) at frame (\d+) \(update (\d+)\)\.', result.stderr
    )
    assert match and int(match.group(1)) == 80, output(result)
    assert 'last good checkpoint' in result.stderr
    assert digest(logdir / train_lib.CHECKPOINT) == before
    assert 'Saved checkpoint' not in result.stdout


@pytest.fixture
def mixed_precision():
    import tf_keras as keras

    keras.mixed_precision.set_global_policy('mixed_float16')
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy('float32')


def test_mixed_precision_skips_non_finite_update_without_decay(mixed_precision):
    import tensorflow as tf

    from dreamer_core.optim import Optimizer

    lr, wd = 0.01, 0.1
    opt = Optimizer('model', lr=lr, eps=1e-7, wd=wd)
    module = tf.Module()
    module.w = tf.Variable([0.0, 1.0, 4.0])

    def step(loss_fn):
        with tf.GradientTape() as tape:
            loss = loss_fn(module.w)
        return {k: float(v) for k, v in opt(tape, loss, module).items()}

    # d/dw sqrt(w) is inf at w = 0 while the loss itself is finite.
    start = module.w.numpy()
    mets = step(lambda w: tf.reduce_sum(tf.sqrt(w)))
    assert np.isfinite(mets['model_loss']) and not np.isfinite(mets['model_grad_norm'])
    assert mets['model_skipped'] == 1.0
    np.testing.assert_array_equal(module.w.numpy(), start)  # no Adam step, no weight decay
    adam = opt._opt.inner_optimizer
    moments = adam._momentums + adam._velocities
    assert moments and not any(np.any(m.numpy()) for m in moments)
    scale = mets['model_loss_scale']

    # A finite update: decay, then one Adam step computed from the pre-decay gradient.
    mets = step(lambda w: tf.reduce_sum(w**2))
    assert mets['model_skipped'] == 0.0
    grad = 2 * start
    # Keras counts the skipped step in `iterations`, so the bias correction uses t = 2.
    t = int(adam.iterations.numpy())
    m, v = 0.1 * grad, 0.001 * grad**2
    alpha = lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
    expected = (1 - wd) * start - alpha * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(module.w.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(module.w.numpy(), start)
    assert mets['model_loss_scale'] == scale / 2  # lowered by the skipped step


class StubAgent:
    """Returns the queued metrics, or raises the queued exception, on each train()."""

    def __init__(self, results):
        self.results = collections.deque(results)

    def train(self, data):
        result = self.results.popleft()
        if isinstance(result, Exception):
            raise result
        return result


def stub_loop(results, step=50):
    # Loop.update only needs these attributes; __init__ would build drivers and take signals.
    loop = train_lib.Loop.__new__(train_lib.Loop)
    loop.config = types.SimpleNamespace(action_repeat=ACTION_REPEAT)
    loop._step = step  # agent steps; Loop.frames multiplies by the action repeat
    loop.agent = StubAgent(results)
    loop.train_data = iter(lambda: {}, None)
    loop.metrics = collections.defaultdict(list)
    loop.clock = collections.defaultdict(float)
    loop.updates = loop.skipped_in_a_row = 0
    return loop


def test_only_persistent_skipped_updates_stop_the_run(monkeypatch):
    monkeypatch.delenv('DREAMER_KILL_AT', raising=False)
    skipped, ok = {'model_skipped': 1.0}, {'model_skipped': 0.0}
    limit = train_lib.MAX_SKIPPED
    loop = stub_loop([skipped] * (limit - 1) + [ok] + [skipped] * limit)
    for _ in range(2 * limit - 1):  # one finite update resets the count
        loop.update()
    assert loop.skipped_in_a_row == limit - 1
    assert sum(loop.metrics['model_skipped']) == 2 * limit - 2  # skipped steps are counted
    with pytest.raises(FloatingPointError, match=f'{limit} updates in a row.*at frame 100'):
        loop.update()


def check_numerics_error(name, graph):
    import tensorflow as tf

    check = lambda x: tf.debugging.check_numerics(x, name)
    try:
        (tf.function(check) if graph else check)(tf.constant([1.0, np.inf]))
    except tf.errors.InvalidArgumentError as error:
        return error
    raise AssertionError('check_numerics did not fail')


@pytest.mark.parametrize('graph', [False, True], ids=['eager', 'jit'])
def test_non_finite_update_error_names_the_tensor_and_frame(graph):
    loop = stub_loop([check_numerics_error('model_grad_norm', graph)], step=30)
    with pytest.raises(FloatingPointError) as info:
        loop.update()
    assert str(info.value) == 'model_grad_norm is not finite (Inf) at frame 60 (update 1).'


def test_other_invalid_argument_errors_are_not_hidden():
    import tensorflow as tf

    error = tf.errors.InvalidArgumentError(None, None, 'Incompatible shapes: [3] vs. [4]')
    with pytest.raises(tf.errors.InvalidArgumentError, match='Incompatible shapes'):
        stub_loop([error]).update()


# --- Bad input ---------------------------------------------------------------------------------

CONFIG_ERRORS = {
    'unknown task': (
        ['--task', 'dmc_walker_wlak'],
        ('defaults', 'dmc'),
        ["Unknown task 'dmc_walker_wlak'", 'Did you mean dmc_walker_walk'],
    ),
    'unknown domain': (
        ['--task', 'dmc_spaceship_fly'],
        ('defaults', 'dmc'),
        ["Unknown task 'dmc_spaceship_fly'", 'a domain from: acrobot', 'walker'],
    ),
    'unknown suite': (
        ['--task', 'mujoco_walker_walk'],
        ('defaults', 'dmc'),
        ['Unknown task suite', 'dmc_<domain>_<task>', 'atari_<game>'],
    ),
    'unknown key': (
        ['--stepz', '100'],
        ('defaults', 'dmc'),
        ["unknown config key 'stepz'", 'Did you mean: steps'],
    ),
    'unknown block': (
        [],
        ('defaults', 'dmcc'),
        ["Unknown config block 'dmcc'", 'Did you mean: dmc', 'Available blocks'],
    ),
    'wrong type': (['--steps', 'abc'], ('defaults', 'dmc'), ["'steps' needs an int", "got 'abc'"]),
    'defaults not first': (
        [],
        ('dmc', 'defaults'),
        ["'defaults' must come first", 'Put it first: --configs defaults'],
    ),
    'replay smaller than an episode': (
        ['--replay_size', '5'],
        ('defaults', 'dmc'),
        ['replay_size (5 steps) is smaller than one episode (10 steps', 'raise --replay_size'],
    ),
    'value out of range': (
        ['--steps', '-5'],
        ('defaults', 'dmc'),
        ['steps is -5 (out of range); allowed: an int >= 1', 'Fix: --steps'],
    ),
    'scalar where a pair is expected': (
        ['--image_size', '64'],
        ('defaults', 'dmc'),
        ['image_size is [64] (wrong length); allowed: 2 ints >= 1', 'Fix: --image_size 64,64'],
    ),
    'relation between keys': (
        ['--prefill', '10'],
        ('defaults', 'dmc'),
        ['prefill (10 frames) is shorter than one episode (20 frames)', 'Fix: --prefill 20'],
    ),
}


@pytest.fixture(scope='module')
def config_error_runs(tmp_path_factory):
    """Every CONFIG_ERRORS run, three at a time (each mostly waits for TensorFlow to import)."""
    root = tmp_path_factory.mktemp('config_errors')

    def run(case):
        args, configs, _ = CONFIG_ERRORS[case]
        parent = root / case.replace(' ', '_')
        parent.mkdir()
        return parent, train(parent / 'run', *args, configs=configs)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        return dict(zip(CONFIG_ERRORS, pool.map(run, CONFIG_ERRORS)))


@pytest.mark.parametrize('case', list(CONFIG_ERRORS))
def test_config_errors_exit_2_before_writing_anything(config_error_runs, case):
    parent, result = config_error_runs[case]
    assert result.returncode == 2, output(result)
    assert result.stderr.count('\n') == 1, output(result)  # one line, nothing else
    assert last_line(result.stderr).startswith('error: '), output(result)
    for text in CONFIG_ERRORS[case][2]:
        assert text in result.stderr, output(result)
    assert os.listdir(parent) == []  # no logdir created


def test_unwritable_logdir_exits_2(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    result = train(blocker / 'run')
    assert result.returncode == 2, output(result)
    assert f'Cannot write to the log directory {blocker / "run"}' in result.stderr
    assert 'Choose a writable --logdir' in result.stderr
    assert blocker.read_text() == 'not a folder'


def test_corrupt_and_truncated_replay_files_are_skipped_with_warning(good_run, tmp_path):
    logdir = copy_run(good_run, tmp_path)
    train_dir = logdir / 'train_replay'
    real = sorted(train_dir.glob('*.npz'))[0]
    garbage = train_dir / '20000101T000000-garbage.npz'
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    truncated = train_dir / f'20000101T000001-{"0" * 32}-{EPISODE_STEPS}.npz'
    truncated.write_bytes(real.read_bytes()[: len(real.read_bytes()) // 2])
    bad = {path: path.read_bytes() for path in (garbage, truncated)}
    result = train(logdir, '--steps', '120')
    assert result.returncode == 0, output(result)
    assert resumed_frame(result.stdout) is not None and 'Finished 120 frames.' in result.stdout
    for path, data in bad.items():
        assert f'Skipping unreadable replay file {path}' in result.stderr, output(result)
        assert path.read_bytes() == data  # kept for inspection, untouched
    for path in sorted(train_dir.glob('*.npz')):
        if path not in bad:
            load_episode(path)


def test_replay_with_another_image_shape_exits_2(tmp_path):
    logdir = tmp_path / 'run'
    rows = EPISODE_STEPS + 1
    episode = {
        'image': np.zeros((rows, 32, 32, 3), np.uint8),
        'action': np.zeros((rows, 6), np.float32),
        'reward': np.zeros(rows, np.float32),
        'discount': np.ones(rows, np.float32),
        'reset': np.arange(rows) == 0,
    }
    path = Replay(logdir / 'train_replay').add(episode)
    data = path.read_bytes()
    result = train(logdir)
    assert result.returncode == 2, output(result)
    assert f'Replay file {path} stores "image" with per-step shape (32, 32, 3)' in result.stderr
    assert 'expects (64, 64, 3)' in result.stderr and 'use a new logdir' in result.stderr
    assert path.read_bytes() == data
    assert sorted(os.listdir(logdir / 'train_replay')) == [path.name]
    assert not (logdir / 'config.yaml').exists() and not (logdir / 'variables.npz').exists()


def snapshot(logdir):
    """Every file under logdir (relative path -> content hash)."""
    return {p.relative_to(logdir): digest(p) for p in logdir.rglob('*') if p.is_file()}


def test_checkpoint_of_another_variant_exits_2_naming_both(good_run, tmp_path):
    logdir = copy_run(good_run, tmp_path)
    before = snapshot(logdir)
    # Past the identity check (tests/test_logdir.py), the checkpoint's own signature refuses it.
    result = train(logdir, '--steps', '120', '--allow_changed_config', 'True', variant='TPC')
    assert result.returncode == 2, output(result)
    assert 'written by another agent or model size' in result.stderr, output(result)
    assert 'variant: checkpoint dreamer vs this run tpc' in result.stderr
    assert 'Use a new --logdir or the same variant and config' in result.stderr
    assert snapshot(logdir) == before  # config.yaml, logs and checkpoint as they were


def test_checkpoint_of_another_model_size_exits_2_naming_both(good_run, tmp_path):
    logdir = copy_run(good_run, tmp_path)
    before = snapshot(logdir)
    result = train(logdir, '--steps', '120', '--rssm.deter', '32', '--allow_changed_config', 'True')
    assert result.returncode == 2, output(result)
    match = re.search(r'rssm: checkpoint (\{.*?\}) vs this run (\{.*?\})', result.stderr)
    assert match, output(result)
    assert "'deter': 16" in match.group(1) and "'deter': 32" in match.group(2)
    assert snapshot(logdir) == before


def make_folder(tmp_path, kind):
    if kind == 'missing':
        return tmp_path / 'no_such_folder'
    folder = tmp_path / kind
    folder.mkdir()
    if kind == 'unreadable':
        rng = np.random.default_rng(0)
        (folder / 'a.mp4').write_bytes(rng.bytes(4000))
        (folder / 'b.avi').write_bytes(b'')
    return folder


@pytest.mark.parametrize(
    'kind,message',
    [
        ('missing', 'Background video folder {folder} does not exist.'),
        ('empty', 'Background video folder {folder} holds no video files.'),
        ('unreadable', 'None of the 2 video files tried in {folder} could be read'),
    ],
)
def test_background_folder_problems_exit_2(tmp_path, kind, message):
    folder = make_folder(tmp_path, kind)
    logdir = tmp_path / 'run'
    result = train(
        logdir,
        '--task',
        'nat_walker_walk',
        '--bg_path_train',
        str(folder),
        '--bg_path_test',
        str(folder),
    )
    assert result.returncode == 2, output(result)
    assert last_line(result.stderr).startswith('error: '), output(result)
    assert 'Traceback' not in result.stderr
    assert message.format(folder=folder) in result.stderr, output(result)
    assert 'python download_videos.py' in result.stderr
    if kind == 'unreadable':
        for name in ('a.mp4', 'b.avi'):
            assert f'Skipping background video {folder / name}' in result.stderr
    episodes = [p for name in REPLAY_DIRS for p in (logdir / name).glob('*')]
    assert not episodes and not (logdir / 'variables.npz').exists()


# --- Memory bound ------------------------------------------------------------------------------


def test_replay_memory_stays_within_capacity_over_many_adds(tmp_path):
    capacity = 50
    replay = Replay(tmp_path, capacity=capacity)
    rng = np.random.default_rng(0)
    lengths = []
    for i in range(60):
        length = int(rng.integers(1, 30))
        rows = length + 1
        replay.add({'action': np.full((rows, 1), i, np.float32), 'reward': np.zeros(rows)})
        lengths.append(length)
        # Reference: the newest episodes whose lengths fit the capacity, and always the newest.
        keep, total = [], 0
        for j in reversed(range(len(lengths))):
            if keep and total + lengths[j] > capacity:
                break
            keep.insert(0, j)
            total += lengths[j]
        held = [int(ep['action'][0, 0]) for ep in replay._episodes]
        assert held == keep and replay.num_steps == total
        assert replay.num_steps <= capacity or len(held) == 1
    assert len(list(tmp_path.glob('*.npz'))) == 60 and replay.total_steps == sum(lengths)
