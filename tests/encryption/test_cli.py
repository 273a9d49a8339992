"""Encryption through the real ``dr`` command and the standard tools: a backup taken with
``--encrypt-to`` is restored by ``dr restore --identity`` and by the commands of
docs/encryption.md (age, zstd, pg_restore) into a fresh database; without the right identity
the restore stops in one line (exit 2), the target untouched; ``dr backups rekey``; ``dr
status``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dr_runbooks import crypto
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.tools import pg_tool
from tests.encryption.conftest import MARKER, ROWS, Key, count, seed
from tests.shared_data import REPO_ROOT

PASSWORD = "Enc-Cli-Secret-51d0"
DOCS = REPO_ROOT / "docs" / "encryption.md"


@pytest.fixture
def prefect_api(prefect_server: None) -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def dr(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != crypto.IDENTITY_FILE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env={**full, "DR_CONFIG": "", **(env or {})},
        cwd=cwd,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def environment(pg_server: ConnInfo, prefect_api: str) -> dict[str, str]:
    return {
        "DR_DSN": f"postgresql://postgres:{PASSWORD}@/postgres?host={pg_server.host}",
        "PREFECT_API_URL": prefect_api,
    }


def _backup(
    database: str,
    repo: Path,
    cwd: Path,
    environment: dict[str, str],
    *keys: Key,
    system: str = "ad-hoc",
) -> dict[str, object]:
    encrypt = [arg for key in keys for arg in ("--encrypt-to", key.recipient)]
    result = dr(
        "backup",
        "postgres",
        "--system",
        system,
        "--database",
        database,
        "--repo",
        str(repo),
        *encrypt,
        "--json",
        cwd=cwd,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    [made] = json.loads(result.stdout)
    assert isinstance(made, dict)
    return made


def _standard_tools_block() -> str:
    text = DOCS.read_text()
    marker = text.index("<!-- standard-tools-restore")
    match = re.search(r"```sh\n(.*?)```", text[marker:], re.DOTALL)
    assert match is not None, "docs/encryption.md lost its standard-tools block"
    return match.group(1)


def _with_values(block: str, **values: str) -> str:
    """The documented commands with the reader's three values filled in."""
    for name, value in values.items():
        block, found = re.subn(rf"^{name}=.*$", f"{name}={value}", block, flags=re.MULTILINE)
        assert found == 1, name
    return block


@pytest.mark.slow
def test_encrypted_backup_restores_with_dr_and_with_the_documented_standard_tools(
    pg_server: ConnInfo,
    make_database: Callable[[str], str],
    keys: Callable[[str], Key],
    tmp_path: Path,
    environment: dict[str, str],
) -> None:
    database = make_database("cli")
    seed(pg_server, database)
    key, offline = keys("main"), keys("offline")
    repo = tmp_path / "repo"
    made = _backup(database, repo, tmp_path, environment, key, offline)
    assert made["encrypted_to"] == [key.recipient, offline.recipient]
    stored = [p for p in repo.rglob("*") if p.is_file()]
    assert any(p.name == "data.dump.zst.age" for p in stored)
    for path in stored:
        assert MARKER.encode() not in path.read_bytes(), path

    # dr restore with the identity file.
    with pg_server.connect(dbname=database) as conn:
        conn.execute("DELETE FROM customers WHERE id > 10")
    restored = dr(
        "restore",
        "postgres",
        "--system",
        "ad-hoc",
        "--database",
        database,
        "--repo",
        str(repo),
        "--identity",
        str(key.path),
        "--yes",
        "--json",
        cwd=tmp_path,
        env=environment,
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["backup_id"] == made["backup_id"]
    assert count(pg_server, database) == ROWS
    assert key.identity not in restored.stdout + restored.stderr
    assert PASSWORD not in restored.stdout + restored.stderr

    # The standard tools alone, as docs/encryption.md says, with the offline key.
    if shutil.which("age") is None or shutil.which("zstd") is None:
        pytest.skip("age and zstd are not installed (Debian: apt-get install age zstd)")
    folder = next(p.parent for p in stored if p.name == "manifest.json")
    fresh = f"{database}_std"
    script = _with_values(
        _standard_tools_block(), BACKUP=str(folder), IDENTITY=str(offline.path), TARGET=fresh
    )
    tools = Path(pg_tool("pg_restore")).parent
    standard = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": f"{tools}:/usr/bin:/bin",
            "PGHOST": str(pg_server.host),
            "PGUSER": "postgres",
            "HOME": str(tmp_path),
        },
        cwd=tmp_path,
    )
    try:
        assert standard.returncode == 0, standard.stderr
        assert count(pg_server, fresh) == ROWS == count(pg_server, database)
        assert not (folder / "data.dump").exists()
    finally:
        with pg_server.connect(dbname="postgres") as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {fresh} WITH (FORCE)")

    assert offline.identity not in standard.stdout + standard.stderr


