"""Hollow nodes: probe pods that run no process of their own, for benchmarks of the runner.

The approach of Kubernetes' own scalability tests (kubemark's hollow nodes, kwok): the nodes and
their pods' lifecycle are real to the API server, the work inside the pods is not repeated. Here:

- the **first** probe pod of each *template* runs the real probe program as a local process, as
  every pod does on the ordinary kubelet; its result is the template's;
- every later pod of the same template runs no process: once its start latency is over and its
  volumes are written (its projected token minted, as for any pod), its result is the template's,
  with every step whose answer depends on the pod's identity done again for real, in-process, for this
  pod: its environment is audited (``program.audit_environment``, its token files' claims), the agent is
  asked with its own token (``program.check_agent``), its credentials are obtained by botocore's own
  provider for the template's credential method from the pod's environment (the Pod Identity agent with
  the pod's token, or STS ``AssumeRoleWithWebIdentity`` with it, or its static keys), the caller is asked
  of STS with them, the plan's AWS calls are made with them and classified (``program.run_actions``, with
  clients that hold this pod's credentials), and the proof is a fresh presigned ``GetCallerIdentity``
  bound to the pod's own nonce, as ``program.prove_identity`` makes it.
- Where that cannot stand for the pod (a credential method not reproduced, no credentials for this pod,
  a template without working credentials and this pod another identity, the agent answering otherwise,
  an AWS variable or proxy the in-process calls would not honour, the template's pod without a result),
  the pod runs the real probe after all.

A template is what decides a probe's result and is not redone per pod: the node, and the pod spec as
admitted (image, command, the plan, the webhooks' variables and volumes) without what names the identity
(the ServiceAccount, the namespace, IRSA's ``AWS_ROLE_ARN`` value: the variable's presence stays, it
decides the credential method), the plan's per-pod ``nonce`` and ``workload`` name, the random absent key
of a safe ``s3:DeleteObject`` and the projected tokens' lifetimes (the Pod Identity webhook jitters them
per pod). A pod whose variables come from a ConfigMap or Secret keeps its namespace in the key. What the
adaptation does not repeat per pod: the IMDS step (the node's) and every step's timing (``seconds`` are
the template's run's).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pytest_eksid import botocore_data
from pytest_eksid.probe import program
from pytest_eksid.probe.pod import ResultVersionError, parse_result

Obj = dict[str, Any]

# botocore's credential methods whose per-pod path the hollow kubelet reproduces, with botocore's own providers
# [boto/botocore@0e6e2404 botocore/credentials.py:953-1020 (AssumeRoleWithWebIdentityCredentialFetcher),
# 1185 (EnvProvider), 2068 (ContainerProvider)].
ADAPTED_METHODS = ("env", "assume-role-with-web-identity", "container-role")
HOLLOW_NOTE = "eksid-sandbox hollow pod: "
# Pod variables whose value names the identity, not how the probe gets it: left out of the template key.
IDENTITY_VARIABLES = ("AWS_ROLE_ARN",)
# The AWS variables of a pod that the adaptation honours, in-process: the credential providers' own (fed the
# pod's environment), the endpoints (passed to each client), the region (the plan names it; the probe passes
# it to every client), IMDS's (the node's step, not redone). Any other AWS variable (AWS_MAX_ATTEMPTS,
# AWS_CA_BUNDLE, AWS_ENDPOINT_URL_S3, AWS_PROFILE, ...) or a proxy changes how botocore calls AWS in the pod:
# such a pod runs the real probe.
HONOURED_AWS_VARIABLES = frozenset(
    {
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_STS_REGIONAL_ENDPOINTS",  # chooses STS's endpoint only where no endpoint URL is given
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_SESSION_NAME",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_DISABLED",
    }
)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_ABSENT_KEY_RE = re.compile(r"eksid-absent-[0-9a-f]{8}")


def probe_plan(pod: Obj) -> Obj | None:
    """The probe plan in the pod's first container (``EKSID_PROBE_PLAN``), or None: not a probe pod."""
    containers = (pod.get("spec") or {}).get("containers") or []
    for item in (containers[0].get("env") or []) if containers else []:
        if item.get("name") == program.PLAN_VARIABLE and "value" in item:
            try:
                plan = json.loads(str(item["value"]))
            except ValueError:
                return None
            return plan if isinstance(plan, dict) else None
    return None


