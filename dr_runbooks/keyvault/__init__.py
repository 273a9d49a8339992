"""Key Vault secrets as a protected system (``engine: keyvault``), without Prefect.

- :mod:`.catalog`: the format in a backup repository, under ``vault/<system>/``;
- :mod:`.backup`: ``backup_secret`` per secret, the vault's soft delete and purge protection
  as its secrets' recovery levels show them, ``restore_secret_backup`` that never
  overwrites, checksum verification;
- :mod:`.protection`: the vault's soft delete, its retention and purge protection against
  the plan, read through Azure Resource Manager (the recovery levels as a fallback);
- :mod:`.status`: the ``(secrets)`` row of ``dr status``.

Key Vault's backups are restorable only into a vault of the same subscription and geography
(``LIMIT``). See ``docs/keyvault-backup.md``.
"""

from dr_runbooks.keyvault.backup import (
    LIMIT,
    Protection,
    RestoreOutcome,
    audit_vault,
    backup_vault,
    restore_vault,
    verify_vault_backup,
)
from dr_runbooks.keyvault.catalog import VaultBackup, VaultCatalog, VaultManifest
from dr_runbooks.keyvault.protection import (
    VaultAudit,
    VaultRequirements,
    VaultSettings,
    audit_protection,
    read_protection,
    read_vault_settings,
    vault_protection,
)

__all__ = [
    "LIMIT",
    "Protection",
    "RestoreOutcome",
    "VaultAudit",
    "VaultBackup",
    "VaultCatalog",
    "VaultManifest",
    "VaultRequirements",
    "VaultSettings",
    "audit_protection",
    "audit_vault",
    "backup_vault",
    "read_protection",
    "read_vault_settings",
    "restore_vault",
    "vault_protection",
    "verify_vault_backup",
]
