"""Run settings: each value with where it came from (command line, ini file, environment, default).

Resolution is plain Python over what a pytest config offers (``getoption``/``getini``): the command
line wins over the ini file, which wins over the environment, then the default. A setting declared
with a default always yields a :class:`Setting`; one without may yield None. A value that does not
parse is a :class:`SettingError` naming where it came from; the plugin makes it a usage error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from pytest_eksid.profile import LoadedProfile

T = TypeVar("T")

# Seconds one Kubernetes or AWS request of the runner may wait to connect, and then for its answer.
# Without a bound a blackholed endpoint (a VPN down, a private API server out of reach) hangs each call.
DEFAULT_API_TIMEOUT = 30.0
# Probe pods launched at once per cluster, from the API server's concurrency, not the runner's CPU: a campaign's
# burst of pod creates fits in half the seats API Priority and Fairness gives the global-default priority level
# on one kube-apiserver with its default limits (ceil(600 * 20 / 245) = 49). docs/performance.md, "Defaults for
# real clusters", has the reasoning and its sources. A provider may set its own (pytest_eksid_provider).
DEFAULT_MAX_PARALLEL = 24
# From this many distinct IAM roles in a run, the runner reads the account's roles and customer managed policies
# in bulk (iam:GetAccountAuthorizationDetails, up to 1,000 a request) instead of role by role (at least 3 requests
# a role). Below it, a few small requests beat downloading a whole account's IAM. Guessed: docs/performance.md,
# "Reading IAM in bulk", has the reasoning; 0 never reads in bulk.
DEFAULT_IAM_BULK_ROLES = 25

Inconclusive = Literal["skip", "fail"]


class SettingError(ValueError):
    """A setting's value does not parse; the message starts with where it came from."""


class OptionSource(Protocol):
    """What settings are read from: a pytest config offers exactly this."""

    def getoption(self, name: str) -> Any: ...

    def getini(self, name: str) -> Any: ...


@dataclass(frozen=True)
class Setting(Generic[T]):
    value: T
    source: str  # "--profile", "ini eksid_profile", "$EKSID_PROFILE", "--fleet fleet.yaml", "default"


# --- parsers: text (ini, environment) to a value; ValueError says what was expected ---


def parse_path(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a file path")
    return text


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_inconclusive(text: str) -> Inconclusive:
    if text == "skip":
        return "skip"
    if text == "fail":
        return "fail"
    raise ValueError(f"expected skip or fail, got {text!r}")


def parse_minutes(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"must be 0 or more minutes, got {text}")
    return value


def parse_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be more than 0 seconds, got {text}")
    return value


def parse_positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def parse_count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def parse_names(text: str) -> list[str]:
    """Several names separated by spaces or commas."""
    return [n for n in text.replace(",", " ").split() if n]


# --- resolution ---


def optional_setting(
    config: OptionSource,
    name: str,
    flag: str,
    parse: Callable[[str], T],
    environ: Mapping[str, str] | None = None,
) -> Setting[T] | None:
    """Command line, then ini, then environment (``$NAME``) — and remember which; None when none sets it."""
    cli = config.getoption(name)
    if cli is not None:
        return Setting(cli, flag)
    env_name = name.upper()
    environ = os.environ if environ is None else environ
    raw: Any = config.getini(name)
    for value, source in ((raw, f"ini {name}"), (environ.get(env_name), f"${env_name}")):
        if value in (None, "", []):
            continue
        try:
            return Setting(parse(str(value)), source)
        except ValueError as exc:
            raise SettingError(f"{source}: {exc}") from None
    return None


def setting(
    config: OptionSource,
    name: str,
    flag: str,
    parse: Callable[[str], T],
    default: T,
    environ: Mapping[str, str] | None = None,
) -> Setting[T]:
    """As :func:`optional_setting`, and the default (source ``default``) when nothing sets it."""
    found = optional_setting(config, name, flag, parse, environ)
    return found if found is not None else Setting(default, "default")


@dataclass(frozen=True)
class Settings:
    # The clusters of the run, one profile each, in the order given (--fleet entries, then --profile).
    profiles: tuple[Setting[LoadedProfile], ...]
    keep_pods: Setting[bool] = Setting(False, "default")
    max_parallel: Setting[int] = Setting(DEFAULT_MAX_PARALLEL, "default")
    sweep_minutes: Setting[float] | None = None
    inconclusive: Setting[Inconclusive] = Setting("skip", "default")
    exec_containers: Setting[bool] = Setting(False, "default")
    api_timeout: Setting[float] = Setting(DEFAULT_API_TIMEOUT, "default")
    require_contract: Setting[bool] = Setting(False, "default")
    skip_iam_scan: Setting[bool] = Setting(False, "default")
    iam_bulk: Setting[int] = Setting(DEFAULT_IAM_BULK_ROLES, "default")
    # An earlier run's JSON inventory to compare this run's with (a path as given; pytest_eksid.inventory
    # resolves it like --eksid-inventory).
    inventory_baseline: Setting[str] | None = None
    # --eksid-cloudtrail: the state file of the probe sessions CloudTrail is checked for (pytest_eksid.cloudtrail).
    cloudtrail: Setting[str] | None = None
    # --eksid-discover: write a starter profile from the cluster to this path instead of running the checks.
    discover: Setting[str] | None = None

    @property
    def profile(self) -> Setting[LoadedProfile] | None:
        """The first profile (the only one in a single-cluster run), or None."""
        return self.profiles[0] if self.profiles else None

    @property
    def loaded(self) -> LoadedProfile:
        """The first profile's (the only one in a single-cluster run); LookupError when there is none."""
        if not self.profiles:
            raise LookupError("no profile")
        return self.profiles[0].value

    @property
    def loaded_all(self) -> list[LoadedProfile]:
        return [p.value for p in self.profiles]


def resolve(
    config: OptionSource, profiles: tuple[Setting[LoadedProfile], ...], max_parallel: int = DEFAULT_MAX_PARALLEL
) -> Settings:
    """Every run setting but the profiles (the plugin loads those), each from where it is set; ``max_parallel``
    is the default the profiles' providers ask for."""
    return Settings(
        profiles=profiles,
        keep_pods=setting(config, "eksid_keep_pods", "--eksid-keep-pods", parse_bool, False),
        max_parallel=setting(config, "eksid_max_parallel", "--eksid-max-parallel", parse_positive_int, max_parallel),
        sweep_minutes=optional_setting(config, "eksid_sweep", "--eksid-sweep", parse_minutes),
        inconclusive=setting(config, "eksid_inconclusive", "--eksid-inconclusive", parse_inconclusive, "skip"),
        exec_containers=setting(config, "eksid_exec", "--eksid-exec", parse_bool, False),
        api_timeout=setting(config, "eksid_api_timeout", "--eksid-api-timeout", parse_seconds, DEFAULT_API_TIMEOUT),
        require_contract=setting(config, "eksid_require_contract", "--eksid-require-contract", parse_bool, False),
        skip_iam_scan=setting(config, "eksid_skip_iam_scan", "--eksid-skip-iam-scan", parse_bool, False),
        iam_bulk=setting(config, "eksid_iam_bulk", "--eksid-iam-bulk", parse_count, DEFAULT_IAM_BULK_ROLES),
        inventory_baseline=optional_setting(config, "eksid_inventory_baseline", "--eksid-inventory-baseline", str),
        discover=optional_setting(config, "eksid_discover", "--eksid-discover", parse_path),
        cloudtrail=optional_setting(config, "eksid_cloudtrail", "--eksid-cloudtrail", parse_path),
    )
