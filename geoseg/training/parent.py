"""Fine-tuning: a run that starts from the weights of an earlier geoseg model (its parent),
checked to have the same network, bands and targets."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from geoseg.contracts import CARD_NAME, MODEL_NAME, ModelCard, read_model_card
from geoseg.errors import ParameterError
from geoseg.models.config import UNetConfig, config_from_record
from geoseg.models.unet import member_name

logger = logging.getLogger(__name__)


def parent_card(path: str | Path) -> ModelCard:
    """The card of the model ``init_from`` names (one line when it is not a model folder)."""
    return read_model_card(path)


def check_parent(path: str | Path, network: UNetConfig) -> None:
    """Refuse a parent whose network cannot give its weights to ``network``: another task,
    encoder, band count, depth or width, or a target this run has and the parent lacks."""
    parent = config_from_record(parent_card(path)["model"])
    differences = [
        (name, getattr(parent, name), getattr(network, name))
        for name in ("task", "encoder", "bands", "depth", "base_filters")
        if getattr(parent, name) != getattr(network, name)
    ]
    if differences:
        name, theirs, mine = differences[0]
        what = {"bands": "input bands", "base_filters": "`base_filters`", "depth": "`depth`",
                "task": "`task`", "encoder": "`encoder`"}[name]  # fmt: skip
        raise ParameterError(
            f"`init_from` {path} has {what} {theirs} where this run has {mine}: a model starts "
            "only from a model of the same network"
        )
    missing = [h for h in network.heads if h not in parent.heads]
    if missing:
        raise ParameterError(
            f"`init_from` {path} has no target {', '.join(missing)} (it has "
            f"{', '.join(parent.heads)}): train from scratch, or tile without it"
        )


def load_parent_weights(model, path: str | Path, member: int = 0) -> dict:
    """Copy the parent's weights into ``model`` (one network, not an ensemble) layer by layer
    (by name; a head the parent has for a target this run lacks is skipped). From an ensemble
    parent, member ``member`` (modulo its size) gives them. Returns the card's record."""
    import keras

    path = Path(path)
    card = parent_card(path)
    saved = keras.models.load_model(path / MODEL_NAME, compile=False)
    members = int(card["model"].get("members", 1))
    source = saved.get_layer(member_name(member % members)) if members > 1 else saved
    weights = {layer.name: layer for layer in _layers(source)}
    copied = 0
    for layer in _layers(model):
        theirs = weights.get(layer.name)
        if not layer.weights or theirs is None:
            continue
        if [w.shape for w in layer.weights] != [w.shape for w in theirs.weights]:
            raise ParameterError(f"`init_from` {path}: layer {layer.name} has another shape")
        layer.set_weights(theirs.get_weights())
        copied += 1
    if not copied:
        raise ParameterError(f"`init_from` {path}: no layer of its network matches this run's")
    logger.info("started from %s (%d layers%s)", path, copied,
                f", ensemble member {member % members}" if members > 1 else "")  # fmt: skip
    return {
        "path": str(path.absolute()),
        "created": card.get("created"),
        "card_sha256": hashlib.sha256((path / CARD_NAME).read_bytes()).hexdigest(),
        "member": member % members if members > 1 else None,
        "layers": copied,
    }


def _layers(model):
    """Every layer of ``model``, nested models (a keras.applications encoder) included."""
    for layer in model.layers:
        if isinstance(layer, type(model)) or hasattr(layer, "layers"):
            yield from _layers(layer)
        else:
            yield layer
