"""geoseg train end to end on tiny chips: the model directory, its card, resume, bad input."""

from __future__ import annotations

import json
import logging
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from helpers import assert_one_line_error, run

from geoseg import train
from geoseg.contracts import read_model_card
from geoseg.errors import Interrupted, OutputExistsError, ParameterError
from geoseg.training.dataset import make_dataset, open_chips
from geoseg.training.settings import partial_directory
from geoseg.training.validation import score_histogram

TINY = dict(
    base_filters=4, depth=2, batch_size=8, mixed_precision="off", folds=1, epoch_chips=0
)  # one pass per epoch: tests check behaviour, not the fit


def weights_of(model_dir):
    return keras.models.load_model(model_dir / "model.keras").get_weights()


@pytest.fixture(scope="module")
def trained(tiny_chips, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "model"
    summary = train(tiny_chips, out, epochs=2, seed=5, **TINY)
    return out, summary


def test_model_directory_and_card(trained, tiny_chips):
    out, summary = trained
    assert {p.name for p in out.iterdir()} == {
        "model.keras", "geoseg.json", "history.csv", "training.png", "logs"
    }  # fmt: skip
    card = read_model_card(out)
    dataset = json.loads((tiny_chips / "dataset.json").read_text())
    assert card["classes"] == ["parcels", "boundary"]
    assert card["bands"] == dataset["bands"] and card["chip_size"] == 64
    assert card["normalization"] == dataset["normalization"]
    assert card["class_weights"]["boundary"] > 1.0 == card["class_weights"]["parcels"]
    assert all(0 < t <= 1 for t in card["threshold"].values())
    for name in card["classes"]:
        assert set(card["metrics"]["val"][name]) == {"iou", "f1", "precision", "recall"}
    assert set(card["versions"]) == {"geoseg", "tensorflow", "keras"}
    assert len(pd.read_csv(out / "history.csv")) == 2 == summary.epochs_run
    assert "boundary" in summary.describe()


def test_saved_model_loads_with_plain_keras_and_takes_large_inputs(trained):
    model = keras.models.load_model(trained[0] / "model.keras")
    y = model(np.zeros((1, 128, 192, 3), np.float32)).numpy()
    assert y.shape == (1, 128, 192, 2) and model.compute_dtype == "float32"


def test_same_seed_same_weights(trained, tiny_chips, tmp_path):
    train(tiny_chips, tmp_path / "again", epochs=2, seed=5, **TINY)
    for a, b in zip(weights_of(trained[0]), weights_of(tmp_path / "again")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_interrupted_run_resumes_from_its_last_epoch(tiny_chips, tmp_path):
    out = tmp_path / "model"

    def interrupt(epoch, epochs, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="add `resume` to continue") as stopped:
        train(tiny_chips, out, epochs=3, on_epoch=interrupt, classes=["boundary"], **TINY)
    assert stopped.value.resumable and isinstance(stopped.value, KeyboardInterrupt)
    assert not out.exists() and (partial_directory(out) / "last.keras").is_file()
    with pytest.raises(OutputExistsError, match="`resume`"):
        train(tiny_chips, out, epochs=3, classes=["boundary"], **TINY)
    with pytest.raises(ParameterError, match="lr"):
        train(tiny_chips, out, epochs=3, classes=["boundary"], lr=0.5, resume=True, **TINY)

    seen = []
    summary = train(
        tiny_chips, out, epochs=3, classes=["boundary"], resume=True,
        on_epoch=lambda e, n, logs: seen.append(e), **TINY,
    )  # fmt: skip
    assert seen == [2, 3] and summary.resumed_from == 1
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [0, 1, 2]
    assert not partial_directory(out).exists()
    assert read_model_card(out)["classes"] == ["boundary"]


def test_ctrl_c_in_the_cli_says_what_was_kept(tiny_chips, tmp_path, monkeypatch):
    """The CLI words the library's Interrupted: --resume after an epoch, nothing before one."""
    from geoseg.training.callbacks import Report

    args = ["--epochs", "3", "--classes", "boundary", "--base-filters", "4", "--depth", "2",
            "--mixed-precision", "off", "--folds", "1", "--epoch-chips", "0"]  # fmt: skip

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Report, "on_train_batch_end", stop)
    result = run("train", tiny_chips, "--out", tmp_path / "early", *args)
    assert_one_line_error(result, "interrupted before the first epoch ended")
    monkeypatch.undo()
    monkeypatch.setattr(Report, "on_epoch_end", stop)
    result = run("train", tiny_chips, "--out", tmp_path / "late", *args)
    assert_one_line_error(result, "the run is kept in", "add --resume to continue")
    assert (partial_directory(tmp_path / "late") / "last.keras").is_file()


def test_stale_best_staging_file_never_becomes_the_best_model(tiny_chips, tmp_path):
    """A crash mid-save leaves a half-written best.partial.keras; a resume must not promote it."""
    out, tiny = tmp_path / "model", dict(classes=["boundary"], monitor="val_loss", **TINY)

    def interrupt(epoch, epochs, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_chips, out, epochs=3, on_epoch=interrupt, **tiny)
    work = partial_directory(out)
    state = json.loads((work / "state.json").read_text())
    state["checkpoint"]["best"] = -1e9  # no resumed epoch improves, so none writes a checkpoint
    (work / "state.json").write_text(json.dumps(state))
    (work / "best.partial.keras").write_bytes(b"PK\x03\x04 half a zip")

    train(tiny_chips, out, epochs=3, resume=True, **tiny)
    card = read_model_card(out)
    assert card["training"]["best_epoch"] == 1 and card["training"]["epochs_run"] == 3
    assert card["metrics"]["val_loss"] == pd.read_csv(out / "history.csv")["val_loss"][0]
    assert keras.models.load_model(out / "model.keras").output_shape[-1] == 1


def with_test_split(tiny_chips, tmp_path, count=6):
    """A copy of the chips with ``count`` train chips moved to a held-out test split."""
    import geopandas as gpd

    chips = tmp_path / "with_test"
    shutil.copytree(tiny_chips, chips)
    index = gpd.read_file(chips / "chips.gpkg")
    index.loc[index.index[index["split"] == "train"][:count], "split"] = "test"
    index.to_file(chips / "chips.gpkg", engine="pyogrio")
    return chips


def test_test_split_is_scored_at_the_validation_thresholds_and_logged(tiny_chips, tmp_path, caplog):
    chips = with_test_split(tiny_chips, tmp_path)
    with caplog.at_level(logging.INFO, logger="geoseg.training"):
        summary = train(chips, tmp_path / "m", epochs=2, **TINY)
    card = read_model_card(tmp_path / "m")
    assert card["training"]["test_chips"] == 6 and card["training"]["train_chips"] == 46
    assert set(card["metrics"]["test"]) == {"parcels", "boundary"}

    # The recorded test scores are those of the saved model at the thresholds chosen on val.
    model = keras.models.load_model(tmp_path / "m" / "model.keras")
    test_data = make_dataset(open_chips(chips), "test", 8, [0, 1], training=False)
    expected = score_histogram(model, test_data, card["classes"]).scores(card["threshold"])
    for name, record in expected.items():
        assert card["metrics"]["test"][name] == pytest.approx(record, abs=1e-6)

    text = summary.describe()
    assert "tuned on these val chips" in text and "6 test chips" in text
    assert sum(line.startswith("boundary") for line in text.splitlines()) == 2  # two tables

    messages = [r.getMessage() for r in caplog.records]
    plan = next(m for m in messages if m.startswith("plan:"))
    assert all(word in plan for word in ("parcels", "boundary", "float32", "46 train, 12 val"))
    assert "6 test" in plan
    assert sum(m.startswith("epoch ") for m in messages) == 2
    assert any(m.startswith("thresholds") and "boundary" in m for m in messages)
    assert any(m.startswith("trained 2 epochs") for m in messages)


def test_without_test_chips_the_card_has_no_test_scores(trained):
    out, summary = trained
    card = read_model_card(out)
    assert "test" not in card["metrics"] and card["training"]["test_chips"] == 0
    assert "test chips" not in summary.describe() and "tuned on" in summary.describe()


def test_explicit_weights_are_recorded_and_the_library_prints_nothing(tiny_chips, tmp_path, capsys):
    train(
        tiny_chips, tmp_path / "m", epochs=1, class_weights="3,2", augment=False, jitter=0.1,
        monitor="val_iou_boundary", **TINY,
    )  # fmt: skip
    card = read_model_card(tmp_path / "m")
    assert card["class_weights"] == {"parcels": 3.0, "boundary": 2.0}
    assert card["class_weights_source"] == "explicit"
    assert capsys.readouterr().out == ""


def test_unweighted_losses_record_unit_weights(tiny_chips, tmp_path):
    train(tiny_chips, tmp_path / "m", epochs=1, loss="dice", classes=["boundary"], **TINY)
    card = read_model_card(tmp_path / "m")
    assert card["class_weights"] == {"boundary": 1.0} and card["loss"]["name"] == "dice"


def test_epoch_chips_passes_over_a_small_train_split_several_times(tiny_chips, tmp_path):
    from geoseg.training.dataset import open_chips

    chips = len(open_chips(tiny_chips).files["train"])
    steps = []
    settings = {**TINY, "epoch_chips": 2 * chips + 1}
    train(tiny_chips, tmp_path / "m", epochs=1, classes=["boundary"],
          progress=lambda step, _: steps.append(step), **settings)  # fmt: skip
    assert max(steps) == -(-3 * chips // TINY["batch_size"])  # three passes, batches of 8
    assert read_model_card(tmp_path / "m")["training"]["epoch_chips"] == 2 * chips + 1


def test_epoch_chips_auto_passes_over_a_small_split_until_128_chips():
    from geoseg.training.fit import epoch_repeats
    from geoseg.training.settings import TrainSettings

    assert TrainSettings().epoch_chips == "auto"
    assert [epoch_repeats(n, "auto") for n in (38, 44, 128, 500)] == [4, 3, 1, 1]
    assert epoch_repeats(38, 0) == 1 and epoch_repeats(38, 100) == 3
    for wrong in (-1, "many", 1.5):
        with pytest.raises(ParameterError, match="`epoch_chips` must be auto"):
            TrainSettings(epoch_chips=wrong).check()


def test_run_stopped_before_its_first_epoch_is_started_again(tiny_chips, tmp_path):
    out = tmp_path / "m"
    partial_directory(out).mkdir()
    (partial_directory(out) / "settings.json").write_text("{}")
    train(tiny_chips, out, epochs=1, classes=["boundary"], **TINY)
    assert (out / "model.keras").is_file() and not partial_directory(out).exists()


def test_cli_prints_epochs_and_final_table(tiny_chips, tmp_path):
    result = run(
        "train", tiny_chips, "--out", tmp_path / "m", "--epochs", "1", "--base-filters", "4",
        "--depth", "2", "--classes", "boundary", "--mixed-precision", "off", "--folds", "1",
        "--epoch-chips", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "threshold" in result.output


def test_cli_with_logging_on_shows_each_epoch_once(tiny_chips, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="geoseg.training"):
        result = run(
            "train", tiny_chips, "--out", tmp_path / "m", "--epochs", "1", "--base-filters",
            "4", "--depth", "2", "--classes", "boundary", "--mixed-precision", "off", "--folds",
            "1", "--epoch-chips", "0",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output
    assert not any(line.startswith("epoch 1/1") for line in result.output.splitlines())
    assert [r.getMessage()[:9] for r in caplog.records].count("epoch 1/1") == 1


def without_val(tiny_chips, tmp_path):
    chips = tmp_path / "no_val"
    shutil.copytree(tiny_chips, chips)
    import geopandas as gpd

    index = gpd.read_file(chips / "chips.gpkg")
    index["split"] = "train"
    index.to_file(chips / "chips.gpkg", engine="pyogrio")
    return chips


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--class-weights", "1,2,3"], ["3 class weights", "2 classes"]),
        (["--batch-size", "0"], ["batch-size"]),
        (["--depth", "7"], ["not divisible", "2**depth"]),
        (["--classes", "roads"], ["roads"]),
        (["--monitor", "val_accuracy"], ["cannot monitor"]),
    ],
)
def test_bad_options_leave_nothing_behind(tiny_chips, tmp_path, args, words):
    out = tmp_path / "m"
    result = run("train", tiny_chips, "--out", out, *args)
    assert_one_line_error(result, *words)
    assert not out.exists() and not partial_directory(out).exists()


def test_bad_chips_directories_are_refused(tiny_chips, tmp_path):
    assert_one_line_error(run("train", tmp_path, "--out", tmp_path / "m"), "not a chips directory")
    chips = without_val(tiny_chips, tmp_path)
    result = run("train", chips, "--out", tmp_path / "m", "--folds", "1")
    assert_one_line_error(result, "val split has no chips")
    assert not (tmp_path / "m").exists()
    assert_one_line_error(run("train", tiny_chips, "--out", tiny_chips, "--overwrite"), "input")
    assert_one_line_error(run("train", tiny_chips, "--out", tmp_path / "x", "--resume"), "resume")


def test_bfloat16_run_keeps_a_float32_model(tiny_chips, tmp_path):
    tiny = {**TINY, "mixed_precision": "on"}
    train(tiny_chips, tmp_path / "m", epochs=1, classes=["boundary"], **tiny)
    card = read_model_card(tmp_path / "m")
    assert card["training"]["precision"] == "mixed_bfloat16"
    assert keras.models.load_model(tmp_path / "m" / "model.keras").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_diverging_run_is_an_error_and_leaves_nothing(tiny_chips, tmp_path):
    chips = tmp_path / "nan_chips"
    shutil.copytree(tiny_chips, chips)
    record = json.loads((chips / "dataset.json").read_text())
    record["normalization"]["bands"][0]["p98"] = float("nan")
    (chips / "dataset.json").write_text(json.dumps(record))
    out = tmp_path / "m"
    args = ["--epochs", "2", "--depth", "2", "--folds", "1", "--epoch-chips", "0"]
    result = run("train", chips, "--out", out, *args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    last = result.output.strip().splitlines()[-1]  # after the epoch lines
    assert last.startswith("Error: training diverged") and "--lr" in last
    assert not out.exists() and not partial_directory(out).exists()


def test_resume_refuses_chips_tiled_again_since(tiny_chips, tmp_path):
    chips, out = tmp_path / "chips", tmp_path / "model"
    shutil.copytree(tiny_chips, chips)

    def interrupt(epoch, epochs, logs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(chips, out, epochs=3, on_epoch=interrupt, classes=["boundary"], **TINY)
    record = json.loads((chips / "dataset.json").read_text())
    record["classes"] = list(reversed(record["classes"]))
    (chips / "dataset.json").write_text(json.dumps(record))  # as another tiling would
    with pytest.raises(ParameterError, match="tiled again"):
        train(chips, out, epochs=3, classes=["boundary"], resume=True, **TINY)
    assert (partial_directory(out) / "last.keras").is_file()


def test_a_parcel_model_stops_and_keeps_its_best_epoch_by_the_parcels(
    tiny_multitask_chips, tmp_path
):
    train(tiny_multitask_chips, tmp_path / "m", epochs=3, monitor="val_parcels_f1", **TINY)
    card = read_model_card(tmp_path / "m")
    history = pd.read_csv(tmp_path / "m" / "history.csv")
    assert card["training"]["monitor"] == "val_parcels_f1"
    assert history["val_parcels_f1_epoch"].between(0, 1).all()
    # the monitored score is the mean of the last three epochs' scores
    window = history["val_parcels_f1_epoch"].rolling(3, min_periods=1).mean()
    np.testing.assert_allclose(history["val_parcels_f1"], window, atol=1e-6)
    best = int(history["val_parcels_f1"].idxmax()) + 1
    assert card["training"]["best_epoch"] == best
    from geoseg.training.card import describe_epoch

    assert "val_parcels_f1 0.5000" in describe_epoch(1, 2, {"loss": 1.0, "val_parcels_f1": 0.5})
    train(tiny_multitask_chips, tmp_path / "b", epochs=1, **TINY)  # auto: too few val parcels
    assert read_model_card(tmp_path / "b")["training"]["monitor"] == "val_loss"
    assert "val_parcels_f1" not in pd.read_csv(tmp_path / "b" / "history.csv")


def test_the_parcel_monitor_carries_its_window_over_a_resume(tiny_multitask_chips):
    from geoseg.training.parcel_areas import ParcelMonitor, parcel_roles

    chips = open_chips(tiny_multitask_chips)
    names = ["parcels", "boundary", "distance"]
    monitor = ParcelMonitor(chips, parcel_roles(chips, names), len(names))
    monitor.resume_after(pd.DataFrame({"val_parcels_f1_epoch": [0.9, 0.3, 0.6]}))
    logs = {"loss": float("nan")}  # a diverged epoch scores 0 without predicting
    monitor.on_epoch_end(3, logs)
    assert logs["val_parcels_f1_epoch"] == 0.0
    assert logs["val_parcels_f1"] == pytest.approx((0.3 + 0.6 + 0.0) / 3)
    monitor.on_epoch_end(4, logs)
    assert logs["val_parcels_f1"] == pytest.approx(0.6 / 3)


def test_the_training_plot_draws_the_parcels_score_when_it_was_watched():
    from geoseg.training.plots import history_figure

    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [1.0, 0.8, 0.7],
                            "val_iou_parcels": [0.2, 0.4, 0.5]})  # fmt: skip

    def labels(history):
        return history_figure(history, ["parcels"]).axes[1].get_legend_handles_labels()[1]

    assert not any("object F1" in label for label in labels(history))
    watched = history.assign(val_parcels_f1_epoch=[0.1, 0.5, 0.3], val_parcels_f1=[0.1, 0.3, 0.3])
    assert labels(watched)[-2:] == [
        "parcels' object F1 (validation)",
        "the same, mean of 3 epochs",
    ]
