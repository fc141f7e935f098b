"""Config loading: blocks, flags, variant merging, errors, and the published numbers per variant."""

import copy
import os
import pathlib
import pickle
import textwrap

import pytest
from ruamel.yaml import YAML

from dreamer_core import config as config_lib
from dreamer_core import registry
from dreamer_core.config import Config, ConfigError, agent_steps, load, load_blocks

ROOT = pathlib.Path(__file__).resolve().parent.parent
VARIANTS = {v.folder: v.dir for v in registry.VARIANTS.values()}
DREAMER = VARIANTS['Dreamer']


def make_variant(tmp_path, text):
    """A throwaway variant folder whose configs.yaml is `text`."""
    (tmp_path / 'configs.yaml').write_text(textwrap.dedent(text))
    return tmp_path


@pytest.fixture(scope='module')
def core_blocks(tmp_path_factory):
    """The core file's blocks alone (merged with an empty variant file)."""
    folder = tmp_path_factory.mktemp('empty_variant')
    (folder / 'configs.yaml').write_text('')
    return load_blocks(folder)


def get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def error_text(argv, folder=DREAMER):
    with pytest.raises(ConfigError) as info:
        load(argv, folder)
    return str(info.value)


# Blocks.


def test_defaults_only_keeps_every_default_value():
    config = load([], DREAMER)
    defaults = load_blocks(DREAMER)['defaults']
    repeat = defaults['action_repeat']
    value = config.to_dict()
    for path in config_lib._leaf_paths(defaults):
        expected = get(defaults, path)
        if path[0] in config_lib.FRAME_KEYS:
            expected //= repeat
        assert get(value, path) == expected, path


def test_later_block_wins(tmp_path):
    folder = make_variant(
        tmp_path,
        """
      first: {seed: 1, eval_eps: 3}
      second: {seed: 2}
  """,
    )
    assert load(['--configs', 'defaults', 'first', 'second'], folder).seed == 2
    assert load(['--configs', 'defaults', 'second', 'first'], folder).seed == 1
    assert load(['--configs', 'defaults', 'second', 'first'], folder).eval_eps == 3


def test_defaults_applied_first_when_omitted():
    implicit = load(['--configs', 'dmc'], DREAMER)
    explicit = load(['--configs', 'defaults', 'dmc'], DREAMER)
    assert implicit == explicit
    assert implicit.action_repeat == 2


def test_dotted_block_key_sets_one_field(tmp_path):
    folder = make_variant(tmp_path, "fast: {model_opt.lr: 0.5}\n")
    config = load(['--configs', 'defaults', 'fast'], folder)
    defaults = load_blocks(folder)['defaults']
    assert config.model_opt.lr == 0.5
    assert config.model_opt.eps == defaults['model_opt']['eps']
    assert config.actor_opt.lr == defaults['actor_opt']['lr']


def test_regex_key_sets_every_match_and_nothing_else(tmp_path):
    folder = make_variant(
        tmp_path,
        """
      decay: {'.*\\.wd$': 0.5}
  """,
    )
    before = load([], folder).to_dict()
    after = load(['--configs', 'defaults', 'decay'], folder).to_dict()
    changed = {
        '.'.join(p) for p in config_lib._leaf_paths(before) if get(before, p) != get(after, p)
    }
    changed.remove('configs')  # The applied block names.
    assert changed == {'model_opt.wd', 'actor_opt.wd', 'critic_opt.wd', 'expl_opt.wd'}
    assert all(get(after, tuple(p.split('.'))) == 0.5 for p in changed)


def test_nested_dict_value_updates_only_named_fields(tmp_path):
    folder = make_variant(tmp_path, "narrow: {rssm: {hidden: 123}, dataset: {batch: 7}}\n")
    config = load(['--configs', 'defaults', 'narrow'], folder)
    defaults = load_blocks(folder)['defaults']
    assert config.rssm.hidden == 123 and config.dataset.batch == 7
    assert config.rssm.deter == defaults['rssm']['deter']
    assert config.dataset.length == defaults['dataset']['length']


def test_block_values_take_the_default_type(tmp_path):
    folder = make_variant(
        tmp_path,
        """
      typed: {steps: 2e8, discount: 1, image_size: [32, 48], rssm.discrete: False}
  """,
    )
    config = load(['--configs', 'defaults', 'typed'], folder)
    assert config.steps == 200_000_000 and type(config.steps) is int
    assert config.discount == 1.0 and type(config.discount) is float
    assert config.image_size == (32, 48)
    assert config.rssm.discrete is False


def test_every_block_of_every_variant_applies_cleanly():
    for name, folder in VARIANTS.items():
        for block in load_blocks(folder):
            if block == 'defaults':
                continue
            assert isinstance(load(['--configs', 'defaults', block], folder), Config), (name, block)


