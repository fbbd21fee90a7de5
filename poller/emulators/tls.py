"""A throwaway certificate authority for the emulators' HTTPS servers.

The clients under test verify TLS as they would in production (DESIGN.md §5: "TLS: always
verified"); they are pointed at this CA's PEM file instead of being told to skip verification.
One CA can serve several emulators, so a demo needs a single ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")


class ThrowawayCA:
    """A fresh CA whose certificate is written to `directory`/ca.pem."""

    def __init__(self, directory: Path) -> None:
        self._ca = trustme.CA(organization_name="rca-poller emulators")
        self.ca_path = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))

    def server_context(self, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> ssl.SSLContext:
        """A server-side TLS context presenting a certificate for `hosts`, issued by this CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(*hosts).configure_cert(context)
        return context
