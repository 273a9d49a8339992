"""The Key Vault runbooks as real Prefect flows against the loopback endpoint, signing in as
the worker's managed identity: the backup (with its audit), verify-backups, and the restore
(a dry run first, then approved in advance) that leaves an existing secret alone."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from azure.keyvault.secrets import SecretClient

from dr_runbooks.errors import RestoreVerificationFailed
from dr_runbooks.keyvault import LIMIT
from flows.backup_keyvault import backup_keyvault
from flows.keyvault_restore import keyvault_restore_flow
from flows.verify_backups import verify_backups
from tests.azure_api import AzureApi
from tests.azure_api.management import GROUP, SUBSCRIPTION, seed_vault, site_block
from tests.keyvault.conftest import SYSTEM


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """Every flow test runs against the session's Prefect test server."""


def test_backup_verify_and_restore_through_the_runbooks(
    signed_in: AzureApi, client: SecretClient, config: str
) -> None:
    client.set_secret("db-password", "Pa55-word")
    client.set_secret("api-key", "k-123456")

    result = backup_keyvault(system=SYSTEM, config_path=config)

    assert result["secrets"] == ["api-key", "db-password"] and result["limit"] == LIMIT
    assert result["protection"]["purge_protection"] is True
    [verified] = verify_backups(systems=[SYSTEM], config_path=config, notify=False)
    assert (verified["outcome"], verified["backup_id"]) == ("ok", result["backup_id"])
    # The same backup, held against an objective it has outlived: stale, not ok.
    strict = Path(config).with_name("dr-strict.yaml")
    strict.write_text(Path(config).read_text().replace('"}', '", rpo: 1s}', 1))
    time.sleep(1.2)
    with pytest.raises(RestoreVerificationFailed, match="stale: older than the objective"):
        verify_backups(systems=[SYSTEM], config_path=str(strict), notify=False)

    del signed_in.vault.secrets["db-password"]
    client.set_secret("api-key", "k-changed")
    planned = keyvault_restore_flow(system=SYSTEM, dry_run=True, config_path=config)
    assert planned["dry_run"] and signed_in.vault.latest("db-password") is None

    done = keyvault_restore_flow(system=SYSTEM, approved=True, config_path=config)
    assert done["restored"] == ["db-password"] and list(done["existing"]) == ["api-key"]
    assert signed_in.vault.latest("db-password").value == "Pa55-word"  # type: ignore[union-attr]
    assert signed_in.vault.latest("api-key").value == "k-changed"  # type: ignore[union-attr]


def test_the_runbooks_read_the_vault_through_resource_manager_as_a_saved_site(
    signed_in: AzureApi, client: SecretClient, tmp_path: Path
) -> None:
    client.set_secret("db-password", "Pa55-word")
    seed_vault(signed_in, "kv-dot-copilot", retention_days=7)
    site = f"vault-arm-{secrets.token_hex(4)}"
    site_block(signed_in).save(site, overwrite=True)
    config = tmp_path / "dr-arm.yaml"
    config.write_text(f"""
repositories:
  local: {{type: local, path: {tmp_path / "backups"}}}
systems:
  {SYSTEM}:
    engine: keyvault
    keyvault:
      vault_url: "{signed_in.url}"
      subscription_id: {SUBSCRIPTION}
      resource_group: {GROUP}
      vault_name: kv-dot-copilot
      site: {site}
    repositories: [local]
""")

    result = backup_keyvault(system=SYSTEM, config_path=str(config))

    assert result["protection"]["source"] == "management plane"
    assert result["protection"]["soft_delete_retention_days"] == 7
    assert result["protection"]["state"] == "POLICY"
    with pytest.raises(
        RestoreVerificationFailed,
        match=r"\(secrets\): policy: vault: soft delete: on, 7 days \(plan: on, ≥ 90 days\)$",
    ):
        verify_backups(systems=[SYSTEM], config_path=str(config), notify=False)
