"""MongoDB connection details, kept apart from their password, and how clients are made.

A :class:`MongoConnInfo` comes from a URI (``mongodb://`` or ``mongodb+srv://``) or from
fields. Its password is registered for redaction the moment it is known and reaches:

- pymongo only as a ``MongoClient`` argument, in this process;
- ``mongodump``/``mongorestore`` only through a ``--config`` YAML file created with mode 0600
  in a private temporary directory and removed when the program has finished
  (:func:`tools_config_file`): never through argv, where every ``ps`` would show it.

Every piece of code that talks to a server gets its client from a *client factory* — a
zero-argument callable returning a pymongo ``MongoClient`` or anything that behaves like one.
:meth:`MongoConnInfo.client_factory` makes real clients; the ``MongoDatabase`` block passes its
own ``get_client``; tests pass a fake server's client. That callable is the one seam.

pymongo's errors are translated at this edge by :func:`connection_error`, as psycopg's are for
PostgreSQL: a server that cannot be reached is transient, refused credentials are bad input.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from dr_runbooks.errors import BadInput, ConnectionFailed, ServerUnreachable
from dr_runbooks.redaction import redact, register_secret
from dr_runbooks.text import first_line

__all__ = [
    "SYSTEM_DATABASES",
    "ClientFactory",
    "MongoConnInfo",
    "check_database_name",
    "connection_error",
    "tools_config_file",
]

#: A callable that returns a new pymongo ``MongoClient`` (or a client that behaves like one).
ClientFactory = Callable[[], Any]

#: Databases the server owns; never protected or restored as application data.
SYSTEM_DATABASES = frozenset({"admin", "local", "config"})

_URI = re.compile(
    r"^(?P<scheme>mongodb(?:\+srv)?)://(?:(?P<userinfo>[^@/?#]*)@)?(?P<hosts>[^/?#]*)"
    r"(?:/(?P<database>[^?#]*))?(?:\?(?P<query>[^#]*))?$"
)
_INVALID_DB_CHARACTERS = frozenset('/\\. "$*<>:|?')
_SERVER_SELECTION_TIMEOUT_MS = 10_000


def check_database_name(name: str, what: str = "database") -> str:
    """Refuse a name MongoDB would refuse, before any server is asked."""
    if not name or len(name.encode()) > 63 or any(c in _INVALID_DB_CHARACTERS for c in name):
        raise BadInput(f"invalid MongoDB {what} name {name!r}")
    return name


@dataclass(frozen=True)
class MongoConnInfo:
    """Where and as whom to connect; ``password`` (and the URI carrying it) is never shown.

    ``factory`` overrides how clients are made (a block's ``get_client``, a test's fake);
    without one, :meth:`client` builds a pymongo ``MongoClient`` from these details.
    """

    scheme: str = "mongodb"
    hosts: tuple[str, ...] = ("localhost:27017",)
    user: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    database: str | None = None
    auth_source: str | None = None
    tls: bool = False
    replica_set: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    factory: ClientFactory | None = field(default=None, repr=False, compare=False)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_uri(cls, uri: str) -> MongoConnInfo:
        """Parse a MongoDB URI without contacting anything (no SRV lookup happens here).

        A malformed URI is :class:`BadInput` with the password masked in the message.
        """
        match = _URI.match(uri.strip())
        if not match:
            raise BadInput(
                f"not a MongoDB URI: {redact(uri)!r} (expected mongodb://[user:password@]host/)"
            )
        user = password = None
        if match.group("userinfo") is not None:
            raw_user, colon, raw_password = match.group("userinfo").partition(":")
            user = urllib.parse.unquote(raw_user) or None
            if colon:
                password = urllib.parse.unquote(raw_password)
                register_secret(password)
                register_secret(raw_password)
        hosts = tuple(h for h in match.group("hosts").split(",") if h)
        if not hosts:
            raise BadInput(f"MongoDB URI {redact(uri)!r} names no host")
        query = urllib.parse.parse_qsl(match.group("query") or "", keep_blank_values=True)
        known: dict[str, str] = {}
        options: list[tuple[str, str]] = []
        for key, value in query:
            lowered = key.lower()
            if lowered in ("authsource", "tls", "ssl", "replicaset"):
                known[lowered] = value
            else:
                options.append((key, value))
        database = urllib.parse.unquote(match.group("database") or "") or None
        return cls(
            scheme=match.group("scheme"),
            hosts=hosts,
            user=user,
            password=SecretStr(password) if password else None,
            database=database,
            auth_source=known.get("authsource") or None,
            tls=(known.get("tls") or known.get("ssl") or "").lower() == "true",
            replica_set=known.get("replicaset") or None,
            options=tuple(options),
        )

    @classmethod
    def from_fields(
        cls,
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        auth_source: str | None = None,
        tls: bool = False,
        replica_set: str | None = None,
    ) -> MongoConnInfo:
        register_secret(password)
        hosts = tuple(
            h if ":" in h or port is None else f"{h}:{port}"
            for h in (host or "localhost").split(",")
        )
        return cls(
            hosts=hosts,
            user=user,
            password=SecretStr(password) if password else None,
            database=database,
            auth_source=auth_source,
            tls=tls,
            replica_set=replica_set,
        )

    def with_factory(self, factory: ClientFactory | None) -> MongoConnInfo:
        return replace(self, factory=factory)

    # -- use ----------------------------------------------------------------------------------

    def uri(self) -> str:
        """The full URI, password included: for a client or a 0600 config file, never argv."""
        userinfo = ""
        if self.user:
            userinfo = urllib.parse.quote(self.user, safe="")
            if self.password is not None:
                userinfo += ":" + urllib.parse.quote(self.password.get_secret_value(), safe="")
            userinfo += "@"
        query: list[tuple[str, str]] = list(self.options)
        if self.auth_source:
            query.append(("authSource", self.auth_source))
        if self.tls:
            query.append(("tls", "true"))
        if self.replica_set:
            query.append(("replicaSet", self.replica_set))
        path = "/" + urllib.parse.quote(self.database or "", safe="")
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        return f"{self.scheme}://{userinfo}{','.join(self.hosts)}{path}{suffix}"

    def describe(self, database: str | None = None) -> str:
        """``user@host:port/db`` for messages and reports; never the password."""
        user = f"{self.user}@" if self.user else ""
        name = database if database is not None else self.database or ""
        return f"{user}{','.join(self.hosts)}/{name}"

    def default_system_name(self) -> str:
        """A system name for ad-hoc runs, derived from the first host."""
        host = self.hosts[0].split(":")[0] if self.hosts else "mongodb"
        return re.sub(r"[^A-Za-z0-9_-]+", "-", host).strip("-") or "mongodb"

    def client(self) -> Any:
        """A new client: from ``factory`` when one is set, else a pymongo ``MongoClient``."""
        if self.factory is not None:
            return self.factory()
        return self.pymongo_client()

    def pymongo_client(self) -> Any:
        import pymongo
        from pymongo.errors import ConfigurationError, InvalidURI

        try:
            return pymongo.MongoClient(
                self.uri(),
                serverSelectionTimeoutMS=_SERVER_SELECTION_TIMEOUT_MS,
                appname="dr-runbooks",
            )
        except (ConfigurationError, InvalidURI, ValueError) as exc:
            raise BadInput(f"cannot use {self.describe()}: {redact(str(exc))}") from None

    def client_factory(self) -> ClientFactory:
        return self.client

    def tools_config(self) -> str:
        """The YAML for ``mongodump``/``mongorestore --config``: the URI with the password.

        A JSON string is a valid YAML double-quoted scalar, so every character survives.
        """
        return f"uri: {json.dumps(self.uri())}\n"


@contextlib.contextmanager
def tools_config_file(info: MongoConnInfo) -> Iterator[Path]:
    """A ``--config`` file for the MongoDB tools: mode 0600 from its creation (never
    world-readable, not even for an instant), in a private directory, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="dr-mongo-"))
    path = directory / "tools.yaml"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(info.tools_config())
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


#: Server error codes that say the request itself is wrong: retrying cannot help.
_REFUSED_CODES = frozenset({18, 13, 8000})  # AuthenticationFailed, Unauthorized, Atlas auth


def connection_error(
    exc: BaseException, context: str
) -> ConnectionFailed | ServerUnreachable | None:
    """pymongo's error as ours, or None when it is not about reaching the server: refused
    credentials are bad input (:class:`ConnectionFailed`), a server that cannot be reached is
    transient (:class:`ServerUnreachable`)."""
    from pymongo.errors import ConnectionFailure, OperationFailure

    message = f"{context}: {first_line(exc)}"
    if isinstance(exc, OperationFailure) and exc.code in _REFUSED_CODES:
        return ConnectionFailed(message)
    if isinstance(exc, ConnectionFailure):
        return ServerUnreachable(message)
    return None
