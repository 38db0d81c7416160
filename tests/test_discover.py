"""--eksid-discover: a starter profile from the cluster — derived contracts, hostile cluster data, round trip, and
discover -> run on the sandbox (clean passes; wrong-role and excess-permissions fail the intended tests)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_eksid.discover import comment_text, discover, render
from pytest_eksid.iam.contract import Contract, derive
from pytest_eksid.kube import KubeError
from pytest_eksid.profile import ProfileError, load_profile
from tests import test_faults as fault_table
from tests.helpers import REPO
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest

REGION, ACCOUNT = "eu-west-1", "111122223333"
BUCKET = "arn:aws:s3:::company-finance"
QUEUE = f"arn:aws:sqs:{REGION}:{ACCOUNT}:invoices"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/5e1f0c2a-7b3d-4c9e-8a61-2f4d9b0e7c13"


def contract(*statements: dict[str, Any]) -> Contract:
    return derive({"inline": {"Version": "2012-10-17", "Statement": list(statements)}}, region=REGION, account=ACCOUNT)


def allow(action: Any, resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def pairs(entries: list[Any]) -> set[tuple[str, str]]:
    return {(e.action, e.resource) for e in entries}


# --- derivation: statements -> allow / deny ------------------------------------------------------------


def test_a_prefix_grant_is_probed_inside_it_and_a_write_beside_it_and_a_delete_are_denied() -> None:
    c = contract(allow("s3:PutObject", f"{BUCKET}/invoices/*", Sid="Write"))
    assert pairs(c.allow) == {("s3:PutObject", f"{BUCKET}/invoices/eksid-probe")}
    assert pairs(c.deny) == {
        ("s3:PutObject", f"{BUCKET}/eksid-probe-outside-granted-prefixes/eksid-probe"),
        ("s3:DeleteObject", f"{BUCKET}/invoices/eksid-probe"),
    }
    why = {e.action: e.why for e in c.deny}
    assert "grants writes under invoices/* only" in why["s3:PutObject"]
    assert "destructive" in why["s3:DeleteObject"]
    assert "inline#Write" in c.allow[0].why
    # the permissions-management and other destructive actions the catalogue cannot probe: a note, no entry
    assert any("s3:PutBucketPolicy" in n and "no safe probe" in n for n in c.notes)


def test_no_write_beside_a_prefix_when_another_grant_covers_the_whole_bucket() -> None:
    c = contract(allow("s3:PutObject", [f"{BUCKET}/invoices/*", f"{BUCKET}/*"]))
    assert not [e for e in c.deny if e.action == "s3:PutObject"]


def test_a_kms_grant_through_a_service_only_is_no_allow_and_direct_use_is_denied() -> None:
    via = {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}}
    c = contract(allow(["kms:Decrypt", "kms:GenerateDataKey"], KEY, Condition=via))
    assert c.allow == []
    assert pairs(c.deny) == {("kms:Decrypt", KEY), ("kms:GenerateDataKey", KEY)}
    assert all(f"only through s3.{REGION}.amazonaws.com (kms:ViaService)" in e.why for e in c.deny)


def test_a_kms_grant_without_via_service_is_allowed_directly() -> None:
    c = contract(allow("kms:Decrypt", KEY))
    assert pairs(c.allow) == {("kms:Decrypt", KEY)}
    assert ("kms:Decrypt", KEY) not in pairs(c.deny)


def test_send_only_denies_receive_and_send_with_receive_does_not() -> None:
    send_only = contract(allow("sqs:SendMessage", QUEUE))
    assert pairs(send_only.allow) == {("sqs:SendMessage", QUEUE)}
    assert pairs(send_only.deny) == {("sqs:ReceiveMessage", QUEUE)}
    assert "only sending" in send_only.deny[0].why
    both = contract(allow(["sqs:SendMessage", "sqs:ReceiveMessage"], QUEUE))
    assert pairs(both.allow) == {("sqs:SendMessage", QUEUE), ("sqs:ReceiveMessage", QUEUE)}
    assert both.deny == []


def test_a_grant_on_every_resource_is_probed_on_a_stand_in_of_the_service_and_says_so() -> None:
    c = contract(allow("sqs:SendMessage", "*"))
    stand_in = f"arn:aws:sqs:{REGION}:{ACCOUNT}:eksid-probe"
    assert pairs(c.allow) == {("sqs:SendMessage", stand_in)}
    assert "stand-in" in c.allow[0].why
    assert pairs(c.deny) == {("sqs:ReceiveMessage", stand_in)}


def test_region_and_account_wildcards_take_the_clusters() -> None:
    c = contract(allow("sqs:SendMessage", "arn:aws:sqs:*:*:jobs-*"))
    assert pairs(c.allow) == {("sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:jobs-eksid-probe")}


def test_a_destructive_action_granted_through_a_wildcard_is_denied_and_says_it_fails_until_narrowed() -> None:
    c = contract(allow("s3:*", f"{BUCKET}/reports/*", Sid="Debug"))
    deny = {e.action: e for e in c.deny}
    assert "s3:DeleteObject" in deny
    assert "only through a wildcard (inline#Debug)" in deny["s3:DeleteObject"].why
    assert ("s3:DeleteObject", f"{BUCKET}/reports/eksid-probe") not in pairs(c.allow)
    assert ("s3:GetObject", f"{BUCKET}/reports/eksid-probe") in pairs(c.allow)  # not destructive: allowed


def test_a_destructive_action_the_policy_names_is_intended() -> None:
    c = contract(allow(["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"], f"{BUCKET}/tmp/*"))
    assert ("s3:DeleteObject", f"{BUCKET}/tmp/eksid-probe") in pairs(c.allow)
    assert not [e for e in c.deny if e.action == "s3:DeleteObject"]
    assert not [n for n in c.notes if "not probed" in n and "s3:DeleteObjectVersion" in n]
    # named by another statement whose resource covers this one: intended here too, even beside a wildcard
    both = contract(allow("s3:*", f"{BUCKET}/tmp/*"), allow("s3:DeleteObject", f"{BUCKET}/*"))
    assert not [e for e in both.deny if e.action == "s3:DeleteObject"]


def test_not_action_and_not_resource_statements_are_notes_not_entries() -> None:
    c = contract(
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*", "Sid": "Broad"},
        {"Effect": "Allow", "Action": "sqs:SendMessage", "NotResource": QUEUE},
    )
    assert c.allow == []
    assert c.deny == []
    assert any("inline#Broad allows with NotAction" in n for n in c.notes)
    assert any("NotResource" in n for n in c.notes)


def test_a_deny_statement_becomes_a_deny_entry_and_a_conditional_one_a_note() -> None:
    c = contract(
        allow("s3:GetObject", f"{BUCKET}/*"),
        {"Sid": "NoPayroll", "Effect": "Deny", "Action": "s3:GetObject", "Resource": f"{BUCKET}/payroll/*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    )
    deny = {(e.action, e.resource): e.why for e in c.deny}
    assert (
        "the role's own Deny statement inline#NoPayroll forbids it"
        in deny[("s3:GetObject", f"{BUCKET}/payroll/eksid-probe")]
    )
    assert any("a condition" in n for n in c.notes)


def test_actions_outside_the_catalogue_and_entries_needing_params_are_notes() -> None:
    c = contract(
        allow("sns:Publish", f"arn:aws:sns:{REGION}:{ACCOUNT}:topic"),
        allow("dynamodb:GetItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/orders"),
    )
    assert c.allow == []
    assert any("sns:Publish" in n and "no safe probe" in n for n in c.notes)
    assert any("dynamodb:GetItem" in n and "write the entry by hand" in n for n in c.notes)


def test_other_conditions_are_said_on_the_allow_entry() -> None:
    c = contract(allow("sqs:SendMessage", QUEUE, Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    assert "conditions (aws:sourceip)" in c.allow[0].why


# --- the cluster side, with plain data ----------------------------------------------------------------


class FakeKube:
    def __init__(self, service_accounts: list[dict[str, Any]], controllers: dict[str, list[dict[str, Any]]]) -> None:
        self.service_accounts = service_accounts
        self.controllers = controllers
        self.listed: list[str] = []

    def all_service_accounts(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.service_accounts)

    def workloads(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        assert label_selector == ""
        self.listed.append(namespace)
        if namespace == "locked":
            raise KubeError("list Deployments in locked: Forbidden", 403, "Forbidden")
        return copy.deepcopy(self.controllers.get(namespace, []))


class FakeAws:
    def __init__(self, associations: list[dict[str, Any]], policies: dict[str, dict[str, Any]]) -> None:
        self.associations = associations
        self.policies = policies

    def all_associations(self, cluster: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.associations)

    def role_policies(self, name: str) -> dict[str, dict[str, Any]]:
        return {"inline": self.policies[name]} if name in self.policies else {}


OWNER_LABEL = "platform.mycompany.io/identity-owner"
INPUT = """\
cluster:
  name: prod-a
  region: eu-west-1
  accountId: "111122223333"
