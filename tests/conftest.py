"""Fixtures and hooks for pytest-eksid's own tests; the helpers they use live in tests/helpers/."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO  # first: it has the interpreter write bytecode caches (see there)

# isort: split
from pytest_eksid.profile import load_profile
from pytest_eksid.sandbox.runtime import Connection, Sandbox
from tests.helpers import realclients
from tests.helpers.endpoints import Endpoint
from tests.helpers.sandboxes import Running, close_sandbox, open_sandbox

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _fresh_probe_session() -> Iterator[None]:
    """The probe program keeps one botocore session per process (a pod runs it once): a test that runs
    its steps in this process must not hand its session, and so its credentials, to the next."""
    from pytest_eksid.probe import program

    program._SESSIONS.clear()
    yield
    program._SESSIONS.clear()


_INSTALLING: list[subprocess.Popen[bytes]] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """On a clean checkout the real clients (helpers/realclients.py) take 20-60 s to install, mostly downloads.
    A run that includes tests/test_real_clients.py starts that install here, in the background, once (the xdist
    controller, or the only process; not for a run that selects by -k or -m, or only collects): the tests that need
    the clients wait on the same lock when they get there, and an install that failed is redone by them, which
    report its reason."""
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly or config.option.keyword or config.option.markexpr:
        return  # a worker, or a run that may well not reach the module
    if realclients.installed():
        return
    wanted = {REPO / "tests", REPO / "tests" / "test_real_clients.py"}
    if not any(Path(str(arg).split("::")[0]).resolve() in wanted for arg in config.args):
        return
    _INSTALLING.append(
        subprocess.Popen(
            [sys.executable, "-c", "from tests.helpers import realclients; realclients.install()"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its npm and pip with it, when the session ends first
        )
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for installing in _INSTALLING:  # a run that ended before the install did: a half install is redone next time
        if installing.poll() is None:
            os.killpg(installing.pid, signal.SIGKILL)
        installing.wait()
    # A run of our own tests that collected nothing is broken, not green.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def user_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester directory that runs pytest as a user's shell would: without our own run's EKSID_* and
    PYTEST_* variables (an xdist worker's among them), the plugin loaded by its entry point."""
    for name in list(os.environ):
        if name.startswith(("EKSID_", "PYTEST_")) and name != "PYTEST_DEBUG_TEMPROOT":
            monkeypatch.delenv(name)
    return pytester


# --- sandboxes ------------------------------------------------------------------------------


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


# --- endpoints that never answer ------------------------------------------------------------


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
