"""What a drill reports: its review (what failed or was slow, and where), the trend of the last
drills' RTO and RPO against the objectives (a table and a PNG chart), and the markdown report.

Everything is computed from run records (:mod:`dr_runbooks.runs`), so a report can be made
again from the repository alone.
"""

from __future__ import annotations

import io
import statistics
from typing import Any

from dr_runbooks.runs import RunRecord
from dr_runbooks.text import human_duration, markdown_table

__all__ = [
    "TREND_LENGTH",
    "drill_markdown",
    "objective_rows",
    "recovery_test_markdown",
    "review",
    "step_rows",
    "trend",
    "trend_png",
]

#: How many drills the trend shows.
TREND_LENGTH = 12
#: Steps shorter than this are never called slow: noise, not findings.
_SLOW_FLOOR_SECONDS = 5.0


def _minutes(seconds: Any) -> float | None:
    return round(float(seconds) / 60, 2) if seconds is not None else None


def trend(records: list[RunRecord], limit: int = TREND_LENGTH) -> list[dict[str, Any]]:
    """The last ``limit`` drills (oldest first) with their RTO and RPO and the objectives, in
    minutes; drills that measured nothing (failed before recovering) show empty values."""
    drills = sorted((r for r in records if r.kind == "drill"), key=lambda r: r.started)[-limit:]
    rows = []
    for record in drills:
        m = record.measurements
        rows.append(
            {
                "run": record.id,
                "date": f"{record.started:%Y-%m-%d}",
                "flow": record.flow,
                "status": record.status,
                "rto_minutes": _minutes(m.get("rto_seconds")),
                "rto_objective_minutes": _minutes(m.get("rto_objective_seconds")),
                "rpo_minutes": _minutes(m.get("rpo_seconds")),
                "rpo_objective_minutes": _minutes(m.get("rpo_objective_seconds")),
            }
        )
    return rows


