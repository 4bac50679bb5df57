"""The viewer's local web server: the standard library's ThreadingHTTPServer bound to 127.0.0.1.

Routes: `/` the page (one HTML file with its CSS and JS inline), `/api/info|page|record|search` JSON,
`/image?path=REL` a file under the image root (checked with core.io.inside: absolute paths, `..` and symbolic
links that leave the root are refused with 403), `/rowimage?ds=&row=&k=` an image embedded in a parquet row.
Requests whose Host is not this server's address are refused (a web page elsewhere cannot read it by DNS
rebinding). Nothing is written but the offset index.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import signal
import stat
import sys
import threading
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import orjson

from ..core.errors import UserError
from ..core.io import inside
from . import api
from .dataset import Dataset, ParquetDataset, open_dataset
from .query import Query

HOST = "127.0.0.1"
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/svg+xml", "image/avif"}
_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif"),
               (b"BM", "image/bmp"))


class ViewServer(ThreadingHTTPServer):
    """The HTTP server holding the datasets (`main`, and `rejects` when given) and the image root."""

    daemon_threads = True

    def __init__(self, port: int, datasets: dict[str, Dataset], image_root: Path) -> None:
        self.datasets, self.image_root = datasets, image_root
        self.page = resources.files(__package__).joinpath("page.html").read_bytes()
        try:
            super().__init__((HOST, port), Handler)
        except OSError as exc:
            raise UserError(f"port {port}: cannot listen on {HOST} ({exc.strerror or exc})") from None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def close(self) -> None:
        self.server_close()
        for dataset in self.datasets.values():
            dataset.close()


class Handler(BaseHTTPRequestHandler):
    """One request: route it, answer JSON, the page or image bytes."""

    server: ViewServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        if not self._host_allowed():
            return self._send_json(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"})
        route = ROUTES.get(url.path)
        if route is None:
            return self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})
        try:
            route(self, params)
        except UserError as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _host_allowed(self) -> bool:
        host = self.headers.get("Host")
        port = self.server.server_address[1]
        return host is None or host in (f"{HOST}:{port}", f"localhost:{port}")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request."""

    # ---- answers ---------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, value: Any) -> None:
        self._send(status, orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS), "application/json")

    def _dataset(self, params: dict[str, str]) -> tuple[str, Dataset]:
        name = params.get("ds", "main")
        if name not in self.server.datasets:
            raise UserError(f"no dataset {name!r}")
        dataset = self.server.datasets[name]
        dataset.refresh()
        return name, dataset

    # ---- routes ----------------------------------------------------------------------------------------

    def page(self, params: dict[str, str]) -> None:
        self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")

    def info(self, params: dict[str, str]) -> None:
        for dataset in self.server.datasets.values():
            dataset.refresh()
        self._send_json(HTTPStatus.OK, api.info(self.server.datasets, self.server.image_root))

    def rows(self, params: dict[str, str]) -> None:
        _, dataset = self._dataset(params)
        answer = api.page(dataset, _int(params, "start", 0), _int(params, "size", api.PAGE_SIZE))
        self._send_json(HTTPStatus.OK, answer)

    def record(self, params: dict[str, str]) -> None:
        name, dataset = self._dataset(params)
        self._send_json(HTTPStatus.OK, api.detail(dataset, name, _int(params, "row", 0), self.server.image_root))

    def search(self, params: dict[str, str]) -> None:
        _, dataset = self._dataset(params)
        budget = _float(params, "budget", api.SCAN_BUDGET_S)
        answer = api.search(dataset, Query.from_params(params), _int(params, "from", 0),
                            _int(params, "want", api.PAGE_SIZE), budget)
        self._send_json(HTTPStatus.OK, answer)

    def image(self, params: dict[str, str]) -> None:
        """A file under the image root; anything that leaves it is refused before the disk is touched."""
        relative = params.get("path", "")
        try:
            if "\x00" in relative:
                raise UserError("a NUL byte in the path")
            file = inside(self.server.image_root, relative, "image")
        except UserError:
            return self._send_json(HTTPStatus.FORBIDDEN, {"error": "refused: not a path inside the image root"})
        kind = mimetypes.guess_type(file.name)[0]
        if kind not in IMAGE_TYPES:
            return self._send_json(HTTPStatus.FORBIDDEN, {"error": "refused: not an image file name"})
        try:
            handle = file.open("rb")
        except OSError:
            return self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no image {relative}"})
        with handle:
            size = _regular_size(handle)
            if size is None:
                return self._send_json(HTTPStatus.NOT_FOUND, {"error": f"not a file: {relative}"})
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            shutil.copyfileobj(handle, self.wfile, 1 << 20)

    def row_image(self, params: dict[str, str]) -> None:
        """An image embedded in a parquet row (`image` as `{bytes, path}` or a list of them)."""
        _, dataset = self._dataset(params)
        data = dataset.image(_int(params, "row", 0), _int(params, "k", 0)) \
            if isinstance(dataset, ParquetDataset) else None
        if not data:
            return self._send_json(HTTPStatus.NOT_FOUND, {"error": "no embedded image there"})
        kind = next((k for magic, k in _SIGNATURES if data.startswith(magic)), None)
        if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = "image/webp"
        self._send(HTTPStatus.OK, data, kind or "application/octet-stream")


