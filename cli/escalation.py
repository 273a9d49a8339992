"""``dr escalation apply`` and ``dr escalation show``: the plan's escalation path as
automations on the Prefect server, which follow a run even when its own process hangs or
dies (see :mod:`dr_runbooks.escalation`)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from cli.common import JsonOpt, config, emit, out
from dr_runbooks.errors import BadInput
from dr_runbooks.escalation import levels
from dr_runbooks.text import human_duration

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="The escalation path on the Prefect server.")


def _server() -> str:
    """The configured Prefect server; a temporary one would forget the automations."""
    from prefect.settings import PREFECT_API_URL

    from cli.prefect_server import is_healthy

    api = PREFECT_API_URL.value()
    if not api:
        raise BadInput(
            "escalation needs a Prefect server that stays up: set PREFECT_API_URL (a temporary "
            "local server would forget the automations when it stops)"
        )
    if not is_healthy(api):
        raise BadInput(f"the Prefect API {api} does not answer")
    return str(api)


@app.command("show")
def show_cmd(json_output: bool = JsonOpt) -> None:
    """The escalation path dr.yaml declares: levels, who, when, through which block."""
    path = levels(config())
    rows: list[dict[str, Any]] = [
        {
            "level": level.number,
            "who": level.who,
            "after": human_duration(level.after) if not level.immediate else "at once",
            "block": level.block,
            "automation": level.automation_name,
            "flows": list(level.flows),
        }
        for level in path
    ]
    if json_output:
        emit(rows, True)
        return
    if not rows:
        out.print("dr.yaml declares no escalation path (escalation:)")
        return
    table = Table("level", "who", "after", "block", "automation")
    for row in rows:
        table.add_row(str(row["level"]), row["who"], row["after"], row["block"], row["automation"])
    out.print(table)
    out.print("for runs of: " + ", ".join(path[0].flows), markup=False)


@app.command("apply")
def apply_cmd(json_output: bool = JsonOpt) -> None:
    """Replace the escalation automations on the Prefect server by dr.yaml's path."""
    api = _server()
    from tasks.escalation import escalation_apply

    applied = escalation_apply(config())
    if json_output:
        emit(applied, True)
        return
    if not applied:
        out.print(f"no escalation path in dr.yaml: removed ours from {api}")
        return
    for row in applied:
        out.print(f"{row['name']}: {row['what']}", markup=False)
    out.print(f"{len(applied)} escalation automation(s) on {api}", markup=False)
