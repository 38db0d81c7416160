"""Discovery: a starter profile written from what a cluster binds (``pytest --profile X --eksid-discover PATH``).

Every ServiceAccount bound to an IAM role (an IRSA annotation, a Pod Identity association) becomes a
workload entry with its mechanism, role (and target role), owner label and selector (from the
Deployments and StatefulSets whose pod template runs as it), and an allow/deny contract derived from
the role's permission policies (:mod:`pytest_eksid.iam.contract`). Identities the input profile's
``ignore:`` matches are left out. The input profile's other sections (``cluster``, ``probe``,
``ignore``, ``deployers``, a provider's such as ``sandbox``) are copied as they are: they are the
user's own settings, not the cluster's.

Cluster data is hostile input: every value is written by PyYAML's emitter (quoted where needed);
the comments that say why each entry is there are one line of printable ASCII each, every other
character escaped, so that no value can end a comment and start YAML of its own. Nothing is read
from Secrets or ConfigMaps, and nothing of a pod template but its labels and ServiceAccount.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from pytest_eksid import profile_yaml
from pytest_eksid.aws import AwsError
from pytest_eksid.checks.identities import Identity, classify, from_associations, from_service_accounts
from pytest_eksid.escape import command_labels
from pytest_eksid.iam.contract import derive
from pytest_eksid.kube import KubeError
from pytest_eksid.profile import (
    DISCOVERING,
    LoadedProfile,
    Profile,
    Workload,
    role_arn_parts,
)

SELECTOR_LABEL = "app.kubernetes.io/name"  # the profile's default selector: app.kubernetes.io/name=<name>
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", re.ASCII)
MAX_COMMENT = 400  # characters of one comment line
# The input's sections copied as they are, in this order; workloads are the discovered ones.
COPIED = ("cluster", "probe", "ignore", "deployers")

Path_ = tuple[str | int, ...]


class DiscoveryError(Exception):
    """Discovery cannot write a profile; the message says why."""


class KubeReads(Protocol):
    def all_service_accounts(self) -> list[dict[str, Any]]: ...

    def workloads(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...


class AwsReads(Protocol):
    def all_associations(self, cluster: str) -> list[dict[str, Any]]: ...

    def role_policies(self, name: str) -> dict[str, dict[str, Any]]: ...


@dataclass
class Discovered:
    """The generated profile as data, and the comments to write above its parts (path -> lines)."""

    data: dict[str, Any]
    comments: dict[Path_, list[str]] = field(default_factory=dict)

    def comment(self, path: Path_, text: str) -> None:
        self.comments.setdefault(path, []).append(text)


def comment_text(text: str) -> str:
    """One comment line: printable ASCII only (everything else escaped, so no value breaks the line), bounded."""
    out = "".join(c if " " <= c <= "~" else _code(c) for c in text)
    return out if len(out) <= MAX_COMMENT else out[: MAX_COMMENT - 3] + "..."


def _code(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


@dataclass(frozen=True)
class Controller:
    """A Deployment or StatefulSet: its name and how its pods are selected. Nothing else of it is kept."""

    kind: str
    name: str
    match_labels: dict[str, str]
    template_labels: dict[str, str]
    service_account: str


def _map(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def controllers(objects: Iterable[Mapping[str, Any]]) -> list[Controller]:
    """The controllers' names, selectors and ServiceAccounts (nothing else of their templates is read)."""
    out: list[Controller] = []
    for obj in objects:
        spec = _map(obj, "spec")
        selector, template = _map(spec, "selector"), _map(spec, "template")
        pod_spec = _map(template, "spec")
        sa = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default"
        out.append(
            Controller(
                str(obj.get("kind") or ""),
                str(_meta(obj).get("name") or ""),
                _str_map(selector.get("matchLabels")),
                _str_map(_meta(template).get("labels")),
                str(sa),
            )
        )
    return out


def _selector(users: Sequence[Controller]) -> tuple[str | None, str]:
    """The selector for the workload's controllers (matchLabels, else the template's labels, common to all) and
    a note; None: the default (app.kubernetes.io/name=<name>)."""
    if not users:
        return None, "no Deployment or StatefulSet runs as this ServiceAccount now: the selector is the default"
    for attr in ("match_labels", "template_labels"):
        common = dict(getattr(users[0], attr))
        for c in users[1:]:
            common = {k: v for k, v in common.items() if getattr(c, attr).get(k) == v}
        text = command_labels(common, "") if common else ""
        if text:
            return text, ""
    return None, "the controllers' labels have no usable selector in common: the selector is the default, review it"


