"""The model's forward pass for inference: loaded once per process, compiled, fixed batch shape."""

from __future__ import annotations

import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.contracts import MODEL_NAME, ModelCard
from geoseg.errors import InputFileError, first_line


@dataclass(frozen=True)
class ForwardSpec:
    """What a worker needs to build the forward pass; small, hashable and picklable."""

    model_dir: str
    model: tuple[tuple[str, object], ...]  # the card's "model" record, as items
    version: tuple[int, int]  # model.keras's file_version: a retrained model is loaded again
    chip_size: int
    bands: int
    batch_size: int
    tta: bool = False
    device: str = "auto"
    precision: str = "auto"

    @classmethod
    def from_card(cls, model_dir: str | Path, card: ModelCard, **options) -> ForwardSpec:
        """The spec of a ``geoseg train`` model folder and its card; ``options`` as fields."""
        model_dir = Path(model_dir).absolute()
        return cls(
            model_dir=str(model_dir),
            model=tuple((k, _hashable(v)) for k, v in card["model"].items()),
            version=file_version(model_dir / MODEL_NAME),
            chip_size=card.chip_size,
            bands=card.band_count,
            **options,
        )


def file_version(path: Path) -> tuple[int, int]:
    """The size and modification time (ns) of ``path``: a file written again differs."""
    try:
        stat = path.stat()
    except OSError:
        raise InputFileError(f"{path}: no such file") from None
    return stat.st_size, stat.st_mtime_ns


def _hashable(value):
    """Lists of the card (e.g. the model's head names) as tuples, so the spec can be a key."""
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def dihedral(batch: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0..7) flip/rotation of a (n, h, w, c) batch of square chips."""
    turned = np.rot90(batch, k % 4, axes=(1, 2))
    return turned[:, :, ::-1] if k >= 4 else turned


def undo_dihedral(batch: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`dihedral`."""
    unflipped = batch[:, :, ::-1] if k >= 4 else batch
    return np.rot90(unflipped, -(k % 4), axes=(1, 2))


def average_dihedral(run, batch: np.ndarray) -> np.ndarray:
    """The mean of ``run`` over the 8 flips/rotations of ``batch``, each turned back."""
    return sum(undo_dihedral(run(dihedral(batch, k)), k) for k in range(8)) / 8.0


def load_inference_model(model_dir: str | Path, model_record: dict, policy: str):
    """The saved float32 model, rebuilt under ``policy`` (e.g. mixed_bfloat16) when asked."""
    import keras

    from geoseg.models.config import config_from_record
    from geoseg.models.unet import build_model

    path = Path(model_dir) / MODEL_NAME
    if path.is_file() and not zipfile.is_zipfile(path):
        raise InputFileError(f"{path}: cannot load the model (not a Keras archive: damaged?)")
    try:
        saved = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged archive
        raise InputFileError(f"{path}: cannot load the model ({first_line(exc)})") from None
    bands = model_record.get("bands")
    if bands and saved.input_shape[-1] != bands:
        raise InputFileError(
            f"{model_dir}: its card lists {bands} bands but the model takes "
            f"{saved.input_shape[-1]}; the card and model.keras are of different runs"
        )
    if policy == "float32":
        return saved
    config = config_from_record(model_record)
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model(config)
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights(saved.get_weights())
    return model


class ForwardPass:
    """``forward(chips)`` -> probabilities, for (n <= batch_size, size, size, bands) float32.

    The model runs in a ``tf.function`` with a fixed input shape (short batches are padded), so
    it is traced once. With ``tta`` the 8 flips/rotations of each chip are averaged.
    """

    def __init__(self, spec: ForwardSpec):
        import tensorflow as tf

        from geoseg.device import resolve_precision, use_device

        self.spec = spec
        self.gpu = use_device(spec.device)
        self.precision = resolve_precision(spec.precision, gpu=self.gpu, inference=True)
        self._device = "/GPU:0" if self.gpu else "/CPU:0"
        with tf.device(self._device):
            model = load_inference_model(spec.model_dir, dict(spec.model), self.precision)
        shape = (spec.batch_size, spec.chip_size, spec.chip_size, spec.bands)

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
        def run(x):
            return tf.cast(model(x, training=False), tf.float32)

        self._run = run

    def _once(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        with tf.device(self._device):
            return self._run(np.ascontiguousarray(batch)).numpy()

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        count = len(chips)
        batch = np.zeros((self.spec.batch_size, *chips.shape[1:]), np.float32)
        batch[:count] = chips
        if not self.spec.tta:
            return self._once(batch)[:count]
        return average_dihedral(self._once, batch)[:count]


_PASSES: dict[ForwardSpec, ForwardPass] = {}
_LOCK = threading.Lock()


def forward_pass(spec: ForwardSpec) -> ForwardPass:
    """The process's forward pass for ``spec``: the model is loaded on first use only, and
    again when its file has changed (the passes of its older versions are dropped)."""
    with _LOCK:
        if spec not in _PASSES:
            for stale in [
                s for s in _PASSES if s.model_dir == spec.model_dir and s.version != spec.version
            ]:
                del _PASSES[stale]
            _PASSES[spec] = ForwardPass(spec)
        return _PASSES[spec]
