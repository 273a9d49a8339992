"""Data corruption (the plan's Scenario 3): which integrity checks fail, when the corruption
began, and a repair from a copy of the database recovered to just before it.

- :func:`load_integrity` reads a system's checks: dr.yaml's ``integrity:``, and the plan's
  ``check-integrity.sql`` and ``validate-data.sql``, whose comment lines ``-- name:``,
  ``-- table:`` and ``-- timestamp:`` just above a query describe it.
- :func:`run_checks` runs each check (a query that returns the rows breaking a rule) in a
  read-only transaction and counts its rows; a check that names a timestamp column also gives
  the earliest, and :func:`propose_start` the earliest of those: when the corruption began.
- :func:`pitr_point` and :func:`logical_point` turn that moment into what the copy is recovered
  to (just before it, or the newest logical backup before it), inside the recovery window, or
  refuse naming the window.
- :func:`compare_tables` compares tables of the live database with the recovered copy by
  primary key: rows the copy has that the live database lost (*missing*), rows both have that
  differ (*changed*), rows written since (*added*).
- :func:`repair_rows` puts the missing and changed rows back in one transaction that keeps
  writers out of the tables, after writing what it replaces to the repository
  (:func:`export_changes` does that alone, before a whole-database swap), and only if the
  checks pass afterwards; otherwise nothing is changed.
- :func:`copy_database` copies the recovered database from a recovered cluster into a new
  side database of the live server, for the swap.
- :func:`recovery_workdir` makes the directory a recovered cluster lives in (its owner
  recorded); :func:`remove_recovery` stops and removes it, and :func:`remove_stale_recoveries`
  those that runs which died left behind.

The recovered copy is reached through a connection of its own (a side database on the live
server, or a cluster recovered beside it): rows travel with ``COPY`` into a temporary table of
the live session, where comparing and repairing are plain SQL. Rows are told apart by their
text form (``ROW(...)::text``), which every type has; a repair never deletes a live row the
copy does not know unless asked (``delete_added``).

The export is SQL for ``psql``: upserts of the live values of each changed and added row
(the recovered values in a comment above each), and deletes of the rows restored. It ends with
``ROLLBACK``: a person keeps the statements worth replaying and changes it to ``COMMIT``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

import psycopg
from psycopg import sql

from dr_runbooks import crypto
from dr_runbooks.config import Config, IntegrityConfig
from dr_runbooks.errors import (
    BackupNotFound,
    BadInput,
    ConcurrentChange,
    ConfigError,
    OperationFailed,
    RestoreFailed,
    VerificationFailed,
)
from dr_runbooks.postgres.cluster import stop_cluster
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.dump import DumpStream
from dr_runbooks.postgres.pitr import RecoveryWindow
from dr_runbooks.postgres.restore import (
    RestoreOutcome,
    finish_database,
    pg_restore,
    prepare_database,
)
from dr_runbooks.postgres.server import database_exists, database_oid, drop_database
from dr_runbooks.postgres.snapshot import TABLES_QUERY, exported_snapshot
from dr_runbooks.processes import OWNER_FILE, alive_since, owned_workdir
from dr_runbooks.repository import Backup, Repository
from dr_runbooks.text import first_line

__all__ = [
    "EXPORT_PREFIX",
    "WORKDIR_PREFIX",
    "Check",
    "CheckResult",
    "Export",
    "Integrity",
    "RecoveryPoint",
    "RepairOutcome",
    "TableDiff",
    "compare_tables",
    "copy_database",
    "export_changes",
    "export_key",
    "keyed_tables",
    "load_integrity",
    "logical_point",
    "parse_checks",
    "pitr_point",
    "propose_start",
    "recovered_conninfo",
    "recovery_workdir",
    "remove_recovery",
    "remove_stale_recoveries",
    "repair_rows",
    "resolve_tables",
    "run_checks",
]

#: Work directories holding a cluster recovered beside the live one.
WORKDIR_PREFIX = "dr-corruption-"
#: Where exports of live changes go in a repository.
EXPORT_PREFIX = "corruption/"
#: Rows fetched at a time from the server while writing an export.
_BATCH = 2000


# -- the checks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A query returning the rows that break a rule: none, and the rule holds."""

    name: str
    sql: str
    table: str | None = None
    timestamp_column: str | None = None


@dataclass(frozen=True)
class Integrity:
    """A system's integrity checks, the queries validating a restored copy, and the tables
    selective repair copies back when the run names none."""

    checks: list[Check]
    validation: list[Check]
    tables: list[str] = field(default_factory=list)


_STATEMENT_END = re.compile(r";[ \t]*(?:--[^\n]*)?$", re.MULTILINE)
_DESCRIBED = re.compile(r"^--\s*(name|table|timestamp)\s*:\s*(\S.*?)\s*$")


