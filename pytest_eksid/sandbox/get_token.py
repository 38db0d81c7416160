"""``python -m pytest_eksid.sandbox.get_token --cluster-name NAME``: what ``aws eks get-token`` prints.

A kubeconfig exec plugin (``client.authentication.k8s.io/v1beta1``) for the sandbox's kubeconfig, so the
sandbox's runner authenticates as EKS users do without the AWS CLI (whose botocore pin fights boto3's). As the
CLI does [aws/aws-cli@05c1ed9f awscli/customizations/eks/get_token.py]: botocore presigns STS
``GetCallerIdentity`` (GET, 60 s) with the ``x-k8s-aws-id`` header set to the cluster name before signing; the
token is ``k8s-aws-v1.`` + unpadded base64url of the URL; the ExecCredential's ``expirationTimestamp`` is 14
minutes on (STS honours the URL for 15). Credentials, region and ``AWS_ENDPOINT_URL`` come from botocore's
usual chain. The token is a bearer secret: it is printed only to stdout, for the client that ran the plugin.

Unlike ``aws eks get-token``, which signs anew on every run, this plugin may keep its last credential in a
0600 file (``--cache-file``; the sandbox's kubeconfig names one in its private work directory) and print it
again while more than ``REUSE_MARGIN`` of its announced life is left. Nothing but cost differs: every kubectl
run executes the plugin (twice for ``kubectl exec``: the pod read and the stream each authenticate), and a
run that checks N workloads with ``--eksid-exec`` makes a few kubectl runs per workload, so importing botocore
and signing each time cost ~0.25 s of CPU per kubectl run, most of a faulted test run's CPU. The cache is keyed
by the arguments, the endpoint and the credentials file's bytes (a rotated key signs a fresh token), and the
emulated STS still checks every token when it is used (a deleted key's token is refused as it would be).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
URL_TIMEOUT = 60
TOKEN_EXPIRATION = datetime.timedelta(minutes=14)
API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# A cached credential is printed again only while this much of its announced 14 minutes is left. The Python
# kubernetes client runs the plugin again 5 minutes before a credential's expirationTimestamp
# (kubernetes/config/kube_config.py EXPIRY_SKEW_PREVENTION_DELAY) and kubectl at it: a margin above those 5
# minutes hands either a credential it keeps, and a reused token is at most 8 minutes old when printed and
# 14 when last used, inside the 15 minutes STS honours it.
REUSE_MARGIN = datetime.timedelta(minutes=6)


def presigned_url(sts: Any, cluster_name: str) -> str:
    """A presigned GetCallerIdentity URL whose signature covers ``x-k8s-aws-id: cluster_name``."""

    def take_id(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if CLUSTER_ID_HEADER in params:
            context[CLUSTER_ID_HEADER] = params.pop(CLUSTER_ID_HEADER)

    def add_header(request: Any, **_: Any) -> None:
        if CLUSTER_ID_HEADER in request.context:
            request.headers[CLUSTER_ID_HEADER] = request.context[CLUSTER_ID_HEADER]

    sts.meta.events.register("provide-client-params.sts.GetCallerIdentity", take_id)
    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_header)
    return str(
        sts.generate_presigned_url(
            "get_caller_identity", Params={CLUSTER_ID_HEADER: cluster_name}, ExpiresIn=URL_TIMEOUT, HttpMethod="GET"
        )
    )


def token(sts: Any, cluster_name: str) -> str:
    url = presigned_url(sts, cluster_name)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def _envelope(status: dict[str, Any]) -> dict[str, Any]:
    """The ExecCredential around ``status``, in the API version the client asked for."""
    try:
        asked = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}").get("apiVersion")
    except (ValueError, AttributeError):
        asked = None
    return {
        "kind": "ExecCredential",
        "apiVersion": asked if asked in API_VERSIONS else "client.authentication.k8s.io/v1beta1",
        "spec": {},
        "status": status,
    }


def exec_credential(sts: Any, cluster_name: str, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The ExecCredential object ``aws eks get-token`` prints (the API version the client asked for)."""
    expires = (now or datetime.datetime.now(datetime.UTC)) + TOKEN_EXPIRATION
    return _envelope({"expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "token": token(sts, cluster_name)})


def cache_key(argv: list[str], env: dict[str, str] | None = None) -> str:
    """What a cached credential must have been made from: the arguments, the endpoint, the credentials file
    (``env``: the plugin's environment, this process's by default)."""
    env = dict(os.environ) if env is None else env
    digest = hashlib.sha256("\0".join(argv).encode())
    digest.update(b"\0" + env.get("AWS_ENDPOINT_URL", "").encode() + b"\0")
    credentials = env.get("AWS_SHARED_CREDENTIALS_FILE")
    if credentials:
        try:
            digest.update(Path(credentials).read_bytes())
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest()


def key_arguments(cluster_name: str, region: str | None, profile: str | None) -> list[str]:
    return [cluster_name, region or "", profile or ""]


def cached(path: Path, key: str, now: datetime.datetime) -> dict[str, Any] | None:
    """The cached status for ``key`` if at least REUSE_MARGIN of it is left; else None."""
    try:
        entry = json.loads(path.read_text())
        status = entry["status"]
        expires = datetime.datetime.strptime(status["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if entry.get("key") != key or not isinstance(status.get("token"), str):
        return None
    if expires.replace(tzinfo=datetime.UTC) - now < REUSE_MARGIN:
        return None
    return {"expirationTimestamp": status["expirationTimestamp"], "token": status["token"]}


def store(path: Path, key: str, status: dict[str, Any]) -> None:
    """Write the entry atomically, readable by its owner only (a token is a bearer secret)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".get-token-")  # mode 0600
    with os.fdopen(fd, "w") as fh:
        json.dump({"key": key, "status": status}, fh)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_eksid.sandbox.get_token", description=__doc__)
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument("--region", default=None)
    # As the AWS CLI's --profile: a profile set on the session drops the environment's keys from the chain.
    parser.add_argument("--profile", default=None)
    parser.add_argument("--cache-file", type=Path, default=None, help="reuse the last credential kept here")
    args = parser.parse_args(argv)
    now = datetime.datetime.now(datetime.UTC)
    key = cache_key(key_arguments(args.cluster_name, args.region, args.profile))
    status = cached(args.cache_file, key, now) if args.cache_file is not None else None
    if status is None:
        import botocore.session  # only here: the import is most of the plugin's cost

        sts = botocore.session.Session(profile=args.profile).create_client("sts", region_name=args.region)
        status = exec_credential(sts, args.cluster_name, now)["status"]
        if args.cache_file is not None:
            with contextlib.suppress(OSError):  # a cache that cannot be written costs a signature, not the login
                store(args.cache_file, key, status)
    sys.stdout.write(json.dumps(_envelope(status)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
