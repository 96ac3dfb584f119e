"""Multiclass models: the class map of predict, its polygons, its scores and its quicklook."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from helpers import assert_one_line_error, run
from scipy import ndimage

from geoseg.contracts import ClassMapTags, PredictionTags, write_model_card
from geoseg.delineation.vectorizing import vectorize
from geoseg.evaluation.evaluator import evaluate
from geoseg.inference.predictor import predict
from geoseg.io.raster import normalize

CLASSES = ("background", "a", "b")
CHIP = 64
X0, Y0, PIXEL = 500_000.0, 5_300_000.0, 0.5  # make_raster's grid
NORMALIZATION = {
    "method": "percentile",
    "low": "p2",
    "high": "p98",
    "bands": [{"p2": 0.0, "p98": 255.0}] * 3,
}
FAST = dict(mixed_precision="off", device="cpu", batch_size=8)


def write_hand_model(folder, task: str):
    """An untrained tiny U-Net (64 px chips, 3 bands) and its card, as geoseg train writes.

    The multiclass head's kernel is scaled up so the softmax is decisive rather than flat, and
    its biases differ so that pixels whose features are all zero get no tie.
    """
    import keras

    from geoseg.models.config import UNetConfig
    from geoseg.models.unet import build_model

    heads = CLASSES if task == "multiclass" else ("a", "b")
    config = UNetConfig(bands=3, classes=len(heads), depth=2, base_filters=4, heads=heads,
                        task=task)  # fmt: skip
    keras.utils.set_random_seed(3)
    model = build_model(config)
    if task == "multiclass":
        layer = model.get_layer("head_logits")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 3000, bias + np.array([0.0, 0.5, -0.5])])
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    card = {
        "classes": list(heads),
        "targets": {name: {"kind": "class", "role": None} for name in heads},
        "bands": {"count": 3, "dtype": "uint8", "nodata": None, "descriptions": [None] * 3},
        "chip_size": CHIP,
        "input_multiple": config.divisor,
        "normalization": NORMALIZATION,
        "class_weights": dict.fromkeys(heads, 1.0),
        "threshold": {} if task == "multiclass" else dict.fromkeys(heads, 0.5),
        "model": {"architecture": "unet", **config.to_dict()},
    }
    if task == "multiclass":
        card["task"] = "multiclass"
    write_model_card(folder / "geoseg.json", card)
    return folder


@pytest.fixture(scope="module")
def multiclass_model(tmp_path_factory):
    return write_hand_model(tmp_path_factory.mktemp("multiclass") / "model", "multiclass")


@pytest.fixture(scope="module")
def multilabel_model(tmp_path_factory):
    return write_hand_model(tmp_path_factory.mktemp("multilabel") / "model", "multilabel")


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A (3, h, w) uint8 image of smooth blobs, so classes form regions rather than noise."""
    noise = np.random.default_rng(seed).normal(size=(3, height, width))
    field = ndimage.gaussian_filter(noise, (0, 4, 4))
    low, high = field.min(), field.max()
    return (1 + 253 * (field - low) / (high - low)).astype(np.uint8)


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.dataset_mask()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_class_map_is_the_argmax_of_the_model_with_its_contract(
    multiclass_model, make_raster, tmp_path
):
    import keras
    from rio_cogeo.cogeo import cog_validate

    data = smooth_image(CHIP, CHIP)
    image = make_raster(width=CHIP, height=CHIP, data=data)  # one chip: no blending
    out, class_map = tmp_path / "pred.tif", tmp_path / "classes.tif"
    summary = predict(image, multiclass_model, out, class_map=class_map, overlap=0, **FAST)
    model = keras.models.load_model(multiclass_model / "model.keras", compile=False)
    floats = np.asarray(model(normalize(data, None, NORMALIZATION)[None]))[0]
    codes = read(class_map)[0][0]
    assert np.array_equal(codes, floats.argmax(axis=-1))
    assert len(np.unique(codes)) == 3  # a real test: every class occurs
    for path in (out, class_map):
        valid, errors, _ = cog_validate(str(path), strict=True)
        assert valid, errors
    with rasterio.open(class_map) as src:
        assert (src.count, src.dtypes, src.nodata) == (1, ("uint8",), 255)
        assert src.descriptions == ("class",) and src.overviews(1) == []
        colours = src.colormap(1)
        assert len({colours[code] for code in range(3)}) == 3 and colours[255][3] == 0
    tags = ClassMapTags.read(class_map)
    assert tags.classes == CLASSES and tags.model == str(multiclass_model.absolute())
    probabilities = PredictionTags.read(out)
    assert probabilities.task == "multiclass" and probabilities.classes == CLASSES
    with rasterio.open(out) as src:
        assert src.descriptions == CLASSES
        assert json.loads(src.tags()["geoseg_thresholds"]) == {}
    assert summary.class_map == class_map and f"class map: {class_map}" in summary.describe()
    assert not leftovers(tmp_path)