probe:
  image: probe:1
ignore:
  - namespace: kube-system
    reason: platform add-ons
workloads: []
"""


def sa(namespace: str, name: str, role: str | None = None, owner: Any = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "name": name, "labels": {}}
    if role is not None:
        meta["annotations"] = {"eks.amazonaws.com/role-arn": role}
    if owner is not None:
        meta["labels"][OWNER_LABEL] = owner
    return {"metadata": meta}


def deployment(name: str, service_account: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": service_account,
                    "containers": [{"name": "app", "env": [{"name": "DB_PASSWORD", "value": "hunter2-not-written"}]}],
                },
            },
        },
    }


def discovered(tmp_path: Path, kube: FakeKube, aws: FakeAws, text: str = INPUT) -> tuple[str, Path]:
    source = tmp_path / "input.yaml"
    source.write_text(text)
    loaded = load_profile(str(source), tmp_path, discovering=True)
    out = tmp_path / "starter.yaml"
    out.write_text(render(discover(loaded, kube, aws)))
    return out.read_text(), out


def test_every_bound_service_account_is_declared_and_the_file_loads(tmp_path: Path) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/orders-api"
    kube = FakeKube(
        [
            sa("shop", "orders-api-sa", role, owner="shop-team"),
            sa("shop", "unbound"),
            sa("kube-system", "ebs-csi", f"arn:aws:iam::{ACCOUNT}:role/ebs"),
        ],
        {"shop": [deployment("orders-api", "orders-api-sa", {"app": "orders"})]},
    )
    aws = FakeAws(
        [
            {
                "associationId": "a-1",
                "namespace": "jobs",
                "serviceAccount": "exporter",
                "roleArn": f"arn:aws:iam::{ACCOUNT}:role/exporter",
                "targetRoleArn": "arn:aws:iam::444455556666:role/reports",
            }
        ],
        {"orders-api": {"Statement": [allow("sqs:SendMessage", QUEUE)]}},
    )
    text, out = discovered(tmp_path, kube, aws)
    loaded = load_profile(str(out), tmp_path)  # the round trip: a valid profile, without --eksid-discover
    by_name = {w.name: w for w in loaded.profile.workloads}
    assert sorted(by_name) == ["exporter", "orders-api"]
    orders = by_name["orders-api"]
    assert (orders.namespace, orders.service_account, orders.mechanism) == ("shop", "orders-api-sa", "irsa")
    assert (orders.role_arn, orders.owner, orders.selector) == (role, "shop-team", "app=orders")
    assert [(c.action, c.resource) for c in orders.allow] == [("sqs:SendMessage", QUEUE)]
    assert [(c.action, c.resource) for c in orders.deny] == [("sqs:ReceiveMessage", QUEUE)]
    exporter = by_name["exporter"]
    assert exporter.mechanism == "pod-identity"
    assert exporter.target_role_arn == "arn:aws:iam::444455556666:role/reports"
    assert exporter.owner is None
    assert exporter.selector is None
    assert "# left out kube-system/ebs-csi: ignored (platform add-ons)" in text
    assert "no owner label" in text
    assert "# only sending to this queue" not in text  # the why is one whole comment line above the entry
    lines = text.splitlines()
    receive = next(i for i, line in enumerate(lines) if "sqs:ReceiveMessage" in line)
    assert lines[receive - 1].strip().startswith("# inline#0 grants only sending to this queue")
    assert loaded.profile.ignore[0].reason == "platform add-ons"  # the input's own sections, copied
    assert "hunter2" not in text  # nothing of a pod template but labels and its ServiceAccount


def test_a_namespace_the_runner_may_not_read_is_noted_not_fatal(tmp_path: Path) -> None:
    kube = FakeKube([sa("locked", "app", f"arn:aws:iam::{ACCOUNT}:role/app")], {})
    text, out = discovered(tmp_path, kube, FakeAws([], {}))
    assert "# could not list Deployments/StatefulSets in locked (403 Forbidden)" in text
    assert [w.name for w in load_profile(str(out), tmp_path).profile.workloads] == ["app"]


def test_both_mechanisms_on_one_service_account_are_one_migrating_workload(tmp_path: Path) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/app"
    kube = FakeKube([sa("app", "app", role)], {})
    aws = FakeAws([{"associationId": "a-2", "namespace": "app", "serviceAccount": "app", "roleArn": role}], {})
    _, out = discovered(tmp_path, kube, aws)
    (w,) = load_profile(str(out), tmp_path).profile.workloads
    assert (w.mechanism, w.migration) == ("pod-identity", True)


HOSTILE = "x\n# injected\nworkloads: []\n\u2028\u202e\x1b[31m: {a: b}"
YAML_SPECIAL = "team: {a: [b]} # not a comment, 'q' \"d\" &anchor *alias !tag | > % @ `"


def test_hostile_cluster_strings_stay_values_and_comments_stay_one_line(tmp_path: Path) -> None:
    good = f"arn:aws:iam::{ACCOUNT}:role/app"
    kube = FakeKube(
        [
            sa("app", "app", good, owner=YAML_SPECIAL),
            sa("app", "worker", f"{good}-worker", owner=HOSTILE),
            sa("app", "bad-role", f"{good}\nsandbox: {{}}"),  # an annotation no role ARN matches
        ],
        {"app": [deployment("app", "app", {"app": "x,evil=1", "tier": "web\n# no"})]},
    )
    aws = FakeAws(
        [
            {
                "associationId": HOSTILE,
                "namespace": "app",
                "serviceAccount": "other",
                "roleArn": "arn:aws:iam::1:role/\n-",
            }
        ],
        {"app": {"Statement": [allow("s3:PutObject", f"{BUCKET}/{HOSTILE}/*", Sid=HOSTILE)]}},
    )
    text, out = discovered(tmp_path, kube, aws)
    for line in text.splitlines():
        assert line.isascii(), repr(line)
        assert line.isprintable(), repr(line)
        assert not line.lstrip().startswith("# injected")
    document = yaml.safe_load(text)
    assert set(document) == {"cluster", "probe", "ignore", "workloads"}
    w, worker = load_profile(str(out), tmp_path).profile.workloads
    assert w.owner == YAML_SPECIAL  # the value itself, quoted by the emitter
    assert w.selector is None  # no label syntax: the default selector, not a broken one
    assert worker.owner is None  # not printable text: no value, an escaped comment
    assert "left out: x\\x0a# injected\\x0aworkloads: []" in text
    assert "left out app/bad-role" in text
    assert "left out app/other" in text
    assert all(HOSTILE not in c.resource for c in w.allow) or w.allow == []


def test_comment_text_escapes_every_line_break_yaml_knows() -> None:
    for brk in ("\n", "\r", "\x85", "\u2028", "\u2029"):
        assert brk not in comment_text(f"a{brk}b")
    assert comment_text("a\nb") == "a\\x0ab"


def test_a_profile_without_workloads_is_refused_unless_discovering(tmp_path: Path) -> None:
    path = tmp_path / "bare.yaml"
    path.write_text(INPUT)
    with pytest.raises(ProfileError, match=r"workloads: List should have at least 1 item.*--eksid-discover"):
        load_profile(str(path), tmp_path)
    assert load_profile(str(path), tmp_path, discovering=True).profile.workloads == []


# --- discover -> run, on the sandbox -------------------------------------------------------------------


@pytest.fixture(scope="module")
def starter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starter profile discovered from the clean demo sandbox (once for this module)."""
    tmp = tmp_path_factory.mktemp("discover")
    out = tmp / "starter.yaml"
    found = run_pytest("--profile", "demo", f"--eksid-discover={out}", tmp_path=tmp)
    assert found.returncode == 0, found.stdout[-4000:] + found.stderr[-2000:]
    assert f"eksid: wrote {out}: 2 workload identities" in found.stdout
    assert found.outcomes == {}  # no check ran
    return out


