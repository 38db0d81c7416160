"""Static AWS credentials: in Secrets and ConfigMaps, in pod templates, in the probe pod, on IAM users.

Workload identity is only proven when nothing static can win over it: botocore's chain
tries environment keys and shared credential files before IRSA and Pod Identity. These
checks report OBJECT, KEY and VARIABLE NAMES only — never a value. Values are read (Secret
data is base64-decoded) solely to recognise an access key id or a credentials-file shape.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

from pytest_eksid.checks import Finding, command_iam_name, command_name, workload_label
from pytest_eksid.probe.result import EnvironmentResult, IdentityResult
from pytest_eksid.profile import Workload

# Key names that carry AWS credentials; use ``.search`` (a prefix or suffix is allowed, e.g.
# BACKUP_AWS_SECRET_ACCESS_KEY). Matches aws_access_key_id, AWS_SECRET_ACCESS_KEY,
# aws_session_token, AWS_SECURITY_TOKEN, accessKeyId, secretAccessKey, awsAccessKey,
# AWS_SECRET_KEY, access-key-id, ... Bare ``secret_key``/``access_key`` are NOT matched (Django's
# SECRET_KEY and many non-AWS settings use them); their values are still checked for key ids.
# A ``credentials`` key (or any key) is reported by its value: a credentials-file shape.
AWS_KEY_NAME_RE = re.compile(
    r"access[_.-]?key[_.-]?id"
    r"|secret[_.-]?access[_.-]?key"
    r"|aws[_.-]?(?:access|secret)[_.-]?key"
    r"|aws[_.-]?(?:session|security)[_.-]?token",
    re.IGNORECASE,
)
ACCESS_KEY_ID_RE = re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
# A line assigning a credential key in a file-like value: ~/.aws/credentials (``aws_secret_access_key =``),
# a dotenv (``export AWS_SECRET_ACCESS_KEY=``), YAML (``secretAccessKey: x``) or JSON (``"SecretAccessKey": "x"``).
_ASSIGNMENT_RE = re.compile(
    r"""(?:^|[\s{,])(?:export\s+)?["']?([\w.-]*?(?:"""
    + AWS_KEY_NAME_RE.pattern
    + r"""))["']?[ \t]*[=:][ \t]*["']?[^\s"',}]""",
    re.IGNORECASE | re.MULTILINE,
)
_PROFILE_HEADER_RE = re.compile(r"^\s*\[(?:profile\s+)?[^\]\n]+\]\s*$", re.MULTILINE)
# A secret access key's shape: 40 characters of [A-Za-z0-9/+], standing alone. Alone this shape is far
# too common (SHA-1 digests, random tokens) to mean anything, so it is only reported next to an access
# key id (in the same object or the same value), and only with both upper- and lower-case letters:
# that leaves out hex digests (git commits, checksums), which a random 40-character key almost never is.
_SECRET_SHAPE_RE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def _secret_shaped(text: str) -> bool:
    """Whether ``text`` is, or (``search``) holds, a string shaped like a secret access key."""
    return any(
        re.search(r"[a-z]", m.group()) and re.search(r"[A-Z]", m.group()) for m in _SECRET_SHAPE_RE.finditer(text)
    )


# botocore providers that serve static (or file-held) keys, and what each means in a pod.
STATIC_METHODS = {
    "env": "static keys in the container's environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
    "shared-credentials-file": "a ~/.aws/credentials file (baked into the image or mounted from a Secret)",
    "config-file": "static keys in a ~/.aws/config file",
    "boto-config": "a legacy boto2 config file (/etc/boto.cfg or ~/.boto) with keys",
    "ec2-credentials-file": "a legacy EC2 credentials file (AWS_CREDENTIAL_FILE)",
}
STATIC_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

FM_SDK = "Failure Mode 4 — SDK Ignores Workload Identity"
INVARIANT = "Invariant 1 — No Static AWS Credentials in Workloads"
CHECK = "static_credentials"

# Where each workload kind keeps its pod spec.
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "?")


def _decode(value: Any) -> str:
    """A Secret/binaryData value as text; undecodable base64 is looked at as it is."""
    text = str(value or "")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text
    return raw.decode("utf-8", errors="replace")


