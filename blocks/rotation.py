"""Reading and replacing the password a saved connection block holds (the security-breach
runbook's rotation): a ``DR PostgreSQL Database`` or ``DR MongoDB Database`` block, whether it
keeps the password in its own field or inside its DSN or URI."""

from __future__ import annotations

from dataclasses import replace

from pydantic import SecretStr

from blocks.loading import load_block
from blocks.mongo import MongoDatabase
from blocks.postgres import PostgresDatabase
from dr_runbooks.errors import ConfigError
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.redaction import register_secret

__all__ = ["connection_password", "replace_connection_password"]


def _load(name: str, engine: str) -> PostgresDatabase | MongoDatabase:
    block_type = MongoDatabase if engine == "mongodb" else PostgresDatabase
    block = load_block(name, block_type, f"{engine} connection block")
    if not isinstance(block, PostgresDatabase | MongoDatabase):
        raise ConfigError(f"block {name!r} is not a connection block")
    return block


def connection_password(name: str, engine: str) -> str | None:
    """The password the block ``name`` holds now, or None."""
    block = _load(name, engine)
    if isinstance(block, PostgresDatabase):
        password = block.conninfo().password
    else:
        password = block.conninfo().password
    value = password.get_secret_value() if password is not None else None
    register_secret(value)
    return value


def replace_connection_password(name: str, engine: str, password: str) -> None:
    """Save the block ``name`` again with ``password`` in place of its old one."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    register_secret(password)
    block = _load(name, engine)
    if isinstance(block, PostgresDatabase):
        if block.dsn is not None:
            params = conninfo_to_dict(block.dsn.get_secret_value())
            params["password"] = password
            block.dsn = SecretStr(make_conninfo("", **params))
            register_secret(block.dsn.get_secret_value())
        else:
            block.password = SecretStr(password)
    elif block.uri is not None:
        info = MongoConnInfo.from_uri(block.uri.get_secret_value())
        block.uri = SecretStr(replace(info, password=SecretStr(password)).uri())
        register_secret(block.uri.get_secret_value())
    else:
        block.password = SecretStr(password)
    block.save(name, overwrite=True)
