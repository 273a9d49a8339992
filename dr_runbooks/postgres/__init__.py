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
========================  ================================================================
"""

from dr_runbooks.postgres.connection import ConnInfo

__all__ = ["ConnInfo"]
