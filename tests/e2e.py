"""Run a variant's real dreamerv2/train.py as a subprocess on a tiny configuration."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

# Tiny model and schedule: 20-step episodes (40 frames, action repeat 2), a few updates.
TINY = [
    '--precision',
    '32',
    '--jit',
    'False',
    '--time_limit',
    '40',
    '--prefill',
    '80',
    '--steps',
    '240',
    '--eval_every',
    '80',
    '--eval_eps',
    '2',
    '--log_every',
    '40',
    '--pretrain',
    '2',
    '--train_every',
    '10',
    '--dataset.batch',
    '3',
    '--dataset.length',
    '8',
    '--imag_horizon',
    '3',
    '--rssm.hidden',
    '16',
    '--rssm.deter',
    '16',
    '--rssm.stoch',
    '4',
    '--encoder.depth',
    '2',
    '--reward_head.units',
    '16',
    '--reward_head.layers',
    '1',
    '--actor.units',
    '16',
    '--actor.layers',
    '1',
    '--critic.units',
    '16',
    '--critic.layers',
    '1',
]
EXTRA = {
    'Dreamer': ['--decoder.depth', '2'],
    'DreamerPro': ['--rssm.num_prototypes', '12', '--rssm.proto', '6', '--dataset.length', '9'],
    'TPC': [],
}


def run_variant(variant, logdir, *args, configs=('defaults', 'dmc'), env=None, timeout=600):
    flags = {}
    pairs = [*TINY, *EXTRA[variant], *args]
    for flag, value in zip(pairs[::2], pairs[1::2]):
        flags[flag] = value  # later flags win, as each may be given only once
    cmd = [sys.executable, 'dreamerv2/train.py', '--logdir', str(logdir), '--configs', *configs]
    cmd += [x for pair in flags.items() for x in pair]
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    return subprocess.run(
        cmd, cwd=REPO / variant, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def metrics(logdir):
    path = pathlib.Path(logdir) / 'metrics.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines()]
