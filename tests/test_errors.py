"""What a task's retry can fix, and what it cannot: the classification every task uses."""

from __future__ import annotations

import pytest
from prefect.states import Completed, Failed

from dr_runbooks.errors import (
    AccessDenied,
    BackupDamaged,
    BackupNotFound,
    ChecksumMismatch,
    ConnectionFailed,
    DumpFailed,
    LockHeld,
    RestoreVerificationFailed,
    ServerUnreachable,
    StoreUnavailable,
)
from tasks._runtime import transient_only


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (StoreUnavailable("writing x failed: connection reset"), True),
        (ServerUnreachable("cannot connect: connection refused"), True),
        (DumpFailed("pg_dump exited 1: terminating connection"), True),
        (ConnectionFailed("password authentication failed"), False),
        (AccessDenied("access denied (403)"), False),
        (BackupNotFound("no backup"), False),
        (ChecksumMismatch("corrupt"), False),
        (RestoreVerificationFailed("rows differ"), False),
        (BackupDamaged("manifest malformed"), False),
        (LockHeld("locked by run 1"), False),
    ],
)
def test_transient_failures_are_retried_and_nothing_else(error: Exception, retried: bool) -> None:
    assert transient_only(None, None, Failed(data=error)) is retried


def test_success_needs_no_judgement() -> None:
    assert transient_only(None, None, Completed(data=1)) is True
