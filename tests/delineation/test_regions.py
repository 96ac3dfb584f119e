"""Parcels from field extent, boundary and distance: watershed, extent, block invariance."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from helpers import assert_one_line_error, run
from scipy import ndimage

from geoseg.contracts import Delineation, PredictionTags
from geoseg.delineation.border_merge import BorderMerge
from geoseg.delineation.polygon_settings import PolygonSettings
from geoseg.delineation.regions import (
    REACH,
    confident_parcels,
    delineate_parcels,
    delineation_levels,
    instance_labels_from_masks,
    join_level,
    parcel_labels,
)
from geoseg.delineation.vectorizing import (
    VectorJob,
    delineation_thresholds,
    vectorize,
    vectorize_block,
)
from geoseg.errors import ParameterError
from geoseg.io.raster import block_windows, open_raster_info
from geoseg.metrics.objects import match_label_images

PIXEL_AREA = 0.25  # make_raster's 0.5 m pixels
THRESHOLDS = Delineation(extent=0.5, boundary=0.5, marker=0.5)
TARGETS = {
    "parcels": {"kind": "class", "role": "extent"},
    "boundary": {"kind": "class", "role": "boundary"},
    "distance": {"kind": "regression", "role": "distance"},
}


def field_grid(noise=0.0, seed=0):
    """Extent, boundary and distance (uint8, 3 x 372 x 437) of 12 cells of varied sizes, one a
    wood (not field); a 10 px gap in the boundary between cells 5 and 6; and the cell ids."""
    widths, heights, line = (30, 60, 300, 45), (40, 280, 50), 2
    xs, ys = np.r_[0, np.cumsum(widths)], np.r_[0, np.cumsum(heights)]
    cells = np.zeros((ys[-1] + line, xs[-1] + line), np.int32)
    for r in range(len(heights)):
        for c in range(len(widths)):
            cells[ys[r] + line : ys[r + 1], xs[c] + line : xs[c + 1]] = r * len(widths) + c + 1
    wood = 2  # the cell in row 0, column 1
    fields = (cells > 0) & (cells != wood)
    extent = ndimage.binary_dilation(fields, iterations=2)  # outlines of fields are field
    edt = ndimage.distance_transform_edt(cells > 0)
    largest = np.r_[1.0, ndimage.maximum(edt, cells, np.arange(1, cells.max() + 1))]
    distance = np.where(fields, edt / largest[cells], 0.0)
    boundary = (cells == 0).astype(float)
    boundary[ys[1] + 100 : ys[1] + 110, xs[1] : xs[1] + line] = 0  # the gap
    bands = np.stack([0.9 * extent, 0.9 * boundary, distance])
    if noise:  # smooth noise, as a model's outputs have
        rough = np.random.default_rng(seed).normal(0, 1, bands.shape)
        smooth = ndimage.gaussian_filter(rough, (0, 3, 3))
        bands = bands + noise * smooth / smooth.std()
    return np.clip(np.rint(bands * 255), 0, 255).astype(np.uint8), cells, wood


@pytest.fixture
def prediction(make_raster):
    """A 3-band prediction GeoTIFF with the tags ``geoseg predict`` writes."""

    def factory(bands, names=("parcels", "boundary", "distance"), targets=None, **tags):
        path = make_raster(width=bands.shape[2], height=bands.shape[1], count=len(names),
                           data=bands)  # fmt: skip
        targets = targets or {name: TARGETS[name] for name in names}
        with rasterio.open(path, "r+") as dst:
            for band, name in enumerate(names, start=1):
                dst.set_band_description(band, name)
            dst.update_tags(**PredictionTags(tuple(names), targets=targets, **tags).to_tags())
        return path

    return factory


def purity(labels, cells):
    """Per parcel, the share of its cell pixels (outlines aside) in its main cell."""
    shares = []
    for label in np.unique(labels[labels > 0]):
        counts = np.bincount(cells[(labels == label) & (cells > 0)])
        shares.append(counts.max() / counts.sum())
    return np.array(shares)


def test_a_boundary_gap_keeps_two_parcels_where_the_distance_separates_them():
    bands, cells, wood = field_grid()
    labels = delineate_parcels(*bands, None, THRESHOLDS)
    assert labels.dtype == np.int32
    assert len(np.unique(labels[labels > 0])) == cells.max() - 1  # every field, not the wood
    assert (purity(labels, cells) == 1).all()
    fields = (cells > 0) & (cells != wood)
    assert (labels[fields] > 0).all()  # the large cell (beyond the watershed's reach) is whole
    assert np.ptp(ndimage.distance_transform_edt(cells > 0)) / 2 > REACH  # ... it is large
    # today's algorithm (boundary only) fuses the two cells across the gap
    old = parcel_labels(bands[1] >= 128, np.ones(cells.shape, bool))
    assert len(np.unique(old[old > 0])) == cells.max() - 1  # the wood, but two cells as one
    assert (purity(old, cells) < 1).any()


def test_pixels_outside_the_field_extent_are_never_in_a_parcel():
    bands, cells, wood = field_grid(noise=0.1)
    bands[2][cells == wood] = 255  # a confident distance in the wood changes nothing
    labels = delineate_parcels(*bands, None, THRESHOLDS)
    assert not labels[bands[0] < 128].any() and not labels[cells == wood].any()
    valid = np.ones(cells.shape, bool)
    valid[:, :50] = False
    assert not delineate_parcels(*bands, valid, THRESHOLDS)[:, :50].any()


def test_probabilities_in_0_1_give_the_labels_of_their_uint8_levels():
    bands, _, _ = field_grid(noise=0.1)
    as_float = [b.astype(np.float32) / 255 for b in bands]
    expected = delineate_parcels(*bands, None, THRESHOLDS)
    assert np.array_equal(delineate_parcels(*as_float, None, THRESHOLDS), expected)


def test_without_distance_the_watershed_of_one_minus_boundary():
    bands, cells, wood = field_grid()
    labels = delineate_parcels(bands[0], bands[1], None, None, THRESHOLDS)
    assert not labels[bands[0] < 128].any()
    assert len(np.unique(labels[labels > 0])) == cells.max() - 2  # the gap fuses two


@pytest.mark.parametrize("noise", [0.0, 0.12])
def test_parcels_do_not_depend_on_the_block_size(noise, prediction, tmp_path):
    bands, cells, _ = field_grid(noise=noise, seed=3)
    path = prediction(bands)
    found = {}
    for size in (64, 150, 4096):
        vectorize(path, tmp_path / f"p{size}.gpkg", mode="parcels", block_size=size)
        found[size] = gpd.read_file(tmp_path / f"p{size}.gpkg", layer="parcels")
    whole = delineate_parcels(*bands, None, THRESHOLDS)
    sizes = sorted(np.bincount(whole.ravel())[1:][np.bincount(whole.ravel())[1:] > 0].tolist())
    for size, parcels in found.items():
        assert len(parcels) == len(found[4096]), size
        assert sorted(parcels.pixels.tolist()) == sizes, size
        assert sorted(np.rint(parcels.area / PIXEL_AREA).astype(int).tolist()) == sizes, size
        assert parcels.is_valid.all() and (parcels.geom_type == "Polygon").all()
        pairs = shapely.equals(parcels.geometry.to_numpy()[:, None], found[4096].geometry.values)
        assert pairs.any(axis=0).all() and pairs.any(axis=1).all(), size
    if not noise:
        assert len(found[4096]) == cells.max() - 1
        np.testing.assert_allclose(found[4096].mean_probability, 0.9, atol=0.01)  # extent's


def test_delineation_thresholds_from_the_tags_and_the_options(prediction, tmp_path):
    bands, cells, _ = field_grid()
    tuned = {"extent": 0.4, "boundary": 0.6, "marker": 0.3}
    path = prediction(bands, delineation=tuned, thresholds={"boundary": 0.7, "distance": 0.2})
    tags = PredictionTags.read(path)
    assert delineation_thresholds(tags) == Delineation(**tuned, parcel=0.0, merge=0.0)
    options = PolygonSettings("parcels", 0.2, marker_threshold=0.8, parcel_threshold=0.6)
    assert delineation_thresholds(tags, options) == (
        Delineation(extent=0.2, boundary=0.2, marker=0.8, parcel=0.6, merge=0.0))  # fmt: skip
    options = PolygonSettings("parcels", extent_threshold=0.7, split=0.1, join=0.6)
    assert delineation_thresholds(tags, options) == Delineation(
        **{**tuned, "extent": 0.7}, split=0.1, join=0.6)  # fmt: skip
    for name, value in (("parcel_threshold", 1.5), ("join", -0.1), ("marker_threshold", 0.0)):
        with pytest.raises(ParameterError, match=f"`{name}` must be in"):
            delineation_thresholds(tags, PolygonSettings("parcels", **{name: value}))
    stored = {"boundary": 0.7, "distance": 0.2}
    untuned = PredictionTags.read(prediction(bands, thresholds=stored))
    assert delineation_thresholds(untuned) == Delineation(
        extent=0.5, boundary=0.7, marker=0.2, parcel=0.0, merge=0.0)  # fmt: skip
    # the extent (0.9) below its threshold: no field, no parcel
    summary = vectorize(path, tmp_path / "p.gpkg", mode="parcels", extent_threshold=0.95)
    assert summary.polygons == 0
    result = run("vectorize", path, "--out", tmp_path / "q.gpkg", "--mode", "parcels",
                 "--marker-threshold", "0.5", "--extent-threshold", "0.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(gpd.read_file(tmp_path / "q.gpkg")) == cells.max() - 1


def test_parcels_of_low_mean_extent_are_dropped_alike_at_any_block_size(prediction, tmp_path):
    bands, cells, _ = field_grid(noise=0.15, seed=2)
    faint = np.isin(cells, [3, 7, 10])  # three fields the model is unsure of
    grown = ndimage.binary_dilation(faint, iterations=3)
    bands[0][grown] = (bands[0][grown] * 0.6).astype(np.uint8)
    path = prediction(bands, delineation={"extent": 0.3, "boundary": 0.5, "marker": 0.4})
    thresholds = Delineation(extent=0.3, boundary=0.5, marker=0.4)
    labels = delineate_parcels(bands[0], bands[1], bands[2], None, thresholds)
    kept = confident_parcels(labels, bands[0], 0.7)
    expected = sorted(np.bincount(kept.ravel())[1:][np.bincount(kept.ravel())[1:] > 0].tolist())
    assert 0 < len(expected) < len(np.unique(labels)) - 1  # some parcels dropped, not all
    for block in (64, 1024):
        vectorize(path, tmp_path / f"p{block}.gpkg", mode="parcels", parcel_threshold=0.7,
                  block_size=block)  # fmt: skip
        found = gpd.read_file(tmp_path / f"p{block}.gpkg")
        assert sorted(found.pixels.tolist()) == expected, block
        assert (found.mean_probability >= 0.7 - 1e-3).all()
    everything = vectorize(path, tmp_path / "all.gpkg", mode="parcels", block_size=64)
    assert everything.polygons == len(np.unique(labels)) - 1


def test_a_prediction_without_extent_keeps_the_boundary_algorithm(prediction, tmp_path):
    bands, cells, _ = field_grid()
    path = prediction(bands[1:], names=("boundary", "distance"))
    vectorize(path, tmp_path / "p.gpkg", mode="parcels", block_size=64)
    parcels = gpd.read_file(tmp_path / "p.gpkg")
    old = parcel_labels(bands[1] >= 128, np.ones(cells.shape, bool))
    assert sorted(parcels.pixels.tolist()) == sorted(np.bincount(old.ravel())[1:].tolist())


def test_parcels_need_an_extent_or_a_boundary(prediction, tmp_path):
    bands, _, _ = field_grid()
    targets = {"building": {"kind": "class", "role": None}}
    path = prediction(bands[:1], names=("building",), targets=targets)
    result = run("vectorize", path, "--out", tmp_path / "p.gpkg", "--mode", "parcels")
    assert_one_line_error(result, "--mode parcels needs", "extent", "boundary", "building")
    assert not (tmp_path / "p.gpkg").exists()


def test_regions_mode_skips_the_distance_band(prediction, tmp_path):
    bands, _, _ = field_grid()
    summary = vectorize(prediction(bands), tmp_path / "r.gpkg", block_size=128)
    assert set(summary.per_class) == {"parcels", "boundary"}


def test_true_parcels_from_masks():
    extent = np.zeros((10, 12), np.uint8)
    extent[1:9, 1:11] = 1
    boundary = np.zeros_like(extent)
    boundary[1:9, 6] = 1  # two parcels sharing an outline
    boundary[1, 1:11] = 1
    labels = instance_labels_from_masks(extent, boundary)
    assert len(np.unique(labels[labels > 0])) == 2
    assert (labels > 0).sum() == extent.sum() and not labels[extent == 0].any()
    assert set(np.unique(labels[2:9, 1:6])) == {labels[4, 3]} != {labels[4, 9]}
    valid = np.ones_like(extent, bool)
    valid[:, 9:] = False
    assert not instance_labels_from_masks(extent, boundary, valid)[:, 9:].any()
    assert len(np.unique(instance_labels_from_masks(extent, None))) == 2  # one and none


def test_object_matching_one_to_one_at_an_iou():
    true = np.zeros((10, 20), np.int32)
    true[0:5, 0:5], true[0:5, 10:20], true[6:10, 0:4], true[6:10, 10:12] = 1, 2, 3, 4
    predicted = np.zeros_like(true)
    predicted[0:5, 0:4] = 7  # IoU 0.8 with 1
    predicted[0:5, 10:15] = 8  # IoU 0.5 with 2 (counts at >= 0.5)
    predicted[0:5, 15:20] = 9  # IoU 0.5 with 2 too: one-to-one, only one of them
    predicted[6:10, 0:1] = 5  # IoU 0.25 with 3
    predicted[6:10, 6:8] = 6  # nothing true there
    assert match_label_images(predicted, true) == (2, 5, 4)
    assert match_label_images(predicted, true, iou=0.6) == (1, 5, 4)
    assert match_label_images(true, true) == (4, 4, 4)
    assert match_label_images(np.zeros_like(true), true) == (0, 0, 4)
    valid = np.ones(true.shape, bool)
    valid[:, 15:] = False  # ignored: 2 is then 10:15, matched by 8 exactly
    assert match_label_images(predicted, true, valid=valid) == (2, 4, 4)


def two_peaks(with_boundary_between: bool):
    """Extent, boundary and distance (uint8) of a 60 x 160 px field whose distance has two peaks
    with a deep valley between them; with a boundary line across it, two fields."""
    height, width = 60, 160
    extent = np.zeros((height + 8, width + 8), np.uint8)
    extent[4:-4, 4:-4] = 230
    boundary = np.zeros_like(extent)
    boundary[4:6, 4:-4] = boundary[-6:-4, 4:-4] = 230
    boundary[4:-4, 4:6] = boundary[4:-4, -6:-4] = 230
    if with_boundary_between:
        boundary[4:-4, 83:85] = 230
    rows, cols = np.mgrid[: extent.shape[0], : extent.shape[1]]
    cones = [1 - np.hypot(rows - 34, cols - c) / 50 for c in (44, 124)]  # 0.2 between them
    distance = np.where(extent > 0, np.clip(np.maximum(*cones), 0, 1), 0) * 250
    return extent, boundary, np.rint(distance).astype(np.uint8)


def test_a_field_with_two_distance_peaks_and_no_boundary_between_is_one_parcel():
    """The valley between the peaks is below the saddle: without the merge, two parcels."""
    extent, boundary, distance = two_peaks(with_boundary_between=False)
    apart = delineate_parcels(extent, boundary, distance, None, THRESHOLDS)
    assert len(np.unique(apart[apart > 0])) == 2
    merged = delineate_parcels(extent, boundary, distance, None, THRESHOLDS.replace(merge=0.3))
    assert len(np.unique(merged[merged > 0])) == 1
    assert (merged[extent > 0] > 0).all()
    extent, boundary, distance = two_peaks(with_boundary_between=True)
    fields = delineate_parcels(extent, boundary, distance, None, THRESHOLDS.replace(merge=0.3))
    assert len(np.unique(fields[fields > 0])) == 2  # a boundary between them: two fields
    assert len(np.unique(fields[:, :80][fields[:, :80] > 0])) == 1


@pytest.mark.parametrize("noise", [0.0, 0.12])
def test_the_quiet_merge_does_not_depend_on_the_block_size(noise, prediction, tmp_path):
    bands, _, _ = field_grid(noise=noise, seed=5)
    extent, boundary, distance = two_peaks(with_boundary_between=False)
    h, w = extent.shape
    bands[:, 200 : 200 + h, 40 : 40 + w] = np.stack([extent, boundary, distance])
    tuned = THRESHOLDS.replace(merge=0.3)
    path = prediction(bands, delineation=tuned.to_dict())
    whole = delineate_parcels(*bands, None, tuned)
    counts = np.bincount(whole.ravel())[1:]
    sizes = sorted(counts[counts > 0].tolist())
    assert len(sizes) < len(
        np.unique(delineate_parcels(*bands, None, THRESHOLDS))
    )  # the merge joins some
    for size in (64, 150, 4096):
        vectorize(path, tmp_path / f"m{size}.gpkg", mode="parcels", block_size=size)
        parcels = gpd.read_file(tmp_path / f"m{size}.gpkg", layer="parcels")
        assert sorted(parcels.pixels.tolist()) == sizes, size


def test_sparse_truth_leaves_out_predictions_mostly_in_unlabelled_pixels():
    """A drawn field and its ring are labelled; a parcel found among undrawn fields is neither
    a match nor a false positive, and one that spills mostly out of the labelled area is left
    out too."""
    true = np.zeros((10, 12), np.int32)
    true[1:4, 1:4] = 1
    labelled = np.zeros(true.shape, bool)
    labelled[0:5, 0:5] = True
    predicted = np.zeros(true.shape, np.int32)
    predicted[1:4, 1:4] = 1  # the drawn field
    predicted[6:9, 6:9] = 2  # an undrawn field
    predicted[0:2, 4:12] = 3  # 2 of its 16 pixels labelled
    assert match_label_images(predicted, true) == (1, 3, 1)
    assert match_label_images(predicted, true, labelled=labelled) == (1, 1, 1)


def gap_in_shared_edge():
    """Extent, boundary and distance (uint8) of two 40 px fields side by side whose shared
    boundary has a 12 px gap, with a distance that stays at 0.4 there (as a model's does where it
    misses a stretch of an edge), and the fields' ids."""
    shape = (48, 90)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    ids = np.zeros(shape, np.int32)
    ids[4:44, 4:44], ids[4:44, 46:86] = 1, 2
    extent = np.where((rows >= 2) & (rows < 46) & (cols >= 2) & (cols < 88), 230, 0)
    boundary = np.where(extent > 0, 0, 0)
    boundary[(ids == 0) & (extent > 0)] = 230
    boundary[20:32, 44:46] = 0  # the gap
    cones = [1 - 0.6 * np.hypot(rows - 24, cols - c) / 21 for c in (24, 66)]
    distance = np.where(ids > 0, np.clip(np.maximum(*cones), 0, 1), 0)
    distance[20:32, 44:46] = 0.4
    bands = [np.rint(b).astype(np.uint8) for b in (extent, boundary, distance * 255)]
    return (*bands, ids)


