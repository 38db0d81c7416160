"""Every AWS call the runner makes (IAM, EKS, STS), over boto3, read-only.

The runner's credentials come from its own environment (profile, SSO, instance role, or the
sandbox's exported keys), never from a workload. Keeping the calls here is what lets the docs
list the runner's exact IAM permissions.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from pytest_eksid import botocore_data
from pytest_eksid.escape import printable
from pytest_eksid.settings import DEFAULT_API_TIMEOUT

# The IAM actions this module uses; docs/fleet.md's runner policy is derived from it.
ACTIONS = (
    "sts:GetCallerIdentity",
    "iam:GetAccountAuthorizationDetails",
    "iam:GetRole",
    "iam:ListRolePolicies",
    "iam:GetRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:ListOpenIDConnectProviders",
    "iam:GetOpenIDConnectProvider",
    "iam:ListAccessKeys",
    "iam:ListRoles",
    "eks:DescribeCluster",
    "eks:ListPodIdentityAssociations",
    "eks:DescribePodIdentityAssociation",
    "eks:DescribeAddon",
    "cloudtrail:LookupEvents",
)
# LookupEvents: 50 events a page, 2 requests/s per account and region (AWS's API reference); a query reads at most
# this many pages (botocore's standard retry mode backs off on ThrottlingException).
LOOKUP_MAX_PAGES = 4


class AwsError(Exception):
    """An AWS call that failed; the message names the call and AWS's own code."""


class IdentityNotProven(Exception):
    """A probe's proof of identity that STS did not confirm; the message says why (never the URL)."""


NONCE_HEADER = "x-eksid-nonce"  # as pytest_eksid/probe/program.py signs it
PROOF_BODY_LIMIT = 64 * 1024
_STS_XML = "{https://sts.amazonaws.com/doc/2011-06-15/}"


_REGION = re.compile(r"\A[a-z]{2}(-[a-z]+)+-\d\Z")


def proof_endpoints(endpoint: str, region: str) -> tuple[str, ...]:
    """The STS endpoints a proof may be signed for, all chosen by the runner: its own, and AWS's own STS
    for the profile's region, regional and (outside China) global, which an SDK signs for by default or
    with the legacy STS endpoint setting — a runner that reaches STS through a VPC endpoint's own
    hostname still accepts a pod's proof for AWS's standard one (private DNS keeps that name)."""
    if not _REGION.match(region):
        return (endpoint,)
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    aws = (f"https://sts.{region}.{suffix}",) + (() if region.startswith("cn-") else ("https://sts.amazonaws.com",))
    return (endpoint, *(e for e in aws if _origin(e) != _origin(endpoint)))


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _proof_query(url: str, endpoints: tuple[str, ...]) -> tuple[str, str]:
    """(the endpoint to send it to, the query string) of a presigned GetCallerIdentity whose URL is for
    one of ``endpoints``, which the runner chose itself.

    The URL comes from the probe's result, which a tenant may have forged: it is sent nowhere but to
    the runner's own STS endpoint, so that no forged result can choose who answers with an ARN."""
    try:
        got = urlsplit(url)
        match = [e for e in endpoints if _origin(e) == _origin(url)]
    except ValueError:
        raise IdentityNotProven("the proof is not a URL") from None
    if not match or got.username is not None or got.password is not None or got.fragment:
        raise IdentityNotProven(
            f"the proof is signed for another endpoint than this runner's STS endpoint {endpoints[0]}"
        )
    want = urlsplit(match[0])
    if (got.path or "/") != (want.path or "/"):
        raise IdentityNotProven("the proof is not a request to STS's root path")
    try:
        params = parse_qsl(got.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise IdentityNotProven("the proof's query string is malformed") from None
    names = [k for k, _ in params]
    values = dict(params)
    if len(names) != len(set(names)):
        raise IdentityNotProven("the proof repeats a query parameter")
    if values.get("Action") != "GetCallerIdentity" or values.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise IdentityNotProven("the proof is not a presigned sts:GetCallerIdentity")
    scope = values.get("X-Amz-Credential", "").split("/")
    if len(scope) != 5 or scope[3] != "sts":
        raise IdentityNotProven("the proof is not signed for STS")
    if NONCE_HEADER not in values.get("X-Amz-SignedHeaders", "").split(";"):
        raise IdentityNotProven(f"the proof does not sign the {NONCE_HEADER} header")
    return match[0], got.query


def _caller_from_xml(body: bytes) -> dict[str, str]:
    """Arn, Account and UserId of STS's GetCallerIdentityResponse. No DTD is accepted (so no entity
    expansion); the body is bounded before it is parsed."""
    from xml.etree import ElementTree

    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise IdentityNotProven("STS's answer is not a GetCallerIdentityResponse")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise IdentityNotProven("STS's answer is not XML") from None
    result = root.find(f"{_STS_XML}GetCallerIdentityResult")
    if root.tag != f"{_STS_XML}GetCallerIdentityResponse" or result is None:
        raise IdentityNotProven("STS's answer is not a GetCallerIdentityResponse")
    fields = {name: (result.findtext(f"{_STS_XML}{name}") or "").strip() for name in ("Arn", "Account", "UserId")}
    if not fields["Arn"] or not fields["Account"]:
        raise IdentityNotProven("STS's answer names no caller")
    return {"arn": fields["Arn"], "account": fields["Account"], "user_id": fields["UserId"]}


def _sts_error(body: bytes) -> str:
    from xml.etree import ElementTree

    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        return "no error code"
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "no error code"
    code = next((e.text for e in root.iter() if e.tag.rpartition("}")[2] == "Code"), None)
    # Only the code: a SignatureDoesNotMatch message may quote the canonical request, the token with it.
    return re.sub(r"[^A-Za-z0-9.]", "", code or "")[:64] or "no error code"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # STS does not redirect; a redirect is answered as the error it is


# Failures that no later call of the run can get past: they are reported once, then repeated at once.
_UNAVAILABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, NoCredentialsError)


