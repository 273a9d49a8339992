"""The steps the region failover and the failback share: both move a system's traffic from one
Azure site to the other the same way.

Each function here is one numbered step of those runbooks, timed in the run's timeline, calling
one task per action and writing the durable record (:mod:`dr_runbooks.azure.records`) after
every change, so a run that dies anywhere can be started again:

- the DNS rollback plan is captured and stored *before* anything changes; once the cutover has
  begun, a run started again uses the stored plan, never the records as they are then;
- a finished deployment or restore is not done again; a restore that an earlier run started is
  waited for, not started twice;
- a record that already points at the new site is left alone; one that moved elsewhere since
  the plan was captured is refused (its ETag), so two runs cannot both cut DNS over.

The compensation is explicit: when the health check fails (or the cutover stops half-way) the
records this run cut over are put back from the stored plan, whatever Prefect's retries did.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from blocks.azure import AzureSite
from dr_runbooks.azure.flexible import RestoreMode
from dr_runbooks.azure.records import RecordBook, RunRecord, records_lock
from dr_runbooks.errors import (
    ConfigError,
    Rejected,
    RestoreVerificationFailed,
    ServerUnreachable,
    VerificationFailed,
)
from dr_runbooks.repository import parse_time
from dr_runbooks.text import first_line, human_duration, markdown_table
from flows.runbook import Runbook
from tasks._runtime import logger
from tasks.azure import (
    AzureSystem,
    azure_ensure_resource_group,
    command_run,
    deployment_run,
    deployment_what_if,
    dns_cut_over,
    dns_read_records,
    dns_restore_record,
    postgres_flexible_read,
    postgres_flexible_restore,
)
from tasks.health import http_wait_healthy
from tasks.records import flow_run_id, record_begin, record_finish, record_save

__all__ = [
    "Switch",
    "activation_plan",
    "check_site_healthy",
    "cut_over_and_verify",
    "cutover_plan",
    "deploy_site",
    "locked",
    "open_switch",
    "preflight",
    "report",
    "restore_database",
]


@dataclass
class Switch:
    """One move of a system's traffic from ``source`` to ``target``."""

    kind: str
    az: AzureSystem
    source: AzureSite
    target: AzureSite
    record: RunRecord
    book: RecordBook | None = None
    dry_run: bool = False
    resumed: bool = False
    #: What the first step found (resource group, source database, what-if).
    found: dict[str, Any] = field(default_factory=dict)

    @property
    def system(self) -> str:
        return self.az.name

    @property
    def to_dr(self) -> bool:
        return self.kind == "failover"

    def save(self) -> None:
        if self.book is not None:
            record_save(self.book, self.record)

    def change(self, what: str, cleanup: str = "") -> None:
        self.record.change(what, cleanup)
        self.save()


@contextmanager
def locked(rb: Runbook, az: AzureSystem, dry_run: bool) -> Iterator[None]:
    """One failover or failback of a system at a time, across machines: a lock in the records
    repository that dies with its holder (a killed run does not keep it). A dry run changes
    nothing and takes no lock."""
    if dry_run:
        yield
        return
    with rb.lock([records_lock(az.records.store, "failover", az.name, az.records.name)]):
        yield


def open_switch(rb: Runbook, kind: str, az: AzureSystem, dry_run: bool) -> Switch:
    """Open (or resume) the durable record of this failover or failback."""
    source, target = (az.primary, az.dr) if kind == "failover" else (az.dr, az.primary)
    with rb.step("durable record") as step:
        if dry_run:
            step.detail = "dry run: nothing recorded"
            return Switch(
                kind, az, source, target, RunRecord(kind=kind, system=az.name), None, True
            )
        book, record = record_begin(az.records, "failover", az.name, kind, flow_run_id())
        resumed = len(record.runs) > 1 or bool(record.done)
        step.detail = "resumed " + ", ".join(record.done) if resumed else "new"
    return Switch(kind, az, source, target, record, book, False, resumed)


