"""The action catalogue: plan items for every action, safe vs live forms, and the errors a profile author sees.

Plan parameters are checked against botocore's own service models (the same validation a client
runs before sending), so a catalogue entry that could never reach AWS fails here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.validate import validate_parameters

from pytest_eksid.probe import program
from pytest_eksid.probe.actions import CATALOGUE, GENERIC_HINT, ActionError, check_known, plan_item
from pytest_eksid.profile import ProfileError, load_profile

OBJECT = "arn:aws:s3:::company-finance/invoices/2026/11/29/eksid-probe.pdf"
QUEUE = "arn:aws:sqs:eu-west-1:111122223333:invoice-exported"
KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TABLE = "arn:aws:dynamodb:eu-west-1:111122223333:table/orders"
ITEM_KEY = {"pk": {"S": "order-1"}}

# One valid resource (and params) per catalogue entry.
VALID: dict[str, tuple[str, dict[str, Any]]] = {
    "s3:GetObject": (OBJECT, {}),
    "s3:PutObject": (OBJECT, {}),
    "s3:DeleteObject": (OBJECT, {}),
    "s3:ListBucket": ("arn:aws:s3:::company-finance/invoices/*", {}),
    "sqs:SendMessage": (QUEUE, {}),
    "sqs:ReceiveMessage": (QUEUE, {}),
    "sqs:GetQueueAttributes": (QUEUE, {}),
    "kms:Decrypt": (KMS_KEY, {}),
    "kms:Encrypt": (KMS_KEY, {}),
    "kms:GenerateDataKey": (KMS_KEY, {}),
    "dynamodb:GetItem": (TABLE, {"Key": ITEM_KEY}),
    "dynamodb:Query": (TABLE, {"KeyConditionExpression": "pk = :v", "ExpressionAttributeValues": {":v": {"S": "1"}}}),
    "dynamodb:PutItem": (TABLE, {"Item": {**ITEM_KEY, "total": {"N": "12"}}}),
    "secretsmanager:GetSecretValue": ("arn:aws:secretsmanager:eu-west-1:111122223333:secret:app/db-AbCdEf", {}),
    "ssm:GetParameter": ("arn:aws:ssm:eu-west-1:111122223333:parameter/app/db-host", {}),
    "sts:AssumeRole": ("arn:aws:iam::111122223333:role/reporting", {}),
}
WITH_SAFE_FORM = {
    "s3:PutObject",
    "s3:DeleteObject",
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "dynamodb:PutItem",
}

_SESSION = botocore.session.get_session()


def _item(action: str, *, live: bool, resource: str | None = None, params: dict[str, Any] | None = None) -> Any:
    default_resource, default_params = VALID.get(action, (None, {}))
    return plan_item(
        ident="w/allow/0",
        expect="allowed",
        action=action,
        resource=default_resource if resource is None else resource,
        params=default_params if params is None else params,
        live=live,
        call=None,
    )


def test_every_catalogue_entry_has_a_valid_resource_here() -> None:
    assert set(VALID) == set(CATALOGUE)
    assert {a for a, p in CATALOGUE.items() if p.has_side_effect} == WITH_SAFE_FORM


@pytest.mark.parametrize("live", [False, True], ids=["safe", "live"])
@pytest.mark.parametrize("action", sorted(CATALOGUE))
def test_plan_item_for_every_action(action: str, live: bool) -> None:
    probe = CATALOGUE[action]
    item = _item(action, live=live)
    assert item["id"] == "w/allow/0"
    assert item["expect"] == "allowed"
    assert item["action"] == action
    assert (item["service"], item["operation"]) == (probe.service, probe.operation)
    assert item["authorized_codes"] == list(probe.authorized_codes)
    assert item["bare_403_inconclusive"] is (action == "s3:GetObject")
    assert item["client_config"] == dict(probe.client_config)
    if action in WITH_SAFE_FORM and not live:
        assert item["form"] == "safe"
        assert item["form_note"] == probe.safe
        assert "side effect" not in item["form_note"]
    else:
        assert item["form"] == "live"
        assert item["form_note"] == f"live call; side effect: {probe.side_effect}"
    json.dumps(item)  # the plan travels to the pod as JSON


@pytest.mark.parametrize("live", [False, True], ids=["safe", "live"])
@pytest.mark.parametrize("action", sorted(CATALOGUE))
def test_plan_params_pass_botocore_validation(action: str, live: bool) -> None:
    item = _item(action, live=live)
    model = _SESSION.get_service_model(item["service"])
    assert item["operation"] in model.operation_names
    validate_parameters(program._decode(item["params"]), model.operation_model(item["operation"]).input_shape)
    Config(**item["client_config"])  # every client option exists in this botocore


def test_form_notes_name_the_side_effect_or_the_safe_mechanism() -> None:
    assert _item("s3:PutObject", live=True)["form_note"] == "live call; side effect: writes a 19-byte object at the key"
    assert "BadDigest" in _item("s3:PutObject", live=False)["form_note"]
    assert "nothing is stored" in _item("s3:PutObject", live=False)["form_note"]
    assert _item("s3:DeleteObject", live=True)["form_note"] == "live call; side effect: deletes the object at the key"
    assert "DelaySeconds=901" in _item("sqs:SendMessage", live=False)["form_note"]
    assert "MaxNumberOfMessages=11" in _item("sqs:ReceiveMessage", live=False)["form_note"]
    assert "condition that can never hold" in _item("dynamodb:PutItem", live=False)["form_note"]
    assert (
        _item("kms:Decrypt", live=False)["form_note"] == "live call; side effect: none (KMS DryRun: authorization only)"
    )
    assert "CloudTrail" in _item("sts:AssumeRole", live=False)["form_note"]


def test_s3_put_object_safe_vs_live() -> None:
    live = _item("s3:PutObject", live=True)
    safe = _item("s3:PutObject", live=False)
    body = {"__bytes__": base64.b64encode(b"pytest-eksid probe\n").decode()}
    assert live["params"] == {"Bucket": "company-finance", "Key": "invoices/2026/11/29/eksid-probe.pdf", "Body": body}
    assert safe["params"]["Body"] == body
    digest = base64.b64decode(safe["params"]["ContentMD5"])
    assert len(digest) == 16  # a well-formed MD5, so S3 checks it (BadDigest) rather than rejecting its form
    assert digest != hashlib.md5(b"pytest-eksid probe\n").digest()
    assert safe["client_config"] == {"request_checksum_calculation": "when_required"}


def test_s3_delete_object_safe_form_targets_an_absent_neighbour() -> None:
    live = _item("s3:DeleteObject", live=True)["params"]
    safe = _item("s3:DeleteObject", live=False)["params"]
    assert live == {"Bucket": "company-finance", "Key": "invoices/2026/11/29/eksid-probe.pdf"}
    assert safe["Bucket"] == "company-finance"
    assert safe["Key"].startswith("invoices/2026/11/29/eksid-probe.pdf.eksid-absent-")
    assert len(safe["Key"].rsplit("-", 1)[1]) == 8
    assert safe["Key"] != _item("s3:DeleteObject", live=False)["params"]["Key"]  # random each time


def test_s3_get_and_list_params() -> None:
    assert _item("s3:GetObject", live=False)["params"] == {
        "Bucket": "company-finance",
        "Key": "invoices/2026/11/29/eksid-probe.pdf",
    }
    assert _item("s3:ListBucket", live=False)["params"] == {
        "Bucket": "company-finance",
        "Prefix": "invoices/",
        "MaxKeys": 1,
    }
    bucket_only = _item("s3:ListBucket", live=False, resource="arn:aws:s3:::company-finance")
    assert bucket_only["params"]["Prefix"] == ""
    overridden = _item("s3:ListBucket", live=False, params={"Prefix": "reports/"})
    assert overridden["params"]["Prefix"] == "reports/"


def test_sqs_params() -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/111122223333/invoice-exported"
    assert _item("sqs:SendMessage", live=True)["params"] == {"QueueUrl": url, "MessageBody": "pytest-eksid probe"}
    assert _item("sqs:SendMessage", live=False)["params"] == {
        "QueueUrl": url,
        "MessageBody": "pytest-eksid probe",
        "DelaySeconds": 901,
    }
    assert _item("sqs:ReceiveMessage", live=True)["params"] == {
        "QueueUrl": url,
        "MaxNumberOfMessages": 1,
        "WaitTimeSeconds": 0,
        "VisibilityTimeout": 0,
    }
    assert _item("sqs:ReceiveMessage", live=False)["params"] == {"QueueUrl": url, "MaxNumberOfMessages": 11}
    assert _item("sqs:GetQueueAttributes", live=False)["params"] == {"QueueUrl": url, "AttributeNames": ["QueueArn"]}


def test_kms_params_are_dry_runs_with_bytes_encoded() -> None:
    decrypt = _item("kms:Decrypt", live=True)["params"]
    assert decrypt == {
        "KeyId": KMS_KEY,
        "DryRun": True,
        "CiphertextBlob": {"__bytes__": base64.b64encode(b"\x01" * 64).decode()},
    }
    encrypt = _item("kms:Encrypt", live=True)["params"]
    assert encrypt["Plaintext"] == {"__bytes__": "cHl0ZXN0LWVrc2lk"}  # base64 of b"pytest-eksid"
    assert _item("kms:GenerateDataKey", live=True)["params"] == {"KeyId": KMS_KEY, "DryRun": True, "KeySpec": "AES_256"}


def test_dynamodb_params() -> None:
    assert _item("dynamodb:GetItem", live=False)["params"] == {"TableName": "orders", "Key": ITEM_KEY}
    query = _item("dynamodb:Query", live=False)["params"]
    assert query == {
        "TableName": "orders",
        "Limit": 1,
        "KeyConditionExpression": "pk = :v",
        "ExpressionAttributeValues": {":v": {"S": "1"}},
    }
    live = _item("dynamodb:PutItem", live=True)["params"]
    assert live == {"TableName": "orders", "Item": {**ITEM_KEY, "total": {"N": "12"}}}
    safe = _item("dynamodb:PutItem", live=False)["params"]
    assert safe["Item"] == live["Item"]
    assert safe["ConditionExpression"] == "attribute_exists(#k) AND attribute_not_exists(#k)"
    assert safe["ExpressionAttributeNames"] == {"#k": "pk"}


def test_other_params() -> None:
    secret = VALID["secretsmanager:GetSecretValue"][0]
    assert _item("secretsmanager:GetSecretValue", live=False)["params"] == {"SecretId": secret}
    assert _item("ssm:GetParameter", live=False)["params"] == {"Name": "/app/db-host", "WithDecryption": False}
    role = VALID["sts:AssumeRole"][0]
    assert _item("sts:AssumeRole", live=False)["params"] == {
        "RoleArn": role,
        "RoleSessionName": "pytest-eksid-probe",
        "DurationSeconds": 900,
    }
    with_external = _item("sts:AssumeRole", live=False, params={"ExternalId": "ext-1"})
    assert with_external["params"]["ExternalId"] == "ext-1"


def test_params_an_action_does_not_take_are_refused() -> None:
    # Silently dropping them would probe something else than the profile says.
    with pytest.raises(ActionError, match=r"^sts:AssumeRole takes only ExternalId \(got 'Ignored'\)") as info:
        _item("sts:AssumeRole", live=False, params={"ExternalId": "ext-1", "Ignored": 1})
    assert info.value.loc == ("params", "Ignored")
    with pytest.raises(ActionError, match=r"^s3:GetObject takes no params \(got 'Key'\)"):
        _item("s3:GetObject", live=False, params={"Key": "x"})


@pytest.mark.parametrize(
    ("action", "resource", "expected"),
    [
        ("s3:GetObject", "arn:aws:s3:::company-finance", "arn:aws:s3:::<bucket>/<key>"),
        ("s3:GetObject", "arn:aws:s3:::company-finance/invoices/*", "concrete object key"),
        ("s3:PutObject", "company-finance/key", "arn:aws:s3:::<bucket>[/<key>]"),
        ("s3:DeleteObject", None, "arn:aws:s3:::<bucket>[/<key>]"),
        ("s3:ListBucket", "arn:aws:sqs:eu-west-1:111122223333:q", "arn:aws:s3:::<bucket>[/<key>]"),
        ("sqs:SendMessage", "arn:aws:sns:eu-west-1:111122223333:topic", "arn:aws:sqs:<region>:<account>:..."),
        ("sqs:ReceiveMessage", "invoice-exported", "arn:aws:sqs:<region>:<account>:..."),
        ("kms:Decrypt", "alias/finance", "arn:aws:kms:<region>:<account>:..."),
        ("dynamodb:GetItem", "arn:aws:dynamodb:eu-west-1:111122223333:orders", "table/<name>"),
        ("secretsmanager:GetSecretValue", "app/db", "arn:aws:secretsmanager:<region>:<account>:..."),
        ("ssm:GetParameter", "arn:aws:ssm:eu-west-1:111122223333:document/x", "parameter/<name>"),
        ("sts:AssumeRole", "arn:aws:iam::111122223333:user/bob", "role ARN"),
    ],
)
def test_bad_resource_names_the_expected_arn_shape(action: str, resource: str | None, expected: str) -> None:
    with pytest.raises(ActionError) as info:
        plan_item(
            ident="x",
            expect="allowed",
            action=action,
            resource=resource,
            params=VALID[action][1],
            live=False,
            call=None,
        )
    message = str(info.value)
    assert message.startswith(action)
    assert expected in message
    assert repr(resource) in message


@pytest.mark.parametrize(
    ("action", "missing"),
    [
        ("dynamodb:GetItem", "Key"),
        ("dynamodb:Query", "KeyConditionExpression, ExpressionAttributeValues"),
        ("dynamodb:PutItem", "Item"),
    ],
)
def test_dynamodb_actions_need_params(action: str, missing: str) -> None:
    for live in (False, True):
        with pytest.raises(ActionError, match=rf"^{action} needs params: {missing} \(add them under 'params'\)$"):
            _item(action, live=live, params={})


def test_unknown_action_lists_supported_actions_and_the_generic_form() -> None:
    with pytest.raises(ActionError) as info:
        plan_item(
            ident="x", expect="allowed", action="s3:GetBucketPolicy", resource=None, params={}, live=True, call=None
        )
    message = str(info.value)
    assert message.startswith("no probe for s3:GetBucketPolicy; supported: ")
    supported = message.split("supported: ", 1)[1].split(";", 1)[0]
    assert supported.split(", ") == sorted(CATALOGUE)
    assert message.endswith(GENERIC_HINT)
    assert "call: {service: <botocore service>, operation: <Operation>" in message


def test_check_known() -> None:
    check_known("s3:GetObject", has_call=False)
    check_known("s3:GetBucketPolicy", has_call=True)
    with pytest.raises(ActionError, match=r"^no probe for s3:GetBucketPolicy; supported: .*generic form"):
        check_known("s3:GetBucketPolicy", has_call=False)


def test_generic_form_requires_live() -> None:
    call = {"service": "s3", "operation": "GetBucketPolicy", "params": {"Bucket": "company-finance"}}
    with pytest.raises(
        ActionError, match=r"^s3:GetBucketPolicy: the generic form runs the call for real; set live: true"
    ):
        plan_item(
            ident="x", expect="allowed", action="s3:GetBucketPolicy", resource=None, params={}, live=False, call=call
        )
    item = plan_item(
        ident="x", expect="denied", action="s3:GetBucketPolicy", resource=None, params={}, live=True, call=call
    )
    assert item == {
        "id": "x",
        "expect": "denied",
        "action": "s3:GetBucketPolicy",
        "service": "s3",
        "operation": "GetBucketPolicy",
        "params": {"Bucket": "company-finance"},
        "form": "live",
        "form_note": "generic call, run for real",
        "authorized_codes": [],
        "bare_403_inconclusive": False,
        "client_config": {},
    }
    assert item["params"] is not call["params"]  # a copy: the plan never aliases the profile


def test_generic_form_overrides_a_catalogue_action() -> None:
    call = {"service": "s3", "operation": "HeadObject", "params": {"Bucket": "b", "Key": "k"}}
    item = plan_item(ident="x", expect="allowed", action="s3:GetObject", resource=None, params={}, live=True, call=call)
    assert item["operation"] == "HeadObject"
    assert item["bare_403_inconclusive"] is False


def test_bytes_round_trip_through_the_json_plan() -> None:
    item = _item("kms:Decrypt", live=False)
    wire = json.loads(json.dumps(item))
    decoded = program._decode(wire["params"])
    assert decoded == {"KeyId": KMS_KEY, "DryRun": True, "CiphertextBlob": b"\x01" * 64}
    assert isinstance(decoded["CiphertextBlob"], bytes)
    put = program._decode(json.loads(json.dumps(_item("s3:PutObject", live=True)["params"])))
    assert put["Body"] == b"pytest-eksid probe\n"


def test_decode_recurses_and_leaves_other_values_alone() -> None:
    value = {
        "a": [{"__bytes__": "AAE="}, {"x": 1}],
        "b": {"__bytes__": "AA==", "other": 1},  # not exactly the marker: left as a mapping
        "c": "__bytes__",
    }
    assert program._decode(value) == {
        "a": [b"\x00\x01", {"x": 1}],
        "b": {"__bytes__": "AA==", "other": 1},
        "c": "__bytes__",
    }


# --- at the profile level ------------------------------------------------------------------------

PROFILE = textwrap.dedent(
    """\
    cluster:
      name: live
      region: eu-west-1
      accountId: "111122223333"
    probe:
      image: registry.example.com/eksid-probe:1
    workloads:
      - name: invoice-exporter
        namespace: finance
        serviceAccount: invoice-exporter-aws-sa
        mechanism: pod-identity
        roleArn: arn:aws:iam::111122223333:role/invoice-exporter
        allow:
    {allow}
    """
)


def _write(tmp_path: Path, allow: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE.format(allow=textwrap.indent(textwrap.dedent(allow), "      ")), encoding="utf-8")
    return path


def test_profile_with_catalogue_actions_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        - action: s3:PutObject
          resource: arn:aws:s3:::company-finance/invoices/x.pdf
        - action: dynamodb:GetItem
          resource: arn:aws:dynamodb:eu-west-1:111122223333:table/orders
          params: {Key: {pk: {S: "1"}}}
        - action: s3:GetBucketPolicy
          live: true
          call: {service: s3, operation: GetBucketPolicy, params: {Bucket: company-finance}}
        """,
    )
    loaded = load_profile(str(path), tmp_path)
    checks = loaded.profile.workloads[0].allow
    assert [c.plan_item(f"i{n}", "allowed")["form"] for n, c in enumerate(checks)] == ["safe", "live", "live"]
    assert checks[1].plan_item("i", "allowed")["params"] == {"TableName": "orders", "Key": {"pk": {"S": "1"}}}
    assert checks[2].plan_item("i", "allowed")["operation"] == "GetBucketPolicy"


