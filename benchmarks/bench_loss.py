"""Benchmark the point of the loss: plain BCE against class-weighted BCE + Dice on boundaries.

A synthetic cadastre scene is tiled and the same small U-Net is trained twice with the same
seed, data and number of steps, on the ``boundary`` class alone (a few percent of pixels):
once with ``--loss bce`` (unweighted) and once with the default ``bce_dice`` and automatic
class weights. For each, on the validation chips: the share of pixels predicted positive at
0.5 (against the true share), F1 at 0.5, and F1 at the threshold ``geoseg train`` picked.
Run ``.venv/bin/python benchmarks/bench_loss.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from scenes import synthetic_chips  # noqa: E402

from geoseg.contracts import read_model_card  # noqa: E402
from geoseg.training.dataset import make_dataset, open_chips  # noqa: E402
from geoseg.training.trainer import train
from geoseg.training.validation import score_histogram


def at_half(model_dir: Path, chips_dir: Path) -> dict:
    """Shares of valid pixels predicted positive and truly positive at 0.5, and F1 at 0.5."""
    model = keras.models.load_model(model_dir / "model.keras")
    val = make_dataset(open_chips(chips_dir), "val", 8, [1], training=False)
    histogram = score_histogram(model, val, ["boundary"])
    shares = histogram.shares({"boundary": 0.5})["boundary"]
    f1 = histogram.scores({"boundary": 0.5})["boundary"]["f1"]
    return {"predicted_share": shares["predicted"], "true_share": shares["true"], "f1": f1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="scene size in pixels")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="small scene, few epochs")
    args = parser.parse_args()
    if args.quick:
        args.size, args.epochs, args.base_filters = 1024, 4, 8

    with tempfile.TemporaryDirectory() as tmp:
        chips = synthetic_chips(Path(tmp), args.size)
        print(
            f"scene {args.size} px, U-Net depth 4 base {args.base_filters}, "
            f"{args.epochs} epochs, batch 8, class boundary only"
        )
        print(
            f"{'loss':<10}{'positive@0.5':>13}{'true':>7}{'F1@0.5':>8}"
            f"{'threshold':>10}{'F1@thr':>8}{'seconds':>9}"
        )
        for loss in ("bce", "bce_dice"):
            out = Path(tmp) / loss
            start = time.perf_counter()
            train(
                chips,
                out,
                loss=loss,
                classes=["boundary"],
                epochs=args.epochs,
                base_filters=args.base_filters,
                depth=4,
                batch_size=8,
                patience=args.epochs,
                mixed_precision="off",
                seed=0,
            )
            seconds = time.perf_counter() - start
            card, half = read_model_card(out), at_half(out, chips)
            print(
                f"{loss:<10}{half['predicted_share']:>13.4f}{half['true_share']:>7.4f}"
                f"{half['f1']:>8.3f}{card['threshold']['boundary']:>10.3f}"
                f"{card['metrics']['val']['boundary']['f1']:>8.3f}{seconds:>9.0f}"
            )
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
