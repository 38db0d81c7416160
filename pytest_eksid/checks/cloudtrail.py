"""CloudTrail shows the expected identity: the previous run's probe session, as the account's event history has it.

Pure: the recorded session (:class:`pytest_eksid.cloudtrail.Recorded`) and the events LookupEvents returned
in, a Finding or an inconclusive reason out. Event shapes (AWS CloudTrail userIdentity reference,
https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html):

- IRSA: ``AssumeRoleWithWebIdentity`` from ``sts.amazonaws.com``; ``userIdentity.type`` ``WebIdentityUser``,
  ``userIdentity.userName`` the token's ``sub`` (``system:serviceaccount:<ns>:<sa>``);
  ``requestParameters.roleArn`` / ``roleSessionName``; ``responseElements.assumedRoleUser.arn``.
- Pod Identity: ``AssumeRole`` from ``sts.amazonaws.com`` with ``userIdentity.type`` ``AWSService`` invoked by
  ``pods.eks.amazonaws.com``; ``requestParameters.tags`` the session tags (``kubernetes-namespace``,
  ``kubernetes-service-account``, ``kubernetes-pod-name``, ...) unless the association disables them.
- The session's own calls: ``userIdentity.type`` ``AssumedRole`` with
  ``sessionContext.sessionIssuer.arn`` the role (only management events: S3 objects, DynamoDB items and SQS
  messages are data events, which LookupEvents never returns).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pytest_eksid.checks import Finding, shown, workload_label
from pytest_eksid.profile import Workload

# How long CloudTrail may take to show an event: AWS says events typically arrive within 5 minutes, and the
# event history is used here with a margin; a session younger than this and not found yet is inconclusive.
LAG = timedelta(minutes=15)
WINDOW_BEFORE = timedelta(minutes=10)  # the lookup window around the recorded probe time
WINDOW_AFTER = timedelta(hours=1)
ASSUMING = {"irsa": "AssumeRoleWithWebIdentity", "pod-identity": "AssumeRole"}


@dataclass(frozen=True)
class Recorded:
    """One workload's probe session as an earlier run recorded it (the state file's entry)."""

    run_id: str
    probed_at: datetime
    session_arn: str  # arn:aws:sts::<account>:assumed-role/<role>/<session>, as STS named the probe's caller
    pod: str | None
    namespace: str
    service_account: str
    mechanism: str

    @property
    def session_name(self) -> str:
        return self.session_arn.rsplit("/", 1)[-1]

    def window(self) -> tuple[datetime, datetime]:
        return self.probed_at - WINDOW_BEFORE, self.probed_at + WINDOW_AFTER


def lookup_command(region: str, key: str, value: str, start: datetime, end: datetime) -> str:
    """The AWS CLI command for one LookupEvents query, quoted for a shell."""
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (
        f"aws cloudtrail lookup-events --region {shlex.quote(region)} --lookup-attributes "
        f"{shlex.quote(f'AttributeKey={key},AttributeValue={value}')} "
        f"--start-time {start.strftime(fmt)} --end-time {end.strftime(fmt)}"
    )


def detail(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's CloudTrail record (LookupEvents returns it as a JSON string); {} when unreadable."""
    try:
        parsed = json.loads(str(event.get("CloudTrailEvent") or "{}"))
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tags(params: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in params.get("tags") or []:
        if isinstance(tag, Mapping):
            out[str(tag.get("key"))] = str(tag.get("value"))
    return out


def cloudtrail_identity(
    region: str,
    w: Workload,
    recorded: Recorded,
    assumed: Sequence[Mapping[str, Any]],
    calls: Sequence[Mapping[str, Any]],
    *,
    truncated: bool,
    now: datetime,
) -> tuple[Finding | None, str | None]:
    """(a finding, an inconclusive reason): the session's assumption event (looked up by the session's ARN as
    ResourceName) must name the expected role with the workload's ``sub`` or session tags, and its own calls
    (looked up by the session name as Username) must be of that role."""
    start, end = recorded.window()
    assume_query = lookup_command(region, "ResourceName", recorded.session_arn, start, end)
    calls_query = lookup_command(region, "Username", recorded.session_name, start, end)
    label = workload_label(w)
    expected_role = w.final_role_arn
    want_event = ASSUMING.get(w.mechanism, "AssumeRole")
    sub = f"system:serviceaccount:{w.namespace}:{w.service_account}"
    found = [detail(e) for e in assumed if detail(e).get("eventName") in set(ASSUMING.values())]
    mine = [d for d in found if _session_arn(d) == recorded.session_arn] or found
    if not mine:
        age = now - recorded.probed_at
        if age < LAG:
            return None, (
                f"{label}: no {want_event} event yet for the run {recorded.run_id}'s session "
                f"{shown(recorded.session_arn, 200)}; it is {int(age.total_seconds() // 60)} min old and CloudTrail "
                f"takes up to {int(LAG.total_seconds() // 60)} min: run again later, or look: {assume_query}"
            )
        more = " (more pages were left unread: the window holds many events)" if truncated else ""
        return Finding(
            "cloudtrail_identity",
            f"{label}: CloudTrail has no {want_event} event for the previous run's probe session",
            f"a {want_event} event for {shown(recorded.session_arn, 200)} with role {expected_role}",
            f"none in the event history between {start:%H:%M} and {end:%H:%M} UTC{more}",
            "the probe's STS call was logged in another region (a pod using the global STS endpoint is logged in "
            "us-east-1: look there with --region us-east-1), CloudTrail is not recording management events here, "
            "or the session came from elsewhere than this mechanism",
            (assume_query,),
            {"run id": recorded.run_id},
        ), None
    event = mine[0]
    params: Mapping[str, Any] = event.get("requestParameters") or {}
    ident: Mapping[str, Any] = event.get("userIdentity") or {}
    role = str(params.get("roleArn") or "")
    problems: list[str] = []
    likely: list[str] = []
    if event.get("eventName") != want_event:
        problems.append(f"{event.get('eventName')} instead of {want_event}")
        likely.append(f"the session came from another mechanism than {w.mechanism}")
    if role != expected_role:
        problems.append(f"role {shown(role, 200)}, not {expected_role}")
        likely.append("the binding (SA annotation or Pod Identity association) named another role at that run")
    if w.mechanism == "irsa" and event.get("eventName") == want_event:
        user = str(ident.get("userName") or "")
        if user != sub:
            problems.append(f"web identity {shown(user, 200)}, not {sub}")
            likely.append("another ServiceAccount's token assumed the role: its trust admits more than this SA")
    if w.mechanism == "pod-identity" and event.get("eventName") == want_event:
        tags = _tags(params)
        if tags:  # absent when the association disables session tags: nothing to compare then
            wanted = {"kubernetes-namespace": w.namespace, "kubernetes-service-account": w.service_account}
            if recorded.pod:
                wanted["kubernetes-pod-name"] = recorded.pod
            wrong = {k: v for k, v in wanted.items() if tags.get(k) != v}
            for key, value in sorted(wrong.items()):
                problems.append(f"session tag {key}={shown(tags.get(key, '(absent)'), 100)}, not {shown(value, 100)}")
            if wrong:
                likely.append("the association that answered is another namespace's or ServiceAccount's")
    for call in calls:
        identity = detail(call).get("userIdentity") or {}
        # The lookup is by session NAME, which is not unique: IRSA sessions are botocore-session-<epoch seconds>,
        # so probes started in the same second share it. Only this very session's calls count.
        if identity.get("arn") != recorded.session_arn:
            continue
        issuer = ((identity.get("sessionContext") or {}).get("sessionIssuer") or {}).get("arn")
        if issuer and issuer != expected_role:
            problems.append(f"{call.get('EventName')} made as role {shown(issuer, 200)}")
            likely.append("the session's calls were made as another role")
            break
    if not problems:
        return None, None
    return Finding(
        "cloudtrail_identity",
        f"{label}: CloudTrail shows the previous run's probe session as another identity",
        f"{want_event} of {expected_role}"
        + (f" by {sub}" if w.mechanism == "irsa" else f" tagged {w.namespace}/{w.service_account}"),
        "; ".join(problems),
        "; ".join(dict.fromkeys(likely)),
        (assume_query, calls_query),
        {"run id": recorded.run_id, "session": shown(recorded.session_arn, 200)},
    ), None


def _session_arn(event: Mapping[str, Any]) -> str:
    return str(((event.get("responseElements") or {}).get("assumedRoleUser") or {}).get("arn") or "")
