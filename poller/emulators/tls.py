"""A throwaway certificate authority for the emulators' HTTPS servers.

The clients under test verify TLS as they would in production (DESIGN.md §5: "TLS: always
verified"); they are pointed at this CA's PEM file instead of being told to skip verification.
One CA can serve several emulators, so a demo needs a single ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


class TlsThreadingServer(ThreadingHTTPServer):
    """A threading HTTP server that, given a context, speaks TLS; plain HTTP without one."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None
    ) -> None:
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, not in the accept loop.
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(10)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except OSError:
            return
        with wrapped:
            super().finish_request(wrapped, client_address)
