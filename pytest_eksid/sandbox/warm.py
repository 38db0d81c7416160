"""Python containers started from a warm interpreter (``sandbox.warmPython``, default on).

A probe pod's container is ``python3 -c <source>``; started cold, each spends most of its CPU importing
botocore (~0.2 s of its ~0.25 s on a 2-core test machine, docs/sandbox.md "Warm python"), and a test run
starts hundreds. With this mode the kubelet asks one server process (:mod:`~pytest_eksid.sandbox.warm_server`,
started once per sandbox process, in the background when a kubelet starts) that has already imported botocore
to fork the container's process. The child is the container as the cold path makes it: its own session and
process group, its own mount namespace with the volumes bind-mounted (where the machine allows it), the pod's
working directory, exactly the container's environment, stdin from /dev/null, stdout and stderr into the pod
log, ``sys.argv`` as ``-c`` sets it; it runs the source as ``__main__`` and exits as the interpreter does; it
dies with the server. What differs from a cold start (docs/sandbox.md lists it) is mostly that the modules are
already imported: a program's own time no longer includes importing them (the benchmarks turn the mode off).

The cold path is taken whenever the warm one cannot be the same process: a command other than
``python``/``python3 -c``, a container environment that sets a ``PYTHON*`` variable or a locale other than
the server's (the interpreter reads those at start), or a server that is not running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from pytest_eksid.sandbox import warm_server

PRELOAD = ("botocore.session", "botocore.config", "urllib.request")  # what the probe program imports
SERVER_LOCALE = {"LANG": "C.UTF-8"}  # as the kubelet sets it in every container (node.py, _env)
START_TIMEOUT = 60.0  # seconds for the server to import PRELOAD and answer; then the cold path
REPLY_TIMEOUT = 30.0  # seconds for a fork's answer (milliseconds normally); then the server is ended


class WarmProcess:
    """A container process the server forked: the part of ``subprocess.Popen`` the kubelet uses."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


def eligible(argv: list[str], env: dict[str, str]) -> bool:
    """Whether a warm start is the same process a cold one would be (see the module's docstring)."""
    if len(argv) < 3 or argv[0] != sys.executable or argv[1] != "-c":  # node.py: the image's python
        return False
    if any(k.startswith("PYTHON") for k in env):
        return False
    return {k: v for k, v in env.items() if k == "LANG" or k.startswith("LC_")} == SERVER_LOCALE


class WarmPython:
    """One server process and the containers it started. ``spawn`` returns None when it cannot (the caller
    starts the container cold); ``close`` ends the server, which kills what is still running."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD) -> None:
        self.preload = preload
        self._lock = threading.Lock()  # one request at a time: replies come back in order
        self._state = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._broken = False
        self._replies: list[dict[str, Any]] = []
        self._reply = threading.Condition(self._state)
        self._running: dict[int, WarmProcess] = {}
        self._exits: dict[int, int] = {}  # exits read before their spawn registered the process
        self._reader: threading.Thread | None = None
        self._owner = os.getpid()  # a forked copy of this object does not own the server

    def _start(self) -> bool:
        if self._proc is not None:
            return not self._broken
        source = Path(warm_server.__file__).read_text(encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **SERVER_LOCALE}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", source, *self.preload],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env=env,
                start_new_session=True,  # a Ctrl-C at the terminal reaches the kubelet's process, not this one
            )
        except OSError:
            self._broken = True
            return False
        assert self._proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), name="warm-python", daemon=True)
        self._reader.start()
        with self._state:
            if not self._reply.wait_for(lambda: self._replies or self._broken, timeout=START_TIMEOUT):
                self._broken = True
            ready = bool(self._replies) and "ready" in self._replies.pop(0)
        if not ready:
            self._broken = True
        return not self._broken

    def ready(self) -> bool:
        """Wait until the server has started (or failed to): what the kubelet does before taking its lock, so
        that the lock is never held through the server's imports."""
        with self._lock:
            return self._start()

    def prestart(self) -> None:
        """Start the server in the background (its imports take a fraction of a second), so that the first
        container does not wait for them; ``spawn`` waits for it if it is still starting."""
        threading.Thread(target=self.ready, name="warm-python-start", daemon=True).start()

    def _read(self, stdout: IO[bytes]) -> None:
        with stdout:  # this thread alone reads it, and closes it at the server's end
            for line in stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                with self._state:
                    if "exited" in message:
                        pid, code = int(message["exited"]), int(message["code"])
                        process = self._running.pop(pid, None)
                        if process is None:
                            self._exits[pid] = code
                        else:
                            process._exited(code)
                    else:
                        self._replies.append(message)
                        self._reply.notify_all()
        with self._state:  # the server is gone, and its children with it (warm_server: PR_SET_PDEATHSIG)
            self._broken = True
            running, self._running = self._running, {}
            self._reply.notify_all()
        for process in running.values():
            process._exited(-signal.SIGKILL)

    def spawn(
        self, argv: list[str], env: dict[str, str], cwd: Path, log: Path, binds: list[tuple[str, Path, bool]]
    ) -> WarmProcess | None:
        request = {
            "argv": argv,
            "env": env,
            "cwd": str(cwd),
            "log": str(log),
            "binds": [[target, str(host), read_only] for target, host, read_only in binds],
        }
        with self._lock:
            if not self._start():
                return None
            assert self._proc is not None
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps(request).encode() + b"\n")
                self._proc.stdin.flush()
            except OSError:
                self._broken = True
                return None
            with self._state:
                if not self._reply.wait_for(lambda: self._replies or self._broken, timeout=REPLY_TIMEOUT):
                    self._broken = True  # a server that stopped answering: ended below, its children with it
                if self._broken and self._proc is not None:
                    self._proc.kill()
                if not self._replies:
                    return None
                reply = self._replies.pop(0)
                if "pid" not in reply:
                    return None
                process = WarmProcess(int(reply["pid"]), argv)
                if process.pid in self._exits:
                    process._exited(self._exits.pop(process.pid))
                elif self._broken:  # started, then the server ended: killed with it, as its reader reports
                    process._exited(-signal.SIGKILL)
                else:
                    self._running[process.pid] = process
            return process

    def close(self) -> None:
        if os.getpid() != self._owner:
            return
        with self._lock:
            proc, self._proc = self._proc, None
            self._broken = True
        if proc is None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the server kills what it started and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)


_SHARED: dict[int, WarmPython] = {}
_SHARED_LOCK = threading.Lock()


def shared() -> WarmPython:
    """This process's server (every sandbox of a test worker uses one); closed when the process exits."""
    with _SHARED_LOCK:
        warm = _SHARED.get(os.getpid())
        if warm is None:
            warm = _SHARED[os.getpid()] = WarmPython()
            import atexit

            atexit.register(warm.close)
        return warm
