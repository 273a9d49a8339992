"""The durable records of the Azure runbooks (:mod:`dr_runbooks.azure.records`): opened at the
start of a run, saved after every change, closed at the end."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.azure.records import RecordBook, RunRecord, Status
from dr_runbooks.repository import Repository
from tasks._runtime import logger, transient_only

__all__ = ["flow_run_id", "record_begin", "record_finish", "record_save"]


def flow_run_id() -> str | None:
    """The current flow run's id (recorded as the run that worked on a record), or None."""
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.get_id()
    except Exception:  # outside a flow run
        return None
    return str(run_id) if run_id else None


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def record_begin(
    repository: Repository, area: str, system: str, kind: str, run_id: str | None
) -> tuple[RecordBook, RunRecord]:
    """Resume the unfinished record of this runbook for ``system``, or start one."""
    book = RecordBook(repository.store, area, system)
    record, resumed = book.begin(kind, run_id)
    log = logger()
    if resumed:
        log.warning(
            "resuming the %s of %s started %s (runs %s); done already: %s",
            kind,
            system,
            record.started.isoformat(timespec="seconds"),
            ", ".join(record.runs[:-1]) or "none recorded",
            ", ".join(record.done) or "nothing",
        )
    else:
        log.info("recording this %s in %s/%s", kind, repository.name, book.active_key)
    return book, record


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def record_save(book: RecordBook, record: RunRecord) -> None:
    """Write the record (rewriting the same record is harmless, so retries are safe)."""
    book.save(record)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def record_finish(book: RecordBook, record: RunRecord, status: Status) -> str:
    """Close the record into the history; returns where it is kept."""
    key = book.finish(record, status)
    logger().info("%s of %s %s; record kept as %s", record.kind, record.system, status, key)
    return key
