"""The numbered steps of the security-breach runbook (:mod:`flows.security_breach`), one
function each, calling one task per action and writing the durable record after every change.

What a run started again (after a crash, or to resume after ``resume="later"``) relies on:

- the NSG rules as they were before the isolation, and every rule the isolation displaced
  from priority 100, are stored before anything is deleted; lifting the isolation deletes only
  the DenyAll rules and puts the displaced rules back;
- a new password is kept (a new Key Vault version, or the block) before the server is told,
  and the record holds only the version: a run started again reads the password back from
  there instead of making another;
- evidence already uploaded for the case is kept, its hash read back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from blocks.azure import AzureSite
from dr_runbooks.azure.network import (
    DIRECTIONS,
    deny_all_in_place,
    deny_all_name,
    deny_all_properties,
    rule_at_priority,
)
from dr_runbooks.azure.passwords import new_password
from dr_runbooks.azure.records import RecordBook, RunRecord, records_lock
from dr_runbooks.errors import BadInput, ConfigError, Rejected, VerificationFailed
from dr_runbooks.repository import parse_time
from dr_runbooks.text import markdown_table
from flows.runbook import Runbook
from tasks.azure import (
    AzureSystem,
    command_run,
    keyvault_read_secret,
    keyvault_set_secret,
    nsg_delete_rule,
    nsg_put_rule,
    nsg_read_rules,
    postgres_flexible_read,
    postgres_flexible_restore,
)
from tasks.breach import (
    BreachSetup,
    evidence_preserve,
    evidence_record_custody,
    evidence_verify,
    git_config_changes,
    mongodb_check_password,
    mongodb_set_password,
    postgres_check_password,
    postgres_set_password,
    prefect_block_password,
    prefect_block_set_password,
)
from tasks.records import flow_run_id, record_begin, record_finish, record_save

__all__ = [
    "Breach",
    "abandon_if_untouched",
    "assess_changes",
    "audit",
    "check_restore_time",
    "finish",
    "isolate",
    "lift_isolation",
    "locked",
    "open_breach",
    "plan",
    "preserve_evidence",
    "restore_clean",
    "resume_plan",
    "rotate_secrets",
]


@dataclass
class Breach:
    """One breach response for one system."""

    az: AzureSystem
    setup: BreachSetup
    site: AzureSite
    record: RunRecord
    book: RecordBook | None
    dry_run: bool
    #: NSG rules as read before the plan (for the plan only).
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Old passwords seen by this run, by rotation key: memory only, for the audit.
    old_values: dict[str, str | None] = field(default_factory=dict)

    @property
    def system(self) -> str:
        return self.az.name

    @property
    def nsgs(self) -> list[str]:
        return self.setup.config.network_security_groups or self.site.network_security_groups

    def save(self) -> None:
        if self.book is not None:
            record_save(self.book, self.record)

    def change(self, what: str, cleanup: str = "") -> None:
        self.record.change(what, cleanup)
        self.save()

    def mark(self, step: str, result: Any = True) -> None:
        self.record.mark(step, result)
        self.save()


def open_breach(rb: Runbook, az: AzureSystem, setup: BreachSetup, dry_run: bool) -> Breach:
    """Open (or resume) the durable record; read the NSGs for the plan."""
    site = az.primary if setup.config.site == "primary" else az.dr
    with rb.step("durable record") as step:
        if dry_run:
            record, book = RunRecord(kind="breach", system=az.name), None
            step.detail = "dry run: nothing recorded"
        else:
            book, record = record_begin(az.records, "breach", az.name, "breach", flow_run_id())
            step.detail = "resumed " + ", ".join(record.done) if record.done else "new"
    br = Breach(az, setup, site, record, book, dry_run)
    with rb.step("read network security groups", detail=", ".join(br.nsgs) or "none"):
        for nsg in br.nsgs:
            br.rules[nsg] = nsg_read_rules(site, nsg)
    return br


def locked(rb: Runbook, az: AzureSystem, dry_run: bool) -> Any:
    """One breach response per system at a time (a lock that dies with its holder)."""
    from contextlib import nullcontext

    if dry_run:
        return nullcontext()
    return rb.lock([records_lock(az.records.store, "breach", az.name, az.records.name)])


# -- the plans ------------------------------------------------------------------------------------


def plan(br: Breach, breach_time: str | None, restore: bool, rotate: bool) -> str:
    """Everything the response will do, shown before the first approval."""
    config, rows = br.setup.config, []
    for nsg, rules in br.rules.items():
        for direction in DIRECTIONS:
            blocker = rule_at_priority(rules, direction)
            what = f"add {deny_all_name(direction)} (Deny * → *, priority 100)"
            if deny_all_in_place(rules, direction):
                what = f"{deny_all_name(direction)} already in place"
            elif blocker is not None:
                what += f"; rule {blocker['name']} holds priority 100: removed now, put back later"
            rows.append({"step": "1 isolate", "what": f"NSG {nsg} {direction}: {what}"})
    if config.stop_command:
        rows.append({"step": "1 isolate", "what": f"run `{' '.join(config.stop_command)}`"})
    for path in config.evidence_paths:
        rows.append({"step": "2 evidence", "what": f"tar.gz + sha256 of {path}"})
    if config.config_repository:
        rows.append(
            {
                "step": "3 assess",
                "what": f"changes in {config.config_repository} since "
                f"{config.known_good or '(known_good not set)'}",
            }
        )
    rows.append({"step": "4 restore", "what": _restore_line(br, breach_time, restore)})
    if rotate:
        for role in config.postgres_roles:
            rows.append({"step": "5 rotate", "what": f"PostgreSQL role {role.role}"})
        for user in config.mongodb_users:
            rows.append({"step": "5 rotate", "what": f"MongoDB user {user.user}"})
        for secret in config.key_vault_secrets:
            rows.append({"step": "5 rotate", "what": f"Key Vault secret {secret}"})
    rows.append(
        {
            "step": "6 resume",
            "what": "after a second approval: DenyAll removed, displaced rules put back"
            + (f", `{' '.join(config.start_command)}`" if config.start_command else ""),
        }
    )
    text = f"# Security breach response: {br.system} ({br.site.describe()})\n\n"
    if br.record.done:
        text += f"**Resuming**; done already: {', '.join(br.record.done)}.\n\n"
    return text + markdown_table(rows)


def _restore_line(br: Breach, breach_time: str | None, restore: bool) -> str:
    if not restore:
        return "not restored (restore=false)"
    if _pitr(br):
        return f"PointInTimeRestore of {br.site.postgres_server} to {breach_time} into a NEW server"
    return f"the restore runbook: latest backup before {breach_time}"


def _pitr(br: Breach) -> bool:
    return br.az.sites.database == "flexible-server" and bool(br.site.postgres_server)


def resume_plan(br: Breach) -> str:
    rows = [
        {
            "NSG": nsg,
            "remove": ", ".join(deny_all_name(d) for d in DIRECTIONS),
            "put back": ", ".join(
                r["name"]
                for r in (br.record.captured.get("nsg", {}).get(nsg, {}).get("displaced") or [])
            )
            or "-",
        }
        for nsg in br.nsgs
    ]
    start = br.setup.config.start_command
    return (
        f"# Resume {br.system}: lift the isolation\n\n"
        "Approve only once the system is known clean (evidence kept, backups restored, secrets "
        "rotated).\n\n"
        + markdown_table(rows)
        + (f"\nThen run `{' '.join(start)}`.\n" if start else "")
    )


# -- 1. isolate -----------------------------------------------------------------------------------


def isolate(rb: Runbook, br: Breach) -> None:
    """DenyAll at priority 100 in and out of every NSG (recording what was there), stop the
    services, and read the rules back."""
    captured = br.record.captured.setdefault("nsg", {})
    with rb.step("isolate: DenyAll at priority 100", detail=", ".join(br.nsgs) or "no NSGs"):
        for nsg in br.nsgs:
            rules = nsg_read_rules(br.site, nsg)
            if nsg not in captured:
                captured[nsg] = {"before": rules, "displaced": []}
                br.save()
            for direction in DIRECTIONS:
                if deny_all_in_place(rules, direction):
                    continue
                blocker = rule_at_priority(rules, direction)
                if blocker is not None:
                    displaced = captured[nsg]["displaced"]
                    if blocker["name"] not in {r["name"] for r in displaced}:
                        displaced.append(blocker)
                        br.save()  # kept before it is deleted
                    nsg_delete_rule(br.site, nsg, blocker["name"])
                    br.change(
                        f"NSG {nsg}: rule {blocker['name']} (priority 100, {direction}) removed "
                        "to make room for the isolation",
                        f"rule {blocker['name']} of {nsg} is put back when the isolation lifts",
                    )
                nsg_put_rule(br.site, nsg, deny_all_name(direction), deny_all_properties(direction))
                br.change(f"NSG {nsg}: {deny_all_name(direction)} at priority 100")
    stop = br.setup.config.stop_command
    with rb.step("stop services") as step:
        if br.record.is_done("stop services"):
            step.outcome = "done earlier"
        elif stop:
            command_run(
                stop, br.setup.config.command_timeout.total_seconds(), br.setup.config.command_dir
            )
            br.mark("stop services")
            br.change(f"ran {' '.join(stop)}")
        else:
            step.outcome = "no stop command"
    with rb.step("verify isolation"):
        missing = []
        for nsg in br.nsgs:
            rules = nsg_read_rules(br.site, nsg)
            missing += [f"{nsg} {d}" for d in DIRECTIONS if not deny_all_in_place(rules, d)]
        if missing:
            raise VerificationFailed(f"isolation is NOT in place: {', '.join(missing)}")
        br.mark("isolate", {"verified": datetime.now(UTC).isoformat(timespec="seconds")})


# -- 2. evidence ----------------------------------------------------------------------------------


def preserve_evidence(rb: Runbook, br: Breach, launched_by: str, breach_time: str | None) -> None:
    """Archives of the configured paths with a sha256 manifest in the evidence repository,
    and the chain-of-custody record kept apart from them."""
    config, evidence = br.setup.config, br.setup.evidence
    with rb.step("preserve evidence", detail=f"{len(config.evidence_paths)} path(s)") as step:
        if br.record.is_done("evidence"):
            step.outcome = "done earlier"
            return
        if not config.evidence_paths or evidence is None:
            step.outcome = "nothing configured"
            return
        case = br.record.captured.setdefault(
            "case", f"{br.record.started:%Y%m%dT%H%M%SZ}-{(flow_run_id() or 'local')[:8]}"
        )
        br.save()
        result = evidence_preserve(evidence, br.system, case, config.evidence_paths)
        manifest = result["manifest"]
        hashes = {i["archive"]: i["sha256"] for i in manifest["items"] if i["archive"]}
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
        custody = {
            "case": case,
            "system": br.system,
            "launched_by": launched_by,
            "flow_run": flow_run_id(),
            "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
            "breach_time": breach_time,
            "evidence_location": evidence.store.location,
            "immutability": result["immutability"],
            "manifest": f"{manifest['system']}/{case}/manifest.json",
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "items": [
                {
                    "source": i["source"],
                    "archive": i["archive"],
                    "size": i["size"],
                    "sha256": i["sha256"],
                    "files": len(i["files"]),
                    "unreadable": len(i["unreadable"]),
                    "missing": i["missing"],
                }
                for i in manifest["items"]
            ],
        }
        key = evidence_record_custody(br.az.records, br.system, custody)
        br.mark("evidence", {"case": case, "custody": key, "hashes": hashes})
        br.change(
            f"evidence case {case}: {len(hashes)} archive(s) in {evidence.name} "
            f"({result['immutability']}); custody record {key}",
            f"evidence of case {case} is kept in {evidence.name}: release it only when the "
            "investigation allows",
        )


# -- 3. assess ------------------------------------------------------------------------------------


def assess_changes(rb: Runbook, br: Breach, known_good: str | None) -> dict[str, Any] | None:
    """The configuration repository's changes since the last known-good commit."""
    config = br.setup.config
    good = known_good or config.known_good
    with rb.step("assess configuration changes") as step:
        if not config.config_repository:
            step.outcome = "no config_repository"
            return None
        if not good:
            raise ConfigError("name the last known-good commit (known_good)")
        changes = git_config_changes(config.config_repository, good)
        step.detail = (
            f"{len(changes['commits'])} commit(s), {len(changes['uncommitted'])} uncommitted"
        )
        br.mark("assess", {"commits": len(changes["commits"]), "files": len(changes["files"])})
        return changes


