"""What the runbook skeleton keeps of every scenario run and drill beyond Prefect's own: the
durable run record, the post-incident review drafted at the end, and the escalation path
followed from inside the run where no server follows it.

:class:`~flows.runbook.Runbook` opens a :class:`Journal` when it starts and tells it about
each step, the measurements and the end; flows never use it directly. Nothing here may stop a
runbook: a record that cannot be written is logged, and the run goes on.

- **The record** (:mod:`dr_runbooks.runs`) is written when the run starts, when each step
  begins and ends, and once at the end, into the repository :func:`tasks.run_records.run_log_for`
  chooses; a runbook whose system names none writes it once it knows its repository
  (``rb.record_into``, or the target it recovered). A runbook run inside another (the drill's
  recovery) has its own record, naming the outer one as its parent.
- **The post-mortem** (:mod:`dr_runbooks.postmortem`) is drafted from the final record by the
  outermost runbook, published as a markdown artifact and kept beside the record.
- **Escalation**: the server's automations (``dr escalation apply``) follow hung and dead runs.
  When the server holds none for this flow (a temporary local server), the outermost runbook
  notifies each level itself when its time comes, until it ends.
"""

from __future__ import annotations

import contextvars
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dr_runbooks.config import find_config, load_config
from dr_runbooks.configversion import config_version
from dr_runbooks.errors import RepositoryNotFound
from dr_runbooks.escalation import Level, levels
from dr_runbooks.postmortem import draft
from dr_runbooks.redaction import redact
from dr_runbooks.repository import Repository
from dr_runbooks.runs import RunLog, RunRecord, StepEntry, kind_of, new_record_id
from dr_runbooks.text import first_line
from dr_runbooks.timeline import Step
from tasks._runtime import logger
from tasks.escalation import escalation_send, escalation_served
from tasks.notify import run_reference
from tasks.report import report_publish
from tasks.run_records import (
    run_context,
    run_log_for,
    run_log_of,
    run_record_attach,
    run_record_save,
    run_records_close_abandoned,
    run_records_read,
)

if TYPE_CHECKING:
    from flows.runbook import Runbook

__all__ = ["Journal"]


class Journal:
    """The record, post-mortem and escalation fallback of one runbook run."""

    def __init__(self, rb: Runbook, outer: Runbook | None) -> None:
        self.rb = rb
        self.outer = outer
        self.kind = kind_of(rb.name)
        self.record: RunRecord | None = None
        self.log: RunLog | None = None
        self._resolved = False
        self._warned = False
        self._saved = False
        self._escalation: _Escalation | None = None

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, rb: Runbook, outer: Runbook | None) -> Journal:
        journal = cls(rb, outer)
        if journal.kind is None:
            return journal
        try:
            journal._begin()
        except Exception as exc:  # bookkeeping never stops a runbook
            logger().warning("the run record could not be started: %s", first_line(exc))
        if outer is None:
            journal._escalation = _Escalation.start(rb)
        return journal

    def _begin(self) -> None:
        rb = self.rb
        context = run_context()
        parameters = context.get("parameters", {})
        path = rb.config_path or find_config()
        outer_journal = getattr(self.outer, "journal", None)
        self.record = RunRecord(
            id=new_record_id(rb.timeline.started, rb.token),
            kind=self.kind or "scenario",
            flow=rb.name,
            system=rb.system,
            run_id=context.get("run_id"),
            flow_run_name=context.get("flow_run_name"),
            deployment=context.get("deployment"),
            launched_by=(
                f"the run {outer_journal.record.id} of {self.outer.name}"
                if self.outer is not None and outer_journal and outer_journal.record
                else context.get("launched_by", "unknown")
            ),
            parent=outer_journal.record.id if outer_journal and outer_journal.record else None,
            host=socket.gethostname(),
            pid=os.getpid(),
            parameters=parameters,
            severity=str(parameters["severity"]) if parameters.get("severity") else None,
            started=rb.timeline.started,
            config=config_version(path) if path else {"path": None},
        )
        if rb.incident != rb.timeline.started:
            self.record.measurements["incident_time"] = rb.incident.isoformat()
        self._write()

    # -- where the record goes -------------------------------------------------------------

    def into(self, repository: Repository) -> None:
        """Keep the record in ``repository`` unless dr.yaml or the system names a place."""
        try:
            chosen = self._log()
        except Exception as exc:
            logger().warning("the run record's repository: %s", first_line(exc))
            chosen = None
        if chosen is None:
            self.log = run_log_of(repository)
            self._write()

    def _log(self) -> RunLog | None:
        if not self._resolved:
            self._resolved = True
            self.log = run_log_for(self.rb.config_path, self.rb.system)
        return self.log

    def _write(self) -> None:
        if self.record is None:
            return
        try:
            log = self._log()
            if log is None:
                return
            self.record.system = self.rb.system
            self.record.steps = [_entry(s) for s in self.rb.timeline.steps]
            run_record_save(log, self.record)
            if not self._saved and self.outer is None:
                # Once the record stands: close those a killed run left ``running`` here.
                run_records_close_abandoned(log, self.record.id)
            self._saved = True
        except RepositoryNotFound as exc:
            # A repository no backup has made yet: written at the next step, once it exists.
            if not self._warned:
                self._warned = True
                logger().info("the run record waits for its repository: %s", first_line(exc))
        except Exception as exc:
            self._resolved = self.log is not None
            if not self._warned:
                self._warned = True
                logger().warning("the run record could not be written: %s", first_line(exc))

    # -- during the run --------------------------------------------------------------------

    @contextmanager
    def step(self, timed: AbstractContextManager[Step]) -> Iterator[Step]:
        """Write the record when a step begins and once it ended (its outcome is set when
        the timeline's own block ends, so the second write comes after it)."""
        try:
            with timed as step:
                self._write()
                yield step
        finally:
            self._write()

    def measured(self, values: dict[str, Any]) -> None:
        if self.record is not None:
            self.record.measurements.update(_plain(values))
            self._write()

    def noted(self, values: dict[str, Any]) -> None:
        if self.record is not None:
            self.record.results.update(_plain(values))
            self._write()

    def snapshot(self) -> RunRecord | None:
        """The record as it stands (steps up to now), for a report made during the run."""
        if self.record is None:
            return None
        self.record.steps = [_entry(s) for s in self.rb.timeline.steps]
        return self.record.model_copy(deep=True)

    def history(self, kind: str) -> list[RunRecord]:
        """The records of earlier runs of ``kind`` in this run's repository, oldest first."""
        try:
            log = self._log()
            if log is None:
                return []
            own = self.record.id if self.record is not None else None
            return [r for r in run_records_read(log, kind) if r.id != own]
        except Exception as exc:
            logger().warning("earlier run records could not be read: %s", first_line(exc))
            return []

    def attach(self, suffix: str, data: bytes) -> str | None:
        """Keep ``data`` beside the record; returns where (None when there is no record)."""
        if self.record is None:
            return None
        try:
            log = self._log()
            if log is None:
                return None
            key = run_record_attach(log, self.record.id, suffix, data)
        except Exception as exc:
            logger().warning("could not keep %s beside the record: %s", suffix, first_line(exc))
            return None
        self.record.attachments[suffix.split(".")[0]] = key
        return f"{log.name}/{key}"

    # -- the end ---------------------------------------------------------------------------

    def close(self, exc: BaseException | None) -> None:
        if self._escalation is not None:
            self._escalation.stop()
        if self.record is None:
            return
        try:
            self._finish(exc)
        except Exception as error:
            logger().error("the run record could not be closed: %s", first_line(error))

    def _finish(self, exc: BaseException | None) -> None:
        from dr_runbooks.errors import Rejected

        record = self.record
        assert record is not None
        record.steps = [_entry(s) for s in self.rb.timeline.steps]
        record.finished = datetime.now(UTC)
        if exc is None or isinstance(exc, GeneratorExit):
            record.status = "completed"
        elif isinstance(exc, Rejected):
            record.status, record.error = "cancelled", first_line(exc)
        else:
            record.status, record.error = "failed", first_line(exc)
            failed = record.failed_at()
            record.failed_step = failed.name if failed else None
        if self.outer is None:
            self._postmortem(record)
        self._write()
        if self.log is not None and self._saved:
            logger().info(
                "run record %s kept in %s (dr runs show %s)", record.id, self.log.name, record.id
            )

    def _postmortem(self, record: RunRecord) -> None:
        text = draft(record)
        try:
            report_publish(
                f"postmortem-{self.rb.name}-{self.rb.system}",
                f"Post-incident review (draft) of {self.rb.name} for {self.rb.system}",
                markdown=text,
            )
        except Exception as exc:
            logger().warning("could not publish the post-mortem draft: %s", first_line(exc))
        log = self._log()
        if log is None:
            return
        try:
            key = run_record_attach(log, record.id, "postmortem.md", text.encode())
            record.attachments["postmortem"] = key
        except Exception as exc:
            logger().warning("could not keep the post-mortem draft: %s", first_line(exc))


