"""Configuration in git as a protected system (``engine: git``), without Prefect.

- :mod:`.git`: the ``git`` commands, credentials through ``GIT_ASKPASS`` (never argv), errors
  translated at the edge;
- :mod:`.catalog`: the format in a backup repository, under ``config/<system>/``;
- :mod:`.backup`: the cheap check, the bundle backup, verification, restore by clone or push;
- :mod:`.status`: the ``(config)`` row of ``dr status`` (objective: RPO 0).

See ``docs/config-backup.md``.
"""

from dr_runbooks.gitconfig.backup import (
    Drift,
    backup_config,
    compare,
    push_backup,
    remote_from_config,
    restore_clone,
    verify_backup,
)
from dr_runbooks.gitconfig.catalog import ConfigBackup, ConfigCatalog, ConfigManifest
from dr_runbooks.gitconfig.git import DEFAULT_REFS, GitRemote

__all__ = [
    "DEFAULT_REFS",
    "ConfigBackup",
    "ConfigCatalog",
    "ConfigManifest",
    "Drift",
    "GitRemote",
    "backup_config",
    "compare",
    "push_backup",
    "remote_from_config",
    "restore_clone",
    "verify_backup",
]
