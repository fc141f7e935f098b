"""The one table of variants: every script that needs to know the agents reads it.

A variant is a folder with `dreamerv2/train.py`, `dreamerv2/configs.yaml` (its config deltas)
and the module of its representation loss (a `dreamer_core.variant.RepresentationLoss`).
Adding one is one new folder and one line in `VARIANTS` below; tests may also `register()` an
entry at run time.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import pathlib
import sys

from dreamer_core.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


class UnknownVariant(UserError):
    """A variant name that is not in the registry."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """What the scripts need to know about one agent.

    name:       the name scripts take (`--variant dreamerpro`).
    folder:     the variant's folder, relative to the repository root or absolute.
    loss:       its representation loss, 'module:Class' in `<folder>/dreamerv2/module.py`.
    method:     the method folder of its runs (`log/<task>/<method>/<seed>`).
    label:      the name in tables and figures.
    published:  method names of its curves in the original repository's plots.
    standard:   the blocks of its published standard-DMC runs.
    natural:    the blocks and flags of its published natural-background runs.
    rules:      (key or pattern, rule) pairs: the ranges of its own numeric config keys that
                dreamer_core/checks.py does not declare (e.g. `checks.Number(int, 1)`).
    """

    name: str
    folder: str
    loss: str
    method: str
    label: str
    published: tuple[str, ...] = ()
    standard: tuple[str, ...] = ('defaults', 'dmc')
    natural: tuple[str, ...] = ('defaults', 'dmc', 'reward_1000')
    rules: tuple = ()

    @property
    def root(self) -> pathlib.Path:
        """The variant folder, where its train.py is started."""
        return REPO / self.folder

    @property
    def dir(self) -> pathlib.Path:
        """The folder of train.py, configs.yaml and the loss module."""
        return self.root / 'dreamerv2'

    @property
    def entry(self) -> pathlib.Path:
        return self.dir / 'train.py'

    def load_module(self):
        """The module of its representation loss (imports TensorFlow), loaded once."""
        module_name = self.loss.partition(':')[0]
        key = f'dreamer_variant_{self.name}_{module_name}'
        module = sys.modules.get(key)
        if module is None:
            spec = importlib.util.spec_from_file_location(key, self.dir / f'{module_name}.py')
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
        return module

    def load_loss(self) -> type:
        """Its representation loss class, a `dreamer_core.variant.RepresentationLoss`."""
        return getattr(self.load_module(), self.loss.partition(':')[2])

    def blocks(self, setting: str) -> tuple[str, ...]:
        """The `--configs` blocks and flags of the paper's `standard` or `natural` runs."""
        if setting not in ('standard', 'natural'):
            raise ValueError(f'setting is {setting!r}: use standard or natural.')
        return getattr(self, setting)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            'dreamer',
            'Dreamer',
            'recon_loss:ReconLoss',
            'dreamer',
            'DreamerV2',
            ('dreamerv2', 'dreamerv2_32'),
            natural=('defaults', 'dmc', 'reward_1000', '--precision', '32'),
        ),
        Variant(
            'dreamerpro',
            'DreamerPro',
            'proto_loss:ProtoLoss',
            'dreamer_pro',
            'DreamerPro',
            ('dreamer_pro_v2_freeze_10k', 'dreamer_pro_v2_freeze_10k_norm_off'),
            standard=('defaults', 'dmc', 'norm_off'),
        ),
        Variant('tpc', 'TPC', 'tpc_loss:TPCLoss', 'tpc', 'TPC', ('tpc_batch_150',)),
    )
}


def get(name: str | Variant) -> Variant:
    """The variant called `name` (its name, folder or method name, any case); an entry as is."""
    if isinstance(name, Variant):
        return name
    key = name.lower()
    for variant in VARIANTS.values():
        if key in (variant.name, variant.folder.lower(), variant.method):
            return variant
    close = difflib.get_close_matches(key, list(VARIANTS), n=2)
    hint = f' Did you mean {" or ".join(close)}?' if close else ''
    raise UnknownVariant(f'Unknown variant {name!r}: use one of {", ".join(VARIANTS)}.{hint}')


def by_method(method: str) -> Variant | None:
    """The variant whose runs or published curves are filed under `method`, if any."""
    for variant in VARIANTS.values():
        if method == variant.method or method in variant.published:
            return variant
    return None


def register(variant: Variant) -> Variant:
    """Add an entry at run time (a variant outside the repository, or a test's)."""
    VARIANTS[variant.name] = variant
    return variant