# -- 4. restore -----------------------------------------------------------------------------------


def restore_clean(
    rb: Runbook,
    br: Breach,
    breach_time: str | None,
    restore: bool,
    timeout_seconds: int,
    config_path: str | None,
    incident_time: str | None,
) -> list[dict[str, Any]]:
    """The last clean backup before the breach: the restore runbook for each database, or a
    point-in-time restore of the site's flexible server into a new server."""
    with rb.step("restore clean backup") as step:
        done = br.record.result("restore")
        if done is not None:
            step.outcome = "done earlier"
            return list(done)
        if not restore:
            step.outcome = "skipped (restore=false)"
            return []
        assert breach_time is not None
        point = parse_time(breach_time)
        restored: list[dict[str, Any]] = []
        if _pitr(br):
            source = postgres_flexible_read(br.site)
            if source is None:
                raise ConfigError(f"flexible server {br.site.postgres_server} does not exist")
            name = f"{br.site.postgres_server}-clean-{point:%Y%m%d%H%M}"[:63]
            result = postgres_flexible_restore(
                br.site, name, "PointInTimeRestore", source["server"], point, timeout_seconds
            )
            restored.append({"server": name, "point": point.isoformat()})
            br.change(
                f"restored {br.site.postgres_server} as of {point.isoformat()} into {name}",
                f"point the application at {result['server']['fqdn'] or name}; keep "
                f"{br.site.postgres_server} for the investigation",
            )
        else:
            restored = _restore_databases(br, breach_time, config_path, incident_time)
            for item in restored:
                br.record.change(
                    f"restored {item['database']} from backup {item['backup_id']} "
                    f"(consistent point {item['point']})",
                    f"the replaced database is kept as {item['kept'] or '(dropped)'}",
                )
        br.mark("restore", restored)
        return restored


