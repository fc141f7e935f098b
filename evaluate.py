"""Evaluate a saved agent: the returns of N episodes with the actor's mode, and a video.

Usage:
  python evaluate.py --logdir DreamerPro/log/dmc_walker_run/dreamer_pro/1 \
      [--episodes 10] [--video walker.mp4] [--json walker.json] [--task dmc_walker_walk]

The variant and its settings come from the run's config.yaml, the agent from its checkpoint
(variables.npz); the run may be finished or still training. Nothing in the run's folder is
changed, added or deleted, and its replay folders are never opened. Episodes run on the run's
evaluation setting: its task (or --task), with the test videos for nat_ tasks.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from dreamer_core import config as config_lib
from dreamer_core import envs as envs_lib
from dreamer_core import fileio, registry
from dreamer_core.errors import UserError
from dreamer_core.train import CHECKPOINT

VIEW = (256, 256)  # the larger render beside the observation in the video
FPS = 20


class EvaluateError(UserError):
    """A run folder, checkpoint or output path that cannot be evaluated; the message says why."""


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--logdir', required=True, help='the run: <task>/<method>/<seed> folder')
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--video', type=pathlib.Path, help='mp4 of the first episode')
    parser.add_argument('--json', type=pathlib.Path, help='returns as JSON')
    parser.add_argument('--task', help="another task with the same actions (default: the run's)")
    parser.add_argument('--seed', type=int, help="env and policy seed (default: the run's)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    try:
        result = evaluate(args)
    except (UserError, config_lib.ConfigError, envs_lib.TaskError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.json:
        text = json.dumps(result, indent=1) + '\n'
        fileio.atomic_write(args.json, lambda file: file.write(text), mode='w')
        print(f'Wrote {args.json}')
    return 0


def evaluate(args):
    logdir = check_run(args.logdir)
    check_outputs(logdir, args)
    name, config = read_run_config(logdir)
    variant = registry.get(name)
    config = config.replace(
        task=args.task or config.task, seed=config.seed if args.seed is None else args.seed
    )
    envs_lib.validate_task(config.task)
    from dreamer_core.train import setup_tensorflow

    setup_tensorflow(config)
    env = make_env(config, variant)
    try:
        agent = build_agent(config, variant, env, logdir / CHECKPOINT, args.task)
        frames = int(agent.step.numpy()) * config.action_repeat
        print(f'{variant.label} on {config.task}, checkpoint at frame {frames:,}.')
        returns, lengths, video = run_episodes(env, agent, args.episodes, bool(args.video))
    finally:
        env.close()
    mean, std = float(np.mean(returns)), float(np.std(returns))
    print(f'Mean return {mean:.1f} ± {std:.1f} over {len(returns)} episodes.')
    if args.video:
        write_video(args.video, video)
        print(f'Wrote {args.video} ({len(video)} frames).')
    return {
        'logdir': str(logdir),
        'variant': variant.name,
        'task': config.task,
        'checkpoint_frames': frames,
        'episodes': len(returns),
        'mean': mean,
        'std': std,
        'returns': returns,
        'lengths': [n * config.action_repeat for n in lengths],  # in frames
    }


def check_run(logdir):
    logdir = pathlib.Path(logdir).expanduser().resolve()
    if not (logdir / 'config.yaml').is_file():
        raise EvaluateError(
            f'{logdir} is not a run folder (no config.yaml): give the --logdir of a train.py run.'
        )
    if not (logdir / CHECKPOINT).is_file():
        raise EvaluateError(
            f'{logdir} has no checkpoint ({CHECKPOINT}) yet: a run writes it after its first '
            'training chunk; evaluate it later.'
        )
    return logdir


def check_outputs(logdir, args):
    """Outputs go outside the run: evaluating never changes a run's folder."""
    if args.episodes < 1:
        raise EvaluateError(f'--episodes is {args.episodes}: give 1 or more.')
    for flag, path in (('--video', args.video), ('--json', args.json)):
        if path is None:
            continue
        path = path.expanduser().resolve()
        if path.is_relative_to(logdir):
            raise EvaluateError(f'{flag} {path} is inside the run folder; write it elsewhere.')
        if flag == '--video' and path.suffix != '.mp4':
            raise EvaluateError(f'--video {path}: give a file name ending in .mp4.')
        if not path.parent.is_dir():
            raise EvaluateError(f'{flag} {path}: folder {path.parent} does not exist.')