# Attempts per AWS call (the first included), in botocore's "adaptive" mode: standard retries plus a client-side
# token bucket that slows this client's sending when the service throttles. IAM throttles with a token bucket
# per API shared by every caller of the account, console and CLI included, and its rate quotas cannot be raised
# (AWS Security Blog, "How to monitor and query IAM resources at scale - Part 2"; AWS re:Post
# knowledge-center/iam-sts-throttling-error: "Throttling: Rate exceeded", back off and retry). A report's fact
# is worth waiting for: 6 attempts back off at most 2+4+8+16+20 s (standard mode's cap is 20 s; half that on
# average, with jitter), well inside a probe pod's start and run, before the read is given up as an error.
MAX_ATTEMPTS = 6


@dataclass
class _Flight:
    """One fetch in progress: later callers of the same key wait for its result instead of fetching again."""

    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


def _doc(value: Any) -> dict[str, Any]:
    """IAM documents arrive URL-encoded JSON strings (or already parsed, depending on the SDK)."""
    if isinstance(value, dict):
        return value
    text = unquote(str(value))
    parsed = json.loads(text)
    return parsed if isinstance(parsed, dict) else {}


# The bulk read's page: GetAccountAuthorizationDetails answers up to MaxItems items (1 to 1,000, botocore's iam model
# maxItemsType) a request, and continues by Marker while IsTruncated (botocore's iam paginators-1.json).
IAM_BULK_PAGE = 1000
_ROLE_DETAIL = ("Arn", "AssumeRolePolicyDocument", "RolePolicyList", "AttachedManagedPolicies")


@dataclass(frozen=True)
class _AccountIam:
    """The account's IAM as GetAccountAuthorizationDetails (Filter Role, LocalManagedPolicy) gives it: each role
    (its RoleDetail: trust policy, inline policies, attached managed policies' ARNs) by name, and each customer
    managed policy's default version's document by ARN, as IAM sent them (parsed when a check asks: one odd
    document of a role no check reads must not cost the others their verdicts). AWS managed policies are not in
    it. Names match exactly, as moto's GetRole matches them: that IAM's GetRole would find a name given in
    another case is not documented (only that names are unique regardless of case), so a profile's role ARN in
    another case than the role's fails here rather than passes on a guess."""

    roles: Mapping[str, Mapping[str, Any]]
    policies: Mapping[str, Any]

    def find(self, name: str) -> Mapping[str, Any] | None:
        return self.roles.get(name)


