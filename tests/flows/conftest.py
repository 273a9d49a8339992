"""Fixtures for running the runbooks as real Prefect flows."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.tools import pg_tool
from tests.webhook import Receiver

PASSWORD = "Sup3r-Secret-Pa55word"


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """Every flow test runs against the session's Prefect test server."""


@pytest.fixture
def argv_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run PostgreSQL's programs through wrappers that record their argv (a seam we own:
    ``DR_PG_BINDIR``), so tests can prove no secret is ever on a command line."""
    real = Path(pg_tool("pg_dump")).parent
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    log = tmp_path / "argv.log"
    for name in ("pg_dump", "pg_restore", "psql", "pg_dumpall"):
        script = wrappers / name
        script.write_text(f'#!/bin/sh\necho "$0 $*" >> {log}\nexec {real / name} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("DR_PG_BINDIR", str(wrappers))
    yield log


@pytest.fixture
def system_config(tmp_path: Path, pg_server: ConnInfo, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dr.yaml declaring system ``shop`` (DSN from the environment, with a password) and two
    local repositories."""
    host = pg_server.host or ""
    monkeypatch.setenv(
        "DR_TEST_SHOP_DSN", f"postgresql://postgres:{PASSWORD}@/postgres?host={host}"
    )
    config = tmp_path / "dr.yaml"
    config.write_text(f"""
objectives:
  rto: {{critical: 2h}}
repositories:
  primary: {{type: local, path: {tmp_path / "primary"}, retention_days: 7, min_keep: 2}}
  offsite: {{type: local, path: {tmp_path / "offsite"}, retention_days: 30}}
systems:
  shop:
    engine: postgres
    connection: {{dsn_env: DR_TEST_SHOP_DSN}}
    databases: [PLACEHOLDER]
    repositories: [primary, offsite]
""")
    return config


def use_database(config: Path, database: str) -> str:
    config.write_text(config.read_text().replace("PLACEHOLDER", database))
    return str(config)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    CustomWebhookNotificationBlock(
        name="dr-test",
        url=hook.url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save("dr-test-alerts", overwrite=True)
    yield hook
    hook.server.shutdown()


os.environ.setdefault("DR_TEST_MARKER", "1")
