"""Keys and data for the encryption tests: age identities made here (pyrage), written as
``age-keygen`` writes them, and a database whose rows carry a marker no stored object may
show in clear."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyrage import x25519

from dr_runbooks.postgres.connection import ConnInfo

#: In every row of the seeded table: found in a stored object, encryption failed.
MARKER = "PLAINTEXT-MARKER-7c1f0e"
ROWS = 3000


@dataclass(frozen=True)
class Key:
    """One age key pair and the identity file holding its private half."""

    identity: str
    recipient: str
    path: Path


def make_key(directory: Path, name: str) -> Key:
    identity = x25519.Identity.generate()
    path = directory / f"{name}.txt"
    recipient = str(identity.to_public())
    path.write_text(
        f"# created: by the tests\n# public key: {recipient}\n{identity}\n", encoding="utf-8"
    )
    path.chmod(0o600)
    return Key(str(identity), recipient, path)


@pytest.fixture
def keys(tmp_path: Path) -> Callable[[str], Key]:
    directory = tmp_path / "keys"
    directory.mkdir()
    return lambda name: make_key(directory, name)


def seed(conninfo: ConnInfo, database: str, rows: int = ROWS) -> None:
    with conninfo.connect(dbname=database) as conn:
        conn.execute(
            "CREATE TABLE customers AS SELECT g AS id, %s || ' customer ' || g AS note "
            "FROM generate_series(1, %s) g",
            (MARKER, rows),
        )
        conn.execute("ALTER TABLE customers ADD PRIMARY KEY (id)")


def count(conninfo: ConnInfo, database: str, table: str = "customers") -> int:
    with conninfo.connect(dbname=database) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])
