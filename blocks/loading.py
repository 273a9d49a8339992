"""Loading saved blocks by name for the resolver in :mod:`dr_runbooks.targets`.

The engine never imports Prefect: callers that may use blocks (tasks, the CLI) pass
:data:`PREFECT_BLOCKS`. Every failure (no server, no such block, the wrong type) becomes one
:class:`~dr_runbooks.errors.ConfigError` line, with any credential masked.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block

from dr_runbooks.errors import ConfigError
from dr_runbooks.redaction import redact
from dr_runbooks.repository import Repository
from dr_runbooks.targets import Connection

__all__ = ["PREFECT_BLOCKS", "PrefectBlocks", "load_block"]


def load_block(name: str, block_type: type[Block] | None = None, what: str = "block") -> Any:
    """A saved block: ``slug/name`` loads any type; a plain name loads ``block_type``."""
    try:
        if block_type is None or "/" in name:
            return Block.load(name)
        return block_type.load(name)
    except Exception as exc:  # no server, no such block, wrong type
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot load {what} {name!r}: {redact(first)}") from None


class PrefectBlocks:
    """The saved Prefect blocks of this project (:class:`dr_runbooks.targets.BlockSource`)."""

    def connection(self, name: str, engine: str) -> tuple[Connection, list[str]]:
        from blocks.mongo import MongoDatabase
        from blocks.postgres import PostgresDatabase

        block_type = MongoDatabase if engine == "mongodb" else PostgresDatabase
        block = load_block(name, block_type, f"{engine} connection block")
        conninfo = getattr(block, "conninfo", None)
        if conninfo is None:
            raise ConfigError(f"block {name!r} is not a {engine} connection block")
        return conninfo(), list(getattr(block, "databases", None) or [])

    def repository(self, name: str, label: str) -> Repository:
        block = load_block(name, what="repository block")
        get = getattr(block, "get_repository", None)
        if get is None:
            raise ConfigError(f"block {name!r} is not a backup repository")
        repository: Repository = get(label or name)
        return repository


PREFECT_BLOCKS = PrefectBlocks()
