"""Reading a profile's YAML: a small, strict subset, with the line of every field.

Profiles are written by hand and reviewed in pull requests, so the reader accepts only what a
reviewer can see at a glance and refuses the rest with the line it is on:

- UTF-8 text (a UTF-8 BOM is fine), without control characters other than tab and newline;
- at most :data:`MAX_BYTES` bytes, :data:`MAX_NODES` values and :data:`MAX_DEPTH` levels of nesting;
- no anchors, aliases or merge keys (``&a``, ``*a``, ``<<``): a value is written where it is used;
- no duplicate keys in a mapping (YAML would silently keep the last one);
- keys are text; values are text, numbers, booleans, null, lists and mappings: no dates (quote
  them), no ``!!binary``, ``!!set`` or other tags, no whole number beyond 64 bits.

Everything here costs time and memory in proportion to the file's size: nothing expands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]

MAX_BYTES = 2 * 1024 * 1024
# A fleet-sized profile must load: 1,000 workloads (what --eksid-discover writes for a large cluster), with a
# sandbox section that creates a role per workload, is ~60,000 values. The byte cap bounds the parse; this bounds
# what a small file can make the loader build.
MAX_NODES = 500_000
MAX_DEPTH = 32
_MAX_INT_BITS = 64

# What YAML 1.1 itself refuses (pyyaml's Reader.NON_PRINTABLE), and the line separators NEL, LS and PS,
# which YAML counts as line breaks and editors do not.
_UNPRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_BREAK = re.compile(r"\r\n|[\r\n]")
# In a value, after YAML's escapes ("\e", "\0", "\x9b"): what would drive a terminal, where names are printed.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}


class YamlProblem(Exception):
    """Why a file is not a usable profile document, and on which line (None: the whole file)."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Document:
    data: Any
    lines: dict[Loc, int]  # the line of each field path (a mapping key's line for a key)


def is_secret(loc: Loc) -> bool:
    """Whether values at ``loc`` are seeded as secrets (or could be): never echoed in a message."""
    return bool(loc) and loc[0] == "sandbox" and (len(loc) == 1 or loc[1] in ("secrets", "parameters"))


