"""A loopback HTTPS endpoint that speaks the Azure REST shapes the runbooks use.

The real SDK clients send real requests to it: ARM (resource groups, template deployments and
what-if, DNS record sets, network security groups and their rules, PostgreSQL flexible
servers, storage accounts and their blob service, key vaults), Key Vault secrets, and the App
Service managed-identity token endpoint that ``DefaultAzureCredential`` finds through
``IDENTITY_ENDPOINT``::

    with AzureApi() as api:
        client = DnsManagementClient(api.credential(), SUBSCRIPTION, base_url=api.url,
                                     connection_verify=str(api.ca_file),
                                     credential_scopes=[api.arm_scope])

It keeps state (:attr:`AzureApi.store`, :attr:`AzureApi.vault`), so a test reads back what
a flow changed; runs long operations as ARM does (``Azure-AsyncOperation`` for PUT and DELETE,
``Location`` for POST actions), each finishing after :attr:`AzureApi.lro_polls` status reads;
and answers injected faults (:meth:`AzureApi.fail`: 409, 429 with ``Retry-After``, 5xx, before
or after applying the request). :attr:`AzureApi.calls` records every request.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.azure_api.arm import DEFAULT_TYPES, ArmTarget, ResourceType, parse_arm_path
from tests.azure_api.core import (
    ApiError,
    Call,
    Fault,
    Operations,
    ResourceStore,
    Response,
    new_etag,
)
from tests.azure_api.credential import StaticTokenCredential
from tests.azure_api.keyvault import SecretVault
from tests.azure_api.tls import TestAuthority

__all__ = ["AzureApi", "DataPlane"]

#: A data-plane handler: (method, path parts after the segment, JSON body) → the answer.
DataPlane = Callable[[str, list[str], dict[str, Any]], Response]

_CODES = {
    409: "Conflict",
    412: "PreconditionFailed",
    429: "TooManyRequests",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

#: The tenant the Key Vault challenge names.
TENANT = "00000000-0000-0000-0000-00000000feed"


class AzureApi:
    """The endpoint; :meth:`start` it (or use it as a context manager)."""

    def __init__(self, *, lro_polls: int = 1) -> None:
        self.lro_polls = lro_polls
        self.token = "test-token-" + secrets.token_hex(8)
        self.identity_header = "identity-" + secrets.token_hex(8)
        self.store = ResourceStore()
        self.vault = SecretVault()
        self.operations = Operations()
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.types: dict[str, ResourceType] = dict(DEFAULT_TYPES)
        #: Key Vault style data planes by first path segment (``/secrets/...``); each is
        #: called with (method, the path's remaining parts, the JSON body).
        self.data_planes: dict[str, DataPlane] = {
            "secrets": lambda method, parts, body: self.vault.handle(self.url, method, parts, body)
        }
        self._authority = TestAuthority()
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        api = self

        class Handler(_Handler):
            endpoint = api

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = self._authority.server_context().wrap_socket(
            server.socket, server_side=True
        )
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._authority.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what a client needs ----------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the endpoint first"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ca_file(self) -> str:
        return str(self._authority.ca_file)

    @property
    def arm_scope(self) -> str:
        return self.url + "/.default"

    @property
    def identity_endpoint(self) -> str:
        """For ``IDENTITY_ENDPOINT`` (with :attr:`identity_header` as ``IDENTITY_HEADER``)."""
        return self.url + "/msi/token"

    def credential(self) -> StaticTokenCredential:
        return StaticTokenCredential(self.token)

    # -- what a test arranges ---------------------------------------------------------------

    def register(self, type_key: str, resource_type: ResourceType) -> None:
        """Speak another ARM resource type (``microsoft.storage/storageaccounts``)."""
        self.types[type_key.lower()] = resource_type

    def register_data_plane(self, segment: str, handler: DataPlane) -> None:
        """Serve ``/<segment>/...`` behind Key Vault's bearer challenge (``keys``,
        ``certificates``, a vault's ``backup``/``restore`` actions…)."""
        self.data_planes[segment] = handler

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        code: str | None = None,
        times: int = 1,
        retry_after: int | None = None,
        after: bool = False,
    ) -> Fault:
        """Answer the next ``times`` requests whose path matches the regex ``path`` with
        ``status``; with ``after``, only once the request has been applied (the answer is
        lost, the change is not)."""
        fault = Fault(
            method.upper(),
            re.compile(path, re.IGNORECASE),
            status,
            code or _CODES.get(status, "InternalServerError"),
            times,
            retry_after,
            after,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def seed(self, resource_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Put a resource in place as if it had always been there (finished, no calls)."""
        target = parse_arm_path(resource_id)
        assert target is not None, f"not an ARM id: {resource_id}"
        rtype = self._type(target)
        resource = rtype.create(self, target, body, self.store.get(target.resource_id))
        if rtype.etags:
            resource["etag"] = new_etag()
        self.store.put(target.resource_id, resource)
        rtype.finish(self, target.resource_id)
        stored = self.store.get(target.resource_id)
        assert stored is not None
        return stored

    def calls_to(self, method: str, path: str) -> list[Call]:
        pattern = re.compile(path, re.IGNORECASE)
        with self._lock:
            return [c for c in self.calls if c.method == method and pattern.search(c.path)]

    def resource(self, resource_id: str) -> dict[str, Any] | None:
        """A resource as a GET would show it."""
        stored = self.store.get(resource_id)
        return self.view(stored) if stored is not None else None

    # -- handling ---------------------------------------------------------------------------

    def view(self, resource: dict[str, Any]) -> dict[str, Any]:
        target = parse_arm_path(resource["id"])
        return self._type(target).view(self, resource) if target else resource

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> Response:
        split = urlsplit(raw_path)
        path, query = split.path, parse_qs(split.query)
        fault = self._fault(method, path)
        try:
            if fault is not None and not fault.after:
                raise fault.error()
            response = self._route(method, path, query, headers, body)
            if fault is not None:
                raise fault.error()
        except ApiError as error:
            response = error.response()
        with self._lock:
            self.calls.append(Call(method, path, response.status))
        return response

    def _fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: dict[str, Any],
    ) -> Response:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["msi", "token"]:
            return self._token(headers, query)
        if parts and parts[0] in self.data_planes:
            self._authorize(headers, challenge=True)
            return self.data_planes[parts[0]](method, parts[1:], body)
        self._authorize(headers, challenge=False)
        if "api-version" not in query:
            raise ApiError(400, "MissingApiVersionParameter", "api-version is required")
        if parts and parts[0] == "_operations":
            return self._operation_status(parts[1])
        if parts and parts[0] == "_results":
            return self._operation_result(parts[1])
        target = parse_arm_path(path)
        if target is None:
            raise ApiError(404, "InvalidResourceType", f"unknown path {path}")
        return self._arm(method, target, headers, body)

    # -- authentication ---------------------------------------------------------------------

    def _token(self, headers: dict[str, str], query: dict[str, list[str]]) -> Response:
        if headers.get("x-identity-header") != self.identity_header:
            raise ApiError(401, "Unauthorized", "wrong or missing X-IDENTITY-HEADER")
        resource = (query.get("resource") or [""])[0]
        return Response(
            200,
            {
                "access_token": self.token,
                "expires_on": str(int(time.time()) + 3600),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def _authorize(self, headers: dict[str, str], challenge: bool) -> None:
        given = headers.get("authorization", "")
        if given == f"Bearer {self.token}":
            return
        if challenge:
            # Key Vault's client accepts a challenge only for a parent domain of the vault's
            # host; for a vault at 127.0.0.1 that is "0.0.1", which keeps its check on.
            port = self.url.rsplit(":", 1)[1]
            raise ApiError(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                {
                    "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/'
                    f'{TENANT}", resource="https://0.0.1:{port}"'
                },
            )
        raise ApiError(
            401,
            "AuthenticationFailed",
            "Authentication failed: missing or wrong bearer token.",
            {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com"'},
        )

    # -- ARM --------------------------------------------------------------------------------

    def _type(self, target: ArmTarget) -> ResourceType:
        return self.types.get(target.type_key, ResourceType())

    def _arm(
        self, method: str, target: ArmTarget, headers: dict[str, str], body: dict[str, Any]
    ) -> Response:
        rtype = self._type(target)
        if target.tail is not None:
            if method == "POST":
                return rtype.action(self, target, body)
            if method == "GET":
                self._require(target.resource_id)
                return Response(200, {"value": rtype.collection(self, target), "nextLink": None})
            raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
        if method in ("GET", "HEAD"):
            for operation in self.operations.on(target.resource_id):
                if not operation.done:
                    operation.advance()
            resource = self._require(target.resource_id)
            if method == "HEAD":
                return Response(204)
            return Response(200, rtype.view(self, resource), _etag_header(resource))
        if method == "PUT":
            return self._put(rtype, target, headers, body)
        if method == "DELETE":
            return self._delete(rtype, target)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _require(self, resource_id: str) -> dict[str, Any]:
        resource = self.store.get(resource_id)
        if resource is None:
            target = parse_arm_path(resource_id)
            what = (
                "ResourceGroupNotFound"
                if target and target.tail is None and (target.type_key == "resourcegroups")
                else "ResourceNotFound"
            )
            raise ApiError(404, what, f"The resource '{resource_id}' was not found.")
        return resource

    def _put(
        self,
        rtype: ResourceType,
        target: ArmTarget,
        headers: dict[str, str],
        body: dict[str, Any],
    ) -> Response:
        with self.store.lock:
            if target.type_key != "resourcegroups" and target.resource_group:
                group = (
                    f"/subscriptions/{target.subscription}/resourceGroups/{target.resource_group}"
                )
                if self.store.get(group) is None:
                    raise ApiError(
                        404,
                        "ResourceGroupNotFound",
                        f"Resource group '{target.resource_group}' could not be found.",
                    )
            if rtype.parent_type is not None:
                self._require(target.parent_id)
            existing = self.store.get(target.resource_id)
            _check_preconditions(headers, existing)
            resource = rtype.create(self, target, body, existing)
            if rtype.etags:
                resource["etag"] = new_etag()
            self.store.put(target.resource_id, resource)
        status = 200 if existing is not None else 201
        if not rtype.long_running_put:
            return Response(status, rtype.view(self, resource), _etag_header(resource))
        operation = self.operations.start(
            self.lro_polls, lambda: rtype.finish(self, target.resource_id), target.resource_id
        )
        headers = {"Azure-AsyncOperation": self._status_url(operation.id)}
        if rtype.accepted_put:
            headers["Location"] = self._result_url(operation.id)
            return Response(202, None, headers)
        return Response(status, rtype.view(self, resource), {**headers, **_etag_header(resource)})

    def _delete(self, rtype: ResourceType, target: ArmTarget) -> Response:
        if self.store.get(target.resource_id) is None:
            return Response(204)
        if not rtype.long_running_delete:
            self.store.delete(target.resource_id)
            return Response(200)
        self.store.update(
            target.resource_id,
            lambda r: r.setdefault("properties", {}).update(provisioningState="Deleting"),
        )
        operation = self.operations.start(
            self.lro_polls, lambda: self.store.delete(target.resource_id), target.resource_id
        )
        return Response(
            202,
            None,
            {
                "Azure-AsyncOperation": self._status_url(operation.id),
                "Location": self._result_url(operation.id),
            },
        )

    def long_running_post(self, result: Callable[[], Any]) -> Response:
        """Answer a POST action that runs long: 202 with a ``Location`` to poll for ``result``."""
        operation = self.operations.start(self.lro_polls, result)
        return Response(202, None, {"Location": self._result_url(operation.id)})

    def _status_url(self, operation_id: str) -> str:
        return f"{self.url}/_operations/{operation_id}?api-version=2025-01-01"

    def _result_url(self, operation_id: str) -> str:
        return f"{self.url}/_results/{operation_id}?api-version=2025-01-01"

    def _operation_status(self, operation_id: str) -> Response:
        operation = self.operations.get(operation_id)
        if operation is None:
            raise ApiError(404, "OperationNotFound", f"no operation {operation_id}")
        if not operation.advance():
            return Response(200, {"name": operation_id, "status": "InProgress"})
        if operation.error is not None:
            error = {"code": operation.error.code, "message": operation.error.message}
            return Response(200, {"name": operation_id, "status": "Failed", "error": error})
        return Response(200, {"name": operation_id, "status": "Succeeded"})

    def _operation_result(self, operation_id: str) -> Response:
        operation = self.operations.get(operation_id)
        if operation is None:
            raise ApiError(404, "OperationNotFound", f"no operation {operation_id}")
        if not operation.advance():
            return Response(202, None, {"Location": self._result_url(operation_id)})
        if operation.result is None:
            return Response(204)
        return Response(200, operation.result)


def _etag_header(resource: dict[str, Any]) -> dict[str, str]:
    return {"ETag": resource["etag"]} if resource.get("etag") else {}


def _check_preconditions(headers: dict[str, str], existing: dict[str, Any] | None) -> None:
    if_match = headers.get("if-match")
    if if_match and if_match != "*":
        current = (existing or {}).get("etag")
        if current is None or if_match.strip('"') != current:
            raise ApiError(
                412,
                "PreconditionFailed",
                "The condition specified using HTTP conditional header(s) is not met.",
            )
    if headers.get("if-none-match") == "*" and existing is not None:
        raise ApiError(
            412, "PreconditionFailed", "The resource exists and If-None-Match: * was given."
        )


class _Handler(BaseHTTPRequestHandler):
    endpoint: AzureApi
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.endpoint.handle(self.command, self.path, headers, body)
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", secrets.token_hex(8))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _serve

    def log_message(self, *args: Any) -> None:
        pass
