"""How the node's link-local services are served: small threaded HTTP servers on loopback.

On EKS a pod reaches IMDS at 169.254.169.254 and the Pod Identity agent at 169.254.170.23; the
sandbox serves each of them on a free ``127.0.0.1`` port instead (the kubelet rewrites the agent's
address in a pod's environment to that port, and points the SDK at the node's IMDS).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Obj = dict[str, Any]
Answer = tuple[int, dict[str, str], bytes]


class LoopbackServer:
    """A small threaded HTTP server on a free loopback port."""

    def __init__(self, name: str, handler: Callable[[BaseHTTPRequestHandler, str], Answer | None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _go(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                answer = handler(self, method)
                if answer is None:  # drop the request without a reply, like a hop-limited IMDS
                    self.close_connection = True
                    return
                code, headers, body = answer
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._go("GET")

            def do_PUT(self) -> None:
                self._go("PUT")

        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def reply(code: int, body: Obj | str) -> Answer:
    """A plain-text answer for a string, a JSON one for an object."""
    if isinstance(body, str):
        return code, {"Content-Type": "text/plain"}, body.encode()
    return code, {"Content-Type": "application/json"}, json.dumps(body).encode()
