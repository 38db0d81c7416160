"""pytest-eksid's pytest plugin: options, hooks and parametrization. Logic lives elsewhere."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pytest_eksid import hooks
from pytest_eksid.fixtures import (  # re-exported: pytest finds fixtures on the plugin module
    ACTION_FIXTURE,
    SELECTED_KEY,
    SETTINGS_KEY,
    WORKLOAD_FIXTURE,
    eksid_action,
    eksid_aws,
    eksid_campaign,
    eksid_connection,
    eksid_kube,
    eksid_probe,
    eksid_profile,
    eksid_settings,
    eksid_workload,
)
from pytest_eksid.profile import LoadedProfile, ProfileError, Workload, load_profile
from pytest_eksid.settings import Setting, Settings

__all__ = [
    "eksid_action",
    "eksid_aws",
    "eksid_campaign",
    "eksid_connection",
    "eksid_kube",
    "eksid_probe",
    "eksid_profile",
    "eksid_settings",
    "eksid_workload",
]


MARKERS = {
    "identity": "the workload's pods are the expected IAM role, by the expected credential provider",
    "permissions": "allowed actions succeed and denied actions fail, as the probe measured",
    "imds": "the node's IMDS role is unreachable from the workload's pods",
    "agent": "the Pod Identity Agent is healthy (IRSA: the cluster's IAM OIDC provider exists)",
    "static_credentials": "no static AWS credentials for the workload anywhere",
    "configuration": "ServiceAccount, owner, binding, trust policy and permission policy",
    "pod_identity": "checks of workloads bound by EKS Pod Identity",
    "irsa": "checks of workloads bound by IRSA (IAM roles for service accounts)",
    "eksid_applies(predicate)": "run this test only for workloads where predicate(workload) is true "
    "(e.g. only Pod Identity workloads)",
}

T = TypeVar("T")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _inconclusive(text: str) -> str:
    if text not in ("skip", "fail"):
        raise ValueError(f"expected skip or fail, got {text!r}")
    return text


def _minutes(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"must be 0 or more minutes, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("eksid", "EKS workload identity conformance (pytest-eksid)")
    group.addoption(
        "--profile",
        dest="eksid_profile",
        metavar="NAME|PATH",
        type=str,
        default=None,
        help="Profile to check: NAME loads profiles/NAME.yaml under the rootdir, or a path to a YAML file "
        "(ini: eksid_profile, env: EKSID_PROFILE)",
    )
    group.addoption(
        "--eksid-keep-pods",
        dest="eksid_keep_pods",
        action="store_const",
        const=True,
        default=None,
        help="Keep probe pods after the run for debugging; delete them later with kubectl "
        "(ini: eksid_keep_pods, env: EKSID_KEEP_PODS)",
    )
    group.addoption(
        "--eksid-max-parallel",
        dest="eksid_max_parallel",
        metavar="N",
        type=_positive_int,
        default=None,
        help="Probe pods launched at once (default 16; ini: eksid_max_parallel, env: EKSID_MAX_PARALLEL)",
    )
    group.addoption(
        "--eksid-sweep",
        dest="eksid_sweep",
        metavar="MINUTES",
        type=_minutes,
        default=None,
        help="Before probing, delete probe pods of earlier runs older than MINUTES in the profile's namespaces "
        "(ini: eksid_sweep, env: EKSID_SWEEP)",
    )
    group.addoption(
        "--eksid-inconclusive",
        dest="eksid_inconclusive",
        metavar="skip|fail",
        type=_inconclusive,
        default=None,
        help="What an inconclusive probe result does to its test: skip (reported as INCONCLUSIVE, the default) "
        "or fail (ini: eksid_inconclusive, env: EKSID_INCONCLUSIVE)",
    )
    parser.addini("eksid_inconclusive", "skip or fail on inconclusive probe results", default=None)
    parser.addini("eksid_profile", "Profile to check when --profile is not given", default=None)
    parser.addini("eksid_sweep", "Delete earlier runs' probe pods older than this many minutes", default=None)
    parser.addini("eksid_keep_pods", "Keep probe pods after the run (true/false)", default=None)
    parser.addini("eksid_max_parallel", "Probe pods launched at once", default=None)


def _setting(
    config: pytest.Config, name: str, flag: str, parse: Callable[[str], T], default: T | None
) -> Setting[T] | None:
    """Command line, then ini, then environment, then default — and remember which."""
    cli = config.getoption(name)
    if cli is not None:
        return Setting(cli, flag)
    env_name = name.upper()
    raw: Any = config.getini(name)
    for value, source in ((raw, f"ini {name}"), (os.environ.get(env_name), f"${env_name}")):
        if value in (None, "", []):
            continue
        try:
            return Setting(parse(str(value)), source)
        except ValueError as exc:
            raise pytest.UsageError(f"{source}: {exc}") from None
    return None if default is None else Setting(default, "default")


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    profile_spec = _setting(config, "eksid_profile", "--profile", str, None)
    profile: Setting[LoadedProfile] | None = None
    if profile_spec is not None:
        try:
            loaded = load_profile(profile_spec.value, Path(config.rootpath))
        except ProfileError as exc:
            raise pytest.UsageError(str(exc)) from None
        if loaded.profile.sandbox is not None:
            from pytest_eksid.sandbox import SandboxUnavailable, require

            try:
                require()
            except SandboxUnavailable as exc:
                raise pytest.UsageError(f"{loaded.path}: {exc}") from None
        profile = Setting(loaded, profile_spec.source)
    keep = _setting(config, "eksid_keep_pods", "--eksid-keep-pods", _bool, False)
    parallel = _setting(config, "eksid_max_parallel", "--eksid-max-parallel", _positive_int, 16)
    assert keep is not None
    assert parallel is not None
    sweep = _setting(config, "eksid_sweep", "--eksid-sweep", _minutes, None)
    inconclusive = _setting(config, "eksid_inconclusive", "--eksid-inconclusive", _inconclusive, "skip")
    assert inconclusive is not None
    config.stash[SETTINGS_KEY] = Settings(
        profile=profile, keep_pods=keep, max_parallel=parallel, sweep_minutes=sweep, inconclusive=inconclusive
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or settings.profile is None:
        return ["eksid: no profile (pass --profile NAME, e.g. --profile demo)"]
    loaded = settings.profile.value
    cluster = loaded.profile.cluster
    try:
        shown = loaded.path.relative_to(config.rootpath)
    except ValueError:
        shown = loaded.path
    target = (
        "embedded sandbox (started at session start)"
        if loaded.profile.sandbox
        else (f"kube context {cluster.kube_context or '(current)'}")
    )
    return [
        f"eksid: profile {loaded.name}: {shown} (from {settings.profile.source})",
        f"eksid: cluster {cluster.name}, region {cluster.region}, account {cluster.account_id}; {target}",
        f"eksid: probe image {loaded.profile.probe.image}; {len(loaded.profile.workloads)} workload(s)",
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if WORKLOAD_FIXTURE not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[SETTINGS_KEY]
    if settings.profile is None:
        return  # reported as a usage error once collection is done (pytest_collection_finish)
    loaded = settings.profile.value
    workloads = sorted(loaded.profile.workloads, key=lambda w: w.name)
    for mark in metafunc.definition.iter_markers("eksid_applies"):
        workloads = [w for w in workloads if mark.args[0](w)]
    if ACTION_FIXTURE in metafunc.fixturenames:
        pairs = [
            (w, (expect, i, check))
            for w in workloads
            for expect, checks in (("allowed", w.allow), ("denied", w.deny))
            for i, check in enumerate(checks)
        ]
        metafunc.parametrize(
            [WORKLOAD_FIXTURE, ACTION_FIXTURE],
            pairs,
            indirect=True,
            ids=[
                f"{loaded.name}/{w.name}/{'allow' if e == 'allowed' else 'deny'}-{i}:{c.action}"
                for w, (e, i, c) in pairs
            ],
        )
        return
    metafunc.parametrize(
        WORKLOAD_FIXTURE,
        workloads,
        indirect=True,
        ids=[f"{loaded.name}/{w.name}" for w in workloads],
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    not_applicable = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        workload = callspec.params.get(WORKLOAD_FIXTURE, None) if callspec is not None else None
        if isinstance(workload, Workload):
            item.add_marker(workload.mechanism.replace("-", "_"))
        elif callspec is not None and WORKLOAD_FIXTURE in callspec.params:
            not_applicable.append(item)  # eksid_applies left no workload: the check does not apply here
    if not_applicable:
        config.hook.pytest_deselected(items=not_applicable)
        items[:] = [item for item in items if item not in not_applicable]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which workloads the selected tests need, so only their probes are launched."""
    if session.config.stash[SETTINGS_KEY].profile is None:
        needing = [item.nodeid for item in session.items if WORKLOAD_FIXTURE in getattr(item, "fixturenames", ())]
        if needing:
            more = f" (and {len(needing) - 1} more)" if len(needing) > 1 else ""
            raise pytest.UsageError(
                f"{needing[0]}{more} checks workload identities and needs a profile: "
                "pass --profile NAME (e.g. --profile demo for the embedded sandbox) or a path to a profile YAML"
            )
    selected: set[str] = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        workload = callspec.params.get(WORKLOAD_FIXTURE) if callspec is not None else None
        if isinstance(workload, Workload):
            selected.add(workload.name)
    session.config.stash[SELECTED_KEY] = selected
