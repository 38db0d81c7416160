"""Running pytest in a subprocess, the way a user does, and reading back what each test did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, zygote

# Plugins a user's run would not load: the cache (a run must not learn from an earlier one), and Hypothesis's,
# which this project's own tests use but the suites never do; its plugin imports Hypothesis at the end of every
# session (0.7 s of CPU per inner run, over a hundred inner runs).
INNER_PLUGINS_OFF = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


@dataclass
class SuiteRun:
    returncode: int
    stdout: str
    stderr: str
    outcomes: dict[str, str]  # "suites/test_x.py::test_y[id]" -> passed/failed/error/skipped
    messages: dict[str, str]  # the same keys -> the failure, error or skip message and its text

    def failed(self) -> list[str]:
        return sorted(k for k, v in self.outcomes.items() if v in ("failed", "error"))


def user_environment(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment without pytest's and the plugin's own variables, plus ``extra``
    (None removes a variable): what a user's shell would hand to pytest."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EKSID_"))}
    return {k: v for k, v in (inherited | dict(extra or {})).items() if v is not None}


def run_pytest(
    *args: str, tmp_path: Path, cwd: Path = REPO, timeout: int = 300, env: Mapping[str, str | None] | None = None
) -> SuiteRun:
    """Run pytest in a subprocess in the repository, with a JUnit file to read outcomes from
    (``env``: extra environment variables; None removes one)."""
    junit = tmp_path / f"junit-{len(list(tmp_path.glob('junit-*.xml')))}.xml"
    argv = [*INNER_PLUGINS_OFF, f"--junitxml={junit}", *args]
    environment = user_environment(env)
    if zygote.enabled(environment):  # forked from a warm interpreter (helpers/zygote.py says what differs)
        proc = zygote.zygote().run(argv, cwd, environment, timeout)
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", *argv],
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            module = case.get("classname", "").replace(".", "/") + ".py"
            key = f"{module}::{case.get('name')}"
            outcome = "passed"
            for tag, name in (("skipped", "skipped"), ("failure", "failed"), ("error", "error")):
                found = case.find(tag)
                if found is not None:
                    outcome = name
                    messages[key] = f"{found.get('message', '')}\n{found.text or ''}"
            outcomes[key] = outcome
    return SuiteRun(proc.returncode, proc.stdout, proc.stderr, outcomes, messages)


def pytester_run(pytester: pytest.Pytester, *args: str, timeout: float = 300) -> pytest.RunResult:
    """``pytester.runpytest_subprocess(*args)``, forked from the zygote where it can be (helpers/zygote.py): the
    same arguments (``--basetemp`` in a new ``runpytest-`` directory of pytester's), working directory (pytester's)
    and environment (this process's, as pytester set it up), output decoded as strictly. pytester also puts its
    directory on ``PYTHONPATH``; ``python -m pytest`` has it first on ``sys.path`` already, as the zygote's child
    does. What the zygote has imported stays importable: a test that hides a module (``sys.modules[name] = None``)
    needs ``runpytest_subprocess`` itself."""
    env = dict(os.environ)
    if pytester.plugins or not zygote.enabled(env):
        return pytester.runpytest_subprocess(*args, timeout=timeout)
    basetemp = tempfile.mkdtemp(prefix="runpytest-", dir=pytester.path)
    started = time.monotonic()
    proc = zygote.zygote().run([f"--basetemp={basetemp}", *args], pytester.path, env, timeout, errors="strict")
    print(proc.stdout)  # shown with the test's output when it fails, as pytester does
    print(proc.stderr, file=sys.stderr)
    return pytest.RunResult(
        proc.returncode, proc.stdout.splitlines(), proc.stderr.splitlines(), time.monotonic() - started
    )


def interrupt_pytest(
    *args: str,
    when: str | tuple[str, ...],
    wait: float = 90,
    signum: int | None = None,
    env: Mapping[str, str] | None = None,
    settle: float = 0.5,
) -> tuple[int, str]:
    """Run pytest in a subprocess as a user would, press Ctrl-C (or send ``signum``) once ``when`` is
    printed (several markers: once after each, in order), and return (exit code, all output)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *INNER_PLUGINS_OFF, *args],
        cwd=REPO,
        env=user_environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # An xdist worker may ignore SIGINT (or handle SIGTERM), and a child inherits that: restore
        # the signals as a user's shell has them.
        preexec_fn=lambda: (
            signal.signal(signal.SIGINT, signal.SIG_DFL),
            signal.signal(signal.SIGTERM, signal.SIG_DFL),
        ),
    )
    assert proc.stdout is not None
    seen = ""
    try:
        for marker in (when,) if isinstance(when, str) else when:
            deadline = time.monotonic() + wait
            while marker not in seen:
                assert time.monotonic() < deadline, seen
                line = proc.stdout.readline()
                assert line, seen
                seen += line
            if settle:
                time.sleep(settle)
            proc.send_signal(signal.SIGINT if signum is None else signum)
        rest, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    return proc.returncode, seen + rest
