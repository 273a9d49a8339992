"""Back up and restore a large synthetic database through the real engine; print peak memory.

Run as a child process by ``test_memory.py`` (so the peak RSS is its own). The "server" is a
generator at the client-factory seam: ``find_raw_batches`` makes ~1 KiB documents on demand,
``insert_many`` counts what arrives; nothing holds the data but the engine itself.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo.errors  # noqa: F401 - imported by the engine on first use; not data

from bench.mongo_archive import documents
from dr_runbooks.mongo.backup import backup_database
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.mongo.fetch import fetch_backup
from dr_runbooks.mongo.plan import plan_restore
from dr_runbooks.mongo.side import restore_into_side
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore

BATCH = 1000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Synthetic:
    """Just enough of a client: one database of ``collections`` generated collections."""

    def __init__(self, per_collection: int, collections: int = 2) -> None:
        self.per_collection = per_collection
        self.names = [f"c{n}" for n in range(collections)]
        self.inserted = 0

    def __getitem__(self, name: str) -> Any:
        return _Database(self, name)

    def __getattr__(self, name: str) -> Any:
        return self[name]

    def list_database_names(self) -> list[str]:
        return ["big"]

    def drop_database(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Database:
    def __init__(self, client: Synthetic, name: str) -> None:
        self.client, self.name = client, name

    def __getitem__(self, name: str) -> Any:
        return _Collection(self.client, name)

    def command(self, command: Any, **kwargs: Any) -> dict[str, Any]:
        if command == "buildInfo":
            return {"version": "7.0.14"}
        return {"ok": 1}

    def list_collections(self) -> Iterator[dict[str, Any]]:
        for name in self.client.names if self.name == "big" else []:
            yield {"name": name, "type": "collection", "options": {}, "info": {}}


class _Collection:
    def __init__(self, client: Synthetic, name: str) -> None:
        self.client, self.name = client, name

    def list_indexes(self) -> list[dict[str, Any]]:
        return [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]

    def find_raw_batches(self, filter: Any = None, batch_size: int = 0) -> Iterator[bytes]:
        seed = self.client.names.index(self.name)
        batch: list[bytes] = []
        for document in documents(self.client.per_collection, seed):
            batch.append(document)
            if len(batch) == BATCH:
                yield b"".join(batch)
                batch = []
        if batch:
            yield b"".join(batch)

    def insert_many(self, documents: list[Any], **kwargs: Any) -> None:
        self.client.inserted += len(documents)

    def count_documents(self, filter: Any) -> int:
        return 0


def main(size_mb: int) -> None:
    per_collection = size_mb * 1024 // 2
    baseline = peak_rss_mb()
    with tempfile.TemporaryDirectory() as directory:
        repository = Repository(LocalStore(Path(directory) / "repo"))
        client = Synthetic(per_collection)
        info = MongoConnInfo.from_uri("mongodb://synthetic/").with_factory(lambda: client)
        manifest = backup_database(info, "big", "synthetic", repository, engine="native")
        after_backup = peak_rss_mb()
        backup = repository.find("mongodb", "synthetic", "big")
        fetched = fetch_backup(repository, backup, workdir=Path(directory))
        with fetched.open() as dump:
            plan = plan_restore(dump, "m", {"big": "big"}, manifest=manifest)
            restore_into_side(client, dump, plan)
        fetched.cleanup()
    json.dump(
        {
            "documents": sum(manifest.tables.values()),
            "restored": client.inserted,
            "data_mb": (manifest.objects[0].raw_size or 0) / 2**20,
            "backup_growth_mb": after_backup - baseline,
            "total_growth_mb": peak_rss_mb() - baseline,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
