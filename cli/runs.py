"""``dr runs list``, ``dr runs show`` and ``dr postmortem``: the durable records of every
scenario run and drill, read from the backup repositories alone (no Prefect server)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from cli.common import BLOCKS, JsonOpt, config, emit, out
from dr_runbooks.errors import BadInput
from dr_runbooks.postmortem import draft
from dr_runbooks.runs import RunLog, RunNotFound, RunRecord
from dr_runbooks.targets import repository_from_config, repository_from_spec
from dr_runbooks.text import human_duration

__all__ = ["app", "postmortem_cmd"]

app = typer.Typer(
    no_args_is_help=True, help="Run records: every scenario run and drill, from the repository."
)

RepoOpt = typer.Option(
    [],
    "--repo",
    help="Where the records are: a dr.yaml repository, a directory or a container URL "
    "(default: dr.yaml's runs.repository, else every repository of dr.yaml).",
)
_STYLE = {"completed": "green", "failed": "red", "cancelled": "yellow", "running": "yellow"}
_BAR = 20


def _logs(repos: list[str]) -> list[RunLog]:
    loaded = config()
    if repos:
        found = [repository_from_spec(spec, loaded, BLOCKS) for spec in repos]
    elif loaded.runs.repository:
        found = [repository_from_spec(loaded.runs.repository, loaded, BLOCKS)]
    else:
        found = [repository_from_config(loaded, name, BLOCKS) for name in loaded.repositories]
    if not found:
        raise BadInput("no repository to read run records from: give --repo or declare one")
    return [RunLog(r.store, r.name) for r in found]


def _records(repos: list[str], kind: str | None) -> list[tuple[RunRecord, RunLog]]:
    seen: dict[str, tuple[RunRecord, RunLog]] = {}
    for log in _logs(repos):
        records, damaged = log.records(kind)
        for key in damaged:
            out.print(f"[yellow]cannot read {key} in {log.name}[/]")
        for record in records:
            seen.setdefault(record.id, (record, log))
    return sorted(seen.values(), key=lambda pair: pair[0].started)


def _find(repos: list[str], run_id: str) -> tuple[RunRecord, RunLog]:
    misses = []
    for log in _logs(repos):
        try:
            return log.read(run_id), log
        except RunNotFound as exc:
            if "several" in str(exc):
                raise
            misses.append(log.name)
    raise RunNotFound(f"no run record {run_id!r} in {', '.join(misses)}")


def _bar(value: Any, objective: Any) -> str:
    """How much of the objective a measure used, as a bar (red past it)."""
    if value is None or not objective:
        return ""
    share = float(value) / float(objective)
    filled = min(_BAR, round(share * _BAR))
    bar = "█" * filled + "·" * (_BAR - filled)
    return f"[red]{bar}▶[/]" if share > 1 else f"[green]{bar}[/]"


def _summary(record: RunRecord) -> dict[str, Any]:
    m = record.measurements
    lost = m.get("data_lost") or {}
    return {
        "id": record.id,
        "kind": record.kind,
        "flow": record.flow,
        "system": record.system,
        "status": record.status,
        "started": record.started.isoformat(),
        "seconds": record.seconds,
        "launched_by": record.launched_by,
        "parent": record.parent,
        "rto_seconds": m.get("rto_seconds"),
        "rto_objective_seconds": m.get("rto_objective_seconds"),
        "rpo_seconds": m.get("rpo_seconds"),
        "rpo_objective_seconds": m.get("rpo_objective_seconds"),
        "rows_lost": lost.get("rows_lost"),
        "failed_step": record.failed_step,
    }


@app.command("list")
def list_cmd(
    kind: str | None = typer.Option(
        None, "--kind", help="Only runs of this kind: scenario, drill or recovery-test."
    ),
    repo: list[str] = RepoOpt,
    limit: int = typer.Option(30, help="The most recent N runs."),
    json_output: bool = JsonOpt,
) -> None:
    """Scenario runs and drills, oldest first, with their RTO and RPO against the objectives
    (bars: the share of each objective used; with --kind drill, the trend)."""
    pairs = _records(repo, kind)[-limit:]
    if json_output:
        emit([_summary(record) for record, _ in pairs], True)
        return
    table = Table("started (UTC)", "run", "flow", "system", "status", "took", "RTO", "", "RPO", "")
    for record, _ in pairs:
        m = record.measurements
        style = _STYLE.get(record.status, "")
        status = record.status + (f" at {record.failed_step}" if record.failed_step else "")
        table.add_row(
            f"{record.started:%Y-%m-%d %H:%M}",
            record.id,
            record.flow + (" (inner)" if record.parent else ""),
            record.system,
            f"[{style}]{status}[/]" if style else status,
            human_duration(record.seconds),
            human_duration(m.get("rto_seconds")) if m.get("rto_seconds") is not None else "",
            _bar(m.get("rto_seconds"), m.get("rto_objective_seconds")),
            human_duration(m.get("rpo_seconds")) if m.get("rpo_seconds") is not None else "",
            _bar(m.get("rpo_seconds"), m.get("rpo_objective_seconds")),
        )
    out.print(table)
    measured = [r for r, _ in pairs if r.measurements.get("rto_seconds") is not None]
    if kind == "drill" and len(measured) >= 2:
        first, last = measured[0].measurements, measured[-1].measurements
        out.print(
            f"trend over {len(measured)} drills: RTO {human_duration(first['rto_seconds'])} → "
            f"{human_duration(last['rto_seconds'])}, RPO {human_duration(first.get('rpo_seconds'))}"
            f" → {human_duration(last.get('rpo_seconds'))} (objectives "
            f"{human_duration(last.get('rto_objective_seconds'))} and "
            f"{human_duration(last.get('rpo_objective_seconds'))})"
        )
    if not pairs:
        out.print("no run records" + (f" of kind {kind}" if kind else ""))


@app.command("show")
def show_cmd(
    run_id: str = typer.Argument(..., help="The run record's id (a unique prefix will do)."),
    repo: list[str] = RepoOpt,
    json_output: bool = JsonOpt,
) -> None:
    """One run: who launched it, its parameters, steps, measurements and findings."""
    record, log = _find(repo, run_id)
    if json_output:
        emit(record.model_dump(mode="json"), True)
        return
    out.print(
        f"[bold]{record.flow}[/] for {record.system}: {record.status} "
        f"({record.kind}, run {record.id}, in {log.name})"
    )
    out.print(f"launched by {record.launched_by}", markup=False)
    if record.run_id:
        out.print(f"flow run {record.run_id} ({record.flow_run_name or ''})", markup=False)
    if record.config.get("commit"):
        modified = " (modified, not committed)" if record.config.get("modified") else ""
        out.print(f"dr.yaml at commit {record.config['commit'][:12]}{modified}", markup=False)
    if record.error:
        out.print(f"[red]error:[/] {record.error}")
    table = Table("step", "started (UTC)", "took", "outcome", "detail", title="Steps")
    for step in record.steps:
        table.add_row(
            step.name,
            f"{step.started:%H:%M:%S}",
            human_duration(step.seconds) if step.seconds is not None else "",
            step.outcome,
            step.detail,
        )
    out.print(table)
    m = record.measurements
    for measure in ("rto", "rpo"):
        if m.get(f"{measure}_seconds") is not None:
            met = m.get(f"{measure}_met")
            out.print(
                f"{measure.upper()} achieved {human_duration(m[f'{measure}_seconds'])} "
                f"(objective {human_duration(m.get(f'{measure}_objective_seconds'))}, "
                f"{'met' if met else 'MISSED' if met is False else 'unknown'})"
            )
    lost = m.get("data_lost") or {}
    if lost.get("rows_lost") is not None:
        out.print(f"data lost: {lost['rows_lost']} of {lost['rows_written']} marker rows")
    for finding in record.results.get("review") or []:
        out.print(f"[yellow]review:[/] {finding}")
    for name, key in sorted(record.attachments.items()):
        out.print(f"{name}: {log.name}/{key}", markup=False)


def postmortem_cmd(
    run_id: str = typer.Argument(..., help="The run record's id (a unique prefix will do)."),
    repo: list[str] = RepoOpt,
    output: str | None = typer.Option(None, "--output", "-o", help="Write it to this file."),
) -> None:
    """Draft the post-incident review of a run again, from its record alone."""
    record, _ = _find(repo, run_id)
    text = draft(record)
    if output:
        from pathlib import Path

        Path(output).write_text(text)
        out.print(f"written to {output}", markup=False)
    else:
        print(text)
