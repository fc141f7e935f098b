"""Deterministic crash points for the kill-and-resume tests.

`DREAMER_KILL_AT=<point>:<n>` makes the process SIGKILL itself the n-th time it reaches the named
point: `prefill` (an env step while prefilling), `train` (after an update), `checkpoint` (a
checkpoint written to its temporary file, not yet renamed) or `episode` (a replay episode
written to its temporary file, not yet renamed). Unset, every call is a cheap no-op.
"""

import collections
import os
import signal

POINTS = ('prefill', 'train', 'checkpoint', 'episode')
_counts = collections.Counter()


def kill_point(name):
    spec = os.environ.get('DREAMER_KILL_AT')
    if not spec:
        return
    point, _, count = spec.partition(':')
    if point not in POINTS:
        raise ValueError(f'DREAMER_KILL_AT names {point!r}; kill points are {POINTS}.')
    if point != name:
        return
    _counts[name] += 1
    if _counts[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
