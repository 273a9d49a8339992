"""Runbook: Scenario 3, data corruption (PostgreSQL).

The plan's steps, with the live database untouched until a person approved the repair:

1. Identify the scope: run the integrity checks (dr.yaml's ``integrity:``, the plan's
   check-integrity.sql) on the live database; report which fail and how many rows.
2. Determine the recovery point: ``corruption_time``, or else the earliest timestamp among the
   violating rows of the failing checks that name a timestamp column; show the recovery window.
   A WAL-archived system (``physical: true``) is recovered to just before it; a logical-only
   one to the newest backup before it, and the plan says how much more that loses.
   From here to the end the run holds the database's lock.
3. Restore side by side: a point-in-time recovery into a new cluster beside the live one, or
   the logical backup into a new side database ``<db>__restore_<run>``.
4. Validate the restored copy: the validation queries (validate-data.sql) and every integrity
   check must pass there, or the corruption began earlier than the point.
5. Compare the copy with the live database and show the plan (tables, rows to restore,
   replace, keep); wait for approval unless approved in advance (``dry_run`` stops here).
6. Repair. ``selective``: the missing and changed rows of the affected tables are copied back
   in one transaction, after the live values they replace are exported to the repository, and
   only if the checks pass afterwards. ``swap``: the differences of every table are exported,
   then the recovered database is swapped in by rename, the old one kept as
   ``<db>__pre_restore_<ts>``.
7. Verify: the integrity checks pass on the live database.
8. Report what was lost, what was kept, and the RTO and RPO achieved.

The restored copy is removed however the run ends; one left by a run that died (its cluster
still running) is removed by the next run, under the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from pydantic import Field

from dr_runbooks.config import find_config
from dr_runbooks.errors import BadInput, RestoreVerificationFailed, VerificationFailed
from dr_runbooks.locks import database_lock
from dr_runbooks.postgres.connection import ConnInfo, free_port
from dr_runbooks.postgres.corruption import (
    Check,
    CheckResult,
    Export,
    Integrity,
    RecoveryPoint,
    TableDiff,
    export_key,
    propose_start,
    recovered_conninfo,
)
from dr_runbooks.postgres.pitr import RecoveryTarget
from dr_runbooks.postgres.restore import RestoreOutcome
from dr_runbooks.postgres.server import side_name
from dr_runbooks.repository import parse_time
from dr_runbooks.targets import Target
from dr_runbooks.text import human_duration, markdown_table
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.config import dr_load_target
from tasks.corruption import (
    dr_load_integrity,
    postgres_check_integrity,
    postgres_compare_tables,
    postgres_copy_database,
    postgres_export_changes,
    postgres_keyed_tables,
    postgres_repair_rows,
    postgres_resolve_tables,
    recovery_point_logical,
    recovery_point_pitr,
    workdir_recovery_make,
    workdir_recovery_remove,
    workdir_recovery_remove_stale,
)
from tasks.physical import pitr_restore
from tasks.postgres import (
    postgres_assess,
    postgres_drop_database,
    postgres_drop_leftovers,
    postgres_fetch_backup,
    postgres_restore,
    postgres_swap,
)
from tasks.repository import repository_choose_backup
from tasks.runs import workdir_remove_stale

__all__ = ["data_corruption"]


@flow(name="data-corruption", log_prints=True)
@runbook
def data_corruption(
    system: str = p.SYSTEM,
    database: str = p.DATABASE,
    corruption_time: str = Field(
        "",
        description="When the corruption began (ISO 8601; UTC when no zone is given). Default: "
        "the earliest timestamp among the violating rows of the failing checks that name a "
        "`timestamp_column`.",
    ),
    repair: Literal["selective", "swap"] = Field(
        "selective",
        description="`selective`: copy back only the missing and changed rows of the affected "
        "tables; `swap`: replace the whole database by the recovered copy.",
    ),
    tables: list[str] = Field(
        [],
        description="Tables a selective repair copies back (default: `integrity.tables` in "
        "dr.yaml, else the tables the failing checks name).",
    ),
    new_rows: Literal["keep", "delete"] = Field(
        "keep",
        description="Selective repair: rows of the repaired tables written after the recovery "
        "point are kept (`keep`), or deleted (`delete`; they are in the export either way).",
    ),
    keep_old: bool = Field(
        True, description="Swap: keep the replaced database as `<db>__pre_restore_<ts>`."
    ),
    dry_run: bool = Field(
        False,
        description="Identify, restore side by side, validate, compare and show the plan; the "
        "live database is not changed and the restored copy is removed.",
    ),
    approved: bool = p.APPROVED,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    incident_time: str = Field(
        "",
        description="When the incident happened, for the RPO achieved (ISO 8601); default: "
        "`corruption_time`, else when this run started.",
    ),
    severity: p.Severity = p.severity("High"),
    jobs: int = Field(2, ge=1, le=32, description="Parallel pg_restore jobs."),
    lock_timeout_seconds: int = p.RESTORE_LOCK_TIMEOUT,
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Find corrupted data, recover a copy from just before it began, and repair the live
    database from it (the plan's Scenario 3)."""
    with Runbook(
        "data-corruption",
        system=system,
        config_path=config_path,
        incident_time=incident_time or corruption_time or None,
    ) as rb:
        began = parse_time(corruption_time) if corruption_time else None
        with rb.step("load"):
            target = dr_load_target("postgres", system, None, database or None, None, config_path)
            integrity = dr_load_integrity(target)
        live = target.databases[0]
        with rb.step("assess"):
            status = postgres_assess(target.conninfo, live)
            if not status.reachable:
                raise BadInput(f"the server is not reachable: {status.error}")
            if not status.database_exists:
                raise BadInput(
                    f"database {live} does not exist: that is a database failure (Scenario 1, "
                    "the database-failure runbook), not corruption"
                )
        # 1. Identify the scope.
        with rb.step("identify scope") as step:
            scope = postgres_check_integrity(
                target.conninfo, live, integrity.checks, f"live {live}"
            )
            failing = [r for r in scope if r.failed]
            step.detail = f"{len(failing)} of {len(scope)} checks fail"
        rb.publish(
            f"corruption-{target.system}-{live}-scope",
            f"integrity checks on {live}: {len(failing)} of {len(scope)} fail",
            table=[r.row() for r in scope],
        )
        if not failing and began is None:
            raise BadInput(
                f"every integrity check passes on {live}: no corruption found (give "
                "corruption_time, and tables, to repair anyway)"
            )
        repaired = _tables_to_repair(tables, integrity, failing, repair)
        if repair == "selective":
            repaired = postgres_resolve_tables(target.conninfo, live, repaired)
        # 2. Determine the recovery point.
        with rb.step("recovery point") as step:
            point = _recovery_point(target, live, began, scope)
            step.detail = _point_line(point)
        rb.found_incident(point.began)
        rb.publish(
            f"corruption-{target.system}-{live}-point",
            f"recovery point for {live}: {point.target.isoformat()}",
            markdown=_point_markdown(target, point),
        )
        side = side_name(live, "restore", rb.token)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        with rb.lock([database_lock(target.conninfo, live)], lock_timeout_seconds):
            with rb.step("remove leftovers of runs that died"):
                postgres_drop_leftovers(target.conninfo, live, "restore")
                workdir_remove_stale()
                workdir_recovery_remove_stale()
            copy = _Copy()
            try:
                # 3. Restore side by side.
                with rb.step("restore side by side", detail=point.target.isoformat()):
                    copy = _restore_copy(target, live, point, side, jobs, config_path, copy)
                # 4. Validate the restored copy.
                with rb.step("validate restored copy"):
                    _validate(copy, integrity)
                # 5. Compare, show the plan, wait for approval.
                with rb.step("compare", detail=", ".join(repaired) or "every keyed table"):
                    compared, unkeyed = _compare(
                        target, live, copy, repaired if repair == "selective" else []
                    )
                plan = _plan(target, live, repair, point, scope, compared, unkeyed, new_rows)
                approval = rb.gate(
                    f"corruption-{target.system}-{live}",
                    plan,
                    dry_run,
                    approved,
                    approval_timeout_seconds,
                )
                if approval is None:
                    return {
                        "dry_run": True,
                        "plan": plan,
                        "database": live,
                        "point": point.summary(),
                        "scope": [r.row() for r in scope],
                        "tables": [d.row() for d in compared],
                    }
                # 6. Repair.
                with rb.step(f"repair ({repair})") as step:
                    rb.still_locked()
                    export, kept_old, step.detail = _repair(
                        rb,
                        target,
                        live,
                        copy,
                        how=repair,
                        tables=repaired,
                        approved=compared,
                        checks=integrity.checks,
                        new_rows=new_rows,
                        key=export_key(target.system, live, stamp, rb.token),
                        header=_export_header(target, live, point, repair),
                        side=side,
                        stamp=stamp,
                        keep_old=keep_old,
                        jobs=jobs,
                    )
            finally:
                with rb.step("remove the restored copy"):
                    _remove_copy(target, copy)
        # 7. Verify.
        with rb.step("verify") as step:
            after = postgres_check_integrity(
                target.conninfo, live, integrity.checks, f"live {live}"
            )
            still = [r for r in after if r.failed]
            step.detail = f"{len(after) - len(still)} of {len(after)} checks pass"
        lost, kept = _lost_and_kept(
            repair, live, point, compared, new_rows, export.location, kept_old
        )
        rb.publish(
            f"corruption-{target.system}-{live}-report",
            f"data corruption of {live}: repaired ({repair})",
            markdown=_report(live, repair, point, scope, after, compared, lost, kept),
        )
        if still:
            raise VerificationFailed(
                f"after the repair the check {still[0].name!r} still fails on {live}"
            )
        # 8. Report the RTO and RPO.
        return rb.recovered(
            target,
            point.target,
            key=f"data-corruption-{target.system}-{live}",
            system=target.system,
            database=live,
            repair=repair,
            recovery_point=point.summary(),
            backup_id=point.backup_id,
            scope=[r.row() for r in scope],
            checks_after=[r.row() for r in after],
            tables=[d.row() for d in compared],
            export=export.location,
            export_rows=export.rows,
            kept_old_database=kept_old,
            lost=lost,
            kept=kept,
            approval=approval,
        )


