"""What every command shares: the consoles, the global options, running a flow with progress
bars, output, and handing an ad-hoc connection to a flow without putting it in argv."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
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
from dr_runbooks.crypto import IDENTITY_FILE_ENV
from dr_runbooks.errors import BadInput
from dr_runbooks.redaction import install_log_redaction, redact
from dr_runbooks.repository import Repository
from dr_runbooks.targets import Connection
from dr_runbooks.text import human_duration

__all__ = [
    "BLOCKS",
    "MANAGEMENT",
    "SECRETS",
    "DatabaseOpt",
    "DsnOpt",
    "EncryptToOpt",
    "IdentityOpt",
    "JsonOpt",
    "SystemOpt",
    "UriOpt",
    "config",
    "confirm",
    "emit",
    "err",
    "handoff",
    "handoff_repositories",
    "opts",
    "out",
    "prepare_prefect",
    "print_restore",
    "run_flow",
    "use_identity",
]

err = Console(stderr=True)
out = Console()
T = TypeVar("T")

#: Commands that run flows, and so need a Prefect API (a temporary one when none answers).
FLOW_COMMANDS = {"backup", "restore", "drill", "verify", "serve", "failover", "failback", "breach"}


@dataclass
class Options:
    debug: bool = False
    config: str | None = None


opts = Options()


def config() -> Config:
    return load_config(opts.config)


class _Blocks:
    """Saved blocks for the resolver, imported only when a command names one (importing
    Prefect costs a second, which ``dr status`` and ``dr backups list`` need not pay)."""

    def connection(self, name: str, engine: str) -> tuple[Connection, list[str]]:
        from blocks import PREFECT_BLOCKS

        return PREFECT_BLOCKS.connection(name, engine)

    def repository(self, name: str, label: str) -> Repository:
        from blocks import PREFECT_BLOCKS

        return PREFECT_BLOCKS.repository(name, label)


BLOCKS = _Blocks()


class _Management:
    """Resource Manager clients for the protection audits (``blocks.azure.MANAGEMENT_CLIENTS``),
    imported only when a system places its account or vault in Resource Manager."""

    def storage(self, subscription_id: str, site: str | None) -> Any:
        from blocks.azure import MANAGEMENT_CLIENTS

        return MANAGEMENT_CLIENTS.storage(subscription_id, site)

    def keyvault(self, subscription_id: str, site: str | None) -> Any:
        from blocks.azure import MANAGEMENT_CLIENTS

        return MANAGEMENT_CLIENTS.keyvault(subscription_id, site)


MANAGEMENT = _Management()


SystemOpt = typer.Option(None, "--system", "-s", help="Protected system from dr.yaml.")
DatabaseOpt = typer.Option(None, "--database", "-d", help="Database name.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
DsnOpt = typer.Option(
    None,
    "--dsn",
    envvar="DR_DSN",
    help="Ad-hoc connection (prefer the DR_DSN variable: argv is visible to ps).",
)
UriOpt = typer.Option(
    None,
    "--uri",
    envvar="DR_MONGODB_URI",
    help="Ad-hoc connection (prefer the DR_MONGODB_URI variable: argv is visible to ps).",
)


# -- encryption


IdentityOpt = typer.Option(
    None,
    "--identity",
    help=f"age identity file that decrypts encrypted backups (or {IDENTITY_FILE_ENV}).",
)
EncryptToOpt = typer.Option(
    [],
    "--encrypt-to",
    help="Also encrypt to this age recipient (age1…, a public key; repeatable).",
)


def use_identity(path: str | None) -> None:
    """``--identity FILE``: checked now, then read where a backup needs it, through the
    environment of this process (the flows run in it); the file's content never travels."""
    if path is None:
        return
    if "AGE-SECRET-KEY-" in path.upper():  # the key itself, pasted: never echo it
        raise BadInput("--identity takes the path of an identity file, not the key itself")
    location = Path(path).expanduser()
    if not location.is_file() or not os.access(location, os.R_OK):
        raise BadInput(f"cannot read identity file {path}")
    os.environ[IDENTITY_FILE_ENV] = str(location.absolute())


class _Secrets:
    """Prefect Secret blocks and Key Vault for identities, imported only when a backup needs
    one (importing Prefect costs a second that most commands need not pay)."""

    def prefect_secret(self, block: str) -> str:
        from blocks.age import AGE_SECRETS

        return AGE_SECRETS.prefect_secret(block)

    def key_vault_secret(self, secret: str, vault_url: str | None, site: str | None) -> str:
        from blocks.age import AGE_SECRETS

        return AGE_SECRETS.key_vault_secret(secret, vault_url, site)


SECRETS = _Secrets()


# -- the Prefect API --------------------------------------------------------------------------


class _Prefect:
    server: Any = None
    settings = ExitStack()


#: The flags that make ``dr restore postgres`` a point-in-time recovery.
_PITR_FLAGS = ("--at", "--at-lsn", "--at-name")


