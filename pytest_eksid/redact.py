"""Last line of defence against secrets in output: mask anything that looks like one."""

from __future__ import annotations

import json
import re
from typing import Any

# Secret access keys (40 chars of base64-ish), session tokens (long base64), JWTs.
_PATTERNS = (
    # A presigned AWS request (the probe's proof of identity): a bearer secret for its lifetime.
    re.compile(r"\S*[?&]X-Amz-(?:Algorithm|Credential|Signature|Security-Token)=[^\s\"']*"),
    re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+"),  # JWT
    re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),  # secret access key
    re.compile(r"[A-Za-z0-9/+=]{100,}"),  # session token
)
SECRET_KEYS = {"secretaccesskey", "sessiontoken", "token", "aws_secret_access_key", "aws_session_token", "password"}


def redact_text(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub("***", text)
    return text


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if str(k).lower() in SECRET_KEYS else _walk(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_json(value: Any) -> str:
    return json.dumps(_walk(value), indent=2, sort_keys=True)