def template_key(pod: Obj, node: str) -> str | None:
    """What decides a probe pod's result but is not redone per pod, as one string; None for a pod that is not
    a probe pod. The pod's identity is not part of it (its ServiceAccount, its namespace, IRSA's role ARN):
    every step that depends on the identity is redone per pod (``HollowProbes.adapt``)."""
    if probe_plan(pod) is None:
        return None
    spec = copy.deepcopy(pod.get("spec") or {})
    for name in ("nodeName", "serviceAccountName", "serviceAccount"):
        spec.pop(name, None)
    container = spec["containers"][0]
    for item in container.get("env") or []:
        if item.get("name") == program.PLAN_VARIABLE:
            plan = json.loads(str(item["value"]))
            plan.pop("nonce", None)
            plan.pop("workload", None)
            # The safe DeleteObject's absent key is random per plan (probe/actions.py); any absent key will do.
            item["value"] = _ABSENT_KEY_RE.sub("eksid-absent-*", json.dumps(plan, sort_keys=True))
        elif item.get("name") in IDENTITY_VARIABLES and "value" in item:
            item["value"] = "*"  # the variable's presence decides the credential method; its value, only whose
    for volume in spec.get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            if isinstance(source.get("serviceAccountToken"), dict):
                source["serviceAccountToken"].pop("expirationSeconds", None)
    # A variable taken from a ConfigMap or Secret has its namespace's value: then the namespace stays.
    by_reference = container.get("envFrom") or any("valueFrom" in item for item in container.get("env") or [])
    namespace = (pod.get("metadata") or {}).get("namespace") if by_reference else None
    return json.dumps({"namespace": namespace, "node": node, "spec": spec}, sort_keys=True)


class Timers:
    """Callbacks due at a time of ``clock``, run by one thread: a pod waiting out its start latency holds
    no thread. ``threaded=False`` runs none by itself: a test advances its clock and calls ``run_due``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, threaded: bool = True) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="hollow-timers", daemon=True)
            self._thread.start()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        with self._changed:
            heapq.heappush(self._heap, (self.clock() + max(0.0, delay), next(self._order), callback))
            self._changed.notify()

    def pending(self) -> int:
        with self._changed:
            return len(self._heap)

    def _pop_due(self) -> list[Callable[[], None]]:
        now = self.clock()
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def run_due(self) -> int:
        """Run every callback due now, in the caller's thread; how many ran."""
        with self._changed:
            due = self._pop_due()
        for callback in due:
            callback()
        return len(due)

    def _loop(self) -> None:
        while True:
            with self._changed:
                if self._stopped:
                    return
                due = self._pop_due()
                if not due:
                    wait = self._heap[0][0] - self.clock() if self._heap else None
                    self._changed.wait(wait)
                    continue
            for callback in due:
                callback()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._heap.clear()
            self._changed.notify_all()


@dataclass
class _Template:
    leader: str  # namespace/name of the pod whose real probe run is the template's result
    done: bool = False
    result: Obj | None = None  # the leader's result, its proof removed; None once done: it had none
    waiters: list[Callable[[], None]] = field(default_factory=list)


