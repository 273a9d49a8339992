"""The identity that decrypts a repository's backups, kept as dr.yaml says: a Prefect Secret
block, a Key Vault secret (by URL with DefaultAzureCredential, or in an AzureSite block's
vault) over the real SDKs, against the session's Prefect server and the loopback Azure
endpoint; and a backup decrypted with it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from blocks.age import AGE_SECRETS
from dr_runbooks import crypto
from dr_runbooks.config import Config
from dr_runbooks.errors import IdentityRequired
from dr_runbooks.mongo.backup import backup_database
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.mongo.fetch import fetch_backup
from dr_runbooks.redaction import redact
from dr_runbooks.targets import repository_from_config
from tests.azure_api import AzureApi
from tests.encryption.conftest import Key
from tests.mongodb_engine.conftest import URI
from tests.mongodb_engine.fake import FakeServer
from tests.mongodb_engine.seed import seed_shop


@pytest.fixture(autouse=True)
def _no_identity_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crypto.IDENTITY_FILE_ENV, raising=False)


@pytest.fixture
def vault(monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureApi]:
    """The loopback Key Vault; DefaultAzureCredential signs in as its managed identity."""
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    with AzureApi() as api:
        monkeypatch.setenv("IDENTITY_ENDPOINT", api.identity_endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", api.identity_header)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", api.ca_file)
        yield api


def _config(tmp_path: Path, key: Key, identity: dict[str, str]) -> Config:
    return Config(
        repositories={
            "vaulted": {
                "type": "local",
                "path": str(tmp_path / "repo"),
                "encrypt_to": [key.recipient],
                "identity": identity,
            }
        }
    )


def _round_trip(config: Config) -> int:
    """Back up a small database into the repository and fetch it back, decrypted."""
    repository = repository_from_config(config, "vaulted", secrets=AGE_SECRETS)
    server = FakeServer()
    seed_shop(server, orders=30)
    conninfo = MongoConnInfo.from_uri(URI).with_factory(server.client)
    backup_database(conninfo, "shop", "app", repository, engine="native")
    fetched = fetch_backup(repository, repository.find("mongodb", "app", "shop"))
    try:
        return fetched.path.stat().st_size
    finally:
        fetched.cleanup()


def test_an_identity_in_a_prefect_secret_block(
    prefect_server: None, keys: Callable[[str], Key], tmp_path: Path
) -> None:
    from prefect.blocks.system import Secret

    key = keys("block")
    name = f"dr-test-age-{secrets.token_hex(3)}"
    Secret(value=key.path.read_text()).save(name, overwrite=True)
    assert _round_trip(_config(tmp_path, key, {"secret_block": name})) > 0
    assert redact(f"x {key.identity} y") == "x *** y"

    missing = _config(tmp_path / "other", key, {"secret_block": name + "-gone"})
    repository = repository_from_config(missing, "vaulted", secrets=AGE_SECRETS)
    with pytest.raises(IdentityRequired, match="cannot load Prefect Secret block"):
        repository.keyring.identity_for([key.recipient], "backup B")


def test_an_identity_in_key_vault_by_url(
    vault: AzureApi, keys: Callable[[str], Key], tmp_path: Path
) -> None:
    key = keys("vault")
    vault.vault.set("dr-age-identity", key.path.read_text())
    identity = {"key_vault_secret": "dr-age-identity", "key_vault_url": vault.url}
    assert _round_trip(_config(tmp_path, key, identity)) > 0
    gets = [c for c in vault.calls if "/secrets/dr-age-identity" in c.path]
    assert gets and all(c.method == "GET" for c in gets)

    absent = {"key_vault_secret": "nope", "key_vault_url": vault.url}
    repository = repository_from_config(
        _config(tmp_path, key, absent), "vaulted", secrets=AGE_SECRETS
    )
    with pytest.raises(IdentityRequired, match="Key Vault secret nope does not exist"):
        repository.keyring.identity_for([key.recipient], "backup B")


def test_an_identity_in_the_vault_of_a_site_block(
    vault: AzureApi, prefect_server: None, keys: Callable[[str], Key], tmp_path: Path
) -> None:
    from blocks.azure import AzureSite

    key = keys("site")
    vault.vault.set("dr-age-identity", key.path.read_text())
    site = f"dr-test-site-{secrets.token_hex(3)}"
    AzureSite(
        subscription_id="00000000-0000-0000-0000-000000000001",
        resource_group="rg-test",
        region="eastus",
        key_vault_url=vault.url,
        ca_bundle=vault.ca_file,
        retry_backoff_seconds=0.01,
    ).save(site, overwrite=True)
    identity = {"key_vault_secret": "dr-age-identity", "key_vault_site": site}
    assert _round_trip(_config(tmp_path, key, identity)) > 0
