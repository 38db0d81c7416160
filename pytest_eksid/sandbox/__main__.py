"""Run the embedded sandbox on its own: ``python -m pytest_eksid.sandbox --profile demo``.

Prints the kubeconfig and the ``export`` lines for the AWS side, then serves until Ctrl-C, so
that kubectl, boto3 or the AWS CLI can be pointed at it from another shell.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from pytest_eksid.profile import ProfileError, load_profile
from pytest_eksid.sandbox import SandboxUnavailable, require
from pytest_eksid.sandbox.model import section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_eksid.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, metavar="NAME|PATH", help="Profile with a sandbox section")
    parser.add_argument("--rootdir", default=".", help="Where profiles/NAME.yaml is looked up (default: .)")
    parser.add_argument(
        "--connection-file",
        metavar="PATH",
        help="When ready, write the connection (kubeconfig, context, environment; it holds the runner's keys) "
        "as JSON to PATH (mode 0600), print nothing else, and also stop when stdin closes: how pytest runs "
        "a second sandbox in a child process",
    )
    args = parser.parse_args(argv)
    try:
        require()
        loaded = load_profile(args.profile, Path(args.rootdir))
        seeded = section(loaded)
    except (SandboxUnavailable, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from pytest_eksid.sandbox.runtime import Sandbox, SandboxSeedError

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sandbox = Sandbox(loaded.profile, section=seeded)
    try:
        connection = sandbox.start()
    except SandboxSeedError as exc:  # the profile asked for something the emulated cluster refuses
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.connection_file:
        try:
            _write_connection(Path(args.connection_file), connection, sandbox.startup_seconds)
            # The parent holds our stdin: when it goes away, so do we (and our pods).
            threading.Thread(target=_stop_on_eof, args=(stop,), daemon=True).start()
            stop.wait()
        finally:
            hollow = sandbox.kubelet.hollow if sandbox.kubelet is not None else None
            sandbox.stop()
            if hollow is not None:  # for a benchmark: how many probe pods ran the real probe (sandbox/hollow.py)
                counts = {"real_runs": hollow.real_runs, "adapted": hollow.adapted}
                with contextlib.suppress(OSError):  # the parent may have removed its directory already
                    Path(args.connection_file).with_name("hollow.json").write_text(json.dumps(counts), encoding="utf-8")
            # The directory of the connection file is this child's (the parent made it for us): when the
            # parent died without cleaning up, nothing is left behind.
            if Path(args.connection_file).parent.name.startswith("eksid-child-"):
                shutil.rmtree(Path(args.connection_file).parent, ignore_errors=True)
        return 0
    try:
        print(f"# sandbox for cluster {loaded.profile.cluster.name} ready in {sandbox.startup_seconds:.2f}s")
        print(f"# kubeconfig: {connection.kubeconfig}")
        print("# in another shell:")
        for line in connection.export_lines():
            print(line)
        print("# Ctrl-C stops the sandbox", flush=True)
        stop.wait()
    finally:
        sandbox.stop()
        print("# sandbox stopped", flush=True)
    return 0


def _stop_on_eof(stop: threading.Event) -> None:
    sys.stdin.buffer.read()
    stop.set()


def _write_connection(path: Path, connection: object, startup_seconds: float) -> None:
    from pytest_eksid.sandbox.runtime import Connection

    assert isinstance(connection, Connection)
    data = {
        "kubeconfig": str(connection.kubeconfig),
        "context": connection.context,
        "env": connection.env,
        "startup_seconds": startup_seconds,
    }
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
    partial.replace(path)  # the parent sees the whole file or none


if __name__ == "__main__":
    sys.exit(main())
