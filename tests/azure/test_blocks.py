"""The Azure blocks: forms the UI can render, settings that contradict each other refused in
plain words, secrets kept secret; and the connection blocks' passwords replaced in place."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr, ValidationError

from blocks import AzureCredentials, AzureSite
from blocks.mongo import MongoDatabase
from blocks.postgres import PostgresDatabase
from blocks.rotation import connection_password, replace_connection_password
from dr_runbooks.redaction import redact

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIPTION = "0f3c2a51-7d4e-4b1a-9c2e-5a6b7c8d9e01"


def _site(**fields: Any) -> AzureSite:
    return AzureSite(
        **{
            "subscription_id": SUBSCRIPTION,
            "resource_group": "rg-dot-copilot-prod-dr",
            "region": "westus2",
            **fields,
        }
    )


@pytest.mark.parametrize("block", [AzureCredentials, AzureSite], ids=lambda b: b.__name__)
def test_every_field_is_described_for_the_ui(block: type[Block]) -> None:
    assert block.get_description()
    for name, field in block.model_fields.items():
        assert field.description, f"{block.__name__}.{name} has no description"
    example = block.get_code_example()
    assert example and f'{block.__name__}.load("BLOCK_NAME")' in example


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"subscription_id": "prod"}, "'prod' is not a subscription id"),
        ({"region": "West US 2"}, "is not a region name like eastus"),
        ({"deploy_template": "a.json", "deploy_command": ["./deploy.sh"]}, "not both"),
        ({"dns_records": {"www": ["20.60.2.10"]}}, "dns_records need the dns_zone"),
        ({"dns_zone": "dotcopilot.com", "dns_records": {"www": ["20.60.2.999"]}}, "not an IPv4"),
        ({"dns_zone": "dotcopilot.com", "dns_records": {"www": []}}, "lists no address"),
        ({"key_vault_url": "http://kv.vault.azure.net"}, "must be an https:// URL"),
        ({"deploy_command": []}, "the deploy command is empty"),
    ],
)
def test_contradictory_site_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _site(**fields)


def test_credentials_take_a_secret_or_the_default_chain_not_a_mix() -> None:
    with pytest.raises(ValidationError, match="needs the tenant id and the client id"):
        AzureCredentials(client_secret=SecretStr("s"))
    with pytest.raises(ValidationError, match="managed_identity_client_id"):
        AzureCredentials(client_id="app", tenant_id="t")
    secret = "Cl1ent-" + secrets.token_hex(8)
    credentials = AzureCredentials(tenant_id="t", client_id="app", client_secret=SecretStr(secret))
    assert secret not in repr(credentials) and secret not in str(credentials.model_dump())
    assert type(credentials.get_credential()).__name__ == "ClientSecretCredential"
    assert redact(f"AADSTS7000215: invalid secret {secret}") == "AADSTS7000215: invalid secret ***"
    default = AzureCredentials(managed_identity_client_id="1111").get_credential()
    assert type(default).__name__ == "DefaultAzureCredential"


def test_a_site_signs_in_once_and_names_its_resources() -> None:
    site = _site(postgres_server="db-dr", postgres_resource_group="rg-db")
    assert site.get_credential() is site.get_credential()
    assert site.server_id().endswith(
        "/resourceGroups/rg-db/providers/Microsoft.DBforPostgreSQL/flexibleServers/db-dr"
    )
    assert site.zone_resource_group == "rg-dot-copilot-prod-dr"
    from dr_runbooks.errors import ConfigError

    with pytest.raises(ConfigError, match="names no key_vault_url"):
        site.get_secret_client()


def test_sites_and_their_secrets_round_trip_through_the_prefect_server(
    prefect_server: None,
) -> None:
    secret = "Cl1ent-" + secrets.token_hex(8)
    name = f"site-{secrets.token_hex(3)}"
    _site(
        credentials=AzureCredentials(
            tenant_id="t", client_id="app", client_secret=SecretStr(secret)
        ),
        dns_zone="dotcopilot.com",
        dns_records={"www": ["20.60.2.10"], "api": ["20.60.2.11"]},
        deploy_parameters={"location": "westus2", "sku": {"name": "P1v3"}},
    ).save(name, overwrite=True)

    loaded = AzureSite.load(name)
    assert loaded.dns_records == {"www": ["20.60.2.10"], "api": ["20.60.2.11"]}
    assert loaded.credentials.client_secret is not None
    assert loaded.credentials.client_secret.get_secret_value() == secret
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(name, "dr-azure-site", include_secrets=False)
    assert secret not in str(document.data)


def test_the_blocks_register_from_the_repo_root(prefect_server: None) -> None:
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
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
    assert {"dr-azure-site", "dr-azure-credentials"} <= slugs


def test_a_connection_block_s_password_is_replaced_in_place(prefect_server: None) -> None:
    old, new = "Old-" + secrets.token_hex(6), "New-" + secrets.token_hex(6)
    fields, dsn, uri = (f"pg-{secrets.token_hex(3)}" for _ in range(3))
    PostgresDatabase(host="db", user="app", password=SecretStr(old), dbname="shop").save(fields)
    PostgresDatabase(dsn=SecretStr(f"postgresql://app:{old}@db:6432/shop")).save(dsn)
    MongoDatabase(uri=SecretStr(f"mongodb://app:{old}@m1:27017/?replicaSet=rs0")).save(uri)

    for name, engine in ((fields, "postgres"), (dsn, "postgres"), (uri, "mongodb")):
        assert connection_password(name, engine) == old
        replace_connection_password(name, engine, new)
        assert connection_password(name, engine) == new
    info = PostgresDatabase.load(dsn).conninfo()
    assert (info.host, info.port, info.user, info.dbname) == ("db", 6432, "app", "shop")
    mongo = MongoDatabase.load(uri).conninfo()
    assert mongo.replica_set == "rs0" and mongo.user == "app"
