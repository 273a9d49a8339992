"""The errors dr-runbooks raises, in one place.

::

    DRError                      every error of ours; ``exit_code`` is what the CLI returns
    ├── BadInput                 the caller asked for something that cannot be done (exit 2);
    │   │                        nothing was changed
    │   ├── ConfigError          dr.yaml, a block or an option is wrong or contradictory
    │   ├── ConnectionFailed     a server refused the credentials, or has no such database
    │   ├── RepositoryNotFound   a repository (directory or container) that does not exist
    │   │   └── AccessDenied     the storage refused the credentials (401/403)
    │   ├── BackupNotFound       no backup with that id, or none before a time
    │   ├── InvalidArchive       a file that is not what it claims (a broken mongodump archive)
    │   ├── IdentityRequired     an encrypted backup, and no identity given that decrypts it
    │   └── Rejected             a person rejected the plan of a destructive step
    └── OperationFailed          something that should have worked did not (exit 1)
        ├── ServerUnreachable    a server cannot be reached now (transient: retried)
        │   └── StoreUnavailable a repository's storage failed mid-operation (transient)
        ├── LockHeld             another live run holds the lock (a backup or restore of it)
        ├── BackupDamaged        a backup whose manifest cannot be read: unusable, kept
        ├── ObjectNotFound       a store has no object under that key
        ├── ObjectProtected      the store's immutability policy refuses to delete an object
        ├── ChecksumMismatch     an object's bytes differ from its manifest
        │   └── DecryptionFailed an encrypted object that does not decrypt (damaged, truncated)
        ├── DumpFailed           pg_dump / mongodump exited non-zero (its own message kept)
        ├── RestoreFailed        pg_restore / the restore engine failed
        ├── RestoreVerificationFailed  the restored data differs from the manifest
        ├── AzureRequestFailed   Azure refused or failed a request (its code and message kept)
        ├── ConcurrentChange     a resource changed since its state was recorded (an etag moved)
        ├── CommandFailed        a configured command exited non-zero or timed out
        └── VerificationFailed   a check after a change failed (health, isolation, an audit item)

Every message is one line a person can act on, and never contains a secret: the code that
raises these passes DSNs and URIs through :func:`dr_runbooks.redaction.redact` first.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AzureRequestFailed",
    "BackupDamaged",
    "BackupNotFound",
    "BadInput",
    "ChecksumMismatch",
    "CommandFailed",
    "ConcurrentChange",
    "ConfigError",
    "ConnectionFailed",
    "DRError",
    "DecryptionFailed",
    "DumpFailed",
    "IdentityRequired",
    "InvalidArchive",
    "LockHeld",
    "ObjectNotFound",
    "ObjectProtected",
    "OperationFailed",
    "Rejected",
    "RepositoryNotFound",
    "RestoreFailed",
    "RestoreVerificationFailed",
    "ServerUnreachable",
    "StoreUnavailable",
    "VerificationFailed",
]


class DRError(Exception):
    """Base of every error raised by dr-runbooks."""

    exit_code = 1


class BadInput(DRError):
    """The request cannot be carried out as asked; nothing was changed."""

    exit_code = 2


class ConfigError(BadInput):
    """A configuration file, block or option is missing, malformed or contradictory."""


class RepositoryNotFound(BadInput):
    """The repository (a directory or a blob container) does not exist or cannot be reached."""


class ConnectionFailed(BadInput):
    """The server refused the credentials, or has no such database or role."""


class Rejected(BadInput):
    """A person rejected the plan; nothing destructive was done."""


class AccessDenied(RepositoryNotFound):
    """The storage refused the credentials (a bad SAS, a missing role): not a missing store."""


class BackupNotFound(BadInput):
    """No complete backup matches the request."""


class InvalidArchive(BadInput):
    """A dump or archive is malformed; it is refused before anything is restored from it."""


class IdentityRequired(BadInput):
    """A backup is encrypted and no identity given (or found) can decrypt it; the message
    names the recipients it was encrypted to."""


class OperationFailed(DRError):
    """An operation that should have worked failed."""

    exit_code = 1


class ServerUnreachable(OperationFailed):
    """A server cannot be reached right now (refused, timed out, reset): worth a retry."""


class StoreUnavailable(ServerUnreachable):
    """A repository's storage failed in the middle of an operation (a reset, a timeout, 5xx):
    worth a retry; an attempt may be left behind, which the next run removes."""


class LockHeld(OperationFailed):
    """Another live run holds the lock: a backup or restore of the same database."""


class BackupDamaged(OperationFailed):
    """A backup whose manifest cannot be read or parsed: unusable, listed as damaged, kept."""


class ObjectNotFound(OperationFailed):
    """A store holds no object under the requested key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}")
        self.key = key


class ObjectProtected(OperationFailed):
    """The store refused to delete or replace an object its immutability policy (a
    time-based retention policy, a legal hold) protects; the message says which."""


class ChecksumMismatch(OperationFailed):
    """An object's size or sha256 differs from what its manifest records."""


class DecryptionFailed(ChecksumMismatch):
    """An encrypted object whose checksum matched its manifest does not decrypt: damaged or
    truncated together with its manifest, or not what the manifest says."""


class DumpFailed(OperationFailed):
    """The dump program failed; the message carries its exit status and stderr."""


class RestoreFailed(OperationFailed):
    """The restore program or engine failed."""


class RestoreVerificationFailed(OperationFailed):
    """The restored data does not match the manifest or a check failed."""


class AzureRequestFailed(OperationFailed):
    """Azure refused or failed a request; the message keeps Azure's error code and text."""


class ConcurrentChange(OperationFailed):
    """A resource changed since its state was recorded (an ETag no longer matches): another
    run or a person got there first, and nothing was overwritten."""


class CommandFailed(OperationFailed):
    """A configured command (deploy, stop or start services) exited non-zero or timed out."""


class VerificationFailed(OperationFailed):
    """A check made after a change failed: a health endpoint, isolation, an audit item."""