class HollowProbes:
    """The templates seen, their real runs' results, and the per-pod adaptation of a result."""

    def __init__(self, remember: Callable[[str], None] = lambda _secret: None) -> None:
        self.remember = remember  # the secret ledger (cloud.Iam.remember): told each proof this kubelet signs
        self._lock = threading.Lock()
        self._templates: dict[str, _Template] = {}
        self._session: Any = None
        self._clients: dict[tuple[str, str], Any] = {}
        self._slots: list[_Slot] = []  # free slots for the action clients of pods (_PodClients)
        self.real_runs = 0  # probe processes started (template leaders and fallbacks)
        self.adapted = 0  # pods that ran no process

    def join(self, key: str, pod: str, waiter: Callable[[], None]) -> bool:
        """Take part in a template: True when this pod is its first (it runs the real probe); else
        ``waiter`` is called once the template's result is known (at once when it is)."""
        with self._lock:
            template = self._templates.get(key)
            if template is None:
                self._templates[key] = _Template(pod)
                self.real_runs += 1
                return True
            if not template.done:
                template.waiters.append(waiter)
                return False
        waiter()
        return False

    def settle(self, key: str, log: str | None) -> None:
        """The template's real run ended with this log (None: it did not end, e.g. deleted): its result
        is taken, and the pods waiting for it go on."""
        result = _parse(log) if log is not None else None
        if result is not None:
            identity = result.get("identity")
            if isinstance(identity, dict):
                identity.pop("proof", None)  # the leader's bearer proof: never reused, never kept
                identity.pop("proof_failure", None)
        with self._lock:
            template = self._templates[key]
            template.done, template.result = True, result
            waiters, template.waiters = template.waiters, []
        for waiter in waiters:
            waiter()

    def result(self, key: str) -> Obj | None:
        with self._lock:
            template = self._templates.get(key)
            return copy.deepcopy(template.result) if template is not None and template.result is not None else None

    def leader(self, key: str) -> str:
        with self._lock:
            return self._templates[key].leader

    def fallback(self) -> None:
        with self._lock:
            self.real_runs += 1

    def adapt(self, template: Obj, env: Mapping[str, str]) -> tuple[str | None, str]:
        """(this pod's result line, why) from the template's result, or (None, why not) when the
        template cannot stand for this pod and it must run the real probe.

        Every step whose answer depends on the pod's identity is redone here for this pod: its environment,
        the agent's answer to its token, its credentials, the caller, the proof, and the planned AWS calls
        with its credentials (``program.run_actions``). What stays the template's: the IMDS step (the node's),
        the credential method (the same variables and image make botocore's chain take the same provider) and
        the steps' ``seconds``."""
        plan = json.loads(env.get(program.PLAN_VARIABLE) or "{}")
        result = copy.deepcopy(template)
        result["workload"] = plan.get("workload")
        template_environment = result.get("environment")
        own = program.audit_environment(env)
        if isinstance(template_environment, dict) and "error" not in template_environment:
            # The image's ~/.aws files are the template's (same image); their path is under this pod's HOME.
            own["aws_files"] = {
                label: {"path": path, "present": os.path.exists(path)}
                for label, entry in (template_environment.get("aws_files") or {}).items()
                for path in [_rehome(str(entry.get("path", "")), env)]
            }
            result["environment"] = own
        agent = result.get("agent")
        if isinstance(agent, dict) and "error" not in agent:
            seen = program.check_agent(env)
            if (seen.get("outcome"), seen.get("http_status"), seen.get("error_code")) != (
                agent.get("outcome"),
                agent.get("http_status"),
                agent.get("error_code"),
            ):
                return None, f"the agent answered this pod otherwise ({seen.get('outcome')}, {seen.get('http_status')})"
            result["agent"] = seen
        identity = result.get("identity")
        if isinstance(identity, dict) and identity.get("caller"):
            why = _unreproduced(env, template_environment)
            if why:
                return None, why
            credentials, why = self._identity(identity, plan, env)
            if credentials is None:
                return None, why
            if "actions" in result:
                result["actions"] = self._actions(plan, identity, credentials, env)
        elif isinstance(identity, dict) and _identity_inputs(own) != _identity_inputs(template_environment):
            # The template found no working credentials; whether this pod would is a question of its own.
            return None, "the template's pod had no working credentials, and this pod is another identity"
        return program.RESULT_MARKER + json.dumps(result, sort_keys=True), "adapted"

    def _identity(
        self, identity: Obj, plan: Obj, env: Mapping[str, str]
    ) -> tuple[tuple[str, str, str | None] | None, str]:
        """Make ``identity`` this pod's: its own credentials, caller and proof. (this pod's credentials, "")
        when done, else (None, why the template cannot stand for this pod)."""
        method = str(identity.get("method") or "")
        if method not in ADAPTED_METHODS:
            return None, f"credential method {method or 'none'} is not reproduced per pod"
        region = str(plan.get("region") or "")
        endpoint = env.get("AWS_ENDPOINT_URL_STS") or env.get("AWS_ENDPOINT_URL") or ""
        try:
            access_key, secret_key, token = self._credentials(method, env, region, endpoint)
            sts = self._client(
                "sts",
                region,
                endpoint,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                aws_session_token=token,
            )
            caller = sts.get_caller_identity()
        except Exception as exc:  # the pod would not have had these credentials: let it find out for real
            return None, f"this pod's credentials: {type(exc).__name__}"
        identity["caller"] = {"arn": caller["Arn"], "account": caller["Account"], "user_id": caller["UserId"]}
        identity["access_key_prefix"] = access_key[:4]
        nonce = plan.get("nonce")
        if nonce:
            proof = program.prove_identity(plan, sts)  # the probe's own signing, with this pod's credentials
            # A bearer secret the sandbox made (a real probe's is made in the pod; STS learns it when sent).
            self.remember(parse_qs(urlsplit(proof).query).get("X-Amz-Signature", [""])[0])
            identity["proof"] = proof
        return (access_key, secret_key, token), ""

    def _credentials(
        self, method: str, env: Mapping[str, str], region: str, endpoint: str
    ) -> tuple[str, str, str | None]:
        """The pod's credentials by botocore's own provider for ``method``, from the pod's environment."""
        from botocore.credentials import (
            AssumeRoleWithWebIdentityCredentialFetcher,
            ContainerProvider,
            EnvProvider,
        )
        from botocore.utils import FileWebIdentityTokenLoader

        if method == "assume-role-with-web-identity":
            from botocore import UNSIGNED
            from botocore.config import Config

            unsigned = self._client("sts", region, endpoint, config=Config(signature_version=UNSIGNED))
            session_name = env.get("AWS_ROLE_SESSION_NAME")
            fetcher = AssumeRoleWithWebIdentityCredentialFetcher(
                client_creator=lambda *_a, **_k: unsigned,
                web_identity_token_loader=FileWebIdentityTokenLoader(env["AWS_WEB_IDENTITY_TOKEN_FILE"]),
                role_arn=env["AWS_ROLE_ARN"],
                extra_args={"RoleSessionName": session_name} if session_name else None,
            )
            fetched = fetcher.fetch_credentials()
            return str(fetched["access_key"]), str(fetched["secret_key"]), fetched.get("token")
        provider = ContainerProvider(environ=dict(env)) if method == "container-role" else EnvProvider(environ=env)
        credentials = provider.load()
        if credentials is None:
            raise LookupError("no credentials")
        frozen = credentials.get_frozen_credentials()
        return str(frozen.access_key), str(frozen.secret_key), frozen.token

    def _actions(
        self, plan: Obj, identity: Obj, credentials: tuple[str, str, str | None], env: Mapping[str, str]
    ) -> Any:
        """The plan's calls made with this pod's credentials, by the probe's own ``program.run_actions``."""
        slot = self._take_slot(credentials)
        clients = _PodClients(slot, env, str(plan.get("region") or ""))
        budget = float(plan.get("step_seconds", 50))
        reusable = False
        try:
            actions = program.run_actions(plan, identity, deadline=time.monotonic() + budget, session=clients)
            # A call past the step's budget is left running on its own thread (program._bounded), and its retries
            # would sign with the next pod's keys: such a slot is dropped, not reused.
            reusable = not any(isinstance(a, dict) and a.get("code") == "StepTimeout" for a in actions)
            return actions
        except Exception as exc:  # as the probe's own step wrapper records a step that raised
            return {"error": program._error(exc)}
        finally:
            if reusable:
                self._give_slot(slot)

    def _take_slot(self, credentials: tuple[str, str, str | None]) -> _Slot:
        """A slot of action clients, now signing with ``credentials``, for one pod until _give_slot."""
        with self._lock:
            slot = self._slots.pop() if self._slots else _Slot(self._lock)
        slot.sign_as(credentials)
        return slot

    def _give_slot(self, slot: _Slot) -> None:
        slot.sign_as(("", "", None))  # nothing signs as the last pod while the slot waits
        with self._lock:
            self._slots.append(slot)

    def _client(self, service: str, region: str, endpoint: str, **kwargs: Any) -> Any:
        """A botocore client; one shared unsigned STS client per (region, endpoint) (``config`` alone given),
        a new one per credentials (botocore sessions are not thread-safe: clients are made under the lock,
        then used freely)."""
        shared = set(kwargs) == {"config"}
        with self._lock:
            if shared and (region, endpoint) in self._clients:
                return self._clients[(region, endpoint)]
            if self._session is None:
                self._session = _bounded_session()
            client = self._session.create_client(service, region_name=region, endpoint_url=endpoint or None, **kwargs)
            if shared:
                self._clients[(region, endpoint)] = client
            return client


