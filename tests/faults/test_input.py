"""Input that must be refused, secrets that must not be stored, and what a restore must bring
back that was lost before: a database's comment, partitioned tables counted once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from dr_runbooks.errors import BadInput
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.redaction import redact
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from tests.azurite import Azurite
from tests.faults.conftest import Dr

SECRET = "S3cr/et@p%zz"


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://app:{SECRET}@db.internal/shop",  # a / and an @ in the password
        "postgresql://app:s%zzecret99@db.internal/shop",  # an invalid % escape
        "host=db.internal password=se cret99 dbname=shop",  # a space, unquoted
    ],
)
def test_a_dsn_that_fails_to_parse_never_shows_its_password(dsn: str) -> None:
    try:
        info = ConnInfo.from_dsn(dsn)
    except BadInput as exc:
        message = str(exc)
    else:
        message = repr(info) + info.describe() + redact(dsn)
    for fragment in (SECRET, "se/cret", "s%zzecret99", "cret99", "zzecret"):
        assert fragment not in message, message


def test_a_typo_in_system_is_refused_when_dr_yaml_names_the_repository(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    database = make_database("typo")
    config = tmp_path / "dr.yaml"
    config.write_text(f"""
repositories:
  main: {{type: local, path: {tmp_path / "repo"}}}
systems:
  app-db:
    engine: postgres
    connection: {{dsn_env: DR_DSN}}
    databases: [{database}]
    repositories: [main]
""")

    typo = dr("--config", str(config), "backup", "postgres", "--system", "app-bd", "--repo", "main")
    assert typo.returncode == 2
    assert "unknown system 'app-bd' (dr.yaml declares: app-db)" in typo.stderr
    assert not (tmp_path / "repo").exists()

    # Ad hoc, into a directory of its own, --system only names the folder.
    adhoc = dr(
        "--config",
        str(config),
        "backup",
        "postgres",
        "--system",
        "scratch",
        "--database",
        database,
        "--repo",
        str(tmp_path / "adhoc"),
    )
    assert adhoc.returncode == 0, adhoc.stderr
    assert Repository(LocalStore(tmp_path / "adhoc")).backups("postgres", "scratch", database)


@pytest.mark.slow
def test_a_sas_token_given_to_the_cli_is_not_stored_with_the_run(
    dr: Dr, pg_server: ConnInfo, make_database, azurite: Azurite, azure_container: str
) -> None:
    from tests.store.test_contract import _sas

    database = make_database("sas")
    with pg_server.connect(dbname=database) as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS id")
    from azure.storage.blob import ContainerClient

    ContainerClient.from_connection_string(
        azurite.connection_string, azure_container
    ).create_container()
    sas = _sas(azure_container)
    url = f"{azurite.account_url}/{azure_container}?{sas}"

    made = dr("backup", "postgres", "--database", database, "--repo", url, "--json")

    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)[0]["backup_id"]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    [run] = [r for r in runs if r.flow_id and r.parameters.get("database") == database]
    stored = json.dumps(run.parameters)
    assert "sig=" not in stored and sas.split("sig=")[1][:10] not in stored
    assert stored.count("env:DR_CLI_REPO_0") == 1
    assert backup_id in made.stdout


def test_a_restore_brings_back_the_comment_and_counts_partitioned_rows_once(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    database = make_database("parts")
    with pg_server.connect(dbname=database) as conn:
        conn.execute(f"COMMENT ON DATABASE {database} IS 'orders of the shop; owner: ops'")
        conn.execute("CREATE TABLE events (id int, at date) PARTITION BY RANGE (at)")
        for year in (2025, 2026):
            conn.execute(
                f"CREATE TABLE events_{year} PARTITION OF events "
                f"FOR VALUES FROM ('{year}-01-01') TO ('{year + 1}-01-01')"
            )
        conn.execute(
            "INSERT INTO events SELECT g, date '2025-06-01' + (g % 400) "
            "FROM generate_series(1, 1000) g"
        )
    repo = str(tmp_path / "repo")

    made = dr("backup", "postgres", "--database", database, "--repo", repo, "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)[0]["rows"] == 1000  # not 2000: the parent repeats its parts
    with pg_server.connect(dbname="postgres") as conn:
        conn.execute(f"COMMENT ON DATABASE {database} IS NULL")

    restored = dr("restore", "postgres", "--database", database, "--repo", repo, "--yes", "--json")

    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["verification"]["rows"] == 1000
    with pg_server.connect(dbname="postgres") as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (database,),
        ).fetchone()
    assert row == ("orders of the shop; owner: ops",)
