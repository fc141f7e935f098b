"""The shared DreamerV2 core used by the Dreamer, TPC and DreamerPro variants."""

import importlib.abc
import importlib.machinery
import os
import sys

# tf-keras (Keras 2) is the Keras this code base uses; make TensorFlow agree.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# oneDNN kernels for convolutions and matmuls on the CPU. TensorFlow turns them on by itself only
# on CPUs with AVX-512 VNNI, bf16 or AMX units; on an AVX2-only CPU it leaves them off, and there
# they cut a `small` Dreamer update from 1.61 s to 1.25 s (benchmarks/README.md). The losses agree
# with the plain kernels to rtol 1e-5 (tests/test_speed_levers.py). Set TF_ENABLE_ONEDNN_OPTS=0
# before starting to use the plain kernels.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')


class _QuietImport(importlib.abc.MetaPathFinder):
    """Loads TensorFlow with file descriptor 2 pointed at /dev/null.

    With oneDNN on, TensorFlow's C++ side prints a notice about it on stderr while it loads, before
    its log settings apply (TF_CPP_MIN_LOG_LEVEL does not hold it back). Runs and tests keep stderr
    for errors, so the load happens with stderr closed. Python errors during the import still come
    out: they are raised after stderr is back.
    """

    def find_spec(self, name, path=None, target=None):
        if name != 'tensorflow':
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        if os.environ.get('TF_CPP_MIN_LOG_LEVEL', '0') == '0':  # the user asked for every log line
            return self._loader.exec_module(module)
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
            self._loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)


if 'tensorflow' not in sys.modules:
    sys.meta_path.insert(0, _QuietImport())
