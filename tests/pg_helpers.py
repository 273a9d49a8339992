"""Helpers for tests on real PostgreSQL: load SQL files, fingerprint every table's rows."""

from __future__ import annotations

import subprocess
from pathlib import Path

from psycopg import sql

from dr_runbooks.pgconn import ConnInfo
from dr_runbooks.postgres import pg_tool


def run_sql_file(conninfo: ConnInfo, database: str, path: Path) -> None:
    result = subprocess.run(
        [
            pg_tool("psql"),
            "--no-psqlrc",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
            "-f",
            str(path),
        ],
        env=conninfo.child_env(dbname=database),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def table_fingerprints(conninfo: ConnInfo, database: str) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent digest of every user table's rows."""
    fingerprints = {}
    with conninfo.connect(dbname=database) as conn:
        tables = conn.execute(
            """SELECT n.nspname, c.relname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2"""
        ).fetchall()
        for schema, table in tables:
            ident = sql.Identifier(schema, table)
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), "
                    "coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '')"
                    " FROM {} t"
                ).format(ident)
            ).fetchone()
            assert row is not None
            fingerprints[f"{schema}.{table}"] = (int(row[0]), str(row[1]))
    return fingerprints


def database_names(conninfo: ConnInfo, pattern: str) -> list[str]:
    with conninfo.connect(dbname="postgres") as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (pattern,)
            )
        ]