SPLIT_JOIN = THRESHOLDS.replace(marker=0.3, split=0.1, join=0.5)


def test_a_gap_in_a_mostly_drawn_edge_keeps_two_parcels_with_split_and_join():
    extent, boundary, distance, ids = gap_in_shared_edge()
    fused = delineate_parcels(extent, boundary, distance, None, THRESHOLDS.replace(marker=0.3))
    assert len(np.unique(fused[fused > 0])) == 1  # one marker runs through the gap
    labels = delineate_parcels(extent, boundary, distance, None, SPLIT_JOIN)
    assert len(np.unique(labels[labels > 0])) == 2
    assert (purity(labels, ids) == 1).all()
    split_only = delineate_parcels(extent, boundary, distance, None, SPLIT_JOIN.replace(join=0))
    assert len(np.unique(split_only[split_only > 0])) == 2
    # the same edge with the boundary along a third of it only: too little evidence, one parcel
    boundary[4:32, 44:46] = 0
    weak = delineate_parcels(extent, boundary, distance, None, SPLIT_JOIN)
    assert len(np.unique(weak[weak > 0])) == 1


def test_the_join_makes_one_parcel_of_two_peaks_without_a_boundary_between():
    extent, boundary, distance = two_peaks(with_boundary_between=False)
    split = delineate_parcels(extent, boundary, distance, None, SPLIT_JOIN.replace(join=0))
    assert len(np.unique(split[split > 0])) == 2
    joined = delineate_parcels(extent, boundary, distance, None, SPLIT_JOIN)
    assert len(np.unique(joined[joined > 0])) == 1 and (joined[extent > 0] > 0).all()
    extent, boundary, distance = two_peaks(with_boundary_between=True)
    fields = delineate_parcels(extent, boundary, distance, None, SPLIT_JOIN)
    assert len(np.unique(fields[fields > 0])) == 2


