"""Parcels as GeoParquet with fiboa's core columns (as Fields of The World writes them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from helpers import run

from geoseg.contracts import PredictionTags
from geoseg.delineation.vectorizing import vectorize
from geoseg.io.vector_files import FIBOA_COLLECTION, hectares_and_metres

FIBOA = ["id", "area", "perimeter", "determination_method", "determination_datetime"]
GEOSEG = ["class", "pixels", "mean_probability"]
METRES = Affine(10, 0, 500_000, 0, -10, 5_800_000)  # 10 m pixels in UTM


def boundary_grid(rows: int = 3, cols: int = 4, cell: int = 30, line: int = 2) -> np.ndarray:
    """A boundary probability raster (0..255): a grid of cells outlined by 2 px lines."""
    boundary = np.zeros((rows * cell + line, cols * cell + line), np.uint8)
    for r in range(rows + 1):
        boundary[r * cell : r * cell + line, :] = 230
    for c in range(cols + 1):
        boundary[:, c * cell : c * cell + line] = 230
    return boundary


@pytest.fixture
def boundary_raster(make_raster):
    """A tagged boundary prediction on a grid of 12 cells, in ``crs`` with ``transform``."""

    def factory(crs="EPSG:32633", transform=METRES):
        grid = boundary_grid()
        path = make_raster(width=grid.shape[1], height=grid.shape[0], count=1, data=grid[None],
                           crs=crs, transform=transform, name="boundary.tif")  # fmt: skip
        with rasterio.open(path, "r+") as dst:
            dst.set_band_description(1, "boundary")
            dst.update_tags(**PredictionTags(("boundary",), {}).to_tags())
        return path

    return factory


def test_parcels_parquet_has_fiboa_columns_in_hectares_and_metres(boundary_raster, tmp_path):
    out = tmp_path / "parcels.parquet"
    before = datetime.now(UTC).replace(microsecond=0)
    result = run("vectorize", boundary_raster(), "-o", out, "--mode", "parcels")
    assert result.exit_code == 0, result.output
    parcels = gpd.read_parquet(out)
    assert list(parcels.columns) == [*FIBOA, *GEOSEG, "geometry"]
    assert len(parcels) == 12 and parcels.crs == "EPSG:32633"
    assert parcels["id"].is_unique and parcels["id"].map(type).eq(str).all()
    assert parcels["area"].dtype == parcels["perimeter"].dtype == np.float64
    np.testing.assert_allclose(parcels["area"], parcels.geometry.area / 10_000, rtol=1e-12)
    np.testing.assert_allclose(parcels["perimeter"], parcels.geometry.length, rtol=1e-12)
    assert parcels["area"].between(7.84, 10.24).all()  # 28-32 px of 10 m a side, in ha
    assert (parcels["determination_method"] == "auto-imagery").all()
    stamps = parcels["determination_datetime"]
    assert isinstance(stamps.dtype, pd.DatetimeTZDtype) and str(stamps.dt.tz) == "UTC"
    assert stamps.nunique() == 1 and before <= stamps.iloc[0] <= datetime.now(UTC)
    assert (parcels["class"] == "parcel").all() and (parcels["pixels"] > 0).all()


def test_geoparquet_metadata_declares_geometry_crs_and_fiboa(boundary_raster, tmp_path):
    out = tmp_path / "parcels.parquet"
    vectorize(boundary_raster(), out, mode="parcels")
    schema = pq.read_schema(out)
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert pyproj.CRS.from_json_dict(column["crs"]) == pyproj.CRS("EPSG:32633")
    assert json.loads(schema.metadata[b"fiboa"]) == FIBOA_COLLECTION
    assert FIBOA_COLLECTION["fiboa_version"] == "0.2.0"
    assert schema.field("determination_datetime").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("id").type == pa.string()
    table = pq.read_table(out)
    assert shapely.from_wkb(table["geometry"].to_numpy()).tolist()  # plain WKB polygons


def test_regions_keep_their_columns_and_no_fiboa_key(boundary_raster, tmp_path):
    out = tmp_path / "regions.parquet"
    vectorize(boundary_raster(), out, mode="regions")
    regions = gpd.read_parquet(out)
    assert list(regions.columns) == ["class", "area", "pixels", "mean_probability", "geometry"]
    np.testing.assert_allclose(regions["area"], regions.geometry.area)  # CRS units squared
    assert b"fiboa" not in pq.read_schema(out).metadata


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb"])
def test_every_format_gets_the_same_parcel_columns(suffix, boundary_raster, tmp_path):
    raster = boundary_raster()
    vectorize(raster, tmp_path / "p.parquet", mode="parcels")
    vectorize(raster, tmp_path / f"p{suffix}", mode="parcels")
    reference = gpd.read_parquet(tmp_path / "p.parquet")
    other = gpd.read_file(tmp_path / f"p{suffix}")
    assert list(other.columns) == list(reference.columns)
    key = ["area", "perimeter", "pixels"]
    rows = [f.sort_values(key)[[*FIBOA[1:4], *GEOSEG]].reset_index(drop=True)
            for f in (reference, other)]  # fmt: skip
    pd.testing.assert_frame_equal(rows[0], rows[1], check_dtype=False)
    assert str(other["determination_datetime"].dt.tz) == "UTC"


def test_a_geographic_crs_is_measured_on_the_ellipsoid(boundary_raster, tmp_path):
    degrees = Affine(0.0001, 0, 11.5, 0, -0.0001, 52.1)  # 6.9 x 11.1 m pixels
    vectorize(boundary_raster("EPSG:4326", degrees), tmp_path / "p.parquet", mode="parcels")
    parcels = gpd.read_parquet(tmp_path / "p.parquet")
    assert parcels.crs == "EPSG:4326"
    local = parcels.to_crs("+proj=laea +lat_0=52.1 +lon_0=11.5 +datum=WGS84")  # equal-area
    np.testing.assert_allclose(parcels["area"], local.geometry.area / 10_000, rtol=1e-4)
    np.testing.assert_allclose(parcels["perimeter"], local.geometry.length, rtol=1e-3)
    assert parcels["area"].between(5.3, 8.7).all()  # 28-32 px a side of 6.9 x 11.1 m


def test_hectares_and_metres_convert_the_crs_unit():
    square = np.array([shapely.box(0, 0, 1000, 1000)])  # 1000 US survey feet a side
    hectares, metres = hectares_and_metres(square, "EPSG:2263")
    foot = 1200 / 3937
    np.testing.assert_allclose(hectares, (1000 * foot) ** 2 / 10_000)
    np.testing.assert_allclose(metres, 4000 * foot)
    empty = hectares_and_metres(np.array([], dtype=object), "EPSG:4326")
    assert empty[0].shape == empty[1].shape == (0,)