def _bounded_session() -> Any:
    """A botocore session whose clients bound every call, as the probe's session does (program._session), so
    that no hollow pod's adaptation (on the kubelet's pool) can wait minutes on an endpoint that went away."""
    import botocore.session
    from botocore.config import Config

    session = botocore_data.shared(botocore.session.Session())
    session.set_default_client_config(
        Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
    )
    return session


class _Slot:
    """Action clients that one hollow pod at a time uses, signing with that pod's credentials.

    Making a botocore client costs milliseconds of CPU (its class, its endpoint rules, its event hooks), and a
    pod's plan asks for several: made anew for each pod, they were a third of the emulated cluster's CPU at a
    thousand workloads. A slot's clients come from a session of its own whose one ``Credentials`` object the
    clients' signer reads at every request (``RequestSigner.get_auth_instance`` calls ``get_frozen_credentials()``
    each time it signs [boto/botocore 1.44.18 botocore/signers.py:300-313]), so setting that object's keys makes
    every call of the pod signed as the pod, as its own clients would sign. The kubelet keeps as many slots as
    pods adapt at once. The identity step's STS client is still made per pod: the proof registers a handler on
    it (``program.prove_identity``)."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock  # botocore sessions are not thread-safe: clients are made under the kubelet's lock
        self.session = _bounded_session()
        self.session.set_credentials("unset", "unset")
        self.credentials = self.session.get_credentials()
        self.clients: dict[tuple[str, str, str, str], Any] = {}

    def sign_as(self, credentials: tuple[str, str, str | None]) -> None:
        self.credentials.access_key, self.credentials.secret_key, self.credentials.token = credentials

    def client(self, service: str, region: str, endpoint: str, config: Any) -> Any:
        key = (service, region, endpoint, repr(sorted(vars(config).items())) if config is not None else "")
        with self._lock:
            if key not in self.clients:
                self.clients[key] = self.session.create_client(
                    service, region_name=region, endpoint_url=endpoint or None, config=config
                )
            return self.clients[key]


class _PodClients:
    """What ``program.run_actions`` asks of a botocore session (``create_client``), for one hollow pod:
    clients with this pod's endpoint, from a slot that signs with this pod's credentials (_Slot)."""

    def __init__(self, slot: _Slot, env: Mapping[str, str], region: str) -> None:
        self._slot = slot
        self._env = env
        self._region = region

    def create_client(self, service_name: str, region_name: str | None = None, config: Any = None) -> Any:
        endpoint = (self._env.get("AWS_ENDPOINT_URL_STS") if service_name == "sts" else None) or self._env.get(
            "AWS_ENDPOINT_URL", ""
        )
        return self._slot.client(service_name, region_name or self._region, endpoint, config)


def _unreproduced(env: Mapping[str, str], environment: Any) -> str:
    """Why the in-process calls would not be the ones this pod's botocore makes, or "" when they would."""
    if not env.get("AWS_ENDPOINT_URL"):
        return "no AWS_ENDPOINT_URL: the pod's clients would resolve AWS's endpoints, the kubelet's would too"
    for name in sorted(env):
        if name.startswith("AWS_") and name not in HONOURED_AWS_VARIABLES:
            return f"{name} changes how botocore calls AWS in the pod; not reproduced per pod"
        if name.upper() in PROXY_VARIABLES and env[name]:
            return f"{name}: the pod's calls go through a proxy; not reproduced per pod"
    files = (environment or {}).get("aws_files") if isinstance(environment, dict) else None
    if isinstance(files, dict) and (files.get("config") or {}).get("present"):
        return "the image's ~/.aws/config may change how botocore calls AWS; not reproduced per pod"
    return ""


def _identity_inputs(environment: Any) -> Any:
    """What of a pod's environment decides whose credentials its probe gets: IRSA's role ARN and the subject
    of each token file (its namespace and ServiceAccount). None where the environment step has no answer."""
    if not isinstance(environment, dict) or "error" in environment:
        return None
    tokens = environment.get("token_files") or {}
    return (
        (environment.get("aws_variables") or {}).get("AWS_ROLE_ARN"),
        sorted((name, json.dumps(entry.get("claims", {}).get("sub"))) for name, entry in tokens.items()),
    )


def _parse(log: str) -> Obj | None:
    """The template pod's result as the runner reads it (probe/pod.parse_result); None for any other version."""
    try:
        result = parse_result(log)
    except ResultVersionError:
        return None
    return dict(result) if result is not None else None


def _rehome(path: str, env: Mapping[str, str]) -> str:
    """A path under the template pod's HOME (``.../pods/<uid>/home/...``), under this pod's HOME instead."""
    marker = "/home/"
    home = env.get("HOME", "")
    if marker in path and home:
        return home + "/" + path.rsplit(marker, 1)[1]
    return path
