"""``train --init-from``: a run starts from an earlier model's weights, or is refused in one
line naming what differs; the card records its parent."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from conftest import TINY_TRAINING
from helpers import assert_one_line_error, run

from geoseg.contracts import CARD_NAME, MODEL_NAME, read_model_card
from geoseg.errors import InputFileError, ParameterError
from geoseg.models.config import config_from_record
from geoseg.models.unet import build_model, member_name
from geoseg.training.parent import head_sources, load_parent_weights


def network_of(model_dir):
    return config_from_record(read_model_card(model_dir)["model"])


def roles_of(model_dir) -> dict:
    return {n: t.get("role") for n, t in read_model_card(model_dir).targets.items()}


def same_heads(model_dir) -> dict:
    return {h: h for h in network_of(model_dir).heads}


def card_hash(model_dir) -> str:
    return hashlib.sha256((model_dir / CARD_NAME).read_bytes()).hexdigest()


def test_a_new_model_holds_the_parents_weights_before_training(tiny_model):
    import keras

    child = build_model(network_of(tiny_model))
    record = load_parent_weights(child, tiny_model, same_heads(tiny_model))
    parent = keras.models.load_model(tiny_model / MODEL_NAME, compile=False)
    for mine, theirs in zip(child.get_weights(), parent.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert (
        record["card_sha256"] == hashlib.sha256((tiny_model / CARD_NAME).read_bytes()).hexdigest()
    )
    assert record["created"] == read_model_card(tiny_model)["created"]


def test_fold_k_starts_from_member_k_of_an_ensemble_parent(tiny_model, tmp_path):
    """An ensemble parent (two members here) gives member k's weights to fold k."""
    network = network_of(tiny_model)
    ensemble = build_model(replace(network, members=2))
    parent = tmp_path / "ensemble"
    parent.mkdir()
    ensemble.save(parent / MODEL_NAME)
    card = json.loads((tiny_model / CARD_NAME).read_text())
    card["model"]["members"] = 2
    (parent / CARD_NAME).write_text(json.dumps(card))
    for k in (0, 1, 3):
        child = build_model(network)
        load_parent_weights(child, parent, same_heads(tiny_model), member=k)
        expected = ensemble.get_layer(member_name(k % 2)).get_weights()
        for mine, theirs in zip(child.get_weights(), expected, strict=True):
            np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(bands=4), "input bands 3 where this run has 4"),
        (dict(base_filters=8), "`base_filters` 4 where this run has 8"),
        (dict(depth=3), "`depth` 2 where this run has 3"),
        (dict(encoder="vgg16"), "`encoder` unet where this run has vgg16"),
        (dict(classes=3, heads=("parcels", "boundary", "distance")), "no distance target"),
    ],
)
def test_a_parent_of_another_network_is_refused_naming_the_difference(tiny_model, change, words):
    roles = {**roles_of(tiny_model), "distance": "distance"}
    with pytest.raises(ParameterError, match=words):
        head_sources(tiny_model, replace(network_of(tiny_model), **change), roles)


def test_a_run_with_fewer_targets_than_its_parent_starts_from_their_heads(tiny_model):
    network = replace(network_of(tiny_model), classes=1, heads=("boundary",))
    assert head_sources(tiny_model, network, {"boundary": "boundary"}) == {"boundary": "boundary"}


def test_heads_of_another_name_start_from_the_parents_head_of_their_role(tiny_model):
    """A parent trained on parcels.gpkg gives its extent head to a run on fields.shp."""
    import keras

    parent = network_of(tiny_model)
    extent = next(n for n, r in roles_of(tiny_model).items() if r == "extent")
    network = replace(parent, heads=tuple("fields" if h == extent else h for h in parent.heads))
    roles = {"fields": "extent", "boundary": "boundary"}
    sources = head_sources(tiny_model, network, roles)
    assert sources == {"fields": extent, "boundary": "boundary"}
    child = build_model(network)
    record = load_parent_weights(child, tiny_model, sources)
    assert record["heads"]["fields"] == extent
    saved = keras.models.load_model(tiny_model / MODEL_NAME, compile=False)
    for suffix in ("_conv", "_bn", ""):
        mine = child.get_layer(f"head_fields{suffix}").get_weights()
        theirs = saved.get_layer(f"head_{extent}{suffix}").get_weights()
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_fine_tuning_records_its_parent_in_the_card(tiny_chips, tiny_model, tmp_path):
    from geoseg import train

    summary = train(tiny_chips, tmp_path / "child", epochs=1, seed=1, init_from=str(tiny_model),
                    **TINY_TRAINING)  # fmt: skip
    parent = summary.card["parent"]
    assert parent["path"] == str(tiny_model.absolute())
    assert (
        parent["card_sha256"] == hashlib.sha256((tiny_model / CARD_NAME).read_bytes()).hexdigest()
    )
    assert summary.card["training"]["init_from"] == str(tiny_model)


def test_bad_parents_are_one_line(tiny_chips, tiny_model, tmp_path):
    def train(*extra):
        return run("train", tiny_chips, "--epochs", "1", "--base-filters", "4", "--depth", "2",
                   "--folds", "1", *extra)  # fmt: skip

    (tmp_path / "empty").mkdir()
    assert_one_line_error(
        train("--init-from", tmp_path / "empty", "--out", tmp_path / "m"),
        "not a geoseg model directory",
    )
    assert_one_line_error(
        run("train", tiny_chips, "--init-from", tiny_model, "--out", tmp_path / "m2"),
        "--depth 2 where this run has 4",
    )
    copy = tmp_path / "parent"
    shutil.copytree(tiny_model, copy)
    assert_one_line_error(train("--init-from", copy, "--out", copy, "--overwrite"), "input")
    assert read_model_card(copy)["created"] == read_model_card(tiny_model)["created"]


def test_init_from_and_encoder_weights_are_refused_together(tiny_model):
    from geoseg.training.settings import TrainSettings

    settings = TrainSettings(encoder="vgg16", encoder_weights="none", init_from=str(tiny_model))
    with pytest.raises(ParameterError, match="give one"):
        settings.check()
    with pytest.raises(InputFileError):
        TrainSettings(init_from="/nowhere/model").check()
