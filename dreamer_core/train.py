"""The one training loop: prefill, pretrain, then alternate evaluation and training."""

import collections
import importlib.util
import json
import pathlib
import random
import re
import signal
import sys

import numpy as np

from dreamer_core import config as config_lib
from dreamer_core import envs as envs_lib
from dreamer_core import faults
from dreamer_core.logger import Logger, Progress
from dreamer_core.replay import Replay

CHECKPOINT = 'variables.npz'
# Under mixed precision a non-finite step is skipped (and the loss scale lowered); this many
# skipped updates in a row means the run has diverged.
MAX_SKIPPED = 50


class Stop(Exception):
    """Raised inside the env loop when a signal asked the run to stop cleanly."""


class Counter:
    def __init__(self, value=0):
        self.value = int(value)

    def __int__(self):
        return self.value


def main(argv, variant_dir, loss, variant):
    """Entry point of every variant's dreamerv2/train.py.

    `loss` names the variant's representation loss as 'module:Class' in `variant_dir`; it is
    imported (with TensorFlow) only once the config and task are known to be good.
    """
    try:
        config = config_lib.load(argv, variant_dir)
        envs_lib.validate_task(config.task)
        check_config(config)
        logdir = prepare_logdir(config.logdir)
    except (config_lib.ConfigError, envs_lib.TaskError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    repr_loss = load_loss(variant_dir, loss)
    try:
        return run(config, logdir, pathlib.Path(variant_dir).parent, repr_loss, variant)
    except SetupError as e:
        print(f'error: {e.__cause__}', file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f'error: {e} The last good checkpoint in {logdir} is kept.', file=sys.stderr)
        return 1


def load_loss(variant_dir, spec):
    """The class named by 'module:Class', from the file variant_dir/module.py."""
    module_name, _, class_name = spec.partition(':')
    path = pathlib.Path(variant_dir) / f'{module_name}.py'
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, class_name)


class SetupError(Exception):
    """Bad input found while building the run (replay, envs, agent, checkpoint)."""


def check_config(config):
    if config.precision not in (16, 32):
        raise config_lib.ConfigError(f'precision is {config.precision}: use 16 or 32.')
    if config.time_limit and config.replay_size < config.time_limit:
        raise config_lib.ConfigError(
            f'replay_size ({config.replay_size} steps) is smaller than one episode '
            f'({config.time_limit} steps after action repeat): raise --replay_size.'
        )
    if config.dataset.length > config.time_limit > 0:
        raise config_lib.ConfigError(
            f'dataset.length ({config.dataset.length}) is longer than an episode '
            f'({config.time_limit} steps after action repeat): lower --dataset.length.'
        )


def prepare_logdir(logdir):
    if str(logdir) in ('/dev/null', ''):
        raise OSError('Give a log directory: --logdir log/<task>/<agent>/<seed>.')
    logdir = pathlib.Path(logdir).expanduser()
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        probe = logdir / '.write_test'
        probe.write_text('ok')
        probe.unlink()
    except OSError as e:
        raise OSError(
            f'Cannot write to the log directory {logdir}: {e.strerror}. Choose a writable --logdir.'
        ) from e
    return logdir


def setup_tensorflow(config):
    """Seed everything; mixed precision only where a GPU makes it pay."""
    import tensorflow as tf
    import tf_keras as keras

    random.seed(config.seed)
    np.random.seed(config.seed)
    tf.random.set_seed(config.seed)
    gpus = tf.config.list_physical_devices('GPU')
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.run_functions_eagerly(not config.jit)
    if config.precision == 16 and not gpus:
        print('No GPU found: running precision 16 as 32 (mixed float16 is ~20x slower on a CPU).')
    elif config.precision == 16:
        keras.mixed_precision.set_global_policy('mixed_float16')
    return tf


def env_seed(config, mode, index, resume_steps):
    """Distinct, reproducible env seeds per mode, env index and resume point."""
    return int(
        np.random.SeedSequence([config.seed, mode == 'eval', index, resume_steps]).generate_state(
            1
        )[0]
        % (2**31)
    )


