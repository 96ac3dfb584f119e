"""geoseg: segment very large satellite and aerial images.

The public functions (``geoseg.tile``, ``geoseg.train``, ``geoseg.predict``,
``geoseg.vectorize``, ``geoseg.synth``) are imported on
first use so that ``import geoseg`` and ``geoseg --help`` stay fast.
"""

__version__ = "0.1.0"

import importlib.abc  # noqa: E402
import sys  # noqa: E402


class _GdalBeforeTensorFlow(importlib.abc.MetaPathFinder):
    """Loads pyogrio's GDAL just before TensorFlow (or Keras) is first imported.

    GDAL's GeoPackage driver builds spatial indexes with SQLite's R-tree module, and TensorFlow
    exports an SQLite built without it: whichever library loads first serves both, so
    GeoPackages written after TensorFlow loaded silently lacked their index. Loading GDAL at
    ``import geoseg`` instead would make every command start 0.6 s slower.
    """

    def find_spec(self, name, path=None, target=None):
        if name in ("tensorflow", "keras") and self in sys.meta_path:
            sys.meta_path.remove(self)
            import pyogrio  # noqa: F401
        return None


if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _GdalBeforeTensorFlow())

_PUBLIC = {
    "tile": "geoseg.tiling",
    "synth": "geoseg.synthetic",
    "train": "geoseg.training",
    "predict": "geoseg.inference",
    "vectorize": "geoseg.vectorizing",
    "evaluate": "geoseg.evaluation",
    "quicklook": "geoseg.quicklooks",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
