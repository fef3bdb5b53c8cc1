"""A local stand-in for the Hugging Face Hub and for plain download URLs, for tests without the internet.

The real huggingface_hub client talks to it when `HF_ENDPOINT` points here (set before huggingface_hub is imported,
so the clients run in a subprocess): `HEAD`/`GET /{repo}/resolve/{revision}/{file}` answer with `Content-Length`,
a quoted `ETag` and `X-Repo-Commit`; any other path (the client's `/api/...` calls, files not served) is a 404.
Plain URLs (`http://127.0.0.1:PORT/downloads/NAME`) serve the same way for torch.hub. Only files the test itself
wrote are served; every request is logged, so a test can tell a cache hit from a download.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class StandInHub:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                path = self.path.split("?")[0]
                hub.requests.append((self.command, path))
                data = hub.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StandInHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_repo_file(self, repo: str, name: str, source: Path | bytes, revision: str = "main") -> None:
        self.files[f"/{repo}/resolve/{revision}/{name}"] = source if isinstance(source, bytes) else source.read_bytes()

    def add_url_file(self, name: str, source: Path | bytes) -> str:
        self.files[f"/downloads/{name}"] = source if isinstance(source, bytes) else source.read_bytes()
        return f"{self.url}/downloads/{name}"

    def downloads(self, name: str) -> int:
        """How many GET requests fetched a path ending in `name`."""
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith(name))