def _restore_databases(
    br: Breach, breach_time: str, config_path: str | None, incident_time: str | None
) -> list[dict[str, Any]]:
    target = br.setup.target
    system = br.az.system
    databases = list(target.databases) if target else list(system.databases)
    if not databases:
        raise ConfigError(f"system {br.system} names no databases to restore")
    out = []
    for database in databases:
        if system.engine == "mongodb":
            from flows.database_failure_mongodb import database_failure_mongodb

            result = database_failure_mongodb(
                system=br.system,
                database=database,
                before=breach_time or "",
                approved=True,
                config_path=config_path or "",
                incident_time=incident_time or "",
            )
        else:
            from flows.database_failure import database_failure

            result = database_failure(
                system=br.system,
                database=database,
                before=breach_time or "",
                approved=True,
                config_path=config_path or "",
                incident_time=incident_time or "",
            )
        out.append(
            {
                "database": database,
                "backup_id": result.get("backup_id"),
                "point": result.get("consistent_point"),
                "kept": result.get("kept_old_database"),
            }
        )
    return out


# -- 5. rotate ------------------------------------------------------------------------------------


def rotate_secrets(rb: Runbook, br: Breach, rotate: bool) -> None:
    """A new password for every configured role and user (kept before the server is told),
    and a new version of every other configured Key Vault secret."""
    config, target = br.setup.config, br.setup.target
    with rb.step("rotate secrets") as step:
        if not rotate:
            step.outcome = "skipped (rotate=false)"
            return
        count = 0
        for role in config.postgres_roles:
            assert target is not None
            account = _Account("postgres", role.role, target.conninfo)
            _rotate(br, account, role.key_vault_secret, role.block)
            count += 1
        for user in config.mongodb_users:
            assert target is not None
            account = _Account("mongodb", user.user, target.conninfo, user.database)
            _rotate(br, account, user.key_vault_secret, user.block)
            count += 1
        for secret in config.key_vault_secrets:
            key = f"rotate secret {secret}"
            if br.record.is_done(key):
                continue
            previous = keyvault_read_secret(br.site, secret)
            version = keyvault_set_secret(br.site, secret, new_password(48))
            br.mark(
                key, {"version": version, "previous_version": previous[1] if previous else None}
            )
            br.change(f"Key Vault secret {secret}: new version {version}")
            count += 1
        step.detail = f"{count} rotated"


