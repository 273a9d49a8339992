"""A local stand-in for a site's health endpoints (``/health``, ``/health/ready``) whose answer
a test chooses: healthy, failing, or hanging until released (to stop a run inside a step)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = ["HealthServer"]

Mode = Literal["ok", "fail", "hang"]


class HealthServer:
    def __init__(self) -> None:
        self.mode: Mode = "ok"
        self.hits = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                health.hits += 1
                if health.mode == "hang":
                    health.entered.set()
                    health.release.wait(120)
                status = 200 if health.mode in ("ok", "hang") else 503
                body = b'{"status": "ok"}' if status == 200 else b'{"status": "down"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def urls(self) -> list[str]:
        port = self.server.server_address[1]
        return [f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}/health/ready"]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
