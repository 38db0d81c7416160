"""One botocore data loader per process, shared by every botocore session this project makes.

botocore keeps what it parsed from its data files (``endpoints.json``, each service's model) in the loader of
one session (``botocore.loaders.instance_cache``), and each new session makes a new loader. A run makes a
session per cluster; the embedded sandbox makes several more in the same process. Each of them parsed
``endpoints.json`` (1.2 MB) and the IAM model (0.8 MB) again: about 0.15 s of CPU per session, for data that
never changes while the process runs. Sessions share one loader by registering it as their ``data_loader``
component (``botocore.session.Session.register_component``), keyed by the ``data_path`` setting
(``AWS_DATA_PATH``) so that a session configured with other data paths still gets its own.

The loader only reads files; a data file parsed by two threads at once is parsed twice, and one result kept.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()
_LOADERS: dict[str | None, Any] = {}


def loader(data_path: str | None = None) -> Any:
    """The process's botocore loader for ``data_path`` (None: botocore's default search paths)."""
    from botocore.loaders import create_loader

    with _LOCK:
        found = _LOADERS.get(data_path)
        if found is None:
            found = _LOADERS[data_path] = create_loader(data_path)
        return found


def shared(session: Any) -> Any:
    """``session`` (a botocore session) using the process's loader for its data path; returns it."""
    session.register_component("data_loader", loader(session.get_config_variable("data_path")))
    return session


def deduplicate(session: Any) -> None:
    """Drop repeated search paths from ``session``'s loader.

    boto3's ``Session`` appends its own data directory to the loader of the botocore session it wraps, once per
    boto3 session; on a shared loader that would add one more path to search per session."""
    paths = session.get_component("data_loader").search_paths
    with _LOCK:
        paths[:] = list(dict.fromkeys(paths))
