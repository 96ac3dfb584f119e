"""Probabilities to polygons: parcels by watershed or boundary closing, regions of other
classes, pieces cut by block edges united, and polygon files written."""

from geoseg.delineation.vectorizing import vectorize

__all__ = ["vectorize"]
