"""Shared test setup for pytest-eksid's own tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _fresh_probe_session() -> Iterator[None]:
    """The probe program keeps one botocore session per process (a pod runs it once): a test that runs
    its steps in this process must not hand its session, and so its credentials, to the next."""
    from pytest_eksid.probe import program

    program._SESSIONS.clear()
    yield
    program._SESSIONS.clear()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A run of our own tests that collected nothing is broken, not green.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- running the suites in a subprocess, the way a user does ----------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@dataclass
class SuiteRun:
    returncode: int
    stdout: str
    stderr: str
    outcomes: dict[str, str]  # "suites/test_x.py::test_y[id]" -> passed/failed/error/skipped
    messages: dict[str, str]  # the same keys -> the failure, error or skip message and its text

    def failed(self) -> list[str]:
        return sorted(k for k, v in self.outcomes.items() if v in ("failed", "error"))


def run_pytest(
    *args: str, tmp_path: Path, cwd: Path = REPO, timeout: int = 300, env: Mapping[str, str | None] | None = None
) -> SuiteRun:
    """Run pytest in a subprocess in the repository, with a JUnit file to read outcomes from
    (``env``: extra environment variables; None removes one)."""
    junit = tmp_path / f"junit-{len(list(tmp_path.glob('junit-*.xml')))}.xml"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EKSID_"))}
    env = {k: v for k, v in (inherited | (env or {})).items() if v is not None}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}", *args],
        cwd=cwd,
        env=env,
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


# --- sandboxes built from variations of the demo profile --------------------------------

import copy  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402

from pytest_eksid.kube import Kube, KubeTarget  # noqa: E402
from pytest_eksid.profile import LoadedProfile, load_profile  # noqa: E402
from pytest_eksid.sandbox.runtime import Connection, Sandbox  # noqa: E402


def demo_data() -> dict[str, Any]:
    """The demo profile as plain data, to vary in a test."""
    return copy.deepcopy(yaml.safe_load((REPO / "profiles" / "demo.yaml").read_text()))


class _NoAliasDumper(yaml.SafeDumper):
    """Profiles may not use anchors/aliases (docs/profiles.md): write shared objects out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_profile(tmp_path: Path, data: dict[str, Any], name: str = "variant") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False))
    return path


@dataclass
class Running:
    loaded: LoadedProfile
    sandbox: Sandbox
    connection: Connection
    kube: Kube


def open_sandbox(data: dict[str, Any], tmp_path: Path, name: str = "variant") -> Running:
    """Start a sandbox for a profile given as data; the caller stops it with close_sandbox()."""
    loaded = load_profile(str(write_profile(tmp_path, data, name)), REPO)
    sandbox = Sandbox(loaded.profile)
    connection = sandbox.start()
    return Running(loaded, sandbox, connection, Kube(KubeTarget(str(connection.kubeconfig), None)))


def close_sandbox(running: Running) -> None:
    running.kube.close()
    running.sandbox.stop()


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Running]]:
    """Start a sandbox for a profile given as data; stopped at teardown (one at a time)."""
    started: list[Running] = []

    def start(data: dict[str, Any], name: str = "variant") -> Running:
        started.append(open_sandbox(data, tmp_path, name))
        return started[-1]

    yield start
    for running in started:
        close_sandbox(running)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[Sandbox, Connection]]:
    """The demo profile's sandbox, shared by one module's tests (each leaves it as it found it)."""
    sb = Sandbox(load_profile("demo", REPO).profile)
    connection = sb.start()
    yield sb, connection
    sb.stop()


@pytest.fixture(scope="module")
def kubeconfig(sandbox: tuple[Sandbox, Connection]) -> Path:
    """The shared sandbox's kubeconfig: HTTPS with the sandbox's CA (kubectl sends no token over plain HTTP)."""
    _, connection = sandbox
    server = yaml.safe_load(connection.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    assert server.startswith("https://"), server
    return connection.kubeconfig


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
    import signal

    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EKSID_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        env={**base, **(env or {})},
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


def start_standalone_sandbox(profile: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``python -m pytest_eksid.sandbox --profile PROFILE``, read until it is ready: (the process, what it
    exports). The caller stops it (SIGINT) and kills it in a ``finally``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_eksid.sandbox", "--profile", profile, "--rootdir", str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    assert proc.stdout is not None
    exports: dict[str, str] = {}
    deadline = time.monotonic() + 30
    try:
        while True:
            assert time.monotonic() < deadline, "the sandbox did not get ready in 30 s"
            line = proc.stdout.readline()
            assert line, "the sandbox exited early"
            if line.startswith("export "):
                key, _, value = line[len("export ") :].strip().partition("=")
                exports[key] = value
            if line.startswith("# Ctrl-C"):
                return proc, exports
    except BaseException:
        proc.kill()
        raise


def wait_pod_phase(
    core: Any, namespace: str, name: str, phases: tuple[str, ...] = ("Running",), timeout: float = 20.0
) -> Any:
    """Poll a pod through the kubernetes client until it is in one of ``phases``."""
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase in phases:
            return pod
        time.sleep(0.05)
    raise AssertionError(f"pod {namespace}/{name} not {phases} after {timeout}s: {pod.status if pod else None}")


def unit_profile(workloads: list[dict[str, Any]], region: str = "eu-west-1", **cluster: Any) -> Any:
    """A live-cluster profile for the pure check tests: cluster prod-platform-a in account 111122223333."""
    from pytest_eksid.profile import Profile

    return Profile.model_validate(
        {
            "cluster": {"name": "prod-platform-a", "region": region, "accountId": "111122223333", **cluster},
            "probe": {"image": "probe:test"},
            "workloads": workloads,
        }
    )


# --- endpoints that never answer ------------------------------------------------------------

import socket  # noqa: E402
import threading  # noqa: E402
from dataclasses import field  # noqa: E402


@dataclass
class Endpoint:
    """A TCP listener that accepts connections and holds them open in silence (a read timeout)."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    accepted: int = 0
    held: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed at the end of the test
            self.accepted += 1
            self.held.append(conn)


@pytest.fixture
def silent() -> Iterator[Endpoint]:
    endpoint = Endpoint()
    endpoint.sock.bind(("127.0.0.1", 0))
    endpoint.sock.listen(64)
    thread = threading.Thread(target=endpoint.serve, daemon=True)
    thread.start()
    yield endpoint
    endpoint.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
    endpoint.sock.close()
    for conn in endpoint.held:
        conn.close()
    thread.join(timeout=5)


@pytest.fixture
def blackhole() -> Iterator[str]:
    """The URL of an address where connecting times out, as at a private endpoint out of reach: a
    listener with a backlog of 0 that never accepts, its one queue slot already taken."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    filler = socket.create_connection(sock.getsockname(), timeout=5)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    filler.close()
    sock.close()
