"""Streaming building blocks: compress and hash bytes as they flow, in bounded memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import zstandard

__all__ = ["Digest", "compress", "hashed", "read_chunks"]

CHUNK = 1 << 20


@dataclass
class Digest:
    """The sha256 and byte count of a stream, complete once the stream is exhausted."""

    size: int = 0
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)


def hashed(chunks: Iterable[bytes], digest: Digest) -> Iterator[bytes]:
    """Pass ``chunks`` through, feeding ``digest``."""
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def read_chunks(handle: IO[bytes], size: int = CHUNK) -> Iterator[bytes]:
    while chunk := handle.read(size):
        yield chunk


def compress(chunks: Iterable[bytes], level: int = 3, threads: int = 2) -> Iterator[bytes]:
    """zstd-compress a stream; ``threads`` > 0 uses zstd's own worker threads (no GIL)."""
    compressor = zstandard.ZstdCompressor(level=level, threads=threads).compressobj()
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    tail = compressor.flush()
    if tail:
        yield tail