def _value_reasons(value: str) -> list[str]:
    """Why a value looks like an AWS credential; names and prefixes only, never the value."""
    reasons: list[str] = []
    prefixes = sorted({m.group(1) for m in ACCESS_KEY_ID_RE.finditer(value)})
    for prefix in prefixes:
        kind = "long-lived IAM user key" if prefix == "AKIA" else "temporary session key"
        reasons.append(f"value contains an {prefix}… access key id ({kind})")
    assigned = sorted({m.group(1) for m in _ASSIGNMENT_RE.finditer(value)}, key=str.lower)
    if assigned:
        shape = "credentials file" if _PROFILE_HEADER_RE.search(value) else "file"
        reasons.append(f"value is a {shape} setting {', '.join(assigned)}")
    elif prefixes and _secret_shaped(value):
        reasons.append("value also holds a 40-character string shaped like a secret access key: a key pair")
    return reasons


def _key_reasons(key: str, value: str) -> list[str]:
    if not value.strip():
        return []  # an empty placeholder holds no credential
    reasons = [f"key name {key} is an AWS credential name"] if AWS_KEY_NAME_RE.search(key) else []
    return reasons + _value_reasons(value)


def scan_objects(kind: str, objects: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """One finding per Secret or ConfigMap holding AWS credentials, naming the offending keys.

    ``kind`` is "Secret" (``data`` base64, ``stringData`` plain) or "ConfigMap" (``data`` plain,
    ``binaryData`` base64). A key is reported when its name is an AWS credential name
    (:data:`AWS_KEY_NAME_RE`) or its value contains an AKIA/ASIA access key id or assigns a
    credential key (a ~/.aws/credentials ``[profile]``/``aws_secret_access_key =`` shape, a dotenv,
    YAML or JSON), whatever the key is called. Beside an access key id (in another key of the same
    object, or in the same value), a value shaped like a secret access key (40 characters of
    ``[A-Za-z0-9/+]``, both letter cases) is reported too: a key pair under any names (``aws.key``,
    ``aws.secret``; a ``creds.txt`` holding both). Without a key id that shape alone is not reported
    (digests and random tokens share it). Empty values are ignored. ``details`` carries ``kind``,
    ``namespace``, ``name`` and ``keys``: ``{(f.details["kind"], f.details["name"])}`` is the ``flagged`` set that
    :func:`scan_pod_templates` takes.
    """
    out: list[Finding] = []
    for obj in objects:
        ns, name = _meta(obj)
        values: dict[str, str] = {}
        if kind == "Secret":
            values.update({str(k): _decode(v) for k, v in (obj.get("data") or {}).items()})
            values.update({str(k): str(v or "") for k, v in (obj.get("stringData") or {}).items()})
        else:
            values.update({str(k): _decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            values.update({str(k): str(v or "") for k, v in (obj.get("data") or {}).items()})
        bad = {key: reasons for key, value in values.items() if (reasons := _key_reasons(key, value))}
        # A key pair under any names (aws.key / aws.secret): the secret is recognised by its shape, but
        # only beside an access key id in the same object (see _SECRET_SHAPE_RE for why).
        id_keys = [key for key, value in values.items() if ACCESS_KEY_ID_RE.search(value)]
        for key, value in values.items():
            if id_keys and key not in bad and _SECRET_SHAPE_RE.fullmatch(value.strip()) and _secret_shaped(value):
                bad[key] = [
                    "value is shaped like a secret access key (40 characters), beside the access key id in "
                    + ", ".join(id_keys)
                ]
        if not bad:
            continue
        if kind == "Secret":
            nxt = (f"kubectl -n {command_name(ns, '<namespace>')} describe secret {command_name(name, '<secret>')}",)
            likely = (
                f"{INVARIANT}: static keys were stored for an app; if a pod loads them (envFrom, env, a mounted "
                f"~/.aws/credentials) they win over Pod Identity and IRSA ({FM_SDK})"
            )
        else:
            nxt = (
                f"kubectl -n {command_name(ns, '<namespace>')} get configmap {command_name(name, '<configmap>')} "
                "-o go-template="
                "'{{range $k, $v := .data}}{{$k}}{{\"\\n\"}}{{end}}'",
            )
            likely = (
                f"{INVARIANT}: credentials in a ConfigMap are readable by anyone who may read ConfigMaps in "
                f"{ns}; if a pod loads them they win over Pod Identity and IRSA ({FM_SDK})"
            )
        out.append(
            Finding(
                CHECK,
                f"{kind} {ns}/{name} holds AWS credentials in key{'s' if len(bad) > 1 else ''} {', '.join(bad)}",
                f"no AWS credentials in {kind}s: workloads get temporary credentials from Pod Identity or IRSA",
                "; ".join(f"{key}: {', '.join(reasons)}" for key, reasons in bad.items()),
                likely,
                nxt,
                {"kind": kind, "namespace": ns, "name": name, "keys": ", ".join(bad)},
            )
        )
    return out


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    path = _POD_SPEC_PATHS.get(str(obj.get("kind")))
    node: Any = obj
    for part in path or ():
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if path and isinstance(node, Mapping) else None


def _is_flagged(flagged: AbstractSet[tuple[str, str]], kind: str, ns: str, name: str) -> bool:
    return (kind, name) in flagged or (kind, f"{ns}/{name}") in flagged


def _env_problems(
    container: Mapping[str, Any], ns: str, flagged: AbstractSet[tuple[str, str]]
) -> tuple[list[str], bool]:
    """(problems, any literal credential) of one container's env and envFrom."""
    problems: list[str] = []
    literal = False
    for env in container.get("env") or []:
        var = str(env.get("name") or "?")
        if "value" in env and str(env.get("value") or "").strip():
            reasons = [f"{var} is an AWS credential name"] if AWS_KEY_NAME_RE.search(var) else []
            reasons += [f"{var}: {r}" for r in _value_reasons(str(env["value"]))]
            if reasons:
                literal = True
                problems.append(f"{var} set to a literal value in the manifest ({'; '.join(reasons)})")
            continue
        source = env.get("valueFrom") or {}
        for ref_kind, ref_field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            ref = source.get(ref_field)
            if not isinstance(ref, Mapping):
                continue
            ref_name, ref_key = str(ref.get("name") or "?"), str(ref.get("key") or "?")
            if AWS_KEY_NAME_RE.search(var) or AWS_KEY_NAME_RE.search(ref_key):
                problems.append(f"{var} from {ref_kind} {ref_name} key {ref_key}")
    for src in container.get("envFrom") or []:
        for ref_kind, ref_field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = src.get(ref_field)
            if isinstance(ref, Mapping) and _is_flagged(flagged, ref_kind, ns, str(ref.get("name") or "")):
                problems.append(f"envFrom {ref_kind} {ref.get('name')}, which holds AWS credentials")
    return problems, literal


def _volume_sources(spec: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Volume name -> the (kind, name) Secrets/ConfigMaps it projects."""
    out: dict[str, list[tuple[str, str]]] = {}
    for vol in spec.get("volumes") or []:
        refs: list[tuple[str, str]] = []
        if isinstance(vol.get("secret"), Mapping):
            refs.append(("Secret", str(vol["secret"].get("secretName") or "")))
        if isinstance(vol.get("configMap"), Mapping):
            refs.append(("ConfigMap", str(vol["configMap"].get("name") or "")))
        for source in (vol.get("projected") or {}).get("sources") or []:
            if isinstance(source.get("secret"), Mapping):
                refs.append(("Secret", str(source["secret"].get("name") or "")))
            if isinstance(source.get("configMap"), Mapping):
                refs.append(("ConfigMap", str(source["configMap"].get("name") or "")))
        out[str(vol.get("name"))] = refs
    return out


def _env_names_command(kind: str, ns: str, name: str) -> str:
    prefix = {"Pod": "", "CronJob": ".spec.jobTemplate.spec.template"}.get(kind, ".spec.template")
    return (
        f"kubectl -n {command_name(ns, '<namespace>')} get {command_name(kind.lower(), '<kind>')} "
        f"{command_name(name, '<name>')} -o jsonpath="
        f"'{{range {prefix}.spec.containers[*]}}{{.name}}: {{.env[*].name}}{{\"\\n\"}}{{end}}'"
    )


def scan_pod_templates(
    objects: Iterable[Mapping[str, Any]],
    *,
    flagged: AbstractSet[tuple[str, str]] = frozenset(),
    flagged_by: str | None = None,
) -> list[Finding]:
    """One finding per workload object whose containers get AWS credentials statically.

    Objects are Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs (other
    kinds are skipped). Containers and initContainers are looked at: an ``env`` entry whose name
    is an AWS credential name, or whose literal value contains an access key id or credential
    assignment (a literal value is *critical*: the key sits in the manifest and its Git history);
    ``valueFrom`` a Secret/ConfigMap key when the variable or key name is a credential name;
    ``envFrom`` and volume mounts of an object in ``flagged`` — the ``(kind, name)`` pairs that
    :func:`scan_objects` reported (``(kind, "namespace/name")`` is accepted too, for callers that
    scan several namespaces at once); ``flagged_by`` names the test that reports those objects themselves
    (added to the next steps where the finding rests on them). Findings carry names only.
    """
    out: list[Finding] = []
    for obj in objects:
        spec = _pod_spec(obj)
        if spec is None:
            continue
        kind = str(obj.get("kind"))
        ns, name = _meta(obj)
        volumes = _volume_sources(spec)
        problems: list[str] = []
        critical = False
        uses_flagged = False
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            cname = str(container.get("name") or "?")
            found, literal = _env_problems(container, ns, flagged)
            critical = critical or literal
            uses_flagged = uses_flagged or any(p.startswith("envFrom ") for p in found)
            for mount in container.get("volumeMounts") or []:
                for ref_kind, ref_name in volumes.get(str(mount.get("name")), []):
                    if _is_flagged(flagged, ref_kind, ns, ref_name):
                        uses_flagged = True
                        found.append(
                            f"mounts {ref_kind} {ref_name} (holds AWS credentials) at {mount.get('mountPath')}"
                        )
            problems += [f"container {cname}: {p}" for p in found]
        if not problems:
            continue
        severity = "critical" if critical else "high"
        out.append(
            Finding(
                CHECK,
                f"{kind} {ns}/{name} gives its containers static AWS credentials"
                + (" as literal values in the manifest" if critical else ""),
                "no AWS credentials in pod templates: the SDK's default chain finds Pod Identity or IRSA",
                "; ".join(problems),
                f"{FM_SDK}: environment keys and shared credential files come before IRSA and Pod Identity in "
                "the SDK chain, so the pod runs as whoever owns these keys; "
                + (
                    "a literal key also sits in the manifest, its Git history and every rendered copy"
                    if critical
                    else f"leftovers of a migration to workload identity ({INVARIANT})"
                ),
                (_env_names_command(kind, ns, name), *((flagged_by,) if flagged_by and uses_flagged else ())),
                {"severity": severity},
            )
        )
    return out


def _pods_env_command(w: Workload) -> str:
    return (
        f"kubectl -n {w.namespace} get pods -o jsonpath='{{range .items[?(@.spec.serviceAccountName==\""
        f'{w.service_account}")]}}{{.metadata.name}}: {{.spec.containers[*].env[*].name}} '
        f'{{.spec.volumes[*].secret.secretName}}{{"\\n"}}{{end}}\''
    )


def _key_prefix(shown: Any) -> str | None:
    """AKIA/ASIA from the probe's ``"set, prefix AKIA"``; never more of the value."""
    m = re.search(r"prefix (AKIA|ASIA)\b", str(shown))
    return m.group(1) if m else None


def probe_findings(w: Workload, environment: EnvironmentResult, identity: IdentityResult) -> list[Finding]:
    """Static credentials seen from inside the probe pod, running as the workload's ServiceAccount.

    ``environment`` is the probe's environment audit (``aws_variables``, ``aws_files``),
    ``identity`` its credential resolution (``method``, ``caller``, ``access_key_prefix``).
    Reported: credential variables in the environment, a ~/.aws credentials or config file,
    a static provider serving the credentials, and a long-lived (AKIA) access key in use.
    """
    out: list[Finding] = []
    where = workload_label(w)
    method = str(identity.get("method") or "")
    env_cmd = _pods_env_command(w)
    variables: Mapping[str, Any] = environment.get("aws_variables") or {}
    present = [v for v in variables if v in STATIC_VARIABLES or AWS_KEY_NAME_RE.search(v)]
    if present:
        prefix = _key_prefix(variables.get("AWS_ACCESS_KEY_ID"))
        kind = {"AKIA": ", key id prefix AKIA (a long-lived IAM user key)", "ASIA": ", key id prefix ASIA"}
        out.append(
            Finding(
                CHECK,
                f"{where}: static AWS credentials in the pod's environment: {', '.join(present)}",
                "no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment: credentials come from "
                + ("Pod Identity" if w.mechanism == "pod-identity" else "IRSA"),
                f"set: {', '.join(present)}{kind.get(prefix or '', '')}",
                f"{FM_SDK}: environment keys are the first provider in the SDK chain and win over "
                f"{w.mechanism}; they come from the pod template (env/envFrom of a Secret) or the image",
                (env_cmd,),
            )
        )
    files: Mapping[str, Any] = environment.get("aws_files") or {}
    found = {label: str(f.get("path")) for label, f in files.items() if isinstance(f, Mapping) and f.get("present")}
    if found:
        used = method in ("shared-credentials-file", "config-file")
        if used:
            likely = f"{FM_SDK}: the SDK took its credentials from this file, not from {w.mechanism}"
        elif w.mechanism == "pod-identity":
            likely = (
                "shared files come before the Pod Identity provider in the SDK chain: a [default] profile with "
                f"keys in them wins over {w.mechanism} ({FM_SDK})"
            )
        else:
            likely = (
                "IRSA comes before the shared files in the SDK chain, so they are unused today; they win as soon "
                f"as the IRSA variables are missing ({FM_SDK}) and any keys in them leak with the image"
            )
        out.append(
            Finding(
                CHECK,
                f"{where}: AWS shared files present in the pod: {', '.join(f'{k} ({v})' for k, v in found.items())}",
                "no ~/.aws/credentials or ~/.aws/config in the image or mounted into the pod",
                ", ".join(f"{label} file at {path}" for label, path in found.items()),
                likely,
                (env_cmd,),
            )
        )
    if method in STATIC_METHODS:
        expected = "container-role" if w.mechanism == "pod-identity" else "assume-role-with-web-identity"
        out.append(
            Finding(
                CHECK,
                f"{where}: credentials come from a static source ({method})",
                f"{expected} ({w.mechanism})",
                f"{method} — {STATIC_METHODS[method]}",
                f"{FM_SDK}: a static provider earlier in the chain answered before {w.mechanism} was asked",
                (env_cmd,),
            )
        )
    if identity.get("access_key_prefix") == "AKIA":
        caller: Mapping[str, Any] = identity.get("caller") or {}
        arn = str(caller.get("arn") or "")
        user = arn.split(":user/", 1)[1].rsplit("/", 1)[-1] if ":user/" in arn else None
        nxt = (f"aws iam list-access-keys --user-name {command_iam_name(user, '<user>')}",) if user else (env_cmd,)
        out.append(
            Finding(
                CHECK,
                f"{where}: the pod calls AWS with a long-lived access key (AKIA…)",
                "temporary role-session credentials (ASIA…) from " + w.mechanism,
                f"access key id prefix AKIA, caller {arn or 'unknown'}",
                "IAM user keys are in use (env, a credentials file or the image): they never expire and are not "
                f"tied to the ServiceAccount ({INVARIANT})",
                nxt,
            )
        )
    return out


def _mask(key_id: str) -> str:
    return f"{key_id[:4]}…{key_id[-4:]}" if len(key_id) > 8 else "…"


def _created(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def legacy_user_findings(
    user: str, access_keys: Iterable[Mapping[str, Any]], *, now: datetime | None = None
) -> list[Finding]:
    """One finding per Active access key of the IAM user a workload used before workload identity.

    ``access_keys`` are ``iam.list_access_keys()["AccessKeyMetadata"]`` items. The access key id
    is not a secret (AWS prints it in CloudTrail), but it still lets anyone look up the account
    (``sts get-access-key-info``), so summary and "seen" show it masked (``AKIA…WXYZ``); the full
    id appears only in the ``next`` commands, which cannot work without it. ``CreateDate`` (a
    datetime or an ISO 8601 string) gives the age in days against ``now`` (default: the current
    UTC time).
    """
    when = now or datetime.now(UTC)
    out: list[Finding] = []
    for key in access_keys:
        if key.get("Status") != "Active":
            continue
        key_id = str(key.get("AccessKeyId") or "")
        created = _created(key.get("CreateDate"))
        age = f", created {created.date().isoformat()} ({(when - created).days} days ago)" if created else ""
        out.append(
            Finding(
                CHECK,
                f"IAM user {user} still has an active access key {_mask(key_id)}",
                f"no active access keys on {user}: the migration to workload identity is done only when "
                "the static keys are revoked",
                f"access key {_mask(key_id)} Active{age}",
                "the old static keys were left alive after the workload moved to Pod Identity or IRSA; anyone "
                f"holding a copy still acts as {user} ({INVARIANT})",
                (
                    f"aws iam get-access-key-last-used --access-key-id {command_iam_name(key_id, '<key-id>')}",
                    f"aws iam update-access-key --user-name {command_iam_name(user, '<user>')} "
                    f"--access-key-id {command_iam_name(key_id, '<key-id>')} --status Inactive",
                ),
                {"key": _mask(key_id)},
            )
        )
    return out
