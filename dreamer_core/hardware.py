"""What the machine offers (CPU model and flags, GPUs) and the numeric policy chosen from it."""

from __future__ import annotations

import dataclasses
import pathlib
import platform

# Flags recorded with every speed figure: the vector and matrix units that decide fp32/bf16 speed.
CPU_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile', 'amx_int8')
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_info(path: str | pathlib.Path = '/proc/cpuinfo') -> tuple[str, list[str]]:
    """The CPU model and which of CPU_FLAGS it has (from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in pathlib.Path(path).read_text().splitlines():
            key, _, value = line.partition(':')
            if key.strip() == 'model name':
                model = value.strip()
            elif key.strip() == 'flags':
                flags = set(value.split())
    except OSError:
        pass
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def process_memory(pid: int | str = 'self') -> dict[str, int]:
    """{rss, rss_anon, rss_file} of a process in bytes, from /proc/<pid>/status (VmRSS, RssAnon,
    RssFile); empty where there is no /proc. The page cache behind the replay's file reads is
    not part of any of them."""
    fields = {'VmRSS': 'rss', 'RssAnon': 'rss_anon', 'RssFile': 'rss_file'}
    out = {}
    try:
        for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
            key, _, value = line.partition(':')
            if key in fields:
                out[fields[key]] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def resident_memory(pid: int | str = 'self') -> int | None:
    """Resident memory of a process in bytes (VmRSS), or None where there is no /proc."""
    return process_memory(pid).get('rss')


def native_bf16(flags) -> bool:
    """Whether a CPU with these flags computes bf16 in hardware (AVX-512 BF16 or AMX)."""
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


@dataclasses.dataclass(frozen=True)
class Precision:
    policy: str  # the Keras mixed-precision policy name
    note: str | None = None  # one line for the user, when the choice is not what they may expect


def choose_precision(precision, gpu_capabilities, cpu_flags) -> Precision:
    """The Keras policy for the config's `precision` (16, 32 or 'bf16') on this machine.

    `gpu_capabilities` lists each GPU's compute capability as (major, minor); empty on a CPU.
    - 32: float32 everywhere.
    - 16: mixed_float16 (with loss scaling) on a GPU. Without a GPU float16 is emulated and 20-35x
      slower, so it becomes float32, the precision of every learning run measured on a CPU
      (bf16 is the opt-in: `--precision bf16`).
    - bf16: mixed_bfloat16 (no loss scaling needed: bf16 has float32's exponent range). It is
      emulated, and slower than float32, on GPUs before Ampere and CPUs without native bf16; the
      note says so and names the faster choice.
    """
    if precision == 32:
        return Precision('float32')
    has_bf16 = native_bf16(cpu_flags)
    if precision == 16:
        if gpu_capabilities:
            return Precision('mixed_float16')
        bf16 = ' (this CPU has native bf16: --precision bf16 uses it)' if has_bf16 else ''
        return Precision(
            'float32',
            f'No GPU found: running precision 16 as 32 (float16 is 20-35x slower on a CPU){bf16}.',
        )
    if precision == 'bf16':
        if gpu_capabilities:
            if all(tuple(c) >= (8, 0) for c in gpu_capabilities):
                return Precision('mixed_bfloat16')
            return Precision(
                'mixed_bfloat16',
                'This GPU has no native bf16 (compute capability below 8.0): bf16 is emulated and '
                'slow; --precision 16 is faster here.',
            )
        if has_bf16:
            return Precision('mixed_bfloat16')
        return Precision(
            'mixed_bfloat16',
            'This CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag): bf16 is emulated and '
            'slower than float32; --precision 32 is faster here.',
        )
    raise ValueError(f'precision must be 16, 32 or bf16, got {precision!r}')


def use_xla(xla, gpu_capabilities) -> bool:
    """Whether to compile the train step with XLA for the config's `xla` (True, False or 'auto').

    The default is False, as the original. auto: on where a GPU is visible (where the update's
    hundreds of small kernels may be launch-bound; not measured here), off on a CPU, where XLA
    measured no faster than TensorFlow's own kernels with oneDNN and its first compile is
    minutes longer (benchmarks/README.md).
    """
    if xla == 'auto':
        return bool(gpu_capabilities)
    if isinstance(xla, bool):
        return xla
    raise ValueError(f'xla must be True, False or auto, got {xla!r}')


def gpu_capabilities(tf) -> list[tuple[int, int]]:
    """Compute capability of each visible GPU ((0, 0) where TensorFlow does not report one)."""
    out = []
    for gpu in tf.config.list_physical_devices('GPU'):
        details = tf.config.experimental.get_device_details(gpu)
        out.append(tuple(details.get('compute_capability', (0, 0))))
    return out


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels on the CPU (TF_ENABLE_ONEDNN_OPTS, set when
    dreamer_core is imported; see dreamer_core/__init__.py)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())