# -- the steps' details -------------------------------------------------------------------------


def _tables_to_repair(
    given: list[str], integrity: Integrity, failing: list[CheckResult], repair: str
) -> list[str]:
    """The run's tables, else dr.yaml's, else those the failing checks name."""
    chosen = list(given) or list(integrity.tables)
    if not chosen:
        chosen = list(dict.fromkeys(r.table for r in failing if r.table))
    if repair == "selective" and not chosen:
        raise BadInput(
            "no table to repair: the failing checks name none (give tables, set integrity.tables "
            "in dr.yaml, or repair=swap)"
        )
    return chosen


def _recovery_point(
    target: Target, live: str, began: datetime | None, scope: list[CheckResult]
) -> RecoveryPoint:
    proposed = began is None
    moment = began or propose_start(scope)
    if moment is None:
        raise BadInput(
            "when did the corruption begin? No failing check names a timestamp column: give "
            "corruption_time"
        )
    if target.physical:
        return recovery_point_pitr(target.primary, target.system, moment, proposed)
    return recovery_point_logical(target.primary, target.system, live, moment, proposed)


@dataclass
class _Copy:
    """The restored copy: how to reach it, and what to remove afterwards."""

    conninfo: ConnInfo | None = None
    database: str = ""
    workdir: str | None = None
    side: RestoreOutcome | None = None
    swapped: bool = False

    @property
    def server(self) -> ConnInfo:
        assert self.conninfo is not None, "the copy is not restored yet"
        return self.conninfo


