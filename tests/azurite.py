"""Azurite, the Azure Storage emulator, as a process a test session starts and stops.

::

    with Azurite() as azurite:
        client = ContainerClient.from_connection_string(azurite.connection_string, "backups")

Each instance listens on its own free loopback port and keeps its data in memory, so
sessions never share state. Azurite comes from ``npm install`` (``package.json``), which
``make test`` runs.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Azurite's well-known development account; the key is public and only works on Azurite.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class Azurite:
    """An Azurite blob service on ``127.0.0.1``; call :meth:`start` or use it as a context."""

    def __init__(self, repo_root: Path = REPO_ROOT, *, startup_timeout: float = 20.0) -> None:
        self.executable = repo_root / "node_modules" / ".bin" / "azurite-blob"
        self.startup_timeout = startup_timeout
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @property
    def account_name(self) -> str:
        return ACCOUNT_NAME

    @property
    def account_key(self) -> str:
        return ACCOUNT_KEY

    @property
    def account_url(self) -> str:
        """The blob endpoint; Azurite puts the account in the path."""
        self._require_running()
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        self._require_running()
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )

    def start(self) -> Self:
        if self._process is not None:
            return self
        if not self.executable.exists():
            raise RuntimeError(
                f"Azurite is not installed ({self.executable} is missing): run `make test`, "
                f"or `npm install` in {self.executable.parents[2]}"
            )
        self._workdir = tempfile.TemporaryDirectory(prefix="azurite-")
        self._log = open(Path(self._workdir.name) / "azurite.log", "w+b")  # noqa: SIM115
        # The free port is found by binding and releasing it, so another process may take it
        # before Azurite binds; a few attempts make that race harmless.
        for _attempt in range(3):
            self.port = _free_loopback_port()
            self._process = subprocess.Popen(
                [
                    str(self.executable),
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    str(self.port),
                    # azure-storage-blob speaks a newer API version than Azurite 3.35 accepts.
                    "--skipApiVersionCheck",
                    "--loose",
                    "--silent",
                    "--inMemoryPersistence",
                    "--disableTelemetry",
                ],
                cwd=self._workdir.name,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_until_listening():
                return self
            self._terminate()
        output = self._read_log()
        self.stop()
        raise RuntimeError(f"Azurite did not start on 127.0.0.1: {output or 'no output'}")

    def stop(self) -> None:
        self._terminate()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_listening(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return True
            time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _read_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()[-2000:]

    def _require_running(self) -> None:
        if self._process is None:
            raise RuntimeError("Azurite is not running; call start() first")


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