def test_discover_on_the_clean_sandbox_then_run_the_starter(starter: Path, tmp_path: Path) -> None:
    loaded = load_profile(str(starter), REPO).profile
    assert {(w.name, w.mechanism, w.owner) for w in loaded.workloads} == {
        ("invoice-exporter", "pod-identity", "finance-team"),
        ("billing-worker", "irsa", "billing-team"),
    }
    text = starter.read_text()
    assert "kms:ViaService): a direct call must be denied" in text
    assert loaded.sandbox == demo_data()["sandbox"]  # copied as written

    run = run_pytest(f"--profile={starter}", tmp_path=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:]
    assert run.failed() == []
    actions = [k for k in run.outcomes if "test_action[" in k]
    assert len(actions) == sum(len(w.allow) + len(w.deny) for w in loaded.workloads) >= 8
    assert all(run.outcomes[k] == "passed" for k in actions), actions
    # The same starter against faults: test_the_starter_catches_the_workload_faults_of_the_fault_table.


# What a discovered profile says differently from the hand-written demo: each workload's binding, its allow/deny
# lists, its deployers, its selector (which pod templates and running pods are the workload's: the template,
# agent-reachability, static-credential and exec checks, and the probe's placement) and its owner. The fault
# table's rows judged by those (their expected failures include one of these tests) run against the starter,
# in one run; the other rows' verdicts (the trust policy, the namespace's Secrets and ConfigMaps, the legacy
# IAM user a person names) read nothing discovery wrote, and tests/test_faults.py runs them on the demo.
READS_DISCOVERED = {
    "test_action",
    "test_permission_policy",
    "test_binding",
    "test_caller_role",
    "test_who_can_become",
    "test_pod_templates",
    "test_pods_reach_the_agent_directly",
    "test_running_containers",
    "test_dedicated_service_account",
    "test_owner_label",
}
STARTER_BATCH = "starter-workload-faults"


