"""Last line of defence against secrets in output: mask anything that looks like one.

Two layers keep secrets out of terminal output, captured logs, JUnit and Allure:

- at the source, the loggers whose DEBUG records are wire data (request headers with the
  ``Authorization`` signature and ``X-Amz-Security-Token``, response bodies with credentials,
  Kubernetes Secrets and probe logs) are held at INFO, whatever ``--log-level`` says;
- on every handler pytest attaches to the root logger (live log, log file, the captured log of
  each test and so its report sections), :class:`SecretFilter` masks what looks like a secret in
  whatever record still arrives.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
# Secret access keys (40 chars of base64-ish), session tokens (long base64), JWTs, bearer tokens.
# Every pattern runs in linear time on any input (records can carry cluster text): no pattern may start
# a scan at every position of a long run, hence the boundary look-behinds and possessive quantifiers.
# A presigned AWS request (the probe's proof of identity) is a bearer secret for its lifetime: the
# whole whitespace- or quote-delimited token around a presign parameter is masked (see _mask_presigned).
_PRESIGN_PARAM = re.compile(r"[?&]X-Amz-(?:Algorithm|Credential|Signature|Security-Token)=")
_TOKEN_CHAR = re.compile(r"[^\s\"']")
_TOKEN_END = re.compile(r"[\s\"']")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # An Authorization header's value (SigV4, Bearer, Basic), as a header line, a dict or a tuple item.
    (re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?)[^'\"\r\n]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)\bbearer\s+[^\s'\",]+"), f"Bearer {MASK}"),
    (re.compile(r"k8s-aws-v1\.[\w-]+"), MASK),  # an EKS token (aws eks get-token)
    # A credential field of a JSON or XML body, whatever its value looks like.
    (
        re.compile(
            r"(?i)(\"(?:SecretAccessKey|SessionToken|Token|SecretString|SecretBinary|Password)\"\s*:\s*)\"[^\"]*\""
        ),
        rf'\1"{MASK}"',
    ),
    (
        re.compile(r"(?i)(<(SecretAccessKey|SessionToken|SecretString|SecretBinary)>)[^<]*(</\2>)"),
        rf"\1{MASK}\3",
    ),
    (re.compile(r"(?i)(signature[:=]\s*)[0-9a-f]{64}"), rf"\1{MASK}"),  # a SigV4 signature
    (re.compile(r"(?<![\w-])eyJ[\w-]++\.[\w-]++\.[\w-]++"), MASK),  # JWT
    (re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"), MASK),  # secret access key
    (re.compile(r"[A-Za-z0-9/+=]{100,}"), MASK),  # session token
)
SECRET_KEYS = {"secretaccesskey", "sessiontoken", "token", "aws_secret_access_key", "aws_session_token", "password"}

# Loggers whose DEBUG records are the bytes on the wire: botocore's request (headers, signature,
# security token) and response bodies (credentials), its signing steps (canonical request with the
# security token), and the Kubernetes client's response bodies (Secrets' data, probe logs with the
# identity proof). Nothing below INFO from them is let through.
WIRE_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.auth", "kubernetes.client.rest")


def _mask_presigned(text: str) -> str:
    """Mask each token that holds a presign parameter, scanning each character a bounded number of times."""
    out: list[str] = []
    done = 0  # text[:done] is already in out
    pos = 0
    while (found := _PRESIGN_PARAM.search(text, pos)) is not None:
        start = found.start()
        while start > done and _TOKEN_CHAR.match(text, start - 1):
            start -= 1
        end_match = _TOKEN_END.search(text, found.end())
        end = len(text) if end_match is None else end_match.start()
        out.append(text[done:start])
        out.append(MASK)
        done = pos = end
    out.append(text[done:])
    return "".join(out)


def redact_text(text: str) -> str:
    text = _mask_presigned(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretFilter(logging.Filter):
    """Masks secrets in a record's message, traceback and stack text (it never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports that itself, with the record
            return True
        masked = redact_text(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


class _WireDebugDropped(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


_SECRET_FILTER = SecretFilter()
_WIRE_FILTER = _WireDebugDropped()


def quiet_wire_loggers(names: Iterable[str] = WIRE_LOGGERS) -> None:
    """Drop the DEBUG records of the wire loggers at their source (a logger filter: a level set later,
    e.g. by ``--log-level``, cannot undo it)."""
    for name in names:
        logger = logging.getLogger(name)
        if _WIRE_FILTER not in logger.filters:
            logger.addFilter(_WIRE_FILTER)


def guard_handlers(logger: logging.Logger | None = None) -> None:
    """Put :class:`SecretFilter` on every handler of ``logger`` (the root logger: where pytest's live-log,
    log-file and capture handlers sit while a phase runs). Idempotent and cheap: call it often."""
    for handler in (logger or logging.getLogger()).handlers:
        if _SECRET_FILTER not in handler.filters:
            handler.addFilter(_SECRET_FILTER)


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
