"""Deploying a site's infrastructure from an ARM template (a compiled Bicep file): what-if
first, then the deployment, both at resource-group scope."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dr_runbooks.azure.errors import translated
from dr_runbooks.azure.lro import Progress, wait_for
from dr_runbooks.errors import AzureRequestFailed, ConfigError

__all__ = ["WhatIfChange", "deploy", "deployment_body", "load_template", "what_if"]


@dataclass(frozen=True)
class WhatIfChange:
    """One resource a deployment would touch, and how (Create, Modify, NoChange, Delete…)."""

    change: str
    resource_id: str

    def to_json(self) -> dict[str, str]:
        return {"change": self.change, "resource": self.resource_id}


def load_template(path: str) -> dict[str, Any]:
    """An ARM template (JSON). A Bicep file must be compiled first (``az bicep build``)."""
    file = Path(path).expanduser()
    if file.suffix == ".bicep":
        raise ConfigError(
            f"{file} is Bicep: compile it to an ARM template first (az bicep build --file {file})"
        )
    try:
        template = json.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the template {file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"the template {file} is not JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(template, dict) or "resources" not in template:
        raise ConfigError(f"{file} is not an ARM template (no resources)")
    return template


def deployment_body(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The request body of a deployment and its what-if (incremental: nothing is deleted)."""
    return {
        "properties": {
            "mode": "Incremental",
            "template": template,
            "parameters": {name: {"value": value} for name, value in parameters.items()},
        }
    }


def what_if(
    client: Any,
    resource_group: str,
    name: str,
    body: dict[str, Any],
    on_progress: Progress | None = None,
) -> list[WhatIfChange]:
    """What the deployment would change, resource by resource."""
    with translated(f"what-if of deployment {name} in {resource_group}"):
        poller = client.deployments.begin_what_if(resource_group, name, body)
        result = wait_for(poller, f"what-if of {name}", on_progress)
    if result.error is not None:
        raise AzureRequestFailed(
            f"what-if of deployment {name}: {result.error.code}: {result.error.message}"
        )
    changes = result.properties.changes if result.properties else []
    return [
        WhatIfChange(str(getattr(c.change_type, "value", c.change_type)), c.resource_id)
        for c in changes or []
    ]


def deploy(
    client: Any,
    resource_group: str,
    name: str,
    body: dict[str, Any],
    on_progress: Progress | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Run the deployment; returns the ids of the resources it reports."""
    with translated(f"deployment {name} in {resource_group}"):
        poller = client.deployments.begin_create_or_update(resource_group, name, body)
        result = wait_for(poller, f"deployment {name}", on_progress, timeout=timeout)
    state = str(getattr(result.properties.provisioning_state, "value", "")) or str(
        result.properties.provisioning_state
    )
    if state != "Succeeded":
        raise AzureRequestFailed(f"deployment {name} in {resource_group} ended {state}")
    return [r.id for r in result.properties.output_resources or [] if r.id]
