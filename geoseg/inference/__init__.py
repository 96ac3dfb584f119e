"""``geoseg predict``: probabilities over rasters of any size, block by block with Dask, written
as Cloud-Optimised GeoTIFFs and optionally delineated into polygons."""

from geoseg.inference.predictor import predict

__all__ = ["predict"]
