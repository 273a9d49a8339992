"""What a worker's run log says when a runbook ends on purpose: no traceback for a rejection or
for our own errors, a traceback still for a bug."""

from __future__ import annotations

import logging

import pytest
from prefect.exceptions import CancelledRun

import flows.runbook  # noqa: F401  (installs the filter, as every runbook's import does)
from dr_runbooks.errors import BadInput


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _engine_exit(exc: BaseException) -> logging.LogRecord:
    """Log as Prefect's flow engine does when a deployment's run ends Failed or Cancelled."""
    logger = logging.getLogger("prefect.flow_runs")
    keep = _Keep()
    logger.addHandler(keep)
    try:
        try:
            raise exc
        except BaseException:
            logger.error("Engine execution exited with unexpected exception", exc_info=True)
    finally:
        logger.removeHandler(keep)
    [record] = keep.records
    return record


def test_a_rejection_is_information_without_a_traceback() -> None:
    record = _engine_exit(CancelledRun("plan rejected by Ada: wrong backup"))
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == "the run ended Cancelled: plan rejected by Ada: wrong backup"


@pytest.mark.parametrize("secret", ["s3cret-Passw0rd"])
def test_our_error_is_one_line_and_redacted(secret: str) -> None:
    from dr_runbooks.redaction import register_secret

    register_secret(secret)
    record = _engine_exit(BadInput(f"unknown backup id for password={secret}\nsecond line"))
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert record.getMessage().startswith("the run failed: unknown backup id")
    assert secret not in record.getMessage() and "second line" not in record.getMessage()


def test_a_bug_keeps_its_traceback() -> None:
    record = _engine_exit(KeyError("surprise"))
    assert record.levelno == logging.ERROR and record.exc_info is not None
