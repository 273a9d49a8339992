"""The plan's integration tests (``npm run test:integration``) run against a recovered
sandbox: a command with a timeout whose exit status and last lines are kept, pass or fail."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dr_runbooks.errors import ConfigError
from dr_runbooks.processes import die_with_parent
from dr_runbooks.redaction import redact

__all__ = ["CheckResult", "run_check"]

#: Lines of output kept for the record.
TAIL_LINES = 30


@dataclass(frozen=True)
class CheckResult:
    command: str
    exit_status: int | None
    timed_out: bool
    seconds: float
    tail: str

    @property
    def passed(self) -> bool:
        return self.exit_status == 0 and not self.timed_out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def run_check(
    argv: list[str], timeout: float, cwd: str | None = None, env: dict[str, str] | None = None
) -> CheckResult:
    """Run ``argv`` (no shell) with ``env`` added to the environment; on timeout its whole
    process group is killed. Never raises for a failing command: the result says how it
    ended. It dies with this process (a killed drill does not leave it running)."""
    if not argv:
        raise ConfigError("the integration test names no command")
    if cwd is not None and not Path(cwd).is_dir():
        raise ConfigError(f"the integration test's directory {cwd} does not exist")
    command = " ".join(argv)
    begun = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    except OSError as exc:
        return CheckResult(command, None, False, 0.0, f"cannot run {argv[0]}: {exc.strerror}")
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            tail.append(redact(raw.decode(errors="replace").rstrip()))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        status: int | None = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        status = process.returncode
    reader.join(timeout=5)
    return CheckResult(
        command, status, timed_out, round(time.monotonic() - begun, 2), "\n".join(tail)
    )
