"""PostgreSQL connection details, kept apart from their password.

A :class:`ConnInfo` is built from a DSN (URI or key=value) or from fields. Its password is a
:class:`pydantic.SecretStr`, registered for redaction the moment it is parsed, and reaches
libpq only through a keyword argument (psycopg) or the ``PGPASSWORD`` environment variable of a
child process (pg_dump, pg_restore, psql): never through argv.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from dr_runbooks.errors import BadInput, ConfigError, ConnectionFailed, ServerUnreachable
from dr_runbooks.redaction import redact, register_secret
from dr_runbooks.text import first_line

__all__ = ["ConnInfo", "connection_error", "free_port"]

_ENV_NAMES = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}


@dataclass(frozen=True)
class ConnInfo:
    """Where and as whom to connect; ``password`` is never shown."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    dbname: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    sslmode: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dsn(cls, dsn: str) -> ConnInfo:
        """Parse a libpq DSN; raise :class:`BadInput` with a redacted message if it is malformed."""
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            # libpq quotes the part it could not read, which may be a piece of the password.
            reason = re.sub(r'"[^"]*"', '"***"', str(exc).splitlines()[0])
            raise BadInput(f"bad DSN {_shown(dsn)}: {redact(reason)}") from None
        password = params.pop("password", None)
        register_secret(str(password) if password else None)
        port = params.pop("port", None)
        try:
            port_number = int(port) if port else None
        except ValueError:
            raise BadInput(f"bad DSN {_shown(dsn)}: port {port!r} is not a number") from None
        known = {
            k: str(params.pop(k)) for k in ("host", "user", "dbname", "sslmode") if k in params
        }
        return cls(
            host=known.get("host"),
            port=port_number,
            user=known.get("user"),
            dbname=known.get("dbname"),
            password=SecretStr(str(password)) if password else None,
            sslmode=known.get("sslmode"),
            options={k: str(v) for k, v in params.items()},
        )

    def with_dbname(self, dbname: str) -> ConnInfo:
        return replace(self, dbname=dbname)

    def with_options(self, **options: str) -> ConnInfo:
        """The same connection with more libpq parameters (``application_name``…)."""
        return replace(self, options={**self.options, **options})

    @property
    def database(self) -> str:
        if not self.dbname:
            raise ConfigError("no database name given (add it to the DSN or the system's config)")
        return self.dbname

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`psycopg.connect` (password included, never logged)."""
        kwargs: dict[str, Any] = {k: v for k, v in self.options.items()}
        for name in ("host", "port", "user", "dbname", "sslmode"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        kwargs.setdefault("connect_timeout", 10)
        return kwargs

    def connect(
        self, dbname: str | None = None, autocommit: bool = True
    ) -> psycopg.Connection[Any]:
        """Open a connection; connection errors become one redacted line."""
        kwargs = self.connect_kwargs()
        if dbname is not None:
            kwargs["dbname"] = dbname
        try:
            return psycopg.connect(autocommit=autocommit, **kwargs)
        except psycopg.OperationalError as exc:
            raise connection_error(exc, f"cannot connect to {self.describe(dbname)}") from None

    def child_env(self, dbname: str | None = None) -> dict[str, str]:
        """Environment for a libpq program (pg_dump, psql…): connection and password, no argv."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        values: dict[str, Any] = dict(self.options)
        for name in ("host", "port", "user", "dbname", "sslmode"):
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        if dbname is not None:
            values["dbname"] = dbname
        for name, value in values.items():
            var = _ENV_NAMES.get(name)
            if var is not None:
                env[var] = str(value)
        if self.password is not None:
            env["PGPASSWORD"] = self.password.get_secret_value()
        return env

    def describe(self, dbname: str | None = None) -> str:
        """``user@host:port/db`` for messages; never the password."""
        host = self.host or "local socket"
        if host.startswith("/"):
            host = f"socket {host}"
        port = f":{self.port}" if self.port else ""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{host}{port}/{dbname or self.dbname or ''}"

    def default_system_name(self) -> str:
        """A system name for ad-hoc runs, derived from the host."""
        host = self.host or ""
        if not host or host.startswith("/"):
            host = socket.gethostname()
        name = host.split(",")[0].replace(".", "-").replace(":", "-").strip("-")
        return f"{name}-{self.port}" if self.port and self.port != 5432 else name


def _shown(dsn: str) -> str:
    """A DSN that failed to parse, for the message: a URI with its password masked; a
    key=value string not at all (where its password ends cannot be told once it is broken)."""
    return repr(redact(dsn)) if "://" in dsn else "(key=value form)"


# libpq reports why a connection failed only in words (no SQLSTATE before the session exists).
# These say the request itself is wrong: retrying cannot help. Anything else (refused, timed
# out, reset, a name that does not resolve, a server starting up or out of connections) may
# pass, and is retried.
_REFUSED_FOR_GOOD = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "no password supplied",
    "requested scram",
    "requested password",
    "certificate",
    "invalid sslmode",
    "permission denied for database",
)


def connection_error(exc: BaseException, context: str) -> ConnectionFailed | ServerUnreachable:
    """psycopg's connection error as ours: bad input when the server refused the request
    (credentials, an unknown database or role), transient when it could not be reached."""
    message = f"{context}: {first_line(exc)}"
    text = str(exc).lower()
    if any(reason in text for reason in _REFUSED_FOR_GOOD):
        return ConnectionFailed(message)
    return ServerUnreachable(message)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a cluster of our own (a test recovery)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
