"""Azure steps of the region failover, failback and security-breach runbooks: one SDK call (or
one wait on a long-running operation) each.

Who retries what: the SDK's retry policy (``AzureSite.retry_total``) owns transient HTTP
failures, honouring ``Retry-After`` on a 429; long-running operations are polled by the SDK
(``Azure-AsyncOperation``/``Location``). A change is never retried by Prefect on top of that:
each change is idempotent (an ETag, a name that exists, a rule already in place) and a run
started again picks it up from the durable record. Reads, which change nothing, get one Prefect
retry for an outage that outlasts the SDK's retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import PREFECT_BLOCKS, load_block
from blocks.azure import AzureSite
from dr_runbooks.azure import deployments, dns, flexible, keyvault, network
from dr_runbooks.azure.commands import run_command
from dr_runbooks.azure.errors import translated
from dr_runbooks.config import Config, SitesConfig, SystemConfig, load_config
from dr_runbooks.errors import (
    ConfigError,
)
from dr_runbooks.repository import Repository
from dr_runbooks.targets import Target, repository_from_spec
from tasks._runtime import logger, transient_only

__all__ = [
    "AzureSystem",
    "azure_ensure_resource_group",
    "azure_load_system",
    "command_run",
    "deployment_run",
    "deployment_what_if",
    "dns_cut_over",
    "dns_read_records",
    "dns_restore_record",
    "keyvault_read_secret",
    "keyvault_set_secret",
    "nsg_delete_rule",
    "nsg_put_rule",
    "nsg_read_rules",
    "postgres_flexible_read",
    "postgres_flexible_restore",
]


@dataclass
class AzureSystem:
    """A system's Azure configuration, loaded once at the start of a runbook."""

    name: str
    config: Config
    system: SystemConfig
    sites: SitesConfig
    primary: AzureSite
    dr: AzureSite
    #: Where the runbooks keep their durable records.
    records: Repository

    def target(self) -> Target:
        """The system as the runbook skeleton measures it (objectives, tier)."""
        return Target(
            system=self.name,
            engine=self.system.engine,
            conninfo=None,
            databases=list(self.system.databases),
            repositories=[self.records],
            tier=self.system.tier,
            declared=True,
            config=self.config,
        )


@task(cache_policy=NO_CACHE)
def azure_load_system(system: str, config_path: str | None = None) -> AzureSystem:
    """The system's sites (two ``AzureSite`` blocks) and its records repository (no retries:
    a missing block or a wrong name is bad input)."""
    config = load_config(config_path)
    declared = config.system(system)
    if declared.sites is None:
        raise ConfigError(f"system {system!r} names no Azure sites in dr.yaml (sites: primary, dr)")
    sites = declared.sites
    primary = load_block(sites.primary, AzureSite, "Azure site block")
    dr = load_block(sites.dr, AzureSite, "Azure site block")
    spec = sites.records or (declared.repositories[0] if declared.repositories else None)
    if spec is None:
        raise ConfigError(
            f"system {system!r} needs a repository for the runbooks' records (sites.records)"
        )
    records = repository_from_spec(spec, config, PREFECT_BLOCKS)
    logger().info(
        "system %s: primary %s, DR %s; records in %s",
        system,
        primary.describe(),
        dr.describe(),
        records.name,
    )
    return AzureSystem(system, config, declared, sites, primary, dr, records)


# -- resource groups and deployments ------------------------------------------------------------


