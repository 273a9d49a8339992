"""The durable record of a runbook run: one JSON object per scenario run or drill, in a backup
repository, so it outlives the machine that ran it and any Prefect server.

Layout, in the repository's store::

    runs/20261205T060003Z-1f2e3d4c.json               the record (this module's RunRecord)
    runs/20261205T060003Z-1f2e3d4c.postmortem.md      the post-incident review drafted from it
    runs/20261205T060003Z-1f2e3d4c.report.md          a drill's report, and its chart:
    runs/20261205T060003Z-1f2e3d4c.trend.png

The runbook skeleton writes the record when the run begins, when each step begins and ends
(so a run killed in the middle leaves its record, ``running`` at the step it died in) and once
at the end. A record that ended (``completed``, ``failed``, ``cancelled``) is never written
again: :meth:`RunLog.save` refuses. The id sorts by start time.

The record never holds a secret: parameters pass through :func:`clean_parameters`, every text
through :func:`~dr_runbooks.redaction.redact`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dr_runbooks.errors import BadInput, ObjectNotFound, OperationFailed
from dr_runbooks.redaction import MASK, redact
from dr_runbooks.storage.base import Store

__all__ = [
    "FINAL",
    "PREFIX",
    "RecordClosed",
    "RunLog",
    "RunNotFound",
    "RunRecord",
    "Status",
    "StepEntry",
    "abandon",
    "clean_parameters",
    "kind_of",
    "new_record_id",
]

PREFIX = "runs/"
FORMAT_VERSION = 1
Status = Literal["running", "completed", "failed", "cancelled"]
FINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-z]{4,32}$")
_SECRET_NAME = re.compile(r"password|passwd|secret|token|credential|api_?key|sas", re.IGNORECASE)


class RunNotFound(BadInput):
    """No run record with that id (or the id names more than one)."""


class RecordClosed(OperationFailed):
    """The record of a run that ended is never written again."""


def new_record_id(started: datetime, token: str) -> str:
    """``20261205T060003Z-1f2e3d4c``: when the run began (UTC) and its run token."""
    return f"{started.astimezone(UTC):%Y%m%dT%H%M%SZ}-{token.lower()}"


def clean_parameters(value: Any, name: str = "") -> Any:
    """A run's parameters as they may be kept: secret-named values masked, every string
    redacted, anything else made JSON (flows take no secrets, but a record must not hold one
    even when a caller got that wrong)."""
    if name and _SECRET_NAME.search(name) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, dict):
        return {str(k): clean_parameters(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [clean_parameters(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return redact(str(value))


class StepEntry(BaseModel):
    """One step of the run as it happened."""

    model_config = ConfigDict(extra="allow")

    name: str
    started: datetime
    finished: datetime | None = None
    seconds: float | None = None
    outcome: str = "running"
    detail: str = ""


class RunRecord(BaseModel):
    """What one run of a runbook did, measured and was launched with."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    id: str
    kind: str = Field(description="scenario or drill")
    flow: str
    system: str
    run_id: str | None = None
    flow_run_name: str | None = None
    deployment: str | None = None
    launched_by: str = "unknown"
    #: The record of the run this one ran inside (a drill's recovery), if any.
    parent: str | None = None
    host: str = ""
    pid: int | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    severity: str | None = None
    status: Status = "running"
    started: datetime
    updated: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None
    error: str | None = None
    failed_step: str | None = None
    steps: list[StepEntry] = Field(default_factory=list)
    #: RTO and RPO achieved and their objectives, data lost, the backup used, the incident.
    measurements: dict[str, Any] = Field(default_factory=dict)
    #: The run's own findings: verification, integration test, performance, review…
    results: dict[str, Any] = Field(default_factory=dict)
    #: dr.yaml as the run read it: path, sha256, the git commit and whether it differed.
    config: dict[str, Any] = Field(default_factory=dict)
    #: Keys (in the same store) of what was kept with the record: postmortem, report, chart.
    attachments: dict[str, str] = Field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.status in FINAL

    @property
    def seconds(self) -> float | None:
        end = self.finished or (self.updated if self.ended else None)
        return (end - self.started).total_seconds() if end else None

    def failed_at(self) -> StepEntry | None:
        return next((s for s in reversed(self.steps) if s.outcome == "failed"), None)