def starter_rows() -> tuple[str, ...]:
    """The workload rows whose expected failures include a test that reads what discovery wrote."""
    return tuple(
        sorted(
            name
            for name, row in fault_table.FAULTS.items()
            if row.on is not None
            and {t.split("::")[1].split("[")[0] for t in row.expected(fault_table.at_of(STARTER_BATCH, name))}
            & READS_DISCOVERED
        )
    )


def test_the_starter_rows_are_those_judged_by_what_discovery_writes() -> None:
    rows = starter_rows()
    # Both mechanisms' bindings, the permission rows, the identity rows, the deployers, the rows judged through the
    # selector (templates, running pods) and the owner are among them ...
    assert {"wrong-role", "missing-annotation", "excess-permissions", "kms-via-service-missing"} <= set(rows)
    assert {"missing-association", "extra-deployer", "host-network", "static-keys-in-env"} <= set(rows)
    assert {"missing-owner-label", "default-service-account", "webhook-cache-miss"} <= set(rows)
    # ... and rows judged by the trust policy, the namespace's objects or a hand-named legacy user are not.
    assert not {"wildcard-trust-sub", "missing-aud-condition", "static-keys-in-secret"} & set(rows)
    assert not {"static-keys-in-configmap", "legacy-user-active-key"} & set(rows)


