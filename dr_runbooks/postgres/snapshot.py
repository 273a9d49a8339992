"""The exported snapshot a backup runs in, and what is read in it.

A connection opens a REPEATABLE READ transaction and exports its snapshot; ``pg_dump
--snapshot`` dumps exactly that state while the same transaction counts every table's rows,
reads the database's own settings and the roles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from dr_runbooks.errors import BadInput, DumpFailed
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.text import first_line

__all__ = ["TABLES_QUERY", "DatabaseSettings", "Snapshot", "exported_snapshot"]


@dataclass
class DatabaseSettings:
    """What CREATE DATABASE and ALTER DATABASE need to recreate a database's own settings."""

    owner: str
    encoding: str
    collate: str
    ctype: str
    locale_provider: str | None = None
    locale: str | None = None
    icu_rules: str | None = None
    connection_limit: int = -1
    settings: list[dict[str, Any]] = field(default_factory=list)
    grants: list[dict[str, Any]] | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    #: ``COMMENT ON DATABASE`` (pg_dump leaves it out of a single database's dump).
    comment: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseSettings:
        return cls(**data)


@dataclass
class Snapshot:
    """An exported snapshot and what was read in it."""

    snapshot_id: str
    consistent_point: datetime
    server_version: str
    tables: list[tuple[str, str]]
    #: Partitioned tables (``schema.table``): their count repeats their partitions' rows.
    partitioned: list[str]
    settings: DatabaseSettings
    roles: dict[str, Any]
    conn: psycopg.Connection[Any] = field(repr=False)

    def count_rows(self) -> dict[str, int]:
        """Row count of every table, in the snapshot (the dump's own view of the data).

        Each count runs in a savepoint, so a table we may not read raises only after the whole
        loop and never ends the transaction whose snapshot pg_dump may still be importing.
        """
        counts: dict[str, int] = {}
        failures: list[str] = []
        for schema, table in self.tables:
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            self.conn.execute("SAVEPOINT dr_count")
            try:
                row = self.conn.execute(query).fetchone()
            except psycopg.Error as exc:
                self.conn.execute("ROLLBACK TO SAVEPOINT dr_count")
                failures.append(f"{schema}.{table}: {first_line(exc)}")
                continue
            self.conn.execute("RELEASE SAVEPOINT dr_count")
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
        if failures:
            raise DumpFailed(f"counting rows failed: {'; '.join(failures[:3])}")
        return counts


#: Every table of the database but the system's and extensions': schema, name, and whether it
#: is partitioned (its rows are its partitions').
TABLES_QUERY = """
SELECT n.nspname, c.relname, c.relkind = 'p'
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def _read_settings(conn: psycopg.Connection[Any]) -> DatabaseSettings:
    version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    locale_col = (
        "datlocale" if version >= 170000 else ("daticulocale" if version >= 150000 else "NULL")
    )
    provider_col = "datlocprovider::text" if version >= 150000 else "NULL"
    rules_col = "daticurules" if version >= 160000 else "NULL"
    row = conn.execute(
        f"""SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype,
                   {provider_col}, {locale_col}, {rules_col}, datconnlimit, oid
            FROM pg_database WHERE datname = current_database()"""
    ).fetchone()
    assert row is not None
    settings = [
        {"role": r[0], "config": list(r[1])}
        for r in conn.execute(
            """SELECT CASE WHEN setrole = 0 THEN NULL ELSE pg_get_userbyid(setrole) END, setconfig
               FROM pg_db_role_setting WHERE setdatabase = %s ORDER BY 1 NULLS FIRST""",
            (row[8],),
        )
    ]
    acl = conn.execute(
        "SELECT datacl IS NULL FROM pg_database WHERE oid = %s", (row[8],)
    ).fetchone()
    grants = None
    if acl is not None and not acl[0]:
        grants = [
            {"grantee": r[0], "privilege": r[1], "grantable": r[2]}
            for r in conn.execute(
                """SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                          a.privilege_type, a.is_grantable
                   FROM pg_database d, aclexplode(d.datacl) a
                   WHERE d.oid = %s AND a.grantee <> d.datdba ORDER BY 1, 2""",
                (row[8],),
            )
        ]
    extensions = {
        r[0]: r[1] for r in conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1")
    }
    provider = {"c": "libc", "i": "icu", "b": "builtin"}.get(row[4]) if row[4] else None
    comment = conn.execute("SELECT shobj_description(%s, 'pg_database')", (row[8],)).fetchone()
    return DatabaseSettings(
        owner=row[0],
        encoding=row[1],
        collate=row[2],
        ctype=row[3],
        locale_provider=provider,
        locale=row[5],
        icu_rules=row[6],
        connection_limit=int(row[7]),
        settings=settings,
        grants=grants,
        extensions=extensions,
        comment=comment[0] if comment else None,
    )


_ROLE_ATTRS = (
    "rolsuper",
    "rolinherit",
    "rolcreaterole",
    "rolcreatedb",
    "rolcanlogin",
    "rolreplication",
    "rolbypassrls",
)


def _read_roles(conn: psycopg.Connection[Any], with_passwords: bool) -> dict[str, Any]:
    columns = ", ".join(("rolname", *_ROLE_ATTRS, "rolconnlimit", "rolvaliduntil"))
    roles = []
    for row in conn.execute(f"SELECT {columns} FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1"):
        role: dict[str, Any] = {"name": row[0]}
        role.update({attr: bool(value) for attr, value in zip(_ROLE_ATTRS, row[1:8], strict=True)})
        role["connlimit"] = row[8]
        role["valid_until"] = row[9].isoformat() if row[9] else None
        roles.append(role)
    if with_passwords:
        try:
            hashes = dict(
                conn.execute(
                    "SELECT rolname, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL"
                ).fetchall()
            )
        except psycopg.errors.InsufficientPrivilege:
            raise BadInput("role passwords need a superuser connection (pg_authid)") from None
        for role in roles:
            if role["name"] in hashes:
                role["password_hash"] = hashes[role["name"]]
    members = [
        {"role": r[0], "member": r[1], "admin": bool(r[2])}
        for r in conn.execute(
            """SELECT r.rolname, m.rolname, am.admin_option
               FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid
               JOIN pg_roles m ON m.oid = am.member
               WHERE r.rolname !~ '^pg_' OR m.rolname !~ '^pg_' ORDER BY 1, 2"""
        )
    ]
    return {"roles": roles, "memberships": members, "passwords": with_passwords}


@contextmanager
def exported_snapshot(
    conninfo: ConnInfo, database: str, role_passwords: bool = False
) -> Iterator[Snapshot]:
    """Open a REPEATABLE READ transaction, export its snapshot, and keep it open meanwhile."""
    conn = conninfo.connect(dbname=database, autocommit=True)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute(
            "SELECT pg_export_snapshot(), statement_timestamp(), current_setting('server_version')"
        ).fetchone()
        assert row is not None
        listed = conn.execute(TABLES_QUERY).fetchall()
        tables = [(str(r[0]), str(r[1])) for r in listed]
        partitioned = [f"{r[0]}.{r[1]}" for r in listed if r[2]]
        settings = _read_settings(conn)
        roles = _read_roles(conn, role_passwords)
        yield Snapshot(
            snapshot_id=row[0],
            consistent_point=row[1],
            server_version=row[2],
            tables=tables,
            partitioned=partitioned,
            settings=settings,
            roles=roles,
            conn=conn,
        )
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
        conn.close()
