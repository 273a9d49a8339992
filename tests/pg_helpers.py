"""Helpers for tests on real PostgreSQL: load SQL files, fingerprint every table's rows."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from psycopg import sql

from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.tools import pg_tool


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


class PasswordServer:
    """A PostgreSQL server from the embedded binaries that demands a password (SCRAM), run as
    the unprivileged OS user the embedded server uses (PostgreSQL refuses to run as root).

    The session's server trusts every local connection; this one is for what only a password
    can show: a wrong password refused, a rotated password taking effect.
    """

    USER = "embedded_postgres"

    def __init__(self, base: Path, password: str) -> None:
        self.datadir = base / "pgdata"
        self.password = password
        self.bindir = Path(pg_tool("initdb")).parent

    def _as_user(self, *argv: str) -> None:
        command = ["runuser", "-u", self.USER, "--", *argv] if os.geteuid() == 0 else list(argv)
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.strip()}")

    def start(self) -> ConnInfo:
        base = self.datadir.parent
        base.chmod(0o777)
        pwfile = base / "pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o644)
        self._as_user(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
        )
        pwfile.unlink()
        options = f"-c listen_addresses='' -c unix_socket_directories='{self.datadir}'"
        log = str(base / "server.log")  # pg_ctl's server must not hold our pipes open
        self._as_user(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            log,
            "-o",
            options,
            "-w",
            "start",
        )
        return ConnInfo(host=str(self.datadir), user="postgres", dbname="postgres")

    def stop(self) -> None:
        self._as_user(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"
        )
