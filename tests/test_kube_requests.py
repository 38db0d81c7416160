"""kube.py's own requests against a scripted API server: what it sends, and how it reads answers that are odd,
hostile or never finished (the sandbox's API server answers well; these are the answers it does not give)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pytest_eksid.kube import Kube, KubeError, KubeTarget


@dataclass
class Scripted:
    """An HTTP/1.1 server that answers each request with the next scripted bytes, then holds the connection
    open in silence (``hold``) or closes it."""

    answers: list[bytes]
    hold: bool = False
    requests: list[bytes] = field(default_factory=list)
    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    held: list[socket.socket] = field(default_factory=list)
    served: threading.Event = field(default_factory=threading.Event)  # set once an answer is sent (and held)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + body)
            conn.sendall(self.answers.pop(0))
            if self.hold:
                self.held.append(conn)
            else:
                conn.close()
            self.served.set()


@pytest.fixture
def scripted() -> Iterator[list[Scripted]]:
    servers: list[Scripted] = []
    yield servers
    for server in servers:
        server.sock.close()
        for conn in server.held:
            conn.close()


def _start(servers: list[Scripted], answers: list[bytes], hold: bool = False) -> Scripted:
    server = Scripted(answers, hold)
    server.sock.bind(("127.0.0.1", 0))
    server.sock.listen()
    threading.Thread(target=server.serve, daemon=True).start()
    servers.append(server)
    return server


def _kube(tmp_path: Path, server: Scripted) -> Kube:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server.url}}],
                "users": [{"name": "u", "user": {"token": "scripted-token"}}],
                "contexts": [{"name": "scripted", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "scripted",
            }
        )
    )
    return Kube(KubeTarget(str(kubeconfig), None), timeout=30)


def _answer(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _chunked_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_a_request_carries_the_token_the_query_and_the_body(tmp_path: Path, scripted: list[Scripted]) -> None:
    server = _start(scripted, [_answer("201 Created", b'{"metadata": {"name": "p", "uid": "u1"}}')])
    kube = _kube(tmp_path, server)
    created = kube.create_pod("ns", {"metadata": {"name": "p"}})
    assert created == {"metadata": {"name": "p", "uid": "u1"}}
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/v1/namespaces/ns/pods HTTP/1.1\r\n")
    assert b"\r\nauthorization: bearer scripted-token\r\n" in head.lower()
    assert json.loads(body) == {"metadata": {"name": "p"}}
    kube.close()


def test_a_refusal_is_the_status_objects_reason_and_message(tmp_path: Path, scripted: list[Scripted]) -> None:
    status = {"kind": "Status", "code": 403, "reason": "Forbidden", "message": 'pods is forbidden: User "x"'}
    server = _start(scripted, [_answer("403 Forbidden", json.dumps(status).encode())])
    kube = _kube(tmp_path, server)
    with pytest.raises(KubeError, match=r'^list nodes: 403 Forbidden: pods is forbidden: User "x"$') as caught:
        kube.nodes()
    assert caught.value.status == 403
    assert caught.value.reason == "Forbidden"
    kube.close()


def test_an_answer_that_is_not_json_is_an_error_not_a_crash(tmp_path: Path, scripted: list[Scripted]) -> None:
    server = _start(scripted, [_answer("200 OK", b"<html>a proxy's login page</html>", "text/html")])
    kube = _kube(tmp_path, server)
    with pytest.raises(KubeError, match=r"^list nodes: the API server's answer is not JSON \(33 bytes\)$"):
        kube.nodes()
    kube.close()


def test_a_log_of_bytes_that_are_not_utf8_is_read_with_replacements(tmp_path: Path, scripted: list[Scripted]) -> None:
    server = _start(scripted, [_answer("200 OK", b"result \xff\xfe end\n", "text/plain")])
    kube = _kube(tmp_path, server)
    assert kube.pod_log("ns", "p", tail_lines=5) == "result \ufffd\ufffd end\n"
    assert server.requests[0].startswith(b"GET /api/v1/namespaces/ns/pods/p/log?tailLines=5 HTTP/1.1\r\n")
    kube.close()


def test_a_watch_yields_events_as_they_come_and_a_gone_version_is_410(tmp_path: Path, scripted: list[Scripted]) -> None:
    added = {"type": "ADDED", "object": {"metadata": {"name": "p", "resourceVersion": "7"}}}
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    stream = _chunked_head() + _chunk(json.dumps(added).encode() + b"\n" + json.dumps(gone)[:20].encode())
    stream += _chunk(json.dumps(gone)[20:].encode() + b"\n") + _chunk(b"")
    server = _start(scripted, [stream])
    kube = _kube(tmp_path, server)
    events: list[tuple[str, dict[str, object]]] = []
    with pytest.raises(KubeError, match=r"^watch pods \(app=x\): 410 Expired: too old$") as caught:
        events.extend(kube.watch_pods("app=x", "ns", "5", 60, kube.watcher()))
    assert caught.value.status == 410
    assert events == [("ADDED", added["object"])]
    request_line = server.requests[0].split(b"\r\n")[0].decode()
    assert request_line.startswith("GET /api/v1/namespaces/ns/pods?")
    for parameter in ("labelSelector=app%3Dx", "resourceVersion=5", "allowWatchBookmarks=true", "watch=true"):
        assert parameter in request_line
    assert kube.calls["watch list_namespaced_pod"] == 1
    kube.close()


def test_stop_ends_a_watch_the_server_keeps_silent_at_once(tmp_path: Path, scripted: list[Scripted]) -> None:
    """A watch blocked in a read (the server sends nothing for its whole 600 s) ends when another thread stops it,
    not when the server's timeout comes."""
    added = {"type": "ADDED", "object": {"metadata": {"name": "p", "resourceVersion": "7"}}}
    server = _start(scripted, [_chunked_head() + _chunk(json.dumps(added).encode() + b"\n")], hold=True)
    kube = _kube(tmp_path, server)
    watcher = kube.watcher()
    seen: list[tuple[str, dict[str, object]]] = []
    first = threading.Event()
    ended = threading.Event()
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            for event in kube.watch_pods("app=x", None, "1", 600, watcher):
                seen.append(event)
                first.set()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)
        ended.set()

    threading.Thread(target=follow, daemon=True).start()
    assert first.wait(60)
    assert not ended.is_set()  # the stream is open, the read blocked
    watcher.stop()
    assert ended.wait(60), "stop() did not end the blocked read"
    assert errors == []
    assert seen == [("ADDED", added["object"])]
    kube.close()


