"""Ctrl-C and SIGTERM during a run: the first stops it, cleanup always finishes, a second is one line.

The first SIGINT or SIGTERM raises ``KeyboardInterrupt`` (SIGTERM as Ctrl-C: a CI job cancelled or
timed out), so that teardown deletes the probe pods and stops the sandboxes. While that cleanup runs
(:meth:`Interrupts.cleaning`), further signals are deferred: it finishes, and the person is told so in
one line. A second signal before cleanup began runs the hurried steps (one delete of the run's probe
pods by label per namespace, sandboxes stopped, their secret files first) and exits at once.
Only the main thread can have signal handlers; elsewhere this does nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

EXIT_CODE = 2  # pytest's "interrupted"


class Interrupts:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.received: list[str] = []  # names of the signals that arrived, in order
        self.hurry: list[Callable[[], object]] = []  # what a second signal does before exiting
        self._cleaning = 0
        self._told = False
        self._previous: dict[int, signal.Handlers | Callable[[int, FrameType | None], object] | int | None] = {}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM where nothing else does (an xdist worker ignores SIGINT, say)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) is default:
                self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)
        self._previous.clear()

    @contextmanager
    def cleaning(self) -> Iterator[None]:
        """Defer SIGINT and SIGTERM while the block runs: cleanup finishes whatever arrives."""
        self._cleaning += 1
        try:
            yield
        finally:
            self._cleaning -= 1

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        if self._cleaning:
            if not self._told:
                self._told = True
                self.say(f"{name}: cleanup is running (probe pods, sandboxes); it finishes first, then the run ends")
            return
        if len(self.received) == 1:
            raise KeyboardInterrupt(name)
        # A second signal before cleanup began: the hurried cleanup, then exit (no traceback).
        self._cleaning += 1
        self.say(f"{name} again: deleting this run's probe pods by label and stopping sandboxes, then exiting")
        for step in self.hurry:
            try:
                step()
            except Exception as exc:  # each step is tried: a failed delete must not keep a sandbox running
                self.say(f"hurried cleanup step failed: {exc.__class__.__name__}: {exc}")
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        os._exit(EXIT_CODE)
