"""A loopback Azure endpoint for tests: ARM and Key Vault over TLS, with state, long-running
operations and injected faults (see :mod:`tests.azure_api.server`).

Extending it for another API:

- an ARM resource type: subclass :class:`~tests.azure_api.arm.ResourceType` (``create`` turns
  a PUT body into the stored resource; ``long_running_put``/``long_running_delete`` make them
  run as operations; ``action`` answers ``POST …/<action>``; ``view`` shapes a GET) and
  ``api.register("microsoft.web/sites", Sites())`` (storage accounts, their blob service and
  key vaults are spoken already: :mod:`tests.azure_api.arm`);
- a Key Vault style data plane (``/keys/...``, a secret's ``backup``): a handler
  ``(method, parts, body) -> Response`` given to ``api.register_data_plane("keys", handler)``,
  served behind the same bearer challenge; :class:`~tests.azure_api.keyvault.SecretVault`
  is the example;
- state a test needs in place: ``api.seed(resource_id, body)``.
"""

from tests.azure_api.core import ApiError, Call, Fault, Response
from tests.azure_api.credential import StaticTokenCredential
from tests.azure_api.server import AzureApi

__all__ = ["ApiError", "AzureApi", "Call", "Fault", "Response", "StaticTokenCredential"]
