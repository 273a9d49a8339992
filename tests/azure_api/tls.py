"""TLS for the loopback Azure endpoint: a throwaway certificate authority from ``trustme``.

azure-core sends a bearer token only over https, so the endpoint needs a certificate the SDK
clients trust: they get the authority's PEM file as ``connection_verify``.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import trustme

__all__ = ["TestAuthority"]


class TestAuthority:
    """A certificate authority, a server certificate for ``127.0.0.1`` and ``localhost``, and
    the authority's certificate as a PEM file for clients."""

    def __init__(self) -> None:
        self._ca = trustme.CA()
        self._leaf = self._ca.issue_cert("127.0.0.1", "localhost")
        self._dir = tempfile.TemporaryDirectory(prefix="azure-api-tls-")
        self.ca_file = Path(self._dir.name) / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._leaf.configure_cert(context)
        return context

    def cleanup(self) -> None:
        self._dir.cleanup()
