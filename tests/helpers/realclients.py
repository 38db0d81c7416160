"""Real AWS clients nobody here wrote, installed once into the work dir: the JS SDK v3 and the AWS CLI v1.

``install()`` puts both under ``.cache/real-clients/`` (gitignored) and reuses them on the next run; pytest-xdist
workers that ask at once wait on one file lock, so one of them installs. ``POD_CODE`` is what a sandbox pod runs:
it calls both clients with the pod's environment and prints, as one JSON line, what each said about its identity,
the provider that served the credentials, the endpoints and the signing region — never a key, token or signature.

Pins (why these): ``awscli==1.46.3`` and ``@aws-sdk/client-sts``/``@aws-sdk/credential-providers`` ``3.1178.0`` were the
newest releases when this was written (2026-12-07); npm resolves their dependencies as of ``NPM_BEFORE`` (the day
after 3.1178.0 was published), so a later release of a transitive ``@aws-sdk/*`` package changes nothing here.
The CLI's own dependencies are pinned exactly too. awscli 1.46 vendors botocore and s3transfer (``awscli/botocore``;
its wheel's ``Requires-Dist`` no longer names them), so its venv holds no botocore to fight boto3's, but it stays a
venv of its own: a CLI upgrade must never move the project's dependency tree.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO

CACHE = REPO / ".cache" / "real-clients"

AWSCLI = (
    "awscli==1.46.3",
    # its dependencies as pip resolved them for 1.46.3 on 2026-12-07 (python 3.11), pinned so a rerun is identical
    "colorama==0.4.6",
    "docutils==0.19",
    "jmespath==1.1.0",
    "pyasn1==0.6.5",
    "python-dateutil==2.9.0.post0",
    "PyYAML==6.0.4",
    "rsa==4.7.2",
    "six==1.17.0",
    "urllib3==2.8.0",
)
JS_SDK = ("@aws-sdk/client-sts@3.1178.0", "@aws-sdk/credential-providers@3.1178.0")
NPM_BEFORE = "2026-11-26T00:00:00Z"  # 3.1178.0 was published 2026-11-25T19:49Z
INSTALL_TIMEOUT = 600  # seconds per installer; each took 5-15 s on this machine kind (docs/sandbox.md, Real clients)
TAIL = 2000  # characters of an installer's output kept in a failure


class InstallError(RuntimeError):
    """A real client could not be installed; the message names the installer and ends with its output's tail."""


@dataclass(frozen=True)
class RealClients:
    node_path: Path  # the JS SDK's node_modules (NODE_PATH for ``node``)
    aws: Path  # the CLI v1 entry point in its own venv
    seconds: dict[str, float]  # how long each install took when it was made (0 when reused)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (pytest-xdist workers); released when the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # the holder's installers have timeouts, so this wait is bounded
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(what: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise InstallError(f"{what}: no answer after {INSTALL_TIMEOUT} s:\n{out[-TAIL:]}") from exc
    except OSError as exc:
        raise InstallError(f"{what}: {exc}") from exc
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-TAIL:]
        raise InstallError(f"{what} exited {proc.returncode}:\n{output}")


def _installed(directory: Path, spec: list[str], make: Callable[[Path], None]) -> float:
    """Make ``directory`` with ``make`` unless its stamp says it holds ``spec``; the seconds it took (0: reused)."""
    if _stamped(directory, spec):
        return 0.0
    stamp = directory / "eksid-installed.json"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    started = time.monotonic()
    make(directory)
    seconds = round(time.monotonic() - started, 1)
    stamp.write_text(json.dumps({"spec": spec, "seconds": seconds}))  # written last: a half install is redone
    return seconds


