"""A throwaway certificate authority, and the HTTP(S) server and handler base every emulator serves with.

The clients under test verify TLS as they would in production (DESIGN.md §5: "TLS: always
verified"); they are pointed at this CA's PEM file instead of being told to skip verification.
One CA can serve several emulators, so a demo needs a single ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, TypeVar

import trustme

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")

Emulator = TypeVar("Emulator")


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


class TlsThreadingServer(ThreadingHTTPServer, Generic[Emulator]):
    """A threading HTTP server whose handlers reach `emulator` as ``server.emulator``; TLS given a context."""

    daemon_threads = True  # a request stuck in an injected delay must not hold up stop()

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], emulator: Emulator,
                 tls: ssl.SSLContext | None) -> None:
        self.emulator = emulator
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, not in the accept loop.
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(10)  # a silent client gives up its thread after 10 s of handshake
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except OSError:
            return
        wrapped.settimeout(None)  # from here the handler's own `timeout` applies, as over plain HTTP
        with wrapped:
            super().finish_request(wrapped, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (read timeouts, refused certificates) are expected here.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class EmulatorHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; a subclass reads with `read_request` and answers with `send_reply`."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # each emulator keeps its own request log
        pass

    def read_request(self) -> tuple[dict[str, str], bytes]:
        """The headers, names lower-cased, and the raw body."""
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        return {name.lower(): value for name, value in self.headers.items()}, body

    def send_reply(self, status: int, headers: Iterable[tuple[str, str]], payload: bytes, *,
                   content_length: bool = True) -> None:
        """Write one reply; when the client has already left, close the connection instead."""
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            if content_length:
                self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True