def _name_for(sa: str, users: Sequence[Controller], taken: set[str], namespace: str) -> str:
    names = [c.name for c in users]
    candidates = [names[0]] if len(set(names)) == 1 else []
    candidates += [sa, f"{sa}-{namespace}"]
    for name in candidates:
        if len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) and name not in taken:
            return name
    n = 2
    while f"{sa}-{namespace}-{n}" in taken:
        n += 1
    return f"{sa}-{namespace}-{n}"


@dataclass
class _Binding:
    namespace: str
    service_account: str
    irsa: Identity | None = None
    association: Identity | None = None

    @property
    def main(self) -> Identity:
        found = self.association or self.irsa
        assert found is not None
        return found


def bindings(identities: Iterable[Identity]) -> list[_Binding]:
    """One per ServiceAccount, its IRSA annotation and association together (sorted by namespace, name)."""
    out: dict[tuple[str, str], _Binding] = {}
    for i in identities:
        b = out.setdefault((i.namespace, i.service_account), _Binding(i.namespace, i.service_account))
        if i.mechanism == "irsa":
            b.irsa = i
        elif i.mechanism == "pod-identity" and b.association is None:
            b.association = i
    return [out[k] for k in sorted(out)]


def discover(loaded: LoadedProfile, kube: KubeReads, aws: AwsReads) -> Discovered:
    """Read the cluster and build the starter profile (not yet written)."""
    profile = loaded.profile
    cluster = profile.cluster
    service_accounts = kube.all_service_accounts()
    owners = {
        (str(_meta(sa).get("namespace")), str(_meta(sa).get("name"))): str(labels.get(cluster.owner_label))
        for sa in service_accounts
        if isinstance(labels := _meta(sa).get("labels"), Mapping) and isinstance(labels.get(cluster.owner_label), str)
    }
    identities = [
        *from_service_accounts(service_accounts, cluster.owner_label),
        *from_associations(aws.all_associations(cluster.name), owners),
    ]
    ignored = {
        (i.namespace, i.service_account, i.mechanism): rule for i, rule in classify(_bare(profile), identities).ignored
    }
    document = profile_yaml.read(loaded.path).data
    raw: Mapping[str, Any] = document if isinstance(document, Mapping) else {}
    data: dict[str, Any] = {k: raw[k] for k in COPIED if k in raw}
    out = Discovered(data)
    data["workloads"] = []
    out.comment(
        ("cluster",),
        f"Written by pytest-eksid --eksid-discover from cluster {cluster.name} (input: {loaded.path.name}). "
        "Review every entry: allow is what the roles grant today, deny what they must not (derived), "
        "each with a comment saying why.",
    )
    per_namespace: dict[str, list[Controller]] = {}
    unreadable: dict[str, str] = {}
    taken: set[str] = set()
    for b in bindings(identities):
        rule = ignored.get((b.namespace, b.service_account, b.main.mechanism))
        if rule is not None:
            out.comment(("workloads",), f"left out {b.namespace}/{b.service_account}: ignored ({rule.reason})")
            continue
        if b.namespace not in per_namespace:
            per_namespace[b.namespace] = _controllers_of(kube, b.namespace, unreadable)
        users = [c for c in per_namespace[b.namespace] if c.service_account == b.service_account]
        _workload(out, loaded, b, users, taken, aws)
    for namespace, why in unreadable.items():
        out.comment(
            ("workloads",),
            f"could not list Deployments/StatefulSets in {namespace} ({why}): selectors there are the default",
        )
    for key, value in raw.items():
        if key not in (*COPIED, "workloads"):
            data[key] = value  # a provider's own section (the sandbox's), as the user wrote it
    return out


def _controllers_of(kube: KubeReads, namespace: str, unreadable: dict[str, str]) -> list[Controller]:
    """The namespace's controllers; a namespace the runner may not read (its RBAC is granted per namespace) is
    noted, not fatal."""
    if not _ok_name(namespace):
        return []
    try:
        return controllers(kube.workloads(namespace, ""))
    except KubeError as exc:
        if exc.status not in (401, 403):
            raise
        unreadable[namespace] = f"{exc.status} {exc.reason or 'Forbidden'}"
        return []


def _bare(profile: Profile) -> Profile:
    """The input without its workloads: discovery declares what the cluster binds, whatever the input said."""
    return profile.model_copy(update={"workloads": []})


def _ok_name(name: str) -> bool:
    return len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None


