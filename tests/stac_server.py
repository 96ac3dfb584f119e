"""A STAC API on 127.0.0.1 for the tests: a landing page, ``/search`` (GET and POST) over the
items of ``ROOT/catalogue.json``, and every file of ROOT with byte ranges (COG assets).

Run as ``python stac_server.py ROOT LOG``; prints the port. Items' hrefs may hold ``{base}``,
replaced by the server's own URL. Searches filter by collection, bbox and datetime, as a STAC
API does; each search is logged with the byte ranges in LOG.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from range_server import LoggingServer, RangeHandler

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]


def _instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _matches(item: dict, collections, bbox, interval) -> bool:
    if collections and item.get("collection") not in collections:
        return False
    if bbox:
        west, south, east, north = item["bbox"]
        if west > bbox[2] or east < bbox[0] or south > bbox[3] or north < bbox[1]:
            return False
    if interval:
        start, end = (None if p in ("", "..") else _instant(p) for p in interval.split("/"))
        when = _instant(item["properties"]["datetime"])
        if (start and when < start) or (end and when > end):
            return False
    return True


class StacHandler(RangeHandler):
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def send_json(self, document: dict) -> None:
        body = json.dumps(document).replace("{base}", self.base()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/geo+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.record(self.path, None, len(body))

    def landing(self) -> dict:
        return {
            "type": "Catalog", "stac_version": "1.0.0", "id": "test", "description": "tests",
            "conformsTo": CONFORMANCE,
            "links": [
                {"rel": "self", "href": self.base() + "/", "type": "application/json"},
                {"rel": "root", "href": self.base() + "/", "type": "application/json"},
                {"rel": "search", "href": self.base() + "/search",
                 "type": "application/geo+json", "method": "GET"},
                {"rel": "search", "href": self.base() + "/search",
                 "type": "application/geo+json", "method": "POST"},
            ],
        }  # fmt: skip

    def search(self, collections, bbox, interval) -> dict:
        items = json.loads((Path(self.directory) / "catalogue.json").read_text())
        found = [i for i in items if _matches(i, collections, bbox, interval)]
        return {"type": "FeatureCollection", "features": found, "links": []}

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path in ("", "/"):
            return self.send_json(self.landing())
        if url.path == "/search":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            bbox = [float(v) for v in query["bbox"].split(",")] if "bbox" in query else None
            collections = query["collections"].split(",") if "collections" in query else None
            return self.send_json(self.search(collections, bbox, query.get("datetime")))
        return super().do_GET()

    def do_POST(self):
        if urlsplit(self.path).path != "/search":
            return self.send_error(404)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.send_json(self.search(body.get("collections"), body.get("bbox"), body.get("datetime")))


if __name__ == "__main__":
    server = LoggingServer(sys.argv[1], sys.argv[2])
    server.RequestHandlerClass = partial(StacHandler, directory=sys.argv[1])
    print(server.server_address[1], flush=True)
    server.serve_forever()
