"""Run a pipeline file: geoseg commands in order, each skipped while its outputs are up to date.

A pipeline is YAML::

    workdir: .    # optional; relative paths resolve against it (default: the file's folder)
    stages:
      - synth: {out: scene, size: 2048}
      - tile: {images: [scene/image.tif], labels: scene/parcels.gpkg, out: chips}

Each stage names a ``geoseg`` command; its keys are that command's argument and option names
(``boundary-width`` or ``boundary_width``), its values what the command line would take.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from geoseg.errors import InputFileError, OutputExistsError, ParameterError
from geoseg.io.outputs import check_apart
from geoseg.io.remote import is_gdal_path

STAGES = (
    "synth", "search", "stack", "tile", "train", "predict", "vectorize", "evaluate", "quicklook",
)  # fmt: skip
OUTPUTS = ("out", "vectors", "json_out", "class_map")
INPUTS = {"quicklook": ("vectors",)}
"""Options named like an output that a command reads (quicklook draws ``--vectors``)."""


@dataclass
class Stage:
    """One command of a pipeline, with its arguments as the command line takes them."""

    name: str
    args: list[str]
    inputs: list[Path]
    outputs: list[Path]


def load_pipeline(path: str | os.PathLike, cli: click.Group) -> list[Stage]:
    """Read and check a pipeline file against the commands of ``cli`` (geoseg's click group);
    paths are resolved against its ``workdir``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such pipeline file")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise ParameterError(f"{path}: expected a mapping with a 'stages' list")
    unknown = set(document) - {"workdir", "stages"}
    if unknown:
        raise ParameterError(f"{path}: unknown key {sorted(unknown)[0]!r} (use workdir, stages)")
    if not isinstance(document.get("stages"), list):
        raise ParameterError(f"{path}: expected a 'stages' list")
    workdir = (path.parent / str(document.get("workdir", "."))).resolve()
    return [_stage(entry, workdir, path, cli) for entry in document["stages"]]


def _stage(entry, workdir: Path, source: Path, cli: click.Group) -> Stage:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ParameterError(f"{source}: each stage is one 'command: {{options}}' mapping")
    name, options = next(iter(entry.items()))
    if name not in STAGES:
        raise ParameterError(f"{source}: unknown stage {name!r} (stages: {', '.join(STAGES)})")
    command = cli.commands[name]
    params = {p.name: p for p in command.params}
    params.update({opt.lstrip("-").replace("-", "_"): p for p in command.params for opt in p.opts})
    args, inputs, outputs = [], [], []
    for key, value in (options or {}).items():
        param = params.get(str(key).replace("-", "_"))
        if param is None or param.name == "help":
            raise ParameterError(f"{source}: stage {name}: unknown option {key!r}")
        values = value if isinstance(value, list) else [value]
        if value is None or value == [] or any(v is None for v in values):
            raise ParameterError(f"{source}: stage {name}: {key!r} has no value")
        if isinstance(param.type, click.Path):
            values = [str(v) if is_gdal_path(str(v)) else str(workdir / str(v)) for v in values]
            local = [Path(v) for v in values if not is_gdal_path(v)]  # URLs are not tracked
            written = param.name in OUTPUTS and param.name not in INPUTS.get(name, ())
            (outputs if written else inputs).extend(local)
        if isinstance(param, click.Argument):
            args.extend(str(v) for v in values)
        elif param.is_flag:
            if value or param.secondary_opts:  # --augment / --no-augment
                args.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.multiple:  # e.g. search --dates A --dates B
            args += [arg for v in values for arg in (param.opts[0], str(v))]
        elif len(values) > 1:
            args += [param.opts[0], ",".join(str(v) for v in values)]  # e.g. --classes a,b
        else:
            args += [param.opts[0], str(values[0])]
    return Stage(name, args, inputs, outputs)


def identity(path: Path) -> list:
    """What tells a changed input: size and modification time of a file, or of every file in a
    folder (a chips or model folder), hashed."""
    if path.is_file():
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = item.stat()
            digest.update(f"{item.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return [digest.hexdigest()]
    return []


def record_path(stage: Stage) -> Path:
    """The record of a stage's last run, a hidden file beside its first output."""
    first = stage.outputs[0]
    return first.parent / f".{first.name}.geoseg-stage.json"


def stage_record(stage: Stage) -> dict:
    """The command, its arguments and its inputs' identities: what decides its outputs."""
    return {
        "command": stage.name,
        "args": stage.args,
        "inputs": {str(p): identity(p) for p in stage.inputs},
    }


def up_to_date(stage: Stage) -> bool:
    """Whether every output exists and the stage last ran with these arguments and inputs."""
    if not stage.outputs or not all(p.exists() for p in stage.outputs):
        return False
    try:
        return json.loads(record_path(stage).read_text()) == stage_record(stage)
    except (OSError, ValueError):
        return False


def owned(stage: Stage) -> bool:
    """Whether the stage's existing outputs were written by an earlier run of this stage (its
    record is there): only those may be replaced. Outputs that do not exist yet are free."""
    existing = [p for p in stage.outputs if p.exists() or p.is_symlink()]
    return not existing or record_path(stage).is_file()


def _record_run(stage: Stage) -> None:
    if stage.outputs:
        record_path(stage).write_text(json.dumps(stage_record(stage), indent=1) + "\n")


def run_pipeline(
    path: str | os.PathLike,
    cli: click.Group,
    *,
    force: bool = False,
    start: str | None = None,
    report: Callable[[Stage, str], None] | None = None,
) -> list[tuple[str, str]]:
    """Run the stages of ``path`` in order as commands of ``cli``; returns (stage, "ran" or
    "skipped") pairs.

    A stage is skipped while its outputs exist and it last ran with the same arguments and the
    same input files (sizes and times, recorded beside its outputs), unless ``force``;
    ``start`` runs from the first stage of that name on, forced.
    """
    stages = load_pipeline(path, cli)
    names = [s.name for s in stages]
    if start is not None and start not in names:
        raise ParameterError(f"--from {start!r}: no such stage in {path} ({', '.join(names)})")
    first = names.index(start) if start else 0
    forced = force or start is not None
    done = []
    for stage in stages[first:]:
        if not forced and up_to_date(stage):
            done.append((stage.name, "skipped"))
            if report:
                report(stage, "skipped")
            continue
        if report:
            report(stage, "running")
        check_apart(stage.outputs, [path, *stage.inputs])
        takes_overwrite = any(p.name == "overwrite" for p in cli.commands[stage.name].params)
        if not owned(stage):
            found = next(p for p in stage.outputs if p.exists() or p.is_symlink())
            raise OutputExistsError(
                f"stage {stage.name}: {found} exists and was not written by this pipeline; "
                "move it away or name another output"
            )
        overwrite = ["--overwrite"] if takes_overwrite else []  # outputs this pipeline wrote
        if stage.outputs:  # a failed stage must not look up to date; its record stays a claim
            record_path(stage).parent.mkdir(parents=True, exist_ok=True)
            record_path(stage).write_text(json.dumps({"command": stage.name, "running": True}))
        cli.main([stage.name, *stage.args, *overwrite], standalone_mode=False)
        _record_run(stage)
        done.append((stage.name, "ran"))
    return done
