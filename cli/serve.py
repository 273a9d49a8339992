"""``dr serve`` (every deployment of prefect.yaml from one process) and ``dr drill``."""

from __future__ import annotations

import typer
from rich.table import Table

from cli.common import JsonOpt, await_prefect, emit, out, run_flow
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
    serve(*deployments)  # type: ignore[arg-type]


def drill_cmd(
    rows: int = typer.Option(100_000, help="Rows in the seeded application database."),
    workdir: str = typer.Option(".dr", help="Repository and reports go here."),
    json_output: bool = JsonOpt,
) -> None:
    """A local DR drill on embedded defaults: seed, back up, lose the database, recover."""
    from flows.drill import local_drill

    result = run_flow(
        lambda: local_drill(rows=rows, workdir=workdir), json_output, "running the drill"
    )
    if json_output:
        emit(result, True)
    else:
        for title, steps in (
            ("Drill", result["drill_steps"]),
            ("Recovery (database-failure runbook)", result["recovery_steps"]),
        ):
            table = Table("step", "seconds", "outcome", title=title, title_justify="left")
            for step in steps:
                table.add_row(step["step"], f"{step['seconds']:.2f}", step["outcome"])
            out.print(table)
        verdict = "[green]VERIFIED[/]" if result["verified"] else "[red]NOT VERIFIED[/]"
        out.print(f"recovery {verdict}")
        out.print(
            f"RTO achieved: [bold]{human_duration(result['rto_seconds'])}[/] (objective "
            f"{human_duration(result['rto_objective_seconds'])})"
        )
        out.print(
            f"RPO achieved: [bold]{human_duration(result['rpo_seconds'])}[/] (objective "
            f"{human_duration(result['rpo_objective_seconds'])})"
        )
        out.print(
            f"marker rows lost: {result['markers_lost']} of "
            f"{result['markers_written_after_backup']} written after the backup"
        )
        out.print(f"report: {result['report']}")
    if not result["verified"]:
        raise typer.Exit(1)