def test_class_map_agrees_with_the_probabilities_and_keeps_nodata(
    multiclass_model, make_raster, tmp_path
):
    data = smooth_image(200, 260, seed=1)
    data[:, 50:120, 30:100] = 0
    data[:, :, 200:] = 0  # a collar wider than a chip
    image = make_raster(width=260, height=200, nodata=0, data=data)
    out, class_map = tmp_path / "pred.tif", tmp_path / "classes.tif"
    predict(image, multiclass_model, out, class_map=class_map, block_size=128, **FAST)
    (probabilities, mask), codes = read(out), read(class_map)[0][0]
    nodata = (data == 0).all(axis=0)
    assert np.array_equal(codes == 255, nodata) and np.array_equal(mask == 0, nodata)
    top = np.sort(probabilities, axis=0)
    clear = ~nodata & (top[-1] > top[-2])  # the quantised levels name one likeliest class
    assert clear.mean() > 0.9 * (~nodata).mean()
    assert np.array_equal(codes[clear], probabilities.argmax(axis=0)[clear])
    assert (probabilities[:, ~nodata].astype(int).sum(axis=0) == 255).mean() > 0.5  # a softmax


def test_class_map_does_not_depend_on_the_block_size(multiclass_model, make_raster, tmp_path):
    image = make_raster(width=300, height=190, data=smooth_image(190, 300, seed=2))
    for name, block_size in (("small", 64), ("large", 512)):
        predict(image, multiclass_model, tmp_path / f"{name}.tif", block_size=block_size,
                class_map=tmp_path / f"{name}_classes.tif", overlap=16, **FAST)  # fmt: skip
    small, large = (read(tmp_path / f"{n}_classes.tif")[0][0] for n in ("small", "large"))
    assert (small == large).mean() >= 0.9999
    assert len(np.unique(small)) == 3


def interrupt_after(blocks: int):
    def progress(done, total):
        if done == blocks:
            raise KeyboardInterrupt

    return progress


def test_resume_finishes_both_rasters_and_refuses_a_changed_class_map(
    multiclass_model, make_raster, tmp_path
):
    image = make_raster(width=256, height=256, data=smooth_image(256, 256, seed=3))
    options = dict(block_size=64, overlap=16, workers=1, **FAST)
    whole = tmp_path / "whole"
    whole.mkdir()
    predict(image, multiclass_model, whole / "p.tif", class_map=whole / "c.tif", **options)
    out, class_map = tmp_path / "p.tif", tmp_path / "c.tif"
    with pytest.raises(KeyboardInterrupt):
        predict(image, multiclass_model, out, class_map=class_map,
                progress=interrupt_after(5), **options)  # fmt: skip
    assert not out.exists() and not class_map.exists()
    assert ".c.tif.partial.json" in leftovers(tmp_path)
    same_options = ["--block-size", "64", "--overlap", "16", "--workers", "1", "--batch-size",
                    "8", "--device", "cpu", "--mixed-precision", "off"]  # fmt: skip
    result = run("predict", image, "-m", multiclass_model, "-o", out, *same_options, "--resume")
    assert_one_line_error(result, "--resume", "--class-map was True")
    again = predict(image, multiclass_model, out, class_map=class_map, resume=True, **options)
    assert again.resumed_blocks == 5 and again.blocks == 16
    for name in ("p.tif", "c.tif"):
        (a, mask_a), (b, mask_b) = read(whole / name), read(tmp_path / name)
        assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
    with rasterio.open(whole / "c.tif") as x, rasterio.open(class_map) as y:
        assert x.tags() == y.tags() and x.colormap(1) == y.colormap(1)
    assert not leftovers(tmp_path)