# Variant merging.


def test_variant_only_keys_stay_in_their_variant():
    blocks = {name: load_blocks(folder) for name, folder in VARIANTS.items()}
    assert 'decoder' in blocks['Dreamer']['defaults']
    assert 'decoder' not in blocks['TPC']['defaults']
    assert 'decoder' not in blocks['DreamerPro']['defaults']
    assert 'num_prototypes' in blocks['DreamerPro']['defaults']['rssm']
    assert 'num_prototypes' not in blocks['Dreamer']['defaults']['rssm']
    assert 'perturb_std' in blocks['TPC']['defaults']['rssm']
    assert 'norm_off' in blocks['DreamerPro'] and 'norm_off' not in blocks['TPC']
    assert 'sinkhorn_eps' not in str(blocks['TPC']['dmc'])


def test_core_values_reach_every_variant(core_blocks):
    core = core_blocks['defaults']
    for folder in VARIANTS.values():
        defaults = load_blocks(folder)['defaults']
        for key in ('model_opt', 'actor_opt', 'critic', 'encoder', 'kl', 'discount', 'task'):
            assert defaults[key] == core[key], (folder, key)
        for key in ('hidden', 'deter', 'stoch', 'min_std'):
            assert defaults['rssm'][key] == core['rssm'][key]


def test_variant_block_merges_into_core_block(core_blocks):
    core_dmc = core_blocks['dmc']
    pro_dmc = load_blocks(VARIANTS['DreamerPro'])['dmc']
    for key, value in core_dmc.items():
        assert pro_dmc[key] == value
    assert pro_dmc['rssm.sinkhorn_eps'] == 0.0125


def test_variant_entry_wins_over_core_entry_of_same_block(tmp_path):
    folder = make_variant(tmp_path, "dmc: {prefill: 64, rssm: {deter: 30}}\n")
    config = load(['--configs', 'defaults', 'dmc'], folder)
    assert config.prefill == 64 and agent_steps(config).prefill == 64 // config.action_repeat
    assert config.rssm.deter == 30 and config.rssm.hidden == 200  # Core's other fields kept.


def test_variant_defaults_are_coerced_to_core_types(tmp_path):
    folder = make_variant(tmp_path, "defaults: {loss_scales: {reward: 2, extra: 3}}\n")
    scales = load_blocks(folder)['defaults']['loss_scales']
    assert type(scales['reward']) is float and scales['reward'] == 2.0
    assert scales['extra'] == 3  # New key: its own YAML type.


def test_variant_defaults_reject_dotted_keys(tmp_path):
    folder = make_variant(tmp_path, "defaults: {rssm.hidden: 3}\n")
    with pytest.raises(ConfigError, match='plain name'):
        load_blocks(folder)


# Flags.


def test_typed_flags():
    config = load(
        [
            '--steps',
            '1e6',
            '--model_opt.lr',
            '1e-4',
            '--jit',
            'false',
            '--image_size',
            '32,48',
            '--grad_heads',
            'image',
            'reward',
            '--rssm.hidden',
            '7',
            '--discount',
            '1',
            '--logdir',
            'log/x',
            '--task',
            'nat_cup_catch',
            '--eval_state_mean',
            '1',
        ],
        DREAMER,
    )
    assert config.steps == 1_000_000 and type(config.steps) is int
    assert config.model_opt.lr == 1e-4
    assert config.jit is False and config.eval_state_mean is True
    assert config.image_size == (32, 48)
    assert config.grad_heads == ('image', 'reward')
    assert config.rssm.hidden == 7
    assert type(config.discount) is float
    assert (config.logdir, config.task) == ('log/x', 'nat_cup_catch')


def test_flags_override_blocks():
    config = load(
        ['--configs', 'defaults', 'dmc', '--precision', '32', '--rssm.hidden', '50'], DREAMER
    )
    assert config.precision == 32 and config.rssm.hidden == 50
    assert config.rssm.deter == 200


def test_flag_equals_form_and_single_list_token():
    config = load(['--seed=5', '--grad_heads', 'reward'], DREAMER)
    assert config.seed == 5 and config.grad_heads == ('reward',)


def test_int_option_switched_off_and_back_on():
    config = load(['--configs', 'defaults', 'dmc', '--rssm.discrete', '16'], DREAMER)
    assert config.rssm.discrete == 16
    assert load(['--rssm.discrete', 'False'], DREAMER).rssm.discrete is False


def test_action_repeat_divides_frame_counts_with_dmc():
    config = load(['--configs', 'defaults', 'dmc'], DREAMER)
    steps = agent_steps(config)
    assert config.action_repeat == 2
    assert config.steps == 1_000_000 and steps.steps == 1_000_000 // 2
    assert config.prefill == 5000 and steps.prefill == 5000 // 2
    assert config.time_limit == 1000 and steps.time_limit == 1000 // 2
    assert steps.eval_every == 10_000 // 2 and steps.log_every == 10_000 // 2


