"""What a run ran with (dreamer_core/provenance.py), recorded under `run:` in config.yaml, and
every reader of config.yaml with and without that section."""

import importlib.metadata
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import evaluate
from dreamer_core import config as config_lib
from dreamer_core import grid, hardware, identity, provenance, registry
from tests.e2e import REPO

FLAGS = ['--configs', 'defaults', 'dmc', '--steps', '4000']


def fake_tf(*gpu_names):
    """The two calls provenance makes to TensorFlow, with these GPUs visible."""
    gpus = [types.SimpleNamespace(name=f'/physical_device:GPU:{i}') for i in range(len(gpu_names))]
    details = {gpu.name: {'device_name': name} for gpu, name in zip(gpus, gpu_names)}
    experimental = types.SimpleNamespace(get_device_details=lambda gpu: details[gpu.name])
    config = types.SimpleNamespace(
        list_physical_devices=lambda kind: gpus if kind == 'GPU' else [], experimental=experimental
    )
    return types.SimpleNamespace(config=config)


def git(root, *args):
    command = ['git', '-c', 'user.name=t', '-c', 'user.email=t@t', '-C', str(root), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with one committed file; nothing above tmp_path counts as a repository."""
    monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path))
    root = tmp_path / 'repo'
    root.mkdir()
    git(root, 'init', '-q')
    (root / 'code.py').write_text('x = 1\n')
    git(root, 'add', 'code.py')
    git(root, 'commit', '-q', '-m', 'first')
    return root


def test_collect_records_policy_xla_device_code_and_versions():
    info = provenance.collect('mixed_bfloat16', True, fake_tf())
    assert list(info) == ['precision_policy', 'xla', 'device', 'code', 'versions']
    assert info['precision_policy'] == 'mixed_bfloat16' and info['xla'] is True
    model, flags = hardware.cpu_info()
    assert info['device'] == {'kind': 'cpu', 'name': model, 'cpu_flags': flags}
    assert set(info['code']) == {'commit', 'modified'}
    versions = info['versions']
    assert list(versions) == ['python', *provenance.PACKAGES]
    assert versions['numpy'] == importlib.metadata.version('numpy') == np.__version__
    for name in ('tensorflow_probability', 'mujoco', 'dm_control'):
        assert versions[name] == importlib.metadata.version(name)
    assert versions['python'] == '.'.join(map(str, sys.version_info[:3]))


def test_tensorflow_version_is_that_of_its_installed_wheel():
    import tensorflow as tf

    installed = [d for d in ('tensorflow', 'tensorflow-cpu') if provenance._dist_version(d)]
    assert installed and provenance.versions()['tensorflow'] == tf.__version__
    assert tf.__version__ == importlib.metadata.version(installed[0])


def test_a_package_not_installed_is_none(monkeypatch):
    monkeypatch.setattr(provenance, 'PACKAGES', {'nothing': ('no-such-dist-3f9a',)})
    versions = provenance.versions()
    assert list(versions) == ['python', 'nothing'] and versions['nothing'] is None


def test_device_names_the_gpus_when_there_are_some():
    device = provenance.device(fake_tf('NVIDIA A100-SXM4-40GB', 'NVIDIA L4'))
    assert device['kind'] == 'gpu' and device['name'] == 'NVIDIA A100-SXM4-40GB, NVIDIA L4'
    assert device['cpu_flags'] == hardware.cpu_info()[1]


def test_git_fields_of_a_clean_then_modified_checkout(repo):
    clean = provenance.code_version(repo)
    assert re.fullmatch('[0-9a-f]{40}', clean['commit'])
    assert clean == {'commit': git(repo, 'rev-parse', 'HEAD'), 'modified': False}
    (repo / 'notes.txt').write_text('untracked: a logdir or a video is not a change\n')
    assert provenance.code_version(repo)['modified'] is False
    (repo / 'code.py').write_text('x = 2\n')
    assert provenance.code_version(repo) == {'commit': clean['commit'], 'modified': True}


@pytest.mark.parametrize('case', ['not a repository', 'no commit yet', 'no git', 'git hangs'])
def test_git_fields_are_none_when_git_cannot_tell(tmp_path, monkeypatch, case):
    monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path))
    root = tmp_path / 'code'
    root.mkdir()
    if case == 'no commit yet':
        git(root, 'init', '-q')
    if case == 'no git':
        monkeypatch.setattr(provenance, 'GIT', str(tmp_path / 'no-git'))
    if case == 'git hangs':
        slow = tmp_path / 'slow-git'
        slow.write_text('#!/bin/sh\nexec sleep 5\n')
        slow.chmod(0o755)
        monkeypatch.setattr(provenance, 'GIT', str(slow))
        monkeypatch.setattr(provenance, 'GIT_TIMEOUT', 0.2)
    assert provenance.code_version(root) == {'commit': None, 'modified': None}


def test_code_version_is_that_of_this_checkout():
    try:
        head = git(REPO, 'rev-parse', 'HEAD')
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('the code is not in a git checkout here')
    assert provenance.code_version()['commit'] == head


def saved_run(tmp_path, run):
    config = config_lib.load(FLAGS, registry.get('dreamer').dir)
    config_lib.save_run(config, tmp_path / 'config.yaml', 'dreamer', run=run)
    return config


def test_run_section_round_trip_leaves_the_config_as_it_was(tmp_path):
    run = provenance.collect('float32', False, fake_tf())
    config = saved_run(tmp_path, run)
    text = (tmp_path / 'config.yaml').read_text()
    assert text.startswith('variant: dreamer\nconfigs: [defaults, dmc]\n')
    assert text.count('\nrun:\n') == 1 and '  precision_policy: float32\n' in text
    variant, saved = config_lib.load_saved(tmp_path)
    assert variant == 'dreamer' and saved == config and 'run' not in saved
    assert config_lib.load_run_info(tmp_path / 'config.yaml') == run
    # evaluate.py and `launch.py status` read the same file.
    evaluate.check_keys(tmp_path / 'config.yaml', saved.to_dict(), registry.get('dreamer'))
    assert grid.saved_total(tmp_path) == 4000


def test_old_config_yaml_without_run_section_still_reads(tmp_path):
    config = saved_run(tmp_path, None)
    assert 'run:' not in (tmp_path / 'config.yaml').read_text()
    assert config_lib.load_saved(tmp_path) == ('dreamer', config)
    assert config_lib.load_run_info(tmp_path) == {}
    assert grid.saved_total(tmp_path) == 4000


def test_resume_is_not_blocked_by_another_machine_or_commit(tmp_path):
    run = provenance.collect('mixed_float16', True, fake_tf('NVIDIA L4'))
    saved_run(tmp_path, {**run, 'code': {'commit': 'a' * 40, 'modified': True}})
    now = config_lib.load(FLAGS, registry.get('dreamer').dir)
    assert identity.check(now, 'dreamer', tmp_path) == {}
    # The check does read this file: a defining value that differs still stops the resume.
    other_seed = config_lib.load([*FLAGS, '--seed', '7'], registry.get('dreamer').dir)
    with pytest.raises(config_lib.ConfigError, match='seed: 0 then, 7 now'):
        identity.check(other_seed, 'dreamer', tmp_path)
