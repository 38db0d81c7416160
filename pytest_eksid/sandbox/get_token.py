"""``python -m pytest_eksid.sandbox.get_token --cluster-name NAME``: what ``aws eks get-token`` prints.

A kubeconfig exec plugin (``client.authentication.k8s.io/v1beta1``) for the sandbox's kubeconfig, so the
sandbox's runner authenticates as EKS users do without the AWS CLI (whose botocore pin fights boto3's). As the
CLI does [aws/aws-cli@05c1ed9f awscli/customizations/eks/get_token.py]: botocore presigns STS
``GetCallerIdentity`` (GET, 60 s) with the ``x-k8s-aws-id`` header set to the cluster name before signing; the
token is ``k8s-aws-v1.`` + unpadded base64url of the URL; the ExecCredential's ``expirationTimestamp`` is 14
minutes on (STS honours the URL for 15). Credentials, region and ``AWS_ENDPOINT_URL`` come from botocore's
usual chain. The token is a bearer secret: it is printed only to stdout, for the client that ran the plugin.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import sys
from typing import Any

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
URL_TIMEOUT = 60
TOKEN_EXPIRATION = datetime.timedelta(minutes=14)
API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


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


def exec_credential(sts: Any, cluster_name: str, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The ExecCredential object ``aws eks get-token`` prints (the API version the client asked for)."""
    expires = (now or datetime.datetime.now(datetime.UTC)) + TOKEN_EXPIRATION
    try:
        asked = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}").get("apiVersion")
    except (ValueError, AttributeError):
        asked = None
    return {
        "kind": "ExecCredential",
        "apiVersion": asked if asked in API_VERSIONS else "client.authentication.k8s.io/v1beta1",
        "spec": {},
        "status": {"expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "token": token(sts, cluster_name)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_eksid.sandbox.get_token", description=__doc__)
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument("--region", default=None)
    # As the AWS CLI's --profile: a profile set on the session drops the environment's keys from the chain.
    parser.add_argument("--profile", default=None)
    args = parser.parse_args(argv)
    import botocore.session

    sts = botocore.session.Session(profile=args.profile).create_client("sts", region_name=args.region)
    sys.stdout.write(json.dumps(exec_credential(sts, args.cluster_name)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