def read_run_config(logdir):
    """(variant name, Config) recorded in <logdir>/config.yaml (frame counts in frames)."""
    try:
        name, config = config_lib.load_saved(logdir)
    except config_lib.ConfigError as e:
        raise EvaluateError(str(e).splitlines()[0]) from None
    check_keys(logdir / 'config.yaml', config.to_dict(), registry.get(name))
    return name, config


def check_keys(path, data, variant):
    """The saved keys are those of this code's config for the variant, or it is another version."""
    current = set(config_lib.leaf_keys(config_lib.load([], variant.dir).to_dict()))
    saved = set(config_lib.leaf_keys(data))
    if saved != current:
        missing, unknown = sorted(current - saved), sorted(saved - current)
        raise EvaluateError(
            f'{path} was written by another version of this code (missing keys: '
            f'{", ".join(missing[:3]) or "none"}; unknown keys: {", ".join(unknown[:3]) or "none"}). '
            'Evaluate it with that version.'
        )


def make_env(config, variant):
    from dreamer_core.backgrounds import BackgroundError

    try:
        return envs_lib.make_env(config, 'eval', variant.root, seed=config.seed)
    except BackgroundError as e:
        raise EvaluateError(str(e).splitlines()[0]) from None


def build_agent(config, variant, env, checkpoint, task=None):
    """The agent of the run, built as the training loop builds it, with the checkpoint loaded."""
    from dreamer_core.agent import Agent, CheckpointError

    space = env.act_space
    try:
        agent = Agent(
            config,
            env.obs_shape,
            space.shape[0],
            space.discrete,
            variant.load_loss(),
            variant.name,
        )
        agent.check_checkpoint(checkpoint)  # before the work below: a wrong run fails fast
        # Every variable the checkpoint holds, optimizer state included, without an update;
        # a synthetic batch does it without opening the run's replay. Loading overwrites it all.
        agent.create_variables(synthetic_batch(config, env))
        agent.load(checkpoint)
    except CheckpointError as e:
        if task:  # the likely cause: another number of actions or another image
            raise EvaluateError(
                f'--task {task} does not fit the agent of this run (other actions or images?): {e}'
            ) from None
        raise EvaluateError(str(e)) from None
    return agent


def synthetic_batch(config, env, batch=2):
    """Zeros shaped like a replay batch of the run: [batch, dataset.length, ...]."""
    length = config.dataset.length
    reset = np.zeros((batch, length), bool)
    reset[:, 0] = True
    return {
        'image': np.zeros((batch, length, *env.obs_shape), np.uint8),
        'action': np.zeros((batch, length, env.act_space.shape[0]), np.float32),
        'reward': np.zeros((batch, length), np.float32),
        'discount': np.ones((batch, length), np.float32),
        'reset': reset,
        'done': np.zeros((batch, length), bool),
    }


def run_episodes(env, agent, episodes, video):
    """Per-episode returns and lengths (agent steps), and the frames of the first episode."""
    returns, lengths, frames = [], [], []
    for index in range(episodes):
        score, length = run_episode(env, agent, frames if video and index == 0 else None)
        returns.append(score)
        lengths.append(length)
        print(f'Episode {index + 1}: return {score:.1f} ({length} steps).')
    return returns, lengths, frames


def run_episode(env, agent, frames=None):
    """One episode with the actor's mode; appends a video frame per observation to `frames`."""
    obs, state, rewards = env.reset(), None, []
    while True:
        if frames is not None:
            frames.append(video_frame(env, obs['image']))
        if rewards and obs['done']:
            return float(np.sum(rewards, dtype=np.float64)), len(rewards)
        batch = {'image': obs['image'][None], 'reset': np.array([obs['reset']])}
        outputs, state = agent.policy(batch, state, mode='eval')
        obs = env.step(np.asarray(outputs['action'][0], np.float32))
        rewards.append(obs['reward'])


def video_frame(env, image):
    """The observation, scaled up without smoothing, beside a larger render of the scene."""
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, -1)
    scale = VIEW[0] // image.shape[0]
    big = np.repeat(np.repeat(image, scale, 0), scale, 1)
    view = env.render_view(VIEW) if hasattr(env, 'render_view') else big  # Atari: no 3D scene
    return np.concatenate([big, view], 1)


def write_video(path, frames):
    """An H.264 mp4, written beside `path` and renamed into place."""
    import imageio.v2 as imageio

    path = pathlib.Path(path)
    tmp = path.with_name(f'.{path.stem}.tmp.mp4')
    try:
        with imageio.get_writer(tmp, fps=FPS, codec='libx264', macro_block_size=16) as writer:
            for frame in frames:
                writer.append_data(frame)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == '__main__':
    sys.exit(main())