def test_the_starter_catches_the_fault_table_rows_it_is_judged_by(
    starter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/test_faults.py's rows of starter_rows(), in one run, with the starter's workload entries in place of
    the hand-written demo's: every test a row expects to fail fails. The one hand edit is what no cluster can
    tell: the demo's legacyIamUser (an IAM user the workload used before). The starter's allow/deny lists differ
    from the demo's, so a row's permission expectations are held loosely: where it expects a workload's action
    tests to fail, at least one of them fails."""
    data = yaml.safe_load(starter.read_text())
    for workload in data["workloads"]:
        demo = next(w for w in demo_data()["workloads"] if w["name"] == workload["name"])
        if "legacyIamUser" in demo:
            workload["legacyIamUser"] = demo["legacyIamUser"]
    monkeypatch.setattr(fault_table, "demo_data", lambda: copy.deepcopy(data))
    rows = starter_rows()
    monkeypatch.setattr(fault_table, "batches", lambda: {STARTER_BATCH: rows})
    path = write_profile(tmp_path, fault_table.batch_profile(STARTER_BATCH), STARTER_BATCH)
    run = run_pytest(f"--profile={path}", "--eksid-exec", tmp_path=tmp_path)
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    assert "INTERNALERROR" not in run.stdout + run.stderr
    failed = set(run.failed())
    for row in rows:
        expected = set(fault_table.FAULTS[row].expected(fault_table.at_of(STARTER_BATCH, row)))
        exact = {t for t in expected if not t.startswith(fault_table.ACTION)}
        assert exact <= failed, f"{row}: not caught: {sorted(exact - failed)}\n{run.stdout[-4000:]}"
        for workload in {t.split("[", 1)[1].split("/")[1] for t in expected if t.startswith(fault_table.ACTION)}:
            own = [t for t in failed if t.startswith(f"{fault_table.ACTION}[{STARTER_BATCH}/{workload}/")]
            assert own, f"{row}: no action test of {workload} failed\n{run.stdout[-4000:]}"


def test_discovery_input_and_output_mistakes_are_usage_errors(tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text(INPUT)
    without = run_pytest(f"--profile={bare}", tmp_path=tmp_path)
    assert without.returncode == 4, without.stdout + without.stderr
    assert "workloads: List should have at least 1 item" in without.stderr
    assert "run with --eksid-discover PATH" in without.stderr
    onto_input = run_pytest(f"--profile={bare}", f"--eksid-discover={bare}", tmp_path=tmp_path)
    assert onto_input.returncode == 4
    assert "that is the input profile" in onto_input.stderr
    two = run_pytest(
        f"--profile={bare}", "--profile=demo", f"--eksid-discover={tmp_path / 'x.yaml'}", tmp_path=tmp_path
    )
    assert two.returncode == 4
    assert "pass exactly one --profile" in two.stderr
    assert bare.read_text() == INPUT