def test_config_yaml_keeps_frames_as_given_and_records_variant_and_blocks(tmp_path):
    config = load(['--configs', 'defaults', 'dmc', '--steps', '4000'], DREAMER)
    config_lib.save_run(config, tmp_path / 'config.yaml', 'dreamer')
    text = (tmp_path / 'config.yaml').read_text()
    assert text.startswith('variant: dreamer\n') and '\nsteps: 4000\n' in text
    variant, saved = config_lib.load_saved(tmp_path)
    assert variant == 'dreamer' and saved == config
    assert saved.configs == ('defaults', 'dmc')


def test_config_yaml_without_variant_is_a_clear_error(tmp_path):
    (tmp_path / 'config.yaml').write_text('steps: 10\n')
    with pytest.raises(ConfigError, match='names no variant'):
        config_lib.load_saved(tmp_path)


def test_action_repeat_division_uses_flag_values():
    config = load(
        ['--configs', 'defaults', 'atari', '--steps', '4e6', '--action_repeat', '3'], DREAMER
    )
    steps = agent_steps(config)
    assert steps.steps == 4_000_000 // 3 and steps.prefill == 200_000 // 3


# Errors.


def test_unknown_block_key_names_it_and_suggests(tmp_path):
    folder = make_variant(tmp_path, "typo: {prefil: 3}\n")
    text = error_text(['--configs', 'defaults', 'typo'], folder)
    assert "'prefil'" in text and 'prefill' in text and "'typo'" in text


def test_unknown_flag_suggests_dotted_match():
    text = error_text(['--rssm.hiden', '3'])
    assert "'rssm.hiden'" in text and 'rssm.hidden' in text


def test_unknown_block_lists_available_blocks():
    text = error_text(['--configs', 'defaults', 'dcm'])
    assert "'dcm'" in text and 'dmc' in text
    for name in load_blocks(DREAMER):
        assert name in text


@pytest.mark.parametrize(
    'argv, words',
    [
        (['--steps', '1.5'], ['steps', '1.5', 'int']),
        (['--model_opt.lr', 'fast'], ['model_opt.lr', 'fast', 'float']),
        (['--jit', 'yes'], ['jit', 'yes', 'bool']),
        (['--image_size', '64,a'], ['image_size', 'a', 'int']),
        (['--steps', 'True'], ['steps', 'True']),
        (['--seed', '1', '2'], ['seed', 'one value']),
    ],
)
def test_bad_flag_value(argv, words):
    text = error_text(argv)
    for word in words:
        assert word in text


def test_bad_block_value_type(tmp_path):
    folder = make_variant(tmp_path, "bad: {jit: maybe}\n")
    text = error_text(['--configs', 'defaults', 'bad'], folder)
    assert "block 'bad'" in text and 'jit' in text and 'maybe' in text


def test_flag_without_value_and_value_without_flag():
    assert "'--seed' has no value" in error_text(['--seed'])
    assert "'--seed' has no value" in error_text(['--seed', '--jit', 'False'])
    assert "'5'" in error_text(['5', '--seed', '1'])


def test_flag_naming_a_dict_suggests_dotted_form():
    text = error_text(['--rssm', '200'])
    assert '--rssm.' in text


def test_block_dict_key_needs_mapping(tmp_path):
    folder = make_variant(tmp_path, "bad: {rssm: 200}\n")
    assert 'rssm' in error_text(['--configs', 'defaults', 'bad'], folder)


def test_defaults_not_first_is_an_error():
    text = error_text(['--configs', 'dmc', 'defaults'])
    assert 'first' in text


def test_regex_matching_nothing_is_an_error(tmp_path):
    folder = make_variant(
        tmp_path,
        """
      bad: {'.*\\.nothing$': 1}
  """,
    )
    assert 'matches no' in error_text(['--configs', 'defaults', 'bad'], folder)


def test_missing_variant_file(tmp_path):
    with pytest.raises(ConfigError, match='configs.yaml'):
        load_blocks(tmp_path)


# The Config object.


def test_save_round_trip(tmp_path):
    config = load(['--configs', 'defaults', 'dmc'], VARIANTS['DreamerPro'])
    path = tmp_path / 'run' / 'config.yaml'
    config.save(path)
    loaded = YAML(typ='safe', pure=True).load(path.read_text())
    assert loaded == config.to_dict()
    assert Config(loaded) == config
    assert os.listdir(path.parent) == ['config.yaml']  # No temp file left behind.


