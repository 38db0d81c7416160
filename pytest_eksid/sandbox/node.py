"""A worker node: its kubelet, its instance metadata service and its Pod Identity agent.

The kubelet runs each pod's container command as a local OS process with the environment a
container would get (the pod spec's ``env`` plus the node's network settings) and the projected
service-account tokens written to files; its output is the pod log, its exit the pod phase.
Mount paths cannot be created on the host, so a variable whose value lies under a volume's
mount path is rewritten to the file's host path (the pod spec keeps the real path).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pytest_eksid.sandbox.cloud import Iam
from pytest_eksid.sandbox.eks import EksControlPlane
from pytest_eksid.sandbox.kubeapi.errors import ApiError
from pytest_eksid.sandbox.kubeapi.store import Store, now_rfc3339
from pytest_eksid.sandbox.tokens import Issuer, TokenError, audiences
from pytest_eksid.sandbox.trust import trust_allows
from pytest_eksid.sandbox.webhooks import AGENT_ADDRESSES, PI_AUDIENCE

Obj = dict[str, Any]
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# An image reference: [registry[:port]/]path[:tag][@digest], lowercase path.
_IMAGE_RE = re.compile(
    r"^(?:[\w.-]+(?::\d+)?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


class _Http:
    """A small threaded HTTP server on a free loopback port."""

    def __init__(
        self, name: str, handler: Callable[[BaseHTTPRequestHandler, str], tuple[int, dict[str, str], bytes] | None]
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _go(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                answer = handler(self, method)
                if answer is None:  # drop the request without a reply, like a hop-limited IMDS
                    self.close_connection = True
                    return
                code, headers, body = answer
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._go("GET")

            def do_PUT(self) -> None:
                self._go("PUT")

        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), name=name, daemon=True)
        _ = outer

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _json(code: int, body: Obj | str) -> tuple[int, dict[str, str], bytes]:
    if isinstance(body, str):
        return code, {"Content-Type": "text/plain"}, body.encode()
    return code, {"Content-Type": "application/json"}, json.dumps(body).encode()


class Imds:
    """IMDS of one node, as a pod on it sees it.

    The recommended node setting (hop limit 1, HttpTokens=required) is the default: the v2 token
    PUT gets no reply (the hop limit drops it) and v1 GETs are refused (401). ``v2_exposed``: hop
    limit 2, so pods get a token and the node role's credentials. ``v1_exposed``: HttpTokens
    optional, so a plain GET serves the credentials."""

    def __init__(
        self, iam: Iam, node_role_arn: str | None, *, v1_exposed: bool = False, v2_exposed: bool = False
    ) -> None:
        self.iam = iam
        self.node_role_arn = node_role_arn
        self.v1_exposed = v1_exposed
        self.v2_exposed = v2_exposed
        self.http = _Http("eksid-imds", self._handle)
        self._tokens: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> tuple[int, dict[str, str], bytes] | None:
        path = req.path.split("?")[0]
        if method == "PUT" and path == "/latest/api/token":
            if not self.v2_exposed:
                self.http.stopping.wait(30)  # the reply never reaches the pod
                return None
            token = uuid.uuid4().hex
            self._tokens.add(token)
            return _json(200, token)
        if method != "GET":
            return _json(405, "Method Not Allowed")
        v2_token = req.headers.get("x-aws-ec2-metadata-token")
        if v2_token not in self._tokens and not self.v1_exposed:
            return _json(401, "Unauthorized")
        prefix = "/latest/meta-data/iam/security-credentials/"
        role_name = (self.node_role_arn or "").rsplit("/", 1)[-1]
        if path == prefix.rstrip("/") or path == prefix:
            return _json(200, role_name) if role_name else _json(404, "Not Found")
        if path == prefix + role_name and role_name and self.node_role_arn:
            creds = self.iam.mint(self.node_role_arn, f"i-{uuid.uuid4().hex[:17]}")
            return _json(
                200,
                {
                    "Code": "Success",
                    "LastUpdated": now_rfc3339(),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": creds.access_key_id,
                    "SecretAccessKey": creds.secret_access_key,
                    "Token": creds.session_token,
                    "Expiration": creds.iso_expiration(),
                },
            )
        return _json(404, "Not Found")


def _agent_text(code: int, text: str) -> tuple[int, dict[str, str], bytes]:
    """An answer as Go's http.Error writes it: text/plain, nosniff, the text and one newline."""
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
    return code, headers, (text + "\n").encode()


