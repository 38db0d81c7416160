"""How a cluster is reached: the provider hooks, the live provider, the sandbox's own plugin.

Each test runs pytest in a subprocess, as a user would, with the plugins loaded by their entry
points (``eksid`` and ``eksid_sandbox``); none reaches a cluster.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.helpers.runs import pytester_run

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]

LIVE = textwrap.dedent(
    """\
    cluster:
      name: live
      region: eu-west-1
      accountId: "111122223333"
      kubeconfig: team.kubeconfig
      kubeContext: prod-eu
    probe:
      image: registry.example.com/eksid-probe:1
    workloads:
      - name: app
        namespace: team-a
        serviceAccount: app-sa
        mechanism: irsa
        roleArn: arn:aws:iam::111122223333:role/app
    """
)

# A provider of the user's own, in a conftest: it claims every profile, before the live one.
OWN_PROVIDER = textwrap.dedent(
    """\
    import pathlib

    import pytest

    from pytest_eksid.connection import Connection, Provider


    def pytest_eksid_provider(config, profile):
        return Provider(label=f"own provider for {profile.name}", max_parallel=7)


    def pytest_eksid_connect(config, profile, progress):
        progress("own provider connecting")
        closed = pathlib.Path(config.rootpath) / "closed.txt"
        return Connection(
            kubeconfig="/own/kubeconfig",
            context="own-context",
            env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
            close=lambda: closed.write_text(profile.name, encoding="utf-8"),
        )
    """
)

USES_CONNECTION = textwrap.dedent(
    """\
    def test_connection(eksid_connection, eksid_settings):
        print("KUBECONFIG=" + str(eksid_connection["KUBECONFIG"]))
        print("ENDPOINT=" + str(eksid_connection.get("AWS_ENDPOINT_URL")))
        setting = eksid_settings.max_parallel
        print(f"MAX_PARALLEL={setting.value} from {setting.source}")
    """
)


@pytest.fixture
def run_dir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("EKSID_PROFILE", "EKSID_FLEET", "EKSID_MAX_PARALLEL", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    (pytester.path / "profiles").mkdir()
    (pytester.path / "profiles" / "live.yaml").write_text(LIVE, encoding="utf-8")
    pytester.makepyfile(test_connection=USES_CONNECTION)
    return pytester


def _clean(result: pytest.RunResult) -> str:
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    assert "Traceback" not in result.stderr.str()
    return out


def test_the_live_provider_reaches_the_profile_cluster_with_its_kubeconfig(run_dir: pytest.Pytester) -> None:
    result = pytester_run(run_dir, "--profile", "live", "-s")
    _clean(result)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "eksid: cluster live, region eu-west-1, account 111122223333; kube context prod-eu",
            f"*KUBECONFIG={run_dir.path / 'profiles' / 'team.kubeconfig'}",
            "ENDPOINT=None",
            "MAX_PARALLEL=24 from default",
        ]
    )


def test_another_plugins_provider_wins_and_its_connection_is_closed_at_the_end(run_dir: pytest.Pytester) -> None:
    run_dir.makeconftest(OWN_PROVIDER)
    result = pytester_run(run_dir, "--profile", "live", "-s")
    _clean(result)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "eksid: cluster live, region eu-west-1, account 111122223333; own provider for live",
            "eksid: own provider connecting",
            "*KUBECONFIG=/own/kubeconfig",
            "ENDPOINT=http://127.0.0.1:9",
            "MAX_PARALLEL=7 from default",
        ]
    )
    assert (run_dir.path / "closed.txt").read_text(encoding="utf-8") == "live"


def test_a_given_max_parallel_wins_over_the_providers_default(run_dir: pytest.Pytester) -> None:
    run_dir.makeconftest(OWN_PROVIDER)
    result = pytester_run(run_dir, "--profile", "live", "-s", "--eksid-max-parallel", "3")
    _clean(result)
    result.stdout.fnmatch_lines(["MAX_PARALLEL=3 from --eksid-max-parallel"])


def test_the_sandbox_plugin_claims_a_sandbox_profile_and_sets_its_own_default(run_dir: pytest.Pytester) -> None:
    # --collect-only: the sandbox is claimed and validated at configure time, started only when reached.
    result = pytester_run(run_dir, f"--profile={REPO / 'profiles' / 'demo.yaml'}", "--collect-only", "-q")
    _clean(result)
    assert result.ret == pytest.ExitCode.OK
    run_dir.makepyfile(
        test_connection="def test_settings(eksid_settings):\n    print('MAX=', eksid_settings.max_parallel)\n"
    )
    result = pytester_run(run_dir, f"--profile={REPO / 'profiles' / 'demo.yaml'}", "-s")
    out = _clean(result)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*; embedded sandbox (started when first needed)", "*MAX= Setting(value=32, source='default')"]
    )
    assert "starting the embedded sandbox" not in out  # nothing asked for the cluster


def test_a_sandbox_profile_without_the_sandbox_plugin_is_a_usage_error(run_dir: pytest.Pytester) -> None:
    result = pytester_run(
        run_dir, f"--profile={REPO / 'profiles' / 'demo.yaml'}", "-p", "no:eksid_sandbox", "--collect-only"
    )
    _clean(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.str().lstrip().startswith("ERROR:")
    result.stderr.fnmatch_lines(["*demo.yaml: this profile has a 'sandbox' section, but no plugin provides*"])


def test_a_sandbox_profile_without_the_extra_names_the_extra_to_install(run_dir: pytest.Pytester) -> None:
    # moto as if not installed: importlib.util.find_spec() answers None for a module mapped to None.
    run_dir.makeconftest("import sys\n\nsys.modules['moto'] = None\n")
    # A fresh interpreter: the test zygote has moto's submodules imported already, which the line above hides.
    result = run_dir.runpytest_subprocess(f"--profile={REPO / 'profiles' / 'demo.yaml'}", "--collect-only")
    _clean(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.str().lstrip().startswith("ERROR:")
    result.stderr.fnmatch_lines(["*demo.yaml: *moto is not installed; install the extra with: pip install*"])
    assert "pytest-eksid[sandbox]" in result.stderr.str()


def test_a_live_profile_runs_without_the_sandbox_extra(run_dir: pytest.Pytester) -> None:
    run_dir.makeconftest("import sys\n\nsys.modules['moto'] = None\n")
    # A fresh interpreter: in the test zygote `from moto.x import y` would still work past the line above.
    result = run_dir.runpytest_subprocess("--profile", "live", "-s")
    _clean(result)
    result.assert_outcomes(passed=1)


def test_a_bad_sandbox_section_names_its_file_line_and_field(run_dir: pytest.Pytester) -> None:
    text = LIVE + "sandbox:\n  roles: [{name: app, policy: {}}]\n  faults: [{fault: slow-agent}]\n"
    path = run_dir.path / "profiles" / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    result = pytester_run(run_dir, "--profile", "bad", "--collect-only")
    _clean(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = text.splitlines().index("  faults: [{fault: slow-agent}]") + 1
    result.stderr.fnmatch_lines([f"*{path}:{line}: sandbox.faults[[]0[]].fault: Input should be *(got 'slow-agent')"])