def test_immutable():
    config = load([], DREAMER)
    with pytest.raises(AttributeError):
        config.seed = 3
    with pytest.raises(AttributeError):
        config.rssm.hidden = 3
    with pytest.raises(TypeError):
        config['seed'] = 3
    assert isinstance(config.image_size, tuple)
    plain = config.to_dict()
    plain['rssm']['hidden'] = -1
    assert config.rssm.hidden != -1


def test_replace_returns_new_config():
    config = load([], DREAMER)
    changed = config.replace(seed=config.seed + 1, rssm={'hidden': 3})
    assert changed.seed == config.seed + 1 and changed.rssm == Config(hidden=3)
    assert config.rssm.hidden != 3
    with pytest.raises(ConfigError, match='sed'):
        config.replace(sed=1)


def test_mapping_behaviour():
    config = load([], DREAMER)

    def takes(**kwargs):
        return kwargs

    assert takes(**config.rssm) == config.to_dict()['rssm']
    assert config.encoder['keys'] == ('image',)  # Item access for method-shadowing names.
    assert config['model_opt']['lr'] == config.model_opt.lr
    with pytest.raises(AttributeError, match='rssm'):
        config.rssmm
    assert pickle.loads(pickle.dumps(config)) == config
    assert copy.deepcopy(config) == config


# The published numbers per variant, after the blocks of the README's commands.


def check_shared_dmc(config):
    assert config.rssm.hidden == 200 and config.rssm.deter == 200
    assert config.rssm.discrete is False
    assert config.actor_opt.lr == 8e-5 and config.critic_opt.lr == 8e-5
    assert config.model_opt.lr == 3e-4
    assert config.kl.free == 1.0
    assert config.pretrain == 100 and config.pred_discount is False
    assert config.actor_grad == 'dynamics' and config.dataset.oversample_ends is False
    assert config.bg_path_train == '../kinetics400/videos/train'


def test_spec_dreamer_dmc():
    config = load(['--configs', 'defaults', 'dmc'], VARIANTS['Dreamer'])
    check_shared_dmc(config)
    assert config.grad_heads == ('image', 'reward')
    assert config.decoder.kernels == (5, 5, 6, 6)
    assert dict(config.loss_scales) == {'kl': 1.0, 'image': 1.0, 'reward': 1.0, 'discount': 1.0}
    assert config.dataset.batch == 50 and config.dataset.length == 50


def test_spec_tpc_dmc():
    config = load(['--configs', 'defaults', 'dmc'], VARIANTS['TPC'])
    check_shared_dmc(config)
    assert config.dataset.batch == 150 and config.dataset.length == 50
    assert config.grad_heads == ('reward',)
    assert config.rssm.perturb_std == 0.2 and config.rssm.warm_up == 1
    assert (config.rssm.posterior_input, config.rssm.posterior_std) == ('embed', 'prior')
    assert dict(config.loss_scales) == {
        'tpc': 1.0,
        'csc': 0.1,
        'spc': 1.0,
        'reward': 1.0,
        'discount': 1.0,
    }
    assert load([], VARIANTS['TPC']).grad_heads == ('reward', 'discount')


def test_spec_dreamer_pro_dmc_norm_off():
    config = load(['--configs', 'defaults', 'dmc', 'norm_off'], VARIANTS['DreamerPro'])
    check_shared_dmc(config)
    assert config.rssm.sinkhorn_eps == 0.0125 and config.rssm.num_prototypes == 2500
    assert config.rssm.temperature == 0.1 and config.rssm.sinkhorn_iters == 3
    assert config.loss_scales.norm == 0.0 and config.loss_scales.swav == 1.0
    assert config.dataset.length == 51 and config.grad_heads == ('reward',)
    assert config.aug.max_delta == 3.0 and config.freeze_prototypes_iters == 10000
    assert load([], VARIANTS['DreamerPro']).rssm.sinkhorn_eps == 0.05


def test_spec_atari_and_reward_1000():
    for name, folder in VARIANTS.items():
        config = load(['--configs', 'defaults', 'atari', 'reward_1000'], folder)
        steps = agent_steps(config)
        assert steps.steps == 200_000_000 // 4 and steps.time_limit == 108_000 // 4
        assert config.loss_scales.reward == 1000.0 and config.loss_scales.discount == 5.0
        assert config.actor.dist == 'onehot' and config.discount == 0.999
        assert config.actor_grad_mix == 0.0
        has_kl = name != 'TPC'
        assert ('kl' in config.loss_scales) == has_kl
        if has_kl:
            assert config.loss_scales.kl == 0.1


def test_spec_debug_block():
    config = load(['--configs', 'defaults', 'debug'], DREAMER)
    assert config.jit is False and config.dataset.batch == 10 and config.dataset.length == 10
    steps = agent_steps(config)
    assert steps.prefill == 100 and steps.eval_every == 300