class RunLog:
    """The run records in one repository's store."""

    def __init__(self, store: Store, name: str = "") -> None:
        self.store = store
        self.name = name or store.location

    @staticmethod
    def key(record_id: str, suffix: str = "json") -> str:
        if not _ID.match(record_id):
            raise RunNotFound(f"{record_id!r} is not a run record id (like 20261205T060003Z-1f2e)")
        return f"{PREFIX}{record_id}.{suffix}"

    def save(self, record: RunRecord) -> str:
        """Write the record; refuse to write over one that ended (:class:`RecordClosed`).
        The repository must exist (only a backup creates one):
        :class:`~dr_runbooks.errors.RepositoryNotFound` otherwise."""
        key = self.key(record.id)
        try:
            stored = json.loads(self.store.read_bytes(key))
        except ObjectNotFound:
            stored = None
        except ValueError:
            stored = None  # a damaged copy of a live record: this write repairs it
        if isinstance(stored, dict) and stored.get("status") in FINAL:
            raise RecordClosed(
                f"the record {key} in {self.name} ended {stored.get('status')}; it is not "
                "written again"
            )
        record.updated = datetime.now(UTC)
        self.store.put_bytes(key, record.model_dump_json(indent=2).encode())
        return key

    def attach(self, record_id: str, suffix: str, data: bytes) -> str:
        """Keep ``data`` beside the record (``postmortem.md``, ``report.md``, ``trend.png``)."""
        key = self.key(record_id, suffix)
        self.store.put_bytes(key, data)
        return key

    def attachment(self, key: str) -> bytes:
        return self.store.read_bytes(key)

    def read(self, record_id: str) -> RunRecord:
        """The record ``record_id``; a unique prefix of an id is enough."""
        matches = [r for r in self._keys() if r.startswith(f"{PREFIX}{record_id}")]
        exact = f"{PREFIX}{record_id}.json"
        if exact in matches:
            matches = [exact]
        if not matches:
            raise RunNotFound(f"no run record {record_id!r} in {self.name}")
        if len(matches) > 1:
            shown = ", ".join(m.removeprefix(PREFIX).removesuffix(".json") for m in matches[:5])
            raise RunNotFound(f"{record_id!r} names several runs in {self.name}: {shown}")
        return self._load(matches[0])

    def records(self, kind: str | None = None) -> tuple[list[RunRecord], list[str]]:
        """Every record (of ``kind``), oldest first, and the keys of those that cannot be read."""
        records, damaged = [], []
        for key in sorted(self._keys()):
            try:
                record = self._load(key)
            except OperationFailed:
                damaged.append(key)
                continue
            if kind is None or record.kind == kind:
                records.append(record)
        return records, damaged

    def _keys(self) -> list[str]:
        if not self.store.exists():
            return []
        return [
            info.key
            for info in self.store.list(PREFIX)
            if info.key.endswith(".json") and info.key.count("/") == 1
        ]

    def _load(self, key: str) -> RunRecord:
        try:
            return RunRecord.model_validate_json(self.store.read_bytes(key))
        except (ValidationError, ValueError) as exc:
            raise OperationFailed(
                f"the run record {key} in {self.name} cannot be read: {str(exc).splitlines()[0]}"
            ) from None


def abandon(record: RunRecord, why: str) -> RunRecord:
    """``record`` closed as failed because its run died without ending it: the step it was in
    marked failed, ``finished`` its last sign of life (the record's last write)."""
    closed = record.model_copy(deep=True)
    last = closed.steps[-1] if closed.steps else None
    where = ""
    if last is not None and last.outcome == "running":
        last.outcome = "failed"
        last.detail = (last.detail + "; " if last.detail else "") + "the run died here"
        closed.failed_step = last.name
        where = f" during {last.name!r}"
    elif last is not None:
        where = f" after {last.name!r}"
    closed.status = "failed"
    closed.finished = record.updated
    closed.error = f"{why}{where}; closed by a later run"
    return closed


def kind_of(flow: str) -> str | None:
    """What a runbook's runs are recorded as: ``drill`` (the monthly drill),
    ``recovery-test`` (the quarterly test), ``scenario`` (every recovery runbook); None for
    backups and verifications, which keep their own records next to each backup."""
    if flow.startswith(("backup-", "verify-")):
        return None
    if "recovery-test" in flow:
        return "recovery-test"
    if "drill" in flow:
        return "drill"
    return "scenario"