def parse_checks(text: str, prefix: str = "check") -> list[Check]:
    """The queries of a SQL file (each ends with ``;`` at the end of a line), described by the
    ``-- name:``, ``-- table:`` and ``-- timestamp:`` lines among the comments above each;
    a query without a name is ``<prefix> <n>``."""
    checks: list[Check] = []
    start = 0
    chunks = []
    for match in _STATEMENT_END.finditer(text):
        chunks.append(text[start : match.start()])
        start = match.end()
    chunks.append(text[start:])
    for chunk in chunks:
        described: dict[str, str] = {}
        body: list[str] = []
        for line in chunk.splitlines():
            stripped = line.strip()
            if stripped.startswith("--"):
                found = _DESCRIBED.match(stripped)
                if found and not body:
                    described[found.group(1)] = found.group(2)
                continue
            if stripped:
                body.append(line)
        if not body:
            continue
        checks.append(
            Check(
                name=described.get("name", f"{prefix} {len(checks) + 1}"),
                sql="\n".join(body).strip(),
                table=described.get("table"),
                timestamp_column=described.get("timestamp"),
            )
        )
    return checks


def _read(config: Config, path: str, what: str) -> str:
    file = config.resolve_path(path)
    try:
        return file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {file}: {exc.strerror or exc}") from None


def load_integrity(config: Config, system: str, integrity: IntegrityConfig | None) -> Integrity:
    """The checks dr.yaml declares for ``system`` (inline first, then its checks file)."""
    if integrity is None:
        raise ConfigError(
            f"system {system!r} declares no integrity checks (integrity: in dr.yaml; see "
            "docs/data-corruption.md)"
        )
    checks = [
        Check(c.name, c.sql.strip().rstrip(";"), c.table, c.timestamp_column)
        for c in integrity.checks
    ]
    if integrity.checks_file:
        checks += parse_checks(_read(config, integrity.checks_file, "checks_file"), "check")
    validation = [
        Check(f"validation {n}", query.strip().rstrip(";"))
        for n, query in enumerate(integrity.validation, 1)
    ]
    if integrity.validation_file:
        validation += parse_checks(
            _read(config, integrity.validation_file, "validation_file"), "validation"
        )
    names = [c.name for c in checks + validation]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"system {system!r}: two integrity queries are called {repeated[0]!r}")
    if not checks:
        raise ConfigError(f"system {system!r}: the integrity checks file holds no query")
    return Integrity(checks, validation, list(integrity.tables))


@dataclass(frozen=True)
class CheckResult:
    """What one check found: how many rows break the rule (None: the query failed), and the
    earliest timestamp among them when the check names its timestamp column."""

    name: str
    rows: int | None
    table: str | None = None
    earliest: datetime | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.rows != 0

    def row(self) -> dict[str, Any]:
        """For a report table."""
        return {
            "check": self.name,
            "outcome": "ERROR" if self.error else "FAIL" if self.failed else "pass",
            "violating rows": "" if self.rows is None else self.rows,
            "table": self.table or "",
            "earliest": f"{self.earliest:%Y-%m-%d %H:%M:%S.%f} UTC" if self.earliest else "",
            "detail": self.error or "",
        }


@contextmanager
def _session(
    conninfo: ConnInfo, database: str, read_only: bool
) -> Iterator[psycopg.Connection[Any]]:
    """A transaction that is always rolled back unless the caller commits, with the settings
    that make values read the same in every session (UTC, ISO dates)."""
    with conninfo.connect(dbname=database, autocommit=False) as conn:
        try:
            if read_only:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute("SET LOCAL TimeZone = 'UTC'")
            conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
            conn.execute("SET LOCAL IntervalStyle = 'postgres'")
            conn.execute("SET LOCAL extra_float_digits = 3")
            yield conn
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()


def _run_checks_in(conn: psycopg.Connection[Any], checks: Sequence[Check]) -> list[CheckResult]:
    results = []
    for check in checks:
        earliest = (
            sql.SQL(", min(violating.{})::timestamptz").format(
                sql.Identifier(check.timestamp_column)
            )
            if check.timestamp_column
            else sql.SQL(", NULL::timestamptz")
        )
        query = sql.SQL("SELECT count(*){} FROM ({}\n) AS violating").format(
            earliest,
            sql.SQL(check.sql.strip().rstrip(";")),  # type: ignore[arg-type]
        )
        conn.execute("SAVEPOINT dr_check")
        try:
            row = conn.execute(query).fetchone()
        except psycopg.Error as exc:
            conn.execute("ROLLBACK TO SAVEPOINT dr_check")
            results.append(CheckResult(check.name, None, check.table, error=first_line(exc)))
            continue
        conn.execute("RELEASE SAVEPOINT dr_check")
        assert row is not None
        when = row[1].astimezone(UTC) if row[1] is not None else None
        results.append(CheckResult(check.name, int(row[0]), check.table, when))
    return results


