"""Peak memory of encryption, run as a child process by ``test_memory.py`` (so the peak RSS
is its own). Two modes:

- ``stream MB``: MB of data encrypted and decrypted again through :mod:`dr_runbooks.crypto`,
  the stored bytes hashed on the way, as a backup and a restore do;
- ``engine MB``: a synthetic MongoDB database (``tests.mongodb_engine.memory_probe``) backed
  up into a repository with ``encrypt_to``, fetched with the identity and restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pyrage import x25519

from dr_runbooks import crypto
from tests.mongodb_engine.memory_probe import peak_rss_mb


def _data(megabytes: int) -> Iterator[bytes]:
    block = os.urandom(1 << 20)
    for _ in range(megabytes):
        yield block


def stream(megabytes: int) -> dict[str, float]:
    key = x25519.Identity.generate()
    identity = crypto.Identity(str(key), "probe")
    baseline = peak_rss_mb()
    stored = hashlib.sha256()

    def hashed(chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            stored.update(chunk)
            yield chunk

    sealed = hashed(crypto.encrypt(_data(megabytes), [str(key.to_public())]))
    total = sum(len(c) for c in crypto.decrypt(sealed, identity, "probe"))
    return {"data_mb": total / 2**20, "total_growth_mb": peak_rss_mb() - baseline}


def engine(megabytes: int) -> dict[str, float]:
    from dr_runbooks.mongo.backup import backup_database
    from dr_runbooks.mongo.connection import MongoConnInfo
    from dr_runbooks.mongo.fetch import fetch_backup
    from dr_runbooks.mongo.plan import plan_restore
    from dr_runbooks.mongo.side import restore_into_side
    from dr_runbooks.repository import Repository
    from dr_runbooks.storage import LocalStore
    from tests.mongodb_engine.memory_probe import Synthetic

    key = x25519.Identity.generate()
    baseline = peak_rss_mb()
    with tempfile.TemporaryDirectory() as directory:
        key_file = Path(directory) / "identity.txt"
        key_file.write_text(f"{key}\n")
        repository = Repository(
            LocalStore(Path(directory) / "repo"),
            encrypt_to=[str(key.to_public())],
            keyring=crypto.Keyring([crypto.FileIdentity(str(key_file))]),
        )
        client = Synthetic(megabytes * 1024 // 2)
        info = MongoConnInfo.from_uri("mongodb://synthetic/").with_factory(lambda: client)
        manifest = backup_database(info, "big", "synthetic", repository, engine="native")
        backup = repository.find("mongodb", "synthetic", "big")
        fetched = fetch_backup(repository, backup, workdir=Path(directory))
        with fetched.open() as dump:
            plan = plan_restore(dump, "m", {"big": "big"}, manifest=manifest)
            restore_into_side(client, dump, plan)
        fetched.cleanup()
    return {
        "encrypted": float(manifest.encrypted),
        "documents": float(sum(manifest.tables.values())),
        "restored": float(client.inserted),
        "data_mb": (manifest.objects[0].raw_size or 0) / 2**20,
        "total_growth_mb": peak_rss_mb() - baseline,
    }


if __name__ == "__main__":
    mode, size = sys.argv[1], int(sys.argv[2])
    json.dump(stream(size) if mode == "stream" else engine(size), sys.stdout)
