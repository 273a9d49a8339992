"""The durable record of a runbook run that changes Azure: what it captured before changing
anything (the DNS rollback plan, the rules an isolation displaced), which steps are done, and
every change made.

It lives in a repository's store, so a run that crashed, was killed, or was suspended and
started again from the top finds it and does not do the same work twice::

    book = RecordBook(store, "failover", "shop")
    record, resumed = book.begin("failover", run_id="…")
    if not record.is_done("dns cutover"):
        ...
        record.mark("dns cutover", {"records": [...]})
        book.save(record)
    book.finish(record, "completed")

Layout: ``<area>/<system>/active.json`` while a run is unfinished, then
``<area>/<system>/history/<started>-<kind>.json`` once it completed, was rolled back, or was
rejected or failed before it changed anything. One active record per area and system: a failover and
a failback of one system share the area ``failover``, so neither starts while the other is
unfinished. Two live runs are kept apart by
a lock held around the run (the record itself is not a lock).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dr_runbooks.errors import ConfigError, ObjectNotFound, OperationFailed
from dr_runbooks.locks import Holder, StoreLock, lock_name
from dr_runbooks.storage.base import Store

__all__ = ["Change", "RecordBook", "RunRecord", "Status", "records_lock"]

Status = Literal["in-progress", "completed", "rolled-back", "rejected", "abandoned"]


def _now() -> datetime:
    return datetime.now(UTC)


class Change(BaseModel):
    """One change made to something outside the run, and what undoing or cleaning it needs."""

    when: datetime = Field(default_factory=_now)
    what: str
    cleanup: str = ""


class RunRecord(BaseModel):
    """What one runbook run did and captured; JSON in the store."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    system: str
    status: Status = "in-progress"
    started: datetime = Field(default_factory=_now)
    updated: datetime = Field(default_factory=_now)
    #: The flow runs that worked on this record, first to last.
    runs: list[str] = Field(default_factory=list)
    #: Finished steps and what each produced.
    done: dict[str, Any] = Field(default_factory=dict)
    #: What was captured before changing anything (a rollback plan, displaced rules…).
    captured: dict[str, Any] = Field(default_factory=dict)
    changes: list[Change] = Field(default_factory=list)

    def is_done(self, step: str) -> bool:
        return step in self.done

    def result(self, step: str) -> Any:
        return self.done.get(step)

    def mark(self, step: str, result: Any = True) -> None:
        self.done[step] = result

    def change(self, what: str, cleanup: str = "") -> None:
        self.changes.append(Change(what=what, cleanup=cleanup))

    @property
    def untouched(self) -> bool:
        """Nothing was changed or finished under this record (only captured state)."""
        return not self.changes and not self.done


class RecordBook:
    """The records of one area (``failover``, ``breach``) of one system in ``store``."""

    def __init__(self, store: Store, area: str, system: str) -> None:
        if not system or "/" in system or system.startswith("."):
            raise ConfigError(f"system name {system!r} cannot name a record")
        self.store = store
        self.prefix = f"{area}/{system}/"
        self.area, self.system = area, system

    @property
    def active_key(self) -> str:
        return self.prefix + "active.json"

    def active(self) -> RunRecord | None:
        """The unfinished run's record, if there is one."""
        try:
            raw = self.store.read_bytes(self.active_key)
        except ObjectNotFound:
            return None
        try:
            return RunRecord.model_validate_json(raw)
        except ValueError as exc:
            raise OperationFailed(
                f"the record {self.active_key} in {self.store.location} cannot be read "
                f"({str(exc).splitlines()[0]}); move it aside to start afresh"
            ) from None

    def begin(self, kind: str, run_id: str | None) -> tuple[RunRecord, bool]:
        """Resume the unfinished record of ``kind`` or start a new one; returns it and whether
        it was resumed. An unfinished record of another kind refuses the run."""
        self.store.create()
        current = self.active()
        if current is not None and current.kind != kind:
            raise ConfigError(
                f"an unfinished {current.kind} of {self.system} (started "
                f"{current.started.isoformat(timespec='seconds')}) is recorded in "
                f"{self.store.location}/{self.active_key}: run the {current.kind} again to "
                f"finish or roll it back first"
            )
        record = current or RunRecord(kind=kind, system=self.system)
        if run_id and (not record.runs or record.runs[-1] != run_id):
            record.runs.append(run_id)
        self.save(record)
        return record, current is not None

    def save(self, record: RunRecord) -> None:
        record.updated = _now()
        self.store.put_bytes(self.active_key, record.model_dump_json(indent=2).encode())

    def finish(self, record: RunRecord, status: Status) -> str:
        """Close the record: keep it in the history and clear the active one; returns the key
        it is kept under."""
        record.status = status
        stamp = record.started.strftime("%Y%m%dT%H%M%SZ")
        key = f"{self.prefix}history/{stamp}-{record.kind}.json"
        record.updated = _now()
        self.store.put_bytes(key, record.model_dump_json(indent=2).encode())
        self.store.delete([self.active_key])
        return key

    def history(self) -> list[RunRecord]:
        """Finished records, oldest first."""
        records = []
        for info in self.store.list(self.prefix + "history/"):
            records.append(RunRecord.model_validate(json.loads(self.store.read_bytes(info.key))))
        return sorted(records, key=lambda r: r.started)


class _RecordsLock(StoreLock):
    """A store lock whose store is created first (the first run of a system may make it)."""

    def try_acquire(self, holder: Holder) -> bool:
        self.store.create()
        return super().try_acquire(holder)


def records_lock(store: Store, area: str, system: str, where: str) -> StoreLock:
    """The lock one run of ``area`` for ``system`` holds while it works (it dies with the run:
    a killed run does not keep it)."""
    return _RecordsLock(store, lock_name(area, system), f"the {area} of {system} ({where})")
