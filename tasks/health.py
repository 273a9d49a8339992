"""Waiting for an application's health URL to answer."""

from __future__ import annotations

import urllib.error
import urllib.request

from prefect import task
from prefect.cache_policies import NO_CACHE
from tenacity import RetryError, retry, stop_after_delay, wait_exponential

from dr_runbooks.errors import RestoreVerificationFailed
from dr_runbooks.redaction import redact
from tasks._runtime import logger

__all__ = ["http_wait_healthy"]


def _probe(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


@task(cache_policy=NO_CACHE)
def http_wait_healthy(url: str, timeout_seconds: float = 120.0) -> int:
    """Poll ``url`` with exponential backoff until it answers 2xx (tenacity owns the waiting)."""

    @retry(
        stop=stop_after_delay(timeout_seconds),
        wait=wait_exponential(min=0.5, max=10),
        reraise=False,
    )
    def attempt() -> int:
        status = _probe(url)
        if not 200 <= status < 300:
            raise RestoreVerificationFailed(f"{redact(url)} answered {status}")
        return status

    try:
        status = attempt()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        reason = f"{type(last).__name__}: {last}" if last else "no answer"
        raise RestoreVerificationFailed(
            f"health check {redact(url)} did not turn healthy within {timeout_seconds:.0f} s "
            f"({redact(reason)})"
        ) from None
    logger().info("health check %s answered %d", redact(url), status)
    return status
