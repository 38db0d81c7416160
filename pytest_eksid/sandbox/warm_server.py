"""The warm interpreter's server (sandbox.warmPython, :mod:`pytest_eksid.sandbox.warm`): stdlib only.

The kubelet starts it as ``python -c <this file's source> <module>...`` with a container-like environment, so
its ``sys.path`` is a fresh ``python -c``'s. It imports the named modules once, then reads one JSON request a
line on stdin and forks a child per request, which becomes the container's process (below, :func:`_child`).
It writes one JSON line per event on stdout: ``{"pid": n}`` or ``{"error": text}`` for each request, in
order, and ``{"exited": pid, "code": n}`` when a child ends (``code`` as ``subprocess`` reports it: negative
for a signal). It stays single-threaded, so a fork copies no lock another thread holds. At the end of its
stdin (the kubelet stopped, or its process died) it kills what it started and exits.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import ctypes
import gc
import importlib
import importlib.machinery
import io
import json
import os
import selectors
import signal
import sys
import threading
import time
import traceback
import types
from typing import Any

# <linux/sched.h> and <sys/mount.h>: the calls `unshare --mount --propagation private` and `mount --bind`
# make (util-linux sys-utils/unshare.c, libmount), which node.py's cold path runs as commands.
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
MOUNT_FAILED = 32  # mount(8)'s exit code for a mount failure, what the cold path's `sh -e` exits with


def _mount_namespace(binds: list[list[Any]]) -> None:
    """A mount namespace of the process's own, private propagation, each volume bind-mounted at its target
    (parents first, as node.py's cold path does), read-only ones remounted read-only."""
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    check(libc.unshare(CLONE_NEWNS), "unshare --mount")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    for target, host, _ in sorted(binds):
        os.makedirs(target, exist_ok=True)
        check(libc.mount(os.fsencode(host), os.fsencode(target), None, MS_BIND, None), f"mount --bind {target}")
    for target, _, read_only in binds:
        if read_only:
            check(libc.mount(None, os.fsencode(target), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None), target)


def _stdio_settings() -> dict[str, tuple[str, str | None]]:
    """name -> (encoding, errors) of the server's own stdio as its interpreter made them at
    start: in the containers' locale (warm.py starts the server with it), so what a cold start would make
    (C.UTF-8 is a locale-coercion target: utf-8 with surrogateescape, stderr backslashreplace)."""
    return {
        name: (stream.encoding, stream.errors)
        for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout), ("stderr", sys.stderr))
    }


STDIO = _stdio_settings()


def _stdio() -> None:
    """Fresh stdio objects over fds 0-2 with the settings of a cold start for files (stdout block-buffered,
    stderr line-buffered: the interpreter's defaults when they are not terminals)."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        encoding, errors = STDIO[name]
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        raw.name = f"<{name}>"  # as the interpreter names its own
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        stream = io.TextIOWrapper(buffered, encoding, errors, line_buffering=name == "stderr")
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _exit_code(exc: SystemExit) -> int:
    """What the interpreter exits with for an uncaught SystemExit (printing a non-int code, as it does; an int
    beyond a C long is -1 to it)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF if -(2**63) <= exc.code < 2**63 else 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _flush_stdio() -> bool:
    """Flush stdout and stderr as the interpreter does at exit: a stream set to None or closed is skipped;
    False when a flush failed (the interpreter then exits 120)."""
    ok = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None or getattr(stream, "closed", False):
            continue
        try:
            stream.flush()
        except Exception:
            ok = False
    return ok