def _workload(
    out: Discovered,
    loaded: LoadedProfile,
    b: _Binding,
    users: Sequence[Controller],
    taken: set[str],
    aws: AwsReads,
) -> None:
    profile = loaded.profile
    main = b.main
    name = _name_for(b.service_account, users, taken, b.namespace)
    entry: dict[str, Any] = {
        "name": name,
        "namespace": b.namespace,
        "serviceAccount": b.service_account,
        "mechanism": main.mechanism,
        "roleArn": main.role_arn,
    }
    notes = [f"found: {main.source}" + (f", created {main.created}" if main.created else "")]
    if main.target_role_arn:
        entry["targetRoleArn"] = main.target_role_arn
    if main.owner and main.owner.isprintable():
        entry["owner"] = main.owner
    elif main.owner:  # a line break or a control character: no profile value, only an escaped comment
        notes.append(f"the owner label's value is not printable text, left out: {main.owner}")
    else:
        notes.append(f"no owner label ({profile.cluster.owner_label}) on the ServiceAccount: add one, then owner:")
    selector, why = _selector(users)
    if selector is not None and selector != f"{SELECTOR_LABEL}={name}":
        entry["selector"] = selector
    if why:
        notes.append(why)
    if b.irsa is not None and b.association is not None:
        entry["migration"] = True
        notes.append(
            "both an IRSA annotation and a Pod Identity association: the association wins (the webhook injects only "
            "its credentials); migration: true until the annotation is removed"
        )
    ident = (b.namespace, b.service_account)
    try:
        Workload.model_validate(entry, context={DISCOVERING: True})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        out.comment(
            ("workloads",),
            f"left out {ident[0]}/{ident[1]} -> {main.role_arn}: {'.'.join(map(str, first['loc']))}: {first['msg']}",
        )
        return
    if main.mechanism == "pod-identity" and role_arn_parts(main.role_arn)[0] != profile.cluster.account_id:
        out.comment(("workloads",), f"left out {ident[0]}/{ident[1]}: its association's role is in another account")
        return
    final = main.target_role_arn or main.role_arn
    try:
        policies = aws.role_policies(role_arn_parts(final)[1])
    except AwsError as exc:  # a role the runner cannot read (another account's): said in the file
        notes.append(f"could not read the role's permission policies ({exc}): write allow and deny by hand")
        policies = {}
    contract = derive(policies, region=profile.cluster.region, account=role_arn_parts(final)[0])
    index = len(out.data["workloads"])
    at: Path_ = ("workloads", index)
    for kind, entries in (("allow", contract.allow), ("deny", contract.deny)):
        if entries:
            entry[kind] = [e.as_profile() for e in entries]
            for j, e in enumerate(entries):
                out.comment((*at, kind, j), e.why)
    try:
        Workload.model_validate(entry)
    except ValidationError as exc:  # an entry the catalogue accepts always validates; kept safe regardless
        first = exc.errors(include_url=False)[0]
        notes.append(f"derived entries dropped: {'.'.join(map(str, first['loc']))}: {first['msg']}")
        entry.pop("allow", None)
        entry.pop("deny", None)
    for note in [*notes, *contract.notes]:
        out.comment(at, note)
    taken.add(name)
    out.data["workloads"].append(entry)


class _Dumper(yaml.SafeDumper):
    """No anchors or aliases (profiles may not use them), and lists indented under their key."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def render(discovered: Discovered) -> str:
    """The profile as YAML: every value through PyYAML's emitter; then each comment on a line of its own above
    the part it is about, placed where the parser says that part starts (never inside a value)."""
    text = yaml.dump(discovered.data, Dumper=_Dumper, sort_keys=False, allow_unicode=False, width=4096)
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    starts = _starts(root) if root is not None else {}
    lines = text.split("\n")
    inserts: dict[int, list[str]] = {}
    for path, comments in discovered.comments.items():
        at = starts.get(path)
        if at is None:
            continue
        indent = len(lines[at]) - len(lines[at].lstrip(" "))
        inserts.setdefault(at, []).extend(" " * indent + "# " + comment_text(c) for c in comments)
    out: list[str] = []
    for n, line in enumerate(lines):
        out += inserts.get(n, [])
        out.append(line)
    return "\n".join(out)


def _starts(node: yaml.Node, path: Path_ = ()) -> dict[Path_, int]:
    """The 0-based line where each part starts: a mapping key's line, a list item's first line."""
    out: dict[Path_, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            out[sub] = key.start_mark.line
            out |= _starts(value, sub)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, i)
            out[sub] = item.start_mark.line
            out |= _starts(item, sub)
    return out


def write(discovered: Discovered, path: Path) -> None:
    """Write the profile (refusing to overwrite the input it came from is the caller's)."""
    path.write_text(render(discovered), encoding="utf-8")


__all__ = ["Discovered", "DiscoveryError", "discover", "render", "write"]
