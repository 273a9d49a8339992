"""Parameters that several runbooks share, defined once so every run form in the Prefect UI
describes them the same way.

Each is a pydantic ``Field`` used as a flow parameter's default (Prefect reads its description
and constraints into the form): ``system: str = SYSTEM``. Optional text is ``""`` rather than
``None`` (the form shows a plain text box, not a choice of types); closed sets are ``Literal``
(the form offers the choice). :func:`given` drops ``None`` from keyword arguments, for callers
that pass what they may not have.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

__all__ = [
    "APPROVAL_TIMEOUT",
    "APPROVED",
    "BACKUP_DATABASE",
    "BACKUP_ID",
    "BACKUP_LOCK_TIMEOUT",
    "BEFORE",
    "CONFIG_PATH",
    "CONNECTION",
    "DATABASE",
    "DRY_RUN",
    "DUMP_RETRIES",
    "HEALTH_TIMEOUT",
    "HEALTH_URL",
    "INCIDENT_TIME",
    "KIND",
    "REPOSITORIES",
    "REPOSITORY",
    "RESTORE_LOCK_TIMEOUT",
    "RETENTION",
    "RETENTION_DRY_RUN",
    "SYSTEM",
    "Kind",
    "Severity",
    "given",
    "severity",
]

SYSTEM: Any = Field(description="Protected system from dr.yaml.")
DATABASE: Any = Field("", description="Database to restore (default: the system's first).")
CONNECTION: Any = Field(
    "",
    description="Override the system's connection: a saved connection block's name "
    "(`DR PostgreSQL Database` or `DR MongoDB Database`; `slug/name` for another type), or "
    "`env:VAR`, an environment variable holding a DSN or URI.",
)
BACKUP_DATABASE: Any = Field(
    "",
    description="Only this database (default: the system's databases; for MongoDB with none "
    "declared, every database on the server).",
)
REPOSITORY: Any = Field("", description="Repository to restore from (default: the system's first).")
REPOSITORIES: Any = Field(
    [],
    description="Override the repositories: dr.yaml names, directories, container URLs "
    "or block names. The first receives the backup; the rest get copies.",
)
BACKUP_ID: Any = Field("", description="Restore this backup id.")
BEFORE: Any = Field(
    "",
    description="Restore the latest backup whose consistent point is before this time "
    "(ISO 8601; UTC when no zone is given).",
)
HEALTH_URL: Any = Field("", description="URL polled until it answers 2xx.")
HEALTH_TIMEOUT: Any = Field(300, description="How long to wait for the health URL.")
DRY_RUN: Any = Field(False, description="Assess, choose and show the plan; change nothing.")
APPROVED: Any = Field(
    False, description="Approved in advance; otherwise the run pauses for approval in the UI."
)
APPROVAL_TIMEOUT: Any = Field(3600, description="How long to wait for approval.")
INCIDENT_TIME: Any = Field(
    "",
    description="When the failure happened (ISO 8601); default: when this run started. "
    "The RPO achieved is measured from it.",
)
#: The plan's post-incident review grades an incident Critical, High, Medium or Low.
Severity = Literal["Critical", "High", "Medium", "Low"]


def severity(default: str) -> Any:
    """The severity parameter, defaulting to what the runbook's incident usually is."""
    return Field(default, description="Severity written in the post-incident review.")


KIND: Any = Field("full", description="What kind of backup this is, recorded in the manifest.")
#: The kinds of backup a manifest records.
Kind = Literal["full", "hourly", "manual", "drill"]
RETENTION: Any = Field(True, description="Apply each repository's retention afterwards.")
RETENTION_DRY_RUN: Any = Field(False, description="Only report what retention would delete.")
DUMP_RETRIES: Any = Field(1, ge=0, le=5, description="Retries of a failed dump.")
BACKUP_LOCK_TIMEOUT: Any = Field(
    1800,
    ge=0,
    description="How long to wait, in seconds, while another backup or a restore of the same "
    "database runs (0: fail at once naming it).",
)
RESTORE_LOCK_TIMEOUT: Any = Field(
    0,
    ge=0,
    description="How long to wait, in seconds, while another restore or a backup of the same "
    "database runs (0: fail at once naming it).",
)
CONFIG_PATH: Any = Field("", description="dr.yaml to use (default: DR_CONFIG or ./dr.yaml).")


def given(**kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that have a value (``None`` ones left to the flow's default)."""
    return {key: value for key, value in kwargs.items() if value is not None}
