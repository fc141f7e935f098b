"""The agent: world model + task behaviour + exploration; the only object the loop talks to."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import tensorflow as tf

from dreamer_core import expl, fileio, hardware, optim, rng
from dreamer_core.actor_critic import ActorCritic
from dreamer_core.config import ConfigError, agent_steps
from dreamer_core.errors import UserError
from dreamer_core.world_model import WorldModel

# Salt of the agent's random stream, apart from the streams of the losses seeded with config.seed.
RNG_STREAM = 0x5EED


class CheckpointError(UserError, RuntimeError):
    pass


class Agent(tf.Module):
    def __init__(self, config, obs_shape, act_dim, discrete, repr_loss, variant='agent'):
        super().__init__(name='agent')
        self.config = config
        self.variant = variant
        self.act_dim, self.discrete = act_dim, discrete
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        # Every draw of the agent (latent and action samples, action noise) comes from this
        # generator, whose state the checkpoint keeps (dreamer_core/rng.py).
        self._rng = tf.random.Generator.from_seed([int(config.seed), RNG_STREAM])
        self.wm = WorldModel(config, obs_shape, act_dim, repr_loss)
        self._task_behavior = ActorCritic(config, act_dim, discrete, self.step)
        reward = lambda feat, state, action: self.wm.heads['reward'](feat).mode()
        if config.expl_behavior == 'greedy':
            self._expl_behavior = self._task_behavior
        elif config.expl_behavior in expl.BEHAVIORS:
            self._expl_behavior = expl.BEHAVIORS[config.expl_behavior](
                config, act_dim, discrete, self.step, self.wm, reward
            )
        else:
            raise ConfigError(
                f'expl_behavior is {config.expl_behavior!r}: use greedy or one of '
                f'{sorted(expl.BEHAVIORS)}.'
            )
        self._reward = reward
        self._expl_until = agent_steps(config).expl_until
        self._variables_created = False
        if config.jit:
            self._policy = tf.function(self._policy)
            # XLA fuses the update's many small ops: on by default only on GPUs (config xla).
            xla = hardware.use_xla(config.xla, hardware.gpu_capabilities(tf))
            # Without AutoGraph: the update has no Python control flow on tensors (tf.cond is
            # written out), and converting its hundreds of functions was half of its tracing.
            self._train = tf.function(self._train, jit_compile=xla or None, autograph=False)
            self._report = tf.function(self._report)

    def policy(self, obs: dict, state=None, mode: str = 'train') -> tuple[dict, tuple]:
        """Actions for a batch of observations (numpy in, numpy out); state carries the latent."""
        obs = {
            'image': tf.convert_to_tensor(obs['image']),
            'reset': tf.convert_to_tensor(np.asarray(obs['reset'], bool)),
        }
        if state is None:
            batch = obs['image'].shape[0]
            state = (self.wm.rssm.initial(batch), tf.zeros((batch, self.act_dim), tf.float32))
        # As the original's Until(): expl_until 0 means explore for the whole run.
        until = self._expl_until
        explore = mode == 'train' and (not until or int(self.step.numpy()) < until)
        action, state = self._policy(obs, state, mode, explore)
        return {'action': action.numpy()}, state

    def _policy(self, obs, state, mode, explore):
        with rng.using(self._rng):
            return self._act(obs, state, mode, explore)

    def _act(self, obs, state, mode, explore):
        latent, action = state
        keep = 1.0 - tf.cast(obs['reset'], tf.float32)
        mask = lambda x: x * tf.cast(tf.reshape(keep, [-1] + [1] * (len(x.shape) - 1)), x.dtype)
        latent, action = tf.nest.map_structure(mask, (latent, action))
        embed = self.wm.encoder(self.wm.preprocess({'image': obs['image']}))
        sample = (mode == 'train') or not self.config.eval_state_mean
        latent, _ = self.wm.rssm.obs_step(latent, action, embed, sample)
        feat = self.wm.rssm.get_feat(latent)
        if mode == 'eval':
            action, noise = self._task_behavior.actor(feat).mode(), self.config.eval_noise
        elif explore:
            action, noise = (
                self._expl_behavior.actor(feat).sample(seed=rng.seed()),
                self.config.expl_noise,
            )
        else:
            action, noise = (
                self._task_behavior.actor(feat).sample(seed=rng.seed()),
                self.config.expl_noise,
            )
        action = action_noise(tf.cast(action, tf.float32), noise, self.discrete)
        return action, (latent, action)

    def train(self, data: dict) -> dict[str, np.ndarray]:
        """One update of the world model, the task behaviour and the exploration behaviour."""
        if self.config.jit:
            # A tf.function whose first call creates variables is traced twice; made before,
            # they leave one trace (with the tracing without AutoGraph, the published
            # DreamerPro's first update went from 129 to 88 s, benchmarks/README.md).
            self.create_variables(data)
        metrics = self._train(data)
        return {k: v.numpy() for k, v in metrics.items()}

    def create_variables(self, data: dict) -> None:
        """Create every variable (layers, optimizer state) without changing any value.

        One eager update on a slice of `data` (two sequences of four steps) creates them, in
        the order and with the initial values the first update would give them (layers draw
        their initial weights in creation order); then every variable gets back its
        value from before (a new one its initial value), the random generators of the
        representation losses included, so no update is applied and no draw is used up.
        Does nothing once the variables exist.
        """
        if self._variables_created:
            return
        before = [(var, var.numpy()) for _, var in self.checkpoint_variables()]
        before += [(gen.state, gen.state.numpy()) for gen in self._generators()]
        created = []

        def record(next_creator, **kwargs):
            var = next_creator(**kwargs)
            created.append((var, var.numpy()))
            return var

        eager = self._train.python_function if self.config.jit else self._train
        few = {k: tf.convert_to_tensor(v)[:2, :4] for k, v in data.items()}
        with tf.variable_creator_scope(record):
            eager(few)
        for var, value in before + created:
            var.assign(value)
        self._variables_created = True

    def _generators(self):
        """The tf.random.Generator objects of the agent's modules (their state is a variable
        that tf.Module does not list)."""
        gens = []
        for module in (self, *self.submodules):
            gens += [v for v in vars(module).values() if isinstance(v, tf.random.Generator)]
        return gens

    def _train(self, data):
        with rng.using(self._rng):
            return self._update(data)

    def _update(self, data):
        metrics = {}
        _, outputs, mets = self.wm.train(data)
        metrics.update(mets)
        start = outputs['post']
        if self.config.pred_discount:  # The last step could be terminal.
            start = {k: v[:, :-1] for k, v in start.items()}
        metrics.update(self._task_behavior.train(self.wm, start, self._reward))
        if self.config.expl_behavior != 'greedy':
            data = outputs['data']
            if self.config.pred_discount:
                data = {k: v[:, :-1] for k, v in data.items()}
                outputs = {
                    k: (
                        v[:, :-1]
                        if not isinstance(v, dict)
                        else {n: x[:, :-1] for n, x in v.items()}
                    )
                    for k, v in outputs.items()
                }
            mets = self._expl_behavior.train(start, outputs, data)
            metrics.update({'expl_' + key: value for key, value in mets.items()})
        return {k: tf.cast(v, tf.float32) for k, v in metrics.items()}

    def report(self, data: dict) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._report(data).items()}

    def _report(self, data):
        with rng.using(self._rng):
            return self.wm.report(data)

    def checkpoint_variables(self) -> list[tuple[str, tf.Variable]]:
        """(name, variable) for every variable, optimizer state included, in a fixed order."""
        pairs = flat_names(self)
        for k, opt in enumerate(self._optimizers()):  # e.g. task and exploration 'actor'
            pairs += [(f'optimizer{k}/{opt.name}/{i}', v) for i, v in enumerate(opt.variables_list)]
        return pairs

    def _optimizers(self):
        """Every optimizer of the agent (world model, behaviours), in traversal order."""
        return [m for m in self.submodules if isinstance(m, optim.Optimizer)]

    def _signature(self):
        config = self.config.to_dict()
        signature = {
            'variant': self.variant,
            'rssm': config['rssm'],
            'encoder': config['encoder'],
            'image_size': config['image_size'],
        }
        return json.loads(json.dumps(signature))

    def save(self, path: str | pathlib.Path) -> None:
        """Write every variable to `path` atomically (temporary file, fsync, rename)."""
        path = pathlib.Path(path)
        pairs = self.checkpoint_variables()
        arrays = {f'v{i:05d}': v.numpy() for i, (_, v) in enumerate(pairs)}
        generators = self._generators()
        arrays.update({f'g{i:05d}': gen.state.numpy() for i, gen in enumerate(generators)})
        meta = dict(
            self._signature(),
            names=[n for n, _ in pairs],
            generators=len(generators),
            step=int(self.step.numpy()),
        )
        arrays['meta'] = np.array(json.dumps(meta))
        # A fixed temporary name: a save killed midway is replaced by the next one.
        fileio.atomic_write(
            path,
            lambda file: np.savez(file, **arrays),
            tmp=path.with_name(path.name + '.tmp'),
            kill_point='checkpoint',
        )

    def check_checkpoint(self, path: str | pathlib.Path) -> dict:
        """Raise CheckpointError unless `path` is readable and of this variant and model size
        (reads only the small metadata entry); returns that entry (with the agent's `step`
        in checkpoints of this version)."""
        meta = read_checkpoint_meta(path)
        self._check_signature(pathlib.Path(path), meta)
        return meta

    def load(self, path: str | pathlib.Path) -> None:
        """Restore every variable; a checkpoint of another agent or size is a clear error."""
        path = pathlib.Path(path)
        arrays = _read_checkpoint(path)
        meta = json.loads(str(arrays.pop('meta')))
        self._check_signature(path, meta)
        states = [arrays.pop(f'g{i:05d}') for i in range(meta.get('generators', 0))]
        generators = self._generators()
        pairs = self.checkpoint_variables()
        if len(pairs) != len(arrays):
            raise CheckpointError(
                f'Checkpoint {path} holds {len(arrays)} variables, this agent has '
                f'{len(pairs)}: it was written with another config. Use a new --logdir.'
            )
        for i, (name, var) in enumerate(pairs):
            value = arrays[f'v{i:05d}']
            if tuple(value.shape) != tuple(var.shape):
                raise CheckpointError(
                    f'Checkpoint {path}: {name} has shape {value.shape}, this agent '
                    f'expects {tuple(var.shape)}. Use a new --logdir.'
                )
            var.assign(value)
        # The random generators' states: a checkpoint of an earlier version has none, and its
        # run goes on with freshly seeded streams.
        if len(states) == len(generators):
            for gen, state in zip(generators, states):
                gen.state.assign(state)

    def _check_signature(self, path, meta):
        mine = self._signature()
        theirs = {k: meta.get(k) for k in mine}
        if theirs != mine:
            diff = {k: (theirs[k], mine[k]) for k in mine if theirs[k] != mine[k]}
            raise CheckpointError(
                f'Checkpoint {path} was written by another agent or model size: '
                + '; '.join(f'{k}: checkpoint {a} vs this run {b}' for k, (a, b) in diff.items())
                + '. Use a new --logdir or the same variant and config.'
            )


def read_checkpoint_meta(path: str | pathlib.Path) -> dict:
    """The metadata entry of a checkpoint (variant, sizes, names, step); unreadable is a
    CheckpointError."""
    return json.loads(str(_read_checkpoint(pathlib.Path(path), keys=['meta'])['meta']))


def _read_checkpoint(path, keys=None):
    """The arrays of a checkpoint (only `keys` when given); unreadable is a CheckpointError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in (data.files if keys is None else keys)}
    except Exception as e:
        raise CheckpointError(
            f'Cannot read checkpoint {path}: {e}. Delete it to start the agent '
            'from scratch (replay is kept), or use another --logdir.'
        ) from e


def action_noise(action: tf.Tensor, amount: float, discrete: bool) -> tf.Tensor:
    """Epsilon-random one-hot actions, or Gaussian noise clipped to [-1, 1]."""
    if amount == 0:
        return action
    amount = tf.cast(amount, action.dtype)
    if discrete:
        probs = amount / action.shape[-1] + (1 - amount) * action
        return tf.one_hot(
            rng.categorical(tf.math.log(probs), 1)[:, 0], action.shape[-1], dtype=action.dtype
        )
    return tf.clip_by_value(rng.normal(tf.shape(action), action, amount), -1, 1)


def flat_names(module: tf.Module) -> list[tuple[str, tf.Variable]]:
    """Deterministic (path, variable) pairs of a tf.Module, each variable once."""
    seen, pairs = set(), []
    for path, var in module._flatten(
        predicate=lambda v: isinstance(v, tf.Variable), with_path=True
    ):
        if id(var) in seen:
            continue
        seen.add(id(var))
        pairs.append(('/'.join(str(p) for p in path), var))
    return pairs