def _entry(step: Step) -> StepEntry:
    finished = None
    if step.outcome != "running":
        finished = step.started + timedelta(seconds=step.seconds)
    return StepEntry(
        name=step.name,
        started=step.started,
        finished=finished,
        seconds=round(step.seconds, 3) if step.outcome != "running" else None,
        outcome=step.outcome,
        detail=redact(step.detail),
    )


def _link() -> str:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.get_flow_run_ui_url() or "the Prefect UI")
    except Exception:  # outside a flow run
        return "the Prefect UI"


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready values (times as ISO 8601, everything else as the model can hold it)."""
    return dict(json.loads(json.dumps(values, default=str)))


class _Escalation:
    """The escalation path followed from inside the run (see the module docstring)."""

    def __init__(self, rb: Runbook, path: list[Level]) -> None:
        self.rb = rb
        self.path = path
        self.stopped = threading.Event()
        context = contextvars.copy_context()  # Prefect's settings and run context
        self.thread = threading.Thread(
            target=context.run, args=(self._follow,), name="dr-escalation", daemon=True
        )

    @classmethod
    def start(cls, rb: Runbook) -> _Escalation | None:
        try:
            path = [lvl for lvl in levels(load_config(rb.config_path)) if rb.name in lvl.flows]
        except Exception as exc:
            logger().warning("escalation path not followed: %s", first_line(exc))
            return None
        if not path or rb.run_id is None:
            return None
        escalation = cls(rb, path)
        escalation.thread.start()
        return escalation

    def _follow(self) -> None:
        try:
            if escalation_served(self.rb.name):
                return
        except Exception as exc:
            logger().warning("cannot tell whether the server escalates: %s", first_line(exc))
        logger().warning(
            "no escalation automations on this Prefect server for %s: escalating from this "
            "run (it cannot if its process dies; see dr escalation apply)",
            self.rb.name,
        )
        begun = self.rb.timeline.started
        for level in self.path:
            due = (begun + level.after - datetime.now(UTC)).total_seconds()
            if due > 0 and self.stopped.wait(due):
                return
            if self.stopped.is_set() and not level.immediate:
                return  # level 1 is told of every run, however short
            try:
                escalation_send(level, self.rb.name, run_reference(), _link())
            except Exception as exc:
                logger().error("escalation level %d not sent: %s", level.number, first_line(exc))

    def stop(self) -> None:
        self.stopped.set()
