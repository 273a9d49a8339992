"""The Key Vault client of a vault whose secrets are backed up (``engine: keyvault``)."""

from __future__ import annotations

from typing import Any

__all__ = ["vault_client"]


def vault_client(vault_url: str, site: str = "") -> Any:
    """A ``SecretClient`` for ``vault_url``: signed in as a saved ``AzureSite`` block says
    (its credentials, its CA bundle), or, with no site, as ``AzureCredentials()`` does
    (``DefaultAzureCredential``), so it works with the Prefect server down."""
    from azure.keyvault.secrets import SecretClient

    from blocks.azure import AzureCredentials, AzureSite
    from blocks.loading import load_block

    if site:
        block = load_block(site, AzureSite, "Azure site block")
        assert isinstance(block, AzureSite)
        return block.model_copy(update={"key_vault_url": vault_url}).get_secret_client()
    return SecretClient(vault_url, AzureCredentials().get_credential())