# EKS Auth's errors as the agent passes them on: EKS Auth's status (botocore's eks-auth model,
# boto/botocore@cd9207757d45 botocore/data/eks-auth/2023-11-26/service-2.json) and the body
# "[<request id>]: (<ErrorCode>): <message>, fault: <fault>" (aws/eks-pod-identity-agent@984147edfc34
# pkg/errors/errors.go, HandleCredentialFetchingError). The messages are the sandbox's own.
EKS_AUTH_STATUS = {
    "AccessDeniedException": 400,
    "InvalidTokenException": 400,
    "ResourceNotFoundException": 404,
}


def _eks_auth_error(code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    status = EKS_AUTH_STATUS[code]
    fault = "client" if status < 500 else "server"
    return _agent_text(status, f"[{uuid.uuid4()}]: ({code}): {message}, fault: {fault}")


def _bare_host(host: str) -> str:
    """A Host header without its port and brackets, as the agent names it in its 403."""
    if host.startswith("[") and "]" in host:
        return host[1 : host.index("]")]
    return host.split(":")[0] if host.count(":") == 1 else host


def _unverified_claims(token: str) -> dict[str, Any] | None:
    """The claims as the agent reads them before calling EKS Auth (no signature check), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


class PodIdentityAgent:
    """The eks-pod-identity-agent of one node, with EKS Auth's AssumeRoleForPodIdentity inside.

    Its refusals have the real agent's shapes: 403 for a Host header that is not its address, 400
    for a token it cannot parse or whose exp has passed (the agent checks no signature:
    internal/validation/request.go@1cbbbf4069cc), and EKS Auth's own errors with their status."""

    def __init__(self, iam: Iam, eks: EksControlPlane, issuer: Issuer, *, running: bool = True) -> None:
        self.iam = iam
        self.eks = eks
        self.issuer = issuer
        self.running = running
        self.http = _Http("eksid-agent", self._handle)
        # A stopped agent: its address is held (bound, not listening), so connections are refused.
        self._hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._hold.bind(("127.0.0.1", 0))

    @property
    def port(self) -> int:
        return self.http.port if self.running else int(self._hold.getsockname()[1])

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/credentials"

    def start(self) -> None:
        if self.running:
            self.http.start()

    def stop(self) -> None:
        if self.running:
            self.http.stop()
        else:
            self.http.server.server_close()  # bound at construction, never served
        self._hold.close()

    def _allowed_hosts(self) -> set[str]:
        # EKS: 169.254.170.23 or [fd00:ec2::23]. The sandbox agent listens on loopback instead.
        return {"169.254.170.23", "[fd00:ec2::23]", f"127.0.0.1:{self.port}"}

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> tuple[int, dict[str, str], bytes] | None:
        path = req.path.split("?")[0]
        if path in ("/healthz", "/readyz"):
            return _json(200, "ok")
        if path != "/v1/credentials" or method != "GET":
            return _json(404, "Not Found")
        host = str(req.headers.get("Host") or "")
        if host not in self._allowed_hosts():
            return _agent_text(
                403,
                "Access Denied. Called agent through invalid address, please use either "
                f"[169.254.170.23 fd00:ec2::23] address not {_bare_host(host)}",
            )
        token = str(req.headers.get("Authorization") or "")
        if not token:
            return _agent_text(400, "Service account token cannot be empty")
        unverified = _unverified_claims(token)
        if unverified is None:
            return _agent_text(400, "Service account token cannot be parsed: token is malformed")
        exp = unverified.get("exp")
        if isinstance(exp, (int, float)) and exp < time.time():
            return _agent_text(
                400, "Service account token failed basic claim validations: token has invalid claims: token is expired"
            )
        try:  # EKS Auth verifies the signature and the issuer
            claims = self.issuer.verify(token)
        except TokenError as exc:
            return _eks_auth_error("InvalidTokenException", f"Service account token is invalid: {exc}")
        if PI_AUDIENCE not in audiences(claims):
            return _eks_auth_error("InvalidTokenException", f"Service account token audience is not {PI_AUDIENCE}")
        k8s = claims.get("kubernetes.io", {})
        ns = k8s.get("namespace", "")
        sa = k8s.get("serviceaccount", {}).get("name", "")
        pod = k8s.get("pod", {})
        assoc = self.eks.find_association(ns, sa)
        if assoc is None:
            return _eks_auth_error("ResourceNotFoundException", f"No Pod Identity Association found for {ns}/{sa}")
        trust = self.iam.role_trust(assoc.role_arn)
        actions = ["sts:AssumeRole"] if assoc.disable_session_tags else ["sts:AssumeRole", "sts:TagSession"]
        context = {
            "aws:RequestTag/eks-cluster-arn": [self.eks.arn],
            "aws:RequestTag/eks-cluster-name": [self.eks.name],
            "aws:RequestTag/kubernetes-namespace": [ns],
            "aws:RequestTag/kubernetes-service-account": [sa],
            "aws:RequestTag/kubernetes-pod-name": [str(pod.get("name", ""))],
            "aws:RequestTag/kubernetes-pod-uid": [str(pod.get("uid", ""))],
            "aws:SourceAccount": [self.eks.account_id],
            "aws:SourceArn": [self.eks.arn],
        }
        allowed, reason = (
            (False, "role not found")
            if trust is None
            else trust_allows(trust, principal_kind="Service", principal=PI_AUDIENCE, actions=actions, context=context)
        )
        if not allowed:
            return _eks_auth_error(
                "AccessDeniedException", f"EKS Pod Identity cannot assume {assoc.role_arn}: {reason}"
            )
        session = f"eks-{self.eks.name}-{pod.get('name', '')}-{uuid.uuid4()}"[:64]
        final = assoc.role_arn
        if assoc.target_role_arn:
            # EKS chains to the target role itself; the target must trust the association's role.
            target_trust = self.iam.role_trust(assoc.target_role_arn)
            chained, why = (
                (False, "role not found")
                if target_trust is None
                else trust_allows(
                    target_trust, principal_kind="AWS", principal=assoc.role_arn, actions=actions, context=context
                )
            )
            if not chained:
                return _json(
                    403,
                    {"message": f"AccessDeniedException: cannot assume target role {assoc.target_role_arn}: {why}"},
                )
            final = assoc.target_role_arn
        creds = self.iam.mint(final, session)
        return _json(
            200,
            {
                "AccessKeyId": creds.access_key_id,
                "SecretAccessKey": creds.secret_access_key,
                "Token": creds.session_token,
                "AccountId": final.split(":")[4],
                "Expiration": creds.iso_expiration(),
            },
        )


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    root: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    execs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    deleted: bool = False


@dataclass
class Node:
    name: str
    nodegroup: str
    imds: Imds
    agent: PodIdentityAgent
    labels: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> Obj:
        return {
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",  # the kubelet's own labels, which the agent's affinity reads
                    "eks.amazonaws.com/nodegroup": self.nodegroup,
                    **self.labels,
                },
            },
            "spec": {"providerID": f"aws:///eu-west-1a/i-{uuid.uuid5(uuid.NAMESPACE_DNS, self.name).hex[:17]}"},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "lastHeartbeatTime": now_rfc3339(),
                        "lastTransitionTime": now_rfc3339(),
                    }
                ],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "nodeInfo": {
                    "kubeletVersion": "v1.33.0-eks-sandbox",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "eksid-sandbox://1",
                    "kernelVersion": "",
                    "osImage": "sandbox",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            },
        }


