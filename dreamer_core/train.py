"""The one training loop: prefill, pretrain, then alternate evaluation and training."""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import pathlib
import random
import re
import signal
import sys
import time

import numpy as np

from dreamer_core import (
    checks,
    faults,
    hardware,
    identity,
    provenance,
    registry,
    runlock,
    runstate,
    tferrors,
)
from dreamer_core import config as config_lib
from dreamer_core import envs as envs_lib
from dreamer_core.errors import UserError
from dreamer_core.logger import Logger, progress
from dreamer_core.replay import Replay

CHECKPOINT = 'variables.npz'
# Under mixed precision a non-finite step is skipped (and the loss scale lowered); this many
# skipped updates in a row means the run has diverged.
MAX_SKIPPED = 50


class Stop(Exception):
    """Raised inside the env loop when a signal asked the run to stop cleanly."""


class Diverged(FloatingPointError):
    """A non-finite loss or gradient: the run stops with exit code 1, its checkpoint kept."""


class LogdirError(UserError):
    """The log directory is missing or not writable."""


def main(argv: list[str], variant: str | registry.Variant) -> int:
    """Entry point of every variant's dreamerv2/train.py; returns the exit code.

    `variant` is a registry name (or entry). The config and task are checked before TensorFlow
    is imported, so bad input fails at once; bad input found later (replay, videos, checkpoint)
    is reported the same way: one line `error: ...` and exit code 2.
    """
    try:
        variant = registry.get(variant)
        config = config_lib.load(argv, variant.dir)
        checks.check(config.to_dict(), variant.rules)
        envs_lib.validate_task(config.task)
        for key, (old, new) in identity.check(config, variant.name, config.logdir).items():
            print(f'Changed on resume (--allow_changed_config): {key} {old!r} -> {new!r}.')
        logdir = prepare_logdir(config.logdir)
        runlock.acquire(logdir)
        return run(config, logdir, variant)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except Diverged as e:
        print(f'error: {e} The last good checkpoint in {config.logdir} is kept.', file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        print(f'error: {disk_full_message(e, config.logdir)}', file=sys.stderr)
        return 1


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(error, logdir):
    return (
        f'{error.strerror} while writing {error.filename}. Free space there, then run the same '
        f'command to resume: the last good checkpoint and every stored episode in {logdir} are '
        'kept.'
    )


def prepare_logdir(logdir) -> pathlib.Path:
    if str(logdir) in ('/dev/null', ''):
        raise LogdirError('Give a log directory: --logdir log/<task>/<agent>/<seed>.')
    logdir = pathlib.Path(logdir).expanduser()
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        probe = logdir / '.write_test'
        probe.write_text('ok')
        probe.unlink()
    except OSError as e:
        raise LogdirError(
            f'Cannot write to the log directory {logdir}: {e.strerror}. Choose a writable --logdir.'
        ) from e
    return logdir


def setup_tensorflow(config):
    """The one place TensorFlow is set up: logging, threads, seeds, graph mode, precision, GPU.

    Returns (tf, the precision policy chosen for this machine, whether the update is
    XLA-compiled): what config.yaml records under `run:` beside the requested values.
    """
    if config.verbose:
        os.environ['TF_CPP_MIN_LOG_LEVEL'] = '0'
    import tensorflow as tf
    import tf_keras as keras

    if not config.verbose:
        tf.get_logger().setLevel('ERROR')
    if config.threads:
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    tf.random.set_seed(config.seed)
    if config.deterministic:
        # Every op gives the same result on the same inputs (no racing reductions): with the
        # seeded streams and batches drawn in step with the updates, one seed is one run.
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices('GPU')
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.run_functions_eagerly(not config.jit)
    choice = hardware.choose_precision(
        config.precision, hardware.gpu_capabilities(tf), hardware.cpu_info()[1]
    )
    if choice.note:
        print(choice.note)
    keras.mixed_precision.set_global_policy(choice.policy)
    xla = config.jit and hardware.use_xla(config.xla, hardware.gpu_capabilities(tf))  # as Agent
    return tf, choice.policy, xla


def env_seed(config, mode: str, index: int, resume_steps: int) -> int:
    """Distinct, reproducible env seeds per mode, env index and resume point."""
    entropy = [config.seed, mode == 'eval', index, resume_steps]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] % (2**31))


