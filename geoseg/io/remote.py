"""Rasters behind URLs and GDAL virtual paths: telling them from local files, GDAL's settings.

A raster argument may be a local path, a URL (``https://``, ``http://``, ``s3://``, ``gs://``,
``az://``) or a GDAL virtual path (``/vsicurl/...``, ``/vsis3/...``, ``/vsizip/...``). URLs map
to GDAL's network file systems as rasterio maps them (``https://h/a.tif`` ->
``/vsicurl/https://h/a.tif``, ``s3://b/k.tif`` -> ``/vsis3/b/k.tif``). GDAL reads such a file
by HTTP range requests, block by block, so a windowed read fetches only the blocks it needs.
:func:`gdal_env` sets GDAL's HTTP options for that; every dataset geoseg opens for reading goes
through it (see :func:`geoseg.io.raster.open_raster`), Dask tasks included, since GDAL keeps these
options per thread.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlsplit

import rasterio

logger = logging.getLogger(__name__)

URL_FILESYSTEMS = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "ftp": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
    "oss": "/vsioss/",
}
"""URL schemes and the GDAL file system that reads them (as rasterio maps them)."""

NETWORK_FILESYSTEMS = (
    "/vsicurl",  # also /vsicurl_streaming/ and /vsicurl?options
    "/vsis3",
    "/vsigs",
    "/vsiaz",
    "/vsiadls",
    "/vsioss",
    "/vsiswift",
    "/vsihdfs",
    "/vsiwebhdfs",
)
"""GDAL file systems that read over the network."""

REMOTE_OPTIONS = {
    # a COG holds its mask and overviews: do not list the remote folder to look for sidecars
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # one request for neighbouring blocks, several blocks at once over HTTP/2
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    # a per-handle cache of what was read (a window's blocks are not fetched twice) and a
    # process-wide cache of downloaded ranges that the threads of one worker share (halos)
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(32 * 2**20),
    "CPL_VSIL_CURL_CACHE_SIZE": str(128 * 2**20),
    # fail fast: a few retries of transient errors (429, 5xx), no endless waits
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_LOW_SPEED_TIME": "60",
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
}
"""GDAL options for remote rasters. One set in the environment (``export VSI_CACHE_SIZE=...``)
wins over the value here. ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` is left unset: it would refuse
URLs without a raster suffix, such as signed URLs or API endpoints."""

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def url_scheme(path: str | os.PathLike) -> str | None:
    """The scheme of a URL (``https``, ``s3``, ``zip+https``), None for anything else."""
    match = _SCHEME.match(str(path))
    return match[1].lower() if match else None


def _url_filesystem(path: str | os.PathLike) -> str | None:
    """The GDAL file system of a URL (of its last scheme, as in ``zip+https``), else None."""
    scheme = url_scheme(path)
    return URL_FILESYSTEMS.get(scheme.split("+")[-1]) if scheme else None


def is_gdal_path(path: str | os.PathLike) -> bool:
    """Whether GDAL, not the local file system, resolves ``path``: a URL or a ``/vsi`` path."""
    return str(path).startswith("/vsi") or _url_filesystem(path) is not None


def gdal_path(path: str | os.PathLike) -> str:
    """``path`` as GDAL names it: a URL on its network file system, anything else as given
    (rasterio resolves archive URLs such as ``zip+https://`` itself)."""
    text, scheme = str(path), url_scheme(path)
    if scheme not in URL_FILESYSTEMS:
        return text
    prefix, rest = URL_FILESYSTEMS[scheme], text.split("://", 1)[1]
    return prefix + (f"{scheme}://{rest}" if prefix == "/vsicurl/" else rest)


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read over the network."""
    text = str(path)
    if _url_filesystem(text) is not None:
        return True
    return text.startswith("/vsi") and any(fs in text for fs in NETWORK_FILESYSTEMS)


def absolute(path: str | os.PathLike) -> str:
    """An absolute local path, or a URL / GDAL path unchanged (for tasks run elsewhere)."""
    return str(path) if is_gdal_path(path) else str(Path(path).absolute())


def suffix(path: str | os.PathLike) -> str:
    """The lower-case suffix of a path, or of a URL's path (its query left out: signed URLs)."""
    text = str(path)
    return Path(urlsplit(text).path if url_scheme(text) else text).suffix.lower()


def local_file_missing(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local path with nothing there; URLs and GDAL paths are never
    checked here (opening them tells)."""
    return not is_gdal_path(path) and not Path(path).exists()


def gdal_options(path: str | os.PathLike) -> dict[str, str]:
    """The GDAL options to read ``path`` with: :data:`REMOTE_OPTIONS` for a remote raster (less
    those set in the environment), none for a local one."""
    if not is_remote(path):
        return {}
    return {key: value for key, value in REMOTE_OPTIONS.items() if key not in os.environ}


def gdal_env(path: str | os.PathLike):
    """A context in which to open ``path``: a ``rasterio.Env`` with :func:`gdal_options` for a
    remote raster, nothing for a local one. Enter it in the thread or process that reads."""
    if not is_remote(path):
        return nullcontext()
    logger.debug("%s: read as %s", path, gdal_path(path))
    return rasterio.Env(**gdal_options(path))
