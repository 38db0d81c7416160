"""The warm python (sandbox.warmPython, pytest_eksid/sandbox/warm.py): a container forked from a warm
interpreter is the process a cold start makes. Each program runs both ways, through the kubelet's own cold
start (node.start_cold) and the server, and what it saw and wrote, and its exit code, must be the same."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_eksid.sandbox import node as kubelet_module
from pytest_eksid.sandbox.warm import WarmPython, eligible

ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "LANG": "C.UTF-8",
    "HOME": "/nonexistent",
    "X_POD": "v 1",
    "TZ": "Asia/Tokyo",  # the server's C library read no TZ at its start; a container reads its own
}

SEEN = textwrap.dedent(
    """
    import json, os, signal, sys
    fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
    seen = {
        "name": __name__,
        "argv": sys.argv,
        "path0": sys.path[0],
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "stdin": sys.stdin.read(),
        "own_session": os.getsid(0) == os.getpid() == os.getpgid(0),
        "fds": fds[:3],
        "more_fds": len(fds) - 4,
        "stdout": [sys.stdout.encoding, sys.stdout.errors, sys.stdout.line_buffering],
        "stderr": [sys.stderr.encoding, sys.stderr.errors, sys.stderr.line_buffering],
        "sigint": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "sigchld": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
        "sigpipe": signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN,
        "own_mount_ns": os.readlink("/proc/self/ns/mnt") != sys.argv[1],
    }
    mounted = sys.argv[2]
    if mounted:
        seen["mounted"] = open(os.path.join(mounted, "token")).read()
        try:
            open(os.path.join(mounted, "new"), "w")
        except OSError as exc:
            seen["read_only"] = exc.errno
    print("to stderr first", file=sys.stderr)
    print(json.dumps(seen, sort_keys=True))
    sys.exit(3)
    """
)


@pytest.fixture(scope="module")
def warm() -> Iterator[WarmPython]:
    server = WarmPython(preload=("json",))
    yield server
    server.close()


def _run_both(warm: WarmPython, tmp_path: Path, source: str, *args: str, binds=()) -> tuple[tuple[int, str], ...]:
    """(exit code, log) of ``source`` started cold by the kubelet's own code, then warm."""
    results = []
    for how in ("cold", "warm"):
        root = tmp_path / how
        root.mkdir()
        log = root / "container.log"
        argv = [sys.executable, "-c", source, *args]
        assert eligible(argv, ENV)
        with log.open("wb") as out:
            if how == "cold":
                proc = kubelet_module.start_cold(argv, ENV, root, out, list(binds))
            else:
                proc = warm.spawn(argv, ENV, root, log, list(binds))
                assert proc is not None, "the warm server did not start the container"
        code = proc.wait(timeout=60)
        results.append((code, log.read_bytes().decode("utf-8", "backslashreplace")))
    return tuple(results)


def test_a_warm_container_sees_and_does_what_a_cold_one_does(warm: WarmPython, tmp_path: Path) -> None:
    host_ns = os.readlink("/proc/self/ns/mnt")
    binds = []
    if kubelet_module._can_bind_mount(tmp_path):  # where the kubelet gives pods mount namespaces
        volume = tmp_path / "volume"
        volume.mkdir()
        (volume / "token").write_text("the projected token")
        binds = [("/var/run/secrets/eksid-warm-test", volume, True)]
    cold, hot = _run_both(warm, tmp_path, SEEN, host_ns, binds[0][0] if binds else "", binds=binds)
    assert cold[0] == hot[0] == 3
    assert hot[1].startswith("to stderr first\n")
    seen_cold, seen_hot = (json.loads(log.splitlines()[1]) for _, log in (cold, hot))
    for seen, how in ((seen_cold, "cold"), (seen_hot, "warm")):
        seen["cwd"] = seen["cwd"].replace(f"/{how}", "/POD")
    # The cold path's mount-namespace wrapper is `sh -c`, and sh exports PWD; a container runtime does not.
    if binds:
        seen_cold["env"].pop("PWD", None)
    assert seen_hot == seen_cold
    assert seen_hot["env"] == ENV  # exactly the container's environment, nothing of the server's or ours
    assert seen_hot["own_session"]
    assert seen_hot["fds"] == [0, 1, 2]
    assert seen_hot["more_fds"] == 0  # nothing of the server's pipes leaks into the container
    assert seen_hot["stdin"] == ""
    assert seen_hot["name"] == "__main__"
    if binds:
        assert seen_hot["own_mount_ns"]
        assert seen_hot["mounted"] == "the projected token"
        assert seen_hot["read_only"] == 30  # EROFS
    assert not (Path(binds[0][0]) / "token").exists() if binds else True  # nothing mounted on the host


