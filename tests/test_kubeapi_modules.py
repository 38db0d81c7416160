"""The sandbox apiserver's modules on plain data: JSON patch errors, request resolution, WebSocket frames."""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator
from email.message import Message

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong

from pytest_eksid.sandbox.kubeapi.errors import ApiError
from pytest_eksid.sandbox.kubeapi.patches import apply_patch
from pytest_eksid.sandbox.kubeapi.request import Request
from pytest_eksid.sandbox.kubeapi.server import request_info
from pytest_eksid.sandbox.kubeapi.streaming import WebSocket

SA = {"metadata": {"name": "sa", "labels": {"team": "a"}}, "secrets": [{"name": "s1"}]}

# --- JSON patch (RFC 6902 through jsonpatch, errors as kube-apiserver's) -----------------


def test_json_patch_operations() -> None:
    patched = apply_patch(
        SA,
        [
            {"op": "add", "path": "/metadata/labels/extra", "value": "1"},
            {"op": "replace", "path": "/metadata/labels/team", "value": "b"},
            {"op": "copy", "from": "/secrets/0", "path": "/secrets/-"},
            {"op": "move", "from": "/metadata/labels/extra", "path": "/metadata/labels/moved"},
            {"op": "remove", "path": "/secrets/0"},
            {"op": "test", "path": "/metadata/labels/team", "value": "b"},
        ],
        "application/json-patch+json",
    )
    assert patched == {"metadata": {"name": "sa", "labels": {"team": "b", "moved": "1"}}, "secrets": [{"name": "s1"}]}


@pytest.mark.parametrize(
    ("ops", "code", "message"),
    [
        (
            [{"op": "test", "path": "/metadata/labels/team", "value": "z"}],
            422,
            "testing value /metadata/labels/team failed",
        ),
        (
            [{"op": "replace", "path": "/metadata/labels/nope", "value": "x"}],
            422,
            "jsonpatch replace operation does not apply: doc is missing path: /metadata/labels/nope",
        ),
        (
            [{"op": "add", "path": "/spec/missing/deeper", "value": 1}],
            422,
            "jsonpatch add operation does not apply: doc is missing path: /spec/missing/deeper",
        ),
        (
            [{"op": "move", "from": "/nope", "path": "/x"}],
            422,
            "jsonpatch move operation does not apply: doc is missing path: /nope",
        ),
        ({"op": "add"}, 400, "a JSON patch must be a list of operations"),
        ([{"op": "frobnicate", "path": "/a"}], 400, "invalid JSON patch: Unknown operation 'frobnicate'"),
        ([{"op": "add", "path": "metadata", "value": 1}], 400, "invalid JSON patch: Location must start with /"),
    ],
)
def test_json_patch_errors_are_kubernetes_status(ops: object, code: int, message: str) -> None:
    with pytest.raises(ApiError) as err:
        apply_patch(SA, ops, "json")
    status = err.value.status()
    assert (status["code"], status["message"]) == (code, message)
    assert status["reason"] == ("Invalid" if code == 422 else "BadRequest")


def test_a_failed_json_patch_leaves_the_object_alone() -> None:
    before = copy.deepcopy(SA)
    with pytest.raises(ApiError):
        apply_patch(
            SA,
            [
                {"op": "add", "path": "/metadata/labels/first", "value": "1"},
                {"op": "remove", "path": "/metadata/annotations"},
            ],
            "json",
        )
    assert before == SA  # the stored object is only replaced by a patch that applied whole


def test_unknown_patch_type_is_415() -> None:
    with pytest.raises(ApiError) as err:
        apply_patch(SA, {}, "application/apply-patch+yaml")
    assert (err.value.code, err.value.reason) == (415, "UnsupportedMediaType")


# --- what a request does: the input of the authorization point ---------------------------


