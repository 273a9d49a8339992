"""Write a large mongodump archive through zstd, read it back, and report the peak memory.

The archive code must hold one document at a time, whatever the dump's size; this measures
the peak RSS growth of a full write + read cycle against the amount of data::

    python bench/mongo_archive.py                 # 1 GiB of BSON documents
    python bench/mongo_archive.py --size-mb 200 --json

``tests/mongo/test_memory.py`` runs this at 200 MB in a child process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import bson
import zstandard

try:
    from dr_runbooks.mongo import ArchiveHeader, ArchivePrelude, ArchiveWriter, open_dump
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dr_runbooks.mongo import ArchiveHeader, ArchivePrelude, ArchiveWriter, open_dump

COLLECTIONS = 4
OPLOG_ENTRIES = 1000
_WORDS = ["restore", "drill", "replica", "primary", "backup", "archive", "oplog", "shard"]


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def documents(count: int, seed: int) -> Iterator[bytes]:
    """``count`` ~1 KiB documents, a quarter random bytes so that zstd has real work to do."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(_WORDS) for _ in range(90)) for _ in range(64)]
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    for number in range(count):
        yield bson.encode(
            {
                "_id": number,
                "seed": seed,
                "when": start + datetime.timedelta(seconds=number),
                "tags": [_WORDS[number % len(_WORDS)], _WORDS[(number * 7) % len(_WORDS)]],
                "blob": bson.Binary(rng.randbytes(256)),
                "text": texts[(number * 13) % 64],
            }
        )


def oplog(count: int) -> Iterator[dict[str, object]]:
    for number in range(count):
        yield {
            "ts": bson.Timestamp(1_700_000_000 + number, 1),
            "op": "i",
            "ns": "bench.c0",
            "o": {"_id": -number - 1},
        }


def run(size_mb: int, directory: Path) -> dict[str, float | int]:
    per_document = len(next(documents(1, 0)))
    per_collection = max(1, size_mb * 1024 * 1024 // per_document // COLLECTIONS)
    path = directory / "bench.archive.zst"
    baseline = peak_rss_mb()

    started = time.perf_counter()
    preludes = [
        ArchivePrelude.for_collection(
            f"bench.c{i}", {"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]}
        )
        for i in range(COLLECTIONS)
    ]
    with (
        path.open("wb") as raw,
        zstandard.ZstdCompressor(level=1).stream_writer(raw, closefd=False) as compressed,
    ):
        writer = ArchiveWriter(
            compressed,  # type: ignore[arg-type]
            [*preludes, ArchivePrelude.oplog()],
            header=ArchiveHeader(server_version="7.0.0"),
        )
        for i in range(COLLECTIONS):
            writer.write_collection(f"bench.c{i}", documents(per_collection, seed=i))
        writer.write_oplog(oplog(OPLOG_ENTRIES))
        writer.close()
    written = time.perf_counter() - started

    started = time.perf_counter()
    count = data_bytes = 0
    with open_dump(path) as dump:
        for _, document in dump.iter_documents():
            count += 1
            data_bytes += len(document)
    read = time.perf_counter() - started

    peak = peak_rss_mb()
    return {
        "documents": count,
        "expected_documents": per_collection * COLLECTIONS + OPLOG_ENTRIES,
        "data_mb": round(data_bytes / (1024 * 1024), 1),
        "compressed_mb": round(path.stat().st_size / (1024 * 1024), 1),
        "write_seconds": round(written, 2),
        "read_seconds": round(read, 2),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "rss_growth_mb": round(peak - baseline, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="BSON data to write (MiB)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mongo-archive-bench-") as directory:
        result = run(arguments.size_mb, Path(directory))
    if arguments.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
