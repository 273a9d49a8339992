"""The skeleton every runbook shares: its timeline, the approval gate, RTO and RPO measured
once, and what happens when it fails.

A runbook's steps stay in its own flow body; only the bookkeeping lives here::

    with Runbook("database-failure", system=system, config_path=config_path) as rb:
        with rb.step("assess"):
            status = postgres_assess(...)
        ...
        if rb.gate(f"restore-{system}-{name}", plan, dry_run, approved, timeout) is None:
            return {"dry_run": True, "plan": plan}
        ...
        return rb.recovered(target, backup.consistent_point, key=...)

On failure the runbook publishes its partial timeline with the failure as an artifact and
sends one notification (a runbook run as a step of another, like the drill's recovery, leaves
the notification to the outer one), then lets the error end the run. A flow decorated with
:func:`runbook` (under ``@flow``) ends an expected failure (one of our errors) as Failed with
its one-line message and no traceback, and a rejected plan as Cancelled: a decision, not a
failure, so nobody is paged.

``rb.lock(...)`` holds locks that die with their holder (:mod:`dr_runbooks.locks`) around the
steps that must not run twice at once, reporting who holds them while it waits. Each run is
recorded on its machine while it lives (:class:`dr_runbooks.processes.RunRegistry`); the next
run marks those whose process died Crashed in Prefect, and removes the work directories they
left.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from prefect.exceptions import CancelledRun
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Cancelled, Failed
from pydantic import Field
from tenacity import RetryCallState, retry, retry_if_exception_type, stop_after_attempt, wait_fixed

from dr_runbooks.errors import DRError, LockHeld, Rejected, ServerUnreachable
from dr_runbooks.locks import Holder, Lock, hold
from dr_runbooks.processes import RunRegistry
from dr_runbooks.redaction import redact
from dr_runbooks.repository import Repository, parse_time
from dr_runbooks.runs import RunRecord
from dr_runbooks.targets import Target
from dr_runbooks.text import first_line, human_duration
from dr_runbooks.timeline import Step, Timeline
from flows.journal import Journal
from tasks._runtime import logger
from tasks.notify import notify_send
from tasks.report import report_publish
from tasks.runs import prefect_mark_crashed, workdir_remove_stale

__all__ = ["Approval", "Runbook", "runbook"]


def _flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.get_id()
    except Exception:  # outside a flow run
        return None
    return str(run_id) if run_id else None


#: The runbooks running in this context, outermost first.
_running: contextvars.ContextVar[tuple[Runbook, ...]] = contextvars.ContextVar(
    "dr_runbooks_running", default=()
)


class Approval(RunInput):
    """The answer a person gives in the Prefect UI to a paused runbook (the Resume dialog
    shows the plan above these fields)."""

    approve: bool = Field(
        False,
        description="On: run the plan shown above; off: reject it (the run "
        "ends Cancelled and nothing is changed).",
    )
    approver: str = Field(
        description="Your name: it is recorded with the decision in the logs, the report and "
        "the run's result.",
        min_length=1,
    )
    reason: str = Field("", description="Why (optional): a ticket, the incident, what was checked.")


P = ParamSpec("P")
R = TypeVar("R")


def runbook(fn: Callable[P, R]) -> Callable[P, R]:
    """Under ``@flow``: end an expected failure (our errors: bad input, a failed operation) as
    Failed with its message only, and a rejected plan as Cancelled. Tracebacks are for bugs;
    a call from Python still raises the error, and a rejection raises ``CancelledRun``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Rejected as exc:
            return cast(R, Cancelled(message=str(exc)))
        except DRError as exc:
            return cast(R, Failed(message=first_line(exc), data=exc))

    # The flow's annotations are strings (postponed evaluation) that only its own module can
    # resolve; Prefect would resolve them in this module's, so give it the evaluated signature.
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return wrapper