def _request(method: str, path: str, **query: str) -> Request:
    return Request(method, path, {k: [v] for k, v in query.items()}, Message(), b"")


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/ns1/pods", {}, ("list", "pods", "ns1", None, None)),
        ("GET", "/api/v1/pods", {"watch": "true"}, ("watch", "pods", None, None, None)),
        ("GET", "/api/v1/namespaces/ns1/pods/p", {}, ("get", "pods", "ns1", "p", None)),
        ("POST", "/api/v1/namespaces/ns1/pods", {}, ("create", "pods", "ns1", None, None)),
        ("PUT", "/api/v1/namespaces/ns1/pods/p/status", {}, ("update", "pods", "ns1", "p", "status")),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/kube-system/daemonsets/a",
            {},
            ("patch", "daemonsets", "kube-system", "a", None),
        ),
        ("DELETE", "/api/v1/namespaces/ns1/configmaps/c", {}, ("delete", "configmaps", "ns1", "c", None)),
        ("DELETE", "/api/v1/namespaces/ns1/configmaps", {}, ("deletecollection", "configmaps", "ns1", None, None)),
        ("GET", "/api/v1/namespaces/ns1/pods/p/exec", {"command": "env"}, ("create", "pods", "ns1", "p", "exec")),
        ("GET", "/api/v1/namespaces/ns1/pods/p/log", {}, ("get", "pods", "ns1", "p", "log")),
        ("GET", "/api/v1/namespaces/ns1", {}, ("get", "namespaces", None, "ns1", None)),
        ("PUT", "/api/v1/namespaces/ns1/status", {}, ("update", "namespaces", None, "ns1", "status")),
        (
            "GET",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            {},
            ("list", "mutatingwebhookconfigurations", None, None, None),
        ),
    ],
)
def test_request_info_of_resource_requests(
    method: str, path: str, query: dict[str, str], expected: tuple[str, str, str | None, str | None, str | None]
) -> None:
    info = request_info(_request(method, path, **query))
    assert info.resource is not None
    assert (info.verb, info.resource.plural, info.namespace, info.name, info.subresource) == expected
    assert info.path == path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/version"),
        ("GET", "/apis"),
        ("GET", "/api/v1"),
        ("GET", "/openapi/v3/api/v1"),
        ("GET", "/api/v1/namespaces/ns1/services"),  # not served: route answers 404
        ("GET", "/api/v1/pods/p"),  # a namespaced object without its namespace
        ("GET", "/api/v1/namespaces/ns1/configmaps/c/status"),  # configmaps have no status
        ("POST", "/apis/example.com/v1/widgets"),
    ],
)
def test_request_info_of_non_resource_requests(method: str, path: str) -> None:
    info = request_info(_request(method, path))
    assert not info.is_resource_request
    assert (info.verb, info.path) == (method.lower(), path)


# --- WebSocket: control frames and closing, through wsproto on both ends -----------------


@pytest.fixture
def pair() -> Iterator[tuple[WebSocket, socket.socket, Connection]]:
    server, client = socket.socketpair()
    server.settimeout(10)
    client.settimeout(10)
    rfile, wfile = server.makefile("rb"), server.makefile("wb")
    ws = WebSocket(Connection(ConnectionType.SERVER), rfile, wfile)
    yield ws, client, Connection(ConnectionType.CLIENT)
    for f in (rfile, wfile, server, client):
        f.close()


def _received(client: socket.socket, conn: Connection) -> list[object]:
    conn.receive_data(client.recv(65536))
    return list(conn.events())


def test_websocket_answers_ping_and_joins_fragments(pair: tuple[WebSocket, socket.socket, Connection]) -> None:
    ws, client, conn = pair
    client.sendall(
        conn.send(Ping(b"are you there"))
        + conn.send(BytesMessage(data=b"\x00hel", message_finished=False))
        + conn.send(BytesMessage(data=b"lo", message_finished=True))
    )
    assert ws.recv() == b"\x00hello"
    assert _received(client, conn) == [Pong(payload=b"are you there")]
    ws.send(b"\x01out")
    [message] = _received(client, conn)
    assert isinstance(message, BytesMessage)
    assert message.data == b"\x01out"


def test_websocket_peer_close_is_answered(pair: tuple[WebSocket, socket.socket, Connection]) -> None:
    ws, client, conn = pair
    client.sendall(conn.send(CloseConnection(code=1000)))
    assert ws.recv() is None
    assert ws.closing  # the client closed: exec lets the command finish
    [answer] = _received(client, conn)
    assert isinstance(answer, CloseConnection)
    assert answer.code == 1000
    ws.send(b"\x01late")  # nothing goes out after the close
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(1)


def test_websocket_dropped_connection_is_not_a_close(pair: tuple[WebSocket, socket.socket, Connection]) -> None:
    ws, client, _ = pair
    client.shutdown(socket.SHUT_WR)
    assert ws.recv() is None
    assert not ws.closing  # the client went away: exec kills the command
