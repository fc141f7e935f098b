"""Configuration: YAML blocks plus command-line flags -> an immutable Config.

Every variant reads two files: the shared `dreamer_core/configs.yaml` and its own
`<variant>/dreamerv2/configs.yaml`, whose blocks are merged on top (see `load_blocks`).
`load(argv, variant_dir)` then starts from the `defaults` block, applies the blocks named by
`--configs` in order, and applies every other `--key value` flag. Frame counts stay in
environment frames as the user gave them (and so does config.yaml); `agent_steps(config)` is the
one place that turns them into agent steps (frames // action_repeat). The names of the applied
blocks are kept under `configs`.

Types come from the `defaults` block: every value a block or flag sets is converted to the type
of the default it replaces, so `steps: 2e8` is the int 200000000 and `--jit false` is a bool.
An int option may also be switched off with `False` (DreamerV2's convention, e.g.
`rssm.discrete: False` for Gaussian latents).
"""

from __future__ import annotations

import collections.abc
import copy
import difflib
import io
import math
import pathlib
import re
import sys

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from dreamer_core import fileio
from dreamer_core.errors import UserError

CORE_FILE = pathlib.Path(__file__).resolve().parent / 'configs.yaml'
# A block key holding any of these is a regular expression over dotted leaf paths.
REGEX_CHARS = frozenset('*^$[]()+?\\|')
# Given by the user in environment frames; the training loop counts agent steps.
FRAME_KEYS = ('steps', 'eval_every', 'log_every', 'time_limit', 'prefill', 'expl_until')
TRUE_WORDS = ('True', 'true', '1')
FALSE_WORDS = ('False', 'false', '0')
# config.yaml's section of what a run ran with (provenance.py); beside the config, not in it.
RUN_KEY = 'run'


class ConfigError(UserError, ValueError):
    """A config file, block name, key, flag or value is wrong; the message says which."""


class Config(collections.abc.Mapping):
    """Immutable nested mapping with attribute access.

    Nested dicts come back as Config (so `RSSM(**config.rssm)` works) and lists as tuples.
    Keys that shadow Mapping methods (e.g. `encoder.keys`) need item access:
    `config.encoder['keys']`.
    """

    __slots__ = ('_data',)

    def __init__(self, data=None, **kwargs):
        data = dict(data or {}, **kwargs)
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(f'Config keys must be strings, got {key!r}.')
        object.__setattr__(self, '_data', {k: _freeze(v) for k, v in data.items()})

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __getattr__(self, name):
        # Private names must fail fast, or copy/pickle recurse before _data exists.
        if name.startswith('_'):
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(
                f"Config has no key '{name}'.{_suggest(name, self._data)}"
            ) from None

    def __setattr__(self, name, value):
        raise AttributeError(f"Config is immutable (tried to set '{name}'); use replace().")

    def __delattr__(self, name):
        raise AttributeError(f"Config is immutable (tried to delete '{name}').")

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._data))

    def __reduce__(self):
        return (type(self), (self.to_dict(),))

    def __repr__(self):
        return f'Config({self.to_dict()!r})'

    def __str__(self):
        return _dump_yaml(self.to_dict())

    def to_dict(self) -> dict:
        """Plain nested dicts and lists, ready for YAML."""
        return {key: _thaw(value) for key, value in self._data.items()}

    def save(self, path: str | pathlib.Path) -> None:
        """Write the config as YAML, atomically (a crash never leaves a half-written file)."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _dump_yaml(self.to_dict())
        fileio.atomic_write(path, lambda file: file.write(text), mode='w', kill_point='config')

    def replace(self, **updates) -> 'Config':
        """A new Config with the given top-level keys replaced."""
        unknown = [key for key in updates if key not in self._data]
        if unknown:
            raise ConfigError(
                f"replace() got unknown key '{unknown[0]}'.{_suggest(unknown[0], self._data)}"
            )
        return Config({**self._data, **updates})


def load(argv: list[str] | None, variant_dir: str | pathlib.Path) -> Config:
    """Parse `argv` (flags only, no program name) against a variant's blocks into a Config."""
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = _parse_argv(argv)
    blocks = load_blocks(variant_dir)
    names = _block_names(flags.pop('configs', ['defaults']), blocks)
    spec = blocks['defaults']
    config = copy.deepcopy(spec)
    for name in names[1:]:
        _apply_block(config, spec, blocks[name], name)
    for key, tokens in flags.items():
        _apply_flag(config, spec, key, tokens)
    _check_action_repeat(config)
    return Config({'configs': names, **config})


