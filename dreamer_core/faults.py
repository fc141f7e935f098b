"""Deterministic faults for the kill-and-resume and full-disk tests (tests/test_faults.py).

`DREAMER_KILL_AT=<point>:<n>[:<SIGNAL>]` makes the process send itself SIGKILL (or the named
signal, e.g. SIGTERM) the n-th time it reaches the named point: `prefill` (an env step while
prefilling), `pretrain` (a pretraining update), `train` (after an update), `eval` (the start of
an evaluation), `checkpoint` (a checkpoint written to its temporary file, not yet renamed) or
`episode` (a replay episode written to its temporary file, not yet renamed).

`DREAMER_FAIL_AT=<write>:<n>` makes the n-th write of that kind fail with ENOSPC, as on a full
disk: `episode`, `checkpoint`, `config` (config.yaml), `metrics` (metrics.jsonl) or
`tensorboard`. Unset, every call is a cheap no-op.
"""

import collections
import errno
import os
import signal

POINTS = ('prefill', 'pretrain', 'train', 'eval', 'checkpoint', 'episode')
WRITES = ('episode', 'checkpoint', 'config', 'metrics', 'tensorboard')
_counts = collections.Counter()


def _due(variable, name, names):
    """The extra fields of the spec in `variable` when this is its n-th call at `name`."""
    spec = os.environ.get(variable)
    if not spec:
        return None
    point, count, *extra = spec.split(':')
    if point not in names:
        raise ValueError(f'{variable} names {point!r}; choose one of {names}.')
    if point != name:
        return None
    _counts[variable, name] += 1
    return extra if _counts[variable, name] == int(count or 1) else None


def kill_point(name):
    extra = _due('DREAMER_KILL_AT', name, POINTS)
    if extra is not None:
        os.kill(os.getpid(), getattr(signal, extra[0]) if extra else signal.SIGKILL)


def fail_point(name, path):
    """Raise ENOSPC for `path` when DREAMER_FAIL_AT asks for this write to fail."""
    if _due('DREAMER_FAIL_AT', name, WRITES) is not None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
