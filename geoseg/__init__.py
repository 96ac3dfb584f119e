"""geoseg: segment very large satellite and aerial images.

The public functions (``geoseg.tile``, ``geoseg.train``, ``geoseg.predict``,
``geoseg.vectorize``, ``geoseg.synth``, ``geoseg.search``) are imported on
first use so that ``import geoseg`` and ``geoseg --help`` stay fast.
"""

from geoseg import startup
from geoseg.version import __version__ as __version__

startup.install()

_PUBLIC = {
    "tile": "geoseg.tiling",
    "synth": "geoseg.synthetic",
    "search": "geoseg.catalog",
    "train": "geoseg.training",
    "predict": "geoseg.inference",
    "vectorize": "geoseg.delineation",
    "evaluate": "geoseg.evaluation",
    "quicklook": "geoseg.evaluation",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