@pytest.mark.slow
def test_a_missing_or_wrong_identity_stops_the_restore_in_one_line(
    pg_server: ConnInfo,
    make_database: Callable[[str], str],
    keys: Callable[[str], Key],
    tmp_path: Path,
    environment: dict[str, str],
) -> None:
    database = make_database("wrong")
    seed(pg_server, database, rows=25)
    key, stranger = keys("key"), keys("stranger")
    repo = tmp_path / "repo"
    _backup(database, repo, tmp_path, environment, key)
    with pg_server.connect(dbname=database) as conn:
        conn.execute("DELETE FROM customers WHERE id > 5")

    restore = [
        *("restore", "postgres", "--system", "ad-hoc", "--database", database),
        *("--repo", str(repo), "--yes"),
    ]
    missing = dr(*restore, cwd=tmp_path, env=environment)
    wrong = dr(*restore, "--identity", str(stranger.path), cwd=tmp_path, env=environment)
    via_env = dr(
        *restore, cwd=tmp_path, env={**environment, crypto.IDENTITY_FILE_ENV: str(stranger.path)}
    )
    for result in (missing, wrong, via_env):
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert f"is encrypted to {key.recipient}" in line
        assert key.identity not in result.stderr and stranger.identity not in result.stderr
    assert "--identity FILE" in one_error_line(missing)
    assert stranger.recipient in one_error_line(wrong)
    pasted = dr(*restore, "--identity", key.identity, cwd=tmp_path, env=environment)
    assert pasted.returncode == 2 and "not the key itself" in one_error_line(pasted)
    assert key.identity not in pasted.stdout + pasted.stderr
    # Untouched: the rows deleted since the backup are still gone, no side database was made.
    assert count(pg_server, database) == 5
    with pg_server.connect(dbname="postgres") as conn:
        sides = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (database + "\\_\\_%",)
        ).fetchall()
    assert sides == []


@pytest.mark.slow
def test_rekey_and_status_from_the_command_line(
    pg_server: ConnInfo,
    make_database: Callable[[str], str],
    keys: Callable[[str], Key],
    tmp_path: Path,
    environment: dict[str, str],
) -> None:
    database = make_database("rot")
    seed(pg_server, database, rows=15)
    old, new = keys("old"), keys("new")
    (tmp_path / "dr.yaml").write_text(f"""
repositories:
  local: {{type: local, path: {tmp_path / "repo"}, encrypt_to: [{new.recipient}]}}
  plain: {{type: local, path: {tmp_path / "plain"}}}
systems:
  shop:
    engine: postgres
    connection: {{dsn_env: DR_DSN}}
    databases: [{database}]
    repositories: [local, plain]
""")
    config = {"DR_CONFIG": str(tmp_path / "dr.yaml")}
    repo = tmp_path / "repo"
    first = _backup(database, repo, tmp_path, environment, old, system="shop")
    assert first["encrypted_to"] == [old.recipient]

    rekeyed = dr(
        "backups",
        "rekey",
        "--system",
        "shop",
        "--repo",
        "local",
        "--identity",
        str(old.path),
        "--yes",
        "--json",
        cwd=tmp_path,
        env={**environment, **config},
    )
    assert rekeyed.returncode == 0, rekeyed.stderr
    [row] = json.loads(rekeyed.stdout)["backups"]
    assert row["outcome"] == "rekeyed" and row["recipients"] == [new.recipient]
    manifest = json.loads(next(repo.rglob("manifest.json")).read_text())
    assert [o["encryption"]["recipients"] for o in manifest["objects"]] == [[new.recipient]] * 2
    assert not [p for p in repo.rglob("data.dump.zst.age") if "rekey-" not in str(p)]

    restore = [
        *("restore", "postgres", "--system", "shop", "--database", database),
        *("--repo", str(repo), "--yes"),
    ]
    refused = dr(*restore, "--identity", str(old.path), cwd=tmp_path, env=environment)
    assert refused.returncode == 2 and new.recipient in one_error_line(refused)
    done = dr(*restore, "--identity", str(new.path), cwd=tmp_path, env=environment)
    assert done.returncode == 0, done.stderr
    assert count(pg_server, database) == 15

    status = dr("status", "--json", cwd=tmp_path, env=config)
    protection = {p["repository"]: p for p in json.loads(status.stdout)["protection"]}
    assert protection["local"]["encrypted_to"] == [new.recipient]
    assert protection["plain"]["encrypted"] is False
    text = dr("status", cwd=tmp_path, env=config).stdout
    assert "new backups in local: encryption age, 1 recipient(s)" in text
    assert "new backups in plain: encryption none (in clear)" in text
