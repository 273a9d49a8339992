"""Running a configured command (the plan's ``./deploy.sh``, ``docker-compose down``) with a
timeout, its output kept line by line for the run's logs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dr_runbooks.errors import CommandFailed, ConfigError
from dr_runbooks.redaction import redact
from dr_runbooks.text import human_duration

__all__ = ["CommandResult", "run_command"]


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    seconds: float
    tail: list[str]

    def describe(self) -> str:
        return f"{' '.join(self.argv)} exited {self.returncode} after {self.seconds:.1f} s"


def run_command(
    argv: list[str],
    timeout: float,
    cwd: str | None = None,
    on_line: Callable[[str], None] | None = None,
) -> CommandResult:
    """Run ``argv`` (no shell), passing each output line (stdout and stderr, redacted) to
    ``on_line``; a non-zero exit or the timeout raises :class:`CommandFailed` with the last
    lines. On timeout the command's whole process group is killed."""
    if not argv:
        raise ConfigError("an empty command was configured")
    if cwd is not None and not Path(cwd).is_dir():
        raise ConfigError(f"the command's directory {cwd} does not exist")
    begun = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    tail: deque[str] = deque(maxlen=20)

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = redact(raw.decode(errors="replace").rstrip())
            tail.append(line)
            if on_line is not None:
                on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        reader.join(timeout=5)
        raise CommandFailed(
            f"{' '.join(argv)} did not finish within {human_duration(timeout)} and was killed"
            + (f": {tail[-1]}" if tail else "")
        ) from None
    reader.join(timeout=5)
    result = CommandResult(list(argv), returncode, time.monotonic() - begun, list(tail))
    if returncode != 0:
        last = f": {tail[-1]}" if tail else ""
        raise CommandFailed(f"{result.describe()}{last}")
    return result
