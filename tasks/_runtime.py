"""Shared task plumbing: progress artifacts, log redaction, the run logger."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import ProgressArtifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext
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
from dr_runbooks.text import human_size

__all__ = ["logger", "reported_progress", "transient_only"]


def logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    install_log_redaction()
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("dr_runbooks")


@contextmanager
def reported_progress(step: str, every: float = 5.0) -> Iterator[None]:
    """Publish the progress of ``step`` as a Prefect progress artifact (on the flow run) and a
    log line every ``every`` seconds: bytes done, and once there is one, the rate; a
    percentage when the size is known."""
    log = logger()
    state: dict[str, Any] = {"last": 0.0, "artifact": None, "begun": time.monotonic()}
    lock = threading.Lock()

    def listener(name: str, done: int, total: int | None) -> None:
        if name != step or done == 0:
            return  # nothing moved yet: no "0 B at 0 B/s"
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
            human_size(done),
            f" of {human_size(total)} ({percent:.0f}%)" if total else "",
            human_size(done / elapsed),
        )
        if percent is None:
            return
        with contextlib.suppress(Exception):  # progress is a courtesy; never fail a step on it
            _publish_progress(state, step, percent)

    with progress.listening(listener):
        yield


def _publish_progress(state: dict[str, Any], step: str, percent: float) -> None:
    if state["artifact"] is not None:
        update_progress_artifact(state["artifact"], percent)
        return
    task_run = getattr(TaskRunContext.get(), "task_run", None)
    flow_run = getattr(FlowRunContext.get(), "flow_run", None)
    artifact = ProgressArtifact(
        progress=percent,
        key=f"progress-{step}".replace("_", "-").lower(),
        description=f"{step} progress",
        task_run_id=task_run.id if task_run else None,
        flow_run_id=task_run.flow_run_id if task_run else flow_run.id if flow_run else None,
    )
    created: Any = artifact.create()  # synchronous here: called from a task's thread
    state["artifact"] = created.id


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