def test_a_refreshed_token_that_cannot_be_sent_is_refused_without_showing_it(
    tmp_path: Path, scripted: list[Scripted]
) -> None:
    """An exec plugin's refreshed token with a newline: urllib3 would refuse the header with the token in its
    error; the runner says why and shows no token."""
    server = _start(scripted, [_answer("200 OK", b'{"items": []}')])
    kube = _kube(tmp_path, server)

    def refresh(configuration: object) -> None:  # what the client's hook does when an exec credential expires
        keys = configuration.api_key  # type: ignore[attr-defined]
        for name in list(keys) or ["authorization"]:
            keys[name] = "Bearer secret-refreshed-token\nX-Injected: 1"

    kube.configuration.refresh_api_key_hook = refresh
    with pytest.raises(KubeError) as caught:
        kube.nodes()
    assert "secret-refreshed-token" not in str(caught.value)
    assert "holds a newline or another control character" in str(caught.value)
    assert server.requests == []
    kube.close()


def test_a_watch_stopped_before_it_starts_makes_no_request(tmp_path: Path, scripted: list[Scripted]) -> None:
    server = _start(scripted, [_answer("200 OK", b"")])
    kube = _kube(tmp_path, server)
    watcher = kube.watcher()
    watcher.stop()
    assert list(kube.watch_pods("app=x", None, "1", 60, watcher)) == []
    assert server.requests == []
    assert kube.calls["watch list_pod_for_all_namespaces"] == 0
    kube.close()


def test_a_read_refused_with_429_after_the_retries_is_a_refusal_with_its_status(
    tmp_path: Path, scripted: list[Scripted]
) -> None:
    """kube-apiserver's API Priority and Fairness answers 429 with Retry-After when a priority level's queues are
    full: retried (urllib3 honours Retry-After on reads), and when it persists, a refusal that keeps its status."""
    status = {"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "too many requests"}
    body = json.dumps(status).encode()
    head = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 0\r\n"
    answer = (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    server = _start(scripted, [answer] * 5)
    kube = _kube(tmp_path, server)
    with pytest.raises(KubeError, match=r"^list nodes: 429 TooManyRequests: too many requests$") as caught:
        kube.nodes()
    assert caught.value.status == 429
    assert len(server.requests) == 3  # the request and its two retries
    kube.close()
