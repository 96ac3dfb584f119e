"""Which accelerator and precision to use: GPUs, bfloat16 matrix units on CPUs."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

from geoseg.errors import ParameterError

PRECISION_MODES = ("auto", "on", "off")


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@cache
def cpu_has_bfloat16_units() -> bool:
    """Whether the CPU multiplies bfloat16 matrices in hardware (x86 AMX, Arm BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    wanted = "bf16" if platform.machine().lower() in ("aarch64", "arm64") else "amx_bf16"
    return wanted in flags


def resolve_precision(mode: str) -> str:
    """``auto``/``on``/``off`` -> a Keras dtype policy name.

    ``auto``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bfloat16 matrix units,
    float32 otherwise. ``on``: mixed_float16 on a GPU, else mixed_bfloat16. ``off``: float32.
    """
    if mode not in PRECISION_MODES:
        raise ParameterError(f"mixed precision must be one of {', '.join(PRECISION_MODES)}")
    if mode == "off":
        return "float32"
    if gpu_available():
        return "mixed_float16"
    if mode == "on" or cpu_has_bfloat16_units():
        return "mixed_bfloat16"
    return "float32"
