"""A tiny stand-in for Label Studio's predictions API (only for job write-back tests)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FakeLabelStudio:
    """Serves /api/predictions/ (list, create, delete) and records what was written."""

    def __init__(self):
        self.predictions: dict[int, dict] = {}
        self.next_id = 1
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                if url.path == "/api/predictions/":
                    task = int(parse_qs(url.query)["task"][0])
                    with outer.lock:
                        items = [p for p in outer.predictions.values() if p["task"] == task]
                    self._send(200, items)
                else:
                    self._send(404, {"detail": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/api/predictions/":
                    with outer.lock:
                        body["id"] = outer.next_id
                        outer.next_id += 1
                        outer.predictions[body["id"]] = body
                    self._send(201, body)
                else:
                    self._send(404, {"detail": "not found"})

            def do_DELETE(self):
                pid = int(self.path.rstrip("/").split("/")[-1])
                with outer.lock:
                    outer.predictions.pop(pid, None)
                self._send(204)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def for_task(self, task_id: int) -> list[dict]:
        with self.lock:
            return [p for p in self.predictions.values() if p["task"] == task_id]

    def close(self):
        self.server.shutdown()
