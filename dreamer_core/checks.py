"""Declared ranges and relations of every numeric config value, checked before a run starts.

`check(config)` takes the config as the user gave it (a plain nested dict, frame counts still in
environment frames) and raises ConfigError with one line that names the key, the value, what is
allowed and how to fix it. RULES holds one rule per numeric key (patterns like `*.units` cover
families of keys); RELATIONS hold the rules that tie several keys together. A numeric key without
a rule is an error too, so a new option cannot slip through unchecked.
"""

import fnmatch
import numbers

from dreamer_core.config import ConfigError


class Number:
    """An int or a float within bounds: `low <= x` (or `low < x` with open_low), `x <= high`."""

    def __init__(self, kind, low=None, high=None, open_low=False, off=False, note=''):
        self.kind, self.low, self.high, self.open_low = kind, low, high, open_low
        self.off, self.note = off, note  # off: False switches the option off (ints only)

    def problem(self, value):
        if value is False and self.off:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return 'wrong type'
        if self.kind is int and not isinstance(value, numbers.Integral):
            return 'wrong type'
        if value != value:  # NaN compares false against every bound
            return 'not a number'
        too_low = self.low is not None and (
            value <= self.low if self.open_low else value < self.low
        )
        too_high = self.high is not None and value > self.high
        return 'out of range' if too_low or too_high else None

    def describe(self):
        name = 'an int' if self.kind is int else 'a number'
        bounds = []
        if self.low is not None:
            bounds.append(f'{">" if self.open_low else ">="} {self.low}')
        if self.high is not None:
            bounds.append(f'<= {self.high}')
        text = f'{name} {" and ".join(bounds)}'.strip()
        if self.off:
            text += ', or False to switch it off'
        return text + (f' ({self.note})' if self.note else '')


class Choice:
    def __init__(self, *values):
        self.values = values

    def problem(self, value):
        ok = not isinstance(value, bool) and value in self.values
        return None if ok else 'not one of the choices'

    def describe(self):
        return 'one of ' + ', '.join(str(v) for v in self.values)


class Ints:
    """A list of ints >= low, of exactly `length` entries (any length >= 1 when None)."""

    def __init__(self, low, length=None, note=''):
        self.low, self.length, self.note = low, length, note

    def problem(self, value):
        if not isinstance(value, (list, tuple)):
            return 'not a list'
        if self.length is not None and len(value) != self.length:
            return 'wrong length'
        if not value:
            return 'empty'
        if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
            return 'wrong type'
        return 'out of range' if min(value) < self.low else None

    def describe(self):
        count = f'{self.length} ints' if self.length else 'a list of ints'
        text = f'{count} >= {self.low}'
        return text + (f' ({self.note})' if self.note else '')

    def example(self):
        return ','.join(
            [str(max(self.low, 1) * 64 if self.length == 2 else 4)] * (self.length or 4)
        )


FRAMES = 'environment frames'
UNIT = (0.0, 1.0)
POSITIVE_INT = Number(int, 1)
COUNT = Number(int, 0)
NON_NEGATIVE = Number(float, 0.0)
FRACTION = Number(float, *UNIT)