def test_resume_after_the_rasters_writes_what_is_missing(multiclass_model, make_raster, tmp_path):
    image = make_raster(width=128, height=128, data=smooth_image(128, 128, seed=5))
    out, class_map = tmp_path / "p.tif", tmp_path / "c.tif"
    options = dict(class_map=class_map, block_size=64, **FAST)
    predict(image, multiclass_model, out, **options)
    expected = read(class_map)[0]
    polygons = predict(image, multiclass_model, out, vectors=tmp_path / "v.gpkg", resume=True,
                       **options)  # fmt: skip
    assert polygons.chips == 0 and polygons.vectors.polygons > 0
    class_map.unlink()  # as if the run had stopped between publishing its two rasters
    again = predict(image, multiclass_model, out, resume=True, **options)
    assert again.chips > 0 and np.array_equal(read(class_map)[0], expected)
    result = run("predict", image, "-m", multiclass_model, "-o", out, "--class-map", class_map)
    assert_one_line_error(result, "already exists")  # without --resume, nothing is replaced
    assert not leftovers(tmp_path)


def test_predict_vectors_of_a_multiclass_model_are_the_class_regions(
    multiclass_model, make_raster, tmp_path
):
    image = make_raster(width=200, height=150, data=smooth_image(150, 200, seed=4))
    outputs = dict(class_map=tmp_path / "c.tif", vectors=tmp_path / "v.gpkg")
    summary = predict(image, multiclass_model, tmp_path / "p.tif", block_size=64, **outputs, **FAST)
    codes = read(tmp_path / "c.tif")[0][0]
    regions = gpd.read_file(tmp_path / "v.gpkg", layer="regions")
    for code, name in enumerate(CLASSES[1:], start=1):
        count = ndimage.label(codes == code)[1]  # 4-connected
        assert (regions["class"] == name).sum() == count == summary.vectors.per_class[name]
    assert set(regions["class"]) == {"a", "b"}
    assert regions.area.sum() == pytest.approx((codes > 0).sum() * PIXEL**2)


@pytest.mark.parametrize(
    "case, words",
    [
        ("multilabel", ["--class-map needs a multiclass model"]),
        ("exists", ["already exists"]),
        ("is_image", ["is an input"]),
        ("is_out", ["overlap"]),
        ("threshold", ["--threshold does not apply to a multiclass model"]),
        ("parcels", ["--mode parcels", "multiclass"]),
    ],
)
def test_bad_input_gives_one_line_and_no_output(
    case, words, multiclass_model, multilabel_model, make_raster, tmp_path
):
    image = make_raster(width=64, height=64, data=smooth_image(64, 64))
    folder = tmp_path / "out"
    folder.mkdir()
    model, out, class_map = multiclass_model, folder / "p.tif", folder / "c.tif"
    extra = []
    if case == "multilabel":
        model = multilabel_model
    elif case == "exists":
        class_map.write_text("keep me")
    elif case == "is_image":
        class_map = image
    elif case == "is_out":
        class_map = out
    elif case == "threshold":
        extra = ["--threshold", "0.5"]
    elif case == "parcels":
        extra = ["--vectors", folder / "v.gpkg", "--mode", "parcels"]
    result = run("predict", image, "-m", model, "-o", out, "--class-map", class_map, *extra)
    assert_one_line_error(result, *words)
    left = {p.name for p in folder.iterdir()}
    assert left == ({"c.tif"} if case == "exists" else set())
    with rasterio.open(image) as src:
        assert src.count == 3  # the input, untouched


