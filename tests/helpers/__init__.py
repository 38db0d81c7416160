"""Helpers for pytest-eksid's own tests: plain functions and classes, no fixtures (those stay in conftest.py).

- ``runs``: pytest run in a subprocess the way a user runs it, its outcomes read from JUnit XML.
- ``profiles``: the demo profile as data to vary, written out as a profile file; live-cluster unit profiles.
- ``sandboxes``: a sandbox started in process or as ``python -m pytest_eksid.sandbox``, and pod waits.
- ``endpoints``: TCP endpoints that never answer, for the timeout tests.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