def run_checks(conninfo: ConnInfo, database: str, checks: Sequence[Check]) -> list[CheckResult]:
    """Run each check in one read-only transaction (a check cannot change anything); a check
    whose query fails is reported with its error, and the others still run."""
    with _session(conninfo, database, read_only=True) as conn:
        return _run_checks_in(conn, checks)


def propose_start(results: Sequence[CheckResult]) -> datetime | None:
    """When the corruption began, as far as the checks tell: the earliest timestamp among the
    violating rows of the failing checks that name a timestamp column."""
    times = [r.earliest for r in results if r.failed and r.earliest is not None]
    return min(times) if times else None


# -- the recovery point ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryPoint:
    """Where the copy is recovered to, for a corruption that began at ``began``."""

    began: datetime
    proposed: bool
    method: Literal["pitr", "logical"]
    #: What the copy holds: everything committed up to this moment.
    target: datetime
    earliest: datetime | None
    latest: datetime | None
    backup_id: str | None = None

    @property
    def more_lost(self) -> timedelta:
        """What the copy lacks before the corruption began (a logical backup's age then)."""
        return self.began - self.target

    def summary(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "began": iso(self.began),
            "proposed": self.proposed,
            "method": self.method,
            "target": iso(self.target),
            "window_earliest": iso(self.earliest),
            "window_latest": iso(self.latest),
            "backup_id": self.backup_id,
            "more_lost_seconds": round(self.more_lost.total_seconds(), 6),
        }


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S.%f} UTC" if value else "unknown"


def pitr_point(began: datetime, proposed: bool, window: RecoveryWindow) -> RecoveryPoint:
    """Just before ``began`` (one microsecond: a commit at that very moment is left out),
    which must lie in the window from the oldest base backup to the last archived commit."""
    target = began - timedelta(microseconds=1)
    span = f"{_when(window.earliest)} to {_when(window.latest)}"
    if window.earliest is None or window.latest is None:
        raise BackupNotFound(
            f"{window.system} has no recovery window yet (base backups: {window.base_backups}; "
            f"newest WAL: {window.newest_wal or 'none'})"
        )
    if target < window.earliest:
        raise BadInput(
            f"the corruption began at {_when(began)}, before the recovery window of "
            f"{window.system} ({span}): nothing older than the oldest base backup is recoverable"
        )
    if target > window.latest:
        raise BadInput(
            f"the corruption began at {_when(began)}, after the recovery window of "
            f"{window.system} ({span}): the WAL since the last archived commit is not archived "
            "yet (wait for archive_timeout, or run SELECT pg_switch_wal() on the server)"
        )
    return RecoveryPoint(began, proposed, "pitr", target, window.earliest, window.latest)


def logical_point(
    began: datetime, proposed: bool, backups: Sequence[Backup], now: datetime | None = None
) -> RecoveryPoint:
    """The newest complete logical backup whose consistent point is before ``began``."""
    moment = now or datetime.now(UTC)
    good = sorted(
        (b for b in backups if not b.damaged and not b.skewed(moment)),
        key=lambda b: b.consistent_point,
    )
    if not good:
        raise BackupNotFound("there is no complete logical backup to recover from")
    earliest, latest = good[0].consistent_point, good[-1].consistent_point
    span = f"{_when(earliest)} to {_when(latest)}"
    if began > moment:
        raise BadInput(f"the corruption began at {_when(began)}, which is in the future")
    before = [b for b in good if b.consistent_point < began]
    if not before:
        raise BadInput(
            f"the corruption began at {_when(began)}, before the oldest logical backup "
            f"(backups span {span}): no copy from before it exists"
        )
    chosen = before[-1]
    return RecoveryPoint(
        began, proposed, "logical", chosen.consistent_point, earliest, latest, chosen.id
    )


# -- tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A table as one database has it: its primary key and the columns a row can be written
    with (no generated ones), in the table's order."""

    schema: str
    name: str
    oid: int
    key: list[str]
    columns: list[str]

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


def _table(conn: psycopg.Connection[Any], name: str, where: str) -> _Table:
    row = conn.execute(
        "SELECT n.nspname, c.relname, c.oid FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')",
        (name,),
    ).fetchone()
    if row is None:
        raise BadInput(f"table {name} does not exist in {where}")
    schema, table, oid = str(row[0]), str(row[1]), int(row[2])
    key = [
        str(r[0])
        for r in conn.execute(
            "SELECT a.attname FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.n",
            (oid,),
        )
    ]
    columns = [
        str(r[0])
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (oid,),
        )
    ]
    return _Table(schema, table, oid, key, columns)