def write_class_map(make_raster, codes: np.ndarray, classes=CLASSES, name=None):
    """A class map as predict writes it: uint8 codes, nodata 255, geoseg class map tags."""
    path = make_raster(width=codes.shape[1], height=codes.shape[0], count=1, nodata=255,
                       data=codes[None].astype(np.uint8), name=name)  # fmt: skip
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**ClassMapTags(tuple(classes)).to_tags())
    return path


def write_multiclass_probabilities(make_raster, codes: np.ndarray, name=None):
    """Probabilities whose likeliest class is ``codes`` (0.6 for it, 0.2 for the others)."""
    probabilities = np.full((len(CLASSES), *codes.shape), 51, np.uint8)
    for code in range(len(CLASSES)):
        probabilities[code][codes == code] = 153
    path = make_raster(width=codes.shape[1], height=codes.shape[0], count=len(CLASSES),
                       data=probabilities, name=name)  # fmt: skip
    with rasterio.open(path, "r+") as dst:
        for band, class_name in enumerate(CLASSES, start=1):
            dst.set_band_description(band, class_name)
        dst.update_tags(**PredictionTags(CLASSES, task="multiclass").to_tags())
        if (codes == 255).any():
            dst.write_mask(np.where(codes == 255, 0, 255).astype(np.uint8))
    return path


def hand_made_codes() -> np.ndarray:
    """Class codes (90 x 120) with regions across 32 px blocks, touching classes and nodata."""
    codes = np.zeros((90, 120), np.uint8)
    codes[10:50, 20:60] = 1  # a square of a across four blocks ...
    codes[25:35, 35:45] = 2  # ... with b inside it
    codes[50:60, 20:100] = 2  # b touching a along an edge, over three blocks
    codes[70:80, 0:10] = 1
    codes[70:80, 10:20] = 2  # a and b side by side
    codes[0:5, 100:120] = 1
    codes[2, 100:120] = 255  # nodata splits that bar in two
    codes[85:90, 60:66] = 1  # two regions of a touching only at a corner
    codes[80:85, 66:70] = 1
    return codes


def class_components(codes: np.ndarray) -> dict[str, list[int]]:
    """Sorted pixel counts of the 4-connected regions of each foreground class."""
    return {
        name: sorted(np.bincount(ndimage.label(codes == code)[0].ravel())[1:].tolist())
        for code, name in enumerate(CLASSES[1:], start=1)
    }


@pytest.mark.parametrize("block_size", [32, 64, 4096])
def test_vectorize_a_class_map_one_polygon_per_region_and_class(block_size, make_raster, tmp_path):
    codes = hand_made_codes()
    path = write_class_map(make_raster, codes)
    summary = vectorize(path, tmp_path / "v.gpkg", block_size=block_size)
    regions = gpd.read_file(tmp_path / "v.gpkg", layer="regions")
    expected = class_components(codes)
    assert summary.per_class == {name: len(sizes) for name, sizes in expected.items()}
    for name, sizes in expected.items():
        mine = regions[regions["class"] == name]
        assert sorted(mine.pixels.tolist()) == sizes
        assert sorted(np.rint(mine.area / PIXEL**2).astype(int).tolist()) == sizes
    assert regions.is_valid.all() and (regions.geom_type == "Polygon").all()
    assert regions.mean_probability.isna().all()  # a class map holds no probabilities
    holes = shapely.get_num_interior_rings(regions[regions["class"] == "a"].geometry.values)
    assert sorted(holes.tolist())[-1] == 1  # a around b


