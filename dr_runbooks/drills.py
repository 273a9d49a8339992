"""What a drill covers: the databases it recovers, where (the sandbox, or production when the
team asked for the plan's literal drill), and from which repositories.

:func:`plan_drill` reads dr.yaml. The drill on embedded defaults (``make drill``) has no
dr.yaml systems: its plan is made once its throwaway server and backup exist
(:func:`embedded_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dr_runbooks.config import Config, Objectives
from dr_runbooks.errors import ConfigError
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.sandbox import Sandbox, check_apart, resolve
from dr_runbooks.targets import BlockSource, Connection, repositories_for, resolve_target

__all__ = ["DrillDatabase", "DrillPlan", "embedded_plan", "plan_drill", "production_servers"]

Target = Literal["sandbox", "production"]


@dataclass
class DrillDatabase:
    """One protected database as the drill recovers it."""

    system: str
    database: str
    #: The database the drill breaks and recovers: the sandbox copy, or production's own.
    live: str
    #: Where the recovery reads the backup: the system's first repository.
    repository: Repository
    #: The server the live database is on: the sandbox, or production's own.
    server: ConnInfo
    tier: str = "critical"

    @property
    def label(self) -> str:
        return f"{self.system}/{self.database}"


@dataclass
class DrillPlan:
    target: Target
    databases: list[DrillDatabase]
    #: The PostgreSQL sandbox (None on production).
    sandbox: Sandbox | None
    #: The runbooks' ``connection`` override: the sandbox's spec, "" for production's own.
    connection: str
    health_urls: list[str] = field(default_factory=list)
    objectives: Objectives = field(default_factory=Objectives)
    embedded: bool = False

    def describe(self) -> str:
        if self.target == "production":
            return "PRODUCTION (the plan's literal drill)"
        assert self.sandbox is not None
        return f"the sandbox {self.sandbox.describe()}"


def production_servers(
    config: Config, engine: str, blocks: BlockSource | None
) -> dict[str, Connection]:
    """Every declared system's server of ``engine``; one that cannot be resolved here is a
    :class:`ConfigError` (the drill cannot tell whether its sandbox is apart from it)."""
    found: dict[str, Connection] = {}
    for name, system in config.systems.items():
        if system.engine != engine:
            continue
        try:
            found[name] = resolve_target(config, engine, name, blocks=blocks).conninfo
        except ConfigError as exc:
            raise ConfigError(
                f"cannot tell whether the sandbox is apart from system {name!r} ({exc}); give "
                "the sandbox a prefix"
            ) from None
    return found


def plan_drill(
    config: Config,
    systems: list[str] | None,
    target: Target | None,
    blocks: BlockSource | None = None,
) -> DrillPlan:
    """The monthly drill's plan from dr.yaml: the PostgreSQL databases of ``systems``
    (default: dr.yaml's ``drills.systems``, else every PostgreSQL system)."""
    chosen = (
        systems
        or config.drills.systems
        or [name for name, s in sorted(config.systems.items()) if s.engine == "postgres"]
    )
    if not chosen:
        raise ConfigError("dr.yaml declares no PostgreSQL system to drill")
    mode: Target = target or (config.sandbox.target if config.sandbox else "sandbox")
    sandbox = None
    if mode == "sandbox":
        sandbox = resolve(config, "postgres", blocks)
        if sandbox is None:
            raise ConfigError(
                "dr.yaml declares no PostgreSQL sandbox (sandbox: postgres:); see docs/drills.md, "
                "or run the drill on embedded defaults (dr drill --embedded)"
            )
        check_apart(sandbox, production_servers(config, "postgres", blocks))
    databases = []
    production = production_servers(config, "postgres", blocks) if mode == "production" else {}
    for name in chosen:
        system = config.system(name)
        if system.engine != "postgres":
            raise ConfigError(f"system {name!r} is {system.engine}: the drill recovers PostgreSQL")
        if not system.databases:
            raise ConfigError(f"system {name!r} names no databases: (the drill needs them)")
        repository = repositories_for(config, system, blocks)[0]
        for database in system.databases:
            if sandbox is not None:
                live, server = sandbox.database(database), sandbox.conninfo
            else:
                live, server = database, production[name]
            assert isinstance(server, ConnInfo)
            databases.append(DrillDatabase(name, database, live, repository, server, system.tier))
    lives = [d.live for d in databases]
    if len(set(lives)) != len(lives):
        raise ConfigError("two drilled systems have a database of the same name: drill them apart")
    return DrillPlan(
        target=mode,
        databases=databases,
        sandbox=sandbox,
        connection=sandbox.spec if sandbox is not None else "",
        health_urls=list(config.sandbox.health_urls) if config.sandbox else [],
        objectives=config.objectives,
    )


def embedded_plan(
    sandbox: Sandbox, system: str, database: str, repository: Repository, config: Config
) -> DrillPlan:
    """The drill on embedded defaults: its throwaway server is the sandbox and production."""
    conninfo = sandbox.conninfo
    assert isinstance(conninfo, ConnInfo)
    return DrillPlan(
        target="sandbox",
        databases=[DrillDatabase(system, database, database, repository, conninfo)],
        sandbox=sandbox,
        connection=sandbox.spec,
        objectives=config.objectives,
        embedded=True,
    )
