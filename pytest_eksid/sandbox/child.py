"""A sandbox in a child process: how one pytest process runs several emulated clusters.

moto's state is process-wide, so a process hosts one :class:`~pytest_eksid.sandbox.runtime.Sandbox`.
Every further sandbox runs as ``python -m pytest_eksid.sandbox --connection-file ...`` in its own
session (Ctrl-C reaches pytest, which cleans up, not the child); the child serves until it is
terminated or its stdin closes, so it cannot outlive a killed parent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from pytest_eksid.sandbox.runtime import Connection

READY_TIMEOUT = 120.0


class SandboxProcessError(RuntimeError):
    """The child sandbox did not come up."""


class SandboxProcess:
    def __init__(self, profile_path: Path, rootdir: Path) -> None:
        self.profile_path = profile_path
        self.rootdir = rootdir
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._stderr: IO[bytes] | None = None

    def start(self, timeout: float = READY_TIMEOUT) -> Connection:
        self._dir = tempfile.TemporaryDirectory(prefix="eksid-child-", ignore_cleanup_errors=True)
        ready = Path(self._dir.name) / "connection.json"
        self._stderr = open(Path(self._dir.name) / "stderr.log", "w+b")  # noqa: SIM115 - closed in stop()
        started = time.monotonic()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest_eksid.sandbox",
                "--profile",
                str(self.profile_path),
                "--rootdir",
                str(self.rootdir),
                "--connection-file",
                str(ready),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )
        try:
            while not ready.exists():
                code = self._proc.poll()
                if code is not None or time.monotonic() - started > timeout:
                    why = f"exited with code {code}" if code is not None else f"was not ready after {timeout:.0f}s"
                    tail = self._stderr_tail()
                    raise SandboxProcessError(
                        f"the sandbox for {self.profile_path} (child process) {why}" + (f":\n{tail}" if tail else "")
                    )
                time.sleep(0.05)
            data = json.loads(ready.read_text(encoding="utf-8"))
            ready.unlink()  # it holds the runner's keys
            connection = Connection(
                kubeconfig=Path(data["kubeconfig"]), context=str(data["context"]), env=dict(data["env"])
            )
        except BaseException:  # also Ctrl-C while waiting: no child outlives a failed start
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return connection

    def _stderr_tail(self, lines: int = 20) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return "\n".join(self._stderr.read().decode("utf-8", "replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._dir is not None:
            self._dir.cleanup()  # the child removes it itself when it outlives us (see __main__)
            self._dir = None