def trend_png(series: list[dict[str, Any]]) -> bytes:
    """The trend as a PNG: RTO and RPO per drill (bars) under their objectives (dashed)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a worker, a CI machine
    from matplotlib import pyplot as plt

    labels = [row["date"] for row in series]
    positions = list(range(len(series)))
    figure, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for axis, measure, title in (
        (axes[0], "rto", "RTO achieved (minutes)"),
        (axes[1], "rpo", "RPO achieved (minutes)"),
    ):
        values = [row[f"{measure}_minutes"] or 0.0 for row in series]
        objectives = [row[f"{measure}_objective_minutes"] for row in series]
        colours = [
            "#c0392b"
            if row["status"] != "completed"
            or (obj is not None and row[f"{measure}_minutes"] is not None and value > obj)
            else "#2e86c1"
            for row, value, obj in zip(series, values, objectives, strict=True)
        ]
        axis.bar(positions, values, color=colours)
        known = [(p, o) for p, o in zip(positions, objectives, strict=True) if o is not None]
        if known:
            axis.step(
                [p for p, _ in known],
                [o for _, o in known],
                where="mid",
                linestyle="--",
                color="#7f8c8d",
                label="objective",
            )
            axis.legend(loc="upper left")
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(positions, labels, rotation=45, ha="right")
    figure.suptitle(f"The last {len(series)} drills (red: failed or over the objective)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def review(record: RunRecord, previous: list[RunRecord], slow_factor: float = 1.5) -> list[str]:
    """What failed or was slow, each with its step: failed steps; objectives missed; steps
    that took ``slow_factor`` times their median over the previous drills of the same flow."""
    findings = [
        f"step {s.name!r} failed: {s.detail or 'no detail'}"
        for s in record.steps
        if s.outcome == "failed"
    ]
    m = record.measurements
    for measure in ("rto", "rpo"):
        if m.get(f"{measure}_met") is False:
            findings.append(
                f"{measure.upper()} missed: {human_duration(m.get(f'{measure}_seconds'))} "
                f"against {human_duration(m.get(f'{measure}_objective_seconds'))}"
            )
    history: dict[str, list[float]] = {}
    for earlier in previous:
        if earlier.flow != record.flow or earlier.id == record.id:
            continue
        for step in earlier.steps:
            if step.outcome == "ok" and step.seconds is not None:
                history.setdefault(step.name, []).append(step.seconds)
    for step in record.steps:
        past = history.get(step.name)
        if not past or step.seconds is None or step.seconds < _SLOW_FLOOR_SECONDS:
            continue
        median = statistics.median(past)
        if step.seconds > slow_factor * median:
            findings.append(
                f"step {step.name!r} was slow: {human_duration(step.seconds)}, against a "
                f"median of {human_duration(median)} over {len(past)} earlier drill(s)"
            )
    return findings


def drill_markdown(
    record: RunRecord, series: list[dict[str, Any]], chart: str | None = None
) -> str:
    """The drill's report: the verdict, RTO/RPO against the objectives with the data-loss
    proof, what was verified, the review, the steps, and the trend."""
    m = record.measurements
    verdict = {"completed": "VERIFIED", "failed": "FAILED", "cancelled": "CANCELLED"}.get(
        record.status, record.status.upper()
    )
    lines = [
        f"# {record.flow} {record.started:%Y-%m-%d %H:%M:%S} UTC: recovery {verdict}",
        "",
        f"Run {record.id}, launched by {record.launched_by}; target: "
        f"{record.results.get('target', 'sandbox')}.",
        "",
    ]
    if record.results.get("target") == "production":
        lines += [
            "**This drill ran against PRODUCTION**, approved in the Prefect UI: "
            f"{record.results.get('approval', 'approval not recorded')}.",
            "",
        ]
    lines += [
        "## Objectives",
        "",
        markdown_table(objective_rows(record)),
    ]
    lost = m.get("data_lost") or {}
    if lost:
        lines += [
            f"Data-loss check: {lost.get('rows_written', '?')} marker row(s) written after the "
            f"backup, **{lost.get('rows_lost', '?')} lost** after the restore"
            + (
                f"; {lost.get('rows_before_backup_restored')} written before it restored"
                if lost.get("rows_before_backup_restored") is not None
                else ""
            )
            + ". Everything written after the backup's consistent point is gone: the RPO is "
            "proven by data, not only by timestamps.",
            "",
        ]
    databases = record.results.get("databases") or []
    if databases:
        lines += ["## Recovered", "", markdown_table(databases)]
    checks = record.results.get("checks") or []
    if checks:
        lines += ["## Verified", "", markdown_table(checks)]
    integration = record.results.get("integration_test")
    if integration:
        lines += [
            "## Integration test",
            "",
            f"`{integration.get('command')}` exited {integration.get('exit_status')}"
            + (" (timed out)" if integration.get("timed_out") else "")
            + f" after {human_duration(integration.get('seconds'))}; the end of its output:",
            "",
            "```",
            str(integration.get("tail", "")).rstrip(),
            "```",
            "",
        ]
    findings = record.results.get("review") or []
    lines += ["## Review", ""]
    lines += [f"- {f}" for f in findings] if findings else ["Nothing failed or was slow."]
    lines += ["", "## Steps", "", markdown_table(step_rows(record))]
    if series:
        lines += [
            f"## The last {len(series)} drills",
            "",
            *([f"![RTO and RPO of the last drills]({chart})", ""] if chart else []),
            markdown_table(series),
        ]
    return "\n".join(lines)


def objective_rows(record: RunRecord) -> list[dict[str, Any]]:
    """RTO and RPO achieved against their objectives, for a table."""
    m = record.measurements
    rows = []
    for measure, what in (("rto", "failure injected → service verified"), ("rpo", "")):
        met = m.get(f"{measure}_met")
        rows.append(
            {
                "measure": f"{measure.upper()} achieved",
                "value": human_duration(m.get(f"{measure}_seconds")),
                "objective": human_duration(m.get(f"{measure}_objective_seconds")),
                "outcome": "met" if met else "unknown" if met is None else "MISSED",
                "how": what
                or "failure time minus the restored backup's consistent point"
                + (" (the worst of the databases)" if record.results.get("databases") else ""),
            }
        )
    return rows


def step_rows(record: RunRecord) -> list[dict[str, Any]]:
    """The steps and their durations, for a table."""
    return [
        {
            "step": s.name,
            "started (UTC)": f"{s.started:%H:%M:%S}",
            "took": human_duration(s.seconds) if s.seconds is not None else "",
            "outcome": s.outcome,
            "detail": s.detail,
        }
        for s in record.steps
    ]


def recovery_test_markdown(record: RunRecord) -> str:
    """The quarterly recovery test's report: every system restored and verified, the
    performance against the previous quarter, the review, and the steps."""
    verdict = {"completed": "PASSED", "failed": "FAILED", "cancelled": "CANCELLED"}.get(
        record.status, "IN PROGRESS"
    )
    configuration = record.results.get("configuration") or {}
    commit = (record.config.get("commit") or "unknown")[:12]
    at = f"at commit {commit}" if record.config.get("commit") else "(dr.yaml is in none)"
    source = configuration.get("source")
    whence = (
        "the configuration too, from its newest backup"
        if source == "backup"
        else f"and the configuration from the git checkout {at}, not from a backup"
        if source == "checkout"
        else f"and the configuration from git at commit {commit}"
    )
    lines = [
        f"# Full recovery test {record.started:%Y-%m-%d %H:%M:%S} UTC: {verdict}",
        "",
        f"Run {record.id}, launched by {record.launched_by}. Every system was restored into "
        f"the sandbox from its backups alone, {whence}.",
        "",
        "## Objectives",
        "",
        markdown_table(objective_rows(record)),
        "## Restored and verified",
        "",
        markdown_table(record.results.get("restored") or []),
    ]
    if configuration:
        lines += _configuration_lines(configuration, commit, record.measurements)
    performance = record.results.get("performance") or []
    if performance:
        lines += [
            "## Performance",
            "",
            markdown_table(
                [
                    {
                        "database": r.get("label"),
                        "workload": r.get("workload"),
                        "transactions/s": r.get("tps"),
                        "latency (ms)": r.get("latency_ms"),
                        "previous quarter": r.get("previous_tps") or "",
                        "change": r.get("change"),
                    }
                    for r in performance
                ]
            ),
        ]
    findings = record.results.get("review") or []
    lines += ["## Review", ""]
    lines += [f"- {f}" for f in findings] if findings else ["Nothing failed or was slow."]
    lines += ["", "## Steps", "", markdown_table(step_rows(record))]
    return "\n".join(lines)


def _configuration_lines(
    configuration: dict[str, Any], commit: str, measurements: dict[str, Any]
) -> list[str]:
    """Where the quarterly test's configuration came from, whether the run's commit was in
    it, and its share of the RTO."""
    lines = ["## Configuration", ""]
    if configuration.get("source") == "checkout":
        lines.append(
            "dr.yaml declares no `engine: git` system, so there is no configuration backup to "
            "restore: the configuration was taken from the git checkout dr.yaml was read "
            + (f"from, at commit {commit}." if commit != "unknown" else "from (it is in none).")
        )
    else:
        lines += [
            "Restored from each `engine: git` system's newest backup (a bundle, checked "
            "against its manifest) into the test's work directory, never production's "
            "repository.",
            "",
            markdown_table(
                [
                    {
                        "system": s.get("system"),
                        "backup": s.get("backup") or "",
                        "took": human_duration(s.get("seconds")),
                        "outcome": s.get("outcome"),
                        "detail": s.get("detail"),
                    }
                    for s in configuration.get("systems") or []
                ]
            ),
        ]
        if configuration.get("outcome") == "ok":
            read = (
                "is the file the run read"
                if configuration.get("matches_the_run")
                else "differs from the file the run read (changed, not committed)"
            )
            lines.append(
                f"Commit {commit}, which this run's dr.yaml came from, is in the backup of "
                f"{configuration.get('found_in')}: {configuration.get('files')} files at that "
                f"commit; dr.yaml there {read}, and is valid."
            )
        else:
            lines.append(
                f"**The configuration was not recovered from its backups**: "
                f"{configuration.get('detail')}."
            )
    rto = measurements.get("rto_seconds")
    share = f" of the {human_duration(rto)} RTO" if rto else " (the RTO was not measured)"
    lines += [
        "",
        f"The configuration took {human_duration(configuration.get('seconds'))}{share}.",
        "",
    ]
    return lines
