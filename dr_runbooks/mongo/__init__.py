"""MongoDB dump formats, read and written without a server (and without Prefect).

- :func:`open_dump` opens whatever mongodump produced — an archive (plain, gzip or zstd), a
  directory dump, or the plan's legacy tarred directory dump — as a :class:`Dump`: its
  collections (namespace, type, options, indexes, uuid, users/roles/oplog marks) and raw BSON
  documents streamed one at a time. :func:`inspect_dump` summarises one as JSON-able data.
- :class:`ArchiveReader` / :class:`ArchiveWriter` are the streaming archive format itself.
- :func:`normalize_indexes` turns dumped index specs into what ``createIndexes`` accepts.

A malformed or damaged dump raises :class:`dr_runbooks.errors.InvalidArchive` with a one-line
message; an index no current server can build raises :class:`UnrestorableIndex` (a
``RestoreFailed``).

Connecting: :mod:`.connection` (connection details, the client factory seam, the tools' 0600
``--config`` file). Backing up: :mod:`.backup`.

Restoring, without ever leaving a target half-written.

Any :class:`~dr_runbooks.mongo.Dump` can be restored: our own backups (fetched from the
repository with every checksum verified first, :func:`.fetch.fetch_backup`) and real
mongodump output (an archive, plain or gzip, a directory dump, the plan's legacy
``backup_*.tar.gz``). The steps, each a function in a module of its own so a runbook can run
and report them one by one:

1. :func:`.plan.plan_restore` decides what goes where and refuses bad input *before anything is
   written*: for a dump that carries no manifest, it reads the whole dump once (every CRC,
   every time-series bucket, the framing) and counts its documents; every collection's index
   specs are normalised (an index no server can build is refused).
2. :func:`.side.restore_into_side` creates side databases ``<db>__restore_<id>``: collections with
   their options (``create``: capped, validator, collation, time-series...), documents as raw
   BSON in bounded batches (validation bypassed: they were valid on the source), indexes
   (``createIndexes``, after the data, as mongorestore does), then views in dependency order.
   On any failure the side databases are dropped. When an oplog will be replayed, the indexes
   wait for it: documents read at different moments may break a unique index that the replay
   repairs.
3. :func:`.verify.verify_restore`: document counts and index names of every collection against the
   manifest (or the counts read in step 1). Counts are checked before the oplog is replayed,
   because the manifest counts what the archive holds, not what the replay makes of it.
4. :func:`.oplog.replay_oplog` applies the archive's oplog (``mongodump --oplog``, or ours) to the
   side databases, as ``mongorestore --oplogReplay`` does: one ``applyOps`` per entry, with
   namespaces rewritten to the side database and collection UUIDs (``ui``) removed because
   the restored collections have new ones; no-ops and index-build bookkeeping are skipped;
   ``createIndexes``/``commitIndexBuild`` become ``createIndexes`` commands run after the last
   entry (servers since 4.4 refuse them in ``applyOps``); transactions are buffered until
   their commit and dropped when aborted or unfinished. Entries for any other database are
   never applied: only the side databases can be written.
5. :func:`.swap.swap_database` replaces the target. MongoDB cannot rename a database, so the swap
   works collection by collection: each current collection is moved to
   ``<db>__pre_restore_<stamp>`` with ``renameCollection`` (which across databases copies the
   data and indexes, then drops the source), then each restored collection is moved into the
   target the same way, and the views are recreated. Time-series collections cannot be renamed
   across databases, so they are copied bucket by bucket. This is not atomic: during the swap
   the application sees some collections restored and others not yet, which is why the runbook
   asks for the application to be stopped first. If a step fails, the message says where
   everything is.

:func:`.verification.verify_backup` is the test restore of the daily verification: fetch,
restore into a temporary database, compare, replay the oplog, drop it (also on failure), report.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .archive import (
        ARCHIVE_MAGIC,
        ArchiveDump,
        ArchiveHeader,
        ArchivePrelude,
        ArchiveReader,
        ArchiveWriter,
        NamespaceStats,
    )
    from .dumpdir import DirectoryDump, TarDump
    from .indexes import IndexPlan, UnrestorableIndex, create_indexes_command, normalize_indexes
    from .model import (
        OPLOG_NAMESPACE,
        CollectionMetadata,
        Dump,
        DumpCollection,
        Namespace,
        check_timeseries_bucket,
        parse_metadata,
    )
    from .source import inspect_dump, open_dump

#: Where each public name lives. Loaded on first use: a PostgreSQL backup that touches only
#: :mod:`.connection` (through the resolver) does not pay for BSON and the archive format.
_HOME = {
    **dict.fromkeys(
        (
            "ARCHIVE_MAGIC",
            "ArchiveDump",
            "ArchiveHeader",
            "ArchivePrelude",
            "ArchiveReader",
            "ArchiveWriter",
            "NamespaceStats",
        ),
        "archive",
    ),
    **dict.fromkeys(("DirectoryDump", "TarDump"), "dumpdir"),
    **dict.fromkeys(
        ("IndexPlan", "UnrestorableIndex", "create_indexes_command", "normalize_indexes"),
        "indexes",
    ),
    **dict.fromkeys(
        (
            "OPLOG_NAMESPACE",
            "CollectionMetadata",
            "Dump",
            "DumpCollection",
            "Namespace",
            "check_timeseries_bucket",
            "parse_metadata",
        ),
        "model",
    ),
    **dict.fromkeys(("inspect_dump", "open_dump"), "source"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


__all__ = [
    "ARCHIVE_MAGIC",
    "OPLOG_NAMESPACE",
    "ArchiveDump",
    "ArchiveHeader",
    "ArchivePrelude",
    "ArchiveReader",
    "ArchiveWriter",
    "CollectionMetadata",
    "DirectoryDump",
    "Dump",
    "DumpCollection",
    "IndexPlan",
    "Namespace",
    "NamespaceStats",
    "TarDump",
    "UnrestorableIndex",
    "check_timeseries_bucket",
    "create_indexes_command",
    "inspect_dump",
    "normalize_indexes",
    "open_dump",
    "parse_metadata",
]
