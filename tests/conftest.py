"""Fixtures: small generated GeoTIFFs and vector files, and the real samples in ../shared/data."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

import geoseg  # noqa: F401  (GDAL before TensorFlow, even where a test module imports keras first)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def make_raster(tmp_path):
    """Write a GeoTIFF: ``make_raster(width=, height=, count=, dtype=, crs=, nodata=, ...)``."""
    counter = iter(range(10_000))

    def factory(
        width: int = 300,
        height: int = 200,
        count: int = 3,
        dtype: str = "uint8",
        crs: str | None = "EPSG:32633",
        transform: Affine | None = None,
        nodata: float | None = None,
        data: np.ndarray | None = None,
        name: str | None = None,
        seed: int = 0,
    ) -> Path:
        path = tmp_path / (name or f"raster_{next(counter)}.tif")
        if transform is None:
            transform = Affine(0.5, 0, 500_000.0, 0, -0.5, 5_300_000.0)
        if data is None:
            info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
            low, high = (max(info.min, -1000), min(info.max, 5000)) if info else (-1.0, 1.0)
            rng = np.random.default_rng(seed)
            data = rng.uniform(low + 1, high, (count, height, width)).astype(dtype)
        profile = dict(
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype=dtype,
            nodata=nodata,
            tiled=True,
            blockxsize=64,
            blockysize=64,
        )
        if crs is not None:
            profile["crs"] = crs
        if transform is not False:
            profile["transform"] = transform
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # rasters made without one
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data)
        return path

    return factory


@pytest.fixture
def make_vector(tmp_path):
    """Write a vector file: ``make_vector(geoms, crs, name='labels.gpkg', **columns)``."""

    def factory(geoms, crs="EPSG:32633", name="labels.gpkg", **columns) -> Path:
        path = tmp_path / name
        gpd.GeoDataFrame(columns, geometry=list(geoms), crs=crs).to_file(path, engine="pyogrio")
        return path

    return factory


def shared_sample(*parts: str) -> Path:
    """A path in ../shared/data, or skip the test when the samples are absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"sample data not available: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_chips(tmp_path_factory) -> Path:
    """A 512 px synthetic cadastre scene cut into 64 px chips (classes parcels, boundary)."""
    from geoseg import synth, tile

    root = tmp_path_factory.mktemp("tiny")
    synth(str(root / "scene"), size=512, seed=3, buildings=False)
    tile(
        [str(root / "scene" / "image.tif")],
        str(root / "chips"),
        labels=str(root / "scene" / "parcels.gpkg"),
        boundary_width="1.5",
        size=64,
        keep_empty=1.0,
        workers=1,
    )
    return root / "chips"


TINY_TRAINING = dict(
    base_filters=4, depth=2, batch_size=8, mixed_precision="off", folds=1, epoch_chips=0
)  # one pass per epoch: tests check behaviour, not the fit


@pytest.fixture(scope="session")
def tiny_model(tiny_chips, tmp_path_factory) -> Path:
    """A tiny U-Net trained for 2 epochs on ``tiny_chips`` (64 px chips, parcels + boundary)."""
    from geoseg import train

    out = tmp_path_factory.mktemp("model") / "model"
    train(tiny_chips, out, epochs=2, seed=5, **TINY_TRAINING)
    return out


def add_distance_band(chips: Path) -> None:
    """Append a ``distance`` regression band to every mask of ``chips`` (in place).

    Per connected interior of ``parcels`` and not ``boundary``, computed on the whole scene
    mosaicked from the chips: distance to the interior's edge / its largest, as round(254 v).
    """
    import json

    from scipy import ndimage

    chips_read = {}
    for path in sorted((chips / "masks").glob("*.tif")):
        with rasterio.open(path) as src:
            chips_read[path] = (src.transform, src.read())
            size, res = src.width, src.transform.a
    left = min(t.c for t, _ in chips_read.values())
    top = max(t.f for t, _ in chips_read.values())
    offsets = {
        path: (round((top - t.f) / res), round((t.c - left) / res), data)
        for path, (t, data) in chips_read.items()
    }
    height = max(r for r, _, _ in offsets.values()) + size
    width = max(c for _, c, _ in offsets.values()) + size
    scene = np.full((2, height, width), 255, np.uint8)
    for row, col, data in offsets.values():
        scene[:, row : row + size, col : col + size] = data
    interior = (scene[0] == 1) & (scene[1] == 0)
    labels, count = ndimage.label(interior)
    edt = ndimage.distance_transform_edt(interior)
    largest = np.asarray(ndimage.maximum(edt, labels, np.arange(1, count + 1)))
    value = np.where(labels > 0, edt / np.r_[1.0, largest][labels], 0.0)
    distance = np.rint(254 * value).astype(np.uint8)
    distance[scene[0] == 255] = 255
    for path, (row, col, data) in offsets.items():
        with rasterio.open(path) as src:
            profile = src.profile | {"count": 3}
            names = (*src.descriptions, "distance")
        band = distance[row : row + size, col : col + size]
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.concatenate([data, band[None]]))
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
    record = json.loads((chips / "dataset.json").read_text())
    record["classes"] = [*record["classes"], "distance"]
    record["targets"] = {
        "parcels": {"kind": "class", "role": "extent"},
        "boundary": {"kind": "class", "role": "boundary"},
        "distance": {"kind": "regression", "role": "distance"},
    }
    valid = distance[distance != 255]
    record["class_frequencies"]["distance"] = float(valid.mean() / 254) if valid.size else 0.0
    (chips / "dataset.json").write_text(json.dumps(record, indent=2))


@pytest.fixture(scope="session")
def tiny_multitask_chips(tiny_chips, tmp_path_factory) -> Path:
    """``tiny_chips`` with a third mask band, the regression target ``distance``."""
    import shutil

    chips = tmp_path_factory.mktemp("multitask") / "chips"
    shutil.copytree(tiny_chips, chips)
    add_distance_band(chips)
    return chips


@pytest.fixture(scope="session")
def tiny_multitask_model(tiny_multitask_chips, tmp_path_factory) -> Path:
    """A tiny U-Net trained for 2 epochs on parcels (extent), boundary and distance."""
    from geoseg import train

    out = tmp_path_factory.mktemp("multitask_model") / "model"
    train(tiny_multitask_chips, out, epochs=2, seed=5, **TINY_TRAINING)
    return out