def dotted(loc: Loc) -> str:
    """``workloads[0].allow[1].params``; under sandbox.secrets/parameters only the known field names are
    shown: a stray key there may be a mangled secret."""
    if is_secret(loc) and len(loc) > 3:
        loc = (*loc[:3], *(p if isinstance(p, int) or p in ("name", "value") else "(key not shown)" for p in loc[3:]))
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def shown(value: object, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters: a message never echoes a whole value."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read(path: Path) -> Document:
    """Parse ``path``; a :class:`YamlProblem` (or OSError) for anything outside the subset above."""
    with path.open("rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        size = f"{MAX_BYTES // (1024 * 1024)} MiB"
        raise YamlProblem(None, f"larger than {size}; a profile is a short, hand-written file")
    text = _decode(raw)
    bad = _UNPRINTABLE.search(text)
    if bad is not None:
        line = len(_BREAK.findall(text, 0, bad.start())) + 1
        column = bad.start() - max(text.rfind("\n", 0, bad.start()), text.rfind("\r", 0, bad.start()))
        raise YamlProblem(
            line,
            f"column {column}: control character U+{ord(bad.group()):04X} is not allowed in a profile; remove it "
            '(inside double quotes an escape such as "\\t" is fine)',
        )
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None, {})
        lines: dict[Loc, int] = {}
        _walk(node, (), lines)
        return Document(loader.construct_document(node), lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = _cut(str(exc.problem or exc))
        raise YamlProblem(mark.line + 1 if mark is not None else None, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:  # an error without a mark: not expected after the checks above
        raise YamlProblem(None, f"not readable as YAML: {_cut(str(exc))}") from None
    finally:
        loader.dispose()


def _decode(raw: bytes) -> str:
    # A BOM, or a NUL among the first two bytes of a file that starts with ASCII text: UTF-16 or UTF-32.
    if raw.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")) or (len(raw) >= 2 and 0 in raw[:2]):
        raise YamlProblem(None, "not UTF-8 text (it looks like UTF-16 or UTF-32); save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise YamlProblem(
            line, f"column {column}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse(mark: yaml.Mark, message: str) -> YamlProblem:
    return YamlProblem(mark.line + 1, _cut(message, 400))


# libyaml's event parser where pyyaml has it (a state machine, like pyyaml's own, but ~10x faster), under
# pyyaml's Python composer, which this loader needs to see anchors and to bound depth as it goes.
_Parser: Any = getattr(yaml, "CParser", None)


class _Loader(yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """A safe loader refusing aliases and anchors, and bounding depth and size as it composes."""

    def __init__(self, stream: str) -> None:
        self._parser = _Parser(stream) if _Parser is not None else yaml.SafeLoader(stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0
        self._nodes = 0

    def check_event(self, *choices: Any) -> bool:
        return bool(self._parser.check_event(*choices))

    def peek_event(self) -> Any:
        return self._parser.peek_event()

    def get_event(self) -> Any:
        return self._parser.get_event()

    def dispose(self) -> None:
        self._parser.dispose()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _refuse(
                event.start_mark,
                "anchors and aliases (&name, *name) are not allowed in a profile; write each value where it is used",
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _refuse(
                event.start_mark, f"more than {MAX_NODES} values; split the profile (one per cluster, docs/fleet.md)"
            )
        if self._depth >= MAX_DEPTH:
            raise _refuse(event.start_mark, f"nested more than {MAX_DEPTH} levels deep; a profile needs far fewer")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # Bounded before int() parses it: Python refuses more than 4300 decimal digits with a ValueError.
        value = super().construct_yaml_int(node) if len(str(node.value)) <= 100 else None
        if value is None or value.bit_length() > _MAX_INT_BITS:
            raise _refuse(node.start_mark, "a whole number this large is not allowed; quote it if it is text")
        return int(value)


_Loader.add_constructor(f"{_TAG}int", _Loader.construct_yaml_int)  # type: ignore[type-var]


def _free_form(loc: Loc) -> bool:
    """Values passed on as data, never printed as names: secrets, probe params, policy documents."""
    return is_secret(loc) or "params" in loc or "policy" in loc


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    """Record each field's line; refuse duplicate keys, non-text keys, merge keys, dates and other tags."""
    lines.setdefault(loc, node.start_mark.line + 1)
    where = dotted(loc) or "(top level)"
    if node.tag not in _PLAIN_TAGS:
        what = node.tag.removeprefix(_TAG)
        if what == "timestamp":
            example = "" if is_secret(loc) else f' ("{shown(node.value)[1:-1]}")'
            message = f"{where}: YAML reads this unquoted value as a date; quote it{example}"
        else:
            message = f"{where}: the YAML tag {node.tag!r} is not allowed in a profile; write a plain value"
        raise _refuse(node.start_mark, message)
    if isinstance(node, yaml.ScalarNode) and not _free_form(loc):
        bad = _CONTROL.search(str(node.value))
        if bad is not None:
            raise _refuse(
                node.start_mark,
                f"{where}: control character U+{ord(bad.group()):04X} in this value (from an escape); remove it",
            )
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if key.tag == f"{_TAG}merge":
                raise _refuse(key.start_mark, f"{where}: merge keys (<<) are not allowed in a profile")
            if not isinstance(key, yaml.ScalarNode) or key.tag != f"{_TAG}str":
                raise _refuse(key.start_mark, f"{where}: a key must be text; quote it")
            name = str(key.value)
            child = (*loc, name)
            if name in first:
                shown_key = "a key" if is_secret(child) else f"key {shown(name)}"
                raise _refuse(
                    key.start_mark,
                    f"{dotted(child)}: {shown_key} appears twice in one mapping (lines {first[name]} and {line}); "
                    "YAML would keep only the last one: remove or rename one",
                )
            first[name] = line
            lines[child] = line
            _walk(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), lines)
