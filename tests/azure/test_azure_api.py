"""The loopback Azure endpoint keeps the promises the runbook tests rely on (and that later
tests extending it will): faults as injected, state kept, new types and data planes served."""

from __future__ import annotations

from typing import Any

import requests

from tests.azure.landscape import DNS_RG, ZONE, record_id, rid, seed
from tests.azure_api import AzureApi, Response
from tests.azure_api.arm import ArmTarget, ResourceType

VERSION = {"api-version": "2018-05-01"}


def _session(api: AzureApi) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override the test authority
    session.verify = api.ca_file
    session.headers["Authorization"] = f"Bearer {api.token}"
    return session


def _anonymous(api: AzureApi) -> requests.Session:
    session = _session(api)
    del session.headers["Authorization"]
    return session


def test_faults_answer_as_injected_then_the_request_goes_through() -> None:
    with AzureApi() as api:
        seed(api)
        http = _session(api)
        api.fail("GET", "/A/www$", 429, retry_after=2, times=2)
        url = api.url + record_id("www")
        answers = [http.get(url, params=VERSION) for _ in range(3)]
        assert [a.status_code for a in answers] == [429, 429, 200]
        assert answers[0].headers["Retry-After"] == "2"
        assert answers[0].json()["error"]["code"] == "TooManyRequests"

        # A fault after the change: the answer is lost, the change is not.
        api.fail("PUT", "/A/www$", 503, after=True)
        body = {"properties": {"TTL": 30, "ARecords": [{"ipv4Address": "192.0.2.1"}]}}
        assert http.put(url, params=VERSION, json=body).status_code == 503
        stored = api.resource(record_id("www"))
        assert stored is not None and stored["properties"]["TTL"] == 30

        assert http.get(url).status_code == 400  # no api-version
        assert _anonymous(api).get(url, params=VERSION).status_code == 401


def test_etags_and_parents_are_enforced() -> None:
    with AzureApi() as api:
        seed(api)
        http = _session(api)
        url = api.url + record_id("www")
        body = {"properties": {"TTL": 60, "ARecords": [{"ipv4Address": "192.0.2.2"}]}}
        assert (
            http.put(url, params=VERSION, json=body, headers={"If-Match": "old"}).status_code == 412
        )
        assert (
            http.put(url, params=VERSION, json=body, headers={"If-None-Match": "*"}).status_code
            == 412
        )
        orphan = api.url + rid(DNS_RG, "Microsoft.Network/dnszones/other.com/A/www")
        assert http.put(orphan, params=VERSION, json=body).status_code == 404
        assert api.resource(rid(DNS_RG, f"Microsoft.Network/dnszones/{ZONE}")) is not None


class _Accounts(ResourceType):
    type_name = "Microsoft.Storage/storageAccounts"
    long_running_put = True

    def view(self, api: AzureApi, resource: dict[str, Any]) -> dict[str, Any]:
        return {**resource, "kind": "StorageV2"}


def test_new_resource_types_and_data_planes_can_be_registered() -> None:
    with AzureApi(lro_polls=2) as api:
        seed(api)
        api.register("microsoft.storage/storageaccounts", _Accounts())
        api.register_data_plane(
            "keys", lambda method, parts, body: Response(200, {"key": parts[0], "method": method})
        )
        http = _session(api)
        url = api.url + rid(DNS_RG, "Microsoft.Storage/storageAccounts/dotcopilotbackups")
        created = http.put(url, params={"api-version": "2024-01-01"}, json={"location": "eastus"})
        status_url = created.headers["Azure-AsyncOperation"]
        assert [http.get(status_url).json()["status"] for _ in range(3)] == [
            "InProgress",
            "InProgress",
            "Succeeded",
        ]
        shown = http.get(url, params={"api-version": "2024-01-01"}).json()
        assert shown["kind"] == "StorageV2"
        assert shown["properties"]["provisioningState"] == "Succeeded"
        assert http.get(api.url + "/keys/k1").json() == {"key": "k1", "method": "GET"}
        challenge = _anonymous(api).get(api.url + "/keys/k1")
        assert challenge.status_code == 401 and "Bearer" in challenge.headers["WWW-Authenticate"]


def test_an_arm_path_is_taken_apart() -> None:
    from tests.azure_api.arm import parse_arm_path

    target = parse_arm_path(
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkSecurityGroups/n"
        "/securityRules/r"
    )
    assert target == ArmTarget(
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkSecurityGroups/n"
        "/securityRules/r",
        "microsoft.network/networksecuritygroups/securityrules",
        "r",
        "s",
        "g",
    )
    whatif = parse_arm_path(
        "/subscriptions/s/resourcegroups/g/providers/Microsoft.Resources/deployments/d/whatIf"
    )
    assert whatif is not None and whatif.tail == "whatIf" and whatif.name == "d"
