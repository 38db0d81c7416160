"""The embedded emulated EKS: the newcomer's default cluster and our integration test bed.

Needs the optional extra ``pytest-eksid[sandbox]`` (moto, cryptography). Import
:func:`require` before anything else here to turn a missing extra into a clear message.
"""

from __future__ import annotations

import importlib.util


class SandboxUnavailable(Exception):
    """The sandbox's extra dependencies are not installed."""


def require() -> None:
    missing = [
        m
        for m in ("moto", "cryptography", "werkzeug", "jsonpatch", "trustme", "wsproto", "joserfc")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise SandboxUnavailable(
            f"this profile has a 'sandbox' section, which starts the embedded emulated EKS, but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; "
            f"install the extra with: pip install 'pytest-eksid[sandbox]'"
        )
