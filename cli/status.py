"""``dr status`` (every system against its objectives, from the repositories alone) and
``dr verify`` (the daily test restore, now)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from cli.common import BLOCKS, JsonOpt, config, emit, opts, out, run_flow
from dr_runbooks.errors import BadInput
from dr_runbooks.status import system_status
from dr_runbooks.targets import repository_from_config
from dr_runbooks.text import human_duration

__all__ = ["status_cmd", "verify_cmd"]

_STATE_STYLE = {
    "OK": "green",
    "UNVERIFIED": "yellow",
    "STALE": "red",
    "CLOCK_SKEW": "red",
    "DAMAGED": "red",
    "FAILED": "red",
    "MISSING": "red",
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
        repository = repository_from_config(loaded, declared.repositories[0], BLOCKS)
        rows.extend(s.as_dict() for s in system_status(loaded, name, declared, repository))
        for repo_name in declared.repositories:
            if repo_name in checked or loaded.repository(repo_name).type != "azure":
                continue
            checked.add(repo_name)
            store = repository_from_config(loaded, repo_name, BLOCKS).store
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
        emit({"ok": healthy, "systems": rows, "soft_delete": soft_delete}, True)
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


def verify_cmd(
    system: list[str] = typer.Option([], "--system", "-s", help="Only these systems."),
    verify_server: str | None = typer.Option(
        None, "--verify-server", help="Block name or env:VAR with a DSN for test restores."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Test-restore the newest backup of each system now (the daily verification)."""
    from flows.verify_backups import verify_backups

    loaded = config()
    for name in system:
        loaded.system(name)
    results = run_flow(
        lambda: verify_backups(
            systems=system or None, verify_server=verify_server, config_path=opts.config
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
