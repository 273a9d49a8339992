"""Streaming building blocks: compress and hash bytes as they flow, in bounded memory."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import zstandard

__all__ = ["Digest", "compress", "consume_aside", "decompress", "hashed", "read_chunks"]

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


def decompress(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """zstd-decompress a stream, one chunk at a time."""
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    for chunk in chunks:
        out = decompressor.decompress(chunk)
        if out:
            yield out


def consume_aside(
    chunks: Iterable[bytes], consumer: Callable[[Iterator[bytes]], None], name: str = "dr-aside"
) -> BaseException | None:
    """Iterate ``chunks`` on this thread and hand them to ``consumer`` on another, through a
    short queue; return what the consumer raised, if anything.

    The stream is read to its end whatever the consumer does: a download keeps going after the
    consumer failed, so its checksum can tell corruption in the repository from a local
    problem (a full disk), and is reported first. The two threads cost about the slower of
    the two rather than their sum.
    """
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
    failure: list[BaseException] = []
    ended = threading.Event()

    def feed() -> Iterator[bytes]:
        while (chunk := pending.get()) is not None:
            yield chunk
        ended.set()

    def run() -> None:
        try:
            consumer(feed())
        except BaseException as exc:  # reported on the reading thread
            failure.append(exc)
        if not ended.is_set():
            while pending.get() is not None:  # drain so the reader never blocks
                pass

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        for chunk in chunks:
            if not failure:
                pending.put(chunk)
    finally:
        pending.put(None)
        thread.join()
    return failure[0] if failure else None