@dataclass
class Aws:
    """Read-only AWS facts for one cluster, cached for the session."""

    region: str
    # How this cluster's AWS side is reached, as the standard variables would say it (credentials,
    # AWS_ENDPOINT_URL[_<SERVICE>]); empty: the process environment's default chain.
    env: Mapping[str, str | None] = field(default_factory=dict, repr=False)  # may hold keys: never printed
    profile_name: str | None = None  # an AWS named profile (cluster.awsProfile)
    timeout: float = DEFAULT_API_TIMEOUT
    # Read the account's roles and customer managed policies in one bulk read (GetAccountAuthorizationDetails)
    # instead of role by role; where that read fails (_account_iam), role by role after all, said once through ``say``.
    bulk_iam: bool = False
    say: Callable[[str], None] = field(default=lambda _message: None, repr=False)
    _unavailable: str | None = field(default=None, repr=False)
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _cache: dict[tuple[str, ...], Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _flights: dict[tuple[str, ...], _Flight] = field(default_factory=dict, repr=False)
    # AWS requests made, by "service:Operation" (one per call, retries not counted): the run's AWS cost.
    calls: Counter[str] = field(default_factory=Counter, repr=False)

    def _client(self, service: str) -> Any:
        with self._lock:
            if service in self._clients:
                return self._clients[service]
            if self._session is None:
                keys = {
                    "aws_access_key_id": self.env.get("AWS_ACCESS_KEY_ID"),
                    "aws_secret_access_key": self.env.get("AWS_SECRET_ACCESS_KEY"),
                    "aws_session_token": self.env.get("AWS_SESSION_TOKEN"),
                }
                # One data loader for every session of the process (botocore_data): a fleet run makes a session
                # per cluster, and each parsed botocore's endpoints and service models again.
                # The profile first: it may name its own data path (and an unknown AWS_PROFILE must not matter).
                core = botocore_data.shared(botocore.session.Session(profile=self.profile_name))
                self._session = boto3.Session(
                    botocore_session=core,
                    region_name=self.region,
                    profile_name=self.profile_name,
                    **{k: v for k, v in keys.items() if v},
                )
                botocore_data.deduplicate(core)
            endpoint = self.env.get(f"AWS_ENDPOINT_URL_{service.upper()}") or self.env.get("AWS_ENDPOINT_URL")
            client = self._session.client(
                service,
                config=Config(
                    retries={"max_attempts": MAX_ATTEMPTS, "mode": "adaptive"},
                    connect_timeout=self.timeout,
                    read_timeout=self.timeout,
                ),
                **({"endpoint_url": endpoint} if endpoint else {}),
            )
            client.meta.events.register("before-call", self._count_call)
            self._clients[service] = client
            return client

    def _count_call(self, model: Any = None, **_kwargs: Any) -> None:
        name = f"{model.service_model.service_name}:{model.name}" if model is not None else "other"
        with self._lock:
            self.calls[name] += 1

    def _cached(self, key: tuple[str, ...], fetch: Callable[[], Any]) -> Any:
        """The value of ``key``, fetched once per run: a caller that comes while another fetches it waits for that
        fetch's result (or its error) instead of fetching again. An error is not kept: a later caller tries again."""
        call = ".".join(key[:2])
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            if self._unavailable is not None:
                raise AwsError(f"{call}: {self._unavailable}")
            flight = self._flights.get(key)
            owner = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not owner:
            flight.done.wait()
            if isinstance(flight.error, AwsError):
                raise AwsError(str(flight.error)) from None
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = self._fetch(call, fetch)
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                if flight.error is None:
                    self._cache[key] = flight.value
                del self._flights[key]
            flight.done.set()
        return flight.value

    def _fetch(self, call: str, fetch: Callable[[], Any]) -> Any:
        try:
            return fetch()
        except _UNAVAILABLE as exc:
            if isinstance(exc, NoCredentialsError):
                why = (
                    "the runner has no AWS credentials: give it some for this cluster's account "
                    "(AWS_PROFILE or cluster.awsProfile, SSO, environment keys, or an instance/pod role)"
                )
            else:
                why = f"cannot reach AWS in {self.region}: {exc}"
            with self._lock:
                self._unavailable = f"{why} (at {time.strftime('%H:%M:%S')}; later AWS calls of this run are not tried)"
            raise AwsError(f"{call}: {self._unavailable}") from None
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise AwsError(f"{call}: {err.get('Code')}: {err.get('Message')}") from None
        except BotoCoreError as exc:
            raise AwsError(f"{call}: {exc}") from None

    def caller(self) -> dict[str, str]:
        def fetch() -> dict[str, str]:
            ident = self._client("sts").get_caller_identity()
            return {"arn": ident["Arn"], "account": ident["Account"]}

        result: dict[str, str] = self._cached(("sts", "GetCallerIdentity"), fetch)
        return result

    def sts_endpoint(self) -> str:
        """Where this runner reaches STS: its own client's endpoint (the profile's region, AWS_ENDPOINT_URL[_STS])."""
        return str(self._client("sts").meta.endpoint_url)

    def prove_caller(self, url: str, nonce: str) -> dict[str, str]:
        """Send a probe's presigned GetCallerIdentity to this runner's STS endpoint with the nonce the
        runner chose, and return the caller STS names. Raises IdentityNotProven (never with the URL).

        Not cached, not retried: a presigned URL is good for one short window, and each is one pod's."""
        endpoint, query = _proof_query(url, proof_endpoints(self.sts_endpoint(), self.region))
        with self._lock:
            self.calls["sts:GetCallerIdentity (a probe's proof)"] += 1
        base = endpoint.rstrip("/") + "/"
        opener = urllib.request.build_opener(_NoRedirect())
        request = urllib.request.Request(base + "?" + query, method="GET", headers={NONCE_HEADER: nonce})
        try:
            with opener.open(request, timeout=self.timeout) as response:
                body = response.read(PROOF_BODY_LIMIT)
        except urllib.error.HTTPError as exc:
            try:
                detail = _sts_error(exc.read(PROOF_BODY_LIMIT))
            except OSError:
                detail = "no error code"
            finally:
                exc.close()
            raise IdentityNotProven(f"STS refused the proof ({exc.code} {detail})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise IdentityNotProven(f"STS at {endpoint} did not answer: {reason.__class__.__name__}") from None
        return _caller_from_xml(body)

    def _account_iam(self) -> _AccountIam | None:
        """The account's roles and customer managed policies, read in bulk once per run (every page); None when
        the read failed short of AWS being out of reach (IAM refused it or throttled it past the retries, a page
        timed out or came malformed): the run then reads role by role, and says why once. AWS out of reach
        (no credentials, no connection) is the run's, as for any call."""

        def fetch() -> _AccountIam | None:
            roles: dict[str, Mapping[str, Any]] = {}
            policies: dict[str, Any] = {}
            pages = (
                self._client("iam")
                .get_paginator("get_account_authorization_details")
                .paginate(Filter=["Role", "LocalManagedPolicy"], PaginationConfig={"PageSize": IAM_BULK_PAGE})
            )
            try:
                for page in pages:
                    for role in page.get("RoleDetailList", []):
                        # Only what the checks read: an account's tags, instance profiles and last uses stay out of
                        # the run's memory (up to 5,000 roles, IAM's quota).
                        roles[str(role["RoleName"])] = {k: role[k] for k in _ROLE_DETAIL if k in role}
                    for policy in page.get("Policies", []):
                        for version in policy.get("PolicyVersionList", []):
                            if version.get("IsDefaultVersion"):
                                policies[str(policy["Arn"])] = version.get("Document") or {}
            except ReadTimeoutError as exc:  # a large page, not AWS out of reach: smaller requests may do
                why = f"{exc.__class__.__name__}: {exc}"
            except _UNAVAILABLE:
                raise
            except ClientError as exc:
                err = exc.response.get("Error", {})
                why = f"{err.get('Code')}: {err.get('Message')}"
            except (BotoCoreError, KeyError, TypeError, AttributeError) as exc:
                why = f"{exc.__class__.__name__}: {exc}"
            else:
                return _AccountIam(roles, policies)
            self.say(f"reading IAM role by role: iam:GetAccountAuthorizationDetails failed ({printable(why[:300])})")
            return None

        result: _AccountIam | None = self._cached(("iam", "GetAccountAuthorizationDetails"), fetch)
        return result

    def _bulk(self) -> _AccountIam | None:
        return self._account_iam() if self.bulk_iam else None

    def role(self, name: str) -> dict[str, Any] | None:
        """The role with its trust policy, or None when it does not exist."""

        def fetch() -> dict[str, Any] | None:
            account = self._bulk()
            if account is not None:
                found = account.find(name)
                if found is None:
                    return None
                return {"arn": found["Arn"], "trust": _doc(found.get("AssumeRolePolicyDocument") or {})}
            try:
                role = self._client("iam").get_role(RoleName=name)["Role"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
                    return None
                raise
            return {"arn": role["Arn"], "trust": _doc(role["AssumeRolePolicyDocument"])}

        result: dict[str, Any] | None = self._cached(("iam", "GetRole", name), fetch)
        return result

    def role_policies(self, name: str) -> dict[str, dict[str, Any]]:
        """Every permission policy of the role: inline by name, managed by ARN."""

        def fetch() -> dict[str, dict[str, Any]]:
            account = self._bulk()
            if account is not None:
                return self._role_policies_from(account, name)
            iam = self._client("iam")
            out: dict[str, dict[str, Any]] = {}
            for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
                for policy_name in page["PolicyNames"]:
                    doc = iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"]
                    out[policy_name] = _doc(doc)
            for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name):
                for attached in page["AttachedPolicies"]:
                    out[attached["PolicyArn"]] = self.managed_policy(attached["PolicyArn"])
            return out

        result: dict[str, dict[str, Any]] = self._cached(("iam", "RolePolicies", name), fetch)
        return result

    def _role_policies_from(self, account: _AccountIam, name: str) -> dict[str, dict[str, Any]]:
        found = account.find(name)
        if found is None:  # as ListRolePolicies answers for a role that does not exist
            raise AwsError(f"iam.RolePolicies: NoSuchEntity: The role with name {name} cannot be found.")
        out = {str(p["PolicyName"]): _doc(p.get("PolicyDocument") or {}) for p in found.get("RolePolicyList", [])}
        for attached in found.get("AttachedManagedPolicies", []):
            arn = str(attached["PolicyArn"])
            local = account.policies.get(arn)
            out[arn] = _doc(local) if local is not None else self.managed_policy(arn)  # AWS managed: not in it
        return out

    def managed_policy(self, arn: str) -> dict[str, Any]:
        """A managed policy's default version's document, read once per run however many roles attach it."""

        def fetch() -> dict[str, Any]:
            iam = self._client("iam")
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            return _doc(iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"])

        result: dict[str, Any] = self._cached(("iam", "ManagedPolicy", arn), fetch)
        return result

    def oidc_providers(self) -> dict[str, list[str]]:
        """IAM OIDC providers: URL (host/path, no scheme) -> client ids."""

        def fetch() -> dict[str, list[str]]:
            iam = self._client("iam")
            out: dict[str, list[str]] = {}
            for entry in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
                provider = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=entry["Arn"])
                url = str(provider["Url"]).split("://", 1)[-1]
                out[url] = list(provider.get("ClientIDList", []))
            return out

        result: dict[str, list[str]] = self._cached(("iam", "OIDCProviders"), fetch)
        return result

    def access_keys(self, user: str) -> list[dict[str, Any]]:
        def fetch() -> list[dict[str, Any]]:
            pages = self._client("iam").get_paginator("list_access_keys").paginate(UserName=user)
            return [dict(k) for page in pages for k in page["AccessKeyMetadata"]]

        result: list[dict[str, Any]] = self._cached(("iam", "ListAccessKeys", user), fetch)
        return result

    def cluster(self, name: str) -> dict[str, Any]:
        def fetch() -> dict[str, Any]:
            return dict(self._client("eks").describe_cluster(name=name)["cluster"])

        result: dict[str, Any] = self._cached(("eks", "DescribeCluster", name), fetch)
        return result

    def oidc_issuer(self, cluster: str) -> str | None:
        issuer = ((self.cluster(cluster).get("identity") or {}).get("oidc") or {}).get("issuer")
        return str(issuer) if issuer else None

    def associations(self, cluster: str, namespace: str, service_account: str) -> list[dict[str, Any]]:
        """Pod Identity associations of one ServiceAccount, described (role, target role, dates): the cluster's
        listing (:meth:`all_associations`, made once per run) filtered, not one listing per ServiceAccount."""
        return [
            a
            for a in self.all_associations(cluster)
            if a.get("namespace") == namespace and a.get("serviceAccount") == service_account
        ]

    def all_associations(self, cluster: str) -> list[dict[str, Any]]:
        """Every Pod Identity association of the cluster (all namespaces, every page), described."""

        def fetch() -> list[dict[str, Any]]:
            return self._association_details(cluster, {})

        result: list[dict[str, Any]] = self._cached(("eks", "AllAssociations", cluster), fetch)
        return result

    def _association_details(self, cluster: str, filters: dict[str, str]) -> list[dict[str, Any]]:
        # The list's summaries carry no roleArn (botocore eks model PodIdentityAssociationSummary): describe each,
        # once per run whichever listing met it first.
        eks = self._client("eks")
        out = []
        for page in eks.get_paginator("list_pod_identity_associations").paginate(clusterName=cluster, **filters):
            for summary in page["associations"]:
                association_id = summary["associationId"]

                def describe(association_id: str = association_id) -> dict[str, Any]:
                    found = eks.describe_pod_identity_association(clusterName=cluster, associationId=association_id)
                    return dict(found["association"])

                out.append(self._cached(("eks", "DescribePodIdentityAssociation", cluster, association_id), describe))
        return out

    def roles(self) -> list[dict[str, Any]]:
        """Every IAM role of the account with its trust policy (ListRoles returns it inline, URL-decoded and
        parsed by botocore): one request per 1,000 roles, once per run."""

        def fetch() -> list[dict[str, Any]]:
            out = []
            for page in self._client("iam").get_paginator("list_roles").paginate(PaginationConfig={"PageSize": 1000}):
                for role in page["Roles"]:
                    out.append(
                        {
                            "Arn": role["Arn"],
                            "CreateDate": role.get("CreateDate"),
                            "AssumeRolePolicyDocument": _doc(role.get("AssumeRolePolicyDocument") or {}),
                        }
                    )
            return out

        result: list[dict[str, Any]] = self._cached(("iam", "ListRoles"), fetch)
        return result

    def lookup_events(self, key: str, value: str, start: datetime, end: datetime) -> tuple[list[dict[str, Any]], bool]:
        """CloudTrail event history for one lookup attribute in [start, end]: (events, newest first; whether more
        pages were left unread after LOOKUP_MAX_PAGES). Cached per query for the run."""

        def fetch() -> tuple[list[dict[str, Any]], bool]:
            events: list[dict[str, Any]] = []
            pages = (
                self._client("cloudtrail")
                .get_paginator("lookup_events")
                .paginate(
                    LookupAttributes=[{"AttributeKey": key, "AttributeValue": value}],
                    StartTime=start,
                    EndTime=end,
                    PaginationConfig={"PageSize": 50, "MaxItems": 50 * LOOKUP_MAX_PAGES},
                )
            )
            more = False
            for page in pages:
                events.extend(dict(e) for e in page.get("Events", []))
                more = bool(page.get("NextToken"))
            return events, more

        result: tuple[list[dict[str, Any]], bool] = self._cached(
            ("cloudtrail", "LookupEvents", key, value, start.isoformat(), end.isoformat()), fetch
        )
        return result

    def addon(self, cluster: str, name: str = "eks-pod-identity-agent") -> dict[str, Any] | None:
        def fetch() -> dict[str, Any] | None:
            try:
                return dict(self._client("eks").describe_addon(clusterName=cluster, addonName=name)["addon"])
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return None
                raise

        result: dict[str, Any] | None = self._cached(("eks", "DescribeAddon", cluster, name), fetch)
        return result