def test_vectorize_multiclass_probabilities_takes_the_likeliest_class(make_raster, tmp_path):
    codes = hand_made_codes()
    path = write_multiclass_probabilities(make_raster, codes)
    vectorize(path, tmp_path / "v.gpkg", block_size=32)
    regions = gpd.read_file(tmp_path / "v.gpkg")
    for name, sizes in class_components(codes).items():
        assert sorted(regions[regions["class"] == name].pixels.tolist()) == sizes
    np.testing.assert_allclose(regions.mean_probability, 153 / 255)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--mode", "parcels"], ["--mode parcels", "class map"]),
        (["--threshold", "0.4"], ["--threshold does not apply"]),
    ],
)
def test_vectorize_refuses_options_a_class_map_cannot_use(extra, words, make_raster, tmp_path):
    path = write_class_map(make_raster, hand_made_codes())
    result = run("vectorize", path, "--out", tmp_path / "v.gpkg", *extra)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "v.gpkg").exists() and not leftovers(tmp_path)


def pixel_box(row0, col0, row1, col1):
    """The CRS box of pixel rows row0..row1-1 and columns col0..col1-1."""
    return shapely.box(X0 + col0 * PIXEL, Y0 - row1 * PIXEL, X0 + col1 * PIXEL, Y0 - row0 * PIXEL)


def evaluation_scene() -> np.ndarray:
    """Predicted codes (40 x 40): a left of column 20, b in rows 30.. right of it, rows 0..4
    nodata."""
    codes = np.zeros((40, 40), np.uint8)
    codes[:, :20] = 1
    codes[30:, 20:] = 2
    codes[:5] = 255
    return codes


# Truth: a = rows 0..39 x cols 0..9, b = rows 20..39 x cols 30..39, an "other" polygon (as
# background) at rows 0..9 x cols 30..39. Over the 35 valid rows (rows: truth; columns:
# prediction, in the order background, a, b):
EXPECTED = [
    [400, 350, 100],  # background: cols 20.. rows 5..29 but b's truth; cols 10..19; rows 30..
    [0, 350, 0],  # a: rows 5..39 x cols 0..9, all predicted a
    [100, 0, 100],  # b: rows 20..29 predicted background, rows 30..39 predicted b
]