def _restore_copy(
    target: Target,
    live: str,
    point: RecoveryPoint,
    side: str,
    jobs: int,
    config_path: str,
    copy: _Copy,
) -> _Copy:
    """A point-in-time recovery into a new cluster, or the logical backup into ``side``.
    ``copy`` is filled in as the work goes, so a failure half-way still removes it."""
    source = target.primary
    if point.method == "pitr":
        copy.workdir = workdir_recovery_make()
        pgdata = Path(copy.workdir) / "pgdata"
        port = free_port()
        found = Path(config_path) if config_path else find_config()
        pitr_restore(
            source,
            target.system,
            RecoveryTarget("time", time=point.target),
            str(pgdata),
            port,
            [source.name] if target.declared else [source.store.location],
            str(found.absolute()) if found else None,
        )
        copy.conninfo = recovered_conninfo(target.conninfo, pgdata, port, live)
        copy.database = live
        return copy
    backup = repository_choose_backup(
        source, "postgres", target.system, live, backup_id=point.backup_id
    )
    fetched = postgres_fetch_backup(source, backup)
    try:
        copy.side = postgres_restore(target.conninfo, fetched, side, jobs=jobs)
    finally:
        fetched.cleanup()
    copy.conninfo, copy.database = target.conninfo, side
    return copy


def _validate(copy: _Copy, integrity: Integrity) -> None:
    results = postgres_check_integrity(
        copy.server,
        copy.database,
        integrity.validation + integrity.checks,
        "restored copy",
    )
    failed = [r for r in results if r.failed]
    if failed:
        first = failed[0]
        found = first.error or f"returns {first.rows} row(s)"
        raise RestoreVerificationFailed(
            f"the restored copy fails {first.name!r} ({found}): the corruption began before "
            "the recovery point? Give an earlier corruption_time"
        )


