"""Network security groups: the breach runbook's isolation.

Isolation is a ``DenyAll`` rule at priority 100 (the highest precedence an NSG rule can
have), inbound and outbound, named ``DenyAll-Inbound`` and ``DenyAll-Outbound``. A rule that
already holds priority 100 in a direction would make Azure refuse ours; it is *displaced*:
recorded whole, deleted, and put back when the isolation is lifted.
"""

from __future__ import annotations

from typing import Any

from dr_runbooks.azure.errors import translated
from dr_runbooks.azure.lro import Progress, wait_for

__all__ = [
    "DENY_ALL_PRIORITY",
    "DIRECTIONS",
    "delete_rule",
    "deny_all_in_place",
    "deny_all_name",
    "deny_all_properties",
    "put_rule",
    "read_rules",
    "rule_at_priority",
]

DENY_ALL_PRIORITY = 100
DIRECTIONS = ("Inbound", "Outbound")


def deny_all_name(direction: str) -> str:
    return f"DenyAll-{direction}"


def deny_all_properties(direction: str) -> dict[str, Any]:
    """The plan's ``az network nsg rule create --name DenyAll --priority 100 --access Deny
    --protocol '*' --source-address-prefixes '*' --destination-address-prefixes '*'``."""
    return {
        "description": "dr-runbooks security-breach isolation",
        "priority": DENY_ALL_PRIORITY,
        "direction": direction,
        "access": "Deny",
        "protocol": "*",
        "sourceAddressPrefix": "*",
        "destinationAddressPrefix": "*",
        "sourcePortRange": "*",
        "destinationPortRange": "*",
    }


def _plain(rule: Any) -> dict[str, Any]:
    """A rule as REST JSON without what Azure fills in (ids, state, etag)."""
    data = rule.as_dict(exclude_readonly=True)
    properties = {
        k: v for k, v in (data.get("properties") or {}).items() if k != "provisioningState"
    }
    return {"name": rule.name, "properties": properties}


def read_rules(client: Any, resource_group: str, nsg: str) -> list[dict[str, Any]]:
    """The NSG's own rules (not Azure's defaults), each ``{"name", "properties"}``."""
    with translated(f"reading network security group {nsg}"):
        group = client.network_security_groups.get(resource_group, nsg)
    return [_plain(rule) for rule in group.security_rules or []]


def deny_all_in_place(rules: list[dict[str, Any]], direction: str) -> bool:
    """Whether ``rules`` hold our DenyAll for ``direction`` at priority 100, as the plan
    writes it."""
    wanted = deny_all_properties(direction)
    for rule in rules:
        if rule["name"] != deny_all_name(direction):
            continue
        have = rule["properties"]
        return all(have.get(k) == wanted[k] for k in wanted if k != "description")
    return False


def rule_at_priority(
    rules: list[dict[str, Any]], direction: str, priority: int = DENY_ALL_PRIORITY
) -> dict[str, Any] | None:
    """Another rule holding ``priority`` in ``direction`` (which ours would have to displace)."""
    for rule in rules:
        have = rule["properties"]
        if (
            rule["name"] != deny_all_name(direction)
            and have.get("priority") == priority
            and have.get("direction") == direction
        ):
            return rule
    return None


def put_rule(
    client: Any,
    resource_group: str,
    nsg: str,
    name: str,
    properties: dict[str, Any],
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Create or replace the rule ``name``; returns it as Azure holds it afterwards."""
    from azure.mgmt.network.models import SecurityRule

    rule = SecurityRule({"properties": properties})
    with translated(f"writing rule {name} of network security group {nsg}"):
        poller = client.security_rules.begin_create_or_update(resource_group, nsg, name, rule)
        result = wait_for(poller, f"rule {name} of {nsg}", on_progress)
    return _plain(result)


def delete_rule(
    client: Any, resource_group: str, nsg: str, name: str, on_progress: Progress | None = None
) -> None:
    with translated(f"deleting rule {name} of network security group {nsg}"):
        poller = client.security_rules.begin_delete(resource_group, nsg, name)
        wait_for(poller, f"deleting rule {name} of {nsg}", on_progress)
