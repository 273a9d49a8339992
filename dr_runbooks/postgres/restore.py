"""Restoring a fetched backup into a NEW database, with the original's settings and roles."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dr_runbooks.errors import RestoreFailed
from dr_runbooks.postgres.backup import FetchedBackup
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.server import (
    create_plain_database,
    database_exists,
    database_oid,
    drop_database,
)
from dr_runbooks.postgres.snapshot import DatabaseSettings
from dr_runbooks.postgres.tools import StderrCollector, error_lines, pg_tool, wait_reporting_reads
from dr_runbooks.processes import die_with_parent
from dr_runbooks.redaction import redact
from dr_runbooks.text import first_line

__all__ = [
    "RESTORE_SESSION_SETTINGS",
    "RestoreOutcome",
    "ensure_roles",
    "finish_database",
    "pg_restore",
    "prepare_database",
    "psql_file",
    "restore_database",
]

#: Our own side databases (``<db>__restore_<id>``, ``<db>__verify_<id>``): a leftover one never
#: became live and may be dropped; any other existing target is refused.
SIDE_MARKS = ("__restore_", "__verify_")


@dataclass(frozen=True)
class RestoreOutcome:
    """What a restore did besides restoring: a leftover it replaced, roles it created."""

    database: str
    replaced_leftover: bool
    created_roles: list[str]
    #: The restored database's oid: the swap checks it is still the same database.
    oid: int


def restore_database(
    conninfo: ConnInfo,
    fetched: FetchedBackup,
    target: str,
    jobs: int = 2,
    no_owner: bool = False,
) -> RestoreOutcome:
    """Restore a fetched backup into the NEW database ``target`` with the database's settings.

    The target must not exist, unless it is our own side database left by an attempt that
    crashed (it never became live). On failure the half-restored database is dropped, so
    nothing is left behind and the original database was never touched.
    """
    leftover = database_exists(conninfo, target)
    if leftover:
        if not any(mark in target for mark in SIDE_MARKS):
            raise RestoreFailed(f"database {target} already exists; refusing to restore over it")
        drop_database(conninfo, target)
    created = ensure_roles(conninfo, fetched.roles)
    settings = fetched.settings
    try:
        if settings is None:  # a plan-script backup: plain SQL, no settings
            create_plain_database(conninfo, target)
            psql_file(conninfo, target, fetched.dump)
        else:
            prepare_database(conninfo, target, settings)
            pg_restore(conninfo, target, fetched.dump, jobs=jobs, no_owner=no_owner)
            finish_database(conninfo, target, settings)
    except BaseException:
        drop_database(conninfo, target)
        raise
    oid = database_oid(conninfo, target)
    if oid is None:
        raise RestoreFailed(f"{target} vanished as soon as it was restored")
    return RestoreOutcome(target, leftover, created, oid)


def ensure_roles(conninfo: ConnInfo, roles: dict[str, Any]) -> list[str]:
    """Create the roles a restore needs that the server lacks; grant missing memberships."""
    created = []
    with conninfo.connect(dbname="postgres") as conn:
        existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        is_super = bool(row and row[0])
        for role in roles.get("roles", []):
            if role["name"] in existing:
                continue
            options = []
            for attr, word in (
                ("rolsuper", "SUPERUSER"),
                ("rolcreaterole", "CREATEROLE"),
                ("rolcreatedb", "CREATEDB"),
                ("rolcanlogin", "LOGIN"),
                ("rolreplication", "REPLICATION"),
                ("rolbypassrls", "BYPASSRLS"),
            ):
                if role.get(attr) and (is_super or attr in ("rolcanlogin", "rolcreatedb")):
                    options.append(word)
            if not role.get("rolinherit", True):
                options.append("NOINHERIT")
            statement = sql.SQL("CREATE ROLE {} {}").format(
                sql.Identifier(role["name"]), sql.SQL(" ".join(options))
            )
            conn.execute(statement)
            if role.get("password_hash"):
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role["name"]), sql.Literal(role["password_hash"])
                    )
                )
            created.append(role["name"])
            existing.add(role["name"])
        current = {
            (r[0], r[1])
            for r in conn.execute(
                """SELECT r.rolname, m.rolname FROM pg_auth_members am
                   JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member"""
            )
        }
        for link in roles.get("memberships", []):
            pair = (link["role"], link["member"])
            if pair in current or not set(pair) <= existing:
                continue
            grant = sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(link["role"]), sql.Identifier(link["member"])
            )
            if link.get("admin"):
                grant = sql.SQL("{} WITH ADMIN OPTION").format(grant)
            conn.execute(grant)
    return created


def prepare_database(conninfo: ConnInfo, name: str, settings: DatabaseSettings) -> None:
    """CREATE DATABASE ``name`` with the original's owner, encoding and locale."""
    parts = [
        sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(
            sql.Identifier(name), sql.Literal(settings.encoding)
        )
    ]
    if settings.locale_provider and settings.locale_provider != "libc":
        parts.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(settings.locale_provider)))
        if settings.locale:
            key = "ICU_LOCALE" if settings.locale_provider == "icu" else "BUILTIN_LOCALE"
            parts.append(sql.SQL(key + " {}").format(sql.Literal(settings.locale)))
        if settings.icu_rules:
            parts.append(sql.SQL("ICU_RULES {}").format(sql.Literal(settings.icu_rules)))
    parts.append(
        sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(settings.collate), sql.Literal(settings.ctype)
        )
    )
    with conninfo.connect(dbname="postgres") as conn:
        try:
            conn.execute(sql.SQL(" ").join(parts))
        except psycopg.Error as exc:
            raise RestoreFailed(f"cannot create database {name}: {first_line(exc)}") from None


