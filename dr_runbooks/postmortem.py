"""The plan's post-incident review, drafted from a run record alone.

Everything that happened is filled in from the record (dates, duration, the timeline, the
data lost, the steps that resolved it); what only people know (root cause, lessons, action
items) is left as the template's placeholders. ``dr postmortem RUN_ID`` calls
:func:`draft` on a stored record, with no Prefect server.
"""

from __future__ import annotations

from datetime import datetime

from dr_runbooks.runs import RunRecord, StepEntry
from dr_runbooks.text import human_duration

__all__ = ["draft"]

_APPROVAL = "approval"


def _time(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "unknown"


def _parse(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _response_started(steps: list[StepEntry], detected: datetime) -> StepEntry | None:
    """The first step that acts once the failure is known: after an approval, else the
    first step after loading."""
    steps = [s for s in steps if s.started >= detected] or steps
    approval = next((s for s in steps if s.name == _APPROVAL), None)
    after_approval = [s for s in steps if approval is not None and s.started > approval.started]
    candidates = after_approval or [s for s in steps if s.name not in ("load", "lock")] or steps
    return candidates[0] if candidates else None


def _data_loss(record: RunRecord) -> str:
    measured = record.measurements
    lost = measured.get("data_lost")
    if isinstance(lost, dict) and lost:
        rows = lost.get("rows_lost")
        proof = lost.get("proof", "")
        if rows is not None:
            answer = "Yes" if rows else "No"
            return f"{answer}: {rows} row(s) written after the restored backup were lost" + (
                f" ({proof})" if proof else ""
            )
    rpo = measured.get("rpo_seconds")
    if rpo is None:
        return "Unknown (no backup was restored, or its point is unknown)"
    if rpo <= 0:
        return "No (RPO achieved 0)"
    return (
        f"Yes: up to {human_duration(rpo)} of writes (the RPO achieved: from the failure back "
        "to the restored backup's consistent point)"
    )


def draft(record: RunRecord) -> str:
    """The post-mortem template, filled in from ``record``."""
    m = record.measurements
    occurred = _parse(m.get("incident_time")) or record.started
    # A drill knows of the failure it injected at once; an incident is known when the
    # runbook is launched.
    detected = max(record.started, occurred)
    responding = _response_started(record.steps, detected)
    resolved = _parse(m.get("resolved_at")) or (
        record.finished if record.status == "completed" else None
    )
    duration = (resolved - occurred).total_seconds() if resolved else None
    severity = record.severity or "Unset (Critical/High/Medium/Low)"
    what = "drill" if record.kind == "drill" else "incident"
    outcome = {
        "completed": "recovered",
        "failed": "FAILED" + (f" at step {record.failed_step!r}" if record.failed_step else ""),
        "cancelled": "cancelled (the plan was rejected)",
        "running": "still running, or its process died",
    }[record.status]
    summary = (
        f"{record.flow} for {record.system} ({what}), launched by {record.launched_by}: {outcome}."
    )
    if record.error:
        summary += f" Error: {record.error}"
    if m.get("rto_seconds") is not None:
        summary += (
            f" RTO achieved {human_duration(m['rto_seconds'])} (objective "
            f"{human_duration(m.get('rto_objective_seconds'))}); RPO achieved "
            f"{human_duration(m.get('rpo_seconds'))} (objective "
            f"{human_duration(m.get('rpo_objective_seconds'))})."
        )
    backup = m.get("backup") or {}
    resolution = [
        f"{i}. {s.name} — {s.outcome}"
        + (f", {human_duration(s.seconds)}" if s.seconds is not None else "")
        + (f" ({s.detail})" if s.detail else "")
        for i, s in enumerate(record.steps, 1)
    ]
    root_cause = "What caused the incident?"
    if record.status == "failed":
        root_cause += (
            f" (The recovery itself failed at step {record.failed_step!r}: {record.error}.)"
            if record.failed_step
            else f" (The recovery itself failed: {record.error}.)"
        )
    lines = [
        "# Incident Post-Mortem",
        "",
        f"**Date:** {occurred:%Y-%m-%d}",
        f"**Duration:** {human_duration(duration) if duration is not None else 'unresolved'}",
        f"**Severity:** {severity}",
        f"**Run:** {record.id} ({record.flow}"
        + (f", flow run {record.run_id}" if record.run_id else "")
        + ")",
        "",
        "## Summary",
        summary,
        "",
        "## Timeline",
        f"- {_time(occurred)} - Event occurred"
        + (" (the failure injected by the drill)" if record.kind == "drill" else ""),
        f"- {_time(detected)} - Detected"
        + (" (the runbook was launched)" if detected == record.started else ""),
        f"- {_time(responding.started if responding else None)} - Response initiated"
        + (f" ({responding.name})" if responding else ""),
        f"- {_time(resolved)} - Resolved" if resolved else "- unresolved - Resolved",
        "",
        "## Root Cause",
        root_cause,
        "",
        "## Impact",
        "- Users affected: X",
        f"- Downtime: {human_duration(duration) if duration is not None else 'unresolved'}",
        f"- Data loss: {_data_loss(record)}",
        "- Financial impact: $X",
    ]
    if backup:
        lines.append(
            f"- Restored from backup {backup.get('id')} (consistent point "
            f"{backup.get('consistent_point')}, repository {backup.get('repository')})"
        )
    lines += [
        "",
        "## Resolution",
        *(resolution or ["No step was executed."]),
        "",
        "## Lessons Learned",
        "What did we learn?",
        "",
        "## Action Items",
        *[f"- [ ] Look into: {item} (Owner: Name, Due: Date)" for item in _review(record)],
        "- [ ] Action 1 (Owner: Name, Due: Date)",
        "- [ ] Action 2 (Owner: Name, Due: Date)",
        "",
    ]
    return "\n".join(lines)


def _review(record: RunRecord) -> list[str]:
    """What the run's own review found (a drill's slow or failed steps)."""
    review = record.results.get("review")
    return [str(item) for item in review] if isinstance(review, list) else []
