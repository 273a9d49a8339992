"""Changing a database account's password, and proving which password works.

PostgreSQL: the new password is turned into a SCRAM-SHA-256 verifier on this side (libpq's
``PQencryptPasswordConn``) and the server is sent ``ALTER ROLE … PASSWORD '<verifier>'``: the
password itself never crosses the wire, and a server that logs statements logs only the
verifier (which is registered for redaction as well). MongoDB: ``updateUser`` with ``pwd``.

:func:`postgres_accepts` and :func:`mongodb_accepts` tell "this password is refused" (False)
from "the server cannot be reached" (an error), so an audit never passes because the server
was down.
"""

from __future__ import annotations

from dataclasses import replace

import psycopg
from psycopg import sql
from pydantic import SecretStr

from dr_runbooks.errors import ConfigError, ConnectionFailed, OperationFailed
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.redaction import redact, register_secret

__all__ = [
    "mongodb_accepts",
    "postgres_accepts",
    "set_mongodb_password",
    "set_postgres_password",
]


def set_postgres_password(conninfo: ConnInfo, role: str, password: str) -> None:
    """``ALTER ROLE role PASSWORD`` with a SCRAM-SHA-256 verifier of ``password``, connected
    as ``conninfo`` (a role allowed to alter ``role``)."""
    register_secret(password)
    with conninfo.connect() as conn:
        try:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if exists is None:
                raise ConfigError(f"role {role} does not exist on {conninfo.describe()}")
            verifier = conn.pgconn.encrypt_password(
                password.encode(), role.encode(), b"scram-sha-256"
            ).decode()
            register_secret(verifier)
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(verifier)
                )
            )
        except psycopg.Error as exc:
            raise OperationFailed(
                redact(f"cannot change the password of role {role}: {str(exc).splitlines()[0]}")
            ) from None


def postgres_accepts(conninfo: ConnInfo, role: str, password: str) -> bool:
    """Whether the server lets ``role`` in with ``password`` (False: refused)."""
    register_secret(password)
    attempt = replace(conninfo, user=role, password=SecretStr(password))
    try:
        with attempt.connect() as conn:
            conn.execute("SELECT 1")
    except ConnectionFailed as exc:
        if "password authentication failed" in str(exc) or "no password" in str(exc):
            return False
        raise
    return True


def set_mongodb_password(conninfo: MongoConnInfo, user: str, database: str, password: str) -> None:
    """``db.updateUser(user, {pwd: password})`` in ``database`` (where the user is defined)."""
    register_secret(password)
    import pymongo.errors

    client = conninfo.client()
    try:
        client[database].command("updateUser", user, pwd=password)
    except pymongo.errors.OperationFailure as exc:
        if exc.code == 11:  # UserNotFound
            raise ConfigError(f"MongoDB user {user} does not exist in {database}") from None
        raise OperationFailed(
            redact(f"cannot change the password of MongoDB user {user}: {exc.details or exc}")
        ) from None
    except pymongo.errors.PyMongoError as exc:
        raise OperationFailed(
            redact(f"cannot change the password of MongoDB user {user}: {exc}")
        ) from None
    finally:
        client.close()


def mongodb_accepts(conninfo: MongoConnInfo, user: str, database: str, password: str) -> bool:
    """Whether the server authenticates ``user`` (defined in ``database``) with ``password``."""
    register_secret(password)
    import pymongo.errors

    attempt = replace(
        conninfo, user=user, password=SecretStr(password), auth_source=database, factory=None
    )
    client = attempt.client()
    try:
        client.admin.command("ping")
    except pymongo.errors.OperationFailure as exc:
        if exc.code == 18:  # AuthenticationFailed
            return False
        raise OperationFailed(redact(f"MongoDB refused {user}: {exc}")) from None
    finally:
        client.close()
    return True
