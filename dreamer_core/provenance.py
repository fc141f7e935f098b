"""What a run actually ran with: the `run:` section of its config.yaml.

The config records what was asked for; this records what the machine made of it (the precision
policy chosen for the hardware, whether XLA compiles the update), the device, the code version
and the library versions, so that a curve can be traced to what produced it. Every value is a
plain YAML scalar or list, None where it cannot be known; collecting never raises.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import platform
import subprocess

from dreamer_core import hardware

CODE_ROOT = pathlib.Path(__file__).resolve().parents[1]
GIT = 'git'
GIT_TIMEOUT = 5  # seconds: a hung git must not hold up the start of a run
# Recorded name -> the distributions that install it (TensorFlow's CPU wheel has its own name).
PACKAGES = {
    'tensorflow': ('tensorflow', 'tensorflow-cpu'),
    'tensorflow_probability': ('tensorflow-probability',),
    'tf_keras': ('tf-keras',),
    'mujoco': ('mujoco',),
    'dm_control': ('dm-control',),
    'numpy': ('numpy',),
}


def collect(policy: str, xla: bool, tf) -> dict:
    """The `run:` section: `policy` is the Keras precision policy chosen for this machine
    (hardware.choose_precision), `xla` whether the update is XLA-compiled, `tf` TensorFlow."""
    return {
        'precision_policy': policy,
        'xla': bool(xla),
        'device': device(tf),
        'code': code_version(),
        'versions': versions(),
    }


def device(tf) -> dict:
    """{kind: gpu or cpu, name: the GPUs' names or the CPU model, cpu_flags: which of
    hardware.CPU_FLAGS the CPU has}."""
    model, flags = hardware.cpu_info()
    gpus = [
        tf.config.experimental.get_device_details(gpu).get('device_name', gpu.name)
        for gpu in tf.config.list_physical_devices('GPU')
    ]
    if gpus:
        return {'kind': 'gpu', 'name': ', '.join(gpus), 'cpu_flags': flags}
    return {'kind': 'cpu', 'name': model, 'cpu_flags': flags}


def code_version(root: str | pathlib.Path = CODE_ROOT) -> dict:
    """{commit, modified} of the git checkout holding `root`, both None where git cannot tell
    (no git, not a repository, an error, a timeout). `modified` looks at tracked files only, so
    logdirs and videos inside the checkout do not count."""
    commit = _git(root, 'rev-parse', 'HEAD')
    status = _git(root, 'status', '--porcelain', '--untracked-files=no') if commit else None
    return {'commit': commit or None, 'modified': None if status is None else bool(status)}


def versions() -> dict:
    """Python's version and the installed version of each of PACKAGES (None if not installed),
    read from the package metadata: nothing is imported."""
    out = {'python': platform.python_version()}
    for name, dists in PACKAGES.items():
        out[name] = next(filter(None, map(_dist_version, dists)), None)
    return out


def _dist_version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(root, *args):
    """git's output (stripped), or None when it fails. --no-optional-locks: `git status` must not
    take the index lock that a git command run in the checkout at the same time may need."""
    try:
        result = subprocess.run(
            [GIT, '--no-optional-locks', '-C', str(root), *args],
            capture_output=True,
            text=True,
            errors='replace',
            timeout=GIT_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None