# Exact keys first; a key without an exact entry takes the first pattern that matches.
RULES = {
    'seed': Number(int, 0),
    'num_envs': POSITIVE_INT,
    'steps': Number(int, 1, note=FRAMES),
    'eval_every': Number(int, 1, note=FRAMES),
    'log_every': Number(int, 1, note=FRAMES),
    'eval_eps': Number(int, 0, note='episodes per evaluation; 0 = no evaluation'),
    'action_repeat': POSITIVE_INT,
    'time_limit': Number(int, 0, note=f'{FRAMES}; 0 = episodes end only by the task'),
    'prefill': Number(int, 0, note=FRAMES),
    'image_size': Ints(1, length=2, note='height,width'),
    'replay_size': Number(int, 0, note='steps kept in memory; 0 = no limit'),
    'dataset.batch': POSITIVE_INT,
    'dataset.length': POSITIVE_INT,
    'precision': Choice(16, 32, 'bf16'),
    'max_videos': POSITIVE_INT,
    'threads': Number(int, 0, note="TensorFlow's threads; 0 = its default"),
    'train_every': POSITIVE_INT,
    'train_steps': POSITIVE_INT,
    'pretrain': COUNT,
    'expl_noise': NON_NEGATIVE,
    'expl_until': Number(int, 0, note=FRAMES),
    'eval_noise': NON_NEGATIVE,
    'rssm.discrete': Number(int, 1, off=True),
    'rssm.min_std': NON_NEGATIVE,
    'rssm.warm_up': COUNT,
    'rssm.perturb_std': NON_NEGATIVE,
    'rssm.temperature': Number(float, 0.0, open_low=True),
    'rssm.sinkhorn_eps': Number(float, 0.0, open_low=True),
    'rssm.sinkhorn_iters': POSITIVE_INT,
    'rssm.hidden': POSITIVE_INT,
    'rssm.deter': POSITIVE_INT,
    'rssm.stoch': POSITIVE_INT,
    'rssm.num_prototypes': POSITIVE_INT,
    'rssm.proto': POSITIVE_INT,
    '*.depth': POSITIVE_INT,
    '*.kernels': Ints(1),
    '*.layers': COUNT,
    '*.units': POSITIVE_INT,
    '*.min_std': NON_NEGATIVE,
    'kl.free': NON_NEGATIVE,
    'kl.balance': FRACTION,
    'loss_scales.*': NON_NEGATIVE,
    '*_opt.lr': Number(float, 0.0, open_low=True),
    '*_opt.eps': Number(float, 0.0, open_low=True),
    '*_opt.clip': Number(float, 0.0, note='global gradient norm; 0 = no clipping'),
    '*_opt.wd': Number(float, 0.0, 1.0, note='decoupled weight decay per update'),
    'discount': FRACTION,
    'discount_lambda': FRACTION,
    'imag_horizon': Number(int, 2, note='the actor learns from the first horizon - 1 steps'),
    'actor_grad_mix': FRACTION,
    'actor_ent': NON_NEGATIVE,
    'slow_target_update': POSITIVE_INT,
    'slow_target_fraction': Number(float, 0.0, 1.0, open_low=True),
    'expl_extr_scale': NON_NEGATIVE,
    'expl_intr_scale': NON_NEGATIVE,
    'disag_models': Number(int, 2, note='the disagreement is the std over the ensemble'),
    'disag_offset': POSITIVE_INT,
    'aug.max_delta': NON_NEGATIVE,
    'freeze_prototypes_iters': COUNT,
    'ema_update_every': POSITIVE_INT,
    'ema_update_fraction': Number(float, 0.0, 1.0, open_low=True),
}


def is_numeric(value):
    """Numbers and lists of numbers are checked; strings, bools and lists of strings are not."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (list, tuple)):
        return bool(value) and all(is_numeric(v) for v in value)
    return isinstance(value, numbers.Real)


def rule_for(key, extra=()):
    """The rule of `key`: the variant's own (`extra`, pairs of key or pattern and rule) first."""
    for rules in (dict(extra), RULES):
        if key in rules:
            return rules[key]
        for pattern, rule in rules.items():
            if fnmatch.fnmatchcase(key, pattern):
                return rule
    return None


def check(config, extra=()):
    """Raise ConfigError for the first value or relation of `config` (a nested dict) that fails.

    `extra` holds the rules of a variant's own keys (its registry entry's `rules`).
    """
    for key, value in leaves(config):
        check_value(key, value, extra)
    for relation in RELATIONS:
        relation(config)


def check_value(key, value, extra=()):
    rule = rule_for(key, extra)
    if rule is None:
        if is_numeric(value):
            raise ConfigError(
                f'{key} is {value!r} but has no declared range; declare one in the variant\'s '
                'registry entry (rules) or, for a core key, in dreamer_core/checks.py.'
            )
        return
    problem = rule.problem(value)
    if problem:
        raise ConfigError(
            f'{key} is {_show(value)} ({problem}); allowed: {rule.describe()}. '
            f'Fix: --{key} {_example(rule, value)}, or change it in your config block.'
        )


