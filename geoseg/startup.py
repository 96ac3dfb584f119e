"""How TensorFlow is loaded: after GDAL, and without its C++ start-up chatter on the terminal.

GDAL's GeoPackage driver builds spatial indexes with SQLite's R-tree module, and TensorFlow
exports an SQLite built without it: whichever library loads first serves both, so GeoPackages
written after TensorFlow loaded silently lacked their index. Loading GDAL at ``import geoseg``
instead would make every command start 0.6 s slower, so GDAL is loaded just before TensorFlow.

TensorFlow's C++ runtime writes to file descriptor 2 while it loads and when it first probes
for CUDA (``cudart_stub.cc ... Could not find cuda drivers``, ``E0000 ... failed call to
cuInit``), before its own logging settings apply. Those writes are captured and logged at INFO
level under ``geoseg.tensorflow`` instead (``geoseg -v`` shows them).

Only the standard library is imported here: ``import geoseg`` stays light.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("geoseg.tensorflow")


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (C and C++ code included) to a temporary file.

    Yields a list that holds the captured lines once the block ends.
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                sink.seek(0)
                lines.extend(sink.read().decode(errors="replace").splitlines())
    finally:
        os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's package import, and its first CUDA probe, with stderr captured."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with captured_stderr() as lines:
            self._loader.exec_module(module)
            module.config.list_physical_devices("GPU")  # CUDA is probed (and reported) here
        for line in lines:
            logger.info("%s", line)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """On the first import of TensorFlow (or Keras, which imports it): GDAL first, then quietly."""

    def find_spec(self, name, path=None, target=None):
        if name not in ("tensorflow", "keras"):
            return None
        import pyogrio  # noqa: F401  (GDAL's SQLite, with R-tree, before TensorFlow's)

        if name == "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Put the finder in place unless TensorFlow is already loaded."""
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _TensorFlowFinder) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _TensorFlowFinder())
