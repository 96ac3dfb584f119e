"""The package layout: no import cycles, and stage packages import downwards only."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import geoseg

ROOT = Path(geoseg.__file__).parent

RANKS = {
    "errors": 0, "version": 0, "startup": 0,
    "contracts": 1, "parallel": 1, "device": 1,
    "io": 2, "metrics": 2,
    "labels": 3, "models": 3, "delineation": 3, "synthetic": 3, "catalog": 3,
    "tiling": 4, "inference": 4, "evaluation": 4,
    "training": 5,
    "cli": 6,
}  # fmt: skip
"""A package or base module may import only those of a lower rank (and itself)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str, modules: set[str]) -> set[str]:
    """The ``modules`` that ``source`` (a module of ``package``) imports anywhere: at the top,
    inside functions, or for type checking alone."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imported_modules(path.read_text(), package, set(paths)) - {name}
    return graph


def top_level(module: str) -> str:
    return module.split(".")[1] if "." in module else "geoseg"


def test_there_are_no_import_cycles():
    graph = import_graph()
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_stage_packages_import_downwards_only():
    upwards = [
        f"{source} imports {target}"
        for source, targets in import_graph().items()
        for target in targets
        if top_level(source) != "geoseg"
        and top_level(target) != top_level(source)
        and RANKS[top_level(target)] >= RANKS[top_level(source)]
    ]
    assert not upwards, "\n".join(upwards)


def test_every_package_and_base_module_has_a_rank():
    names = {top_level(m) for m in import_graph()} - {"geoseg"}
    assert names == set(RANKS)


def test_lazy_type_only_and_relative_imports_count():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from geoseg.io.raster import open_raster\n"
        "def f():\n    from geoseg.models import unet\n"
        "from ..metrics import scores\n"
    )
    modules = {"geoseg.io.raster", "geoseg.models.unet", "geoseg.metrics.scores", "geoseg.errors"}
    found = imported_modules(source, "geoseg.training", modules)
    assert found == modules - {"geoseg.errors"}
