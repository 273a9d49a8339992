"""Reading the age identity that decrypts backups where it is kept as a secret: a Prefect
Secret block, or an Azure Key Vault secret (:class:`dr_runbooks.crypto.SecretReader`).

The engine asks only when an encrypted backup is read; the value is registered for redaction
at once and kept in memory only.
"""

from __future__ import annotations

from typing import Any

from dr_runbooks.azure.keyvault import read_secret
from dr_runbooks.errors import BadInput, ConfigError
from dr_runbooks.redaction import register_secret

__all__ = ["AGE_SECRETS", "AgeSecrets"]


class AgeSecrets:
    """Prefect Secret blocks and Key Vault secrets, for :class:`~dr_runbooks.crypto.Keyring`."""

    def prefect_secret(self, block: str) -> str:
        from prefect.blocks.system import Secret

        from blocks.loading import load_block

        value = load_block(block, Secret, "Prefect Secret block").get()
        text = value if isinstance(value, str) else str(value)
        register_secret(text)
        return text

    def key_vault_secret(self, secret: str, vault_url: str | None, site: str | None) -> str:
        client = self._secret_client(vault_url, site)
        where = vault_url or f"the vault of site {site}"
        found = read_secret(client, secret)
        if found is None:
            raise BadInput(f"Key Vault secret {secret} does not exist in {where}")
        return found[0]

    @staticmethod
    def _secret_client(vault_url: str | None, site: str | None) -> Any:
        if site:
            from blocks.azure import AzureSite
            from blocks.loading import load_block

            return load_block(site, AzureSite, "Azure site block").get_secret_client()
        if not vault_url:
            raise ConfigError("a Key Vault secret needs key_vault_url or key_vault_site")
        from azure.keyvault.secrets import SecretClient

        from blocks.azure import AzureCredentials

        # No block to load: a disaster that took the Prefect server leaves this working.
        return SecretClient(vault_url, AzureCredentials().get_credential())


AGE_SECRETS = AgeSecrets()
