"""An HTTP file server that honours single byte ranges and logs the bytes of every response.

Run as ``python range_server.py ROOT LOG``: serves ROOT on a free port of 127.0.0.1, prints the
port, and appends one JSON line per response to LOG (path, Range header, bytes sent), written
before the body so a client never sees data that is not logged yet. Python's ``http.server``
answers a Range request with the whole file; this one answers 206 with the range asked.

It runs in its own process: a server thread in the test process could deadlock against GDAL
calls that hold the GIL while they make HTTP requests (as rasterio's do after an open).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeHandler(SimpleHTTPRequestHandler):
    """Files of a folder with single byte ranges (206, Content-Range, Accept-Ranges)."""

    def log_message(self, *args) -> None:  # the JSON log is enough
        pass

    def send_head(self):
        self.span = None
        path = self.translate_path(self.path)
        match = RANGE.fullmatch(self.headers.get("Range", "").strip())
        if match is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        first, last = match[1], match[2]
        start = size - int(last) if not first else int(first)
        end = size - 1 if not (first and last) else min(int(last), size - 1)
        if start >= size or start < 0:
            self.send_error(416)
            return None
        source = open(path, "rb")
        source.seek(start)
        self.span = end - start + 1
        self.send_response(206)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(self.span))
        self.end_headers()
        return source

    def copyfile(self, source, outputfile) -> None:
        data = source.read(self.span) if self.span is not None else source.read()
        self.server.record(self.path, self.headers.get("Range"), len(data))
        outputfile.write(data)


class LoggingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: str, log: str):
        super().__init__(("127.0.0.1", 0), partial(RangeHandler, directory=root))
        self.log, self.lock = log, threading.Lock()

    def record(self, path: str, span: str | None, sent: int) -> None:
        line = json.dumps({"path": path, "range": span, "bytes": sent})
        with self.lock, open(self.log, "a") as log:
            log.write(line + "\n")


class RangeServer:
    """A server script of this folder serving ``root/files`` in its own process (the tests'
    side); reads back what it sent."""

    def __init__(self, root: Path, script: str = "range_server.py"):
        self.root, self.log = root / "files", root / "log.jsonl"
        self.root.mkdir()
        self.log.touch()
        script = Path(__file__).parent / script
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(self.root), str(self.log)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.process.stdout.readline())
        self.start = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def serve(self, path: Path, name: str | None = None) -> str:
        """Copy ``path`` into the served folder; its URL."""
        name = name or path.name
        shutil.copyfile(path, self.root / name)
        return self.url(name)

    def sent(self) -> list[dict]:
        """The responses since the last :meth:`reset`: path, Range header, bytes."""
        lines = self.log.read_text().splitlines()[self.start :]
        return [json.loads(line) for line in lines]

    def bytes_sent(self, name: str | None = None) -> int:
        return sum(r["bytes"] for r in self.sent() if name is None or r["path"] == f"/{name}")

    def reset(self) -> None:
        self.start = len(self.log.read_text().splitlines())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


if __name__ == "__main__":
    server = LoggingServer(sys.argv[1], sys.argv[2])
    print(server.server_address[1], flush=True)
    server.serve_forever()