@pytest.mark.parametrize(
    "source",
    [
        "raise ValueError('no credentials')",
        "import sys; sys.exit('a message on stderr')",
        "import sys; sys.exit(None)",
        "import sys; sys.exit(300)",
        "import atexit; atexit.register(print, 'at exit'); print('body')",
        textwrap.dedent(
            """
            import threading, time
            def late():
                time.sleep(0.2)
                print('from a thread the interpreter waits for')
            threading.Thread(target=late).start()
            print('main ends')
            """
        ),
        "import sys; sys.stdout.write('\\udcff')",
        "print('caf\\u00e9 \\u2603')",
        "f = open('left-open.txt', 'w'); f.write('data'); print(open('left-open.txt').read() == '')",
        "import sys\nclass Last:\n    def __del__(self):\n        print('finalized', file=sys.stderr)\nlast = Last()",
        "import sys; print('x'); sys.stdout.close()",
        "import sys; sys.stdout = None",
        "raise KeyboardInterrupt",
        "import sys; sys.exit(2**70)",
        "import sys; sys.exit(-1)",
        "import time; print(time.strftime('%H %Z', time.localtime(0)), time.tzname)",
        "import sys, __main__; print(sorted(vars(__main__)), __main__.__loader__, sys.stdout.name, sys.stdin.name)",
        "import sys; print(sys.orig_argv[1:3] == ['-c', sys.argv[0] and __import__('sys').orig_argv[2]])",
    ],
    ids=[
        "exception",
        "exit-message",
        "exit-none",
        "exit-300",
        "atexit",
        "non-daemon-thread",
        "unencodable",
        "utf8",
        "file-left-open",
        "finalizer",
        "stdout-closed",
        "stdout-none",
        "keyboard-interrupt",
        "exit-beyond-c-long",
        "exit-negative",
        "tz",
        "main-module-and-stdio-names",
        "orig-argv",
    ],
)
def test_exits_and_output_are_the_interpreters(warm: WarmPython, tmp_path: Path, source: str) -> None:
    cold, hot = _run_both(warm, tmp_path, source)
    assert hot == cold


def test_a_killed_container_reports_the_signal_and_the_server_keeps_serving(warm: WarmPython, tmp_path: Path) -> None:
    log = tmp_path / "container.log"
    log.touch()
    sleeper = warm.spawn([sys.executable, "-c", "import time; time.sleep(600)"], ENV, tmp_path, log, [])
    assert sleeper is not None
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.wait(timeout=0.05)
    kubelet_module._kill(sleeper)  # what pod deletion does
    assert sleeper.poll() == -signal.SIGKILL
    again = warm.spawn([sys.executable, "-c", "print('next')"], ENV, tmp_path, log, [])
    assert again is not None
    assert again.wait(timeout=60) == 0
    assert log.read_text() == "next\n"


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["python3", "-c", "pass"], ENV),  # node.py puts the image's python (sys.executable) first
        ([sys.executable, "-m", "json.tool"], ENV),
        ([sys.executable, "-c", "pass"], {**ENV, "PYTHONPATH": "/x"}),
        ([sys.executable, "-c", "pass"], {**ENV, "PYTHONUNBUFFERED": "1"}),
        ([sys.executable, "-c", "pass"], {**ENV, "LC_ALL": "C"}),
        ([sys.executable, "-c", "pass"], {k: v for k, v in ENV.items() if k != "LANG"}),
    ],
    ids=["not-the-image-python", "not-dash-c", "pythonpath", "pythonunbuffered", "lc-all", "no-lang"],
)
def test_what_a_warm_interpreter_cannot_start_the_same_starts_cold(argv: list[str], env: dict[str, str]) -> None:
    assert not eligible(argv, env)


def test_a_lost_server_kills_its_containers_and_the_kubelet_starts_cold(tmp_path: Path) -> None:
    server = WarmPython(preload=())
    try:
        log = tmp_path / "container.log"
        log.touch()
        sleeper = server.spawn([sys.executable, "-c", "import time; time.sleep(600)"], ENV, tmp_path, log, [])
        assert sleeper is not None
        assert server._proc is not None
        server._proc.kill()  # the server dies: its child must not run on unseen
        assert sleeper.wait(timeout=60) == -signal.SIGKILL
        assert _ended(sleeper.pid)
        assert server.spawn([sys.executable, "-c", "pass"], ENV, tmp_path, log, []) is None  # the caller: cold
    finally:
        server.close()


def _ended(pid: int) -> bool:
    """Whether ``pid`` ran to its end (gone, or a zombie its new parent has yet to reap): polled on a
    deadline, as an exit is not instantaneous on a loaded machine."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


def test_close_kills_and_reaps_what_is_still_running(tmp_path: Path) -> None:
    server = WarmPython(preload=())
    log = tmp_path / "container.log"
    log.touch()
    sleeper = server.spawn([sys.executable, "-c", "import time; time.sleep(600)"], ENV, tmp_path, log, [])
    assert sleeper is not None
    server.close()
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper.pid, 0)  # the server reaped it before it exited