def run(config, logdir, variant_root, repr_loss, variant):
    setup_tensorflow(config)
    print(f'Logdir {logdir}')
    from dreamer_core.agent import CheckpointError
    from dreamer_core.backgrounds import BackgroundError
    from dreamer_core.replay import ReplayError

    bad_input = (CheckpointError, BackgroundError, ReplayError, ValueError)
    obs_shapes = {'image': envs_lib.obs_shape(config)}
    try:
        train_replay = Replay(logdir / 'train_replay', config.replay_size, config.seed, obs_shapes)
        eval_replay = Replay(
            logdir / 'eval_replay', config.replay_size, config.seed + 1, obs_shapes
        )
        step = Counter(train_replay.total_steps)
        resume = step.value
        make = lambda mode, i: envs_lib.make_env(
            config, mode, variant_root, seed=env_seed(config, mode, i, resume)
        )
        train_envs = [make('train', i) for i in range(config.num_envs)]
        eval_envs = [make('eval', i) for i in range(config.num_envs)]
    except bad_input as e:
        raise SetupError() from e
    obs_shape = train_envs[0].obs_shape
    assert obs_shape == obs_shapes['image'], (obs_shape, obs_shapes)
    act_space = train_envs[0].act_space
    from dreamer_core.agent import Agent

    try:
        # Built before prefill so that a config the agent rejects fails before anything runs.
        agent = Agent(config, obs_shape, act_space.shape[0], act_space.discrete, repr_loss, variant)
        if (logdir / CHECKPOINT).exists():
            # Before config.yaml and the logs are written: a logdir of another run stays as it was.
            agent.check_checkpoint(logdir / CHECKPOINT)
    except bad_input as e:
        raise SetupError() from e
    config.save(logdir / 'config.yaml')
    logger = Logger(logdir, multiplier=config.action_repeat)
    loop = Loop(config, logdir, logger, step, train_replay, eval_replay, train_envs, eval_envs)
    try:
        loop.prefill(act_space)
        loop.start(agent)
        loop.train()
    except (CheckpointError, BackgroundError, ReplayError) as e:
        # Videos are decoded at the first env reset (in prefill, or in evaluation when resumed);
        # replay and checkpoint problems surface when the agent starts.
        raise SetupError() from e
    except Stop:
        loop.save()
        print(
            f'Stopped at frame {step.value * config.action_repeat}; checkpoint and replay saved. '
            f'Resume with the same command (same --logdir {logdir}).'
        )
    finally:
        logger.close()
        for env in train_envs + eval_envs:
            env.close()
    return 0


