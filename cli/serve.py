"""``dr serve`` (every deployment of prefect.yaml from one process) and ``dr drill``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.common import JsonOpt, await_prefect, config, emit, opts, out, run_flow
from dr_runbooks.text import human_duration

__all__ = ["drill_cmd", "serve_cmd"]


def serve_cmd(
    list_only: bool = typer.Option(False, "--list", help="Only list the deployments."),
    file: str = typer.Option("prefect.yaml", "--file", help="The prefect.yaml to serve."),
) -> None:
    """Serve every deployment of prefect.yaml from this process (single-machine installs)."""
    from cli.deployments import load_deployments

    deployments = load_deployments(file)
    for deployment in deployments:
        schedules = ", ".join(str(s.schedule) for s in deployment.schedules or []) or "manual"
        out.print(
            f"{deployment.name}: {deployment.entrypoint} [{schedules}]",
            soft_wrap=True,
            markup=False,
        )
    if list_only:
        return
    from prefect import serve

    await_prefect()
    if config().escalation is not None:
        # The escalation path must be on the server the deployments run against.
        from tasks.escalation import escalation_apply

        applied = escalation_apply(config())
        out.print(f"escalation: {len(applied)} automation(s) applied", markup=False)
    serve(*deployments)  # type: ignore[arg-type]


def drill_cmd(
    embedded: bool = typer.Option(
        False,
        "--embedded",
        help="Drill on embedded defaults (a throwaway PostgreSQL) even when dr.yaml declares "
        "a sandbox.",
    ),
    system: list[str] = typer.Option(
        [], "--system", "-s", help="Systems to drill (default: dr.yaml's drills.systems)."
    ),
    rows: int = typer.Option(100_000, help="Embedded defaults: rows in the seeded database."),
    workdir: str = typer.Option(".dr", help="Embedded defaults: repository and reports go here."),
    json_output: bool = JsonOpt,
) -> None:
    """The monthly DR drill, now: into dr.yaml's sandbox, or on embedded defaults when it
    declares none (a throwaway PostgreSQL: what make drill runs)."""
    from flows.monthly_drill import monthly_drill

    on_defaults = embedded or config().sandbox is None
    result = run_flow(
        lambda: monthly_drill(
            embedded=on_defaults,
            systems=system,
            rows=rows,
            workdir=workdir,
            config_path=opts.config or "",
        ),
        json_output,
        "running the drill",
    )
    if json_output:
        emit(result, True)
        return
    table = Table("step", "took", "outcome", "detail", title="Drill", title_justify="left")
    for step in result["steps"]:
        table.add_row(
            step["step"], human_duration(step["seconds"]), step["outcome"], step["detail"]
        )
    out.print(table)
    out.print(f"recovery [green]VERIFIED[/] in {result['target']}")
    for measure in ("rto", "rpo"):
        met = "met" if result[f"{measure}_met"] else "[red]MISSED[/]"
        out.print(
            f"{measure.upper()} achieved: [bold]{human_duration(result[f'{measure}_seconds'])}[/]"
            f" (objective {human_duration(result[f'{measure}_objective_seconds'])}, {met})"
        )
    out.print(
        f"marker rows lost: {result['markers_lost']} of {result['markers_written_after_backup']} "
        "written after the backup (they prove the RPO)"
    )
    for finding in result.get("review") or []:
        out.print(f"[yellow]review:[/] {finding}", markup=True)
    if result.get("report"):
        out.print(f"report: {result['report']}", markup=False)
    if result.get("record"):
        where = f" --repo {Path(workdir) / 'repo'}" if on_defaults else ""
        out.print(
            f"record: {result['record']} (dr runs show {result['record']}{where})", markup=False
        )
