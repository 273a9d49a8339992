"""Whole databases on a PostgreSQL server: assess, list, create, drop, swap by rename."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dr_runbooks.errors import BadInput, OperationFailed, RestoreFailed
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.text import first_line

__all__ = [
    "TOKEN_LENGTH",
    "ServerStatus",
    "assess",
    "create_plain_database",
    "database_exists",
    "database_oid",
    "drop_database",
    "drop_side_databases",
    "list_databases",
    "side_name",
    "swap_databases",
]


@dataclass(frozen=True)
class ServerStatus:
    """What the assess step learns about a server."""

    reachable: bool
    server_version: str | None = None
    in_recovery: bool | None = None
    database_exists: bool | None = None
    database_size: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def assess(conninfo: ConnInfo, database: str) -> ServerStatus:
    """Is the server up, can we connect, which version, does the database exist?"""
    try:
        with conninfo.connect(dbname="postgres") as conn:
            version = conn.execute("SHOW server_version").fetchone()
            recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            size = conn.execute(
                "SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
    except OperationFailed as exc:
        return ServerStatus(reachable=False, error=str(exc))
    except BadInput as exc:
        return ServerStatus(reachable=False, error=str(exc))
    return ServerStatus(
        reachable=True,
        server_version=str(version[0]) if version else None,
        in_recovery=bool(recovery[0]) if recovery else None,
        database_exists=size is not None,
        database_size=int(size[0]) if size else None,
    )


def database_exists(conninfo: ConnInfo, name: str) -> bool:
    with conninfo.connect(dbname="postgres") as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def create_plain_database(conninfo: ConnInfo, name: str) -> None:
    """CREATE DATABASE with the server's defaults (a legacy backup carries no settings)."""
    with conninfo.connect(dbname="postgres") as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise RestoreFailed(f"cannot create database {name}: {first_line(exc)}") from None


def _terminate(conn: psycopg.Connection[Any], database: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


def swap_databases(
    conninfo: ConnInfo,
    database: str,
    restored: str,
    stamp: str,
    keep_old: bool = True,
    expected_oid: int | None = None,
) -> str | None:
    """Rename ``restored`` to ``database``, keeping the old one as ``<db>__pre_restore_<stamp>``.

    Both renames run in one transaction, so the name ``database`` is never missing for long and
    a failure leaves both databases as they were. With ``expected_oid`` the swap happens only if
    ``restored`` is still that very database (the one this run restored and verified), checked
    in the same transaction. Returns the kept old name, if any.
    """
    old_name = f"{database}__pre_restore_{stamp}"
    with conninfo.connect(dbname="postgres", autocommit=True) as conn:
        exists = (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            is not None
        )
        try:
            with conn.transaction():
                if expected_oid is not None:
                    found = database_oid_in(conn, restored)
                    if found != expected_oid:
                        raise RestoreFailed(
                            f"{restored} is not the database this run restored and verified "
                            f"(oid {found}, expected {expected_oid}); nothing was swapped"
                        )
                if exists:
                    _terminate(conn, database)
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(database), sql.Identifier(old_name)
                        )
                    )
                _terminate(conn, restored)
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(restored), sql.Identifier(database)
                    )
                )
        except psycopg.Error as exc:
            raise RestoreFailed(
                f"cannot swap {restored} into {database}: {first_line(exc)}"
            ) from None
        if exists and not keep_old:
            _terminate(conn, old_name)
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(old_name)))
            return None
    return old_name if exists else None


def database_oid_in(conn: psycopg.Connection[Any], name: str) -> int | None:
    row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return int(row[0]) if row else None


def database_oid(conninfo: ConnInfo, name: str) -> int | None:
    """The database's oid: a database dropped and created again under the name has another."""
    with conninfo.connect(dbname="postgres") as conn:
        return database_oid_in(conn, name)


#: The length of a run's token in its side databases' names.
TOKEN_LENGTH = 8


def side_name(database: str, purpose: str, token: str) -> str:
    """``<db>__<purpose>_<token>`` in PostgreSQL's 63 bytes, keeping the token whole (a long
    database name is shortened instead)."""
    if len(token) != TOKEN_LENGTH:
        raise ValueError(f"a side database's token has {TOKEN_LENGTH} characters: {token!r}")
    suffix = f"__{purpose}_{token}"
    head = database.encode()[: 63 - len(suffix.encode())].decode(errors="ignore")
    return head + suffix


def drop_side_databases(conninfo: ConnInfo, database: str, purpose: str) -> list[str]:
    """Drop every ``<db>__<purpose>_*`` database: leftovers of runs that died. Only for a
    caller that holds the database's lock, so no live run owns one."""
    mark = side_name(database, purpose, "0" * TOKEN_LENGTH)[:-TOKEN_LENGTH]
    escaped = mark.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    leftovers = list_databases(conninfo, escaped + "%")
    for name in leftovers:
        drop_database(conninfo, name)
    return leftovers


def drop_database(conninfo: ConnInfo, name: str) -> None:
    with conninfo.connect(dbname="postgres") as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def list_databases(conninfo: ConnInfo, pattern: str) -> list[str]:
    with conninfo.connect(dbname="postgres") as conn:
        return [
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (pattern,)
            )
        ]