def abandon_if_untouched(sw: Switch, exc: BaseException) -> None:
    """A run that ends before changing anything (a rejected plan, bad input) leaves nothing to
    resume: close its record, so it holds up no other run."""
    if isinstance(exc, Exception) and sw.book is not None and sw.record.untouched:
        record_finish(sw.book, sw.record, "rejected" if isinstance(exc, Rejected) else "abandoned")


# -- 0. (failback) the site to return to -------------------------------------------------------


def check_site_healthy(rb: Runbook, site: AzureSite, health_timeout: int) -> None:
    """Before traffic returns to a site: its subscription answers, its server (if any) is
    Ready, and its own health endpoints answer."""
    with rb.step("check the site is healthy", detail=site.describe()):
        if not azure_ensure_resource_group(site, create=False):
            raise VerificationFailed(f"resource group {site.resource_group} does not exist")
        if site.postgres_server:
            server = postgres_flexible_read(site)
            if server is not None and server["server"]["state"] != "Ready":
                raise VerificationFailed(
                    f"flexible server {site.postgres_server} is {server['server']['state']}"
                )
        try:
            for url in site.health_urls:
                http_wait_healthy(url, health_timeout)
        except RestoreVerificationFailed as exc:
            raise VerificationFailed(
                f"{site.describe()} is not healthy yet, nothing was changed: {first_line(exc)}"
            ) from None


# -- 1. preflight --------------------------------------------------------------------------------


def preflight(rb: Runbook, sw: Switch, target_server: str | None) -> None:
    """The target's subscription and resource group (read; created after the approval if
    missing), the source database's backups, and the DNS records captured and stored before
    anything changes."""
    record, target = sw.record, sw.target
    with rb.step("preflight: resource group", detail=target.resource_group) as step:
        # Only read here: the group is created after the approval, so a rejected plan has
        # changed nothing.
        existed = azure_ensure_resource_group(target, create=False)
        sw.found["resource_group_existed"] = existed
        if not existed:
            step.detail += " (missing: created after approval)"
    if sw.az.sites.database == "flexible-server":
        with rb.step("preflight: database backups") as step:
            sw.found["source_database"] = _source_database(sw)
            name = target_server or target.postgres_server
            if not name:
                raise ConfigError(
                    f"site {target.describe()} names no postgres_server to restore into"
                )
            sw.found["target_server"] = name
            existing = postgres_flexible_read(target, name)
            started = (record.captured.get("restore_started") or {}).get("server")
            if existing is not None and started != name:
                # Not this run's restore: another source, or an earlier failover's data.
                server = existing["server"]
                raise ConfigError(
                    f"flexible server {name} already exists in {target.describe()} (created "
                    f"{server.get('create_mode') or 'by hand'} from "
                    f"{(server.get('source_server_id') or '?').rsplit('/', 1)[-1]}): delete it "
                    f"first, or name another target_server"
                )
            step.detail = f"{sw.found['source_database']['server']['name']} → {name}"
    with rb.step("preflight: capture DNS rollback plan") as step:
        names = sorted(target.dns_records)
        if record.is_done("dns cutover") and "dns" in record.captured:
            step.outcome = "stored earlier"
            step.detail = (
                f"captured {record.captured['dns_captured']} by run "
                f"{record.captured.get('dns_captured_by') or '?'}"
            )
            logger().warning(
                "the cutover began in an earlier run: using the rollback plan it stored (%s)",
                step.detail,
            )
        elif names:
            record.captured["dns"] = dns_read_records(target, names)
            record.captured["dns_captured"] = datetime.now(UTC).isoformat(timespec="seconds")
            record.captured["dns_captured_by"] = flow_run_id()
            sw.save()
            step.detail = f"{len(names)} record(s) stored" if not sw.dry_run else "read"
        else:
            step.outcome = "no records"
            logger().warning("site %s names no dns_records: no DNS cutover", target.describe())
    if target.deploy_template and not record.is_done("deploy"):
        with rb.step("what-if") as step:
            if sw.found["resource_group_existed"]:
                sw.found["what_if"] = deployment_what_if(target)
            else:
                step.outcome = "after the resource group exists"