def _compare(
    target: Target, live: str, copy: _Copy, repaired: list[str]
) -> tuple[list[TableDiff], list[str]]:
    """The tables a selective repair copies back, or every table with a primary key (a swap's
    export); the tables without one are only named."""
    unkeyed: list[str] = []
    names = repaired
    if not names:
        names, unkeyed = postgres_keyed_tables(target.conninfo, live)
    diffs = postgres_compare_tables(target.conninfo, live, copy.server, copy.database, names)
    return diffs, unkeyed


def _repair(
    rb: Runbook,
    target: Target,
    live: str,
    copy: _Copy,
    *,
    how: str,
    tables: list[str],
    approved: list[TableDiff],
    checks: list[Check],
    new_rows: str,
    key: str,
    header: list[str],
    side: str,
    stamp: str,
    keep_old: bool,
    jobs: int,
) -> tuple[Export, str | None, str]:
    """Selective: the rows back in one transaction (export first); swap: the export, then the
    copy renamed into place. Returns the export, the kept old database, and what was done."""
    if how == "selective":
        done = postgres_repair_rows(
            target.conninfo,
            live,
            copy.server,
            copy.database,
            tables,
            approved,
            checks,
            target.primary,
            key,
            header,
            delete_added=new_rows == "delete",
        )
        return (
            done.export,
            None,
            f"{done.restored} restored, {done.replaced} replaced, {done.deleted} deleted; "
            f"export {done.export.location}",
        )
    export = postgres_export_changes(
        target.conninfo,
        live,
        copy.server,
        copy.database,
        [d.table for d in approved],
        target.primary,
        key,
        header,
    )
    kept_old = _swap(rb, target, live, copy, side, stamp, keep_old, jobs)
    return export, kept_old, f"swapped in; old kept as {kept_old}; export {export.location}"


def _swap(
    rb: Runbook,
    target: Target,
    live: str,
    copy: _Copy,
    side: str,
    stamp: str,
    keep_old: bool,
    jobs: int,
) -> str | None:
    """The recovered database into ``side`` on the live server (a recovered cluster's is
    copied there first), checked, then renamed into place."""
    if copy.side is None:
        assert copy.workdir is not None
        copy.side = postgres_copy_database(
            copy.server, live, target.conninfo, side, copy.workdir, jobs
        )
    rb.still_locked()
    kept = postgres_swap(target.conninfo, live, copy.side, stamp, keep_old=keep_old)
    copy.swapped = True
    return kept


def _remove_copy(target: Target, copy: _Copy) -> None:
    """Remove what the run restored (a failure here is logged by the task and must not hide
    the run's own outcome; the next run removes what is left)."""
    if copy.workdir is not None:
        workdir_recovery_remove(copy.workdir, return_state=True)
    if copy.side is not None and not copy.swapped:
        postgres_drop_database(target.conninfo, copy.side.database, return_state=True)


# -- what people read ---------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S.%f} UTC" if moment else "unknown"


def _point_line(point: RecoveryPoint) -> str:
    how = "proposed from the checks" if point.proposed else "given"
    if point.method == "pitr":
        return f"began {_when(point.began)} ({how}); point-in-time recovery to just before it"
    return (
        f"began {_when(point.began)} ({how}); logical backup {point.backup_id} of "
        f"{_when(point.target)}, {human_duration(point.more_lost)} earlier"
    )


def _point_markdown(target: Target, point: RecoveryPoint) -> str:
    how = (
        "proposed: the earliest timestamp among the violating rows"
        if point.proposed
        else "given by the operator"
    )
    if point.method == "pitr":
        window = "point-in-time recovery (base backups and archived WAL)"
        copy = f"recovered to **{_when(point.target)}**, just before the corruption"
    else:
        window = "logical backups only (no WAL archive): recovery to a backup's moment"
        copy = (
            f"backup **{point.backup_id}** of {_when(point.target)}: everything written in the "
            f"**{human_duration(point.more_lost)}** before the corruption began is not in it"
        )
    return (
        f"# Recovery point: {target.system}\n\n"
        f"**The corruption began** {_when(point.began)} ({how}).\n\n"
        f"**Recovery window**: {window}, from {_when(point.earliest)} to "
        f"{_when(point.latest)}.\n\n"
        f"**The copy**: {copy}.\n"
    )


