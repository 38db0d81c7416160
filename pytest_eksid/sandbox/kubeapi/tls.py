"""TLS: a throwaway CA and serving certificate (made by ``trustme``), and one port for HTTP and TLS.

kubectl sends its bearer token only to an ``https://`` server, so the apiserver needs a
certificate its kubeconfig can trust; the official Python client also talks plain HTTP. Both are
served on one port: a TLS ClientHello starts with byte 0x16.
"""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any

import trustme


class ServingCertificate:
    """A CA made now, in memory only, and a certificate it signed for ``hosts`` (IPs and DNS names)."""

    def __init__(self, hosts: list[str], *, days: int = 7) -> None:
        self._ca = trustme.CA(organization_name="eksid sandbox")
        self._cert = self._ca.issue_cert(
            *hosts, common_name="kube-apiserver", not_after=datetime.now(UTC) + timedelta(days=days)
        )

    @property
    def ca_pem(self) -> bytes:
        """What a client trusts: the kubeconfig's ``certificate-authority-data``."""
        return self._ca.cert_pem.bytes()

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._cert.configure_cert(ctx)  # (through a 0600 temporary file, which the ssl module needs)
        return ctx


class HttpAndTlsServer(ThreadingHTTPServer):
    """Serves plain HTTP and TLS on one port: a TLS ClientHello starts with byte 0x16."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock = request
        try:  # headers and body are separate writes: without this, Nagle meets delayed ACK (40 ms)
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            return
        if self.tls is not None:
            try:
                request.settimeout(10)
                if request.recv(1, socket.MSG_PEEK) == b"\x16":
                    sock = self.tls.wrap_socket(request, server_side=True)
                sock.settimeout(None)
            except (OSError, ssl.SSLError):
                return
        try:
            self.RequestHandlerClass(sock, client_address, self)  # type: ignore[arg-type]
        finally:
            if sock is not request:
                sock.close()