class _ExpectedEndsWithoutTraceback(logging.Filter):
    """A worker running a deployment logs "Engine execution exited with unexpected exception"
    with a traceback whenever a flow ends Failed or Cancelled. For the ends :func:`runbook`
    makes on purpose that is noise in the run's log: a rejection (logged as information) and
    our own errors (one line, no traceback). Anything else keeps its traceback: a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not str(record.msg).startswith("Engine execution exited"):
            return True
        if isinstance(exc, CancelledRun):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "the run ended Cancelled: %s", (first_line(exc),)
        elif isinstance(exc, DRError):
            record.msg, record.args = "the run failed: %s", (redact(first_line(exc)),)
        else:
            return True
        record.exc_info, record.exc_text = None, None
        return True


_EXPECTED_ENDS = _ExpectedEndsWithoutTraceback()
logging.getLogger("prefect.flow_runs").addFilter(_EXPECTED_ENDS)


class Runbook(AbstractContextManager["Runbook"]):
    """One run of a runbook: ``name`` is the flow's name, ``system`` what the run is about
    (used in notifications; a flow may narrow it later, e.g. to the systems that failed)."""

    #: How often, and how far apart, taking a lock is tried again when its server or store
    #: does not answer (as the steps' own retries).
    LOCK_RETRIES = 1
    LOCK_RETRY_DELAY = 10.0

    def __init__(
        self,
        name: str,
        *,
        system: str | None = None,
        config_path: str | None = None,
        incident_time: str | None = None,
        notify: bool = True,
    ) -> None:
        self.name = name
        self.system = system or "unknown system"
        self.config_path = config_path
        self.notify = notify
        self.timeline = Timeline()
        # A malformed time is bad input before anything starts (the run record included).
        self._incident: datetime | None = parse_time(incident_time) if incident_time else None
        self._context: contextvars.Token[tuple[Runbook, ...]] | None = None
        self.run_id = _flow_run_id()
        #: Eight hex characters naming this run's side databases and work.
        self.token = (self.run_id or secrets.token_hex(4)).replace("-", "")[:8]
        self._locks: list[Lock] = []

    # -- the context ------------------------------------------------------------------------

    def __enter__(self) -> Runbook:
        self._context = _running.set((*_running.get(), self))
        if self.run_id is not None:
            registry = RunRegistry()
            for dead in registry.dead():
                self._mark_crashed(dead)
                registry.forget(str(dead["run_id"]))
            registry.register(self.run_id, self.name)
        running = _running.get()
        self.journal = Journal.open(self, running[-2] if len(running) > 1 else None)
        return self

    def _mark_crashed(self, dead: dict[str, Any]) -> None:
        try:
            prefect_mark_crashed(
                str(dead["run_id"]), str(dead.get("flow")), str(dead.get("host")), int(dead["pid"])
            )
        except Exception as exc:  # housekeeping must not stop the runbook
            logger().warning("could not mark run %s Crashed: %s", dead["run_id"], first_line(exc))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outer = _running.get()[:-1]
        if self._context is not None:
            _running.reset(self._context)
        if self.run_id is not None:
            RunRegistry().forget(self.run_id)
        self._journal().close(exc)
        if exc is None or isinstance(exc, GeneratorExit):
            return
        if isinstance(exc, Rejected):
            self._report_rejection(exc)
            return
        self._report_failure(exc, notify=self.notify and not outer)

    def _report_rejection(self, exc: Rejected) -> None:
        """A person decided no: the timeline is published, the decision logged, nobody paged."""
        logger().warning("%s for %s: %s; nothing was changed", self.name, self.system, exc)
        with contextlib.suppress(Exception):
            report_publish(
                f"{self.name}-{self.system}",
                redact(f"{self.name} CANCELLED: {exc}"),
                table=[
                    *self._rows(),
                    self._row("REJECTED", self.timeline.started, None, str(exc), "cancelled"),
                ],
            )

    def _report_failure(self, exc: BaseException, notify: bool) -> None:
        reason = first_line(exc)
        failed = next((s for s in reversed(self.timeline.steps) if s.outcome == "failed"), None)
        where = f" at step {failed.name!r}" if failed else ""
        try:
            report_publish(
                f"{self.name}-{self.system}",
                redact(f"{self.name} FAILED{where}: {reason}"),
                table=[
                    *self._rows(),
                    self._row("FAILED", self.timeline.started, None, reason),
                ],
            )
        except Exception as publish_error:  # the original failure is what must surface
            logger().error("could not publish the failure report: %s", first_line(publish_error))
        if not notify:
            return
        lines = [
            f"{self.name} failed for {self.system} (started {self.timeline.started.isoformat()})",
            f"cause: {redact(str(exc)) or type(exc).__name__}",
        ]
        if failed:
            lines.append(f"failed step: {failed.name}")
        try:
            notify_send.fn(f"DR: {self.name} failed for {self.system}", lines, self.config_path)
        except Exception as notify_error:  # a notification must not hide the failure
            logger().error("could not send the failure notification: %s", first_line(notify_error))

    # -- steps ------------------------------------------------------------------------------

    def step(self, name: str, detail: str = "") -> AbstractContextManager[Step]:
        """Time one step of the runbook (UTC start, duration, outcome)."""
        return self._journal().step(self.timeline.step(name, detail))

    @contextmanager
    def lock(self, locks: Sequence[Lock], timeout_seconds: float = 0) -> Iterator[None]:
        """Hold ``locks`` (in order) around the steps inside, waiting up to
        ``timeout_seconds`` and saying who holds them meanwhile; :class:`LockHeld` names the
        holder when the wait ends. The locks die with this process, and are checked before a
        step that must not run without them (:meth:`still_locked`)."""
        holder = Holder(flow=self.name, run_id=self.run_id)
        log = logger()

        def waiting(lock: Lock, current: Holder | None, waited: float) -> None:
            who = current.describe() if current else "another run"
            log.warning(
                "waiting for %s, locked by %s (%.0f of %.0f s)",
                lock.label,
                who,
                waited,
                timeout_seconds,
            )

        # A server or store that does not answer may be back in a moment: retried like a step's
        # transient failure (and said so), then the error surfaces as it is.
        attempts = 1 + self.LOCK_RETRIES

        def retrying(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            log.warning(
                "lock: attempt %d of %d failed: %s; retrying in %.0f second(s)",
                state.attempt_number,
                attempts,
                first_line(failure) if failure else "no answer",
                self.LOCK_RETRY_DELAY,
            )

        acquire = retry(
            retry=retry_if_exception_type(ServerUnreachable),
            stop=stop_after_attempt(attempts),
            wait=wait_fixed(self.LOCK_RETRY_DELAY),
            before_sleep=retrying,
            reraise=True,
        )(lambda stack: stack.enter_context(hold(locks, holder, timeout_seconds, on_wait=waiting)))
        with ExitStack() as stack:
            with self.step("lock", detail="; ".join(lock.label for lock in locks)):
                self._locks = acquire(stack)
            try:
                yield
            finally:
                self._locks = []

    def still_locked(self) -> None:
        """Raise :class:`LockHeld` unless every lock this run holds is still held (a lock
        whose connection or lease was lost may be another run's by now)."""
        for lock in self._locks:
            if not lock.alive():
                raise LockHeld(f"lost the lock on {lock.label}; stopping before it matters")

    def clear_work_leftovers(self) -> None:
        """Remove work directories that runs which died on this machine left behind."""
        with self.step("remove leftovers of runs that died"):
            workdir_remove_stale()

    @property
    def incident(self) -> datetime:
        """When the failure happened: the run's ``incident_time`` (or what the run found,
        :meth:`found_incident`), else when the run began."""
        return self._incident or self.timeline.started

    def found_incident(self, when: datetime) -> None:
        """The run worked out when the incident began (e.g. the earliest corrupted row): the
        RPO achieved is measured from there, unless the operator gave ``incident_time``."""
        if self._incident is None:
            self._incident = when

    # -- the approval gate ------------------------------------------------------------------

    def gate(
        self,
        title: str,
        plan_markdown: str,
        dry_run: bool,
        approved: bool,
        timeout_seconds: int,
    ) -> str | None:
        """Publish the plan; then stop (dry run: returns None), go on when approved in advance,
        or pause the run until a person answers in the Prefect UI.

        Returns who or what approved; raises :class:`Rejected` when the answer is no.
        """
        with self.step("approval") as step:
            if dry_run:
                report_publish(f"plan-{title}", "Plan (dry run)", markdown=plan_markdown)
                return None
            report_publish(f"plan-{title}", f"Plan: {title}", markdown=plan_markdown)
            if approved:
                return "approved in advance (approved=True)"
            logger().warning(
                "waiting up to %d s for approval in the Prefect UI (Resume): %s",
                timeout_seconds,
                title,
            )
            dialog = Approval.with_initial_data(
                description=f"{plan_markdown}\n\n---\n**Approve this plan?** Nothing above "
                "happens until you switch *approve* on and resume. Waiting time counts in the RTO.",
            )
            answer = pause_flow_run(wait_for_input=dialog, timeout=timeout_seconds, poll_interval=2)
            why = answer.reason or "no reason given"
            decision = "approved" if answer.approve else "rejected"
            step.detail = f"{decision} by {answer.approver}: {why}"
            logger().warning("plan %s by %s: %s", decision, answer.approver, why)
            report_publish(
                f"decision-{title}",
                f"Plan {decision} by {answer.approver}",
                markdown=f"# Plan {decision}\n\nBy **{answer.approver}**: {why}\n",
            )
            if not answer.approve:
                raise Rejected(f"plan rejected by {answer.approver}: {why}")
            return f"approved in the UI by {answer.approver}: {why}"

    # -- results ----------------------------------------------------------------------------

    def recovered(
        self, target: Target, point: datetime | None, key: str, **extra: Any
    ) -> dict[str, Any]:
        """The recovery is verified: measure RTO (since the run began) and RPO (from the
        incident back to the restored ``point``, unknown when None) against the objectives,
        publish them with the timeline, and return them with ``extra``."""
        objectives = target.config.objectives
        rto, rto_objective = self.timeline.elapsed(), objectives.rto_for(target.tier)
        rpo = self.incident - point if point is not None else None
        rpo_objective = objectives.rpo.database
        result: dict[str, Any] = {
            **extra,
            "rto_seconds": round(rto.total_seconds(), 3),
            "rto_objective_seconds": rto_objective.total_seconds(),
            "rto_met": rto <= rto_objective,
            "rpo_seconds": round(rpo.total_seconds(), 3) if rpo is not None else None,
            "rpo_objective_seconds": rpo_objective.total_seconds(),
            "rpo_met": rpo <= rpo_objective if rpo is not None else None,
            "steps": self.timeline.rows(),
        }
        self._journal().measured(
            {
                **{k: v for k, v in result.items() if k.startswith(("rto_", "rpo_"))},
                "incident_time": self.incident,
                "resolved_at": datetime.now(UTC),
                "backup": {
                    "id": extra.get("backup_id"),
                    "consistent_point": point,
                    "repository": target.primary.name if target.repositories else None,
                },
            }
        )
        if target.repositories:
            self._journal().into(target.primary)
        rpo_outcome = "unknown" if rpo is None else "met" if result["rpo_met"] else "MISSED"
        waited = sum(s.seconds for s in self.timeline.steps if s.name == "approval")
        self.publish(
            key,
            f"RTO {human_duration(rto)} (objective {human_duration(rto_objective)}), "
            f"RPO {human_duration(rpo)}"
            + (
                f"; the RTO includes {human_duration(waited)} waiting for approval"
                if waited >= 1
                else ""
            ),
            table=[
                *self._rows(),
                self._row(
                    "RTO achieved",
                    self.timeline.started,
                    rto.total_seconds(),
                    f"objective {human_duration(rto_objective)}"
                    + (
                        f"; {human_duration(waited)} of it waiting for approval"
                        if waited >= 1
                        else ""
                    ),
                    "met" if result["rto_met"] else "MISSED",
                ),
                self._row(
                    "RPO achieved",
                    point,
                    rpo.total_seconds() if rpo is not None else None,
                    f"objective {human_duration(rpo_objective)}; the time is the restored "
                    "backup's consistent point",
                    rpo_outcome,
                ),
            ],
        )
        return result

    # -- the run record (flows/journal.py) ---------------------------------------------------

    def _journal(self) -> Journal:
        journal: Journal | None = getattr(self, "journal", None)
        return journal if journal is not None else Journal(self, None)

    @property
    def record_id(self) -> str | None:
        """The id of this run's durable record (``dr runs show ID``), when it has one."""
        record = self._journal().record
        return record.id if record is not None else None

    def record_into(self, repository: Repository) -> None:
        """Keep this run's record in ``repository`` when dr.yaml names no place for it
        (a runbook whose system is not declared, like the drill on embedded defaults)."""
        self._journal().into(repository)

    def measure(self, **values: Any) -> None:
        """Add measurements to the run record (RTO, RPO, data lost, the backup used)."""
        self._journal().measured(values)

    def note(self, **values: Any) -> None:
        """Add findings to the run record (verification, tests, performance, review)."""
        self._journal().noted(values)

    def record(self) -> RunRecord | None:
        """A copy of the run record as it stands, for a report made during the run."""
        return self._journal().snapshot()

    def history(self, kind: str) -> list[RunRecord]:
        """Earlier runs' records of ``kind`` where this run's record is kept, oldest first."""
        return self._journal().history(kind)

    def attach(self, suffix: str, data: bytes) -> str | None:
        """Keep a report or chart beside the run record; returns where."""
        return self._journal().attach(suffix, data)

    def publish(
        self,
        key: str,
        description: str,
        table: list[dict[str, Any]] | None = None,
        markdown: str | None = None,
    ) -> None:
        """Publish the run's result as a table and/or markdown artifact."""
        report_publish(key, description, table=table, markdown=markdown)

    def _rows(self) -> list[dict[str, Any]]:
        """The timeline for people: times to the second in UTC, durations in words."""
        return [
            self._row(s.name, s.started, s.seconds, s.detail, s.outcome)
            for s in self.timeline.steps
        ]

    @staticmethod
    def _row(
        step: str,
        started: datetime | None,
        seconds: float | None,
        detail: str,
        outcome: str = "failed",
    ) -> dict[str, Any]:
        return {
            "step": step,
            "started (UTC)": f"{started:%Y-%m-%d %H:%M:%S}" if started else "",
            "took": human_duration(seconds) if seconds is not None else "",
            "outcome": outcome,
            "detail": detail,
        }