@task(
    retries=1,
    retry_delay_seconds=30,
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def azure_ensure_resource_group(site: AzureSite, create: bool = True) -> bool:
    """Whether the site's resource group existed; create it when missing (unless not asked to).
    Also proves the subscription can be reached with the site's credentials."""
    client = site.get_resource_client()
    with translated(f"checking resource group {site.resource_group}"):
        exists = bool(client.resource_groups.check_existence(site.resource_group))
    if exists or not create:
        logger().info(
            "resource group %s %s", site.resource_group, "exists" if exists else "is MISSING"
        )
        return exists
    with translated(f"creating resource group {site.resource_group} in {site.region}"):
        client.resource_groups.create_or_update(site.resource_group, {"location": site.region})
    logger().warning("created resource group %s in %s", site.resource_group, site.region)
    return False


@task(
    retries=1,
    retry_delay_seconds=30,
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def deployment_what_if(site: AzureSite) -> list[dict[str, str]]:
    """What deploying the site's template would change (changes nothing)."""
    assert site.deploy_template is not None
    body = deployments.deployment_body(
        deployments.load_template(site.deploy_template), site.deploy_parameters
    )
    changes = deployments.what_if(
        site.get_deployments_client(),
        site.resource_group,
        site.deployment_name,
        body,
        on_progress=logger().info,
    )
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.change] = counts.get(change.change, 0) + 1
    logger().info(
        "what-if of %s: %s",
        site.deployment_name,
        ", ".join(f"{n} {c}" for c, n in sorted(counts.items())) or "no changes",
    )
    return [c.to_json() for c in changes]


@task(cache_policy=NO_CACHE)
def deployment_run(site: AzureSite) -> list[str]:
    """Deploy the site's template (incremental); returns the resources it reports."""
    assert site.deploy_template is not None
    body = deployments.deployment_body(
        deployments.load_template(site.deploy_template), site.deploy_parameters
    )
    resources = deployments.deploy(
        site.get_deployments_client(),
        site.resource_group,
        site.deployment_name,
        body,
        on_progress=logger().info,
        timeout=site.deploy_timeout_seconds,
    )
    logger().info("deployment %s succeeded: %d resources", site.deployment_name, len(resources))
    return resources


@task(cache_policy=NO_CACHE)
def command_run(argv: list[str], timeout_seconds: float, cwd: str | None = None) -> int:
    """Run a configured command with a timeout; its output goes to the run's logs."""
    log = logger()
    log.info("running %s", " ".join(argv))
    result = run_command(argv, timeout_seconds, cwd, on_line=lambda line: log.info("| %s", line))
    log.info("%s", result.describe())
    return result.returncode


# -- PostgreSQL flexible servers ------------------------------------------------------------------


@task(
    retries=1,
    retry_delay_seconds=30,
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def postgres_flexible_read(site: AzureSite, name: str | None = None) -> dict[str, Any] | None:
    """The site's flexible server (or ``name``) and the newest backup's time; None when the
    server does not exist."""
    server_name = name or site.postgres_server
    if not server_name:
        raise ConfigError(f"site {site.describe()} names no postgres_server")
    client = site.get_postgres_client()
    server = flexible.read_server(client, site.server_resource_group, server_name)
    if server is None:
        logger().info("flexible server %s does not exist", server_name)
        return None
    latest = flexible.latest_backup_time(client, site.server_resource_group, server_name)
    logger().info(
        "flexible server %s (%s) is %s; geo-redundant backup %s; restorable from %s to %s",
        server.name,
        server.location,
        server.state,
        "enabled" if server.geo_redundant_backup else "DISABLED",
        server.earliest_restore.isoformat() if server.earliest_restore else "?",
        latest.isoformat() if latest else "?",
    )
    return {"server": server.to_json(), "latest_backup": latest.isoformat() if latest else None}


@task(cache_policy=NO_CACHE)
def postgres_flexible_restore(
    site: AzureSite,
    name: str,
    mode: flexible.RestoreMode,
    source: dict[str, Any],
    point: datetime,
    timeout_seconds: float,
) -> dict[str, Any]:
    """Restore the ``source`` server into the new server ``name`` in ``site`` at ``point``
    (GeoRestore across regions, PointInTimeRestore within one); a server already restored
    from the same source by an earlier attempt is waited for, not created again."""
    earliest = source.get("earliest_restore")
    server, created = flexible.restore_server(
        site.get_postgres_client(),
        site.server_resource_group,
        name,
        mode,
        flexible.FlexibleServer(
            id=source["id"],
            name=source["name"],
            location=source["location"],
            state=source.get("state") or "Unknown",
            geo_redundant_backup=bool(source.get("geo_redundant_backup")),
            earliest_restore=datetime.fromisoformat(earliest) if earliest else None,
        ),
        site.region,
        point,
        timeout=timeout_seconds,
        poll_seconds=site.poll_interval_seconds,
        on_progress=logger().info,
    )
    logger().info(
        "%s %s: %s of %s at %s, %s",
        "restored" if created else "found",
        server.name,
        mode,
        source["name"],
        point.isoformat(),
        server.state,
    )
    return {"server": server.to_json(), "created": created}


# -- DNS ------------------------------------------------------------------------------------------


@task(
    retries=1,
    retry_delay_seconds=30,
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def dns_read_records(site: AzureSite, names: list[str]) -> list[dict[str, Any]]:
    """The A records ``names`` in the site's zone as they are now (addresses, TTL, ETag)."""
    if not site.dns_zone:
        raise ConfigError(f"site {site.describe()} names no dns_zone")
    client = site.get_dns_client()
    records = [dns.read_a_record(client, site.zone_resource_group, site.dns_zone, n) for n in names]
    for record in records:
        logger().info("DNS %s: %s", record.fqdn, record.describe())
    return [r.to_json() for r in records]


@task(cache_policy=NO_CACHE)
def dns_cut_over(
    site: AzureSite, planned: dict[str, Any], addresses: list[str], ttl: int | None
) -> dict[str, Any]:
    """Point one record at ``addresses``, only if it is as the rollback plan captured it."""
    before = dns.ARecordSet.from_json(planned)
    record, changed = dns.cut_over(
        site.get_dns_client(), site.zone_resource_group, before, addresses, ttl
    )
    if changed:
        logger().warning(
            "DNS %s: %s → %s (clients may keep the old address for up to %s s)",
            record.fqdn,
            before.describe(),
            record.describe(),
            before.ttl,
        )
    else:
        logger().info("DNS %s already points at %s", record.fqdn, record.describe())
    return {**record.to_json(), "changed": changed}


@task(cache_policy=NO_CACHE)
def dns_restore_record(site: AzureSite, planned: dict[str, Any]) -> dict[str, Any]:
    """Put one record back as the rollback plan captured it."""
    before = dns.ARecordSet.from_json(planned)
    now, changed = dns.restore_a_record(site.get_dns_client(), site.zone_resource_group, before)
    logger().error("DNS %s %s: %s", before.fqdn, "PUT BACK" if changed else "was already back", now)
    return {"record": before.fqdn, "now": now, "changed": changed}


# -- network security groups --------------------------------------------------------------------


@task(
    retries=1,
    retry_delay_seconds=30,
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def nsg_read_rules(site: AzureSite, nsg: str) -> list[dict[str, Any]]:
    """The NSG's own rules, as Azure holds them now."""
    rules = network.read_rules(site.get_network_client(), site.resource_group, nsg)
    logger().info("NSG %s: %d rules", nsg, len(rules))
    return rules


@task(cache_policy=NO_CACHE)
def nsg_put_rule(
    site: AzureSite, nsg: str, name: str, properties: dict[str, Any]
) -> dict[str, Any]:
    """Create or replace one rule of an NSG (a long-running operation)."""
    rule = network.put_rule(
        site.get_network_client(), site.resource_group, nsg, name, properties, logger().info
    )
    logger().warning(
        "NSG %s: rule %s %s %s at priority %s",
        nsg,
        name,
        properties.get("access"),
        properties.get("direction"),
        properties.get("priority"),
    )
    return rule


@task(cache_policy=NO_CACHE)
def nsg_delete_rule(site: AzureSite, nsg: str, name: str) -> None:
    """Delete one rule of an NSG (a long-running operation; a missing rule is fine)."""
    network.delete_rule(site.get_network_client(), site.resource_group, nsg, name, logger().info)
    logger().warning("NSG %s: rule %s deleted", nsg, name)


# -- Key Vault ----------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE)
def keyvault_set_secret(site: AzureSite, name: str, value: str) -> str:
    """A new version of the secret ``name`` (the value is never logged); returns the version."""
    version = keyvault.set_secret(site.get_secret_client(), name, value)
    logger().warning("Key Vault secret %s: new version %s", name, version)
    return version


@task(
    retries=1,
    retry_delay_seconds=30,
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def keyvault_read_secret(
    site: AzureSite, name: str, version: str | None = None
) -> tuple[str, str] | None:
    """The secret's value and version (latest or ``version``); None when it does not exist."""
    found = keyvault.read_secret(site.get_secret_client(), name, version)
    logger().info(
        "Key Vault secret %s: %s", name, f"version {found[1]}" if found else "does not exist"
    )
    return found
