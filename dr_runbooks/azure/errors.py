"""Azure SDK errors as ours, at the edge, with the context a person needs.

::

    with translated("creating the DenyAll rule in nsg-app"):
        poller = client.security_rules.begin_create_or_update(...)

=======================================  ===============================================
what the SDK raised                      what we raise
=======================================  ===============================================
no credential found, sign-in refused     :class:`ConnectionFailed` (bad input, exit 2)
401 / 403                                :class:`ConnectionFailed`
412 (an ``If-Match`` ETag moved)         :class:`ConcurrentChange`
408 / 429 / 5xx after the SDK's retries  :class:`ServerUnreachable` (transient)
a connection refused, reset, timed out   :class:`ServerUnreachable`
anything else (400, 404, 409, a failed   :class:`AzureRequestFailed`, Azure's code kept
long-running operation)
=======================================  ===============================================

The SDK's own retry policy owns transient HTTP failures (it honours ``Retry-After``); what it
gives up on is reported here, never retried again in a loop of ours.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from dr_runbooks.errors import (
    AzureRequestFailed,
    ConcurrentChange,
    ConnectionFailed,
    DRError,
    ServerUnreachable,
)
from dr_runbooks.redaction import redact

__all__ = ["azure_error", "error_code", "status_of", "translated"]

_TRANSIENT = {408, 429, 500, 502, 503, 504}


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an SDK error, when it has one."""
    return getattr(exc, "status_code", None) if isinstance(exc, HttpResponseError) else None


def error_code(exc: BaseException) -> str | None:
    """Azure's error code (``PreconditionFailed``, ``ServerNameAlreadyExists``...)."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code:
        return str(code)
    response = getattr(exc, "response", None)
    try:
        body: Any = response.json() if response is not None else None
    except Exception:  # not JSON: no code to read
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code") or "") or None
    return None


def _message(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    for line in str(text).splitlines():
        line = line.strip()
        if line and not line.lower().startswith(("code:", "message:")):
            return line
    return type(exc).__name__


def azure_error(exc: BaseException, action: str) -> DRError:
    """``exc`` as one of ours, its message ``"<action>: <code>: <Azure's message>"``."""
    if isinstance(exc, DRError):
        return exc
    code = error_code(exc)
    text = redact(f"{action}: " + (f"{code}: " if code else "") + _message(exc))
    status = status_of(exc)
    if type(exc).__name__ == "CredentialUnavailableError" or (
        isinstance(exc, ClientAuthenticationError) and status is None
    ):
        return ConnectionFailed(redact(f"{action}: cannot sign in to Azure: {_message(exc)}"))
    if status in (401, 403):
        return ConnectionFailed(text)
    if status == 412:
        return ConcurrentChange(text)
    if status in _TRANSIENT or isinstance(exc, ServiceRequestError | ServiceResponseError):
        return ServerUnreachable(text)
    if isinstance(exc, AzureError):
        return AzureRequestFailed(text)
    return AzureRequestFailed(redact(f"{action}: {type(exc).__name__}: {_message(exc)}"))


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Raise the SDK's errors raised inside as ours (``from None``: the SDK's text may hold a
    request URL, and Prefect logs chained exceptions in full)."""
    try:
        yield
    except DRError:
        raise
    except AzureError as exc:
        raise azure_error(exc, action) from None