@pytest.mark.parametrize("kind", ["class map", "probabilities"])
def test_evaluate_a_class_map_against_vector_truth(kind, make_raster, make_vector, tmp_path):
    codes = evaluation_scene()
    if kind == "class map":
        prediction = write_class_map(make_raster, codes)
    else:
        prediction = write_multiclass_probabilities(make_raster, codes)
    truth = make_vector(
        [pixel_box(0, 0, 40, 10), pixel_box(20, 30, 40, 40), pixel_box(0, 30, 10, 40)],
        crop=["a", "b", "other"],
    )
    result = evaluate(prediction, truth, class_field="crop", block_size=16,
                      json_out=tmp_path / "s.json")  # fmt: skip
    assert result.confusion["matrix"] == EXPECTED
    assert result.pixels["a"]["iou"] == pytest.approx(0.5)  # 350 / (350 + 350)
    assert result.pixels["b"]["iou"] == pytest.approx(1 / 3)  # 100 / (100 + 100 + 100)
    assert result.pixels["background"]["recall"] == pytest.approx(400 / 850)
    assert result.confusion["mean_iou"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert result.confusion["pixel_accuracy"] == pytest.approx(850 / 1400)
    assert json.loads((tmp_path / "s.json").read_text())["confusion"] == result.confusion
    text = result.describe()
    assert "mean IoU over the foreground classes: 0.417" in text
    assert "1 other values of 'crop' scored as background" in text


def test_evaluate_scores_only_pixels_inside_the_vector_truth_box(make_raster, make_vector):
    prediction = write_class_map(make_raster, evaluation_scene())
    truth = make_vector([pixel_box(10, 10, 20, 20), pixel_box(30, 25, 35, 30)], crop=["a", "b"])
    result = run("evaluate", prediction, "--truth", truth, "--class-field", "crop")
    assert result.exit_code == 0, result.output
    assert "confusion matrix" in result.output and "bounding box" in result.output
    # rows 10..34 by columns 10..29: a's truth is predicted a, b's is predicted b; of the
    # background, columns 10..19 are predicted a (250 - 100), columns 20..29 of rows 10..29
    # background (200) and of rows 30..34 b (50 - 25)
    expected = [[200, 150, 25], [0, 100, 0], [0, 0, 25]]
    assert evaluate(prediction, truth, class_field="crop").confusion["matrix"] == expected


def test_evaluate_a_class_map_against_a_label_raster(make_raster, tmp_path):
    prediction = write_class_map(make_raster, evaluation_scene())
    truth_codes = np.zeros((20, 40), np.uint8)  # the top half of the prediction only
    truth_codes[:, :10] = 1
    truth_codes[10:, 30:] = 2
    truth_codes[:, 38:] = 9  # nodata
    truth = make_raster(width=40, height=20, count=1, nodata=9, data=truth_codes[None],
                        name="truth.tif")  # fmt: skip
    result = evaluate(prediction, truth, block_size=16)
    # rows 5..19 by columns 0..37 scored: truth b is rows 10..19 by columns 30..37 (80 pixels),
    # predicted background; truth background is columns 10..19 (150, predicted a) and
    # columns 20..37 but b (15 * 18 - 80 = 190, predicted background)
    assert result.confusion["matrix"] == [[190, 150, 0], [0, 150, 0], [80, 0, 0]]
    again = evaluate(prediction, write_class_map(make_raster, np.where(
        truth_codes == 9, 255, truth_codes), name="truth_map.tif"), block_size=16)  # fmt: skip
    assert again.confusion["matrix"] == result.confusion["matrix"]


@pytest.mark.parametrize(
    "case, words",
    [
        ("no_class_field", ["--class-field"]),
        ("no_class_values", ["no value of field 'crop'"]),
        ("code_beyond", ["value 7 is not a class code"]),
        ("classes", ["--classes does not apply"]),
    ],
)
def test_evaluate_bad_input(case, words, make_raster, make_vector, tmp_path):
    prediction = write_class_map(make_raster, evaluation_scene())
    truth = make_vector([pixel_box(0, 0, 40, 10)], crop=["x"])
    extra = ["--class-field", "crop"]
    if case == "no_class_field":
        extra = []
    elif case == "code_beyond":
        truth = make_raster(width=40, height=40, count=1, name="t.tif",
                            data=np.full((1, 40, 40), 7, np.uint8))  # fmt: skip
        extra = []
    elif case == "classes":
        extra = ["--classes", "a"]
    result = run("evaluate", prediction, "--truth", truth, "--json", tmp_path / "s.json", *extra)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "s.json").exists()


def test_quicklook_shows_the_class_colours(make_raster, tmp_path):
    import matplotlib.image

    codes = evaluation_scene()
    prediction = write_class_map(make_raster, codes)
    with rasterio.open(prediction, "r+") as dst:
        dst.write_colormap(1, {0: (200, 200, 200, 255), 1: (255, 0, 0, 255),
                               2: (0, 0, 255, 255), 255: (0, 0, 0, 0)})  # fmt: skip
    result = run("quicklook", prediction, "--out", tmp_path / "q.png", "--max-size", "400")
    assert result.exit_code == 0, result.output
    png = matplotlib.image.imread(tmp_path / "q.png")[..., :3]
    colours = {tuple(c) for c in np.unique(np.round(png.reshape(-1, 3), 2), axis=0)}
    assert {(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)} <= colours
    assert_one_line_error(run("quicklook", prediction, "--class", "a", "--out",
                              tmp_path / "r.png"), "--class")  # fmt: skip