def prepare_prefect(argv: list[str]) -> None:
    """Make Prefect usable offline: a local server (shared with the commands that follow, see
    :mod:`cli.prefect_server`) when none is configured or the configured one does not answer
    (a disaster may have taken it)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not opts.debug:
        # Quiet the console only; the run's logs still reach the Prefect API at INFO.
        for handler in ("CONSOLE", "CONSOLE_FLOW_RUNS", "CONSOLE_TASK_RUNS"):
            os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{handler}_LEVEL", "CRITICAL")
    words = [a for a in argv if not a.startswith("-")]
    if not words or words[0] not in FLOW_COMMANDS or "--help" in argv:
        return
    if words[0] == "restore" and any(a.split("=")[0] in _PITR_FLAGS for a in argv):
        return  # a point-in-time recovery runs without Prefect (cli/physical.py)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cli.prefect_server import SharedServer, is_healthy

    api = PREFECT_API_URL.value()
    if api and is_healthy(api):
        return
    if api:
        err.print(
            f"Prefect API {api} does not answer; running with a local server",
            style="yellow",
        )
    _Prefect.server = SharedServer()
    url = _Prefect.server.url()
    os.environ["PREFECT_API_URL"] = url
    _Prefect.settings.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))


def await_prefect() -> None:
    """Wait for the local server, if this command started it."""
    if _Prefect.server is not None:
        timeout = float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
        _Prefect.server.wait(timeout)


# -- running flows ----------------------------------------------------------------------------


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


_RETRY = re.compile(
    r"failed with \w+: (?P<error>.*) - Retry (?P<n>\d+)/(?P<of>\d+) will start (?P<when>.*)$"
)
_OURS = re.compile(r"^(?P<head>\w+: attempt \d+ of \d+ failed)(?P<tail>: .*; retrying .*)$")
_REPR = re.compile(r"^\w+\((?P<q>['\"])(?P<text>.*)(?P=q)\)$", re.DOTALL)


class _RetryNotices(logging.Handler):
    """Say on stderr when a step's attempt failed and will be retried: without it a retried
    step looks like a silent stall (the console shows none of Prefect's logs). Reads the
    message as logged (redacted: the filters on Prefect's loggers run first)."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a notice must never break the run
            self._notice(record)

    def _notice(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        ours = _OURS.search(message)
        if ours is not None:  # the skeleton's own retries (taking a lock) say it this way
            err.print(f"[yellow]{ours['head']}[/]{ours['tail']}", highlight=False)
            return
        match = _RETRY.search(message)
        if match is None:
            return
        error = match["error"]
        inner = _REPR.match(error)
        reason = (inner["text"] if inner else error).splitlines()[0]
        when = match["when"]
        delay = f"in {when.removesuffix(' from now')}" if "second" in when else when
        step = getattr(record, "task_run_name", "a step")
        err.print(
            f"[yellow]{step}: attempt {match['n']} of {int(match['of']) + 1} failed[/]: "
            f"{redact(reason)}; retrying {delay}",
            highlight=False,
        )


@contextmanager
def _retry_notices(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    handler = _RetryNotices(logging.INFO)
    loggers = [logging.getLogger(name) for name in ("prefect.task_runs", "prefect.flow_runs")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def run_flow(call: Callable[[], T], json_output: bool, status: str) -> T:
    """Run a flow with a spinner, progress bars and retry notices on stderr (none with
    ``--json``)."""
    install_log_redaction()
    await_prefect()
    _name_the_launcher()
    spinner = err.status(status) if not json_output else nullcontext()
    with _progress_bars(not json_output), _retry_notices(not json_output), spinner:
        return call()


def _name_the_launcher() -> None:
    """Who launched the run, for its record: ``user@host: dr restore postgres``."""
    import getpass
    import socket

    try:
        from typer._click.globals import get_current_context  # typer's own copy of click
    except ImportError:
        from click import get_current_context  # type: ignore[no-redef]

    context = get_current_context(silent=True)
    if context is not None and "DR_LAUNCHED_BY" not in os.environ:
        command = context.command_path.replace(context.find_root().info_name or "dr", "dr", 1)
        os.environ["DR_LAUNCHED_BY"] = f"{getpass.getuser()}@{socket.gethostname()}: {command}"


def emit(data: Any, json_output: bool) -> None:
    if json_output:
        print(json.dumps(data, indent=2, default=str))


def handoff(variable: str, value: str | None, check: Callable[[str], Any]) -> str | None:
    """Hand an ad-hoc DSN or URI to a flow through the environment, never as a parameter
    (flow parameters are stored by Prefect). ``check`` refuses a malformed one first."""
    if value is None:
        return None
    check(value)
    os.environ[variable] = value
    return f"env:{variable}"


def handoff_repositories(specs: list[str]) -> list[str]:
    """``--repo`` values as flow parameters: a URL (which may carry a SAS token) travels
    through the environment as ``env:VAR``, never stored with the run's parameters."""
    handed = []
    for index, spec in enumerate(specs):
        if "://" in spec:
            variable = f"DR_CLI_REPO_{index}"
            os.environ[variable] = spec
            handed.append(f"env:{variable}")
        else:
            handed.append(spec)
    return handed


def confirm(action: str, explanation: str, prompt: str = "Proceed?") -> None:
    """Show what a destructive step will do and ask on a terminal; without a terminal, refuse
    (exit 2) before showing anything."""
    if not sys.stdin.isatty():
        raise BadInput(f"{action}: confirm on a terminal or pass --yes")
    err.print(explanation)
    if not typer.confirm(prompt, default=False, err=True):
        raise typer.Abort()


def print_restore(result: dict[str, Any], name: str, summary: str) -> None:
    """A restore's result for a person: the steps, then ``summary`` and where the old data is."""
    if result.get("dry_run"):
        out.print(result["plan"])
        return
    table = Table("step", "seconds", "outcome", "detail", title=f"Restore of {name}")
    for step in result["steps"]:
        table.add_row(step["step"], f"{step['seconds']:.2f}", step["outcome"], step["detail"])
    out.print(table)
    out.print(
        f"[green]restored[/] {name} {summary}: RTO achieved "
        f"[bold]{human_duration(result['rto_seconds'])}[/] (objective "
        f"{human_duration(result['rto_objective_seconds'])})"
    )
    if result["kept_old_database"]:
        out.print(f"the previous data is kept in {result['kept_old_database']}")
