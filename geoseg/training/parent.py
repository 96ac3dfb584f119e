"""Fine-tuning: a run that starts from the weights of an earlier geoseg model (its parent),
checked to have the same network, bands and targets."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

from geoseg.contracts import CARD_NAME, MODEL_NAME, read_model_card
from geoseg.errors import ParameterError
from geoseg.models.config import UNetConfig, config_from_record, head_key
from geoseg.models.unet import member_name

logger = logging.getLogger(__name__)


def head_sources(
    path: str | Path, network: UNetConfig, head_roles: Mapping[str, str | None]
) -> dict[str, str]:
    """Which head of the parent gives each head of ``network`` its weights: the head of the
    same role (field extent, boundary, distance: a parent trained on ``parcels.gpkg`` gives its
    extent to a run whose polygons come from ``fields.shp``), else of the same name. Refuses a
    parent of another network, or without one of this run's targets, naming the difference."""
    card = read_model_card(path)
    parent = config_from_record(card["model"])
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
    by_role = card.roles if card.task != "multiclass" else {}
    sources = {}
    for head in network.heads:
        role = head_roles.get(head)
        source = by_role.get(role) if role else None
        source = source or (head if head in parent.heads and head not in by_role.values() else None)
        if source is None:
            what = f"{role} target" if role else f"target {head}"
            raise ParameterError(
                f"`init_from` {path} has no {what} (it has {', '.join(parent.heads)}): train "
                "from scratch, or tile without it"
            )
        sources[head] = source
    return sources


def load_parent_weights(model, path: str | Path, sources: Mapping[str, str], member: int = 0):
    """Copy the parent's weights into ``model`` (one network, not an ensemble) layer by layer,
    by name, each head from the parent's head ``sources`` names (a parent head no target takes
    is skipped). From an ensemble parent, member ``member`` (modulo its size) gives them.
    Returns the card's record of the parent."""
    import keras

    path = Path(path)
    card = read_model_card(path)
    saved = keras.models.load_model(path / MODEL_NAME, compile=False)
    members = int(card["model"].get("members", 1))
    source = saved.get_layer(member_name(member % members)) if members > 1 else saved
    weights = {layer.name: layer for layer in _layers(source)}
    renamed = {
        f"head_{head_key(mine)}": f"head_{head_key(theirs)}" for mine, theirs in sources.items()
    }
    copied = 0
    for layer in _layers(model):
        theirs = weights.get(_parent_name(layer.name, renamed))
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
        "heads": dict(sources),
    }


def _parent_name(name: str, renamed: Mapping[str, str]) -> str:
    """The parent's name of layer ``name``: a head's layers take their source head's name."""
    for mine, theirs in sorted(renamed.items(), key=lambda pair: -len(pair[0])):
        if name == mine or name.startswith(mine + "_"):
            return theirs + name[len(mine) :]
    return name


def _layers(model):
    """Every layer of ``model``, nested models (a keras.applications encoder) included."""
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model (an encoder, an ensemble member)
            yield from _layers(layer)
        else:
            yield layer
