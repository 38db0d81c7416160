"""The sandbox's CloudTrail: the events its STS, EKS Auth and AWS answer, and ``LookupEvents`` over them.

moto 5.2.5's CloudTrail has trails but no ``LookupEvents``; this is the event history instead. Event
shapes follow AWS's CloudTrail userIdentity reference
(https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html:
``AssumedRole`` with ``sessionContext.sessionIssuer``; ``WebIdentityUser`` for
AssumeRoleWithWebIdentity, whose ``userName`` is the token's ``sub``; ``AWSService`` with ``invokedBy``
for a service acting for you, as EKS Pod Identity's AssumeRole), and the request and response
members of botocore's cloudtrail model (``botocore/data/cloudtrail/2013-11-01/service-2.json``:
``LookupAttributes`` of one item, ``StartTime``/``EndTime``, ``MaxResults`` 1-50, ``NextToken``; the
newest event first).

Two things are injected, so tests never wait: the recorder's ``clock`` and its ``lag`` (seconds before
an event can be looked up; CloudTrail takes minutes). ``EKSID_SANDBOX_CLOUDTRAIL`` names a JSON-lines
file the history is appended to and read back from, so a later sandbox (a second pytest run) looks up
an earlier run's events, as a real account keeps them; ``EKSID_SANDBOX_CLOUDTRAIL_LAG`` sets the lag.
Simplifications: one region's history for the whole sandbox; the eks-auth event's caller (the node
role) is not modelled; with a target role only the final AssumeRole is recorded; data events (S3,
DynamoDB items, SQS messages) are not recorded, as event history does not show them.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

Clock = Callable[[], float]
FILE_ENV = "EKSID_SANDBOX_CLOUDTRAIL"
LAG_ENV = "EKSID_SANDBOX_CLOUDTRAIL_LAG"
ATTRIBUTE_KEYS = (
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
)
# Operations CloudTrail logs as data events, which LookupEvents never returns.
DATA_EVENTS = {
    "s3": None,  # every object-level call; the probe makes no bucket-level management call
    "dynamodb": {"GetItem", "PutItem", "DeleteItem", "UpdateItem", "Query", "Scan", "BatchGetItem", "BatchWriteItem"},
    "sqs": {"SendMessage", "ReceiveMessage", "DeleteMessage", "SendMessageBatch", "DeleteMessageBatch"},
}


def is_data_event(service: str, operation: str) -> bool:
    ops = DATA_EVENTS.get(service, set())
    return ops is None or operation in ops


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TrailError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Trail:
    """The account's event history: :meth:`record` appends, :meth:`lookup` answers LookupEvents."""

    def __init__(self, *, clock: Clock = time.time, lag: float | None = None, path: str | None = None) -> None:
        self.clock = clock
        self.lag = float(os.environ.get(LAG_ENV) or 0) if lag is None else lag
        self.path = os.environ.get(FILE_ENV) or None if path is None else path
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        if self.path and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as stored:
                self._events = [json.loads(line) for line in stored if line.strip()]

    # --- recording ----------------------------------------------------------------------------

    def record(
        self,
        *,
        event_name: str,
        event_source: str,
        user_identity: dict[str, Any],
        username: str | None,
        request_parameters: dict[str, Any] | None = None,
        response_elements: dict[str, Any] | None = None,
        resources: Sequence[tuple[str, str]] = (),
        access_key_id: str = "",
        read_only: bool = False,
        error_code: str | None = None,
        region: str = "us-east-1",
        additional: dict[str, Any] | None = None,
    ) -> None:
        now = self.clock()
        event_id = str(uuid.uuid4())
        detail: dict[str, Any] = {
            "eventVersion": "1.08",
            "userIdentity": user_identity,
            "eventTime": _iso(now),
            "eventSource": event_source,
            "eventName": event_name,
            "awsRegion": region,
            "sourceIPAddress": "127.0.0.1",
            "userAgent": "eksid-sandbox",
            "requestParameters": request_parameters,
            "responseElements": response_elements,
            "requestID": str(uuid.uuid4()),
            "eventID": event_id,
            "readOnly": read_only,
            "resources": [{"ARN": name, "type": kind} for kind, name in resources],
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": str(user_identity.get("accountId") or ""),
            "eventCategory": "Management",
        }
        if error_code:
            detail["errorCode"] = error_code
        if additional:
            detail["additionalEventData"] = additional
        event = {
            "EventId": event_id,
            "EventName": event_name,
            "ReadOnly": "true" if read_only else "false",
            "AccessKeyId": access_key_id,
            "EventTime": now,
            "EventSource": event_source,
            "Username": username,
            "Resources": [{"ResourceType": kind, "ResourceName": name} for kind, name in resources],
            "CloudTrailEvent": json.dumps(detail),
        }
        with self._lock:
            self._events.append(event)
            if self.path:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as out:
                    out.write(json.dumps(event) + "\n")

    # --- LookupEvents ---------------------------------------------------------------------------

    def lookup(self, request: dict[str, Any]) -> dict[str, Any]:
        """The LookupEvents answer for a request body (botocore's JSON); TrailError as CloudTrail refuses."""
        attributes = request.get("LookupAttributes") or []
        if len(attributes) > 1:
            raise TrailError("InvalidLookupAttributesException", "Only one lookup attribute is allowed.")
        attribute = attributes[0] if attributes else None
        if attribute is not None and attribute.get("AttributeKey") not in ATTRIBUTE_KEYS:
            raise TrailError(
                "InvalidLookupAttributesException", f"Invalid AttributeKey: {attribute.get('AttributeKey')}"
            )
        start = float(request["StartTime"]) if request.get("StartTime") is not None else None
        end = float(request["EndTime"]) if request.get("EndTime") is not None else None
        if start is not None and end is not None and start > end:
            raise TrailError("InvalidTimeRangeException", "Start time must not be after end time.")
        limit = int(request.get("MaxResults") or 50)
        if not 1 <= limit <= 50:
            raise TrailError("InvalidMaxResultsException", "MaxResults must be between 1 and 50.")
        offset = 0
        if request.get("NextToken"):
            try:
                offset = int(base64.b64decode(str(request["NextToken"])).decode())
            except ValueError:
                raise TrailError("InvalidNextTokenException", "Invalid NextToken.") from None
        visible_until = self.clock() - self.lag
        with self._lock:
            events = list(self._events)
        matched = [
            e
            for e in sorted(events, key=lambda e: float(e["EventTime"]), reverse=True)
            if float(e["EventTime"]) <= visible_until
            and (start is None or float(e["EventTime"]) >= start)
            and (end is None or float(e["EventTime"]) <= end)
            and (
                attribute is None
                or _matches(e, str(attribute.get("AttributeKey")), str(attribute.get("AttributeValue")))
            )
        ]
        page = matched[offset : offset + limit]
        answer: dict[str, Any] = {"Events": page}
        if offset + limit < len(matched):
            answer["NextToken"] = base64.b64encode(str(offset + limit).encode()).decode()
        return answer


def _matches(event: dict[str, Any], key: str, value: str) -> bool:
    if key == "ResourceType":
        return any(r.get("ResourceType") == value for r in event.get("Resources") or [])
    if key == "ResourceName":
        return any(r.get("ResourceName") == value for r in event.get("Resources") or [])
    return str(event.get(key) or "") == value


def assumed_role_identity(session: Any, role: Any, account: str) -> tuple[dict[str, Any], str]:
    """(``userIdentity``, the event's user name) for a call signed with a moto role session's keys."""
    arn = str(session.arn)
    role_id = str(getattr(role, "id", "") or "")
    identity = {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session.session_name}",
        "arn": arn,
        "accountId": account,
        "accessKeyId": str(session.access_key_id),
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": str(session.role_arn),
                "accountId": account,
                "userName": str(session.role_arn).rsplit("/", 1)[-1],
            },
            "attributes": {"mfaAuthenticated": "false"},  # creationDate: moto keeps no session start
        },
    }
    return identity, str(session.session_name)
