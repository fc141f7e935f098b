"""The training loop's state on fake envs and a fake agent: one step counter, pretraining count,
evaluation returns, the final evaluation, frames everywhere."""

import json

import numpy as np
import pytest

from dreamer_core import build
from dreamer_core.agent import read_checkpoint_meta
from dreamer_core.logger import Logger
from dreamer_core.replay import Replay
from dreamer_core.train import Loop, resume_point
from tests.fakes import FakeEnv

LENGTH, ACT, REPEAT = 10, 2, 2  # 10-step episodes of 20 frames


class FakeAgent:
    """Counts updates, remembers the step it saw at each one, acts with zeros."""

    def __init__(self):
        import tensorflow as tf

        self.step = tf.Variable(0, dtype=tf.int64)
        self.update_steps, self.saved, self.loaded = [], 0, 0

    def train(self, data):
        assert data['image'].shape[1] == 4
        self.update_steps.append(int(self.step.numpy()))
        return {'model_loss': np.float32(1.0), 'update': np.float32(len(self.update_steps))}

    def report(self, data):
        return {}

    def policy(self, obs, state=None, mode='train'):
        return {'action': np.zeros((len(obs['image']), ACT), np.float32)}, state

    def create_variables(self, data):
        self.created = True

    def save(self, path):
        np.savez(path, meta=json.dumps({'step': int(self.step.numpy())}))
        self.saved += 1

    def load(self, path):
        self.loaded += 1


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    """The Loop takes SIGINT and SIGTERM; give them back to the test process afterwards."""
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def make_loop(tmp_path, steps=100):
    argv = ['--configs', 'defaults', 'dmc', '--action_repeat', str(REPEAT), '--train_every', '2']
    argv += ['--dataset.batch', '2', '--dataset.length', '4', '--prefill', '40', '--eval_eps', '2']
    argv += ['--steps', str(steps), '--eval_every', '60', '--log_every', '20', '--pretrain', '3']
    config = build.load_config('dreamer', argv)
    logdir = tmp_path / 'run'
    logdir.mkdir(exist_ok=True)
    shapes = {'image': (64, 64, 3)}
    replays = [Replay(logdir / f'{m}_replay', 10**6, 0, shapes) for m in ('train', 'eval')]
    envs = [[FakeEnv(LENGTH, ACT, seed=i)] for i in range(2)]
    logger = Logger(logdir, multiplier=REPEAT, outputs=('jsonl',))
    loop = Loop(config, logdir, logger, *replays, *envs)
    path = logdir / 'variables.npz'
    meta = read_checkpoint_meta(path) if path.exists() else None
    loop.resume(*resume_point(config, logdir, *replays, meta))  # as train.run
    return loop, logger


def run(loop, logger):
    agent = FakeAgent()
    loop.prefill(FakeEnv(LENGTH, ACT).act_space)
    loop.start(agent)
    loop.train()
    logger.close()
    return agent


def evaluations(loop):
    path = loop.logdir / 'eval_returns.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_counter_in_frames_pretrain_and_final_evaluation(tmp_path, capsys):
    loop, logger = make_loop(tmp_path)
    agent = run(loop, logger)
    # Prefill 40 frames = 20 steps; training to 100 frames = 50 steps.
    assert loop.step == 50 and loop.frames == 100 and int(agent.step.numpy()) == 50
    # The update that builds the agent, then `pretrain` (3) more, all at the prefill step.
    assert agent.update_steps[:4] == [20, 20, 20, 20]
    # Then one update every train_every (2) steps from the first training step, at the step
    # the agent was told.
    assert agent.update_steps[4:] == list(range(21, 51, 2))
    # Evaluations at the start of each eval_every chunk and at the final frame.
    assert [e['step'] for e in evaluations(loop)] == [40, 100]
    assert all(len(e['returns']) == 2 for e in evaluations(loop))
    out = capsys.readouterr().out
    assert 'Finished 100 frames.' in out and 'Final evaluation.' in out
    rows = [json.loads(line) for line in (loop.logdir / 'metrics.jsonl').read_text().splitlines()]
    assert {row['step'] for row in rows} <= set(range(0, 101, 2))  # frames, never steps


