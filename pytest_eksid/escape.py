"""Hostile text made safe to show: on a terminal, in a ``next:`` command, in the CSV and Markdown reports.

Everything a cluster returns (pod logs, Events, annotations, labels) is written by whoever can create
objects there, and profile values by whoever edits the profile: none of it may reach a terminal as
control characters (``ESC]0;`` title sets, colours, ``\\r`` overwriting a line, bidi overrides reordering
one), nor a spreadsheet as a formula, nor a Markdown viewer as a link, an image or HTML. This module is
the one place that decides how such text is shown.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

# Unicode categories never shown as themselves: controls (C0, DEL, C1: ESC starts every terminal escape
# sequence, CSI is U+009B), format characters (the bidi embeddings/overrides U+202A-U+202E and isolates
# U+2066-U+2069, zero-width characters), lone surrogates (unencodable), line and paragraph separators
# (str.splitlines breaks on them).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# What cluster-sourced text may show unescaped in shown(): the characters of Kubernetes names and label values.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/:=@")
# A DNS-1123 subdomain, what kube-apiserver accepts as a node name: the only cluster text a command may carry.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Label syntax as kube-apiserver validates it (k8s.io/apimachinery/pkg/util/validation: IsQualifiedName for
# keys, an optional DNS-subdomain prefix and a name of at most 63 characters; IsValidLabelValue for values).
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
# IAM user, role and policy names (IAM API reference, "User"/"Role" data types: [\w+=,.@-]+), and access key ids.
_IAM_NAME = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_ACCESS_KEY_ID = re.compile(r"(AKIA|ASIA)[A-Z0-9]{12,124}")
# A spreadsheet reads a cell starting with one of these as a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Markdown and HTML: what could open a tag, an entity, a link or image, code, or end a table cell.
_MARKDOWN = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]"}
_MARKDOWN |= {"(": "\\(", ")": "\\)", "!": "\\!", "*": "\\*", "_": "\\_", "\\": "\\\\"}


def _code(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN_CATEGORIES


def printable(value: object, keep: str = "") -> str:
    """``value`` as text that shows as itself on a terminal: every control, format (bidi), separator or
    surrogate character escaped (``\\x1b``, ``\\u202e``), except those in ``keep`` (``"\\n"`` where lines
    are the text's structure). Nothing is cut: use :func:`shown` for a bounded excerpt."""
    text = str(value)
    if text.isprintable() and not keep:
        return text
    return "".join(_code(c) if c not in keep and _hidden(c) else c for c in text)


def quoted(value: object, indent: str = "    | ") -> str:
    """Multi-line cluster text (a pod's last log lines) as a quoted block: each line printable and
    indented, so that no line of it passes for the plugin's own output."""
    return "\n".join(indent + printable(line) for line in str(value).split("\n"))


def shown(value: object, limit: int = 63) -> str:
    """Cluster-sourced text (a label value, a node name) as it may reach a terminal: at most
    ``limit`` characters of it, every character outside names' alphabet escaped (``\\x1b``,
    ``\\u202e``), and how much was cut said."""
    text = str(value)
    out = "".join(c if c in _PLAIN else _code(c) for c in text[:limit])
    return out + (f"...(+{len(text) - limit} chars)" if len(text) > limit else "")


def command_name(value: object, placeholder: str) -> str:
    """A cluster-sourced name for a ``next:`` command: itself only where it is a valid DNS-1123
    subdomain (all kube-apiserver admits for a node name), else ``placeholder``."""
    text = str(value)
    return text if len(text) <= 253 and _DNS_SUBDOMAIN.fullmatch(text) else placeholder


def _label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def _label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)


def command_labels(labels: Mapping[object, object], fallback: str) -> str:
    """Cluster-sourced labels (a DaemonSet's ``matchLabels``) as a ``-l`` selector for a ``next:`` command:
    ``k=v,...`` only where every key and value has Kubernetes label syntax, else ``fallback``."""
    pairs = sorted((k, v) for k, v in labels.items() if isinstance(k, str) and isinstance(v, str))
    if not pairs or len(pairs) < len(labels) or not all(_label_key(k) and _label_value(v) for k, v in pairs):
        return fallback
    return ",".join(f"{k}={v}" for k, v in pairs)


def command_label_key(key: object, placeholder: str) -> str:
    """A label key for a ``next:`` command: itself where it has label key syntax, else ``placeholder``."""
    return str(key) if _label_key(str(key)) else placeholder


def command_label_value(value: object, placeholder: str) -> str:
    """A label value for a ``next:`` command: itself where it has label value syntax, else ``placeholder``."""
    return str(value) if _label_value(str(value)) else placeholder


def command_iam_name(value: object, placeholder: str) -> str:
    """An IAM name (a user's, a policy's) or access key id for a ``next:`` command: itself where it has IAM
    name syntax, which admits nothing a shell would read (no space, quote, ``$``, ``;``, ``|``), else
    ``placeholder``."""
    text = str(value)
    return text if _IAM_NAME.fullmatch(text) or _ACCESS_KEY_ID.fullmatch(text) else placeholder


def csv_cell(value: object) -> str:
    """Profile- or cluster-sourced text for a CSV cell: printable, and never read as a formula (a leading
    ``=``, ``+``, ``-``, ``@``, tab or CR gets a ``'`` before it, as OWASP's CSV injection guidance says)."""
    raw = str(value)
    text = printable(raw)
    return "'" + text if raw.startswith(_FORMULA_START) or text.startswith(_FORMULA_START) else text


def markdown_cell(value: object) -> str:
    """Profile- or cluster-sourced text for a Markdown table cell: printable, with every character that
    could form HTML, an entity, a link, an image, code or a cell boundary escaped."""
    return "".join(_MARKDOWN.get(c, c) for c in printable(value))
