"""``dr failover``, ``dr failback`` and ``dr breach``: the Azure runbooks from the command line.

Each refuses bad input before anything starts, shows what it will do and asks on a terminal
(``--yes`` answers for it; without a terminal and without ``--yes`` it refuses, exit 2), then
runs the runbook approved in advance: the confirmation was the approval.

``dr breach`` stops with the system still isolated unless ``--resume`` is given; run it again
with ``--resume`` once the system is known clean (its durable record makes the second run pick
up where the first stopped, doing nothing twice).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from cli.common import JsonOpt, config, confirm, emit, opts, out, run_flow
from dr_runbooks.config import SystemConfig
from dr_runbooks.errors import ConfigError
from dr_runbooks.repository import parse_time
from dr_runbooks.text import human_duration
from flows.parameters import given

__all__ = ["breach_cmd", "failback_cmd", "failover_cmd"]

SystemOpt = typer.Option(..., "--system", "-s", help="Protected system from dr.yaml.")
DryRunOpt = typer.Option(False, "--dry-run", help="Show the plan; change nothing.")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
RestoreTimeOpt = typer.Option(
    None, "--restore-time", help="Restore the database to this time (ISO 8601, UTC default)."
)
TargetServerOpt = typer.Option(
    None, "--target-server", help="Name of the restored flexible server."
)
HealthTimeoutOpt = typer.Option(300, "--health-timeout", help="Seconds to wait for health.")


def _declared(system: str, need_breach: bool = False) -> SystemConfig:
    declared = config().system(system)
    if declared.sites is None:
        raise ConfigError(f"system {system!r} names no Azure sites in dr.yaml (sites: primary, dr)")
    if need_breach and declared.breach is None:
        raise ConfigError(f"system {system!r} has no breach: configuration in dr.yaml")
    return declared


def _time(value: str | None) -> str | None:
    if value is not None:
        parse_time(value)  # a malformed time is bad input, refused before anything runs
    return value


def _print_switch(result: dict[str, Any], title: str) -> None:
    if result.get("dry_run"):
        out.print(result["plan"], markup=False)
        return
    table = Table("step", "seconds", "outcome", "detail", title=title, title_justify="left")
    for step in result["steps"]:
        table.add_row(step["step"], f"{step['seconds']:.2f}", step["outcome"], step["detail"])
    out.print(table)
    dns = Table("record", "now", "TTL", "note", title="DNS", title_justify="left")
    for row in result["dns"]:
        dns.add_row(row["record"], row["now"], str(row["TTL"]), row["note"])
    out.print(dns)
    out.print(
        f"[green]{result['direction']}[/]: RTO achieved [bold]"
        f"{human_duration(result['rto_seconds'])}[/] (objective "
        f"{human_duration(result['rto_objective_seconds'])}); clients may keep the old "
        "addresses up to each record's old TTL"
    )
    for line in result["cleanup"]:
        out.print(f"to clean up: {line}", markup=False)


def failover_cmd(
    system: str = SystemOpt,
    restore_time: str | None = RestoreTimeOpt,
    target_server: str | None = TargetServerOpt,
    health_timeout: int = HealthTimeoutOpt,
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Fail a system over to its DR region (Scenario 2: Azure region failure)."""
    from flows.region_failover import region_failover

    sites = _declared(system).sites
    assert sites is not None
    _time(restore_time)
    if not dry_run and not yes:
        confirm(
            "a failover moves production traffic",
            f"Fail [bold]{system}[/] over from site {sites.primary} to site {sites.dr}: deploy "
            "the DR site, restore the database there, point the DNS records at it, and put "
            "them back if its health checks fail.",
        )
    result = run_flow(
        lambda: region_failover(
            **given(
                system=system,
                restore_time=restore_time,
                target_server=target_server,
                health_timeout_seconds=health_timeout,
                dry_run=dry_run,
                approved=True,
                config_path=opts.config,
            )
        ),
        json_output,
        f"failing {system} over",
    )
    if json_output:
        emit(result, True)
    else:
        _print_switch(result, f"Failover of {system}")


def failback_cmd(
    system: str = SystemOpt,
    target_server: str | None = TargetServerOpt,
    restore_time: str | None = RestoreTimeOpt,
    health_timeout: int = HealthTimeoutOpt,
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Return a system from its DR region to the primary, once the primary is healthy."""
    from flows.region_failback import region_failback

    sites = _declared(system).sites
    assert sites is not None
    _time(restore_time)
    if not dry_run and not yes:
        confirm(
            "a failback moves production traffic",
            f"Return [bold]{system}[/] from site {sites.dr} to site {sites.primary}: check the "
            "primary is healthy, bring the database back, point the DNS records at it.",
        )
    result = run_flow(
        lambda: region_failback(
            **given(
                system=system,
                target_server=target_server,
                restore_time=restore_time,
                health_timeout_seconds=health_timeout,
                dry_run=dry_run,
                approved=True,
                config_path=opts.config,
            )
        ),
        json_output,
        f"failing {system} back",
    )
    if json_output:
        emit(result, True)
    else:
        _print_switch(result, f"Failback of {system}")


def breach_cmd(
    system: str = SystemOpt,
    breach_time: str | None = typer.Option(
        None, "--breach-time", help="When the breach began (ISO 8601): restore before it."
    ),
    known_good: str | None = typer.Option(
        None, "--known-good", help="Last known-good commit of the configuration repository."
    ),
    no_restore: bool = typer.Option(False, "--no-restore", help="Do not restore a backup."),
    no_rotate: bool = typer.Option(False, "--no-rotate", help="Do not rotate secrets."),
    resume: bool = typer.Option(
        False, "--resume", help="Lift the isolation at the end (the system is known clean)."
    ),
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Respond to a security breach (Scenario 4): isolate, keep evidence, restore, rotate
    secrets; with --resume, lift the isolation."""
    from flows.security_breach import security_breach

    breach = _declared(system, need_breach=True).breach
    assert breach is not None
    _time(breach_time)
    if not dry_run and not yes:
        steps = "isolate it (DenyAll at priority 100, services stopped), keep the evidence"
        if not no_restore:
            steps += ", restore the last backup before the breach"
        if not no_rotate:
            steps += ", rotate its passwords and secrets"
        tail = (
            " (what an earlier run did is not repeated) and then [bold]lift the isolation[/]:"
            " only once it is known clean."
            if resume
            else "; it stays isolated until `dr breach --resume`."
        )
        confirm("a breach response changes production", f"[bold]{system}[/]: {steps}{tail}")
    result = run_flow(
        lambda: security_breach(
            **given(
                system=system,
                breach_time=breach_time,
                known_good=known_good,
                restore=not no_restore,
                rotate=not no_rotate,
                resume="now" if resume else "later",
                dry_run=dry_run,
                approved=True,
                config_path=opts.config,
            )
        ),
        json_output,
        f"responding to a breach of {system}",
    )
    if json_output:
        emit(result, True)
        return
    if result.get("dry_run"):
        out.print(result["plan"], markup=False)
        return
    table = Table("check", "result", "detail", title="Audit", title_justify="left")
    for row in result["audit"]:
        style = {"pass": "green", "FAIL": "red"}.get(row["result"], "yellow")
        table.add_row(row["check"], f"[{style}]{row['result']}[/]", row["detail"])
    out.print(table)
    if result["isolated"]:
        out.print(
            f"[yellow]{system} stays isolated[/]: run `dr breach -s {system} --resume` once it "
            "is known clean"
        )
    else:
        out.print(f"[green]{system} resumed[/]")
