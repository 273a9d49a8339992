"""Checking a restored database: row counts against the manifest, and the SQL checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dr_runbooks.errors import RestoreVerificationFailed
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.snapshot import TABLES_QUERY
from dr_runbooks.text import first_line

__all__ = [
    "compare_counts",
    "partitioned_tables",
    "run_checks",
    "split_checks",
    "table_counts",
    "verify_database",
]


def table_counts(conninfo: ConnInfo, database: str) -> dict[str, int]:
    with conninfo.connect(dbname=database) as conn:
        tables = [(str(r[0]), str(r[1])) for r in conn.execute(TABLES_QUERY)]
        counts = {}
        for schema, table in tables:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            ).fetchone()
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def partitioned_tables(conninfo: ConnInfo, database: str) -> list[str]:
    """The partitioned tables (``schema.table``), whose counts repeat their partitions'."""
    with conninfo.connect(dbname=database) as conn:
        return [f"{r[0]}.{r[1]}" for r in conn.execute(TABLES_QUERY) if r[2]]


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """Differences between the manifest's row counts and a restored database's."""
    problems = []
    for table, rows in sorted(expected.items()):
        if table not in actual:
            problems.append(f"{table}: missing (manifest: {rows} rows)")
        elif actual[table] != rows:
            problems.append(f"{table}: {actual[table]} rows, manifest: {rows}")
    for table in sorted(set(actual) - set(expected)):
        problems.append(f"{table}: not in the manifest")
    return problems


_STATEMENT_END = re.compile(r";\s*(?:--[^\n]*)?$", re.MULTILINE)


def split_checks(text: str) -> list[str]:
    """Split a checks file into statements (each ends with ``;`` at the end of a line)."""
    statements, start = [], 0
    for match in _STATEMENT_END.finditer(text):
        statement = text[start : match.start()].strip()
        start = match.end()
        body = "\n".join(
            line for line in statement.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            statements.append(body)
    tail = text[start:].strip()
    tail_body = "\n".join(
        line for line in tail.splitlines() if not line.strip().startswith("--")
    ).strip()
    if tail_body:
        statements.append(tail_body)
    return statements


def run_checks(conninfo: ConnInfo, database: str, checks_sql: str) -> list[str]:
    """Run each query of a checks file; a query that returns rows (or fails) is a failure."""
    failures = []
    with conninfo.connect(dbname=database, autocommit=False) as conn:
        for statement in split_checks(checks_sql):
            label = " ".join(statement.split())[:80]
            try:
                with conn.cursor() as cur:
                    cur.execute(statement)  # type: ignore[call-overload]
                    rows = cur.fetchmany(3) if cur.description else []
            except psycopg.Error as exc:
                failures.append(f"{label}: {first_line(exc)}")
                conn.rollback()
                continue
            if rows:
                failures.append(f"{label}: returned {len(rows)}+ row(s), first {rows[0]!r}")
        conn.rollback()
    return failures


def verify_database(
    conninfo: ConnInfo, database: str, expected: dict[str, int], checks_file: str | None = None
) -> dict[str, Any]:
    """Compare row counts with the manifest and run the SQL checks (each must return no rows);
    raise :class:`RestoreVerificationFailed` naming the first differences."""
    actual = table_counts(conninfo, database)
    problems = compare_counts(expected, actual) if expected else []
    partitioned = set(partitioned_tables(conninfo, database))
    failures = run_checks(conninfo, database, Path(checks_file).read_text()) if checks_file else []
    if problems or failures:
        raise RestoreVerificationFailed(
            f"restored database {database} failed verification: "
            + "; ".join((problems + failures)[:5])
        )
    return {
        "tables": len(actual),
        "rows": sum(n for table, n in actual.items() if table not in partitioned),
        "count_problems": problems,
        "check_failures": failures,
        "checks": checks_file is not None,
    }
