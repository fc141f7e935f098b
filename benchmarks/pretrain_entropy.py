"""The actor's entropy over the pretraining updates: the original's agent against ours, same data.

Usage (from the project's root, with the project's venv; PORT_DIR made by
../shared/original/make_port.sh):
  python benchmarks/pretrain_entropy.py --port PORT_DIR [--variant dreamer]
      [--task dmc_cartpole_swingup] [--seeds 1 2] [--json PATH]

After prefill the training loop makes 1 + `pretrain` updates (101 under `dmc`) before the agent
first acts. This replays those updates at the `small` config: per seed it collects the prefill's
random-policy episodes once, with the project's environment, then runs the updates on one fixed
sequence of batches from them, once with the original's agent and once with the project's, each
in its own process, one after the other. The original gets the values of the `small` block as
flags. It prints the actor's entropy and the reward loss every 10 updates for both, and writes
JSON. Both agents start from their own random weights, so the curves agree in shape, not in value.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamer_core import build, hardware, registry  # noqa: E402
from dreamer_core import config as config_lib  # noqa: E402
from dreamer_core.fileio import atomic_write  # noqa: E402

KEYS = ('image', 'action', 'reward', 'discount')
METRICS = ('actor_ent', 'reward_loss', 'critic_loss')


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=pathlib.Path, help="the original's port (make_port.sh)")
    parser.add_argument('--variant', default='dreamer', choices=list(registry.VARIANTS))
    parser.add_argument('--task', default='dmc_cartpole_swingup')
    parser.add_argument('--seeds', type=int, nargs='+', default=[1])
    parser.add_argument('--json', type=pathlib.Path)
    parser.add_argument('--threads', type=int, default=0)
    # Internal: one side in a child process.
    parser.add_argument('--child', choices=['original', 'project'], help=argparse.SUPPRESS)
    parser.add_argument('--episodes', type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument('--seed', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--out', type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.child and (args.port is None or not (args.port / 'Dreamer').is_dir()):
        parser.error('--port must be a folder made by ../shared/original/make_port.sh')
    return args


def our_config(variant, task, seed):
    blocks = [*variant.standard, 'small']
    argv = ['--configs', *blocks, '--task', task, '--seed', str(seed), '--precision', '32']
    return build.load_config(variant, argv)


def small_overrides(variant, config):
    """The `small` block's values (shared block and the variant's), as dotted flags."""
    block = config_lib.load_blocks(variant.dir)['small']
    values = {}
    for key in config_lib.leaf_keys(block):
        value = config
        for part in key.split('.'):
            value = value[part]
        values[key] = value.to_dict() if hasattr(value, 'to_dict') else value
    return values


def collect(variant, config, path):
    """Whole random-policy episodes covering the prefill, saved as one npz."""
    from dreamer_core.agent_random import RandomAgent
    from dreamer_core.envs import make_env

    env = make_env(config, 'train', variant.dir.parent)
    agent = RandomAgent(env.act_space, config.seed)
    need = config_lib.agent_steps(config).prefill
    episodes, steps = [], 0
    while steps < need:
        obs = env.reset()
        episode = {k: [] for k in KEYS}
        action = np.zeros(env.act_space.shape, np.float32)
        while True:
            episode['image'].append(obs['image'])
            episode['action'].append(action)
            episode['reward'].append(obs['reward'])
            episode['discount'].append(obs['discount'])
            if obs['done']:
                break
            action = agent({'reset': [False]})[0]['action'][0]
            obs = env.step(action)
        steps += len(episode['reward']) - 1
        episodes.append({k: np.asarray(v) for k, v in episode.items()})
    env.close()
    arrays = {f'{i}/{k}': v for i, ep in enumerate(episodes) for k, v in ep.items()}
    np.savez(path, **arrays)
    return len(episodes), steps


def batches(path, batch, length, seed):
    """The same batches for both sides: uniform episode, uniform start (as both replays)."""
    data = np.load(path)
    count = len({name.split('/')[0] for name in data.files})
    episodes = [{k: data[f'{i}/{k}'] for k in KEYS} for i in range(count)]
    rng = np.random.default_rng(seed)
    while True:
        chosen = {k: [] for k in KEYS}
        for _ in range(batch):
            episode = episodes[rng.integers(count)]
            start = rng.integers(0, len(episode['reward']) - length + 1)
            for k in KEYS:
                chosen[k].append(episode[k][start : start + length])
        yield {k: np.stack(v) for k, v in chosen.items()}


def child(args):
    variant = registry.get(args.variant)
    config = our_config(variant, args.task, args.seed)
    os.environ['TF_USE_LEGACY_KERAS'] = '1'
    if args.child == 'original':
        folder = args.port / variant.dir.parent.name
        sys.path[:0] = [str(folder / 'dreamerv2'), str(folder)]
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    act_dim = int(np.load(args.episodes)['0/action'].shape[-1])
    data = batches(args.episodes, config.dataset.batch, config.dataset.length, args.seed)
    tensors = lambda: {k: tf.constant(v) for k, v in next(data).items()}
    start = time.perf_counter()
    if args.child == 'original':
        import agent as original_agent
        import elements
        import gym
        from ruamel.yaml import YAML

        yaml = YAML(typ='safe').load((folder / 'dreamerv2' / 'configs.yaml').read_text())
        orig = elements.Config(yaml['defaults'])
        for name in variant.standard[1:]:
            orig = orig.update(yaml[name])
        orig = orig.update(small_overrides(variant, config)).update({'precision': 32})
        orig = orig.update({'seed': args.seed, 'task': args.task})
        tf.random.set_seed(args.seed)
        tf.keras.mixed_precision.set_global_policy('float32')
        space = gym.spaces.Box(-1, 1, (act_dim,), 'float32')

        class First:  # the constructor's update
            def __next__(self):
                return tensors()

        agent = original_agent.Agent(orig, None, space, elements.Counter(0), First())
        update = lambda: agent.train(tensors())[1]
        pretrain = int(orig.pretrain)
    else:
        agent = build.build_agent(variant, config, (*config.image_size, 3), act_dim)
        agent.train(tensors())
        update = lambda: agent.train(tensors())
        pretrain = int(config.pretrain)
    rows = []
    for index in range(pretrain):
        metrics = update()
        rows.append({k: float(metrics[k]) for k in METRICS})
        rows[-1]['update'] = index + 2  # the constructor's or first update is 1
    result = {'side': args.child, 'seed': args.seed, 'rows': rows}
    result['wall_s'] = time.perf_counter() - start
    args.out.write_text(json.dumps(result))


def parent(args, argv):
    variant = registry.get(args.variant)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            config = our_config(variant, args.task, seed)
            episodes = pathlib.Path(tmp) / f'episodes_{seed}.npz'
            count, steps = collect(variant, config, episodes)
            print(f'seed {seed}: {count} random episodes, {steps} agent steps', flush=True)
            for side in ('original', 'project'):
                out = pathlib.Path(tmp) / f'{side}_{seed}.json'
                cmd = [sys.executable, __file__, '--child', side, '--variant', args.variant]
                cmd += ['--task', args.task, '--seed', str(seed), '--episodes', str(episodes)]
                cmd += ['--out', str(out), '--threads', str(args.threads)]
                cmd += ['--port', str(args.port)]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if proc.returncode:
                    sys.exit(f'{side} side, seed {seed} failed:\n{proc.stderr[-3000:]}')
                runs.append(json.loads(out.read_text()))
                print(f'  {side}: {runs[-1]["wall_s"]:.0f} s', flush=True)
    model, flags = hardware.cpu_info()
    config = our_config(variant, args.task, args.seeds[0])
    result = {
        'variant': variant.name,
        'task': args.task,
        'blocks': [*variant.standard, 'small'],
        'original_flags': small_overrides(variant, config),
        'command': 'python benchmarks/pretrain_entropy.py ' + ' '.join(argv),
        'git_commit': git_commit(),
        'cpu_model': model,
        'cpu_flags': flags,
        'runs': runs,
    }
    print(table(result))
    if args.json:
        text = json.dumps(result, indent=1)
        atomic_write(args.json, lambda file: file.write(text), mode='w')
    return result


def table(result):
    """Actor entropy every 10 updates, one column per side and seed."""
    runs = result['runs']
    head = ' | '.join(f'{r["side"]} s{r["seed"]}' for r in runs)
    lines = [f'| update | {head} |', '|---' * (len(runs) + 1) + '|']
    for i, row in enumerate(runs[0]['rows']):
        if row['update'] % 10 == 1 or i == len(runs[0]['rows']) - 1:
            cells = ' | '.join(f'{r["rows"][i]["actor_ent"]:.2f}' for r in runs)
            lines.append(f'| {row["update"]} | {cells} |')
    return 'actor entropy\n' + '\n'.join(lines)


def git_commit():
    proc = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, cwd=REPO)
    return proc.stdout.strip()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.child:
        child(args)
    else:
        parent(args, argv)


if __name__ == '__main__':
    main()
