"""A request as the handlers see it: query flags, dry run, and the body decoded by content type.

Also what a handler answers (``Response``), and ``RequestInfo``: what a request does (verb,
resource, namespace, name), as kube-apiserver resolves it before authorization.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.message import Message
from typing import Any

import yaml

from pytest_eksid.sandbox.kubeapi.errors import bad_request, unsupported_media_type
from pytest_eksid.sandbox.kubeapi.patches import PATCH_TYPES
from pytest_eksid.sandbox.kubeapi.protobuf import PROTOBUF, decode_protobuf
from pytest_eksid.sandbox.kubeapi.resources import Obj, ResourceType

BODY_TYPES = ("application/json", "application/yaml", PROTOBUF, *PATCH_TYPES)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def q(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return self.q(name).lower() in ("true", "1")

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    @property
    def dry_run(self) -> bool:
        values = self.query.get("dryRun") or []
        for v in values:
            if v != "All":
                raise bad_request(f'unsupported dry run value: "{v}" (supported: "All")')
        return bool(values)

    def json(self) -> Any:
        if not self.body:
            return None
        ctype = self.content_type or "application/json"
        if ctype not in BODY_TYPES:
            raise unsupported_media_type(BODY_TYPES)
        if ctype == PROTOBUF:
            return decode_protobuf(self.body)
        try:
            if ctype == "application/yaml":
                return yaml.safe_load(self.body)
            return json.loads(self.body)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the request body is not valid {ctype}: {exc}") from None


@dataclass
class Response:
    code: int
    body: Obj | str
    content_type: str = "application/json"


@dataclass(frozen=True)
class RequestInfo:
    """What a request does, in the terms an authorizer decides on (k8s.io/apiserver's RequestInfo).

    A resource request names ``resource`` and the Kubernetes ``verb`` (``get``, ``list``,
    ``watch``, ``create``, ``update``, ``patch``, ``delete``, ``deletecollection``); anything
    else (``/healthz``, ``/version``, discovery, OpenAPI) is a non-resource request whose verb is
    the HTTP method in lower case, decided on by ``path``.
    """

    verb: str
    path: str
    resource: ResourceType | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def is_resource_request(self) -> bool:
        return self.resource is not None


def resource_verb(method: str, name: str | None, watch: bool) -> str:
    """The Kubernetes verb of an HTTP method on a collection (``name`` None) or an object."""
    if method == "GET":
        return "get" if name is not None else "watch" if watch else "list"
    if method == "DELETE":
        return "delete" if name is not None else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
