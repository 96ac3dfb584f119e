"""GPU benchmark: U-Net forward throughput against the GPU's peak, and predict against the forward.

Runs wherever TensorFlow sees a GPU; elsewhere it says so and exits 0 (it is never part of
``make test``). In one process:

* raw forward chips/s of base-32 and base-64 U-Nets (depth 4, 3 bands, 2 classes) on 256 x 256
  chips already on the device, in float32, mixed float16 and mixed bfloat16, each with and
  without XLA (``jit_compile``), and the achieved TFLOP/s (convolutions counted exactly, the
  rest ignored) as a fraction of the GPU's dense half-precision peak;
* ``geoseg predict`` end to end (read, normalise, forward, blend, write the COG) with the base-32
  model in mixed float16 (what ``--mixed-precision auto`` picks on a GPU), as a fraction of the
  raw forward chips/s of the same model, precision and batch without XLA (geoseg's pass).

Run ``.venv/bin/python benchmarks/bench_gpu.py`` (``--size`` for the predict raster side,
``--peak-tflops`` when the GPU is not in the table below).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Dense (no sparsity) FP16/BF16 tensor-core peak in TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,
    "T4": 65.0,
}
POLICIES = {"float32": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def peak_for(name: str) -> float | None:
    for key, value in sorted(PEAK_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if key.lower() in name.lower():
            return value
    return None


def conv_flops(model) -> float:
    """Multiply-adds x 2 of every convolution of a Keras model, per input image."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2.0 * h * w * kh * kw * cin * cout
    return total


def forward_rate(base: int, policy: str, xla: bool, batch: int, seconds: float) -> tuple:
    """Chips/s and TFLOP/s of a fresh U-Net under ``policy`` on tensors on the GPU."""
    import keras
    import tensorflow as tf

    from geoseg.models.config import UNetConfig
    from geoseg.models.unet import build_unet

    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = build_unet(UNetConfig(bands=3, classes=2, depth=4, base_filters=base))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    spec = tf.TensorSpec((batch, 256, 256, 3), tf.float32)
    run = tf.function(lambda x: model(x, training=False), input_signature=[spec], jit_compile=xla)
    with tf.device("/GPU:0"):
        chips = tf.random.uniform((batch, 256, 256, 3))
        for _ in range(3):
            run(chips).numpy()  # trace, compile, warm up
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            out = run(chips)
            steps += 1
        out.numpy()  # wait for the queued work
        elapsed = time.perf_counter() - start
    rate = steps * batch / elapsed
    return rate, rate * conv_flops(model) / 1e12


def predict_fraction(root: Path, size: int, batch: int) -> tuple[float, float]:
    """End-to-end predict chips/s and geoseg's own raw forward chips/s (base 32, float16)."""
    from bench_predict import make_model, make_raster

    from geoseg.contracts import read_model_card
    from geoseg.inference.predictor import predict
    from geoseg.models.forward import ForwardPass, ForwardSpec

    model_dir = make_model(root, 32)
    image = make_raster(root / "image.tif", size)
    card = read_model_card(model_dir)
    spec = ForwardSpec.from_card(model_dir, card, batch_size=batch, device="gpu", precision="on")
    forward = ForwardPass(spec)
    chips = np.random.default_rng(0).random((batch, 256, 256, 3)).astype(np.float32)
    forward(chips)
    start = time.perf_counter()
    for _ in range(20):
        forward(chips)
    raw = 20 * batch / (time.perf_counter() - start)
    options = dict(batch_size=batch, device="gpu", mixed_precision="on", overwrite=True)
    predict(image, model_dir, root / "warm.tif", **options)
    start = time.perf_counter()
    summary = predict(image, model_dir, root / "pred.tif", **options)
    return summary.chips / (time.perf_counter() - start), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per forward setting")
    parser.add_argument("--size", type=int, default=8192, help="predict raster side (px)")
    parser.add_argument("--peak-tflops", type=float, help="dense FP16 peak, if not in the table")
    args = parser.parse_args()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("no GPU visible to TensorFlow: nothing to measure")
        sys.exit(0)
    tf.config.experimental.set_memory_growth(gpus[0], True)
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "unknown GPU")
    peak = args.peak_tflops or peak_for(name)
    print(f"{name}; dense half-precision peak: {f'{peak:g} TFLOP/s' if peak else 'unknown'}; "
          f"TensorFlow {tf.__version__}, batch {args.batch}")  # fmt: skip
    print("| model | precision | XLA | chips/s | TFLOP/s | of peak |")
    print("|---|---|---|---|---|---|")
    for base in (32, 64):
        for label, policy in POLICIES.items():
            for xla in (False, True):
                rate, tflops = forward_rate(base, policy, xla, args.batch, args.seconds)
                share = f"{tflops / peak:.1%}" if peak else "-"
                print(f"| base {base} | {label} | {'yes' if xla else 'no'} | {rate:.0f} "
                      f"| {tflops:.1f} | {share} |", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        end_to_end, raw = predict_fraction(Path(tmp), args.size, args.batch)
    print(
        f"\npredict {args.size} x {args.size} px, base 32, float16, batch {args.batch}: "
        f"{end_to_end:.0f} chips/s = {end_to_end / raw:.2f} of the raw forward ({raw:.0f})"
    )


if __name__ == "__main__":
    main()
