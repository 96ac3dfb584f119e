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
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return frozenset(flags)


def cpu_has_bfloat16_units() -> bool:
    """Whether the CPU multiplies bfloat16 matrices in hardware (x86 AMX, Arm BF16)."""
    wanted = "bf16" if platform.machine().lower() in ("aarch64", "arm64") else "amx_bf16"
    return wanted in _cpu_flags()


def cpu_has_bfloat16_dot_products() -> bool:
    """Whether the CPU has bfloat16 dot-product instructions (x86 AVX-512 BF16) or better."""
    return cpu_has_bfloat16_units() or "avx512_bf16" in _cpu_flags()


DEVICES = ("auto", "cpu", "gpu")


def use_device(device: str) -> bool:
    """Set TensorFlow up for ``auto``/``cpu``/``gpu``; returns whether a GPU will be used.

    ``cpu`` hides the GPUs; ``auto`` and ``gpu`` turn on memory growth so that several
    processes can share a GPU; ``gpu`` refuses to run without one.
    """
    import tensorflow as tf

    if device not in DEVICES:
        raise ParameterError(f"`device` must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # already initialised: callers also pin work to the CPU
            pass
        return False
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise ParameterError("`device` gpu: TensorFlow sees no GPU on this machine")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised
            pass
    return bool(gpus)


def resolve_precision(mode: str, gpu: bool | None = None, inference: bool = False) -> str:
    """``auto``/``on``/``off`` -> a Keras dtype policy name.

    ``auto``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bfloat16 matrix units (for
    ``inference`` also with AVX-512 BF16, where benchmarks/bench_precision.py measured a faster
    forward pass at the same IoU within 0.001), float32 otherwise. ``on``: mixed_float16 on a
    GPU, else mixed_bfloat16. ``off``: float32. ``gpu`` says whether a GPU is used (default:
    whether TensorFlow sees one).
    """
    if mode not in PRECISION_MODES:
        raise ParameterError(f"mixed precision must be one of {', '.join(PRECISION_MODES)}")
    if mode == "off":
        return "float32"
    if gpu is None:
        gpu = gpu_available()
    if gpu:
        return "mixed_float16"
    hardware = cpu_has_bfloat16_dot_products() if inference else cpu_has_bfloat16_units()
    if mode == "on" or hardware:
        return "mixed_bfloat16"
    return "float32"


def training_strategy(devices: int | None = None):
    """The tf.distribute strategy that trains on ``devices`` replicas, and its description.

    Default: every visible GPU (one replica each, ``MirroredStrategy`` when more than one), else
    the CPU. ``devices`` > 1 without GPUs uses that many logical CPU devices, which exist only
    when configured with ``tf.config.set_logical_device_configuration`` (the tests do so).
    """
    import tensorflow as tf

    use_device("auto")
    gpus = tf.config.list_logical_devices("GPU")
    pool, kind = (gpus, "GPU") if gpus else (tf.config.list_logical_devices("CPU"), "CPU")
    wanted = devices or (len(gpus) if gpus else 1)
    if wanted > len(pool):
        seen = f"{len(gpus)} GPU" + ("" if len(gpus) == 1 else "s") if gpus else "no GPU"
        raise ParameterError(f"`devices` {wanted}: TensorFlow sees {seen} on this machine")
    if wanted == 1:
        return tf.distribute.get_strategy(), f"one {kind}"
    names = [device.name for device in pool[:wanted]]
    return tf.distribute.MirroredStrategy(names), f"{wanted} {kind}s (MirroredStrategy)"