def resume_point(config, logdir, train_replay, eval_replay, meta):
    """(agent step to go on from, the saved run state or None) for a logdir whose replays are
    loaded and whose checkpoint has metadata `meta` (None without a checkpoint).

    With a run state of the files on disk, the run goes on exactly from it. Without one (a
    new run, a kill, a logdir of an earlier version) it goes on from the furthest point its
    episodes, logs or checkpoint reached, so that frames never go backwards.
    """
    state = runstate.load(logdir)
    logged = runstate.last_logged_step(logdir, config.action_repeat)
    episodes = {'train': train_replay.total_episodes, 'eval': eval_replay.total_episodes}
    checkpoint_step = None if meta is None else meta.get('step')
    if state is not None and not runstate.matches(state, episodes, checkpoint_step, logged):
        print(
            f'The run state in {logdir} is older than its stored episodes, logs or checkpoint '
            '(the run was killed, not stopped): resuming from them, without the unfinished '
            'episodes.'
        )
        state = None
    if state is not None:
        return state['step'], state
    return max(train_replay.total_steps, logged, checkpoint_step or 0), None


def run(config, logdir: pathlib.Path, variant: registry.Variant) -> int:
    tf, policy, xla = setup_tensorflow(config)
    from dreamer_core.agent import Agent, read_checkpoint_meta

    print(f'Logdir {logdir}')
    obs_shapes = {'image': envs_lib.obs_shape(config)}
    train_replay = Replay(logdir / 'train_replay', config.replay_size, config.seed, obs_shapes)
    # As the original, evaluation keeps only its latest episodes in memory (`time_limit` steps,
    # at least one episode): they feed the evaluation report; every episode stays on disk.
    eval_replay = Replay(
        logdir / 'eval_replay', config.time_limit or 1, config.seed + 1, obs_shapes, in_memory=True
    )
    meta = None
    if (logdir / CHECKPOINT).exists():
        meta = read_checkpoint_meta(logdir / CHECKPOINT)
    resume, state = resume_point(config, logdir, train_replay, eval_replay, meta)
    make = lambda mode, i: envs_lib.make_env(
        config, mode, variant.root, seed=env_seed(config, mode, i, resume)
    )
    train_envs = [make('train', i) for i in range(config.num_envs)]
    eval_envs = [make('eval', i) for i in range(config.num_envs)]
    act_space = train_envs[0].act_space
    # Built before prefill so that a config the agent rejects fails before anything runs.
    agent = Agent(
        config,
        train_envs[0].obs_shape,
        act_space.shape[0],
        act_space.discrete,
        variant.load_loss(),
        variant.name,
    )
    if meta is not None:
        # Before config.yaml and the logs are written: a logdir of another run stays as it was.
        agent.check_checkpoint(logdir / CHECKPOINT)
    config_lib.save_run(
        config, logdir / 'config.yaml', variant.name, run=provenance.collect(policy, xla, tf)
    )
    logger = Logger(logdir, multiplier=config.action_repeat)
    loop = Loop(config, logdir, logger, train_replay, eval_replay, train_envs, eval_envs)
    loop.resume(resume, state)
    try:
        loop.prefill(act_space)
        loop.start(agent)
        loop.train()
    except Stop:
        loop.save()
        saved = 'checkpoint, run state' if loop.agent is not None else 'run state'
        print(
            f'Stopped at frame {loop.frames}; {saved} and replay saved. '
            f'Resume with the same command (same --logdir {logdir}).'
        )
    finally:
        logger.close()
        for env in train_envs + eval_envs:
            env.close()
    return 0