def finish_database(conninfo: ConnInfo, name: str, settings: DatabaseSettings) -> None:
    """Owner, ALTER DATABASE … SET, connection limit and grants, once the data is in."""
    ident = sql.Identifier(name)
    statements = [
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, sql.Identifier(settings.owner))
    ]
    if settings.connection_limit != -1:
        statements.append(
            sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                ident, sql.Literal(settings.connection_limit)
            )
        )
    for entry in settings.settings:
        for assignment in entry["config"]:
            key, _, value = assignment.partition("=")
            target = (
                sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(entry["role"]), ident)
                if entry["role"]
                else sql.SQL("ALTER DATABASE {}").format(ident)
            )
            statements.append(
                sql.SQL("{} SET {} = {}").format(target, sql.Identifier(key), sql.Literal(value))
            )
    if settings.comment is not None:
        statements.append(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(settings.comment))
        )
    if settings.grants is not None:
        statements.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
        for grant in settings.grants:
            grantee = (
                sql.SQL("PUBLIC")
                if grant["grantee"] == "PUBLIC"
                else sql.Identifier(grant["grantee"])
            )
            statement = sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                sql.SQL(grant["privilege"]), ident, grantee
            )
            if grant["grantable"]:
                statement = sql.SQL("{} WITH GRANT OPTION").format(statement)
            statements.append(statement)
    with conninfo.connect(dbname="postgres") as conn:
        for statement in statements:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                raise RestoreFailed(
                    f"cannot apply database setting to {name}: {first_line(exc)}"
                ) from None


#: Session settings for pg_restore's connections: index builds get memory, and commits do not
#: wait for the WAL flush (a half-restored side database is dropped, never used).
RESTORE_SESSION_SETTINGS = {"maintenance_work_mem": "256MB", "synchronous_commit": "off"}


def pg_restore(
    conninfo: ConnInfo, database: str, dump: Path, jobs: int = 2, no_owner: bool = False
) -> None:
    """Run pg_restore into an existing, empty database; any error fails the restore."""
    argv = [
        pg_tool("pg_restore"),
        "--exit-on-error",
        "--no-password",
        f"--jobs={max(jobs, 1)}",
        f"--dbname={database}",
    ]
    if no_owner:
        argv += ["--no-owner", "--no-acl"]
    argv.append(str(dump))
    env = conninfo.child_env(dbname=database)
    settings = " ".join(f"-c {k}={v}" for k, v in RESTORE_SESSION_SETTINGS.items())
    env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {settings}".strip()
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    stderr = StderrCollector(process.stderr)
    stderr.start()
    wait_reporting_reads(process, "restore", dump.stat().st_size)
    stderr.join(timeout=10)
    if process.returncode != 0:
        raise RestoreFailed(f"pg_restore exited {process.returncode}: {error_lines(stderr.text())}")


def psql_file(conninfo: ConnInfo, database: str, path: Path) -> None:
    """Run a plain SQL dump with psql, stopping at the first error."""
    argv = [
        pg_tool("psql"),
        "--no-psqlrc",
        "--quiet",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        f"--dbname={database}",
        f"--file={path}",
    ]
    result = subprocess.run(
        argv,
        env=conninfo.child_env(dbname=database),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    if result.returncode != 0:
        message = error_lines(redact(result.stderr.decode(errors="replace")))
        raise RestoreFailed(f"psql exited {result.returncode}: {message}")
