"""The Prefect blocks: forms the UI can render, secrets that stay secret, registration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr, ValidationError

from blocks import AzureBackupRepository, LocalBackupRepository, PostgresDatabase
from dr_runbooks.redaction import redact

ROOT = Path(__file__).resolve().parent.parent
BLOCKS: list[type[Block]] = [PostgresDatabase, LocalBackupRepository, AzureBackupRepository]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
def test_every_field_is_described_for_the_ui(block: type[Block]) -> None:
    assert block.get_description()
    for name, field in block.model_fields.items():
        assert field.description, f"{block.__name__}.{name} has no description"
    example = block.get_code_example()
    assert example and f'{block.__name__}.load("BLOCK_NAME")' in example


def test_postgres_block_keeps_its_password_out_of_repr_and_messages() -> None:
    block = PostgresDatabase(
        host="db.internal", user="app", password=SecretStr("pw-Blk-77aa"), dbname="shop"
    )
    assert "pw-Blk-77aa" not in repr(block) and "pw-Blk-77aa" not in str(block.model_dump())
    info = block.conninfo()
    assert "pw-Blk-77aa" not in repr(info) and "pw-Blk-77aa" not in info.describe()
    assert info.child_env()["PGPASSWORD"] == "pw-Blk-77aa"
    assert redact("FATAL: password pw-Blk-77aa rejected") == "FATAL: password *** rejected"


def test_postgres_block_takes_a_dsn_or_fields_not_both() -> None:
    with pytest.raises(ValidationError, match="either a DSN or host"):
        PostgresDatabase(dsn=SecretStr("postgresql://a@b/c"), host="other")
    info = PostgresDatabase(dsn=SecretStr("postgresql://app:pw-Dsn-1@db:6432/shop")).conninfo()
    assert (info.host, info.port, info.user, info.dbname) == ("db", 6432, "app", "shop")


def test_azure_block_rejects_contradictory_credentials() -> None:
    with pytest.raises(ValidationError, match="not both"):
        AzureBackupRepository(
            container="c",
            connection_string=SecretStr("x"),
            account_url="https://a.blob.core.windows.net",
        )
    with pytest.raises(ValidationError, match="connection string or an account URL"):
        AzureBackupRepository(container="c")
    with pytest.raises(ValidationError, match="SAS token goes with an account URL"):
        AzureBackupRepository(
            container="c", connection_string=SecretStr("x"), sas_token=SecretStr("sig=1")
        )


def test_repository_blocks_work_against_azurite_and_disk(azurite, tmp_path: Path) -> None:
    azure = AzureBackupRepository(
        container="blocktest", connection_string=SecretStr(azurite.connection_string)
    )
    repo = azure.get_repository("azure")
    repo.store.create()
    repo.store.put_bytes("probe", b"ok")
    assert repo.store.read_bytes("probe") == b"ok"
    assert azurite.account_key not in repo.store.location
    local = LocalBackupRepository(path=str(tmp_path), retention_days=3).get_repository()
    assert local.retention_days == 3 and local.store.exists()


def test_prefect_block_register_works_from_the_repo_root(prefect_server: None) -> None:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with get_client(sync_client=True) as client:
        slugs = {t.slug for t in client.read_block_types()}
    assert {
        "dr-postgres-database",
        "dr-local-backup-repository",
        "dr-azure-backup-repository",
    } <= slugs


def test_secret_fields_are_masked_in_the_ui_form_and_empty_means_not_given() -> None:
    from blocks import AzureBackupRepository, MongoDatabase, PostgresDatabase
    from blocks.azure import AzureCredentials

    for block in (PostgresDatabase, MongoDatabase, AzureBackupRepository, AzureCredentials):
        secrets = block.model_fields.items()
        schema = block.model_json_schema()["properties"]
        for name, field in secrets:
            if "SecretStr" not in str(field.annotation):
                continue
            rendered = schema[name]
            # A masked password box, not a choice between a text box and "None".
            assert rendered.get("format") == "password" and "anyOf" not in rendered, name
            assert rendered.get("description"), name
    assert PostgresDatabase(dsn="", host="db", password="").password is None
    assert PostgresDatabase(host="db", password="s3cret").password is not None


def test_repository_blocks_encrypt_to_their_recipients(tmp_path: Path) -> None:
    from pyrage import x25519

    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    block = LocalBackupRepository(path=str(tmp_path), encrypt_to=[recipient])
    assert block.get_repository().encrypt_to == (recipient,)
    with pytest.raises(ValidationError, match="is not an age recipient"):
        LocalBackupRepository(path=str(tmp_path), encrypt_to=["age1nope"])
    with pytest.raises(ValidationError) as caught:
        AzureBackupRepository(container="c", account_url="https://a", encrypt_to=[str(identity)])
    assert "private key" in str(caught.value) and str(identity) not in str(caught.value)
