"""``dr backup files|config|keyvault`` and ``dr restore files|config|keyvault``: the protected
systems that are not databases (file storage, configuration in git, Key Vault secrets).

Each runs its runbook from dr.yaml's system (no ad hoc form: the system names the account,
the repository or the vault). A restore refuses bad input before anything starts, shows what
it will do and asks on a terminal (``--yes`` answers for it; without a terminal and without
``--yes`` it refuses, exit 2), then runs approved in advance; ``--dry-run`` publishes the plan
and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.table import Table

from cli.common import JsonOpt, config, confirm, emit, out, run_flow
from dr_runbooks.config import SystemConfig
from dr_runbooks.errors import ConfigError
from dr_runbooks.repository import parse_time
from dr_runbooks.text import human_duration
from flows.parameters import given

__all__ = ["register"]

SystemOpt = typer.Option(..., "--system", "-s", help="Protected system from dr.yaml.")
NoRetentionOpt = typer.Option(False, "--no-retention", help="Skip retention.")
BackupIdOpt = typer.Option(None, "--backup-id", help="This backup (default: the newest).")
DryRunOpt = typer.Option(False, "--dry-run", help="Show the plan; change nothing.")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")

_ENGINES = {"files": "blob", "config": "git", "keyvault": "keyvault"}


def _declared(system: str, kind: str) -> SystemConfig:
    declared = config().system(system)
    if declared.engine != _ENGINES[kind]:
        raise ConfigError(
            f"system {system!r} is a {declared.engine} system, not {_ENGINES[kind]} "
            f"(dr {kind} commands are for engine: {_ENGINES[kind]})"
        )
    return declared


def _files_source(declared: SystemConfig, system: str) -> dict[str, Any]:
    """The file runbooks' account, repository and containers, from the system in dr.yaml."""
    files = declared.files
    assert files is not None  # engine: blob goes with files: (checked by the config)
    if files.connection_string_env:
        account = f"env:{files.connection_string_env}"
    elif files.block:
        account = files.block
    else:
        raise ConfigError(
            f"system {system!r}: the file runbooks reach the account through files.block or "
            "files.connection_string_env"
        )
    if not declared.repositories:
        raise ConfigError(f"system {system!r} names no repositories in dr.yaml")
    return {
        "account": account,
        "repository": declared.repositories[0],
        "containers": list(files.containers),
    }


def _print(result: dict[str, Any], title: str) -> None:
    """The result's plain values as a two-column table, then its steps."""
    if result.get("dry_run"):
        out.print(result.get("plan", ""), markup=False)
        return
    table = Table("", "", title=title, title_justify="left", show_header=False)
    for key, value in result.items():
        if isinstance(value, str | int | float | bool) or value is None:
            seconds = key.endswith("_seconds") and isinstance(value, int | float)
            shown = human_duration(float(value)) if seconds and value else value
            table.add_row(key.replace("_", " "), str(shown))
    out.print(table)
    steps = result.get("steps") or []
    if steps:
        timeline = Table("step", "seconds", "outcome", "detail", title_justify="left")
        for step in steps:
            timeline.add_row(
                str(step.get("step")),
                f"{float(step.get('seconds') or 0):.2f}",
                str(step.get("outcome")),
                str(step.get("detail", "")),
            )
        out.print(timeline)


def _run(call: Callable[[], dict[str, Any]], json_output: bool, status: str, title: str) -> None:
    result = run_flow(call, json_output, status)
    emit(result, json_output)
    if not json_output:
        _print(result, title)


# -- backups -------------------------------------------------------------------------------------


