"""Every numeric config value has a declared range (dreamer_core/checks.py), and every value
outside it is refused with one line naming the key, the value, what is allowed and the fix."""

import copy
import functools

import pytest

from dreamer_core import checks
from dreamer_core import config as config_lib
from dreamer_core.config import ConfigError
from tests.test_config import VARIANTS


def raw_values(folder, blocks=('defaults',)):
    """The values a variant's blocks give, frame counts in frames (a copy)."""
    return copy.deepcopy(_raw_values(folder, blocks))


@functools.lru_cache(maxsize=None)
def _raw_values(folder, blocks):
    return config_lib.load(['--configs', *blocks], folder).to_dict()


def set_leaf(tree, key, value):
    *parents, last = key.split('.')
    for name in parents:
        tree = tree[name]
    tree[last] = value


def numeric_leaves(values):
    return [(key, value) for key, value in checks.leaves(values) if checks.is_numeric(value)]


def bad_candidates(default):
    """0, a negative value and a value of the wrong type or shape for a leaf."""
    if isinstance(default, list):
        return [[0] * len(default), [-1] * len(default), 64, [64], 'abc', [1.5] * len(default)]
    return [0, -1, [1, 2], 'abc', None, False, float('nan')]


LEAVES = [
    (variant, key, default)
    for variant, folder in VARIANTS.items()
    for key, default in numeric_leaves(raw_values(folder))
]


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_every_numeric_leaf_has_a_rule(variant):
    values = raw_values(VARIANTS[variant])
    missing = [key for key, _ in numeric_leaves(values) if checks.rule_for(key) is None]
    assert not missing
    assert len(numeric_leaves(values)) > 60  # the walk really reached the nested blocks


def test_a_numeric_key_without_a_rule_is_refused():
    with pytest.raises(ConfigError, match='new_knob is 3 but has no declared range'):
        checks.check_value('new_knob', 3)


@pytest.mark.parametrize('variant,key,default', LEAVES, ids=[f'{v}-{k}' for v, k, _ in LEAVES])
def test_bad_values_are_accepted_by_the_rule_or_refused_in_one_line(variant, key, default):
    rule = checks.rule_for(key)
    for value in bad_candidates(default):
        values = raw_values(VARIANTS[variant])
        set_leaf(values, key, value)
        try:
            checks.check(values)
        except ConfigError as error:
            assert_names_the_problem(str(error), key, value, rule)
            continue
        assert rule.problem(value) is None, value  # accepted: the rule declares it allowed


def assert_names_the_problem(message, key, value, rule):
    assert '\n' not in message
    assert message.startswith(key) or f' {key} ' in f' {message} ', message
    if rule.problem(value):  # refused by the key's own rule: value, range and fix named
        assert f'{key} is {checks._show(value)} (' in message
        assert f'allowed: {rule.describe()}' in message and f'Fix: --{key} ' in message
    else:  # allowed by the key's rule, refused by a declared relation naming the key
        assert str(value) in message and ('Fix' in message or 'raise --' in message), message


@pytest.mark.parametrize('variant', list(VARIANTS))
@pytest.mark.parametrize(
    'blocks',
    [
        ('defaults',),
        ('defaults', 'dmc'),
        ('defaults', 'dmc', 'small'),
        ('defaults', 'atari'),
        ('defaults', 'debug'),
    ],
)
def test_every_shipped_block_passes(variant, blocks):
    checks.check(raw_values(VARIANTS[variant], blocks))


@pytest.mark.parametrize(
    'flags,message',
    [
        (['--steps', '-5'], 'steps is -5 (out of range); allowed: an int >= 1'),
        (['--dataset.batch', '0'], 'dataset.batch is 0 (out of range); allowed: an int >= 1.'),
        (['--eval_eps', '-1'], 'eval_eps is -1 (out of range)'),
        (['--discount', '1.01'], 'allowed: a number >= 0.0 and <= 1.0'),
        (['--image_size', '64'], 'image_size is [64] (wrong length); allowed: 2 ints >= 1'),
        (['--rssm.hidden', 'False'], 'rssm.hidden is False (wrong type)'),
        (['--steps', '1'], 'steps is 1 frames, less than one agent step of action_repeat=2'),
        (['--prefill', '500'], 'prefill (500 frames) is shorter than one episode (1000 frames)'),
        (['--image_size', '32,32'], 'too small for the encoder kernels [4, 4, 4, 4]'),
        (['--image_size', '84,84'], 'the decoder kernels [5, 5, 6, 6] produce 64x64 images'),
    ],
)
def test_flags_refused_with_the_rule(flags, message):
    with pytest.raises(ConfigError) as info:
        checks.check(
            config_lib.load(['--configs', 'defaults', 'dmc', *flags], VARIANTS['Dreamer']).to_dict()
        )
    assert message in str(info.value)


@pytest.mark.parametrize('variant', ['DreamerPro', 'TPC'])
def test_windows_must_exceed_warm_up(variant):
    values = raw_values(VARIANTS[variant])
    values['dataset']['length'] = 1
    with pytest.raises(ConfigError, match=r'dataset.length \(1\) must exceed rssm.warm_up \(1\)'):
        checks.check(values)
    values['dataset']['length'] = 2
    checks.check(values)


def test_decoder_rule_only_for_the_variant_with_a_decoder():
    for variant in ('DreamerPro', 'TPC'):
        values = raw_values(VARIANTS[variant])
        values['image_size'] = [84, 84]
        checks.check(values)


def test_zero_evaluation_episodes_is_allowed():
    values = raw_values(VARIANTS['Dreamer'])
    values['eval_eps'] = 0
    checks.check(values)


def test_dreamer_pro_short_windows_exit_2_before_anything_is_built(tmp_path):
    from tests.e2e import run_variant

    result = run_variant('DreamerPro', tmp_path / 'run', '--dataset.length', '1')
    assert result.returncode == 2, result.stderr
    assert result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith('error: dataset.length and rssm.warm_up: dataset.length (1)')
    assert list(tmp_path.iterdir()) == []  # not even the logdir was created
