"""The public functions stay callable as ``geoseg.NAME`` after their modules are imported."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import geoseg


@pytest.mark.parametrize(
    "name", ["tile", "synth", "train", "predict", "vectorize", "evaluate", "quicklook"]
)
def test_public_function_is_not_shadowed_by_a_module(name):
    importlib.import_module(geoseg._PUBLIC[name])
    assert callable(getattr(geoseg, name))
    assert getattr(geoseg, name).__name__ == name


def test_import_geoseg_stays_light():
    """GDAL (pyogrio) and TensorFlow load on first use, not at ``import geoseg``."""
    code = "import sys, geoseg; print(sorted({'pyogrio', 'tensorflow'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
