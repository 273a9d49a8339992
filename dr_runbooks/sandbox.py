"""The sandbox drills restore into, kept apart from production.

dr.yaml's ``sandbox:`` names a PostgreSQL and/or a MongoDB server (a block or an environment
variable with its DSN) and an optional name prefix. A database ``shop`` is restored there as
``<prefix>shop``. A sandbox without a prefix must be a server no protected system uses: the
drill refuses to start otherwise (:func:`check_apart`), since restoring ``shop`` there would
replace production's ``shop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dr_runbooks.config import Config, SandboxServer
from dr_runbooks.errors import ConfigError
from dr_runbooks.locks import Lock, PostgresLock
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.targets import BlockSource, Connection, connection_from_spec

__all__ = [
    "Sandbox",
    "check_apart",
    "connection_spec",
    "resolve",
    "same_server",
    "sandbox_database",
    "sandbox_lock",
]


def connection_spec(server: SandboxServer) -> str:
    """The sandbox's connection as a runbook's ``connection`` parameter (a block's name or
    ``env:VAR``), so the real runbooks resolve it as they resolve any override."""
    if server.connection.block:
        return server.connection.block
    return f"env:{server.connection.dsn_env}"


def sandbox_database(prefix: str, database: str) -> str:
    name = f"{prefix}{database}"
    if len(name.encode()) > 40:
        # The runbooks add __restore_<token> (19 bytes) and PostgreSQL stops at 63.
        raise ConfigError(f"the sandbox database name {name!r} is too long (40 bytes at most)")
    return name


def _endpoint(conn: Connection) -> tuple[str, ...]:
    if isinstance(conn, MongoConnInfo):
        return tuple(sorted(h.lower() for h in conn.hosts))
    host = (conn.host or "/var/run/postgresql").lower()
    if host in ("127.0.0.1", "::1"):
        host = "localhost"
    return (host, str(conn.port or 5432))


def same_server(a: Connection, b: Connection) -> bool:
    """Whether two connections reach the same server (by host and port; a name and an
    address of one machine are not told apart, so give the sandbox a prefix when unsure)."""
    return _endpoint(a) == _endpoint(b)


@dataclass
class Sandbox:
    """One engine's sandbox resolved for a run."""

    engine: str
    conninfo: Any  # ConnInfo for postgres, MongoConnInfo for mongodb
    spec: str
    prefix: str

    def database(self, name: str) -> str:
        return sandbox_database(self.prefix, name)

    def describe(self) -> str:
        where = (
            self.conninfo.describe("")
            if isinstance(self.conninfo, ConnInfo)
            else (self.conninfo.describe())
        )
        return where + (f" (prefix {self.prefix})" if self.prefix else "")


def resolve(config: Config, engine: str, blocks: BlockSource | None = None) -> Sandbox | None:
    """The sandbox of ``engine`` declared in dr.yaml, or None."""
    if config.sandbox is None:
        return None
    server = config.sandbox.postgres if engine == "postgres" else config.sandbox.mongodb
    if server is None:
        return None
    spec = connection_spec(server)
    conninfo, _ = connection_from_spec(spec, engine, blocks)
    return Sandbox(engine, conninfo, spec, server.prefix)


def check_apart(sandbox: Sandbox, production: dict[str, Connection]) -> None:
    """Refuse a sandbox that is a protected system's server unless it has a prefix."""
    if sandbox.prefix:
        return
    for system, conn in sorted(production.items()):
        if same_server(sandbox.conninfo, conn):
            raise ConfigError(
                f"the {sandbox.engine} sandbox {sandbox.describe()} is the server of system "
                f"{system!r}: restoring there would replace production's databases; give the "
                "sandbox another server or a prefix"
            )


def sandbox_lock(sandbox: Sandbox) -> Lock:
    """One drill or recovery test per sandbox at a time: a lock on the sandbox's server that
    dies with the run holding it."""
    if not isinstance(sandbox.conninfo, ConnInfo):
        raise ConfigError("only a PostgreSQL sandbox can be locked")
    where = sandbox.describe()
    return PostgresLock(sandbox.conninfo, f"drill sandbox {sandbox.prefix}", f"the sandbox {where}")
