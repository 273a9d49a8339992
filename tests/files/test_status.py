"""A file storage system in dr.yaml (``engine: blob``): its configuration, its row in
``dr status`` (age against the 24 h objective, POLICY), and the database runbooks refusing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dr_runbooks.config import Config, SystemConfig
from dr_runbooks.errors import ConfigError
from dr_runbooks.files import BlobAccount, FileCatalog, backup_files
from dr_runbooks.status import system_status
from dr_runbooks.targets import repository_from_config, resolve_target
from tests.azurite import Azurite
from tests.files.conftest import State, generated_state


def files_yaml(tmp_path: Path, container: str, env: str = "DR_TEST_FILES") -> str:
    return f"""
repositories:
  files: {{type: local, path: {tmp_path / "repo"}, retention_days: 7, min_keep: 1}}
systems:
  app-files:
    engine: blob
    files: {{connection_string_env: {env}, containers: [{container}]}}
    repositories: [files]
"""


def files_config(tmp_path: Path, container: str, env: str = "DR_TEST_FILES") -> Config:
    text = files_yaml(tmp_path, container, env)
    return Config.model_validate({**yaml.safe_load(text), "base_dir": tmp_path})


def test_a_blob_system_needs_its_files_and_one_way_in() -> None:
    files = {"connection_string_env": "X", "containers": ["uploads"]}
    assert SystemConfig(engine="blob", files=files).files is not None
    with pytest.raises(ValidationError, match="engine: blob goes with files"):
        SystemConfig(engine="blob")
    with pytest.raises(ValidationError, match="engine: blob goes with files"):
        SystemConfig(engine="postgres", files=files)
    with pytest.raises(ValidationError, match="exactly one of"):
        SystemConfig(engine="blob", files={**files, "account_url": "https://a.example"})
    with pytest.raises(ValidationError):
        SystemConfig(engine="blob", files={"connection_string_env": "X", "containers": []})


def test_status_row_age_against_24_hours_and_policy(
    azurite: Azurite,
    account: BlobAccount,
    source: Callable[[State], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DR_TEST_FILES", azurite.connection_string)
    container = source(generated_state(12))
    config = files_config(tmp_path, container)
    system = config.system("app-files")
    repository = repository_from_config(config, "files")

    [row] = system_status(config, "app-files", system, repository)
    assert (row.database, row.state, row.rpo_seconds) == ("(files)", "MISSING", 24 * 3600)

    # The same system, with no credentials for the account here: its policy is not read.
    unread = files_config(tmp_path, container, env="DR_TEST_FILES_UNSET")
    unread_system = unread.system("app-files")

    catalog = FileCatalog(repository, "app-files")
    manifest = backup_files(account, catalog, [container])
    [row] = system_status(unread, "app-files", unread_system, repository)
    assert row.state == "UNVERIFIED" and row.newest_backup == manifest.id
    assert "policy not read" in row.detail

    newest = catalog.find()
    catalog.record_verification(newest, {"kind": "checksums", "ok": True, "problems": []})
    [row] = system_status(unread, "app-files", unread_system, repository)
    assert row.state == "OK" and row.verified_backup == manifest.id

    # Azurite keeps no blob versions: the account falls short of the plan.
    [row] = system_status(config, "app-files", system, repository)
    assert row.state == "POLICY" and "versioning: off" in row.detail and "(plan: on)" in row.detail
    assert row.age_seconds is not None and row.age_seconds < 3600

    later = datetime.now(UTC) + timedelta(hours=25)
    [row] = system_status(config, "app-files", system, repository, now=later)
    assert row.state == "STALE" and "objective 24.0 h" in row.detail


def test_the_database_runbooks_refuse_a_blob_system(tmp_path: Path) -> None:
    config = files_config(tmp_path, "uploads")
    with pytest.raises(ConfigError, match="is file storage"):
        resolve_target(config, None, "app-files")


def test_dr_status_shows_the_file_system_row(
    azurite: Azurite,
    account: BlobAccount,
    source: Callable[[State], str],
    tmp_path: Path,
) -> None:
    container = source(generated_state(5))
    config = files_config(tmp_path, container)
    path = tmp_path / "dr.yaml"
    path.write_text(files_yaml(tmp_path, container))
    repository = repository_from_config(config, "files")
    backup_files(account, FileCatalog(repository, "app-files"), [container])
    env = {**os.environ, "DR_CONFIG": str(path), "DR_TEST_FILES": azurite.connection_string}

    shown = subprocess.run(
        [sys.executable, "-m", "cli", "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    table = subprocess.run(
        [sys.executable, "-m", "cli", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )

    assert shown.returncode == 1, shown.stderr
    [row] = json.loads(shown.stdout)["systems"]
    assert (row["system"], row["database"], row["state"]) == ("app-files", "(files)", "POLICY")
    assert row["rpo_seconds"] == 24 * 3600 and row["age_seconds"] < 3600
    assert table.returncode == 1 and "POLICY" in table.stdout, table.stderr
