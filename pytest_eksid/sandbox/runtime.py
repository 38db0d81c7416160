"""Start, seed and stop one emulated EKS cluster from a profile's ``sandbox`` section."""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError

from pytest_eksid import botocore_data
from pytest_eksid.profile import Profile, Workload, role_arn_parts
from pytest_eksid.sandbox import get_token, model
from pytest_eksid.sandbox.agent import PodIdentityAgent
from pytest_eksid.sandbox.cloud import AwsGateway, AwsServer, Iam
from pytest_eksid.sandbox.eks import ACCESS_POLICY_PREFIX, EksControlPlane
from pytest_eksid.sandbox.eks_access import AccessPolicyAuthorizer
from pytest_eksid.sandbox.eks_authn import EksTokenAuthenticator
from pytest_eksid.sandbox.imds import Imds
from pytest_eksid.sandbox.kubeapi import ApiError, KubeApiServer, Store
from pytest_eksid.sandbox.kubeapi.authn import ServiceAccountTokenAuthenticator
from pytest_eksid.sandbox.latency import Latency, Throttle
from pytest_eksid.sandbox.model import SandboxSection
from pytest_eksid.sandbox.node import MIRROR_ANNOTATION, Kubelet, Node
from pytest_eksid.sandbox.tokens import Issuer
from pytest_eksid.sandbox.warm import shared
from pytest_eksid.sandbox.webhooks import IRSA_ROLE_ANNOTATION, PI_AUDIENCE, WebhookConfig, Webhooks

OWNER_LABEL = "platform.mycompany.io/identity-owner"
BAKED_USER = "ci-image-builder"  # image-baked-credentials: whose key the probe image carries
RUNNER_USER = "eksid-runner"

# One botocore session per process for seeding sandboxes (clients made under the lock, each with its own
# credentials, then used freely): its data loader parses endpoints.json and each service's model once per process.
# With a session per sandbox, every sandbox parsed them again: a quarter of a test worker's CPU, where one worker
# starts dozens of sandboxes.
_SEED_LOCK = threading.Lock()
_SEED_SESSION: Any = None


def _seed_client(service: str, region: str, endpoint: str, key_id: str, secret: str) -> Any:
    global _SEED_SESSION
    import botocore.session

    with _SEED_LOCK:
        if _SEED_SESSION is None:
            _SEED_SESSION = botocore_data.shared(botocore.session.Session())
        return _SEED_SESSION.create_client(
            service,
            region_name=region,
            endpoint_url=endpoint,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )


@dataclass(frozen=True)
class Connection:
    """How a client reaches the sandbox: the same settings it would use for a real cluster."""

    kubeconfig: Path
    context: str
    env: dict[str, str | None] = field(repr=False)  # None: unset the variable; holds the runner's keys

    def export_lines(self) -> list[str]:
        lines = []
        for key, value in self.env.items():
            lines.append(f"unset {key}" if value is None else f"export {key}={value}")
        return lines


@dataclass
class Binding:
    workload: Workload
    role_arn: str  # what the sandbox really binds (a fault may change it)


@dataclass(frozen=True)
class UndeclaredBinding:
    """A ServiceAccount bound to a role outside the profile (the undeclared-identity fault)."""

    namespace: str
    service_account: str
    role_arn: str
    mechanism: str  # "irsa": the role annotation; "pod-identity": an association
    owner: str | None


