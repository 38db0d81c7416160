"""TCP endpoints that never answer: one that accepts and stays silent, one where connecting times out."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class Endpoint:
    """A TCP listener that accepts connections and holds them open in silence (a read timeout)."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    accepted: int = 0
    held: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed at the end of the test
            self.accepted += 1
            self.held.append(conn)
