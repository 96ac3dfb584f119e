"""Chips written together from one GDAL file read back as if GDAL had written each one."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from scipy import ndimage

from geoseg.tiling.chip_files import UnexpectedLayout, chip_block_size, read_ifds, write_stacked
from geoseg.tiling.chips import CODECS, _write_tiff, chip_profile

NORTH_UP = Affine(0.5, 0, 500_000.0, 0, -0.5, 5_300_000.0)
SOUTH_UP = Affine(0.5, 0, 500_000.0, 0, 0.5, 5_300_000.0)
ROTATED = Affine(0.4, 0.3, 500_000.0, 0.3, -0.4, 5_300_000.0)

CASES = {
    "rgb uint8": dict(count=3, dtype="uint8", nodata=None, transform=NORTH_UP),
    "int16 with nodata": dict(count=4, dtype="int16", nodata=-999, transform=NORTH_UP),
    "float32 south-up": dict(count=1, dtype="float32", nodata=None, transform=SOUTH_UP),
    "uint16 rotated": dict(count=2, dtype="uint16", nodata=0, transform=ROTATED),
}


def chips_of(count: int, dtype: str, n: int = 5, size: int = 64, seed: int = 0) -> list:
    """Smooth fields plus noise, like imagery."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((n, count, size, size)), (0, 0, 4, 4))
    data = 200 * smooth + rng.normal(0, 3, smooth.shape)
    return list(data.astype(dtype))


def transforms_of(grid: Affine, n: int, size: int) -> list[Affine]:
    return [grid @ Affine.translation(size * (k % 3), size * (k // 3)) for k in range(n)]


def describe(path) -> dict:
    """Everything a reader sees in a GeoTIFF."""
    with rasterio.open(path) as src:
        return {
            "profile": src.profile,
            "tags": src.tags(),
            "structure": src.tags(ns="IMAGE_STRUCTURE"),
            "descriptions": src.descriptions,
            "colorinterp": src.colorinterp,
            "mask_flags": src.mask_flag_enums,
            "data": src.read(),
            "valid": src.dataset_mask(),
        }


def assert_same_files(ours, gdal) -> None:
    for mine, reference in zip(ours, gdal):
        a, b = describe(mine), describe(reference)
        for key in ("data", "valid"):
            np.testing.assert_array_equal(a.pop(key), b.pop(key))
        assert a == b


def write_both(tmp_path, chips, transforms, profile, descriptions, valid=None):
    """Our stacked files and GDAL's own, one file per chip, for the same chips."""
    ours = [tmp_path / f"ours_{k}.tif" for k in range(len(chips))]
    gdal = [tmp_path / f"gdal_{k}.tif" for k in range(len(chips))]
    write_stacked(ours, chips, transforms, profile, descriptions, valid)
    for k, (path, transform) in enumerate(zip(gdal, transforms)):
        mask = None if valid is None else valid[k]
        _write_tiff(path, profile | {"transform": transform}, chips[k], descriptions, mask)
    return ours, gdal


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("case", CASES)
def test_stacked_chips_read_like_gdal_wrote_each(tmp_path, codec, case):
    spec = CASES[case]
    chips = chips_of(spec["count"], spec["dtype"])
    transforms = transforms_of(spec["transform"], len(chips), 64)
    profile = chip_profile("EPSG:32633", spec["count"], spec["dtype"], 64, spec["nodata"], codec)
    descriptions = tuple(f"band {b}" for b in range(spec["count"]))
    assert_same_files(*write_both(tmp_path, chips, transforms, profile, descriptions))
    with rasterio.open(tmp_path / "ours_4.tif") as chip:
        assert chip.transform == transforms[4]
        np.testing.assert_array_equal(chip.read(), chips[4])


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_internal_masks_of_stacked_chips(tmp_path, codec):
    chips = chips_of(3, "uint8", n=3)
    valid = [np.ones((64, 64), bool) for _ in chips]
    valid[0][:, 40:] = False
    valid[2][50:] = False
    profile = chip_profile("EPSG:32633", 3, "uint8", 64, None, codec)
    ours, gdal = write_both(
        tmp_path, chips, transforms_of(NORTH_UP, 3, 64), profile, (None,) * 3, valid
    )
    assert_same_files(ours, gdal)
    with rasterio.open(ours[0]) as chip:
        assert (chip.dataset_mask() > 0).tolist() == valid[0].tolist()


def test_masks_are_compressed_without_predictor(tmp_path):
    masks = [np.where(c > 100, 1, 0).astype("uint8") for c in chips_of(2, "uint8")]
    profile = chip_profile("EPSG:32633", 2, "uint8", 64, 255, "zstd", mask=True)
    ours, gdal = write_both(
        tmp_path, masks, transforms_of(NORTH_UP, 5, 64), profile, ("parcels", "boundary")
    )
    assert_same_files(ours, gdal)
    structure = describe(ours[0])["structure"]
    assert structure["COMPRESSION"] == "ZSTD" and "PREDICTOR" not in structure


def test_large_chips_get_tiles_that_divide_them(tmp_path):
    assert [chip_block_size(s) for s in (64, 256, 512, 640, 1024, 1056)] == [
        64,
        256,
        512,
        320,
        512,
        352,
    ]
    chips = chips_of(3, "uint8", n=2, size=640)
    profile = chip_profile("EPSG:32633", 3, "uint8", 640, None, "zstd")
    ours, gdal = write_both(tmp_path, chips, transforms_of(NORTH_UP, 2, 640), profile, None)
    assert_same_files(ours, gdal)
    (entries,) = read_ifds(ours[1].read_bytes())
    assert len(entries[324][2]) == 4 * 3 * 4  # 2 x 2 tiles of 320 px in each of 3 bands


def test_a_layout_it_cannot_split_writes_nothing(tmp_path):
    chips = chips_of(1, "uint8", n=2)
    profile = chip_profile("EPSG:32633", 1, "uint8", 64, None, "zstd")
    profile |= {"blockxsize": 48, "blockysize": 48}  # tiles that straddle two chips
    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    with pytest.raises(UnexpectedLayout, match="tiles do not divide"):
        write_stacked(paths, chips, transforms_of(NORTH_UP, 2, 64), profile)
    assert not any(p.exists() for p in paths)
