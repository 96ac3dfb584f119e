"""Which true parcels the predicted parcels fuse, by whether the neighbours share an attribute.

For the polygons that ``bench_parcels.py`` writes (``--workdir DIR``: each prediction beside
its ``truth-east.gpkg``), every pair of true parcels at most ``--reach`` metres apart is a
neighbour pair; a pair is fused when one predicted parcel covers at least half of each. Each
true parcel takes ``--attribute`` from the register polygon holding its representative point
(for the Danish register, ``AfgKode``, the crop code). The table says how many neighbour pairs,
and how many fused pairs, share the attribute: neighbours that a single date cannot tell apart
(one crop on both sides of an ownership line) fuse far more often than the rest.

Run ``.venv/bin/python benchmarks/bench_fusions.py DIR/seed0/denmark/parcels-c-scratch.gpkg``
(defaults: the Danish register and its crop code).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import geopandas as gpd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def neighbour_pairs(truth: gpd.GeoDataFrame, reach: float) -> set[tuple[int, int]]:
    """Index pairs (i < k) of true parcels at most ``reach`` apart."""
    left, right = truth.sindex.query(truth.geometry.buffer(reach), predicate="intersects")
    return {(int(i), int(k)) for i, k in zip(left, right) if i < k}


def fused_pairs(truth: gpd.GeoDataFrame, predicted: gpd.GeoDataFrame, pairs: set) -> set:
    """The neighbour ``pairs`` of which one predicted parcel covers half of each parcel."""
    fused = set()
    for shape in predicted.geometry:
        share = truth.geometry.intersection(shape).area / truth.geometry.area
        held = sorted(int(i) for i in share.index[share >= 0.5])
        fused |= {pair for pair in itertools.combinations(held, 2) if pair in pairs}
    return fused


def attribute_of(truth: gpd.GeoDataFrame, register: gpd.GeoDataFrame, attribute: str):
    """Each true parcel's ``attribute``: that of the register polygon under its inner point."""
    points = gpd.GeoDataFrame(geometry=truth.representative_point(), crs=truth.crs)
    joined = gpd.sjoin(points, register[[attribute, "geometry"]].to_crs(truth.crs), how="left")
    return joined.groupby(level=0)[attribute].first()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predicted", nargs="+", type=Path, help="predicted parcels (.gpkg)")
    parser.add_argument(
        "--register", type=Path, default=DATA / "denmark_s2_parcels" / "parcels.shp"
    )
    parser.add_argument("--attribute", default="AfgKode")
    parser.add_argument("--reach", type=float, default=15.0, help="metres between neighbours")
    args = parser.parse_args()
    register = gpd.read_file(args.register)
    print(f"{'predicted':<60}{'pairs':>7}{'same':>7}{'fused':>7}{'same':>7}")
    for path in args.predicted:
        truth = gpd.read_file(path.parent / "truth-east.gpkg").reset_index(drop=True)
        values = attribute_of(truth, register, args.attribute)
        pairs = neighbour_pairs(truth, args.reach)
        fused = fused_pairs(truth, gpd.read_file(path).to_crs(truth.crs), pairs)
        same = {pair for pair in pairs if values[pair[0]] == values[pair[1]]}
        print(f"{str(path)[-60:]:<60}{len(pairs):>7}{len(same):>7}{len(fused):>7}"
              f"{len(fused & same):>7}")  # fmt: skip


if __name__ == "__main__":
    main()
