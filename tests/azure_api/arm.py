"""ARM resource types the loopback endpoint speaks, one class each.

A type decides what a PUT makes of a request body (:meth:`ResourceType.create`), whether the
PUT or DELETE runs long (then ``finish``/``remove`` run when its operation completes), how a
GET shows it, and what its actions (``POST …/whatIf``) and child collections (``GET
…/backups``) answer. Register another type with :meth:`AzureApi.register
<tests.azure_api.server.AzureApi.register>`; a type the endpoint does not know is kept as it
was put.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tests.azure_api.core import ApiError, Response

if TYPE_CHECKING:
    from tests.azure_api.server import AzureApi

__all__ = [
    "ArmTarget",
    "BlobServices",
    "Deployments",
    "DnsRecordSets",
    "FlexibleServers",
    "NetworkSecurityGroups",
    "ResourceGroups",
    "ResourceType",
    "SecurityRules",
    "StorageAccounts",
    "Vaults",
    "parse_arm_path",
]


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ArmTarget:
    """An ARM request path taken apart: the resource it names, its type, and what follows
    (an action for a POST, a child collection for a GET)."""

    resource_id: str
    type_key: str
    name: str
    subscription: str
    resource_group: str | None
    tail: str | None = None

    @property
    def parent_id(self) -> str:
        return self.resource_id.rsplit("/", 2)[0]


def parse_arm_path(path: str) -> ArmTarget | None:
    """``/subscriptions/S/resourceGroups/G/providers/NS/t1/n1/t2/n2[/tail]`` → its target."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        return None
    subscription = parts[1]
    if len(parts) < 4 or parts[2].lower() != "resourcegroups":
        return None
    group = parts[3]
    group_id = f"/subscriptions/{subscription}/resourceGroups/{group}"
    if len(parts) == 4:
        return ArmTarget(group_id, "resourcegroups", group, subscription, group)
    if parts[4].lower() != "providers" or len(parts) < 8:
        return None
    namespace, rest = parts[5], parts[6:]
    pairs, tail = rest[: len(rest) // 2 * 2], (rest[-1] if len(rest) % 2 else None)
    types = [pairs[i] for i in range(0, len(pairs), 2)]
    resource_id = f"{group_id}/providers/{namespace}/" + "/".join(pairs)
    type_key = "/".join([namespace, *types]).lower()
    return ArmTarget(resource_id, type_key, pairs[-1], subscription, group, tail)


class ResourceType:
    """A resource type kept as it was put: synchronous, no etag, no actions."""

    #: ``type`` as ARM returns it, e.g. ``Microsoft.Network/dnszones/A``.
    type_name = "Unknown"
    long_running_put = False
    #: A long-running PUT answered 202 without a body (flexible servers) instead of 200/201.
    accepted_put = False
    long_running_delete = False
    etags = False
    #: The type key of the parent that must exist, if any.
    parent_type: str | None = None

    def create(
        self,
        api: AzureApi,
        target: ArmTarget,
        body: dict[str, Any],
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The resource a PUT stores (before a long-running PUT finishes)."""
        resource = {
            "id": target.resource_id,
            "name": target.name,
            "type": self.type_name,
            **{k: v for k, v in body.items() if k not in ("id", "name", "type")},
        }
        resource.setdefault("properties", {})["provisioningState"] = (
            "Updating" if self.long_running_put else "Succeeded"
        )
        return resource

    def finish(self, api: AzureApi, resource_id: str) -> None:
        """A long-running PUT completed."""

        def succeeded(resource: dict[str, Any]) -> None:
            resource.setdefault("properties", {})["provisioningState"] = "Succeeded"

        api.store.update(resource_id, succeeded)

    def view(self, api: AzureApi, resource: dict[str, Any]) -> dict[str, Any]:
        return resource

    def action(self, api: AzureApi, target: ArmTarget, body: dict[str, Any]) -> Response:
        raise ApiError(404, "NoRegisteredProviderFound", f"no action {target.tail!r}")

    def collection(self, api: AzureApi, target: ArmTarget) -> list[dict[str, Any]]:
        assert target.tail is not None
        return [api.view(item) for item in api.store.children(target.resource_id, target.tail)]


class ResourceGroups(ResourceType):
    type_name = "Microsoft.Resources/resourceGroups"

    def create(
        self,
        api: AzureApi,
        target: ArmTarget,
        body: dict[str, Any],
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if not body.get("location"):
            raise ApiError(400, "LocationRequired", "The location property is required.")
        if existing is not None and existing["location"] != body["location"]:
            raise ApiError(
                409,
                "InvalidResourceGroupLocation",
                f"Resource group '{target.name}' already exists in location "
                f"'{existing['location']}'.",
            )
        return super().create(api, target, body, existing)


# -- template deployments -------------------------------------------------------------------


_PARAMETER = re.compile(r"^\[parameters\('([^']+)'\)\]$")


def _evaluate(value: Any, parameters: dict[str, Any]) -> Any:
    """The one template expression a test template uses: ``[parameters('name')]``."""
    if isinstance(value, str):
        match = _PARAMETER.match(value)
        if match:
            if match.group(1) not in parameters:
                raise ApiError(400, "InvalidTemplate", f"parameter {match.group(1)!r} not given")
            return parameters[match.group(1)]
        return value
    if isinstance(value, dict):
        return {k: _evaluate(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [_evaluate(v, parameters) for v in value]
    return value


def _template_resources(
    group_id: str, properties: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    template = properties.get("template")
    if not isinstance(template, dict):
        raise ApiError(400, "InvalidTemplate", "the deployment has no template")
    declared = template.get("parameters") or {}
    given = properties.get("parameters") or {}
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in given:
            values[name] = given[name]["value"] if isinstance(given[name], dict) else given[name]
        elif "defaultValue" in spec:
            values[name] = spec["defaultValue"]
    out = []
    for item in template.get("resources") or []:
        item = _evaluate(item, values)
        resource_id = f"{group_id}/providers/{item['type']}/{item['name']}"
        resource = {
            "id": resource_id,
            "name": item["name"].rsplit("/", 1)[-1],
            "type": item["type"],
            "location": item.get("location"),
            "properties": {**(item.get("properties") or {}), "provisioningState": "Succeeded"},
        }
        out.append((resource_id, resource))
    return out


class Deployments(ResourceType):
    """Template deployments: a PUT runs long and creates the template's resources; ``whatIf``
    compares them with what the group holds."""

    type_name = "Microsoft.Resources/deployments"
    long_running_put = True

    def create(
        self,
        api: AzureApi,
        target: ArmTarget,
        body: dict[str, Any],
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if existing is not None and existing["properties"]["provisioningState"] == "Running":
            raise ApiError(
                409, "DeploymentActive", f"The deployment '{target.name}' is already running."
            )
        properties = body.get("properties") or {}
        group_id = target.resource_id.split("/providers/")[0]
        _template_resources(group_id, properties)  # a bad template is refused now
        return {
            "id": target.resource_id,
            "name": target.name,
            "type": self.type_name,
            "properties": {
                "mode": properties.get("mode", "Incremental"),
                "provisioningState": "Running",
                "timestamp": now_iso(),
                "template": properties["template"],
                "parameters": properties.get("parameters") or {},
                "outputResources": [],
            },
        }

    def finish(self, api: AzureApi, resource_id: str) -> None:
        deployment = api.store.get(resource_id)
        assert deployment is not None
        group_id = resource_id.split("/providers/")[0]
        created = _template_resources(group_id, deployment["properties"])
        for rid, resource in created:
            api.store.put(rid, resource)

        def succeeded(item: dict[str, Any]) -> None:
            item["properties"]["provisioningState"] = "Succeeded"
            item["properties"]["outputResources"] = [{"id": rid} for rid, _ in created]

        api.store.update(resource_id, succeeded)

    def view(self, api: AzureApi, resource: dict[str, Any]) -> dict[str, Any]:
        view = dict(resource)
        view["properties"] = {
            k: v for k, v in resource["properties"].items() if k not in ("template",)
        }
        return view

    def action(self, api: AzureApi, target: ArmTarget, body: dict[str, Any]) -> Response:
        if (target.tail or "").lower() != "whatif":
            return super().action(api, target, body)
        group_id = target.resource_id.split("/providers/")[0]
        changes = []
        for rid, resource in _template_resources(group_id, body.get("properties") or {}):
            before = api.store.get(rid)
            if before is None:
                change = "Create"
            elif before.get("properties", {}) == resource["properties"]:
                change = "NoChange"
            else:
                change = "Modify"
            changes.append(
                {"resourceId": rid, "changeType": change, "before": before, "after": resource}
            )
        result = {"status": "Succeeded", "properties": {"changes": changes}}
        return api.long_running_post(lambda: result)


# -- DNS ------------------------------------------------------------------------------------


class DnsZones(ResourceType):
    type_name = "Microsoft.Network/dnszones"


class DnsRecordSets(ResourceType):
    """A record sets, with etags for optimistic concurrency (``If-Match``)."""

    type_name = "Microsoft.Network/dnszones/A"
    etags = True
    parent_type = "microsoft.network/dnszones"

    def create(
        self,
        api: AzureApi,
        target: ArmTarget,
        body: dict[str, Any],
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        properties = body.get("properties") or {}
        records = properties.get("ARecords") or []
        for record in records:
            address = str(record.get("ipv4Address", ""))
            if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", address):
                raise ApiError(400, "BadRequest", f"invalid IPv4 address {address!r}")
        zone = target.parent_id.rsplit("/", 1)[-1]
        return {
            "id": target.resource_id,
            "name": target.name,
            "type": self.type_name,
            "properties": {
                "TTL": int(properties.get("TTL", 3600)),
                "ARecords": records,
                "fqdn": f"{target.name}.{zone}.",
                "provisioningState": "Succeeded",
                "metadata": properties.get("metadata"),
            },
        }


# -- network security groups ----------------------------------------------------------------


class NetworkSecurityGroups(ResourceType):
    """An NSG shows its rules (children of type ``securityRules``) in ``securityRules``."""

    type_name = "Microsoft.Network/networkSecurityGroups"

    def view(self, api: AzureApi, resource: dict[str, Any]) -> dict[str, Any]:
        view = dict(resource)
        properties = dict(resource.get("properties") or {})
        properties["securityRules"] = api.store.children(resource["id"], "securityRules")
        properties.setdefault("defaultSecurityRules", [])
        view["properties"] = properties
        return view


_DIRECTIONS = ("Inbound", "Outbound")


class SecurityRules(ResourceType):
    """NSG rules: PUT and DELETE run long, as they do on Azure; a priority may be used once per
    direction."""

    type_name = "Microsoft.Network/networkSecurityGroups/securityRules"
    long_running_put = True
    long_running_delete = True
    etags = True
    parent_type = "microsoft.network/networksecuritygroups"

    def create(
        self,
        api: AzureApi,
        target: ArmTarget,
        body: dict[str, Any],
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        properties = dict(body.get("properties") or {})
        priority = properties.get("priority")
        if not isinstance(priority, int) or not 100 <= priority <= 4096:
            raise ApiError(
                400, "SecurityRuleInvalidPriority", f"priority {priority!r} is not in 100-4096"
            )
        if properties.get("direction") not in _DIRECTIONS:
            raise ApiError(400, "InvalidRequestFormat", "direction must be Inbound or Outbound")
        if properties.get("access") not in ("Allow", "Deny"):
            raise ApiError(400, "InvalidRequestFormat", "access must be Allow or Deny")
        for sibling in api.store.children(target.parent_id, "securityRules"):
            other = sibling["properties"]
            if (
                sibling["id"].lower() != target.resource_id.lower()
                and other.get("priority") == priority
                and other.get("direction") == properties["direction"]
            ):
                raise ApiError(
                    400,
                    "SecurityRuleConflict",
                    f"Security rule {sibling['name']} has the same priority {priority} and "
                    f"direction {properties['direction']} as {target.name}.",
                )
        properties["provisioningState"] = "Updating"
        return {
            "id": target.resource_id,
            "name": target.name,
            "type": self.type_name,
            "properties": properties,
        }


# -- PostgreSQL flexible servers -------------------------------------------------------------


class FlexibleServers(ResourceType):
    """Flexible servers: a PUT (create, geo-restore, point-in-time restore) runs long; the
    server shows ``state: Provisioning`` until its operation finishes. A PUT naming a server
    that exists is refused (409), as a restore into an existing name is."""

    type_name = "Microsoft.DBforPostgreSQL/flexibleServers"
    long_running_put = True
    accepted_put = True
    long_running_delete = True

    def create(
        self,
        api: AzureApi,
        target: ArmTarget,
        body: dict[str, Any],
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if existing is not None:
            raise ApiError(409, "ServerNameAlreadyExists", f"Server {target.name} already exists.")
        properties = dict(body.get("properties") or {})
        location = body.get("location")
        mode = properties.get("createMode", "Default")
        if mode in ("GeoRestore", "PointInTimeRestore"):
            source = api.store.get(properties.get("sourceServerResourceId") or "")
            if source is None:
                raise ApiError(
                    404,
                    "SourceServerNotFound",
                    f"source server {properties.get('sourceServerResourceId')} not found",
                )
            backup = source["properties"].get("backup") or {}
            if mode == "GeoRestore" and backup.get("geoRedundantBackup") != "Enabled":
                raise ApiError(
                    400, "GeoBackupNotEnabled", "the source server has no geo-redundant backup"
                )
            if mode == "PointInTimeRestore" and location and location != source["location"]:
                raise ApiError(
                    400, "InvalidLocation", "a point-in-time restore stays in the source's region"
                )
            point = properties.get("pointInTimeUTC")
            earliest = backup.get("earliestRestoreDate")
            if not point:
                raise ApiError(400, "PointInTimeRequired", "pointInTimeUTC is required")
            if earliest and _when(point) < _when(earliest):
                raise ApiError(
                    400, "InvalidPointInTime", f"{point} is before the earliest {earliest}"
                )
            location = location or source["location"]
            properties.setdefault("version", source["properties"].get("version"))
            properties["backup"] = {
                "geoRedundantBackup": "Disabled",
                **(properties.get("backup") or {}),
                "earliestRestoreDate": now_iso(),
            }
        properties.update(
            state="Provisioning",
            fullyQualifiedDomainName=f"{target.name}.postgres.database.azure.com",
        )
        return {
            "id": target.resource_id,
            "name": target.name,
            "type": self.type_name,
            "location": location,
            "properties": properties,
        }

    def finish(self, api: AzureApi, resource_id: str) -> None:
        def ready(resource: dict[str, Any]) -> None:
            resource["properties"]["state"] = "Ready"

        api.store.update(resource_id, ready)

    def view(self, api: AzureApi, resource: dict[str, Any]) -> dict[str, Any]:
        view = dict(resource)
        view["properties"] = {
            k: v
            for k, v in resource["properties"].items()
            if k not in ("administratorLoginPassword",)
        }
        return view


# -- storage accounts ------------------------------------------------------------------------


_STORAGE_NAME = re.compile(r"^[a-z0-9]{3,24}$")
_STORAGE_SKUS = (
    "Standard_LRS",
    "Standard_ZRS",
    "Standard_GRS",
    "Standard_RAGRS",
    "Standard_GZRS",
    "Standard_RAGZRS",
    "Premium_LRS",
    "Premium_ZRS",
)
_STORAGE_KINDS = ("Storage", "StorageV2", "BlobStorage", "BlockBlobStorage", "FileStorage")


class StorageAccounts(ResourceType):
    """Storage accounts: a SKU and a kind ARM checks; each new account gets its blob service
    (``blobServices/default``) with the API's defaults: no soft delete, no versioning."""

    type_name = "Microsoft.Storage/storageAccounts"

    def create(
        self,
        api: AzureApi,
        target: ArmTarget,
        body: dict[str, Any],
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if not _STORAGE_NAME.match(target.name):
            raise ApiError(
                400,
                "AccountNameInvalid",
                f"{target.name} is not a valid storage account name: 3-24 lowercase letters "
                "and digits.",
            )
        sku = (body.get("sku") or {}).get("name")
        if sku not in _STORAGE_SKUS:
            raise ApiError(400, "InvalidValuesForRequestParameters", f"invalid sku {sku!r}")
        if body.get("kind") not in _STORAGE_KINDS:
            raise ApiError(400, "InvalidValuesForRequestParameters", "invalid kind")
        if not body.get("location"):
            raise ApiError(400, "LocationRequired", "The location property is required.")
        resource = super().create(api, target, body, existing)
        resource["sku"] = {"name": sku, "tier": sku.split("_", 1)[0]}
        resource["properties"]["primaryEndpoints"] = {
            "blob": f"https://{target.name}.blob.core.windows.net/"
        }
        service_id = target.resource_id + "/blobServices/default"
        if api.store.get(service_id) is None:
            api.store.put(
                service_id,
                {
                    "id": service_id,
                    "name": "default",
                    "type": BlobServices.type_name,
                    "properties": {"deleteRetentionPolicy": {"enabled": False}},
                },
            )
        return resource


def _retention(policy: Any, what: str) -> None:
    if not isinstance(policy, dict) or not policy.get("enabled"):
        return
    days = policy.get("days")
    if not isinstance(days, int) or not 1 <= days <= 365:
        raise ApiError(400, "InvalidXmlDocument", f"{what}: days must be 1-365, not {days!r}")


class BlobServices(ResourceType):
    """An account's blob service (only ``default``): a PUT changes the properties it names and
    keeps the others, as ``set_service_properties`` does; a GET shows the account's SKU."""

    type_name = "Microsoft.Storage/storageAccounts/blobServices"
    parent_type = "microsoft.storage/storageaccounts"

    def create(
        self,
        api: AzureApi,
        target: ArmTarget,
        body: dict[str, Any],
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if target.name != "default":
            raise ApiError(400, "InvalidResourceName", "the blob service is named 'default'")
        given = dict(body.get("properties") or {})
        _retention(given.get("deleteRetentionPolicy"), "deleteRetentionPolicy")
        _retention(given.get("containerDeleteRetentionPolicy"), "containerDeleteRetentionPolicy")
        properties = {**((existing or {}).get("properties") or {}), **given}
        return {
            "id": target.resource_id,
            "name": "default",
            "type": self.type_name,
            "properties": properties,
        }

    def view(self, api: AzureApi, resource: dict[str, Any]) -> dict[str, Any]:
        account = api.store.get(resource["id"].rsplit("/", 2)[0])
        return {**resource, "sku": (account or {}).get("sku")}


# -- Key Vault ------------------------------------------------------------------------------


class Vaults(ResourceType):
    """Key vaults: soft delete on and kept 90 days unless the PUT says otherwise (7-90);
    neither soft delete nor purge protection can be turned off once on. Purge protection
    that is off is absent from a GET, as Azure shows it."""

    type_name = "Microsoft.KeyVault/vaults"

    def create(
        self,
        api: AzureApi,
        target: ArmTarget,
        body: dict[str, Any],
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        given = dict(body.get("properties") or {})
        if not given.get("tenantId") or not (given.get("sku") or {}).get("name"):
            raise ApiError(400, "BadRequest", "tenantId and sku are required")
        before = (existing or {}).get("properties") or {}
        if before.get("enablePurgeProtection") and given.get("enablePurgeProtection") is False:
            raise ApiError(
                400, "BadRequest", "Purge protection cannot be disabled once it is enabled."
            )
        if before.get("enableSoftDelete") and given.get("enableSoftDelete") is False:
            raise ApiError(400, "BadRequest", "Soft delete cannot be disabled once it is enabled.")
        properties = {"enableSoftDelete": True, "softDeleteRetentionInDays": 90, **before, **given}
        days = properties["softDeleteRetentionInDays"]
        if not isinstance(days, int) or not 7 <= days <= 90:
            raise ApiError(400, "BadRequest", f"softDeleteRetentionInDays must be 7-90, not {days}")
        properties["vaultUri"] = f"https://{target.name}.vault.azure.net/"
        properties["provisioningState"] = "Succeeded"
        return {
            "id": target.resource_id,
            "name": target.name,
            "type": self.type_name,
            "location": body.get("location") or (existing or {}).get("location"),
            "properties": properties,
        }

    def view(self, api: AzureApi, resource: dict[str, Any]) -> dict[str, Any]:
        properties = dict(resource["properties"])
        if not properties.get("enablePurgeProtection"):
            properties.pop("enablePurgeProtection", None)
        return {**resource, "properties": properties}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


DEFAULT_TYPES: dict[str, ResourceType] = {
    "resourcegroups": ResourceGroups(),
    "microsoft.resources/deployments": Deployments(),
    "microsoft.network/dnszones": DnsZones(),
    "microsoft.network/dnszones/a": DnsRecordSets(),
    "microsoft.network/networksecuritygroups": NetworkSecurityGroups(),
    "microsoft.network/networksecuritygroups/securityrules": SecurityRules(),
    "microsoft.dbforpostgresql/flexibleservers": FlexibleServers(),
    "microsoft.storage/storageaccounts": StorageAccounts(),
    "microsoft.storage/storageaccounts/blobservices": BlobServices(),
    "microsoft.keyvault/vaults": Vaults(),
}
