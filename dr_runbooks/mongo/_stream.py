"""Reading BSON documents one at a time from any byte stream, and the CRC-64 mongodump uses.

A BSON document starts with its total length as a little-endian int32 and ends with a NUL
byte, so a stream of documents (a ``.bson`` file, the body of an archive) can be cut into
documents without decoding them. Everything here works on streams that cannot seek (a gzip
or zstd decompressor, a pipe) and never holds more than one document plus one read chunk.

CRC-64: mongo-tools checksums each namespace of an archive with Go's ``hash/crc64`` using
the ECMA table, which is the reflected ECMA-182 polynomial with all-ones initial value and
final xor — the CRC-64/XZ that xz's ``lzma_crc64`` computes. liblzma is already loaded by
Python's ``lzma`` module on almost every build, so we call it through ctypes (GB/s, C speed);
the pure-Python table below is the fallback and the reference the tests compare it with.
"""

from __future__ import annotations

import ctypes
import gzip
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

import bson
import zstandard
from bson.codec_options import CodecOptions, DatetimeConversion

from dr_runbooks.errors import InvalidArchive

__all__ = [
    "DECOMPRESSION_ERRORS",
    "MAX_BSON_SIZE",
    "MIN_BSON_SIZE",
    "ByteSource",
    "check_document",
    "crc64",
    "iter_bson_stream",
    "to_int64",
]

MIN_BSON_SIZE = 5
# The server's limit for documents it writes itself (oplog entries may exceed the 16 MiB user
# limit by this much); anything longer is not a length prefix but garbage.
MAX_BSON_SIZE = 16 * 1024 * 1024 + 16 * 1024
_CHUNK = 1 << 20
_UINT64 = (1 << 64) - 1

# Full decoding is only for validation, so dates outside Python's range must not fail it.
_VALIDATING_OPTIONS: CodecOptions[dict[str, object]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)

# Decompressors report a damaged stream with these; plain OSErrors (a failing disk) propagate.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    gzip.BadGzipFile,
    EOFError,
    zlib.error,
    zstandard.ZstdError,
)


def _crc64_table() -> list[int]:
    poly = 0xC96C5795D7870F42  # ECMA-182, bit-reversed
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc64_table()


def _crc64_python(data: bytes, crc: int = 0) -> int:
    crc ^= _UINT64
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _UINT64


def _load_lzma_crc64() -> Callable[[bytes, int], int] | None:
    candidates: list[str | None] = ["liblzma.so.5", "liblzma.5.dylib", "liblzma.dylib"]
    try:
        import _lzma

        # dlsym on the extension module also searches the liblzma it links against.
        candidates.append(getattr(_lzma, "__file__", None))
    except ImportError:
        pass
    for name in candidates:
        if not name:
            continue
        try:
            function = ctypes.CDLL(name).lzma_crc64
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_uint64
        function.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
        if function(b"123456789", 9, 0) != 0x995DC9BBDF1939FA:  # the CRC-64/XZ check value
            continue
        return _bind(function)
    return None


def _bind(function: Callable[[bytes, int, int], int]) -> Callable[[bytes, int], int]:
    def crc(data: bytes, previous: int) -> int:
        return int(function(data, len(data), previous))

    return crc


_lzma_crc64 = _load_lzma_crc64()


def crc64(data: bytes, crc: int = 0) -> int:
    """Continue the CRC-64 (Go's ``crc64.ECMA``) of a byte sequence with ``data``.

    Start with ``crc=0``; the result is unsigned. ``crc64(b, crc64(a)) == crc64(a + b)``.
    """
    if _lzma_crc64 is not None:
        return _lzma_crc64(data, crc)
    return _crc64_python(data, crc)


def to_int64(value: int) -> int:
    """The signed int64 a Go ``int64(uint64)`` conversion gives, as archives store CRCs."""
    value &= _UINT64
    return value - (1 << 64) if value >= 1 << 63 else value


class ByteSource:
    """Exact-size reads from a binary stream, with the offset kept for error messages.

    ``stream.read`` may return fewer bytes than asked (decompressors do); reads are made in
    1 MiB chunks so per-document reads do not each cost a call into the stream.
    """

    def __init__(self, stream: BinaryIO, where: str) -> None:
        self._stream = stream
        self.where = where
        self._buffer = b""
        self._pos = 0
        self._eof = False
        #: Bytes consumed so far, i.e. the offset of the next byte in the (decompressed) stream.
        self.offset = 0

    def _fill(self, wanted: int) -> None:
        """Buffer at least ``wanted`` unread bytes, or everything left at end of stream."""
        available = len(self._buffer) - self._pos
        if available >= wanted or self._eof:
            return
        parts = [self._buffer[self._pos :]]
        while available < wanted:
            try:
                chunk = self._stream.read(max(_CHUNK, wanted - available))
            except DECOMPRESSION_ERRORS as exc:
                raise InvalidArchive(
                    f"{self.where}: cannot decompress past byte {self.offset + available}: {exc}"
                ) from exc
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            available += len(chunk)
        self._buffer = b"".join(parts)
        self._pos = 0

    def peek(self, size: int) -> bytes:
        """Up to ``size`` next bytes without consuming them; shorter only at end of stream."""
        self._fill(size)
        return self._buffer[self._pos : self._pos + size]

    def read_exact(self, size: int, what: str) -> bytes:
        self._fill(size)
        data = self._buffer[self._pos : self._pos + size]
        if len(data) < size:
            raise InvalidArchive(
                f"{self.where}: truncated: {what} at byte {self.offset} needs {size} bytes, "
                f"only {len(data)} left"
            )
        self._pos += size
        self.offset += size
        return data

    def read_document(self, what: str) -> bytes | None:
        """The next length-prefixed BSON document, or None at a clean end of stream.

        Only the framing is checked (length in range, present in full, NUL-terminated); the
        content is not decoded.
        """
        head = self.peek(4)
        if not head:
            return None
        if len(head) < 4:
            raise InvalidArchive(
                f"{self.where}: truncated: {len(head)} stray bytes at byte {self.offset} "
                f"where a {what} should start"
            )
        size = int.from_bytes(head, "little", signed=True)
        if not MIN_BSON_SIZE <= size <= MAX_BSON_SIZE:
            raise InvalidArchive(
                f"{self.where}: bad BSON length {size} for a {what} at byte {self.offset}"
            )
        start = self.offset
        document = self.read_exact(size, what)
        if document[-1] != 0:
            raise InvalidArchive(
                f"{self.where}: the {what} at byte {start} does not end with a NUL byte"
            )
        return document


def check_document(document: bytes, where: str) -> None:
    """Decode ``document`` completely (like ``bsondump --objcheck``); InvalidArchive if corrupt."""
    try:
        bson.decode(document, codec_options=_VALIDATING_OPTIONS)
    except (bson.errors.BSONError, ValueError, OverflowError, TypeError) as exc:
        raise InvalidArchive(f"{where}: corrupt BSON document: {exc}") from exc


def iter_bson_stream(stream: BinaryIO, where: str, *, validate: bool = False) -> Iterator[bytes]:
    """The raw documents of a ``.bson`` file (mongodump's per-collection format).

    An empty stream is an empty collection. With ``validate`` each document is also decoded
    in full, which catches corruption inside a correctly framed document.
    """
    source = ByteSource(stream, where)
    number = 0
    while True:
        offset = source.offset
        document = source.read_document("document")
        if document is None:
            return
        if validate:
            check_document(document, f"{where}: document {number} at byte {offset}")
        number += 1
        yield document
