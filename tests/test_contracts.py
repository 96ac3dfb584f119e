"""The delineation thresholds as one record: read from a card's or tags' JSON, written back."""

from __future__ import annotations

import json

import pytest

from geoseg.contracts import Delineation, PolygonMetadata, PredictionTags
from geoseg.errors import NotAPredictionError


def test_a_partial_record_takes_the_other_thresholds_from_its_base():
    base = Delineation(extent=0.4, boundary=0.7, marker=0.2)
    tuned = Delineation.from_mapping({"boundary": 0.3, "parcel": 0.6}, base)
    assert tuned == Delineation(extent=0.4, boundary=0.3, marker=0.2, parcel=0.6, merge=0.0)
    assert tuned.to_dict(("boundary", "parcel")) == {"boundary": 0.3, "parcel": 0.6}
    assert Delineation.from_mapping(tuned.to_dict()) == tuned
    assert tuned.replace(merge=0.2).merge == 0.2 and tuned.merge == 0.0
    assert base.distance(tuned, ("boundary", "parcel")) == pytest.approx(1.0)


def test_an_unknown_threshold_is_refused_in_a_record_and_in_tags():
    with pytest.raises(ValueError, match="unknown delineation threshold 'markers'"):
        Delineation.from_mapping({"markers": 0.5})
    tags = PredictionTags(("parcels",), {"parcels": 0.5}).to_tags()
    tags["geoseg_delineation"] = json.dumps({"markers": 0.5})
    with pytest.raises(NotAPredictionError, match="damaged geoseg tags"):
        PredictionTags.from_tags(tags, ("parcels",), "pred.tif")


def test_a_polygon_files_metadata_round_trips_and_a_foreign_file_has_none():
    written = PolygonMetadata("pred.tif", (0.0, 1.0, 10.0, 11.0), "watershed")
    assert PolygonMetadata.from_metadata(written.to_metadata()) == written
    assert "geoseg_delineation" not in PolygonMetadata("p.tif", (0, 0, 1, 1)).to_metadata()
    assert PolygonMetadata.from_metadata({"other": "x"}) is None