@dataclass(frozen=True)
class _Account:
    """A database account whose password is rotated, and how to talk to its server."""

    engine: str
    name: str
    conninfo: Any
    database: str = "admin"

    @property
    def key(self) -> str:
        return f"rotate {self.engine} {self.name}"

    def set_password(self, password: str) -> None:
        if self.engine == "mongodb":
            mongodb_set_password(self.conninfo, self.name, self.database, password)
        else:
            postgres_set_password(self.conninfo, self.name, password)

    def accepts(self, password: str) -> bool:
        if self.engine == "mongodb":
            return bool(mongodb_check_password(self.conninfo, self.name, self.database, password))
        return bool(postgres_check_password(self.conninfo, self.name, password))


def _rotate(br: Breach, account: _Account, vault_secret: str | None, block: str | None) -> None:
    engine, name, key = account.engine, account.name, account.key
    state = dict(br.record.result(key) or {})
    where = f"Key Vault secret {vault_secret}" if vault_secret else f"block {block}"
    if not state.get("stored"):
        # The new password is kept before the server is told, so it cannot be lost.
        if vault_secret:
            current = keyvault_read_secret(br.site, vault_secret)
            br.old_values[key] = current[0] if current else None
            state["previous_version"] = current[1] if current else None
        else:
            assert block is not None
            br.old_values[key] = prefect_block_password(block, engine)
        password = new_password()
        if vault_secret:
            state["version"] = keyvault_set_secret(br.site, vault_secret, password)
        else:
            assert block is not None
            prefect_block_set_password(block, engine, password)
            state["block"] = True
        state["stored"] = True
        br.mark(key, state)
        br.change(f"{engine} {name}: new password kept in {where}")
    else:
        password = _kept_password(br, engine, vault_secret, block, state)
    if not state.get("applied"):
        account.set_password(password)
        state["applied"] = True
        br.mark(key, state)
        br.change(f"{engine} {name}: password changed on the server")
    if block and not state.get("block"):
        prefect_block_set_password(block, engine, password)
        state["block"] = True
        br.mark(key, state)
        br.change(f"{engine} {name}: block {block} holds the new password")


