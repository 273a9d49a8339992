"""Shared task plumbing: progress artifacts, log redaction, the run logger."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from dr_runbooks import progress
from dr_runbooks.errors import (
    AzureRequestFailed,
    BackupDamaged,
    BadInput,
    ChecksumMismatch,
    CommandFailed,
    ConcurrentChange,
    LockHeld,
    RestoreVerificationFailed,
    VerificationFailed,
)
from dr_runbooks.redaction import install_log_redaction

__all__ = ["logger", "reported_progress"]


def logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    install_log_redaction()
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("dr_runbooks")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@contextmanager
def reported_progress(step: str, every: float = 5.0) -> Iterator[None]:
    """Publish the progress of ``step`` as a Prefect progress artifact and a log line every
    ``every`` seconds (bytes done, rate; a percentage when the size is known)."""
    log = logger()
    state: dict[str, Any] = {"last": 0.0, "artifact": None, "begun": time.monotonic()}
    lock = threading.Lock()

    def listener(name: str, done: int, total: int | None) -> None:
        if name != step:
            return
        now = time.monotonic()
        with lock:
            if now - state["last"] < every and not (total and done >= total):
                return
            state["last"] = now
        elapsed = max(now - state["begun"], 1e-6)
        percent = min(100.0, 100.0 * done / total) if total else None
        log.info(
            "%s: %s%s at %s/s",
            step,
            _size(done),
            f" of {_size(total)} ({percent:.0f}%)" if total else "",
            _size(done / elapsed),
        )
        if percent is None:
            return
        try:
            if state["artifact"] is None:
                state["artifact"] = create_progress_artifact(percent, description=step)
            else:
                update_progress_artifact(state["artifact"], percent)
        except Exception:  # progress is a courtesy; never fail a step over it
            pass

    with progress.listening(listener):
        yield


_FINAL = (
    BadInput,
    ChecksumMismatch,
    RestoreVerificationFailed,
    BackupDamaged,
    LockHeld,
    AzureRequestFailed,
    ConcurrentChange,
    CommandFailed,
    VerificationFailed,
)


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """A ``retry_condition_fn``: retry what may succeed on a second try, never bad input,
    proof that data is wrong (a checksum, a failed verification, a damaged manifest), a lock
    another live run holds, or what a service answered for good (Azure refusing a request, an
    ETag that moved, a command or a check that failed), which a retry would only repeat."""
    try:
        state.result()
    except _FINAL:
        return False
    except Exception:
        return True
    return True


def ensure_concurrency_limit(name: str, limit: int = 1) -> str:
    """Create the global concurrency limit ``name`` if it does not exist yet; return the name.

    Prefect's ``concurrency()`` silently does not limit anything when the limit is missing, so
    the runbooks create theirs before using them.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # created meanwhile by another run
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit)
                )
    return name