def test_split_and_join_set_or_switched_off_by_hand(prediction, tmp_path):
    """The tuned levels come from the model; ``--split`` and ``--join`` override them, 0 off."""
    extent, boundary, distance = two_peaks(with_boundary_between=False)
    path = prediction(np.stack([extent, boundary, distance]), delineation=SPLIT_JOIN.to_dict())
    counts = {}
    for name, options in (("tuned", []), ("off", ["--join", "0"]), ("on", ["--join", "0.5"])):
        out = tmp_path / f"{name}.gpkg"
        result = run("vectorize", path, "--out", out, "--mode", "parcels", *options)
        assert result.exit_code == 0, result.output
        counts[name] = len(gpd.read_file(out))
    assert counts == {"tuned": 1, "off": 2, "on": 1}
    result = run("vectorize", path, "--out", tmp_path / "x.gpkg", "--mode", "parcels",
                 "--split", "1.5")  # fmt: skip
    assert_one_line_error(result, "--split")
    assert not (tmp_path / "x.gpkg").exists()


def small_fields(size=448, seed=3):
    """Extent, boundary and distance (uint8) of fields 20-40 px across on a jittered grid; in
    one field of five the boundary misses a stretch of the field's edges."""
    rng = np.random.default_rng(seed)
    rows, cols = (np.cumsum(rng.integers(20, 41, size // 20)) for _ in range(2))
    r = np.searchsorted(rows, np.arange(size), side="right")
    c = np.searchsorted(cols, np.arange(size), side="right")
    cells = r[:, None] * (len(cols) + 1) + c[None, :] + 1
    edge = np.zeros(cells.shape, bool)
    edge[1:] |= cells[1:] != cells[:-1]
    edge[:, 1:] |= cells[:, 1:] != cells[:, :-1]
    inside = ~ndimage.binary_dilation(edge)
    edt = ndimage.distance_transform_edt(inside)
    largest = ndimage.maximum(edt, cells, np.arange(cells.max() + 1))
    distance = edt / np.maximum(largest[cells], 1)
    faint = rng.random(cells.max() + 1) < 0.2
    boundary = ~inside & ~(faint[cells] & (np.arange(size)[:, None] % 30 < 12))
    return np.rint(np.stack([np.full(cells.shape, 0.9), 0.9 * boundary, distance]) * 255).astype(
        np.uint8
    )


def test_the_join_hands_parcels_on_as_blocks_arrive_in_any_order(prediction):
    """A joined group leaves the merge once every region in it and around it is whole: in row
    order the merge holds a part of the parcels only, and the order of the blocks changes
    nothing."""
    bands = small_fields()
    path = prediction(bands, delineation=SPLIT_JOIN.to_dict())
    info = open_raster_info(path)
    levels, join = delineation_levels(SPLIT_JOIN, True), join_level(SPLIT_JOIN, True)
    roles = ("extent", "boundary", "distance")
    job = VectorJob(str(path), info.width, info.height, (1, 2, 3), levels, "parcels",
                    info.transform, roles=roles, join=join)  # fmt: skip
    grid = (-(-info.height // 64), -(-info.width // 64))
    windows = block_windows(info.width, info.height, 64)
    blocks = [vectorize_block(job, divmod(i, grid[1]), w) for i, w in enumerate(windows)]
    shuffled = np.random.default_rng(1).permutation(len(blocks))
    found = {}
    for name, order in (("rows", range(len(blocks))), ("shuffled", shuffled)):
        merge, united, held = BorderMerge(1, 64, *grid, join=job.join), [], []
        for i in order:
            united.extend(shapely.to_wkb(shapely.normalize(merge.add(blocks[i]).geometry)))
            held.append((len(merge.held), len(united)))
        found[name] = (sorted(united), held)
    assert found["rows"][0] == found["shuffled"][0]
    whole = delineate_parcels(*bands, None, SPLIT_JOIN)
    unjoined = delineate_parcels(*bands, None, SPLIT_JOIN.replace(join=0))
    assert len(found["rows"][0]) == len(np.unique(whole[whole > 0]))
    assert len(np.unique(whole)) < len(np.unique(unjoined))  # the join joins some
    held, out = np.array(found["rows"][1]).T
    assert held[-1] == 0 and held.max() < 0.4 * sum(len(b.border) for b in blocks), held
    before_last_row = out[-grid[1] - 1]
    assert before_last_row > 0.5 * out[-1], out  # handed on before the last block is in


@pytest.mark.parametrize("noise", [0.0, 0.12])
def test_split_and_join_do_not_depend_on_the_block_size(noise, prediction, tmp_path):
    """The join weighs each border as a whole, however many blocks it crosses; the two peaks'
    split parcels meet between columns 84 and 85 of their case, so at left 43 their whole
    border lies on the edge between 64 px blocks (only the merge across it can join them)."""
    bands, _, _ = field_grid(noise=noise, seed=7)
    for case, (top, left) in ((two_peaks(False), (200, 43)), (gap_in_shared_edge()[:3], (60, 90))):
        h, w = case[0].shape
        bands[:, top : top + h, left : left + w] = np.stack(case)
    path = prediction(bands, delineation=SPLIT_JOIN.to_dict())
    whole = delineate_parcels(*bands, None, SPLIT_JOIN)
    counts = np.bincount(whole.ravel())[1:]
    sizes = sorted(counts[counts > 0].tolist())
    unjoined = delineate_parcels(*bands, None, SPLIT_JOIN.replace(join=0))
    assert len(sizes) < len(np.unique(unjoined[unjoined > 0]))  # the join joins some
    found = {}
    for size in (4096, 64, 150):
        vectorize(path, tmp_path / f"j{size}.gpkg", mode="parcels", block_size=size)
        found[size] = gpd.read_file(tmp_path / f"j{size}.gpkg", layer="parcels")
        assert sorted(found[size].pixels.tolist()) == sizes, size
        areas = np.rint(found[size].area / PIXEL_AREA).astype(int)
        assert sorted(areas.tolist()) == sizes, size
        assert found[size].is_valid.all() and (found[size].geom_type == "Polygon").all()
        mine, whole_raster = found[size].geometry.to_numpy(), found[4096].geometry.to_numpy()
        pairs = shapely.equals(mine[:, None], whole_raster)
        assert pairs.any(axis=0).all() and pairs.any(axis=1).all(), size