def _kept_password(
    br: Breach, engine: str, vault_secret: str | None, block: str | None, state: dict[str, Any]
) -> str:
    if vault_secret:
        found = keyvault_read_secret(br.site, vault_secret, state["version"])
        if found is None:
            raise ConfigError(f"Key Vault secret {vault_secret} lost version {state['version']}")
        return found[0]
    assert block is not None
    value = prefect_block_password(block, engine)
    if value is None:
        raise ConfigError(f"block {block} holds no password any more")
    return value


# -- 6. resume ------------------------------------------------------------------------------------


def lift_isolation(rb: Runbook, br: Breach) -> None:
    """Check the isolation held, remove the DenyAll rules, put the displaced rules back, start
    the services."""
    captured = br.record.captured.get("nsg", {})
    with rb.step("lift isolation") as step:
        if br.record.is_done("lift"):
            step.outcome = "done earlier"
        else:
            held = []
            for nsg in br.nsgs:
                rules = nsg_read_rules(br.site, nsg)
                held += [f"{nsg} {d}" for d in DIRECTIONS if not deny_all_in_place(rules, d)]
                for direction in DIRECTIONS:
                    nsg_delete_rule(br.site, nsg, deny_all_name(direction))
                    br.change(f"NSG {nsg}: {deny_all_name(direction)} removed")
                names = {r["name"] for r in rules}
                for rule in (captured.get(nsg) or {}).get("displaced") or []:
                    if rule["name"] not in names:
                        nsg_put_rule(br.site, nsg, rule["name"], rule["properties"])
                        br.change(f"NSG {nsg}: rule {rule['name']} put back")
            br.mark("lift", {"isolation_broken_before_approval": held})
    start = br.setup.config.start_command
    with rb.step("start services") as step:
        if br.record.is_done("start services"):
            step.outcome = "done earlier"
        elif start:
            command_run(
                start, br.setup.config.command_timeout.total_seconds(), br.setup.config.command_dir
            )
            br.mark("start services")
            br.change(f"ran {' '.join(start)}")
        else:
            step.outcome = "no start command"


