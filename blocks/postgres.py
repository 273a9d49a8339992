"""The PostgreSQL connection block."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from blocks.fields import OptionalSecret
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.redaction import register_secret

__all__ = ["PostgresDatabase"]


class PostgresDatabase(Block):
    """A PostgreSQL server and database to protect or restore into.

    Give either a DSN or the separate fields. The password (or the DSN, which may carry one) is
    secret: it is never printed and reaches pg_dump and psql only through their environment.
    """

    _block_type_name = "DR PostgreSQL Database"
    _block_type_slug = "dr-postgres-database"
    _description = "Connection to a PostgreSQL database protected by dr-runbooks."

    dsn: OptionalSecret = Field(
        default=None,
        description="libpq DSN or URI, e.g. postgresql://app@db.internal:5432/shop. "
        "Use this or the fields below, not both.",
    )
    host: str | None = Field(default=None, description="Host name, IP, or Unix socket directory.")
    port: int | None = Field(default=None, description="Port (default 5432).")
    user: str | None = Field(default=None, description="Role to connect as.")
    password: OptionalSecret = Field(default=None, description="The role's password.")
    dbname: str | None = Field(default=None, description="Database to back up or restore.")
    sslmode: str | None = Field(
        default=None, description="libpq sslmode: disable, require, verify-full…"
    )

    @model_validator(mode="after")
    def _one_source(self) -> PostgresDatabase:
        if self.dsn is not None and any((self.host, self.port, self.user, self.password)):
            raise ValueError("give either a DSN or host/port/user/password, not both")
        return self

    def conninfo(self) -> ConnInfo:
        """The connection details as :class:`~dr_runbooks.postgres.ConnInfo`."""
        if self.dsn is not None:
            info = ConnInfo.from_dsn(self.dsn.get_secret_value())
            return info if self.dbname is None else info.with_dbname(self.dbname)
        if self.password is not None:
            register_secret(self.password.get_secret_value())
        return ConnInfo(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=self.dbname,
            password=self.password,
            sslmode=self.sslmode,
        )

    def get_connection(self, dbname: str | None = None, autocommit: bool = True) -> Any:
        """A psycopg connection (the client factory of this block)."""
        return self.conninfo().connect(dbname=dbname, autocommit=autocommit)
