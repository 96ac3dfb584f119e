"""``geoseg search``: scenes found in a STAC catalogue for a place and date windows, written as
VRTs on one grid that every command reads by window (the first stage, before ``tile`` or
``predict``)."""

from geoseg.catalog.search import search

__all__ = ["search"]
