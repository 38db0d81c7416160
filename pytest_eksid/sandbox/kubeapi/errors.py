"""Errors as kube-apiserver writes them: ``ApiError`` and its ``Status`` body.

The constructors here give the messages, reasons and ``details`` that kubectl and client-go
print and branch on (``NotFound``, ``AlreadyExists``, ``Conflict``, ``Invalid`` with field causes).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_eksid.sandbox.kubeapi.resources import Obj, ResourceType

FieldError = tuple[str, str, str]  # field, cause reason, message

NOT_FOUND = "the server could not find the requested resource"


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        kind: str = "",
        name: str = "",
        group: str = "",
        causes: list[Obj] | None = None,
        always_details: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name
        self.group = group
        self.causes = causes or []
        self.always_details = always_details  # ``details: {}`` even when empty (a 403's NewForbidden)

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.kind or self.name or self.causes or self.always_details:
            details: Obj = {}
            if self.name:
                details["name"] = self.name
            if self.group:
                details["group"] = self.group
            if self.kind:
                details["kind"] = self.kind
            if self.causes:
                details["causes"] = self.causes
            body["details"] = details
        return body


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', kind=rt.plural, name=name, group=rt.group)


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", NOT_FOUND)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', kind=rt.plural, name=name, group=rt.group
    )


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        kind=rt.plural,
        name=name,
        group=rt.group,
    )


def unsupported_media_type(accepted: tuple[str, ...] | list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
    )


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    lines = [f"{f}: {m}" for f, _, m in errors]
    summary = lines[0] if len(lines) == 1 else "[" + ", ".join(lines) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{rt.kind} "{name}" is invalid: {summary}',
        kind=rt.kind,
        name=name,
        group=rt.group,
        causes=[{"reason": r, "message": m, "field": f} for f, r, m in errors],
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


# Field errors (the causes of a 422), as k8s.io/apimachinery/pkg/util/validation/field words them.


def required(path: str) -> FieldError:
    return (path, "FieldValueRequired", "Required value")


def invalid_value(path: str, value: Any, detail: str) -> FieldError:
    return (path, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {detail}")


def forbidden(path: str, detail: str) -> FieldError:
    return (path, "FieldValueForbidden", f"Forbidden: {detail}")
