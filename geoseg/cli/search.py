"""``geoseg search``: scenes of a STAC catalogue for a place and date windows, as VRTs."""

from __future__ import annotations

import click

from geoseg.cli.options import FiniteRange, NameListType, out_option, overwrite_option, with_flags


@click.command()
@click.option("--stac", required=True, metavar="URL", help="The STAC API's root URL.")
@click.option("--collection", required=True, help="The collection to search, e.g. sentinel-2-l2a.")
@click.option(
    "--bbox",
    required=True,
    metavar="MINX,MINY,MAXX,MAXY",
    help="The place, in --bbox-crs (longitude and latitude by default).",
)
@click.option("--bbox-crs", default="EPSG:4326", show_default=True, help="CRS of --bbox.")
@click.option(
    "--dates",
    required=True,
    multiple=True,
    metavar="START/END",
    help="A date window, e.g. 2024-04-01/2024-05-31; repeat for several (one VRT each).",
)
@click.option(
    "--assets",
    type=NameListType(),
    required=True,
    help="Assets to stack as bands, in this order, e.g. blue,green,red,nir.",
)
@click.option(
    "--max-cloud",
    type=FiniteRange(0, 100),
    default=None,
    metavar="PERCENT",
    help="Leave out items with more cloud cover (eo:cloud_cover) [default: any].",
)
@click.option(
    "--sign",
    type=click.Choice(["planetary-computer"]),
    default=None,
    help="Have GDAL sign the asset URLs when it reads them (no token is written).",
)
@out_option
@overwrite_option
def search(stac, collection, bbox, bbox_crs, dates, assets, max_cloud, sign, out, overwrite):
    """Find the least cloudy scenes of a place in each date window, as one VRT per window.

    Searches the STAC API for items of --collection over --bbox in each --dates window, keeps
    those with at most --max-cloud % cloud cover, and mosaics the least cloudy that cover the
    bbox (the least cloudy on top; items in another CRS than most are left out). Each window's
    VRT has the --assets as bands, on the first asset's pixel grid clipped to the bbox, the
    same grid for every window; its sources are URLs that every command reads by window.
    --out also gets items.json: the chosen items, for provenance.

    \b
    Examples:
      $ geoseg search --stac https://earth-search.aws.element84.com/v1 \\
          --collection sentinel-2-l2a --bbox 11.02,55.31,11.10,55.36 \\
          --dates 2024-04-01/2024-05-31 --dates 2024-07-01/2024-08-31 \\
          --assets blue,green,red,nir --max-cloud 20 --out scenes/
      $ geoseg predict scenes/*.vrt --dates -m model/ -o pred.tif --vectors parcels.gpkg \\
          --mode parcels
    """
    from geoseg.catalog import search as run

    scenes = run(stac, collection, bbox, dates, assets, out, bbox_crs=bbox_crs,
                 max_cloud=max_cloud, sign=sign, overwrite=overwrite)  # fmt: skip
    for scene in scenes:
        click.echo(with_flags(scene.summary()))