def _source_database(sw: Switch) -> dict[str, Any]:
    """The source server and its backups; stored, because in a region outage a later attempt
    may not reach it any more (a geo-restore does not need it to)."""
    stored = sw.record.captured.get("source_database")
    if stored is not None:
        return dict(stored)
    source = sw.source
    if not source.postgres_server:
        raise ConfigError(f"site {source.describe()} names no postgres_server to restore from")
    try:
        found = postgres_flexible_read(source)
    except ServerUnreachable as exc:
        logger().warning(
            "the source region does not answer (%s): restoring from %s's geo-backup without "
            "reading it first",
            first_line(exc),
            source.postgres_server,
        )
        found = {
            "server": {
                "id": source.server_id(),
                "name": source.postgres_server,
                "location": source.region,
                "state": "Unreachable",
                "geo_redundant_backup": True,
            },
            "latest_backup": None,
        }
    if found is None:
        raise ConfigError(
            f"flexible server {source.postgres_server} does not exist in {source.describe()}"
        )
    sw.record.captured["source_database"] = found
    sw.save()
    return found


# -- the plans shown before each approval -------------------------------------------------------


def _restore_point(sw: Switch, restore_time: str | None) -> datetime:
    if restore_time:
        return parse_time(restore_time)
    latest = (sw.found.get("source_database") or {}).get("latest_backup")
    return datetime.fromisoformat(latest) if latest else datetime.now(UTC)


def _restore_mode(sw: Switch) -> RestoreMode:
    source = (sw.found.get("source_database") or {}).get("server") or {}
    same_region = str(source.get("location", "")).lower() == sw.target.region.lower()
    return "PointInTimeRestore" if same_region else "GeoRestore"