def backup_files_cmd(
    system: str = SystemOpt,
    container: list[str] = typer.Option(
        [], "--container", "-c", help="Only this container (repeatable; default: the system's)."
    ),
    no_retention: bool = NoRetentionOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Back up a file storage system's containers now (incremental)."""
    from flows.backup_files import backup_files

    source = _files_source(_declared(system, "files"), system)
    if container:
        source["containers"] = container
    _run(
        lambda: backup_files(system=system, retention=not no_retention, **source),
        json_output,
        f"backing up the files of {system}",
        f"file backup of {system}",
    )


def backup_config_cmd(
    system: str = SystemOpt,
    no_retention: bool = NoRetentionOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Back up a configuration repository now (a git bundle, only when its refs changed)."""
    from flows.backup_config import backup_config

    _declared(system, "config")
    _run(
        lambda: backup_config(system=system, retention=not no_retention),
        json_output,
        f"checking the refs of {system}",
        f"configuration backup of {system}",
    )


def backup_keyvault_cmd(
    system: str = SystemOpt,
    no_retention: bool = NoRetentionOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Back up a Key Vault's secrets now (the service's own backup_secret)."""
    from flows.backup_keyvault import backup_keyvault

    _declared(system, "keyvault")
    _run(
        lambda: backup_keyvault(system=system, retention=not no_retention),
        json_output,
        f"backing up the secrets of {system}",
        f"Key Vault backup of {system}",
    )


# -- restores ------------------------------------------------------------------------------------


def restore_files_cmd(
    system: str = SystemOpt,
    container: str = typer.Option(..., "--container", "-c", help="The container to restore."),
    prefix: str | None = typer.Option(None, "--prefix", help="Only blobs under this prefix."),
    blob: str | None = typer.Option(None, "--blob", help="Only this blob."),
    target: str | None = typer.Option(
        None, "--target", help="Into this container (default: a new one)."
    ),
    in_place: bool = typer.Option(
        False, "--in-place", help="Into the container itself, keeping what it overwrites."
    ),
    backup_id: str | None = BackupIdOpt,
    before: str | None = typer.Option(
        None, "--before", help="The newest backup before this time (ISO 8601, UTC default)."
    ),
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Restore a container, a prefix or one blob to a backup's state (file storage failure)."""
    from flows.file_storage_failure import file_storage_failure

    source = _files_source(_declared(system, "files"), system)
    if before is not None:
        parse_time(before)
    if not dry_run and not yes:
        where = "in place" if in_place else f"into {target or 'a new container'}"
        confirm(
            "a file restore writes blobs",
            f"Restore [bold]{container}[/]{'/' + (blob or prefix or '') if blob or prefix else ''}"
            f" of {system} {where} from backup {backup_id or 'the newest'}.",
        )
    _run(
        lambda: file_storage_failure(
            system=system,
            account=source["account"],
            repository=source["repository"],
            container=container,
            in_place=in_place,
            dry_run=dry_run,
            approved=not dry_run,
            **given(prefix=prefix, blob=blob, target=target, backup_id=backup_id, before=before),
        ),
        json_output,
        f"restoring {container} of {system}",
        f"file restore of {system}",
    )


def restore_config_cmd(
    system: str = SystemOpt,
    path: str | None = typer.Option(
        None, "--path", help="Clone the backup into this new (or empty) directory."
    ),
    push_to: str | None = typer.Option(
        None, "--push-to", help="Push the backup's refs to this new, empty repository."
    ),
    push_password_env: str | None = typer.Option(
        None, "--push-password-env", help="Environment variable with the push target's token."
    ),
    backup_id: str | None = BackupIdOpt,
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Restore a configuration repository from its newest (or a chosen) bundle."""
    from flows.config_restore import config_restore

    _declared(system, "config")
    if not path and not push_to:
        raise ConfigError("say where to restore: --path DIR (a clone) or --push-to URL")
    if push_to and not dry_run and not yes:
        confirm(
            "a push writes to another repository",
            f"Push every ref of the backup of [bold]{system}[/] to {push_to} (it must be empty).",
        )
    _run(
        lambda: config_restore(
            system=system,
            dry_run=dry_run,
            approved=not dry_run,
            **given(
                path=path,
                push_to=push_to,
                push_password_env=push_password_env,
                backup_id=backup_id,
            ),
        ),
        json_output,
        f"restoring the configuration of {system}",
        f"configuration restore of {system}",
    )


def restore_keyvault_cmd(
    system: str = SystemOpt,
    secret: list[str] = typer.Option(
        [], "--secret", help="Only this secret (repeatable; default: every one)."
    ),
    vault_url: str | None = typer.Option(
        None, "--vault-url", help="Into this vault (default: the system's own)."
    ),
    backup_id: str | None = BackupIdOpt,
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Restore Key Vault secrets from a backup; a secret that exists is reported, never
    overwritten."""
    from flows.keyvault_restore import keyvault_restore_flow

    _declared(system, "keyvault")
    if not dry_run and not yes:
        confirm(
            "a restore writes secrets",
            f"Restore {', '.join(secret) if secret else 'every secret'} of [bold]{system}[/] "
            f"into {vault_url or 'its own vault'}; existing secrets are left as they are.",
        )
    _run(
        lambda: keyvault_restore_flow(
            system=system,
            dry_run=dry_run,
            approved=not dry_run,
            **given(secrets=secret or None, vault_url=vault_url, backup_id=backup_id),
        ),
        json_output,
        f"restoring the secrets of {system}",
        f"Key Vault restore of {system}",
    )


def register(backup: typer.Typer, restore: typer.Typer) -> None:
    """Add the commands to ``dr backup`` and ``dr restore``."""
    backup.command("files")(backup_files_cmd)
    backup.command("config")(backup_config_cmd)
    backup.command("keyvault")(backup_keyvault_cmd)
    restore.command("files")(restore_files_cmd)
    restore.command("config")(restore_config_cmd)
    restore.command("keyvault")(restore_keyvault_cmd)