def resolve_tables(conninfo: ConnInfo, database: str, names: Sequence[str]) -> list[str]:
    """``schema.table`` of each table a selective repair is to copy back; a table that does
    not exist, or has no primary key to match rows by, is bad input."""
    with _session(conninfo, database, read_only=True) as conn:
        labels = []
        for name in names:
            table = _table(conn, name, database)
            if not table.key:
                raise BadInput(
                    f"table {table.label} has no primary key: selective repair matches rows by "
                    "it (repair it with a swap instead)"
                )
            labels.append(table.label)
        return list(dict.fromkeys(labels))


def keyed_tables(conninfo: ConnInfo, database: str) -> tuple[list[str], list[str]]:
    """The database's tables with a primary key, and those without (``schema.table``);
    partitioned tables are left out (their partitions are listed)."""
    with _session(conninfo, database, read_only=True) as conn:
        keyed: list[str] = []
        plain: list[str] = []
        for schema, name, partitioned in conn.execute(TABLES_QUERY):
            if partitioned:
                continue
            label = f"{schema}.{name}"
            table = _table(conn, sql.Identifier(schema, name).as_string(conn), database)
            (keyed if table.key else plain).append(label)
        return keyed, plain


@dataclass(frozen=True)
class TableDiff:
    """One table, live against the recovered copy, by primary key."""

    table: str
    key: list[str]
    #: Rows the copy has and the live table lost: a repair puts them back.
    missing: int
    #: Rows both have, with different values: a repair puts back the copy's.
    changed: int
    #: Rows only the live table has (written after the recovery point): kept, unless asked.
    added: int
    live_rows: int
    recovered_rows: int

    def row(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": ", ".join(self.key),
            "rows live": self.live_rows,
            "rows recovered": self.recovered_rows,
            "missing (to restore)": self.missing,
            "changed (to replace)": self.changed,
            "added since": self.added,
        }


class _Staged:
    """One table's recovered rows in a temporary table of the live session."""

    def __init__(self, live: _Table, recovered: _Table, temp: str) -> None:
        if sorted(live.key) != sorted(recovered.key):
            raise BadInput(
                f"{live.label}: its primary key differs between the live database "
                f"({', '.join(live.key) or 'none'}) and the recovered copy "
                f"({', '.join(recovered.key) or 'none'})"
            )
        self.live = live
        self.columns = [c for c in live.columns if c in recovered.columns]
        self.dropped = [c for c in live.columns if c not in recovered.columns]
        self.temp = sql.Identifier(temp)
        self.diff: TableDiff | None = None

    def cols(self, alias: str | None = None, only: Sequence[str] | None = None) -> sql.Composed:
        names = self.columns if only is None else list(only)
        if alias is None:
            return sql.SQL(", ").join(sql.Identifier(c) for c in names)
        return sql.SQL(", ").join(sql.Identifier(alias, c) for c in names)

    @property
    def keys_match(self) -> sql.Composed:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("l", k), sql.Identifier("r", k))
            for k in self.live.key
        )

    @property
    def differ(self) -> sql.Composed:
        return sql.SQL("ROW({})::text IS DISTINCT FROM ROW({})::text").format(
            self.cols("l"), self.cols("r")
        )

    @property
    def values(self) -> sql.Composed:
        """A live row as a VALUES tuple of SQL literals, built by the server."""
        return self.literals("l", self.columns)

    def literals(self, alias: str, names: Sequence[str]) -> sql.Composed:
        return sql.SQL("'(' || array_to_string(ARRAY[{}], ', ') || ')'").format(
            sql.SQL(", ").join(
                sql.SQL("quote_nullable({})").format(sql.Identifier(alias, c)) for c in names
            )
        )


class _Comparison:
    """The live database and the recovered copy side by side: each table's recovered rows
    copied into a temporary table of the live transaction, compared there."""

    def __init__(self, live: psycopg.Connection[Any], recovered: psycopg.Connection[Any]) -> None:
        self.live = live
        self.recovered = recovered
        self.staged: list[_Staged] = []

    def stage(self, names: Sequence[str], where: tuple[str, str]) -> list[_Staged]:
        tables = [_table(self.live, name, where[0]) for name in dict.fromkeys(names)]
        for table in tables:
            if not table.key:
                raise BadInput(
                    f"table {table.label} has no primary key: selective repair matches rows by "
                    "it (repair it with a swap instead)"
                )
        for n, table in enumerate(_dependency_order(self.live, tables)):
            copy = _table(self.recovered, table.ident.as_string(self.live), where[1])
            staged = _Staged(table, copy, f"_dr_recovered_{n}")
            self.live.execute(
                sql.SQL(
                    "CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
                ).format(staged.temp, staged.cols(), table.ident)
            )
            out = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(staged.cols(), table.ident)
            into = sql.SQL("COPY {} ({}) FROM STDIN").format(staged.temp, staged.cols())
            with (
                self.recovered.cursor() as source,
                self.live.cursor() as sink,
                source.copy(out) as reading,
                sink.copy(into) as writing,
            ):
                for chunk in reading:
                    writing.write(chunk)
            self.live.execute(sql.SQL("ANALYZE {}").format(staged.temp))
            staged.diff = self._count(staged)
            self.staged.append(staged)
        return self.staged

    def _count(self, staged: _Staged) -> TableDiff:
        table, temp = staged.live.ident, staged.temp
        row = self.live.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM {temp} r WHERE NOT EXISTS "
                "(SELECT 1 FROM {table} l WHERE {match})), "
                "(SELECT count(*) FROM {temp} r JOIN {table} l ON {match} WHERE {differ}), "
                "(SELECT count(*) FROM {table} l WHERE NOT EXISTS "
                "(SELECT 1 FROM {temp} r WHERE {match})), "
                "(SELECT count(*) FROM {table}), (SELECT count(*) FROM {temp})"
            ).format(temp=temp, table=table, match=staged.keys_match, differ=staged.differ)
        ).fetchone()
        assert row is not None
        return TableDiff(
            staged.live.label,
            staged.live.key,
            missing=int(row[0]),
            changed=int(row[1]),
            added=int(row[2]),
            live_rows=int(row[3]),
            recovered_rows=int(row[4]),
        )