def _error_line(tmp_path: Path, allow: str) -> str:
    path = _write(tmp_path, allow)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid profile (1 problem)")
    [line] = [ln for ln in message.splitlines() if "workloads[0].allow[0]" in ln]
    return line


def test_profile_with_an_unknown_action_names_the_check(tmp_path: Path) -> None:
    line = _error_line(tmp_path, "- action: s3:GetBucketPolicy\n  resource: arn:aws:s3:::company-finance\n")
    assert line.startswith(
        f"  {tmp_path / 'p.yaml'}:14: workloads[0].allow[0].action: no probe for s3:GetBucketPolicy;"
    )
    assert "supported: dynamodb:GetItem, " in line
    assert "generic form" in line


def test_profile_with_a_bad_resource_names_the_check(tmp_path: Path) -> None:
    line = _error_line(tmp_path, "- action: s3:GetObject\n  resource: arn:aws:s3:::company-finance\n")
    assert f"{tmp_path / 'p.yaml'}:15: " in line  # the resource's line
    assert line.endswith(
        "workloads[0].allow[0].resource: s3:GetObject needs a concrete object key: arn:aws:s3:::<bucket>/<key>, "
        "got 'arn:aws:s3:::company-finance'"
    )


def test_profile_with_a_generic_call_not_live_names_the_check(tmp_path: Path) -> None:
    line = _error_line(
        tmp_path,
        "- action: s3:GetBucketPolicy\n  call: {service: s3, operation: GetBucketPolicy}\n",
    )
    assert line.endswith(
        "workloads[0].allow[0].live: s3:GetBucketPolicy: the generic form runs the call for real; "
        "set live: true to allow it"
    )


def test_profile_with_missing_dynamodb_params_names_the_check(tmp_path: Path) -> None:
    line = _error_line(
        tmp_path, "- action: dynamodb:PutItem\n  resource: arn:aws:dynamodb:eu-west-1:111122223333:table/o\n"
    )
    assert line.endswith("workloads[0].allow[0].params: dynamodb:PutItem needs params: Item (add them under 'params')")
