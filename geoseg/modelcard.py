"""The model directory's contract: ``geoseg.json`` (the model card) next to ``model.keras``."""

from __future__ import annotations

import json
from pathlib import Path

from geoseg.errors import InputFileError

CARD_NAME = "geoseg.json"
MODEL_NAME = "model.keras"
SCHEMA_VERSION = 1
REQUIRED = ("classes", "bands", "chip_size", "normalization", "class_weights", "threshold")


def write_model_card(path: Path, card: dict) -> None:
    """Write ``card`` as JSON (strict: no NaN or infinity, which other tools cannot read)."""
    Path(path).write_text(json.dumps(card, indent=2, allow_nan=False) + "\n")


def read_model_card(model_dir: str | Path) -> dict:
    """Read and check the card of a model directory written by ``geoseg train``."""
    model_dir = Path(model_dir)
    card_path = model_dir / CARD_NAME
    if not (model_dir / MODEL_NAME).is_file() or not card_path.is_file():
        raise InputFileError(
            f"{model_dir} is not a geoseg model directory (needs {MODEL_NAME} and {CARD_NAME})"
        )
    try:
        card = json.loads(card_path.read_text())
        missing = [key for key in REQUIRED if key not in card]
    except (ValueError, TypeError) as exc:
        raise InputFileError(f"{card_path}: not valid JSON ({exc})") from None
    if missing:
        raise InputFileError(f"{card_path}: missing {', '.join(missing)}")
    if set(card["threshold"]) != set(card["classes"]):
        raise InputFileError(f"{card_path}: thresholds do not match the classes")
    return card
