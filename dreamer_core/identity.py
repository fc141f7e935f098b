"""A logdir keeps its identity: the values that define a run must not change on resume.

`<logdir>/config.yaml` records the variant, the block names and the resolved config. Started
again on the same logdir, a run whose defining values (IDENTITY_KEYS) differ from the recorded
ones would mix two runs in one replay and one curve, so it stops before anything is written,
unless `--allow_changed_config True` says the change is deliberate. Every other key (steps,
eval_every, log_every, learning rates, ...) may change on resume.
"""

import pathlib

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from dreamer_core.config import ConfigError

CONFIG_NAME = 'config.yaml'
# What defines a run: the agent, the task and its observations, the model sizes, the requested
# precision and the seed. `variant` is not a config key; it is recorded beside the config.
IDENTITY_KEYS = (
    'variant',
    'task',
    'image_size',
    'grayscale',
    'action_repeat',
    'rssm',
    'encoder',
    'decoder',
    'reward_head',
    'discount_head',
    'actor',
    'critic',
    'precision',
    'seed',
)
ALLOW_FLAG = 'allow_changed_config'


def check(config, variant, logdir):
    """Raise ConfigError when `logdir` was started with other defining values.

    Returns the differences (key -> (recorded, now)) that --allow_changed_config let through.
    """
    path = pathlib.Path(logdir).expanduser() / CONFIG_NAME
    if not path.is_file():
        return {}
    data = _read(path, config)
    if not data:  # unreadable, and --allow_changed_config lets this run replace it
        return {}
    recorded = _flat({k: v for k, v in data.items() if k in IDENTITY_KEYS})
    now = _flat(
        {k: v for k, v in {'variant': variant, **config.to_dict()}.items() if k in IDENTITY_KEYS}
    )
    # config.yaml of older versions did not record the variant (the checkpoint still does).
    keys = [k for k in {**recorded, **now} if k != 'variant' or 'variant' in recorded]
    changed = {
        k: (recorded.get(k, ABSENT), now.get(k, ABSENT))
        for k in keys
        if recorded.get(k, ABSENT) != now.get(k, ABSENT)
    }
    if changed and not config[ALLOW_FLAG]:
        diffs = '; '.join(
            f'{k}: {_show(old)} then, {_show(new)} now' for k, (old, new) in changed.items()
        )
        raise ConfigError(
            f'{path.parent} was started with other settings ({diffs}). Resume with the '
            'recorded values, choose a new --logdir, or add --allow_changed_config True to '
            'continue this logdir with the new ones.'
        )
    return changed


ABSENT = object()


def _show(value):
    return 'absent' if value is ABSENT else repr(value)


def _flat(tree, prefix=''):
    """Nested dicts as {'rssm.deter': 200, ...}, so a message names only the fields that differ."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def _read(path, config):
    try:
        data = YAML(typ='safe', pure=True).load(path.read_text())
    except (OSError, UnicodeDecodeError, YAMLError) as error:
        data = error
    if isinstance(data, dict):
        return data
    if config[ALLOW_FLAG]:
        return {}
    reason = data if isinstance(data, Exception) else 'not a mapping of keys to values'
    raise ConfigError(
        f'{path} records which run this logdir holds but cannot be read '
        f'({" ".join(str(reason).split())}). Restore it, choose a new --logdir, or add '
        "--allow_changed_config True to replace it with this run's config."
    )
