"""pytest_eksid.checks.static over hand-made Kubernetes objects, probe results and IAM key metadata."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from pytest_eksid.checks import Finding
from pytest_eksid.checks.static import (
    ACCESS_KEY_ID_RE,
    AWS_KEY_NAME_RE,
    legacy_user_findings,
    probe_findings,
    scan_objects,
    scan_pod_templates,
)
from pytest_eksid.profile import Workload

# AWS's documented example credentials: never real, but shaped like real ones.
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SESSION_KEY_ID = "ASIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SECRETS = (KEY_ID, SESSION_KEY_ID, SECRET, "IOSFODNN7EXAMPLE")
HEX_DIGEST = "9b2f4c1e0a7d3b8e6f5a4c2d1e0f9a8b7c6d5e4f"  # a SHA-1 (a git commit): 40 characters, not a key

PI = Workload.model_validate(
    {
        "name": "checkout-api",
        "namespace": "checkout-prod",
        "serviceAccount": "checkout-api-aws-sa",
        "mechanism": "pod-identity",
        "roleArn": "arn:aws:iam::111122223333:role/eks-prod-checkout-api-s3-read",
    }
)
IRSA = PI.model_copy(update={"mechanism": "irsa"})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def assert_no_secret(findings: list[Finding]) -> None:
    for f in findings:
        text = f.message() + repr(f.details)
        for secret in SECRETS:
            assert secret not in text, f"secret value leaked into a finding: {f.message()}"


def secret(name: str, data: dict[str, str] | None = None, string_data: dict[str, str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": "Secret", "metadata": {"name": name, "namespace": "checkout-prod"}}
    if data is not None:
        obj["data"] = {k: b64(v) for k, v in data.items()}
    if string_data is not None:
        obj["stringData"] = string_data
    return obj


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"kind": "ConfigMap", "metadata": {"name": name, "namespace": "checkout-prod"}, "data": data}


CREDENTIALS_FILE = f"[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
CONFIG_PROFILE = f"[profile legacy]\nregion = eu-west-1\naws_secret_access_key={SECRET}\n"


# --- the regular expressions ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "aws_access_key_id",
        "AWS_ACCESS_KEY_ID",
        "aws_secret_access_key",
        "AWS_SECRET_ACCESS_KEY",
        "aws_session_token",
        "AWS_SECURITY_TOKEN",
        "accessKeyId",
        "secretAccessKey",
        "AccessKeyId",
        "awsAccessKey",
        "AWS_SECRET_KEY",
        "access-key-id",
        "BACKUP_AWS_SECRET_ACCESS_KEY",
        "s3.accessKeyId",
    ],
)
def test_key_name_matches(name: str) -> None:
    assert AWS_KEY_NAME_RE.search(name)


@pytest.mark.parametrize(
    "name",
    [
        "SECRET_KEY",
        "access_key",
        "password",
        "AWS_REGION",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "credentials",
        "token",
    ],
)
def test_key_name_does_not_match(name: str) -> None:
    assert not AWS_KEY_NAME_RE.search(name)


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        (KEY_ID, "AKIA"),
        (f"key={SESSION_KEY_ID};", "ASIA"),
        (f"x{KEY_ID}", "AKIA"),  # a lowercase neighbour is not part of an id
        (f"X{KEY_ID}", None),
        (f"{KEY_ID}9", None),
        ("AKIAIOSFODNN7EXAMPL", None),
        ("akiaiosfodnn7example", None),
        ("AIDAIOSFODNN7EXAMPLE", None),
    ],
)
def test_access_key_id_re(text: str, prefix: str | None) -> None:
    m = ACCESS_KEY_ID_RE.search(text)
    assert (m.group(1) if m else None) == prefix


# --- scan_objects ---------------------------------------------------------------------------


def test_clean_objects_pass() -> None:
    objs = [
        secret("db", {"password": "hunter2", "SECRET_KEY": "django-insecure-abc", "AWS_ACCESS_KEY_ID": ""}),
        secret("tls", {"tls.crt": "-----BEGIN CERTIFICATE-----", "tls.key": "k"}),
        secret("plain", string_data={"config.ini": "[default]\nregion = eu-west-1\n"}),
    ]
    assert scan_objects("Secret", objs) == []
    assert scan_objects("ConfigMap", [configmap("app", {"AWS_REGION": "eu-west-1", "aws-config": "[default]\n"})]) == []


@pytest.mark.parametrize(
    ("kind", "obj", "keys", "why"),
    [
        pytest.param(
            "Secret",
            secret("aws", {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}),
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID: key name AWS_ACCESS_KEY_ID is an AWS credential name, value contains an AKIA… "
            "access key id (long-lived IAM user key); AWS_SECRET_ACCESS_KEY: key name",
            id="secret-env-keys",
        ),
        pytest.param(
            "Secret",
            secret("aws", string_data={"secretAccessKey": SECRET}),
            "secretAccessKey",
            "key name secretAccessKey is an AWS credential name",
            id="secret-stringdata",
        ),
        pytest.param(
            "Secret",
            secret("aws-creds", {"credentials": CREDENTIALS_FILE}),
            "credentials",
            "value is a credentials file setting aws_access_key_id, aws_secret_access_key",
            id="credentials-file",
        ),
        pytest.param(
            "Secret",
            secret("boto", {"token": f"id={SESSION_KEY_ID}"}),
            "token",
            "value contains an ASIA… access key id (temporary session key)",
            id="session-key-id-in-value",
        ),
        pytest.param(
            "ConfigMap",
            configmap("app-config", {"aws.conf": CONFIG_PROFILE}),
            "aws.conf",
            "value is a credentials file setting aws_secret_access_key",
            id="configmap-profile",
        ),
        pytest.param(
            "ConfigMap",
            configmap("app-env", {".env": f"export AWS_SECRET_ACCESS_KEY='{SECRET}'\nLOG=debug\n"}),
            ".env",
            "value is a file setting AWS_SECRET_ACCESS_KEY",
            id="dotenv",
        ),
        pytest.param(
            "ConfigMap",
            configmap("app-json", {"creds.json": f'{{"AccessKeyId": "{KEY_ID}", "SecretAccessKey": "{SECRET}"}}'}),
            "creds.json",
            "value is a file setting AccessKeyId, SecretAccessKey",
            id="json",
        ),
        pytest.param(
            "ConfigMap",
            {
                "kind": "ConfigMap",
                "metadata": {"name": "bin", "namespace": "checkout-prod"},
                "binaryData": {"blob": b64(f"junk {KEY_ID} junk")},
            },
            "blob",
            "value contains an AKIA… access key id",
            id="binarydata",
        ),
    ],
)
def test_scan_objects_flags(kind: str, obj: dict[str, Any], keys: str, why: str) -> None:
    found = scan_objects(kind, [obj, secret("clean", {"password": "x"})])
    assert len(found) == 1
    f = found[0]
    name = obj["metadata"]["name"]
    assert f.check == "static_credentials"
    assert f.summary.startswith(f"{kind} checkout-prod/{name} holds AWS credentials in key")
    assert f.summary.endswith(keys)
    assert f.details == {"kind": kind, "namespace": "checkout-prod", "name": name, "keys": keys}
    assert why in f.seen
    assert "Invariant 1 — No Static AWS Credentials in Workloads" in f.likely
    assert_no_secret(found)
    if kind == "Secret":
        assert f.next_steps == (f"kubectl -n checkout-prod describe secret {name}",)
    else:
        assert f.next_steps[0].startswith(f"kubectl -n checkout-prod get configmap {name} -o go-template=")
        assert ".data}}{{$k}}" in f.next_steps[0]  # keys only, never values


def test_scan_objects_undecodable_base64_is_read_as_text() -> None:
    obj = {"kind": "Secret", "metadata": {"name": "odd"}, "data": {"x": f"not base64 {KEY_ID}"}}
    found = scan_objects("Secret", [obj])
    assert found[0].summary == "Secret default/odd holds AWS credentials in key x"


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        pytest.param("Secret", secret("legacy", {"aws.key": KEY_ID, "aws.secret": SECRET}), id="secret-data"),
        pytest.param(
            "Secret", secret("legacy", string_data={"aws.key": KEY_ID, "aws.secret": f" {SECRET}\n"}), id="stringdata"
        ),
        pytest.param("ConfigMap", configmap("legacy", {"aws.key": KEY_ID, "aws.secret": SECRET}), id="configmap"),
    ],
)
def test_scan_objects_names_a_key_pair_under_any_names(kind: str, obj: dict[str, Any]) -> None:
    found = scan_objects(kind, [obj])
    f = found[0]
    assert len(found) == 1
    assert f.details["keys"] == "aws.key, aws.secret"
    assert f.summary == f"{kind} checkout-prod/legacy holds AWS credentials in keys aws.key, aws.secret"
    assert (
        "aws.secret: value is shaped like a secret access key (40 characters), beside the access key id in aws.key"
        in f.seen
    )
    assert_no_secret(found)


def test_scan_objects_flags_one_value_holding_a_key_pair() -> None:
    found = scan_objects("Secret", [secret("legacy", {"creds.txt": f"key {KEY_ID}\nsecret {SECRET}\n"})])
    f = found[0]
    assert f.details["keys"] == "creds.txt"
    assert "value also holds a 40-character string shaped like a secret access key: a key pair" in f.seen
    assert_no_secret(found)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"aws.secret": SECRET}, id="no-key-id-anywhere"),
        pytest.param({"checksum": HEX_DIGEST, "token": "x" * 40}, id="digest-and-token"),
        pytest.param({"sig": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFy"}, id="base64-40-chars"),
    ],
)
def test_scan_objects_40_characters_without_a_key_id_pass(data: dict[str, str]) -> None:
    assert scan_objects("ConfigMap", [configmap("app", data)]) == []
    assert scan_objects("Secret", [secret("app", data)]) == []


@pytest.mark.parametrize(
    ("other", "value"),
    [
        pytest.param("git.commit", HEX_DIGEST, id="hex-digest"),
        pytest.param("git.commit", HEX_DIGEST.upper(), id="upper-hex-digest"),
        pytest.param("note", f"{SECRET}X", id="41-characters"),
        pytest.param("note", f"see {SECRET}", id="inside-text"),
    ],
)
def test_scan_objects_beside_a_key_id_only_a_secret_shaped_value_is_named(other: str, value: str) -> None:
    found = scan_objects("ConfigMap", [configmap("app", {"aws.key": KEY_ID, other: value})])
    assert [f.details["keys"] for f in found] == ["aws.key"]


# --- scan_pod_templates ---------------------------------------------------------------------


def deployment(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "checkout-api", "namespace": "checkout-prod"},
        "spec": {"template": {"spec": {"containers": containers, **spec}}},
    }


CLEAN_CONTAINER = {
    "name": "app",
    "env": [
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "AWS_ACCESS_KEY_ID", "value": ""},
    ],
    "envFrom": [{"secretRef": {"name": "db"}}],
}


def test_clean_templates_pass() -> None:
    objs = [
        deployment([CLEAN_CONTAINER]),
        {"kind": "Service", "metadata": {"name": "svc"}, "spec": {}},
        {"kind": "Deployment", "metadata": {"name": "broken"}},
    ]
    assert scan_pod_templates(objs, flagged={("Secret", "aws")}) == []


@pytest.mark.parametrize(
    ("obj", "seen", "critical"),
    [
        pytest.param(
            deployment([{"name": "app", "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": SECRET}]}]),
            "container app: AWS_SECRET_ACCESS_KEY set to a literal value in the manifest "
            "(AWS_SECRET_ACCESS_KEY is an AWS credential name)",
            True,
            id="literal-secret",
        ),
        pytest.param(
            deployment([{"name": "app", "env": [{"name": "S3_KEY", "value": KEY_ID}]}]),
            "container app: S3_KEY set to a literal value in the manifest "
            "(S3_KEY: value contains an AKIA… access key id (long-lived IAM user key))",
            True,
            id="literal-key-id-any-name",
        ),
        pytest.param(
            deployment(
                [
                    {
                        "name": "app",
                        "env": [
                            {
                                "name": "AWS_ACCESS_KEY_ID",
                                "valueFrom": {"secretKeyRef": {"name": "aws", "key": "id"}},
                            }
                        ],
                    }
                ]
            ),
            "container app: AWS_ACCESS_KEY_ID from Secret aws key id",
            False,
            id="value-from-secret",
        ),
        pytest.param(
            deployment(
                [
                    {
                        "name": "app",
                        "env": [{"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "accessKeyId"}}}],
                    }
                ]
            ),
            "container app: KEY from ConfigMap c key accessKeyId",
            False,
            id="value-from-configmap-key",
        ),
        pytest.param(
            deployment([{"name": "app", "envFrom": [{"secretRef": {"name": "aws"}}]}]),
            "container app: envFrom Secret aws, which holds AWS credentials",
            False,
            id="env-from-flagged",
        ),
        pytest.param(
            deployment(
                [{"name": "app", "volumeMounts": [{"name": "creds", "mountPath": "/root/.aws"}]}],
                volumes=[{"name": "creds", "secret": {"secretName": "aws"}}],
            ),
            "container app: mounts Secret aws (holds AWS credentials) at /root/.aws",
            False,
            id="mounted-secret",
        ),
        pytest.param(
            deployment(
                [{"name": "app", "volumeMounts": [{"name": "all", "mountPath": "/etc/app"}]}],
                volumes=[{"name": "all", "projected": {"sources": [{"configMap": {"name": "app-config"}}]}}],
            ),
            "container app: mounts ConfigMap app-config (holds AWS credentials) at /etc/app",
            False,
            id="projected-configmap",
        ),
        pytest.param(
            deployment(
                [CLEAN_CONTAINER],
                initContainers=[{"name": "init", "env": [{"name": "aws_session_token", "value": "x" * 20}]}],
            ),
            "container init: aws_session_token set to a literal value",
            True,
            id="init-container",
        ),
    ],
)
def test_pod_template_flags(obj: dict[str, Any], seen: str, critical: bool) -> None:
    found = scan_pod_templates([obj], flagged={("Secret", "aws"), ("ConfigMap", "checkout-prod/app-config")})
    assert len(found) == 1
    f = found[0]
    assert f.check == "static_credentials"
    assert f.summary.startswith("Deployment checkout-prod/checkout-api gives its containers static AWS credentials")
    assert f.summary.endswith(" as literal values in the manifest") is critical
    assert f.details == {"severity": "critical" if critical else "high"}
    assert seen in f.seen
    assert "Failure Mode 4 — SDK Ignores Workload Identity" in f.likely
    assert f.next_steps == (
        "kubectl -n checkout-prod get deployment checkout-api -o jsonpath="
        "'{range .spec.template.spec.containers[*]}{.name}: {.env[*].name}{\"\\n\"}{end}'",
    )
    assert_no_secret(found)


def test_pod_template_kinds() -> None:
    env = [{"name": "AWS_ACCESS_KEY_ID", "value": KEY_ID}]
    cron = {
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "jobs"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "env": env}]}}}}},
    }
    pod = {
        "kind": "Pod",
        "metadata": {"name": "debug", "namespace": "jobs"},
        "spec": {"containers": [{"name": "c", "env": env}]},
    }
    found = scan_pod_templates([cron, pod])
    assert [f.summary.split(" gives")[0] for f in found] == ["CronJob jobs/report", "Pod jobs/debug"]
    assert ".spec.jobTemplate.spec.template.spec.containers[*]" in found[0].next_steps[0]
    assert "'{range .spec.containers[*]}" in found[1].next_steps[0]
    assert_no_secret(found)


def test_scan_objects_details_feed_scan_pod_templates() -> None:
    flagged = {(f.details["kind"], f.details["name"]) for f in scan_objects("Secret", [secret("aws", {"id": KEY_ID})])}
    assert flagged == {("Secret", "aws")}
    obj = deployment([{"name": "app", "envFrom": [{"secretRef": {"name": "aws"}}]}])
    assert len(scan_pod_templates([obj], flagged=flagged)) == 1


def test_flagged_in_another_namespace_does_not_match() -> None:
    obj = deployment([{"name": "app", "envFrom": [{"secretRef": {"name": "aws"}}]}])
    assert scan_pod_templates([obj], flagged={("Secret", "other-ns/aws")}) == []
    assert len(scan_pod_templates([obj], flagged={("Secret", "checkout-prod/aws")})) == 1


# --- probe_findings -------------------------------------------------------------------------

CLEAN_ENV: dict[str, Any] = {
    "aws_variables": {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/token",
        "AWS_REGION": "set",
    },
    "token_files": {},
    "aws_files": {
        "credentials": {"path": "/home/probe/.aws/credentials", "present": False},
        "config": {"path": "/home/probe/.aws/config", "present": False},
    },
}
CLEAN_IDENTITY: dict[str, Any] = {
    "method": "container-role",
    "caller": {"arn": "arn:aws:sts::111122223333:assumed-role/eks-prod-checkout-api-s3-read/eks-x"},
    "access_key_prefix": "ASIA",
}


def env_with(**changes: Any) -> dict[str, Any]:
    env = {k: dict(v) if isinstance(v, dict) else v for k, v in CLEAN_ENV.items()}
    for key, value in changes.items():
        env[key] = {**env[key], **value}
    return env


def test_probe_clean() -> None:
    assert probe_findings(PI, CLEAN_ENV, CLEAN_IDENTITY) == []
    irsa_identity = {**CLEAN_IDENTITY, "method": "assume-role-with-web-identity"}
    assert probe_findings(IRSA, {}, irsa_identity) == []


@pytest.mark.parametrize(
    ("environment", "identity", "summary", "likely"),
    [
        pytest.param(
            env_with(aws_variables={"AWS_ACCESS_KEY_ID": "set, prefix AKIA", "AWS_SECRET_ACCESS_KEY": "set"}),
            CLEAN_IDENTITY,
            "static AWS credentials in the pod's environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
            "first provider in the SDK chain",
            id="env-keys",
        ),
        pytest.param(
            env_with(aws_files={"credentials": {"path": "/root/.aws/credentials", "present": True}}),
            CLEAN_IDENTITY,
            "AWS shared files present in the pod: credentials (/root/.aws/credentials)",
            "wins over pod-identity",
            id="credentials-file",
        ),
        pytest.param(
            env_with(aws_files={"config": {"path": "/root/.aws/config", "present": True}}),
            {**CLEAN_IDENTITY, "method": "shared-credentials-file"},
            "AWS shared files present in the pod: config (/root/.aws/config)",
            "took its credentials from this file",
            id="config-file-used",
        ),
        pytest.param(
            CLEAN_ENV,
            {**CLEAN_IDENTITY, "method": "env"},
            "credentials come from a static source (env)",
            "a static provider earlier in the chain answered",
            id="method-env",
        ),
        pytest.param(
            CLEAN_ENV,
            {**CLEAN_IDENTITY, "method": "boto-config"},
            "credentials come from a static source (boto-config)",
            "Failure Mode 4",
            id="method-boto-config",
        ),
        pytest.param(
            CLEAN_ENV,
            {
                "method": "container-role",
                "caller": {"arn": "arn:aws:iam::111122223333:user/legacy/checkout-bot"},
                "access_key_prefix": "AKIA",
            },
            "the pod calls AWS with a long-lived access key (AKIA…)",
            "never expire",
            id="akia-caller",
        ),
    ],
)
def test_probe_flags(environment: dict[str, Any], identity: dict[str, Any], summary: str, likely: str) -> None:
    found = probe_findings(PI, environment, identity)
    hits = [f for f in found if f.summary.endswith(summary)]
    assert len(hits) == 1, [f.summary for f in found]
    f = hits[0]
    assert f.check == "static_credentials"
    assert f.summary == f"checkout-api (checkout-prod/checkout-api-aws-sa, pod-identity): {summary}"
    assert likely in f.likely
    assert f.next_steps


def test_probe_env_keys_report_prefix_and_pods_command() -> None:
    env = env_with(aws_variables={"AWS_ACCESS_KEY_ID": "set, prefix AKIA", "AWS_SECRET_ACCESS_KEY": SECRET})
    f = probe_findings(PI, env, CLEAN_IDENTITY)[0]
    assert f.seen == ("set: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, key id prefix AKIA (a long-lived IAM user key)")
    assert '@.spec.serviceAccountName=="checkout-api-aws-sa"' in f.next_steps[0]
    assert f.next_steps[0].startswith("kubectl -n checkout-prod get pods -o jsonpath=")
    assert_no_secret([f])


def test_probe_akia_names_the_user() -> None:
    identity = {
        "method": "env",
        "caller": {"arn": "arn:aws:iam::1:user/legacy/checkout-bot"},
        "access_key_prefix": "AKIA",
    }
    found = probe_findings(PI, CLEAN_ENV, identity)
    assert [f.summary.split(": ", 1)[1] for f in found] == [
        "credentials come from a static source (env)",
        "the pod calls AWS with a long-lived access key (AKIA…)",
    ]
    assert found[1].next_steps == ("aws iam list-access-keys --user-name checkout-bot",)


def test_probe_irsa_files_are_latent() -> None:
    env = env_with(aws_files={"credentials": {"path": "/root/.aws/credentials", "present": True}})
    identity = {**CLEAN_IDENTITY, "method": "assume-role-with-web-identity"}
    f = probe_findings(IRSA, env, identity)[0]
    assert "unused today" in f.likely


# --- legacy_user_findings -------------------------------------------------------------------

NOW = datetime(2026, 7, 3, tzinfo=UTC)


def test_legacy_user_clean() -> None:
    keys = [{"AccessKeyId": KEY_ID, "Status": "Inactive", "CreateDate": datetime(2020, 1, 1, tzinfo=UTC)}]
    assert legacy_user_findings("checkout-bot", keys, now=NOW) == []
    assert legacy_user_findings("checkout-bot", [], now=NOW) == []


@pytest.mark.parametrize(
    ("created", "age"),
    [
        (datetime(2026, 6, 3, tzinfo=UTC), ", created 2026-06-03 (30 days ago)"),
        (datetime(2026, 6, 3), ", created 2026-06-03 (30 days ago)"),
        ("2026-06-03T00:00:00Z", ", created 2026-06-03 (30 days ago)"),
        ("yesterday", ""),
        (None, ""),
    ],
)
def test_legacy_user_active_key(created: Any, age: str) -> None:
    keys = [
        {"AccessKeyId": KEY_ID, "Status": "Active", "CreateDate": created},
        {"AccessKeyId": "AKIAI44QH8DHBEXAMPLE", "Status": "Inactive"},
    ]
    found = legacy_user_findings("checkout-bot", keys, now=NOW)
    assert len(found) == 1
    f = found[0]
    assert f.check == "static_credentials"
    assert f.summary == "IAM user checkout-bot still has an active access key AKIA…MPLE"
    assert f.seen == f"access key AKIA…MPLE Active{age}"
    assert f.details == {"key": "AKIA…MPLE"}
    assert f.next_steps == (
        f"aws iam get-access-key-last-used --access-key-id {KEY_ID}",
        f"aws iam update-access-key --user-name checkout-bot --access-key-id {KEY_ID} --status Inactive",
    )
    head = "\n".join(line for line in f.message().splitlines() if not line.lstrip().startswith("next:"))
    assert KEY_ID not in head  # the full id only in the commands


def test_legacy_user_default_now() -> None:
    found = legacy_user_findings("u", [{"AccessKeyId": KEY_ID, "Status": "Active", "CreateDate": datetime(2020, 1, 1)}])
    assert "days ago" in found[0].seen