def test_evaluate_returns_the_returns_of_its_own_episodes(tmp_path):
    loop, logger = make_loop(tmp_path)
    loop.prefill(FakeEnv(LENGTH, ACT).act_space)
    loop.start(FakeAgent())
    returns = loop.evaluate()
    # FakeEnv pays 0.1 * step index for a zero action: 0.1 * (1 + ... + 10) per episode.
    np.testing.assert_allclose(returns, [5.5, 5.5])
    again = loop.evaluate()
    assert len(again) == 2  # nothing carried over from the first call
    logger.close()


def test_finished_run_resumed_does_not_evaluate_the_same_frame_twice(tmp_path):
    loop, logger = make_loop(tmp_path)
    run(loop, logger)
    loop, logger = make_loop(tmp_path)
    agent = run(loop, logger)
    assert agent.loaded == 1 and not agent.update_steps  # resumed: no build, no pretraining
    assert [e['step'] for e in evaluations(loop)] == [40, 100]


def logged(loop, key):
    rows = [json.loads(line) for line in (loop.logdir / 'metrics.jsonl').read_text().splitlines()]
    return [row[key] for row in rows if key in row]


def test_logged_metrics_average_training_updates_only(tmp_path):
    loop, logger = make_loop(tmp_path)
    agent = run(loop, logger)
    # Updates 1-4 build and pretrain the agent; then one every 2 steps from step 21, a log
    # every 10 steps from step 21. As in DreamerV2, the logs average training updates only:
    # [5] at step 21, [6..10] at step 31, [11..15] at step 41.
    assert agent.update_steps[4] == 21
    assert logged(loop, 'update') == [5.0, 8.0, 13.0]
    # Resumed to more frames: the agent is built without an update and loaded, and the
    # schedules and unlogged metrics go on where they were: the first run's updates 16-19
    # (steps 43-49) and this run's first at step 51, then [2..6] at step 61.
    loop, logger = make_loop(tmp_path, 140)
    agent = run(loop, logger)
    assert agent.loaded == 1 and agent.created and agent.update_steps[:2] == [51, 53]
    assert logged(loop, 'update')[3:] == [(16 + 17 + 18 + 19 + 1) / 5, 4.0]


@pytest.mark.parametrize('steps', [100, 140])
def test_longer_resume_continues_from_the_recorded_step(tmp_path, steps):
    loop, logger = make_loop(tmp_path)
    run(loop, logger)
    loop, logger = make_loop(tmp_path, steps)
    assert loop.step == 50  # from the replay on disk
    run(loop, logger)
    assert loop.frames == steps
    assert evaluations(loop)[-1]['step'] == steps


def test_log_lines_split_the_wall_time_by_kind_of_work(tmp_path):
    loop, logger = make_loop(tmp_path)
    run(loop, logger)
    rows = [json.loads(line) for line in (loop.logdir / 'metrics.jsonl').read_text().splitlines()]
    kinds = ('update', 'data', 'policy', 'eval', 'env')
    timed = [row for row in rows if 'time_update_share' in row]
    assert len(timed) >= 3  # one per log line (every 20 frames of the 60 trained)
    for row in timed:
        shares = [row[f'time_{kind}_share'] for kind in kinds]
        assert all(0.0 <= share <= 1.0 for share in shares), row
        assert sum(shares) == pytest.approx(1.0, abs=1e-6), row
        assert row['time_update_share'] > 0 and row['time_policy_share'] > 0
    # The window with the evaluation at frame 40 counts its time as evaluation.
    assert any(row['time_eval_share'] > 0 for row in timed)
