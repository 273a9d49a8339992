"""WAL file names, log sequence numbers and where archived WAL lives in a repository.

PostgreSQL names four kinds of files in ``pg_wal`` that reach an archive::

    000000010000000A0000003F            a segment: timeline, then the segment number in two halves
    000000010000000A0000003F.partial    the unfinished last segment of a timeline (at promotion),
                                        or the one ``pg_receivewal`` is still writing
    0000000A0000003F00000028.backup     (really ``<segment>.<offset>.backup``) a base backup's
                                        start and stop, written when it ends
    00000002.history                    how timeline 2 branched off its parent

All start with the timeline in 8 hex digits, which picks the folder. Archived, each is one
object ``postgres/<system>/wal/<timeline>/<name>.zst``.

The segment number in a name depends on the cluster's WAL segment size (16 MB unless initdb was
told otherwise): the low half counts segments within one 4 GB "log", so with 16 MB segments it
runs from ``00000000`` to ``000000FF``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dr_runbooks.errors import BadInput

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "WalName",
    "format_lsn",
    "is_system_name",
    "parse_lsn",
    "parse_wal_name",
    "segment_name",
    "wal_key",
    "wal_prefix",
]

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_LOG_SIZE = 0x1_0000_0000

_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$")
_BACKUP = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.([0-9A-F]{8})\.backup$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


@dataclass(frozen=True)
class WalName:
    """A parsed WAL file name; ``log``/``seg`` are None for a history file."""

    name: str
    kind: str  # "segment", "partial", "backup" or "history"
    timeline: int
    log: int | None = None
    seg: int | None = None

    @property
    def segment(self) -> str | None:
        """The segment a partial or backup file belongs to (a segment's own name)."""
        return self.name[:24] if self.log is not None else None

    def segno(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
        """The segment's number counted from LSN 0, for arithmetic across logs."""
        if self.log is None or self.seg is None:
            raise ValueError(f"{self.name} is not a WAL segment")
        return self.log * (_LOG_SIZE // segment_size) + self.seg

    def start_lsn(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
        return self.segno(segment_size) * segment_size


def parse_wal_name(name: str) -> WalName:
    """Parse a file name PostgreSQL archives or asks for; anything else is :class:`BadInput`."""
    if match := _SEGMENT.match(name):
        tli, log, seg = (int(g, 16) for g in match.groups())
        return WalName(name, "segment", tli, log, seg)
    if match := _PARTIAL.match(name):
        tli, log, seg = (int(g, 16) for g in match.groups())
        return WalName(name, "partial", tli, log, seg)
    if match := _BACKUP.match(name):
        tli, log, seg = (int(g, 16) for g in match.groups()[:3])
        return WalName(name, "backup", tli, log, seg)
    if match := _HISTORY.match(name):
        return WalName(name, "history", int(match.group(1), 16))
    raise BadInput(f"{name!r} is not the name of a WAL segment, history or backup file")


def segment_name(timeline: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The file name of segment ``segno`` on ``timeline``."""
    per_log = _LOG_SIZE // segment_size
    return f"{timeline:08X}{segno // per_log:08X}{segno % per_log:08X}"


def parse_lsn(text: str) -> int:
    """``"0/3000148"`` → 50331976; malformed: :class:`BadInput`."""
    match = _LSN.match(text.strip())
    if not match:
        raise BadInput(f"malformed LSN {text!r} (expected e.g. 0/3000148)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def is_system_name(system: str) -> bool:
    return bool(system) and "/" not in system and system not in (".", "..")


def wal_prefix(system: str, timeline: int | None = None) -> str:
    """``postgres/<system>/wal/`` or one timeline's folder in it."""
    if not is_system_name(system):
        raise BadInput(f"invalid system name {system!r}")
    base = f"postgres/{system}/wal/"
    return base if timeline is None else f"{base}{timeline:08X}/"


def wal_key(system: str, name: str) -> str:
    """The object key of an archived WAL file (``name`` as PostgreSQL names it)."""
    return f"{wal_prefix(system, parse_wal_name(name).timeline)}{name}.zst"
