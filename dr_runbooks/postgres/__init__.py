"""PostgreSQL: backups in an exported snapshot, and restores into a new database beside the
live one (no Prefect here).

========================  ================================================================
:mod:`.connection`        connection details (:class:`ConnInfo`), password kept apart
:mod:`.tools`             PostgreSQL's client programs by full path, watching them run
:mod:`.snapshot`          the exported snapshot a backup runs in; settings and roles
:mod:`.dump`              pg_dump as a stream
:mod:`.backup`            one backup into a repository; fetching one back, verified
:mod:`.restore`           a fetched backup into a NEW database
:mod:`.checks`            row counts and SQL checks of a restored database
:mod:`.server`            whole databases: assess, list, drop, swap by rename
:mod:`.drill_data`        the drill's sample application database
:mod:`.wal`               continuous WAL archiving: push, fetch, spool, stream
:mod:`.basebackup`        physical base backups (full, incremental) into a repository
:mod:`.pitr`              recovery windows, timelines, choosing a backup chain, WAL retention
:mod:`.cluster`           a new cluster beside the live one, recovered to a point in time
========================  ================================================================

Nothing is imported here eagerly: ``dr wal push`` runs once per WAL file and must not pay for
psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dr_runbooks.postgres.connection import ConnInfo

__all__ = ["ConnInfo"]


def __getattr__(name: str) -> Any:
    if name == "ConnInfo":
        from dr_runbooks.postgres.connection import ConnInfo

        return ConnInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
