"""No secret in any output, whatever the verbosity or log level (issue #11, part 2).

A full suite run over the sandbox, with static keys planted where the checks find them, at
``-vv --log-level=DEBUG --eksid-exec`` with live logging, a DEBUG log file, every report section
shown (``-rA``), JUnit with logs, Allure and the inventory. The sandbox writes every secret it hands
out (runner keys, role sessions, SA tokens, the API token, presigned proofs, planted static keys and
seeded secret values) to a ledger; none of them may appear in any of those outputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pytest_eksid.incontainer import FILE_TESTS, INVENTORY_COMMAND, parse_inventory
from pytest_eksid.redact import SecretFilter, guard_handlers, quiet_wire_loggers, redact_text
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest

PRESIGNED = (
    "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
    "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLE%2F20261207%2Feu-west-1%2Fsts%2Faws4_request"
    "&X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLE&X-Amz-Signature=" + "ab" * 32
)


def _outputs(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text(errors="replace")
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "ledger"
    }


def test_no_minted_secret_reaches_any_output_at_any_verbosity(tmp_path: Path) -> None:
    data = demo_data()
    data["sandbox"]["faults"] = [
        # Static keys in the workload container's env: --eksid-exec sees them, and testinfra logs
        # every command's output at DEBUG above -v.
        {"fault": "static-keys-in-env", "workload": "billing-worker"},
        {"fault": "static-keys-in-secret", "workload": "invoice-exporter"},
    ]
    out = tmp_path / "out"
    out.mkdir()
    ledger = tmp_path / "ledger"
    # A user's own test that holds the connection (the sandbox runner's keys) and fails, shown with -l.
    own = tmp_path / "own" / "test_own.py"
    own.parent.mkdir()
    own.write_text("def test_mine(eksid_connection):\n    env = eksid_connection\n    assert not env\n")
    run = run_pytest(
        f"--profile={write_profile(tmp_path, data)}",
        "suites",
        str(own),
        "-l",
        "-vv",
        "-rA",
        "--log-level=DEBUG",
        "-o",
        "log_cli=true",
        "--log-cli-level=DEBUG",
        f"--log-file={out / 'run.log'}",
        "--log-file-level=DEBUG",
        "-o",
        "junit_logging=all",
        "--eksid-exec",
        f"--alluredir={out / 'allure'}",
        f"--eksid-inventory={out / 'inventory.json'}",
        tmp_path=out,
        env={"EKSID_SANDBOX_SECRET_LEDGER": str(ledger)},
    )
    outputs = {"stdout": run.stdout, "stderr": run.stderr, **_outputs(out)}
    # The run did what it is for: the planted keys were found, debug logging was on, exec happened.
    assert run.outcomes["suites/test_static_credentials.py::test_running_containers[variant/billing-worker]"] == (
        "failed"
    )
    assert run.outcomes["suites/test_static_credentials.py::test_pod_templates[variant/billing-worker]"] == "failed"
    assert "static AWS keys in the environment" in run.stdout
    [mine] = [outcome for key, outcome in run.outcomes.items() if key.endswith("::test_mine")]
    assert mine == "failed"
    assert "AWS_SECRET_ACCESS_KEY='***'" in run.stdout  # the local was shown, its secret masked
    assert "DEBUG" in outputs["run.log"]
    assert "botocore" in outputs["run.log"]
    assert "testinfra" in outputs["run.log"]  # the exec commands are logged, their output names only
    minted = {line for line in ledger.read_text().splitlines() if len(line) >= 16}
    assert any(s.startswith("eyJ") for s in minted), "SA tokens are in the ledger"
    assert len(minted) > 10, minted
    leaks = sorted((name, secret[:6] + "…") for name, text in outputs.items() for secret in minted if secret in text)
    assert not leaks, f"secrets found in outputs: {leaks}"
    # Not a single environment value of the workload's container left it.
    assert "AWS_SECRET_ACCESS_KEY=" not in outputs["run.log"]


# --- the pieces, on plain data ----------------------------------------------------------------


def test_an_environment_shows_its_names_and_masks_secret_values() -> None:
    from pytest_eksid.connection import Environment

    env = Environment(
        KUBECONFIG="/tmp/kc", AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI", AWS_SESSION_TOKEN=None, AWS_ACCESS_KEY_ID="AKIA"
    )
    shown = repr(env)
    assert "wJalr" not in shown
    assert "AWS_SECRET_ACCESS_KEY='***'" in shown
    assert "KUBECONFIG='/tmp/kc'" in shown
    assert "AWS_SESSION_TOKEN=None" in shown  # an unset variable says so
    assert str(env) == shown
    assert {**env} == dict(env)  # still a plain mapping for subprocess environments


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"GET {PRESIGNED} 200", "GET *** 200"),
        ("{'Authorization': 'AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/x, Signature=00ff', 'X-Amz-Date': '1'}", None),
        ("Authorization: Bearer k8s-aws-v1.aHR0cHM6Ly9zdHM\nHost: h", "Host: h"),
        ('{"Credentials": {"SecretAccessKey": "short", "AccessKeyId": "ASIAEXAMPLE"}}', '"AccessKeyId": "ASIAEXAMPLE"'),
        ("<SessionToken>tok</SessionToken><AccessKeyId>ASIAEXAMPLE</AccessKeyId>", "ASIAEXAMPLE"),
        ('{"SecretString": "hunter2", "Name": "db"}', '"Name": "db"'),
        ("Signature:\n" + "0f" * 32, None),
    ],
)
def test_redact_text_masks_each_kind_of_secret(text: str, kept: str | None) -> None:
    masked = redact_text(text)
    for secret in ("X-Amz-Signature", "AKIAEXAMPLE/x", "aHR0cHM6Ly9zdHM", "short", "tok<", "hunter2", "0f" * 32):
        assert secret not in masked, masked
    assert "***" in masked
    if kept is not None:
        assert kept in masked


def test_the_secret_filter_masks_arguments_tracebacks_and_keeps_the_record() -> None:
    record = logging.LogRecord("botocore.x", logging.DEBUG, __file__, 1, "headers %s", ("Bearer abcdef",), None)
    try:
        raise ValueError("token eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert SecretFilter().filter(record)
    assert record.getMessage() == "headers Bearer ***"
    assert record.exc_text is not None
    assert "eyJ" not in record.exc_text
    assert "ValueError" in record.exc_text


def test_wire_loggers_drop_debug_at_the_source_whatever_their_level(caplog: pytest.LogCaptureFixture) -> None:
    quiet_wire_loggers()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("botocore.endpoint").setLevel(logging.DEBUG)
    logging.getLogger("botocore.endpoint").debug("Sending http request: X-Amz-Security-Token")
    logging.getLogger("botocore.endpoint").warning("endpoint unreachable")
    logging.getLogger("botocore.credentials").debug("Found credentials in environment variables.")
    assert [r.getMessage() for r in caplog.records] == [
        "endpoint unreachable",
        "Found credentials in environment variables.",
    ]
    logging.getLogger("botocore.endpoint").setLevel(logging.NOTSET)


def test_guarded_handlers_mask_what_any_logger_sends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    guard_handlers()  # caplog's handler sits on the root logger now
    logging.getLogger("some.library").info("calling %s", PRESIGNED)
    assert caplog.records[-1].getMessage() == "calling ***"


def test_the_container_is_asked_for_names_only(tmp_path: Path) -> None:
    """What testinfra logs is the command's output: run the command as the exec would, with secret values,
    once with awk and once with the shell and ``env`` alone."""
    import shutil
    import subprocess

    env_only = tmp_path / "bin"
    env_only.mkdir()
    (env_only / "env").symlink_to(shutil.which("env") or "/usr/bin/env")
    values = {
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/r",
        "NOT_AWS": "x\nAWS_FAKE=wJalr",  # a multi-line value with a name-shaped line
    }
    token = tmp_path / "token"
    token.write_text("a token")
    values["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(token)
    # A value that tries to pass for the file answers: it is never printed, so it cannot.
    values["AWS_X"] = "\neksid-file aws_credentials_file 1\n"
    for path in ("/usr/bin:/bin", str(env_only)):
        done = subprocess.run(
            ["/bin/sh", "-c", INVENTORY_COMMAND],
            env={**values, "PATH": path, "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "wJalr" not in done.stdout
        names, files = parse_inventory(done.stdout)
        assert {"AWS_ROLE_ARN", "AWS_SECRET_ACCESS_KEY", "AWS_WEB_IDENTITY_TOKEN_FILE"} <= names
        assert names <= {"AWS_ROLE_ARN", "AWS_SECRET_ACCESS_KEY", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_X", "AWS_FAKE"}
        # Every file test answered, in the same exec: no ~/.aws/credentials, a readable web identity token.
        assert files == dict.fromkeys(FILE_TESTS, False) | {"web_identity_token_readable": True}
        assert done.stdout.count("eksid-file aws_credentials_file") == 1


@pytest.mark.parametrize(
    "hostile",
    ["a" * 2_000_000, "?X-Amz-Signature=" * 100_000, "eyJ" * 600_000, "eyJa." * 400_000, "A/" * 1_000_000],
    ids=["word", "presign-params", "jwt-starts", "jwt-dots", "base64"],
)
def test_redaction_is_linear_on_hostile_input(hostile: str) -> None:
    """Records carry cluster text: 2 MB of it must not stall a run (the old presign pattern took 19 s on
    40 KB and would take hours here). Run in a child with a bound far above a linear scan's ~0.3 s."""
    import subprocess
    import sys

    code = "import sys; from pytest_eksid.redact import redact_text; redact_text(sys.stdin.read())"
    subprocess.run([sys.executable, "-c", code], input=hostile, text=True, timeout=60, check=True)