class Loop:
    """Holds the pieces and the state of one run; the only place that logs and saves.

    `step` counts agent steps of the training env (frames / action_repeat): the one counter of
    the run, restored from the replay on resume; the agent's step variable follows it.
    """

    def __init__(self, config, logdir, logger, train_replay, eval_replay, train_envs, eval_envs):
        from dreamer_core.driver import Driver
        from dreamer_core.schedules import Every

        self.config, self.logdir, self.logger = config, logdir, logger
        self.units = config_lib.agent_steps(config)
        self.train_replay, self.eval_replay = train_replay, eval_replay
        self.train_driver, self.eval_driver = Driver(train_envs), Driver(eval_envs)
        self.agent = None
        self.train_data = self.eval_data = None
        self._step = train_replay.total_steps
        self.phase = 'prefill'
        self.pretrained = 0  # pretraining updates done
        self.chunk_end = None  # the step where the current stretch of training ends
        self.random_agents = {}  # the prefill's random policies, by mode
        self._random_states = {}  # their generators' saved states, restored when made
        self.progress = None
        self.last_eval_frame = self._read_last_eval_frame()
        self.evaluates = config.eval_eps > 0  # eval_eps 0: no evaluation episodes at all
        self.metrics = collections.defaultdict(list)
        # Wall seconds per kind of work since the last log line (see `log_time_shares`).
        self.clock = collections.defaultdict(float)
        self.clock_start = time.perf_counter()
        self.updates = 0
        self.skipped_in_a_row = 0
        self.should_train = Every(config.train_every)
        self.should_log = Every(self.units.log_every)
        self.should_video = {
            'train': Every(self.units.eval_every),
            'eval': Every(self.units.eval_every),
        }
        self._stop_requested = None
        self.train_driver.on_episode(lambda ep: self.per_episode(ep, 'train'))
        self.eval_driver.on_episode(lambda ep: self.per_episode(ep, 'eval'))
        self.train_driver.on_step(self.on_train_step)
        # A requested stop takes effect between two steps, when every callback of the last one
        # has run (its episode stored): the state saved there is a clean one to resume from.
        self.train_driver.on_before_step(self.check_stop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    @property
    def step(self) -> int:
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        self._step = value
        if self.agent is not None:
            self.agent.step.assign(value)

    @property
    def frames(self) -> int:
        return self._step * self.config.action_repeat

    def _on_signal(self, signum, frame):
        if self._stop_requested is not None:
            raise KeyboardInterrupt  # A second signal stops at once.
        self._stop_requested = signal.Signals(signum).name
        print(
            f'\n{self._stop_requested} received: finishing the current step, then saving.',
            flush=True,
        )

    def check_stop(self):
        if self._stop_requested:
            raise Stop()

    def schedules(self):
        return {
            'train': self.should_train,
            'log': self.should_log,
            'video_train': self.should_video['train'],
            'video_eval': self.should_video['eval'],
        }

    def resume(self, step, state=None):
        """Go on from agent step `step`; with `state` (runstate.py) exactly from the last save."""
        self._step = step
        if state is None:
            if step:  # after a kill: sample with a stream of its own, not the first one again
                rng = np.random.default_rng([self.config.seed, step])
                self.train_replay.set_rng_state(rng.bit_generator.state)
            return
        import tensorflow as tf

        self.phase = state['phase']
        self.updates = state['updates']
        self.skipped_in_a_row = state['skipped_in_a_row']
        self.pretrained = state['pretrained']
        self.chunk_end = state['chunk_end']
        self.metrics = collections.defaultdict(list, state['metrics'])
        for name, every in self.schedules().items():
            every._last = state['schedules'][name]
        self.train_replay.set_rng_state(state['replay_rng']['train'])
        self.eval_replay.set_rng_state(state['replay_rng']['eval'])
        self._random_states = state['random_agents']
        to_tensors = lambda nest: tf.nest.map_structure(tf.convert_to_tensor, nest)
        self.train_driver.set_state(state['drivers']['train'], to_tensors)
        self.eval_driver.set_state(state['drivers']['eval'], to_tensors)
        print(f'Resuming at frame {self.frames} ({self.phase}), where the run stopped.')

    def run_state(self):
        """What `resume` needs to go on exactly from here (see runstate.py)."""
        replay_rng = {
            'train': self.train_replay.rng_state(self.train_data and self.train_data.used),
            'eval': self.eval_replay.rng_state(self.eval_data and self.eval_data.used),
        }
        return {
            'step': self.step,
            'phase': self.phase,
            'updates': self.updates,
            'skipped_in_a_row': self.skipped_in_a_row,
            'pretrained': self.pretrained,
            'chunk_end': self.chunk_end,
            'metrics': {k: list(v) for k, v in self.metrics.items()},
            'schedules': {name: every._last for name, every in self.schedules().items()},
            'episodes': {
                'train': self.train_replay.total_episodes,
                'eval': self.eval_replay.total_episodes,
            },
            'agent_step': self.step if self.agent is not None else None,
            'replay_rng': replay_rng,
            'random_agents': {
                mode: agent.rng_state() for mode, agent in self.random_agents.items()
            },
            'drivers': {
                'train': self.train_driver.get_state(_nest_to_numpy),
                'eval': self.eval_driver.get_state(_nest_to_numpy),
            },
        }

    def random_agent(self, mode, act_space):
        """The prefill's random policy for `mode`, its generator where the last save left it."""
        from dreamer_core.agent_random import RandomAgent

        if mode not in self.random_agents:
            seed = self.config.seed + (mode == 'eval')
            agent = RandomAgent(act_space, seed)
            if mode in self._random_states:
                agent.set_rng_state(self._random_states[mode])
            self.random_agents[mode] = agent
        return self.random_agents[mode]

    def on_train_step(self, transition, index):
        self.step += 1
        if self.progress is not None:
            self.progress.update(self.config.action_repeat)
        if self.phase == 'prefill':
            faults.kill_point('prefill')
            return
        if self.should_train(self.step):
            for _ in range(self.config.train_steps):
                self.update()
        if self.should_log(self.step):
            for name, values in self.metrics.items():
                self.logger.scalar(name, np.array(values, np.float64).mean())
            self.metrics.clear()
            self.log_time_shares()
            self.log_memory()
            self.logger.add(self.agent.report(next(self.train_data)), prefix='train')
            self.logger.write(self.step, fps=True)

    def log_time_shares(self):
        """Shares of the wall time since the last log line: updates (`agent.train`), waiting for
        batches, the policy, evaluation, and the rest (environment steps, replay writes, logging,
        the world model's report), so that it is clear what limits a run."""
        now = time.perf_counter()
        elapsed = max(now - self.clock_start, 1e-9)
        spent = 0.0
        for kind in ('update', 'data', 'policy', 'eval'):
            self.logger.scalar(f'time_{kind}_share', self.clock[kind] / elapsed)
            spent += self.clock[kind]
        self.logger.scalar('time_env_share', max(0.0, elapsed - spent) / elapsed)
        self.clock.clear()
        self.clock_start = now

    def log_memory(self):
        """The process's resident memory and what the replays hold in memory, in MB, so that a
        long run's memory can be watched (the replays' images are read from disk)."""
        rss = hardware.resident_memory()
        if rss is not None:
            self.logger.scalar('memory_resident_mb', rss / 2**20)
        replays = self.train_replay.memory_bytes + self.eval_replay.memory_bytes
        self.logger.scalar('memory_replay_mb', replays / 2**20)

    def per_episode(self, ep, mode):
        length = len(ep['reward']) - 1
        score = float(ep['reward'].astype(np.float64).sum())
        replay = self.train_replay if mode == 'train' else self.eval_replay
        replay.add(ep)
        frames = length * self.config.action_repeat
        print(
            f'{mode.title()} episode has {frames} frames ({length} steps) and return {score:.1f}.'
        )
        if mode == 'train':
            self.logger.scalar('train_return', score)
            self.logger.scalar('train_length', frames)
            self.logger.scalar('train_episodes', replay.total_episodes)
        if self.should_video[mode](self.step):
            self.logger.video(f'{mode}_policy', ep['image'])
        self.logger.write(self.step)

    def prefill(self, act_space):
        missing = max(0, self.units.prefill - self.step) if self.phase == 'prefill' else 0
        if missing:
            frames = missing * self.config.action_repeat
            print(f'Prefill dataset ({missing} steps, {frames} frames).')
            self.progress = progress(frames, 'prefill', 'frames')
            self.train_driver(self.random_agent('train', act_space), steps=missing)
            self.progress.close()
            self.progress = None
            self.train_driver.reset()
        if self.evaluates and not self.eval_replay.total_episodes:
            self.eval_driver(self.random_agent('eval', act_space), episodes=1)
            self.eval_driver.reset()

    def start(self, agent):
        """Attach the agent: build it with one update (or resume it from its checkpoint),
        then pretrain."""
        self.agent = agent
        self.step = self._step  # The agent's step follows the loop's from here on.
        path = self.logdir / CHECKPOINT
        resuming = path.exists()
        if resuming:
            # Variables made without an update, no batch or random draw used, then all of
            # them overwritten from the checkpoint (its random streams included).
            with self.finite():  # its one eager update on a slice checks numerics too
                agent.create_variables(self._example_batch())
            agent.load(path)
            print(f'Resumed agent from {path} at frame {self.frames}.')
        make = self.train_replay.dataset
        if self.config.deterministic:
            make = self.train_replay.batches
        self.train_data = tferrors.Batches(make(**self.config.dataset))
        if self.evaluates:
            make = (
                self.eval_replay.batches if self.config.deterministic else self.eval_replay.dataset
            )
            self.eval_data = tferrors.Batches(make(**self.config.dataset))
        if not resuming:
            # One update creates every variable, optimizer state included (as DreamerV2 does).
            self.update()
        elif self.phase != 'pretrain':
            return  # pretrained before the save; its metrics (restored) are of training
        self.phase = 'pretrain'
        remaining = self.config.pretrain - self.pretrained
        if remaining > 0:
            # As in DreamerV2, `pretrain` updates follow the one that built the agent.
            print(f'Pretrain agent ({remaining} more updates).')
            bar = progress(remaining, 'pretrain', 'updates')
            for _ in range(remaining):
                self.update()
                self.pretrained += 1
                faults.kill_point('pretrain')
                self.check_stop()
                bar.update(1)
            bar.close()
        # As in DreamerV2, the metrics of these updates are not logged: the first logged
        # values average training updates only.
        self.metrics.clear()

    def _example_batch(self):
        """Two short windows of the replay to build the agent's variables on, drawn without
        moving the replay's sampler."""
        state = self.train_replay.rng_state()
        length = min(4, self.config.dataset.length)
        batch = self.train_replay.sample(2, length, self.config.dataset.oversample_ends)
        self.train_replay.set_rng_state(state)
        return batch

    @contextlib.contextmanager
    def finite(self):
        """A non-finite loss or gradient inside the block (check_numerics) stops the run."""
        import tensorflow as tf

        try:
            yield
        except tf.errors.InvalidArgumentError as e:
            # check_numerics reports '<name> : Tensor had NaN values' after an eager or graph prefix.
            match = re.search(r'(\w+) : Tensor had (\w+) values', e.message)
            if not match:
                raise
            name, kind = match.groups()
            raise Diverged(
                f'{name} is not finite ({kind}) at frame {self.frames} (update {self.updates + 1}).'
            ) from None

    def update(self):
        with self.finite():
            start = time.perf_counter()
            batch = next(self.train_data)
            ready = time.perf_counter()
            mets = self.agent.train(batch)  # numpy out: waits for the update
            self.clock['data'] += ready - start
            self.clock['update'] += time.perf_counter() - ready
        self.updates += 1
        skipped = mets.get('model_skipped', 0.0)
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        if self.skipped_in_a_row >= MAX_SKIPPED:
            raise Diverged(
                f'{MAX_SKIPPED} updates in a row had non-finite gradients even with loss scaling, '
                f'last at frame {self.frames}.'
            )
        for key, value in mets.items():
            self.metrics[key].append(value)
        faults.kill_point('train')

    def evaluate(self):
        """`eval_eps` episodes with the policy's mode; returns their returns (logged too)."""
        faults.kill_point('eval')
        start = time.perf_counter()
        self.logger.add(self.agent.report(next(self.eval_data)), prefix='eval')
        policy = lambda obs, state: self.agent.policy(obs, state, mode='eval')
        episodes = self.eval_driver(policy, episodes=self.config.eval_eps)
        self.eval_driver.reset()
        returns = np.array([ep['reward'].astype(np.float64).sum() for ep in episodes])
        self.clock['eval'] += time.perf_counter() - start
        self.logger.scalar('eval_return', returns.mean())
        self.logger.scalar('eval_return_std', returns.std())
        self.logger.scalar('eval_episodes', len(returns))
        self.logger.write(self.step)
        with open(self.logdir / 'eval_returns.jsonl', 'a') as f:
            f.write(json.dumps({'step': self.frames, 'returns': returns.tolist()}) + '\n')
        self.last_eval_frame = self.frames
        print(
            f'Evaluation at frame {self.frames}: mean return {returns.mean():.1f} over '
            f'{len(returns)} episodes.'
        )
        return returns

    def train(self):
        """Evaluate, then train for `eval_every` frames, until `steps`; a last evaluation at
        the final frame unless it already has one."""
        total = self.units.steps
        self.phase = 'train'
        self.clock.clear()  # time shares count training only, not prefill or pretraining
        self.clock_start = time.perf_counter()
        if self.step < total:
            self.progress = progress(
                (total - self.step) * self.config.action_repeat, 'train', 'frames'
            )

        def policy(obs, state):
            start = time.perf_counter()
            out = self.agent.policy(obs, state, mode='train')
            self.clock['policy'] += time.perf_counter() - start
            return out

        while self.step < total:
            self.logger.write(self.step)
            # Stretches of eval_every frames from the end of prefill, each begun with an
            # evaluation; a run resumed inside one finishes it first.
            if self.chunk_end is None or self.step >= self.chunk_end:
                boundary = self._last_boundary()
                # Not when this stretch has its evaluation (e.g. a resumed finished run).
                last = self.last_eval_frame
                if self.evaluates and (last is None or last < boundary * self.config.action_repeat):
                    print('Start evaluation.')
                    self.evaluate()
                    self.check_stop()
                self.chunk_end = boundary + self.units.eval_every
                print('Start training.')
            self.train_driver(policy, steps=min(self.chunk_end, total) - self.step)
            self.save()
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.evaluates and self.last_eval_frame != self.frames:
            print('Final evaluation.')
            self.evaluate()
            self.save()
        print(f'Finished {self.frames} frames.')

    def _last_boundary(self):
        """The last start of a stretch at or before the current step: stretches of eval_every
        steps from the end of prefill, as in a run never stopped, also after a kill."""
        start = min(self.units.prefill, self.step)
        every = self.units.eval_every
        return start + (self.step - start) // every * every

    def _read_last_eval_frame(self):
        """The frame of the last evaluation in eval_returns.jsonl (None if there is none)."""
        path = self.logdir / 'eval_returns.jsonl'
        frame = None
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    frame = int(json.loads(line)['step'])
                except (ValueError, KeyError, TypeError):
                    continue  # A line cut short by a crash.
        return frame

    def save(self):
        """The agent's checkpoint, then the loop's state (runstate.py), each atomically."""
        if self.agent is not None:
            self.agent.save(self.logdir / CHECKPOINT)
            print(f'Saved checkpoint {self.logdir / CHECKPOINT}.')
        runstate.save(self.logdir, self.run_state())


def _nest_to_numpy(nest):
    """A policy's recurrent state (TensorFlow tensors, or None) as NumPy arrays."""
    import tensorflow as tf

    return tf.nest.map_structure(np.asarray, nest)
