"""The MongoDB connection block."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from blocks.fields import OptionalSecret
from dr_runbooks.errors import BadInput
from dr_runbooks.mongo.connection import SYSTEM_DATABASES, MongoConnInfo, check_database_name
from dr_runbooks.redaction import register_secret

__all__ = ["MongoDatabase"]


class MongoDatabase(Block):
    """A MongoDB server (standalone or replica set) and the databases on it to protect.

    Give either a URI or the separate fields. The password (or the URI, which may carry one) is
    secret: it is never printed, and reaches mongodump only through a 0600 ``--config`` file.
    """

    _block_type_name = "DR MongoDB Database"
    _block_type_slug = "dr-mongo-database"
    _description = "Connection to a MongoDB server protected by dr-runbooks."

    uri: OptionalSecret = Field(
        default=None,
        description="MongoDB URI, e.g. mongodb://admin:PASSWORD@db.internal:27017/"
        "?replicaSet=rs0&authSource=admin. Use this or the fields below, not both.",
    )
    host: str | None = Field(
        default=None, description="Host name or IP; several as host1:27017,host2:27017."
    )
    port: int | None = Field(default=None, description="Port (default 27017).")
    user: str | None = Field(default=None, description="User to authenticate as.")
    password: OptionalSecret = Field(default=None, description="The user's password.")
    auth_source: str | None = Field(
        default=None, description="Database the user is defined in (usually admin)."
    )
    tls: bool = Field(default=False, description="Connect with TLS.")
    replica_set: str | None = Field(default=None, description="Replica set name, e.g. rs0.")
    databases: list[str] = Field(
        default_factory=list,
        description="Databases to protect; empty means every database except admin, local "
        "and config.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> MongoDatabase:
        fields = (
            self.host,
            self.port,
            self.user,
            self.password,
            self.auth_source,
            self.replica_set,
        )
        if self.uri is not None and (any(f is not None for f in fields) or self.tls):
            raise ValueError(
                "give either a URI or host/port/user/password/auth_source/tls/replica_set, not both"
            )
        if self.password is not None and not self.user:
            raise ValueError("a password needs a user")
        for name in self.databases:
            if name in SYSTEM_DATABASES:
                raise ValueError(f"{name} is a system database and cannot be protected")
        try:
            for name in self.databases:
                check_database_name(name)
            if self.uri is not None:
                MongoConnInfo.from_uri(self.uri.get_secret_value())  # malformed: refused now
        except BadInput as exc:
            raise ValueError(str(exc)) from None
        return self

    def conninfo(self) -> MongoConnInfo:
        """The connection details; their client factory is this block's :meth:`get_client`."""
        if self.uri is not None:
            info = MongoConnInfo.from_uri(self.uri.get_secret_value())
        else:
            password = self.password.get_secret_value() if self.password else None
            register_secret(password)
            info = MongoConnInfo.from_fields(
                host=self.host,
                port=self.port,
                user=self.user,
                password=password,
                auth_source=self.auth_source,
                tls=self.tls,
                replica_set=self.replica_set,
            )
        return info.with_factory(self.get_client)

    def get_client(self) -> Any:
        """A pymongo ``MongoClient`` (the client factory of this block)."""
        return self.conninfo().pymongo_client()