class Kubelet:
    """Runs the pods the scheduler places on the sandbox's nodes."""

    def __init__(
        self,
        store: Store,
        issuer: Issuer,
        nodes: list[Node],
        workdir: Path,
        aws_endpoint: str,
        *,
        start_latency: float = 0.0,
        unpullable_images: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.nodes = nodes
        self.workdir = workdir
        self.aws_endpoint = aws_endpoint
        self.start_latency = start_latency  # seconds between scheduling and the process start
        self.unpullable_images = unpullable_images
        # Files an image carries under its user's home: image -> {path relative to $HOME: content}.
        self.image_home_files: dict[str, dict[str, str]] = {}
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._stopping = threading.Event()
        self.live = 0  # pods whose process runs now
        self.peak = 0  # the most that ever ran at once

    def _event(self, pod: Obj, reason: str, message: str, kind: str = "Normal") -> None:
        meta = pod["metadata"]
        now = now_rfc3339()
        try:
            self.store.create(
                "events",
                meta["namespace"],
                {
                    "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}"},
                    "involvedObject": {
                        "kind": "Pod",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "apiVersion": "v1",
                    },
                    "reason": reason,
                    "message": message,
                    "type": kind,
                    "source": {"component": "kubelet" if reason != "FailedScheduling" else "default-scheduler"},
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "count": 1,
                },
            )
        except Exception:
            return  # the namespace went away: events are best effort, as in Kubernetes

    def _waiting(self, pod: Obj, container: Obj, reason: str, message: str) -> None:
        self._event(pod, "Failed", message, "Warning")
        self._patch(
            pod,
            lambda p: p["status"].update(
                {
                    "phase": "Pending",
                    "containerStatuses": [_status(container, waiting={"reason": reason, "message": message})],
                }
            ),
        )

    def install(self) -> None:
        self.store.on_create.append(self._on_create)
        self.store.on_delete.append(self._on_delete)
        self.store.exec_handler = self.exec

    def _on_create(self, pod: Obj) -> None:
        if MIRROR_ANNOTATION in (pod["metadata"].get("annotations") or {}):
            return  # a mirror pod: its node runs it, not the process runner
        threading.Thread(target=self._run, args=(pod,), name=f"kubelet-{pod['metadata']['name']}", daemon=True).start()

    def _schedule(self, pod: Obj) -> Node | None:
        spec = pod["spec"]
        if spec.get("nodeName"):
            return next((n for n in self.nodes if n.name == spec["nodeName"]), None)
        selector = spec.get("nodeSelector") or {}
        fits = [
            n for n in self.nodes if all(n.manifest()["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]
        if not fits:
            return None
        with self._lock:
            self._next += 1
            return fits[self._next % len(fits)]

    def _patch(self, pod: Obj, change: Callable[[Obj], None]) -> bool:
        meta = pod["metadata"]
        try:
            self.store.update("pods", meta["namespace"], meta["name"], change)
        except Exception:
            return False  # deleted meanwhile
        return True

    def _run(self, pod: Obj) -> None:
        meta = pod["metadata"]
        node = self._schedule(pod)
        if node is None:
            self._event(
                pod,
                "FailedScheduling",
                f"0/{len(self.nodes)} nodes are available: node(s) didn't match Pod's node affinity/selector.",
                "Warning",
            )
            self._patch(
                pod,
                lambda p: p["status"].update(
                    {
                        "conditions": [
                            {
                                "type": "PodScheduled",
                                "status": "False",
                                "reason": "Unschedulable",
                                "message": f"0/{len(self.nodes)} nodes are available: "
                                "node(s) didn't match Pod's node affinity/selector.",
                                "lastTransitionTime": now_rfc3339(),
                            }
                        ]
                    }
                ),
            )
            return
        container = pod["spec"]["containers"][0]
        self._event(pod, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {node.name}")
        self._patch(pod, lambda p: p["spec"].update({"nodeName": node.name}))
        if self.start_latency and self._stopping.wait(self.start_latency):
            return
        image = str(container.get("image") or "")
        if not _IMAGE_RE.match(image):
            self._waiting(
                pod,
                container,
                "InvalidImageName",
                f'Failed to apply default image tag "{image}": invalid reference format',
            )
            return
        if image in self.unpullable_images:
            self._waiting(
                pod,
                container,
                "ErrImagePull",
                f'Failed to pull image "{image}": rpc error: code = NotFound '
                "desc = failed to pull and unpack image: not found",
            )
            return
        self._event(pod, "Pulled", f'Container image "{image}" already present on machine')
        root = self.workdir / "pods" / meta["uid"]
        try:
            mounts = self._volumes(pod, node, root)
            env = self._env(container, node, root, mounts, meta["namespace"])
        except ValueError as exc:
            self._waiting(pod, container, "CreateContainerConfigError", f"Error: {exc}")
            return
        try:
            argv = self._argv(container)
        except ValueError as exc:
            self._waiting(pod, container, "CreateContainerError", f"Error: {exc}")
            return
        log = root / "container.log"
        started = now_rfc3339()

        def scheduled(p: Obj) -> None:
            p["spec"]["nodeName"] = node.name
            p["status"].update(
                {
                    "phase": "Running",
                    "hostIP": "127.0.0.1",
                    "podIP": "127.0.0.1",
                    "startTime": started,
                    "conditions": [
                        {"type": c, "status": "True", "lastTransitionTime": started}
                        for c in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                    ],
                    "containerStatuses": [_status(container, running={"startedAt": started})],
                }
            )

        with self._lock:
            # stop() takes the same lock: a pod whose start races the shutdown never gets a process.
            if self._stopping.is_set() or not self._patch(pod, scheduled):
                return
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=root,
                    env=env,
                    start_new_session=True,
                )
            running = _Running(proc, root, log, env)
            self._running[meta["uid"]] = running
            self.live += 1
            self.peak = max(self.peak, self.live)
        self._event(pod, "Created", f"Created container {container['name']}")
        self._event(pod, "Started", f"Started container {container['name']}")
        deadline = pod["spec"].get("activeDeadlineSeconds")
        try:
            code = proc.wait(timeout=float(deadline) if deadline else None)
            reason = "Completed" if code == 0 else "Error"
            phase_reason = None
        except subprocess.TimeoutExpired:
            _kill(proc)
            code, reason, phase_reason = 137, "Error", "DeadlineExceeded"
        finally:
            with self._lock:
                self.live -= 1
        if running.deleted:
            return
        finished = now_rfc3339()

        def terminated(p: Obj) -> None:
            p["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            if phase_reason:
                p["status"]["reason"] = phase_reason
                p["status"]["message"] = f"Pod was active on the node longer than the specified deadline ({deadline}s)"
            p["status"]["containerStatuses"] = [
                _status(
                    container,
                    terminated={"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished},
                )
            ]
            for c in p["status"].get("conditions", []):
                if c["type"] in ("Ready", "ContainersReady"):
                    c["status"] = "False"

        self._patch(pod, terminated)

    def _volumes(self, pod: Obj, node: Node, root: Path) -> dict[str, Path]:
        """Materialise the pod's volumes; return mountPath -> host dir of the first container."""
        meta, spec = pod["metadata"], pod["spec"]
        sa = self.store.find("serviceaccounts", meta["namespace"], spec["serviceAccountName"]) or {"metadata": {}}
        host_dirs: dict[str, Path] = {}
        for vol in spec.get("volumes") or []:
            d = root / "volumes" / vol["name"]
            d.mkdir(parents=True, exist_ok=True)
            host_dirs[vol["name"]] = d
            for source in (vol.get("projected") or {}).get("sources") or []:
                sat = source.get("serviceAccountToken")
                if sat is None:
                    continue
                token = self.issuer.service_account_token(
                    namespace=meta["namespace"],
                    service_account=spec["serviceAccountName"],
                    sa_uid=str(sa["metadata"].get("uid", "")),
                    pod_name=meta["name"],
                    pod_uid=meta["uid"],
                    node_name=node.name,
                    audience=sat.get("audience") or "https://kubernetes.default.svc",
                    expiration_seconds=int(sat.get("expirationSeconds") or 3600),
                )
                _write_secret(d / sat["path"], token)
        mounts: dict[str, Path] = {}
        for m in spec["containers"][0].get("volumeMounts") or []:
            if m["name"] not in host_dirs:
                raise ValueError(f'volume "{m["name"]}" not found in the pod spec')
            mounts[m["mountPath"].rstrip("/")] = host_dirs[m["name"]]
        return mounts

    def _env(self, container: Obj, node: Node, root: Path, mounts: dict[str, Path], namespace: str) -> dict[str, str]:
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        for relative, content in self.image_home_files.get(str(container.get("image")), {}).items():
            path = home / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_secret(path, content)  # an image's baked-in credentials file
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "HOSTNAME": container.get("name", "container"),
            # The node's network: where AWS and IMDS are. On EKS these are the real endpoints.
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": node.imds.url,
        }
        for item in container.get("env") or []:
            if "value" in item:
                value = str(item.get("value") or "")
            elif "valueFrom" in item:
                value = self._value_from(namespace, item)
            else:
                value = ""
            for mount, host in mounts.items():
                if value == mount or value.startswith(mount + "/"):
                    value = str(host) + value[len(mount) :]
            # The agent's link-local address reaches this node's agent (on loopback here).
            for address in AGENT_ADDRESSES:
                if value.startswith(address):
                    value = f"http://127.0.0.1:{node.agent.port}" + value[len(address) :]
            env[item["name"]] = value
        return env

    def _value_from(self, namespace: str, item: Obj) -> str:
        source = item["valueFrom"]
        for kind, resource in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            ref = source.get(kind)
            if ref is None:
                continue
            obj = self.store.find(resource, namespace, ref.get("name", ""))
            singular = resource.rstrip("s")
            if obj is None:
                if ref.get("optional"):
                    return ""
                raise ValueError(f'{singular} "{ref.get("name")}" not found')
            data = obj.get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    return ""
                raise ValueError(
                    f"couldn't find key {ref.get('key')} in {singular.capitalize()} {namespace}/{ref.get('name')}"
                )
            value = str(data[ref["key"]])
            return base64.b64decode(value).decode("utf-8", "replace") if resource == "secrets" else value
        raise ValueError(f"unsupported valueFrom for {item['name']}: only secretKeyRef and configMapKeyRef")

    def _argv(self, container: Obj) -> list[str]:
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if not argv:
            raise ValueError("the sandbox kubelet runs only containers with an explicit command")
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the image's python: here, the one with botocore
        elif shutil.which(argv[0]) is None:
            raise ValueError(f'exec: "{argv[0]}": executable file not found in $PATH')
        return argv

    def exec(
        self, namespace: str, name: str, container: str | None, argv: list[str], stdio: dict[str, Any]
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` "in" a running pod's container: a local process with the container's
        environment and working directory (``pods/exec``); ``stdio`` are ``Popen`` keywords."""
        pod = self.store.get("pods", namespace, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container is not None and container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        with self._lock:
            running = self._running.get(pod["metadata"]["uid"])
        if running is None or running.process.poll() is not None or container not in (None, names[0]):
            raise ApiError(
                400, "BadRequest", f'unable to upgrade connection: container not found ("{container or names[0]}")'
            )
        argv = [sys.executable if i == 0 and a in ("python", "python3") else a for i, a in enumerate(argv)]
        proc = subprocess.Popen(argv, cwd=running.root, env=running.env, start_new_session=True, **stdio)
        running.execs.append(proc)
        return proc

    def _on_delete(self, pod: Obj) -> None:
        with self._lock:
            running = self._running.pop(pod["metadata"]["uid"], None)
        if running is None:
            return
        running.deleted = True
        _kill(running.process)
        for proc in running.execs:
            _kill(proc)
        shutil.rmtree(running.root, ignore_errors=True)

    def read_log(self, namespace: str, name: str, pod: Obj) -> str:
        with self._lock:
            running = self._running.get(pod["metadata"]["uid"])
        if running is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{pod["spec"]["containers"][0]["name"]}" in pod "{name}" '
                "is waiting to start: ContainerCreating",
            )
        return running.log.read_text(errors="replace")

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        for r in running:
            r.deleted = True
            _kill(r.process)
            for proc in r.execs:
                _kill(proc)


def _status(container: Obj, **state: Obj) -> Obj:
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }


def _write_secret(path: Path, text: str) -> None:
    """A token or credentials file only its owner can read (mode 0600, as the kubelet writes them)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        time.sleep(0)