def leaves(tree, path=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, path + (key,))
        else:
            yield '.'.join(path + (key,)), value


def _show(value):
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(repr(v) for v in value) + ']'
    return repr(value)


def _example(rule, value):
    if isinstance(rule, Ints):
        return rule.example()
    if isinstance(rule, Choice):
        return str(rule.values[-1])
    return '<value in range>'


def _steps(config, key):
    """A frame count in agent steps, as the training loop will see it."""
    return config[key] // config['action_repeat']


def _fail(keys, message):
    raise ConfigError(f'{" and ".join(keys)}: {message}')


def _frame_counts_span_a_step(config):
    repeat = config['action_repeat']
    for key in ('steps', 'eval_every', 'log_every'):
        if config[key] < repeat:
            _fail(
                [key, 'action_repeat'],
                f'{key} is {config[key]} frames, less than one agent step of '
                f'action_repeat={repeat} frames. Fix: --{key} {repeat} or more.',
            )


def _replay_holds_an_episode(config):
    limit = _steps(config, 'time_limit')
    if config['replay_size'] and limit and config['replay_size'] < limit:
        _fail(
            ['replay_size', 'time_limit'],
            f'replay_size ({config["replay_size"]} steps) is smaller than one episode '
            f'({limit} steps after action repeat): raise --replay_size.',
        )


def _windows_fit_an_episode(config):
    length, limit = config['dataset']['length'], _steps(config, 'time_limit')
    if length > limit > 0:
        _fail(
            ['dataset.length', 'time_limit'],
            f'dataset.length ({length}) is longer than an episode '
            f'({limit} steps after action repeat): lower --dataset.length.',
        )


def _prefill_finishes_an_episode(config):
    # The driver stores finished episodes only: a shorter prefill leaves the replay empty.
    prefill, limit = config['prefill'], config['time_limit']
    if 0 < prefill < limit:
        _fail(
            ['prefill', 'time_limit'],
            f'prefill ({prefill} frames) is shorter than one episode ({limit} frames), so '
            f'no episode would be stored to train on. Fix: --prefill {limit} or more.',
        )


def _windows_exceed_warm_up(config):
    warm_up = config['rssm'].get('warm_up')
    length = config['dataset']['length']
    if warm_up is not None and length <= warm_up:
        _fail(
            ['dataset.length', 'rssm.warm_up'],
            f'dataset.length ({length}) must exceed rssm.warm_up ({warm_up}): the loss skips '
            f'the first warm_up steps of each window. Fix: --dataset.length {warm_up + 1} or more.',
        )


def _encoder_fits_the_image(config):
    size = list(config['image_size'])
    for kernel in config['encoder']['kernels']:
        size = [(s - kernel) // 2 + 1 for s in size]  # a stride-2 VALID convolution
        if min(size) < 1:
            _fail(
                ['image_size', 'encoder.kernels'],
                f'images of {list(config["image_size"])} are too small for the encoder kernels '
                f'{list(config["encoder"]["kernels"])} (four stride-2 convolutions). '
                'Fix: --image_size 64,64.',
            )


def _decoder_makes_the_image(config):
    if 'decoder' not in config:
        return
    side = 1
    for kernel in config['decoder']['kernels']:
        side = (side - 1) * 2 + kernel  # a stride-2 VALID transposed convolution from 1x1
    if list(config['image_size']) != [side, side]:
        _fail(
            ['image_size', 'decoder.kernels'],
            f'the decoder kernels {list(config["decoder"]["kernels"])} produce {side}x{side} '
            f'images, not {list(config["image_size"])}. Fix: --image_size {side},{side}.',
        )


RELATIONS = (
    _frame_counts_span_a_step,
    _replay_holds_an_episode,
    _windows_fit_an_episode,
    _prefill_finishes_an_episode,
    _windows_exceed_warm_up,
    _encoder_fits_the_image,
    _decoder_makes_the_image,
)