def _dependency_order(conn: psycopg.Connection[Any], tables: list[_Table]) -> list[_Table]:
    """Referenced tables before the tables that reference them (a restored row's parent must
    be back first); a cycle keeps the given order."""
    oids = [t.oid for t in tables]
    parents: dict[int, set[int]] = {oid: set() for oid in oids}
    for child, parent in conn.execute(
        "SELECT conrelid, confrelid FROM pg_constraint WHERE contype = 'f' "
        "AND conrelid = ANY(%s) AND confrelid = ANY(%s) AND conrelid <> confrelid",
        (oids, oids),
    ):
        parents[int(child)].add(int(parent))
    ordered: list[_Table] = []
    remaining = list(tables)
    while remaining:
        done = {t.oid for t in ordered}
        ready = [t for t in remaining if parents[t.oid] <= done] or remaining[:1]
        ordered.append(ready[0])
        remaining.remove(ready[0])
    return ordered


@contextmanager
def _compared(
    live: ConnInfo,
    database: str,
    recovered: ConnInfo,
    recovered_database: str,
    tables: Sequence[str],
) -> Iterator[_Comparison]:
    where = (f"the live database {database}", f"the recovered copy {recovered_database}")
    try:
        with (
            _session(live, database, read_only=False) as live_conn,
            _session(recovered, recovered_database, read_only=True) as copy_conn,
        ):
            comparison = _Comparison(live_conn, copy_conn)
            comparison.stage(tables, where)
            yield comparison
    except psycopg.Error as exc:
        raise OperationFailed(
            f"comparing {database} with the recovered copy: {first_line(exc)}"
        ) from None


def compare_tables(
    live: ConnInfo,
    database: str,
    recovered: ConnInfo,
    recovered_database: str,
    tables: Sequence[str],
) -> list[TableDiff]:
    """Each table of the live database against the recovered copy, by primary key; nothing
    is changed (the temporary tables go with the rolled-back transaction)."""
    with _compared(live, database, recovered, recovered_database, tables) as comparison:
        return [s.diff for s in comparison.staged if s.diff is not None]


# -- the export -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """What changed in the live database after the recovery point, kept in the repository."""

    repository: str
    key: str
    rows: int
    encrypted: bool

    @property
    def location(self) -> str:
        return f"{self.repository}/{self.key}"


def export_key(system: str, database: str, stamp: str, token: str) -> str:
    """``corruption/<system>/<database>/<stamp>-<token>/live-changes.sql``."""
    for part in (system, database):
        if not part or "/" in part or part in (".", ".."):
            raise BadInput(f"invalid name in an export path: {part!r}")
    return f"{EXPORT_PREFIX}{system}/{database}/{stamp}-{token}/live-changes.sql"


def _write_export(comparison: _Comparison, out: IO[str], header: Sequence[str]) -> int:
    """Write the SQL that replays the live rows a repair replaces; return the rows written."""
    conn = comparison.live
    rows = 0
    out.write("".join(f"-- {line}\n" for line in header))
    out.write(
        "-- Review before replaying: keep the statements to replay, then change the ROLLBACK\n"
        "-- at the end to COMMIT and run: psql -v ON_ERROR_STOP=1 -f THIS_FILE\n\nBEGIN;\n"
    )
    # Upserts parents first, deletes children first: the order a replay needs.
    work = [(s, kind) for s in comparison.staged for kind in ("changed", "added")]
    work += [(s, "deleted") for s in reversed(comparison.staged)]
    for staged, kind in work:
        diff = staged.diff
        assert diff is not None
        count = {"changed": diff.changed, "added": diff.added, "deleted": diff.missing}[kind]
        if not count:
            continue
        out.write(f"\n-- {diff.table}: {count} {_SECTIONS[kind]}\n")
        composed = _QUERIES[kind].format(
            values=staged.values,
            recovered=staged.cols("r"),
            table=staged.live.ident,
            temp=staged.temp,
            match=staged.keys_match,
            differ=staged.differ,
            key=staged.cols("l", staged.live.key),
            rkey=staged.cols("r", staged.live.key),
            keys=staged.literals("r", staged.live.key),
        )
        statements = _Statements(conn, staged)
        with conn.cursor(name=f"dr_export_{kind}") as cursor:
            cursor.itersize = _BATCH
            cursor.execute(composed)
            for values, was in cursor:
                out.write(statements.line(kind, values, was))
                rows += 1
    out.write("\nROLLBACK;  -- change to COMMIT once only the statements to replay are left\n")
    return rows