def _dns_rows(sw: Switch, current: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    rows = []
    for planned in current or sw.record.captured.get("dns") or []:
        name = planned["name"]
        before = ", ".join(planned.get("addresses") or []) or "(no record)"
        rows.append(
            {
                "record": f"{name}.{planned['zone']}",
                "now": before,
                "TTL": planned.get("ttl"),
                "after": ", ".join(sw.target.dns_records[name]),
                "new TTL": sw.target.dns_ttl or planned.get("ttl") or 300,
            }
        )
    return rows


def activation_plan(sw: Switch, restore_time: str | None) -> str:
    """What the run will do, shown before the first approval."""
    target, title = sw.target, "Region failover" if sw.to_dr else "Region failback"
    group = target.resource_group + (
        " (exists)"
        if sw.found.get("resource_group_existed")
        else " (MISSING: created after approval, then the what-if is published)"
    )
    if target.deploy_template:
        changes: dict[str, int] = {}
        for change in sw.found.get("what_if") or []:
            changes[change["change"]] = changes.get(change["change"], 0) + 1
        infra = f"template deployment {target.deployment_name}: " + (
            ", ".join(f"{n} {c}" for c, n in sorted(changes.items())) or "what-if pending"
        )
    elif target.deploy_command:
        command = " ".join(target.deploy_command)
        infra = f"command `{command}` (timeout {target.deploy_timeout_seconds} s)"
    else:
        infra = "nothing to deploy (no template or command in the site block)"
    if sw.record.is_done("deploy"):
        infra = "done by an earlier run"
    rows = [
        {"step": "resource group", "what": f"{group} in {target.region}"},
        {"step": "infrastructure", "what": infra},
        {"step": "database", "what": _database_line(sw, restore_time)},
        {
            "step": "DNS cutover",
            "what": f"{len(target.dns_records)} A record(s), after a second approval",
        },
        {
            "step": "verify",
            "what": ", ".join(target.health_urls) or "no health URLs in the site block",
        },
    ]
    text = (
        f"# {title}: {sw.system} → {target.describe()}\n\n"
        f"From {sw.source.describe()} to {target.describe()}.\n\n"
    )
    if sw.resumed:
        text += f"**Resuming** the {sw.kind} started {sw.record.started:%Y-%m-%d %H:%M} UTC; "
        text += f"done already: {', '.join(sw.record.done) or 'nothing'}.\n\n"
    text += markdown_table(rows)
    text += "\n## DNS records (rollback plan)\n\n" + markdown_table(_dns_rows(sw))
    if sw.found.get("what_if"):
        text += "\n## What-if\n\n" + markdown_table(
            [{"change": c["change"], "resource": c["resource"]} for c in sw.found["what_if"]]
        )
    return text


def _database_line(sw: Switch, restore_time: str | None) -> str:
    mode = sw.az.sites.database
    if mode == "none":
        return "not moved (database: none)"
    if mode == "repository":
        where = sw.az.sites.dr_connection if sw.to_dr else "the system's own server"
        before = f" before {restore_time}" if restore_time else " (the latest)"
        return f"the database-failure runbook restores a backup{before} into {where}"
    if sw.record.is_done("restore"):
        return "restored by an earlier run"
    source = sw.found["source_database"]["server"]
    return (
        f"{_restore_mode(sw)} of {source['name']} ({source['location']}) into NEW server "
        f"{sw.found['target_server']} ({sw.target.region}) at "
        f"{_restore_point(sw, restore_time).isoformat(timespec='seconds')}"
    )


def cutover_plan(sw: Switch) -> str:
    """What the DNS cutover will do, shown before the second approval."""
    title = "Failover" if sw.to_dr else "Failback"
    text = (
        f"# {title} of {sw.system}: DNS cutover to {sw.target.describe()}\n\n"
        "Clients may keep the old address for up to the old TTL after the change.\n"
        "If the health check fails afterwards, the records are put back as shown in *now*.\n\n"
    )
    return text + markdown_table(_dns_rows(sw))


# -- 2. deploy, 3. restore -----------------------------------------------------------------------


def deploy_site(rb: Runbook, sw: Switch) -> None:
    """The target's resource group (if missing) and infrastructure: the template, its what-if
    published first, or the command; once."""
    target = sw.target
    if not sw.found.get("resource_group_existed"):
        with rb.step("create resource group", detail=target.resource_group) as step:
            if azure_ensure_resource_group(target, create=True):
                step.outcome = "exists"
            else:
                sw.change(
                    f"created resource group {target.resource_group} in {target.region}",
                    f"delete resource group {target.resource_group} when the site is retired",
                )
    with rb.step("deploy infrastructure") as step:
        if sw.record.is_done("deploy"):
            step.outcome = "done earlier"
            return
        if target.deploy_template:
            if "what_if" not in sw.found:
                changes = deployment_what_if(target)
                rb.publish(
                    f"{sw.kind}-{sw.system}-what-if",
                    f"what-if of {target.deployment_name} in {target.resource_group}",
                    markdown="# What-if\n\n" + markdown_table(changes),
                )
            resources = deployment_run(target)
            sw.record.mark("deploy", {"template": target.deploy_template, "resources": resources})
            sw.change(
                f"deployed {target.deploy_template} as {target.deployment_name} into "
                f"{target.resource_group} ({len(resources)} resources)",
                f"the resources of deployment {target.deployment_name} in "
                f"{target.resource_group} run (and cost) until removed",
            )
        elif target.deploy_command:
            command_run(
                target.deploy_command, target.deploy_timeout_seconds, target.deploy_directory
            )
            sw.record.mark("deploy", {"command": target.deploy_command})
            sw.change(f"ran {' '.join(target.deploy_command)}")
        else:
            step.outcome = "nothing to deploy"


def restore_database(
    rb: Runbook,
    sw: Switch,
    restore_time: str | None,
    timeout_seconds: int,
    config_path: str | None,
    incident_time: str | None,
) -> datetime | None:
    """The database in the target region; returns the point it was restored to (for the RPO),
    None when not known."""
    mode = sw.az.sites.database
    with rb.step("restore database", detail=mode) as step:
        done = sw.record.result("restore")
        if done is not None:
            step.outcome = "done earlier"
            return datetime.fromisoformat(done["point"]) if done.get("point") else None
        if mode == "none":
            step.outcome = "not moved"
            return None
        if mode == "repository":
            point = _restore_from_repository(sw, restore_time, config_path, incident_time)
            sw.record.mark("restore", {"point": point.isoformat() if point else None})
            sw.change(
                "restored the database from a backup into "
                + ((sw.az.sites.dr_connection or "?") if sw.to_dr else "the system's server")
            )
            return point
        point = _restore_point(sw, restore_time)
        name = sw.found["target_server"]
        restore_mode: RestoreMode = _restore_mode(sw)
        # Recorded before Azure is asked, so a run started again knows the server is its own.
        sw.record.captured["restore_started"] = {"server": name, "point": point.isoformat()}
        sw.save()
        result = postgres_flexible_restore(
            sw.target,
            name,
            restore_mode,
            sw.found["source_database"]["server"],
            point,
            timeout_seconds,
        )
        sw.record.mark(
            "restore", {"server": name, "mode": restore_mode, "point": point.isoformat()}
        )
        source = sw.found["source_database"]["server"]["name"]
        if result["created"]:
            sw.change(
                f"restored flexible server {name} in {sw.target.region} ({restore_mode} of "
                f"{source} at {point.isoformat(timespec='seconds')})",
                f"point the application at {result['server']['fqdn'] or name}; the old server "
                f"{source} stays until deleted",
            )
        else:
            sw.save()
        step.detail = f"{restore_mode} {source} → {name}"
        return point


def _restore_from_repository(
    sw: Switch, restore_time: str | None, config_path: str | None, incident_time: str | None
) -> datetime | None:
    from flows.database_failure import database_failure

    sites = sw.az.sites
    result = database_failure(
        system=sw.system,
        connection=(sites.dr_connection if sw.to_dr else None) or "",
        repository=(sites.dr_repository if sw.to_dr else None) or "",
        before=restore_time or "",
        approved=True,
        config_path=config_path or "",
        incident_time=incident_time or "",
    )
    point = result.get("consistent_point")
    return datetime.fromisoformat(point) if point else None


# -- 5. cutover, 6. verify (and roll back) ----------------------------------------------------


def cut_over_and_verify(rb: Runbook, sw: Switch, health_timeout: int) -> list[dict[str, Any]]:
    """Point each A record at the target site, then check its health endpoints; if they fail
    (or the cutover stops half-way) put the records back from the stored plan and fail."""
    plans = list(sw.record.captured.get("dns") or [])
    if not plans:
        return []
    # Marked before the first change: from now on a run started again must use the stored
    # plan, never the records as it finds them.
    if not sw.record.is_done("dns cutover"):
        sw.record.mark("dns cutover", {"began": datetime.now(UTC).isoformat(timespec="seconds")})
        sw.save()
    results: list[dict[str, Any]] = []
    try:
        with rb.step("DNS cutover", detail=f"{len(plans)} record(s)"):
            for planned in plans:
                name = planned["name"]
                result = dns_cut_over(
                    sw.target, planned, sw.target.dns_records[name], sw.target.dns_ttl
                )
                results.append(result)
                if result["changed"]:
                    sw.change(
                        f"DNS {name}.{planned['zone']}: "
                        f"{', '.join(planned['addresses']) or '(no record)'} → "
                        f"{', '.join(result['addresses'])} (TTL {result['ttl']}; clients may "
                        f"keep the old address up to {planned.get('ttl') or 0} s)"
                    )
        with rb.step("verify health", detail=", ".join(sw.target.health_urls) or "no URLs"):
            for url in sw.target.health_urls:
                http_wait_healthy(url, health_timeout)
    except Exception as exc:
        # Only the records that point at the target site now are this failover's to put
        # back; one that moved elsewhere was someone else's change and stays.
        ours = {r["name"] for r in results}
        _roll_back_dns(rb, sw, [p for p in plans if p["name"] in ours], exc)
        raise VerificationFailed(
            f"{sw.kind} of {sw.system} ROLLED BACK: {first_line(exc)}; the DNS records it "
            f"had changed were put back as they were before the {sw.kind}"
        ) from None
    return results


def _roll_back_dns(rb: Runbook, sw: Switch, plans: list[dict[str, Any]], cause: Exception) -> None:
    log = logger()
    log.error(
        "%s of %s FAILED (%s): PUTTING THE DNS RECORDS BACK from the rollback plan captured %s",
        sw.kind.upper(),
        sw.system,
        first_line(cause),
        sw.record.captured.get("dns_captured"),
    )
    with rb.step("roll back DNS", detail=f"{len(plans)} record(s)"):
        for planned in plans:
            restored = dns_restore_record(sw.target, planned)
            if restored["changed"]:
                sw.record.change(f"DNS {restored['record']} put back: {restored['now']}")
        if sw.book is not None:
            record_finish(sw.book, sw.record, "rolled-back")


# -- 7. report ------------------------------------------------------------------------------------


def report(
    rb: Runbook,
    sw: Switch,
    point: datetime | None,
    dns_results: list[dict[str, Any]],
    approvals: list[str],
) -> dict[str, Any]:
    """RTO and RPO against the objectives, every change made, and what to clean up later."""
    record = sw.record
    changes = [f"{c.when:%Y-%m-%d %H:%M:%S} {c.what}" for c in record.changes]
    cleanup = [c.cleanup for c in record.changes if c.cleanup]
    if not sw.to_dr:
        cleanup.append(
            f"the DR site {sw.source.describe()} no longer serves: remove its resources, or "
            "keep them for the next failover"
        )
    dns_rows = [
        {
            "record": f"{r['name']}.{r['zone']}",
            "now": ", ".join(r["addresses"]),
            "TTL": r["ttl"],
            "note": "changed" if r["changed"] else "already pointed there",
        }
        for r in dns_results
    ]
    since_first = datetime.now(UTC) - record.started
    rb.publish(
        f"{sw.kind}-{sw.system}-changes",
        f"{sw.kind} of {sw.system}: {len(changes)} change(s)",
        markdown=(
            f"# {sw.kind.capitalize()} of {sw.system}\n\n"
            f"Now served from {sw.target.describe()}. First attempt began "
            f"{record.started:%Y-%m-%d %H:%M:%S} UTC ({human_duration(since_first)} ago).\n\n"
            "## DNS\n\n"
            + markdown_table(dns_rows)
            + "\n## Changes\n\n"
            + "".join(f"- {c}\n" for c in changes or ["none"])
            + "\n## To clean up later\n\n"
            + "".join(f"- {c}\n" for c in cleanup or ["nothing"])
        ),
    )
    result = rb.recovered(
        sw.az.target(),
        point,
        key=f"{sw.kind}-{sw.system}",
        system=sw.system,
        direction=f"{sw.source.region} → {sw.target.region}",
        dns=dns_rows,
        changes=changes,
        cleanup=cleanup,
        approvals=approvals,
        first_attempt_started=record.started.isoformat(),
        rto_since_first_attempt_seconds=round(since_first.total_seconds(), 3),
        runs=list(record.runs),
    )
    if sw.book is not None:
        result["record"] = record_finish(sw.book, record, "completed")
    return result
