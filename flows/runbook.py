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
the notification to the outer one), then lets the error end the run.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any

from prefect.concurrency.sync import concurrency
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from dr_runbooks.errors import Rejected
from dr_runbooks.redaction import redact
from dr_runbooks.repository import parse_time
from dr_runbooks.targets import Target
from dr_runbooks.text import first_line, human_duration
from dr_runbooks.timeline import Step, Timeline
from tasks._runtime import ensure_concurrency_limit, logger
from tasks.notify import notify_send
from tasks.report import report_publish

__all__ = ["Approval", "Runbook"]

#: The runbooks running in this context, outermost first.
_running: contextvars.ContextVar[tuple[Runbook, ...]] = contextvars.ContextVar(
    "dr_runbooks_running", default=()
)


class Approval(RunInput):
    """The answer a person gives in the Prefect UI to a paused runbook."""

    approve: bool = False
    reason: str = ""


class Runbook(AbstractContextManager["Runbook"]):
    """One run of a runbook: ``name`` is the flow's name, ``system`` what the run is about
    (used in notifications; a flow may narrow it later, e.g. to the systems that failed)."""

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
        self._incident_time = incident_time
        self._token: contextvars.Token[tuple[Runbook, ...]] | None = None

    # -- the context ------------------------------------------------------------------------

    def __enter__(self) -> Runbook:
        self._token = _running.set((*_running.get(), self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outer = _running.get()[:-1]
        if self._token is not None:
            _running.reset(self._token)
        if exc is None or isinstance(exc, GeneratorExit):
            return
        self._report_failure(exc, notify=self.notify and not outer)

    def _report_failure(self, exc: BaseException, notify: bool) -> None:
        reason = first_line(exc)
        failed = next((s for s in reversed(self.timeline.steps) if s.outcome == "failed"), None)
        where = f" at step {failed.name!r}" if failed else ""
        try:
            report_publish(
                f"{self.name}-{self.system}",
                redact(f"{self.name} FAILED{where}: {reason}"),
                table=[
                    *self.timeline.rows(),
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
        return self.timeline.step(name, detail)

    @contextmanager
    def exclusive(self, name: str, timeout_seconds: int = 6 * 3600) -> Iterator[None]:
        """One run at a time for ``name`` (a Prefect global concurrency limit of 1)."""
        limit = ensure_concurrency_limit(name)
        with concurrency(limit, occupy=1, timeout_seconds=timeout_seconds):
            yield

    @property
    def incident(self) -> datetime:
        """When the failure happened: the run's ``incident_time``, else when the run began."""
        if self._incident_time:
            return parse_time(self._incident_time)
        return self.timeline.started

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
        with self.step("approval"):
            if dry_run:
                report_publish(f"plan-{title}", "Plan (dry run)", markdown=plan_markdown)
                return None
            report_publish(f"plan-{title}", f"Plan: {title}", markdown=plan_markdown)
            if approved:
                return "approved in advance (approved=True)"
            logger().warning(
                "waiting up to %d s for approval in the Prefect UI: %s", timeout_seconds, title
            )
            answer = pause_flow_run(
                wait_for_input=Approval, timeout=timeout_seconds, poll_interval=2
            )
            if not answer.approve:
                raise Rejected(f"plan rejected: {answer.reason or 'no reason given'}")
            return f"approved in the UI: {answer.reason or 'no reason given'}"

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
        rpo_outcome = "unknown" if rpo is None else "met" if result["rpo_met"] else "MISSED"
        self.publish(
            key,
            f"RTO {human_duration(rto)} (objective {human_duration(rto_objective)}), "
            f"RPO {human_duration(rpo)}",
            table=[
                *self.timeline.rows(),
                self._row(
                    "RTO achieved",
                    self.timeline.started,
                    rto.total_seconds(),
                    f"objective {human_duration(rto_objective)}",
                    "met" if result["rto_met"] else "MISSED",
                ),
                self._row(
                    "RPO achieved",
                    point,
                    rpo.total_seconds() if rpo is not None else None,
                    f"objective {human_duration(rpo_objective)}",
                    rpo_outcome,
                ),
            ],
        )
        return result

    def publish(
        self,
        key: str,
        description: str,
        table: list[dict[str, Any]] | None = None,
        markdown: str | None = None,
    ) -> None:
        """Publish the run's result as a table and/or markdown artifact."""
        report_publish(key, description, table=table, markdown=markdown)

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
            "started": started.isoformat() if started else "",
            "seconds": round(seconds, 3) if seconds is not None else None,
            "outcome": outcome,
            "detail": detail,
        }