class Loop:
    """Holds the pieces of one run; the only place that logs and saves."""

    def __init__(
        self, config, logdir, logger, step, train_replay, eval_replay, train_envs, eval_envs
    ):
        from dreamer_core.driver import Driver
        from dreamer_core import tools

        self.config, self.logdir, self.logger, self.step = config, logdir, logger, step
        self.train_replay, self.eval_replay = train_replay, eval_replay
        self.train_driver, self.eval_driver = Driver(train_envs), Driver(eval_envs)
        self.metrics = collections.defaultdict(list)
        self.should_train = tools.Every(config.train_every)
        self.should_log = tools.Every(config.log_every)
        self.should_video = {
            'train': tools.Every(config.eval_every),
            'eval': tools.Every(config.eval_every),
        }
        self.eval_returns = []
        self.agent = None
        self.updates = 0
        self.skipped_in_a_row = 0
        self._stop_requested = None
        self.train_driver.on_episode(lambda ep: self.per_episode(ep, 'train'))
        self.eval_driver.on_episode(lambda ep: self.per_episode(ep, 'eval'))
        self.train_driver.on_step(self.count_step)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

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

    def count_step(self, transition, index):
        self.step.value += 1
        self.check_stop()

    def per_episode(self, ep, mode):
        length = len(ep['reward']) - 1
        score = float(ep['reward'].astype(np.float64).sum())
        replay = self.train_replay if mode == 'train' else self.eval_replay
        replay.add(ep)
        frames = length * self.config.action_repeat
        print(
            f'{mode.title()} episode has {frames} frames ({length} steps) and return {score:.1f}.'
        )
        if mode == 'eval':
            self.eval_returns.append(score)
        else:
            self.logger.scalar('train_return', score)
            self.logger.scalar('train_length', frames)
            self.logger.scalar('train_episodes', replay.total_episodes)
        if self.should_video[mode](self.step.value):
            self.logger.video(f'{mode}_policy', ep['image'])
        self.logger.write(self.step.value)

    def prefill(self, act_space):
        from dreamer_core.agent_random import RandomAgent

        missing = max(0, self.config.prefill - self.train_replay.total_steps)
        if missing:
            print(
                f'Prefill dataset ({missing} steps, {missing * self.config.action_repeat} frames).'
            )
            agent = RandomAgent(act_space, self.config.seed)
            progress = Progress(missing, 'prefill steps')
            start = self.step.value

            def on_prefill_step(*_):
                progress.update(self.step.value - start)
                faults.kill_point('prefill')

            self.train_driver.on_step(on_prefill_step)
            self.train_driver(agent, steps=missing)
            self.train_driver._on_steps.pop()
            progress.close()
            self.train_driver.reset()
        if not self.eval_replay.total_episodes:
            self.eval_driver(RandomAgent(act_space, self.config.seed + 1), episodes=1)
            self.eval_returns.clear()
            self.eval_driver.reset()

    def start(self, agent):
        self.agent = agent
        agent.step.assign(self.step.value)
        self.train_data = iter(self.train_replay.dataset(**self.config.dataset))
        self.eval_data = iter(self.eval_replay.dataset(**self.config.dataset))
        # One update creates every variable, optimizer state included (as DreamerV2 does).
        self.update()
        path = self.logdir / CHECKPOINT
        if path.exists():
            agent.load(path)
            print(
                f'Resumed agent from {path} at frame {self.step.value * self.config.action_repeat}.'
            )
            return
        pretrain = max(0, self.config.pretrain - 1)
        if pretrain:
            print(f'Pretrain agent ({pretrain} more updates).')
            progress = Progress(pretrain, 'pretrain updates')
            for i in range(pretrain):
                self.update()
                self.check_stop()
                progress.update(i + 1)
            progress.close()

    def update(self):
        import tensorflow as tf

        try:
            mets = self.agent.train(next(self.train_data))
        except tf.errors.InvalidArgumentError as e:
            # check_numerics reports '<name> : Tensor had NaN values' after an eager or graph prefix.
            match = re.search(r'(\w+) : Tensor had (\w+) values', e.message)
            if not match:
                raise
            name, kind = match.groups()
            raise FloatingPointError(
                f'{name} is not finite ({kind}) at frame {self.step.value * self.config.action_repeat} '
                f'(update {self.updates + 1}).'
            ) from None
        self.updates += 1
        skipped = mets.get('model_skipped', 0.0)
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        if self.skipped_in_a_row >= MAX_SKIPPED:
            raise FloatingPointError(
                f'{MAX_SKIPPED} updates in a row had non-finite gradients even with loss scaling, '
                f'last at frame {self.step.value * self.config.action_repeat}.'
            )
        for key, value in mets.items():
            self.metrics[key].append(value)
        faults.kill_point('train')

    def train_step(self, transition, index):
        self.agent.step.assign(self.step.value)
        if self.should_train(self.step.value):
            for _ in range(self.config.train_steps):
                self.update()
        if self.should_log(self.step.value):
            for name, values in self.metrics.items():
                self.logger.scalar(name, np.array(values, np.float64).mean())
            self.metrics.clear()
            self.logger.add(self.agent.report(next(self.train_data)), prefix='train')
            self.logger.write(self.step.value, fps=True)
        self.progress.update(self.step.value - self._progress_start)

    def evaluate(self):
        self.logger.add(self.agent.report(next(self.eval_data)), prefix='eval')
        self.eval_returns.clear()
        policy = lambda obs, state: self.agent.policy(obs, state, mode='eval')
        self.eval_driver(policy, episodes=self.config.eval_eps)
        self.eval_driver.reset()
        returns = np.array(self.eval_returns, np.float64)
        self.logger.scalar('eval_return', returns.mean())
        self.logger.scalar('eval_return_std', returns.std())
        self.logger.scalar('eval_episodes', len(returns))
        self.logger.write(self.step.value)
        frames = self.step.value * self.config.action_repeat
        with open(self.logdir / 'eval_returns.jsonl', 'a') as f:
            f.write(json.dumps({'step': frames, 'returns': returns.tolist()}) + '\n')
        print(
            f'Evaluation at frame {frames}: mean return {returns.mean():.1f} over {len(returns)} '
            'episodes.'
        )

    def train(self):
        config = self.config
        self.train_driver.on_step(self.train_step)
        self._progress_start = self.step.value
        if self.step.value >= config.steps:
            self.save()  # prefill reached --steps: keep what pretraining learned
        else:
            self.progress = Progress(config.steps - self.step.value, 'train steps')
        policy = lambda obs, state: self.agent.policy(obs, state, mode='train')
        while self.step.value < config.steps:
            self.logger.write(self.step.value)
            print('Start evaluation.')
            self.evaluate()
            self.check_stop()
            print('Start training.')
            self.train_driver(policy, steps=min(config.eval_every, config.steps - self.step.value))
            self.save()
        if hasattr(self, 'progress'):
            self.progress.close()
        print(f'Finished {config.steps * config.action_repeat} frames.')

    def save(self):
        if self.agent is not None:
            self.agent.save(self.logdir / CHECKPOINT)
            print(f'Saved checkpoint {self.logdir / CHECKPOINT}.')