_SECTIONS = {
    "changed": "row(s) changed after the recovery point: their live values (the recovered "
    "ones in the comment above each)",
    "added": "row(s) written after the recovery point (kept live unless the repair deleted them)",
    "deleted": "row(s) deleted after the recovery point (the repair put them back)",
}
_QUERIES = {
    "changed": sql.SQL(
        "SELECT {values}, ROW({recovered})::text FROM {table} l "
        "JOIN {temp} r ON {match} WHERE {differ} ORDER BY {key}"
    ),
    "added": sql.SQL(
        "SELECT {values}, NULL FROM {table} l WHERE NOT EXISTS "
        "(SELECT 1 FROM {temp} r WHERE {match}) ORDER BY {key}"
    ),
    "deleted": sql.SQL(
        "SELECT {keys}, NULL FROM {temp} r WHERE NOT EXISTS "
        "(SELECT 1 FROM {table} l WHERE {match}) ORDER BY {rkey}"
    ),
}


class _Statements:
    """The statements of one table in an export: an upsert of a live row, a delete by key."""

    def __init__(self, conn: psycopg.Connection[Any], staged: _Staged) -> None:
        table = staged.live.ident.as_string(conn)
        key = sql.SQL(", ").join(sql.Identifier(k) for k in staged.live.key).as_string(conn)
        others = [c for c in staged.columns if c not in staged.live.key]
        sets = ", ".join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)).as_string(conn)
            for c in others
        )
        # Concatenated, not str.format: a quoted identifier may hold braces.
        self.insert = (
            f"INSERT INTO {table} ({staged.cols().as_string(conn)}) OVERRIDING SYSTEM VALUE VALUES "
        )
        self.conflict = f" ON CONFLICT ({key}) " + (
            f"DO UPDATE SET {sets};\n" if others else "DO NOTHING;\n"
        )
        self.delete = f"DELETE FROM {table} WHERE ({key}) = "

    def line(self, kind: str, values: str, was: str | None) -> str:
        if kind == "deleted":
            return self.delete + values + ";\n"
        upsert = self.insert + values + self.conflict
        if kind != "changed":
            return upsert
        # A value's line break must not end the comment (the rest would be a statement).
        shown = (was or "").replace("\r", "\\r").replace("\n", "\\n")
        return f"-- recovered: {shown}\n" + upsert


def _store_export(repository: Repository, key: str, path: Path) -> Export:
    def chunks() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while data := handle.read(1 << 20):
                yield data

    encrypted = bool(repository.encrypt_to)
    stored = key + crypto.SUFFIX if encrypted else key
    repository.store.create()
    data = crypto.encrypt(chunks(), repository.encrypt_to) if encrypted else chunks()
    repository.store.put(stored, data)
    return Export(repository.name, stored, 0, encrypted)


def _export(
    comparison: _Comparison, repository: Repository, key: str, header: Sequence[str]
) -> Export:
    directory = Path(tempfile.mkdtemp(prefix="dr-live-changes-"))
    try:
        path = directory / "live-changes.sql"
        with path.open("w", encoding="utf-8") as out:
            rows = _write_export(comparison, out, header)
        return replace(_store_export(repository, key, path), rows=rows)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def export_changes(
    live: ConnInfo,
    database: str,
    recovered: ConnInfo,
    recovered_database: str,
    tables: Sequence[str],
    repository: Repository,
    key: str,
    header: Sequence[str] = (),
) -> Export:
    """Write what differs in ``tables`` of the live database from the recovered copy to
    ``key`` in ``repository`` (encrypted to its recipients when it encrypts backups)."""
    with _compared(live, database, recovered, recovered_database, tables) as comparison:
        return _export(comparison, repository, key, header)


# -- the repair ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepairOutcome:
    """What a selective repair did, table by table, and where the export is."""

    tables: list[TableDiff]
    restored: int
    replaced: int
    deleted: int
    kept: int
    export: Export
    checks: list[CheckResult]

    def summary(self) -> dict[str, Any]:
        return {
            "tables": [t.row() for t in self.tables],
            "restored": self.restored,
            "replaced": self.replaced,
            "deleted": self.deleted,
            "kept": self.kept,
            "export": self.export.location,
            "export_rows": self.export.rows,
        }


