"""What a real cluster charges per request, injected for benchmarks: latency and IAM throttling.

A test double, off by default (docs/sandbox.md, "Benchmark setting: latency and throttling"):
:class:`Latency` delays each request by a uniform random time from the range configured for its
target (the Kubernetes API, or the AWS service that signs the request); :class:`Throttle` keeps one
token bucket per AWS account and refuses what exceeds it, as IAM and STS throttle: each with token
buckets refilled every second, their sizes depending on the API (AWS Security Blog, "How to monitor
and query IAM resources at scale - Part 2"). Both take their ``sleep``/``clock``/``uniform`` as
arguments, so tests assert on the recorded delays and token counts, never on wall time. Standard
library only: the profile model imports the names from here.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping

Sleep = Callable[[float], None]
Clock = Callable[[], float]
Uniform = Callable[[float, float], float]

KUBERNETES = "kubernetes"
# Any AWS service the ranges do not name; never the Kubernetes API.
DEFAULT = "default"
# The signing names (SigV4 credential scope) of the AWS services the sandbox's endpoint answers.
AWS_SERVICES = ("iam", "sts", "eks", "s3", "sqs", "kms", "dynamodb", "secretsmanager", "ssm", "cloudtrail")
# EKS Auth (AssumeRoleForPodIdentity), which the sandbox's agent calls in process: each credential request the
# agent does not answer from its cache pays it, as the real agent's call to EKS Auth does.
EKS_AUTH = "eks-auth"
LATENCY_KEYS = (KUBERNETES, DEFAULT, *AWS_SERVICES, EKS_AUTH)
# The throttled services: IAM only (its throttling error is IAM's own; docs/sandbox.md).
THROTTLED_SERVICES = ("iam",)
# An upper bound on one injected delay, so that a typo (50 for 0.05) does not stall a run for minutes.
MAX_SECONDS = 10.0

Range = tuple[float, float]


class Latency:
    """Per-request delays: ``ranges`` maps a target (``kubernetes``, an AWS signing name, or ``default``
    for the AWS services not named) to ``(low, high)`` seconds; each request waits ``uniform(low, high)``.
    ``count`` and ``total`` say how many delays each target got and their sum (the benchmark prints them)."""

    def __init__(
        self,
        ranges: Mapping[str, Range],
        *,
        sleep: Sleep = time.sleep,
        uniform: Uniform | None = None,
    ) -> None:
        self.ranges = {key: (float(low), float(high)) for key, (low, high) in ranges.items()}
        self.sleep = sleep
        self.uniform: Uniform = uniform if uniform is not None else random.Random().uniform
        self.count: dict[str, int] = {}
        self.total: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return any(high > 0 for _, high in self.ranges.values())

    def range_for(self, target: str) -> Range:
        """The range for ``target``: its own, else (an AWS service) ``default``'s, else none."""
        if target in self.ranges:
            return self.ranges[target]
        if target != KUBERNETES and DEFAULT in self.ranges:
            return self.ranges[DEFAULT]
        return (0.0, 0.0)

    def apply(self, target: str) -> float:
        """Wait the delay of one request to ``target``, in the caller's thread; return it."""
        low, high = self.range_for(target)
        if high <= 0:
            return 0.0
        delay = min(max(self.uniform(low, high), 0.0), MAX_SECONDS)
        with self._lock:
            self.count[target] = self.count.get(target, 0) + 1
            self.total[target] = self.total.get(target, 0.0) + delay
        self.sleep(delay)
        return delay


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held, starting full; a request takes one token or is
    refused. ``clock`` is monotonic seconds."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    @property
    def tokens(self) -> float:
        """The tokens held now (refilled up to this moment)."""
        with self._lock:
            self._refill()
            return self._tokens

    def take(self) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._last) * self.rate)
        self._last = now


class Throttle:
    """One :class:`TokenBucket` per AWS account for one service; ``allowed`` and ``refused`` count the
    answers. ``burst`` defaults to one second's worth of ``rate``."""

    def __init__(self, rate: float, burst: int | None = None, *, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1, math.ceil(rate))
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}
        self.allowed = 0
        self.refused = 0
        self._lock = threading.Lock()

    def allow(self, account: str) -> bool:
        """Whether a request from ``account`` is served now (it takes a token) or throttled."""
        with self._lock:
            bucket = self.buckets.get(account)
            if bucket is None:
                bucket = self.buckets[account] = TokenBucket(self.rate, self.burst, self.clock)
        ok = bucket.take()
        with self._lock:
            if ok:
                self.allowed += 1
            else:
                self.refused += 1
        return ok