@dataclass
class Sandbox:
    profile: Profile
    workdir: Path | None = None
    nodes: list[Node] = field(default_factory=list)
    _own_workdir: bool = False
    # The profile's ``sandbox:`` section as validated by pytest_eksid.sandbox.model; when not given it is made
    # from the profile (a ProfileError if invalid; the emulator's defaults if the profile has none).
    section: SandboxSection | None = None

    def __post_init__(self) -> None:
        if self.section is None:
            self.section = model.of(self.profile) if self.profile.sandbox is not None else SandboxSection()
        self.spec: SandboxSection = self.section

    def start(self) -> Connection:
        """Start every service, seed the profile's state, and return how to connect."""
        started = time.monotonic()
        cluster = self.profile.cluster
        self.iam = Iam()
        self.iam.open()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="eksid-sandbox-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.issuer = Issuer(
            url=f"https://oidc.eks.{cluster.region}.amazonaws.com/id/{secrets.token_hex(16).upper()}",
            on_sign=self.iam.remember,
        )
        self.store = Store()
        self.kubelet: Kubelet | None = None
        self.webhooks: Webhooks | None = None
        self.kubeapi = KubeApiServer(self.store, log_reader=self._read_log)
        self.iam.remember(self.kubeapi.token)
        self.eks = EksControlPlane(
            name=cluster.name,
            region=cluster.region,
            account_id=cluster.account_id,
            issuer_url=self.issuer.url,
            endpoint=self.kubeapi.https_url,
            certificate_authority=self.kubeapi.ca_data,
        )
        self.kubeapi.oidc_discovery = lambda: (
            {
                "issuer": self.issuer.url,
                "jwks_uri": f"{self.issuer.url}/keys",
                "authorization_endpoint": "urn:kubernetes:programmatic_authorization",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "claims_supported": ["sub", "iss"],
            },
            self.issuer.jwks(),
        )
        self.gateway = AwsGateway(self.iam, lambda: {self.eks.name: self.eks}, lambda: [self.issuer])
        self.aws = AwsServer(self.gateway)
        self._services: list[Any] = []
        try:
            self.kubeapi.start()
            self._services.append(self.kubeapi)
            self.aws.start()
            self._services.append(self.aws)
            key_id, secret = self.iam.admin_keys(cluster.account_id, RUNNER_USER)
            self.runner_env: dict[str, str | None] = {
                "AWS_ENDPOINT_URL": self.aws.url,
                "AWS_ACCESS_KEY_ID": key_id,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_SESSION_TOKEN": None,
                "AWS_PROFILE": None,
                "AWS_DEFAULT_REGION": cluster.region,
            }
            self._authentication(key_id, secret)
            self._start_nodes()
            self._seed_aws(key_id, secret)
            self._seed_kubernetes()
            self._benchmark_setting()
            connection = self._write_kubeconfig(key_id, secret)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return connection

    # --- services ------------------------------------------------------------------------

    def _benchmark_setting(self) -> None:
        """The injected latency and IAM throttling (sandbox/latency.py), switched on once seeding is done, so
        that the sandbox's own setup pays neither; off (None, no buckets) unless the profile asks."""
        self.latency = Latency(self.spec.latency)
        if self.latency.enabled:
            self.kubeapi.latency = self.latency
            self.gateway.latency = self.latency
            for node in self.nodes:
                node.agent.latency = self.latency
        iam = self.spec.throttle.iam
        if iam is not None:
            self.gateway.throttles["iam"] = Throttle(iam.rate, iam.burst)

    def _start_nodes(self) -> None:
        assert self.workdir is not None
        node_role = self.profile.cluster.node_role_arn
        sandbox = self.spec
        for i, group in enumerate(sandbox.nodegroups):
            faults = [f for f in sandbox.faults if f.nodegroup in (None, group)]
            exposed = {v for f in faults if f.fault == "imds-exposed" for v in f.versions}
            imds = Imds(self.iam, node_role, v1_exposed="v1" in exposed, v2_exposed="v2" in exposed)
            agent = PodIdentityAgent(
                self.iam,
                self.eks,
                self.issuer,
                running=not any(f.fault == "agent-down" for f in faults),
                # agent-throttling: the agent's own rate limiter at rate 0, so every credential request gets its 429
                request_rate=0.0 if any(f.fault == "agent-throttling" for f in faults) else 1000.0,
            )
            imds.http.start()
            self._services.append(imds.http)
            agent.start()
            self._services.append(agent)
            name = f"ip-10-0-{i + 1}-10.{self.profile.cluster.region}.compute.internal"
            self.nodes.append(Node(name=name, nodegroup=group, imds=imds, agent=agent))
        unpullable = frozenset(
            self.profile.probe.image for f in sandbox.faults if f.fault == "image-pull-error"
        )  # the registry does not have the probe image
        self.kubelet = Kubelet(
            self.store,
            self.issuer,
            self.nodes,
            self.workdir,
            self.aws.url,
            start_latency=sandbox.pod_start_seconds,
            unpullable_images=unpullable,
            hollow=sandbox.hollow_nodes,
            warm=shared() if sandbox.warm_python else None,
            remember=self.iam.remember,  # the proofs hollow pods sign
        )
        self.kubelet.install()
        injecting = not self.faulted("webhook-not-injecting")
        self.webhooks = Webhooks(
            self.store,
            self.eks,
            WebhookConfig(region=self.profile.cluster.region, irsa_enabled=injecting, pod_identity_enabled=injecting),
        )
        self.webhooks.install()

    def _read_log(self, namespace: str, name: str, pod: dict[str, Any]) -> str:
        assert self.kubelet is not None
        return self.kubelet.read_log(namespace, name, pod)

    def stop(self) -> None:
        """Stop everything, the kubeconfig (it holds the API token) removed first; the work directory with
        the pods' token files (mode 0600, in a 0700 directory) goes once their processes are gone."""
        if self._own_workdir and self.workdir is not None:
            (self.workdir / "kubeconfig").unlink(missing_ok=True)
        if self.workdir is not None:  # the runner's keys for the exec plugin: the sandbox's own file
            (self.workdir / "aws-credentials").unlink(missing_ok=True)
        if self.kubelet is not None:
            self.kubelet.stop()
        # Together: each server's stop waits for its serving loop to notice (up to its 0.1 s poll interval), and
        # one after another that was most of a sandbox's stop.
        failed: list[BaseException] = []

        def stop(svc: Any) -> None:
            try:
                svc.stop()
            except BaseException as exc:  # every server is stopped; the first failure is raised below
                failed.append(exc)

        stopping = [
            threading.Thread(target=stop, args=(svc,), name=f"eksid-stop-{type(svc).__name__}")
            for svc in reversed(getattr(self, "_services", []))
        ]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        self._services = []
        if hasattr(self, "iam"):
            self.iam.close()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if failed:
            raise failed[0]

    # --- seeding -------------------------------------------------------------------------

    def faulted(self, fault: str, workload: str | None = None) -> bool:
        """Whether the profile injects ``fault`` (for ``workload``, where the fault names one)."""
        return any(f.fault == fault and (workload is None or f.workload == workload) for f in self.spec.faults)

    def bindings(self) -> list[Binding]:
        out = []
        for w in self.profile.workloads:
            role_arn = w.role_arn
            for f in self.spec.faults:
                if f.workload == w.name and f.fault == "wrong-role" and f.role:
                    role_arn = f"arn:aws:iam::{self.profile.cluster.account_id}:role/{f.role}"
            out.append(Binding(w, role_arn))
        return out

    def undeclared(self) -> list[UndeclaredBinding]:
        """The bindings the undeclared-identity faults add: ServiceAccounts no workload of the profile declares."""
        account = self.profile.cluster.account_id
        return [
            UndeclaredBinding(
                f.namespace or self.profile.workloads[0].namespace,
                f.service_account or model.UNDECLARED_SERVICE_ACCOUNT,
                f"arn:aws:iam::{account}:role/{f.role}",
                f.mechanism,
                f.owner,
            )
            for f in self.spec.faults
            if f.fault == "undeclared-identity" and f.role is not None
        ]

    def _trust_statement(
        self, namespace: str, service_account: str, mechanism: str, workload: str | None
    ) -> dict[str, Any]:
        """The trust statement admitting ``namespace/service_account`` by ``mechanism``, with the trust faults of
        ``workload`` (None: a ServiceAccount no workload declares, which no workload fault changes)."""
        host_path = self.issuer.host_path
        account = self.profile.cluster.account_id

        def faulted(fault: str) -> bool:
            return workload is not None and self.faulted(fault, workload)

        if mechanism == "irsa":
            sub_key, aud_key = f"{host_path}:sub", f"{host_path}:aud"
            subject = f"system:serviceaccount:{namespace}:{service_account}"
            conditions: dict[str, dict[str, str]] = {"StringEquals": {sub_key: subject, aud_key: "sts.amazonaws.com"}}
            if faulted("wildcard-trust-sub"):
                del conditions["StringEquals"][sub_key]
                conditions["StringLike"] = {sub_key: f"system:serviceaccount:{namespace}:*"}
            if faulted("missing-aud-condition"):
                del conditions["StringEquals"][aud_key]
            return {
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{account}:oidc-provider/{host_path}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {k: v for k, v in conditions.items() if v},
            }
        actions = ["sts:AssumeRole"] if faulted("missing-tag-session") else ["sts:AssumeRole", "sts:TagSession"]
        return {
            "Effect": "Allow",
            "Principal": {"Service": PI_AUDIENCE},
            "Action": actions,
            "Condition": {
                "StringEquals": {
                    "aws:RequestTag/kubernetes-namespace": namespace,
                    "aws:RequestTag/kubernetes-service-account": service_account,
                }
            },
        }

    def _key_policy(self, alias: str) -> dict[str, Any]:
        """AWS's default key policy (the account root: IAM policies decide), unless ``kms-key-policy-deny``
        names this key: then the policy lists its key users itself, without the faulted workloads' roles."""
        account = self.profile.cluster.account_id
        root = f"arn:aws:iam::{account}:root"
        faulted = {f.workload for f in self.spec.faults if f.key == alias}
        if not faulted:
            statement = {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": root}}
            return {
                "Version": "2012-10-17",
                "Id": "key-default-1",
                "Statement": [{**statement, "Action": "kms:*", "Resource": "*"}],
            }
        users = sorted(
            {f"arn:aws:iam::{account}:user/{RUNNER_USER}"}  # the platform's own automation seeds the bucket
            | {
                arn
                for b in self.bindings()
                if b.workload.name not in faulted
                for arn in (b.role_arn, b.workload.target_role_arn)
                if arn is not None
            }
        )
        admin_actions = [
            "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*",
            "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
            "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
        ]  # fmt: skip
        statements: list[dict[str, Any]] = [
            {
                "Sid": "KeyAdministrators",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": admin_actions,
                "Resource": "*",
            }
        ]
        if users:  # always: the runner
            use = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
            statements.append(
                {"Sid": "KeyUsers", "Effect": "Allow", "Principal": {"AWS": users}, "Action": use, "Resource": "*"}
            )
        return {"Version": "2012-10-17", "Id": "key-users-listed", "Statement": statements}

    def _mechanisms(self, w: Workload) -> list[str]:
        """How the sandbox binds the workload: its own mechanism, plus the other under both-mechanisms."""
        other = "irsa" if w.mechanism == "pod-identity" else "pod-identity"
        return [w.mechanism, other] if self.faulted("both-mechanisms", w.name) else [w.mechanism]

    def _trust_policy(self, role_arn: str) -> dict[str, Any]:
        # A role trusts the workloads meant for it and those bound to it: under wrong-role the expected
        # role keeps its trust (only the binding is wrong), and the wrong role trusts the workload too.
        bound = self.bindings()
        intended = [Binding(b.workload, b.workload.role_arn) for b in bound]
        statements = [
            self._trust_statement(b.workload.namespace, b.workload.service_account, mechanism, b.workload.name)
            for b in (*intended, *bound)
            if b.role_arn == role_arn
            for mechanism in self._mechanisms(b.workload)
        ]
        # undeclared-identity: the role trusts the ServiceAccount bound to it outside the profile, as the team that
        # made that binding wrote it (a working binding, not a dangling annotation).
        statements += [
            self._trust_statement(u.namespace, u.service_account, u.mechanism, None)
            for u in self.undeclared()
            if u.role_arn == role_arn
        ]
        # A chained association's target role trusts the association's role.
        statements += [
            {"Effect": "Allow", "Principal": {"AWS": b.role_arn}, "Action": ["sts:AssumeRole", "sts:TagSession"]}
            for b in self.bindings()
            if b.workload.target_role_arn == role_arn
        ]
        unique = {json.dumps(st, sort_keys=True): st for st in statements}
        statements = list(unique.values())
        if not statements:  # bound to nothing: assumable by no workload
            statements.append(
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            )
        return {"Version": "2012-10-17", "Statement": statements}

    def _verbatim(self, document: dict[str, Any]) -> dict[str, Any]:
        """A role's trust policy as the profile writes it, with what exists only once started filled in
        (model.TRUST_VARIABLES: the issuer's host path, the account)."""
        values = {"$oidc_provider": self.issuer.host_path, "$account_id": self.profile.cluster.account_id}

        def fill(item: Any) -> Any:
            if isinstance(item, str):
                for name in model.TRUST_VARIABLES:
                    item = item.replace(name, values[name])
                return item
            if isinstance(item, dict):
                return {fill(k): fill(v) for k, v in item.items()}
            if isinstance(item, list):
                return [fill(v) for v in item]
            return item

        return dict(fill(document))

    def _seed_aws(self, key_id: str, secret: str) -> None:
        cluster = self.profile.cluster

        def client(service: str) -> Any:
            return _seed_client(service, cluster.region, self.aws.url, key_id, secret)

        iam = client("iam")
        if not self.faulted("no-oidc-provider"):
            iam.create_open_id_connect_provider(
                Url=self.issuer.url,
                ClientIDList=["sts.amazonaws.com"],
                ThumbprintList=["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"],
            )
        sandbox = self.spec
        for role in sandbox.roles:
            arn = f"arn:aws:iam::{cluster.account_id}:role/{role.name}"
            trust = self._trust_policy(arn) if role.trust_policy is None else self._verbatim(role.trust_policy)
            try:
                iam.create_role(RoleName=role.name, AssumeRolePolicyDocument=json.dumps(trust))
            except ClientError as exc:
                if role.trust_policy is None:
                    raise
                error = exc.response.get("Error", {})
                raise SandboxSeedError(
                    f"sandbox.roles: IAM refused the trustPolicy of role {role.name!r}: "
                    f"{error.get('Code')}: {error.get('Message')}"
                ) from None
            policy = role.policy
            if any(
                b.role_arn == arn and self.faulted("kms-via-service-missing", b.workload.name) for b in self.bindings()
            ):
                policy = _without_via_service(policy)  # the key usable directly, not only through S3
            iam.put_role_policy(
                RoleName=role.name, PolicyName=f"{role.name}-permissions", PolicyDocument=json.dumps(policy)
            )
            for b in self.bindings():
                if b.role_arn == arn and self.faulted("exact-key-delete-grant", b.workload.name):
                    # A grant on exactly the object the contract says must not be deleted.
                    keys = [c.resource for c in b.workload.deny if c.action == "s3:DeleteObject"]
                    iam.put_role_policy(
                        RoleName=role.name,
                        PolicyName="probe-object-cleanup",
                        PolicyDocument=json.dumps(
                            {
                                "Version": "2012-10-17",
                                "Statement": [
                                    {"Sid": "Cleanup", "Effect": "Allow", "Action": "s3:DeleteObject", "Resource": keys}
                                ],
                            }
                        ),
                    )
            if any(b.role_arn == arn and self.faulted("excess-permissions", b.workload.name) for b in self.bindings()):
                # What "temporarily" broad grants look like: every S3 action on every bucket.
                iam.put_role_policy(
                    RoleName=role.name,
                    PolicyName="temporary-debug-access",
                    PolicyDocument=json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [{"Sid": "Debug", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                        }
                    ),
                )
        if cluster.node_role_arn:
            _, node_role = role_arn_parts(cluster.node_role_arn)
            iam.create_role(
                RoleName=node_role,
                AssumeRolePolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "ec2.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    }
                ),
            )
            # Broad, as node roles often are: that is why a pod must not reach it.
            iam.put_role_policy(
                RoleName=node_role,
                PolicyName="node-permissions",
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "s3:GetObject",
                                    "s3:ListBucket",
                                    "s3:PutObject",
                                    "sqs:*",
                                    "ecr:*",
                                    "kms:Decrypt",
                                ],
                                "Resource": "*",
                            }
                        ],
                    }
                ),
            )
        if self.faulted("image-baked-credentials"):
            # A CI user's key left in the probe image's ~/.aws/credentials.
            iam.create_user(UserName=BAKED_USER)
            baked = iam.create_access_key(UserName=BAKED_USER)["AccessKey"]
            self.iam.remember(baked["SecretAccessKey"])
            assert self.kubelet is not None
            self.kubelet.image_home_files[self.profile.probe.image] = {
                ".aws/credentials": f"[default]\naws_access_key_id = {baked['AccessKeyId']}\n"
                f"aws_secret_access_key = {baked['SecretAccessKey']}\n"
            }
        legacy_users: set[str] = set()
        for w in self.profile.workloads:
            if w.legacy_iam_user is None or w.legacy_iam_user in legacy_users:
                continue
            legacy_users.add(w.legacy_iam_user)
            # The IAM user the workload used before workload identity: its key is deactivated, unless faulted.
            iam.create_user(UserName=w.legacy_iam_user)
            key = iam.create_access_key(UserName=w.legacy_iam_user)["AccessKey"]
            self.iam.remember(key["SecretAccessKey"])
            if not self.faulted("legacy-user-active-key", w.name):
                iam.update_access_key(UserName=w.legacy_iam_user, AccessKeyId=key["AccessKeyId"], Status="Inactive")
        kms = client("kms")
        key_arns: dict[str, str] = {}
        for spec in sandbox.keys:
            kms_key_id = kms.create_key(
                Description=f"sandbox key {spec.alias}", Policy=json.dumps(self._key_policy(spec.alias))
            )["KeyMetadata"]["KeyId"]
            if spec.id is not None:
                kms_key_id = _rekey(cluster.account_id, cluster.region, kms_key_id, spec.id)
            kms.create_alias(AliasName=f"alias/{spec.alias}", TargetKeyId=kms_key_id)
            key_arns[spec.alias] = f"arn:aws:kms:{cluster.region}:{cluster.account_id}:key/{kms_key_id}"
        s3 = client("s3")
        for bucket_spec in sandbox.buckets:
            bucket = bucket_spec.name
            if cluster.region == "us-east-1":
                s3.create_bucket(Bucket=bucket)
            else:
                s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": cluster.region})
            if bucket_spec.kms_key is not None:
                default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arns[bucket_spec.kms_key]}
                s3.put_bucket_encryption(
                    Bucket=bucket,
                    ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": default}]},
                )
        sqs = client("sqs")
        for queue in sandbox.queues:
            sqs.create_queue(QueueName=queue)
        for arn in sandbox.objects:
            bucket, _, key = arn.removeprefix("arn:aws:s3:::").partition("/")
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        ddb = client("dynamodb")
        for table in sandbox.tables:
            ddb.create_table(
                TableName=table.name,
                KeySchema=[{"AttributeName": table.key, "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": table.key, "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        secrets_client = client("secretsmanager")
        for secret_value in sandbox.secrets:
            secrets_client.create_secret(Name=secret_value.name, SecretString=secret_value.value)
            self.iam.remember(secret_value.value)
        ssm = client("ssm")
        for parameter in sandbox.parameters:
            ssm.put_parameter(Name=parameter.name, Value=parameter.value, Type="String")
            self.iam.remember(parameter.value)  # the no-secret-in-output checks look for it too

    def _seed_kubernetes(self) -> None:
        for node in self.nodes:
            self.store.create("nodes", "", node.manifest())
        # The profile's own Namespaces first (with their labels), then those the sandbox needs and they lack.
        manifests = sorted(self.spec.manifests, key=lambda m: m["kind"] != "Namespace")  # stable: order kept
        given = [m for m in manifests if m["kind"] == "Namespace"]
        self._seed_manifests(given)
        # Every cluster's own namespaces (kube-apiserver's system namespaces controller), then the workloads'.
        namespaces = {
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            *(w.namespace for w in self.profile.workloads),
        }
        for ns in sorted(namespaces - {m["metadata"]["name"] for m in given}):
            self.store.create("namespaces", "", {"metadata": {"name": ns}})
        seen: set[tuple[str, str]] = set()
        for b in self.bindings():
            w = b.workload
            self._seed_workload(w)
            if (w.namespace, w.service_account) in seen:
                self._start_workload_pod(w)
                continue  # workloads sharing a ServiceAccount share its binding: the first one sets it
            seen.add((w.namespace, w.service_account))
            meta: dict[str, Any] = {
                "name": w.service_account,
                "labels": {"app.kubernetes.io/name": w.name},
            }
            if w.owner and not self.faulted("missing-owner-label", w.name):
                meta["labels"][OWNER_LABEL] = w.owner
            mechanisms = self._mechanisms(w)
            if "irsa" in mechanisms and not self.faulted("missing-annotation", w.name):
                meta["annotations"] = {IRSA_ROLE_ANNOTATION: b.role_arn}
            # Hardened as the EKS best practices advise: the webhooks add their own projected token and
            # never read automount (EKS_FACTS.md), so identity still works and the checks must say so.
            cache_miss = self.faulted("webhook-cache-miss", w.name)
            if cache_miss and self.webhooks is not None:
                # The workload's pod is created right after its ServiceAccount, before the webhook's informer
                # has it: not mutated (grace period 0). Later pods (the probes) are.
                self.webhooks.cache.lag(w.namespace, w.service_account)
            self.store.create("serviceaccounts", w.namespace, {"metadata": meta, "automountServiceAccountToken": False})
            late = self.faulted("association-after-pod", w.name)
            if late:  # the workload's pods started before the association existed: nothing injected
                self._start_workload_pod(w)
            if "pod-identity" in mechanisms and not self.faulted("missing-association", w.name):
                self.eks.create_association(
                    w.namespace,
                    w.service_account,
                    b.role_arn,
                    target_role_arn=w.target_role_arn,
                    # the tags are gone, so the trust's aws:RequestTag conditions cannot hold
                    disable_session_tags=self.faulted("session-tags-disabled", w.name),
                )
            if not late:
                self._start_workload_pod(w)
            if cache_miss and self.webhooks is not None:
                self.webhooks.cache.catch_up()
        self._seed_agent()
        self._seed_undeclared()
        self._seed_extra_deployers()
        self._seed_platform_rbac()
        self._seed_manifests(manifests[len(given) :])

    def _seed_undeclared(self) -> None:
        """undeclared-identity: a ServiceAccount bound to a role, by annotation or association, that no workload
        of the profile declares (made outside the reviewed path)."""
        for u in self.undeclared():
            meta: dict[str, Any] = {"name": u.service_account, "labels": {"app.kubernetes.io/name": u.service_account}}
            if u.owner:
                meta["labels"][OWNER_LABEL] = u.owner
            if u.mechanism == "irsa":
                meta["annotations"] = {IRSA_ROLE_ANNOTATION: u.role_arn}
            if self.store.find("serviceaccounts", u.namespace, u.service_account) is None:
                self.store.create("serviceaccounts", u.namespace, {"metadata": meta})
            if u.mechanism == "pod-identity":
                self.eks.create_association(u.namespace, u.service_account, u.role_arn)

    def _seed_extra_deployers(self) -> None:
        """extra-deployer: a group that may create pods (and exec into them) in the workload's namespace, beside
        the profile's deployers: a Role and its RoleBinding, as a team grants its developers "just for debugging"."""
        for f in self.spec.faults:
            if f.fault != "extra-deployer" or f.workload is None:
                continue
            namespace = self.profile.workload(f.workload).namespace
            group = f.group or model.EXTRA_DEPLOYER_GROUP
            name = extra_deployer_binding(group)
            if self.store.find("rolebindings", namespace, name) is not None:
                continue
            rules = [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/exec", "pods/log"], "verbs": ["create", "get"]},
            ]
            self.store.create("roles", namespace, {"metadata": {"name": name}, "rules": rules})
            self.store.create(
                "rolebindings",
                namespace,
                {
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
                    "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group}],
                },
            )

    def _seed_platform_rbac(self) -> None:
        """A representative couple of the bindings EKS creates on every cluster for its own components, so that
        the checks meet them as on EKS (platform grants: reported, never a failure). ``eks:addon-cluster-admin``
        binds cluster-admin to the user ``eks:addon-manager``, which installs the managed add-ons [EKS user guide,
        "Amazon EKS add-ons": "The eks:addon-cluster-admin ClusterRoleBinding binds the cluster-admin ClusterRole
        to the eks:addon-manager Kubernetes identity"]; ``eks:addon-manager`` is its eks:-named ClusterRole and
        binding (rules illustrative: EKS does not publish them)."""
        for obj in EKS_PLATFORM_CLUSTER_ROLES:
            if self.store.find("clusterroles", "", obj["metadata"]["name"]) is None:
                self.store.create("clusterroles", "", json.loads(json.dumps(obj)))
        for obj in EKS_PLATFORM_CLUSTER_ROLE_BINDINGS:
            if self.store.find("clusterrolebindings", "", obj["metadata"]["name"]) is None:
                self.store.create("clusterrolebindings", "", json.loads(json.dumps(obj)))

    def _seed_manifests(self, objects: list[dict[str, Any]]) -> None:
        """``sandbox.manifests`` through the API server's store, as a client's create would go (admission,
        validation, defaults): any kind the server serves. A refusal names the object and the API's message."""
        kinds = model.served_kinds() or {}
        for obj in objects:
            rt = kinds[(obj["apiVersion"], obj["kind"])]  # model.check_manifest: served
            self._remember_manifest(obj)
            try:
                self.store.create(rt, str(obj["metadata"].get("namespace") or ""), obj)
            except ApiError as exc:
                raise SandboxSeedError(
                    f"sandbox.manifests: cannot create {model.manifest_name(obj)}: {exc.message}"
                ) from None

    def _remember_manifest(self, obj: dict[str, Any]) -> None:
        """A Secret's values, and values under secret-sounding keys anywhere else, go to the secret ledger."""
        if obj["kind"] == "Secret":
            for value in (obj.get("data") or {}).values():
                try:
                    self.iam.remember(base64.b64decode(str(value), validate=True).decode())
                except ValueError:
                    self.iam.remember(str(value))
            for value in (obj.get("stringData") or {}).values():
                self.iam.remember(str(value))
            return
        for key, value in (obj.get("data") or {}).items():
            if _secret_name(str(key)) and isinstance(value, str):
                self.iam.remember(value)

    def _start_workload_pod(self, w: Workload) -> None:
        """One running pod of the workload's Deployment (the sandbox has no controllers to make it)."""
        if not self.spec.workload_pods:
            return
        deployment = self.store.get("deployments", w.namespace, w.name)
        template = deployment["spec"]["template"]
        self.store.create(
            "pods",
            w.namespace,
            {
                "metadata": {
                    "generateName": f"{w.name}-",
                    "labels": dict(template["metadata"]["labels"]),
                    **({"annotations": dict(a)} if (a := template["metadata"].get("annotations")) else {}),
                },
                "spec": {**template["spec"], "containers": [dict(c) for c in template["spec"]["containers"]]},
            },
        )

    def _template(self, w: Workload) -> model.SandboxTemplate:
        """The workload's pod template fields: the profile's ``sandbox.templates`` entry, plus what its
        template faults set (they are template fields too)."""
        given = next((t for t in self.spec.templates if t.workload == w.name), model.SandboxTemplate(workload=w.name))
        env: list[dict[str, Any]] = []
        if self.faulted("static-keys-in-env", w.name):
            env += [
                {"name": "AWS_ACCESS_KEY_ID", "value": "AKIA" + "EKSIDSANDBOX0001"},
                {"name": "AWS_SECRET_ACCESS_KEY", "value": self._fake_secret()},
            ]
        if self.faulted("proxy-captures-agent", w.name):
            # A corporate proxy for the pods' egress, exempting loopback (the sandbox's endpoints) but not the
            # Pod Identity agent's address.
            env += [
                {"name": "HTTP_PROXY", "value": "http://proxy.corp.example:3128"},
                {"name": "NO_PROXY", "value": "127.0.0.1,localhost,.svc,.cluster.local"},
            ]
        host_network = True if self.faulted("host-network", w.name) else given.host_network
        return given.model_copy(update={"env": [*env, *given.env], "host_network": host_network})

    def _seed_workload(self, w: Workload) -> None:
        """The workload's own Deployment (not run: the sandbox runs only probe pods), and its faults."""
        template = self._template(w)
        for item in template.env:
            if _secret_name(str(item["name"])) and isinstance(item.get("value"), str):
                self.iam.remember(item["value"])
        if self.faulted("static-keys-in-secret", w.name):
            self.store.create(
                "secrets",
                w.namespace,
                {
                    "metadata": {"name": f"{w.name}-aws-credentials"},
                    "type": "Opaque",
                    "data": {
                        "aws_access_key_id": base64.b64encode(b"AKIAEKSIDSANDBOX0002").decode(),
                        "aws_secret_access_key": base64.b64encode(self._fake_secret().encode()).decode(),
                    },
                },
            )
        if self.faulted("static-keys-in-configmap", w.name):
            self.store.create(
                "configmaps",
                w.namespace,
                {
                    "metadata": {"name": f"{w.name}-aws-config"},
                    "data": {
                        "AWS_REGION": self.profile.cluster.region,
                        "AWS_ACCESS_KEY_ID": "AKIA" + "EKSIDSANDBOX0003",
                        "AWS_SECRET_ACCESS_KEY": self._fake_secret(),
                    },
                },
            )
        sa = "default" if self.faulted("default-service-account", w.name) else w.service_account
        labels = {model.SELECTOR_LABEL: w.name}
        pod_spec: dict[str, Any] = {
            "serviceAccountName": sa,
            "automountServiceAccountToken": False,  # hardened; identity needs no automount
        }
        if template.host_network is not None:
            pod_spec["hostNetwork"] = template.host_network
        if template.node_selector:
            pod_spec["nodeSelector"] = dict(template.node_selector)
        if template.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in template.tolerations]
        if template.init_containers:
            pod_spec["initContainers"] = [dict(c) for c in template.init_containers]
        pod_spec["containers"] = [
            {
                "name": "app",
                "image": f"registry.example/{w.name}:1",
                "command": ["sleep", "infinity"],  # stands in for the application
                "env": [dict(e) for e in template.env],
            }
        ]
        pod_meta: dict[str, Any] = {"labels": {**template.labels, **labels}}
        if template.annotations:
            pod_meta["annotations"] = dict(template.annotations)
        self.store.create(
            "deployments",
            w.namespace,
            {
                "metadata": {"name": w.name, "labels": dict(labels)},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": dict(labels)},
                    "template": {"metadata": pod_meta, "spec": pod_spec},
                },
            },
        )

    def _fake_secret(self) -> str:
        value = secrets.token_urlsafe(30)[:40]
        self.iam.remember(value)
        return value

    def _seed_agent(self) -> None:
        """The eks-pod-identity-agent DaemonSet, its per-node pods and the EKS add-on, as healthy as the agents."""
        ns, name = "kube-system", "eks-pod-identity-agent"
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
        self.store.create("serviceaccounts", ns, {"metadata": {"name": name}})
        self.store.create(
            "daemonsets",
            ns,
            {
                "metadata": {"name": name, "labels": dict(labels)},
                "spec": {
                    "selector": {"matchLabels": dict(labels)},
                    "template": {
                        "metadata": {"labels": dict(labels)},
                        "spec": {
                            "hostNetwork": True,
                            "serviceAccountName": name,
                            "containers": [{"name": name, "image": "eks-pod-identity-agent:v0.1.29"}],
                        },
                    },
                },
            },
        )
        ready = 0
        for node in self.nodes:
            pod = self.store.create(
                "pods",
                ns,
                {
                    "metadata": {
                        "generateName": f"{name}-",
                        "labels": dict(labels),
                        # Run by the node itself (in process), not by the kubelet's process runner.
                        "annotations": {MIRROR_ANNOTATION: "sandbox"},
                    },
                    "spec": {
                        "nodeName": node.name,
                        "hostNetwork": True,
                        "serviceAccountName": name,
                        "containers": [{"name": name, "image": "eks-pod-identity-agent:v0.1.29"}],
                    },
                },
            )
            up = node.agent.running
            ready += up
            state: dict[str, Any] = (
                {"running": {"startedAt": pod["metadata"]["creationTimestamp"]}}
                if up
                else {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}}
            )
            status = {
                "phase": "Running" if up else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if up else "False"}],
                "containerStatuses": [
                    {
                        "name": name,
                        "ready": up,
                        "restartCount": 0 if up else 7,
                        "image": "",
                        "imageID": "",
                        "state": state,
                    }
                ],
            }
            self.store.update("pods", ns, pod["metadata"]["name"], _set_status(status))
        total = len(self.nodes)
        self.store.update(
            "daemonsets",
            ns,
            name,
            lambda d: d.update(
                {
                    "status": {
                        "currentNumberScheduled": total,
                        "desiredNumberScheduled": total,
                        "numberAvailable": ready,
                        "numberReady": ready,
                        "updatedNumberScheduled": total,
                        "numberMisscheduled": 0,
                        "observedGeneration": d["metadata"].get("generation", 1),
                        **({"numberUnavailable": total - ready} if ready < total else {}),
                    }
                }
            ),
        )
        self.eks.set_addon(name, "ACTIVE" if ready == total else "DEGRADED")

    def _authentication(self, key_id: str, secret: str) -> None:
        """Authentication as on EKS: EKS tokens (access entries, aws-auth) and service-account tokens; the runner
        is the cluster creator, whom EKS gives an access entry with AmazonEKSClusterAdminPolicy
        (``bootstrapClusterCreatorAdminPermissions``, [botocore/data/eks/2017-11-01/service-2.json shape
        CreateAccessConfigRequest]). Its kubeconfig's exec plugin reads its keys from a credentials file of its
        own, so keys another cluster's run leaves in the environment cannot sign for this one."""
        assert self.workdir is not None
        cluster = self.profile.cluster
        runner_arn = f"arn:aws:iam::{cluster.account_id}:user/{RUNNER_USER}"
        self.eks.create_access_entry(runner_arn)
        self.eks.associate_access_policy(runner_arn, ACCESS_POLICY_PREFIX + "AmazonEKSClusterAdminPolicy", "cluster")
        self.kubeapi.authenticators.append(
            EksTokenAuthenticator(
                self.eks,
                self.aws.url,
                aws_auth=lambda: (self.store.find("configmaps", "kube-system", "aws-auth") or {}).get("data"),
                remember=self.iam.remember,
            )
        )
        self.kubeapi.authenticators.append(ServiceAccountTokenAuthenticator(self.store, self.issuer.verify))
        self.kubeapi.authorizers.append(AccessPolicyAuthorizer(self.eks))
        credentials = self.workdir / "aws-credentials"
        fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"[{RUNNER_USER}]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n")

    def runner_exec_plugin(self) -> dict[str, Any]:
        """The kubeconfig user's exec plugin: ``aws eks get-token`` as ``update-kubeconfig`` writes it, run as
        ``python -m pytest_eksid.sandbox.get_token`` (no AWS CLI needed)."""
        assert self.workdir is not None
        cluster = self.profile.cluster
        return {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [
                "-m",
                "pytest_eksid.sandbox.get_token",
                "--cluster-name",
                cluster.name,
                "--region",
                cluster.region,
                "--profile",
                RUNNER_USER,
                "--cache-file",
                str(self.workdir / "get-token-cache.json"),
            ],
            "env": [
                {"name": "AWS_ENDPOINT_URL", "value": self.aws.url},
                {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": str(self.workdir / "aws-credentials")},
                {"name": "AWS_CONFIG_FILE", "value": os.devnull},
            ],
            "interactiveMode": "Never",
        }

    def _first_runner_token(self, plugin: dict[str, Any], key_id: str, secret: str) -> None:
        """Sign the runner's first token here and leave it in the exec plugin's cache (get_token.py), as the
        plugin would after its first run: the first client then reads it instead of importing botocore and
        signing in a process of its own (~0.25 s of CPU, once per sandbox). The same signing code, the same
        key, the same cache entry; every later token is the plugin's own."""
        args = plugin["args"]
        value = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
        env = {e["name"]: e["value"] for e in plugin["env"]}
        sts = _seed_client("sts", value["--region"], env["AWS_ENDPOINT_URL"], key_id, secret)
        now = datetime.datetime.now(datetime.UTC)
        status = get_token.exec_credential(sts, value["--cluster-name"], now)["status"]
        self.iam.remember(status["token"])
        key_args = get_token.key_arguments(value["--cluster-name"], value["--region"], value["--profile"])
        get_token.store(Path(value["--cache-file"]), get_token.cache_key(key_args, env), status)

    def _write_kubeconfig(self, key_id: str, secret: str) -> Connection:
        assert self.workdir is not None
        name = f"eksid-sandbox-{self.profile.cluster.name}"
        plugin = self.runner_exec_plugin()
        self._first_runner_token(plugin, key_id, secret)
        # https with the sandbox's own CA: kubectl sends no bearer token over plain http.
        config = self.kubeapi.kubeconfig(name, RUNNER_USER, plugin)
        path = self.workdir / "kubeconfig"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(config, fh)
        env = {"KUBECONFIG": str(path), **self.runner_env}
        return Connection(kubeconfig=path, context=name, env=env)

    @property
    def minted_secrets(self) -> list[str]:
        """Every secret this sandbox handed out (runner keys, role sessions, the API token)."""
        return list(self.iam.minted)


RBAC_GROUP = "rbac.authorization.k8s.io"
EKS_ADDON_MANAGER = "eks:addon-manager"
EKS_PLATFORM_CLUSTER_ROLES: tuple[dict[str, Any], ...] = (
    {
        "metadata": {"name": EKS_ADDON_MANAGER},
        "rules": [
            {"apiGroups": [""], "resources": ["serviceaccounts", "configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments"], "verbs": ["get", "list", "watch"]},
        ],
    },
)
EKS_PLATFORM_CLUSTER_ROLE_BINDINGS: tuple[dict[str, Any], ...] = tuple(
    {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": EKS_ADDON_MANAGER}],
    }
    for name, role in (("eks:addon-cluster-admin", "cluster-admin"), (EKS_ADDON_MANAGER, EKS_ADDON_MANAGER))
)


def extra_deployer_binding(group: str) -> str:
    """The name of the Role and RoleBinding the extra-deployer fault gives ``group`` (a Kubernetes name)."""
    return f"{''.join(c if c.isascii() and c.isalnum() else '-' for c in group.lower()).strip('-')[:40]}-run-pods"


class SandboxSeedError(RuntimeError):
    """A ``sandbox.manifests`` object the API server refused: names the object and the server's message."""


def _secret_name(name: str) -> bool:
    """Whether a variable or key name says its value is a secret (the secret ledger learns such values)."""
    upper = name.upper()
    return any(word in upper for word in ("SECRET", "TOKEN", "PASSWORD"))


def _set_status(status: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        obj["status"] = status

    return change


def _rekey(account: str, region: str, key_id: str, wanted: str) -> str:
    """Give a freshly created moto key the id the profile fixes (moto always draws a random one)."""
    from moto.kms.models import kms_backends

    backend = kms_backends[account][region]
    key = backend.keys.pop(key_id)
    key.id = wanted
    key.arn = key.arn.rsplit("/", 1)[0] + "/" + wanted
    backend.keys[wanted] = key
    return wanted


def _without_via_service(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy with every ``kms:ViaService`` condition dropped (the kms-via-service-missing fault)."""
    out = json.loads(json.dumps(policy))
    for st in out.get("Statement") or []:
        conditions = st.get("Condition") or {}
        for op in list(conditions):
            clauses = {k: v for k, v in dict(conditions[op]).items() if k.lower() != "kms:viaservice"}
            if clauses:
                conditions[op] = clauses
            else:
                del conditions[op]
        if "Condition" in st and not conditions:
            del st["Condition"]
    return dict(out)
