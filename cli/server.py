"""``dr server status`` and ``dr server stop``: the local Prefect server the CLI shares
between commands when no server is configured (see :mod:`cli.prefect_server`)."""

from __future__ import annotations

import typer

from cli.common import JsonOpt, emit, out

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="The local Prefect server shared by CLI commands.")


@app.command("status")
def status_cmd(json_output: bool = JsonOpt) -> None:
    """Whether a shared local server runs, and where."""
    from cli.prefect_server import SharedServer

    found = SharedServer().running()
    if json_output:
        emit({"running": found is not None, **(found or {})}, True)
    elif found is None:
        out.print("no local Prefect server runs (the next command that needs one starts it)")
    else:
        out.print(f"local Prefect server at {found['url']} (pid {found['pid']})")


@app.command("stop")
def stop_cmd() -> None:
    """Stop the shared local server now (it also stops by itself when idle)."""
    from cli.prefect_server import SharedServer

    stopped = SharedServer().stop()
    out.print("stopped the local Prefect server" if stopped else "no local Prefect server ran")