def _exceeds(now: TableDiff, approved: TableDiff | None, delete_added: bool) -> str | None:
    if approved is None:
        return f"{now.table} was not in the approved plan"
    for what, current, shown in (
        ("restore", now.missing, approved.missing),
        ("replace", now.changed, approved.changed),
        *([("delete", now.added, approved.added)] if delete_added else []),
    ):
        if current > shown:
            return f"{now.table}: the repair would {what} {current} rows, the approved plan {shown}"
    return None


def repair_rows(
    live: ConnInfo,
    database: str,
    recovered: ConnInfo,
    recovered_database: str,
    tables: Sequence[str],
    approved: Sequence[TableDiff],
    checks: Sequence[Check],
    repository: Repository,
    key: str,
    header: Sequence[str] = (),
    delete_added: bool = False,
    lock_timeout: float = 60.0,
) -> RepairOutcome:
    """Put the recovered copy's missing and changed rows of ``tables`` back into the live
    database, in one transaction:

    1. the tables are locked against writers (readers go on) for the whole repair;
    2. they are compared again; more rows to restore, replace or delete than the approved
       plan showed is a :class:`ConcurrentChange` (someone wrote meanwhile);
    3. the live values about to be replaced go to ``key`` in ``repository``;
    4. missing rows are inserted (referenced tables first), changed rows updated, and with
       ``delete_added`` the rows written since deleted (referencing tables first);
    5. every check whose table was repaired (or that names none) must pass, else
       :class:`VerificationFailed` and nothing is changed.
    """
    plan = {d.table: d for d in approved}
    where = (f"the live database {database}", f"the recovered copy {recovered_database}")
    try:
        with (
            _session(live, database, read_only=False) as conn,
            _session(recovered, recovered_database, read_only=True) as copy,
        ):
            row = conn.execute("SHOW server_version_num").fetchone()
            if row and int(row[0]) >= 140000:
                # A client killed mid-repair ends its transaction at once, not at the next write.
                conn.execute("SET LOCAL client_connection_check_interval = '1s'")
            conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(
                    sql.Literal(f"{int(lock_timeout * 1000)}ms")
                )
            )
            locked = [_table(conn, name, where[0]) for name in dict.fromkeys(tables)]
            conn.execute(
                sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(t.ident for t in locked)
                )
            )
            comparison = _Comparison(conn, copy)
            staged = comparison.stage(tables, where)
            for item in staged:
                assert item.diff is not None
                problem = _exceeds(item.diff, plan.get(item.diff.table), delete_added)
                if problem:
                    raise ConcurrentChange(
                        f"{problem}: the tables changed since the plan was approved; nothing was "
                        "changed (run the runbook again for a new plan)"
                    )
            export = _export(comparison, repository, key, header)
            restored = replaced = deleted = 0
            for item in staged:
                restored += _insert_missing(conn, item)
                replaced += _update_changed(conn, item)
            if delete_added:
                for item in reversed(staged):
                    deleted += _delete_added(conn, item)
            repaired = {s.live.label for s in staged} | set(tables)
            relevant = [c for c in checks if c.table is None or _named(c.table, repaired)]
            after = _run_checks_in(conn, relevant)
            still = [r for r in after if r.failed]
            if still:
                first = still[0]
                found = first.error or f"returns {first.rows} row(s)"
                raise VerificationFailed(
                    f"after the repair the check {first.name!r} still {found}: nothing was "
                    f"changed (what would have been replaced is in {export.location}); "
                    + (
                        "rows written after the recovery point are kept: new_rows=delete "
                        "removes them, or swap the whole database"
                        if not delete_added
                        else "swap the whole database, or repair more tables"
                    )
                )
            conn.commit()
    except psycopg.Error as exc:
        raise RestoreFailed(
            f"the repair of {database} failed, nothing was changed: {first_line(exc)}"
        ) from None
    diffs = [s.diff for s in staged if s.diff is not None]
    return RepairOutcome(
        diffs,
        restored,
        replaced,
        deleted,
        sum(d.added for d in diffs) - deleted,
        export,
        after,
    )


def _named(table: str, labels: set[str]) -> bool:
    return table in labels or f"public.{table}" in labels


def _insert_missing(conn: psycopg.Connection[Any], staged: _Staged) -> int:
    cursor = conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({cols}) OVERRIDING SYSTEM VALUE SELECT {rcols} FROM {temp} r "
            "WHERE NOT EXISTS (SELECT 1 FROM {table} l WHERE {match})"
        ).format(
            table=staged.live.ident,
            cols=staged.cols(),
            rcols=staged.cols("r"),
            temp=staged.temp,
            match=staged.keys_match,
        )
    )
    return max(cursor.rowcount, 0)


