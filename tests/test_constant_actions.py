"""benchmarks/constant_actions.py: the return of holding one action, and the DMC env without
rendering that it uses."""

import json
import pathlib
import sys

import numpy as np
import pytest

from dreamer_core import envs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'))
import constant_actions  # noqa: E402


def test_an_env_without_images_gives_the_same_rewards_and_black_images():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (40, 1)).astype(np.float32)
    runs = []
    for images in (True, False):
        env = envs.NormalizeAction(envs.DMC('cartpole_swingup', 2, (64, 64), seed=3, images=images))
        obs = [env.reset()] + [env.step(a) for a in actions]
        env.close()
        runs.append(obs)
    rendered, blank = runs
    assert [o['reward'] for o in rendered] == [o['reward'] for o in blank]
    assert [o['done'] for o in rendered] == [o['done'] for o in blank]
    assert all(o['image'].shape == (64, 64, 3) and o['image'].dtype == np.uint8 for o in blank)
    assert not any(o['image'].any() for o in blank)
    assert all(o['image'].any() for o in rendered)


def test_the_return_is_the_plain_sum_over_the_dm_control_episode(tmp_path):
    from dm_control import suite

    out = tmp_path / 'constant.json'
    argv = ['--tasks', 'dmc_cartpole_swingup', '--values', '-1', '0.5', '--episodes', '2']
    assert constant_actions.main([*argv, '--json', str(out)]) == 0
    result = json.loads(out.read_text())['dmc_cartpole_swingup']
    assert list(result) == ['-1', '0.5']
    # The same episodes straight from dm_control: seeded 0, one after the other, 1000 control
    # steps each (500 agent steps of action repeat 2).
    for key, value in (('-1', -1.0), ('0.5', 0.5)):
        env = suite.load('cartpole', 'swingup', task_kwargs={'random': 0})
        expected = []
        for _ in range(2):
            step, total = env.reset(), 0.0
            while not step.last():
                step = env.step(np.array([value]))
                total += step.reward
            expected.append(total)
        assert result[key]['returns'] == pytest.approx(expected, rel=1e-5)
        assert result[key]['return'] == pytest.approx(np.mean(expected), rel=1e-5)


@pytest.mark.parametrize(
    'argv, problem',
    [(['--values', '2'], '--values 2 is outside'), (['--episodes', '0'], '--episodes is 0')],
)
def test_bad_input_is_one_line(argv, problem, capsys, tmp_path):
    out = tmp_path / 'constant.json'
    assert (
        constant_actions.main(['--tasks', 'dmc_cartpole_swingup', *argv, '--json', str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert problem in err and err.count('\n') == 1
    assert not out.exists()
