"""``geoseg evaluate`` and ``geoseg quicklook``: predictions scored against labels, and
previews of rasters and polygons."""

from geoseg.evaluation.evaluator import evaluate
from geoseg.evaluation.quicklooks import quicklook

__all__ = ["evaluate", "quicklook"]
