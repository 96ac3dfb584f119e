"""Benchmark bfloat16 against float32 inference on CPU: speed and the change in scores.

On the demo scene with the demo's trained boundary model (``make demo``; run here through
``pipelines/demo.yaml`` when ``demo/`` lacks them), in one process:

* the raw compiled forward pass (batch 16, tensors in memory) in float32 and mixed bfloat16,
  alternating, best of ``--repeat``;
* ``geoseg predict`` end to end with ``--mixed-precision off`` and ``on``;
* the scores of both rasters against the true parcels (pixel IoU and F1 of the boundary class at
  threshold 0.5, and boundary F1 within 2 px), and how far the two rasters are apart.

Whether bfloat16 pays off depends on the processor: AMX (Sapphire Rapids and later) and
AVX-512 BF16 (Cooper Lake, Zen 4 and later) multiply it in hardware; elsewhere it is emulated.
Run ``.venv/bin/python benchmarks/bench_precision.py`` (``make bench``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent
MODES = {"float32": "off", "bfloat16": "on"}


def demo_outputs(demo: Path) -> tuple[Path, Path]:
    """The demo's model folder and scene, made by the demo pipeline if missing."""
    model, scene = demo / "model", demo / "scene"
    if not (model / "geoseg.json").exists() or not (scene / "image.tif").exists():
        from geoseg.cli.pipeline import run_pipeline

        print("running pipelines/demo.yaml for the demo model (about 3 minutes)", flush=True)
        run_pipeline(ROOT / "pipelines" / "demo.yaml")
    return model, scene


def forward_rates(model: Path, batch: int, repeat: int) -> dict[str, float]:
    from geoseg.contracts import read_model_card
    from geoseg.models.forward import ForwardPass, ForwardSpec

    card = read_model_card(model)
    chips = np.random.default_rng(0).random((batch, 256, 256, card["bands"]["count"]))
    chips = chips.astype(np.float32)
    passes = {}
    for name, mode in MODES.items():
        spec = ForwardSpec.from_card(model, card, batch_size=batch, device="cpu", precision=mode)
        passes[name] = ForwardPass(spec)
        passes[name](chips)  # trace
    best = dict.fromkeys(MODES, 0.0)
    for _ in range(repeat):
        for name, forward in passes.items():
            start = time.perf_counter()
            for _ in range(3):
                forward(chips)
            best[name] = max(best[name], 3 * batch / (time.perf_counter() - start))
    return best


def predict_and_score(model: Path, scene: Path, out: Path, mode: str) -> dict:
    from geoseg.evaluation.evaluator import evaluate
    from geoseg.inference.predictor import predict

    options = dict(device="cpu", mixed_precision=mode, threshold=0.5, overwrite=True)
    predict(scene / "image.tif", model, out, **options)  # loads and traces the model once
    start = time.perf_counter()
    summary = predict(scene / "image.tif", model, out, **options)
    seconds = time.perf_counter() - start
    scores = evaluate(out, scene / "parcels.gpkg", boundary_width="1.5")
    return {
        "chips/s": summary.chips / seconds,
        "seconds": seconds,
        "iou": scores.pixels["boundary"]["iou"],
        "f1": scores.pixels["boundary"]["f1"],
        "boundary_f1_2px": scores.boundary["f1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=ROOT / "demo", help="the demo's folder")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from geoseg.device import cpu_has_bfloat16_units, resolve_precision

    model, scene = demo_outputs(args.demo)
    flags = " ".join(
        f for f in ("amx_bf16", "avx512_bf16") if f in Path("/proc/cpuinfo").read_text()
    )
    print(f"CPU bfloat16 flags: {flags or 'none'}; matrix units: {cpu_has_bfloat16_units()}; "
          f"--mixed-precision auto gives {resolve_precision('auto', False, inference=True)} "
          f"for inference, {resolve_precision('auto', False)} for training")  # fmt: skip
    raw = forward_rates(model, args.batch, args.repeat)
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        runs = {
            name: predict_and_score(model, scene, Path(tmp) / f"{name}.tif", mode)
            for name, mode in MODES.items()
        }
        with (
            rasterio.open(Path(tmp) / "float32.tif") as a,
            rasterio.open(Path(tmp) / "bfloat16.tif") as b,
        ):
            p32, p16 = a.read(1).astype(np.int16), b.read(1).astype(np.int16)
    differ = np.mean((p32 >= 128) != (p16 >= 128))
    print(f"\n{model} on {scene / 'image.tif'}, batch {args.batch}")
    print(
        "| precision | raw forward chips/s | predict chips/s | boundary IoU | F1 | F1 within 2 px |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {raw[name]:.1f} | {r['chips/s']:.1f} | {r['iou']:.4f} | {r['f1']:.4f} "
              f"| {r['boundary_f1_2px']:.4f} |")  # fmt: skip
    a, b = runs["float32"], runs["bfloat16"]
    print(f"| bfloat16 / float32 | {raw['bfloat16'] / raw['float32']:.2f}x "
          f"| {b['chips/s'] / a['chips/s']:.2f}x | {b['iou'] - a['iou']:+.4f} "
          f"| {b['f1'] - a['f1']:+.4f} "
          f"| {b['boundary_f1_2px'] - a['boundary_f1_2px']:+.4f} |")  # fmt: skip
    print(
        f"probabilities: mean |difference| {np.abs(p32 - p16).mean():.2f} of 255, "
        f"max {np.abs(p32 - p16).max()}; pixels on the other side of 0.5: {differ:.3%}"
    )


if __name__ == "__main__":
    main()
