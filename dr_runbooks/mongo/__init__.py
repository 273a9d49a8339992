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
"""

from __future__ import annotations

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
