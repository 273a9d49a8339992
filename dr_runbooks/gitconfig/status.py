"""Where a configuration system (``engine: git``) stands: one row, ``(config)``.

The plan's configuration RPO is 0, so any difference between the remote's refs and the newest
bundle counts, in order of precedence:

- ``MISSING``: no complete configuration backup;
- ``STALE``: the remote's refs differ from the newest bundle's; the age is how long the
  difference may have existed: since the remote was last seen matching that bundle (a check
  of the 15-minute backup), or since the bundle was taken;
- ``FAILED``: the newest bundle's latest verification failed;
- ``UNVERIFIED``: the remote could not be read (why is in the detail), so nobody can say;
- ``OK``: the remote matches the newest bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from dr_runbooks.config import Config, GitConfig
from dr_runbooks.errors import DRError
from dr_runbooks.gitconfig.backup import compare, remote_from_config
from dr_runbooks.gitconfig.catalog import ConfigCatalog
from dr_runbooks.repository import Repository
from dr_runbooks.statusrow import DatabaseStatus
from dr_runbooks.text import first_line

__all__ = ["CONFIG_ROW", "config_status"]

#: What the ``database`` column says for a configuration system.
CONFIG_ROW = "(config)"


def config_status(
    config: Config,
    name: str,
    git: GitConfig,
    repository: Repository,
    now: datetime | None = None,
    environ: Mapping[str, str] | None = None,
) -> DatabaseStatus:
    """The status row of the configuration system ``name`` from ``repository``."""
    now = now or datetime.now(UTC)
    catalog = ConfigCatalog(repository, name)
    status = DatabaseStatus(
        system=name,
        engine="git",
        database=CONFIG_ROW,
        repository=repository.name,
        state="MISSING",
        detail="no configuration backup",
        rpo_seconds=config.objectives.rpo.configuration.total_seconds(),
        damaged=[b.id for b in catalog.backups() if b.damaged],
    )
    newest = catalog.latest()
    if newest is None or newest.manifest is None:
        return status
    status.newest_backup = newest.id
    status.newest_point = newest.consistent_point
    verified = [r for r in catalog.verifications(newest) if r.get("kind") == "bundle"]
    last = verified[-1] if verified else None
    if last is not None and last.get("ok"):
        status.verified_backup = newest.id
        status.verified_point = newest.consistent_point
        status.verified_at = _time(last.get("finished"))
    try:
        drift = compare(remote_from_config(git, environ), catalog, git.refs)
    except DRError as exc:
        status.state = "UNVERIFIED"
        status.detail = f"remote not read ({first_line(exc)}); newest bundle {newest.id}"
        return status
    if not drift.same:
        since = max(newest.consistent_point, catalog.last_check(newest) or newest.consistent_point)
        status.state = "STALE"
        status.age_seconds = (now - since).total_seconds()
        status.detail = f"the remote differs from bundle {newest.id}: {drift.describe()}"
    elif last is not None and not last.get("ok"):
        status.state = "FAILED"
        problems = last.get("problems") or ["verification failed"]
        status.detail = f"bundle {newest.id}: {problems[0]}"
        status.age_seconds = 0.0
    else:
        status.state = "OK"
        status.age_seconds = 0.0
        status.detail = f"the remote matches bundle {newest.id} ({len(drift.remote)} refs)"
    return status


def _time(value: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
