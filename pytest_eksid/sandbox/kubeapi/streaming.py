"""Exec streaming: ``pods/exec`` over WebSocket (framed by ``wsproto``) and the remote-command channels.

kubectl and the official client speak ``v5.channel.k8s.io`` (or ``v4``): each binary message
starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 the error channel carrying the final
``Status``, 4 terminal resize, 255 close a channel, v5 only). The kubelet starts the command
(``ExecHandler``); this module upgrades the connection and shuttles the channels.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import subprocess
import termios
import threading
from collections import deque
from dataclasses import dataclass
from email.message import Message
from io import BufferedIOBase
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Event, Ping
from wsproto.events import Message as WsMessage
from wsproto.events import Request as WsRequest
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from pytest_eksid.sandbox.kubeapi.errors import ApiError, bad_request
from pytest_eksid.sandbox.kubeapi.resources import Obj
from pytest_eksid.sandbox.kubeapi.store import ExecHandler

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class WebSocket:
    """The server side of an upgraded connection; ``send`` may be called from any thread."""

    def __init__(self, connection: Connection, rfile: BufferedIOBase, wfile: BufferedIOBase) -> None:
        self._conn = connection
        self._rfile = rfile
        self._wfile = wfile
        self._lock = threading.Lock()
        self._inbox: deque[Event] = deque()
        self.closing = False  # we sent a close frame (a dropped connection is not "closing")

    def _write(self, event: Event) -> None:
        """Frame and write ``event``; the caller holds the lock."""
        self._wfile.write(self._conn.send(event))
        self._wfile.flush()

    def send(self, payload: bytes) -> None:
        with self._lock:
            if self._conn.state is ConnectionState.OPEN:
                self._write(BytesMessage(data=payload))

    def close(self, code: int = 1000, reason: str = "") -> None:
        with self._lock:
            if self._conn.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                return
            self.closing = True
            with contextlib.suppress(OSError):
                self._write(CloseConnection(code=code, reason=reason or None))

    def recv(self) -> bytes | None:
        """The next data message; None once the peer closes or the connection drops."""
        message = bytearray()
        while True:
            while self._inbox:
                event = self._inbox.popleft()
                if isinstance(event, WsMessage):
                    message += event.data if isinstance(event.data, bytes | bytearray) else event.data.encode()
                    if event.message_finished:
                        return bytes(message)
                elif isinstance(event, Ping):
                    with self._lock:
                        try:
                            self._write(event.response())
                        except (OSError, LocalProtocolError):
                            return None
                elif isinstance(event, CloseConnection):
                    self.close(event.code)  # answers the peer's close (or a frame wsproto could not parse)
                    return None
            try:
                data = self._rfile.read1(65536)
            except OSError:
                data = b""
            with self._lock:
                try:
                    self._conn.receive_data(data or None)
                except LocalProtocolError:  # already closed
                    return None
                self._inbox.extend(self._conn.events())
            if not data and not self._inbox:
                return None


def exec_status(returncode: int, argv: list[str]) -> Obj:
    """The Status the kubelet writes on the error channel when the command ends."""
    if returncode == 0:
        return {"metadata": {}, "status": "Success"}
    code = returncode if returncode > 0 else 128 - returncode
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {argv}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


@dataclass(frozen=True)
class ExecOptions:
    """The ``pods/exec`` query: the command and which streams the client wants."""

    argv: list[str]
    container: str | None
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> ExecOptions:
        def flag(name: str) -> bool:
            values = query.get(name) or [""]
            return values[-1].lower() in ("true", "1")

        argv = list(query.get("command") or [])
        if not argv:
            raise bad_request("you must specify at least one command for the container")
        stdin, stdout, stderr, tty = (flag(f) for f in ("stdin", "stdout", "stderr", "tty"))
        if not (stdin or stdout or stderr):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        container = (query.get("container") or [""])[-1] or None
        return cls(argv, container, stdin, stdout, stderr and not tty, tty)


def _handshake(headers: Message, target: str) -> tuple[H11Handshake, str]:
    """Check the upgrade request; raise a 400 ``ApiError`` (answered as HTTP) when it cannot be served."""
    if (headers.get("Upgrade") or "").lower() != "websocket":
        raise bad_request(
            "Upgrade request required: the sandbox apiserver streams exec over WebSocket only "
            f"({', '.join(EXEC_PROTOCOLS)}), not SPDY"
        )
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.initiate_upgrade_connection(
            [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()], target
        )
    except RemoteProtocolError as exc:
        raise bad_request(f"unable to upgrade connection: {exc}") from None
    request = next(e for e in handshake.events() if isinstance(e, WsRequest))
    offered = [p.strip() for p in request.subprotocols if p.strip()]
    protocol = next((p for p in offered if p in EXEC_PROTOCOLS), None)
    if protocol is None:
        raise bad_request(
            f"unable to upgrade connection: none of the subprotocols {offered} is supported "
            f"(supported: {', '.join(EXEC_PROTOCOLS)})"
        )
    return handshake, protocol


OUTPUT_DRAIN_SECONDS = 30


def serve_exec(
    run: ExecHandler | None,
    namespace: str,
    name: str,
    query: dict[str, list[str]],
    headers: Message,
    target: str,
    rfile: BufferedIOBase,
    wfile: BufferedIOBase,
) -> None:
    """Upgrade to WebSocket, run the command through the kubelet's ``run`` and stream it.

    Raises ``ApiError`` before the upgrade (the caller answers it as HTTP); after the upgrade,
    failures go on the error channel, as kube-apiserver and the kubelet report them.
    """
    options = ExecOptions.from_query(query)
    handshake, protocol = _handshake(headers, target)
    if run is None:
        raise bad_request(f'unable to upgrade connection: pod "{name}" has no kubelet')
    master: int | None = None
    stdio: dict[str, Any]
    if options.tty:
        master, slave = os.openpty()
        stdio = {"stdin": slave, "stdout": slave, "stderr": slave}
    else:
        stdio = {
            "stdin": subprocess.PIPE if options.stdin else subprocess.DEVNULL,
            "stdout": subprocess.PIPE if options.stdout else subprocess.DEVNULL,
            "stderr": subprocess.PIPE if options.stderr else subprocess.DEVNULL,
        }
    start_error: OSError | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = run(namespace, name, options.container, list(options.argv), stdio)
    except OSError as exc:
        start_error = exc
    except BaseException:
        if master is not None:
            os.close(master)
        raise
    finally:
        if options.tty:
            os.close(stdio["stdin"])
    wfile.write(handshake.send(AcceptConnection(subprotocol=protocol)))
    wfile.flush()
    connection = handshake.connection
    assert connection is not None  # (the handshake just accepted)
    ws = WebSocket(connection, rfile, wfile)
    try:
        # As kube-apiserver does: an empty message on the lowest writable channel says "connected".
        ws.send(bytes([STDOUT if options.stdout else STDERR if options.stderr else ERROR]))
        if proc is None:
            message = f"error executing command in container: {start_error}"
            status = ApiError(
                500, "InternalError", f"Internal error occurred: {message}", causes=[{"message": message}]
            )
            ws.send(bytes([ERROR]) + json.dumps(status.status()).encode())
        else:
            _pump(ws, proc, protocol, master)
            ws.send(bytes([ERROR]) + json.dumps(exec_status(proc.returncode, list(options.argv))).encode())
        ws.close()
    except OSError:
        pass
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if master is not None:
            os.close(master)


def _pump(ws: WebSocket, proc: subprocess.Popen[bytes], protocol: str, master: int | None) -> None:
    """Shuttle the channels until the command ends."""
    outputs: list[threading.Thread] = []

    def forward(fd: int, channel: int) -> None:
        while True:
            try:
                data = os.read(fd, 32768)
            except OSError:  # EIO: the pty's last writer has gone
                return
            if not data:
                return
            try:
                ws.send(bytes([channel]) + data)
            except OSError:
                return

    if master is not None:
        outputs.append(threading.Thread(target=forward, args=(master, STDOUT), daemon=True))
    for stream, channel in ((proc.stdout, STDOUT), (proc.stderr, STDERR)):
        if stream is not None:
            outputs.append(threading.Thread(target=forward, args=(stream.fileno(), channel), daemon=True))
    for t in outputs:
        t.start()

    def client() -> None:
        while True:
            message = ws.recv()
            if message is None:
                if proc.poll() is None and not ws.closing:
                    proc.kill()  # the client went away
                return
            if not message:
                continue
            channel, data = message[0], message[1:]
            try:
                if channel == STDIN and master is not None:
                    os.write(master, data)
                elif channel == STDIN and proc.stdin is not None:
                    proc.stdin.write(data)
                    proc.stdin.flush()
                elif channel == CLOSE and protocol == "v5.channel.k8s.io" and data[:1] == bytes([STDIN]):
                    if proc.stdin is not None:
                        proc.stdin.close()
                    elif master is not None:
                        os.write(master, b"\x04")
                elif channel == RESIZE and master is not None:
                    size = json.loads(data or b"{}")
                    winsize = struct.pack("HHHH", int(size.get("Height", 24)), int(size.get("Width", 80)), 0, 0)
                    fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)
            except (OSError, ValueError):
                continue

    threading.Thread(target=client, daemon=True, name="eksid-exec-client").start()
    proc.wait()
    # The command's last output is still in its pipes: forward all of it before the status ends the stream. The
    # bound is for a command that left a background process holding them open; 2 s lost the output of
    # `kubectl exec` on a machine loaded with twice its cores' work (a test saw an empty value).
    for t in outputs:
        t.join(timeout=OUTPUT_DRAIN_SECONDS if master is None else 5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