def agent_steps(config: Config) -> Config:
    """The frame counts of `config` (FRAME_KEYS) in agent steps: frames // action_repeat."""
    return Config({key: config[key] // config.action_repeat for key in FRAME_KEYS})


def save_run(
    config: Config, path: str | pathlib.Path, variant: str, run: dict | None = None
) -> None:
    """Write a run's `config.yaml`: its variant's registry name, the resolved config, then under
    `run:` what the run ran with (`provenance.collect`), when given."""
    data = {'variant': variant, **config}
    if run is not None:
        data[RUN_KEY] = run
    Config(data).save(path)


def load_saved(path: str | pathlib.Path) -> tuple[str, Config]:
    """(variant name, Config) from a run's config.yaml (a file or the logdir holding it)."""
    path, data = _read_saved(path)
    if 'variant' not in data:
        raise ConfigError(
            f'{path} names no variant: it was written by an older version of this code. '
            'Add a line `variant: dreamer` (or dreamerpro, tpc) at its top.'
        )
    variant = data.pop('variant')
    data.pop(RUN_KEY, None)  # Not a config key: read it with load_run_info.
    return variant, Config(data)


def load_run_info(path: str | pathlib.Path) -> dict:
    """The `run:` section of a run's config.yaml (a file or the logdir holding it): precision
    policy, XLA, device, code and library versions (see provenance.py); {} in a config.yaml
    written before runs recorded it."""
    run = _read_saved(path)[1].get(RUN_KEY)
    return run if isinstance(run, dict) else {}


def _read_saved(path):
    """(the file's path, its top-level mapping; {} if it holds none)."""
    path = pathlib.Path(path)
    path = path / 'config.yaml' if path.is_dir() else path
    try:
        data = YAML(typ='safe', pure=True).load(path.read_text())
    except (OSError, UnicodeDecodeError, YAMLError) as error:
        raise ConfigError(f'Cannot read {path}: {error}') from None
    return path, data if isinstance(data, dict) else {}


def load_blocks(variant_dir: str | pathlib.Path) -> dict:
    """The core blocks with the variant's blocks merged on top, as plain dicts."""
    core = _read_blocks(CORE_FILE)
    if 'defaults' not in core:
        raise ConfigError(f"{CORE_FILE} has no 'defaults' block.")
    variant_file = pathlib.Path(variant_dir) / 'configs.yaml'
    variant = _read_blocks(variant_file)
    blocks = copy.deepcopy(core)
    for name, block in variant.items():
        if name == 'defaults':
            _merge_defaults(blocks['defaults'], block, (), f"'defaults' of {variant_file}")
        elif name in blocks:
            blocks[name] = _merge_block(blocks[name], block)
        else:
            blocks[name] = copy.deepcopy(block)
    _check_plain_keys(blocks['defaults'], ())
    return blocks


def _read_blocks(path):
    """A YAML file that maps block names to blocks (mappings)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f'Cannot read config file {path}: {error}') from None
    try:
        data = YAML(typ='safe', pure=True).load(text)
    except YAMLError as error:
        raise ConfigError(f'Config file {path} is not valid YAML:\n{error}') from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f'Config file {path} must map block names to blocks.')
    for name, block in list(data.items()):
        if not isinstance(name, str) or not isinstance(block, (dict, type(None))):
            raise ConfigError(f"Block '{name}' in {path} must be a mapping of keys to values.")
        data[name] = block or {}
    return data


def _merge_defaults(base, delta, path, where):
    """Deep-merge a variant's defaults into the core's; new keys are allowed here only."""
    for key, value in delta.items():
        dotted = _join(path + (key,))
        if key not in base:
            base[key] = copy.deepcopy(value)
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{where}: '{dotted}' is a dict in the core defaults; "
                    f'give a mapping, not {value!r}.'
                )
            _merge_defaults(base[key], value, path + (key,), where)
        else:
            base[key] = _coerce(value, base[key], dotted, where)


def _merge_block(base, delta):
    """A variant block merged into the core block of the same name; variant entries win."""
    merged = dict(base)
    for key, value in delta.items():
        old = merged.pop(key, None)
        # Re-inserting at the end makes the variant's entry apply after every core entry.
        if isinstance(old, dict) and isinstance(value, dict):
            value = _deep_update(copy.deepcopy(old), value)
        merged[key] = copy.deepcopy(value)
    return merged


def _deep_update(base, delta):
    for key, value in delta.items():
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def _check_plain_keys(tree, path):
    """Defaults declare the keys, so they must be plain names (nest dicts instead of dots)."""
    for key, value in tree.items():
        if not isinstance(key, str) or '.' in key or REGEX_CHARS & set(key):
            raise ConfigError(
                f"Key {key!r} under 'defaults.{_join(path)}' must be a plain name: the defaults "
                'block declares keys, so nest dicts instead of using dotted or regex keys.'
            )
        if isinstance(value, dict):
            _check_plain_keys(value, path + (key,))


def _parse_argv(argv):
    """`--key v1 v2 --other v` -> {'key': ['v1', 'v2'], 'other': ['v']}, in order."""
    flags = {}
    key = None
    for token in argv:
        if token.startswith('--'):
            key, has_value, value = token[2:].partition('=')
            if not key:
                raise ConfigError(f"Malformed flag '{token}': expected '--key value'.")
            if key in flags:
                raise ConfigError(f"Flag '--{key}' is given twice; give it once.")
            flags[key] = [value] if has_value else []
        elif key is None:
            raise ConfigError(f"Value '{token}' has no flag before it; expected '--key {token}'.")
        else:
            flags[key].append(token)
    for key, tokens in flags.items():
        if not tokens:
            raise ConfigError(f"Flag '--{key}' has no value; expected '--{key} VALUE'.")
    return flags


def _block_names(names, blocks):
    """Validated block order; `defaults` is the base and always comes first."""
    available = ', '.join(blocks)
    for name in names:
        if name not in blocks:
            raise ConfigError(
                f"Unknown config block '{name}'.{_suggest(name, blocks)} "
                f'Available blocks: {available}.'
            )
    if 'defaults' not in names:
        return ['defaults'] + names
    if names[0] != 'defaults' or names.count('defaults') > 1:
        raise ConfigError(
            f"--configs {' '.join(names)}: 'defaults' must come first (and only once); later "
            "it would undo the blocks before it. Put it first: --configs defaults ..."
        )
    return names


def _apply_block(config, spec, block, name):
    where = f"block '{name}'"
    for key, value in block.items():
        if not isinstance(key, str):
            raise ConfigError(f'{where}: key {key!r} must be a string.')
        if REGEX_CHARS & set(key):
            _apply_regex(config, spec, key, value, where)
        else:
            _set(config, spec, tuple(key.split('.')), value, where)


def _apply_regex(config, spec, pattern, value, where):
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"{where}: key '{pattern}' is not a valid regex: {error}") from None
    matches = [path for path in _leaf_paths(spec) if regex.fullmatch(_join(path))]
    if not matches:
        raise ConfigError(f"{where}: regex key '{pattern}' matches no config key.")
    for path in matches:
        _set(config, spec, path, value, where)


def _set(config, spec, path, value, where):
    """Set one key (a tuple path); a dict value updates only the fields it names."""
    parent, parent_spec = _walk(config, spec, path, where)
    default = parent_spec[path[-1]]
    if not isinstance(default, dict):
        parent[path[-1]] = _coerce(value, default, _join(path), where)
        return
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: '{_join(path)}' is a dict; give a mapping of its fields "
            f"or set one field as '{_join(path)}.FIELD', not {value!r}."
        )
    for key, inner in value.items():
        _set(config, spec, path + (str(key),), inner, where)


def _walk(config, spec, path, where):
    """The parent dicts of `path` in config and spec; an unknown key is an error."""
    root = spec
    for depth, key in enumerate(path):
        if not isinstance(spec, dict) or key not in spec:
            dotted = _join(path)
            raise ConfigError(
                f"{where}: unknown config key '{dotted}'.{_suggest(dotted, _all_paths(root))}"
            )
        if depth < len(path) - 1:
            config, spec = config[key], spec[key]
    return config, spec


def _apply_flag(config, spec, key, tokens):
    where = f"flag '--{key}'"
    path = tuple(key.split('.'))
    parent, parent_spec = _walk(config, spec, path, where)
    default = parent_spec[path[-1]]
    if isinstance(default, dict):
        field = next(iter(default), 'FIELD')
        raise ConfigError(
            f"{where}: '{key}' is a dict; set one field with a dotted flag, "
            f"e.g. '--{key}.{field} VALUE'."
        )
    if isinstance(default, list):
        value = [piece.strip() for token in tokens for piece in token.split(',') if piece.strip()]
    elif len(tokens) == 1:
        value = tokens[0]
    else:
        raise ConfigError(f"{where} takes one value, got {len(tokens)}: {' '.join(tokens)}.")
    parent[path[-1]] = _coerce(value, default, key, where)


def _coerce(value, default, key, where):
    """`value` (a YAML value or a flag string) converted to the type of `default`."""
    if key.split('.')[-1] == 'precision' and value in ('bf16', 'bfloat16'):
        return 'bf16'  # The one string an int key takes: 16, 32 or bf16.
    if key.split('.')[-1] == 'xla':
        return 'auto' if value == 'auto' else _to_bool(value, key, where)  # auto, True, False
    if isinstance(default, bool):
        return _to_bool(value, key, where)
    if isinstance(default, int):
        return _to_int(value, key, where)
    if isinstance(default, float):
        return _to_float(value, key, where)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise _type_error(value, 'a string', key, where)
        return value
    if isinstance(default, (list, tuple)):
        return _to_list(value, default, key, where)
    if default is None:
        return copy.deepcopy(value)
    raise ConfigError(f"{where}: default of '{key}' has unsupported type {type(default).__name__}.")


def _to_bool(value, key, where):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value in TRUE_WORDS + FALSE_WORDS:
        return value in TRUE_WORDS
    raise _type_error(value, 'a bool (True/False/true/false/1/0)', key, where)


def _to_int(value, key, where):
    if value is False or value in ('False', 'false'):
        return False  # Switches the option off, e.g. rssm.discrete: False.
    if isinstance(value, bool):
        raise _type_error(value, 'an int (or False to switch it off)', key, where)
    if isinstance(value, str):
        value = _parse_number(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise _type_error(value, 'an int (1000, 1e6; not a fraction)', key, where)


def _parse_number(text):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text  # The caller reports it as the wrong type.


def _to_float(value, key, where):
    if isinstance(value, str):
        value = _parse_number(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _type_error(value, 'a float (0.5, 1e-4)', key, where)


def _to_list(value, default, key, where):
    if isinstance(value, str):
        value = [piece.strip() for piece in value.split(',') if piece.strip()]
    if not isinstance(value, (list, tuple)):
        raise _type_error(value, 'a list', key, where)
    # Elements take the type of the default's first element; str when it is empty.
    proto = default[0] if default else ''
    return [_coerce(item, proto, f'{key}[{i}]', where) for i, item in enumerate(value)]


def _check_action_repeat(config):
    repeat = config['action_repeat']
    if isinstance(repeat, bool) or repeat < 1:
        raise ConfigError(f'action_repeat must be an int >= 1, got {repeat!r}.')


def _type_error(value, expected, key, where):
    return ConfigError(f"{where}: '{key}' needs {expected}, got {value!r}.")


def _suggest(name, candidates):
    matches = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" Did you mean: {', '.join(matches)}?" if matches else ''


def _join(path):
    return '.'.join(path)


def leaf_keys(tree: dict) -> list[str]:
    """The dotted keys of a nested dict's leaves ('dataset.batch', ...)."""
    return [_join(path) for path in _leaf_paths(tree)]


def _leaf_paths(tree, path=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaf_paths(value, path + (key,))
        else:
            yield path + (key,)


def _all_paths(tree, path=()):
    for key, value in tree.items():
        yield _join(path + (key,))
        if isinstance(value, dict):
            yield from _all_paths(value, path + (key,))


def _freeze(value):
    if isinstance(value, Config):
        return value
    if isinstance(value, collections.abc.Mapping):
        return Config(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value):
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _dump_yaml(data):
    yaml = YAML(typ='safe', pure=True)
    yaml.default_flow_style = None  # Leaf lists and dicts on one line, the rest as blocks.
    yaml.width = 4096  # Never wrap a leaf dict over several lines.
    yaml.sort_base_mapping_type_on_output = False  # Keep the order of the files.
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()
