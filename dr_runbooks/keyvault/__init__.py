"""Key Vault secrets as a protected system (``engine: keyvault``), without Prefect.

- :mod:`.catalog`: the format in a backup repository, under ``vault/<system>/``;
- :mod:`.backup`: ``backup_secret`` per secret, the vault's soft delete and purge protection,
  ``restore_secret_backup`` that never overwrites, checksum verification;
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

__all__ = [
    "LIMIT",
    "Protection",
    "RestoreOutcome",
    "VaultBackup",
    "VaultCatalog",
    "VaultManifest",
    "audit_vault",
    "backup_vault",
    "restore_vault",
    "verify_vault_backup",
]
