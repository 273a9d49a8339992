"""``dr backup keyvault`` and ``dr restore keyvault`` as an operator runs them: the real
command, signing in as a managed identity at the loopback endpoint, and the session's Prefect
server."""

from __future__ import annotations

import json

from azure.keyvault.secrets import SecretClient
from prefect.settings import PREFECT_API_URL

from tests.azure_api import AzureApi
from tests.keyvault.conftest import SYSTEM
from tests.test_cli import dr


def test_backup_then_restore_a_deleted_secret_from_the_command_line(
    signed_in: AzureApi,
    client: SecretClient,
    config: str,
) -> None:
    client.set_secret("db-password", "Pa55-word")
    env = {"DR_CONFIG": config, "PREFECT_API_URL": str(PREFECT_API_URL.value())}

    backed_up = dr("backup", "keyvault", "--system", SYSTEM, "--json", env=env)
    assert backed_up.returncode == 0, backed_up.stderr
    assert json.loads(backed_up.stdout)["secrets"] == ["db-password"]
    assert "Pa55-word" not in backed_up.stdout + backed_up.stderr

    del signed_in.vault.secrets["db-password"]
    refused = dr("restore", "keyvault", "--system", SYSTEM, env=env)
    assert refused.returncode == 2 and signed_in.vault.latest("db-password") is None

    done = dr("restore", "keyvault", "--system", SYSTEM, "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert "Key Vault restore of" in done.stdout
    assert signed_in.vault.latest("db-password").value == "Pa55-word"  # type: ignore[union-attr]
    assert "Pa55-word" not in done.stdout + done.stderr