def _npm(directory: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm install: npm is not on PATH (the AWS SDK for JavaScript v3 needs Node 20 and npm)")
    (directory / "package.json").write_text(json.dumps({"name": "eksid-real-clients", "private": True}))
    argv = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--save-exact"]
    argv += [f"--before={NPM_BEFORE}", f"--cache={directory.parent / 'npm-cache'}", *JS_SDK]
    _run("npm install " + " ".join(JS_SDK), argv, directory)


def _pip(directory: Path) -> None:
    # A venv without its own pip, filled by this interpreter's pip (``--python``): ensurepip alone took 11 of the
    # 25 s a plain ``venv`` + ``pip install`` took on a loaded 2-core machine (14 s this way).
    _run("python -m venv", [sys.executable, "-m", "venv", "--without-pip", str(directory)], directory.parent)
    pip = [sys.executable, "-m", "pip", "--python", str(directory / "bin" / "python"), "install", "-q"]
    # --no-compile: byte-compiling the CLI's botocore at install cost more than compiling, on first use, the
    # modules the tests' few CLI runs import.
    _run("pip install " + AWSCLI[0], [*pip, "--disable-pip-version-check", "--no-compile", *AWSCLI], directory)


def _stamped(directory: Path, spec: list[str]) -> bool:
    """Whether ``directory`` holds a finished install of ``spec`` (its stamp is written last)."""
    try:
        return bool(json.loads((directory / "eksid-installed.json").read_text()).get("spec") == spec)
    except (OSError, ValueError):
        return False


def installed(cache: Path = CACHE) -> bool:
    """Whether both clients are in ``cache`` as pinned here (what ``install`` would reuse)."""
    return _stamped(cache / "js", [*JS_SDK, NPM_BEFORE]) and _stamped(cache / "awscli", list(AWSCLI))


def install_awscli(cache: Path = CACHE) -> Path:
    """The AWS CLI v1 alone (what runs on the host, outside pods), installed under ``cache`` unless already there."""
    with _locked(cache / ".lock"):
        _installed(cache / "awscli", list(AWSCLI), _pip)
    return cache / "awscli" / "bin" / "aws"


def install(cache: Path = CACHE) -> RealClients:
    """Both clients, installed under ``cache`` unless already there (raises InstallError with the reason)."""
    with _locked(cache / ".lock"):
        seconds = {
            "js-sdk": _installed(cache / "js", [*JS_SDK, NPM_BEFORE], _npm),
            "awscli": _installed(cache / "awscli", list(AWSCLI), _pip),
        }
    return RealClients(cache / "js" / "node_modules", cache / "awscli" / "bin" / "aws", seconds)


# What the JS SDK's default chain did, printed by node as one JSON line. The provider that served the
# credentials is read from the credentials' ``$source``: each provider records a feature id there as it resolves
# them [@aws-sdk/core 3.981.2 dist-cjs/submodules/client/index.js:62-68 setCredentialFeature]: CREDENTIALS_HTTP
# [@aws-sdk/credential-provider-http 3.972.88 dist-cjs/index.js:157], CREDENTIALS_STS_ASSUME_ROLE_WEB_ID
# [@aws-sdk/nested-clients 3.998.5 dist-cjs/submodules/sts/index.js:885], CREDENTIALS_ENV_VARS_STS_WEB_ID_TOKEN
# [@aws-sdk/credential-provider-web-identity 3.972.92 dist-cjs/index.js:52]. fromNodeProviderChain memoizes, so
# asking the provider again after the call returns the credentials the call was signed with. The endpoints are
# those of the client's own requests (the web identity call's nested STS client is not hooked; it reaches the
# sandbox's STS or no session would come back).
JS_CODE = textwrap.dedent(
    """
    const { fromNodeProviderChain } = require("@aws-sdk/credential-providers");
    const { STSClient, GetCallerIdentityCommand } = require("@aws-sdk/client-sts");
    (async () => {
      const out = { endpoints: [] };
      try {
        const provider = fromNodeProviderChain();
        const sts = new STSClient({ credentials: provider });
        sts.middlewareStack.add(
          (next) => async (args) => {
            const r = args.request;
            out.endpoints.push(`${r.protocol}//${r.hostname}${r.port ? ":" + r.port : ""}${r.path}`);
            return next(args);
          },
          { step: "finalizeRequest", name: "eksidEndpoint" },
        );
        out.region = await sts.config.region();
        const id = await sts.send(new GetCallerIdentityCommand({}));
        out.arn = id.Arn;
        const creds = await provider();
        out.sources = Object.keys(creds.$source || {}).sort();
      } catch (e) {
        out.error = `${e.name}: ${e.message}`;
      }
      console.log(JSON.stringify(out));
    })();
    """
)

# The pod's program (``python3 -c POD_CODE <node_modules> <aws> <JS_CODE>``): both clients, then one JSON line. The
# CLI runs with ``--debug``, whose log carries signed headers: only the lines below are read from it, by pattern.
# botocore's chain logs "Looking for credentials via: <METHOD>" before each provider and stops at the first that
# answers, so the last such line names the provider that served [awscli 1.46.3 awscli/botocore/credentials.py:
# 2244-2256]; "Endpoint provider result: <url>" is each request's endpoint [awscli/botocore/regions.py:537]; the
# signing region is read from the SigV4 credential scope ".../<yyyymmdd>/<region>/sts/aws4_request".
POD_CODE = textwrap.dedent(
    """
    import json, os, re, subprocess, sys
    node_modules, aws, js_code = sys.argv[1:4]
    SECRET = re.compile(r"(Credential=|Signature=|Security-Token|Authorization|SessionToken|SecretAccessKey|eyJ)", re.I)

    def safe(text):
        return "" if text is None else ("[redacted]" if SECRET.search(text) else text[-500:])

    js = subprocess.run(["node", "-e", js_code], env={**os.environ, "NODE_PATH": node_modules},
                        capture_output=True, text=True, timeout=120)
    try:
        node = json.loads(js.stdout.strip().splitlines()[-1])
        if "error" in node:
            node["error"] = safe(node["error"])
    except (ValueError, IndexError):
        node = {"error": safe(f"node exited {js.returncode}: {js.stderr.strip()[-400:]}")}
    cli = subprocess.run([aws, "sts", "get-caller-identity", "--output", "json", "--debug"],
                         capture_output=True, text=True, timeout=120)
    log = cli.stderr
    methods = re.findall(r"Looking for credentials via: ([\\w-]+)", log)
    result = {
        "method": methods[-1] if methods else None,
        "endpoints": re.findall(r"Endpoint provider result: (\\S+)", log),
        "regions": sorted(set(re.findall(r"/\\d{8}/([a-z0-9-]+)/sts/aws4_request", log))),
    }
    if cli.returncode == 0:
        result["arn"] = json.loads(cli.stdout)["Arn"]
    else:
        said = [l for l in log.splitlines() if l.strip() and not re.match(r"\\d{4}-\\d\\d-\\d\\d ", l)]
        result["error"] = safe("\\n".join(said[-3:]))
    print(json.dumps({"node": node, "cli": result}))
    """
)
