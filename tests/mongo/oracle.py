"""Independent ways to know what the fixtures hold, for the tests to compare our readers with.

Nothing here uses ``dr_runbooks.mongo``: archives are split with ``struct`` and decoded with
``bson``, ``.bson`` files are counted with ``bson.decode_file_iter``, and the CRC is a bitwise
implementation of the CRC-64/XZ definition (no table), so that a shared mistake is unlikely.
Also: discovery of the fixtures, so that new upstream fixtures are covered automatically.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson

from tests.shared_data import shared_data_dir

MONGO_TOOLS = "mongodb-mongo-tools"
ARGON = "argon-lab-argon"
MISSING = "(shared data missing)"

_CRC64_XZ_REFLECTED_POLY = 0xC96C5795D7870F42
_MASK = (1 << 64) - 1


def crc64_xz_bitwise(data: bytes) -> int:
    """CRC-64/XZ straight from its definition, one bit at a time; signed like Go's int64()."""
    crc = _MASK
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC64_XZ_REFLECTED_POLY if crc & 1 else 0)
    crc ^= _MASK
    return crc - (1 << 64) if crc >= 1 << 63 else crc


@dataclass
class Block:
    header: dict[str, Any]
    documents: list[bytes] = field(default_factory=list)


@dataclass
class ParsedArchive:
    header: dict[str, Any]
    header_raw: bytes
    preludes: list[dict[str, Any]]
    blocks: list[Block]

    def documents(self, namespace: str) -> list[bytes]:
        return [
            document
            for block in self.blocks
            if f"{block.header['db']}.{block.header['collection']}" == namespace
            for document in block.documents
        ]

    def eof_crc(self, namespace: str) -> int:
        (crc,) = [
            block.header["CRC"]
            for block in self.blocks
            if block.header["EOF"]
            and f"{block.header['db']}.{block.header['collection']}" == namespace
        ]
        return int(crc)


def parse_archive(data: bytes) -> ParsedArchive:
    """Split an archive strictly along the spec; assertion errors on any deviation."""
    assert data[:4] == b"\x6d\xe2\x99\x81", "magic"
    pos = 4

    def item() -> bytes | None:
        nonlocal pos
        (size,) = struct.unpack_from("<i", data, pos)
        if size == -1:
            pos += 4
            return None
        document = data[pos : pos + size]
        assert len(document) == size and document[-1] == 0
        pos += size
        return document

    header_raw = item()
    assert header_raw is not None
    preludes = []
    while (document := item()) is not None:
        preludes.append(bson.decode(document))
    blocks = []
    while pos < len(data):
        raw_header = item()
        assert raw_header is not None, "a block must start with a namespace header"
        block = Block(bson.decode(raw_header))
        while (document := item()) is not None:
            block.documents.append(document)
        if block.header["EOF"]:
            assert not block.documents, "an EOF block holds no documents"
        blocks.append(block)
    assert pos == len(data)
    return ParsedArchive(bson.decode(header_raw), header_raw, preludes, blocks)


def read_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def count_bson_file(path: Path) -> int:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return sum(1 for _ in bson.decode_file_iter(io.BytesIO(data)))


def _relative(path: Path) -> str:
    return path.relative_to(shared_data_dir()).as_posix()


def discover_archives() -> list[str]:
    """Every ``*.archive`` file of the shared data, as paths relative to it."""
    base = shared_data_dir()
    found = sorted(
        _relative(path)
        for folder in (MONGO_TOOLS, ARGON)
        if (base / folder).is_dir()
        for path in (base / folder).rglob("*.archive")
    )
    return found or [MISSING]


def _has_index_metadata(directory: Path) -> bool:
    return any(
        name.endswith((".metadata.json", ".metadata.json.gz")) or name == "system.indexes.bson"
        for name in os.listdir(directory)
    )


def discover_directory_dumps() -> list[str]:
    """Directories that look like mongodump output, found without our reader's rules.

    A candidate holds ``oplog.bson``, or a sub-directory with ``.metadata.json`` or
    ``system.indexes.bson`` files, or a ``prelude.json`` beside sub-directories; a candidate
    that contains another one is a folder of fixtures, not a dump.
    """
    base = shared_data_dir() / MONGO_TOOLS
    if not base.is_dir():
        return [MISSING]
    candidates = []
    for directory, subdirectories, files in os.walk(base):
        here = Path(directory)
        has_prelude = any(name.startswith("prelude.json") for name in files)
        if (
            "oplog.bson" in files
            or (has_prelude and subdirectories)
            or any(_has_index_metadata(here / sub) for sub in subdirectories)
        ):
            candidates.append(here)
    roots = [c for c in candidates if not any(o != c and c in o.parents for o in candidates)]
    return sorted(_relative(root) for root in roots) or [MISSING]


def data_files_of(root: Path) -> set[str]:
    """The document files a directory dump holds: ``<db>/<name>.bson[.gz]|.bin`` (except
    system.indexes) and the top-level oplog, relative to ``root``."""
    found = set()
    for path in root.iterdir():
        if path.is_file() and path.name in ("oplog.bson", "oplog.bson.gz"):
            found.add(path.name)
        if not path.is_dir():
            continue
        for inner in path.iterdir():
            if (
                inner.is_file()
                and inner.name.endswith((".bson", ".bson.gz", ".bin"))
                and not inner.name.startswith("system.indexes.")
            ):
                found.add(f"{path.name}/{inner.name}")
    return found


def discover_loose_bson_files() -> list[str]:
    """``.bson`` files that are not inside any discovered directory dump."""
    base = shared_data_dir()
    if not (base / MONGO_TOOLS).is_dir():
        return [MISSING]
    roots = [base / root for root in discover_directory_dumps() if root != MISSING]
    return sorted(
        _relative(path)
        for path in (base / MONGO_TOOLS).rglob("*.bson")
        if not any(root in path.parents for root in roots)
    )


def json_twin(bson_file: Path) -> Path:
    """The Extended JSON file upstream keeps beside (or in a json/ folder next to) a .bson."""
    if bson_file.parent.name == "bson":
        return bson_file.parent.parent / "json" / f"{bson_file.stem}.json"
    return bson_file.with_suffix(".json")


def discover_oplog_entry_files() -> list[str]:
    """Single oplog-entry ``.bson`` files that have an Extended JSON twin to compare with."""
    base = shared_data_dir() / MONGO_TOOLS
    candidates = [
        *(base / "mongorestore" / "testdata" / "oplogs" / "bson").glob("*.bson"),
        *(base / "mongodump" / "testdata").glob("*.bson"),
    ]
    return sorted(_relative(p) for p in candidates if json_twin(p).exists()) or [MISSING]