def _update_changed(conn: psycopg.Connection[Any], staged: _Staged) -> int:
    others = [c for c in staged.columns if c not in staged.live.key]
    if not others:
        return 0
    cursor = conn.execute(
        sql.SQL("UPDATE {table} AS l SET {sets} FROM {temp} r WHERE {match} AND {differ}").format(
            table=staged.live.ident,
            sets=sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("r", c)) for c in others
            ),
            temp=staged.temp,
            match=staged.keys_match,
            differ=staged.differ,
        )
    )
    return max(cursor.rowcount, 0)


def _delete_added(conn: psycopg.Connection[Any], staged: _Staged) -> int:
    cursor = conn.execute(
        sql.SQL(
            "DELETE FROM {table} AS l WHERE NOT EXISTS (SELECT 1 FROM {temp} r WHERE {match})"
        ).format(table=staged.live.ident, temp=staged.temp, match=staged.keys_match)
    )
    return max(cursor.rowcount, 0)


# -- the swap's copy, and where a recovered cluster lives -----------------------------------------


def copy_database(
    source: ConnInfo, database: str, target: ConnInfo, side: str, workdir: Path, jobs: int = 2
) -> RestoreOutcome:
    """Copy ``database`` from a recovered cluster into the NEW database ``side`` of the live
    server (pg_dump, then pg_restore with the database's own settings); on failure ``side``
    is dropped. A leftover ``side`` of an attempt that died is replaced."""
    leftover = database_exists(target, side)
    if leftover:
        drop_database(target, side)
    dump = workdir / "recovered.dump"
    with exported_snapshot(source, database) as snapshot:
        stream = DumpStream(source, database, snapshot.snapshot_id)
        try:
            with dump.open("wb") as out:
                for chunk in stream:
                    out.write(chunk)
        finally:
            stream.kill()
        settings = snapshot.settings
    try:
        prepare_database(target, side, settings)
        pg_restore(target, side, dump, jobs=jobs)
        finish_database(target, side, settings)
    except BaseException:
        drop_database(target, side)
        raise
    finally:
        dump.unlink(missing_ok=True)
    oid = database_oid(target, side)
    if oid is None:
        raise RestoreFailed(f"{side} vanished as soon as it was copied")
    return RestoreOutcome(side, leftover, [], oid)


def recovered_conninfo(live: ConnInfo, pgdata: Path, port: int, database: str) -> ConnInfo:
    """How to reach a cluster recovered beside the live one: its socket in its data directory,
    as the live connection's role (the cluster has the live cluster's roles)."""
    return ConnInfo(
        host=str(pgdata), port=port, user=live.user, password=live.password, dbname=database
    )


def recovery_workdir(base: Path | None = None) -> Path:
    """A new work directory for a recovered cluster, recording its owner; the cluster's OS
    user must be able to enter it. It is made under a hidden name and renamed once the owner
    is recorded, so a directory with the prefix always says whose it is."""
    staging = owned_workdir(f".{WORKDIR_PREFIX}", base)
    directory = staging.with_name(staging.name[1:])
    staging.rename(directory)
    directory.chmod(0o755)
    return directory


def _owner_gone(directory: Path) -> bool:
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            return (datetime.now().timestamp() - directory.stat().st_mtime) > 60
        return True
    if owner.get("host") != socket.gethostname():
        return False  # another machine's: not ours to judge
    pid, started = int(owner.get("pid", -1)), owner.get("started")
    if started is None:
        return not Path(f"/proc/{pid}").exists()
    return not alive_since(pid, float(started))


def remove_stale_recoveries(base: Path | None = None, os_user: str | None = None) -> list[Path]:
    """Stop the clusters that runs which died left recovered beside the live one, and remove
    their work directories (and work directories a run died making); return what was
    removed."""
    root = base or Path(tempfile.gettempdir())
    removed = []
    for directory in sorted(root.glob(f"{WORKDIR_PREFIX}*")):
        if not directory.is_dir() or directory.is_symlink() or not _owner_gone(directory):
            continue
        pgdata = directory / "pgdata"
        with contextlib.suppress(OperationFailed, OSError):
            stop_cluster(pgdata, os_user, mode="immediate")
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    for staging in sorted(root.glob(f".{WORKDIR_PREFIX}*")):
        if staging.is_dir() and not staging.is_symlink() and _owner_gone(staging):
            shutil.rmtree(staging, ignore_errors=True)  # never held a cluster
            removed.append(staging)
    return removed


def remove_recovery(workdir: Path, os_user: str | None = None) -> None:
    """Stop the cluster recovered in ``workdir`` (if it runs) and remove the directory."""
    stop_cluster(workdir / "pgdata", os_user, mode="fast")
    shutil.rmtree(workdir, ignore_errors=True)
