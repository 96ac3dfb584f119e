"""The Dockerfile stays in step with the project: what it copies, installs and runs exists."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_copied_paths_exist():
    for kind, args in instructions():
        if kind == "COPY":
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), source


def test_installs_this_package_with_known_extras():
    runs = " ".join(args for kind, args in instructions() if kind == "RUN")
    assert re.search(r"pip install [^&]*\"\.", runs), "the image must pip install the project"
    extras = [args.split("=", 1)[1].strip('"') for kind, args in instructions()
              if kind == "ARG" and args.startswith("EXTRAS=")]  # fmt: skip
    assert extras and set(filter(None, extras)) <= set(project()["optional-dependencies"])
    assert "gpu" in extras  # the image is meant for GPU hosts


def test_entry_point_is_the_project_script():
    entry = [args for kind, args in instructions() if kind == "ENTRYPOINT"]
    assert entry == ['["geoseg"]'] and "geoseg" in project()["scripts"]


def test_base_python_satisfies_requires_python_and_user_is_not_root():
    base = next(args for kind, args in instructions() if kind == "FROM")
    version = re.search(r"python:(\d+)\.(\d+)", base)
    minimum = re.search(r">=\s*(\d+)\.(\d+)", project()["requires-python"])
    assert version and minimum
    assert tuple(map(int, version.groups())) >= tuple(map(int, minimum.groups()))
    users = [args for kind, args in instructions() if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