def _plan(
    target: Target,
    live: str,
    repair: str,
    point: RecoveryPoint,
    scope: list[CheckResult],
    compared: list[TableDiff],
    unkeyed: list[str],
    new_rows: str,
) -> str:
    """What the approver needs: what is wrong, the point, and every row the repair touches."""
    failing = [r.row() for r in scope if r.failed]
    restore = sum(d.missing for d in compared)
    replace = sum(d.changed for d in compared)
    added = sum(d.added for d in compared)
    if repair == "selective":
        what = (
            f"**Selective repair** of {', '.join(d.table for d in compared)} in one "
            f"transaction (writers wait meanwhile): **{restore} row(s) restored**, "
            f"**{replace} replaced** by their recovered values; the {added} row(s) written "
            "since the point are "
            + ("**deleted**" if new_rows == "delete" else "kept")
            + ". Every other table is untouched. The live values replaced are exported first; "
            "if a check still fails afterwards, nothing is changed."
        )
    else:
        what = (
            f"**Swap**: {live} is replaced by the recovered copy (renamed; the old one is kept "
            f"unless keep_old is off). **Lost from {live}**: everything written after "
            f"{_when(point.target)}: {restore} row(s) deleted since come back, {replace} "
            f"changed since revert, {added} written since go. The differences are exported "
            "first."
            + (
                f" Tables without a primary key (not exported): {', '.join(unkeyed)}."
                if unkeyed
                else ""
            )
        )
    return (
        f"# Data corruption repair: {target.system} / {live}\n\n"
        "## Scope (failing checks)\n\n"
        + markdown_table(failing)
        + f"\n## Recovery point\n\n{_point_line(point)}\n\n"
        f"## Repair\n\n{what}\n\n"
        + markdown_table([d.row() for d in compared])
        + f"\nThe export goes to repository **{target.primary.name}** under "
        f"`corruption/{target.system}/{live}/`.\n"
    )


def _export_header(target: Target, live: str, point: RecoveryPoint, repair: str) -> list[str]:
    return [
        f"dr-runbooks data-corruption: {target.system} / {live}, repair {repair}",
        f"the corruption began {_when(point.began)}; the recovered copy holds "
        f"{_when(point.target)}",
        "these are the live rows that differed from the recovered copy before the repair",
    ]


def _lost_and_kept(
    repair: str,
    live: str,
    point: RecoveryPoint,
    compared: list[TableDiff],
    new_rows: str,
    export: str,
    kept_old: str | None,
) -> tuple[list[str], list[str]]:
    restore = sum(d.missing for d in compared)
    replace = sum(d.changed for d in compared)
    added = sum(d.added for d in compared)
    tables = ", ".join(d.table for d in compared)
    if repair == "selective":
        lost = [
            f"{replace} row(s) of {tables} changed after {_when(point.target)} reverted to their "
            f"recovered values (live values in {export})"
        ]
        if new_rows == "delete":
            lost.append(f"{added} row(s) written since deleted (in {export})")
        kept = [
            f"{restore} row(s) deleted by the corruption restored",
            f"every other table of {live} as it was",
        ]
        if new_rows == "keep":
            kept.append(f"{added} row(s) of {tables} written since the point")
        return lost, kept
    lost = [
        f"everything written to {live} after {_when(point.target)}: {replace} changed and "
        f"{added} added row(s) (exported to {export})"
    ]
    kept = [f"the replaced database, as {kept_old}" if kept_old else "the old database: dropped"]
    if point.method == "logical":
        lost.append(
            f"also the {human_duration(point.more_lost)} before the corruption began (logical "
            "backups only)"
        )
    return lost, kept


def _report(
    live: str,
    repair: str,
    point: RecoveryPoint,
    before: list[CheckResult],
    after: list[CheckResult],
    compared: list[TableDiff],
    lost: list[str],
    kept: list[str],
) -> str:
    checks = [
        {**b.row(), "after": a.row()["outcome"], "rows after": a.row()["violating rows"]}
        for b, a in zip(before, after, strict=True)
    ]
    return (
        f"# Data corruption of {live}: repaired ({repair})\n\n"
        f"{_point_line(point)}\n\n## Checks, before and after\n\n"
        + markdown_table(checks)
        + "\n## Tables\n\n"
        + markdown_table([d.row() for d in compared])
        + "\n## Lost\n\n"
        + "".join(f"- {line}\n" for line in lost)
        + "\n## Kept\n\n"
        + "".join(f"- {line}\n" for line in kept)
    )
