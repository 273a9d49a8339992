"""A temporary Prefect API server in a process of its own, for a CLI run with no server.

Prefect would start one itself, but from inside the calling process: that imports the whole
server application (~80 MB and ~1.7 s) into the CLI, and boots only when the first flow runs.
Started here, at the very beginning, it boots while the CLI imports and resolves its work, and
its memory stays out of the CLI's process. It is the same server Prefect starts (uvicorn on
Prefect's app factory, UI off, SQLite under PREFECT_HOME) and it stops when the CLI exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dr_runbooks.errors import OperationFailed

__all__ = ["LocalServer", "is_healthy"]


def is_healthy(api_url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout):
            return True
    except Exception:
        return False


def _die_with_parent() -> None:
    """In the server's process: ask Linux to end it when the CLI ends, however the CLI ends
    (even killed outright, when no exit handler runs)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(Exception):
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalServer:
    """``start()`` launches the server and returns its API URL; ``wait()`` blocks until it
    answers; it is stopped at interpreter exit."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.api_url = ""

    def start(self) -> str:
        spec = importlib.util.find_spec("prefect")
        if spec is None or spec.origin is None:
            raise OperationFailed("Prefect is not installed")
        app_dir = Path(spec.origin).parent.parent
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(app_dir),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        self.api_url = f"http://127.0.0.1:{port}/api"
        return self.api_url

    def wait(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                stderr = (
                    self.process.stderr.read().decode(errors="replace")
                    if (self.process and self.process.stderr)
                    else ""
                )
                lines = [line for line in stderr.splitlines() if line.strip()]
                raise OperationFailed(
                    "the temporary Prefect server exited: " + (lines[-1] if lines else "no message")
                )
            if is_healthy(self.api_url, timeout=1.0):
                return
            time.sleep(0.1)
        raise OperationFailed(f"the temporary Prefect server did not answer in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(Exception):
            if process.stderr:
                process.stderr.close()
