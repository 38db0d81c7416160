"""The probe's result line, as types: what ``program.py`` prints and what the checks read.

Standard library ``typing`` only, like the program itself: ``program.py`` names these types for
the type checker alone (under ``TYPE_CHECKING``), so the source shipped into the probe pod stays
one self-contained file; its ``RESULT_VERSION`` is this shape's version, and the runner refuses a
result of another version (pytest_eksid.probe.pod.parse_result). Every outcome is a ``Literal``.
A step's keys are optional (``total=False``): a step that raised holds only ``error`` (the other
steps still report), and a node-group probe runs only its IMDS step.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# One planned AWS call, classified (program.classify): the call succeeded or was authorized then refused
# on purpose; denied by a policy; the answer cannot tell; or it failed for another reason.
ActionOutcome = Literal["allowed", "denied", "inconclusive", "error"]
# One IMDS version as the pod saw it: out of reach (no answer, or refused), reachable without a role's
# credentials, or a role's credentials handed out.
ImdsOutcome = Literal["blocked-timeout", "blocked-refused", "no-credentials", "exposed"]
# The Pod Identity agent's answer to the pod's token (program._http's outcomes, or no token to send).
AgentOutcome = Literal["credentials", "ok", "http-error", "timeout", "refused", "error", "no-token"]


class ErrorInfo(TypedDict):
    """A secret-free description of an exception (program._error)."""

    type: str
    code: str
    message: str | None
    http_status: int | None
    agent_status: NotRequired[int]  # the container provider reported the agent's refusal with this status
    agent_code: NotRequired[str | None]  # and this EKS Auth error code, when the agent's body had one


class Caller(TypedDict):
    arn: str
    account: str
    user_id: NotRequired[str]


class IdentityResult(TypedDict, total=False):
    """The default credential chain's answer and the caller STS named (program.resolve_identity)."""

    method: str | None  # botocore's provider name: container-role, assume-role-with-web-identity, env, ...
    caller: Caller | None
    error: ErrorInfo | None
    access_key_prefix: str  # AKIA (a user's key) or ASIA (a session), never more
    proof: str  # the presigned, nonce-bound GetCallerIdentity; the runner removes it
    proof_failure: ErrorInfo
    # Set by the runner (pytest_eksid.probe.pod): the caller STS confirmed, or why the claim is not proven.
    proven: bool
    claimed_caller: Caller
    proof_error: str


class ActionResult(TypedDict):
    """One allow/deny entry, as the probe measured it (program.run_actions)."""

    id: str
    expect: str
    action: str
    form: NotRequired[str | None]
    form_note: NotRequired[str | None]
    outcome: ActionOutcome
    why: str
    policy_type: NotRequired[str]
    explicit: NotRequired[bool]
    code: NotRequired[str | None]
    message: NotRequired[str | None]
    http_status: NotRequired[int | None]
    seconds: NotRequired[float]


class Classification(TypedDict):
    """What program.classify adds to an action's entry."""

    outcome: ActionOutcome
    why: str
    policy_type: NotRequired[str]
    explicit: NotRequired[bool]


class ImdsVersionResult(TypedDict):
    outcome: ImdsOutcome
    role: NotRequired[str]  # the node role's NAME, never its credentials
    http_status: NotRequired[int | None]
    detail: NotRequired[str]


class ImdsResult(TypedDict, total=False):
    endpoint: str
    v1: ImdsVersionResult
    v2: ImdsVersionResult
    error: ErrorInfo


class AgentResult(TypedDict, total=False):
    configured: bool
    uri: str
    outcome: AgentOutcome
    http_status: int | None
    error_code: str | None  # EKS Auth's code parsed from a refusal's body
    detail: str
    error: ErrorInfo


class TokenFile(TypedDict):
    path: str
    claims: NotRequired[dict[str, Any]]
    error: NotRequired[str]


class AwsFile(TypedDict):
    path: str
    present: bool


class EnvironmentResult(TypedDict, total=False):
    """The pod's AWS_* variables (values only where not secret), token files' claims, ~/.aws files."""

    aws_variables: dict[str, str]
    token_files: dict[str, TokenFile]
    aws_files: dict[str, AwsFile]
    error: ErrorInfo


class ProbeResult(TypedDict):
    """The one line a probe prints (after ``EKSID-RESULT ``), as JSON."""

    version: int
    workload: str | None
    python: str
    botocore: str | None
    environment: NotRequired[EnvironmentResult]
    imds: NotRequired[ImdsResult]
    agent: NotRequired[AgentResult]
    identity: NotRequired[IdentityResult]
    actions: NotRequired[list[ActionResult]]  # {"error": ...} when the step raised: read as no actions
    seconds: NotRequired[dict[str, float]]
