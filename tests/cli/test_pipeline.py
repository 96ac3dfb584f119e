"""geoseg run: stages in order, up-to-date stages skipped, paths, bad pipeline files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run

from geoseg.cli import main
from geoseg.cli.pipeline import load_pipeline, run_pipeline
from geoseg.errors import ParameterError

SMALL = """
workdir: {workdir}
stages:
  - synth: {{out: scene, size: 256, seed: 1, buildings: false}}
  - tile:
      images: [scene/image.tif]
      labels: scene/parcels.gpkg
      boundary-width: 1px
      size: 64
      keep_empty: 1.0
      out: chips
"""


@pytest.fixture
def pipeline(tmp_path):
    path = tmp_path / "conf" / "small.yaml"
    path.parent.mkdir()
    path.write_text(SMALL.format(workdir="../work"))
    return path


def test_runs_then_skips_up_to_date_stages(pipeline, tmp_path):
    assert run_pipeline(pipeline, main) == [("synth", "ran"), ("tile", "ran")]
    assert (tmp_path / "work" / "chips" / "dataset.json").is_file()  # workdir resolved
    assert run_pipeline(pipeline, main) == [("synth", "skipped"), ("tile", "skipped")]
    later = time.time() + 5
    os.utime(tmp_path / "work" / "scene" / "image.tif", (later, later))  # a newer input
    assert run_pipeline(pipeline, main) == [("synth", "skipped"), ("tile", "ran")]
    assert run_pipeline(pipeline, main, start="tile") == [("tile", "ran")]
    assert run_pipeline(pipeline, main, force=True) == [("synth", "ran"), ("tile", "ran")]


def test_only_stages_whose_options_or_inputs_changed_run_again(pipeline, tmp_path):
    assert run_pipeline(pipeline, main) == [("synth", "ran"), ("tile", "ran")]
    text = pipeline.read_text()
    pipeline.write_text("# a comment\n" + text)  # a newer file, the same stages
    assert run_pipeline(pipeline, main) == [("synth", "skipped"), ("tile", "skipped")]
    pipeline.write_text(text.replace("size: 64", "size: 128"))  # only tile's options
    assert run_pipeline(pipeline, main) == [("synth", "skipped"), ("tile", "ran")]
    assert run_pipeline(pipeline, main) == [("synth", "skipped"), ("tile", "skipped")]
    record = tmp_path / "work" / ".chips.geoseg-stage.json"
    assert "128" in record.read_text()


def test_cli_says_what_it_skips(pipeline):
    assert run("run", pipeline).exit_code == 0
    result = run("run", pipeline)
    assert result.exit_code == 0 and "[tile] up to date, skipped" in result.output


def test_option_names_as_on_the_command_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "stages:\n  - evaluate: {prediction: p.tif, truth: t.gpkg, json: s.json,"
        " boundary_tolerance: 3px}\n  - train: {chips: c, classes: [a, b], augment: false,"
        " resume: true, out: m}\n"
    )
    evaluate, train = load_pipeline(path, main)
    assert evaluate.args[-4:] == ["--json", str(tmp_path / "s.json"), "--boundary-tolerance", "3px"]
    assert "--classes" in train.args and "a,b" in train.args and "--resume" in train.args
    assert "--augment" not in train.args and "--no-augment" in train.args


@pytest.mark.parametrize(
    "text, words",
    [
        ("stages:\n  - paint: {out: x}\n", ["unknown stage", "paint"]),
        ("stages:\n  - synth: {out: x, colour: red}\n", ["unknown option", "colour"]),
        ("workdir: .\nsteps: []\n", ["unknown key", "steps"]),
        ("stages: [\n", ["not valid YAML"]),
    ],
)
def test_bad_pipeline_files(text, words, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert_one_line_error(run("run", path), *words)


def test_missing_file_and_unknown_start(pipeline, tmp_path):
    assert_one_line_error(run("run", tmp_path / "none.yaml"), "no such pipeline file")
    assert_one_line_error(run("run", pipeline, "--from", "predict"), "no such stage")


@pytest.mark.parametrize("name", ["demo", "cadastre", "buildings"])
def test_the_shipped_pipelines_load_with_today_s_option_names(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "pipelines" / f"{name}.yaml"
    stages = load_pipeline(path, main)
    predict = next(stage for stage in stages if stage.name == "predict")
    assert predict.args[0].endswith(".tif") and "--model" in predict.args


def test_a_pipeline_never_replaces_its_own_folder_or_files_it_did_not_write(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "keep.txt").write_text("mine")
    path = sub / "p.yaml"
    for stage, words in (
        ("{out: ., size: 128}", "holds the input"),
        ("{out: keep.txt, size: 128}", "not written by this pipeline"),
    ):
        path.write_text(f"workdir: ..\nstages:\n  - synth: {stage}\n")
        result = run("run", path)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.strip().splitlines()[-1].startswith("Error:")
        assert words in result.output.strip().splitlines()[-1]
    assert (tmp_path / "keep.txt").read_text() == "mine" and path.is_file()
    path.write_text("stages:\n  - synth: {out: scene, size: 128, buildings: false}\n")
    assert run("run", path).exit_code == 0
    assert run("run", path, "--force").exit_code == 0  # its own output: replaced


def test_urls_pass_through_and_empty_values_are_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "stages:\n  - tile: {images: ['https://host/a.tif', /vsis3/b/c.tif], out: chips}\n"
    )
    stage = load_pipeline(path, main)[0]
    assert stage.args[:2] == ["https://host/a.tif", "/vsis3/b/c.tif"]
    assert stage.inputs == []
    path.write_text("stages:\n  - tile: {images: [a.tif], labels:, out: chips}\n")
    with pytest.raises(ParameterError, match="'labels' has no value"):
        load_pipeline(path, main)


def test_quicklook_vectors_are_an_input_not_an_output(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "stages:\n  - quicklook: {prediction: p.tif, vectors: v.gpkg, out: preview.png}\n"
    )
    stage = load_pipeline(path, main)[0]
    assert stage.outputs == [tmp_path / "preview.png"]
    assert tmp_path / "v.gpkg" in stage.inputs


@pytest.mark.parametrize("template", sorted(Path(__file__).parents[2].glob("pipelines/*.yaml")))
def test_every_pipeline_template_names_real_stages_and_options(template):
    stages = load_pipeline(template, main)
    assert stages and all(stage.outputs for stage in stages if stage.name != "evaluate")