# -- 7. audit -------------------------------------------------------------------------------------


def _row(item: str, ok: bool | None, detail: str = "") -> dict[str, str]:
    outcome = "not checked" if ok is None else "pass" if ok else "FAIL"
    return {"check": item, "result": outcome, "detail": detail}


def audit(rb: Runbook, br: Breach, lifted: bool) -> list[dict[str, str]]:
    """The checklist: isolation held until approval, old passwords refused, new ones
    accepted, evidence hashes verify on download, every block updated."""
    config, record, rows = br.setup.config, br.record, []
    with rb.step("audit") as step:
        isolated = record.result("isolate")
        rows.append(_row("isolation in place (read back)", bool(isolated), str(isolated or "")))
        if lifted:
            broken = (record.result("lift") or {}).get("isolation_broken_before_approval")
            rows.append(
                _row(
                    "isolation held until approval",
                    not broken,
                    "DenyAll missing in " + ", ".join(broken) if broken else "DenyAll in place",
                )
            )
        target = br.setup.target
        for role in config.postgres_roles:
            assert target is not None
            account = _Account("postgres", role.role, target.conninfo)
            rows += _password_rows(br, account, role.key_vault_secret, role.block)
        for user in config.mongodb_users:
            assert target is not None
            account = _Account("mongodb", user.user, target.conninfo, user.database)
            rows += _password_rows(br, account, user.key_vault_secret, user.block)
        for secret in config.key_vault_secrets:
            state = record.result(f"rotate secret {secret}")
            if state is None:
                rows.append(_row(f"Key Vault {secret}: new version", None, "not rotated"))
                continue
            latest = keyvault_read_secret(br.site, secret)
            ok = latest is not None and latest[1] == state["version"]
            rows.append(_row(f"Key Vault {secret}: new version", ok, state["version"]))
        kept = record.result("evidence")
        if kept and br.setup.evidence is not None:
            for row in evidence_verify(br.setup.evidence, kept["hashes"]):
                rows.append(
                    _row(
                        f"evidence {row['archive']}: hash verifies on download",
                        row["ok"],
                        row["detail"],
                    )
                )
        failed = [r for r in rows if r["result"] == "FAIL"]
        step.detail = f"{len(rows) - len(failed)} of {len(rows)} passed"
    return rows


def _password_rows(
    br: Breach, account: _Account, vault_secret: str | None, block: str | None
) -> list[dict[str, str]]:
    engine, name, key = account.engine, account.name, account.key
    state = br.record.result(key)
    if not state or not state.get("applied"):
        return [_row(f"{engine} {name}: rotated", False, "the server was not told")]
    new = _kept_password(br, engine, vault_secret, block, state)
    old = br.old_values.get(key)
    if old is None and vault_secret and state.get("previous_version"):
        found = keyvault_read_secret(br.site, vault_secret, state["previous_version"])
        old = found[0] if found else None
    rows = [_row(f"{engine} {name}: new password accepted", account.accepts(new))]
    if old is None:
        rows.append(_row(f"{engine} {name}: old password refused", None, "old password unknown"))
    else:
        rows.append(_row(f"{engine} {name}: old password refused", not account.accepts(old)))
    if block:
        rows.append(
            _row(
                f"block {block}: holds the new password",
                prefect_block_password(block, engine) == new,
            )
        )
    return rows


def finish(br: Breach) -> str | None:
    """Close the record of a completed response into the history."""
    if br.book is None:
        return None
    return record_finish(br.book, br.record, "completed")


def abandon_if_untouched(br: Breach, exc: BaseException) -> None:
    """A response that ends before changing anything leaves nothing to resume."""
    if isinstance(exc, Exception) and br.book is not None and br.record.untouched:
        record_finish(br.book, br.record, "rejected" if isinstance(exc, Rejected) else "abandoned")


def check_restore_time(br: Breach, breach_time: str | None, restore: bool) -> None:
    """A restore needs the breach time; refused before anything changes (unless an earlier
    run of this response already restored)."""
    if restore and not breach_time and not br.record.is_done("restore"):
        raise BadInput("give breach_time (when the breach began), or restore=false")
