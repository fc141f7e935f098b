"""The loop's state at its last save, so that a resumed run continues where it stopped.

`<logdir>/run_state.pkl`, written atomically after the agent's checkpoint at every save: the
step counter, the schedules, the metrics not yet logged, every random state outside the agent
(the replays' samplers, the prefill's random actions, the environments) and the unfinished
training episodes with the environments' exact states. The agent's own random streams are in
its checkpoint. It is a pickle of plain values and NumPy arrays written by this code in the
run's own logdir.

A resume continues exactly when the state matches what is on disk: the replays hold the
episodes they held at the save, and the checkpoint (if any) is of the same step. After a kill
(no save at the stop) it does not, and the run continues from the checkpoint and the stored
episodes instead, with its frame counter at the furthest point any of its files reached, so
frames never go backwards (see `resume_step`).
"""

from __future__ import annotations

import json
import pathlib
import pickle

from dreamer_core import fileio

NAME = 'run_state.pkl'
VERSION = 1


def save(logdir: str | pathlib.Path, state: dict) -> None:
    path = pathlib.Path(logdir) / NAME
    data = {'version': VERSION, **state}
    fileio.atomic_write(
        path, lambda file: pickle.dump(data, file, protocol=5), kill_point='checkpoint'
    )


def load(logdir: str | pathlib.Path) -> dict | None:
    """The saved state, or None when there is none or it cannot be read (the run then
    resumes from its checkpoint and stored episodes, as after a kill)."""
    path = pathlib.Path(logdir) / NAME
    if not path.exists():
        return None
    try:
        with open(path, 'rb') as file:
            data = pickle.load(file)
    except Exception as error:  # any damage: resume without it
        print(f'warning: ignoring {path}: it cannot be read ({type(error).__name__}: {error}).')
        return None
    if not isinstance(data, dict) or data.get('version') != VERSION:
        print(f'warning: ignoring {path}: written by another version of this code.')
        return None
    return data


def matches(state: dict, episodes: dict, checkpoint_step, logged_step: int) -> bool:
    """Whether `state` is of the files on disk: the same episodes stored ({'train': count,
    'eval': count}), the checkpoint (its step, None when there is none) written by the same
    save, and no log line after it."""
    return (
        state['episodes'] == episodes
        and state['agent_step'] == checkpoint_step
        and logged_step <= state['step']
    )


def last_logged_step(logdir: str | pathlib.Path, action_repeat: int) -> int:
    """The furthest agent step in metrics.jsonl and eval_returns.jsonl (0 if none)."""
    furthest = 0
    for name in ('metrics.jsonl', 'eval_returns.jsonl'):
        path = pathlib.Path(logdir) / name
        if not path.exists():
            continue
        with open(path, 'rb') as file:
            file.seek(0, 2)
            file.seek(max(0, file.tell() - 65536))
            tail = file.read().decode('utf-8', 'replace').splitlines()
        for line in tail:
            try:
                furthest = max(furthest, int(json.loads(line)['step']))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash, or the window's first partial line
    return -(-furthest // action_repeat)
