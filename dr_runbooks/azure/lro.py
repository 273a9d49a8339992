"""Waiting for Azure's long-running operations, with progress a person can follow.

The SDK's poller does the polling (``Azure-AsyncOperation``/``Location``, honouring
``Retry-After``, its retry policy riding out 429s and 5xx); this only waits for it, reporting
every ``report_every`` seconds, and gives up after ``timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dr_runbooks.errors import OperationFailed
from dr_runbooks.text import human_duration

__all__ = ["Progress", "wait_for"]

#: Called with a line of progress while an operation runs.
Progress = Callable[[str], None]


def wait_for(
    poller: Any,
    what: str,
    on_progress: Progress | None = None,
    report_every: float = 30.0,
    timeout: float | None = None,
) -> Any:
    """The poller's result once it is done (the caller translates its errors)."""
    begun = time.monotonic()
    while not poller.done():
        elapsed = time.monotonic() - begun
        if timeout is not None and elapsed >= timeout:
            raise OperationFailed(
                f"{what} did not finish within {human_duration(timeout)} (still "
                f"{poller.status()}); it goes on in Azure: run again to pick it up"
            )
        step = report_every if timeout is None else min(report_every, timeout - elapsed)
        poller.wait(timeout=max(step, 0.01))
        if not poller.done() and on_progress is not None:
            on_progress(
                f"{what}: {poller.status()} after {human_duration(time.monotonic() - begun)}"
            )
    return poller.result()
