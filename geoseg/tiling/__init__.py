"""``geoseg tile``: georeferenced chips and their masks cut from large rasters, split into
train, val and test areas, written in parallel with Dask."""

from geoseg.tiling.tiler import tile

__all__ = ["tile"]
