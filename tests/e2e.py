"""Run a variant's real dreamerv2/train.py as a subprocess on a tiny configuration."""

import json
import os
import pathlib
import subprocess
import sys

from tests.tiny import TINY_MODEL, variant_model

REPO = pathlib.Path(__file__).resolve().parents[1]

# Tiny model and schedule: 20-step episodes (40 frames, action repeat 2), a few updates.
TINY = [
    *'--precision 32 --jit False --time_limit 40 --prefill 80 --steps 240 --eval_every 80'.split(),
    *'--eval_eps 2 --log_every 40 --pretrain 2 --train_every 10'.split(),
    *'--dataset.batch 3 --dataset.length 8'.split(),
    *TINY_MODEL,
]


def command(variant, logdir, *args, configs=('defaults', 'dmc')):
    """The train.py command line of a tiny run; later flags win, as each may be given once."""
    flags = {}
    extra = ['--dataset.length', '9'] if variant == 'DreamerPro' else []  # T > warm_up + 1
    pairs = [*TINY, *variant_model(variant), *extra, *args]
    for flag, value in zip(pairs[::2], pairs[1::2]):
        flags[flag] = value
    cmd = [sys.executable, 'dreamerv2/train.py', '--logdir', str(logdir), '--configs', *configs]
    return cmd + [x for pair in flags.items() for x in pair]


def run_variant(variant, logdir, *args, configs=('defaults', 'dmc'), env=None, timeout=600):
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    return subprocess.run(
        command(variant, logdir, *args, configs=configs),
        cwd=REPO / variant,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def metrics(logdir):
    path = pathlib.Path(logdir) / 'metrics.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines()]
