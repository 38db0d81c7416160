"""The inner runs' zygote (helpers/zygote.py): a forked run is the run a fresh ``python -m pytest`` would be."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import zygote
from tests.helpers.runs import run_pytest, user_environment

PROBE = """
import os, sys

def test_the_run_is_its_own(pytestconfig):
    assert os.getcwd() == {cwd!r}
    assert sys.path[0] == {cwd!r}
    assert os.environ.get("ZYGOTE_PROBE") == "seen"
    assert "ZYGOTE_ONLY_IN_WORKER" not in os.environ
    print("PROBE-OUT", flush=True)
    print("PROBE-ERR", file=sys.stderr, flush=True)

def test_fails_on_purpose():
    assert 1 == 2
"""


def test_a_forked_run_has_its_own_directory_environment_output_and_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZYGOTE_ONLY_IN_WORKER", "1")
    (tmp_path / "test_probe.py").write_text(PROBE.format(cwd=str(tmp_path)))
    environment = user_environment({"ZYGOTE_PROBE": "seen", "ZYGOTE_ONLY_IN_WORKER": None})
    assert zygote.enabled(environment)
    proc = zygote.zygote().run(["-s", "-p", "no:cacheprovider", "test_probe.py"], tmp_path, environment, 120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in proc.stdout
    assert "PROBE-OUT" in proc.stdout
    assert "PROBE-ERR" in proc.stderr
    assert "assert 1 == 2" in proc.stdout


def test_the_projects_plugins_are_imported_by_the_run_not_preloaded(tmp_path: Path) -> None:
    """A plugin module already imported cannot have its asserts rewritten (pytest warns, and the suites' settings
    make warnings errors): the zygote preloads no pytest plugin's package."""
    plugins = ("pytest_eksid", "xdist", "allure_pytest", "testinfra", "hypothesis", "_hypothesis_pytestplugin")
    for name in zygote.PRELOAD:
        assert name.split(".")[0] not in plugins, name
    run = run_pytest("--profile", "demo", "--co", "-q", tmp_path=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "cannot be rewritten" not in run.stdout + run.stderr


def test_a_run_that_sets_an_interpreter_variable_is_a_real_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not zygote.enabled(user_environment({"PYTHONPATH": "/elsewhere"}))
    assert not zygote.enabled({k: v for k, v in os.environ.items() if k != "PATH"} | {"PYTHONHASHSEED": "1"})
    monkeypatch.setenv("EKSID_TESTS_FORK", "0")
    assert not zygote.enabled(user_environment())


def test_a_run_past_its_timeout_is_killed(tmp_path: Path) -> None:
    (tmp_path / "test_slow.py").write_text("import threading\n\ndef test_waits():\n    threading.Event().wait()\n")
    environment = user_environment()
    with pytest.raises(subprocess.TimeoutExpired):
        zygote.zygote().run(["-p", "no:cacheprovider", "test_slow.py"], tmp_path, environment, 5)
    # The zygote still serves the next run.
    (tmp_path / "test_quick.py").write_text("def test_ok():\n    pass\n")
    proc = zygote.zygote().run(["-p", "no:cacheprovider", "test_quick.py"], tmp_path, environment, 120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