def _child(request: dict[str, Any]) -> int:
    """In the forked child: become the container's process, run its ``-c`` source as ``__main__``, and return
    the exit code. The interpreter's own steps at exit follow: non-daemon threads are joined, atexit
    handlers run, stdio is flushed. The caller has made the child a session leader."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    gc.enable()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # as Popen's close_fds: the server's pipes stay out
    _stdio()
    try:
        if request["binds"]:
            _mount_namespace(request["binds"])
        os.chdir(request["cwd"])
    except OSError as exc:
        print(f"eksid-sandbox: container start: {exc}", file=sys.stderr)
        return MOUNT_FAILED
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()  # the C library read TZ when the server started; a cold process reads the container's
    source, *args = request["argv"][2:]
    sys.argv = ["-c", *args]
    sys.orig_argv = [sys.executable, "-c", source, *args]
    main = types.ModuleType("__main__")  # what `-c` runs in: these names and no others
    main.__dict__.update(__builtins__=builtins, __annotations__={}, __loader__=importlib.machinery.BuiltinImporter)
    sys.modules["__main__"] = main
    code, interrupted = 0, False
    try:
        exec(compile(source, "<string>", "exec"), main.__dict__)
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException as exc:  # what the interpreter prints for an uncaught exception, without this frame
        if exc.__traceback__ is not None:
            exc.__traceback__ = exc.__traceback__.tb_next
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code, interrupted = 1, isinstance(exc, KeyboardInterrupt)
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # the interpreter joins non-daemon threads
        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = _exit_code(exc)
    flushed = _flush_stdio()
    # The interpreter then drops its modules, __main__ among them, and collects: what the program left is
    # finalized with its globals still there (a file left open is flushed and closed, __del__ runs), and it
    # flushes stdio again.
    sys.modules.pop("__main__", None)
    del main
    gc.collect()
    flushed = _flush_stdio() and flushed
    if interrupted:  # an uncaught KeyboardInterrupt: the interpreter ends by SIGINT, its default action
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code if flushed else 120


class Server:
    def __init__(self) -> None:
        self.children: set[int] = set()
        self.out = os.fdopen(os.dup(1), "w", buffering=1)

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")  # a broken pipe (the kubelet is gone) ends serve()

    def start(self, line: bytes) -> None:
        """Fork the request's container. Its pid is sent once the child has its own session, as Popen returns
        only after the child's setsid and exec: from then on killing the process group kills the container."""
        try:
            request = json.loads(line)
            session_r, session_w = os.pipe()
            server = os.getpid()
            pid = os.fork()
        except (ValueError, OSError) as exc:
            self.send({"error": f"{type(exc).__name__}: {exc}"})
            return
        if pid == 0:
            code = 1
            try:
                os.close(session_r)
                os.setsid()
                # Killed with the server, however it ends (the kubelet then counts it killed): never orphaned.
                ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != server:  # the server ended before the line above
                    os._exit(128 + signal.SIGKILL)
                os.close(session_w)  # the server reads the end of the pipe: the session exists
                code = _child(request)
            except BaseException:  # the child must never return into the server's loop
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(session_w)
        os.read(session_r, 1)  # b"" once the child closed its end (or died)
        os.close(session_r)
        self.children.add(pid)
        self.send({"pid": pid})

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    def stop(self) -> None:
        """Kill what is still running and reap it: when the server has exited, none of its children runs."""
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # the container and what it started in its session
        for pid in sorted(self.children):
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):  # said, so that no one signals the pid after its reuse
                    self.send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
        self.children.clear()

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(0, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        pending = b""
        self.send({"ready": os.getpid()})
        while True:
            for key, _ in selector.select():
                if key.fd == wake_r:
                    while True:
                        try:
                            if not os.read(wake_r, 4096):
                                break
                        except BlockingIOError:
                            break
                    continue
                data = os.read(0, 1 << 16)
                if not data:
                    self.stop()
                    return
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    self.start(line)
            self.reap()


def main(modules: list[str]) -> None:
    # The gc module's recipe for a process that forks without exec (gc.freeze): the server never collects, and what
    # it imported is frozen before the first fork, so a child's collection (its exit runs one, as an interpreter's
    # finalization does) skips those objects instead of touching, and so copying, every inherited page.
    gc.disable()
    for name in modules:
        importlib.import_module(name)
    gc.freeze()
    server = Server()
    try:
        server.serve()
    except BrokenPipeError:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
