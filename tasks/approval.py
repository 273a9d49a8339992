"""Approval gates before destructive steps."""

from __future__ import annotations

from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from dr_runbooks.errors import BadInput
from tasks._runtime import logger
from tasks.report import report_publish

__all__ = ["Approval", "approval_gate"]


class Approval(RunInput):
    """The answer a person gives in the Prefect UI to a paused runbook."""

    approve: bool = False
    reason: str = ""


class Rejected(BadInput):
    """A person rejected the plan; nothing destructive was done."""


def approval_gate(title: str, plan_markdown: str, approved: bool, timeout_seconds: int) -> str:
    """Publish the plan; continue if pre-approved, else pause the run until someone answers.

    Called from the flow itself (a pause belongs to the flow run, not a task). Returns who/what
    approved; raises :class:`Rejected` when the answer is no.
    """
    report_publish(f"plan-{title}", f"Plan: {title}", markdown=plan_markdown)
    if approved:
        return "approved in advance (approved=True)"
    logger().warning(
        "waiting up to %d s for approval in the Prefect UI: %s", timeout_seconds, title
    )
    answer = pause_flow_run(wait_for_input=Approval, timeout=timeout_seconds, poll_interval=2)
    if not answer.approve:
        raise Rejected(f"plan rejected: {answer.reason or 'no reason given'}")
    return f"approved in the UI: {answer.reason or 'no reason given'}"
