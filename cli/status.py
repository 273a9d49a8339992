"""``dr status`` (every system against its objectives, from the repositories alone) and
``dr verify`` (the daily test restore, now)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from cli.common import (
    BLOCKS,
    MANAGEMENT,
    IdentityOpt,
    JsonOpt,
    config,
    emit,
    opts,
    out,
    run_flow,
    use_identity,
)
from dr_runbooks.config import Config, SystemConfig
from dr_runbooks.errors import BadInput, DRError
from dr_runbooks.status import repository_protection, system_status
from dr_runbooks.targets import repository_from_config
from dr_runbooks.text import first_line, human_duration
from flows.parameters import given

__all__ = ["status_cmd", "verify_cmd"]

_STATE_STYLE = {
    "OK": "green",
    "UNVERIFIED": "yellow",
    "POLICY": "yellow",
    "STALE": "red",
    "CLOCK_SKEW": "red",
    "DAMAGED": "red",
    "FAILED": "red",
    "MISSING": "red",
    "UNREACHABLE": "red",
}


def status_cmd(
    system: list[str] = typer.Option([], "--system", "-s", help="Only these systems."),
    json_output: bool = JsonOpt,
) -> None:
    """Each protected system against its objectives; exits 1 when any is not OK."""
    loaded = config()
    names = system or sorted(loaded.systems)
    if not names:
        raise BadInput("dr.yaml declares no systems")
    rows: list[dict[str, Any]] = []
    soft_delete: list[dict[str, Any]] = []
    checked: set[str] = set()
    for name in names:
        declared = loaded.system(name)
        if not declared.repositories:
            raise BadInput(f"system {name!r} names no repositories")
        rows.extend(_system_rows(loaded, name, declared))
        for repo_name in declared.repositories:
            if repo_name in checked or loaded.repository(repo_name).type != "azure":
                continue
            checked.add(repo_name)
            soft_delete.append(_soft_delete(loaded, repo_name))
    healthy = all(r["state"] == "OK" for r in rows)
    protection = [
        _protection(loaded, repo_name)
        for repo_name in dict.fromkeys(r for n in names for r in loaded.system(n).repositories)
    ]
    if json_output:
        emit(
            {"ok": healthy, "systems": rows, "soft_delete": soft_delete, "protection": protection},
            True,
        )
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
                f"unknown ({entry['error']})"
                if entry.get("error")
                else "unknown (the credentials cannot read the account's properties)"
                if policy is None
                else f"{'enabled' if policy['enabled'] else 'DISABLED'}"
                + (f", {policy['days']} days" if policy["enabled"] else "")
            )
            style = "green" if entry["meets_plan"] else "yellow"
            out.print(
                f"blob soft delete on {entry['repository']}: [{style}]{text}[/] "
                "(the plan requires 30 days)"
            )
        _print_protection(protection)
    if not healthy:
        raise typer.Exit(1)


def _system_rows(loaded: Config, name: str, declared: SystemConfig) -> list[dict[str, Any]]:
    """The system's rows from its first repository. One that cannot be reached (in a region
    outage it is the one down) is a row of its own, UNREACHABLE, and the rows come from the
    next repository that answers."""
    rows: list[dict[str, Any]] = []
    for repo_name in declared.repositories:
        try:
            repository = repository_from_config(loaded, repo_name, BLOCKS)
            statuses = system_status(loaded, name, declared, repository, management=MANAGEMENT)
            found = [s.as_dict() for s in statuses]
        except DRError as exc:
            rows.append(_unreachable(name, declared, repo_name, exc))
            continue
        return rows + found
    return rows


def _unreachable(name: str, declared: SystemConfig, repo_name: str, exc: DRError) -> dict[str, Any]:
    return {
        "system": name,
        "engine": declared.engine,
        "database": ", ".join(declared.databases) or "*",
        "repository": repo_name,
        "state": "UNREACHABLE",
        "detail": f"repository {repo_name}: {first_line(exc)}",
        "newest_backup": None,
        "age_seconds": None,
        "rpo_seconds": 0.0,
        "verified_backup": None,
    }


def _protection(loaded: Config, repo_name: str) -> dict[str, Any]:
    """Encryption and immutability of a repository; one that cannot be reached says so."""
    kind = loaded.repository(repo_name).type
    try:
        repository = repository_from_config(loaded, repo_name, BLOCKS)
    except DRError as exc:
        return {"repository": repo_name, "kind": kind, "error": first_line(exc)}
    return repository_protection(repo_name, kind, repository).as_dict()


def _soft_delete(loaded: Config, repo_name: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"repository": repo_name, "soft_delete": None, "meets_plan": False}
    try:
        store = repository_from_config(loaded, repo_name, BLOCKS).store
        policy = store.soft_delete_policy()  # type: ignore[attr-defined]
    except DRError as exc:
        entry["error"] = first_line(exc)
        return entry
    if policy is not None:
        entry["soft_delete"] = {"enabled": policy.enabled, "days": policy.days}
    entry["meets_plan"] = bool(policy and policy.enabled and (policy.days or 0) >= 30)
    return entry


def _print_protection(protection: list[dict[str, Any]]) -> None:
    for entry in protection:
        recipients = entry["encrypted_to"]
        encryption = (
            f"[green]age, {len(recipients)} recipient(s)[/]" if recipients else "none (in clear)"
        )
        line = f"new backups in {entry['repository']}: encryption {encryption}"
        if entry["immutability"] is not None:
            line += f"; immutability {entry['immutability']}"
        out.print(line)
        for warning in entry["warnings"]:
            out.print(f"[yellow]warning[/] {entry['repository']}: {warning}")


def verify_cmd(
    system: list[str] = typer.Option([], "--system", "-s", help="Only these systems."),
    verify_server: str | None = typer.Option(
        None, "--verify-server", help="Block name or env:VAR with a DSN for test restores."
    ),
    json_output: bool = JsonOpt,
    identity: str | None = IdentityOpt,
) -> None:
    """Test-restore the newest backup of each system now (the daily verification)."""
    from flows.verify_backups import verify_backups

    use_identity(identity)
    loaded = config()
    for name in system:
        loaded.system(name)
    results = run_flow(
        lambda: verify_backups(
            **given(systems=system or None, verify_server=verify_server, config_path=opts.config)
        ),
        json_output,
        "verifying",
    )
    emit(results, json_output)
    if not json_output:
        for r in results:
            out.print(
                f"[green]{r['outcome']}[/] {r['system']}/{r['database']}: {r['backup_id']} "
                f"({r['age']} old) {r['detail']}"
            )
