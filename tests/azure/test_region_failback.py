"""The failback: after a failover, the system returns to the primary region once the primary
is healthy again."""

from __future__ import annotations

import pytest

from dr_runbooks.errors import ConfigError, VerificationFailed
from flows.region_failback import region_failback
from flows.region_failover import region_failover
from tests.azure.landscape import (
    DR_ADDRESSES,
    DR_RG,
    DR_SERVER,
    PRIMARY_ADDRESSES,
    PRIMARY_RG,
    PRIMARY_SERVER,
    Landscape,
    server_id,
)


def test_failback_returns_to_the_primary_after_a_failover(landscape: Landscape) -> None:
    api = landscape.api
    region_failover(system=landscape.system, config_path=landscape.config, approved=True)
    assert landscape.addresses() == DR_ADDRESSES

    # The primary's old server still holds the data from before the failover: the failback
    # refuses to restore over that name, before changing anything.
    writes = len([c for c in api.calls if c.method not in ("GET", "HEAD")])
    with pytest.raises(ConfigError, match=f"{PRIMARY_SERVER} already exists"):
        region_failback(system=landscape.system, config_path=landscape.config, approved=True)
    assert len([c for c in api.calls if c.method not in ("GET", "HEAD")]) == writes

    result = region_failback(
        system=landscape.system,
        config_path=landscape.config,
        approved=True,
        target_server="dot-copilot-db-prod-fb",
    )

    assert landscape.addresses() == PRIMARY_ADDRESSES
    back = api.resource(server_id(PRIMARY_RG, "dot-copilot-db-prod-fb"))
    assert back is not None and back["location"] == "eastus"
    assert back["properties"]["createMode"] == "GeoRestore"
    assert back["properties"]["sourceServerResourceId"] == server_id(DR_RG, DR_SERVER)
    assert result["direction"] == "westus2 → eastus"
    assert any("no longer serves" in c for c in result["cleanup"])


def test_failback_waits_for_a_healthy_primary(landscape: Landscape) -> None:
    region_failover(system=landscape.system, config_path=landscape.config, approved=True)
    landscape.health.mode = "fail"
    writes = len([c for c in landscape.api.calls if c.method not in ("GET", "HEAD")])

    with pytest.raises(VerificationFailed, match="did not turn healthy"):
        region_failback(
            system=landscape.system,
            config_path=landscape.config,
            approved=True,
            health_timeout_seconds=1,
            target_server="dot-copilot-db-prod-fb",
        )
    assert landscape.addresses() == DR_ADDRESSES
    assert len([c for c in landscape.api.calls if c.method not in ("GET", "HEAD")]) == writes
