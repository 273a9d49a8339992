"""A local Prefect API server for CLI runs with no server configured, shared by the commands
that follow.

Prefect needs an API for every flow run. Starting one costs seconds on these machines (importing
the server application, opening its SQLite database), which an engineer would pay on every
command in an incident. So the first command starts a server in a process of its own,
detached, records where it listens (``$DR_STATE_DIR/prefect-server-<home>.json``, one per
``PREFECT_HOME``), and later commands reuse it after a health check. It is the same server
Prefect would start (uvicorn on Prefect's app factory, UI off, SQLite under ``PREFECT_HOME``); it
stops by itself after ``DR_LOCAL_SERVER_IDLE_MINUTES`` (30) without a request, and
``dr server stop`` stops it at once.

Run as ``python -m cli.prefect_server PORT IDLE_SECONDS``, it is that server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dr_runbooks.errors import OperationFailed
from dr_runbooks.processes import state_dir

__all__ = ["SharedServer", "is_healthy"]

IDLE_MINUTES = 30


def is_healthy(api_url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout):
            return True
    except Exception:
        return False


def _prefect_home() -> str:
    from prefect.settings import PREFECT_HOME

    return str(Path(PREFECT_HOME.value()).expanduser().resolve())


class SharedServer:
    """``url()`` returns the API URL of a running shared server, starting one if needed."""

    def __init__(self) -> None:
        home = _prefect_home()
        tag = hashlib.sha256(home.encode()).hexdigest()[:12]
        self.record = state_dir() / f"prefect-server-{tag}.json"
        self.started_here = False
        self._process: subprocess.Popen[bytes] | None = None

    def running(self) -> dict[str, Any] | None:
        """The recorded server, if it answers."""
        try:
            found = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        return found if is_healthy(str(found.get("url", "")), timeout=1.0) else None

    def url(self) -> str:
        """A healthy server's API URL, after starting one when none answers (one at a time:
        two commands starting together share the server the first starts)."""
        found = self.running()
        if found is not None:
            return str(found["url"])
        with self._start_lock():
            found = self.running()
            if found is not None:
                return str(found["url"])
            starting = self._starting()
            if starting is not None:  # another command started it a moment ago
                return starting
            return self._start()

    def _starting(self) -> str | None:
        """The recorded server's URL when its process lives but does not answer yet (it is
        starting); waits for it."""
        try:
            found = json.loads(self.record.read_text())
            os.kill(int(found["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if is_healthy(str(found["url"]), timeout=1.0):
                return str(found["url"])
            time.sleep(0.2)
        return None

    def wait(self, timeout: float = 120.0) -> None:
        """Block until the server this process started answers."""
        if self._process is None:
            return
        url = json.loads(self.record.read_text())["url"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise OperationFailed("the local Prefect server exited as it started")
            if is_healthy(url, timeout=1.0):
                return
            time.sleep(0.1)
        raise OperationFailed(f"the local Prefect server did not answer in {timeout:.0f} s")

    def stop(self) -> bool:
        """Stop the recorded server; whether there was one."""
        try:
            found = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return False
        self.record.unlink(missing_ok=True)
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.kill(int(found["pid"]), signal.SIGTERM)
            return True
        return False

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        with open(self.record.with_suffix(".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _start(self) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        idle = float(os.environ.get("DR_LOCAL_SERVER_IDLE_MINUTES", IDLE_MINUTES)) * 60
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        log = self.record.with_suffix(".log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "cli.prefect_server", str(port), str(idle)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives this command, and its terminal's signals
        )
        url = f"http://127.0.0.1:{port}/api"
        self.record.write_text(json.dumps({"url": url, "pid": self._process.pid}))
        self.started_here = True
        return url


# -- the server process ---------------------------------------------------------------------


def _serve(port: int, idle_seconds: float) -> None:
    """Prefect's API app under uvicorn, stopped after ``idle_seconds`` without a request."""
    import uvicorn

    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise SystemExit("Prefect is not installed")
    from prefect.server.api.server import create_app

    app = create_app()
    last = [time.monotonic()]

    async def touch(scope: Any, receive: Any, send: Any) -> None:
        last[0] = time.monotonic()
        await app(scope, receive, send)

    config = uvicorn.Config(touch, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    server = uvicorn.Server(config)

    def watchdog() -> None:
        while not server.should_exit:
            time.sleep(5)
            if time.monotonic() - last[0] > idle_seconds:
                server.should_exit = True

    threading.Thread(target=watchdog, daemon=True).start()
    server.run()


if __name__ == "__main__":  # pragma: no cover - the server process itself
    _serve(int(sys.argv[1]), float(sys.argv[2]))