ROUTES: dict[str, Callable[[Handler, dict[str, str]], None]] = {
    "/": Handler.page, "/index.html": Handler.page, "/api/info": Handler.info, "/api/page": Handler.rows,
    "/api/record": Handler.record, "/api/search": Handler.search, "/image": Handler.image,
    "/rowimage": Handler.row_image,
}


def _int(params: dict[str, str], name: str, default: int) -> int:
    try:
        return int(params.get(name) or default)
    except ValueError:
        raise UserError(f"{name} must be a whole number, got {params[name]!r}") from None


def _float(params: dict[str, str], name: str, default: float) -> float:
    try:
        value = float(params.get(name) or default)
    except ValueError:
        raise UserError(f"{name} must be a number, got {params[name]!r}") from None
    return value if value == value else default  # NaN: the default


def _regular_size(handle: Any) -> int | None:
    """The size of an open file when it is a regular file (not a folder, FIFO or device), else None."""
    info = os.fstat(handle.fileno())
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def make_server(source: Path, image_root: Path | None = None, rejects: Path | None = None, port: int = 0,
                log: Callable[[str], None] | None = None) -> ViewServer:
    """Open the datasets (building or loading their indexes) and bind the server; it is not serving yet."""
    log = log or (lambda line: print(f"visinstruct view: {line}", file=sys.stderr, flush=True))
    root = image_root or (source if source.is_dir() else source.parent)
    if not root.is_dir():
        raise UserError(f"{root}: the image root is not a folder")
    datasets = {"main": open_dataset(source, log)}
    if rejects is not None:
        datasets["rejects"] = open_dataset(rejects, log)
    return ViewServer(port, datasets, root)


def start(server: ViewServer) -> threading.Thread:
    """Serve in a background thread (tests, notebooks); stop with `server.shutdown()` then `server.close()`."""
    thread = threading.Thread(target=server.serve_forever, name="visinstruct-view", daemon=True)
    thread.start()
    return thread


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _interruptible() -> None:
    """Ctrl-C (SIGINT) and SIGTERM end the server cleanly, even when the parent process left SIGINT ignored or
    blocked (a background job of a shell script inherits it so)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)


def serve(source: Path, image_root: Path | None = None, rejects: Path | None = None, port: int = 0,
          open_browser: bool = False, out: TextIO | None = None) -> int:
    """`visinstruct view`: print the URL on stdout, serve until interrupted (Ctrl-C ends it cleanly)."""
    server = make_server(source, image_root, rejects, port)
    _interruptible()
    print(server.url, file=out or sys.stdout, flush=True)
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
